"""Attention diagnostics past the training length (``ropelib.attention_stats``) on tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ropelib import attention_stats as S
from ropelib import base_models
from ropelib.data import make_task
from ropelib.model import ModelConfig, ToyTransformer
from ropelib.runs import RunResult


def _model(encoding="rope", params=None, vocab=20, seed=0, d_model=32, n_heads=2):
    torch.manual_seed(seed)
    return ToyTransformer(
        ModelConfig(
            vocab_size=vocab,
            n_layers=2,
            n_heads=n_heads,
            d_model=d_model,
            encoding=encoding,
            encoding_params=params or {},
        )
    ).eval()


def test_attention_maps_are_causal_distributions():
    x = torch.randint(0, 20, (2, 12))
    for a in S.attention_maps(_model(), x):
        assert a.shape == (2, 2, 12, 12) and a.dtype == torch.float64
        assert torch.allclose(a.sum(-1), torch.ones(2, 2, 12, dtype=torch.float64), atol=1e-6)
        assert float(a.triu(1).abs().max()) == 0.0


def test_attention_profile_uniform_and_far_mass():
    m = _model()
    with torch.no_grad():  # zero queries: every score 0, attention exactly uniform over the causal keys
        for blk in m.blocks:
            blk.attn.qkv.weight[: m.config.d_model].zero_()
    x = torch.randint(0, 20, (2, 32))
    p = S.attention_profile(m, x, 8)
    assert len(p) == 4 and (p.length == 32).all() and (p.n_queries == 2 * 8).all()
    q = np.arange(24, 32)
    assert np.allclose(p.entropy, np.log(q + 1).mean()) and np.allclose(p.entropy_ratio, 1.0)
    # uniform over keys 0..i: the share at distance >= 8 is (i + 1 - 8) / (i + 1)
    assert np.allclose(p.far_mass, ((q + 1 - 8) / (q + 1)).mean())
    assert np.allclose(p.mean_distance, (q / 2).mean())
    # at the training length there is no key at distance >= L
    assert np.allclose(S.attention_profile(m, x[:, :8], 8).far_mass, 0.0)
    with pytest.raises(ValueError, match="train_length"):
        S.attention_profile(m, x, 0)


def test_needle_attention_finds_the_needle_span():
    task = make_task("passkey", n_digits=3)
    m = _model("alibi", vocab=task.vocab_size)
    df = S.needle_attention(m, task, 40, 6, seed=1)
    assert len(df) == 4 and (df.n_samples == 6).all()
    assert ((df.needle_mass >= 0) & (df.needle_mass <= 1)).all() and (df.accuracy.between(0, 1)).all()
    # needle at the end (depth 1): the needle's last digit sits right before the query KEY
    near = S.needle_attention(m, task, 40, 6, seed=1, depth=1.0)
    assert (near.mean_needle_distance == 0).all()
    with pytest.raises(ValueError, match="passkey"):
        S.needle_attention(m, make_task("copy"), 40, 4, seed=0)


def test_band_of_pairs():
    bands = S.band_of_pairs([1.0, 0.1, 0.01, 0.0], 64)
    assert list(bands) == ["turning", "turning", "slow", "position-free"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"rope_theta": 500.0},
        {"partial_rotary_factor": 0.5},
        {"rope_type": "proportional", "partial_rotary_factor": 0.5},
    ],
)
def test_band_means_add_up_to_the_score_mean(params):
    """Bands partition the coordinates, so their mean contributions sum to the mean score; the total's
    spread over keys is the spread of the log attention weights (softmax removes only a constant)."""
    m = _model("rope", params, seed=3)
    x = torch.randint(0, 20, (2, 16))
    L = 16
    bands = S.rope_band_scores(m, x, L)
    assert set(bands["keys"]) == {"< L"}
    # the total score of each query-key pair, from the attention weights: log a_ij = s_ij - logsumexp_i
    attn = S.attention_maps(m, x)
    for layer, a in enumerate(attn):
        for h in range(2):
            rows = bands[(bands.layer == layer) & (bands.head == h)]
            if len(rows) == 1:  # a single band carries the whole score: its spread is that of log a
                la = torch.log(a[:, h])  # (B, T, T)
                spreads = [la[b, i, : i + 1].std() for b in range(2) for i in range(1, 16)]
                assert float(rows.spread.iloc[0]) == pytest.approx(float(torch.stack(spreads).mean()), rel=1e-4)
    assert (bands.spread >= 0).all()
    n = bands.drop_duplicates("band").set_index("band").n_pairs
    assert n.sum() == m.config.head_dim // 2


def test_band_scores_single_band_matches_attention_spread():
    m = _model("rope", {"rope_theta": 2.0}, seed=1)  # every pair turns within 16: one band, "turning"
    x = torch.randint(0, 20, (2, 16))
    bands = S.rope_band_scores(m, x, 16)
    assert set(bands.band) == {"turning"}
    a = S.attention_maps(m, x)[1][:, 0]  # layer 1, head 0 (B, T, T)
    la = torch.log(a)
    spread = torch.stack([la[b, i, : i + 1].std() for b in range(2) for i in range(1, 16)]).mean()
    row = bands[(bands.layer == 1) & (bands["head"] == 0)].iloc[0]
    assert row.spread == pytest.approx(float(spread), rel=1e-4)


def test_band_scores_need_rope():
    with pytest.raises(ValueError, match="'rope' encoding"):
        S.rope_band_scores(_model("alibi"), torch.randint(0, 20, (1, 8)), 8)


def _runs(models):
    return {
        k: RunResult(spec=None, hash=f"h{i}", model=mdl, history=[], path=Path("."), metadata={})
        for i, (k, mdl) in enumerate(models.items())
    }


def test_grids(dict_cache):
    tokens = torch.randint(0, 20, (600,))
    runs = _runs({("rope", "books", 0): _model(), ("alibi", "books", 0): _model("alibi")})
    cached = dict_cache
    lm = S.lm_attention_grid(runs, 16, tokens, [1, 4], n_windows=3, cached=cached)
    assert set(lm.multiplier) == {1.0, 4.0} and len(lm) == 2 * 2 * 2 * 2
    assert np.allclose(lm[lm.multiplier == 1].far_mass, 0) and (lm[lm.multiplier == 4].far_mass > 0).all()
    bands = S.band_grid(runs, 16, tokens, [1, 4], n_windows=2, cached=cached)
    assert set(bands.encoding) == {"rope"} and set(bands["keys"]) == {"< L", ">= L"}
    task = make_task("passkey", n_digits=3)
    pk = _runs({("rope", "passkey", 0): _model(vocab=task.vocab_size)})
    needle = S.needle_grid(pk, task, 16, [1, 2], n_samples=4, cached=cached)
    assert set(needle.length) == {16, 32}
    with pytest.raises(ValueError, match="no window"):
        S.lm_windows(tokens[:10], 16, 2)


# -- mean attention distance ------------------------------------------------------------------------


class _FixedAttention(torch.nn.Module):
    """A stand-in model whose attention is given: 'self' (the diagonal) or 'first' (key 0)."""

    def __init__(self, kind: str, n_layers: int = 2, n_heads: int = 3):
        super().__init__()
        self.kind, self.n_layers, self.n_heads = kind, n_layers, n_heads
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, return_attention=False):
        B, T = x.shape
        a = torch.eye(T) if self.kind == "self" else torch.zeros(T, T).index_fill_(1, torch.tensor([0]), 1.0)
        attn = [a.expand(B, self.n_heads, T, T) for _ in range(self.n_layers)]
        return torch.zeros(B, T, 5), attn


def test_attention_distance_known_patterns():
    x = torch.zeros(2, 9, dtype=torch.long)
    assert np.allclose(S.attention_distance(_FixedAttention("self"), x), 0.0)
    first = S.attention_distance(_FixedAttention("first"), x)
    assert first.shape == (2, 3)
    assert np.allclose(first, np.mean(np.arange(9)))  # query i looks back i tokens: mean 4


def test_attention_distance_of_a_real_model_is_within_bounds():
    torch.manual_seed(0)
    model = ToyTransformer(base_models.base_spec(base_models.base_setup("smoke"), "alibi", "books", 0).model)
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    d = S.attention_distance(model, x)
    assert d.shape == (model.config.n_layers, model.config.n_heads)
    assert (d >= 0).all() and (d <= 15 / 2 + 1e-6).all()  # query i can look back at most i: mean 7.5
    with pytest.raises(ValueError, match="torch.long"):
        S.attention_distance(model, x.float())
