"""run_all.py owns its process tree (issue 14, item 1): a notebook with two worker processes (a spawned
``ProcessPoolExecutor``, as ``ropelib.runs.sweep`` starts them) is interrupted, and no process of the tree
(papermill, the kernel, the workers, multiprocessing's resource tracker) may remain; the outputs the
notebook had already written stay in its staging folder, never in the output tree.

SIGINT runs in the quick suite; SIGHUP, SIGKILL of run_all itself (papermill gets SIGTERM from the kernel's
PR_SET_PDEATHSIG and takes its kernel's session down) and SIGKILL of the kernel are marked slow.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ropelib.output_trees import OutputTree, clean_leftovers
from ropelib.run_messages import EXIT_FAILED, EXIT_INTERRUPTED
from test_run_all_outputs import cli, outputs_env, write_notebooks

psutil = pytest.importorskip("psutil")

WORKERS = """# %% tags=["parameters"]
profile = "default"
device = "auto"
marker = ""

# %%
import concurrent.futures
import json
import multiprocessing
import os
import time

from ropelib.paths import atomic_write_text, notebook_name, results_dir

atomic_write_text(results_dir() / f"{notebook_name()}.csv", "x\\nwritten before the interruption\\n")
pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
futures = [pool.submit(time.sleep, 600) for _ in range(2)]
while len(pool._processes) < 2:
    time.sleep(0.05)
with open(marker + ".tmp", "w") as fh:
    json.dump({"kernel": os.getpid(), "workers": list(pool._processes)}, fh)
os.replace(marker + ".tmp", marker)
time.sleep(600)
"""


def _alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize(
    "how",
    [
        "SIGINT",
        pytest.param("SIGHUP", marks=pytest.mark.slow),
        pytest.param("kill -9 run_all", marks=pytest.mark.slow),
        pytest.param("kill -9 kernel", marks=pytest.mark.slow),
    ],
)
def test_interrupted_run_leaves_no_process_and_no_output(tmp_path, how):
    marker = tmp_path / "workers.json"
    profiles = f"profiles: [smoke, default, full]\nnotebooks:\n  01_workers:\n    default: {{marker: '{marker}'}}\n"
    nb_dir = write_notebooks(tmp_path / "nbs", ["01_workers"], WORKERS, profiles)
    before = {p.name: p.read_bytes() for p in nb_dir.iterdir()}
    proc = subprocess.Popen(cli(nb_dir, tmp_path / "build", "--reference"), env=outputs_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 180
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the notebook should have started its workers"
        info = json.loads(marker.read_text())
        tree = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        tree |= {info["kernel"], *info["workers"]}
        assert len(tree) >= 4, tree  # papermill, kernel, two workers (and the resource tracker)
        if how == "kill -9 kernel":
            psutil.Process(info["kernel"]).kill()
        elif how == "kill -9 run_all":
            proc.kill()
        else:
            proc.send_signal(getattr(signal, how))
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    expected_rc = {"SIGINT": EXIT_INTERRUPTED, "SIGHUP": EXIT_INTERRUPTED,
                   "kill -9 run_all": -signal.SIGKILL, "kill -9 kernel": EXIT_FAILED}[how]  # fmt: skip
    assert proc.returncode == expected_rc, out
    deadline = time.time() + 20
    while _alive(tree) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(tree), [psutil.Process(p).cmdline() for p in _alive(tree)]
    # nothing of the unfinished notebook reached the output tree
    assert {p.name: p.read_bytes() for p in nb_dir.iterdir()} == before
    assert not (tmp_path / "results" / "01_workers.csv").exists()
    assert not (tmp_path / "figures" / "01_workers").exists()
    staging = tmp_path / "build" / "reference" / "running"
    if how == "kill -9 run_all":  # the staging folder stays until the next run cleans it
        tree_ = OutputTree(True, nb_dir, tmp_path / "figures", tmp_path / "results", tmp_path / "build" / "reference")
        assert clean_leftovers(tree_) == [f"removed {staging}"]
    assert not staging.exists()
