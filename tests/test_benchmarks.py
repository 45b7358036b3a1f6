"""The benchmark scripts still run (tiny settings); their numbers are reported, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_profile_cost_estimates_the_smoke_profile():
    out = _run("benchmarks/profile_cost.py", "--profile", "smoke", "--device", "cpu", "--steps", "1", "--warmup", "0",
               "--threads", "1", "--encodings", "rope", "alibi")
    rows = [ln for ln in out.splitlines() if ln.startswith(("books", "chars", "passkey", "reverse"))]
    assert len(rows) == 3 * 2  # tasks x encodings
    assert out.strip().splitlines()[-1].startswith("SUMMARY profile=smoke device=cpu")


def test_profile_cost_rejects_bad_arguments():
    out = subprocess.run([sys.executable, "benchmarks/profile_cost.py", "--profile", "huge"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "huge" in out.stderr and "smoke" in out.stderr


@pytest.mark.slow
def test_train_throughput_loop_comparison_prints_a_ratio():
    """train() against a bare loop of the same model and batches: a ratio per encoding and identical weights
    (the two loops do the same computation); the timings themselves are never asserted."""
    out = _run("benchmarks/train_throughput.py", "--loop-only", "--loop-profile", "smoke", "--loop-steps", "2",
               "--rounds", "2", "--loop-encodings", "rope", "alibi")
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
