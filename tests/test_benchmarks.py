"""The benchmark scripts still run (tiny settings); their numbers are reported, never asserted."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _rejected(capsys, monkeypatch, script: str, *args: str) -> str:
    """Run ``script``'s ``main`` in this process (the scripts run as scripts in the tests above; a bad
    argument only needs the parser) and return its stderr, asserting exit status 2 (argparse's usage error)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *args])  # for a main() that reads sys.argv
    with pytest.raises(SystemExit) as exc:
        module.main(*([list(args)] if module.main.__code__.co_argcount else []))
    assert exc.value.code == 2, exc.value.code
    return capsys.readouterr().err


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_profile_cost_estimates_the_smoke_profile():
    out = _run(
        "benchmarks/profile_cost.py",
        "--profile",
        "smoke",
        "--device",
        "cpu",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--encodings",
        "rope",
        "alibi",
    )
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("base ")]
    assert len(rows) == 3 * 2  # tasks x encodings (the seeds summed in each row)
    assert {r[2] for r in rows} == {"books", "passkey", "reverse"} and {r[1] for r in rows} == {"rope", "alibi"}
    assert any(ln.startswith("08-variant ") for ln in out.splitlines())  # notebook 08's RoPE variants
    assert "not a measurement" in out  # the FLOP-based estimate is labelled as one
    last = out.strip().splitlines()[-1]
    assert last.startswith("SUMMARY profile=smoke device=cpu") and "estimated for" in last


def test_profile_cost_rejects_bad_arguments(capsys, monkeypatch):
    err = _rejected(capsys, monkeypatch, "benchmarks/profile_cost.py", "--profile", "huge")
    assert "huge" in err and "smoke" in err


@pytest.mark.slow
def test_train_throughput_loop_comparison_prints_a_ratio():
    """train() against a bare loop of the same model and batches: a ratio per encoding and identical weights
    (the two loops do the same computation); the timings themselves are never asserted."""
    out = _run(
        "benchmarks/train_throughput.py",
        "--loop-only",
        "--loop-profile",
        "smoke",
        "--loop-steps",
        "2",
        "--rounds",
        "2",
        "--loop-encodings",
        "rope",
        "alibi",
    )
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith(("rope ", "alibi "))}
    assert set(rows) == {"rope", "alibi"}
    for cells in rows.values():
        train_rate, bare_rate, ratio = float(cells[1]), float(cells[2]), float(cells[3])
        assert train_rate > 0 and bare_rate > 0 and ratio > 0
        assert cells[5] == "yes"  # same weights
        assert len(cells[6:]) == 2  # one ratio per round
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("SUMMARY loop train()/bare tokens/s: rope ") and "goal >= 0.90" in summary
    assert "same weights: yes" in summary


def test_rerun_stability_reports_flips_between_two_results_folders(tmp_path, capsys, monkeypatch):
    """A folder against itself: no flips; against a copy with one verdict and one gate changed: both named."""
    import shutil

    import pandas as pd

    src = REPO / "results"
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        for name in ("04_gates.csv", "05_orderings.csv", "07_claims.csv"):
            shutil.copy(src / name, d / name)
    same = _run("benchmarks/rerun_stability.py", str(a), str(b))
    assert same.strip().splitlines()[-1].startswith("SUMMARY gate_flips=0 verdict_flips=0 ordering_flips=0")
    claims = pd.read_csv(b / "07_claims.csv")
    claims.loc[0, "verdict"] = "contradicted" if claims.loc[0, "verdict"] != "contradicted" else "supported"
    claims.to_csv(b / "07_claims.csv", index=False)
    gates = pd.read_csv(b / "04_gates.csv")
    gates.loc[0, "passed"] = not bool(gates.loc[0, "passed"])
    gates.to_csv(b / "04_gates.csv", index=False)
    out = _run("benchmarks/rerun_stability.py", str(a), str(b))
    assert "gate_flips=1 verdict_flips=1" in out.strip().splitlines()[-1]
    assert str(claims.loc[0, "claim_id"]) in out
    assert "none" in _rejected(capsys, monkeypatch, "benchmarks/rerun_stability.py", str(a), str(tmp_path / "none"))


@pytest.mark.slow
def test_pilot_lm_trains_each_combination_into_its_own_cache(tmp_path, capsys, monkeypatch):
    """One line per combination of the values given (here 2 encodings x with/without start token, at one
    layer), scored on the validation split, then the n-gram references; the project's run cache is not used."""
    out = _run(
        "benchmarks/pilot_lm.py",
        "--profile",
        "smoke",
        "--encoding",
        "rope",
        "nope",
        "--steps",
        "3",
        "--no-start-token",
        "--n-layers",
        "1",
        "--jobs",
        "1",
        "--cache-dir",
        str(tmp_path / "pilot"),
    )
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("rope ", "nope "))]
    assert [(r[0], r[1], r[8]) for r in rows] == [
        ("rope", "1", "True"),
        ("rope", "1", "False"),
        ("nope", "1", "True"),
        ("nope", "1", "False"),
    ]
    assert all(1.0 < float(r[9]) < 200.0 for r in rows)  # a perplexity, not a loss
    assert "n-gram references (validation): order 2" in out
    assert len(list((tmp_path / "pilot" / "runs").iterdir())) == 4
    assert "ropee" in _rejected(capsys, monkeypatch, "benchmarks/pilot_lm.py", "--encoding", "ropee")


@pytest.mark.slow
def test_pilot_algorithmic_quick_mode_trains_into_its_own_cache(tmp_path):
    """--quick: one line per encoding x task with exact match at 1x and 2x (learned cannot run at 2x), then the
    cost estimate of the profile's 60 copy/reverse models; the project's run cache is not used."""
    out = _run(
        "benchmarks/pilot_algorithmic.py",
        "--quick",
        "--encoding",
        "rope",
        "learned",
        "--task",
        "reverse",
        "--cache-dir",
        str(tmp_path / "pilot"),
    )
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("rope ", "learned "))]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("rope", "reverse", "16", "7"),
        ("learned", "reverse", "16", "7"),
    ]
    assert all(0.0 <= float(r[9]) <= 1.0 and 0.0 <= float(r[10]) <= 1.0 for r in rows)  # mix EM, EM@1x
    assert rows[1][12:14] == ["n/a", "unsupported"]  # learned at 2x: no position vector past its table
    assert "10 encodings x 2 tasks x 3 seeds x 1 lr = 60 models on 2 jobs" in out
    assert len(list((tmp_path / "pilot" / "runs").iterdir())) == 2


def test_pilot_algorithmic_rejects_bad_arguments(capsys, monkeypatch):
    for args, named in ((["--task", "books"], "books"), (["--samples", "0"], "samples")):
        err = _rejected(capsys, monkeypatch, "benchmarks/pilot_algorithmic.py", *args)
        assert named in err, (args, err[-500:])
