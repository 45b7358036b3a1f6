"""Tests for ropelib.rope_scaling's registry: one RopeType record per RoPE type, and what is derived from it
(validation, unused-key warnings, RoPE's frequency cache key, RoPEEncoding's parameters)."""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib.encodings import encoding_params
from ropelib.rope import RoPE
from ropelib.rope_scaling import (
    COMMON_KEYS,
    ROPE_TYPES,
    RopeConfig,
    RopeType,
    UnusedRopeKeyWarning,
    frequency_key,
    rope_frequencies,
)

D = 32
L = 64
# one valid config per type, every required key set
VALID = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "ntk": {"rope_type": "ntk", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0, "max_position_embeddings": L},
    "yarn": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": L},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "original_max_position_embeddings": L,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
    },
    "longrope": {
        "rope_type": "longrope",
        "original_max_position_embeddings": L,
        "factor": 4.0,
        "short_factor": [1.0 + 0.05 * i for i in range(D // 2)],
        "long_factor": [1.0 + 0.5 * i for i in range(D // 2)],
    },
    "proportional": {"rope_type": "proportional", "partial_rotary_factor": 0.5},
}


def _quiet(config) -> RopeConfig:
    """RopeConfig.from_mapping, failing on any UnusedRopeKeyWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusedRopeKeyWarning)
        return RopeConfig.from_mapping(config)


def test_every_type_has_a_valid_config_here_and_it_warns_nothing():
    assert set(VALID) == set(ROPE_TYPES)
    for name, config in VALID.items():
        assert _quiet(config).rope_type == name
        assert ROPE_TYPES[name].name == name


@pytest.mark.parametrize("name", list(ROPE_TYPES))
def test_every_required_key_is_enforced_with_a_clear_message(name):
    record = ROPE_TYPES[name]
    for key in record.required:
        config = {k: v for k, v in VALID[name].items() if k != key}
        with pytest.raises(ValueError, match=f"rope_type '{name}' requires .*'{key}'.*missing"):
            RopeConfig.from_mapping(config)
    if record.length_keys:  # one of the length keys must be set
        config = {k: v for k, v in VALID[name].items() if k not in record.length_keys}
        with pytest.raises(ValueError, match=f"rope_type '{name}' requires .*{record.length_keys[0]}"):
            RopeConfig.from_mapping(config)


@pytest.mark.parametrize("name", list(ROPE_TYPES))
def test_an_unused_key_is_flagged_naming_it_and_the_accepted_keys(name):
    record = ROPE_TYPES[name]
    unused = [f.name for f in dataclasses.fields(RopeConfig) if f.name not in record.keys()]
    assert unused, f"{name} reads every key?"
    values = {"factor": 2.0, "original_max_position_embeddings": L, "max_position_embeddings": 4 * L}
    values |= {"beta_fast": 16.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "truncate": False}
    values |= {"attention_factor": 1.2, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    values |= {"short_factor": [1.0] * (D // 2), "long_factor": [2.0] * (D // 2)}
    for key in unused:
        with pytest.warns(UnusedRopeKeyWarning, match=rf"'{name}' does not use '{key}'.*it reads rope_theta"):
            config = RopeConfig.from_mapping({**VALID[name], key: values[key]})
        # the unused key changes nothing
        assert torch.equal(rope_frequencies(config, D)[0], rope_frequencies(VALID[name], D)[0])


def test_unknown_keys_still_raise_naming_the_accepted_ones():
    with pytest.raises(ValueError, match="unknown RoPE config key.*'scale'.*accepted: rope_theta, rope_type"):
        RopeConfig.from_mapping({"rope_type": "linear", "scale": 2.0})
    with pytest.raises(ValueError, match="unknown rope_type 'bogus'; known: default, linear"):
        RopeConfig.from_mapping({"rope_type": "bogus"})


def test_records_name_only_config_fields_and_known_length_dependences():
    with pytest.raises(ValueError, match="'scale'.*not RopeConfig fields"):
        RopeType("x", ROPE_TYPES["linear"].frequencies, "ref", required=("scale",))
    with pytest.raises(ValueError, match="length_dependence 'sometimes'"):
        RopeType(
            "x",
            ROPE_TYPES["linear"].frequencies,
            "ref",
            length_keys=("max_position_embeddings",),
            length_dependence="sometimes",
        )
    with pytest.raises(ValueError, match="needs length_keys"):
        RopeType("x", ROPE_TYPES["linear"].frequencies, "ref", length_dependence="max")
    for record in ROPE_TYPES.values():
        assert record.keys()[: len(COMMON_KEYS)] == COMMON_KEYS
        assert record.reference


SEQ_LENS = [None, 1, 16, L - 1, L, L + 1, L + 7, 2 * L, 5 * L, 37 * L]


@pytest.mark.parametrize("name", list(ROPE_TYPES))
def test_derived_cache_keys_differ_exactly_where_the_frequencies_differ(name):
    config = RopeConfig.from_mapping(VALID[name])
    rows = []
    for seq_len in SEQ_LENS:
        key, representative = frequency_key(config, seq_len)
        inv_freq, attention_factor = rope_frequencies(config, D, seq_len)
        # the representative length gives the same frequencies as seq_len itself
        rep_freq, rep_factor = rope_frequencies(config, D, representative)
        assert torch.equal(rep_freq, inv_freq) and rep_factor == attention_factor
        rows.append((seq_len, key, inv_freq, attention_factor))
    for (s1, k1, f1, a1), (s2, k2, f2, a2) in itertools.combinations(rows, 2):
        same = torch.equal(f1, f2) and a1 == a2
        assert (k1 == k2) == same, (name, s1, s2, k1, k2)
    distinct = {key for _, key, _, _ in rows}
    expected = {"none": 1, "threshold": 2, "max": len([s for s in SEQ_LENS if s is not None and s > L]) + 1}
    assert len(distinct) == expected[ROPE_TYPES[name].length_dependence]
    rope = RoPE(config, D)  # RoPE caches by exactly this key
    assert rope._freq_key(5 * L) == frequency_key(config, 5 * L)[0]


def test_the_encoding_parameters_are_the_config_fields_plus_layout():
    params = encoding_params("rope")
    fields = dataclasses.fields(RopeConfig)
    assert list(params) == [f.name for f in fields] + ["layout"]
    assert all(params[f.name] == f.default for f in fields) and params["layout"] == "interleaved"


# --- every config the HF parity tests use is accepted (hypothesis) ----------------------------------
parity = pytest.importorskip("test_rope_parity_hf", reason="needs transformers (the HF parity tests)")


def _parity_configs() -> list[tuple[dict, int]]:
    return [(parity._ours(case), hd) for hd in parity.HEAD_DIMS for case in parity._cases(hd)]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(_parity_configs()),
    st.sets(st.sampled_from(["factor", "attention_factor", "beta_fast", "beta_slow", "mscale", "truncate"])),
    st.sampled_from([None, 16, parity.ORIG, parity.ORIG + 1, 37 * parity.ORIG]),
)
def test_validation_accepts_every_hf_parity_config(case, drop_optional, seq_len):
    config, head_dim = case
    assert _quiet(config).as_dict() == {k: v for k, v in {"rope_theta": 10000.0, **config}.items()}
    record = ROPE_TYPES[config["rope_type"]]
    # dropping keys the type only reads when set keeps it valid (longrope keeps max_position_embeddings)
    lighter = {k: v for k, v in config.items() if not (k in drop_optional and k in record.optional)}
    c = _quiet(lighter)
    inv_freq, attention_factor = rope_frequencies(c, head_dim, seq_len)
    assert inv_freq.shape == (c.rotary_dim(head_dim) // 2,) and attention_factor > 0


def test_hf_model_configs_of_the_parity_tests_read_without_warnings():
    hf = pytest.importorskip("test_hf_config", reason="needs transformers")
    for name, (make, _module, rotary_dim) in hf.CASES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnusedRopeKeyWarning)
            assert RoPE.from_hf_config(make()).rotary_dim == rotary_dim, name
