"""Pass/fail gates every trained model must pass before its numbers are used.

The project rule: *a result from a model that has not learned its task is not a result*. A gate is a
few ``Check`` s on numbers measured on the trained model, thresholds in ``GateThresholds``:

* language models (``kind == "lm"``):

  - **context use**: ``context_gain`` = mean loss over the first eighth of the training window minus
    mean loss over its last half (nats, from the per-position mean loss). A model that uses its
    context predicts late tokens better than early ones; ``>= context_gain_nats`` is required;
  - **n-gram baseline**: in-distribution perplexity strictly below the perplexity of the n-gram
    baseline of order ``lm_baseline_order`` (every encoding) and, for the RoPE encodings
    (``ROPE_ENCODINGS``), also strictly below the baseline of order ``rope_baseline_order``. The
    stricter bar for RoPE is the issue's requirement (RoPE is the encoding under study: its models must
    be well trained before any claim about it is judged), not a property of the encoding.

* retrieval models (``kind == "retrieval"``): the Wilson lower bound (Wilson 1927;
  ``ropelib.stats.wilson_interval``, confidence ``retrieval_confidence``) of the exact-match accuracy at
  the training length must exceed the position-blind floor (the accuracy reachable without positional
  information) plus ``retrieval_margin``.

``lm_gate`` / ``retrieval_gate`` gate one model and return a ``GateResult`` (typed checks, a reason in
words); ``gate_table`` gates a tidy per-model frame, ``passed_only`` filters a results table to the
models that passed. Pure functions over numbers and ``pandas`` frames; no torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .stats import wilson_interval

__all__ = [
    "ROPE_ENCODINGS",
    "KEY_COLUMNS",
    "GateThresholds",
    "DEFAULT_THRESHOLDS",
    "Check",
    "GateResult",
    "context_gain",
    "lm_gate",
    "retrieval_gate",
    "gate_table",
    "passed_only",
]

#: encodings held to ``rope_baseline_order`` (exact names; "randomized" and "xpos" are not included)
ROPE_ENCODINGS: frozenset[str] = frozenset({"rope"})
#: the columns that identify one trained model
KEY_COLUMNS: tuple[str, ...] = ("encoding", "task", "seed")
_KINDS: tuple[str, ...] = ("lm", "retrieval")
_KIND_COLUMNS: Mapping[str, tuple[str, ...]] = {"lm": ("ppl", "context_gain"), "retrieval": ("correct", "n", "floor")}


# -- validation ---------------------------------------------------------------------------------------


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _finite(name: str, x: Any) -> float:
    if not _is_real(x) or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite real number, got {x!r}")
    return float(x)


def _order(name: str, x: Any) -> int:
    if not _is_int(x) or x < 1:
        raise ValueError(f"{name} must be a positive integer (an n-gram order), got {x!r}")
    return int(x)


# -- records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateThresholds:
    """The bars of the gates (module docstring). Validated on construction (ValueError)."""

    #: required ``context_gain`` (nats): first-eighth mean loss minus last-half mean loss, ``>=``
    context_gain_nats: float = 0.15
    #: every encoding's perplexity must be below the n-gram baseline of this order
    lm_baseline_order: int = 3
    #: the ``ROPE_ENCODINGS`` must also be below the baseline of this order (the issue's requirement)
    rope_baseline_order: int = 4
    #: the Wilson lower bound of retrieval accuracy must exceed ``floor + retrieval_margin``
    retrieval_margin: float = 0.0
    #: confidence of that Wilson interval
    retrieval_confidence: float = 0.95

    def __post_init__(self) -> None:
        # negative values loosen a gate: only the smoke profile uses them, to run every code path
        if not -10.0 <= _finite("context_gain_nats", self.context_gain_nats) <= 10.0:
            raise ValueError(f"context_gain_nats must be in [-10, 10] (nats), got {self.context_gain_nats!r}")
        _order("lm_baseline_order", self.lm_baseline_order)
        _order("rope_baseline_order", self.rope_baseline_order)
        if not -1.0 <= _finite("retrieval_margin", self.retrieval_margin) < 1.0:
            raise ValueError(f"retrieval_margin must be in [-1, 1) (an accuracy), got {self.retrieval_margin!r}")
        if not 0.0 < _finite("retrieval_confidence", self.retrieval_confidence) < 1.0:
            raise ValueError(f"retrieval_confidence must be in (0, 1), got {self.retrieval_confidence!r}")


#: the thresholds the gates use unless given others
DEFAULT_THRESHOLDS = GateThresholds()


@dataclass(frozen=True)
class Check:
    """One measured ``value`` against its ``threshold``; ``description`` says the rule in words."""

    name: str
    value: float
    threshold: float
    passed: bool
    description: str


@dataclass(frozen=True)
class GateResult:
    """The checks of one model; ``passed`` when all pass; ``reason`` lists the failed ones ('' if none)."""

    passed: bool
    checks: tuple[Check, ...]
    reason: str = field(default="")

    @classmethod
    def of(cls, checks: tuple[Check, ...]) -> GateResult:
        failed = [c for c in checks if not c.passed]
        reason = "; ".join(f"{c.name} failed: {c.description}, got {c.value:.4g}" for c in failed)
        return cls(passed=not failed, checks=tuple(checks), reason=reason)


# -- the measurements ---------------------------------------------------------------------------------


def context_gain(loss_by_position: np.ndarray, start_token: bool = False, early: int | None = None) -> float:
    """First-eighth mean minus last-half mean of the per-position mean loss ``(T,)``, in its units (nats).

    First eighth = positions ``[0, T // 8)``, last half = positions ``[T - T // 2, T)``; ``T >= 8``
    and every value finite, else ValueError. Positive when late tokens (more context) are predicted
    better than early ones.

    ``start_token=True`` (windows that begin with a start token, ``ropelib.model.start_windows``):
    position 0 predicts from no text at all, so the first eighth is ``[1, 1 + T // 8)`` instead; its
    predictions see 1 … T/8 characters, as the first eighth's do without a start token.

    ``early`` (default ``T // 8``) sets the number of early positions instead: the training-length sweep
    (``ropelib.length_sweep``) compares models trained at other lengths on the same absolute early window
    as the profile's base models (``L0 // 8`` positions), since a first eighth of a longer window already
    holds more context. It must be an integer in ``[1, T // 2]``.
    """
    if not isinstance(start_token, bool):
        raise ValueError(f"start_token must be True or False, got {start_token!r}")
    x = np.asarray(loss_by_position)
    if x.ndim != 1:
        raise ValueError(f"loss_by_position must be 1-D (T,), got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"loss_by_position must be real numbers, got dtype {x.dtype}")
    T = int(x.size)
    if T < 8:
        raise ValueError(f"loss_by_position needs T >= 8 positions (its first eighth is empty otherwise), got T={T}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x))[:5].tolist()
        raise ValueError(f"loss_by_position must be finite, got non-finite values at positions {bad}")
    n_early = T // 8 if early is None else early
    if isinstance(n_early, bool) or not isinstance(n_early, (int, np.integer)) or not 1 <= n_early <= T // 2:
        raise ValueError(f"early must be an integer in [1, T // 2] = [1, {T // 2}], got {early!r}")
    first = x[int(start_token) : int(start_token) + int(n_early)]  # (early,)
    last = x[T - T // 2 :]  # (T//2,)
    return float(first.mean() - last.mean())


# -- the gates ----------------------------------------------------------------------------------------


def _baseline(baselines: Mapping[int, float], order: int) -> float:
    if order not in baselines:
        raise ValueError(f"baselines has no n-gram order {order}; its orders: {sorted(baselines)}")
    b = baselines[order]
    if not _is_real(b) or not math.isfinite(b) or b < 1.0:
        raise ValueError(f"baselines[{order}] must be a finite perplexity >= 1, got {b!r}")
    return float(b)


def lm_gate(
    ppl: float,
    context_gain: float,
    baselines: Mapping[int, float],
    encoding: str,
    thresholds: GateThresholds = DEFAULT_THRESHOLDS,
) -> GateResult:
    """Gate a language model: context use and the n-gram baseline(s) (module docstring).

    ``ppl``: in-distribution perplexity (``>= 1``; ``inf`` for a diverged model, which fails; NaN is
    refused as a missing measurement). ``context_gain``: from ``context_gain`` (finite, nats).
    ``baselines``: n-gram order -> baseline perplexity, holding ``lm_baseline_order`` (and
    ``rope_baseline_order`` when ``encoding`` is in ``ROPE_ENCODINGS``). Checks, in order:
    ``context_gain`` (``>=``), ``ppl_below_{n}gram`` (strict ``<``).
    """
    if not isinstance(thresholds, GateThresholds):
        raise ValueError(f"thresholds must be a GateThresholds, got {type(thresholds).__name__}")
    if not isinstance(encoding, str) or not encoding:
        raise ValueError(f"encoding must be a non-empty string, got {encoding!r}")
    if not _is_real(ppl) or math.isnan(ppl) or ppl < 1.0:
        raise ValueError(f"ppl must be a perplexity >= 1 (inf allowed for a diverged model, NaN not), got {ppl!r}")
    gain = _finite("context_gain", context_gain)
    if not isinstance(baselines, Mapping):
        raise ValueError(f"baselines must be a mapping n-gram order -> perplexity, got {type(baselines).__name__}")
    orders = [thresholds.lm_baseline_order]
    if encoding in ROPE_ENCODINGS and thresholds.rope_baseline_order not in orders:
        orders.append(thresholds.rope_baseline_order)
    checks = [
        Check(
            name="context_gain",
            value=gain,
            threshold=float(thresholds.context_gain_nats),
            passed=gain >= thresholds.context_gain_nats,
            description=(
                f"mean loss over the first eighth of the window minus over the last half must be "
                f">= {thresholds.context_gain_nats:.4g} nats (the model must use its context)"
            ),
        )
    ]
    for order in orders:
        b = _baseline(baselines, order)
        who = "RoPE" if order != thresholds.lm_baseline_order else "every encoding"
        checks.append(
            Check(
                name=f"ppl_below_{order}gram",
                value=float(ppl),
                threshold=b,
                passed=bool(ppl < b),
                description=f"perplexity must be below the {order}-gram baseline {b:.4g} ({who})",
            )
        )
    return GateResult.of(tuple(checks))


def retrieval_gate(correct: int, n: int, floor: float, thresholds: GateThresholds = DEFAULT_THRESHOLDS) -> GateResult:
    """Gate a retrieval model on ``correct`` of ``n`` exact matches at the training length.

    One check, ``wilson_low_above_floor``: the Wilson lower bound (confidence
    ``thresholds.retrieval_confidence``) must be strictly above ``floor + thresholds.retrieval_margin``.
    ``floor`` is the position-blind accuracy, in ``[0, 1)``. Bad counts or floor: ValueError.
    """
    if not isinstance(thresholds, GateThresholds):
        raise ValueError(f"thresholds must be a GateThresholds, got {type(thresholds).__name__}")
    if not _is_real(floor) or not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be an accuracy in [0, 1) (the position-blind floor), got {floor!r}")
    low, _ = wilson_interval(correct, n, thresholds.retrieval_confidence)
    bar = float(floor) + float(thresholds.retrieval_margin)
    check = Check(
        name="wilson_low_above_floor",
        value=low,
        threshold=bar,
        passed=low > bar,
        description=(
            f"the {thresholds.retrieval_confidence:.0%} Wilson lower bound of accuracy ({correct}/{n}) must "
            f"exceed the position-blind floor {float(floor):.4g} + margin {thresholds.retrieval_margin:.4g}"
        ),
    )
    return GateResult.of((check,))


# -- tables -------------------------------------------------------------------------------------------


def _require_columns(df: Any, columns: tuple[str, ...], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; its columns: {list(df.columns)}")


def _duplicate_keys(df: pd.DataFrame) -> list[tuple]:
    dup = df.duplicated(list(KEY_COLUMNS), keep=False)
    return sorted({tuple(r) for r in df.loc[dup, list(KEY_COLUMNS)].itertuples(index=False)}, key=repr)


def _count(name: str, x: Any, row: Any) -> int:
    """An integer count from a frame cell (integral floats accepted: mixed frames upcast to float)."""
    if _is_real(x) and not _is_int(x) and math.isfinite(x) and float(x).is_integer():
        return int(x)
    if not _is_int(x):
        raise ValueError(f"row {row!r}: {name} must be an integer count, got {x!r}")
    return int(x)


def _gate_row(r: Mapping[str, Any], baselines: Mapping[int, float], thresholds: GateThresholds, row: Any) -> GateResult:
    kind = r["kind"]
    needed = _KIND_COLUMNS[kind]
    nan = [c for c in needed if pd.isna(r[c])]
    if nan:
        raise ValueError(
            f"row {row!r} ({r['encoding']}, {r['task']}, seed {r['seed']}, kind {kind!r}): missing value(s) in {nan}"
        )
    try:
        if kind == "lm":
            return lm_gate(r["ppl"], r["context_gain"], baselines, r["encoding"], thresholds)
        return retrieval_gate(_count("correct", r["correct"], row), _count("n", r["n"], row), r["floor"], thresholds)
    except ValueError as e:
        raise ValueError(f"row {row!r} ({r['encoding']}, {r['task']}, seed {r['seed']}): {e}") from None


def gate_table(
    rows: pd.DataFrame, baselines: Mapping[int, float], thresholds: GateThresholds = DEFAULT_THRESHOLDS
) -> pd.DataFrame:
    """Gate every model of a tidy per-model frame.

    ``rows``: one row per trained model, columns ``encoding, task, seed, kind`` (``kind`` in
    ``{"lm", "retrieval"}``), plus ``ppl, context_gain`` for the lm rows and ``correct, n, floor`` for
    the retrieval rows (other columns are kept). ``(encoding, task, seed)`` must be unique.
    ``baselines``: n-gram order -> baseline perplexity for ``lm_gate`` (one mapping for every lm row).

    Returns a copy of ``rows`` (same index and order) with ``passed`` (bool), ``reason`` (str, '' when
    passed) and, for every check that occurs, ``gate_{check}_value``, ``gate_{check}_threshold``
    (float, NaN where the check does not apply) and ``gate_{check}_passed`` (nullable ``boolean``,
    ``<NA>`` where it does not apply).
    """
    _require_columns(rows, (*KEY_COLUMNS, "kind"), "rows")
    bad_kinds = sorted({repr(k) for k in rows["kind"] if k not in _KINDS})
    if bad_kinds:
        raise ValueError(f"kind must be one of {list(_KINDS)}, got {', '.join(bad_kinds)}")
    for kind, cols in _KIND_COLUMNS.items():
        if (rows["kind"] == kind).any():
            _require_columns(rows, cols, f"rows (it has kind {kind!r} rows)")
    dups = _duplicate_keys(rows)
    if dups:
        raise ValueError(f"(encoding, task, seed) must identify one model, but these repeat: {dups}")
    results = [_gate_row(r, baselines, thresholds, idx) for idx, r in zip(rows.index, rows.to_dict("records"))]
    out = rows.copy()
    out["passed"] = np.array([g.passed for g in results], dtype=bool)
    out["reason"] = [g.reason for g in results]
    names: list[str] = []
    for g in results:
        names += [c.name for c in g.checks if c.name not in names]
    for name in names:
        by_name = [{c.name: c for c in g.checks}.get(name) for g in results]
        out[f"gate_{name}_value"] = [math.nan if c is None else c.value for c in by_name]
        out[f"gate_{name}_threshold"] = [math.nan if c is None else c.threshold for c in by_name]
        out[f"gate_{name}_passed"] = pd.array([pd.NA if c is None else c.passed for c in by_name], dtype="boolean")
    return out


def passed_only(df: pd.DataFrame, gates: pd.DataFrame, require_all: bool = True) -> pd.DataFrame:
    """The rows of results table ``df`` whose model ``(encoding, task, seed)`` passed its gate.

    ``gates``: a ``gate_table`` output (columns ``encoding, task, seed, passed``, keys unique). ``df``
    may hold several rows per model (e.g. one per evaluation length); order and index are kept. With
    ``require_all`` (default) a model of ``df`` missing from ``gates`` is a ValueError (an ungated
    model is a mistake, not a silent drop); with ``require_all=False`` such rows are dropped.
    """
    _require_columns(df, KEY_COLUMNS, "df")
    _require_columns(gates, (*KEY_COLUMNS, "passed"), "gates")
    if not pd.api.types.is_bool_dtype(gates["passed"]) or gates["passed"].isna().any():
        raise ValueError(
            f"gates['passed'] must be a bool column without missing values, got dtype {gates['passed'].dtype}"
        )
    dups = _duplicate_keys(gates)
    if dups:
        raise ValueError(f"gates must have one row per (encoding, task, seed), but these repeat: {dups}")
    verdict = {tuple(k): bool(p) for k, p in zip(gates[list(KEY_COLUMNS)].itertuples(index=False), gates["passed"])}
    keys = [tuple(k) for k in df[list(KEY_COLUMNS)].itertuples(index=False)]
    missing = sorted({k for k in keys if k not in verdict}, key=repr)
    if missing and require_all:
        raise ValueError(
            f"model(s) {missing[:10]} of df have no gate row (require_all=True); "
            f"gate them, or pass require_all=False to drop them"
        )
    keep = np.array([verdict.get(k, False) for k in keys], dtype=bool)
    return df.loc[keep]
