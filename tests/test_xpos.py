"""Tests for the xPos encoding (Sun et al. 2022, arXiv 2212.10554): relative scores with explicit decay."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib.encodings import make_encoding
from ropelib.rope_scaling import rope_frequencies

D = 16


def _xpos(layout="half", **params):
    return make_encoding("xpos", n_heads=1, head_dim=D, d_model=D, layout=layout, **params)


def _expected_score(q, k, n, m, gamma=512.0, base=1e4):
    """sum_i zeta_i^((n-m)/gamma) Re[q~_i conj(k~_i) e^{i (n-m) theta_i}], half layout, float64."""
    h = D // 2
    i = torch.arange(h, dtype=torch.float64)
    theta = rope_frequencies({"rope_theta": base}, D)[0].double()  # RoFormer's float32 frequencies
    zeta = (2 * i / D + 0.4) / 1.4
    qc = torch.complex(q[:h].double(), q[h:].double())
    kc = torch.complex(k[:h].double(), k[h:].double())
    phase = torch.polar(torch.ones(h, dtype=torch.float64), (n - m) * theta)
    return float((zeta ** ((n - m) / gamma) * (qc * kc.conj() * phase).real).sum())


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 3000),
    m=st.integers(0, 3000),
    shift=st.integers(0, 3000),
    pad=st.integers(0, 40),
    seed=st.integers(0, 2**16),
)
def test_score_is_relative_times_decay(n, m, shift, pad, seed):
    enc = _xpos()
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(D, generator=g, dtype=torch.float64)
    k = torch.randn(D, generator=g, dtype=torch.float64)

    def score(n, m, extra_keys):
        # extra keys move the centring c; scores must not depend on it
        kpos = torch.tensor([m] + [m + j for j in range(1, extra_keys + 1)])
        kk = k.repeat(kpos.numel(), 1)[None, None]
        qq, kr = enc.rotate(q[None, None, None], kk, torch.tensor([n]), kpos)
        return float((qq[0, 0, 0] * kr[0, 0, 0]).sum())

    expected = _expected_score(q, k, n, m)
    tol = 1e-9 * (1 + abs(expected)) * 10 ** (abs(n - m) / 512 * 0.55)  # scale of the powers involved
    assert score(n, m, 0) == pytest.approx(expected, abs=tol)
    assert score(n + shift, m + shift, pad) == pytest.approx(expected, abs=tol)


def test_decay_factor_for_aligned_single_pair():
    # only pair i nonzero, q = k = e_i: score = zeta_i^((n-m)/gamma) cos((n-m) theta_i)
    enc = _xpos()
    for i in (0, 3, D // 2 - 1):
        q = torch.zeros(1, 1, 1, D, dtype=torch.float64)
        q[..., i] = 1.0
        k = q.clone()
        n, m = 700, 100
        qq, kk = enc.rotate(q, k, torch.tensor([n]), torch.tensor([m]))
        zeta = (2 * i / D + 0.4) / 1.4
        theta = 1e4 ** (-2 * i / D)
        got = float((qq * kk).sum())
        assert got == pytest.approx(
            zeta ** (600 / 512) * torch.cos(torch.tensor(600 * theta, dtype=torch.float64)).item(), rel=1e-6, abs=1e-9
        )
    # the decay is strongest for the high-frequency pairs: zeta_0 < zeta_last < 1
    assert (2 * 0 / D + 0.4) / 1.4 < (2 * (D // 2 - 1) / D + 0.4) / 1.4 < 1


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shapes_dtypes_and_bounded_powers(layout, dtype):
    enc = _xpos(layout)
    q = torch.randn(2, 1, 6, D).to(dtype)
    k = torch.randn(2, 1, 10, D).to(dtype)
    kpos = torch.arange(100_000, 100_010)  # far from 0: centring keeps the powers near 1
    qq, kk = enc.rotate(q, k, kpos[-6:], kpos)
    assert qq.shape == q.shape and kk.shape == k.shape
    assert qq.dtype == dtype and kk.dtype == dtype
    assert torch.isfinite(qq).all() and torch.isfinite(kk).all()
    ratio = qq.float().norm(dim=-1) / q.float().norm(dim=-1)
    assert ((ratio > 0.9) & (ratio < 1.1)).all()  # zeta^(+-5/512) is within 2% of 1


def test_layouts_agree_up_to_the_pair_permutation():
    q, k = torch.randn(1, 1, 5, D, dtype=torch.float64), torch.randn(1, 1, 5, D, dtype=torch.float64)
    perm = torch.cat((torch.arange(0, D, 2), torch.arange(1, D, 2)))  # interleaved -> half coordinates
    pos = torch.arange(5) + 30
    qi, ki = _xpos("interleaved").rotate(q, k, pos, pos)
    qh, kh = _xpos("half").rotate(q[..., perm], k[..., perm], pos, pos)
    torch.testing.assert_close(qh @ kh.transpose(-1, -2), qi @ ki.transpose(-1, -2))


def test_bad_parameters():
    with pytest.raises(ValueError, match="scale_base.*-1"):
        _xpos(scale_base=-1)
    with pytest.raises(ValueError, match="unknown layout 'diag'"):
        _xpos(layout="diag")
    with pytest.raises(ValueError, match="integer tensor"):
        enc = _xpos()
        q = torch.randn(1, 1, 2, D)
        enc.rotate(q, q, torch.tensor([0.0, 1.0]), torch.arange(2))
    with pytest.raises(ValueError, match=r"q must have shape \(B, H, T, 16\)"):
        _xpos().rotate(torch.randn(2, D), torch.randn(1, 1, 2, D), torch.arange(2), torch.arange(2))
