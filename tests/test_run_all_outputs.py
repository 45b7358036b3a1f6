"""run_all.py writes a notebook's outputs as one set, cleans a killed run's leftovers, and refuses a second
run on the same output tree (issue 14, items 2 and 3; issue 13, item 1).

One ``--reference`` run of two purpose-made notebooks (in a temporary folder, outputs redirected by the
``ROPELIB_*_DIR`` variables): ``01_partial`` writes a table and a figure and then fails, ``02_whole`` does the
same and succeeds. The reference tree holds earlier outputs of both, another notebook's table, and what a
killed run leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

REPO = Path(__file__).resolve().parent.parent

from ropelib import pipeline  # noqa: E402
from ropelib.output_trees import lock_tree, output_tree  # noqa: E402
from ropelib.paths import REPO_ROOT  # noqa: E402
from ropelib.run_messages import EXIT_BUSY, EXIT_CONFIG, EXIT_FAILED, EXIT_OK  # noqa: E402

NOTEBOOK = """# %% tags=["parameters"]
profile = "default"
device = "auto"
fail = False

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ropelib.paths import atomic_write_text, notebook_name, results_dir
from ropelib.plotting import savefig

NOTEBOOK = notebook_name()
atomic_write_text(results_dir() / f"{NOTEBOOK}.csv", "x\\nnew\\n")
fig, ax = plt.subplots()
savefig(fig, "new", notebook=NOTEBOOK, caption=f"new figure of {NOTEBOOK}")
if fail:
    raise RuntimeError("failing after writing outputs")
"""
PROFILES = """profiles: [smoke, default, full]
notebooks:
  01_partial:
    default: {fail: true}
"""


def write_notebooks(folder: Path, names, text: str = NOTEBOOK, profiles: str = PROFILES) -> Path:
    """Purpose-made notebooks (``.py`` and ``.ipynb``) with the repository's jupytext settings."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "jupytext.toml").write_text((REPO / "notebooks" / "jupytext.toml").read_text())
    (folder / "profiles.yaml").write_text(profiles)
    for name in names:
        (folder / f"{name}.py").write_text(text)
        jupytext.write(jupytext.reads(text, fmt="py:percent"), folder / f"{name}.ipynb")
    return folder


def outputs_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROPELIB_FIGURES_DIR=str(root / "figures"), ROPELIB_RESULTS_DIR=str(root / "results"),
               ROPELIB_CACHE_DIR=str(root / "cache"))  # fmt: skip
    return env


def cli(nb_dir: Path, build: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "run_all.py"), "--notebooks-dir", str(nb_dir),
            "--profiles", str(nb_dir / "profiles.yaml"), "--build-dir", str(build), *extra]  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    nb_dir = write_notebooks(root / "notebooks", ["01_partial", "02_whole"])
    results, figures, build = root / "results", root / "figures", root / "build"
    results.mkdir()
    for name in ("01_partial", "02_whole"):
        (results / f"{name}.csv").write_text("x\nold\n")
        (figures / name).mkdir(parents=True)
        (figures / name / "old.png").write_bytes(b"old png")
        (figures / name / "captions.json").write_text('{"old": "old figure"}')
    (results / "05_other.csv").write_text("another notebook's table\n")
    # what a killed run leaves: a staging folder, a figure folder swap cut between its renames, a temporary file
    (build / "reference" / "running" / "02_whole").mkdir(parents=True)
    (build / "reference" / "running" / "02_whole" / "junk.csv").write_text("junk")
    (figures / ".03_gone.replaced").mkdir()
    (figures / ".03_gone.replaced" / "kept.png").write_bytes(b"kept")
    (results / ".05_other.csv.abc123.tmp").write_text("half")
    before = {"results": _files(results), "figures": _files(figures), "notebooks": _files(nb_dir)}
    proc = subprocess.run(cli(nb_dir, build, "--reference"), env=outputs_env(root), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    return dict(root=root, nb_dir=nb_dir, build=build, before=before, proc=proc)


def test_failed_notebook_changes_none_of_its_outputs(partial_run):
    proc, root, before = partial_run["proc"], partial_run["root"], partial_run["before"]
    assert proc.returncode == EXIT_FAILED, proc.stdout + proc.stderr
    assert "failing after writing outputs" in proc.stdout
    assert (root / "results" / "01_partial.csv").read_text() == "x\nold\n"
    assert sorted(p.name for p in (root / "figures" / "01_partial").iterdir()) == ["captions.json", "old.png"]
    nb_dir = partial_run["nb_dir"]
    assert (nb_dir / "01_partial.ipynb").read_bytes() == before["notebooks"]["01_partial.ipynb"]
    assert (nb_dir / "01_partial.py").read_bytes() == before["notebooks"]["01_partial.py"]
    gallery = (root / "figures" / "README.md").read_text()
    assert "01_partial/new.png" not in gallery and "01_partial/old.png" in gallery


def test_successful_notebook_replaces_its_outputs_as_one_set(partial_run):
    root, before = partial_run["root"], partial_run["before"]
    assert (root / "results" / "02_whole.csv").read_text() == "x\nnew\n"
    # its figure folder is this run's: the old figure is gone, the caption index has only the new one
    folder = root / "figures" / "02_whole"
    assert sorted(p.name for p in folder.iterdir()) == ["captions.json", "new.png", "new.svg"]
    assert json.loads((folder / "captions.json").read_text()) == {"new": "new figure of 02_whole"}
    assert (root / "results" / "05_other.csv").read_bytes() == before["results"]["05_other.csv"]
    assert "02_whole/new.png" in (root / "figures" / "README.md").read_text()
    manifest = json.loads((root / "results" / "run_manifest_default.json").read_text())
    assert manifest["notebooks"]["02_whole"]["tables"] == ["02_whole.csv"]
    assert manifest["notebooks"]["01_partial"]["status"] == "failed"


def test_leftovers_of_a_killed_run_are_cleaned(partial_run):
    root, build, proc = partial_run["root"], partial_run["build"], partial_run["proc"]
    assert "a previous run was cut short" in proc.stdout
    assert not (build / "reference" / "running").exists()
    assert (root / "figures" / "03_gone" / "kept.png").read_bytes() == b"kept"  # the cut swap put back
    assert not list(root.rglob("*.tmp")) and not list((root / "figures").glob(".*"))


def test_second_run_on_the_same_tree_is_refused(tmp_path, capsys):
    nb_dir = write_notebooks(tmp_path / "nbs", ["01_partial"])
    argv = ["--notebooks-dir", str(nb_dir), "--profiles", str(nb_dir / "profiles.yaml"),
            "--build-dir", str(tmp_path / "build"), "--profile", "smoke"]  # fmt: skip
    tree = output_tree(pipeline.parse_args(argv))
    fd = lock_tree(tree)  # as a first run holds it
    try:
        rc = pipeline.main(argv)
        err = capsys.readouterr().err
        assert rc == EXIT_BUSY
        assert "another run_all is writing" in err and str(tree.results) in err and "Traceback" not in err
        assert not tree.notebooks.exists()  # nothing executed
        other = output_tree(pipeline.parse_args(argv[:-1] + ["full"]))  # another profile: its own tree
        os.close(lock_tree(other))
    finally:
        os.close(fd)
    os.close(lock_tree(tree))  # released with its holder


def test_unwritable_results_is_one_line_error(tmp_path, capsys, monkeypatch):
    nb_dir = write_notebooks(tmp_path / "nbs", ["01_partial"])
    for key, value in outputs_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    argv = cli(nb_dir, tmp_path / "build", "--reference")[2:]
    (tmp_path / "results").write_text("a file where the results folder should be")
    assert pipeline.main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "cannot write outputs" in err and "not a folder" in err, err
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        (tmp_path / "results").unlink()
        (tmp_path / "results").mkdir(mode=0o555)
        assert pipeline.main(argv) == EXIT_CONFIG
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0 and "cannot write outputs" in err, err
    assert not (tmp_path / "build").exists()


def test_sandbox_may_not_land_on_committed_outputs(tmp_path, capsys):
    nb_dir = write_notebooks(tmp_path / "nbs", ["01_partial"])
    rc = pipeline.main(["--notebooks-dir", str(nb_dir), "--profiles", str(nb_dir / "profiles.yaml"),
                        "--output-dir", str(REPO_ROOT)])  # fmt: skip
    assert rc == EXIT_CONFIG and "only --reference" in capsys.readouterr().err


PROGRESS_NOTEBOOK = """# %% tags=["parameters"]
profile = "default"
device = "auto"

# %%
import os
import time
from pathlib import Path

# what ropelib.runs.sweep does inside a notebook run_all executes
Path(os.environ["ROPELIB_PROGRESS_FILE"]).write_text("sweep: 1 of 2 runs finished (0 cached, 1 trained)\\n")
time.sleep(2.5)
"""


def test_heartbeat_shows_the_kernels_sweep_progress(tmp_path, capsys, monkeypatch):
    """The kernel gets ``$ROPELIB_PROGRESS_FILE`` in its staging folder; the heartbeat shows its line."""
    nb_dir = write_notebooks(
        tmp_path / "nbs", ["01_progress"], text=PROGRESS_NOTEBOOK, profiles="profiles: [default]\n"
    )
    for key, value in outputs_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(pipeline, "HEARTBEAT_S", 0.3)
    rc = pipeline.main(["--notebooks-dir", str(nb_dir), "--profiles", str(nb_dir / "profiles.yaml"),
                        "--build-dir", str(tmp_path / "build")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == EXIT_OK, out
    assert "[1/1] 01_progress started" in out
    assert "... running [1/1] 01_progress for " in out and "(sweep: 1 of 2 runs finished (0 cached, 1 trained))" in out
    assert not (tmp_path / "build" / "default" / "running").exists()  # the progress file went with its staging
