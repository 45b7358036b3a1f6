"""The length-extrapolation protocols of notebook 05: every trained model evaluated past its training length.

The comparison follows Press et al. 2021 (ALiBi, arXiv 2108.12409): train at ``L``, evaluate the
language model at ``m L`` for each multiplier ``m`` with non-overlapping windows (their Table 1) and with
sliding windows of a small stride (their Appendix B), and retrieval at the same lengths. Each function
returns a tidy table (``ropelib.results`` holds the schemas) with a ``passed_gate`` column from
``ropelib.protocols.gate_models``; the summaries use the passing models only.

* ``lm_length_grid`` — loss and perplexity at every length, both protocols (``05_lm_loss``);
* ``summarise_lm`` — seed means with Student-t intervals over the passing seeds (``05_lm_summary``);
* ``retrieval_grid`` — exact match by length and needle depth, with the task's position-blind floor
  (``05_retrieval``);
* ``accuracy_summary`` — per-seed exact-match counts pooled over depths, summarised with
  ``ropelib.stats.accuracy_ci`` (bootstrap over seeds and samples, in [0, 1]; ``05_accuracy_summary``);
* ``positions_removed`` — every language and retrieval model evaluated again at ``L`` with its
  positional encoding switched off (``ropelib.ablation.without_positions``; ``05_without_positions``).

``cached`` is ``ropelib.memo.cached`` or a notebook's ``memo.versioned(...)``; ``device`` (a string) enters
the cache keys only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import memo
from .ablation import without_positions
from .base_models import TASK_KINDS, BaseSetup
from .data import make_task
from .evaluate import exact_match_accuracy, lengths_for, lm_loss_at_lengths, retrieval_accuracy
from .protocols import GATE_SEED, split_tokens
from .runs import RunResult
from .stats import accuracy_ci, aggregate_seeds

__all__ = [
    "LM_COLUMNS",
    "RETRIEVAL_COLUMNS",
    "lm_length_grid",
    "summarise_lm",
    "retrieval_floor",
    "retrieval_grid",
    "accuracy_summary",
    "positions_removed",
]

Runs = Mapping[tuple[str, str, int], RunResult]
Cache = Callable[[str, Mapping[str, Any], Callable[[], Any]], Any]

#: columns of ``lm_length_grid``'s table (``05_lm_loss`` without ``profile``)
LM_COLUMNS = [
    "encoding",
    "task",
    "seed",
    "run_hash",
    "passed_gate",
    "train_length",
    "length",
    "multiplier",
    "mode",
    "stride",
    "loss",
    "ppl",
    "n_tokens",
    "n_windows",
    "min_context",
    "status",
    "reason",
]
#: columns of ``retrieval_grid``'s table (``05_retrieval`` without ``profile``)
RETRIEVAL_COLUMNS = [
    "encoding",
    "task",
    "seed",
    "run_hash",
    "passed_gate",
    "train_length",
    "length",
    "multiplier",
    "depth",
    "distance",
    "accuracy",
    "token_accuracy",
    "n_correct",
    "n_samples",
    "floor",
    "status",
    "reason",
]


def _tasks(setup: BaseSetup, runs: Runs, kind: str) -> list[str]:
    return [t for t in setup.tasks_of_kind(kind) if any(k[1] == t for k in runs)]


def lm_length_grid(
    runs: Runs,
    setup: BaseSetup,
    passed: set[tuple[str, str, int]],
    multipliers: Sequence[float],
    *,
    sliding_stride_fraction: float = 0.25,
    sliding_tokens: int = 16384,
    modes: Sequence[str] = ("nonoverlap", "sliding"),
    device: str = "cpu",
    cached: Cache = memo.cached,
) -> pd.DataFrame:
    """Loss and perplexity of every language model at ``round(m * L)`` for each multiplier, on the test
    split (its first ``setup.lm_eval_tokens``): non-overlapping windows over all of it (the same text at
    every length) and sliding windows of stride ``max(1, round(f L'))`` scoring the first
    ``sliding_tokens`` targets. One row per (model, length, mode) of ``modes``, ``LM_COLUMNS``."""
    if not 0.0 < sliding_stride_fraction <= 1.0:
        raise ValueError(f"sliding_stride_fraction must be in (0, 1], got {sliding_stride_fraction!r}")
    modes = tuple(modes) if not isinstance(modes, str) else (modes,)
    if not modes or any(m not in ("nonoverlap", "sliding") for m in modes):
        raise ValueError(f"modes must be a non-empty subset of ('nonoverlap', 'sliding'), got {modes!r}")
    rows = []
    for task in _tasks(setup, runs, "lm"):
        L = setup.task(task).train_length
        lengths = lengths_for(L, multipliers)
        keys = [k for k in runs if k[1] == task]
        tokens = split_tokens(runs[keys[0]].spec.task, "test", setup.lm_eval_tokens)
        for enc, _, seed in keys:
            r = runs[(enc, task, seed)]
            for mode in modes:
                for length in lengths:
                    if mode == "nonoverlap":  # every window of the test split
                        stride, cap = None, None
                    else:
                        stride, cap = max(1, int(round(sliding_stride_fraction * length))), sliding_tokens
                    df = cached(
                        "05_lm_loss",
                        {
                            "run": r.hash,
                            "device": device,
                            "length": length,
                            "mode": mode,
                            "stride": stride,
                            "max_tokens": cap,
                            "split": "test",
                            "lm_eval_tokens": setup.lm_eval_tokens,
                        },
                        lambda: lm_loss_at_lengths(
                            r.model, tokens, [length], mode, stride=stride, max_tokens=cap, batch_size=16
                        ),
                    )
                    rows.append(
                        df.assign(
                            encoding=enc,
                            task=task,
                            seed=seed,
                            run_hash=r.hash[:16],
                            passed_gate=(enc, task, seed) in passed,
                            train_length=L,
                            multiplier=length / L,
                        )
                    )
    return pd.concat(rows, ignore_index=True)[LM_COLUMNS] if rows else pd.DataFrame(columns=LM_COLUMNS)


def summarise_lm(lm: pd.DataFrame) -> pd.DataFrame:
    """Seed means and 95% Student-t intervals of loss and perplexity over the *passing* models, one row per
    (encoding, length, mode) of ``lm`` (every cell of the grid, NaN where no model passed), with
    ``n_seeds`` (passing models with a finite value there) and ``n_failed`` (models of that cell that
    failed their gate)."""
    keys = ["encoding", "train_length", "length", "multiplier", "mode"]
    passed = lm.passed_gate.astype(bool)
    ok = lm[passed]
    summary = aggregate_seeds(ok, keys, "loss", prefix="loss_").merge(
        aggregate_seeds(ok, keys, "ppl", prefix="ppl_").drop(columns="n_seeds"), on=keys
    )
    out = lm[keys].drop_duplicates().merge(summary, on=keys, how="left")
    out["n_seeds"] = out.n_seeds.fillna(0).astype(int)
    failed = lm.assign(failed=~passed).groupby(keys, as_index=False).failed.sum()
    out = out.merge(failed, on=keys, how="left").rename(columns={"failed": "n_failed"})
    out["n_failed"] = out.n_failed.fillna(0).astype(int)
    num = [c for c in out.columns if c.startswith(("loss_", "ppl_"))]
    out[num] = out[num].astype(float)
    cols = keys + [
        "n_seeds",
        "loss_mean",
        "loss_ci_low",
        "loss_ci_high",
        "ppl_mean",
        "ppl_ci_low",
        "ppl_ci_high",
        "n_failed",
    ]
    return out.sort_values(keys).reset_index(drop=True)[cols]


def retrieval_floor(task_obj: Any, length: int) -> float:
    """The task's position-blind floor at ``length`` (``PasskeyTask.position_blind_floor``)."""
    if getattr(task_obj, "digit_filler", False):
        return float(task_obj.position_blind_floor(length))
    return float(task_obj.position_blind_floor())


def retrieval_grid(
    runs: Runs,
    setup: BaseSetup,
    passed: set[tuple[str, str, int]],
    multipliers: Sequence[float],
    depths: Sequence[float],
    *,
    n_samples: int,
    seed: int,
    device: str = "cpu",
    cached: Cache = memo.cached,
) -> pd.DataFrame:
    """Exact match of every retrieval model at each length and needle depth (``n_samples`` sequences per
    cell, generator ``seed``), the needle-to-query ``distance`` of each cell and the task's ``floor`` at
    the training length. ``RETRIEVAL_COLUMNS``."""
    rows = []
    for task in _tasks(setup, runs, "retrieval"):
        L = setup.task(task).train_length
        keys = [k for k in runs if k[1] == task]
        task_obj = make_task(runs[keys[0]].spec.task)
        lengths = lengths_for(L, multipliers)
        distance = {
            (n, d): int(task_obj.sample(1, n, torch.Generator().manual_seed(0), depth=d).meta["distance"][0])
            for n in lengths
            for d in depths
        }
        floor = retrieval_floor(task_obj, L)
        for enc, _, sd in keys:
            r = runs[(enc, task, sd)]
            df = cached(
                "05_retrieval",
                {
                    "run": r.hash,
                    "device": device,
                    "lengths": lengths,
                    "depths": list(depths),
                    "samples": n_samples,
                    "seed": seed,
                },
                lambda: retrieval_accuracy(
                    r.model, task_obj, lengths, depths=list(depths), n_samples=n_samples, seed=seed
                ),
            )
            df["distance"] = [
                distance[(n, d)] if s == "ok" else np.nan for n, d, s in zip(df.length, df.depth, df.status)
            ]
            rows.append(
                df.assign(
                    encoding=enc,
                    task=task,
                    seed=sd,
                    run_hash=r.hash[:16],
                    train_length=L,
                    multiplier=df.length / L,
                    floor=floor,
                    passed_gate=(enc, task, sd) in passed,
                )
            )
    return pd.concat(rows, ignore_index=True)[RETRIEVAL_COLUMNS] if rows else pd.DataFrame(columns=RETRIEVAL_COLUMNS)


def accuracy_summary(
    tables: Iterable[pd.DataFrame], floors: Mapping[str, float], seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_seed, summary)`` of exact-match tables (``retrieval_grid`` or ``algorithmic_accuracy`` rows with
    ``encoding, task, seed, passed_gate, train_length, length, multiplier, n_correct, n_samples``).

    ``per_seed``: counts pooled over depths / instance lengths, with ``accuracy``. ``summary``: per
    (encoding, task, length) over the passing seeds, ``ropelib.stats.accuracy_ci`` (mean of per-seed
    accuracy; hierarchical bootstrap, generator ``seed``; Wilson for one seed), ``n_failed`` and the task's
    ``floor`` (NaN where it has none)."""
    cell = ["encoding", "task", "seed", "passed_gate", "train_length", "length", "multiplier"]
    frames = [t[t.status == "ok"] for t in tables if len(t)]
    if not frames:
        per_seed = pd.DataFrame(columns=cell + ["n_correct", "n_samples", "accuracy"])
    else:
        per_seed = (
            pd.concat(frames, ignore_index=True)
            .astype({"n_correct": float, "n_samples": float})
            .groupby(cell, as_index=False)[["n_correct", "n_samples"]]
            .sum()
        )
        per_seed["accuracy"] = per_seed.n_correct / per_seed.n_samples
    key = ["encoding", "task", "train_length", "length", "multiplier"]
    rows = []
    for values, g in per_seed.groupby(key):
        ok = g[g.passed_gate.astype(bool)]
        row = dict(zip(key, values))
        if len(ok):
            ci = accuracy_ci([(int(c), int(n)) for c, n in zip(ok.n_correct, ok.n_samples)], seed=seed)
            row.update(
                n_seeds=ci["n_seeds"], mean=ci["mean"], ci_low=ci["ci_low"], ci_high=ci["ci_high"], method=ci["method"]
            )
        else:
            row.update(n_seeds=0, mean=np.nan, ci_low=np.nan, ci_high=np.nan, method="")
        row.update(n_failed=len(g) - len(ok), floor=floors.get(values[1], np.nan))
        rows.append(row)
    cols = key + ["n_seeds", "mean", "ci_low", "ci_high", "method", "n_failed", "floor"]
    return per_seed, pd.DataFrame(rows, columns=cols)


def positions_removed(
    runs: Runs,
    setup: BaseSetup,
    gates: pd.DataFrame,
    *,
    device: str = "cpu",
    cached: Cache = memo.cached,
) -> pd.DataFrame:
    """Every language and retrieval model at its training length ``L``, as trained (the gate's number from
    ``gates``) and with its positional encoding switched off (``without_positions``): the language models'
    perplexity over the test split (first ``setup.lm_eval_tokens``, non-overlapping), the retrieval
    models' exact match on the gate's ``setup.gate_samples`` sequences (generator ``GATE_SEED``). One row per
    model: ``encoding, task, kind, seed, run_hash, passed_gate, train_length, length, metric, as_trained,
    without_positions``."""
    index = gates.set_index(["encoding", "task", "seed"])
    rows = []
    for (enc, task, seed), r in runs.items():
        kind = TASK_KINDS[task]
        if kind not in ("lm", "retrieval"):
            continue
        L = setup.task(task).train_length
        g = index.loc[(enc, task, seed)]
        if kind == "lm":
            tokens = split_tokens(r.spec.task, "test", setup.lm_eval_tokens)

            def ablated(r: RunResult = r, L: int = L, tokens: torch.Tensor = tokens) -> float:
                with without_positions(r.model):
                    return float(lm_loss_at_lengths(r.model, tokens, [L], batch_size=16).ppl.iloc[0])

            value, metric = float(g.ppl), "ppl"
        else:
            task_obj = make_task(r.spec.task)

            def ablated(r: RunResult = r, L: int = L, task_obj: Any = task_obj) -> float:
                with without_positions(r.model):
                    return exact_match_accuracy(r.model, task_obj, L, setup.gate_samples, GATE_SEED)

            value, metric = float(g.accuracy), "accuracy"
        stripped = cached(
            "05_without_positions",
            {
                "run": r.hash,
                "device": device,
                "length": L,
                "samples": setup.gate_samples,
                "seed": GATE_SEED,
                "lm_eval_tokens": setup.lm_eval_tokens,
            },
            ablated,
        )
        rows.append(
            {
                "encoding": enc,
                "task": task,
                "kind": kind,
                "seed": seed,
                "run_hash": r.hash[:16],
                "passed_gate": bool(g.passed) if g.passed == g.passed else False,
                "train_length": L,
                "length": L,
                "metric": metric,
                "as_trained": value,
                "without_positions": float(stripped),
            }
        )
    cols = [
        "encoding",
        "task",
        "kind",
        "seed",
        "run_hash",
        "passed_gate",
        "train_length",
        "length",
        "metric",
        "as_trained",
        "without_positions",
    ]
    return pd.DataFrame(rows, columns=cols)
