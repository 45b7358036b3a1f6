"""Tests for ropelib.rope and ropelib.rope_scaling: docs/references.md §1, §3 and §5 vectors, invariants, precision, caching, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib.rope import RoPE, apply_rotary, half_to_interleaved, interleaved_to_half
from ropelib.rope_scaling import ROPE_TYPES, RopeConfig, rope_frequencies

D = 32  # head dim for the quick tests

# One valid config per rope_type, with small original lengths so "long" inputs stay cheap.
CONFIGS = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "ntk": {"rope_type": "ntk", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0, "max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "original_max_position_embeddings": 64,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "rope_theta": 500000.0,
    },
    "longrope": {
        "rope_type": "longrope",
        "original_max_position_embeddings": 64,
        "factor": 4.0,
        "short_factor": [1.0 + 0.05 * i for i in range(D // 2)],
        "long_factor": [1.0 + 0.5 * i for i in range(D // 2)],
    },
    "proportional": {"rope_type": "proportional", "partial_rotary_factor": 0.5},
}


def test_every_registered_type_has_a_config_here():
    assert set(CONFIGS) == set(ROPE_TYPES)


def _rot_ref(x: torch.Tensor, angle: torch.Tensor, layout: str, scale: float = 1.0) -> torch.Tensor:
    """Float64 reference rotation of the first 2*angle.shape[-1] coordinates of x, written from the formula."""
    h = angle.shape[-1]
    x = x.double()
    c, s = angle.cos() * scale, angle.sin() * scale
    if layout == "half":
        x1, x2, tail = x[..., :h], x[..., h : 2 * h], x[..., 2 * h :]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s, tail), -1)
    x1, x2, tail = x[..., 0 : 2 * h : 2], x[..., 1 : 2 * h : 2], x[..., 2 * h :]
    return torch.cat((torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), -1).flatten(-2), tail), -1)


# --- docs/references.md §5 test vectors -----------------------------------------------------------
@pytest.mark.parametrize("s, expected", [(2, 20221.3), (4, 40890), (8, 82685)])
def test_ntk_base_matches_references(s, expected):
    d = 128
    inv_freq, attention = rope_frequencies({"rope_type": "ntk", "factor": float(s)}, d)
    # recover b' from the lowest frequency theta_{d/2-1} = b'^(-(d-2)/d)
    base = float(inv_freq[-1].double()) ** (-d / (d - 2))
    assert base == pytest.approx(expected, rel=2e-5)
    assert base == pytest.approx(1e4 * s ** (d / (d - 2)), rel=2e-5)
    assert attention == 1.0


def test_ntk_equals_hf_dynamic_with_unit_factor_at_extended_length():
    # HF dynamic with factor 1 at length s*L uses base b*(s)^(d/(d-2)): the static NTK base.
    ntk, _ = rope_frequencies({"rope_type": "ntk", "factor": 4.0}, 64)
    dyn, _ = rope_frequencies({"rope_type": "dynamic", "factor": 1.0, "max_position_embeddings": 100}, 64, 400)
    torch.testing.assert_close(ntk, dyn, rtol=1e-6, atol=0)


def test_yarn_correction_range_llama2_s16():
    d, base, length, s = 128, 1e4, 4096, 16.0
    cfg = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": length, "rope_theta": base}
    inv_freq, attention = rope_frequencies(cfg, d)
    theta, _ = rope_frequencies({"rope_theta": base}, d)
    unchanged = torch.isclose(inv_freq, theta, rtol=1e-6, atol=0)
    interpolated = torch.isclose(inv_freq, theta / s, rtol=1e-6, atol=0)
    low = int(unchanged.nonzero().max())  # last pair kept as is (ramp 0 at `low`)
    high = int(interpolated.nonzero().min())  # first pair fully interpolated (ramp 1 at `high`)
    assert (low, high) == (20, 46)
    assert unchanged[: low + 1].all() and interpolated[high:].all()
    assert not (unchanged | interpolated)[low + 1 : high].any()
    assert attention == pytest.approx(0.1 * math.log(16) + 1) == pytest.approx(1.2773, abs=1e-4)
    # the range comes from the *original* length: giving the extended max_position_embeddings changes nothing
    with_max, _ = rope_frequencies({**cfg, "max_position_embeddings": length * 16}, d)
    assert torch.equal(with_max, inv_freq)


@pytest.mark.parametrize("s, expected", [(8, 1.2079), (32, 1.3466)])
def test_yarn_attention_factor(s, expected):
    cfg = {"rope_type": "yarn", "factor": float(s), "original_max_position_embeddings": 4096}
    assert rope_frequencies(cfg, 128)[1] == pytest.approx(expected, abs=1e-4)


def test_yarn_deepseek_mscale_pair():
    cfg = {
        "rope_type": "yarn",
        "factor": 40.0,
        "original_max_position_embeddings": 4096,
        "mscale": 1.0,
        "mscale_all_dim": 0.8,
    }
    expected = (0.1 * 1.0 * math.log(40) + 1) / (0.1 * 0.8 * math.log(40) + 1)
    assert rope_frequencies(cfg, 64)[1] == pytest.approx(expected, rel=1e-12)
    cfg["attention_factor"] = 0.5  # an explicit attention factor wins
    assert rope_frequencies(cfg, 64)[1] == 0.5


def test_yarn_truncate_flag_changes_the_ramp():
    cfg = {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}
    a, _ = rope_frequencies(cfg, 128)
    b, _ = rope_frequencies({**cfg, "truncate": False}, 128)
    assert not torch.equal(a, b)
    assert torch.equal(a[:20], b[:20]) and torch.equal(a[47:], b[47:])


def test_llama3_split_29_6_29():
    cfg = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    inv_freq, attention = rope_frequencies(cfg, 128)
    theta, _ = rope_frequencies({"rope_theta": 500000.0}, 128)
    unchanged = torch.isclose(inv_freq, theta, rtol=1e-6, atol=0)
    divided = torch.isclose(inv_freq, theta / 8, rtol=1e-6, atol=0)
    blended = ~(unchanged | divided)
    assert (int(unchanged.sum()), int(blended.sum()), int(divided.sum())) == (29, 6, 29)
    assert unchanged[:29].all() and divided[35:].all()  # high frequencies kept, low ones divided
    assert attention == 1.0


def test_longrope_switches_factors_at_the_original_length():
    cfg = CONFIGS["longrope"]
    theta, _ = rope_frequencies({}, D)
    short, a1 = rope_frequencies(cfg, D, 64)
    long, a2 = rope_frequencies(cfg, D, 65)
    default, a3 = rope_frequencies(cfg, D)
    torch.testing.assert_close(short, theta / torch.tensor(cfg["short_factor"]), rtol=1e-6, atol=0)
    torch.testing.assert_close(long, theta / torch.tensor(cfg["long_factor"]), rtol=1e-6, atol=0)
    assert torch.equal(default, short)
    assert a1 == a2 == a3 == pytest.approx(math.sqrt(1 + math.log(4.0) / math.log(64)))
    # factor inferred from max/original like HF (Phi-3 style) when not given
    inferred = {k: v for k, v in cfg.items() if k != "factor"} | {"max_position_embeddings": 256}
    assert rope_frequencies(inferred, D)[1] == pytest.approx(a1)


def test_dynamic_below_and_above_the_original_length():
    cfg = CONFIGS["dynamic"]
    theta, _ = rope_frequencies({}, D)
    assert torch.equal(rope_frequencies(cfg, D, 10)[0], theta)
    assert torch.equal(rope_frequencies(cfg, D, 64)[0], theta)
    above, _ = rope_frequencies(cfg, D, 256)
    base = 1e4 * (2.0 * 256 / 64 - 1) ** (D / (D - 2))
    torch.testing.assert_close(above, rope_frequencies({"rope_theta": base}, D)[0], rtol=1e-6, atol=0)


def test_partial_rotary_and_proportional_lengths():
    inv, _ = rope_frequencies({"partial_rotary_factor": 0.25}, 64)
    assert inv.shape == (8,) and inv.dtype == torch.float32
    torch.testing.assert_close(inv, rope_frequencies({}, 16)[0], rtol=0, atol=0)  # computed over d_rot
    prop, _ = rope_frequencies({"rope_type": "proportional", "partial_rotary_factor": 0.25}, 64)
    assert prop.shape == (32,)
    torch.testing.assert_close(prop[:8], rope_frequencies({}, 64)[0][:8], rtol=0, atol=0)  # highest kept
    assert (prop[8:] == 0).all()


# --- invariants -------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    rope_type=st.sampled_from(sorted(CONFIGS)),
    layout=st.sampled_from(["half", "interleaved"]),
    m=st.integers(0, 5000),
    n=st.integers(0, 5000),
    shift=st.integers(0, 5000),
    seed=st.integers(0, 2**16),
)
def test_score_depends_only_on_relative_position(rope_type, layout, m, n, shift, seed):
    rope = RoPE(CONFIGS[rope_type], D, layout)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 1, 1, D, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 1, D, generator=g, dtype=torch.float64)
    seq_len = 20000  # fixed, so dynamic/longrope use one frequency set for both pairs of positions

    def score(a: int, b: int) -> float:
        qa = rope(q, torch.tensor([a]), seq_len)
        kb = rope(k, torch.tensor([b]), seq_len)
        return float((qa * kb).sum())

    s0, s1 = score(m, n), score(m + shift, n + shift)
    assert s1 == pytest.approx(s0, abs=1e-9 * (1 + abs(s0)))
    # (that the rotation is not trivial is checked against the formula in test_rotation_matches_float64_formula)


@pytest.mark.parametrize("rope_type", ["default", "yarn", "longrope"])
def test_interleaved_equals_half_after_weight_permutation(rope_type):
    torch.manual_seed(0)
    n_heads, d_model, T = 3, 40, 12
    wq, wk = torch.randn(n_heads * D, d_model), torch.randn(n_heads * D, d_model)
    x = torch.randn(2, T, d_model)
    pos = torch.arange(T) + 100

    def scores(wq, wk, layout):
        rope = RoPE(CONFIGS[rope_type], D, layout)
        q = (x @ wq.T).view(2, T, n_heads, D).transpose(1, 2)
        k = (x @ wk.T).view(2, T, n_heads, D).transpose(1, 2)
        return rope(q, pos) @ rope(k, pos).transpose(-1, -2)

    s_inter = scores(wq, wk, "interleaved")
    s_half = scores(interleaved_to_half(wq, n_heads, D), interleaved_to_half(wk, n_heads, D), "half")
    torch.testing.assert_close(s_half, s_inter, rtol=1e-4, atol=1e-3)
    # without the permutation the layouts disagree: the test can fail
    assert not torch.allclose(scores(wq, wk, "half"), s_inter, rtol=1e-2, atol=1e-1)


def test_weight_permutation_rows_and_inverse():
    w = torch.arange(2 * 8, dtype=torch.float32)[:, None].repeat(1, 3)
    half = interleaved_to_half(w, 2, 8)
    assert half[:8, 0].tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert half[8:, 0].tolist() == [8, 10, 12, 14, 9, 11, 13, 15]
    assert torch.equal(half_to_interleaved(half, 2, 8), w)
    bias = torch.arange(16.0)
    assert torch.equal(interleaved_to_half(bias, 2, 8), half[:, 0])
    partial = interleaved_to_half(w, 2, 8, rotary_dim=4)
    assert partial[:8, 0].tolist() == [0, 2, 1, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="rows"):
        interleaved_to_half(w, 3, 8)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_partial_rotary_leaves_the_tail_untouched(layout):
    rope = RoPE({"partial_rotary_factor": 0.25}, 64, layout)
    assert rope.rotary_dim == 16
    x = torch.randn(2, 2, 9, 64)
    y = rope(x, torch.arange(9) + 3)
    assert torch.equal(y[..., 16:], x[..., 16:])
    assert not torch.allclose(y[..., :16], x[..., :16])
    inv, _ = rope_frequencies({"partial_rotary_factor": 0.25}, 64)
    ref = _rot_ref(x, (torch.arange(9) + 3).double()[:, None] * inv.double(), layout)
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rope_type", sorted(CONFIGS))
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rotation_matches_float64_formula(rope_type, layout):
    rope = RoPE(CONFIGS[rope_type], D, layout)
    x = torch.randn(2, 3, 20, D)
    pos = torch.arange(20) + 90  # beyond every original length: dynamic / longrope scale here
    inv, attention = rope_frequencies(CONFIGS[rope_type], D, 110)
    ref = _rot_ref(x, pos.double()[:, None] * inv.double(), layout, attention)
    torch.testing.assert_close(rope(x, pos).double(), ref, rtol=0, atol=2e-6)
    # apply_rotary with the exposed cos/sin is the same operation
    cos, sin = rope.cos_sin(pos)
    assert cos.shape == (20, rope.rotary_dim // 2)
    torch.testing.assert_close(apply_rotary(x, cos, sin, layout), rope(x, pos), rtol=0, atol=1e-6)


def test_batched_positions_equal_row_by_row():
    rope = RoPE(CONFIGS["yarn"], D)
    x = torch.randn(3, 2, 7, D)
    pos = torch.stack([torch.arange(7), torch.arange(7) + 40, torch.tensor([5, 1, 9, 2, 2, 30, 0])])
    y = rope(x, pos, seq_len=100)
    for b in range(3):
        torch.testing.assert_close(y[b : b + 1], rope(x[b : b + 1], pos[b], seq_len=100), rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_autograd_gradcheck(layout):
    rope = RoPE({"partial_rotary_factor": 0.5}, 8, layout)
    x = torch.randn(1, 2, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: rope(t, torch.arange(5) + 7), (x,))
    y = rope(x, torch.arange(5))
    (g,) = torch.autograd.grad(y.square().sum(), x)
    torch.testing.assert_close(g, 2 * x.detach())  # a rotation preserves the norm


# --- precision ------------------------------------------------------------------------------------
def test_precision_near_2_pow_20():
    torch.manual_seed(0)
    rope = RoPE({}, 64)
    inv, _ = rope_frequencies({}, 64)
    pos = torch.arange(2**20 - 64, 2**20 + 64)
    x = torch.randn(1, 2, pos.numel(), 64)
    angle64 = pos.double()[:, None] * inv.double()
    ref = _rot_ref(x, angle64, "half")
    ours = (rope(x, pos).double() - ref).abs().max().item()
    assert ours < 1e-3
    # why: the float32 product HF computes is off by about 1e-2 rad at these positions
    angle32 = pos.float()[:, None] * inv
    assert (angle32.double() - angle64).abs().max().item() > 5e-3
    hf_style = _rot_ref(x, angle32.double(), "half")
    assert (hf_style - ref).abs().max().item() > 10 * ours


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_bf16_input_keeps_exact_angles(layout):
    torch.manual_seed(1)
    rope = RoPE({}, 64, layout)
    inv, _ = rope_frequencies({}, 64)
    pos = torch.arange(1000, 1064)  # bf16 cannot hold these integers
    x = torch.randn(1, 2, 64, 64).bfloat16()
    y = rope(x, pos)
    assert y.dtype == torch.bfloat16
    ref = _rot_ref(x, pos.double()[:, None] * inv.double(), layout)
    assert (y.double() - ref).abs().max().item() < 0.01 * ref.abs().max().item()  # bf16 rounding only
    bad = _rot_ref(x, pos.bfloat16().double()[:, None] * inv.double(), layout)  # positions through bf16
    assert (bad - ref).abs().max().item() > 0.5
    cos, sin = rope.cos_sin(pos, dtype=torch.bfloat16)
    expected = (pos.double()[:, None] * inv.double()).cos().bfloat16()
    assert torch.equal(cos, expected)


# --- caching ----------------------------------------------------------------------------------------
def test_dynamic_cache_refreshes_after_a_long_input():
    cfg = CONFIGS["dynamic"]
    rope = RoPE(cfg, D)
    x_short, x_long = torch.randn(1, 2, 16, D), torch.randn(1, 2, 256, D)
    first = rope(x_short, torch.arange(16))
    long = rope(x_long, torch.arange(256))
    again = rope(x_short, torch.arange(16))
    assert torch.equal(again, first)
    torch.testing.assert_close(again, RoPE({}, D)(x_short, torch.arange(16)), rtol=0, atol=0)
    assert torch.equal(rope.frequencies(16)[0], rope_frequencies({}, D)[0])
    fresh_long = RoPE(cfg, D)(x_long, torch.arange(256))
    assert torch.equal(long, fresh_long)
    assert not torch.allclose(long, RoPE({}, D)(x_long, torch.arange(256)))
    # two long lengths use their own frequencies (no "grown" state as in HF's module)
    mid = rope(x_long[:, :, :128], torch.arange(128))
    torch.testing.assert_close(mid, RoPE(cfg, D)(x_long[:, :, :128], torch.arange(128)), rtol=0, atol=0)


def test_offset_is_part_of_the_cache_key():
    rope = RoPE({}, D)
    x = torch.randn(1, 2, 8, D)
    a = rope(x, torch.arange(8))
    b = rope(x, torch.arange(8) + 5)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, RoPE({}, D)(x, torch.arange(8) + 5), rtol=0, atol=0)
    n_tables = len(rope._tables)
    rope(x, torch.arange(8) + 5)
    assert len(rope._tables) == n_tables  # the repeat call is served from the cache


def test_cache_built_in_inference_mode_is_usable_for_training():
    rope = RoPE({}, D)
    x = torch.randn(1, 2, 8, D)
    with torch.inference_mode():
        rope(x, torch.arange(8))
    xg = x.clone().requires_grad_()
    rope(xg, torch.arange(8)).sum().backward()
    assert xg.grad is not None


def test_with_config_swaps_scaling():
    rope = RoPE({}, D)
    yarn = rope.with_config(rope_type="yarn", factor=8.0, original_max_position_embeddings=64)
    assert yarn.attention_factor == pytest.approx(0.1 * math.log(8) + 1)
    assert rope.attention_factor == 1.0
    assert torch.equal(yarn.frequencies()[0], rope_frequencies(CONFIGS["yarn"], D)[0])


# --- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config, head_dim, match",
    [
        ({}, 63, "head_dim must be an even integer.*63"),
        ({"rope_type": "nope"}, D, "unknown rope_type 'nope'; known: default, linear, ntk, dynamic, yarn"),
        ({"type": "linear"}, D, "rope_type 'linear' requires 'factor'"),
        ({"type": "linear", "rope_type": "yarn"}, D, "conflicting.*'yarn'.*'linear'"),
        ({"rope_type": "yarn", "factor": 4.0}, D, "requires 'original_max_position_embeddings'.*extended"),
        (
            {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
            D,
            "'llama3' requires 'original_max_position_embeddings'",
        ),
        (
            {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64},
            D,
            "requires 'low_freq_factor', 'high_freq_factor'",
        ),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "original_max_position_embeddings": 64,
                "low_freq_factor": 4.0,
                "high_freq_factor": 1.0,
            },
            D,
            r"high_freq_factor \(1.0\) must be greater",
        ),
        ({"rope_type": "linear", "factor": 0.5}, D, "factor must be >= 1.*0.5"),
        ({"rope_type": "dynamic", "factor": 2.0}, D, "'dynamic' requires.*max_position_embeddings"),
        ({**CONFIGS["longrope"], "short_factor": [1.0] * 3}, D, "short_factor has 3 entries; .* 16"),
        ({**CONFIGS["longrope"], "long_factor": [1.0] * 17}, D, "long_factor has 17 entries"),
        ({**CONFIGS["longrope"], "long_factor": [1.0] * 15 + [-1.0]}, D, "long_factor must hold positive"),
        (
            {"rope_type": "longrope", "original_max_position_embeddings": 64, "short_factor": [1.0] * 16},
            D,
            "requires 'long_factor'",
        ),
        (
            {
                "rope_type": "longrope",
                "original_max_position_embeddings": 64,
                "short_factor": [1.0] * 16,
                "long_factor": [1.0] * 16,
            },
            D,
            "needs 'factor'",
        ),
        ({"rope_thetta": 1e4}, D, "unknown RoPE config key.*'rope_thetta'.*accepted: rope_theta"),
        ({"partial_rotary_factor": 1.5}, D, r"partial_rotary_factor must be in \(0, 1\].*1.5"),
        ({"partial_rotary_factor": 0.3}, D, "rotary dimension.*= 9 must be even"),
        ({"rope_theta": -3.0}, D, "rope_theta must be a number > 1.*-3.0"),
        (
            {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 64,
                "beta_fast": 1,
                "beta_slow": 8,
            },
            D,
            "beta_fast.*must be >= beta_slow",
        ),
        (
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": -5},
            D,
            r"beta_fast must be > 0.*got -5",
        ),
        (
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_slow": -1.0},
            D,
            r"beta_slow must be > 0.*got -1.0",
        ),
        (
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_slow": 64},
            D,
            r"beta_fast \(32\) must be >= beta_slow \(64\)",
        ),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "original_max_position_embeddings": 64,
                "low_freq_factor": 0,
                "high_freq_factor": 4.0,
            },
            D,
            r"low_freq_factor must be > 0.*got 0",
        ),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "original_max_position_embeddings": 64,
                "low_freq_factor": -1.0,
                "high_freq_factor": 4.0,
            },
            D,
            r"low_freq_factor must be > 0.*got -1.0",
        ),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "original_max_position_embeddings": 64,
                "low_freq_factor": 2.0,
                "high_freq_factor": 2.0,
            },
            D,
            r"high_freq_factor \(2.0\) must be greater",
        ),
        (
            {
                "rope_type": "llama3",
                "factor": 0.5,
                "original_max_position_embeddings": 64,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
            },
            D,
            r"factor must be >= 1.*0.5",
        ),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "original_max_position_embeddings": 0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
            },
            D,
            r"original_max_position_embeddings must be a positive integer, got 0",
        ),
        (
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "truncate": "no"},
            D,
            "truncate must be True or False, got 'no'",
        ),
    ],
)
def test_bad_config_raises_value_error(config, head_dim, match):
    with pytest.raises(ValueError, match=match):
        rope_frequencies(config, head_dim)
    with pytest.raises(ValueError, match=match):
        RoPE.from_hf_config(config, head_dim)


def test_bad_call_arguments_raise_value_error():
    rope = RoPE({}, D)
    x = torch.randn(1, 2, 4, D)
    with pytest.raises(ValueError, match="integer tensor.*torch.float32"):
        rope(x, torch.arange(4).float())
    with pytest.raises(ValueError, match=r"positions shape \(5,\) does not match"):
        rope(x, torch.arange(5))
    with pytest.raises(ValueError, match="positions must be >= 0.*-1"):
        rope(x, torch.arange(4) - 1)
    with pytest.raises(ValueError, match=r"x must have shape \(B, H, T, 32\).*\(1, 2, 4, 16\)"):
        rope(torch.randn(1, 2, 4, 16), torch.arange(4))
    with pytest.raises(ValueError, match="seq_len must be a positive integer.*0"):
        rope(x, torch.arange(4), seq_len=0)
    with pytest.raises(ValueError, match="unknown layout 'zigzag'; known: half, interleaved"):
        RoPE({}, D, layout="zigzag")
    with pytest.raises(ValueError, match="seq_len must be a positive integer or None, got -2"):
        rope_frequencies({}, D, seq_len=-2)


def test_config_roundtrip_and_legacy_type_key():
    cfg = RopeConfig.from_mapping({"type": "yarn", "factor": 4, "original_max_position_embeddings": 64})
    assert cfg.rope_type == "yarn"
    assert RopeConfig.from_mapping(cfg.as_dict()) == cfg
    assert cfg.replace(rope_type="linear").rope_type == "linear"
    assert hash(RopeConfig.from_mapping(CONFIGS["longrope"]))  # lists became tuples


# --- the "rope" encoding ----------------------------------------------------------------------------
def test_rope_encoding_rotates_q_and_k_with_the_key_length():
    from ropelib.encodings import encoding_params, make_encoding

    assert {"rope_type", "factor", "layout", "partial_rotary_factor"} <= set(encoding_params("rope"))
    enc = make_encoding("rope", n_heads=2, head_dim=D, d_model=2 * D, **CONFIGS["dynamic"])
    q, k = torch.randn(1, 2, 1, D), torch.randn(1, 2, 200, D)
    qpos, kpos = torch.tensor([199]), torch.arange(200)
    q_rot, k_rot = enc.rotate(q, k, qpos, kpos)
    assert enc.rope.layout == "interleaved"  # the toy model's default: the fast layout on CPU
    rope = RoPE(CONFIGS["dynamic"], D, "interleaved")
    # the single query uses the frequencies of the 200 keys (dynamic NTK scaled), not of its own length
    torch.testing.assert_close(q_rot, rope(q, qpos, seq_len=200), rtol=0, atol=0)
    torch.testing.assert_close(k_rot, rope(k, kpos, seq_len=200), rtol=0, atol=0)
    assert not torch.allclose(q_rot, RoPE({}, D)(q, qpos))


def test_rope_encoding_with_scaling_swaps_the_config():
    from ropelib.encodings import make_encoding

    enc = make_encoding("rope", n_heads=2, head_dim=D, d_model=2 * D, layout="interleaved")
    yarn = enc.with_scaling(rope_type="yarn", factor=8.0, original_max_position_embeddings=64)
    assert yarn is not enc and yarn.rope.layout == "interleaved"
    assert yarn.params == {**CONFIGS["yarn"], "rope_theta": 10000.0, "layout": "interleaved"}
    assert torch.equal(yarn.rope.frequencies()[0], rope_frequencies(CONFIGS["yarn"], D)[0])
    assert enc.rope.config.rope_type == "default"  # the original is unchanged
    back = yarn.with_scaling(rope_type="default", factor=None, original_max_position_embeddings=None)
    assert back.params == enc.params
    with pytest.raises(ValueError, match="unknown rope_type 'bogus'"):
        enc.with_scaling(rope_type="bogus")


def test_yarn_beta_zero_still_means_the_hf_default():
    base = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    expected = rope_frequencies({**base, "beta_fast": 32, "beta_slow": 1}, D)
    got = rope_frequencies({**base, "beta_fast": 0, "beta_slow": 0}, D)  # HF: `beta_fast or 32`
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]


@pytest.mark.parametrize("bad", [2**53 + 1, 2**62])
def test_positions_beyond_exact_float64_raise_value_error(bad):
    rope = RoPE({}, D)
    assert rope.cos_sin(torch.tensor([2**53]))[0].shape == (1, D // 2)  # the limit itself is exact
    with pytest.raises(ValueError, match=rf"positions must be <= 2\*\*53.*got a maximum of {bad}"):
        rope.cos_sin(torch.tensor([0, bad]))
    with pytest.raises(ValueError, match=rf"positions must be <= 2\*\*53.*{bad}"):
        rope(torch.ones(1, 1, 2, D), torch.tensor([0, bad]))


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_sparse_huge_span_positions_do_not_tabulate_the_span(layout, monkeypatch):
    rope = RoPE({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}, D, layout)
    positions = torch.tensor([0, 2**24])

    def no_table(*args, **kwargs):
        raise AssertionError("a cos/sin table over the whole span was built")

    monkeypatch.setattr(rope, "_table", no_table)
    inv_freq, factor = rope.frequencies()
    angle = positions.to(torch.float64)[:, None] * inv_freq.double()
    cos, sin = rope.cos_sin(positions, dtype=torch.float64)
    torch.testing.assert_close(cos, torch.cos(angle) * factor, rtol=0, atol=1e-15)
    torch.testing.assert_close(sin, torch.sin(angle) * factor, rtol=0, atol=1e-15)
    x = torch.randn(2, 3, 2, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = apply_rotary(x, cos, sin, layout)
    torch.testing.assert_close(rope(x, positions), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(rope(x, positions[None].expand(2, 2)), expected, rtol=0, atol=1e-12)


def test_contiguous_and_short_gathered_positions_still_use_the_cached_table(monkeypatch):
    rope = RoPE({}, D)
    calls = []
    table = rope._table
    monkeypatch.setattr(rope, "_table", lambda *a, **k: calls.append(a) or table(*a, **k))
    rope.cos_sin(torch.arange(100, 4196))
    rope.cos_sin(torch.tensor([3, 70, 2000, 9]))
    assert len(calls) == 2
