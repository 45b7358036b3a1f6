"""The experiment protocols of notebooks 04–07: tuned base models, their gates, and the references.

Every trained model passes gates before its numbers are used (``ropelib.gates``): a language model
must beat an n-gram baseline fitted on the same training split and use its context; a retrieval model
must beat the position-blind floor of its task. This module computes what the gates need, in one
place, so that notebooks 04 (training), 05 (length extrapolation), 06 (context extension) and 07 (the
audit) judge the same models by the same numbers:

* ``tune_learning_rates(setup, ...)`` — the learning-rate sweep: for every (encoding, task) with a
  grid (``TaskSetup.lrs``), seed-0 runs at each rate (``TaskSetup.sweep_steps`` steps), scored on
  *validation* data (``validation_loss``), the lowest loss wins (ties: the smaller rate). Reporting
  uses the *test* split.
* ``tuned_specs(setup, ...)`` — the base-model specs with those rates (``experiments.base_specs``).
* ``ngram_reference(task, split)`` — interpolated Kneser–Ney n-grams of orders 1–5 fitted on the
  task's training split and scored on ``split`` (``ropelib.ngram``).
* ``lm_quality(run, split)`` — perplexity at the training length over the *whole* split
  (non-overlapping windows) and the context gain (loss over the first eighth of the window minus the
  last half, from the loss by position over the same windows).
* ``retrieval_quality(run, n_samples, seed)`` — exact-match counts at the training length on fresh
  sequences of the training distribution, with the task's position-blind floor.
* ``gate_models(runs, setup, ...)`` — all of the above for every model, through ``ropelib.gates``:
  one row per (encoding, task, seed) with ``passed`` and ``reason``.

Every evaluation goes through ``ropelib.memo.cached`` (keyed by run hashes and parameters), so a
rerun reads it back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import memo
from .data import IGNORE_INDEX, TaskConfig, make_task
from .evaluate import lm_loss_at_lengths, loss_by_position
from .experiments import TASK_KINDS, BaseSetup, base_spec, base_specs, run_specs
from .gates import context_gain, gate_table
from .model import start_windows
from .ngram import ngram_baselines
from .runs import RunResult, RunSpec

__all__ = [
    "SWEEP_SEED",
    "VALIDATION_SEED",
    "GATE_SEED",
    "lm_task",
    "split_tokens",
    "ngram_reference",
    "validation_loss",
    "sweep_specs",
    "tune_learning_rates",
    "tuned_specs",
    "lm_quality",
    "retrieval_quality",
    "gate_models",
    "passed_keys",
]

#: the seed of the learning-rate sweep's runs (the winner's run is the base model of this seed when
#: the sweep runs the full budget)
SWEEP_SEED = 0
#: generator seed of the fresh validation sequences of synthetic tasks (distinct from any training draw)
VALIDATION_SEED = 777
#: generator seed of the fresh test sequences behind a retrieval gate
GATE_SEED = 12345
Cache = Callable[[str, Mapping[str, Any], Callable[[], Any]], Any]


def lm_task(setup: BaseSetup) -> str:
    """The name of the setup's language-modelling task (ValueError if it has none)."""
    names = setup.tasks_of_kind("lm")
    if not names:
        raise ValueError("this setup trains no language model (no task of kind 'lm')")
    return names[0]


@lru_cache(maxsize=8)
def _task(name: str, params_key: tuple) -> Any:
    return make_task(name, **dict(params_key))


def _task_of(config: TaskConfig) -> Any:
    return _task(config.name, tuple(sorted(config.params.items())))


def split_tokens(config: TaskConfig, split: str, max_tokens: int | None = None) -> torch.Tensor:
    """The token ids ``(N,)`` of an LM task's ``split`` (``"train"``, ``"validation"``, ``"test"``): all of
    them, or the first ``max_tokens`` (``BaseSetup.lm_eval_tokens``)."""
    task = _task_of(config)
    if not hasattr(task, "tokens"):
        raise ValueError(f"task {config.name!r} is not a language-modelling task (it has no token splits)")
    tokens = task.tokens(split)
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
            raise ValueError(f"max_tokens must be None or an integer >= 2, got {max_tokens!r}")
        tokens = tokens[:max_tokens]
    return tokens


def ngram_reference(config: TaskConfig, split: str = "test", orders: tuple[int, ...] = (1, 2, 3, 4, 5),
                    max_tokens: int | None = None, cached: Cache = memo.cached) -> pd.DataFrame:
    """Kneser–Ney n-gram baselines fitted on the task's whole training split, scored on ``split`` (its first
    ``max_tokens``): columns ``order, cross_entropy, perplexity, n_train_tokens, n_eval_tokens``
    (``ropelib.ngram``)."""
    task = _task_of(config)

    def compute() -> pd.DataFrame:
        return ngram_baselines(task.tokens("train").numpy(), split_tokens(config, split, max_tokens).numpy(),
                               task.vocab_size, orders=tuple(orders))

    return cached("ngram_reference", {"task": config.to_dict(), "split": split, "orders": list(orders),
                                      "max_tokens": max_tokens}, compute)


# -- learning-rate sweep ------------------------------------------------------------------------------


@torch.no_grad()
def validation_loss(run: RunResult, n_samples: int = 256, max_tokens: int | None = None,
                    cached: Cache = memo.cached) -> float:
    """Mean loss on validation data at the training length: an LM task's whole ``"validation"`` split
    (non-overlapping windows); a synthetic task's ``n_samples`` fresh sequences (generator seed
    ``VALIDATION_SEED``), scored tokens only. What the learning-rate sweep minimises."""
    L = run.spec.train.seq_len
    task = _task_of(run.spec.task)

    def compute() -> float:
        if TASK_KINDS[run.spec.task.name] == "lm":
            tokens = split_tokens(run.spec.task, "validation", max_tokens)
            return float(lm_loss_at_lengths(run.model, tokens, [L], batch_size=16).loss.iloc[0])
        batch = task.sample(n_samples, L, torch.Generator().manual_seed(VALIDATION_SEED))
        device = next(run.model.parameters()).device
        run.model.eval()
        logits = run.model(start_windows(run.model, batch.x).to(device))  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.y.to(device).flatten(),
                                                 ignore_index=IGNORE_INDEX)
        return float(loss)

    return cached("validation_loss", {"run": run.hash, "n_samples": n_samples, "seed": VALIDATION_SEED,
                                      "max_tokens": max_tokens}, compute)


def sweep_specs(setup: BaseSetup, device: str = "auto") -> dict[tuple[str, str, float], RunSpec]:
    """The sweep's runs, keyed by ``(encoding, task, lr)``: seed ``SWEEP_SEED`` at every rate of each
    task's ``lrs`` for ``sweep_steps`` steps (the full budget when 0). Tasks without a grid: none."""
    out = {}
    for ts in setup.tasks:
        steps = ts.sweep_steps or ts.steps
        for enc in setup.encodings:
            for lr in ts.lrs:
                out[(enc, ts.name, lr)] = base_spec(setup, enc, ts.name, SWEEP_SEED, device, lr=lr, steps=steps)
    return out


def tune_learning_rates(
    setup: BaseSetup, device: str = "auto", jobs: int = 1, n_samples: int = 256, cached: Cache = memo.cached
) -> tuple[dict[tuple[str, str], float], pd.DataFrame]:
    """Train (or read back) the sweep and pick each (encoding, task)'s learning rate on validation data.

    Returns ``(lrs, table)``: ``lrs[(encoding, task)]`` the chosen rate (lowest ``validation_loss``;
    ties: the smaller rate), only for tasks with a grid; ``table`` one row per sweep run with columns
    ``encoding, task, lr, steps, run_hash, val_loss, chosen``. Sweeps with ``SWEEP_SEED`` not in the
    setup's seeds raise ValueError."""
    if SWEEP_SEED not in setup.seeds:
        raise ValueError(f"the learning-rate sweep trains seed {SWEEP_SEED}, which is not in the setup's seeds {setup.seeds}")
    specs = sweep_specs(setup, device)
    if not specs:
        return {}, pd.DataFrame(columns=["encoding", "task", "lr", "steps", "run_hash", "val_loss", "chosen"])
    keyed = {(e, t, i): specs[(e, t, lr)] for i, (e, t, lr) in enumerate(specs)}
    runs = run_specs(keyed, jobs=jobs)
    rows = []
    for (e, t, i), r in runs.items():
        loss = validation_loss(r, n_samples=n_samples, max_tokens=setup.lm_eval_tokens, cached=cached)
        rows.append({"encoding": e, "task": t, "lr": r.spec.train.lr, "steps": r.spec.train.steps,
                     "run_hash": r.hash[:16], "val_loss": loss})
    table = pd.DataFrame(rows)
    finite = table.assign(v=table.val_loss.where(np.isfinite(table.val_loss), math.inf))
    best = finite.sort_values(["v", "lr"]).groupby(["encoding", "task"], sort=False).head(1)
    lrs = {(r.encoding, r.task): float(r.lr) for r in best.itertuples()}
    table["chosen"] = [lrs[(r.encoding, r.task)] == r.lr for r in table.itertuples()]
    return lrs, table


def tuned_specs(
    setup: BaseSetup, device: str = "auto", jobs: int = 1, cached: Cache = memo.cached, **select: Any
) -> tuple[dict[tuple[str, str, int], RunSpec], pd.DataFrame]:
    """``(specs, sweep_table)``: ``experiments.base_specs`` with the learning rates of
    ``tune_learning_rates`` (``select``: ``encodings=``, ``tasks=``, ``seeds=`` as there)."""
    lrs, table = tune_learning_rates(setup, device, jobs=jobs, cached=cached)
    return base_specs(setup, device, lrs=lrs, **select), table


# -- quality at the training length -------------------------------------------------------------------


def lm_quality(run: RunResult, split: str = "test", max_tokens: int | None = None, batch_size: int = 16,
               cached: Cache = memo.cached, early_positions: int | None = None) -> dict[str, float]:
    """Perplexity at the training length ``L`` over ``split`` (its first ``max_tokens``; non-overlapping
    windows) and the context gain over the same windows (``ropelib.gates.context_gain``, its early window
    ``early_positions`` long, default ``L // 8``): ``{"loss", "ppl", "context_gain", "n_tokens"}``."""
    L = run.spec.train.seq_len
    tokens = split_tokens(run.spec.task, split, max_tokens)

    def compute() -> dict[str, float]:
        res = lm_loss_at_lengths(run.model, tokens, [L], batch_size=batch_size).iloc[0]
        curve = loss_by_position(run.model, tokens, L, batch_size=batch_size)  # (L,)
        return {"loss": float(res.loss), "ppl": float(res.ppl), "context_gain": float(context_gain(curve, start_token=run.model.config.bos_token_id is not None,
                                                   early=early_positions)),
                "n_tokens": int(res.n_tokens)}

    key = {"run": run.hash, "split": split, "max_tokens": max_tokens}
    if early_positions is not None:
        key["early_positions"] = int(early_positions)
    return cached("lm_quality", key, compute)


@torch.no_grad()
def retrieval_quality(run: RunResult, n_samples: int = 512, seed: int = 12345,
                      cached: Cache = memo.cached) -> dict[str, float]:
    """Exact match (every scored token right, teacher forcing) at the training length on ``n_samples``
    fresh sequences of the training distribution (generator ``seed``): ``{"correct", "n", "accuracy",
    "floor"}``, ``floor`` the task's ``position_blind_floor`` at that length."""
    L = run.spec.train.seq_len
    task = _task_of(run.spec.task)

    def compute() -> dict[str, float]:
        batch = task.sample(n_samples, L, torch.Generator().manual_seed(int(seed)))
        device = next(run.model.parameters()).device
        run.model.eval()
        pred = run.model(start_windows(run.model, batch.x).to(device)).argmax(-1).cpu()  # (B, T)
        scored = batch.y != IGNORE_INDEX
        correct = int(((pred == batch.y) | ~scored).all(-1).sum())
        floor = task.position_blind_floor(L) if getattr(task, "digit_filler", False) else task.position_blind_floor()
        return {"correct": correct, "n": int(n_samples), "accuracy": correct / n_samples, "floor": float(floor)}

    return cached("retrieval_quality", {"run": run.hash, "n_samples": n_samples, "seed": seed}, compute)


def gate_models(
    runs: Mapping[tuple[str, str, int], RunResult],
    setup: BaseSetup,
    *,
    split: str = "test",
    cached: Cache = memo.cached,
    early_positions: int | None = None,
) -> pd.DataFrame:
    """Gate every model of ``runs`` (keyed ``(encoding, task, seed)``) by the setup's ``gates``
    thresholds (retrieval: ``setup.gate_samples`` fresh sequences, generator ``GATE_SEED``): one row each with
    ``encoding, task, seed, kind, run_hash`` and the measured values (LM: ``ppl, loss, context_gain``
    — the mean over the encoding's seeds, which the gate judges, as the issue defines it; each seed's own
    is ``context_gain_per_seed`` —;
    retrieval: ``correct, n, accuracy, floor``), the n-gram references of the LM's task on ``split``
    (``ngram_ppl_<order>``), then ``ropelib.gates.gate_table``'s ``passed``, ``reason`` and per-check
    columns. Tasks of other kinds (copy/reverse) get ``kind = "algorithmic"`` and no gate (their
    ``passed`` is NaN). ``early_positions`` passes to ``lm_quality`` (the training-length sweep gates every
    length on the base models' early window)."""
    n_samples, seed, thresholds = setup.gate_samples, GATE_SEED, setup.gates
    rows, baselines = [], {}
    for (enc, task, seed_), r in runs.items():
        kind = TASK_KINDS[task]
        row: dict[str, Any] = {"encoding": enc, "task": task, "seed": seed_, "kind": kind, "run_hash": r.hash[:16]}
        if kind == "lm":
            row.update(lm_quality(r, split, setup.lm_eval_tokens, cached=cached, early_positions=early_positions))
            ref = ngram_reference(r.spec.task, split, max_tokens=setup.lm_eval_tokens, cached=cached)
            baselines = {int(o): float(p) for o, p in zip(ref.order, ref.perplexity)}
            row.update({f"ngram_ppl_{o}": p for o, p in baselines.items()})
        elif kind == "retrieval":
            row.update(retrieval_quality(r, n_samples, seed, cached=cached))
        rows.append(row)
    df = pd.DataFrame(rows)
    if "context_gain" in df:  # the context gate is on the seed mean of each (encoding, task)
        df.insert(df.columns.get_loc("context_gain") + 1, "context_gain_per_seed", df["context_gain"])
        df["context_gain"] = df.groupby(["encoding", "task"])["context_gain_per_seed"].transform("mean")
    gated = df[df.kind.isin(["lm", "retrieval"])]
    if not len(gated):
        return df.assign(passed=np.nan, reason="")
    out = gate_table(gated, baselines, thresholds)
    rest = df[~df.kind.isin(["lm", "retrieval"])].assign(passed=np.nan, reason="no gate for this kind of task")
    return pd.concat([out, rest], ignore_index=True) if len(rest) else out.reset_index(drop=True)


def passed_keys(gates: pd.DataFrame) -> set[tuple[str, str, int]]:
    """The ``(encoding, task, seed)`` of the models that passed their gate."""
    ok = gates[gates.passed.fillna(False).astype(bool)]
    return {(r.encoding, r.task, int(r.seed)) for r in ok.itertuples()}
