"""Tests of the registry and the non-bias encodings: NoPE, sinusoidal, learned, randomized (docs/references.md §2)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib.encodings import ENCODINGS, encoding_params, make_encoding
from ropelib.encodings.randomized import random_positions
from ropelib.encodings.sinusoidal import sinusoidal_encoding, sinusoidal_table

H, HEAD_DIM, D_MODEL = 4, 8, 32
MINE = ["nope", "sinusoidal", "learned", "t5", "alibi", "kerple", "fire", "randomized"]


def build(name: str, **params):
    torch.manual_seed(0)
    return make_encoding(name, n_heads=H, head_dim=HEAD_DIM, d_model=D_MODEL, **params)


# -- registry ----------------------------------------------------------------------------------
def test_all_encodings_registered():
    assert set(MINE) <= set(ENCODINGS)


def test_unknown_encoding_lists_known_ones():
    with pytest.raises(ValueError, match=r"'sinusiodal'.*alibi.*kerple.*sinusoidal.*t5"):
        make_encoding("sinusiodal", n_heads=H, head_dim=HEAD_DIM, d_model=D_MODEL)


@pytest.mark.parametrize(
    "name,bad,accepted",
    [
        ("t5", "buckets", "bidirectional, max_distance, num_buckets"),
        ("learned", "max_len", "init_std, max_positions"),
        ("kerple", "kind", "variant"),
        ("nope", "base", r"\(none\)"),
    ],
)
def test_unknown_parameter_lists_accepted_ones(name, bad, accepted):
    with pytest.raises(ValueError, match=f"'{bad}'.*accepted: {accepted}"):
        build(name, **{bad: 1})


def test_encoding_params_defaults():
    assert encoding_params("t5") == {"num_buckets": 32, "max_distance": 128, "bidirectional": False}
    assert encoding_params("randomized") == {
        "inner": "rope",
        "inner_params": None,
        "max_position": 2048,
        "eval_positions": "ordered",
        "eval_seed": 0,
    }


@pytest.mark.parametrize("name", [n for n in MINE if n != "randomized"])
def test_hook_flags(name):
    enc = build(name)
    assert enc.has_embed == (name in ("sinusoidal", "learned"))
    assert enc.has_bias == (name in ("t5", "alibi", "kerple", "fire"))
    assert not enc.has_rotate


# -- NoPE --------------------------------------------------------------------------------------
def test_nope_changes_nothing():
    enc = build("nope")
    x = torch.randn(2, 5, D_MODEL)
    q, k = torch.randn(2, H, 5, HEAD_DIM), torch.randn(2, H, 5, HEAD_DIM)
    pos = torch.arange(5)
    assert enc.embed(x, pos) is x
    assert enc.rotate(q, k, pos, pos) == (q, k)
    assert enc.bias(pos, pos) is None
    assert list(enc.parameters()) == []


# -- sinusoidal --------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 7, 16])
def test_sinusoidal_table_matches_formula(dim):
    n = 50
    table = sinusoidal_table(n, dim)
    assert table.shape == (n, dim) and table.dtype == torch.float32
    for p in range(n):
        for col in range(dim):
            angle = p / 10000 ** ((col - col % 2) / dim)
            expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert table[p, col].item() == pytest.approx(expected, abs=1e-7)


def test_sinusoidal_large_positions_use_float64_angles():
    p = 2**30 + 12345
    got = sinusoidal_encoding(torch.tensor([p]), 4)[0]
    expected = [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("bad", [0, -3, 2.0])
def test_sinusoidal_table_bad_dim(bad):
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_table(4, bad)


def test_sinusoidal_rejects_float_positions():
    with pytest.raises(ValueError, match="integer"):
        sinusoidal_encoding(torch.arange(3.0), 8)


def test_sinusoidal_embed_adds_table_at_any_position():
    enc = build("sinusoidal")
    x = torch.randn(2, 6, D_MODEL)
    out = enc.embed(x, torch.arange(6))
    torch.testing.assert_close(out, x + sinusoidal_table(6, D_MODEL))
    far = torch.arange(100_000, 100_006)
    torch.testing.assert_close(enc.embed(x, far) - x, sinusoidal_encoding(far, D_MODEL).expand(2, 6, D_MODEL))
    batched = torch.stack([torch.arange(6), torch.arange(10, 16)])  # (B, T)
    torch.testing.assert_close(enc.embed(x, batched)[1], x[1] + sinusoidal_encoding(batched[1], D_MODEL))
    assert enc.embed(x.to(torch.bfloat16), torch.arange(6)).dtype == torch.bfloat16


def test_sinusoidal_scale_multiplies_the_table_only():
    x = torch.randn(2, 6, D_MODEL)
    pos = torch.arange(1000, 1006)
    scaled, plain = build("sinusoidal", scale=0.25), build("sinusoidal")
    torch.testing.assert_close(scaled.embed(x, pos) - x, 0.25 * (plain.embed(x, pos) - x))
    assert plain.scale == 1.0 and "scale=0.25" in repr(scaled)
    for bad in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="scale must be a finite number > 0"):
            build("sinusoidal", scale=bad)


def test_sinusoidal_embed_shape_errors():
    enc = build("sinusoidal")
    with pytest.raises(ValueError, match="d_model"):
        enc.embed(torch.randn(1, 4, D_MODEL + 1), torch.arange(4))
    with pytest.raises(ValueError, match="positions cover 3 tokens"):
        enc.embed(torch.randn(1, 4, D_MODEL), torch.arange(3))


def test_sinusoidal_raw_dot_product_is_relative():
    """p_m . p_n = sum_i cos((m - n) w_i): without projections it depends only on m - n."""
    table = sinusoidal_table(400, D_MODEL).double()
    gram = table @ table.T
    torch.testing.assert_close(gram[10:50, 10:50], gram[310:350, 310:350], rtol=0, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(shift=st.integers(7, 10_000), seed=st.integers(0, 2**16))
def test_sinusoidal_scores_are_not_relative(shift, seed):
    """With query/key projections, ((x_m + p_m) W_q) . ((x_n + p_n) W_k) changes when both positions
    shift by the same amount: additive sinusoidal positions are absolute, unlike RoPE."""
    g = torch.Generator().manual_seed(seed)
    T = 8
    x = torch.randn(T, D_MODEL, generator=g, dtype=torch.float64)
    w_q = torch.randn(D_MODEL, HEAD_DIM, generator=g, dtype=torch.float64) / D_MODEL**0.5
    w_k = torch.randn(D_MODEL, HEAD_DIM, generator=g, dtype=torch.float64) / D_MODEL**0.5

    def scores(offset: int) -> torch.Tensor:
        h = x + sinusoidal_encoding(torch.arange(offset, offset + T), D_MODEL).double()
        return (h @ w_q) @ (h @ w_k).T  # (T, T)

    assert (scores(shift) - scores(0)).abs().max() > 1e-3


# -- learned -----------------------------------------------------------------------------------
def test_learned_adds_table_rows_and_sets_max_positions():
    enc = build("learned", max_positions=16)
    assert enc.max_positions == 16 and enc.table.weight.shape == (16, D_MODEL)
    x = torch.randn(2, 5, D_MODEL)
    pos = torch.arange(11, 16)
    torch.testing.assert_close(enc.embed(x, pos), x + enc.table.weight[11:16])
    batched = torch.stack([torch.arange(5), torch.arange(3, 8)])
    torch.testing.assert_close(enc.embed(x, batched)[1], x[1] + enc.table.weight[3:8])


def test_learned_rejects_positions_past_table():
    enc = build("learned", max_positions=16)
    x = torch.randn(1, 5, D_MODEL)
    with pytest.raises(ValueError, match=r"position 16 .*16 positions"):
        enc.embed(x, torch.arange(12, 17))
    with pytest.raises(ValueError, match="position -1"):
        enc.embed(x, torch.arange(-1, 4))


@pytest.mark.parametrize("params", [{"max_positions": 0}, {"max_positions": 3.5}, {"init_std": -1.0}])
def test_learned_bad_parameters(params):
    with pytest.raises(ValueError, match="max_positions|init_std"):
        build("learned", **params)


def test_learned_gradients_reach_used_rows_only():
    enc = build("learned", max_positions=16)
    enc.embed(torch.zeros(2, 4, D_MODEL), torch.arange(2, 6)).pow(2).sum().backward()
    grad = enc.table.weight.grad
    assert grad[2:6].abs().sum(dim=1).min() > 0
    assert grad[:2].abs().sum() == 0 and grad[6:].abs().sum() == 0


# -- randomized --------------------------------------------------------------------------------
def test_random_positions_sorted_distinct_in_range():
    torch.manual_seed(3)
    for length, max_position in ((1, 1), (10, 10), (50, 2048), (300, 100_000)):
        pos = random_positions(length, max_position)
        assert pos.dtype == torch.long and pos.shape == (length,)
        assert torch.all(pos[1:] > pos[:-1])  # sorted and distinct
        assert pos.min() >= 0 and pos.max() < max_position


def test_randomized_training_draws_eval_is_arange():
    enc = build("randomized", inner="sinusoidal", max_position=1000)
    assert enc.training
    torch.manual_seed(7)
    first = enc.positions(64)
    torch.manual_seed(7)
    again = enc.positions(64)
    assert torch.equal(first, again)  # deterministic under a seed
    assert not torch.equal(first, torch.arange(64))
    assert torch.all(first[1:] > first[:-1]) and first.max() < 1000
    assert not torch.equal(enc.positions(64), first)  # a fresh draw each call
    enc.eval()
    assert torch.equal(enc.positions(5), torch.arange(5))
    assert torch.equal(enc.positions(3, offset=10), torch.tensor([10, 11, 12]))
    assert not enc.inner.training  # train/eval reaches the inner encoding


def test_randomized_rejects_length_past_max_position():
    enc = build("randomized", inner="alibi", max_position=32)
    with pytest.raises(ValueError, match=r"33 distinct positions from \[0, 32\)"):
        enc.positions(33)
    with pytest.raises(ValueError, match="offset"):
        enc.positions(4, offset=2)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"inner": "alibi", "max_position": 0}, "max_position"),
        ({"inner": "nosuch"}, "known encodings"),
        ({"inner": "randomized"}, "itself"),
        ({"inner": "t5", "inner_params": {"buckets": 4}}, "accepted"),
        ({"inner": "learned", "inner_params": {"max_positions": 100}, "max_position": 200}, "only 100 positions"),
    ],
)
def test_randomized_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        build("randomized", **params)


def test_randomized_delegates_to_inner():
    enc = build("randomized", inner="alibi", max_position=512)
    alibi = build("alibi")
    pos = enc.positions(8)
    assert enc.has_bias and not enc.has_embed and not enc.has_rotate
    torch.testing.assert_close(enc.bias(pos, pos), alibi.bias(pos, pos))

    enc = build("randomized", inner="learned", inner_params={"max_positions": 512}, max_position=512)
    assert enc.has_embed and not enc.has_bias and enc.max_positions == 512
    x = torch.randn(1, 8, D_MODEL)
    pos = enc.positions(8)
    torch.testing.assert_close(enc.embed(x, pos), x + enc.inner.table.weight[pos])


def test_randomized_around_rope_if_registered():
    if "rope" not in ENCODINGS:
        pytest.skip("the 'rope' encoding is not registered yet")
    enc = build("randomized")  # inner="rope" by default
    rope = build("rope")
    assert enc.has_rotate
    q, k = torch.randn(1, H, 6, HEAD_DIM), torch.randn(1, H, 6, HEAD_DIM)
    pos = enc.positions(6)
    for ours, theirs in zip(enc.rotate(q, k, pos, pos), rope.rotate(q, k, pos, pos)):
        torch.testing.assert_close(ours, theirs)


def test_sinusoidal_rejects_positions_beyond_exact_float64():
    from ropelib.encodings.sinusoidal import sinusoidal_encoding

    ok = sinusoidal_encoding(torch.tensor([2**53]), 8)  # the limit itself is exact
    assert ok.shape == (1, 8)
    for bad in (2**53 + 1, -(2**53) - 1, 2**62):
        with pytest.raises(ValueError, match=rf"positions must be within \+-2\*\*53.*got {bad}"):
            sinusoidal_encoding(torch.tensor([0, bad]), 8)
