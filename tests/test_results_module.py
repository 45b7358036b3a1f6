"""Tests of ``ropelib.results``: the schema of the results tables, ``write_table`` and ``read_table``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ropelib import results as R
from ropelib.paths import REPO_ROOT

#: the tables of a complete run to check the schema against (as in tests/test_results.py); unset: skipped
CHECK_DIR = os.environ.get("ROPELIB_CHECK_RESULTS_DIR") or str(
    Path(__file__).resolve().parent.parent / "results"
)  # default: the committed reference run


def frame(name: str, n: int = 2) -> pd.DataFrame:
    """A table with the schema's columns (``profile`` left out) and ``n`` rows of placeholder values."""
    cols = [c for c in R.columns(name) if c != "profile"]
    return pd.DataFrame({c: [f"{c}{i}" for i in range(n)] for c in cols})


def gates_frame(checks=("context_gain", "ppl_below_3gram")) -> pd.DataFrame:
    df = frame("04_gates")
    for check in checks:
        for part in ("value", "threshold", "passed"):
            df[f"gate_{check}_{part}"] = 1.0
    return df


# ---------------------------------------------------------------------------------------------
# the schema
# ---------------------------------------------------------------------------------------------
def test_schema_covers_notebooks_04_to_08_with_profile_first():
    assert {n[:2] for n in R.SCHEMA} == {"04", "05", "06", "07", "08"}
    for name, cols in R.SCHEMA.items():
        assert re.fullmatch(r"0[4-8]_[a-z0-9_]+\.csv", name), name
        assert cols[0] == "profile", name
        assert len(set(cols)) == len(cols), name
        assert R.TABLE_NOTEBOOK[name] == name[:2]
    assert "07_claims.csv" in R.SCHEMA and "04_gates.csv" in R.VARIABLE_COLUMNS


def test_new_columns_are_in_the_schema():
    assert "passed_gate" in R.columns("05_lm_loss") and "n_failed" in R.columns("05_lm_summary")
    assert {"n_failed", "floor", "method"} <= set(R.columns("05_accuracy_summary"))
    assert R.columns("05_without_positions")[-3:] == ("metric", "as_trained", "without_positions")
    assert R.columns("04_summary")[-1] == "n_passed"
    assert {"passed", "reason", "kind", "run_hash"} <= set(R.columns("04_gates"))
    for name in ("06_zero_shot_ppl", "06_finetune", "06_loss_by_position", "06_zero_shot_retrieval"):
        assert "passed_gate" in R.columns(name), name


@pytest.mark.skipif(not CHECK_DIR, reason="set ROPELIB_CHECK_RESULTS_DIR to the results of a complete run")
def test_schema_matches_the_tables_of_a_complete_run():
    """Every table notebooks 04-06 wrote in one run has exactly the schema's columns (and reads back)."""
    folder = Path(CHECK_DIR)
    files = sorted(p.name for p in folder.glob("0[4-68]_*.csv"))
    assert set(files) == {n for n in R.SCHEMA if n[:2] in ("04", "05", "06", "08")}
    profiles = set()
    for name in files:
        header = list(pd.read_csv(folder / name, nrows=0).columns)
        R.check_columns(header, name)
        if name not in R.VARIABLE_COLUMNS:
            assert tuple(header) == R.SCHEMA[name], name
        profiles |= set(R.read_table(name, folder)["profile"])
    assert len(profiles) == 1, profiles


def test_schema_is_documented_in_the_results_readme():
    """Each table has a ``### `<file>` …`` section whose first code span lists exactly its columns."""
    readme = (REPO_ROOT / "results" / "README.md").read_text(encoding="utf-8")
    for name, cols in R.SCHEMA.items():
        heading = re.search(rf"^### `{re.escape(name)}`.*$", readme, flags=re.MULTILINE)
        assert heading, f"{name} has no section in results/README.md"
        span = re.search(r"`([^`]*)`", readme[heading.end() :])
        listed = tuple(c.strip() for c in " ".join(span.group(1).split()).split(","))
        assert listed == cols, f"results/README.md lists {listed} for {name}, the schema has {cols}"


def test_table_name_normalises_and_rejects():
    assert R.table_name("04_runs") == R.table_name("04_runs.csv") == "04_runs.csv"
    with pytest.raises(ValueError, match="unknown results table '99_x'"):
        R.table_name("99_x")
    with pytest.raises(ValueError, match="without folders"):
        R.table_name("sub/04_runs.csv")
    with pytest.raises(ValueError, match="non-empty string"):
        R.table_name("")


# ---------------------------------------------------------------------------------------------
# check_columns
# ---------------------------------------------------------------------------------------------
def test_check_columns_names_missing_extra_and_the_table():
    cols = list(R.columns("04_runs"))
    R.check_columns(cols, "04_runs")
    with pytest.raises(ValueError, match=r"04_runs\.csv.*missing column\(s\) \['lr'\]"):
        R.check_columns([c for c in cols if c != "lr"], "04_runs")
    with pytest.raises(ValueError, match=r"04_runs\.csv.*extra column\(s\) \['bogus'\]"):
        R.check_columns(cols + ["bogus"], "04_runs")
    with pytest.raises(ValueError, match="wrong order"):
        R.check_columns([cols[1], cols[0], *cols[2:]], "04_runs")
    with pytest.raises(ValueError, match="duplicate"):
        R.check_columns(cols + ["lr"], "04_runs")


def test_gate_table_takes_check_triples_only():
    fixed = list(R.columns("04_gates"))
    R.check_columns(fixed, "04_gates")  # no check columns at all
    triple = ["gate_ppl_below_3gram_value", "gate_ppl_below_3gram_threshold", "gate_ppl_below_3gram_passed"]
    R.check_columns(fixed + triple, "04_gates")
    R.check_columns(fixed + triple + [c.replace("3gram", "4gram") for c in triple], "04_gates")
    with pytest.raises(ValueError, match="triples"):
        R.check_columns(fixed + triple[:2], "04_gates")
    with pytest.raises(ValueError, match="one check's"):
        R.check_columns(fixed + [triple[0], triple[2], triple[1]], "04_gates")
    with pytest.raises(ValueError, match=r"extra column\(s\) \['other'\]"):
        R.check_columns(fixed + ["other"], "04_gates")
    with pytest.raises(ValueError, match="wrong order"):  # a check column among the fixed ones
        R.check_columns(fixed[:3] + triple + fixed[3:], "04_gates")


# ---------------------------------------------------------------------------------------------
# write_table / read_table
# ---------------------------------------------------------------------------------------------
def test_write_inserts_profile_and_reads_back(tmp_path):
    df = frame("04_lr_sweep")
    path = R.write_table(df, "04_lr_sweep", "smoke", directory=tmp_path)
    assert path == tmp_path / "04_lr_sweep.csv"
    assert "profile" not in df.columns  # the caller's frame is not changed
    back = R.read_table("04_lr_sweep.csv", tmp_path)
    assert tuple(back.columns) == R.SCHEMA["04_lr_sweep.csv"]
    assert set(back["profile"]) == {"smoke"} and list(back["run_hash"]) == list(df["run_hash"])
    expected = df.copy()
    expected.insert(0, "profile", "smoke")
    assert path.read_text() == expected.to_csv(index=False)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_write_defaults_to_results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPELIB_RESULTS_DIR", str(tmp_path / "res"))
    path = R.write_table(frame("07_claims", 1), "07_claims.csv", "default")
    assert path == (tmp_path / "res" / "07_claims.csv").resolve()
    assert R.read_table("07_claims")["claim_id"].tolist() == ["claim_id0"]


def test_write_rejects_wrong_columns_before_writing(tmp_path):
    df = frame("05_without_positions")
    with pytest.raises(ValueError, match=r"05_without_positions\.csv.*missing column\(s\) \['metric'\]"):
        R.write_table(df.drop(columns="metric"), "05_without_positions", "smoke", directory=tmp_path)
    with pytest.raises(ValueError, match=r"extra column\(s\) \['ppl'\]"):
        R.write_table(df.assign(ppl=1.0), "05_without_positions", "smoke", directory=tmp_path)
    assert not list(tmp_path.iterdir())


def test_write_profile_column_and_argument_checks(tmp_path):
    df = frame("04_ngram")
    R.write_table(df.assign(profile="smoke"), "04_ngram", "smoke", directory=tmp_path)  # same profile: accepted
    assert R.read_table("04_ngram", tmp_path).columns[0] == "profile"
    with pytest.raises(ValueError, match="already has a profile column"):
        R.write_table(df.assign(profile="default"), "04_ngram", "smoke", directory=tmp_path)
    with pytest.raises(ValueError, match="profile must be a non-empty string"):
        R.write_table(df, "04_ngram", "", directory=tmp_path)
    with pytest.raises(ValueError, match="DataFrame"):
        R.write_table(df.to_dict(), "04_ngram", "smoke", directory=tmp_path)
    with pytest.raises(ValueError, match="unknown results table"):
        R.write_table(df, "04_nothing", "smoke", directory=tmp_path)


def test_write_gate_table_with_profile_dependent_checks(tmp_path):
    R.write_table(gates_frame(), "04_gates", "default", directory=tmp_path)
    back = R.read_table("04_gates", tmp_path)
    assert list(back.columns[-3:]) == [
        "gate_ppl_below_3gram_value",
        "gate_ppl_below_3gram_threshold",
        "gate_ppl_below_3gram_passed",
    ]
    bad = gates_frame().drop(columns="gate_context_gain_threshold")
    with pytest.raises(ValueError, match="04_gates.csv"):
        R.write_table(bad, "04_gates", "default", directory=tmp_path)


def test_empty_table_round_trips(tmp_path):
    R.write_table(frame("05_algorithmic", 0), "05_algorithmic", "default", directory=tmp_path)
    back = R.read_table("05_algorithmic", tmp_path, profile="default")
    assert back.empty and tuple(back.columns) == R.SCHEMA["05_algorithmic.csv"]


def test_read_missing_stale_and_profiles(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebook 05"):
        R.read_table("05_lm_summary", tmp_path)
    # a table written before the schema changed (the old 05_without_positions columns)
    old = pd.DataFrame(
        {
            "profile": ["default"],
            "encoding": ["sinusoidal"],
            "seed": [0],
            "run_hash": ["x"],
            "train_length": [64],
            "length": [64],
            "ppl": [5.0],
            "ppl_without_positions": [5.1],
        }
    )
    old.to_csv(tmp_path / "05_without_positions.csv", index=False)
    with pytest.raises(ValueError, match="stale: rerun notebook 05"):
        R.read_table("05_without_positions", tmp_path)
    # several profiles: one must be chosen
    a = frame("04_throughput").assign(tokens_per_s=[1.0, 2.0])
    R.write_table(a, "04_throughput", "smoke", directory=tmp_path)
    both = pd.concat(
        [
            R.read_table("04_throughput", tmp_path),
            R.read_table("04_throughput", tmp_path).assign(profile="default", tokens_per_s=[3.0, 4.0]),
        ]
    )
    both.to_csv(tmp_path / "04_throughput.csv", index=False)
    with pytest.raises(ValueError, match="holds profiles"):
        R.read_table("04_throughput", tmp_path)
    d = R.read_table("04_throughput", tmp_path, profile="default")
    assert set(d["profile"]) == {"default"} and np.allclose(d["tokens_per_s"], [3.0, 4.0])
    assert d.index.tolist() == [0, 1]
    with pytest.raises(ValueError, match="not 'full'"):
        R.read_table("04_throughput", tmp_path, profile="full")
