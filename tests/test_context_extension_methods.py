"""``ropelib.context_extension``: the methods of notebook 06, their protocols, LongRoPE's search family,
YaRN's temperature and the fine-tuning budgets.

The two generation protocols of dynamic NTK are checked against independent references: ``hf_cache``
against HF transformers' rotary module stepped as ``generate`` steps it, and against a token-by-token
decoder written out here that caches *rotated* keys; ``recompute`` against the model run on every
prefix of the window."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ropelib import context_extension as CE
from ropelib.model import ModelConfig, ToyTransformer
from ropelib.rope import RoPE
from ropelib.rope_scaling import rope_frequencies

L, HEAD_DIM, S = 16, 16, 2.0


def _model(layout: str = "interleaved", encoding: str = "rope", seed: int = 0) -> ToyTransformer:
    torch.manual_seed(seed)
    params = {"layout": layout} if encoding == "rope" else {}
    config = ModelConfig(
        vocab_size=11,
        n_layers=2,
        n_heads=2,
        d_model=2 * HEAD_DIM,
        encoding=encoding,
        encoding_params=params,
        init_std=0.2,
    )
    return ToyTransformer(config).eval()


def _tokens(n: int, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 11, (batch, n), generator=torch.Generator().manual_seed(1))


# -- registry --------------------------------------------------------------------------------------
def test_every_method_builds_keys_that_rope_accepts():
    for name, method in CE.METHODS.items():
        options = {"ramp": (1, 5)} if name == "longrope" else {}
        keys = CE.method_keys(name, 4.0, 64, HEAD_DIM, 1e4, **options)
        if name == "none":
            assert keys is None
            continue
        inv, attention = rope_frequencies(keys, HEAD_DIM, seq_len=256)
        assert torch.isfinite(inv).all() and attention >= 1.0, name
        if not method.uses_factor:
            assert CE.method_keys(name, 8.0, 64, HEAD_DIM, 1e4) == keys, name


def test_unknown_method_and_bad_factor_are_named():
    with pytest.raises(ValueError, match="unknown context-extension method 'pi'.*known: none, linear"):
        CE.method_keys("pi", 2.0, 64, HEAD_DIM, 1e4)
    with pytest.raises(ValueError, match="factor s must be a number >= 1, got 0.5"):
        CE.method_keys("linear", 0.5, 64, HEAD_DIM, 1e4)
    with pytest.raises(ValueError, match="longrope needs its searched factors"):
        CE.method_keys("longrope", 2.0, 64, HEAD_DIM, 1e4)
    with pytest.raises(ValueError, match="needs a RoPE model; this model's encoding is 'alibi'"):
        CE.extend(_model(encoding="alibi"), "linear", 2.0, L)


def test_yarn_is_the_papers_ramp_and_its_temperature_sweeps_the_attention_factor():
    keys = CE.method_keys("yarn", 8.0, 64, HEAD_DIM, 1e4)
    assert (keys["beta_fast"], keys["beta_slow"]) == (32.0, 1.0)
    _, default_factor = rope_frequencies(keys, HEAD_DIM)
    assert default_factor == pytest.approx(0.1 * math.log(8.0) + 1.0)
    for c in (0.0, 0.1, 0.3):
        _, factor = rope_frequencies(CE.method_keys("yarn", 8.0, 64, HEAD_DIM, 1e4, temperature=c), HEAD_DIM)
        assert factor == pytest.approx(1.0 + c * math.log(8.0))
    with pytest.raises(ValueError, match="temperature coefficient must be a number >= 0"):
        CE.yarn_attention_factor(4.0, -0.1)


# -- dynamic NTK as HF generates with its cache ----------------------------------------------------
def test_hf_cache_tables_equal_hf_rotary_module_stepped_like_generate():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama as hf_llama

    config = transformers.LlamaConfig(
        hidden_size=2 * HEAD_DIM,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=HEAD_DIM,
        max_position_embeddings=L,
        rope_parameters={"rope_type": "dynamic", "factor": S, "rope_theta": 1e4},
    )
    emb = hf_llama.LlamaRotaryEmbedding(config)
    x = torch.zeros(1, 1, 1, HEAD_DIM)
    n = 5 * L
    hf_cos = [emb(x, torch.arange(L)[None])[0][0]]  # prefill of L tokens: (L, D)
    for p in range(L, n):  # then one token per step, as generate() calls the model
        hf_cos.append(emb(x, torch.tensor([[p]]))[0][0])  # (1, D)
    hf_cos = torch.cat(hf_cos)  # (n, D)

    ours = CE.extend(_model(layout="half"), "dynamic_cache", S, L)
    assert isinstance(ours.encoding, CE.HFCacheRoPE)
    cos, _ = ours.encoding._per_position(n, torch.float64, torch.device("cpu"))  # (n, D/2)
    torch.testing.assert_close(torch.cat((cos, cos), -1).float(), hf_cos, rtol=0, atol=2e-5)
    # the whole-window protocol differs: every position, those below L included, at length n's frequencies
    window = RoPE({"rope_type": "dynamic", "factor": S, "rope_theta": 1e4, "max_position_embeddings": L}, HEAD_DIM)
    cos_window, _ = window.cos_sin(torch.arange(n), seq_len=n)
    plain, _ = RoPE({"rope_theta": 1e4}, HEAD_DIM).cos_sin(torch.arange(L))
    torch.testing.assert_close(cos[:L].float(), plain, rtol=0, atol=1e-6)  # below L: the original frequencies
    assert not torch.allclose(cos_window[:L], plain, atol=1e-3)
    assert not torch.allclose(cos_window[L + 1], cos[L + 1].float(), atol=1e-3)
    torch.testing.assert_close(cos_window[-1], cos[-1].float(), rtol=0, atol=1e-6)  # the last step: the same length


def _decode(model: ToyTransformer, idx: torch.Tensor, rope: RoPE, L: int, recompute: bool) -> torch.Tensor:
    """Token-by-token decoding of ``model``, written out from its parts. ``recompute=False``: keys cached
    *after* rotation, as HF does (the token at step p rotated with the frequencies for length
    max(p + 1, L), once); ``True``: keys cached before rotation and all rotated again at every step."""
    B, T = idx.shape
    H, D = model.config.n_heads, model.config.head_dim
    caches = [([], []) for _ in model.blocks]
    out = []
    for p in range(T):
        x = model.tok_emb(idx[:, p : p + 1])  # (B, 1, C)
        seq = max(p + 1, L)
        for block, (keys, values) in zip(model.blocks, caches):
            h = block.ln_1(x)
            q, k, v = block.attn.qkv(h).split(model.config.d_model, dim=2)
            q, k, v = (t.view(B, 1, H, D).transpose(1, 2) for t in (q, k, v))  # (B, H, 1, D)
            q = rope(q, torch.tensor([p]), seq_len=seq)
            keys.append(k if recompute else rope(k, torch.tensor([p]), seq_len=seq))
            values.append(v)
            k_all = torch.cat(keys, 2)  # (B, H, p + 1, D)
            if recompute:
                k_all = rope(k_all, torch.arange(p + 1), seq_len=seq)
            y = F.scaled_dot_product_attention(q, k_all, torch.cat(values, 2))  # (B, H, 1, D)
            x = x + block.attn.proj(y.transpose(1, 2).reshape(B, 1, H * D))
            x = x + block.mlp(block.ln_2(x))
        out.append(model.head(model.ln_f(x)))
    return torch.cat(out, 1)  # (B, T, V)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_hf_cache_protocol_equals_decoding_with_a_rotated_key_cache(layout):
    model = _model(layout=layout)
    idx = _tokens(3 * L)
    rope = RoPE(
        {"rope_type": "dynamic", "factor": S, "rope_theta": 1e4, "max_position_embeddings": L}, HEAD_DIM, layout=layout
    )
    with torch.no_grad():
        expected = _decode(model, idx, rope, L, recompute=False)
        got = CE.extend(model, "dynamic_cache", S, L)(idx)
        window = CE.extend(model, "dynamic", S, L)(idx)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # inside L both protocols are plain RoPE; past L they differ
    torch.testing.assert_close(got[:, :L], model(idx[:, :L]), rtol=1e-4, atol=1e-4)
    assert (got[:, L:] - window[:, L:]).abs().max() > 1e-3


def test_recompute_protocol_equals_decoding_with_keys_cached_before_rotation():
    model = _model()
    idx = _tokens(3 * L)
    rope = RoPE(
        {"rope_type": "dynamic", "factor": S, "rope_theta": 1e4, "max_position_embeddings": L},
        HEAD_DIM,
        layout="interleaved",
    )
    scaled = CE.extend(model, "dynamic_recompute", S, L)
    assert isinstance(scaled, CE.RecomputeDecoder) and scaled.config == model.config
    with torch.no_grad():
        got = scaled(idx)  # (B, T, V)
        torch.testing.assert_close(got, _decode(model, idx, rope, L, recompute=True), rtol=1e-4, atol=1e-4)
        # the hidden states of earlier tokens are not recomputed: with two layers, position t is *not*
        # the model run on the first t + 1 tokens alone (a one-layer model would be)
        prefix = CE.extend(model, "dynamic", S, L)(idx[:, : 2 * L])[:, -1]
        assert (got[:, 2 * L - 1] - prefix).abs().max() > 1e-3
    with pytest.raises(ValueError, match="prefill must be a positive integer"):
        CE.RecomputeDecoder(model, prefill=0)


def test_dynamic_factor_one_scales_the_base_by_the_length_ratio():
    keys = CE.method_keys("dynamic_f1", 4.0, 64, HEAD_DIM, 1e4)
    inv, _ = rope_frequencies(keys, HEAD_DIM, seq_len=256)
    ntk, _ = rope_frequencies(CE.method_keys("ntk", 4.0, 64, HEAD_DIM, 1e4), HEAD_DIM)
    torch.testing.assert_close(inv, ntk, rtol=1e-6, atol=0)  # factor 1 at l = 4L: static NTK at s = 4
    hf_s, _ = rope_frequencies(CE.method_keys("dynamic", 4.0, 64, HEAD_DIM, 1e4), HEAD_DIM, seq_len=256)
    ntk13, _ = rope_frequencies({"rope_type": "ntk", "rope_theta": 1e4, "factor": 13.0}, HEAD_DIM)
    torch.testing.assert_close(hf_s, ntk13, rtol=1e-6, atol=0)  # factor s at l = sL: s^2 - s + 1 = 13


# -- LongRoPE --------------------------------------------------------------------------------------
def test_longrope_family_is_monotone_with_pi_and_plain_rope_at_its_ends():
    n = HEAD_DIM // 2
    for lo, hi in CE.longrope_candidates(n):
        f = CE.longrope_factors(n, 4.0, lo, hi)
        assert all(a <= b for a, b in zip(f, f[1:])) and 1.0 <= f[0] and f[-1] <= 4.0
    assert len(CE.longrope_candidates(n)) == (n + 2) * (n + 1) // 2
    assert CE.longrope_factors(n, 4.0, -1, 0) == [4.0] * n
    assert CE.longrope_factors(n, 4.0, n - 1, n) == [1.0] * n
    with pytest.raises(ValueError, match="hi > lo"):
        CE.longrope_factors(n, 4.0, 3, 3)
    # the PI end of the family has PI's frequencies past L and the original ones up to L
    keys = CE.method_keys("longrope", 4.0, 64, HEAD_DIM, 1e4, ramp=(-1, 0))
    long_inv, attention = rope_frequencies(keys, HEAD_DIM, seq_len=256)
    pi_inv, _ = rope_frequencies(CE.method_keys("linear", 4.0, 64, HEAD_DIM, 1e4), HEAD_DIM)
    torch.testing.assert_close(long_inv, pi_inv, rtol=1e-6, atol=0)
    assert attention == pytest.approx(math.sqrt(1 + math.log(4.0) / math.log(64)))
    short_inv, _ = rope_frequencies(keys, HEAD_DIM, seq_len=64)
    torch.testing.assert_close(short_inv, rope_frequencies({"rope_theta": 1e4}, HEAD_DIM)[0])


def test_longrope_search_scores_every_candidate_and_picks_the_lowest():
    model = _model()
    tokens = _tokens(400, batch=1)[0]
    table = CE.longrope_search(model, tokens, S, L, max_windows=3, candidates=[(-1, 0), (2, 5), (7, 8)])
    assert list(table[["lo", "hi"]].itertuples(index=False, name=None)) == [(-1, 0), (2, 5), (7, 8)]
    assert table.chosen.sum() == 1 and table.loc[table.chosen, "loss"].item() == table.loss.min()
    assert (table.ppl - table.loss.map(math.exp)).abs().max() < 1e-9


# -- fine-tuning budgets ---------------------------------------------------------------------------
def test_pi_budget_is_about_five_hundredths_of_a_percent():
    assert CE.pi_budget_fraction() == pytest.approx(1000 * 64 * 8192 / 1e12)
    assert 5e-4 < CE.pi_budget_fraction() < 5.5e-4


def test_finetune_spec_follows_the_budget_and_schedule():
    from ropelib import base_models

    base = base_models.base_spec(base_models.base_setup("smoke"), "rope", "books", 0)
    tokens = CE.pretraining_tokens(base)
    spec = CE.finetune_spec(
        base,
        CE.method_keys("linear", 4.0, base.train.seq_len, base.model.head_dim, 1e4),
        factor=4.0,
        fraction=0.05,
        batch_size=2,
    )
    assert spec.parent == base and spec.train.seq_len == 4 * base.train.seq_len
    assert spec.train.steps == max(1, round(0.05 * tokens / (2 * 4 * base.train.seq_len)))
    assert spec.train.lr == pytest.approx(base.train.lr * 2e-5 / 3e-4)
    assert spec.train.weight_decay == 0.0 and 1 <= spec.train.warmup_steps <= spec.train.steps
    assert spec.model.encoding_params["rope_type"] == "linear" and spec.model.encoding_params["factor"] == 4.0
    other = CE.finetune_spec(base, None, factor=4.0, fraction=0.2, batch_size=2)
    assert other.hash() != spec.hash() and other.train.steps > spec.train.steps
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        CE.finetune_spec(base, None, factor=4.0, fraction=0.0, batch_size=2)
    assert CE.finetune_steps_for(1e-9, tokens, 2, 64) == 1  # at least one step


def test_p_rope_pair_factors_are_one_for_kept_pairs_and_zero_for_the_rest():
    from ropelib import analysis as A

    keys = CE.method_keys("p_rope_0.75", 2.0, 64, HEAD_DIM, 1e4)
    assert A.pair_scale_factors(keys, HEAD_DIM).tolist() == [1.0] * 6 + [0.0] * 2
