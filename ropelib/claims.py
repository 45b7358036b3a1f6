"""The claims of a popular blog post about RoPE, as data, and the verdict our own measurements give each.

Source audited: "How Rotary Positional Embedding Improves Long-Context Extrapolation", a post on the
Logic Nest blog. Each ``Claim`` holds our paraphrase,
the section of the post it comes from, what the literature reports (docs/references.md §1–§4: RoFormer, Su et al.
2021, arXiv 2104.09864 §3; sinusoidal, Vaswani et al. 2017, arXiv 1706.03762 §3.5; ALiBi, Press et al.
2021, arXiv 2108.12409 Table 1; PI, Chen et al. 2023, arXiv 2306.15595; YaRN, Peng et al. 2023, arXiv
2309.00071; Kazemnejad et al. 2023, arXiv 2305.19466; Barbero et al. 2024, arXiv 2410.06205; Liu et al.
2023, arXiv 2310.05209), the ``results/`` tables it needs, the figures that show the evidence, and a
verdict function.

A verdict function takes the tables (``pandas.DataFrame`` or ``None`` when the file is missing) and
returns ``(verdict, evidence)``: ``verdict`` starts with one of ``VERDICTS`` (a parenthesis may follow,
e.g. ``"not testable here (missing results/05_lm_summary.csv: run notebook 05)"``) and ``evidence`` is a
flat dict of numbers read from the tables or computed with ``ropelib`` (never typed in), with a one-line
``"summary"``. Rules (thresholds in ``Thresholds``):

* **gates first** (``ropelib.gates``, ``results/04_gates.csv``): a trained model's numbers count only if
  it passed its gate. A verdict that rests on trained models needs ``04_gates.csv``; when one of the
  encodings a claim is about (its subject and the encodings it is compared with) has no model that
  passed its gate on the task in question, the verdict is *not testable here* and the evidence names
  each failed model with its gate's reason — it is never computed from failed models. A reference
  encoding that only adds a caveat (NoPE) is left out, with a note, when it failed. Per-seed tables
  (``05_retrieval``, ``05_without_positions``, ``06_*``) are read through their ``passed_gate`` rows
  only; the 05 summaries are over passing seeds already; ``04_summary`` is over all seeds, so where only
  some seeds passed the estimate is recomputed from the passing rows of ``04_gates.csv``. The
  language-model task is any task of kind ``"lm"`` (``ropelib.experiments.TASK_KINDS``);
* comparisons of two encodings use the seed means and their 95% CIs: "better" / "worse" only when the
  CIs do not overlap (a single seed has a point CI), else "tie". A claim judged on several such cells is
  *supported* when it wins every cell, *contradicted* when it wins none and loses at least one,
  *partly supported* when it wins some, and *not testable here* when every cell is a tie (the difference
  is within seed noise at our scale);
* "no loss of quality" at a length = perplexity at most ``quality_tolerance`` above the 1x value;
* "retained" retrieval = accuracy at least ``retention_fraction`` of the short-distance accuracy at the
  training length; a model below ``min_learned_accuracy`` there did not learn the task (not testable).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import analysis as A
from . import published
from . import results as R
from .encodings import make_encoding
from .encodings.sinusoidal import sinusoidal_table
from .experiments import TASK_KINDS
from .paths import figures_dir
from .rope import rope_frequencies
from .stats import accuracy_ci, mean_ci

__all__ = [
    "VERDICTS",
    "Thresholds",
    "Estimate",
    "Claim",
    "ClaimResult",
    "CLAIMS",
    "TABLE_NOTEBOOK",
    "missing_verdict",
    "verdict_category",
    "read_table",
    "load_tables",
    "is_lm_task",
    "gate_failures",
    "gate_verdict",
    "compare",
    "ppl_ratios",
    "worse_than_nope",
    "extension_settings",
    "blog_formula_table",
    "relative_position_check",
    "verdict_extrapolation_vs_traditional",
    "verdict_no_quality_loss",
    "verdict_long_range_dependencies",
    "verdict_blog_formula",
    "verdict_sinusoidal_extrapolates",
    "position_use",
    "verdict_learned_richer",
    "paired_speed_ratio",
    "verdict_rope_faster",
    "verdict_rope_outperforms",
    "verdict_relative_position",
    "verdict_traditional_decline",
    "verdict_applications",
    "evaluate_claim",
    "audit",
    "verdict_table",
    "verdict_markdown",
    "evidence_frame",
    "write_verdicts",
]

VERDICTS = ("supported", "partly supported", "contradicted", "not testable here")

#: results file -> the notebook that writes it (the tables the audit reads; schema: ``ropelib.results``)
TABLE_NOTEBOOK: Mapping[str, str] = {
    "04_runs.csv": "04",
    "04_gates.csv": "04",
    "04_summary.csv": "04",
    "04_throughput.csv": "04",
    "05_lm_summary.csv": "05",
    "05_retrieval.csv": "05",
    "05_without_positions.csv": "05",
    "06_zero_shot_ppl.csv": "06",
    "06_finetune.csv": "06",
}

TRADITIONAL = ("sinusoidal", "learned")


@dataclass(frozen=True)
class Thresholds:
    """The numbers that turn measurements into verdicts (see the module docstring)."""

    quality_tolerance: float = 0.05  # relative perplexity increase still counted as "no loss of quality"
    retention_fraction: float = 0.8  # retrieval accuracy kept, relative to short distances at 1x
    min_learned_accuracy: float = 0.5  # short-distance accuracy at 1x below which the task was not learned
    relative_tolerance: float = 1e-4  # relative Toeplitz deviation below which scores depend on m - n only
    absolute_min_deviation: float = 1e-2  # relative Toeplitz deviation above which they clearly do not
    formula_atol: float = 1e-6  # two sin/cos tables equal within this

    def __post_init__(self) -> None:
        for name in (
            "quality_tolerance",
            "retention_fraction",
            "min_learned_accuracy",
            "relative_tolerance",
            "absolute_min_deviation",
            "formula_atol",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"Thresholds.{name} must be a number >= 0, got {value!r}")
        if self.retention_fraction > 1 or self.min_learned_accuracy > 1:
            raise ValueError(
                f"retention_fraction and min_learned_accuracy must be <= 1, got "
                f"{self.retention_fraction!r}, {self.min_learned_accuracy!r}"
            )


DEFAULT_THRESHOLDS = Thresholds()


# ---------------------------------------------------------------------------------------------
# verdict helpers
# ---------------------------------------------------------------------------------------------
def missing_verdict(filename: str) -> str:
    """``"not testable here (missing results/<file>: run notebook NN)"``."""
    nn = TABLE_NOTEBOOK.get(filename, filename[:2])
    return f"not testable here (missing results/{filename}: run notebook {nn})"


def verdict_category(verdict: str) -> str:
    """The category a verdict string starts with (one of ``VERDICTS``); ValueError otherwise."""
    for category in sorted(VERDICTS, key=len, reverse=True):  # "partly supported" before "supported"
        if isinstance(verdict, str) and verdict.startswith(category):
            return category
    raise ValueError(f"verdict {verdict!r} does not start with one of {', '.join(map(repr, VERDICTS))}")


def _missing(**tables: pd.DataFrame | None) -> tuple[str, dict] | None:
    """The not-testable verdict for the first required table that is ``None`` (keyword = file stem)."""
    for stem, table in tables.items():
        if table is None:
            return missing_verdict(f"{stem}.csv"), {"summary": f"results/{stem}.csv is missing"}
    return None


def _require_columns(table: pd.DataFrame, columns: Sequence[str], label: str) -> None:
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise ValueError(f"{label} lacks column(s) {absent}; it has {list(table.columns)} (see results/README.md)")


@dataclass(frozen=True)
class Estimate:
    """A seed mean with its 95% CI (NaN CI = a single seed: the interval is the point)."""

    mean: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n_seeds: int = 1

    @property
    def interval(self) -> tuple[float, float]:
        lo = self.mean if not np.isfinite(self.ci_low) else self.ci_low
        hi = self.mean if not np.isfinite(self.ci_high) else self.ci_high
        return float(lo), float(hi)

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.mean))


def compare(a: Estimate, b: Estimate, *, lower_is_better: bool) -> str:
    """``"better"`` / ``"worse"`` when ``a``'s and ``b``'s CIs do not overlap, else ``"tie"``.

    An undefined ``b`` (NaN mean: e.g. a learned table past its length) loses to a defined ``a``.
    """
    if not a.defined:
        return "worse" if b.defined else "tie"
    if not b.defined:
        return "better"
    a_lo, a_hi = a.interval
    b_lo, b_hi = b.interval
    if lower_is_better:
        return "better" if a_hi < b_lo else "worse" if a_lo > b_hi else "tie"
    return "better" if a_lo > b_hi else "worse" if a_hi < b_lo else "tie"


def _tally(outcomes: Sequence[str]) -> str:
    """Verdict of a claim judged on several comparison cells (module docstring)."""
    wins = sum(o == "better" for o in outcomes)
    losses = sum(o == "worse" for o in outcomes)
    if not outcomes:
        raise ValueError("no comparison cells to judge")
    if wins == len(outcomes):
        return "supported"
    if wins == 0 and losses > 0:
        return "contradicted"
    if wins == 0:
        return "not testable here (every difference is within the seed noise)"
    return "partly supported"


def _single_profile(table: pd.DataFrame, label: str) -> pd.DataFrame:
    if "profile" in table.columns and table["profile"].nunique() > 1:
        raise ValueError(f"{label} mixes profiles {sorted(table['profile'].unique())}; pass one profile's rows")
    return table


# ---------------------------------------------------------------------------------------------
# reading results/
# ---------------------------------------------------------------------------------------------
def read_table(filename: str, directory: str | Path | None = None, profile: str | None = None) -> pd.DataFrame | None:
    """``results/<filename>`` as a DataFrame (``ropelib.results.read_table``), or ``None`` if the file
    does not exist.

    ``directory`` defaults to ``ropelib.paths.results_dir()``. When the table holds rows of several
    profiles, ``profile`` selects one (ValueError if it is not among them or not given). A table whose
    columns differ from ``ropelib.results.SCHEMA`` (written before the schema changed) is a ValueError
    that says to rerun its notebook.
    """
    if filename not in TABLE_NOTEBOOK:
        raise ValueError(f"unknown results table {filename!r}; known: {', '.join(TABLE_NOTEBOOK)}")
    if not R.table_path(filename, directory).exists():
        return None
    return R.read_table(filename, directory, profile)


def load_tables(directory: str | Path | None = None, profile: str | None = None) -> dict[str, pd.DataFrame | None]:
    """Every table of ``TABLE_NOTEBOOK`` (``None`` for a missing file), keyed by file name."""
    return {name: read_table(name, directory, profile) for name in TABLE_NOTEBOOK}


# ---------------------------------------------------------------------------------------------
# the gates (results/04_gates.csv)
# ---------------------------------------------------------------------------------------------
def is_lm_task(task: Any) -> bool:
    """Whether ``task`` is a language-modelling task (kind ``"lm"`` in ``ropelib.experiments.TASK_KINDS``)."""
    return TASK_KINDS.get(str(task)) == "lm"


def _lm_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a language-modelling task (every row when the table has no ``task`` column)."""
    return table[table["task"].map(is_lm_task).astype(bool)] if "task" in table.columns else table


def _truthy(values: pd.Series) -> pd.Series:
    """A boolean column as read back from CSV (bools, ``"True"``/``"False"`` strings, NaN = False)."""
    return values.map(
        lambda v: (str(v).strip().lower() == "true") if not isinstance(v, (bool, np.bool_)) else bool(v)
    ).astype(bool)


def _passed_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of models that passed their gate (``passed_gate``); every row without that column."""
    if "passed_gate" not in table.columns:
        return table
    return table[_truthy(table["passed_gate"])]


def _gate_rows(gates: pd.DataFrame, encoding: str, *, task: str | None = None, kind: str | None = None) -> pd.DataFrame:
    rows = gates[gates["encoding"] == encoding]
    if task is not None:
        rows = rows[rows["task"] == task]
    if kind is not None:
        kinds = rows["kind"] if "kind" in rows.columns else rows["task"].map(lambda t: TASK_KINDS.get(str(t)))
        rows = rows[kinds == kind]
    return rows


def _model_passed(rows: pd.DataFrame) -> pd.Series:
    """Per gate row: passed, or a task kind without a gate (copy / reverse: ``passed`` is NaN there)."""
    kinds = rows["kind"] if "kind" in rows.columns else rows["task"].map(lambda t: TASK_KINDS.get(str(t)))
    return _truthy(rows["passed"]) | ~kinds.isin(["lm", "retrieval"])


def gate_failures(
    gates: pd.DataFrame, encodings: Sequence[str], *, task: str | None = None, kind: str | None = None
) -> dict[str, list[tuple[str, int, str]]]:
    """The encodings of ``encodings`` none of whose models passed the gate, with every failed model.

    ``gates`` is ``04_gates.csv``; the models considered are those of ``task`` (a task name) or of every
    task of ``kind`` (``"lm"``, ``"retrieval"``). Returns ``{encoding: [(task, seed, reason), ...]}``
    for each encoding with no passing model (``reason`` is the gate's reason string; an encoding with no
    gate row at all gets one entry with seed -1 saying so); ``{}`` when every encoding has a passing
    model.
    """
    _require_columns(gates, ("encoding", "task", "seed", "passed", "reason"), "04_gates")
    out: dict[str, list[tuple[str, int, str]]] = {}
    for enc in encodings:
        rows = _gate_rows(gates, enc, task=task, kind=kind)
        if rows.empty:
            where = task or (f"a task of kind {kind!r}" if kind else "any task")
            out[enc] = [(task or str(kind or ""), -1, f"no row in 04_gates.csv for {enc} on {where}")]
            continue
        if _model_passed(rows).any():
            continue
        out[enc] = [(str(r.task), int(r.seed), "" if pd.isna(r.reason) else str(r.reason)) for r in rows.itertuples()]
    return out


def _short_reason(reason: str) -> str:
    """``"context_gain failed: <rule>, got -0.02"`` -> ``"context_gain failed (got -0.02)"``, per failed check."""
    parts = []
    for part in str(reason).split("; "):
        name, sep, rest = part.partition(" failed: ")
        got = rest.rpartition(", got ")[2] if ", got " in rest else ""
        parts.append(f"{name} failed (got {got})" if sep and got else part)
    return ", ".join(parts)


def gate_verdict(failures: Mapping[str, Sequence[tuple[str, int, str]]]) -> tuple[str, dict]:
    """The not-testable verdict and evidence for ``gate_failures``' output (non-empty): which models
    failed and why (the full reason per model in the evidence, abbreviated in the summary)."""
    if not failures:
        raise ValueError("gate_verdict needs at least one failed encoding")
    ev: dict[str, Any] = {}
    names, notes = [], []
    for enc, models in failures.items():
        tasks = list(dict.fromkeys(t for t, _, _ in models))
        names.append(f"{enc} ({', '.join(t for t in tasks if t)})" if any(tasks) else enc)
        for task in tasks:
            per_model = []
            for t, seed, reason in models:
                if t != task:
                    continue
                label = f"{enc} {task} seed {seed}" if seed >= 0 else f"{enc} {task}".strip()
                ev[f"gate failed: {label}"] = reason
                per_model.append(f"seed {seed}: {_short_reason(reason)}" if seed >= 0 else reason)
            notes.append(f"{enc}/{task} — " + "; ".join(per_model))
    verdict = f"not testable here (no model of {', '.join(names)} passed its gate)"
    ev["summary"] = (
        "every model of these encodings failed its gate (notebook 04), so their numbers are not used: "
        + " | ".join(notes)
    )
    return verdict, ev


def _gate_check(
    gates: pd.DataFrame, encodings: Sequence[str], *, task: str | None = None, kind: str | None = None
) -> tuple[str, dict] | None:
    """``gate_verdict`` when one of ``encodings`` has no passing model, else ``None``."""
    failures = gate_failures(gates, encodings, task=task, kind=kind)
    return gate_verdict(failures) if failures else None


def _passed_any(gates: pd.DataFrame, encoding: str, *, task: str | None = None, kind: str | None = None) -> bool:
    return not gate_failures(gates, [encoding], task=task, kind=kind)


def _lm_estimate(lm: pd.DataFrame, encoding: str, mode: str, multiplier: float) -> Estimate | None:
    rows = lm[(lm["encoding"] == encoding) & (lm["mode"] == mode) & np.isclose(lm["multiplier"], multiplier)]
    if rows.empty:
        return None
    if len(rows) > 1:
        raise ValueError(f"05_lm_summary has {len(rows)} rows for {encoding}/{mode}/{multiplier}x; expected one")
    r = rows.iloc[0]
    return Estimate(float(r["ppl_mean"]), float(r["ppl_ci_low"]), float(r["ppl_ci_high"]), int(r.get("n_seeds", 1)))


_LM_COLUMNS = ("encoding", "mode", "multiplier", "ppl_mean", "ppl_ci_low", "ppl_ci_high")


def ppl_ratios(lm_summary: pd.DataFrame, encoding: str) -> pd.DataFrame:
    """Perplexity of ``encoding`` at each multiplier divided by its 1x value, per evaluation mode.

    Columns ``mode, multiplier, ppl, ppl_1x, ratio`` (ratio NaN where the encoding is undefined, e.g. a
    learned table past its length). Rows sorted by mode, multiplier.
    """
    _require_columns(lm_summary, _LM_COLUMNS, "05_lm_summary")
    rows = []
    sub = lm_summary[lm_summary["encoding"] == encoding]
    if sub.empty:
        known = sorted(lm_summary["encoding"].unique())
        raise ValueError(f"05_lm_summary has no rows for encoding {encoding!r}; it has {known}")
    for mode, group in sub.groupby("mode"):
        base = group[np.isclose(group["multiplier"], 1.0)]
        if base.empty:
            raise ValueError(f"05_lm_summary has no 1x row for {encoding}/{mode}")
        ppl_1x = float(base["ppl_mean"].iloc[0])
        for _, r in group.sort_values("multiplier").iterrows():
            rows.append(
                {
                    "mode": mode,
                    "multiplier": float(r["multiplier"]),
                    "ppl": float(r["ppl_mean"]),
                    "ppl_1x": ppl_1x,
                    "ratio": float(r["ppl_mean"]) / ppl_1x,
                }
            )
    return pd.DataFrame(rows, columns=["mode", "multiplier", "ppl", "ppl_1x", "ratio"])


def _beyond(ratios: pd.DataFrame) -> pd.DataFrame:
    return ratios[ratios["multiplier"] > 1.0 + 1e-9]


# ---------------------------------------------------------------------------------------------
# closed-form checks (no results tables)
# ---------------------------------------------------------------------------------------------
def blog_formula_table(n_positions: int, d_model: int) -> np.ndarray:
    """The post's "RoPE" formula, evaluated literally (float64 ``(n_positions, d_model)``):
    ``pos_embedding(p) = [sin(p / 10000^(2j/d_model)), cos(p / 10000^(2j/d_model))]`` for pairs
    ``j = 0 … d_model/2 - 1``, the sin/cos of each pair side by side."""
    if not isinstance(n_positions, int) or isinstance(n_positions, bool) or n_positions < 1:
        raise ValueError(f"n_positions must be a positive integer, got {n_positions!r}")
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model < 2 or d_model % 2:
        raise ValueError(f"d_model must be an even integer >= 2, got {d_model!r}")
    position = np.arange(n_positions, dtype=np.float64)[:, None]  # (P, 1)
    j = np.arange(d_model // 2, dtype=np.float64)[None, :]  # (1, d/2)
    angle = position / 10000.0 ** (2.0 * j / d_model)  # (P, d/2)
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1).reshape(n_positions, d_model)


@functools.lru_cache(maxsize=8)
def relative_position_check(length: int = 64, head_dim: int = 32, seed: int = 0) -> dict[str, float]:
    """Relative Toeplitz deviation of one fixed (q, k) scored at every (m, n) through each encoding.

    ``ropelib.analysis.position_scores`` + ``toeplitz_deviation(relative=True)`` for ``rope`` (rotates q,
    k), ``sinusoidal`` (adds the sin/cos table to the token vectors) and ``learned`` (a freshly
    initialised table, seeded). 0 = the score depends on ``m - n`` only (RoFormer §3.2, eq. 16).
    """
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(head_dim, generator=gen)  # (D,)
    k = torch.randn(head_dim, generator=gen)  # (D,)
    out = {}
    for name in ("rope", "sinusoidal", "learned"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            extra = {"max_positions": length} if name == "learned" else {}
            enc = make_encoding(name, n_heads=1, head_dim=head_dim, d_model=head_dim, **extra)
        scores = A.position_scores(enc, q, k, length)[0]  # (T, T)
        out[name] = A.toeplitz_deviation(scores, relative=True)
    return out


# ---------------------------------------------------------------------------------------------
# the verdict functions
# ---------------------------------------------------------------------------------------------
def verdict_extrapolation_vs_traditional(
    lm_summary: pd.DataFrame | None, gates: pd.DataFrame | None = None, *, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[str, dict]:
    """C1: RoPE's perplexity past the training length against sinusoidal and learned positions.

    Cells: every (mode, multiplier > 1) x comparator; a learned table undefined past its length loses.
    Not testable when RoPE or a comparator has no language model that passed its gate (``04_gates``).
    """
    missing = _missing(**{"05_lm_summary": lm_summary, "04_gates": gates})
    if missing:
        return missing
    _require_columns(lm_summary, _LM_COLUMNS, "05_lm_summary")
    lm = _single_profile(lm_summary, "05_lm_summary")
    outcomes, ev = [], {}
    multipliers = sorted(m for m in lm.loc[lm["encoding"] == "rope", "multiplier"].unique() if m > 1 + 1e-9)
    comparators = [c for c in TRADITIONAL if (lm["encoding"] == c).any()]
    if not multipliers or not comparators:
        return "not testable here (05_lm_summary has no RoPE rows past 1x or no traditional encoding)", {
            "summary": "no RoPE rows past 1x or no sinusoidal/learned rows"
        }
    failed = _gate_check(gates, ["rope", *comparators], kind="lm")
    if failed:
        return failed
    nope_ok = _reference_ok(lm, gates, "nope", ev)
    for mode in sorted(lm["mode"].unique()):
        for m in multipliers:
            rope = _lm_estimate(lm, "rope", mode, m)
            if rope is None:
                continue
            for comp in comparators:
                other = _lm_estimate(lm, comp, mode, m)
                if other is None:
                    continue
                outcome = compare(rope, other, lower_is_better=True)
                outcomes.append(outcome)
                ev[f"{mode} {m:g}x: rope ppl"] = rope.mean
                ev[f"{mode} {m:g}x: {comp} ppl"] = other.mean
                ev[f"{mode} {m:g}x: rope vs {comp}"] = outcome
    verdict = _tally(outcomes)
    top = max(multipliers)
    best = lm[np.isclose(lm["multiplier"], top) & (lm["mode"] == "nonoverlap")].dropna(subset=["ppl_mean"])
    if not best.empty:
        b = best.loc[best["ppl_mean"].idxmin()]
        ev[f"best encoding at {top:g}x (nonoverlap)"] = str(b["encoding"])
        ev[f"best ppl at {top:g}x (nonoverlap)"] = float(b["ppl_mean"])
    ev["cells won"] = f"{sum(o == 'better' for o in outcomes)} of {len(outcomes)}"
    rope_top = ev.get(f"nonoverlap {top:g}x: rope ppl", math.nan)
    sin_top = ev.get(f"nonoverlap {top:g}x: sinusoidal ppl", math.nan)
    learned_nan = [v for k, v in ev.items() if k.endswith(": learned ppl") and not np.isfinite(v)]
    summary = (
        f"RoPE beats sinusoidal/learned in {ev['cells won']} (mode, length) cells; at {top:g}x "
        f"(non-overlapping) ppl RoPE {rope_top:.2f} vs sinusoidal {sin_top:.2f}"
        + ("; learned positions are undefined past 1x" if learned_nan else "")
    )
    for mode in sorted(lm["mode"].unique()) if nope_ok else ():  # the no-position reference
        rope, nope = _lm_estimate(lm, "rope", mode, top), _lm_estimate(lm, "nope", mode, top)
        if rope is not None and nope is not None:
            ev[f"{mode} {top:g}x: nope ppl"] = nope.mean
            ev[f"{mode} {top:g}x: rope vs nope"] = compare(rope, nope, lower_is_better=True)
            if ev[f"{mode} {top:g}x: rope vs nope"] == "worse":
                summary += (
                    f"; at {top:g}x ({mode}) RoPE ({rope.mean:.2f}) is worse than no positions at all "
                    f"(NoPE {nope.mean:.2f})"
                )
    broken, ppl, nope_ppl = worse_than_nope(lm, "sinusoidal")
    if broken:
        summary += f"; our sinusoidal baseline is weak: worse than NoPE even at 1x (ppl {ppl:.2f} vs {nope_ppl:.2f})"
        if verdict == "supported":
            verdict = "supported (against a weak sinusoidal baseline: worse than NoPE even at 1x)"
    ev["summary"] = summary
    return verdict, ev


def _reference_ok(
    table: pd.DataFrame,
    gates: pd.DataFrame,
    encoding: str,
    ev: dict,
    *,
    task: str | None = None,
    kind: str | None = "lm",
) -> bool:
    """Whether a reference encoding (one that only adds a caveat) can be used: it is in ``table`` and
    one of its models passed its gate; a failed one is noted in ``ev``."""
    if not (table["encoding"] == encoding).any():
        return False
    if _passed_any(gates, encoding, task=task, kind=kind):
        return True
    ev[f"{encoding}: reference left out"] = "no model passed its gate"
    return False


def extension_settings(zero_shot: pd.DataFrame | None, finetune: pd.DataFrame | None) -> pd.DataFrame:
    """Every context-extension setting of notebook 06 past the training length, with its perplexity
    (mean over seeds) relative to plain RoPE at 1x.

    ``zero_shot`` is ``06_zero_shot_ppl.csv`` (a method's rows where the input length equals its factor
    times L; plain RoPE, ``method == "none"``, at every length), ``finetune`` is ``06_finetune.csv``
    (``metric == "ppl"``, fine-tuned settings, ``ft_steps > 0``). Only the language-model task's rows
    of base models that passed their gate (``passed_gate``) are used; no such row: an empty table.
    Columns ``setting, method, ft_steps, multiplier, ppl, ft_budget, ppl_1x, ratio`` (``ft_budget``: the
    fine-tune's share of pre-training tokens, NaN for a table without it or a setting without
    fine-tuning), sorted by multiplier then ratio.
    """
    rows, ppl_1x = [], math.nan
    if zero_shot is not None:
        _require_columns(zero_shot, ("method", "factor", "multiplier", "ppl"), "06_zero_shot_ppl")
        zs = _passed_rows(_lm_rows(_single_profile(zero_shot, "06_zero_shot_ppl")))
        ppl_1x = float(zs[(zs["method"] == "none") & np.isclose(zs["multiplier"], 1.0)]["ppl"].mean())
        own_length = (zs["method"] == "none") | np.isclose(zs["multiplier"], zs["factor"])
        past = zs[(zs["multiplier"] > 1 + 1e-9) & own_length]
        for (method, m), g in past.groupby(["method", "multiplier"]):
            rows.append({"method": method, "ft_steps": 0, "multiplier": float(m), "ppl": float(g["ppl"].mean())})
    if finetune is not None:
        _require_columns(finetune, ("method", "ft_steps", "multiplier", "metric", "value"), "06_finetune")
        ft = _passed_rows(_lm_rows(_single_profile(finetune, "06_finetune")))
        ft = ft[ft["metric"] == "ppl"]
        if not np.isfinite(ppl_1x) and len(ft):
            base = ft[(ft["method"] == "none") & (ft["ft_steps"] == 0) & np.isclose(ft["multiplier"], 1.0)]
            ppl_1x = float(base["value"].mean())
        tuned = ft[(ft["multiplier"] > 1 + 1e-9) & ((ft["ft_steps"] > 0) | (zero_shot is None))]
        for (method, steps, m), g in tuned.groupby(["method", "ft_steps", "multiplier"]):
            budget = float(g["ft_budget"].iloc[0]) if "ft_budget" in g else math.nan
            rows.append(
                {
                    "method": method,
                    "ft_steps": int(steps),
                    "multiplier": float(m),
                    "ppl": float(g["value"].mean()),
                    "ft_budget": budget,
                }
            )
    out = pd.DataFrame(rows, columns=["method", "ft_steps", "multiplier", "ppl", "ft_budget"])
    name = out["method"].map(lambda m: "plain RoPE" if m == "none" else str(m))
    labels = [
        (f"{n} + {k} fine-tune steps" + (f" ({100 * b:.3g}% of pre-training)" if np.isfinite(b) else ""))
        if k
        else f"{n}, no fine-tune"
        for n, k, b in zip(name, out["ft_steps"], out["ft_budget"])
    ]
    out.insert(0, "setting", labels)
    out["ppl_1x"] = ppl_1x
    out["ratio"] = out["ppl"] / ppl_1x
    return out.sort_values(["multiplier", "ratio"]).reset_index(drop=True)


def _extension_condition(zero_shot: pd.DataFrame | None, finetune: pd.DataFrame | None, tol: float) -> dict:
    """The best setting of notebook 06 at each multiplier, and which ones hold quality within ``tol``."""
    settings = extension_settings(zero_shot, finetune)
    out: dict[str, Any] = {}
    if settings.empty:
        out["_held"] = []
        return out
    out["06: plain RoPE ppl at 1x"] = float(settings["ppl_1x"].iloc[0])
    held = []
    for m, g in settings.groupby("multiplier"):
        best = g.iloc[0]  # sorted by ratio
        out[f"06: best at {m:g}x"] = best["setting"]
        out[f"06: best ppl ratio at {m:g}x"] = float(best["ratio"])
        plain = g[(g["method"] == "none") & (g["ft_steps"] == 0)]
        if not plain.empty:
            out[f"06: plain RoPE ppl ratio at {m:g}x"] = float(plain["ratio"].iloc[0])
        label = str(best["setting"])
        same_ft = g[(g["method"] == "none") & (g["ft_steps"] == best["ft_steps"])]
        if best["ft_steps"] > 0 and best["method"] != "none" and not same_ft.empty:
            plain_ft = float(same_ft["ratio"].iloc[0])
            out[f"06: plain RoPE + {int(best['ft_steps'])} fine-tune steps, ratio at {m:g}x"] = plain_ft
            label += f"; plain RoPE fine-tuned as long: x{plain_ft:.3f}"
        if best["ratio"] <= 1 + tol:
            held.append((float(m), label, float(best["ratio"])))
    out["_held"] = held
    return out


def verdict_no_quality_loss(
    lm_summary: pd.DataFrame | None,
    zero_shot: pd.DataFrame | None = None,
    finetune: pd.DataFrame | None = None,
    gates: pd.DataFrame | None = None,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[str, dict]:
    """C2: does RoPE's perplexity stay within ``quality_tolerance`` of its 1x value past the training length?

    Cells: (mode, multiplier > 1) of plain RoPE (05). If plain RoPE loses quality somewhere and one of
    notebook 06's context-extension settings (``06_zero_shot_ppl.csv``, ``06_finetune.csv``, rows of
    base models that passed their gate) holds quality, the verdict is "partly supported" with that
    condition. Not testable when no RoPE language model passed its gate (``04_gates``).
    """
    missing = _missing(**{"05_lm_summary": lm_summary, "04_gates": gates})
    if missing:
        return missing
    tol = thresholds.quality_tolerance
    _require_columns(lm_summary, _LM_COLUMNS, "05_lm_summary")
    if not (lm_summary["encoding"] == "rope").any():
        return "not testable here (05_lm_summary has no RoPE rows)", {"summary": "no RoPE rows"}
    failed = _gate_check(gates, ["rope"], kind="lm")
    if failed:
        return failed
    ratios = _beyond(ppl_ratios(_single_profile(lm_summary, "05_lm_summary"), "rope"))
    if ratios.empty:
        return "not testable here (05_lm_summary has no RoPE rows past 1x)", {"summary": "no RoPE rows past 1x"}
    ok = ratios["ratio"] <= 1 + tol
    ev: dict[str, Any] = {f"{r.mode} {r.multiplier:g}x: rope ppl / 1x": r.ratio for r in ratios.itertuples()}
    ev["tolerance"] = tol
    worst = ratios.loc[ratios["ratio"].idxmax()]
    if ok.all():
        verdict = "supported"
    elif not ok.any():
        verdict = "contradicted"
    else:
        held = ratios[ok]
        verdict = (
            "partly supported (only at " + ", ".join(f"{r.multiplier:g}x {r.mode}" for r in held.itertuples()) + ")"
        )
    condition = ""
    if zero_shot is None and finetune is None:
        ev["condition (06)"] = missing_verdict("06_zero_shot_ppl.csv")
    elif not ok.all():
        cond = _extension_condition(zero_shot, finetune, tol)
        held = cond.pop("_held")
        ev.update(cond)
        if held:
            top = max(held)
            setting, _, plain_note = top[1].partition("; ")
            condition = (
                f"; with context extension it holds up to {top[0]:g}x ({setting}: ppl x{top[2]:.3f} "
                f"of plain RoPE at 1x{'; ' + plain_note if plain_note else ''})"
            )
            if verdict_category(verdict) == "contradicted":
                verdict = f"partly supported (only with context extension: {setting})"
        else:
            best = {k: v for k, v in ev.items() if k.startswith("06: best ppl ratio")}
            shown = ", ".join(f"{k.split(' at ')[-1]} x{v:.2f}" for k, v in best.items())
            condition = f"; no context-extension setting of 06 stays within the tolerance either (best: {shown})"
    ev["summary"] = (
        f"plain RoPE ppl rises to x{worst['ratio']:.2f} of its 1x value at {worst['multiplier']:g}x "
        f"({worst['mode']}); tolerance {tol:.0%}{condition}"
    )
    return verdict, ev


def verdict_long_range_dependencies(
    retrieval: pd.DataFrame | None,
    gates: pd.DataFrame | None = None,
    *,
    model_head_dim: int = 32,
    base: float = 10_000.0,
    train_length: int | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[str, dict]:
    """C3: does RoPE keep far-apart tokens connected? Retrieval accuracy of the RoPE model by distance.

    Per task: short vs long distances at the training length (split at the median distance), and
    distances longer than any seen at 1x (longer inputs). Theory in the evidence: RoFormer's bound
    ``B(r)`` (``ropelib.analysis.decay_bound``) and the mean score of Gaussian q, k (Barbero et al.).
    Only the rows of RoPE models that passed their gate (``passed_gate``); not testable when, on a
    retrieval task, no RoPE model passed (``04_gates``).
    """
    missing = _missing(**{"05_retrieval": retrieval, "04_gates": gates})
    if missing:
        return missing
    _require_columns(retrieval, ("encoding", "task", "multiplier", "distance", "accuracy"), "05_retrieval")
    ret = _single_profile(retrieval, "05_retrieval")
    ret = ret[ret["encoding"] == "rope"]
    failures: dict[str, list] = {}
    for task in sorted(map(str, ret["task"].unique())):
        for enc, models in gate_failures(gates, ["rope"], task=task).items():
            failures.setdefault(enc, []).extend(models)
    if failures:
        return gate_verdict(failures)
    ret = _passed_rows(ret)
    if "status" in ret.columns:
        ret = ret[ret["status"] == "ok"]
    ev: dict[str, Any] = {}
    L = train_length or (int(ret["train_length"].iloc[0]) if "train_length" in ret.columns and len(ret) else None)
    if L:
        r = np.array([0, L, 8 * L], dtype=np.float64)
        B = A.decay_bound(r, model_head_dim, base)
        ev.update({"theory: B(0)": float(B[0]), f"theory: B({L})": float(B[1]), f"theory: B({8 * L})": float(B[2])})
        mean, _ = A.score_statistics(r, model_head_dim, base)
        ev["theory: mean Gaussian score at any r"] = float(np.max(np.abs(mean)))
    verdicts, notes = [], []
    for task, group in ret.groupby("task"):
        at_1x = group[np.isclose(group["multiplier"], 1.0)]
        if at_1x.empty:
            continue
        split = float(at_1x["distance"].median())
        near = at_1x[at_1x["distance"] <= split]["accuracy"].mean()
        far = at_1x[at_1x["distance"] > split]["accuracy"].mean()
        beyond_rows = group[group["distance"] > at_1x["distance"].max()]
        beyond = beyond_rows["accuracy"].mean() if not beyond_rows.empty else math.nan
        ev[f"{task}: accuracy at 1x, distance <= {split:g}"] = float(near)
        ev[f"{task}: accuracy at 1x, distance > {split:g}"] = float(far)
        ev[f"{task}: accuracy at distances > {at_1x['distance'].max():g} (longer inputs)"] = float(beyond)
        if not near >= thresholds.min_learned_accuracy:
            verdicts.append(f"not testable here (the RoPE model did not learn {task}: accuracy {near:.2f})")
            notes.append(f"{task}: not learned ({near:.2f})")
            continue
        keep = thresholds.retention_fraction * near
        if np.isfinite(far) and far < keep:
            verdicts.append("contradicted")
            notes.append(f"{task}: {near:.2f} near vs {far:.2f} far even within the training length")
        elif not np.isfinite(beyond):
            verdicts.append("partly supported (beyond the training length not measured)")
            notes.append(f"{task}: {near:.2f} near, {far:.2f} far at 1x")
        elif beyond >= keep:
            verdicts.append("supported")
            notes.append(f"{task}: {near:.2f} near, {far:.2f} far, {beyond:.2f} past the training distances")
        else:
            verdicts.append("partly supported (only within the training length)")
            notes.append(f"{task}: {far:.2f} at far distances within the training length, {beyond:.2f} beyond")
    if not verdicts:
        return "not testable here (no RoPE retrieval rows at 1x in 05_retrieval)", {**ev, "summary": "no RoPE rows"}
    testable = [v for v in verdicts if verdict_category(v) != "not testable here"]
    if not testable:
        verdict = verdicts[0]
    elif len({verdict_category(v) for v in testable}) == 1:
        verdict = testable[0]
    else:
        verdict = "partly supported (differs between tasks)"
    bound = (
        (
            f"; RoFormer's own bound falls from {ev['theory: B(0)']:.1f} to {ev[f'theory: B({L})']:.1f} at r={L} "
            f"(it argues decay, not retention)"
        )
        if L
        else ""
    )
    ev["summary"] = "; ".join(notes) + bound
    return verdict, ev


def verdict_blog_formula(
    *, length: int = 64, d_model: int = 32, seed: int = 0, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[str, dict]:
    """C4: is the post's sin/cos vector per position RoPE? Compared with the sinusoidal table, RoPE's
    angles, and the relative-position property of adding it vs rotating with it."""
    blog = blog_formula_table(length, d_model)  # (P, d)
    sin_table = sinusoidal_table(length, d_model).double().numpy()  # (P, d)
    inv_freq, _ = rope_frequencies({"rope_type": "default", "rope_theta": 10_000.0}, d_model)
    angle = np.arange(length, dtype=np.float64)[:, None] * inv_freq.double().numpy()[None, :]  # (P, d/2)
    rope_pairs = np.stack([np.sin(angle), np.cos(angle)], axis=-1).reshape(length, d_model)
    dev = relative_position_check(length, d_model, seed)
    ev = {
        "max |blog formula - sinusoidal table|": float(np.abs(blog - sin_table).max()),
        "max |blog formula - sin/cos of RoPE's angles|": float(np.abs(blog - rope_pairs).max()),
        "Toeplitz deviation, vectors added (sinusoidal)": dev["sinusoidal"],
        "Toeplitz deviation, q/k rotated (RoPE)": dev["rope"],
    }
    is_sinusoidal = ev["max |blog formula - sinusoidal table|"] <= thresholds.formula_atol
    differs = dev["sinusoidal"] >= thresholds.absolute_min_deviation and dev["rope"] <= thresholds.relative_tolerance
    if is_sinusoidal and differs:
        verdict = "contradicted"
    elif is_sinusoidal:
        verdict = "partly supported"
    else:
        verdict = "not testable here (the formula matches neither table)"
    diff = ev["max |blog formula - sinusoidal table|"]
    ev["summary"] = (
        f"the formula is the sinusoidal table (max difference {diff:.0e}); "
        f"RoPE uses the same angles but rotates q and k: added, the scores depend on absolute "
        f"positions (Toeplitz deviation {dev['sinusoidal']:.2f}), rotated they do not ({dev['rope']:.0e})"
    )
    return verdict, ev


def worse_than_nope(lm_summary: pd.DataFrame, encoding: str, mode: str = "nonoverlap") -> tuple[bool, float, float]:
    """Whether ``encoding``'s 1x perplexity is significantly worse (CIs apart) than NoPE's, the model with
    no positional information at all — then the encoding did not learn to use positions, and a flat
    curve past the training length says nothing about extrapolation. Returns ``(worse, its ppl, NoPE's)``;
    ``(False, …, nan)`` when there is no NoPE row. ``worse`` is False when either 1x value is undefined
    (NaN: ``05_lm_summary`` is over the models that passed their gate, NaN when none did), so a model
    that failed its gate never counts as worse or better than NoPE."""
    mine, nope = _lm_estimate(lm_summary, encoding, mode, 1.0), _lm_estimate(lm_summary, "nope", mode, 1.0)
    if mine is None or nope is None:
        return False, math.nan if mine is None else mine.mean, math.nan
    if not (mine.defined and nope.defined):
        return False, mine.mean, nope.mean
    return compare(mine, nope, lower_is_better=True) == "worse", mine.mean, nope.mean


def position_use(without_positions: pd.DataFrame | None, encoding: str) -> tuple[float, float] | None:
    """``(mean 1x ppl as trained, mean 1x ppl with the positional encoding removed)`` of ``encoding``'s
    language models from ``05_without_positions.csv`` (the same weights evaluated without positions;
    rows with ``metric == "ppl"``, columns ``as_trained`` and ``without_positions``), over the models that
    passed their gate (``passed_gate``); ``None`` without such rows."""
    if without_positions is None:
        return None
    _require_columns(
        without_positions, ("encoding", "metric", "as_trained", "without_positions"), "05_without_positions"
    )
    rows = without_positions[(without_positions["encoding"] == encoding) & (without_positions["metric"] == "ppl")]
    rows = _passed_rows(rows)
    if rows.empty:
        return None
    return float(rows["as_trained"].mean()), float(rows["without_positions"].mean())


def _barely_uses_positions(without_positions: pd.DataFrame | None, encoding: str, tol: float, ev: dict) -> str:
    """A caveat (or ``""``) when removing ``encoding``'s position vectors changes its 1x perplexity by at most
    ``tol``: such a model reads little from its positions, so a flat curve past the training length is
    weak evidence that the encoding extrapolates. Adds the numbers to ``ev``."""
    use = position_use(without_positions, encoding)
    if use is None:
        return ""
    ppl, stripped = use
    ev[f"{encoding} ppl at 1x without its position vectors"] = stripped
    change = stripped / ppl - 1.0
    if change > tol:
        return ""
    return (
        f"a weak test: removing the position vectors from our {encoding} models changes their 1x perplexity "
        f"by {change:+.1%} ({ppl:.2f} -> {stripped:.2f}), so they barely use them"
    )


def _degradation_cells(lm: pd.DataFrame, encoding: str, tol: float) -> tuple[pd.DataFrame, dict]:
    ratios = _beyond(ppl_ratios(lm, encoding))
    ev = {f"{r.mode} {r.multiplier:g}x: {encoding} ppl / 1x": r.ratio for r in ratios.itertuples()}
    return ratios, ev


def verdict_sinusoidal_extrapolates(
    lm_summary: pd.DataFrame | None,
    without_positions: pd.DataFrame | None = None,
    gates: pd.DataFrame | None = None,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[str, dict]:
    """C5: does the sinusoidal model keep its 1x perplexity (within ``quality_tolerance``) on longer inputs?

    With ``05_without_positions.csv`` (optional): when removing the sinusoids barely changes the 1x
    perplexity, the verdict carries the caveat that the test is weak (``_barely_uses_positions``).
    Not testable when no sinusoidal language model passed its gate (``04_gates``); NoPE, the reference
    of the weak-baseline check, is left out when none of its models passed."""
    missing = _missing(**{"05_lm_summary": lm_summary, "04_gates": gates})
    if missing:
        return missing
    lm = _single_profile(lm_summary, "05_lm_summary")
    _require_columns(lm, _LM_COLUMNS, "05_lm_summary")
    if not (lm["encoding"] == "sinusoidal").any():
        return "not testable here (05_lm_summary has no sinusoidal rows)", {"summary": "no sinusoidal rows"}
    failed = _gate_check(gates, ["sinusoidal"], kind="lm")
    if failed:
        return failed
    ratios, ev = _degradation_cells(lm, "sinusoidal", thresholds.quality_tolerance)
    if ratios.empty:
        return "not testable here (no sinusoidal rows past 1x)", {"summary": "no sinusoidal rows past 1x"}
    ok = ratios["ratio"] <= 1 + thresholds.quality_tolerance
    verdict = "supported" if ok.all() else "contradicted" if not ok.any() else "partly supported"
    if _reference_ok(lm, gates, "nope", ev):
        nope = _beyond(ppl_ratios(lm, "nope"))
        ev.update({f"{r.mode} {r.multiplier:g}x: nope ppl / 1x": r.ratio for r in nope.itertuples()})
    worst = ratios.loc[ratios["ratio"].idxmax()]
    ev["summary"] = (
        f"sinusoidal ppl reaches x{worst['ratio']:.2f} of its 1x value at {worst['multiplier']:g}x "
        f"({worst['mode']}); within {thresholds.quality_tolerance:.0%} in {int(ok.sum())} of {len(ok)} "
        f"cells"
    )
    broken, ppl, nope_ppl = worse_than_nope(lm, "sinusoidal")
    ev["sinusoidal ppl at 1x"], ev["nope ppl at 1x"] = ppl, nope_ppl
    if broken:
        verdict = (
            f"not testable here (our sinusoidal model is worse than NoPE at the training length: ppl "
            f"{ppl:.2f} vs {nope_ppl:.2f}, so its flat curve does not show extrapolation)"
        )
        ev["summary"] += f"; but at 1x it is worse than no positional encoding (ppl {ppl:.2f} vs NoPE {nope_ppl:.2f})"
        return verdict, ev
    caveat = _barely_uses_positions(without_positions, "sinusoidal", thresholds.quality_tolerance, ev)
    if caveat:
        verdict += f" ({caveat})"
        ev["summary"] += f"; {caveat}"
    return verdict, ev


def verdict_traditional_decline(
    lm_summary: pd.DataFrame | None,
    without_positions: pd.DataFrame | None = None,
    gates: pd.DataFrame | None = None,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[str, dict]:
    """C10: do traditional encodings decline past the training length? Sinusoidal perplexity above
    ``1 + quality_tolerance`` times its 1x value, learned undefined (a decline to nothing). The caveat of
    C5 (``05_without_positions.csv``, optional) is added when the sinusoidal models barely use positions.
    Not testable when the sinusoidal or the learned encoding (those in the table) has no language model
    that passed its gate (``04_gates``)."""
    missing = _missing(**{"05_lm_summary": lm_summary, "04_gates": gates})
    if missing:
        return missing
    lm = _single_profile(lm_summary, "05_lm_summary")
    _require_columns(lm, _LM_COLUMNS, "05_lm_summary")
    failed = _gate_check(gates, [e for e in TRADITIONAL if (lm["encoding"] == e).any()], kind="lm")
    if failed:
        return failed
    declines, ev, why = [], {}, ""
    if (lm["encoding"] == "sinusoidal").any():
        ratios, ev = _degradation_cells(lm, "sinusoidal", thresholds.quality_tolerance)
        broken, ppl, nope_ppl = worse_than_nope(lm, "sinusoidal")
        if broken:  # a model that never learned to use its positions cannot show whether they extrapolate
            why = f"sinusoidal left out: worse than NoPE at 1x, ppl {ppl:.2f} vs {nope_ppl:.2f}"
        else:
            declines += list(ratios["ratio"] > 1 + thresholds.quality_tolerance)
    if (lm["encoding"] == "learned").any():
        learned = _beyond(ppl_ratios(lm, "learned"))
        ev["learned: cells past 1x without a value"] = int(learned["ratio"].isna().sum())
        declines += [bool(np.isnan(x) or x > 1 + thresholds.quality_tolerance) for x in learned["ratio"]]
    if not declines:
        return f"not testable here (no usable traditional rows past 1x{'; ' + why if why else ''})", {
            **ev,
            "summary": f"no usable sinusoidal/learned rows past 1x{'; ' + why if why else ''}",
        }
    verdict = "supported" if all(declines) else "contradicted" if not any(declines) else "partly supported"
    caveat = "" if why else _barely_uses_positions(without_positions, "sinusoidal", thresholds.quality_tolerance, ev)
    if why:
        verdict += f" (learned positions only; {why})"
    elif caveat:
        verdict += f" (sinusoidal is {caveat})"
    ev["summary"] = (
        f"traditional encodings lose quality (or are undefined) in {sum(declines)} of {len(declines)} "
        f"(encoding, mode, length) cells past 1x{'; ' + why if why else ''}"
        f"{'; sinusoidal is ' + caveat if caveat else ''}"
    )
    return verdict, ev


_SUMMARY_COLUMNS = ("encoding", "task", "metric", "mean", "ci_low", "ci_high")
#: 04_summary metrics of in-distribution quality -> lower is better (``loss``: the LM's test loss at L)
_QUALITY_METRICS = {"loss": True, "accuracy": False}
#: bootstrap seed of an accuracy interval recomputed from the passing seeds (notebook 04's ``eval_seed``)
BOOTSTRAP_SEED = 12345


def _summary_estimate(
    summary: pd.DataFrame, encoding: str, task: str, metric: str, gates: pd.DataFrame | None = None
) -> Estimate | None:
    """The ``04_summary`` estimate of one (encoding, task, metric), or ``None`` without a row.

    ``04_summary`` is over every seed (``n_passed`` of them passed their gate). When some seeds failed
    and ``gates`` is given, the estimate is recomputed from the passing rows of ``04_gates``: a Student-t
    interval for ``loss`` / ``ppl`` / ``context_gain`` (``ropelib.stats.mean_ci``), ``accuracy_ci`` of the
    counts for ``accuracy`` (as notebook 04 computes them); none passed: an undefined (NaN) estimate.
    """
    rows = summary[(summary["encoding"] == encoding) & (summary["task"] == task) & (summary["metric"] == metric)]
    if rows.empty:
        return None
    r = rows.iloc[0]
    n_seeds = int(r.get("n_seeds", 1))
    row = Estimate(float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]), n_seeds)
    n_passed = r.get("n_passed", None)
    if gates is None or n_passed is None or pd.isna(n_passed) or int(n_passed) >= n_seeds:
        return row
    ok = _gate_rows(gates, encoding, task=task)
    ok = ok[_model_passed(ok)]
    if ok.empty:
        return Estimate(math.nan, math.nan, math.nan, 0)
    if metric == "accuracy":
        ci = accuracy_ci([(int(c), int(n)) for c, n in zip(ok["correct"], ok["n"])], seed=BOOTSTRAP_SEED)
        return Estimate(float(ci["mean"]), float(ci["ci_low"]), float(ci["ci_high"]), int(ci["n_seeds"]))
    if metric not in ok.columns:
        raise ValueError(f"04_gates has no column {metric!r} to recompute {encoding}/{task} over its passing seeds")
    mean, low, high, n = mean_ci(ok[metric].to_numpy(dtype=float))
    return Estimate(mean, low, high, n)


def _quality_cells(summary: pd.DataFrame, metrics: Mapping[str, bool]) -> list[tuple[str, str]]:
    """The (task, metric) cells of ``04_summary`` with a quality metric, sorted."""
    cells = summary[summary["metric"].isin(list(metrics))][["task", "metric"]].drop_duplicates()
    return sorted((str(t), str(m)) for t, m in cells.itertuples(index=False))


def _pairwise(
    summary: pd.DataFrame,
    subject: str,
    comparators: Sequence[str],
    metrics: Mapping[str, bool],
    gates: pd.DataFrame | None = None,
) -> tuple[list[str], dict]:
    _require_columns(summary, _SUMMARY_COLUMNS, "04_summary")
    outcomes, ev = [], {}
    for task, metric in _quality_cells(summary, metrics):
        a = _summary_estimate(summary, subject, task, metric, gates)
        if a is None:
            continue
        ev[f"{task} {metric}: {subject}"] = a.mean
        for comp in comparators:
            b = _summary_estimate(summary, comp, task, metric, gates)
            if b is None:
                continue
            outcome = compare(a, b, lower_is_better=metrics[metric])
            outcomes.append(outcome)
            ev[f"{task} {metric}: {comp}"] = b.mean
            ev[f"{task} {metric}: {subject} vs {comp}"] = outcome
    return outcomes, ev


def _pairwise_gate_failures(
    summary: pd.DataFrame, encodings: Sequence[str], metrics: Mapping[str, bool], gates: pd.DataFrame
) -> dict[str, list[tuple[str, int, str]]]:
    """``gate_failures`` over every task of ``04_summary``'s quality cells, for the encodings it has rows of."""
    failures: dict[str, list[tuple[str, int, str]]] = {}
    for task in sorted({t for t, _ in _quality_cells(summary, metrics)}):
        present = set(summary.loc[summary["task"] == task, "encoding"])
        for enc, models in gate_failures(gates, [e for e in encodings if e in present], task=task).items():
            failures.setdefault(enc, []).extend(models)
    return failures


def _pairwise_verdict(
    summary: pd.DataFrame | None,
    gates: pd.DataFrame | None,
    subject: str,
    comparators: Sequence[str],
    metrics: Mapping[str, bool],
    what: str,
) -> tuple[str, dict]:
    missing = _missing(**{"04_summary": summary, "04_gates": gates})
    if missing:
        return missing
    summary = _single_profile(summary, "04_summary")
    _require_columns(summary, _SUMMARY_COLUMNS, "04_summary")
    failures = _pairwise_gate_failures(summary, [subject, *comparators], metrics, gates)
    if failures:
        return gate_verdict(failures)
    outcomes, ev = _pairwise(summary, subject, comparators, metrics, gates)
    if not outcomes:
        return f"not testable here (04_summary has no {subject} vs {'/'.join(comparators)} rows)", {
            "summary": "no comparable rows"
        }
    verdict = _tally(outcomes)
    counts = {o: outcomes.count(o) for o in ("better", "worse", "tie")}
    ev["summary"] = (
        f"{subject} vs {'/'.join(comparators)} on {what}: significantly better in {counts['better']}, "
        f"worse in {counts['worse']}, tied in {counts['tie']} of {len(outcomes)} comparisons"
    )
    if "sinusoidal" in comparators:
        ev["summary"] += _weak_sinusoidal_note(summary, gates)
    return verdict, ev


def _weak_sinusoidal_note(summary: pd.DataFrame, gates: pd.DataFrame | None = None) -> str:
    """A caveat when the sinusoidal model's in-distribution test loss (language-model task) is worse than
    NoPE's (CIs apart); ``""`` when either has no model that passed its gate."""
    for task in sorted({str(t) for t in summary["task"] if is_lm_task(t)}):
        if gates is not None and gate_failures(
            gates,
            [e for e in ("sinusoidal", "nope") if ((summary["encoding"] == e) & (summary["task"] == task)).any()],
            task=task,
        ):
            continue
        sin, nope = (_summary_estimate(summary, e, task, "loss", gates) for e in ("sinusoidal", "nope"))
        if sin is None or nope is None or not (sin.defined and nope.defined):
            continue
        if compare(sin, nope, lower_is_better=True) == "worse":
            return (
                f"; caveat: our sinusoidal model is worse than NoPE at the training length "
                f"({task} test loss {sin.mean:.3f} vs {nope.mean:.3f}), a weak baseline"
            )
    return ""


def verdict_learned_richer(
    summary: pd.DataFrame | None, gates: pd.DataFrame | None = None, *, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[str, dict]:
    """C6: do learned absolute positions give better in-distribution quality than sinusoidal and RoPE?
    (``04_summary``: test loss of the language model, accuracy of the retrieval task; gated by ``04_gates``.)"""
    return _pairwise_verdict(
        summary,
        gates,
        "learned",
        ("sinusoidal", "rope"),
        _QUALITY_METRICS,
        "in-distribution quality (test loss, accuracy)",
    )


def paired_speed_ratio(throughput: pd.DataFrame, encoding: str, reference: str) -> Estimate | None:
    """Mean over rounds of ``tokens/s(encoding) / tokens/s(reference)`` in ``04_throughput.csv`` (the
    encodings are interleaved within a round, so a round's ratio cancels the machine's load), with a
    two-sided 95% Student-t CI over rounds (``scipy.stats.t``); ``None`` when either is absent."""
    from scipy import stats

    _require_columns(throughput, ("encoding", "round", "tokens_per_s"), "04_throughput")
    keys = [k for k in ("task", "seq_len", "batch_size", "round") if k in throughput.columns]
    a = throughput[throughput["encoding"] == encoding].set_index(keys)["tokens_per_s"]
    b = throughput[throughput["encoding"] == reference].set_index(keys)["tokens_per_s"]
    ratio = (a / b).dropna().to_numpy(dtype=np.float64)
    if ratio.size == 0:
        return None
    mean = float(ratio.mean())
    if ratio.size < 2:
        return Estimate(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.975, ratio.size - 1) * ratio.std(ddof=1) / math.sqrt(ratio.size))
    return Estimate(mean, mean - half, mean + half, int(ratio.size))


def verdict_rope_faster(
    throughput: pd.DataFrame | None, *, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[str, dict]:
    """C7: is RoPE's training throughput (tokens/s) higher than sinusoidal's and learned's?

    From ``04_throughput.csv``: per-round speed ratios RoPE / comparator, "better" when the CI of the mean
    ratio lies above 1, "worse" when below (tallied as in the module docstring).
    """
    missing = _missing(**{"04_throughput": throughput})
    if missing:
        return missing
    tp = _single_profile(throughput, "04_throughput")
    outcomes, ev = [], {}
    for comp in (*TRADITIONAL, "nope"):
        ratio = paired_speed_ratio(tp, "rope", comp)
        if ratio is None:
            continue
        lo, hi = ratio.interval
        ev[f"rope / {comp} tokens per s"] = ratio.mean
        ev[f"rope / {comp}: 95% CI"] = f"{lo:.3f}–{hi:.3f} ({ratio.n_seeds} rounds)"
        if comp in TRADITIONAL:
            outcomes.append(compare(ratio, Estimate(1.0), lower_is_better=False))
    if not outcomes:
        verdict = "not testable here (04_throughput has no rope vs sinusoidal/learned rows)"
        return verdict, {**ev, "summary": "no comparable rows"}
    med = tp.groupby("encoding")["tokens_per_s"].median()
    ev.update({f"median tokens per s: {e}": float(med[e]) for e in ("rope", *TRADITIONAL, "nope") if e in med.index})
    verdict = _tally(outcomes)
    shown = ", ".join(
        f"x{ev[f'rope / {c} tokens per s']:.3f} of {c}" for c in TRADITIONAL if f"rope / {c} tokens per s" in ev
    )
    ev["summary"] = f"RoPE's training throughput is {shown} (paired rounds; below 1 = slower)"
    return verdict, ev


def verdict_rope_outperforms(
    summary: pd.DataFrame | None, gates: pd.DataFrame | None = None, *, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[str, dict]:
    """C8: is RoPE's in-distribution quality better than sinusoidal's and learned's on every task?
    (``04_summary``: test loss of the language model, accuracy of the retrieval task; gated by ``04_gates``.)"""
    return _pairwise_verdict(
        summary, gates, "rope", TRADITIONAL, _QUALITY_METRICS, "in-distribution quality (test loss, accuracy)"
    )


def verdict_relative_position(
    *, length: int = 64, head_dim: int = 32, seed: int = 0, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[str, dict]:
    """C9: does RoPE make scores depend on relative position only? (Toeplitz deviation, no tables)."""
    dev = relative_position_check(length, head_dim, seed)
    ev = {f"Toeplitz deviation (relative): {k}": v for k, v in dev.items()}
    rope_rel = dev["rope"] <= thresholds.relative_tolerance
    verdict = "supported" if rope_rel else "contradicted"
    ev["summary"] = (
        f"one fixed q, k at every (m, n): RoPE's scores are constant along diagonals to {dev['rope']:.0e} "
        f"(float32), sinusoidal {dev['sinusoidal']:.2f}, learned {dev['learned']:.2f}"
    )
    return verdict, ev


def verdict_applications(*, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[str, dict]:
    """C11: applications (translation, summarisation, speech, vision): no such task in this collection."""
    return "not testable here (no translation, speech or vision task in this collection)", {
        "summary": "this collection trains tiny character-level and synthetic-task models only"
    }


# ---------------------------------------------------------------------------------------------
# the claims
# ---------------------------------------------------------------------------------------------
def _alibi(enc: str, length: int) -> str:
    return f"{published.ALIBI_TABLE1[length][enc]:g}"


@dataclass(frozen=True)
class Claim:
    """One checkable claim of the post.

    ``tables`` are the results files passed, in order, as positional arguments to ``check`` (``None``
    for a missing file); ``figures`` are ``(notebook, name)`` of the figures that show the evidence.
    """

    id: str
    short: str
    paraphrase: str
    section: str
    literature: str
    check: Callable[..., tuple[str, dict]]
    tables: tuple[str, ...] = ()
    figures: tuple[tuple[str, str], ...] = ()
    options: tuple[str, ...] = ()  # keyword options of ``check`` that the audit context may supply

    def figure_links(self, relative_to: str = "..") -> list[str]:
        """Markdown links ``[name](../figures/<notebook>/<name>.png)`` of the figures that exist."""
        return [
            f"[{nb}/{name}]({relative_to}/figures/{nb}/{name}.png)"
            for nb, name in self.figures
            if (figures_dir() / nb / f"{name}.png").exists()
        ]


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "C1",
        "RoPE extrapolates past the training length better than traditional encodings",
        "Rotating queries and keys lets a model extrapolate beyond its training context more effectively "
        "than sinusoidal or learned absolute positions.",
        "Introduction to Rotary Positional Embedding",
        f"ALiBi paper Table 1 (arXiv 2108.12409, trained at 512): at 2512 tokens rotary {_alibi('rope', 2512)} vs "
        f"sinusoidal {_alibi('sinusoidal', 2512)} ppl — better than sinusoidal, but far behind T5 "
        f"({_alibi('t5', 2512)}) and ALiBi ({_alibi('alibi', 2512)}). RoFormer (arXiv 2104.09864) does not test "
        f"extrapolation. Kazemnejad et al. (arXiv 2305.19466): MRR rotary {published.KAZEMNEJAD_MRR['rope']} "
        f"vs absolute {published.KAZEMNEJAD_MRR['learned']}, NoPE {published.KAZEMNEJAD_MRR['nope']}.",
        verdict_extrapolation_vs_traditional,
        ("05_lm_summary.csv", "04_gates.csv"),
        (("05_length_extrapolation", "perplexity_vs_length"),),
    ),
    Claim(
        "C2",
        "RoPE handles longer contexts without loss of quality",
        "A RoPE model keeps its output quality on contexts longer than it was trained on.",
        "Improvements Over Traditional Methods",
        f"ALiBi Table 1: rotary ppl {_alibi('rope', 512)} at 512 -> {_alibi('rope', 2512)} at 2512 -> "
        f"{_alibi('rope', 15512)} at 15512. PI (arXiv 2306.15595) Table 1: LLaMA-7B > 1000 ppl past 2048 with no "
        f"extension; with PI and 1000 fine-tune steps 6.95 at 8192. YaRN (arXiv 2309.00071): 400 fine-tune "
        f"steps for s = 16. Long contexts need an extension method and usually a short fine-tune.",
        verdict_no_quality_loss,
        ("05_lm_summary.csv", "06_zero_shot_ppl.csv", "06_finetune.csv", "04_gates.csv"),
        (
            ("05_length_extrapolation", "perplexity_vs_length"),
            ("05_length_extrapolation", "loss_by_position"),
            ("06_context_extension", "zero_shot_ppl"),
            ("06_context_extension", "finetune_curve"),
        ),
    ),
    Claim(
        "C3",
        "RoPE's periodicity retains long-range dependencies",
        "Because RoPE is periodic, tokens stay connected whatever their distance in a long sequence.",
        "Mechanisms of Rotary Positional Embedding",
        "RoFormer §3.4.3 argues the opposite property, a long-term decay of the bound B(r); PI (arXiv "
        "2306.15595 §2.2) calls that bound vacuous; Barbero et al. (arXiv 2410.06205, Props 3.1–3.2): no "
        "decay in expectation for Gaussian q, k. Liu et al. (arXiv 2310.05209): low-frequency pairs meet "
        "unseen angles past L. Kazemnejad et al.: a 1024-context rotary code LM's ppl explodes by 1400 tokens.",
        verdict_long_range_dependencies,
        ("05_retrieval.csv", "04_gates.csv"),
        (
            ("05_length_extrapolation", "accuracy_vs_length"),
            ("02_long_range_decay", "decay_bound_far"),
            ("02_long_range_decay", "bound_vs_scores"),
        ),
        options=("model_head_dim", "base"),
    ),
    Claim(
        "C4",
        "RoPE is a sin/cos vector per position",
        "RoPE gives each position the vector [sin(p/10000^(2j/d)), cos(p/10000^(2j/d))] as positional cues.",
        "Mechanisms of Rotary Positional Embedding",
        "That vector is the sinusoidal encoding of Vaswani et al. 2017 (arXiv 1706.03762 §3.5), added once "
        "to the embeddings. RoPE (RoFormer §3.2, eq. 14–16) multiplies q and k by rotation matrices R_m with "
        "the same angles, in every layer, and never touches the values.",
        verdict_blog_formula,
        (),
        (("01_relative_position", "score_heatmaps"),),
        options=("length", "d_model", "seed"),
    ),
    Claim(
        "C5",
        "Sinusoidal encodings extrapolate beyond the training length",
        "Fixed sinusoidal positions let a model generalise to sequences longer than those seen in training.",
        "Understanding Positional Embeddings",
        f"Vaswani et al. (§3.5) only hypothesised it. ALiBi Table 1: sinusoidal ppl {_alibi('sinusoidal', 512)} "
        f"at 512 -> {_alibi('sinusoidal', 1012)} at 1012 -> {_alibi('sinusoidal', 15512)} at 15512.",
        verdict_sinusoidal_extrapolates,
        ("05_lm_summary.csv", "05_without_positions.csv", "04_gates.csv"),
        (("05_length_extrapolation", "perplexity_vs_length"),),
    ),
    Claim(
        "C6",
        "Learned absolute embeddings capture richer relations",
        "A learned vector per position can capture more complex position relations and may improve performance.",
        "Understanding Positional Embeddings",
        "Vaswani et al. (§3.5): learned and sinusoidal gave nearly identical results. EleutherAI (2021), "
        "125M on OpenWebText2: val loss learned 2.809 vs rotary 2.759. A learned table has no vector past "
        "its last row, so it cannot extrapolate at all.",
        verdict_learned_richer,
        ("04_summary.csv", "04_gates.csv"),
        (("04_train_tiny_models", "in_distribution"),),
    ),
    Claim(
        "C7",
        "RoPE makes computation faster",
        "RoPE's efficiency gives faster computation, useful for real-time applications.",
        "Improvements Over Traditional Methods",
        f"ALiBi paper (V100, L=512): training words/s sinusoidal {published.ALIBI_SPEED['sinusoidal']:g}, "
        f"rotary {published.ALIBI_SPEED['rope']:g}. RoPE adds a rotation of q and k in every layer; "
        f"EleutherAI's ~30% is faster convergence (fewer steps), not faster computation.",
        verdict_rope_faster,
        ("04_throughput.csv",),
        (("04_train_tiny_models", "throughput"),),
    ),
    Claim(
        "C8",
        "RoPE outperforms traditional encodings on benchmarks",
        "Models with RoPE beat models with traditional positional encodings on several benchmarks.",
        "Improvements Over Traditional Methods",
        f"RoFormer: WMT14 En-De BLEU 27.3 -> 27.5. EleutherAI: val loss learned 2.809 / T5 2.801 / rotary "
        f"2.759 (125M, OWT2), 2.24 / 2.223 / 2.173 (1.4B, Pile). ALiBi Table 1 at the training length: "
        f"sinusoidal {_alibi('sinusoidal', 512)} vs rotary {_alibi('rope', 512)} (a tie).",
        verdict_rope_outperforms,
        ("04_summary.csv", "04_gates.csv"),
        (("04_train_tiny_models", "in_distribution"),),
    ),
    Claim(
        "C9",
        "RoPE encodes relative position",
        "The rotations let the model use relative rather than only absolute positional information.",
        "Introduction to Rotary Positional Embedding",
        "RoFormer §3.2 eq. 16: <R_m q, R_n k> depends on m - n only. Scaling methods that only change the "
        "frequencies keep it; dynamic NTK changes the scores of the same positions with the input length.",
        verdict_relative_position,
        (),
        (("01_relative_position", "score_heatmaps"),),
        options=("length", "head_dim", "seed"),
    ),
    Claim(
        "C10",
        "Traditional encodings decline markedly beyond the training length",
        "Fixed (sinusoidal or learned) positions lose much quality on sequences longer than in training "
        "(the post says the opposite of sinusoidal encodings in C5).",
        "Challenges with Traditional Positional Embeddings",
        f"ALiBi Table 1: sinusoidal ppl {_alibi('sinusoidal', 512)} -> {_alibi('sinusoidal', 1012)} at ~2x. "
        f"Kazemnejad et al.: absolute MRR {published.KAZEMNEJAD_MRR['learned']}, the lowest. Learned tables are "
        f"undefined past their length.",
        verdict_traditional_decline,
        ("05_lm_summary.csv", "05_without_positions.csv", "04_gates.csv"),
        (("05_length_extrapolation", "perplexity_vs_length"),),
    ),
    Claim(
        "C11",
        "RoPE improves translation, summarisation, speech and vision",
        "RoPE brings gains in machine translation, summarisation, speech recognition and video understanding.",
        "Applications in Various Domains",
        "RoFormer: WMT14 En-De BLEU 27.3 -> 27.5 (translation); the post cites no study for the others.",
        verdict_applications,
    ),
)


# ---------------------------------------------------------------------------------------------
# the audit
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimResult:
    """A claim with its verdict and evidence."""

    claim: Claim
    verdict: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str:
        return verdict_category(self.verdict)


def evaluate_claim(
    claim: Claim,
    tables: Mapping[str, pd.DataFrame | None],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    context: Mapping[str, Any] | None = None,
) -> ClaimResult:
    """Run one claim's verdict function on ``tables`` (file name -> DataFrame or None).

    ``context`` supplies keyword options the claim lists in ``options`` (e.g. ``head_dim``).
    """
    args = [tables.get(name) for name in claim.tables]
    kwargs = {k: v for k, v in (context or {}).items() if k in claim.options}
    verdict, evidence = claim.check(*args, thresholds=thresholds, **kwargs)
    verdict_category(verdict)  # validates
    return ClaimResult(claim, verdict, dict(evidence))


def audit(
    tables: Mapping[str, pd.DataFrame | None],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    context: Mapping[str, Any] | None = None,
    claims: Sequence[Claim] = CLAIMS,
) -> list[ClaimResult]:
    """Every claim's verdict. The trained RoPE model's head dim (``model_head_dim``, for C3's theory
    numbers) comes from ``04_runs.csv`` (``d_model / n_heads``) when that table is present and
    ``context`` does not set it."""
    ctx = dict(context or {})
    runs = tables.get("04_runs.csv")
    if "model_head_dim" not in ctx and runs is not None and {"d_model", "n_heads", "encoding"} <= set(runs.columns):
        rope = runs[runs["encoding"] == "rope"]
        if not rope.empty:
            ctx["model_head_dim"] = int(rope["d_model"].iloc[0]) // int(rope["n_heads"].iloc[0])
    return [evaluate_claim(c, tables, thresholds=thresholds, context=ctx) for c in claims]


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def verdict_table(results: Sequence[ClaimResult], *, links: bool = True) -> pd.DataFrame:
    """One row per claim: ``id, claim, section, verdict, evidence, figures, literature``."""
    rows = []
    for r in results:
        rows.append(
            {
                "id": r.claim.id,
                "claim": r.claim.short,
                "section": r.claim.section,
                "verdict": r.verdict,
                "evidence": str(r.evidence.get("summary", "")),
                "figures": ", ".join(r.claim.figure_links()) if links else "",
                "literature": r.claim.literature,
            }
        )
    return pd.DataFrame(rows)


def _md_cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def verdict_markdown(results: Sequence[ClaimResult], *, literature: bool = False) -> str:
    """The verdict table as a Markdown table (claim, section, verdict, evidence, figure links)."""
    table = verdict_table(results)
    columns = ["id", "claim", "section", "verdict", "evidence", "figures"] + (["literature"] if literature else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = [f"**{_md_cell(row[c])}**" if c == "verdict" else _md_cell(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evidence_frame(result: ClaimResult) -> pd.DataFrame:
    """A claim's evidence numbers as a one-column table (the summary left out)."""
    items = {k: v for k, v in result.evidence.items() if k != "summary"}
    return pd.DataFrame({"value": [_fmt(v) for v in items.values()]}, index=pd.Index(list(items), name="evidence"))


def write_verdicts(results: Sequence[ClaimResult], profile: str, filename: str = "07_claims.csv") -> Path:
    """Write the verdict table to ``results_dir()/<filename>`` (``ropelib.results.write_table``: schema
    checked, written atomically) and return the path.

    Columns ``profile, claim_id, claim, section, category, verdict, summary, evidence_json, figures,
    literature``; ``evidence_json`` holds every evidence number.
    """
    rows = []
    for r in results:
        evidence = {k: (_fmt(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.evidence.items()}
        rows.append(
            {
                "claim_id": r.claim.id,
                "claim": r.claim.short,
                "section": r.claim.section,
                "category": r.category,
                "verdict": r.verdict,
                "summary": r.evidence.get("summary", ""),
                "evidence_json": json.dumps(evidence, sort_keys=True, default=str),
                "figures": ";".join(f"{nb}/{name}" for nb, name in r.claim.figures),
                "literature": r.claim.literature,
            }
        )
    columns = [c for c in R.columns(filename) if c != "profile"]
    return R.write_table(pd.DataFrame(rows, columns=columns), filename, profile)
