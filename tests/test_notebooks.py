"""Checks of every committed notebook ``notebooks/NN_*.ipynb`` (parametrized, so new notebooks are covered).

Static checks: a ``parameters`` cell defining ``profile``, ``device`` and every key of the notebook's
``profiles.yaml`` section (all profiles); the jupytext ``.py`` pair in sync; committed with outputs and
no error output; minimal metadata; a final provenance cell. Slow check: the smoke profile executes end
to end through papermill (outputs go to the temporary folders set by ``conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def _tracked(paths: list[Path]) -> list[Path]:
    """The notebooks git tracks (the committed reference); all of them outside a git checkout. A fork
    (``run_all.py --new``) is checked for outputs once it is committed, after ``--reference --only NN``."""
    try:
        out = subprocess.run(["git", "ls-files", "notebooks"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return paths
    names = {Path(line).name for line in out.stdout.split()}
    return [p for p in paths if p.name in names]


COMMITTED = _tracked(NOTEBOOKS)

from ropelib.notebook_files import (  # noqa: E402
    KERNEL,
    KERNEL_DISPLAY_NAME,
    discover_notebooks,
    error_of,
    parameters_cell,
)
from ropelib.profiles import defined_parameters, load_profiles  # noqa: E402

PROFILES = load_profiles(REPO / "profiles.yaml")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_profiles_yaml_names_existing_notebooks():
    stems = {p.stem for p in discover_notebooks(NOTEBOOKS_DIR)}
    assert set(PROFILES.notebooks) <= stems, sorted(set(PROFILES.notebooks) - stems)
    assert PROFILES.names == ("smoke", "default", "full")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_parameters_cell_defines_every_profile_key(path):
    nb = _read(path)
    assert parameters_cell(nb) is not None, f"{path.name} has no cell tagged 'parameters'"
    defined = defined_parameters(nb)
    assert {"profile", "device"} <= defined
    for profile in PROFILES.names:
        params = PROFILES.parameters(path.stem, profile)
        missing = sorted(set(params) - defined)
        assert not missing, f"{path.name}: profiles.yaml '{profile}' sets {missing}, not in its parameters cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_jupytext_pair_in_sync(path):
    py = path.with_suffix(".py")
    assert py.exists(), f"{path.name} has no py:percent pair {py.name}"
    text_cells = [(c.cell_type, c.source.strip()) for c in jupytext.read(py).cells]
    nb_cells = [(c.cell_type, c.source.strip()) for c in _read(path).cells]
    assert text_cells == nb_cells, f"{py.name} and {path.name} differ: run `jupytext --sync {path}`"


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_with_outputs_and_no_errors(path):
    nb = _read(path)
    code = _code_cells(nb)
    assert code and all(c.execution_count is not None for c in code), f"{path.name} is not fully executed"
    assert error_of(nb) is None, f"{path.name} holds an error output: {error_of(nb)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_metadata_is_minimal(path):
    nb = _read(path)
    assert "papermill" not in nb.metadata and "widgets" not in nb.metadata
    # the project's kernel: the name any environment with ipykernel has, the display name `make venv` installs
    assert nb.metadata["kernelspec"] == {
        "display_name": KERNEL_DISPLAY_NAME,
        "language": "python",
        "name": KERNEL,
    }
    for cell in nb.cells:
        assert not {"papermill", "execution", "ExecuteTime"} & set(cell.metadata), cell.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_ends_with_provenance_cell(path):
    last = _code_cells(_read(path))[-1]
    assert "show_provenance(" in last.source, f"{path.name}: the last code cell must call show_provenance"


#: the notebook whose smoke execution is done twice by the rerun test below (its first execution is that
#: notebook's smoke test: same parameters, same checks), so the suite executes it twice, not three times
RERUN_NOTEBOOK = "05_length_extrapolation"


def _execute_smoke(path: Path, out: Path, device: str = "auto") -> nbformat.NotebookNode:
    """Execute ``path`` with its smoke parameters into ``out``; check it ran every cell without an error."""
    params = {**PROFILES.parameters(path.stem, "smoke"), "profile": "smoke", "device": device}
    # raises PapermillExecutionError (with the failing cell) on any error
    papermill.execute_notebook(
        str(path),
        str(out),
        parameters=params,
        kernel_name="python3",
        language="python",
        cwd=str(NOTEBOOKS_DIR),
        progress_bar=False,
    )
    executed = _read(out)
    assert error_of(executed) is None
    assert all(c.execution_count is not None for c in _code_cells(executed))
    return executed


def test_rerun_notebook_exists():
    assert RERUN_NOTEBOOK in IDS, f"RERUN_NOTEBOOK {RERUN_NOTEBOOK!r} is not one of {IDS}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.stem != RERUN_NOTEBOOK], ids=[i for i in IDS if i != RERUN_NOTEBOOK]
)
def test_smoke_profile_executes(path, tmp_path):
    _execute_smoke(path, tmp_path / path.name)


@pytest.mark.slow
def test_rerun_reads_evaluations_back_and_reproduces_the_results(tmp_path, monkeypatch):
    """The smoke test of ``RERUN_NOTEBOOK`` (executed as ``test_smoke_profile_executes`` executes the
    others), run twice: a second execution with a warm cache reads every evaluation back (ropelib.memo: no
    entry is rewritten, none is added) and writes byte-identical result tables."""
    path = NOTEBOOKS_DIR / f"{RERUN_NOTEBOOK}.ipynb"
    cache = tmp_path / "cache"
    # a fresh evaluation cache; the trained runs come from the session's shared run cache (tests/conftest.py),
    # where the other smoke runs may already have trained them
    shared_runs = Path(os.environ["ROPELIB_CACHE_DIR"]) / "runs"
    shared_runs.mkdir(parents=True, exist_ok=True)
    cache.mkdir()
    (cache / "runs").symlink_to(shared_runs, target_is_directory=True)
    monkeypatch.setenv("ROPELIB_CACHE_DIR", str(cache))
    results, entries = [], {}
    for i in range(2):
        monkeypatch.setenv("ROPELIB_RESULTS_DIR", str(tmp_path / f"results{i}"))
        monkeypatch.setenv("ROPELIB_FIGURES_DIR", str(tmp_path / f"figures{i}"))
        _execute_smoke(path, tmp_path / f"run{i}.ipynb", device="cpu")
        results.append(tmp_path / f"results{i}")
        if i == 0:
            entries = {p: p.stat().st_mtime_ns for p in (cache / "evals").rglob("*.pkl")}
    assert entries, "the first execution stored no evaluation"
    assert {p: p.stat().st_mtime_ns for p in (cache / "evals").rglob("*.pkl")} == entries
    tables = sorted(p.name for p in results[0].glob("*.csv"))
    assert tables and tables == sorted(p.name for p in results[1].glob("*.csv"))
    for name in tables:
        assert (results[0] / name).read_bytes() == (results[1] / name).read_bytes(), name
