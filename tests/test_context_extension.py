"""Notebook 06 (context extension of RoPE): its committed result tables are complete and consistent.

Reads the committed ``results/06_*.csv`` (not the redirected test results dir; set
``ROPELIB_CHECK_RESULTS_DIR`` to check the tables of another run, e.g. a smoke run written to a
sandbox) and checks, against ``ropelib.base_models`` / ``ropelib.protocols`` (which base runs exist,
which task is the language model) and ``ropelib.analysis`` / ``ropelib.rope`` (what each method's
frequencies must be):

* the tables belong to the current setup: the LM rows are the setup's LM task
  (``ropelib.protocols.lm_task``), the retrieval rows its retrieval task;
* every (seed, method, factor, length) cell is present, with no NaN, and the runs are 04's RoPE runs
  (a base spec of the setup at one of the task's learning rates, the same rate for every seed: the
  rate 04's sweep chose, which the test suite cannot re-run);
* every per-seed table says whether the base model passed its gate (``passed_gate``, a bool), one value
  per (task, seed) and the same value in every table;
* the retrieval counts behind the accuracy intervals agree with the accuracies (``n_correct / n_samples``);
* the method definitions recorded in ``06_methods.csv`` are those of ``ropelib.context_extension.METHODS``
  (PI, NTK, dynamic NTK under three protocols, YaRN with the paper's ramp and with the rescaled one,
  Llama 3, LongRoPE with the ramp its search chose, p-RoPE), and the recorded per-pair summary is what
  ``ropelib`` computes from the recorded keys;
* the searches behind the settings are consistent: LongRoPE's ramp is the lowest mean validation loss
  (``06_longrope_search.csv``), each fine-tune's learning-rate ratio the lowest validation loss of its
  sweep (``06_finetune_lr.csv``), and YaRN's temperature sweep at the paper's coefficient is the
  zero-shot ``yarn`` result;
* invariants any correct run satisfies: dynamic NTK at the original length is plain RoPE (HF returns
  the original frequencies for inputs no longer than L); the fine-tune curve at step 0 is the zero-shot
  result; ``ppl = exp(loss)``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jupytext
import numpy as np
import pandas as pd
import pytest
import yaml

from ropelib import analysis as A
from ropelib import base_models
from ropelib import context_extension as CE
from ropelib import protocols as P
from ropelib.rope_scaling import rope_frequencies

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("ROPELIB_CHECK_RESULTS_DIR") or REPO / "results")
PER_SEED = ["zero_shot_ppl", "loss_by_position", "zero_shot_retrieval", "finetune"]
NOTEBOOK = REPO / "notebooks" / "06_context_extension.py"


def notebook_parameters() -> dict:
    """The parameters cell of notebook 06, executed (plain assignments)."""
    nb = jupytext.read(NOTEBOOK)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)
    return namespace


PROFILE_06 = yaml.safe_load((REPO / "profiles.yaml").read_text(encoding="utf-8"))["notebooks"]["06_context_extension"]


def read(name: str) -> pd.DataFrame:
    path = RESULTS / name
    if not path.exists():
        pytest.fail(f"missing {path}: run `python run_all.py --profile default --only 06`")
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    names = [
        "methods",
        "zero_shot_ppl",
        "loss_by_position",
        "zero_shot_retrieval",
        "finetune",
        "finetune_lr",
        "longrope_search",
        "yarn_temperature",
    ]
    return {n: read(f"06_{n}.csv") for n in names}


@pytest.fixture(scope="module")
def setup(tables):
    profiles = set().union(*(set(t["profile"]) for t in tables.values()))
    assert len(profiles) == 1, f"06 tables come from mixed profiles {profiles}"
    setup = base_models.base_setup(profiles.pop())
    expected = {P.lm_task(setup), setup.tasks_of_kind("retrieval")[0]}
    found = set().union(*(set(t["task"]) for t in tables.values()))
    if not found <= expected:
        pytest.fail(
            f"{RESULTS}/06_*.csv hold tasks {sorted(found)}, not the current setup's {sorted(expected)}: they "
            "predate it; rerun `python run_all.py --profile default --only 04 05 06`"
        )
    missing = [n for n in PER_SEED if "passed_gate" not in tables[n].columns]
    if missing:
        pytest.fail(f"06_{missing[0]}.csv has no passed_gate column: it predates the gates; rerun notebook 06")
    return setup


@pytest.fixture(scope="module")
def params(tables) -> dict:
    """The notebook's parameters under the profile the tables come from (the profile's values over the defaults)."""
    (profile,) = set(tables["methods"]["profile"])
    return {**notebook_parameters(), **PROFILE_06.get(profile, {})}


@pytest.fixture(scope="module")
def lm(setup) -> str:
    return P.lm_task(setup)


def factors_of(df: pd.DataFrame) -> list[float]:
    return sorted(set(df.loc[df.method != "none", "factor"]))


def expected_lengths(method: str, factor: float, train_length: int, factors: list[float]) -> set[int]:
    if method == "none":
        return {train_length} | {int(f * train_length) for f in factors}
    return {train_length, int(factor * train_length)}


def candidate_hashes(setup, task: str, seed: int) -> dict[str, float]:
    """Run hash (16 hex digits) -> learning rate of the RoPE base spec of (task, seed) at each rate it can
    have been trained with: the task's sweep grid (``TaskSetup.lrs``; the chosen one is 04's) or, without
    a grid, the setup's ``lr``."""
    rates = setup.task(task).lrs or (setup.lr,)
    return {base_models.base_spec(setup, "rope", task, seed, lr=lr).hash()[:16]: lr for lr in rates}


def check_base_runs(setup, task: str, hashes_by_seed: dict[int, set[str]]) -> None:
    """Each seed's rows come from one base run of 04, and every seed's at the same learning rate."""
    rates = set()
    for seed, hashes in hashes_by_seed.items():
        cand = candidate_hashes(setup, task, seed)
        assert len(hashes) == 1 and hashes <= set(cand), (
            f"{task} seed {seed}: run hashes {sorted(hashes)} are not a RoPE base run of this setup {sorted(cand)}"
        )
        rates.add(cand[next(iter(hashes))])
    assert len(rates) == 1, f"{task}: seeds trained at different learning rates {sorted(rates)}"


# -- completeness ----------------------------------------------------------------------------------


def test_zero_shot_ppl_complete(tables, setup, lm, params):
    df = tables["zero_shot_ppl"]
    L = setup.task(lm).train_length
    assert set(df.task) == {lm}
    assert set(df.seed) == set(setup.seeds)
    assert set(df.method) == set(params["methods"])
    assert (df.train_length == L).all()
    factors = factors_of(df)
    assert len(factors) >= 2 and all(f > 1 for f in factors)
    assert not df[["loss", "ppl", "n_tokens"]].isna().any().any()
    for seed in setup.seeds:
        for method in params["methods"]:
            for s in [1.0] if method == "none" else factors:
                cell = df[(df.seed == seed) & (df.method == method) & (df.factor == s)]
                assert set(cell.length) == expected_lengths(method, s, L, factors), (seed, method, s)
                assert len(cell) == len(set(cell.length)), f"duplicate rows for {(seed, method, s)}"
    check_base_runs(setup, lm, {seed: set(df.loc[df.seed == seed, "run_hash"]) for seed in setup.seeds})
    np.testing.assert_allclose(df.ppl, np.exp(df.loss), rtol=1e-4)
    np.testing.assert_allclose(df.multiplier, df.length / df.train_length)
    assert (df.n_tokens > 0).all()


def test_zero_shot_retrieval_complete(tables, setup, params):
    df = tables["zero_shot_retrieval"]
    task = setup.tasks_of_kind("retrieval")[0]
    L = setup.task(task).train_length
    assert set(df.task) == {task} and (df.train_length == L).all()
    assert set(df.seed) == set(setup.seeds) and set(df.method) == set(params["methods"])
    assert not df[["accuracy", "token_accuracy", "depth"]].isna().any().any()
    assert df.accuracy.between(0, 1).all() and df.token_accuracy.between(0, 1).all()
    assert (df.accuracy <= df.token_accuracy + 1e-12).all()  # a whole answer right implies its tokens right
    depths = set(df.depth)
    assert len(depths) >= 2
    factors = factors_of(df)
    check_base_runs(setup, task, {seed: set(df.loc[df.seed == seed, "run_hash"]) for seed in setup.seeds})
    # the counts behind the accuracy intervals (ropelib.stats.accuracy_ci) agree with the accuracies
    assert (df.n_correct >= 0).all() and (df.n_correct <= df.n_samples).all()
    np.testing.assert_allclose(df.accuracy, df.n_correct / df.n_samples)
    for seed in setup.seeds:
        for method in params["methods"]:
            for s in [1.0] if method == "none" else factors:
                cell = df[(df.seed == seed) & (df.method == method) & (df.factor == s)]
                assert set(cell.length) == expected_lengths(method, s, L, factors), (seed, method, s)
                for length, g in cell.groupby("length"):
                    assert sorted(g.depth) == sorted(depths), (seed, method, s, length)


def test_loss_by_position_complete(tables, setup, lm, params):
    df = tables["loss_by_position"]
    assert set(df.task) == {lm} and (df.train_length == setup.task(lm).train_length).all()
    assert set(df.seed) == set(setup.seeds) and set(df.method) == set(params["methods"])
    assert not df.loss.isna().any() and (df.loss > 0).all()
    assert len(set(df.length)) == 1
    length = int(df.length.iloc[0])
    for (seed, method), g in df.groupby(["seed", "method"]):
        g = g.sort_values("position_lo")
        assert g.position_lo.iloc[0] == 0 and g.position_hi.iloc[-1] == length
        assert (g.position_lo.to_numpy()[1:] == g.position_hi.to_numpy()[:-1]).all(), "bins must tile the window"


def test_finetune_complete(tables, setup, lm, params):
    df = tables["finetune"]
    assert not df.value.isna().any()
    assert set(df.seed) == set(setup.seeds)
    assert lm in set(df.task)
    methods = set(df.method)
    assert {"none", "linear"} <= methods, "the fine-tune compares PI with plain RoPE"
    budgets = sorted(set(params["finetune_fractions"]))
    for task, t in df.groupby("task"):
        L = setup.task(task).train_length
        metrics = {"loss", "ppl"} if task == lm else {"accuracy"}
        assert set(t.metric) == metrics
        steps = sorted(set(t.ft_steps))
        assert steps[0] == 0 and len(steps) >= 2
        assert set(t.ft_budget) - {0.0} <= set(budgets), task
        for seed in setup.seeds:
            base = base_models.base_spec(setup, "rope", task, seed)
            pre = CE.pretraining_tokens(base)
            for method in methods:
                cells = t[(t.seed == seed) & (t.method == method)]
                assert sorted(set(cells.ft_steps)) == steps, (task, seed, method)
                for k, cell in cells.groupby("ft_steps"):
                    assert set(cell.length) == {L, int(cell.factor.iloc[0] * L)}, (task, seed, method, k)
                    assert len(cell) == 2 * len(metrics)
                    bases = set(candidate_hashes(setup, task, seed))
                    if k == 0:
                        assert len(set(cell.run_hash)) == 1 and set(cell.run_hash) <= bases, (task, seed, method)
                        assert (cell.ft_tokens == 0).all() and (cell.ft_budget == 0).all()
                    else:
                        assert not set(cell.run_hash) & bases, "a fine-tuned model is a run of its own"
                        budget = float(cell.ft_budget.iloc[0])
                        seq = int(cell.ft_length.iloc[0])
                        assert k == CE.finetune_steps_for(budget, pre, int(cell.ft_tokens.iloc[0]) // (k * seq), seq)
                        np.testing.assert_allclose(cell.ft_fraction, cell.ft_tokens / pre)
    acc = df[df.metric == "accuracy"].value
    assert acc.between(0, 1).all()


def test_finetune_learning_rates_are_the_held_out_choice(tables, lm, params):
    lr = tables["finetune_lr"]
    assert set(lr.task) == set(tables["finetune"].task)
    assert set(lr.method) == set(tables["finetune"].method)
    ratios = sorted(set(params["finetune_lr_ratios"]))
    for task, t in lr.groupby("task"):
        assert t.seed.nunique() == 1, task
        assert set(t.metric) == ({"loss"} if task == lm else {"accuracy"}), task
    for (task, method, budget), g in lr.groupby(["task", "method", "ft_budget"]):
        assert sorted(g.lr_ratio) == ratios, (task, method, budget)
        assert g.chosen.sum() == 1, (task, method, budget)
        best = g.value.min() if task == lm else g.value.max()
        chosen = g[g.chosen].iloc[0]
        assert chosen.value == best and chosen.lr_ratio == g[g.value == best].lr_ratio.min(), (task, method, budget)


def test_longrope_ramp_is_the_lowest_mean_validation_loss(tables, setup, lm):
    search = tables["longrope_search"]
    n_pairs = (setup.d_model // setup.n_heads) // 2
    for (seed, factor), g in search.groupby(["seed", "factor"]):
        assert sorted(zip(g.lo, g.hi)) == sorted(CE.longrope_candidates(n_pairs)), (seed, factor)
    pool = search[search.passed_gate] if search.passed_gate.any() else search
    for factor, g in pool.groupby("factor"):
        mean = g.groupby(["lo", "hi"])["loss"].mean()
        chosen = search[(search.factor == factor) & search.chosen][["lo", "hi"]].drop_duplicates()
        assert len(chosen) == 1 and tuple(chosen.iloc[0]) == mean.idxmin(), factor
    methods = tables["methods"]
    for row in methods[(methods.method == "longrope") & (methods.task == lm)].itertuples():
        chosen = search[(search.factor == row.factor) & search.chosen].iloc[0]
        keys = json.loads(row.rope_keys)
        assert keys["long_factor"] == pytest.approx(CE.longrope_factors(n_pairs, row.factor, chosen.lo, chosen.hi))


def test_yarn_temperature_sweep_at_the_papers_coefficient_is_zero_shot_yarn(tables, lm):
    temp = tables["yarn_temperature"]
    np.testing.assert_allclose(temp.attention_factor, 1 + temp.coefficient * np.log(temp.factor), rtol=1e-9)
    zs = tables["zero_shot_ppl"]
    yarn = zs[zs.method == "yarn"].set_index(["seed", "factor", "length"])["ppl"]
    paper = temp[np.isclose(temp.coefficient, 0.1)]
    assert len(paper), "the sweep must include the paper's coefficient 0.1"
    for r in paper.itertuples():
        assert r.ppl == pytest.approx(yarn[(r.seed, r.factor, r.length)], rel=1e-6)


def test_passed_gate_is_one_verdict_per_base_model(tables, setup, lm):
    """Every per-seed row says whether its base model passed its gate (a fine-tuned model carries its base's):
    a bool, constant over the rows of one (task, seed), and the same in every table that has that model."""
    verdicts: dict[tuple[str, int], set[bool]] = {}
    for name in PER_SEED:
        df = tables[name]
        assert df.passed_gate.dtype == bool, (
            f"06_{name}.csv: passed_gate must be True/False, got {df.passed_gate.dtype}"
        )
        for (task, seed), g in df.groupby(["task", "seed"]):
            assert g.passed_gate.nunique() == 1, f"06_{name}.csv: {task} seed {seed} has mixed passed_gate"
            verdicts.setdefault((task, int(seed)), set()).add(bool(g.passed_gate.iloc[0]))
    retrieval = setup.tasks_of_kind("retrieval")[0]
    assert set(verdicts) == {(t, s) for t in (lm, retrieval) for s in setup.seeds}
    inconsistent = {k: v for k, v in verdicts.items() if len(v) > 1}
    assert not inconsistent, f"tables disagree on the gate of {sorted(inconsistent)}"


# -- the methods are the published ones ------------------------------------------------------------


def test_methods_table_matches_ropelib(tables, setup, params):
    df = tables["methods"]
    assert set(df.method) == set(params["methods"])
    search = tables["longrope_search"]
    for row in df.itertuples():
        keys = json.loads(row.rope_keys)
        s, L, d, b = float(row.factor), int(row.train_length), int(row.head_dim), float(row.rope_theta)
        assert L == setup.task(row.task).train_length
        assert d == setup.d_model // setup.n_heads
        assert row.protocol == CE.METHODS[row.method].protocol
        options = {}
        if row.method == "longrope":
            chosen = search[(search.factor == s) & search.chosen].iloc[0]
            options = {"ramp": (int(chosen.lo), int(chosen.hi))}
        expected = CE.method_keys(row.method, s, L, d, b, **options) or {"rope_type": "default", "rope_theta": b}
        assert keys == json.loads(json.dumps(expected)), row.method
        # the recorded summary is what ropelib computes from those keys, at an input of s * L tokens
        n = int(s * L)
        ratio = A.pair_scale_factors(keys, d, seq_len=n)
        _, attn = rope_frequencies(keys, d, seq_len=n)
        assert row.attention_factor == pytest.approx(attn, rel=1e-5)
        assert row.min_pair_factor == pytest.approx(ratio.min(), rel=1e-5)
        assert row.max_pair_factor == pytest.approx(ratio.max(), rel=1e-5)
        assert row.pairs_unchanged == int(np.isclose(ratio, 1.0, rtol=1e-5).sum())
        # closed forms: PI divides every pair by s; YaRN's attention factor is 0.1 ln s + 1, LongRoPE's (HF,
        # Phi-3) sqrt(1 + ln s / ln L); the others have none
        if row.method == "linear":
            assert row.pairs_interpolated == d // 2 and row.max_pair_factor == pytest.approx(1 / s, rel=1e-6)
        if row.method in ("yarn", "yarn_rescaled"):
            assert row.attention_factor == pytest.approx(0.1 * math.log(s) + 1, rel=1e-6)
        elif row.method == "longrope":
            assert row.attention_factor == pytest.approx(math.sqrt(1 + math.log(s) / math.log(L)), rel=1e-6)
        else:
            assert row.attention_factor == pytest.approx(1.0)
        if row.method == "ntk":  # the slowest pair is divided by exactly s (b' = b s^(d/(d-2)))
            assert row.min_pair_factor == pytest.approx(1 / s, rel=1e-5)
        if row.method == "yarn":  # the paper's ramp, in rotations within L
            assert (keys["beta_fast"], keys["beta_slow"]) == (32.0, 1.0)


def test_rescaled_yarn_ramp_keeps_more_pairs_than_the_papers(tables):
    """What sets the two YaRN settings apart: at toy scale the paper's ramp starts at pair 0."""
    df = tables["methods"]
    for (task, s), g in df[df.method.isin(["yarn", "yarn_rescaled"])].groupby(["task", "factor"]):
        by = g.set_index("method")
        assert by.loc["yarn_rescaled", "pairs_unchanged"] > by.loc["yarn", "pairs_unchanged"], (task, s)


# -- invariants of a correct run -------------------------------------------------------------------


def test_dynamic_ntk_is_plain_rope_at_the_original_length(tables, setup):
    df = tables["zero_shot_ppl"]
    L = int(df.train_length.iloc[0])
    at_L = df[df.length == L].set_index(["seed", "method", "factor"])["ppl"]
    for (seed, method, s), ppl in at_L.items():
        if method.startswith("dynamic"):  # every protocol: inputs no longer than L keep the original base
            assert ppl == pytest.approx(at_L[(seed, "none", 1.0)], rel=1e-5), (seed, method, s)
    # ... while the static methods do change the model at L (else the scaling was not applied at all): never
    # the same numbers as plain RoPE, and clearly different for a model that passed its gate (it uses positions;
    # a model that failed may barely use them, e.g. on the smoke profile, so only rounding-level changes show)
    linear = df[(df.method == "linear") & (df.length == L)]
    none = df[(df.method == "none") & (df.length == L)].set_index("seed")["ppl"]
    change = [(bool(r.passed_gate), abs(r.ppl / none[r.seed] - 1)) for r in linear.itertuples()]
    assert all(d > 0 for _, d in change), "PI at L gave exactly plain RoPE's perplexity: was the scaling applied?"
    gated = [d for passed, d in change if passed]
    if gated:
        assert any(d > 1e-4 for d in gated), f"PI barely changes the gated models at L: {gated}"


def test_finetune_step0_is_the_zero_shot_result(tables, lm):
    ft = tables["finetune"]
    zs = tables["zero_shot_ppl"].set_index(["seed", "method", "factor", "length"])["ppl"]
    start = ft[(ft.task == lm) & (ft.ft_steps == 0) & (ft.metric == "ppl")]
    checked = 0
    for row in start.itertuples():
        key = (row.seed, row.method, 1.0 if row.method == "none" else row.factor, row.length)
        if key in zs.index:
            assert row.value == pytest.approx(zs[key], rel=1e-6), key
            checked += 1
    assert checked > 0


def test_profiles_section_matches_the_notebook_parameters():
    """Every key profiles.yaml sets for notebook 06 is a parameter the notebook defines, and its methods exist."""
    namespace = notebook_parameters()
    profiles = yaml.safe_load((REPO / "profiles.yaml").read_text(encoding="utf-8"))
    assert set(PROFILE_06) == set(profiles["profiles"])
    for prof, params in PROFILE_06.items():
        missing = sorted(set(params) - set(namespace))
        assert not missing, f"{prof}: {missing} not defined in the parameters cell"
        named = set(params.get("methods", namespace["methods"])) | set(params.get("finetune_methods", []))
        unknown = sorted(named - set(CE.METHODS))
        assert not unknown, f"{prof}: unknown methods {unknown}"
        assert all(CE.METHODS[m].finetunable for m in params.get("finetune_methods", [])), prof
