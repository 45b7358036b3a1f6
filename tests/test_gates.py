"""Tests of ropelib.gates: context gain, the lm and retrieval gates (boundaries, the RoPE rule),
the gate table and the passed-only filter."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from ropelib.gates import (
    ROPE_ENCODINGS,
    Check,
    GateResult,
    GateThresholds,
    context_gain,
    gate_table,
    lm_gate,
    passed_only,
    retrieval_gate,
)
from ropelib.stats import wilson_interval

BASELINES = {2: 12.0, 3: 8.0, 4: 6.0}
T = GateThresholds()


# -- thresholds and records ---------------------------------------------------------------------------


def test_default_thresholds():
    assert (T.context_gain_nats, T.lm_baseline_order, T.rope_baseline_order, T.retrieval_margin) == (0.15, 3, 4, 0.0)
    assert T.retrieval_confidence == 0.95
    assert ROPE_ENCODINGS == {"rope"}


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        T.context_gain_nats = 0.0  # type: ignore[misc]
    g = lm_gate(5.0, 0.5, BASELINES, "alibi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.passed = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.checks[0].passed = False  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"context_gain_nats": -10.5}, "context_gain_nats"),
        ({"context_gain_nats": math.nan}, "context_gain_nats"),
        ({"lm_baseline_order": 0}, "lm_baseline_order"),
        ({"lm_baseline_order": 3.0}, "lm_baseline_order"),
        ({"rope_baseline_order": True}, "rope_baseline_order"),
        ({"retrieval_margin": -1.01}, "retrieval_margin"),
        ({"retrieval_margin": 1.0}, "retrieval_margin"),
        ({"retrieval_confidence": 1.0}, "retrieval_confidence"),
    ],
)
def test_bad_thresholds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GateThresholds(**kwargs)


def test_negative_thresholds_loosen_the_gates():
    """What the smoke profile relies on: a negative margin lets a below-floor model pass, a negative
    context bar lets a model with no context gain pass."""
    loose = GateThresholds(context_gain_nats=-1.0, lm_baseline_order=1, rope_baseline_order=1, retrieval_margin=-0.5)
    assert retrieval_gate(2, 10, 0.5, loose).passed and not retrieval_gate(2, 10, 0.5).passed
    assert lm_gate(5.0, -0.2, {1: 20.0, **BASELINES}, "rope", loose).passed


# -- context_gain -------------------------------------------------------------------------------------


def test_context_gain_windows():
    loss = np.arange(16, dtype=float)[::-1]  # (16,) 15 .. 0
    # first eighth = positions 0, 1 -> mean 14.5; last half = positions 8..15 -> mean 3.5
    assert context_gain(loss) == pytest.approx(11.0)
    assert context_gain(np.ones(64)) == 0.0
    assert context_gain(np.array([3.0] + [1.0] * 7)) == pytest.approx(2.0)  # T = 8: one position vs four
    odd = np.arange(9, dtype=float)  # (9,) first eighth = [0], last half = positions 5..8
    assert context_gain(odd) == pytest.approx(0.0 - 6.5)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.ones(7), "T >= 8"),
        (np.ones((2, 8)), "1-D"),
        (np.array([1.0] * 7 + [math.nan]), "positions \\[7\\]"),
        (np.array(["a"] * 8), "real numbers"),
    ],
)
def test_context_gain_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        context_gain(x)


# -- lm_gate ------------------------------------------------------------------------------------------


def test_lm_gate_passes():
    g = lm_gate(5.0, 0.5, BASELINES, "alibi")
    assert g.passed and g.reason == ""
    assert [c.name for c in g.checks] == ["context_gain", "ppl_below_3gram"]
    assert all(isinstance(c, Check) and c.passed for c in g.checks)
    assert g.checks[1].threshold == 8.0 and g.checks[1].value == 5.0


def test_lm_gate_context_gain_boundary():
    assert lm_gate(5.0, 0.15, BASELINES, "nope").passed  # ">=": exactly at the bar passes
    g = lm_gate(5.0, 0.1499, BASELINES, "nope")
    assert not g.passed and g.reason.startswith("context_gain failed")
    assert "0.15 nats" in g.reason and "context" in g.reason


def test_lm_gate_baseline_boundary():
    g = lm_gate(8.0, 1.0, BASELINES, "alibi")  # "below": equal to the baseline fails
    assert not g.passed and "ppl_below_3gram failed" in g.reason and "3-gram baseline 8" in g.reason
    assert lm_gate(np.nextafter(8.0, 0.0), 1.0, BASELINES, "alibi").passed


def test_lm_gate_rope_rule():
    # between the 4-gram (6.0) and 3-gram (8.0) baselines: other encodings pass, RoPE fails
    assert lm_gate(7.0, 1.0, BASELINES, "alibi").passed
    assert lm_gate(7.0, 1.0, BASELINES, "randomized").passed  # the rule names "rope" only
    g = lm_gate(7.0, 1.0, BASELINES, "rope")
    assert not g.passed
    assert [c.name for c in g.checks] == ["context_gain", "ppl_below_3gram", "ppl_below_4gram"]
    assert [c.passed for c in g.checks] == [True, True, False]
    assert g.reason.startswith("ppl_below_4gram failed") and "RoPE" in g.reason
    assert lm_gate(5.9, 1.0, BASELINES, "rope").passed
    # RoPE is held to both bars even when the higher-order baseline is the weaker one
    odd = {3: 5.0, 4: 9.0}
    assert not lm_gate(7.0, 1.0, odd, "rope").passed and "ppl_below_3gram" in lm_gate(7.0, 1.0, odd, "rope").reason
    # other encodings do not need the 4-gram baseline at all
    assert lm_gate(5.0, 1.0, {3: 8.0}, "alibi").passed


def test_lm_gate_lists_every_failure():
    g = lm_gate(9.0, 0.0, BASELINES, "rope")
    assert not g.passed and [c.passed for c in g.checks] == [False, False, False]
    assert g.reason.count("failed") == 3 and g.reason.count(";") == 2


def test_lm_gate_diverged_model_fails():
    g = lm_gate(math.inf, 0.5, BASELINES, "alibi")
    assert not g.passed and "inf" in g.reason


def test_lm_gate_custom_thresholds():
    th = GateThresholds(context_gain_nats=0.0, lm_baseline_order=2, rope_baseline_order=2)
    g = lm_gate(10.0, 0.0, BASELINES, "rope", th)
    assert g.passed and [c.name for c in g.checks] == ["context_gain", "ppl_below_2gram"]


@pytest.mark.parametrize(
    "args, match",
    [
        ((math.nan, 0.5, BASELINES, "alibi"), "ppl must be a perplexity >= 1"),
        ((0.5, 0.5, BASELINES, "alibi"), "ppl must be"),
        (("5", 0.5, BASELINES, "alibi"), "ppl must be"),
        ((5.0, math.nan, BASELINES, "alibi"), "context_gain must be a finite"),
        ((5.0, 0.5, {2: 12.0}, "alibi"), "no n-gram order 3; its orders: \\[2\\]"),
        ((5.0, 0.5, {3: 8.0}, "rope"), "no n-gram order 4"),
        ((5.0, 0.5, {3: math.nan}, "alibi"), "baselines\\[3\\]"),
        ((5.0, 0.5, [8.0], "alibi"), "baselines must be a mapping"),
        ((5.0, 0.5, BASELINES, ""), "encoding must be a non-empty string"),
        ((5.0, 0.5, BASELINES, None), "encoding"),
    ],
)
def test_lm_gate_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        lm_gate(*args)


def test_gates_refuse_bad_thresholds_object():
    with pytest.raises(ValueError, match="GateThresholds"):
        lm_gate(5.0, 0.5, BASELINES, "alibi", {"context_gain_nats": 0.1})
    with pytest.raises(ValueError, match="GateThresholds"):
        retrieval_gate(5, 10, 0.1, thresholds=None)


# -- retrieval_gate -----------------------------------------------------------------------------------


def test_retrieval_gate_uses_the_wilson_lower_bound():
    g = retrieval_gate(90, 100, 0.5)
    assert g.passed and g.reason == "" and len(g.checks) == 1
    (c,) = g.checks
    assert c.name == "wilson_low_above_floor" and c.value == wilson_interval(90, 100)[0] and c.threshold == 0.5


def test_retrieval_gate_point_estimate_above_floor_is_not_enough():
    # 6/10 = 0.6 > floor 0.5, but the Wilson lower bound (~0.31) is not
    g = retrieval_gate(6, 10, 0.5)
    assert not g.passed and g.reason.startswith("wilson_low_above_floor failed") and "6/10" in g.reason


def test_retrieval_gate_boundaries():
    low = wilson_interval(30, 40)[0]
    assert not retrieval_gate(30, 40, low).passed  # "exceed": equal fails
    assert retrieval_gate(30, 40, np.nextafter(low, 0.0)).passed
    assert not retrieval_gate(30, 40, 0.3, GateThresholds(retrieval_margin=low - 0.3)).passed
    assert retrieval_gate(30, 40, 0.3, GateThresholds(retrieval_margin=low - 0.3 - 1e-9)).passed
    assert not retrieval_gate(0, 10, 0.0).passed  # 0 correct never exceeds a zero floor
    assert retrieval_gate(10, 10, 0.0).passed


@pytest.mark.parametrize(
    "args, match",
    [
        ((5, 10, 1.0), "floor must be an accuracy in \\[0, 1\\)"),
        ((5, 10, -0.1), "floor"),
        ((5, 10, "0.1"), "floor"),
        ((11, 10, 0.1), "successes"),
        ((5, 0, 0.1), "n must be"),
        ((5.0, 10, 0.1), "successes"),
    ],
)
def test_retrieval_gate_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        retrieval_gate(*args)


# -- gate_table / passed_only -------------------------------------------------------------------------


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"encoding": "alibi", "task": "chars", "seed": 0, "kind": "lm", "ppl": 7.0, "context_gain": 0.5},
            {"encoding": "rope", "task": "chars", "seed": 0, "kind": "lm", "ppl": 7.0, "context_gain": 0.5},
            {"encoding": "nope", "task": "chars", "seed": 1, "kind": "lm", "ppl": 5.0, "context_gain": 0.01},
            {
                "encoding": "rope",
                "task": "passkey",
                "seed": 0,
                "kind": "retrieval",
                "correct": 95,
                "n": 100,
                "floor": 0.1,
            },
            {
                "encoding": "nope",
                "task": "passkey",
                "seed": 0,
                "kind": "retrieval",
                "correct": 12,
                "n": 100,
                "floor": 0.1,
            },
        ],
        index=[10, 11, 12, 13, 14],
    )


def test_gate_table():
    rows = _rows()
    out = gate_table(rows, BASELINES)
    assert list(out.index) == list(rows.index)
    pd.testing.assert_frame_equal(out[rows.columns], rows)  # the input rows, untouched
    assert out["passed"].dtype == bool and out["passed"].tolist() == [True, False, False, True, False]
    assert out["reason"].tolist()[0] == "" and "ppl_below_4gram" in out.loc[11, "reason"]
    assert "context_gain failed" in out.loc[12, "reason"] and "wilson_low_above_floor" in out.loc[14, "reason"]
    # per-check values, NaN / <NA> where a check does not apply
    assert out.loc[11, "gate_ppl_below_4gram_threshold"] == 6.0
    assert math.isnan(out.loc[10, "gate_ppl_below_4gram_value"])
    assert out["gate_ppl_below_4gram_passed"].dtype == "boolean" and pd.isna(out.loc[10, "gate_ppl_below_4gram_passed"])
    assert out.loc[13, "gate_wilson_low_above_floor_value"] == wilson_interval(95, 100)[0]
    assert out.loc[12, "gate_context_gain_value"] == 0.01 and not out.loc[12, "gate_context_gain_passed"]
    assert pd.isna(out.loc[10, "gate_wilson_low_above_floor_passed"])
    # each row agrees with the scalar gates
    assert out.loc[11, "reason"] == lm_gate(7.0, 0.5, BASELINES, "rope").reason


def test_gate_table_single_kind_needs_only_its_columns():
    lm = _rows().iloc[:3][["encoding", "task", "seed", "kind", "ppl", "context_gain"]]
    out = gate_table(lm, BASELINES)
    assert out["passed"].tolist() == [True, False, False]
    assert not any(c.startswith("gate_wilson") for c in out.columns)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.drop(columns="kind"), "lacks column\\(s\\) \\['kind'\\]"),
        (lambda d: d.drop(columns="floor"), "kind 'retrieval' rows.*\\['floor'\\]"),
        (lambda d: d.assign(kind=["lm", "lm", "lm", "retrieval", "copy"]), "kind must be one of.*'copy'"),
        (lambda d: d.assign(seed=[0, 0, 0, 0, 0], task="chars"), "repeat"),
        (
            lambda d: d.assign(ppl=[7.0, math.nan, 5.0, math.nan, math.nan]),
            "row 11 \\(rope, chars, seed 0.*\\['ppl'\\]",
        ),
        (lambda d: d.assign(correct=[math.nan] * 3 + [95.5, 12]), "row 13.*correct must be an integer count, got 95.5"),
        (lambda d: d.assign(floor=[math.nan] * 3 + [1.0, 0.1]), "row 13.*floor must be"),
        (lambda d: d.assign(ppl=[7.0, 0.5, 5.0, math.nan, math.nan]), "row 11.*ppl must be"),
    ],
)
def test_gate_table_bad_input(mutate, match):
    with pytest.raises(ValueError, match=match):
        gate_table(mutate(_rows()), BASELINES)


def test_gate_table_refuses_non_frames():
    with pytest.raises(ValueError, match="DataFrame"):
        gate_table([{"encoding": "rope"}], BASELINES)


def test_gate_table_accepts_float_counts_and_diverged_models():
    rows = _rows()
    rows["correct"] = rows["correct"].astype(float)  # what a mixed frame holds anyway
    rows.loc[10, "ppl"] = math.inf
    out = gate_table(rows, BASELINES)
    assert out["passed"].tolist() == [False, False, False, True, False]


def test_passed_only():
    gates = gate_table(_rows(), BASELINES)
    results = pd.DataFrame(
        {
            "encoding": ["alibi", "alibi", "rope", "rope", "nope"],
            "task": ["chars", "chars", "chars", "passkey", "passkey"],
            "seed": [0, 0, 0, 0, 0],
            "length": [64, 128, 64, 64, 64],
        },
        index=list("abcde"),
    )
    kept = passed_only(results, gates)
    assert list(kept.index) == ["a", "b", "d"]
    pd.testing.assert_frame_equal(kept, results.loc[["a", "b", "d"]])


def test_passed_only_missing_models():
    gates = gate_table(_rows(), BASELINES)
    results = pd.DataFrame({"encoding": ["alibi", "xpos"], "task": ["chars", "chars"], "seed": [0, 0]})
    with pytest.raises(ValueError, match="\\('xpos', 'chars', 0\\).*no gate row"):
        passed_only(results, gates)
    assert passed_only(results, gates, require_all=False)["encoding"].tolist() == ["alibi"]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda g: g.drop(columns="passed"), "gates lacks column\\(s\\) \\['passed'\\]"),
        (lambda g: g.assign(passed=["yes"] * len(g)), "bool column"),
        (lambda g: pd.concat([g, g.iloc[:1]]), "one row per \\(encoding, task, seed\\)"),
    ],
)
def test_passed_only_bad_gates(mutate, match):
    gates = gate_table(_rows(), BASELINES)
    with pytest.raises(ValueError, match=match):
        passed_only(_rows(), mutate(gates))
    with pytest.raises(ValueError, match="df lacks column"):
        passed_only(_rows().drop(columns="seed"), gates)


def test_gate_result_of():
    ok = Check("a", 1.0, 0.0, True, "a must be > 0")
    bad = Check("b", -1.0, 0.0, False, "b must be > 0")
    assert GateResult.of((ok,)) == GateResult(True, (ok,), "")
    r = GateResult.of((ok, bad))
    assert not r.passed and r.reason == "b failed: b must be > 0, got -1"


def test_context_gain_with_a_start_token_skips_position_zero():
    loss = np.array([9.0, 3.0] + [1.0] * 14)  # T = 16: position 0 predicts from the start token alone
    assert context_gain(loss) == pytest.approx((9.0 + 3.0) / 2 - 1.0)
    assert context_gain(loss, start_token=True) == pytest.approx((3.0 + 1.0) / 2 - 1.0)
    with pytest.raises(ValueError, match="start_token"):
        context_gain(loss, start_token=1)


def test_context_gain_with_a_fixed_early_window():
    loss = np.array([9.0] + [4.0] * 4 + [2.0] * 27 + [1.0] * 32)  # T = 64
    assert context_gain(loss, start_token=True) == pytest.approx((4 * 4.0 + 4 * 2.0) / 8 - 1.0)  # T // 8 = 8
    assert context_gain(loss, start_token=True, early=4) == pytest.approx(4.0 - 1.0)
    assert context_gain(loss, start_token=True, early=8) == context_gain(loss, start_token=True)
    for bad in (0, 33, 2.0, True):
        with pytest.raises(ValueError, match="early must be an integer"):
            context_gain(loss, early=bad)
