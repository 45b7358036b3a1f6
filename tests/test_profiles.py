"""profiles.yaml is checked before any notebook starts (ropelib.profiles.load_profiles / check_profile_values).

Bad values (type from the notebook's parameters-cell default, ranges from ropelib.profiles.PARAMETER_RANGES), YAML
syntax errors and repeated keys are one-line ``ConfigError``s; ``run_all.py`` exits with code 2 on them.
Uses the fixture notebooks of tests/fixtures/ (01_ok defines ``n_points = 5``, 03_ok ``label = "three"``)
plus a notebook written here; no notebook executes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

from ropelib.profiles import Profiles, expected_value, load_profiles, parameter_defaults  # noqa: E402
from ropelib.run_messages import ConfigError  # noqa: E402

HEADER = "profiles: [smoke, default, full]\nnotebooks:\n"

#: parameters cell of the notebook written by ``nb_dir``: one parameter of each kind
PARAMETERS = """\
profile = "default"
device = "auto"
steps = 100
scaling_factor = 2.0
multipliers = [1.0, 2.0]
retrieval_depths = [0.0, 0.5]
methods = ["none", "linear"]
finetune_retrieval = True
seeds = None
threads = 1
computed = 2 ** 10
"""


@pytest.fixture
def nb_dir(tmp_path: Path) -> Path:
    """A copy of the fixture notebooks plus 05_kinds (parameters cell above), without a profiles file."""
    folder = tmp_path / "nbs"
    shutil.copytree(FIXTURES / "notebooks", folder)
    (folder / "profiles.yaml").unlink()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(PARAMETERS)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(steps)")]
    nbformat.write(nb, folder / "05_kinds.ipynb")
    return folder


def _load(nb_dir: Path, body: str) -> Profiles:
    path = nb_dir / "profiles.yaml"
    path.write_text(HEADER + body, encoding="utf-8")
    return load_profiles(path, notebooks_dir=nb_dir)


def _error(nb_dir: Path, body: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(nb_dir, body)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- the repository's own file ----------------------------------------------------------------------
def test_repository_profiles_are_valid():
    profiles = load_profiles(REPO / "profiles.yaml", notebooks_dir=REPO / "notebooks")
    assert profiles.names == ("smoke", "default", "full")
    assert profiles.parameters("00_template", "smoke")["eval_windows"] == 2


# -- values checked against the parameters cell ----------------------------------------------------
def test_good_values_pass(nb_dir):
    body = (
        "  05_kinds:\n"
        "    smoke: {steps: 3, scaling_factor: 4, multipliers: [1, 1.5], retrieval_depths: [1.0], methods: [yarn], finetune_retrieval: false,"
        " seeds: [0, 1], threads: null, computed: 7}\n"
        "    default: {seeds: null, threads: 2}\n"
        "  01_ok:\n    smoke: {n_points: 3}\n"
    )
    profiles = _load(nb_dir, body)
    assert profiles.parameters("05_kinds", "smoke")["scaling_factor"] == 4  # an int where the default is a float


@pytest.mark.parametrize(
    ("setting", "expected", "got"),
    [
        ("steps: two", "a positive integer", "'two'"),
        ("steps: 2.0", "a positive integer", "2.0"),  # a float where the default is an int
        ("steps: 0", "a positive integer", "0"),
        ("steps: true", "a positive integer", "True"),  # a bool is not an int
        ("scaling_factor: -1.0", "a positive number", "-1.0"),
        ("scaling_factor: .inf", "a positive number", "inf"),
        ("multipliers: 2.0", "a non-empty list of positive numbers", "2.0"),
        ("multipliers: []", "a non-empty list of positive numbers", "[]"),
        ("multipliers: [1.0, x]", "a non-empty list of positive numbers", "[1.0, 'x']"),
        ("retrieval_depths: [0.5, 1.5]", "a non-empty list of numbers in [0, 1]", "[0.5, 1.5]"),
        ("methods: linear", "a non-empty list of strings", "'linear'"),
        ("finetune_retrieval: 1", "a boolean", "1"),
        ("threads: 0", "a positive integer or null", "0"),
        ("steps: null", "a positive integer", "None"),
    ],
)
def test_bad_value_is_one_line_naming_notebook_profile_and_key(nb_dir, setting, expected, got):
    message = _error(nb_dir, f"  05_kinds:\n    default: {{{setting}}}\n")
    key = setting.split(":")[0]
    assert message == f"{nb_dir / 'profiles.yaml'}: 05_kinds.default.{key}: expected {expected}, got {got}"


def test_yaml_exponent_without_point_gets_a_hint(nb_dir):
    message = _error(nb_dir, "  05_kinds:\n    smoke: {scaling_factor: 1e-3}\n")
    assert "05_kinds.smoke.scaling_factor: expected a positive number, got '1e-3'" in message
    assert "1.0e-3" in message


def test_string_parameter_and_fixture_notebooks(nb_dir):
    assert "03_ok.smoke.label: expected a string, got 3" in _error(nb_dir, "  03_ok:\n    smoke: {label: 3}\n")
    assert "01_ok.full.n_points: expected an integer, got 2.5" in _error(
        nb_dir, "  01_ok:\n    full: {n_points: 2.5}\n"
    )


def test_names_and_notebooks_it_cannot_check_are_left_to_plan(nb_dir):
    # a name the cell does not define, a section of a missing notebook: check_parameters / plan report them
    _load(nb_dir, "  03_ok:\n    smoke: {labl: 3}\n  09_gone:\n    smoke: {x: 1}\n")
    # without notebooks_dir only the layout is checked (as before)
    path = nb_dir / "profiles.yaml"
    path.write_text(HEADER + "  05_kinds:\n    smoke: {steps: two}\n", encoding="utf-8")
    assert load_profiles(path).parameters("05_kinds", "smoke") == {"steps": "two"}


def test_py_pair_newer_than_ipynb_gives_the_defaults(nb_dir):
    """The types come from the cells that will run (ropelib.notebook_files.effective_input), here an edited .py pair."""
    py = nb_dir / "03_ok.py"
    py.write_text(py.read_text().replace('label = "three"', "label = 3"))
    later = (nb_dir / "03_ok.ipynb").stat().st_mtime + 10
    os.utime(nb_dir / "03_ok.py", (later, later))
    assert "03_ok.smoke.label: expected an integer, got 'x'" in _error(nb_dir, "  03_ok:\n    smoke: {label: x}\n")


def test_parameter_defaults_reads_literals_only():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("a = 1\nb: float = 2.0\nc = 2 ** 3\nd, e = 1, 2\nf = [1, 2]\nf = len('x')\n")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    assert parameter_defaults(nb) == {"a": 1, "b": 2.0}


def test_expected_value_from_defaults():
    assert expected_value("steps", 10).describe() == "a positive integer"
    assert expected_value("seed", 0).accepts(0)  # no range for a seed
    assert expected_value("x", [1, 2.5]).describe() == "a non-empty list of numbers"
    assert expected_value("x", []).accepts([])  # an empty default allows an empty list
    assert expected_value("x", None).accepts({"anything": 1})
    assert not expected_value("x", "a").accepts(None)


# -- YAML syntax and repeated keys -------------------------------------------------------------------
def test_yaml_syntax_error_names_file_and_line(nb_dir):
    message = _error(nb_dir, "  01_ok:\n    smoke: {n_points: 3\n")
    assert message.startswith(f"{nb_dir / 'profiles.yaml'}:5:") and "invalid YAML" in message
    assert "<unicode string>" not in message


def test_duplicate_key_is_rejected(nb_dir):
    message = _error(nb_dir, "  01_ok:\n    smoke: {n_points: 3, n_points: 4}\n")
    assert message.startswith(f"{nb_dir / 'profiles.yaml'}:4:") and "duplicate key 'n_points'" in message
    message = _error(nb_dir, "  01_ok:\n    smoke: {n_points: 3}\n  01_ok:\n    full: {n_points: 4}\n")
    assert "duplicate key '01_ok' (first at line 3)" in message


def test_bad_layouts(nb_dir):
    path = nb_dir / "profiles.yaml"
    path.write_text("- smoke\n- default\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="top-level keys"):
        load_profiles(path)
    path.write_text("profiles: [smoke, smoke]\nnotebooks: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="lists a name twice"):
        load_profiles(path)
    with pytest.raises(ConfigError, match="not found"):
        load_profiles(nb_dir / "missing.yaml")


# -- the command line --------------------------------------------------------------------------------
def test_command_line_exit_code_2_and_one_line(nb_dir, tmp_path):
    (nb_dir / "profiles.yaml").write_text(HEADER + "  01_ok:\n    smoke: {n_points: two}\n", encoding="utf-8")
    build = tmp_path / "build"
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_all.py"), "--notebooks-dir", "nbs", "--profiles", "nbs/profiles.yaml",
         "--build-dir", str(build), "--profile", "smoke"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "run_all: error: nbs/profiles.yaml: 01_ok.smoke.n_points: expected an integer, got 'two'"
    ]
    assert not build.exists()  # nothing executed
