"""What a pipeline run tells while it runs and when it ends: progress lines, the estimate of the time left,
the heartbeat and the summary table.

One line when a notebook starts (``[3/9] 04_train_tiny_models started``) and one when it ends
(``[3/9] 04_train_tiny_models ok in 26m57s, 6 figure(s); 5 of 9 done, elapsed 28m10s, estimated left
7m40s``); every ``ropelib.pipeline.HEARTBEAT_S`` seconds a line on what is running (``heartbeat_line``),
with the progress line of the notebook's current ``ropelib.runs.sweep`` (the kernel writes it to
``$ROPELIB_PROGRESS_FILE`` in the staging folder). The estimate adds up each remaining notebook's last
duration (``expected_durations``, ``estimate_left``): from this tree's manifest, else (profile ``default``)
the committed one; "unknown" if a notebook has none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .notebook_runs import Outcome, Runner
from .output_trees import REFERENCE_PROFILE
from .run_messages import format_seconds


def summary_table(outcomes: Sequence[Outcome]) -> str:
    """A plain-text table: notebook, status, duration, figures written (and the error of a failure)."""
    rows = [("notebook", "status", "duration", "figures")]
    rows += [(o.name, o.status, format_seconds(o.duration_s), str(len(o.figures))) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for o in outcomes:
        if o.error:
            lines.append(f"  {o.name}: {o.error}" + (f"  (failed copy: {o.failed_copy})" if o.failed_copy else ""))
    return "\n".join(lines)


def expected_durations(
    names: Sequence[str], profile: str, manifest: Mapping[str, Any], *committed: Mapping[str, Any]
) -> dict[str, float | None]:
    """Each notebook's expected duration, for the estimate of the time left: its ``duration_s`` in this
    tree's manifest (the last completed execution, ok or failed), else in the first ``committed`` manifest
    (the reference outputs' ``results/run_manifest_default.json``: ``results_dir()``'s, then the checkout's)
    of the same profile that has it (so a first sandbox run of ``default`` has an estimate), else ``None``."""
    sources = [manifest.get("notebooks", {})]
    sources += [c.get("notebooks", {}) for c in committed if c.get("profile", REFERENCE_PROFILE) == profile]
    expected: dict[str, float | None] = {}
    for name in names:
        expected[name] = None
        for notebooks in sources:
            entry = notebooks.get(name) or {}
            if entry.get("status") not in ("ok", "failed"):
                entry = entry.get("committed") or {}  # an interrupted run keeps the last good entry
            if entry.get("status") in ("ok", "failed") and isinstance(entry.get("duration_s"), (int, float)):
                expected[name] = float(entry["duration_s"])
                break
    return expected


def estimate_left(
    unfinished: Sequence[str], expected: Mapping[str, float | None], running_for: Mapping[str, float], jobs: int
) -> float | None:
    """Seconds the unfinished notebooks should still take: each its expected duration less the time it has
    been running (at least 0), spread over ``jobs`` (but never less than the longest of them); ``None``
    when one of them has no expected duration."""
    left = []
    for name in unfinished:
        if expected.get(name) is None:
            return None
        left.append(max(0.0, expected[name] - running_for.get(name, 0.0)))
    return max([sum(left) / max(1, jobs), *left]) if left else 0.0


def heartbeat_line(runner: Runner, order: Mapping[str, str], expected: Mapping[str, float | None]) -> str:
    """``      ... running [3/9] 04_x for 5m00s of ~26m57s (sweep: 6 of 10 runs finished ...)``: what each
    executing notebook is doing, with the progress line its sweeps leave (``Runner.progress_of``)."""
    parts = []
    for name, seconds in runner.running_for().items():
        part = f"[{order.get(name, '?')}] {name} for {format_seconds(seconds)} of ~{format_seconds(expected.get(name), 'unknown')}"
        progress = runner.progress_of(name)
        parts.append(part + (f" ({progress})" if progress else ""))
    return "      ... running " + ("; ".join(parts) or "(none)")
