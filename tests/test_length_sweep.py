"""The training-length sweep (``ropelib.length_sweep``): setups at other lengths on the same tokens,
gating per length, and the collapse table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ropelib import base_models
from ropelib import length_sweep as LS
from ropelib.model import ToyTransformer
from ropelib.runs import RunResult


def test_length_setup_keeps_tokens_per_step():
    setup = base_models.base_setup("default")
    ts = setup.task("books")
    for L in (32, 64, 128, 256):
        t = LS.length_setup(setup, L).task("books")
        assert t.train_length == L and t.batch_size * L == ts.batch_size * ts.train_length and t.steps == ts.steps
    assert LS.length_setup(setup, 64) == setup  # the profile's own length changes nothing
    assert LS.length_setup(setup, 32).task("passkey") == setup.task("passkey")
    with pytest.raises(ValueError, match="does not divide"):
        LS.length_setup(setup, 48)
    with pytest.raises(ValueError, match="train_length"):
        LS.length_setup(setup, 1)


def test_length_specs_at_the_profile_length_are_the_base_models():
    setup = base_models.base_setup("default")
    lrs = {("rope", "books"): 1e-2, ("nope", "books"): 5e-3}
    specs = LS.length_specs(setup, ["rope", "nope"], [32, 64], seeds=[0], lrs=lrs, device="cpu")
    assert set(specs) == {(e, L, 0) for e in ("rope", "nope") for L in (32, 64)}
    assert specs[("rope", 64, 0)].hash() == base_models.base_spec(setup, "rope", "books", 0, "cpu", lr=1e-2).hash()
    s32 = specs[("nope", 32, 0)]
    assert (s32.train.seq_len, s32.train.batch_size, s32.train.lr) == (32, 32, 5e-3)
    # length-dependent encoding settings follow the length (learned: a table of exactly L rows)
    learned = LS.length_specs(setup, ["learned"], [128], seeds=[0])[("learned", 128, 0)]
    assert learned.model.encoding_params["max_positions"] == 128


def _grid(rows):
    base = {
        "task": "books",
        "run_hash": "h",
        "mode": "nonoverlap",
        "stride": np.nan,
        "loss": 0.0,
        "n_tokens": 1,
        "n_windows": 1,
        "min_context": 0,
        "reason": "",
    }
    return pd.DataFrame(
        [
            {
                **base,
                "encoding": e,
                "train_length": L,
                "seed": s,
                "multiplier": m,
                "length": int(m * L),
                "ppl": p,
                "passed_gate": ok,
                "status": "ok",
            }
            for e, L, s, m, p, ok in rows
        ]
    )


def test_collapse_table():
    rows = []
    for L in (32, 64):  # rope: the same ratios at both lengths (collapse); nope: not
        for s in (0, 1):
            rows += [("rope", L, s, 1.0, 5.0, True), ("rope", L, s, 2.0, 10.0, True)]
        rows += [("nope", L, 0, 1.0, 6.0, True), ("nope", L, 0, 2.0, 6.0 * (1.5 if L == 32 else 3.0), True)]
    rows += [("nope", 128, 0, 1.0, 6.0, False), ("nope", 128, 0, 2.0, 600.0, False)]  # failed: left out
    c = LS.collapse_table(_grid(rows))
    assert list(c.columns) == LS.COLLAPSE_COLUMNS
    r2 = c[(c.encoding == "rope") & (c.multiplier == 2.0)]
    assert np.allclose(r2.ratio, 2.0) and (r2.spread == 1.0).all() and (r2.n_seeds == 2).all()
    n2 = c[(c.encoding == "nope") & (c.multiplier == 2.0)]
    assert set(n2.train_length) == {32, 64} and n2.spread.iloc[0] == pytest.approx(2.0)
    assert (n2.n_lengths == 2).all()
    one = LS.collapse_table(_grid([("rope", 32, 0, 1.0, 5.0, True), ("rope", 32, 0, 2.0, 6.0, True)]))
    assert math.isnan(one.spread.iloc[0])
    assert LS.collapse_table(_grid([("rope", 32, 0, 2.0, 6.0, False)])).empty


def test_gate_and_grid_on_untrained_models(dict_cache):
    setup = base_models.base_setup("smoke")
    specs = LS.length_specs(setup, ["rope"], [16, 32], seeds=[0], device="cpu")
    runs = {}
    for i, (k, spec) in enumerate(specs.items()):
        torch.manual_seed(i)
        runs[k] = RunResult(
            spec=spec,
            hash=spec.hash(),
            model=ToyTransformer(spec.model).eval(),
            history=[],
            path=Path("."),
            metadata={},
        )
    cached = dict_cache
    gates = LS.gate_lengths(runs, setup, cached=cached)
    assert set(gates.train_length) == {16, 32} and len(gates) == 2
    grid = LS.length_grid(runs, setup, set(runs), [1.0, 2.0], cached=cached)
    assert set(zip(grid.train_length, grid.length)) == {(16, 16), (16, 32), (32, 32), (32, 64)}
    assert grid.passed_gate.all() and set(grid["mode"]) == {"nonoverlap"}


def test_gate_lengths_uses_the_profiles_early_window(monkeypatch):
    seen = []

    def fake_gate_models(runs, setup, *, cached, early_positions):
        seen.append((setup.task("books").train_length, early_positions))
        return pd.DataFrame({"encoding": [k[0] for k in runs], "task": "books", "seed": [k[2] for k in runs]})

    monkeypatch.setattr(LS, "gate_models", fake_gate_models)
    setup = base_models.base_setup("default")
    runs = {("rope", L, 0): None for L in (32, 64, 256)}
    out = LS.gate_lengths(runs, setup, cached=None)
    assert seen == [(32, 8), (64, 8), (256, 8)] and list(out.train_length) == [32, 64, 256]
