"""The training-length sweep: does degradation past ``L`` collapse on the ``x L`` axis?

If an encoding fails past its training length because of *relative* position (distances or angles it
never saw), its perplexity ratio ``ppl(m L) / ppl(L)`` should depend on the multiplier ``m`` alone,
whatever ``L`` is: curves for ``L = 32, 64, 128, 256`` collapse onto one. If it fails at an *absolute*
number of tokens (a fixed budget of positions, or a fixed attention span), the curves separate. Press et
al. 2021 (ALiBi, arXiv 2108.12409, §4, Figure 1) train at 512, 1024 and 3072 tokens and read their
results in multiples of ``L`` this way; Kazemnejad et al. 2023 (arXiv 2305.19466) compare encodings
across training lengths on algorithmic tasks.

Each model is the profile's base language model of one encoding (``ropelib.base_models.base_spec``,
its tuned learning rate) trained at another length with the **same number of tokens**: batch size
``tokens_per_step / L`` for the same number of steps, so only the length changes. At the profile's own
length the model *is* the base model (same spec, same cache entry). Every model passes the same gates
before its numbers are used (``ropelib.protocols.gate_models`` at its own ``L``, the context gain on the
base models' early window: ``gate_lengths``).

* ``length_setup`` — the profile's setup with the LM task at another training length;
* ``length_specs`` / ``train_lengths`` / ``gate_lengths`` / ``length_grid`` — the runs, gates and perplexity
  at ``m L`` (non-overlapping windows of the test split, as notebook 05);
* ``collapse_table`` — per encoding and multiplier, the perplexity ratio at each ``L`` and its spread
  across ``L`` (``max / min``): near 1 when the curves collapse.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import memo
from .base_models import BaseSetup, base_spec, run_specs
from .extrapolation import lm_length_grid
from .protocols import gate_models, lm_task
from .runs import RunResult, RunSpec

__all__ = [
    "length_setup",
    "length_specs",
    "train_lengths",
    "gate_lengths",
    "length_grid",
    "collapse_table",
    "COLLAPSE_COLUMNS",
]

Cache = Callable[[str, Mapping[str, Any], Callable[[], Any]], Any]
#: runs keyed (encoding, train_length, seed)
Runs = Mapping[tuple[str, int, int], RunResult]


def length_setup(setup: BaseSetup, train_length: int) -> BaseSetup:
    """``setup`` with its LM task trained at ``train_length`` on the same tokens per step: batch size
    ``batch_size * L0 / train_length`` (``L0`` the profile's length), same steps. ValueError unless that
    batch size is a whole number >= 1."""
    if isinstance(train_length, bool) or not isinstance(train_length, (int, np.integer)) or train_length < 2:
        raise ValueError(f"train_length must be an integer >= 2, got {train_length!r}")
    name = lm_task(setup)
    ts = setup.task(name)
    tokens_per_step = ts.batch_size * ts.train_length
    if tokens_per_step % int(train_length):
        raise ValueError(
            f"train_length {train_length} does not divide the {tokens_per_step} tokens per step "
            f"({ts.batch_size} x {ts.train_length}); choose a divisor"
        )
    task = dataclasses.replace(ts, train_length=int(train_length), batch_size=tokens_per_step // int(train_length))
    return dataclasses.replace(setup, tasks=tuple(task if t.name == name else t for t in setup.tasks))


def length_specs(
    setup: BaseSetup,
    encodings: Iterable[str],
    lengths: Iterable[int],
    *,
    seeds: Iterable[int] | None = None,
    lrs: Mapping[tuple[str, str], float] | None = None,
    device: str = "auto",
) -> dict[tuple[str, int, int], RunSpec]:
    """Specs keyed ``(encoding, train_length, seed)``: each encoding's base LM (learning rate from ``lrs``,
    keyed ``(encoding, task)`` as ``protocols.tune_learning_rates`` returns it) at each length."""
    name = lm_task(setup)
    seeds = list(setup.seeds if seeds is None else seeds)
    lrs = dict(lrs or {})
    out = {}
    for L in lengths:
        s = length_setup(setup, L)
        for enc in encodings:
            for seed in seeds:
                out[(enc, int(L), int(seed))] = base_spec(s, enc, name, seed, device, lr=lrs.get((enc, name)))
    if not out:
        raise ValueError("no encodings, lengths or seeds given")
    return out


def train_lengths(
    specs: Mapping[tuple[str, int, int], RunSpec], jobs: int = 1
) -> dict[tuple[str, int, int], RunResult]:
    """Train (or read back) every spec of ``length_specs``; results under the same keys."""
    return run_specs(specs, jobs=jobs)


def gate_lengths(runs: Runs, setup: BaseSetup, *, cached: Cache = memo.cached) -> pd.DataFrame:
    """``protocols.gate_models`` per training length, one row per model with ``train_length``.

    The context gain (averaged over each encoding's seeds at that length) compares the same *absolute*
    early window at every length: the first ``L0 // 8`` positions, ``L0`` the profile's length (the base
    models' gate, unchanged at ``L0``), against the last half of the model's own window. The first eighth
    of a longer window would already hold more context (32 characters at ``L = 256``) and understate how
    much a long-context model gains from it."""
    name = lm_task(setup)
    early = max(1, setup.task(name).train_length // 8)
    tables = []
    for L in sorted({k[1] for k in runs}):
        mine = {(e, name, s): r for (e, length, s), r in runs.items() if length == L}
        tables.append(
            gate_models(mine, length_setup(setup, L), cached=cached, early_positions=min(early, L // 2)).assign(
                train_length=L
            )
        )
    if not tables:
        raise ValueError("no runs to gate")
    return pd.concat(tables, ignore_index=True)


def length_grid(
    runs: Runs,
    setup: BaseSetup,
    passed: set[tuple[str, int, int]],
    multipliers: Sequence[float],
    *,
    device: str = "cpu",
    cached: Cache = memo.cached,
) -> pd.DataFrame:
    """Test perplexity of every model at ``round(m L)`` of its own ``L``, non-overlapping windows
    (``extrapolation.lm_length_grid``); ``passed`` holds ``(encoding, train_length, seed)`` keys."""
    name = lm_task(setup)
    frames = []
    for L in sorted({k[1] for k in runs}):
        mine = {(e, name, s): r for (e, length, s), r in runs.items() if length == L}
        ok = {(e, name, s) for (e, length, s) in passed if length == L}
        frames.append(
            lm_length_grid(
                mine, length_setup(setup, L), ok, multipliers, modes=("nonoverlap",), device=device, cached=cached
            )
        )
    return pd.concat(frames, ignore_index=True)


#: columns of ``collapse_table``
COLLAPSE_COLUMNS = ["encoding", "multiplier", "train_length", "n_seeds", "ratio", "n_lengths", "spread"]


def collapse_table(grid: pd.DataFrame) -> pd.DataFrame:
    """One row per ``(encoding, multiplier, train_length)``: ``ratio``, the mean over the passing seeds of
    ``ppl(m L) / ppl(L)`` (each seed against its own 1x value), ``n_seeds``; and per ``(encoding,
    multiplier)`` ``n_lengths`` (training lengths with a value) and ``spread`` (``max / min`` of their
    ratios: 1 when the curves collapse on the ``x L`` axis; NaN with fewer than two lengths)."""
    ok = grid[grid.passed_gate.astype(bool) & grid.status.eq("ok")]
    per_seed = ok.pivot_table(index=["encoding", "train_length", "seed"], columns="multiplier", values="ppl")
    if per_seed.empty or 1.0 not in per_seed.columns:
        return pd.DataFrame(columns=COLLAPSE_COLUMNS)
    ratio = per_seed.div(per_seed[1.0], axis=0).stack().rename("ratio").reset_index()
    out = ratio.groupby(["encoding", "multiplier", "train_length"], as_index=False).agg(
        n_seeds=("ratio", "count"), ratio=("ratio", "mean")
    )
    span = (
        out.groupby(["encoding", "multiplier"])
        .ratio.agg(n_lengths="count", spread=lambda v: v.max() / v.min() if len(v) >= 2 else math.nan)
        .reset_index()
    )
    return out.merge(span, on=["encoding", "multiplier"])[COLLAPSE_COLUMNS]
