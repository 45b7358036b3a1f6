"""Tests of ropelib.ablation: inside ``without_positions`` every encoding's model computes exactly what
the same weights compute with the "nope" encoding; outside, and after an exception, nothing changed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ropelib.ablation import HOOKS, describe, without_positions
from ropelib.encodings import ENCODINGS
from ropelib.model import ModelConfig, ToyTransformer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)

VOCAB = 11
ALL_ENCODINGS = sorted(ENCODINGS)


def build(name: str, seed: int = 0, **params) -> ToyTransformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=VOCAB, n_layers=1, n_heads=2, d_model=16, encoding=name, encoding_params=params)
    model = ToyTransformer(cfg).eval()
    with torch.no_grad():  # learned encodings (T5, KERPLE, FIRE, learned) away from their init, so they matter
        for p in model.encoding.parameters():
            p.add_(torch.randn_like(p))
    return model


def nope_twin(model: ToyTransformer) -> ToyTransformer:
    """The same weights with the "nope" encoding (the encoding's own parameters dropped)."""
    twin = ToyTransformer(replace(model.config, encoding="nope", encoding_params={})).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("encoding.")}
    twin.load_state_dict(state, strict=True)
    return twin


def logits(model, x):
    with torch.no_grad():
        return model(x)


def hook_attributes(model) -> dict:
    return {k: v for k, v in model.encoding.__dict__.items() if k in HOOKS}


def test_registry_has_ten_encodings():
    assert len(ENCODINGS) == 10 and "nope" in ENCODINGS and "randomized" in ENCODINGS


@pytest.mark.parametrize("name", ALL_ENCODINGS)
def test_inside_equals_nope_and_outside_is_unchanged(name):
    model = build(name)
    x = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(1))  # (B, T)
    before = logits(model, x)
    attributes = hook_attributes(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    reference = logits(nope_twin(model), x)
    if name != "nope":  # the encoding matters, so the check below is not vacuous
        assert not torch.allclose(before, reference, atol=1e-6)
    with without_positions(model) as inside:
        assert inside is model
        assert torch.equal(logits(model, x), reference)
        assert model.state_dict().keys() == state.keys()  # the encoding's parameters stay in the model
    assert torch.equal(logits(model, x), before)
    assert hook_attributes(model) == attributes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["learned", "alibi", "randomized"])
def test_restored_after_an_exception_and_when_nested(name):
    model = build(name)
    x = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(2))
    before, attributes = logits(model, x), hook_attributes(model)
    reference = logits(nope_twin(model), x)
    with pytest.raises(RuntimeError, match="boom"):
        with without_positions(model):
            raise RuntimeError("boom")
    assert torch.equal(logits(model, x), before) and hook_attributes(model) == attributes
    with without_positions(model):
        with without_positions(model):
            assert torch.equal(logits(model, x), reference)
        assert torch.equal(logits(model, x), reference)  # the outer context still holds
    assert torch.equal(logits(model, x), before) and hook_attributes(model) == attributes


def test_randomized_in_training_mode_equals_nope_and_draws_nothing():
    model = build("randomized", max_position=64).train()
    twin = nope_twin(model).train()
    x = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    with without_positions(model):
        torch.manual_seed(5)
        inside = logits(model, x)
        after_inside = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(inside, logits(twin, x))
    assert torch.equal(after_inside, torch.rand(1))  # no random positions were drawn


def test_learned_table_no_longer_limits_the_length():
    model = build("learned", max_positions=16)
    x = torch.randint(0, VOCAB, (1, 24))
    with pytest.raises(ValueError, match="max_positions=16"):
        model(x)
    with without_positions(model):
        assert model.encoding.max_positions is None
        assert torch.equal(logits(model, x), logits(nope_twin(model), x))
    assert model.encoding.max_positions == 16
    with pytest.raises(ValueError, match="max_positions=16"):
        model(x)


def test_describe():
    generic = describe()
    assert set(generic) == {"embed", "rotate", "bias", "positions", "max_positions"}
    assert "returns x unchanged" in generic["embed"] and "returns None" in generic["bias"]
    rope = describe(build("rope"))
    assert rope["rotate"].startswith("removed") and rope["embed"].startswith("unused by 'rope'")
    alibi = describe(build("alibi"))
    assert alibi["bias"].startswith("removed") and alibi["rotate"].startswith("unused")
    learned = describe(build("learned"))
    assert learned["embed"].startswith("removed") and learned["max_positions"].startswith("removed")
    randomized = describe(build("randomized"))  # wraps rope: rotate and the random training positions
    assert randomized["rotate"].startswith("removed") and randomized["positions"].startswith("removed")
    assert all(v.startswith("unused by 'nope'") for v in describe(build("nope")).values())


def test_needs_a_model_with_an_encoding():
    with pytest.raises(ValueError, match="PositionalEncoding"):
        with without_positions(torch.nn.Linear(2, 2)):
            pass
    with pytest.raises(ValueError, match="PositionalEncoding"):
        describe(torch.nn.Linear(2, 2))
