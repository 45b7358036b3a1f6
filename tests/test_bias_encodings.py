"""Tests of the additive-bias encodings: T5, ALiBi, KERPLE, FIRE (docs/references.md §2)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib.encodings import make_encoding
from ropelib.encodings.alibi import alibi_slopes
from ropelib.encodings.base import relative_positions
from ropelib.encodings.t5 import t5_relative_bucket

H, HEAD_DIM, D_MODEL = 4, 8, 32

# (name, params) of every bias scheme that depends on i - j only
SHIFT_INVARIANT = [
    ("t5", {}),
    ("t5", {"bidirectional": True}),
    ("alibi", {}),
    ("kerple", {"variant": "log"}),
    ("kerple", {"variant": "power"}),
]
ALL_BIASES = SHIFT_INVARIANT + [("fire", {})]


def build(name: str, **params):
    torch.manual_seed(0)
    return make_encoding(name, n_heads=H, head_dim=HEAD_DIM, d_model=D_MODEL, **params)


def randomise_t5(enc) -> None:
    """Distinct values per bucket, so a wrong bucket shows up as a wrong bias."""
    with torch.no_grad():
        enc.relative_attention_bias.weight.copy_(torch.randn_like(enc.relative_attention_bias.weight))


# -- T5 ----------------------------------------------------------------------------------------
CAUSAL_TABLE = {
    0: 0,
    1: 1,
    7: 7,
    15: 15,
    16: 16,
    20: 17,
    31: 21,
    32: 21,
    63: 26,
    64: 26,
    100: 30,
    127: 31,
    128: 31,
    1000: 31,
    10**6: 31,
}
BIDIR_BEFORE = {8: 8, 9: 8, 12: 9, 16: 10, 32: 12, 64: 14, 100: 15}
BIDIR_AFTER = {1: 17, 8: 24, 16: 26, 64: 30, 127: 31}


def test_t5_causal_bucket_table():
    distance = torch.tensor(list(CAUSAL_TABLE))
    # relative_position = key - query = -distance for keys before the query
    assert t5_relative_bucket(-distance, bidirectional=False).tolist() == list(CAUSAL_TABLE.values())
    # keys after the query all share bucket 0 in the causal setting
    assert t5_relative_bucket(torch.tensor([1, 5, 500]), bidirectional=False).tolist() == [0, 0, 0]


def test_t5_bidirectional_bucket_table():
    before = torch.tensor(list(BIDIR_BEFORE))
    after = torch.tensor(list(BIDIR_AFTER))
    assert t5_relative_bucket(-before, bidirectional=True).tolist() == list(BIDIR_BEFORE.values())
    assert t5_relative_bucket(after, bidirectional=True).tolist() == list(BIDIR_AFTER.values())


@pytest.mark.parametrize(
    "bidirectional,num_buckets,max_distance",
    [(b, n, m) for b in (False, True) for n, m in ((32, 128), (8, 20), (64, 1000), (33, 200))] + [(False, 2, 10)],
)
def test_t5_bucket_matches_hf(bidirectional, num_buckets, max_distance):
    modeling_t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    relative = torch.arange(-3000, 3001)
    ours = t5_relative_bucket(relative, bidirectional, num_buckets, max_distance)
    theirs = modeling_t5.T5Attention._relative_position_bucket(
        relative, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    assert torch.equal(ours, theirs)


def test_t5_bias_matches_hf_compute_bias():
    """The (H, T, T) bias equals HF's ``compute_bias`` with the same table (causal decoder setting)."""
    modeling_t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    config = modeling_t5.T5Config(
        d_model=D_MODEL,
        d_kv=HEAD_DIM,
        num_heads=H,
        is_decoder=True,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
    )
    hf = modeling_t5.T5Attention(config, has_relative_attention_bias=True)
    enc = build("t5")
    randomise_t5(enc)
    hf.relative_attention_bias.weight.data.copy_(enc.relative_attention_bias.weight.data)
    T = 200
    theirs = hf.compute_bias(T, T)[0]  # (H, T, T)
    ours = enc.bias(torch.arange(T), torch.arange(T))
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    "params",
    [
        {"num_buckets": 1},
        {"num_buckets": 3, "bidirectional": True},
        {"num_buckets": 32, "max_distance": 16},
        {"bidirectional": "yes"},
        {"num_buckets": 8.0},
    ],
)
def test_t5_bad_parameters(params):
    with pytest.raises(ValueError, match="num_buckets|max_distance|bidirectional"):
        build("t5", **params)


def test_t5_bucket_rejects_float_positions():
    with pytest.raises(ValueError, match="integer"):
        t5_relative_bucket(torch.tensor([1.0, 2.0]))


# -- ALiBi -------------------------------------------------------------------------------------
def test_alibi_slopes_powers_of_two():
    assert alibi_slopes(8) == pytest.approx([2.0 ** -(k + 1) for k in range(8)], rel=1e-15)
    assert alibi_slopes(16) == pytest.approx([2.0 ** -(0.5 * (k + 1)) for k in range(16)], rel=1e-15)


def test_alibi_slopes_twelve_heads():
    expected = [0.5 ** (k + 1) for k in range(8)] + [0.70711, 0.35355, 0.17678, 0.08839]
    assert alibi_slopes(12) == pytest.approx(expected, abs=5e-6)


@pytest.mark.parametrize("n", [1, 3, 5, 6, 7, 12, 20, 24, 31])
def test_alibi_slopes_any_head_count(n):
    slopes = alibi_slopes(n)
    assert len(slopes) == n and len(set(slopes)) == n
    assert all(0 < s < 1 for s in slopes)
    lower = 2 ** int(math.floor(math.log2(n)))
    assert slopes[:lower] == alibi_slopes(lower)


@pytest.mark.parametrize("bad", [0, -2, 2.0, True])
def test_alibi_slopes_reject_bad_head_count(bad):
    with pytest.raises(ValueError, match="n_heads"):
        alibi_slopes(bad)


def test_alibi_bias_values():
    enc = build("alibi")
    T = 6
    bias = enc.bias(torch.arange(T), torch.arange(T))
    i, j = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    for h, m in enumerate(alibi_slopes(H)):
        expected = (-m * (i - j).abs()).to(torch.float32)
        assert torch.equal(bias[h], expected)
    # causal part is exactly -m * (i - j)
    assert bias[0, 5, 2].item() == pytest.approx(-0.25 * 3)


def test_alibi_slopes_survive_bf16_model():
    """Slopes are not a buffer, so casting the model to bf16 leaves the float32 bias exact."""
    enc = build("alibi").to(torch.bfloat16)
    T = 300
    bias = enc.bias(torch.arange(T), torch.arange(T))
    assert bias.dtype == torch.float32
    assert bias[H - 1, T - 1, 0].item() == pytest.approx(-alibi_slopes(H)[-1] * (T - 1), rel=1e-7)


# -- KERPLE ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["log", "power"])
def test_kerple_formula(variant):
    enc = build("kerple", variant=variant)
    with torch.no_grad():
        enc.p.copy_(torch.tensor([0.5, 1.0, 1.5, 3.0]))
        enc.a.copy_(torch.tensor([0.1, 0.001, 1.0, 2.0]))  # 0.001 is clamped to 0.01
    T = 9
    bias = enc.bias(torch.arange(T), torch.arange(T)).double()
    p = torch.tensor([0.5, 1.0, 1.5, 3.0 if variant == "log" else 2.0], dtype=torch.float64)
    a = torch.tensor([0.1, 0.01, 1.0, 2.0], dtype=torch.float64)
    n = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs().double()
    if variant == "log":
        expected = -p[:, None, None] * torch.log(1 + a[:, None, None] * n)
    else:
        expected = -a[:, None, None] * n ** p[:, None, None]
    torch.testing.assert_close(bias, expected, rtol=1e-6, atol=1e-6)


def test_kerple_power_with_p_one_is_alibi_with_learned_slope():
    enc = build("kerple", variant="power")
    slopes = torch.tensor(alibi_slopes(H))
    with torch.no_grad():
        enc.p.fill_(1.0)
        enc.a.copy_(slopes)
    q = torch.arange(10)
    kerple, alibi = enc.bias(q, q), build("alibi").bias(q, q)
    torch.testing.assert_close(kerple[:3], alibi[:3])
    # ALiBi's last slope for 4 heads (1/256) is below KERPLE's clamp of 0.01, which wins
    assert alibi_slopes(H)[3] < 0.01
    torch.testing.assert_close(kerple[3], -0.01 * (q[:, None] - q[None, :]).abs().float())


def test_kerple_init_like_official_code():
    torch.manual_seed(1)
    enc = make_encoding("kerple", n_heads=256, head_dim=8, d_model=32)
    assert 0 <= enc.p.min() and enc.p.max() <= 2 and enc.p.mean() > 0.8 and enc.p.max() > 1.5
    assert 0 <= enc.a.min() and enc.a.max() <= 1 and 0.4 < enc.a.mean() < 0.6


def test_kerple_unknown_variant():
    with pytest.raises(ValueError, match=r"'cubic'.*log, power"):
        build("kerple", variant="cubic")


# -- FIRE --------------------------------------------------------------------------------------
def test_fire_matches_formula():
    enc = build("fire", init_threshold=6.0)
    q = torch.arange(12)
    bias = enc.bias(q, q)  # (H, 12, 12)
    c, L = 0.1, 6.0
    for i in (0, 3, 5, 6, 11):
        for j in (0, 2, i):
            x = math.log(c * abs(i - j) + 1) / (math.log(c * max(L, i) + 1) + 1e-6)
            expected = enc.mlp(torch.tensor([[x]], dtype=torch.float32))[0]  # (H,)
            torch.testing.assert_close(bias[:, i, j], expected, rtol=1e-5, atol=1e-6)


def test_fire_normalised_distance_in_unit_interval():
    enc = build("fire", init_threshold=8.0)
    q = torch.arange(500)
    x = enc.normalized_distance(q, q)
    causal = torch.tril(torch.ones(500, 500, dtype=torch.bool))
    assert x[causal].min() == 0 and x[causal].max() <= 1
    # the largest distance a query past the threshold sees maps (nearly) to 1
    assert x[499, 0].item() == pytest.approx(1.0, abs=1e-4)


def test_fire_is_not_shift_invariant_past_threshold():
    """FIRE's normaliser psi(max(L, i)) depends on the query position: shifting both positions changes
    the bias once the queries are past L (but not below it, and never on the diagonal)."""
    enc = build("fire", init_threshold=4.0)
    q = torch.arange(10)
    moved = enc.bias(q + 50, q + 50)
    base = enc.bias(q, q)
    causal = torch.tril(torch.ones(10, 10, dtype=torch.bool))
    off_diagonal = causal & ~torch.eye(10, dtype=torch.bool)
    assert (moved - base)[:, off_diagonal].abs().max() > 1e-3
    torch.testing.assert_close(moved.diagonal(dim1=-2, dim2=-1), base.diagonal(dim1=-2, dim2=-1))
    # below the threshold the normaliser is psi(L) for every query: shift invariant there
    big = build("fire", init_threshold=512.0)
    torch.testing.assert_close(big.bias(q + 100, q + 100), big.bias(q, q), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("params", [{"init_c": 0.0}, {"init_threshold": -1.0}, {"mlp_width": 0}, {"eps": 0}])
def test_fire_bad_parameters(params):
    with pytest.raises(ValueError, match="init_c|init_threshold|mlp_width|eps"):
        build("fire", **params)


# -- properties shared by every bias scheme ----------------------------------------------------
@pytest.mark.parametrize("name,params", ALL_BIASES)
def test_bias_shapes_and_dtype(name, params):
    enc = build(name, **params)
    single = enc.bias(torch.arange(7), torch.arange(7))
    assert single.shape == (H, 7, 7) and single.dtype == torch.float32
    batched = enc.bias(torch.arange(14).view(2, 7), torch.arange(14).view(2, 7))
    assert batched.shape == (2, H, 7, 7) and batched.dtype == torch.float32
    torch.testing.assert_close(batched[1], enc.bias(torch.arange(7, 14), torch.arange(7, 14)))


@pytest.mark.parametrize("name,params", ALL_BIASES)
def test_bias_kv_cache_rows(name, params):
    """One query position against all keys equals the matching row of the full matrix."""
    enc = build(name, **params)
    k = torch.arange(40)
    full = enc.bias(k, k)
    for t in (0, 17, 39):
        row = enc.bias(k[t : t + 1], k)
        assert row.shape == (H, 1, 40)
        torch.testing.assert_close(row[:, 0], full[:, t])


@pytest.mark.parametrize("name,params", ALL_BIASES)
def test_bias_rejects_float_positions(name, params):
    enc = build(name, **params)
    with pytest.raises(ValueError, match="integer"):
        enc.bias(torch.arange(4.0), torch.arange(4))
    with pytest.raises(ValueError, match="both"):
        enc.bias(torch.arange(4).view(1, 4), torch.arange(4))


@pytest.mark.parametrize("name,params", SHIFT_INVARIANT)
@settings(max_examples=25, deadline=None)
@given(
    q=st.lists(st.integers(0, 5000), min_size=1, max_size=12),
    k=st.lists(st.integers(0, 5000), min_size=1, max_size=12),
    shift=st.integers(-5000, 100_000),
)
def test_bias_depends_only_on_difference(name, params, q, k, shift):
    enc = build(name, **params)
    if name == "t5":
        randomise_t5(enc)
    q, k = torch.tensor(q), torch.tensor(k)
    torch.testing.assert_close(enc.bias(q + shift, k + shift), enc.bias(q, k), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name,params", [("t5", {}), ("kerple", {"variant": "log"}), ("kerple", {"variant": "power"}), ("fire", {})]
)
def test_gradients_reach_learned_parameters(name, params):
    enc = build(name, **params)
    q = torch.arange(300)
    (enc.bias(q, q) * torch.randn(H, 300, 300)).sum().backward()
    grads = {n: p.grad for n, p in enc.named_parameters()}
    assert grads, "no learned parameters"
    for n, g in grads.items():
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, n


def test_relative_positions_is_query_minus_key():
    rel = relative_positions(torch.tensor([5]), torch.arange(7))
    assert rel.tolist() == [[5, 4, 3, 2, 1, 0, -1]] and rel.dtype == torch.long


def test_alibi_head_count_mismatch_with_the_model_raises_value_error():
    from ropelib.model import ModelConfig, ToyTransformer

    model = ToyTransformer(ModelConfig(vocab_size=11, n_layers=1, n_heads=4, d_model=16, encoding="alibi"))
    wrong = make_encoding("alibi", n_heads=2, head_dim=4, d_model=16)
    with pytest.raises(ValueError, match="n_heads=2.*n_heads=4"):
        model.replace_encoding(wrong)
    model.encoding = wrong  # assigned directly: caught at the forward
    with pytest.raises(ValueError, match=r"'alibi' encoding's bias has 2 heads.*n_heads=4"):
        model(torch.zeros(1, 5, dtype=torch.long))
