"""The committed outputs are one reference run (issue 13, item 1): every committed notebook, its ``.py``
pair, the committed manifest and every result table with a ``profile`` column carry the reference profile;
and (slow) in a throw-away git copy of the repository, a fork plus a smoke run of the template and the
fork leave ``git status`` showing only the fork's new files and its ``profiles.yaml`` section.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from ropelib.output_trees import REFERENCE_PROFILE
from test_run_all_outputs import REPO


def _committed_notebooks():
    """The tracked ``notebooks/NN_*.ipynb`` (a new notebook not yet committed is not part of the reference)."""
    try:
        listed = subprocess.run(["git", "ls-files", "notebooks/[0-9][0-9]_*.ipynb"], cwd=REPO, capture_output=True,
                                text=True, check=True, timeout=30).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError):  # not a git checkout
        return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return sorted(REPO / name for name in listed)


NOTEBOOKS = _committed_notebooks()
REFERENCE = REFERENCE_PROFILE


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_records_the_reference_profile(path):
    nb = nbformat.read(path, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1, f"{path.name} was not committed from a run_all run"
    assert f'profile = "{REFERENCE}"' in injected[0].source, f"{path.name}: {injected[0].source}"
    assert f'profile = "{REFERENCE}"' in path.with_suffix(".py").read_text()


def test_committed_manifest_and_tables_come_from_the_reference_profile():
    manifest = json.loads((REPO / "results" / f"run_manifest_{REFERENCE}.json").read_text())
    assert manifest["profile"] == REFERENCE
    for name, entry in manifest["notebooks"].items():
        committed = entry if entry["status"] == "ok" else entry.get("committed", {})
        assert committed.get("parameters", {}).get("profile", REFERENCE) == REFERENCE, name
    for table in sorted((REPO / "results").glob("*.csv")):
        columns = pd.read_csv(table, nrows=0).columns
        if "profile" in columns:
            profiles = set(pd.read_csv(table, usecols=["profile"])["profile"].dropna().astype(str))
            assert profiles <= {REFERENCE}, f"{table.name} holds rows of {sorted(profiles)}"


@pytest.mark.slow
def test_fork_and_smoke_run_leave_only_the_fork_in_git_status(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("run_all.py", "profiles.yaml", ".gitignore"):
        shutil.copy2(REPO / name, repo / name)
    for name in ("notebooks", "figures", "results"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", ".*"))

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "copy")
    env = dict(os.environ)  # anything written through the library's default folders would land in these traps
    env.update(ROPELIB_FIGURES_DIR=str(tmp_path / "trap_figures"), ROPELIB_RESULTS_DIR=str(tmp_path / "trap_results"),
               ROPELIB_CACHE_DIR=str(tmp_path / "cache"))  # fmt: skip
    new = subprocess.run([sys.executable, "run_all.py", "--new", "10_my_idea"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert new.returncode == 0, new.stdout + new.stderr
    assert "run_all.py --profile smoke --only 10" in new.stdout
    proc = subprocess.run([sys.executable, "run_all.py", "--profile", "smoke", "--only", "00", "10"], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = sorted(git("status", "--porcelain").splitlines())
    assert status == [" M profiles.yaml", "?? notebooks/10_my_idea.ipynb", "?? notebooks/10_my_idea.py"], status
    sandbox = repo / "build" / "smoke"
    assert (sandbox / "results" / "10_my_idea.csv").exists() and (sandbox / "results" / "00_template.csv").exists()
    assert (sandbox / "figures" / "10_my_idea" / "loss_vs_length.png").exists()
    captions = json.loads((sandbox / "figures" / "10_my_idea" / "captions.json").read_text())
    assert "smoke profile" in captions["loss_vs_length"]
    assert not (tmp_path / "trap_figures").exists() and not (tmp_path / "trap_results").exists()
