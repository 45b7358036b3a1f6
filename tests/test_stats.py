"""Tests of ropelib.stats: Wilson interval, hierarchical-bootstrap accuracy CI, Student-t mean CI,
interval separation."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import ropelib
from ropelib import published
from ropelib.stats import (
    accuracy_ci,
    aggregate_seeds,
    ci_order,
    ci_separated,
    mean_ci,
    nearest_multiplier,
    ordering_table,
    paired_ratio_ci,
    wilson_interval,
)

#: Phi^{-1}(0.975), typed in (not from scipy) so the reference below is independent of the module
Z95 = 1.959963984540054


def wilson_reference(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927) in its textbook form: roots of ``(p - phat)^2 = z^2 p (1 - p) / n``."""
    a = n + z * z
    b = 2 * k + z * z
    disc = z * math.sqrt(z * z + 4.0 * k * (n - k) / n)
    return (b - disc) / (2 * a), (b + disc) / (2 * a)


# -- wilson_interval ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (5, 10), (1, 1), (0, 1), (37, 200), (999, 1000)])
def test_wilson_matches_the_closed_formula(k, n):
    low, high = wilson_interval(k, n)
    ref_low, ref_high = wilson_reference(k, n)
    assert low == pytest.approx(max(ref_low, 0.0), abs=1e-12)
    assert high == pytest.approx(min(ref_high, 1.0), abs=1e-12)


@pytest.mark.parametrize(
    "k, n, expected",
    [
        (81, 263, (0.2553, 0.3662)),
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
    ],
)
def test_wilson_published_values(k, n, expected):
    # Newcombe 1998 (Stat Med 17:857-872), Table I, method 3 (Wilson score, no continuity correction)
    assert wilson_interval(k, n) == pytest.approx(expected, abs=5e-5)


def test_wilson_small_n_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-5)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=5e-5)


def test_wilson_ends_are_exact():
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 10)[1] > 0.0 and wilson_interval(10, 10)[0] < 1.0


def test_wilson_confidence_widens():
    lows_highs = [wilson_interval(30, 100, c) for c in (0.5, 0.9, 0.95, 0.99)]
    widths = [h - l for l, h in lows_highs]
    assert widths == sorted(widths)
    z99 = 2.5758293035489004
    assert wilson_interval(30, 100, 0.99) == pytest.approx(wilson_reference(30, 100, z99), abs=1e-12)


@pytest.mark.skipif(importlib.util.find_spec("statsmodels") is None, reason="statsmodels not installed")
@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (5, 10), (37, 200)])
def test_wilson_matches_statsmodels(k, n):
    from statsmodels.stats.proportion import proportion_confint

    assert wilson_interval(k, n) == pytest.approx(proportion_confint(k, n, 0.05, method="wilson"), abs=1e-10)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 100_000), frac=st.floats(0.0, 1.0), conf=st.floats(0.01, 0.999))
def test_wilson_stays_in_the_unit_interval_and_contains_p(n, frac, conf):
    k = round(frac * n)
    low, high = wilson_interval(k, n, conf)
    assert 0.0 <= low <= k / n <= high <= 1.0


@pytest.mark.parametrize(
    "args, match",
    [
        ((-1, 10), "successes"),
        ((11, 10), "successes"),
        ((1.0, 10), "successes"),
        ((True, 10), "successes"),
        ((0, 0), "n must be a positive integer"),
        ((0, 2.0), "n must be"),
        ((1, 10, 1.0), "confidence"),
        ((1, 10, 0.0), "confidence"),
        ((1, 10, "0.95"), "confidence"),
        ((1, 10, float("nan")), "confidence"),
    ],
)
def test_wilson_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        wilson_interval(*args)


def test_wilson_accepts_numpy_integers():
    assert wilson_interval(np.int64(5), np.int32(10)) == wilson_interval(5, 10)


# -- accuracy_ci --------------------------------------------------------------------------------------


def test_one_seed_is_wilson_on_its_counts():
    outcomes = [True] * 7 + [False] * 3
    d = accuracy_ci([outcomes])
    assert d["method"] == "wilson" and d["n_seeds"] == 1 and d["n_samples"] == 10
    assert d["mean"] == pytest.approx(0.7)
    assert (d["ci_low"], d["ci_high"]) == wilson_interval(7, 10)
    assert accuracy_ci([(7, 10)]) == d
    assert accuracy_ci([np.array([1] * 7 + [0] * 3)]) == d


def test_outcomes_and_counts_give_the_same_bootstrap():
    outcomes = [[1] * 8 + [0] * 2, [True] * 5 + [False] * 5, np.array([1, 1, 1, 0])]
    counts = [(8, 10), (5, 10), (3, 4)]
    a, b = accuracy_ci(outcomes, seed=3), accuracy_ci(counts, seed=3)
    assert a == b
    assert a["method"] == "hierarchical_bootstrap" and a["n_seeds"] == 3 and a["n_samples"] == 24
    assert a["mean"] == pytest.approx((0.8 + 0.5 + 0.75) / 3)  # mean of per-seed accuracies, not pooled


def test_bootstrap_is_deterministic_per_seed():
    data = [(40, 50), (35, 50), (45, 50), (30, 50)]
    assert accuracy_ci(data, seed=7) == accuracy_ci(data, seed=7)
    assert accuracy_ci(data, seed=7) != accuracy_ci(data, seed=8)


def test_bootstrap_brackets_the_mean_and_stays_in_range():
    data = [(40, 50), (35, 50), (45, 50), (30, 50)]
    d = accuracy_ci(data)
    assert 0.0 <= d["ci_low"] < d["mean"] < d["ci_high"] <= 1.0
    wide, narrow = accuracy_ci(data, confidence=0.99), accuracy_ci(data, confidence=0.5)
    assert wide["ci_low"] <= d["ci_low"] <= narrow["ci_low"] and narrow["ci_high"] <= d["ci_high"] <= wide["ci_high"]


def test_bootstrap_at_the_ends_collapses_to_the_end():
    assert accuracy_ci([(10, 10), (20, 20)])[("ci_low")] == 1.0
    d = accuracy_ci([(0, 10), (0, 20)])
    assert (d["mean"], d["ci_low"], d["ci_high"]) == (0.0, 0.0, 0.0)


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(
        st.integers(1, 60).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), min_size=1, max_size=6
    ),
    seed=st.integers(0, 2**31),
)
def test_accuracy_ci_stays_in_the_unit_interval(counts, seed):
    d = accuracy_ci(counts, n_boot=200, seed=seed)
    assert 0.0 <= d["ci_low"] <= d["ci_high"] <= 1.0
    assert 0.0 <= d["mean"] <= 1.0


def test_bootstrap_covers_the_true_accuracy():
    # iid seeds (no seed effect): the two-level bootstrap is conservative, so it covers at >= nominal;
    # 200 replicates: a 95 % interval covering < 88 % of the time would be a bug
    rng = np.random.default_rng(12345)
    p, n, S, reps = 0.7, 50, 5, 200
    hits = 0
    for r in range(reps):
        data = [(int(rng.binomial(n, p)), n) for _ in range(S)]
        d = accuracy_ci(data, n_boot=500, seed=r)
        hits += d["ci_low"] <= p <= d["ci_high"]
    assert hits / reps >= 0.88


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        ([], {}, "empty"),
        ("1010", {}, "sequence"),
        ([[1, 0, 2]], {}, "seed 0.*bools or integers"),
        ([[1, 0], [0.5, 1.0]], {}, "seed 1.*dtype float"),
        ([[]], {}, "seed 0.*non-empty"),
        ([(11, 10)], {}, "seed 0.*successes"),
        ([(3, 0)], {}, "seed 0.*n must be"),
        ([(3, 5)], {"n_boot": 0}, "n_boot"),
        ([(3, 5)], {"seed": -1}, "seed must be"),
        ([(3, 5)], {"confidence": 95}, "confidence"),
    ],
)
def test_accuracy_ci_bad_input(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        accuracy_ci(data, **kwargs)


# -- mean_ci ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], (math.nan, math.nan, math.nan, 0)),
        ([3.0], (3.0, math.nan, math.nan, 1)),
        ([2.0, 2.0, 2.0], (2.0, 2.0, 2.0, 3)),  # no spread: the interval collapses to the mean
        ([1.0, math.nan, 3.0, 5.0], None),  # NaN dropped: the interval of [1, 3, 5]
        ([1.0, math.inf, 2.0], None),  # inf dropped too: the interval of [1, 2]
        ([math.nan, math.nan], (math.nan, math.nan, math.nan, 0)),
    ],
)
def test_mean_ci_drops_non_finite_values(values, expected):
    from scipy import stats

    got = mean_ci(values)
    if expected is None:
        finite = [v for v in values if math.isfinite(v)]
        m, sem = float(np.mean(finite)), float(np.std(finite, ddof=1) / math.sqrt(len(finite)))
        lo, hi = stats.t.interval(0.95, len(finite) - 1, loc=m, scale=sem)
        expected = (m, lo, hi, len(finite))
    assert got[3] == expected[3]
    np.testing.assert_allclose(np.array(got[:3], dtype=float), np.array(expected[:3], dtype=float), rtol=1e-12)


def test_one_implementation_of_each_statistic():
    """Every Student-t interval, seed aggregation and ordering of the package is the one in ropelib.stats."""
    package = Path(ropelib.__file__).parent
    for name in ("mean_ci", "aggregate_seeds", "ci_separated", "ordering_table", "nearest_multiplier"):
        defining = sorted(p.name for p in package.rglob("*.py") if f"def {name}(" in p.read_text(encoding="utf-8"))
        assert defining == ["stats.py"], (name, defining)


def test_mean_ci_is_the_t_interval():
    from scipy import stats

    x = [1.0, 2.0, 4.0, 7.0]
    m, lo, hi, n = mean_ci(x)
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2.0
    assert (m, n) == (3.5, 4) and (lo, hi) == pytest.approx((3.5 - half, 3.5 + half))


@pytest.mark.parametrize("confidence", [1, 0.0, 1.0, "0.95"])
def test_mean_ci_bad_confidence(confidence):
    with pytest.raises(ValueError, match="confidence must be a float"):
        mean_ci([1.0, 2.0], confidence)


# -- ci_separated -------------------------------------------------------------------------------------


def test_ci_separated():
    assert ci_separated(0.0, 1.0, 1.5, 2.0) and ci_separated(1.5, 2.0, 0.0, 1.0)
    assert not ci_separated(0.0, 1.0, 0.5, 2.0)
    assert not ci_separated(0.0, 1.0, 1.0, 2.0)  # touching closed intervals overlap
    assert not ci_separated(0.0, 3.0, 1.0, 2.0)  # nested
    assert ci_separated(1.0, 1.0, 2.0, 2.0) and not ci_separated(1.0, 1.0, 1.0, 1.0)  # points
    assert ci_separated(-math.inf, 0.0, 1.0, math.inf)


@pytest.mark.parametrize(
    "args, match",
    [
        ((math.nan, 1.0, 2.0, 3.0), "a_low"),
        ((0.0, 1.0, 2.0, math.nan), "b_high"),
        ((2.0, 1.0, 2.0, 3.0), "interval a is reversed"),
        ((0.0, 1.0, 3.0, 2.0), "interval b is reversed"),
        ((0.0, "1", 2.0, 3.0), "a_high"),
        ((0.0, True, 2.0, 3.0), "a_high"),
    ],
)
def test_ci_separated_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ci_separated(*args)


# -- Student-t mean CI over seeds, per group of a table -------------------------------------------------


def test_mean_ci_matches_scipy_and_the_formula():
    x = [1.0, 2.0, 3.0, 4.0]
    mean, low, high, n = mean_ci(x)
    ref = stats.t.interval(0.95, 3, loc=2.5, scale=stats.sem(x))
    assert n == 4 and mean == pytest.approx(2.5)
    assert (low, high) == pytest.approx(ref)
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2.0
    assert high - mean == pytest.approx(half)
    assert (low, high) == pytest.approx((0.4457397432, 4.5542602568))  # t_{0.975,3} = 3.18245


def test_mean_ci_edge_cases():
    assert mean_ci([2.0, float("nan"), 4.0])[:2] == (3.0, pytest.approx(3.0 - 12.706204736 * 1.0))
    mean, low, high, n = mean_ci([5.0])
    assert (mean, n) == (5.0, 1) and math.isnan(low) and math.isnan(high)
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5, 3)
    assert mean_ci([float("nan")])[3] == 0 and math.isnan(mean_ci([])[0])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12), st.floats(0.5, 0.99))
def test_mean_ci_brackets_the_mean_and_widens_with_confidence(values, confidence):
    mean, low, high, n = mean_ci(values, confidence)
    assert n == len(values)
    assert low <= mean + 1e-9 and mean <= high + 1e-9
    _, low99, high99, _ = mean_ci(values, 0.995)
    assert low99 <= low + 1e-9 and high <= high99 + 1e-9


def test_aggregate_seeds_per_group():
    df = pd.DataFrame(
        {
            "encoding": ["a", "a", "a", "b", "b", "b"],
            "length": [8, 8, 8, 8, 8, 8],
            "seed": [0, 1, 2, 0, 1, 2],
            "loss": [1.0, 2.0, 3.0, 5.0, 5.0, float("nan")],
        }
    )
    out = aggregate_seeds(df, ["encoding", "length"], "loss", prefix="loss_")
    assert list(out.columns) == ["encoding", "length", "n_seeds", "loss_mean", "loss_ci_low", "loss_ci_high"]
    a = out[out.encoding == "a"].iloc[0]
    assert a.n_seeds == 3 and a.loss_mean == 2.0
    assert (a.loss_ci_low, a.loss_ci_high) == pytest.approx(
        stats.t.interval(0.95, 2, loc=2.0, scale=stats.sem([1, 2, 3]))
    )
    b = out[out.encoding == "b"].iloc[0]
    assert b.n_seeds == 2 and b.loss_mean == 5.0 and b.loss_ci_low == 5.0
    with pytest.raises(ValueError, match=r"\['ppl'\] not in the table"):
        aggregate_seeds(df, ["encoding"], "ppl")


# -- published orderings beside ours -----------------------------------------------------------------


def test_nearest_multiplier_log_scale():
    assert nearest_multiplier(1012 / 512, [1, 1.5, 2, 4, 8]) == 2
    assert nearest_multiplier(2512 / 512, [1, 1.5, 2, 4, 8]) == 4
    assert nearest_multiplier(3.0, [2, 4]) == 4  # log(3/2) > log(4/3)
    with pytest.raises(ValueError):
        nearest_multiplier(2.0, [])


def _ours(values: dict[tuple[str, float], tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"encoding": e, "multiplier": m, "mean": v[0], "ci_low": v[1], "ci_high": v[2]}
            for (e, m), v in values.items()
        ]
    )


def test_ordering_table_flags_reproduced_significant_and_missing():
    claims = published.published_orderings()
    alibi = claims[claims.source == "alibi_table1"]
    ours = _ours(
        {
            ("alibi", 2.0): (5.0, 4.9, 5.1),
            ("t5", 2.0): (5.5, 5.0, 6.0),
            ("rope", 2.0): (5.2, 5.0, 6.0),
            ("sinusoidal", 2.0): (9.0, 8.0, 10.0),
            ("alibi", 8.0): (5.0, 4.9, 5.1),
            ("t5", 8.0): (7.0, 6.0, 8.0),
            ("rope", 8.0): (math.nan, math.nan, math.nan),
            ("sinusoidal", 8.0): (20.0, 19.0, 21.0),
        }
    )
    t = ordering_table(alibi, ours, metric="ppl_nonoverlap", lower_is_better=True)
    # our multipliers are {2, 8}: 1012/512 -> 2x; 2512/512, 5512/512 and 15512/512 all map to 8x on a log
    # scale, and 5512/512 (the closest) is kept, so each multiplier carries the 6 pairs of 4 encodings
    assert t.groupby("multiplier").size().to_dict() == {2.0: 6, 8.0: 6}
    assert set(t.loc[t.multiplier == 8.0, "published_better"]) <= set(published.ALIBI_TABLE1[5512].values())
    row = t[(t.multiplier == 2.0) & (t.better == "alibi") & (t.worse == "t5")].iloc[0]
    assert row.reproduced == True and row.note == "within CI"  # noqa: E712  [4.9, 5.1] overlaps [5.0, 6.0]
    row = t[(t.multiplier == 2.0) & (t.better == "rope") & (t.worse == "sinusoidal")].iloc[0]
    assert row.reproduced == True and row.note == "significant"  # noqa: E712
    row = t[(t.multiplier == 2.0) & (t.better == "t5") & (t.worse == "rope")].iloc[0]
    assert row.reproduced == False  # noqa: E712  ours: rope 5.2 < t5 5.5
    row = t[(t.multiplier == 8.0) & (t.better == "rope") & (t.worse == "sinusoidal")].iloc[0]
    assert math.isnan(row.reproduced) and row.note.startswith("no value")


def test_ordering_table_details():
    claims = pd.DataFrame(
        [
            {
                "source": "s",
                "better": "a",
                "worse": "b",
                "metric": "ppl",
                "published_better": 1.0,
                "published_worse": 2.0,
                "published_length": 20,
                "published_multiplier": 2.0,
            },
            {
                "source": "s",
                "better": "a",
                "worse": "c",
                "metric": "ppl",
                "published_better": 1.0,
                "published_worse": 3.0,
                "published_length": 20,
                "published_multiplier": 2.0,
            },
            {
                "source": "s",
                "better": "b",
                "worse": "c",
                "metric": "ppl",
                "published_better": 2.0,
                "published_worse": 3.0,
                "published_length": 20,
                "published_multiplier": 2.0,
            },
            {
                "source": "s",
                "better": "a",
                "worse": "b",
                "metric": "ppl",
                "published_better": 1.0,
                "published_worse": 2.0,
                "published_length": 22,
                "published_multiplier": 2.2,
            },
        ]
    )
    ours = _ours({("a", 2.0): (1.0, 0.9, 1.1), ("b", 2.0): (3.0, 2.0, 4.0), ("c", 2.0): (2.5, 0.0, 5.0)})
    t = ordering_table(claims, ours, metric="m", lower_is_better=True)
    assert len(t) == 3  # the 2.2 claim maps to 2x too, but 2.0 is closer and is kept
    got = {(r.better, r.worse): (r.reproduced, r.note) for r in t.itertuples()}
    assert got[("a", "b")] == (True, "significant")
    assert got[("a", "c")] == (True, "within CI")
    assert got[("b", "c")] == (False, "within CI")
    higher = ordering_table(claims, ours, metric="m", lower_is_better=False)
    assert dict(zip(zip(higher.better, higher.worse), higher.reproduced))[("a", "b")] is False
    nan = _ours({("a", 2.0): (1.0, 0.9, 1.1), ("b", 2.0): (math.nan,) * 3, ("c", 2.0): (1.0, math.nan, math.nan)})
    t = ordering_table(claims, nan, metric="m", lower_is_better=True)
    row = t[(t.better == "a") & (t.worse == "b")].iloc[0]
    assert math.isnan(row.reproduced) and "no value" in row.note
    row = t[(t.better == "a") & (t.worse == "c")].iloc[0]
    assert row.reproduced is False and row.note.startswith("no CI")
    with pytest.raises(ValueError, match="columns"):
        ordering_table(claims, ours.drop(columns="ci_low"), metric="m", lower_is_better=True)


# -- paired ratios and the ordering verdict ------------------------------------------------------------


def test_paired_ratio_ci_is_the_t_interval_of_the_pairs():
    a = pd.Series([2.0, 4.0, 6.0, 9.0], index=[0, 1, 2, 3])  # e.g. tokens/s per round
    b = pd.Series([1.0, 2.0, 2.0], index=[0, 1, 2])  # round 3 missing: not a pair
    mean, low, high, n = paired_ratio_ci(a, b)
    ref = stats.t.interval(0.95, 2, loc=7 / 3, scale=stats.sem([2.0, 2.0, 3.0]))
    assert n == 3 and mean == pytest.approx(7 / 3) and (low, high) == pytest.approx(ref)
    assert paired_ratio_ci(a, b, 0.5)[1] > low  # a narrower interval at lower confidence


def test_paired_ratio_ci_pairs_by_key_not_by_position():
    load = pd.Series([10.0, 20.0, 30.0], index=["r0", "r1", "r2"])  # the machine's load moves both alike
    a, b = 2.0 * load, load
    assert paired_ratio_ci(a, b) == (2.0, 2.0, 2.0, 3)  # the load cancels within each pair
    shuffled = b.iloc[[2, 0, 1]]  # same pairs, other order: the same answer
    assert paired_ratio_ci(a, shuffled) == (2.0, 2.0, 2.0, 3)
    unpaired = pd.Series(b.to_numpy()[[2, 0, 1]], index=b.index)  # other pairs: the ratios now vary
    assert paired_ratio_ci(a, unpaired)[1] < 2.0


def test_paired_ratio_ci_edge_cases_and_errors():
    a = pd.Series([3.0, 5.0], index=[0, 1])
    assert paired_ratio_ci(a, pd.Series([1.0, 0.0], index=[0, 1]))[::3] == (3.0, 1)  # a zero b: no finite ratio
    mean, low, high, n = paired_ratio_ci(a, pd.Series([2.0], index=[7]))  # no common key
    assert n == 0 and math.isnan(mean) and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="pandas Series"):
        paired_ratio_ci([3.0, 5.0], a)
    with pytest.raises(ValueError, match="confidence"):
        paired_ratio_ci(a, a, confidence=95)


@pytest.mark.parametrize(
    ("a", "b", "lower", "expected"),
    [
        ((1.0, 2.0), (3.0, 4.0), True, "better"),
        ((1.0, 2.0), (3.0, 4.0), False, "worse"),
        ((3.0, 4.0), (1.0, 2.0), True, "worse"),
        ((3.0, 4.0), (1.0, 2.0), False, "better"),
        ((1.0, 3.0), (2.0, 4.0), True, "tie"),
        ((1.0, 2.0), (2.0, 3.0), False, "tie"),  # touching ends overlap
        ((0.5, 0.5), (0.7, 0.9), True, "better"),  # a point interval
    ],
)
def test_ci_order_verdicts(a, b, lower, expected):
    assert ci_order(*a, *b, lower_is_better=lower) == expected


def test_ci_order_rejects_what_ci_separated_rejects():
    with pytest.raises(ValueError, match="not NaN"):
        ci_order(math.nan, 1.0, 2.0, 3.0, lower_is_better=True)
    with pytest.raises(ValueError, match="reversed"):
        ci_order(2.0, 1.0, 3.0, 4.0, lower_is_better=True)
