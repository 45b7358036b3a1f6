"""Parity of ropelib.rope with HF transformers (frequencies, cos/sin, rotated tensors) and Meta's LLaMA.

HF v5 keeps RoPE settings in ``config.rope_parameters``; the configs below are built the way v5 expects
(``LlamaConfig(..., rope_parameters={...})``, ``GPTNeoXConfig`` for partial rotary).
"""

from __future__ import annotations

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import GPTNeoXConfig, LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.gpt_neox import modeling_gpt_neox as hf_neox  # noqa: E402
from transformers.models.llama import modeling_llama as hf_llama  # noqa: E402

from ropelib.rope import RoPE  # noqa: E402
from ropelib.rope_scaling import rope_frequencies  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)  # HF warns about factor/max ratios by design

ORIG = 64  # original (pre-training) length in the small configs, so "long" inputs stay cheap


def _cases(head_dim: int) -> list[dict]:
    half = head_dim // 2
    return [
        {"rope_type": "default", "rope_theta": 10000.0},
        {"rope_type": "default", "rope_theta": 500000.0},
        {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
        {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
        {"rope_type": "dynamic", "rope_theta": 1e6, "factor": 8.0},
        {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0, "original_max_position_embeddings": ORIG},
        {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 16.0,
            "original_max_position_embeddings": ORIG,
            "truncate": False,
        },
        {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "original_max_position_embeddings": ORIG,
            "beta_fast": 8.0,
            "beta_slow": 2.0,
        },
        {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 40.0,
            "original_max_position_embeddings": ORIG,
            "mscale": 1.0,
            "mscale_all_dim": 0.8,
        },
        {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 40.0,
            "original_max_position_embeddings": ORIG,
            "mscale": 0.707,
            "mscale_all_dim": 0.707,
            "attention_factor": 1.3,
        },
        {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "original_max_position_embeddings": ORIG,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
        },
        {
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 32.0,
            "original_max_position_embeddings": ORIG,
            "low_freq_factor": 2.0,
            "high_freq_factor": 8.0,
        },
        {
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "original_max_position_embeddings": ORIG,
            "short_factor": [1.0 + 0.02 * i for i in range(half)],
            "long_factor": [1.0 + 0.7 * i for i in range(half)],
        },
        {
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "original_max_position_embeddings": ORIG,
            "factor": 8.0,
            "attention_factor": 1.1,
            "short_factor": [1.0] * half,
            "long_factor": [2.0 + i for i in range(half)],
        },
        {"rope_type": "proportional", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        {"rope_type": "proportional", "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "factor": 2.0},
    ]


def _ids(cases):
    return [f"{c['rope_type']}-{i}" for i, c in enumerate(cases)]


def _max_pos(case: dict) -> int:
    # HF infers LongRoPE's factor as max/original when it is not given; keep the ratio explicit here
    return ORIG * 4


def _hf_llama_config(case: dict, head_dim: int) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=_max_pos(case),
        rope_parameters=dict(case),
    )


def _ours(case: dict) -> dict:
    out = dict(case)
    if case["rope_type"] in ("dynamic", "longrope"):
        out["max_position_embeddings"] = _max_pos(case) if case["rope_type"] == "longrope" else ORIG
    return out


def _hf_dynamic_config(case: dict, head_dim: int) -> LlamaConfig:
    # HF's dynamic NTK is relative to max_position_embeddings (the training length)
    return LlamaConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=ORIG,
        rope_parameters=dict(case),
    )


def _hf_frequencies(case: dict, head_dim: int, seq_len: int | None):
    if case["rope_type"] == "dynamic":
        config = _hf_dynamic_config(case, head_dim)
    else:
        config = _hf_llama_config(case, head_dim)
    if case["rope_type"] == "default":
        return hf_llama.LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[case["rope_type"]](config, None, seq_len=seq_len)


HEAD_DIMS = [64, 128]


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("seq_len", [None, 16, ORIG, ORIG + 1, 5 * ORIG, 37 * ORIG])
def test_frequencies_equal_hf(head_dim, seq_len):
    for case in _cases(head_dim):
        hf_inv, hf_attention = _hf_frequencies(case, head_dim, seq_len)
        inv, attention = rope_frequencies(_ours(case), head_dim, seq_len)
        assert inv.dtype == torch.float32 and inv.shape == hf_inv.shape, case
        torch.testing.assert_close(inv, hf_inv.float(), rtol=2**-23, atol=0, msg=lambda m: f"{case}: {m}")
        assert attention == pytest.approx(hf_attention, rel=1e-12), case


@pytest.mark.parametrize("rope_type", ["default", "linear", "dynamic", "yarn", "llama3"])
@pytest.mark.parametrize("pct", [0.25, 0.5])
def test_partial_rotary_frequencies_equal_hf_gpt_neox(rope_type, pct):
    head_dim = 64
    case = next(c for c in _cases(head_dim) if c["rope_type"] == rope_type)
    params = {**case, "partial_rotary_factor": pct}
    config = GPTNeoXConfig(
        hidden_size=head_dim * 2, num_attention_heads=2, max_position_embeddings=ORIG, rope_parameters=dict(params)
    )
    for seq_len in (None, 10 * ORIG):
        if rope_type == "default":
            hf_inv, hf_attention = hf_neox.GPTNeoXRotaryEmbedding.compute_default_rope_parameters(config)
        else:
            hf_inv, hf_attention = ROPE_INIT_FUNCTIONS[rope_type](config, None, seq_len=seq_len)
        ours = {**params, "max_position_embeddings": ORIG} if rope_type == "dynamic" else params
        inv, attention = rope_frequencies(ours, head_dim, seq_len)
        assert inv.shape == (int(head_dim * pct) // 2,)
        torch.testing.assert_close(inv, hf_inv.float(), rtol=2**-23, atol=0)
        assert attention == pytest.approx(hf_attention)


def _hf_cos_sin(module_cls, config, x, position_ids):
    emb = module_cls(config)
    return emb(x, position_ids)


@pytest.mark.parametrize("head_dim", [64])
@pytest.mark.parametrize("T, offset", [(24, 0), (40, 50), (150, 0)])  # within, straddling, beyond ORIG
def test_rotated_tensors_equal_hf_apply_rotary_pos_emb(head_dim, T, offset):
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, T, head_dim), torch.randn(2, 3, T, head_dim)
    position_ids = (torch.arange(T) + offset)[None].expand(2, T)
    max_angle_err = 2.0**-24 * (T + offset) * 4  # HF's float32 angle product, a few ulps of position*theta
    for case in _cases(head_dim):
        config = (
            _hf_dynamic_config(case, head_dim) if case["rope_type"] == "dynamic" else _hf_llama_config(case, head_dim)
        )
        cos, sin = _hf_cos_sin(hf_llama.LlamaRotaryEmbedding, config, q, position_ids)
        q_hf, k_hf = hf_llama.apply_rotary_pos_emb(q, k, cos, sin)
        rope = RoPE.from_hf_config(_ours(case), head_dim, layout="half")
        q_ours, k_ours = rope(q, position_ids[0]), rope(k, position_ids)
        # (1) cos/sin: ours (float64 angle) vs HF's (float32 angle) differ only by HF's angle rounding
        c, s = rope.cos_sin(position_ids)
        scale = rope.attention_factor
        torch.testing.assert_close(torch.cat((c, c), -1), cos, rtol=0, atol=scale * max_angle_err + 1e-6)
        torch.testing.assert_close(torch.cat((s, s), -1), sin, rtol=0, atol=scale * max_angle_err + 1e-6)
        # (2) HF's own apply_rotary_pos_emb fed our cos/sin gives our tensors (to float32 rounding)
        q_hf_ours, k_hf_ours = hf_llama.apply_rotary_pos_emb(q, k, torch.cat((c, c), -1), torch.cat((s, s), -1))
        torch.testing.assert_close(q_ours, q_hf_ours, rtol=1e-6, atol=1e-6, msg=lambda m: f"{case}: {m}")
        torch.testing.assert_close(k_ours, k_hf_ours, rtol=1e-6, atol=1e-6, msg=lambda m: f"{case}: {m}")
        # (3) end to end against HF's module + apply_rotary_pos_emb
        tol = 8 * scale * max_angle_err + 1e-5
        torch.testing.assert_close(q_ours, q_hf, rtol=0, atol=tol, msg=lambda m: f"{case}: {m}")
        torch.testing.assert_close(k_ours, k_hf, rtol=0, atol=tol, msg=lambda m: f"{case}: {m}")


def test_partial_rotary_tensors_equal_hf_gpt_neox():
    torch.manual_seed(0)
    head_dim, T = 64, 30
    q, k = torch.randn(1, 2, T, head_dim), torch.randn(1, 2, T, head_dim)
    position_ids = torch.arange(T)[None] + 5
    config = GPTNeoXConfig(
        hidden_size=head_dim * 2, num_attention_heads=2, max_position_embeddings=ORIG, rotary_pct=0.25
    )
    cos, sin = _hf_cos_sin(hf_neox.GPTNeoXRotaryEmbedding, config, q, position_ids)
    q_hf, k_hf = hf_neox.apply_rotary_pos_emb(q, k, cos, sin)
    rope = RoPE.from_hf_config(config.rope_parameters, head_dim)
    assert rope.rotary_dim == 16
    torch.testing.assert_close(rope(q, position_ids), q_hf, rtol=0, atol=1e-5)
    torch.testing.assert_close(rope(k, position_ids), k_hf, rtol=0, atol=1e-5)
    assert torch.equal(rope(q, position_ids)[..., 16:], q[..., 16:])


def test_hf_dynamic_long_then_short_matches_ours():
    # HF resets its dynamic frequencies once an input is shorter than the original length; ours too.
    case = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    head_dim = 32
    config = _hf_dynamic_config(case, head_dim)
    emb = hf_llama.LlamaRotaryEmbedding(config)
    rope = RoPE.from_hf_config(_ours(case), head_dim)
    x = torch.randn(1, 1, 1, head_dim)
    for T in (300, 20, 200, 10):
        pos = torch.arange(T)[None]
        emb(x, pos)  # updates HF's state like a forward would
        # HF's module computes the dynamic base from a tensor seq_len (float32): 1-2 ulp from the float64 path
        torch.testing.assert_close(rope.frequencies(T)[0], emb.inv_freq, rtol=4e-7, atol=0)


# --- Meta LLaMA reference (interleaved layout), written out as in llama/model.py ------------------
def _meta_precompute_freqs_cis(inv_freq: torch.Tensor, end: int) -> torch.Tensor:
    t = torch.arange(end, device=inv_freq.device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq).float()
    return torch.polar(torch.ones_like(freqs), freqs)  # complex64


def _meta_apply_rotary_emb(xq: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    # xq: (B, T, H, D) as in Meta's code; freqs_cis: (T, D/2)
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    freqs_cis = freqs_cis.view(1, xq_.shape[1], 1, xq_.shape[-1])
    return torch.view_as_real(xq_ * freqs_cis).flatten(3).type_as(xq)


@pytest.mark.parametrize("rope_type", ["default", "linear", "yarn", "llama3", "longrope"])
def test_interleaved_equals_meta_complex_multiply(rope_type):
    torch.manual_seed(0)
    head_dim, T = 64, 80
    case = next(c for c in _cases(head_dim) if c["rope_type"] == rope_type)
    rope = RoPE.from_hf_config(_ours(case), head_dim, layout="interleaved")
    inv_freq, attention = rope.frequencies(T)
    x = torch.randn(2, T, 4, head_dim)  # Meta's (B, T, H, D)
    ref = _meta_apply_rotary_emb(x, _meta_precompute_freqs_cis(inv_freq, T)) * attention
    ours = rope(x.transpose(1, 2), torch.arange(T)).transpose(1, 2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-5)
    # and it is a different function from the half layout on the same tensor
    half = RoPE.from_hf_config(_ours(case), head_dim, layout="half")(x.transpose(1, 2), torch.arange(T))
    assert not torch.allclose(half.transpose(1, 2), ref, atol=1e-2)
