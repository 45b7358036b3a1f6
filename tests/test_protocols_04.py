"""Notebook 04's checks in ``ropelib.protocols``: sinusoid scale, training throughput, attention distance.

The runs are built in memory (``RunResult`` around a fresh ``ToyTransformer`` of each base spec), so nothing
is trained; evaluations go through a dictionary cache that records what was asked of it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ropelib import attention_stats, base_models, protocols
from ropelib.evaluate import lm_loss_at_lengths
from ropelib.model import ToyTransformer
from ropelib.runs import RunResult


class RecordingCache:
    """``ropelib.memo.cached``'s signature over a dict; ``calls`` lists every ``(name, key)`` asked for."""

    def __init__(self) -> None:
        self.store: dict = {}
        self.calls: list = []

    def __call__(self, name, key, compute):
        self.calls.append((name, dict(key)))
        k = (name, repr(sorted(key.items())))
        if k not in self.store:
            self.store[k] = compute()
        return self.store[k]


def _result(spec, seed: int = 0) -> RunResult:
    torch.manual_seed(seed)
    return RunResult(
        spec=spec, hash=spec.hash(), model=ToyTransformer(spec.model).eval(), history=[], path=Path("."), metadata={}
    )


@pytest.fixture(scope="module")
def setup():
    s = base_models.base_setup("smoke")  # d_model 32, 2 layers, 2 heads; books L = 32, passkey L = 16
    return replace(s, encodings=("nope", "sinusoidal", "learned"), tasks=s.tasks[:2], lm_eval_tokens=512)


@pytest.fixture(scope="module")
def runs(setup):
    return {k: _result(spec, i) for i, (k, spec) in enumerate(base_models.base_specs(setup, "cpu").items())}


# -- sinusoid norm and the position-vector sizes ------------------------------------------------------


@pytest.mark.parametrize("length, d_model", [(1, 2), (64, 32), (300, 64), (17, 6)])
def test_sinusoid_norm_is_sqrt_half_d_model(length, d_model):
    # every (sin, cos) pair has unit norm: sqrt(d / 2) for even d, whatever the position
    assert protocols.sinusoid_norm(length, d_model) == pytest.approx(math.sqrt(d_model / 2), rel=1e-6)


@pytest.mark.parametrize("length, d_model", [(0, 8), (8, 0), (True, 8), (8, 2.0)])
def test_sinusoid_norm_rejects_bad_sizes(length, d_model):
    with pytest.raises(ValueError, match="must be a positive integer"):
        protocols.sinusoid_norm(length, d_model)


def test_position_norms_of_the_absolute_encodings(setup, runs):
    seed = setup.seeds[0]
    norms = protocols.position_norms(runs, seed)
    assert list(norms.columns) == [
        "encoding",
        "task",
        "token_norm_trained",
        "position_norm",
        "position / token",
        "token_norm_at_init",
    ]
    # nope and the second seed left out: one row per (absolute encoding, task)
    assert sorted(zip(norms.encoding, norms.task)) == sorted(
        (e, t.name) for e in ("sinusoidal", "learned") for t in setup.tasks
    )
    for r in norms.itertuples(index=False):
        model = runs[(r.encoding, r.task, seed)].model
        L = setup.task(r.task).train_length
        if r.encoding == "sinusoidal":
            assert r.position_norm == pytest.approx(model.encoding.scale * math.sqrt(setup.d_model / 2), rel=1e-6)
        else:
            rows = model.encoding.table.weight.detach()[:L]  # (L, d): only the positions trained on
            assert r.position_norm == pytest.approx(float(rows.norm(dim=-1).median()))
        tok = float(model.tok_emb.weight.detach().norm(dim=-1).median())
        assert r.token_norm_trained == pytest.approx(tok) and r[4] == pytest.approx(r.position_norm / tok)
        assert r.token_norm_at_init == pytest.approx(setup.init_std * math.sqrt(setup.d_model))
    assert protocols.position_norms(runs, 99).empty


# -- sinusoid scale -----------------------------------------------------------------------------------


def test_sinusoid_scale_table_trains_only_the_extra_scales_and_scores_the_same_text(setup, runs, one_thread):
    lm = protocols.lm_task(setup)
    seed, L = setup.seeds[0], setup.task(lm).train_length
    trained = []

    def fake_train(spec):
        trained.append(spec)
        return _result(spec, 7)

    cache = RecordingCache()
    table = protocols.sinusoid_scale_table(runs, setup, [1.0, 3.0], eval_windows=1, cached=cache, train=fake_train)
    assert list(table.columns) == protocols.SINUSOID_SCALE_COLUMNS
    base_scale = float(setup.sinusoid_scale)
    scales = sorted({base_scale, 1.0, 3.0})
    assert len(table) == (1 + len(scales)) * 3
    # NoPE first (no scale, no position vectors), then the scales in increasing order, each at L, 4L, 8L
    assert table.encoding.iloc[:3].eq("nope").all() and table.scale.iloc[:3].isna().all()
    assert (table.position_norm.iloc[:3] == 0).all()
    assert list(table.scale.iloc[3::3]) == scales
    assert (table.length == table.multiplier * L).all() and list(table.multiplier.iloc[:3]) == [1.0, 4.0, 8.0]
    assert (table.seed == seed).all() and (table.train_length == L).all() and np.allclose(table.ppl, np.exp(table.loss))
    # the base model is not retrained; each extra scale is the base spec with only its scale changed
    base = runs[("sinusoidal", lm, seed)]
    assert set(table[table.scale == base_scale].run_hash) == {base.hash[:16]}
    assert sorted(s.model.encoding_params["scale"] for s in trained) == [1.0, 3.0]
    for s in trained:
        assert replace(s, model=replace(s.model, encoding_params=base.spec.model.encoding_params)) == base.spec
    sin = table[table.encoding == "sinusoidal"]
    assert np.allclose(sin.position_norm, sin.scale * math.sqrt(setup.d_model / 2))
    # every model on the same span = eval_windows x 8L test tokens: span / length windows at each length
    span = 8 * L
    tokens = protocols.split_tokens(base.spec.task, "test", setup.lm_eval_tokens)
    base_rows = table[table.scale == base_scale]
    for length, loss in zip(base_rows.length, base_rows.loss):
        ref = lm_loss_at_lengths(base.model, tokens, [int(length)], max_windows=span // int(length)).loss.iloc[0]
        assert loss == pytest.approx(float(ref))
    assert {name for name, _ in cache.calls} == {"04_sinusoid_scale"} and len(cache.calls) == 1 + len(scales)
    assert all(k["lengths"] == [L, 4 * L, 8 * L] and k["span"] == span and k["device"] == "cpu" for _, k in cache.calls)


def test_sinusoid_scale_table_without_nope_and_bad_input(setup, runs):
    lm, seed = protocols.lm_task(setup), setup.seeds[0]
    no_nope = {k: r for k, r in runs.items() if k[0] != "nope"}
    table = protocols.sinusoid_scale_table(
        no_nope,
        setup,
        [setup.sinusoid_scale],
        eval_windows=1,
        multipliers=(1, 2),
        cached=RecordingCache(),
        train=lambda spec: pytest.fail("nothing to train"),
    )
    assert list(table.encoding) == ["sinusoidal"] * 2 and list(table.multiplier) == [1.0, 2.0]
    no_sin = {k: r for k, r in runs.items() if k != ("sinusoidal", lm, seed)}
    with pytest.raises(ValueError, match="no base sinusoidal model"):
        protocols.sinusoid_scale_table(no_sin, setup, cached=RecordingCache())
    for bad in ((4, 1), (), (0, 2), (1, 1.5)):
        with pytest.raises(ValueError, match="multipliers"):
            protocols.sinusoid_scale_table(runs, setup, multipliers=bad, cached=RecordingCache())
    for bad in ([0.0], [math.inf], [True]):
        with pytest.raises(ValueError, match="scales"):
            protocols.sinusoid_scale_table(runs, setup, bad, cached=RecordingCache())
    with pytest.raises(ValueError, match="eval_windows"):
        protocols.sinusoid_scale_table(runs, setup, eval_windows=0, cached=RecordingCache())


# -- training throughput ------------------------------------------------------------------------------


def test_training_throughput_one_row_per_round_and_encoding(setup, one_thread):
    specs = base_models.base_specs(setup, "cpu")
    task, seed = "passkey", setup.seeds[0]
    ts = setup.task(task)
    ticks = iter(np.arange(0.0, 100.0, 0.25))  # every reading of the clock 0.25 s after the last
    before = torch.random.get_rng_state()
    bench = protocols.training_throughput(
        specs, task, seed, rounds=2, steps=3, clock=lambda: float(next(ticks)), device="cpu"
    )
    assert torch.equal(torch.random.get_rng_state(), before)  # the fresh models leave the global generator alone
    assert list(bench.columns) == protocols.THROUGHPUT_COLUMNS
    # interleaved: every encoding once per round, in the specs' order
    assert list(zip(bench["round"], bench.encoding)) == [(r, e) for r in range(2) for e in setup.encodings]
    assert (bench.task == task).all() and (bench.seq_len == ts.train_length).all()
    assert (bench.batch_size == ts.batch_size).all()
    # two clock readings around the timed steps only: 3 steps x B x T tokens in 0.25 s
    assert np.allclose(bench.tokens_per_s, 3 * ts.batch_size * ts.train_length / 0.25)
    real = protocols.training_throughput(specs, task, seed, rounds=1, steps=1, warmup_steps=0, device="cpu")
    assert len(real) == len(setup.encodings) and (real.tokens_per_s > 0).all() and np.isfinite(real.tokens_per_s).all()


def test_training_throughput_is_read_back_only_on_the_same_machine_and_settings(setup, one_thread, dict_cache):
    specs = base_models.base_specs(setup, "cpu")
    readings = []

    def clock() -> float:
        readings.append(None)
        return 0.5 * len(readings)

    def bench(**kw):
        args = dict(rounds=1, steps=1, warmup_steps=0, device="cpu", clock=clock, cached=dict_cache) | kw
        return protocols.training_throughput(specs, "passkey", setup.seeds[0], **args)

    first = bench()
    timed = len(readings)
    assert timed == 2 * len(setup.encodings)
    assert bench().equals(first) and len(readings) == timed  # read back, not timed again
    bench(steps=2)  # other settings: timed
    assert len(readings) == 2 * timed
    torch.set_num_threads(2)  # another thread count is another machine (one_thread restores it)
    bench()
    assert len(readings) == 3 * timed
    assert len(bench(cached=None)) == len(first) and len(readings) == 4 * timed  # no cache: always timed


def test_training_throughput_rejects_bad_input(setup):
    specs = base_models.base_specs(setup, "cpu")
    for kwargs, match in (
        ({"rounds": 0}, "rounds"),
        ({"steps": True}, "steps"),
        ({"warmup_steps": -1}, "warmup_steps"),
    ):
        with pytest.raises(ValueError, match=match):
            protocols.training_throughput(specs, "passkey", 0, device="cpu", **kwargs)
    with pytest.raises(ValueError, match="no model of task 'copy' with seed 0"):
        protocols.training_throughput(specs, "copy", 0, device="cpu")
    with pytest.raises(ValueError, match="with seed 5"):
        protocols.training_throughput(specs, "passkey", 5, device="cpu")


# -- attention distance -------------------------------------------------------------------------------


def test_attention_inputs_lm_windows_and_fresh_samples(setup, runs):
    books = runs[("nope", "books", 0)].spec.task
    x = protocols.attention_inputs(books, 32, 3, max_tokens=512)
    tokens = protocols.split_tokens(books, "test", 512)
    assert x.shape == (3, 32) and x.dtype == torch.long
    assert torch.equal(x, tokens[:96].view(3, 32))  # consecutive non-overlapping test windows from the start
    passkey = runs[("nope", "passkey", 0)].spec.task
    a, b = (protocols.attention_inputs(passkey, 16, 4, seed=s) for s in (3, 3))
    assert a.shape == (4, 16) and torch.equal(a, b)
    assert not torch.equal(a, protocols.attention_inputs(passkey, 16, 4, seed=4))
    with pytest.raises(ValueError, match="holds only 64"):
        protocols.attention_inputs(books, 32, 3, max_tokens=64)
    with pytest.raises(ValueError, match="n_samples"):
        protocols.attention_inputs(books, 32, 0)


def test_attention_distance_of_uniform_attention_is_a_quarter_window(setup, runs, one_thread):
    # zero query and key projections: every score 0, so each query attends uniformly to keys 0..i, whose mean
    # distance is i / 2; averaged over the queries of a window of L tokens: (L - 1) / 4
    flat = {}
    for k in (("nope", "books", 0), ("nope", "passkey", 0)):
        r = runs[k]
        model = ToyTransformer(r.spec.model).eval()
        model.load_state_dict(r.model.state_dict())
        with torch.no_grad():
            for block in model.blocks:
                block.attn.qkv.weight[: 2 * setup.d_model].zero_()
        flat[k] = replace(r, model=model)
    att = protocols.attention_distance_table(flat, setup, n_samples=2, cached=RecordingCache())
    L = att.task.map({t.name: t.train_length for t in setup.tasks})
    assert np.allclose(att.mean_distance, (L - 1) / 4)
    # the trained-shape random models are not uniform, and the table is attention_stats.attention_distance
    cache = RecordingCache()
    att = protocols.attention_distance_table(runs, setup, n_samples=2, seed=5, cached=cache)
    assert list(att.columns) == protocols.ATTENTION_DISTANCE_COLUMNS
    assert len(att) == len(runs) * setup.n_layers * setup.n_heads
    r = runs[("learned", "passkey", 1)]
    x = protocols.attention_inputs(r.spec.task, 16, 2, 5)
    ref = attention_stats.attention_distance(r.model, x)  # (layers, heads)
    got = att[(att.encoding == "learned") & (att.task == "passkey") & (att.seed == 1)]
    assert np.allclose(got.mean_distance, ref.ravel()) and not np.allclose(ref, 15 / 4)
    assert {name for name, _ in cache.calls} == {"04_attention_distance"}
    assert cache.calls[0][1] == {"run": runs[next(iter(runs))].hash, "device": "cpu", "samples": 2, "eval_seed": 5}


def test_attention_distance_table_reads_the_cache_back(setup, runs):
    def stored(name, key, compute):
        return np.full((setup.n_layers, setup.n_heads), 7.0)  # what an earlier execution stored

    att = protocols.attention_distance_table(runs, setup, n_samples=2, cached=stored)
    assert (att.mean_distance == 7.0).all() and len(att) == len(runs) * setup.n_layers * setup.n_heads
    with pytest.raises(ValueError, match="n_samples"):
        protocols.attention_distance_table(runs, setup, n_samples=0, cached=stored)


@pytest.mark.parametrize(
    "table, columns",
    [
        ("04_sinusoid_scale", protocols.SINUSOID_SCALE_COLUMNS),
        ("04_throughput", protocols.THROUGHPUT_COLUMNS),
        ("04_attention_distance", protocols.ATTENTION_DISTANCE_COLUMNS),
    ],
)
def test_columns_are_the_results_schema(table, columns):
    from ropelib import results

    assert list(results.SCHEMA[f"{table}.csv"]) == ["profile", *columns]  # write_table adds the profile
