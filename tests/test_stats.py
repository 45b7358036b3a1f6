"""Tests of ropelib.stats: Wilson interval, hierarchical-bootstrap accuracy CI, Student-t mean CI,
interval separation."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib import experiments as X
from ropelib.stats import accuracy_ci, ci_separated, mean_ci, wilson_interval

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


def test_experiments_uses_the_same_mean_ci():
    assert X.mean_ci is mean_ci  # one implementation (experiments re-exports it)


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
