"""Notebook 06 (context extension of RoPE): its committed result tables are complete and consistent.

Reads the committed ``results/06_*.csv`` (not the redirected test results dir) and checks, against
``ropelib.experiments`` (which base runs exist) and ``ropelib.analysis`` / ``ropelib.rope`` (what each
method's frequencies must be):

* every (seed, method, factor, length) cell is present, with no NaN, and the runs are 04's RoPE runs;
* the method definitions recorded in ``06_methods.csv`` are the published ones (PI, NTK, dynamic NTK,
  YaRN with the rescaled ramp of ``tiny_yarn_params`` and with Llama-2 defaults, Llama 3), and the
  recorded per-pair summary is what ``ropelib`` computes from the recorded keys;
* invariants any correct run satisfies: dynamic NTK at the original length is plain RoPE (HF returns
  the original frequencies for inputs no longer than L); the fine-tune curve at step 0 is the zero-shot
  result; ``ppl = exp(loss)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jupytext
import numpy as np
import pandas as pd
import pytest
import yaml

from ropelib import analysis as A
from ropelib import experiments as X
from ropelib.rope import rope_frequencies

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
NOTEBOOK = REPO / "notebooks" / "06_context_extension.py"
METHODS = ["none", "linear", "ntk", "dynamic", "yarn", "yarn_default", "llama3"]


def read(name: str) -> pd.DataFrame:
    path = RESULTS / name
    if not path.exists():
        pytest.fail(f"missing committed {path.relative_to(REPO)}: run `python run_all.py --profile default --only 06`")
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    names = ["methods", "zero_shot_ppl", "loss_by_position", "zero_shot_retrieval", "finetune"]
    return {n: read(f"06_{n}.csv") for n in names}


@pytest.fixture(scope="module")
def setup(tables):
    profiles = set().union(*(set(t["profile"]) for t in tables.values()))
    assert len(profiles) == 1, f"06 tables come from mixed profiles {profiles}"
    return X.base_setup(profiles.pop())


def factors_of(df: pd.DataFrame) -> list[float]:
    return sorted(set(df.loc[df.method != "none", "factor"]))


def expected_lengths(method: str, factor: float, train_length: int, factors: list[float]) -> set[int]:
    if method == "none":
        return {train_length} | {int(f * train_length) for f in factors}
    return {train_length, int(factor * train_length)}


def base_hash(setup, task: str, seed: int) -> str:
    return X.base_spec(setup, "rope", task, seed).hash()[:16]


# -- completeness ----------------------------------------------------------------------------------


def test_zero_shot_ppl_complete(tables, setup):
    df = tables["zero_shot_ppl"]
    L = setup.task("chars").train_length
    assert set(df.seed) == set(setup.seeds)
    assert set(df.method) == set(METHODS)
    assert (df.train_length == L).all()
    factors = factors_of(df)
    assert len(factors) >= 2 and all(f > 1 for f in factors)
    assert not df[["loss", "ppl", "n_tokens"]].isna().any().any()
    for seed in setup.seeds:
        for method in METHODS:
            for s in ([1.0] if method == "none" else factors):
                cell = df[(df.seed == seed) & (df.method == method) & (df.factor == s)]
                assert set(cell.length) == expected_lengths(method, s, L, factors), (seed, method, s)
                assert len(cell) == len(set(cell.length)), f"duplicate rows for {(seed, method, s)}"
        assert set(df.loc[df.seed == seed, "run_hash"]) == {base_hash(setup, "chars", seed)}
    np.testing.assert_allclose(df.ppl, np.exp(df.loss), rtol=1e-4)
    np.testing.assert_allclose(df.multiplier, df.length / df.train_length)
    assert (df.n_tokens > 0).all()


def test_zero_shot_retrieval_complete(tables, setup):
    df = tables["zero_shot_retrieval"]
    task = setup.tasks_of_kind("retrieval")[0]
    L = setup.task(task).train_length
    assert set(df.task) == {task} and (df.train_length == L).all()
    assert set(df.seed) == set(setup.seeds) and set(df.method) == set(METHODS)
    assert not df[["accuracy", "token_accuracy", "depth"]].isna().any().any()
    assert df.accuracy.between(0, 1).all() and df.token_accuracy.between(0, 1).all()
    assert (df.accuracy <= df.token_accuracy + 1e-12).all()  # a whole answer right implies its tokens right
    depths = set(df.depth)
    assert len(depths) >= 2
    factors = factors_of(df)
    for seed in setup.seeds:
        assert set(df.loc[df.seed == seed, "run_hash"]) == {base_hash(setup, task, seed)}
        for method in METHODS:
            for s in ([1.0] if method == "none" else factors):
                cell = df[(df.seed == seed) & (df.method == method) & (df.factor == s)]
                assert set(cell.length) == expected_lengths(method, s, L, factors), (seed, method, s)
                for length, g in cell.groupby("length"):
                    assert sorted(g.depth) == sorted(depths), (seed, method, s, length)


def test_loss_by_position_complete(tables, setup):
    df = tables["loss_by_position"]
    assert set(df.seed) == set(setup.seeds) and set(df.method) == set(METHODS)
    assert not df.loss.isna().any() and (df.loss > 0).all()
    assert len(set(df.length)) == 1
    length = int(df.length.iloc[0])
    for (seed, method), g in df.groupby(["seed", "method"]):
        g = g.sort_values("position_lo")
        assert g.position_lo.iloc[0] == 0 and g.position_hi.iloc[-1] == length
        assert (g.position_lo.to_numpy()[1:] == g.position_hi.to_numpy()[:-1]).all(), "bins must tile the window"


def test_finetune_complete(tables, setup):
    df = tables["finetune"]
    assert not df.value.isna().any()
    assert set(df.seed) == set(setup.seeds)
    assert "chars" in set(df.task)
    methods = set(df.method)
    assert {"none", "linear"} <= methods, "the fine-tune compares PI with plain RoPE"
    steps = sorted(set(df.ft_steps))
    assert steps[0] == 0 and len(steps) >= 2
    for task, t in df.groupby("task"):
        L = setup.task(task).train_length
        metrics = {"loss", "ppl"} if task == "chars" else {"accuracy"}
        assert set(t.metric) == metrics
        for seed in setup.seeds:
            for method in methods:
                for k in steps:
                    cell = t[(t.seed == seed) & (t.method == method) & (t.ft_steps == k)]
                    assert set(cell.length) == {L, int(cell.factor.iloc[0] * L)}, (task, seed, method, k)
                    assert len(cell) == 2 * len(metrics)
                    expected_hash = base_hash(setup, task, seed)
                    if k == 0:
                        assert set(cell.run_hash) == {expected_hash}
                    else:
                        assert expected_hash not in set(cell.run_hash), "a fine-tuned model is a run of its own"
    acc = df[df.metric == "accuracy"].value
    assert acc.between(0, 1).all()


# -- the methods are the published ones ------------------------------------------------------------


def test_methods_table_matches_ropelib(tables, setup):
    df = tables["methods"]
    assert set(df.method) == set(METHODS)
    for row in df.itertuples():
        keys = json.loads(row.rope_keys)
        s, L, d, b = float(row.factor), int(row.train_length), int(row.head_dim), float(row.rope_theta)
        assert L == setup.task(row.task).train_length
        assert d == setup.d_model // setup.n_heads
        expected = {
            "none": {"rope_type": "default", "rope_theta": b},
            "linear": {"rope_type": "linear", "rope_theta": b, "factor": s},
            "ntk": {"rope_type": "ntk", "rope_theta": b, "factor": s},
            "dynamic": {"rope_type": "dynamic", "rope_theta": b, "factor": s, "max_position_embeddings": L},
            "yarn": A.tiny_yarn_params(d, b, L, s),
            "yarn_default": {"rope_type": "yarn", "rope_theta": b, "factor": s, "original_max_position_embeddings": L,
                             "beta_fast": 32.0, "beta_slow": 1.0},
            "llama3": {"rope_type": "llama3", "rope_theta": b, "factor": s, "original_max_position_embeddings": L,
                       "low_freq_factor": 1.0, "high_freq_factor": 4.0},
        }[row.method]
        assert keys == expected, row.method
        # the recorded summary is what ropelib computes from those keys, at an input of s * L tokens
        n = int(s * L)
        ratio = A.pair_scale_factors(keys, d, seq_len=n)
        _, attn = rope_frequencies(keys, d, seq_len=n)
        assert row.attention_factor == pytest.approx(attn, rel=1e-5)
        assert row.min_pair_factor == pytest.approx(ratio.min(), rel=1e-5)
        assert row.max_pair_factor == pytest.approx(ratio.max(), rel=1e-5)
        assert row.pairs_unchanged == int(np.isclose(ratio, 1.0, rtol=1e-5).sum())
        # closed forms: PI divides every pair by s; YaRN's attention factor is 0.1 ln s + 1; the others have none
        if row.method == "linear":
            assert row.pairs_interpolated == d // 2 and row.max_pair_factor == pytest.approx(1 / s, rel=1e-6)
        if row.method in ("yarn", "yarn_default"):
            assert row.attention_factor == pytest.approx(0.1 * math.log(s) + 1, rel=1e-6)
        else:
            assert row.attention_factor == pytest.approx(1.0)
        if row.method == "ntk":  # the slowest pair is divided by exactly s (b' = b s^(d/(d-2)))
            assert row.min_pair_factor == pytest.approx(1 / s, rel=1e-5)


def test_rescaled_yarn_ramp_keeps_more_pairs_than_the_default(tables):
    """The reason the notebook runs two YaRN settings: at toy scale the default ramp starts at pair 0."""
    df = tables["methods"]
    for (task, s), g in df[df.method.isin(["yarn", "yarn_default"])].groupby(["task", "factor"]):
        by = g.set_index("method")
        assert by.loc["yarn", "pairs_unchanged"] > by.loc["yarn_default", "pairs_unchanged"], (task, s)


# -- invariants of a correct run -------------------------------------------------------------------


def test_dynamic_ntk_is_plain_rope_at_the_original_length(tables):
    df = tables["zero_shot_ppl"]
    L = int(df.train_length.iloc[0])
    at_L = df[df.length == L].set_index(["seed", "method", "factor"])["ppl"]
    for (seed, method, s), ppl in at_L.items():
        if method == "dynamic":
            assert ppl == pytest.approx(at_L[(seed, "none", 1.0)], rel=1e-6), (seed, s)
    # ... while the static methods do change the model at L (else the scaling was not applied at all)
    linear = df[(df.method == "linear") & (df.length == L)].set_index(["seed", "factor"])["ppl"]
    none = df[(df.method == "none") & (df.length == L)].set_index("seed")["ppl"]
    assert any(abs(v / none[seed] - 1) > 1e-4 for (seed, _), v in linear.items())


def test_finetune_step0_is_the_zero_shot_result(tables):
    ft = tables["finetune"]
    zs = tables["zero_shot_ppl"].set_index(["seed", "method", "factor", "length"])["ppl"]
    start = ft[(ft.task == "chars") & (ft.ft_steps == 0) & (ft.metric == "ppl")]
    checked = 0
    for row in start.itertuples():
        key = (row.seed, row.method, 1.0 if row.method == "none" else row.factor, row.length)
        if key in zs.index:
            assert row.value == pytest.approx(zs[key], rel=1e-6), key
            checked += 1
    assert checked > 0


def test_profiles_section_matches_the_notebook_parameters():
    """Every key profiles.yaml sets for notebook 06 is a parameter the notebook defines."""
    nb = jupytext.read(NOTEBOOK)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)  # the parameters cell is plain assignments
    profiles = yaml.safe_load((REPO / "profiles.yaml").read_text(encoding="utf-8"))
    section = profiles["notebooks"]["06_context_extension"]
    assert set(section) == set(profiles["profiles"])
    for prof, params in section.items():
        missing = sorted(set(params) - set(namespace))
        assert not missing, f"{prof}: {missing} not defined in the parameters cell"
        unknown = sorted((set(params.get("methods", [])) | set(params.get("finetune_methods", []))) - set(METHODS))
        assert not unknown, f"{prof}: unknown methods {unknown}"
