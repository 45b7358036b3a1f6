"""Tests for ropelib.analysis: the derived values of docs/references.md §1, §3 and §4 (recomputed here from the formulas),
parity with ropelib.rope_scaling's frequencies, and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib import analysis as A
from ropelib.encodings import make_encoding
from ropelib.rope_scaling import rope_frequencies

HYP = settings(max_examples=25, deadline=None)


# ---------------------------------------------------------------------------------------------
# decay bound (RoFormer §3.4.3)
# ---------------------------------------------------------------------------------------------
def _decay_bound_loop(r: float, d: int, base: float) -> float:
    """Plain double loop over j and i, straight from the definition."""
    theta = [base ** (-2 * i / d) for i in range(d // 2)]
    total = 0.0
    for j in range(1, d // 2 + 1):
        s = sum(complex(math.cos(r * theta[i]), math.sin(r * theta[i])) for i in range(j))
        total += abs(s)
    return 2 / d * total


@pytest.mark.parametrize("d", [2, 16, 64, 128])
def test_decay_bound_at_zero_is_exact(d):
    assert A.decay_bound(0, d) == (d / 2 + 1) / 2


def test_decay_bound_reference_values_d128():
    # docs/references.md §1.4 (derived): B(0)=32.5, B(50)≈12.6, B(250)≈6.55, B(1024)≈4.02, B(4096)≈4.88
    got = A.decay_bound(np.array([0, 50, 250, 1024, 4096]), 128)
    assert got[0] == 32.5
    assert round(got[1], 1) == 12.6
    assert round(got[2], 2) == 6.55
    assert round(got[3], 2) == 4.02
    assert round(got[4], 2) == 4.88


@pytest.mark.parametrize("r,d,base", [(7.0, 8, 10_000.0), (300.0, 32, 500.0), (12345.0, 16, 1e6)])
def test_decay_bound_matches_definition_loop(r, d, base):
    assert A.decay_bound(r, d, base) == pytest.approx(_decay_bound_loop(r, d, base), rel=1e-12)


def test_decay_bound_is_vectorised_chunked_and_even_in_r():
    r = np.arange(0, 20000, 7).astype(float)
    got = A.decay_bound(r, 32)
    assert got.shape == r.shape and got.dtype == np.float64
    np.testing.assert_allclose(A.decay_bound(-r, 32), got, rtol=1e-12)  # B(-r) = B(r)
    assert A.decay_bound(r.reshape(-1, 1), 32).shape == (r.size, 1)
    # chunking must not change values
    np.testing.assert_allclose(A.decay_bound_from_frequencies(r, A.inv_frequencies(32), chunk=5), got, rtol=1e-13)


def test_decay_bound_plateaus_instead_of_vanishing():
    near = A.decay_bound(np.arange(4096, 16384, 3), 128)
    far = A.decay_bound(np.arange(16384, 65536, 5), 128)
    assert near.mean() < 0.2 * A.decay_bound(0, 128)  # it did fall from B(0) = 32.5 ...
    assert far.min() > 1.0 and far.mean() > 3.0  # ... but does not go to zero
    assert far.mean() == pytest.approx(near.mean(), rel=0.1)  # a plateau
    assert far.max() > 2 * far.mean()  # with oscillation spikes


# ---------------------------------------------------------------------------------------------
# wavelengths, critical dimension
# ---------------------------------------------------------------------------------------------
def test_wavelengths_and_rotations():
    lam = A.wavelengths(128, 1e4)
    assert lam[0] == pytest.approx(2 * math.pi)
    assert np.all(np.diff(lam) > 0)
    np.testing.assert_allclose(A.rotations_in_context(128, 1e4, 4096) * lam, 4096, rtol=1e-12)


def test_inv_frequencies_match_rope_frequencies_default():
    inv, att = rope_frequencies({"rope_type": "default", "rope_theta": 10_000.0}, 64)
    np.testing.assert_allclose(torch.as_tensor(inv).double().numpy(), A.inv_frequencies(64, 1e4), rtol=1e-6)
    assert att == 1.0


@pytest.mark.parametrize("d,base,L,expected", [(128, 1e4, 4096, 92), (32, 1e4, 128, 12), (16, 1e4, 64, 6)])
def test_critical_dimension_reference_values(d, base, L, expected):
    assert A.critical_dimension(d, base, L) == expected


@HYP
@given(
    d=st.integers(2, 128).map(lambda x: 2 * x),
    base=st.sampled_from([500.0, 1e4, 5e5, 1e6]),
    L=st.integers(8, 200_000),
)
def test_critical_dimension_separates_pairs_that_complete_a_period(d, base, L):
    dc = A.critical_dimension(d, base, L)
    lam = A.wavelengths(d, base)
    complete = int(np.sum(lam <= L))  # pairs whose period fits in L
    # pairs below d_c/2 complete a period; d_c/2 is the ceiling of the fractional boundary
    assert dc % 2 == 0 and 0 <= dc <= d
    assert complete <= dc // 2 <= complete + 1


# ---------------------------------------------------------------------------------------------
# YaRN
# ---------------------------------------------------------------------------------------------
def test_yarn_correction_range_llama2():
    assert A.yarn_correction_range(128, 1e4, 4096) == (20, 46)


def test_yarn_correction_range_tiny_model_protects_nothing():
    low, high = A.yarn_correction_range(32, 1e4, 128)
    assert low == 0  # beta_fast = 32 rotations is never reached within 128 tokens


@pytest.mark.parametrize("d,base,L,s", [(128, 1e4, 4096, 16.0), (32, 1e4, 128, 4.0), (64, 5e5, 1024, 8.0)])
def test_yarn_ramp_matches_rope_frequencies(d, base, L, s):
    params = {"rope_type": "yarn", "rope_theta": base, "factor": s, "original_max_position_embeddings": L}
    inv, att = rope_frequencies(params, d)
    theta = A.inv_frequencies(d, base)
    gamma = A.yarn_ramp(d, base, L)
    expected = (1 - gamma) * theta / s + gamma * theta
    np.testing.assert_allclose(torch.as_tensor(inv).double().numpy(), expected, rtol=1e-5)
    assert att == pytest.approx(A.yarn_attention_factor(s))


def test_yarn_attention_factor_values():
    assert A.yarn_attention_factor(8) == pytest.approx(1.2079, abs=1e-4)
    assert A.yarn_attention_factor(16) == pytest.approx(1.2773, abs=1e-4)
    assert A.yarn_attention_factor(32) == pytest.approx(1.3466, abs=1e-4)
    assert A.yarn_attention_factor(1) == 1.0
    assert A.yarn_attention_factor(4, mscale=1, mscale_all_dim=1) == 1.0


def test_tiny_yarn_params_reference_is_identity_and_tiny_covers_same_fraction():
    ref = A.tiny_yarn_params(128, 1e4, 4096, 16)
    assert (ref["beta_fast"], ref["beta_slow"]) == (32.0, 1.0)
    p = A.tiny_yarn_params(32, 1e4, 128, 4)
    assert set(p) == {"rope_type", "rope_theta", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow"}
    assert p["rope_type"] == "yarn" and p["factor"] == 4.0 and p["original_max_position_embeddings"] == 128
    low, high = A.yarn_correction_range(32, 1e4, 128, p["beta_fast"], p["beta_slow"])
    assert (low, high) == (5, 12)  # Llama 2's 20.8/64 and 45.0/64 of the pairs, scaled to 16 pairs
    assert low > A.yarn_correction_range(32, 1e4, 128)[0]
    inv, _ = rope_frequencies(p, 32)  # accepted by the library as is
    assert torch.as_tensor(inv).shape == (16,)


# ---------------------------------------------------------------------------------------------
# NTK, llama3, per-pair factors
# ---------------------------------------------------------------------------------------------
def test_ntk_base_reference_values():
    assert round(A.ntk_base(1e4, 2, 128), 1) == 20221.3
    assert round(A.ntk_base(1e4, 4, 128)) == 40890
    assert round(A.ntk_base(1e4, 8, 128)) == 82685


def test_dynamic_ntk_base_matches_rope_frequencies():
    params = {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0, "original_max_position_embeddings": 128}
    assert A.dynamic_ntk_base(1e4, 2.0, 64, 128, 32) == 1e4  # short inputs: original base
    for seq_len in (128, 200, 512):
        inv, _ = rope_frequencies(params, 32, seq_len=seq_len)
        expected = A.inv_frequencies(32, A.dynamic_ntk_base(1e4, 2.0, seq_len, 128, 32))
        np.testing.assert_allclose(torch.as_tensor(inv).double().numpy(), expected, rtol=1e-5)


def test_llama3_split_reference_and_analytic():
    assert A.llama3_split(128, 5e5) == {"unchanged": 29, "blended": 6, "divided": 29}
    lam = A.wavelengths(128, 5e5)
    assert int(np.sum(lam < 8192 / 4)) == 29 and int(np.sum(lam > 8192)) == 29


def test_pair_scale_factors_linear_and_partial_rotary():
    f = A.pair_scale_factors({"rope_type": "linear", "rope_theta": 1e4, "factor": 4.0}, 32)
    np.testing.assert_allclose(f, 0.25, rtol=1e-6)
    g = A.pair_scale_factors({"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25}, 96)
    assert g.shape == (12,)
    np.testing.assert_allclose(g, 1.0)


def test_pair_scale_factors_yarn_endpoints():
    f = A.pair_scale_factors(
        {"rope_type": "yarn", "rope_theta": 1e4, "factor": 16.0, "original_max_position_embeddings": 4096}, 128
    )
    np.testing.assert_allclose(f[:21], 1.0, rtol=1e-6)  # pairs up to low = 20 unchanged
    np.testing.assert_allclose(f[46:], 1 / 16, rtol=1e-5)  # from high = 46 on: interpolated
    assert np.all(np.diff(f) <= 1e-7)


# ---------------------------------------------------------------------------------------------
# score statistics (Barbero et al.)
# ---------------------------------------------------------------------------------------------
def _rope_scores_complex(q: np.ndarray, k: np.ndarray, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """<R_m q, R_n k> for interleaved pairs, r = m - n; q, k (N, d)."""
    qc = q[:, 0::2] + 1j * q[:, 1::2]
    kc = k[:, 0::2] + 1j * k[:, 1::2]
    return np.real((qc * np.conj(kc)) @ np.exp(1j * np.outer(theta, r)))  # (N, R)


def test_score_statistics_gaussian_zero_mean_no_decay_monte_carlo():
    d, n = 32, 20000
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    r = np.array([0, 1, 10, 100, 1000])
    scores = _rope_scores_complex(q, k, r, A.inv_frequencies(d))
    mean, std = A.score_statistics(r, d)
    np.testing.assert_array_equal(mean, 0.0)
    assert std == pytest.approx(math.sqrt(d))
    np.testing.assert_allclose(scores.mean(axis=0), 0.0, atol=4 * std / math.sqrt(n))
    np.testing.assert_allclose(scores.std(axis=0), std, rtol=0.03)


def test_score_statistics_aligned_means_decay_and_match_monte_carlo():
    d, n = 32, 20000
    r = np.array([0, 5, 50, 500])
    mean, std = A.score_statistics(r, d, mean_q=1.0, mean_k=1.0, std=0.5)
    theta = A.inv_frequencies(d)
    np.testing.assert_allclose(mean, 2 * np.cos(np.outer(r, theta)).sum(axis=1), rtol=1e-12)
    assert mean[0] == 2 * d / 2 and mean[-1] < mean[0] / 2  # decays from its peak at r = 0
    rng = np.random.default_rng(1)
    q, k = 1.0 + 0.5 * rng.standard_normal((n, d)), 1.0 + 0.5 * rng.standard_normal((n, d))
    scores = _rope_scores_complex(q, k, r, theta)
    np.testing.assert_allclose(scores.mean(axis=0), mean, atol=4 * std / math.sqrt(n))
    np.testing.assert_allclose(scores.std(axis=0), std, rtol=0.03)


def test_score_statistics_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mean_q"):
        A.score_statistics([0], 8, mean_q=np.ones(6))
    with pytest.raises(ValueError, match="inv_freq"):
        A.score_statistics([0], 8, inv_freq=np.ones(3))


# ---------------------------------------------------------------------------------------------
# Toeplitz deviation and position_scores
# ---------------------------------------------------------------------------------------------
def test_toeplitz_deviation_basic():
    t = np.arange(6)
    toeplitz = np.cos(0.3 * (t[:, None] - t[None, :]))
    assert A.toeplitz_deviation(toeplitz) == 0.0
    broken = toeplitz.copy()
    broken[3, 1] += 0.5
    assert A.toeplitz_deviation(broken) == pytest.approx(0.5)
    assert A.toeplitz_deviation(torch.tensor(broken)[None], relative=True) == pytest.approx(0.5 / (math.cos(0.6) + 0.5))
    with pytest.raises(ValueError, match="NaN or inf"):
        A.toeplitz_deviation(np.triu(np.full((3, 3), -np.inf), 1))
    with pytest.raises(ValueError, match="shape"):
        A.toeplitz_deviation(np.zeros(4))


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope_scores_are_toeplitz(layout):
    torch.manual_seed(0)
    enc = make_encoding("rope", n_heads=2, head_dim=16, d_model=32, layout=layout)
    q, k = torch.randn(16), torch.randn(16)
    s = A.position_scores(enc, q, k, 64)
    assert s.shape == (2, 64, 64)
    assert A.toeplitz_deviation(s, relative=True) < 1e-5


def test_sinusoidal_scores_are_not_toeplitz():
    torch.manual_seed(0)
    enc = make_encoding("sinusoidal", n_heads=1, head_dim=32, d_model=32)
    q, k = torch.randn(32), torch.randn(32)
    s = A.position_scores(enc, q, k, 64)
    assert A.toeplitz_deviation(s, relative=True) > 0.1
    # the pure position-position term p_m . p_n is itself Toeplitz (sum of cos((m-n) w)): with zero
    # token vectors the matrix is Toeplitz again, so the cross terms are what break the property
    z = A.position_scores(enc, torch.zeros(32), torch.zeros(32), 64)
    assert A.toeplitz_deviation(z, relative=True) < 1e-5


def test_alibi_scores_are_toeplitz():
    enc = make_encoding("alibi", n_heads=4, head_dim=8, d_model=32)
    s = A.position_scores(enc, torch.randn(8), torch.randn(8), 20)
    assert A.toeplitz_deviation(s, relative=True) < 1e-6


def test_position_scores_bad_input():
    enc = make_encoding("rope", n_heads=1, head_dim=8, d_model=8)
    with pytest.raises(ValueError, match="length"):
        A.position_scores(enc, torch.randn(8), torch.randn(8), 0)
    with pytest.raises(ValueError, match="head_dim"):
        A.position_scores(enc, torch.randn(6), torch.randn(6), 4)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: A.inv_frequencies(7), "head_dim"),
        (lambda: A.inv_frequencies(8, 1.0), "base"),
        (lambda: A.critical_dimension(8, 1e4, 0), "length"),
        (lambda: A.ntk_base(1e4, -2, 128), "factor"),
        (lambda: A.yarn_correction_range(128, 1e4, 4096, beta_fast=0), "num_rotations"),
        (lambda: A.default_rope_parameters({"factor": 2}), "rope_theta"),
    ],
)
def test_bad_input_raises_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
