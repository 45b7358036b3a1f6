"""The numbers the claims audit reads from ``results/``, from models that passed their gate only.

* **Gates** (``results/04_gates.csv``, ``ropelib.gates``): ``gate_failures`` lists the encodings of a
  claim none of whose models passed on a task (or a task kind), with every failed model and its
  reason; ``gate_verdict`` turns that into a *not testable here* verdict whose evidence names them.
  Per-seed tables are read through their ``passed_gate`` rows (``passed_rows``).
* **Estimates**: ``lm_estimate`` (a cell of ``05_lm_summary``, over passing seeds already),
  ``summary_estimate`` (``04_summary``, recomputed from the passing rows of ``04_gates`` when only some
  seeds passed), ``paired_speed_ratio`` (``04_throughput``), ``ppl_ratios`` (perplexity relative to 1x),
  ``worse_than_nope``, ``position_use`` (``05_without_positions``) and ``extension_settings``
  (notebook 06). Intervals: ``ropelib.stats.mean_ci`` (Student t) and ``accuracy_ci``.

The language-model task is any task of kind ``"lm"`` (``ropelib.base_models.TASK_KINDS``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .audit import Estimate, Evidence, Verdict, compare
from .base_models import TASK_KINDS
from .stats import accuracy_ci, mean_ci, paired_ratio_ci

__all__ = [
    "require_columns",
    "single_profile",
    "is_lm_task",
    "lm_rows",
    "passed_rows",
    "FailedModel",
    "gate_failures",
    "gate_verdict",
    "gate_check",
    "LM_COLUMNS",
    "lm_estimate",
    "ppl_ratios",
    "beyond",
    "worse_than_nope",
    "position_use",
    "extension_settings",
    "BOOTSTRAP_SEED",
    "summary_estimate",
    "paired_speed_ratio",
]


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def require_columns(table: pd.DataFrame, columns: Sequence[str], label: str) -> None:
    """ValueError naming the table and the absent columns unless ``table`` has every one of ``columns``."""
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise ValueError(f"{label} lacks column(s) {absent}; it has {list(table.columns)} (see results/README.md)")


def single_profile(table: pd.DataFrame, label: str) -> pd.DataFrame:
    """``table`` itself; ValueError when it mixes the rows of several profiles."""
    if "profile" in table.columns and table["profile"].nunique() > 1:
        raise ValueError(f"{label} mixes profiles {sorted(table['profile'].unique())}; pass one profile's rows")
    return table


def is_lm_task(task: Any) -> bool:
    """Whether ``task`` is a language-modelling task (kind ``"lm"`` in ``ropelib.base_models.TASK_KINDS``)."""
    return TASK_KINDS.get(str(task)) == "lm"


def lm_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a language-modelling task (every row when the table has no ``task`` column)."""
    return table[table["task"].map(is_lm_task).astype(bool)] if "task" in table.columns else table


def _truthy(values: pd.Series) -> pd.Series:
    """A boolean column as read back from CSV (bools, ``"True"``/``"False"`` strings, NaN = False)."""
    return values.map(
        lambda v: (str(v).strip().lower() == "true") if not isinstance(v, (bool, np.bool_)) else bool(v)
    ).astype(bool)


def passed_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of models that passed their gate (``passed_gate``); every row without that column."""
    if "passed_gate" not in table.columns:
        return table
    return table[_truthy(table["passed_gate"])]


# ---------------------------------------------------------------------------------------------
# the gates (results/04_gates.csv)
# ---------------------------------------------------------------------------------------------
class FailedModel(NamedTuple):
    """A model that failed its gate: ``(task, seed, reason)`` (seed -1: no gate row at all)."""

    task: str
    seed: int
    reason: str


def _kinds(rows: pd.DataFrame) -> pd.Series:
    return rows["kind"] if "kind" in rows.columns else rows["task"].map(lambda t: TASK_KINDS.get(str(t)))


def _gate_rows(gates: pd.DataFrame, encoding: str, *, task: str | None = None, kind: str | None = None) -> pd.DataFrame:
    rows = gates[gates["encoding"] == encoding]
    if task is not None:
        rows = rows[rows["task"] == task]
    if kind is not None:
        rows = rows[_kinds(rows) == kind]
    return rows


def _model_passed(rows: pd.DataFrame) -> pd.Series:
    """Per gate row: passed, or a task kind without a gate (copy / reverse: ``passed`` is NaN there)."""
    return _truthy(rows["passed"]) | ~_kinds(rows).isin(["lm", "retrieval"])


def gate_failures(
    gates: pd.DataFrame, encodings: Sequence[str], *, task: str | None = None, kind: str | None = None
) -> dict[str, list[FailedModel]]:
    """The encodings of ``encodings`` none of whose models passed the gate, with every failed model.

    ``gates`` is ``04_gates.csv``; the models considered are those of ``task`` (a task name) or of every
    task of ``kind`` (``"lm"``, ``"retrieval"``). Returns ``{encoding: [FailedModel, ...]}`` for each
    encoding with no passing model (an encoding with no gate row at all gets one entry with seed -1
    saying so); ``{}`` when every encoding has a passing model.
    """
    require_columns(gates, ("encoding", "task", "seed", "passed", "reason"), "04_gates")
    out: dict[str, list[FailedModel]] = {}
    for enc in encodings:
        rows = _gate_rows(gates, enc, task=task, kind=kind)
        if rows.empty:
            where = task or (f"a task of kind {kind!r}" if kind else "any task")
            out[enc] = [FailedModel(task or str(kind or ""), -1, f"no row in 04_gates.csv for {enc} on {where}")]
            continue
        if _model_passed(rows).any():
            continue
        out[enc] = [
            FailedModel(str(r.task), int(r.seed), "" if pd.isna(r.reason) else str(r.reason)) for r in rows.itertuples()
        ]
    return out


def _short_reason(reason: str) -> str:
    """``"context_gain failed: <rule>, got -0.02"`` -> ``"context_gain failed (got -0.02)"``, per failed check."""
    parts = []
    for part in str(reason).split("; "):
        name, sep, rest = part.partition(" failed: ")
        got = rest.rpartition(", got ")[2] if ", got " in rest else ""
        parts.append(f"{name} failed (got {got})" if sep and got else part)
    return ", ".join(parts)


def gate_verdict(failures: Mapping[str, Sequence[FailedModel]]) -> tuple[Verdict, Evidence]:
    """The not-testable verdict and evidence for ``gate_failures``' output (non-empty): which models
    failed and why (the full reason per model in the evidence, abbreviated in the summary)."""
    if not failures:
        raise ValueError("gate_verdict needs at least one failed encoding")
    values: dict[str, Any] = {}
    names, notes = [], []
    for enc, models in failures.items():
        tasks = list(dict.fromkeys(m.task for m in models))
        names.append(f"{enc} ({', '.join(t for t in tasks if t)})" if any(tasks) else enc)
        for task in tasks:
            per_model = []
            for m in models:
                if m.task != task:
                    continue
                label = f"{enc} {task} seed {m.seed}" if m.seed >= 0 else f"{enc} {task}".strip()
                values[f"gate failed: {label}"] = m.reason
                per_model.append(f"seed {m.seed}: {_short_reason(m.reason)}" if m.seed >= 0 else m.reason)
            notes.append(f"{enc}/{task} — " + "; ".join(per_model))
    summary = "every model of these encodings failed its gate (notebook 04), so their numbers are not used: " + (
        " | ".join(notes)
    )
    return Verdict("not testable here", f"no model of {', '.join(names)} passed its gate"), Evidence(summary, values)


def gate_check(
    gates: pd.DataFrame, encodings: Sequence[str], *, task: str | None = None, kind: str | None = None
) -> tuple[Verdict, Evidence] | None:
    """``gate_verdict`` when one of ``encodings`` has no passing model, else ``None``."""
    failures = gate_failures(gates, encodings, task=task, kind=kind)
    return gate_verdict(failures) if failures else None


# ---------------------------------------------------------------------------------------------
# language-model perplexity past the training length (05, 06)
# ---------------------------------------------------------------------------------------------
LM_COLUMNS = ("encoding", "mode", "multiplier", "ppl_mean", "ppl_ci_low", "ppl_ci_high")


def lm_estimate(lm: pd.DataFrame, encoding: str, mode: str, multiplier: float) -> Estimate | None:
    """The perplexity estimate of one cell of ``05_lm_summary`` (``None`` without a row)."""
    rows = lm[(lm["encoding"] == encoding) & (lm["mode"] == mode) & np.isclose(lm["multiplier"], multiplier)]
    if rows.empty:
        return None
    if len(rows) > 1:
        raise ValueError(f"05_lm_summary has {len(rows)} rows for {encoding}/{mode}/{multiplier}x; expected one")
    r = rows.iloc[0]
    return Estimate(float(r["ppl_mean"]), float(r["ppl_ci_low"]), float(r["ppl_ci_high"]), int(r.get("n_seeds", 1)))


def ppl_ratios(lm_summary: pd.DataFrame, encoding: str) -> pd.DataFrame:
    """Perplexity of ``encoding`` at each multiplier divided by its 1x value, per evaluation mode.

    Columns ``mode, multiplier, ppl, ppl_1x, ratio`` (ratio NaN where the encoding is undefined, e.g. a
    learned table past its length). Rows sorted by mode, multiplier.
    """
    require_columns(lm_summary, LM_COLUMNS, "05_lm_summary")
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


def beyond(ratios: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``ppl_ratios`` past the training length (multiplier > 1)."""
    return ratios[ratios["multiplier"] > 1.0 + 1e-9]


def worse_than_nope(lm_summary: pd.DataFrame, encoding: str, mode: str = "nonoverlap") -> tuple[bool, float, float]:
    """Whether ``encoding``'s 1x perplexity is significantly worse (CIs apart) than NoPE's, the model with
    no positional information at all — then the encoding did not learn to use positions, and a flat
    curve past the training length says nothing about extrapolation. Returns ``(worse, its ppl, NoPE's)``;
    ``(False, …, nan)`` when there is no NoPE row. ``worse`` is False when either 1x value is undefined
    (NaN: ``05_lm_summary`` is over the models that passed their gate, NaN when none did), so a model
    that failed its gate never counts as worse or better than NoPE."""
    mine, nope = lm_estimate(lm_summary, encoding, mode, 1.0), lm_estimate(lm_summary, "nope", mode, 1.0)
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
    require_columns(
        without_positions, ("encoding", "metric", "as_trained", "without_positions"), "05_without_positions"
    )
    rows = without_positions[(without_positions["encoding"] == encoding) & (without_positions["metric"] == "ppl")]
    rows = passed_rows(rows)
    if rows.empty:
        return None
    return float(rows["as_trained"].mean()), float(rows["without_positions"].mean())


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
        require_columns(zero_shot, ("method", "factor", "multiplier", "ppl"), "06_zero_shot_ppl")
        zs = passed_rows(lm_rows(single_profile(zero_shot, "06_zero_shot_ppl")))
        ppl_1x = float(zs[(zs["method"] == "none") & np.isclose(zs["multiplier"], 1.0)]["ppl"].mean())
        own_length = (zs["method"] == "none") | np.isclose(zs["multiplier"], zs["factor"])
        past = zs[(zs["multiplier"] > 1 + 1e-9) & own_length]
        for (method, m), g in past.groupby(["method", "multiplier"]):
            rows.append({"method": method, "ft_steps": 0, "multiplier": float(m), "ppl": float(g["ppl"].mean())})
    if finetune is not None:
        require_columns(finetune, ("method", "ft_steps", "multiplier", "metric", "value"), "06_finetune")
        ft = passed_rows(lm_rows(single_profile(finetune, "06_finetune")))
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


# ---------------------------------------------------------------------------------------------
# in-distribution quality and speed (04)
# ---------------------------------------------------------------------------------------------
#: bootstrap seed of an accuracy interval recomputed from the passing seeds (notebook 04's ``eval_seed``)
BOOTSTRAP_SEED = 12345


def summary_estimate(
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


def paired_speed_ratio(throughput: pd.DataFrame, encoding: str, reference: str) -> Estimate | None:
    """Mean over rounds of ``tokens/s(encoding) / tokens/s(reference)`` in ``04_throughput.csv`` (the
    encodings are interleaved within a round, so a round's ratio cancels the machine's load), with a
    two-sided 95% Student-t CI over rounds (``ropelib.stats.paired_ratio_ci``); ``None`` when either is absent."""
    require_columns(throughput, ("encoding", "round", "tokens_per_s"), "04_throughput")
    keys = [k for k in ("task", "seq_len", "batch_size", "round") if k in throughput.columns]
    a = throughput[throughput["encoding"] == encoding].set_index(keys)["tokens_per_s"]
    b = throughput[throughput["encoding"] == reference].set_index(keys)["tokens_per_s"]
    mean, low, high, n = paired_ratio_ci(a, b)
    return Estimate(mean, low, high, n) if n else None
