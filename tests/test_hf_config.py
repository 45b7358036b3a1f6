"""``RoPE.from_hf_config`` on HF configs as users hold them (issue 13 item 3), against HF's own rotary modules.

Each HF config is built here (tiny: hidden_size 64, 4 heads; no downloads) and given to ropelib in three
forms: the transformers config object, its ``to_dict()``, and its JSON (what ``config.json`` holds). The
reference is the model's own ``*RotaryEmbedding`` module run on the same positions: its ``inv_freq``
buffer and ``attention_scaling`` must equal ropelib's frequencies bit for bit (as in
``tests/test_rope_parity_hf.py``), its cos/sin ours up to HF's float32 angle rounding (same bound as there).
Configs written by older transformers (``rope_scaling`` next to ``rope_theta``; GPT-NeoX's ``rotary_pct`` /
``rotary_emb_base``) are checked as dicts against the config transformers 5.24 builds from the same dict.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import GPTNeoXConfig, LlamaConfig, Phi3Config  # noqa: E402
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding  # noqa: E402

from ropelib.rope import RoPE  # noqa: E402
from ropelib.rope_scaling import RopeConfig  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)  # HF warns about factor/max ratios by design

ORIG = 32  # pre-training length of the scaled configs: lengths 24 (within) and 100 (beyond) cover both regimes
TINY = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "vocab_size": 100,
}
NEOX_TINY = {k: v for k, v in TINY.items() if k != "num_key_value_heads"}


def _llama(**kw) -> LlamaConfig:
    return LlamaConfig(**TINY, **kw)


def _phi3(**kw) -> Phi3Config:
    return Phi3Config(**TINY, **kw)


def _neox(**kw) -> GPTNeoXConfig:
    return GPTNeoXConfig(**NEOX_TINY, **kw)


def _longrope(pairs: int) -> dict:
    return {
        "rope_type": "longrope",
        "short_factor": [1.0 + 0.05 * i for i in range(pairs)],
        "long_factor": [1.5 + 0.9 * i for i in range(pairs)],
    }


# name -> (HF config, HF rotary module class, expected rotary_dim)
CASES = {
    "llama-default": (
        lambda: _llama(max_position_embeddings=128, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
        LlamaRotaryEmbedding,
        16,
    ),
    "llama-default-head_dim-32": (lambda: _llama(head_dim=32), LlamaRotaryEmbedding, 32),
    "llama-linear": (
        lambda: _llama(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}),
        LlamaRotaryEmbedding,
        16,
    ),
    "llama-yarn": (
        lambda: _llama(
            max_position_embeddings=4 * ORIG,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": ORIG,
                "rope_theta": 1e4,
            },
        ),
        LlamaRotaryEmbedding,
        16,
    ),
    "llama-yarn-deepseek-mscale": (
        lambda: _llama(
            max_position_embeddings=40 * ORIG,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 40.0,
                "original_max_position_embeddings": ORIG,
                "rope_theta": 1e4,
                "mscale": 1.0,
                "mscale_all_dim": 0.8,
                "beta_fast": 16.0,
                "beta_slow": 2.0,
            },
        ),
        LlamaRotaryEmbedding,
        16,
    ),
    "llama-llama3": (
        lambda: _llama(
            max_position_embeddings=8 * ORIG,
            rope_parameters={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": ORIG,
                "rope_theta": 500000.0,
            },
        ),
        LlamaRotaryEmbedding,
        16,
    ),
    "llama-dynamic": (
        lambda: _llama(
            max_position_embeddings=ORIG, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}
        ),
        LlamaRotaryEmbedding,
        16,
    ),
    "neox-rotary_pct-0.25": (lambda: _neox(rotary_pct=0.25, rotary_emb_base=10000), GPTNeoXRotaryEmbedding, 4),
    "neox-rotary_pct-0.5": (
        lambda: _neox(rotary_pct=0.5, rotary_emb_base=5000, max_position_embeddings=ORIG),
        GPTNeoXRotaryEmbedding,
        8,
    ),
    # (Llama's own default module ignores partial_rotary_factor; Phi-3's reads it, Phi-4-mini uses 0.75)
    "phi3-default-partial": (lambda: _phi3(partial_rotary_factor=0.75), Phi3RotaryEmbedding, 12),
    "phi3-longrope": (
        lambda: _phi3(
            max_position_embeddings=8 * ORIG, original_max_position_embeddings=ORIG, rope_parameters=_longrope(8)
        ),
        Phi3RotaryEmbedding,
        16,
    ),
    "phi3-longrope-partial": (
        lambda: _phi3(
            max_position_embeddings=8 * ORIG,
            original_max_position_embeddings=ORIG,
            partial_rotary_factor=0.5,
            rope_parameters=_longrope(4),
        ),
        Phi3RotaryEmbedding,
        8,
    ),
}

FORMS = ["object", "to_dict", "json"]


def _form(config, form: str):
    if form == "object":
        return config
    if form == "to_dict":
        return config.to_dict()
    return json.loads(config.to_json_string(use_diff=False))


def _assert_equals_hf(rope: RoPE, hf_config, module_cls, T: int, name: str) -> None:
    """ropelib's frequencies / cos / sin for positions 0..T-1 against a fresh HF module run on them."""
    emb = module_cls(hf_config)
    position_ids = torch.arange(T)[None]
    cos_hf, sin_hf = emb(torch.zeros(1, 1, T, rope.head_dim), position_ids)
    inv, attention = rope.frequencies(T)
    if rope.config.rope_type == "dynamic":
        # HF's module computes the dynamic base from a float32 tensor seq_len: 1-2 ulp from the float path
        # (the same bound as test_hf_dynamic_long_then_short_matches_ours)
        torch.testing.assert_close(inv, emb.inv_freq, rtol=4e-7, atol=0, msg=lambda m: f"{name}, T={T}: {m}")
    else:
        assert torch.equal(inv, emb.inv_freq), (name, T, inv, emb.inv_freq)
    assert attention == pytest.approx(emb.attention_scaling, rel=1e-12), (name, T)
    c, s = rope.cos_sin(position_ids)
    assert cos_hf.shape[-1] == 2 * c.shape[-1] == rope.rotary_dim, name
    tol = attention * 2.0**-24 * T * 4 + 1e-6  # HF's float32 angle product (test_rope_parity_hf.py)
    torch.testing.assert_close(torch.cat((c, c), -1), cos_hf, rtol=0, atol=tol, msg=lambda m: f"{name}, T={T}: {m}")
    torch.testing.assert_close(torch.cat((s, s), -1), sin_hf, rtol=0, atol=tol, msg=lambda m: f"{name}, T={T}: {m}")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", list(CASES))
def test_model_config_equals_hf_rotary_module(name, form):
    make, module_cls, rotary_dim = CASES[name]
    hf_config = make()
    rope = RoPE.from_hf_config(_form(hf_config, form))
    assert rope.head_dim == (hf_config.head_dim if getattr(hf_config, "head_dim", None) else 16)
    assert rope.rotary_dim == rotary_dim
    for T in (24, 100):  # within and beyond the original length (longrope switches, dynamic grows)
        _assert_equals_hf(rope, hf_config, module_cls, T, name)


# config.json as transformers 4.x wrote it: rope_theta and rope_scaling at the top, GPT-NeoX's own names
LEGACY = {
    "llama3.1-style": (
        LlamaConfig,
        LlamaRotaryEmbedding,
        {
            "model_type": "llama",
            **TINY,
            "max_position_embeddings": 8 * ORIG,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": ORIG,
                "rope_type": "llama3",
            },
            "torch_dtype": "bfloat16",
            "architectures": ["LlamaForCausalLM"],
        },
    ),
    "llama-legacy-type-linear": (
        LlamaConfig,
        LlamaRotaryEmbedding,
        {"model_type": "llama", **TINY, "rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}},
    ),
    "llama-rope_scaling-null": (
        LlamaConfig,
        LlamaRotaryEmbedding,
        {"model_type": "llama", **TINY, "rope_theta": 1e6, "rope_scaling": None, "head_dim": None},
    ),
    "gpt-neox": (
        GPTNeoXConfig,
        GPTNeoXRotaryEmbedding,
        {
            "model_type": "gpt_neox",
            **NEOX_TINY,
            "rotary_pct": 0.25,
            "rotary_emb_base": 10000,
            "max_position_embeddings": 2048,
            "use_parallel_residual": True,
        },
    ),
    "phi3-top-level-original": (
        Phi3Config,
        Phi3RotaryEmbedding,
        {
            "model_type": "phi3",
            **TINY,
            "rope_theta": 10000.0,
            "max_position_embeddings": 8 * ORIG,
            "original_max_position_embeddings": ORIG,
            "partial_rotary_factor": 0.5,
            "rope_scaling": {
                "type": "longrope",
                "short_factor": [1.0, 1.1, 1.2, 1.3],
                "long_factor": [2.0, 3.0, 5.0, 8.0],
            },
        },
    ),
    "phi3-legacy-su": (
        Phi3Config,
        Phi3RotaryEmbedding,
        {  # Phi-3's first name for LongRoPE
            "model_type": "phi3",
            **TINY,
            "rope_theta": 10000.0,
            "max_position_embeddings": 8 * ORIG,
            "original_max_position_embeddings": ORIG,
            "rope_scaling": {
                "type": "su",
                "short_factor": [1.0 + 0.1 * i for i in range(8)],
                "long_factor": [4.0] * 8,
                "original_max_position_embeddings": ORIG,
            },
        },
    ),
}


@pytest.mark.parametrize("name", list(LEGACY))
def test_legacy_config_dict_equals_hf(name):
    config_cls, module_cls, d = LEGACY[name]
    hf_config = config_cls.from_dict(json.loads(json.dumps(d)))  # transformers' reading of the same dict
    for source in (d, hf_config, hf_config.to_dict()):  # the old dict, and what transformers 5 makes of it
        rope = RoPE.from_hf_config(source)
        for T in (24, 100):
            _assert_equals_hf(rope, hf_config, module_cls, T, name)


def test_gemma3_per_layer_type_rope_parameters_equal_hf():
    from transformers import Gemma3TextConfig
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

    tiny = {**TINY, "num_hidden_layers": 2}
    config = Gemma3TextConfig(
        **tiny,
        head_dim=16,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
    )
    emb = Gemma3RotaryEmbedding(config)
    for form in FORMS:
        with pytest.raises(ValueError, match="one mapping per layer type.*'full_attention'.*layer_type="):
            RoPE.from_hf_config(_form(config, form))
        for layer_type in ("full_attention", "sliding_attention"):
            rope = RoPE.from_hf_config(_form(config, form), layer_type=layer_type)
            assert torch.equal(rope.frequencies()[0], getattr(emb, f"{layer_type}_inv_freq")), (form, layer_type)
            assert rope.attention_factor == getattr(emb, f"{layer_type}_attention_scaling")
            cos_hf, _ = emb(torch.zeros(1, 1, 50, 16), torch.arange(50)[None], layer_type)
            c, _ = rope.cos_sin(torch.arange(50))
            torch.testing.assert_close(torch.cat((c, c), -1), cos_hf[0], rtol=0, atol=2.0**-24 * 50 * 4 + 1e-6)
        assert RoPE.from_hf_config(config, layer_type="full_attention").config.factor == 8.0
    with pytest.raises(ValueError, match="layer_type 'global' not in.*known: 'full_attention'"):
        RoPE.from_hf_config(config, layer_type="global")


def test_head_dim_argument_overrides_the_config():
    rope = RoPE.from_hf_config(_llama(head_dim=32), head_dim=8)
    assert (rope.head_dim, rope.rotary_dim) == (8, 8)
    neox = RoPE.from_hf_config(_neox(rotary_pct=0.5).to_dict(), 32)  # positional, as the old signature
    assert (neox.head_dim, neox.rotary_dim) == (32, 16)
    assert neox.config.partial_rotary_factor == 0.5
    # hidden_size // num_attention_heads when head_dim is absent or null
    assert (
        RoPE.from_hf_config({"hidden_size": 96, "num_attention_heads": 3, "head_dim": None, "rope_theta": 1e4}).head_dim
        == 32
    )


def test_unrelated_model_keys_are_ignored_and_bare_mappings_still_work():
    d = _llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}).to_dict()
    d.update({"some_future_key": [1, 2], "quantization_config": {"bits": 4}, "factor": 99.0})
    rope = RoPE.from_hf_config(d)
    assert rope.config.factor == 2.0 and rope.head_dim == 16
    # every call form used before this change
    assert RoPE.from_hf_config({"rope_theta": 1e4}, head_dim=64, layout="half").rotary_dim == 64
    bare = _llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}).rope_parameters
    assert RoPE.from_hf_config(bare, 16).config == rope.config.replace(max_position_embeddings=None)
    assert RoPE.from_hf_config(RopeConfig(rope_theta=5e5), 16, layout="interleaved").layout == "interleaved"


@pytest.mark.parametrize(
    "config, kwargs, match",
    [
        (
            {"model_type": "llama", "rope_theta": 1e4},
            {},
            r"no 'head_dim'.*\(missing: 'hidden_size', 'num_attention_heads'\); pass head_dim=",
        ),
        ({"hidden_size": 64, "rope_theta": 1e4}, {}, r"missing: 'num_attention_heads'\)"),
        ({"rope_theta": 1e4}, {}, "head_dim is required with a bare rope mapping"),
        (
            {"model_type": "gpt2", "hidden_size": 64, "num_attention_heads": 4},
            {},
            "holds no RoPE settings.*'rope_parameters'.*'rope_scaling'",
        ),
        (
            {**TINY, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "rope_thetta": 5.0}},
            {},
            r"in the model config's 'rope_parameters': unknown RoPE config key\(s\) 'rope_thetta'; accepted: rope_theta",
        ),
        (
            {**TINY, "max_position_embeddings": 128, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
            {},
            "'rope_scaling': rope_type 'yarn' requires 'original_max_position_embeddings'",
        ),
        ({**TINY, "rope_scaling": {"rope_type": "linear"}}, {}, "rope_type 'linear' requires 'factor'"),
        ({**TINY, "rope_theta": 1e4, "rotary_pct": 0.1}, {}, r"int\(16 \* 0.1\) = 1 must be even"),
        ({**TINY, "rope_parameters": "default"}, {}, "'rope_parameters' must be a mapping, got str"),
        ({"rope_theta": 1e4}, {"head_dim": 16, "layer_type": "full_attention"}, "layer_type applies only"),
        (42, {"head_dim": 16}, "config must be a transformers config, its to_dict\\(\\), or a mapping.*got int"),
    ],
)
def test_bad_model_configs_raise_value_error_naming_the_key(config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RoPE.from_hf_config(config, **kwargs)


def test_composite_config_uses_its_text_config():
    from transformers import LlavaConfig

    text = _llama(
        max_position_embeddings=4 * ORIG,
        rope_parameters={
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": ORIG,
            "rope_theta": 1e4,
        },
    )
    composite = LlavaConfig(text_config=text.to_dict())
    for source in (composite, composite.to_dict()):
        rope = RoPE.from_hf_config(source)
        _assert_equals_hf(rope, text, LlamaRotaryEmbedding, 100, "llava-text_config")
