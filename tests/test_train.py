"""Tests of ropelib.train: config validation, schedule, parameter groups, determinism, exact resumption."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ropelib.encodings.learned  # noqa: F401  (registers "learned" even before the package imports it)
import ropelib.encodings.nope  # noqa: F401
from ropelib.data import batch_generator, make_task
from ropelib.model import ModelConfig, ToyTransformer
from ropelib.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    load_checkpoint,
    param_groups,
    train,
    warmup_cosine,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


@pytest.fixture(scope="module")
def task():
    return make_task("chars")


def tiny_model(task, encoding="learned", seed=0, dropout=0.0, **params):
    torch.manual_seed(seed)
    if encoding == "learned":
        params.setdefault("max_positions", 32)
    cfg = ModelConfig(
        vocab_size=task.vocab_size,
        n_layers=1,
        n_heads=2,
        d_model=16,
        dropout=dropout,
        encoding=encoding,
        encoding_params=params,
    )
    return ToyTransformer(cfg)


def tiny_config(**changes):
    base = dict(steps=6, batch_size=4, seq_len=16, warmup_steps=2, checkpoint_every=2, device="cpu", lr=1e-2)
    base.update(changes)
    return TrainConfig(**base)


# -- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["steps", "batch_size", "seq_len"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_non_positive_sizes_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    "field, value",
    [
        ("lr", 0.0),
        ("lr", float("nan")),
        ("min_lr_ratio", 1.5),
        ("weight_decay", -0.1),
        ("beta2", 1.0),
        ("device", ""),
        ("compile", "yes"),
        ("warmup_steps", -1),
    ],
)
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_config_round_trip_and_float_normalisation():
    cfg = TrainConfig(lr=1, steps=3, warmup_steps=1)
    assert isinstance(cfg.lr, float) and cfg == TrainConfig(lr=1.0, steps=3, warmup_steps=1)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})


# -- schedule -----------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(total=st.integers(2, 500), warm_frac=st.floats(0, 0.9), ratio=st.floats(0, 1))
def test_warmup_cosine_shape(total, warm_frac, ratio):
    warm = int(warm_frac * (total - 1))
    f = warmup_cosine(total, warm, ratio)
    values = [f(s) for s in range(total)]
    if warm:
        assert values[0] == pytest.approx(1 / warm)
        assert values[warm - 1] == pytest.approx(1.0)
        assert all(a < b for a, b in zip(values[: warm - 1], values[1:warm]))  # strictly rising warm-up
    assert values[warm] == pytest.approx(1.0)
    if total - warm > 1:
        assert values[-1] == pytest.approx(ratio)  # ends exactly at min_lr_ratio
    assert all(a >= b - 1e-12 for a, b in zip(values[warm:], values[warm + 1 :]))  # non-increasing decay
    assert min(values) >= min(ratio, values[0]) - 1e-12


def test_lr_in_history_follows_the_schedule(task):
    cfg = tiny_config(steps=8, warmup_steps=3, min_lr_ratio=0.25, checkpoint_every=0)
    history = train(tiny_model(task), task, cfg, progress=False)
    f = warmup_cosine(8, 3, 0.25)
    assert [h["lr"] for h in history] == pytest.approx([cfg.lr * f(s) for s in range(8)])
    assert [h["step"] for h in history] == list(range(1, 9))


# -- parameter groups ---------------------------------------------------------------------------------


def test_param_groups_decay_only_linear_weights(task):
    model = tiny_model(task, encoding="learned")  # tied embeddings, LayerNorms, a learned position table
    decay, other = param_groups(model, 0.1)
    ids_decay = {id(p) for p in decay["params"]}
    ids_other = {id(p) for p in other["params"]}
    assert decay["weight_decay"] == 0.1 and other["weight_decay"] == 0.0
    assert not ids_decay & ids_other
    assert ids_decay | ids_other == {id(p) for p in model.parameters()}  # every parameter exactly once
    assert id(model.tok_emb.weight) in ids_other  # tied with the head, an embedding: not decayed
    assert id(model.encoding.table.weight) in ids_other  # positional parameters: not decayed
    assert all(id(m.weight) in ids_other for m in model.modules() if isinstance(m, nn.LayerNorm))
    linear = [m.weight for m in model.modules() if isinstance(m, nn.Linear) and m.weight is not model.tok_emb.weight]
    assert linear and all(id(w) in ids_decay for w in linear)


# -- determinism and resumption -----------------------------------------------------------------------


def test_same_seed_gives_identical_losses_and_other_seed_does_not(task):
    cfg = tiny_config(checkpoint_every=0)
    a = train(tiny_model(task, dropout=0.1), task, cfg, progress=False)
    b = train(tiny_model(task, dropout=0.1), task, cfg, progress=False)
    c = train(tiny_model(task, dropout=0.1), task, tiny_config(checkpoint_every=0, seed=1), progress=False)
    assert [h["loss"] for h in a] == [h["loss"] for h in b]
    assert [h["loss"] for h in a] != [h["loss"] for h in c]


def test_batches_depend_only_on_seed_and_step(task):
    x1 = task.sample(2, 8, batch_generator(0, 5)).x
    assert torch.equal(x1, task.sample(2, 8, batch_generator(0, 5)).x)
    assert not torch.equal(x1, task.sample(2, 8, batch_generator(0, 6)).x)
    assert not torch.equal(x1, task.sample(2, 8, batch_generator(1, 5)).x)


def test_resumed_run_equals_uninterrupted_run(task, tmp_path):
    """Stop after 3 of 7 steps, resume into a freshly initialised model: same losses, same weights.
    Dropout is on, so the restored RNG state matters too."""
    cfg = tiny_config(steps=7, checkpoint_every=2)
    full_model = tiny_model(task, dropout=0.2)
    full = train(full_model, task, cfg, progress=False)

    first = train(tiny_model(task, dropout=0.2), task, cfg, tmp_path, progress=False, stop_at=3)
    assert len(first) == 3 and load_checkpoint(tmp_path)["step"] == 3
    torch.manual_seed(12345)  # disturb the global RNG: resumption must restore it
    resumed_model = tiny_model(task, dropout=0.2, seed=99)  # other init: the checkpoint must overwrite it
    resumed = train(resumed_model, task, cfg, tmp_path, progress=False)

    assert [h["loss"] for h in resumed] == [h["loss"] for h in full]
    for (name, p), (_, q) in zip(full_model.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.equal(p, q), name
    assert load_checkpoint(tmp_path)["step"] == 7
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))  # atomic writes leave no debris


def test_finished_checkpoint_loads_weights_without_training(task, tmp_path):
    cfg = tiny_config()
    trained = tiny_model(task)
    history = train(trained, task, cfg, tmp_path, progress=False)
    fresh = tiny_model(task, seed=5)
    again = train(fresh, task, cfg, tmp_path, progress=False)
    assert again == history
    assert all(torch.equal(p, q) for p, q in zip(trained.parameters(), fresh.parameters()))


def test_checkpoint_from_another_config_is_refused(task, tmp_path):
    train(tiny_model(task), task, tiny_config(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(tiny_model(task), task, tiny_config(lr=5e-3), tmp_path, progress=False)
    # the device is not part of a run's identity
    assert len(train(tiny_model(task), task, tiny_config(device="auto"), tmp_path, progress=False)) == 6


def test_checkpoint_holds_everything_needed(task, tmp_path):
    train(tiny_model(task), task, tiny_config(steps=4, checkpoint_every=3), tmp_path, progress=False, stop_at=3)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["step"] == 3 and len(state["history"]) == 3
    assert {"model", "optimizer", "scheduler", "rng", "train_config", "model_config"} <= set(state)
    assert state["scheduler"]["last_epoch"] == 3


# -- learning and validation --------------------------------------------------------------------------


def test_training_lowers_the_loss_and_records_validation(task):
    cfg = tiny_config(
        steps=30, batch_size=8, lr=2e-2, warmup_steps=3, eval_every=10, eval_batches=2, checkpoint_every=0
    )
    history = train(tiny_model(task, encoding="nope"), task, cfg, progress=False)
    assert [h["step"] for h in history if "val_loss" in h] == [10, 20, 30]
    assert history[-1]["val_loss"] < history[9]["val_loss"] < math.log(task.vocab_size) + 0.5
    assert sum(h["loss"] for h in history[-5:]) < sum(h["loss"] for h in history[:5])
    assert all(h["tokens_per_s"] > 0 and h["grad_norm"] > 0 for h in history)


def test_gradient_clipping_is_applied(task):
    """Adam normalises the gradient, so clipping shows only once the clipped gradient is below Adam's
    eps (1e-8): with grad_clip=1e-10 the first step moves weights by at most ~lr/100, without
    clipping by about lr."""

    def first_step_move(clip):
        model = tiny_model(task, encoding="nope")
        before = [p.detach().clone() for p in model.parameters()]
        cfg = tiny_config(steps=1, warmup_steps=0, grad_clip=clip, weight_decay=0.0, checkpoint_every=0)
        train(model, task, cfg, progress=False)
        return max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before))

    lr = tiny_config().lr
    assert first_step_move(0.0) > 0.5 * lr
    assert 0 < first_step_move(1e-10) < 0.02 * lr


# -- bad input ----------------------------------------------------------------------------------------


def test_unavailable_device_raises_runtime_error(task):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="cuda"):
        train(tiny_model(task), task, tiny_config(device="cuda"), progress=False)


def test_bad_arguments(task):
    with pytest.raises(ValueError, match="TrainConfig"):
        train(tiny_model(task), task, {"steps": 3}, progress=False)
    with pytest.raises(ValueError, match="stop_at"):
        train(tiny_model(task), task, tiny_config(), progress=False, stop_at=0)
    with pytest.raises(ValueError, match="max_positions"):  # the learned table covers 32 positions, not 64
        train(tiny_model(task), task, tiny_config(seq_len=64), progress=False)


def test_warmup_longer_than_the_run_raises_value_error():
    with pytest.raises(ValueError, match=r"warmup_steps \(5\) must be <= steps \(3\)"):
        TrainConfig(steps=3, warmup_steps=5)
    assert TrainConfig(steps=3, warmup_steps=3).warmup_steps == 3  # the whole run warming up is allowed
