"""The results tables of notebooks 04 and 05 are complete and consistent.

Reads the committed ``results/`` (not ``ropelib.paths.results_dir()``, which the test suite redirects);
set ``ROPELIB_CHECK_RESULTS_DIR`` to check the tables of another run instead (e.g. a smoke run written
to a sandbox), as ``tests/test_context_extension.py`` does. Checks, against ``ropelib.base_models`` and
``ropelib.protocols`` (no training):

* every table has the columns of ``ropelib.results.SCHEMA`` (documented in ``results/README.md``) and
  one profile;
* the learning-rate sweep (``04_lr_sweep.csv``) is the one ``protocols.sweep_specs`` builds today and
  chose the lowest validation loss; the base models' run hashes are ``base_models.base_specs(setup,
  lrs=<the chosen rates>)`` — what ``protocols.tuned_specs`` returns — so the tables belong to the
  current experiment definitions;
* ``04_gates.csv`` has one row per model, with a pass/fail that agrees with its checks, and every
  per-seed table's ``passed_gate`` agrees with it;
* every encoding, task, seed and length of the profile is present, NaN only where documented (learned
  positions past their table; models of copy/reverse have no in-distribution accuracy in 04);
* the summaries agree with the per-seed rows — those of 05 with the rows of the models that passed
  their gate (``n_seeds`` passing, ``n_failed`` the others, NaN when none passed), ``04_summary`` with
  every seed (and ``n_passed``) — and accuracy intervals lie in [0, 1].

Tables written before the current schema or experiment definitions fail with "stale: rerun".
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ropelib import base_models
from ropelib import protocols as P
from ropelib import results as R
from ropelib.evaluate import lengths_for
from ropelib.results import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
OVERRIDE = os.environ.get("ROPELIB_CHECK_RESULTS_DIR")
RESULTS = Path(OVERRIDE or ROOT / "results")
TABLES = [name for name in SCHEMA if name[:2] in ("04", "05")]
RERUN = "stale: rerun `python run_all.py --profile default --only 04 05 06 07`"
DEFAULT_DEPTHS = [0.0, 0.25, 0.5, 0.75, 1.0]  # notebook 05's retrieval_depths unless the profile sets them


def _read(name: str) -> pd.DataFrame:
    path = RESULTS / name
    if not path.exists():
        pytest.fail(f"{path} is missing ({RERUN})")
    try:
        return R.read_table(name, RESULTS)
    except ValueError as e:
        pytest.fail(f"{e}; {RERUN}")


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {name: _read(name) for name in TABLES}


@pytest.fixture(scope="module")
def profile(tables) -> str:
    profiles = set().union(*(set(t["profile"].dropna()) for t in tables.values()))
    assert len(profiles) == 1, f"the 04/05 tables mix profiles {profiles}"
    return profiles.pop()


@pytest.fixture(scope="module")
def setup(profile, tables) -> base_models.BaseSetup:
    setup = base_models.base_setup(profile)
    found = set(tables["04_runs.csv"].task)
    if found != {t.name for t in setup.tasks}:
        pytest.fail(
            f"04_runs.csv holds tasks {sorted(found)}, not the current setup's "
            f"{sorted(t.name for t in setup.tasks)}: {RERUN}"
        )
    return setup


@pytest.fixture(scope="module")
def params05(profile) -> dict:
    nb = yaml.safe_load((ROOT / "profiles.yaml").read_text())["notebooks"]["05_length_extrapolation"]
    return nb[profile]


@pytest.fixture(scope="module")
def lrs(tables) -> dict[tuple[str, str], float]:
    """The rates the sweep chose (``04_lr_sweep.csv``'s ``chosen`` rows), as ``protocols.tune_learning_rates``."""
    sweep = tables["04_lr_sweep.csv"]
    chosen = sweep[sweep.chosen.astype(bool)]
    return {(r.encoding, r.task): float(r.lr) for r in chosen.itertuples()}


@pytest.fixture(scope="module")
def specs(setup, lrs):
    return base_models.base_specs(setup, lrs=lrs)


@pytest.fixture(scope="module")
def lm_task(setup) -> str:
    return P.lm_task(setup)


def _key(r) -> tuple[str, str, int]:
    return (r.encoding, r.task, int(r.seed))


def _bool(v) -> bool:
    return str(v).strip().lower() == "true" if not isinstance(v, (bool, np.bool_)) else bool(v)


@pytest.fixture(scope="module")
def passed(tables) -> dict[tuple[str, str, int], bool]:
    """(encoding, task, seed) -> passed its gate; copy/reverse (no gate) count as passed, as in notebook 05."""
    g = tables["04_gates.csv"]
    return {_key(r): (_bool(r.passed) if r.kind in ("lm", "retrieval") else True) for r in g.itertuples()}


def _check_passed_gate(df: pd.DataFrame, passed: dict, label: str, task: str | None = None) -> None:
    assert df.passed_gate.dtype == bool, f"{label}: passed_gate must be a bool column"
    tasks = df.task if "task" in df.columns else pd.Series(task, index=df.index)
    want = [passed[(e, t, int(s))] for e, t, s in zip(df.encoding, tasks, df.seed)]
    assert list(df.passed_gate) == want, f"{label}: passed_gate disagrees with 04_gates.csv"


# ---------------------------------------------------------------------------------------------
# schema, sweep, run hashes, gates
# ---------------------------------------------------------------------------------------------
def test_schema_matches_readme_and_one_profile(tables, profile):
    readme = (ROOT / "results" / "README.md").read_text()
    if not OVERRIDE:
        assert profile == "default", "the committed results should come from the default profile"
    for name in TABLES:
        R.check_columns(tables[name].columns, name)
        assert f"`{name}`" in readme, f"{name} is not documented in results/README.md"
        assert set(tables[name].profile) <= {profile}, name


def test_lr_sweep_is_the_current_sweep_and_chose_the_best(tables, setup, lrs):
    sweep = tables["04_lr_sweep.csv"]
    want = P.sweep_specs(setup)
    got = {(r.encoding, r.task, float(r.lr)): r for r in sweep.itertuples()}
    assert set(got) == set(want), f"04_lr_sweep.csv is not the current sweep: {RERUN}"
    stale = [k for k, spec in want.items() if got[k].run_hash != spec.hash()[:16]]
    assert not stale, f"sweep runs with other RunSpecs than protocols.sweep_specs builds today {stale[:3]}: {RERUN}"
    assert all(int(got[k].steps) == spec.train.steps for k, spec in want.items())
    for (enc, task), g in sweep.groupby(["encoding", "task"]):
        assert g.chosen.astype(bool).sum() == 1, (enc, task)
        best = g.assign(v=g.val_loss.where(np.isfinite(g.val_loss), math.inf)).sort_values(["v", "lr"]).iloc[0]
        assert lrs[(enc, task)] == float(best.lr), (enc, task)
    assert {t for _, t in lrs} == {t.name for t in setup.tasks if t.lrs}


def test_every_model_present_with_current_hashes(tables, setup, specs, lrs):
    runs = tables["04_runs.csv"]
    got = {_key(r): r for r in runs.itertuples()}
    assert len(runs) == len(specs) and set(got) == set(specs)
    stale = [k for k, spec in specs.items() if got[k].run_hash != spec.hash()[:16]]
    assert not stale, (
        f"results were produced by other RunSpecs than protocols.tuned_specs builds today {stale[:3]}: {RERUN}"
    )
    for k, spec in specs.items():
        r = got[k]
        assert float(r.lr) == spec.train.lr == lrs.get(k[:2], setup.lr), k
        assert int(r.tokens) == spec.train.steps * spec.train.batch_size * spec.train.seq_len, k
    assert runs.final_train_loss.notna().all() and (runs.tokens_per_s > 0).all()


def test_04_gates_one_row_per_model(tables, setup, specs, lm_task):
    g = tables["04_gates.csv"]
    assert len(g) == len(specs) and {_key(r) for r in g.itertuples()} == set(specs)
    assert all(r.run_hash == specs[_key(r)].hash()[:16] for r in g.itertuples()), f"04_gates hashes: {RERUN}"
    assert all(r.kind == base_models.TASK_KINDS[r.task] for r in g.itertuples())
    gated = g[g.kind.isin(["lm", "retrieval"])]
    ok = gated.passed.map(_bool)
    assert gated.passed.map(lambda v: _bool(v) or str(v).strip().lower() == "false").all(), "passed must be a bool"
    assert g[~g.kind.isin(["lm", "retrieval"])].passed.isna().all()
    reason = gated.reason.astype(object).fillna("")  # all-NaN (every model passed) reads as float64
    assert (reason[~ok].str.len() > 0).all() and (reason[ok] == "").all()
    # the pass/fail is the conjunction of the row's checks; thresholds are the setup's
    checks = sorted(
        {c[len("gate_") : -len("_passed")] for c in g.columns if c.startswith("gate_") and c.endswith("_passed")}
    )
    assert checks, "04_gates.csv has no gate_<check>_* columns"
    for (_, r), p in zip(gated.iterrows(), ok):
        applied = [_bool(r[f"gate_{c}_passed"]) for c in checks if pd.notna(r[f"gate_{c}_value"])]
        assert applied and all(applied) == p, (r.encoding, r.task, r.seed)
    lm = g[g.kind == "lm"]
    if "gate_context_gain_threshold" in g:
        assert np.allclose(lm.gate_context_gain_threshold, setup.gates.context_gain_nats)
        assert np.allclose(lm.gate_context_gain_value, lm.context_gain)
    assert np.allclose(lm.ppl, np.exp(lm.loss)) and (lm.n_tokens > 0).all()
    ngram = tables["04_ngram.csv"]
    test = ngram[(ngram.split == "test") & (ngram.task == lm_task)].set_index("order").perplexity
    for order, ppl in test.items():
        assert np.allclose(lm[f"ngram_ppl_{order}"], ppl), order
    ret = g[g.kind == "retrieval"]
    assert np.allclose(ret.accuracy, ret.correct / ret.n) and (ret.n == setup.gate_samples).all()
    assert ((ret.floor >= 0) & (ret.floor < 1)).all()


def test_04_ngram_references(tables, setup, lm_task):
    ngram = tables["04_ngram.csv"]
    assert set(ngram.task) == {lm_task} and set(ngram.split) == {"validation", "test"}
    for _, g in ngram.groupby("split"):
        assert sorted(g.order) == [1, 2, 3, 4, 5]
        assert (np.diff(g.sort_values("order").perplexity) < 0).all()  # more context: lower perplexity
    assert np.allclose(ngram.perplexity, np.exp(ngram.cross_entropy))
    assert ngram.n_train_tokens.nunique() == 1 and (ngram.n_train_tokens > ngram.n_eval_tokens).all()
    if setup.lm_eval_tokens is not None:
        assert (ngram.n_eval_tokens == setup.lm_eval_tokens).all()
    if setup.ngram_train_tokens is not None:
        assert (ngram.n_train_tokens == setup.ngram_train_tokens).all()


def test_04_settings_are_what_the_models_are_built_with(tables, setup):
    st = tables["04_settings.csv"]
    for t in setup.tasks:
        want = base_models.encoding_settings(setup, t.train_length)
        got = st[st.task == t.name]
        assert (got.train_length == t.train_length).all()
        assert list(zip(got.encoding, got.parameter, got.rule)) == list(zip(want.encoding, want.parameter, want.rule))


# ---------------------------------------------------------------------------------------------
# notebook 04: per-model tables and the summary
# ---------------------------------------------------------------------------------------------
def test_04_in_distribution_is_the_gates_measurements(tables, setup, passed):
    ind, g = tables["04_in_distribution.csv"], tables["04_gates.csv"].set_index(["encoding", "task", "seed"])
    keys = {(e, t.name, s) for e in setup.encodings for t in setup.tasks for s in setup.seeds}
    metrics = {"lm": {"loss", "ppl", "context_gain"}, "retrieval": {"accuracy"}, "algorithmic": {"accuracy"}}
    for task in {t.name for t in setup.tasks}:
        sub = ind[ind.task == task]
        assert set(sub.metric) == metrics[base_models.TASK_KINDS[task]], task
        assert {_key(r) for r in sub.itertuples()} == {k for k in keys if k[1] == task}
    _check_passed_gate(ind, passed, "04_in_distribution")
    gated = ind[ind.task.map(base_models.TASK_KINDS).isin(["lm", "retrieval"])]
    assert gated.value.notna().all()
    for r in gated.itertuples():
        column = "context_gain_per_seed" if r.metric == "context_gain" else r.metric  # the gate judges the seed mean
        assert np.isclose(r.value, g.loc[_key(r), column]), _key(r)
    acc = gated[gated.metric == "accuracy"].value
    assert ((acc >= 0) & (acc <= 1)).all()


def test_04_summary_agrees_with_every_seed(tables, setup, passed):
    summary, ind, runs, g = (
        tables[n] for n in ("04_summary.csv", "04_in_distribution.csv", "04_runs.csv", "04_gates.csv")
    )
    n_seeds = len(setup.seeds)
    for r in summary.itertuples():
        assert r.n_passed == sum(
            passed[(r.encoding, r.task, s)] and base_models.TASK_KINDS[r.task] != "algorithmic" for s in setup.seeds
        ), (r.encoding, r.task, r.metric)
        if r.metric == "tokens_per_s":
            values = runs[(runs.encoding == r.encoding) & (runs.task == r.task)].tokens_per_s
        elif r.metric == "accuracy":
            values = g[(g.encoding == r.encoding) & (g.task == r.task)].accuracy
            assert 0.0 <= r.ci_low <= r.mean + 1e-12 and r.mean <= r.ci_high + 1e-12 and r.ci_high <= 1.0, r
        else:
            values = ind[(ind.encoding == r.encoding) & (ind.task == r.task) & (ind.metric == r.metric)].value
        assert r.n_seeds == n_seeds == len(values), (r.encoding, r.task, r.metric)
        assert np.isclose(r.mean, values.mean()), (r.encoding, r.task, r.metric)
    lm = setup.tasks_of_kind("lm")
    assert {m for t, m in zip(summary.task, summary.metric) if t in lm} == {
        "loss",
        "ppl",
        "context_gain",
        "tokens_per_s",
    }
    assert {m for t, m in zip(summary.task, summary.metric) if t in setup.tasks_of_kind("retrieval")} == {
        "accuracy",
        "tokens_per_s",
    }


def test_04_curves_attention_and_throughput(tables, setup):
    keys = {(e, t.name, s) for e in setup.encodings for t in setup.tasks for s in setup.seeds}
    curves = tables["04_training_curves.csv"]
    assert {_key(r) for r in curves.itertuples()} == keys
    last = curves.groupby(["encoding", "task", "seed"]).step.max()
    assert (last == [setup.task(t).steps for (_, t, _) in last.index]).all()
    att = tables["04_attention_distance.csv"]
    assert len(att) == len(keys) * setup.n_layers * setup.n_heads
    assert (att.mean_distance >= 0).all()
    bench = tables["04_throughput.csv"]
    assert set(bench.encoding) == set(setup.encodings) and (bench.tokens_per_s > 0).all()
    assert bench.groupby("encoding").size().nunique() == 1  # the same number of rounds for every encoding


def test_04_sinusoid_scale_table(tables, setup, lrs, lm_task):
    """The base sinusoidal LM model (its current hash), the extra scales and NoPE, each at 1x, 4x, 8x."""
    from ropelib.runs import DIR_HASH_CHARS

    sc = tables["04_sinusoid_scale.csv"]
    seed, L = setup.seeds[0], setup.task(lm_task).train_length
    base = base_models.base_spec(setup, "sinusoidal", lm_task, seed, lr=lrs.get(("sinusoidal", lm_task)))
    nope = base_models.base_spec(setup, "nope", lm_task, seed, lr=lrs.get(("nope", lm_task)))
    sin = sc[sc.encoding == "sinusoidal"]
    assert base.hash()[:DIR_HASH_CHARS] in set(sin.run_hash), f"04_sinusoid_scale: base model hash: {RERUN}"
    assert set(sc[sc.encoding == "nope"].run_hash) == {nope.hash()[:DIR_HASH_CHARS]}
    assert setup.sinusoid_scale in set(sin.scale) and 1.0 in set(sin.scale)
    assert sc[sc.encoding == "nope"].scale.isna().all()
    for _, g in sc.groupby(["encoding", "scale"], dropna=False):
        assert sorted(g.multiplier) == [1.0, 4.0, 8.0] and (g.length == g.multiplier * L).all()
    assert sc.loss.notna().all() and np.allclose(sc.ppl, np.exp(sc.loss))
    assert (sc.seed == seed).all() and (sc.train_length == L).all()


# ---------------------------------------------------------------------------------------------
# notebook 05
# ---------------------------------------------------------------------------------------------
def _check_nan_only_for_learned(df: pd.DataFrame, value: str) -> None:
    bad = df[df[value].isna()]
    assert (bad.encoding == "learned").all(), f"unexpected NaN {value}: {bad[['encoding', 'length']].head()}"
    assert (bad.multiplier > 1).all() and (bad.status == "unsupported").all() and bad.reason.str.len().gt(0).all()
    ok = df[df.status == "ok"]
    assert ok[value].notna().all()
    learned_long = df[(df.encoding == "learned") & (df.multiplier > 1)]
    assert learned_long[value].isna().all(), "learned positions must not be evaluated past their table"


def test_05_lm_loss_complete(tables, setup, params05, specs, passed):
    lm = tables["05_lm_loss.csv"]
    for task in setup.tasks_of_kind("lm"):
        L = setup.task(task).train_length
        lengths = lengths_for(L, params05["multipliers"])
        want = {
            (e, task, s, n, m)
            for e in setup.encodings
            for s in setup.seeds
            for n in lengths
            for m in ("nonoverlap", "sliding")
        }
        got = {(r.encoding, r.task, int(r.seed), int(r.length), r.mode) for r in lm.itertuples()}
        assert got == want
    assert len(lm) == len(set(zip(lm.encoding, lm.seed, lm.length, lm["mode"])))
    assert all(r.run_hash == specs[_key(r)].hash()[:16] for r in lm.itertuples()), f"05_lm_loss hashes: {RERUN}"
    _check_passed_gate(lm, passed, "05_lm_loss")
    _check_nan_only_for_learned(lm, "loss")
    assert np.allclose(lm.ppl.dropna(), np.exp(lm.loss.dropna()))
    assert (lm.loc[lm["mode"] == "nonoverlap", "min_context"] == 1).all()
    sliding = lm[lm["mode"] == "sliding"]
    assert (sliding.min_context == sliding.length - sliding.stride + 1).all()


def test_05_lm_summary_agrees_with_the_passing_seeds(tables, setup):
    lm, summary = tables["05_lm_loss.csv"], tables["05_lm_summary.csv"]
    keys = ["encoding", "length", "mode"]
    assert len(summary) == len(lm[keys].drop_duplicates())  # every cell, also where no seed passed
    ok = lm[lm.passed_gate]
    mean = ok.groupby(keys).loss.mean()
    count = ok.groupby(keys).loss.count()
    failed = (~lm.passed_gate).groupby([lm[k] for k in keys]).sum()
    for r in summary.itertuples():
        k = (r.encoding, r.length, r.mode)
        n = int(count.get(k, 0))
        assert r.n_seeds == n and r.n_failed == int(failed.get(k, 0)), k
        if n == 0:
            assert all(math.isnan(getattr(r, c)) for c in ("loss_mean", "ppl_mean", "ppl_ci_low", "ppl_ci_high")), k
        else:
            assert np.isclose(r.loss_mean, mean[k]), k
            if n > 1 and np.isfinite(r.loss_ci_low):
                assert r.loss_ci_low <= r.loss_mean + 1e-12 <= r.loss_ci_high + 2e-12, k


def test_05_retrieval_and_algorithmic_complete(tables, setup, params05, specs, passed):
    ret, g = tables["05_retrieval.csv"], tables["04_gates.csv"]
    for task in setup.tasks_of_kind("retrieval"):
        lengths = lengths_for(setup.task(task).train_length, params05["multipliers"])
        depths = params05.get("retrieval_depths", DEFAULT_DEPTHS)
        want = {(e, s, n, d) for e in setup.encodings for s in setup.seeds for n in lengths for d in depths}
        sub = ret[ret.task == task]
        assert {(r.encoding, int(r.seed), int(r.length), float(r.depth)) for r in sub.itertuples()} == want
        floor = g[g.task == task].floor
        assert np.allclose(sub.floor, floor.iloc[0]) and floor.nunique() == 1
    assert all(r.run_hash == specs[_key(r)].hash()[:16] for r in ret.itertuples())
    _check_passed_gate(ret, passed, "05_retrieval")
    _check_nan_only_for_learned(ret, "accuracy")
    ok = ret[ret.status == "ok"]
    assert ((ok.accuracy >= 0) & (ok.accuracy <= 1)).all() and (ok.distance >= 0).all()
    assert np.allclose(ok.accuracy, ok.n_correct / ok.n_samples)
    alg = tables["05_algorithmic.csv"]
    algo_tasks = setup.tasks_of_kind("algorithmic")
    assert set(alg.task) == set(algo_tasks)  # empty when the profile trains no copy/reverse models
    if algo_tasks:
        _check_nan_only_for_learned(alg, "accuracy")
        assert (alg.n == (alg.length - 2) // 2).all() and alg.passed_gate.all()


def test_05_accuracy_summary_agrees_with_the_passing_seeds(tables, setup):
    acc = tables["05_accuracy_summary.csv"]
    per_seed = pd.concat([tables["05_retrieval.csv"], tables["05_algorithmic.csv"]], ignore_index=True)
    per_seed = per_seed[per_seed.status == "ok"]
    cells = per_seed.groupby(["encoding", "task", "length", "seed", "passed_gate"], as_index=False)[
        ["n_correct", "n_samples"]
    ].sum()
    cells["accuracy"] = cells.n_correct / cells.n_samples
    assert len(acc) == len(cells[["encoding", "task", "length"]].drop_duplicates())
    for r in acc.itertuples():
        g = cells[(cells.encoding == r.encoding) & (cells.task == r.task) & (cells.length == r.length)]
        ok = g[g.passed_gate]
        assert r.n_seeds == len(ok) and r.n_failed == len(g) - len(ok), (r.encoding, r.task, r.length)
        if len(ok) == 0:
            assert math.isnan(r.mean) and math.isnan(r.ci_low) and math.isnan(r.ci_high)
            continue
        assert np.isclose(r.mean, ok.accuracy.mean()), (r.encoding, r.task, r.length)
        assert 0.0 <= r.ci_low <= r.mean + 1e-12 and r.mean <= r.ci_high + 1e-12 and r.ci_high <= 1.0
        assert r.method == ("wilson" if len(ok) == 1 else "hierarchical_bootstrap")
    ret_tasks = setup.tasks_of_kind("retrieval")
    assert acc[acc.task.isin(ret_tasks)].floor.notna().all()
    assert acc[~acc.task.isin(ret_tasks)].floor.isna().all()


def test_05_without_positions_covers_every_model(tables, setup, specs, passed):
    """One row per model of every LM and retrieval task; ``as_trained`` is the gate's measurement (for the
    LM also the 1x non-overlapping ``05_lm_loss`` value)."""
    wp, g, lm = tables["05_without_positions.csv"], tables["04_gates.csv"], tables["05_lm_loss.csv"]
    tasks = setup.tasks_of_kind("lm") + setup.tasks_of_kind("retrieval")
    want = {(e, t, s) for e in setup.encodings for t in tasks for s in setup.seeds}
    assert len(wp) == len(want) and {_key(r) for r in wp.itertuples()} == want
    assert all(r.run_hash == specs[_key(r)].hash()[:16] for r in wp.itertuples())
    assert all(r.kind == base_models.TASK_KINDS[r.task] for r in wp.itertuples())
    assert (wp.metric == wp.kind.map({"lm": "ppl", "retrieval": "accuracy"})).all()
    assert (wp.length == wp.train_length).all()
    assert all(r.train_length == setup.task(r.task).train_length for r in wp.itertuples())
    _check_passed_gate(wp, passed, "05_without_positions")
    gi = g.set_index(["encoding", "task", "seed"])
    for r in wp.itertuples():
        assert np.isclose(r.as_trained, gi.loc[_key(r), r.metric], rtol=1e-9), _key(r)
    ref = lm[(lm["mode"] == "nonoverlap") & (lm.multiplier == 1.0)].set_index(["encoding", "task", "seed"]).ppl
    for r in wp[wp.kind == "lm"].itertuples():
        assert np.isclose(r.as_trained, ref.loc[_key(r)], rtol=1e-9), _key(r)
    lm_rows, ret_rows = wp[wp.kind == "lm"], wp[wp.kind == "retrieval"]
    assert (lm_rows.without_positions >= 1).all()
    assert ((ret_rows.without_positions >= 0) & (ret_rows.without_positions <= 1)).all()
    nope = wp[wp.encoding == "nope"]
    assert np.allclose(nope.as_trained, nope.without_positions)  # nothing to remove


def test_05_loss_by_position_gate_flags(tables, setup, passed, lm_task):
    pos = tables["05_loss_by_position.csv"]
    _check_passed_gate(pos, passed, "05_loss_by_position", task=lm_task)
    assert "learned" not in set(pos.encoding) and pos.loss.notna().all()


def test_05_orderings_use_the_summaries(tables):
    orderings, summary = tables["05_orderings.csv"], tables["05_lm_summary.csv"]
    assert {"alibi_table1", "kazemnejad2023"} <= set(orderings.source)
    alibi = orderings[orderings.metric == "ppl_nonoverlap"]
    assert len(alibi) > 0
    s = summary[summary["mode"] == "nonoverlap"].set_index(["encoding", "multiplier"]).ppl_mean
    for r in alibi.itertuples():
        assert np.isclose(r.better_value, s.loc[(r.better, r.multiplier)], equal_nan=True)
        assert np.isclose(r.worse_value, s.loc[(r.worse, r.multiplier)], equal_nan=True)
        if np.isfinite(r.better_value) and np.isfinite(r.worse_value):
            assert str(r.reproduced) == str(r.better_value < r.worse_value)
