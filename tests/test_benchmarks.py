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
    rows = [ln for ln in out.splitlines() if ln.startswith(("chars", "passkey", "reverse"))]
    assert len(rows) == 3 * 2  # tasks x encodings
    assert out.strip().splitlines()[-1].startswith("SUMMARY profile=smoke device=cpu")


def test_profile_cost_rejects_bad_arguments():
    out = subprocess.run([sys.executable, "benchmarks/profile_cost.py", "--profile", "huge"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "huge" in out.stderr and "smoke" in out.stderr
