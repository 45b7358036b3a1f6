"""Tests for ropelib.published_rope: every published entry builds valid frequencies through
ropelib.rope_scaling, and the entries reproduce the derived values of docs/references.md §1, §3 and §4."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ropelib import analysis as A
from ropelib.model import ModelConfig
from ropelib.published_rope import MODEL_CONFIGS, TOY, PublishedRoPE, get_model_config, model_config_names
from ropelib.rope_scaling import rope_frequencies


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_every_entry_builds_valid_frequencies(name):
    cfg = get_model_config(name)
    assert cfg.source, "every entry names its source"
    lengths = [None, cfg.training_length, cfg.max_position_embeddings]
    for seq_len in lengths:
        inv, att = rope_frequencies(cfg.rope_parameters(), cfg.head_dim, seq_len=seq_len)
        inv = torch.as_tensor(inv)
        assert inv.shape == (cfg.rotary_dim // 2,)
        assert inv.dtype == torch.float32
        assert torch.all(torch.isfinite(inv)) and torch.all(inv > 0)
        assert math.isfinite(att) and att >= 1.0
        # scaling never speeds a pair up, and the fastest pair stays at most 1 rad/token
        ratio = A.pair_scale_factors(cfg.rope_parameters(), cfg.head_dim, seq_len=seq_len)
        assert np.all(ratio <= 1 + 1e-6) and inv[0] <= 1.0 + 1e-6


def test_llama2_critical_dimension_and_yarn_extension():
    llama2 = get_model_config("llama-2-7b")
    assert A.critical_dimension(llama2.head_dim, llama2.rope_theta, llama2.training_length) == 92
    yarn = get_model_config("yarn-llama-2-7b-64k")
    p = yarn.rope_parameters()
    assert p["factor"] * p["original_max_position_embeddings"] == yarn.max_position_embeddings
    assert A.yarn_correction_range(yarn.head_dim, p["rope_theta"], p["original_max_position_embeddings"]) == (20, 46)
    _, att = rope_frequencies(p, yarn.head_dim)
    assert att == pytest.approx(0.1 * math.log(16) + 1)


def test_llama31_split():
    cfg = get_model_config("llama-3.1-8b")
    p = cfg.rope_parameters()
    split = A.llama3_split(
        cfg.head_dim,
        p["rope_theta"],
        p["factor"],
        p["low_freq_factor"],
        p["high_freq_factor"],
        p["original_max_position_embeddings"],
    )
    assert split == {"unchanged": 29, "blended": 6, "divided": 29}


def test_phi3_longrope_factors_and_attention_factor():
    cfg = get_model_config("phi-3-mini-128k")
    p = cfg.rope_parameters()
    assert len(p["short_factor"]) == len(p["long_factor"]) == cfg.head_dim // 2 == 48
    assert p["factor"] == cfg.max_position_embeddings / cfg.training_length
    short, att = rope_frequencies(p, cfg.head_dim, seq_len=cfg.training_length)
    long, _ = rope_frequencies(p, cfg.head_dim, seq_len=cfg.training_length + 1)
    theta = A.inv_frequencies(cfg.head_dim, cfg.rope_theta)
    np.testing.assert_allclose(torch.as_tensor(short).double().numpy(), theta / np.array(p["short_factor"]), rtol=1e-5)
    np.testing.assert_allclose(torch.as_tensor(long).double().numpy(), theta / np.array(p["long_factor"]), rtol=1e-5)
    assert att == pytest.approx(math.sqrt(1 + math.log(32) / math.log(4096)))


def test_partial_rotary_gpt_neox():
    cfg = get_model_config("gpt-neox-20b")
    assert cfg.rotary_dim == 24 and cfg.rope_parameters()["partial_rotary_factor"] == 0.25
    inv, _ = rope_frequencies(cfg.rope_parameters(), cfg.head_dim)
    np.testing.assert_allclose(torch.as_tensor(inv).double().numpy(), A.inv_frequencies(24, 1e4), rtol=1e-6)


def test_toy_entry_matches_the_toy_model_defaults():
    model = ModelConfig(vocab_size=10)
    assert TOY.head_dim == model.d_model // model.n_heads == 32
    assert (TOY.rope_theta, TOY.training_length) == (10_000.0, 128)
    assert TOY.rope_type == "default"


def test_mistral_v01_theta():
    cfg = get_model_config("mistral-7b-v0.1")
    assert cfg.rope_theta == 10_000.0 and "1e6" in cfg.note


def test_entries_are_immutable_and_parameters_fresh():
    cfg = get_model_config("phi-3-mini-128k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.head_dim = 64  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.rope_scaling["factor"] = 2.0  # type: ignore[index]
    p = cfg.rope_parameters()
    p["long_factor"][0] = 99.0
    assert cfg.rope_parameters()["long_factor"][0] != 99.0
    with pytest.raises(TypeError):
        MODEL_CONFIGS["new"] = cfg  # type: ignore[index]


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="llama-2-7b") as info:
        get_model_config("llama-9")
    assert "'llama-9'" in str(info.value)
    assert model_config_names() == list(MODEL_CONFIGS)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"head_dim": 7}, "head_dim"),
        ({"rope_theta": 1.0}, "rope_theta"),
        ({"partial_rotary_factor": 0.0}, "partial_rotary_factor"),
        ({"head_dim": 20, "partial_rotary_factor": 0.25}, "rotary dim"),
    ],
)
def test_bad_entry_raises(kwargs, match):
    base = dict(name="x", source="s", head_dim=32, rope_theta=1e4, max_position_embeddings=8, training_length=8)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PublishedRoPE(**base)
