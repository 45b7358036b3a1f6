"""The RoPE base / rotary-fraction sweep (``ropelib.rope_variants``) and Liu et al.'s bound
(``ropelib.analysis.extrapolation_limit``), on closed forms and tiny untrained models."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib import analysis as A
from ropelib import base_models
from ropelib import rope_variants as V
from ropelib.model import ToyTransformer
from ropelib.runs import RunResult

# -- the bound ----------------------------------------------------------------------------------------


def test_extrapolation_limit_reference_values():
    # (16, 1e4, 64): d_extra = 6, T_extra = 2 pi 1e4^(6/16)
    assert A.extrapolation_limit(16, 1e4, 64) == pytest.approx(2 * math.pi * 1e4**0.375)
    assert A.extrapolation_limit(16, 1e4, 64) == pytest.approx(198.6918, rel=1e-6)
    # Llama 2 (128, 1e4, 4096): d_extra = 92, T_extra = 2 pi 1e4^(92/128) ~ 2.0e3 * pi
    assert A.extrapolation_limit(128, 1e4, 4096) == pytest.approx(2 * math.pi * 1e4 ** (92 / 128))
    # every pair turns within L (small base): no unseen angle, no bound
    assert A.extrapolation_limit(16, 10.0, 64) == math.inf


@settings(max_examples=60, deadline=None)
@given(d=st.sampled_from([8, 16, 32, 64, 128]), base=st.floats(2.0, 1e7), L=st.integers(8, 8192))
def test_unseen_angle_limit_equals_liu_bound_for_default_frequencies(d, base, L):
    theta = A.inv_frequencies(d, base)
    periods = 2 * math.pi / theta
    if np.any(np.isclose(periods, L, rtol=1e-9)):  # the ceiling and ">" differ only at an exact tie
        return
    assert A.unseen_angle_limit(theta, L) == pytest.approx(A.extrapolation_limit(d, base, L), rel=1e-9)


def test_unseen_angle_limit_is_the_first_unseen_period():
    theta = np.array([1.0, 0.1, 0.01, 0.0])  # periods 6.28, 62.8, 628, and a removed frequency
    assert A.unseen_angle_limit(theta, 64) == pytest.approx(2 * math.pi / 0.01)
    assert A.unseen_angle_limit(theta, 50) == pytest.approx(2 * math.pi / 0.1)
    assert A.unseen_angle_limit(theta, 1000) == math.inf  # zero frequency counts as seen
    with pytest.raises(ValueError, match="inv_freq"):
        A.unseen_angle_limit([0.1, -1.0], 64)
    with pytest.raises(ValueError, match="length"):
        A.unseen_angle_limit([0.1], 0)


# -- the registry and the predictions -------------------------------------------------------------------


def test_registry_and_lookup():
    assert list(V.ROPE_VARIANTS)[:5] == ["base_10", "base_100", "base_500", "base_1e4", "base_1e6"]
    assert V.variant("base_1e4").encoding_params == {}  # the base model itself
    assert V.variant("p_rope_0.5").encoding_params == {"rope_type": "proportional", "partial_rotary_factor": 0.5}
    with pytest.raises(ValueError, match="unknown RoPE variant 'base_7'.*base_10"):
        V.variant("base_7")
    with pytest.raises(ValueError, match="family"):
        V.RopeVariant("x", "other")
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        V.RopeVariant("x", "partial", partial_rotary_factor=1.5)


def test_predictions_at_head_dim_16_and_length_64():
    p = V.variant_predictions(None, 16, 64).set_index("variant")
    # d_extra and the bound of each base (docs/references.md §4.3: (16, 1e4, 64) -> 6)
    assert p.loc["base_1e4", "critical_dimension"] == 6 and p.loc["base_1e4", "turning_pairs"] == 3
    assert p.loc["base_1e6", "critical_dimension"] == 4
    assert p.loc["base_10", "turning_pairs"] == 8 and p.loc["base_10", "predicted_limit"] == math.inf
    assert p.loc["base_500", "predicted_limit_x"] == pytest.approx(2 * math.pi * 500 ** (6 / 16) / 64)
    # partial rotary over 4 of 16 coordinates: frequencies 1 and 1e4^(-1/2) over the rotary dims
    assert p.loc["partial_0.25", "rotated_pairs"] == 2
    assert p.loc["partial_0.25", "predicted_limit"] == pytest.approx(2 * math.pi * 100)
    # p-RoPE 0.25 keeps the two fastest pairs (periods 6.3 and 19.9): nothing left to meet unseen angles
    assert p.loc["p_rope_0.25", "rotated_pairs"] == 2 and p.loc["p_rope_0.25", "predicted_limit"] == math.inf
    assert math.isnan(p.loc["p_rope_0.25", "critical_dimension"])
    assert p.loc["p_rope_0.5", "predicted_limit"] == pytest.approx(p.loc["base_1e4", "predicted_limit"])


def test_variant_frequencies_are_the_models():
    setup = base_models.base_setup("smoke")
    for name in V.ROPE_VARIANTS:
        spec = V.variant_spec(setup, name, 0, "cpu")
        model = ToyTransformer(spec.model)
        inv, _ = model.encoding.rope.frequencies()
        assert np.allclose(inv.double().numpy(), V.variant(name).frequencies(spec.model.head_dim))


def test_variant_specs_differ_only_in_rope_keys():
    setup = base_models.base_setup("smoke")
    base = base_models.base_spec(setup, "rope", "books", 0, "cpu", lr=3e-3)
    assert V.variant_spec(setup, "base_1e4", 0, "cpu", lr=3e-3).hash() == base.hash()  # same cache entry
    v = V.variant_spec(setup, "base_500", 0, "cpu", lr=3e-3)
    assert v.hash() != base.hash()
    assert replace(v.model, encoding_params={}) == base.model and v.train == base.train and v.task == base.task
    specs = V.variant_specs(setup, ["base_10", "p_rope_0.5"], lrs={"base_10": 1e-3})
    assert set(specs) == {(n, "books", s) for n in ("base_10", "p_rope_0.5") for s in setup.seeds}
    assert specs[("base_10", "books", 0)].train.lr == 1e-3
    assert specs[("p_rope_0.5", "books", 0)].train.lr == setup.lr
    with pytest.raises(ValueError, match="no 'rope' encoding"):
        V.variant_spec(replace(setup, encodings=("nope",)), "base_10", 0)


# -- gating, grid and the check, on untrained models --------------------------------------------------


@pytest.fixture(scope="module")
def runs():
    setup = replace(base_models.base_setup("smoke"), lm_eval_tokens=512)
    out = {}
    for i, (key, spec) in enumerate(V.variant_specs(setup, ["base_10", "p_rope_0.25"], device="cpu").items()):
        torch.manual_seed(i)
        out[key] = RunResult(
            spec=spec,
            hash=spec.hash(),
            model=ToyTransformer(spec.model).eval(),
            history=[],
            path=Path("."),
            metadata={},
        )
    return setup, out


def test_gate_variants_judges_each_variant_as_rope(runs, dict_cache):
    setup, r = runs
    gates = V.gate_variants(r, setup, cached=dict_cache)
    assert set(gates.variant) == {"base_10", "p_rope_0.25"} and len(gates) == len(r)
    for _name, g in gates.groupby("variant"):  # the context gain is the variant's seed mean
        assert g.context_gain.nunique() == 1
    assert "encoding" not in gates.columns


def test_variant_length_grid_nonoverlap_only(runs, dict_cache):
    setup, r = runs
    passed = set(r)
    grid = V.variant_length_grid(r, setup, passed, [1, 2], cached=dict_cache)
    assert set(grid["mode"]) == {"nonoverlap"} and set(grid.multiplier) == {1.0, 2.0}
    assert set(grid.variant) == {"base_10", "p_rope_0.25"} and grid.passed_gate.all()
    assert np.isfinite(grid.ppl).all()


def _summary(ppl_by_m, name="v", n_seeds=3):
    return pd.DataFrame(
        [{"variant": name, "multiplier": m, "ppl_mean": p, "n_seeds": n_seeds} for m, p in ppl_by_m.items()]
    )


def _pred(limit_x, name="v"):
    return pd.DataFrame([{"variant": name, "family": "base", "predicted_limit_x": limit_x}])


def test_prediction_check_cases():
    flat_then_worse = V.prediction_check(_summary({1: 5.0, 2: 5.1, 4: 6.0, 8: 9.0}), _pred(3.1)).iloc[0]
    assert flat_then_worse.consistent and flat_then_worse.flat_until_x == 2 and flat_then_worse.first_worse_x == 4
    early = V.prediction_check(_summary({1: 5.0, 2: 6.0, 4: 7.0}), _pred(3.1)).iloc[0]
    assert not early.consistent and "before its bound" in early.note
    never = V.prediction_check(_summary({1: 5.0, 2: 5.0, 4: 4.9, 8: 4.8}), _pred(3.1)).iloc[0]
    assert not never.consistent and "never worse past" in never.note and math.isnan(never.first_worse_x)
    unbounded = V.prediction_check(_summary({1: 5.0, 8: 5.1}), _pred(math.inf)).iloc[0]
    assert unbounded.consistent
    unbounded_bad = V.prediction_check(_summary({1: 5.0, 8: 9.0}), _pred(math.inf)).iloc[0]
    assert not unbounded_bad.consistent and "no bound predicted" in unbounded_bad.note
    failed = V.prediction_check(_summary({1: float("nan"), 2: float("nan")}, n_seeds=0), _pred(3.1)).iloc[0]
    assert pd.isna(failed.consistent) and "no model passed" in failed.note
    # the tolerance decides what "worse" means
    assert V.prediction_check(_summary({1: 5.0, 2: 5.4}), _pred(3.1), tolerance=0.1).iloc[0].consistent
    assert not V.prediction_check(_summary({1: 5.0, 2: 5.4}), _pred(3.1), tolerance=0.05).iloc[0].consistent
    with pytest.raises(ValueError, match="tolerance"):
        V.prediction_check(_summary({1: 5.0}), _pred(3.1), tolerance=1.5)
