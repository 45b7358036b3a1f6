"""The committed results/ tables of notebooks 04 and 05 are complete and consistent.

Reads the repository's ``results/`` (not ``ropelib.paths.results_dir()``, which the test suite
redirects): every encoding, task, seed and length of the profile that produced them is present, the
run hashes are those ``ropelib.experiments`` builds today (so the tables belong to the current
experiment definitions), NaN appears only where documented (learned positions past their table), and
the summaries agree with the per-seed rows. The column lists are the schema of ``results/README.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ropelib import experiments as X
from ropelib.evaluate import lengths_for

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"

SCHEMA = {
    "04_runs.csv": "profile, encoding, task, seed, run_hash, train_length, steps, batch_size, d_model, n_layers, n_heads, num_parameters, final_train_loss, train_time_s, tokens_per_s, device, cached",
    "04_training_curves.csv": "profile, encoding, task, seed, step, loss, val_loss",
    "04_in_distribution.csv": "profile, encoding, task, seed, metric, value",
    "04_summary.csv": "profile, encoding, task, metric, n_seeds, mean, ci_low, ci_high",
    "04_throughput.csv": "profile, encoding, task, seq_len, batch_size, round, tokens_per_s",
    "04_attention_distance.csv": "profile, encoding, task, seed, layer, head, mean_distance",
    "04_sinusoid_scale.csv": "profile, encoding, scale, seed, run_hash, train_length, length, multiplier, loss, ppl, position_norm, token_norm_trained",
    "05_lm_loss.csv": "profile, encoding, seed, run_hash, train_length, length, multiplier, mode, stride, loss, ppl, n_tokens, n_windows, min_context, status, reason",
    "05_lm_summary.csv": "profile, encoding, train_length, length, multiplier, mode, n_seeds, loss_mean, loss_ci_low, loss_ci_high, ppl_mean, ppl_ci_low, ppl_ci_high",
    "05_loss_by_position.csv": "profile, encoding, seed, length, position_lo, position_hi, loss",
    "05_without_positions.csv": "profile, encoding, seed, run_hash, train_length, length, ppl, ppl_without_positions",
    "05_retrieval.csv": "profile, encoding, task, seed, run_hash, train_length, length, multiplier, depth, distance, accuracy, token_accuracy, n_samples, status, reason",
    "05_algorithmic.csv": "profile, encoding, task, seed, run_hash, train_length, length, multiplier, n, accuracy, token_accuracy, n_samples, status, reason",
    "05_accuracy_summary.csv": "profile, encoding, task, train_length, length, multiplier, n_seeds, mean, ci_low, ci_high",
    "05_orderings.csv": "profile, source, comparison, better, worse, multiplier, metric, better_value, worse_value, published_better, published_worse, reproduced, note",
}


def _read(name: str) -> pd.DataFrame:
    path = RESULTS / name
    assert path.exists(), f"{path} is missing: run `python run_all.py --profile default --only 04 05`"
    return pd.read_csv(path, keep_default_na=True)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {name: _read(name) for name in SCHEMA}


@pytest.fixture(scope="module")
def profile(tables) -> str:
    profiles = set(tables["04_runs.csv"].profile)
    assert len(profiles) == 1, f"04_runs.csv mixes profiles {profiles}"
    return profiles.pop()


@pytest.fixture(scope="module")
def setup(profile) -> X.BaseSetup:
    return X.base_setup(profile)


@pytest.fixture(scope="module")
def params05(profile) -> dict:
    nb = yaml.safe_load((ROOT / "profiles.yaml").read_text())["notebooks"]["05_length_extrapolation"]
    return nb[profile]


def test_schema_matches_readme_and_one_profile(tables, profile):
    readme = (RESULTS / "README.md").read_text()
    assert profile == "default", "the committed results should come from the default profile"
    for name, columns in SCHEMA.items():
        cols = [c.strip() for c in columns.split(",")]
        assert list(tables[name].columns) == cols, name
        assert f"`{name}`" in readme, f"{name} is not documented in results/README.md"
        assert set(tables[name].profile) <= {profile}, name


def test_every_model_present_with_current_hashes(tables, setup):
    runs = tables["04_runs.csv"]
    specs = X.base_specs(setup)
    got = {(r.encoding, r.task, int(r.seed)): r.run_hash for r in runs.itertuples()}
    assert len(runs) == len(specs)
    assert set(got) == set(specs)
    stale = [k for k, spec in specs.items() if got[k] != spec.hash()[:16]]
    assert not stale, f"results were produced by other RunSpecs than ropelib.experiments builds today: {stale[:3]}"
    assert runs.final_train_loss.notna().all() and (runs.tokens_per_s > 0).all()


def test_04_tables_complete(tables, setup):
    keys = {(e, t.name, s) for e in setup.encodings for t in setup.tasks for s in setup.seeds}
    ind = tables["04_in_distribution.csv"]
    assert ind.value.notna().all()
    for kind, metrics in (("lm", {"val_loss", "val_ppl"}), ("retrieval", {"accuracy"}), ("algorithmic", {"accuracy"})):
        for task in setup.tasks_of_kind(kind):
            sub = ind[ind.task == task]
            assert set(sub.metric) == metrics
            assert {(r.encoding, r.task, int(r.seed)) for r in sub.itertuples()} == {k for k in keys if k[1] == task}
    acc = ind[ind.metric == "accuracy"].value
    assert ((acc >= 0) & (acc <= 1)).all()
    curves = tables["04_training_curves.csv"]
    assert {(r.encoding, r.task, int(r.seed)) for r in curves.itertuples()} == keys
    last = curves.groupby(["encoding", "task", "seed"]).step.max()
    assert (last == [setup.task(t).steps for (_, t, _) in last.index]).all()
    att = tables["04_attention_distance.csv"]
    assert len(att) == len(keys) * setup.n_layers * setup.n_heads
    assert (att.mean_distance >= 0).all()
    summary = tables["04_summary.csv"]
    assert (summary.n_seeds == len(setup.seeds)).all()
    bench = tables["04_throughput.csv"]
    assert set(bench.encoding) == set(setup.encodings) and (bench.tokens_per_s > 0).all()
    assert bench.groupby("encoding").size().nunique() == 1  # the same number of rounds for every encoding


def test_04_sinusoid_scale_table(tables, setup, profile):
    """The base sinusoidal chars model (its current hash), the extra scales and NoPE, each at 1x, 4x, 8x."""
    from ropelib.runs import DIR_HASH_CHARS

    sc = tables["04_sinusoid_scale.csv"]
    seed, L = setup.seeds[0], setup.task("chars").train_length
    base = X.base_spec(setup, "sinusoidal", "chars", seed)
    nope = X.base_spec(setup, "nope", "chars", seed)
    sin = sc[sc.encoding == "sinusoidal"]
    assert base.hash()[:DIR_HASH_CHARS] in set(sin.run_hash) and set(sc[sc.encoding == "nope"].run_hash) == {
        nope.hash()[:DIR_HASH_CHARS]}
    assert setup.sinusoid_scale in set(sin.scale) and 1.0 in set(sin.scale) and sin.scale.nunique() >= 3
    assert sc[sc.encoding == "nope"].scale.isna().all()
    for _, g in sc.groupby(["encoding", "scale"], dropna=False):
        assert sorted(g.multiplier) == [1.0, 4.0, 8.0] and (g.length == g.multiplier * L).all()
    assert sc.loss.notna().all() and np.allclose(sc.ppl, np.exp(sc.loss))
    assert (sc.seed == seed).all() and (sc.train_length == L).all()


def _check_nan_only_for_learned(df: pd.DataFrame, value: str) -> None:
    bad = df[df[value].isna()]
    assert (bad.encoding == "learned").all(), f"unexpected NaN {value}: {bad[['encoding', 'length']].head()}"
    assert (bad.multiplier > 1).all() and (bad.status == "unsupported").all() and bad.reason.str.len().gt(0).all()
    ok = df[df.status == "ok"]
    assert ok[value].notna().all()
    learned_long = df[(df.encoding == "learned") & (df.multiplier > 1)]
    assert learned_long[value].isna().all(), "learned positions must not be evaluated past their table"


def test_05_lm_loss_complete(tables, setup, params05):
    lm = tables["05_lm_loss.csv"]
    for task in setup.tasks_of_kind("lm"):
        L = setup.task(task).train_length
        lengths = lengths_for(L, params05["multipliers"])
        want = {(e, s, n, m) for e in setup.encodings for s in setup.seeds for n in lengths
                for m in ("nonoverlap", "sliding")}
        got = {(r.encoding, int(r.seed), int(r.length), r.mode) for r in lm.itertuples()}
        assert got == want
    assert len(lm) == len(set(zip(lm.encoding, lm.seed, lm.length, lm["mode"])))
    _check_nan_only_for_learned(lm, "loss")
    assert np.allclose(lm.ppl.dropna(), np.exp(lm.loss.dropna()))
    assert (lm.loc[lm["mode"] == "nonoverlap", "min_context"] == 1).all()
    sliding = lm[lm["mode"] == "sliding"]
    assert (sliding.min_context == sliding.length - sliding.stride + 1).all()


def test_05_lm_summary_agrees_with_seeds(tables, setup):
    lm, summary = tables["05_lm_loss.csv"], tables["05_lm_summary.csv"]
    recomputed = lm.groupby(["encoding", "length", "mode"]).loss.mean()
    merged = summary.set_index(["encoding", "length", "mode"]).loss_mean
    assert np.allclose(merged.loc[recomputed.index].to_numpy(), recomputed.to_numpy(), equal_nan=True)
    finite = summary.dropna(subset=["loss_mean"])
    assert (finite.n_seeds == len(setup.seeds)).all()
    assert ((finite.loss_ci_low <= finite.loss_mean + 1e-12) & (finite.loss_mean <= finite.loss_ci_high + 1e-12)).all()
    assert summary[summary.loss_mean.isna()].encoding.eq("learned").all()


def test_05_retrieval_and_algorithmic_complete(tables, setup, params05):
    ret = tables["05_retrieval.csv"]
    for task in setup.tasks_of_kind("retrieval"):
        lengths = lengths_for(setup.task(task).train_length, params05["multipliers"])
        depths = params05.get("retrieval_depths", [0.0, 0.25, 0.5, 0.75, 1.0])
        want = {(e, s, n, d) for e in setup.encodings for s in setup.seeds for n in lengths for d in depths}
        sub = ret[ret.task == task]
        assert {(r.encoding, int(r.seed), int(r.length), float(r.depth)) for r in sub.itertuples()} == want
    _check_nan_only_for_learned(ret, "accuracy")
    ok = ret[ret.status == "ok"]
    assert ((ok.accuracy >= 0) & (ok.accuracy <= 1)).all() and (ok.distance >= 0).all()
    alg = tables["05_algorithmic.csv"]
    algo_tasks = setup.tasks_of_kind("algorithmic")
    assert set(alg.task) == set(algo_tasks)  # empty when the profile trains no copy/reverse models
    if algo_tasks:
        _check_nan_only_for_learned(alg, "accuracy")
        assert (alg.n == (alg.length - 2) // 2).all()


def test_05_without_positions_matches_the_lm_table(tables, setup):
    """One row per sinusoidal chars seed; ``ppl`` is that model's 1x non-overlapping value in 05_lm_loss."""
    wp, lm = tables["05_without_positions.csv"], tables["05_lm_loss.csv"]
    L = setup.task("chars").train_length
    assert sorted(wp.seed) == sorted(setup.seeds) and (wp.encoding == "sinusoidal").all() and (wp.length == L).all()
    ref = lm[(lm.encoding == "sinusoidal") & (lm["mode"] == "nonoverlap") & (lm.length == L)].set_index("seed").ppl
    assert np.allclose(wp.set_index("seed").ppl.sort_index(), ref.sort_index(), rtol=1e-12)
    assert (wp.ppl_without_positions > 0).all()


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
