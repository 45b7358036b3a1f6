"""The experiment protocols (``ropelib.protocols``, ``ropelib.extrapolation``) on tiny untrained models.

The runs here are built in memory (``RunResult`` around a fresh ``ToyTransformer`` of each spec), so the
tests check the bookkeeping — which models are gated, summarised, excluded, ablated — without training.
Evaluations go through a dictionary cache (``cached`` argument), never the on-disk one.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ropelib import base_models, extrapolation, protocols
from ropelib.gates import GateThresholds
from ropelib.model import ToyTransformer
from ropelib.runs import RunResult


def _memo():
    store: dict = {}

    def cached(name, key, compute):
        k = (name, repr(sorted(key.items())))
        if k not in store:
            store[k] = compute()
        return store[k]

    cached.store = store  # type: ignore[attr-defined]
    return cached


@pytest.fixture(scope="module")
def setup():
    s = base_models.base_setup("smoke")
    # two encodings, LM and retrieval, lenient thresholds except where a test says otherwise
    return replace(s, encodings=("nope", "rope"), tasks=s.tasks[:2], lm_eval_tokens=512, gate_samples=8)


@pytest.fixture(scope="module")
def runs(setup):
    out = {}
    for i, (key, spec) in enumerate(base_models.base_specs(setup, "cpu").items()):
        torch.manual_seed(i)
        model = ToyTransformer(spec.model).eval()
        out[key] = RunResult(spec=spec, hash=spec.hash(), model=model, history=[], path=Path("."), metadata={})
    return out


def test_gate_models_one_row_per_model_with_reason(setup, runs):
    gates = protocols.gate_models(runs, setup, cached=_memo())
    assert len(gates) == len(runs) and set(gates.kind) == {"lm", "retrieval"}
    assert {"passed", "reason", "context_gain", "context_gain_per_seed", "ngram_ppl_3"} <= set(gates.columns)
    lm = gates[gates.kind == "lm"]
    # the context gate judges the seed mean of each encoding
    for enc, g in lm.groupby("encoding"):
        assert g.context_gain.nunique() == 1
        assert g.context_gain.iloc[0] == pytest.approx(g.context_gain_per_seed.mean())
    # untrained models are far above the 1-gram baseline: every LM gate fails, with the reason in words
    assert not lm.passed.any() and lm.reason.str.contains("ppl_below_1gram failed").all()
    assert protocols.passed_keys(gates) <= set(runs)


def test_strict_and_loose_retrieval_gates(setup, runs):
    loose = replace(
        setup,
        gates=GateThresholds(
            context_gain_nats=-10.0, lm_baseline_order=1, rope_baseline_order=1, retrieval_margin=-1.0
        ),
    )
    gates = protocols.gate_models(runs, loose, cached=_memo())
    ret = gates[gates.kind == "retrieval"]
    assert ret.passed.all()  # margin -1: any Wilson bound passes
    strict = protocols.gate_models(runs, setup, cached=_memo())
    ret = strict[strict.kind == "retrieval"]
    assert (ret.floor == 0.5).all() and (ret.n == setup.gate_samples).all()
    assert (ret.passed == (ret.gate_wilson_low_above_floor_value > ret.floor + setup.gates.retrieval_margin)).all()


def test_lm_grid_and_summary_use_passing_models_only(setup, runs):
    cached = _memo()
    passed = {("rope", "books", setup.seeds[0])}
    lm = extrapolation.lm_length_grid(runs, setup, passed, [1.0, 2.0], sliding_tokens=128, cached=cached)
    assert list(lm.columns) == extrapolation.LM_COLUMNS
    assert len(lm) == 2 * len(setup.seeds) * 2 * 2  # encodings x seeds x lengths x modes
    assert lm.passed_gate.sum() == 4 and set(lm[lm.passed_gate].encoding) == {"rope"}
    s = extrapolation.summarise_lm(lm)
    nope = s[s.encoding == "nope"]
    assert (nope.n_seeds == 0).all() and nope.ppl_mean.isna().all() and (nope.n_failed == len(setup.seeds)).all()
    rope = s[s.encoding == "rope"]
    assert (rope.n_seeds == 1).all() and (rope.n_failed == len(setup.seeds) - 1).all()
    one = lm[lm.passed_gate].set_index(["length", "mode"]).ppl
    assert np.allclose(rope.set_index(["length", "mode"]).ppl_mean.loc[one.index], one)
    # sliding windows: stride L'/4 and about sliding_tokens scored targets
    sl = lm[lm["mode"] == "sliding"]
    assert (sl.stride == (sl.length // 4).clip(lower=1)).all() and (sl.n_tokens >= 128).all()


def test_positions_removed_changes_nothing_for_nope(setup, runs):
    cached = _memo()
    gates = protocols.gate_models(runs, setup, cached=cached)
    abl = extrapolation.positions_removed(runs, setup, gates, cached=cached)
    assert len(abl) == len(runs) and set(abl.metric) == {"ppl", "accuracy"}
    nope = abl[abl.encoding == "nope"]
    assert np.allclose(nope.as_trained, nope.without_positions)  # nothing to remove
    rope_lm = abl[(abl.encoding == "rope") & (abl.metric == "ppl")]
    assert (rope_lm.as_trained != rope_lm.without_positions).all()  # the rotation changes the logits


def test_retrieval_grid_and_accuracy_summary(setup, runs):
    cached = _memo()
    passed = {("rope", "passkey", s) for s in setup.seeds}
    ret = extrapolation.retrieval_grid(runs, setup, passed, [1.0, 2.0], [0.0, 1.0], n_samples=4, seed=3, cached=cached)
    assert list(ret.columns) == extrapolation.RETRIEVAL_COLUMNS
    assert (ret.floor == 0.5).all() and (ret.accuracy == ret.n_correct / ret.n_samples).all()
    per_seed, summary = extrapolation.accuracy_summary([ret], {"passkey": 0.5}, seed=0)
    assert (per_seed.n_samples == 8).all()  # pooled over the two depths
    rope = summary[summary.encoding == "rope"]
    assert (rope.n_seeds == len(setup.seeds)).all() and (rope.n_failed == 0).all()
    assert ((rope.ci_low >= 0) & (rope.ci_high <= 1) & (rope.ci_low <= rope["mean"])).all()
    nope = summary[summary.encoding == "nope"]
    assert nope["mean"].isna().all() and (nope.n_failed == len(setup.seeds)).all()


def test_tune_learning_rates_picks_the_lowest_validation_loss(setup, monkeypatch):
    fake_loss = {0.005: 2.0, 0.01: 1.5}

    def fake_run_specs(specs, jobs=1):
        return {
            k: RunResult(spec=s, hash=s.hash(), model=None, history=[], path=Path("."), metadata={})  # type: ignore[arg-type]
            for k, s in specs.items()
        }

    monkeypatch.setattr(protocols, "run_specs", fake_run_specs)
    monkeypatch.setattr(
        protocols, "validation_loss", lambda r, **kw: fake_loss[r.spec.train.lr] + (r.spec.model.encoding == "nope")
    )
    lrs, table = protocols.tune_learning_rates(setup)
    assert lrs == {("nope", "books"): 0.01, ("rope", "books"): 0.01}
    assert len(table) == 4 and table.chosen.sum() == 2 and set(table.steps) == {setup.task("books").sweep_steps}
    specs = base_models.base_specs(setup, lrs=lrs)
    assert all(s.train.lr == 0.01 for (e, t, _), s in specs.items() if t == "books")
    # the winner at the full budget is the base model of the sweep seed: same spec, same hash
    full = replace(setup, tasks=(replace(setup.tasks[0], sweep_steps=0), setup.tasks[1]))
    sweep = protocols.sweep_specs(full)
    base = base_models.base_specs(full, lrs=lrs)
    assert sweep[("rope", "books", 0.01)].hash() == base[("rope", "books", protocols.SWEEP_SEED)].hash()


def test_split_tokens_caps_and_rejects_non_lm_tasks(setup, runs):
    config = runs[("rope", "books", setup.seeds[0])].spec.task
    assert protocols.split_tokens(config, "test", 100).shape == (100,)
    with pytest.raises(ValueError, match="max_tokens"):
        protocols.split_tokens(config, "test", 1)
    with pytest.raises(ValueError, match="not a language-modelling task"):
        protocols.split_tokens(runs[("rope", "passkey", setup.seeds[0])].spec.task, "test")
    assert math.isfinite(
        float(protocols.ngram_reference(config, "test", max_tokens=512, cached=_memo()).perplexity.iloc[2])
    )
    small = protocols.ngram_reference(config, "test", orders=(1, 2), max_tokens=512, train_tokens=1000, cached=_memo())
    assert (small.n_train_tokens == 1000).all() and (small.n_eval_tokens == 512).all()
    with pytest.raises(ValueError, match="max_tokens"):  # the training prefix is capped by split_tokens
        protocols.ngram_reference(config, "test", train_tokens=0, cached=_memo())
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="ngram_train_tokens"):
            replace(setup, ngram_train_tokens=bad)
