"""Statistics over seeds: confidence intervals, paired ratios and orderings with their test.

Intervals that stay inside the range of the quantity they bound:

* ``wilson_interval``: the Wilson score interval of a binomial proportion (Wilson 1927, "Probable
  inference, the law of succession, and statistical inference", JASA 22:209-212). With ``p = k/n`` and
  ``z = Phi^{-1}((1 + confidence)/2)`` (``scipy.stats.norm.ppf``)::

      centre    = (p + z^2/(2n)) / (1 + z^2/n)
      halfwidth = z * sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n)

  The interval ``centre ± halfwidth`` lies in ``[0, 1]`` for every ``0 <= k <= n``, is not degenerate
  at ``k = 0`` or ``k = n`` (unlike the Wald interval ``p ± z sqrt(p(1-p)/n)``) and contains ``p``.
* ``accuracy_ci``: the accuracy of a model over seeds and evaluation samples. One seed: Wilson on the
  counts. Two or more seeds: a two-level (hierarchical) percentile bootstrap (Efron & Tibshirani 1993,
  *An Introduction to the Bootstrap*, ch. 13 for the percentile interval; the two-stage resampling of
  clustered data follows Davison & Hinkley 1997, *Bootstrap Methods and their Application*, §3.8):
  resample the seeds with replacement, then the samples within each resampled seed with replacement,
  and take the mean over seeds of the per-seed accuracy; the interval is the ``(1 ± confidence)/2``
  quantiles of those bootstrap means, so it lies in ``[0, 1]`` by construction.
* ``mean_ci``: the two-sided Student-t interval of a mean over seeds (``scipy.stats.t``), for unbounded
  quantities (loss, perplexity); ``aggregate_seeds`` applies it per group of a tidy table;
  ``paired_ratio_ci`` applies it to the ratios of paired measurements (e.g. the throughputs of two
  encodings timed in the same round, whose ratio cancels the machine's load).

Orderings:

* ``ci_separated``: whether two intervals are disjoint (the ordering rule "better only when the CIs do
  not overlap"); ``ci_order`` the resulting verdict ``better`` / ``worse`` / ``tie``.
* ``ordering_table``: each published ordering "``better`` beats ``worse``" (``ropelib.published``)
  checked against our seed means, with that test; ``nearest_multiplier`` maps a published length ratio
  to the nearest of ours on a log scale.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "wilson_interval",
    "accuracy_ci",
    "mean_ci",
    "aggregate_seeds",
    "paired_ratio_ci",
    "ci_separated",
    "ci_order",
    "nearest_multiplier",
    "ordering_table",
]


# -- validation ---------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _check_confidence(confidence: Any) -> float:
    if isinstance(confidence, (bool, np.bool_)) or not isinstance(confidence, numbers.Real):
        raise ValueError(f"confidence must be a real number in (0, 1), got {confidence!r}")
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be a real number in (0, 1), got {confidence!r}")
    return c


def _check_counts(successes: Any, n: Any, what: str = "") -> tuple[int, int]:
    where = f"{what}: " if what else ""
    if not _is_int(n) or n < 1:
        raise ValueError(f"{where}n must be a positive integer, got {n!r}")
    if not _is_int(successes) or not 0 <= successes <= n:
        raise ValueError(f"{where}successes must be an integer in [0, n={int(n)}], got {successes!r}")
    return int(successes), int(n)


# -- Wilson score interval ----------------------------------------------------------------------------


def _z(confidence: float) -> float:
    """Two-sided standard-normal quantile: ``Phi^{-1}((1 + confidence) / 2)``."""
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """``(low, high)``: the Wilson score interval (Wilson 1927) of the proportion ``successes / n``.

    Always ``0 <= low <= successes/n <= high <= 1``; ``low == 0`` exactly when ``successes == 0`` and
    ``high == 1`` exactly when ``successes == n``. ``successes`` and ``n`` are integers with
    ``0 <= successes <= n`` and ``n >= 1``; ``confidence`` in ``(0, 1)``. Anything else: ValueError.
    """
    k, n = _check_counts(successes, n)
    z = _z(_check_confidence(confidence))
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    # the closed form gives exactly 0 / 1 at the ends up to rounding; pin them and keep p inside
    low = 0.0 if k == 0 else min(max(centre - half, 0.0), p)
    high = 1.0 if k == n else max(min(centre + half, 1.0), p)
    return low, high


# -- accuracy over seeds and samples ------------------------------------------------------------------


def _seed_counts(entry: Any, i: int) -> tuple[int, int]:
    """``(correct, n)`` of one seed: a ``tuple`` of two integers is taken as counts, anything else
    (list, array, other sequence) as per-sample outcomes in {0, 1} / {False, True}."""
    if isinstance(entry, tuple) and len(entry) == 2 and all(_is_int(v) for v in entry):
        return _check_counts(entry[0], entry[1], what=f"seed {i} (correct, n) = {entry!r}")
    try:
        outcomes = np.asarray(entry)
    except Exception as e:  # ragged or otherwise not array-like
        raise ValueError(f"seed {i}: expected per-sample outcomes or a (correct, n) tuple, got {entry!r}") from e
    if outcomes.ndim != 1 or outcomes.size == 0:
        raise ValueError(f"seed {i}: per-sample outcomes must be a non-empty 1-D sequence, got shape {outcomes.shape}")
    if outcomes.dtype.kind not in "biu" or not np.isin(outcomes, (0, 1)).all():
        bad = outcomes[~np.isin(outcomes, (0, 1))][:3] if outcomes.dtype.kind in "biufc" else outcomes[:3]
        raise ValueError(
            f"seed {i}: per-sample outcomes must be bools or integers in {{0, 1}}, "
            f"got dtype {outcomes.dtype} (e.g. {bad.tolist()!r})"
        )
    return int(outcomes.sum()), int(outcomes.size)


def accuracy_ci(
    correct_by_seed: Sequence[Sequence[bool | int]] | Sequence[tuple[int, int]],
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of one model configuration over its training seeds and evaluation samples, with a CI.

    ``correct_by_seed`` has one entry per training seed: either the per-sample outcomes (a list or
    array of bools / 0-1 integers) or a ``(correct, n)`` tuple of counts. A ``tuple`` of exactly two
    integers is always read as counts, so pass length-2 outcome vectors as a list or array. Forms may
    be mixed (resampling samples within a seed only depends on its counts).

    Returns ``{"mean", "ci_low", "ci_high", "n_seeds", "n_samples", "method"}`` with ``mean`` the mean
    over seeds of the per-seed accuracy (each seed weighs the same, whatever its sample count) and
    ``n_samples`` the total number of samples.

    * one seed: ``method == "wilson"``, the Wilson interval of its counts (``wilson_interval``);
    * two or more seeds (``S``): ``method == "hierarchical_bootstrap"``. Each of ``n_boot`` replicates
      draws ``S`` seeds with replacement and, for each drawn seed with ``n_s`` samples of which
      ``k_s`` are correct, ``n_s`` samples with replacement from them (``Binomial(n_s, k_s/n_s)``
      correct); the replicate is the mean over the drawn seeds of the resampled accuracy. The interval
      is the percentile interval (Efron & Tibshirani 1993, ch. 13): the ``(1 - confidence)/2`` and
      ``(1 + confidence)/2`` quantiles of the replicates, inside ``[0, 1]`` by construction. It is
      deterministic for a given ``seed`` (``numpy.random.default_rng(seed)``). Like every percentile
      bootstrap it cannot show variation the data do not have: when every seed scores 0 % (or 100 %)
      the interval collapses to the point 0 (or 1); and with few seeds it tends to be too narrow.
    """
    c = _check_confidence(confidence)
    if not _is_int(n_boot) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(correct_by_seed, (str, bytes)) or not isinstance(correct_by_seed, (Sequence, np.ndarray)):
        raise ValueError(
            f"correct_by_seed must be a sequence with one entry per seed, got {type(correct_by_seed).__name__}"
        )
    if len(correct_by_seed) == 0:
        raise ValueError("correct_by_seed is empty: need at least one seed")
    counts = [_seed_counts(entry, i) for i, entry in enumerate(correct_by_seed)]
    k = np.array([kc for kc, _ in counts], dtype=np.int64)  # (S,)
    n = np.array([nc for _, nc in counts], dtype=np.int64)  # (S,)
    n_seeds, n_samples = int(k.size), int(n.sum())
    mean = float(np.mean(k / n))
    if n_seeds == 1:
        low, high = wilson_interval(int(k[0]), int(n[0]), c)
        return {"mean": mean, "ci_low": low, "ci_high": high, "n_seeds": 1, "n_samples": n_samples, "method": "wilson"}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))  # (B, S) seeds drawn per replicate
    n_drawn = n[idx]  # (B, S)
    k_drawn = rng.binomial(n_drawn, k[idx] / n_drawn)  # (B, S) correct among n_s resampled samples
    replicates = (k_drawn / n_drawn).mean(axis=1)  # (B,)
    low, high = np.quantile(replicates, [(1.0 - c) / 2.0, (1.0 + c) / 2.0])
    return {
        "mean": mean,
        "ci_low": float(np.clip(low, 0.0, 1.0)),
        "ci_high": float(np.clip(high, 0.0, 1.0)),
        "n_seeds": n_seeds,
        "n_samples": n_samples,
        "method": "hierarchical_bootstrap",
    }


# -- mean over seeds of an unbounded quantity ---------------------------------------------------------


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, ci_low, ci_high, n)`` of the finite ``values``: a two-sided Student-t interval.

    ``mean ± t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (ddof=1), i.e. ``scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=sem)``. Non-finite values
    (NaN, ±inf) are dropped (``n`` counts the rest). ``n == 0``: all NaN; ``n == 1``: the value and a
    NaN interval; all values equal: the interval collapses to the mean. ``confidence`` must be a float
    in (0, 1). For unbounded quantities (loss, perplexity); for accuracies use ``accuracy_ci``.
    """
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a float in (0, 1), got {confidence!r}")
    x = np.asarray(list(values), dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    sem = float(x.std(ddof=1) / math.sqrt(n))
    if sem == 0.0:
        return mean, mean, mean, n
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return mean, float(low), float(high), n


def aggregate_seeds(
    df: pd.DataFrame, by: Sequence[str], value: str, confidence: float = 0.95, prefix: str = ""
) -> pd.DataFrame:
    """Mean and confidence interval of column ``value`` over the rows of each group ``by`` (the seeds).

    Returns one row per group with the ``by`` columns and ``n_seeds``, ``{prefix}mean``,
    ``{prefix}ci_low``, ``{prefix}ci_high`` (``mean_ci``), groups in sorted order."""
    missing = [c for c in [*by, value] if c not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the table; its columns: {list(df.columns)}")
    rows = []
    for key, group in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high, n = mean_ci(group[value].to_numpy(dtype=float), confidence)
        rows.append(
            {
                **dict(zip(by, key)),
                "n_seeds": n,
                f"{prefix}mean": mean,
                f"{prefix}ci_low": low,
                f"{prefix}ci_high": high,
            }
        )
    return pd.DataFrame(rows, columns=[*by, "n_seeds", f"{prefix}mean", f"{prefix}ci_low", f"{prefix}ci_high"])


def paired_ratio_ci(a: pd.Series, b: pd.Series, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, ci_low, ci_high, n)`` of the ratios ``a[k] / b[k]`` of paired measurements: ``mean_ci``
    (Student-t) over the pairs.

    ``a`` and ``b`` are Series indexed by the pairing key (e.g. the round in which both were measured);
    a key present in only one of them, or whose ratio is not finite (NaN, a zero ``b``), is left out,
    and ``n`` counts the pairs kept (0: all NaN). Pairing first removes what the two measurements share
    (a machine's load in a throughput round) before the interval is taken over the pairs."""
    if not isinstance(a, pd.Series) or not isinstance(b, pd.Series):
        raise ValueError(
            f"a and b must be pandas Series indexed by the pairing key, got {type(a).__name__}, {type(b).__name__}"
        )
    ratio = (a / b).dropna()  # aligned on the index: keys in only one of them give NaN
    return mean_ci(ratio.to_numpy(dtype=np.float64), confidence)


# -- ordering -----------------------------------------------------------------------------------------


def ci_separated(a_low: float, a_high: float, b_low: float, b_high: float) -> bool:
    """True when the intervals ``[a_low, a_high]`` and ``[b_low, b_high]`` do not overlap.

    Closed intervals: touching ends (``a_high == b_low``) overlap, so they are *not* separated; a point
    interval (``low == high``) is allowed. Each end must be a real number, not NaN (a NaN interval, e.g.
    ``mean_ci`` of one seed, cannot order anything: decide that case explicitly), with ``low <= high``;
    otherwise ValueError.
    """
    ends = {"a_low": a_low, "a_high": a_high, "b_low": b_low, "b_high": b_high}
    for name, v in ends.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or math.isnan(v):
            raise ValueError(f"{name} must be a real number (not NaN), got {v!r}")
    if a_low > a_high:
        raise ValueError(f"interval a is reversed: a_low={a_low!r} > a_high={a_high!r}")
    if b_low > b_high:
        raise ValueError(f"interval b is reversed: b_low={b_low!r} > b_high={b_high!r}")
    return bool(a_high < b_low or b_high < a_low)


def ci_order(a_low: float, a_high: float, b_low: float, b_high: float, *, lower_is_better: bool) -> str:
    """``"better"`` when ``a``'s interval lies entirely on the good side of ``b``'s (below it when
    ``lower_is_better``, above it otherwise), ``"worse"`` when entirely on the bad side, else ``"tie"``
    (overlapping or touching intervals: ``ci_separated``, whose ValueErrors it shares)."""
    if not ci_separated(a_low, a_high, b_low, b_high):
        return "tie"
    a_below = a_high < b_low
    return "better" if a_below == bool(lower_is_better) else "worse"


def nearest_multiplier(target: float, available: Iterable[float]) -> float:
    """The value of ``available`` closest to ``target`` on a log scale (length ratios)."""
    available = [float(a) for a in available]
    if not available or target <= 0:
        raise ValueError(f"need positive target and at least one available multiplier, got {target!r}, {available}")
    return min(available, key=lambda a: abs(math.log(a / target)))


def ordering_table(
    claims: pd.DataFrame,
    ours: pd.DataFrame,
    *,
    metric: str,
    lower_is_better: bool,
    multipliers: Iterable[float] | None = None,
) -> pd.DataFrame:
    """Check each published claim "``better`` beats ``worse``" against our seed means.

    ``claims``: rows of ``ropelib.published.published_orderings()`` (one source). ``ours``: a summary
    with columns ``encoding, multiplier, mean, ci_low, ci_high`` for one metric. Each published length
    ratio is mapped to the nearest of our ``multipliers`` (log scale; default: those in ``ours``); when
    several map to the same one, the closest is kept. Returns ``05_orderings.csv`` columns (without
    ``profile``): ``source, comparison, better, worse, multiplier, metric, better_value, worse_value,
    published_better, published_worse, reproduced, note``. ``reproduced`` is ``True``/``False``, or NaN
    where we have no finite value for one side (e.g. ``learned`` past its table); ``note`` says
    ``significant`` when the two 95% intervals do not overlap (``ci_separated``), ``within CI``
    otherwise (the order of the means is then not resolved by the seeds)."""
    need = {"encoding", "multiplier", "mean", "ci_low", "ci_high"}
    if not need <= set(ours.columns):
        raise ValueError(f"ours must have columns {sorted(need)}, got {list(ours.columns)}")
    avail = sorted(set(ours["multiplier"])) if multipliers is None else sorted(set(multipliers))
    columns = [
        "source",
        "comparison",
        "better",
        "worse",
        "multiplier",
        "metric",
        "better_value",
        "worse_value",
        "published_better",
        "published_worse",
        "reproduced",
        "note",
    ]
    if not avail:  # nothing of ours to compare (e.g. no model passed its gate)
        return pd.DataFrame(columns=columns)
    nearest = {float(pm): nearest_multiplier(float(pm), avail) for pm in set(claims["published_multiplier"])}
    mapped: dict[float, float] = {}  # published ratio -> our multiplier (one published ratio per ours)
    for m in set(nearest.values()):
        closest = min((pm for pm, q in nearest.items() if q == m), key=lambda pm: abs(math.log(pm / m)))
        mapped[closest] = m
    index = {(r.encoding, float(r.multiplier)): r for r in ours.itertuples()}
    rows = []
    for c in claims.itertuples():
        if c.published_multiplier not in mapped:
            continue
        m = mapped[c.published_multiplier]
        b, w = index.get((c.better, m)), index.get((c.worse, m))
        if b is None or w is None:
            continue  # an encoding we did not train
        bv, wv = float(b.mean), float(w.mean)
        if not (math.isfinite(bv) and math.isfinite(wv)):
            reproduced, note = math.nan, "no value (cannot run at this length)"
        else:
            reproduced = bool(bv < wv) if lower_is_better else bool(bv > wv)
            if not all(math.isfinite(v) for v in (b.ci_low, b.ci_high, w.ci_low, w.ci_high)):
                note = "no CI (fewer than 2 seeds)"
            elif ci_separated(float(b.ci_low), float(b.ci_high), float(w.ci_low), float(w.ci_high)):
                note = "significant"
            else:
                note = "within CI"
        rows.append(
            {
                "source": c.source,
                "comparison": f"{c.better} > {c.worse}",
                "better": c.better,
                "worse": c.worse,
                "multiplier": m,
                "metric": metric,
                "better_value": bv,
                "worse_value": wv,
                "published_better": c.published_better,
                "published_worse": c.published_worse,
                "reproduced": reproduced,
                "note": note,
            }
        )
    return pd.DataFrame(rows, columns=columns)
