"""run_all.py on fixture notebooks (tests/fixtures/): no engine needed.

One sequential sandbox run of three fixture notebooks (ok, deliberately failing, ok) is shared by most
tests: run_all must go on after the failure, exit non-zero, keep the failed copy, write the executed
notebooks (with their .py pairs), the manifest and the gallery under build/<profile>/, and leave every
source notebook and the reference outputs byte-identical. A second, ``--reference`` run of two of them
replaces the committed notebooks and writes the reference figures, tables and manifest. More in
test_run_all_outputs.py (all-or-nothing outputs, locks), test_run_all_processes.py (process tree) and
test_run_all_fork.py (``--new``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

from ropelib import notebook_files, pipeline  # noqa: E402
from ropelib.gallery import write_gallery  # noqa: E402
from ropelib.notebook_files import discover_notebooks, effective_input, prerequisites, select_notebooks  # noqa: E402
from ropelib.notebook_runs import PROGRESS_FILE, PROGRESS_FILE_ENV, Job, Runner  # noqa: E402
from ropelib.output_trees import OutputTree, read_manifest  # noqa: E402
from ropelib.profiles import defined_parameters, load_profiles  # noqa: E402
from ropelib.run_messages import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, format_seconds  # noqa: E402
from ropelib.run_progress import estimate_left, expected_durations, heartbeat_line  # noqa: E402
from test_run_all_outputs import write_notebooks  # noqa: E402


def _copy(fixture: str, dest: Path) -> Path:
    shutil.copytree(FIXTURES / fixture, dest)
    return dest


def _cli(nb_dir: Path, build: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(REPO / "run_all.py"),
        "--notebooks-dir", str(nb_dir), "--profiles", str(nb_dir / "profiles.yaml"), "--build-dir", str(build),
        *extra,
    ]  # fmt: skip


def _outputs_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROPELIB_FIGURES_DIR=str(root / "figures"),
        ROPELIB_RESULTS_DIR=str(root / "results"),
        ROPELIB_CACHE_DIR=str(root / "cache"),
    )
    return env


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    """Run the three fixture notebooks once (smoke profile, HTML export) and record what was there before."""
    root = tmp_path_factory.mktemp("run_all")
    nb_dir = _copy("notebooks", root / "notebooks")
    before = {p.name: p.read_bytes() for p in nb_dir.iterdir()}
    build = root / "build"
    proc = subprocess.run(
        _cli(nb_dir, build, "--profile", "smoke", "--html"),
        env=_outputs_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    sandbox = build / "smoke"
    manifest = json.loads((sandbox / "results" / "run_manifest_smoke.json").read_text())
    return dict(root=root, nb_dir=nb_dir, build=build, sandbox=sandbox, before=before, proc=proc, manifest=manifest)


@pytest.fixture(scope="module")
def reference_run(fixture_run):
    """After the sandbox run: ``--reference --only 01 03`` on the same notebooks (default profile)."""
    root, nb_dir, build = fixture_run["root"], fixture_run["nb_dir"], fixture_run["build"]
    before = {p.name: p.read_bytes() for p in nb_dir.iterdir()}
    proc = subprocess.run(
        _cli(nb_dir, build, "--reference", "--only", "01", "03"),
        env=_outputs_env(root), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    manifest = json.loads((root / "results" / "run_manifest_default.json").read_text())
    return dict(fixture_run, before=before, proc=proc, manifest=manifest)


def test_failure_does_not_stop_the_run_and_exits_nonzero(fixture_run):
    proc, manifest = fixture_run["proc"], fixture_run["manifest"]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    statuses = {name: entry["status"] for name, entry in manifest["notebooks"].items()}
    assert statuses == {"01_ok": "ok", "02_fail": "failed", "03_ok": "ok"}
    assert manifest["ran"] == ["01_ok", "02_fail", "03_ok"]  # reading order; 03 ran after the failure
    assert "deliberate failure" in manifest["notebooks"]["02_fail"]["error"]
    # summary table at the end
    table = proc.stdout[proc.stdout.index("notebook  status") :]
    assert "02_fail   failed" in table and "01_ok     ok" in table


def test_sandbox_run_leaves_sources_and_reference_untouched(fixture_run):
    nb_dir, root, before = fixture_run["nb_dir"], fixture_run["root"], fixture_run["before"]
    assert {p.name: p.read_bytes() for p in nb_dir.iterdir()} == before
    assert not (root / "figures").exists() and not (root / "results").exists()  # the reference tree


def test_failed_copy_kept_and_staging_removed(fixture_run):
    sandbox = fixture_run["sandbox"]
    assert not (sandbox / "notebooks" / "02_fail.ipynb").exists()
    failed = nbformat.read(sandbox / "failed" / "02_fail.ipynb", as_version=4)
    text = nbformat.writes(failed)
    assert "An Exception was encountered" in text  # papermill's error banner
    assert "deliberate failure in a test fixture" in text
    assert not (sandbox / "running").exists()


def test_successful_notebooks_written_to_the_sandbox_with_pairs_synced(fixture_run):
    nb_dir = fixture_run["sandbox"] / "notebooks"
    assert sorted(p.name for p in nb_dir.iterdir()) == ["01_ok.ipynb", "01_ok.py", "03_ok.ipynb", "03_ok.py"]
    raw = (nb_dir / "01_ok.ipynb").read_bytes()
    nb = nbformat.reads(raw.decode(), as_version=4)
    nbformat.validate(nb)
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "n_points 3" in outputs  # the smoke profile's value was injected
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'profile = "smoke"' in injected[0].source and injected[0].id == "injected-parameters"
    # metadata kept minimal
    assert set(nb.metadata) == {"kernelspec", "language_info"}
    assert all(set(c.metadata) <= {"tags"} for c in nb.cells)
    # the .py pair was rewritten from the executed notebook, in sync, with the source folder's jupytext config
    pair_text = (nb_dir / "01_ok.py").read_text()
    assert not pair_text.startswith("# ---")  # notebook_metadata_filter = "-all"
    pair = jupytext.reads(pair_text, fmt="py:percent")
    assert [(c.cell_type, c.source.strip()) for c in pair.cells] == [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_manifest_records_provenance_parameters_and_figures(fixture_run):
    manifest = fixture_run["manifest"]
    assert manifest["profile"] == "smoke" and manifest["device_requested"] == "auto"
    assert manifest["reference"] is False
    assert manifest["device"].startswith(("cpu", "cuda", "mps"))
    assert "git_commit" in manifest and manifest["versions"]["papermill"]
    assert len(manifest["code_hash"]) == 16 and manifest["notebooks"]["01_ok"]["code_hash"] == manifest["code_hash"]
    assert manifest["notebooks"]["01_ok"]["parameters"] == {"n_points": 3, "profile": "smoke", "device": "auto"}
    assert manifest["notebooks"]["03_ok"]["parameters"]["label"] == "tiny"
    assert manifest["notebooks"]["01_ok"]["figures"] == ["line"]
    assert manifest["notebooks"]["01_ok"]["duration_s"] > 0
    assert "committed" not in manifest["notebooks"]["02_fail"]  # never succeeded: no outputs in place


def test_gallery_and_html(fixture_run):
    sandbox = fixture_run["sandbox"]
    gallery = (sandbox / "figures" / "README.md").read_text()
    assert "![A line through 3 points (smoke profile).](01_ok/line.png)" in gallery  # alt text: the caption
    assert "- [Fixture: a notebook that succeeds and saves one figure](#01_ok) (1 figure)" in gallery  # contents
    assert "## Fixture: a notebook that succeeds and saves one figure" in gallery  # headed by its title
    assert "Notebook: [`01_ok`](../notebooks/01_ok.ipynb)" in gallery  # links to the sandbox's own notebooks
    assert (sandbox / "figures" / "01_ok" / "line.svg").exists()
    html = sandbox / "html"
    assert sorted(p.name for p in html.iterdir()) == ["01_ok.html", "03_ok.html", "index.html"]
    index = (html / "index.html").read_text()
    assert '<a href="01_ok.html">Fixture: a notebook that succeeds and saves one figure</a>' in index
    assert "No description has been provided" not in (html / "01_ok.html").read_text()
    assert "Alternative text is missing" not in fixture_run["proc"].stdout + fixture_run["proc"].stderr


def test_progress_lines_name_index_count_and_estimate(fixture_run):
    """One line per notebook start and end, with its index, the count done, elapsed and the time left:
    unknown here (a first smoke run: no durations recorded for this profile), 0s after the last one."""
    out = fixture_run["proc"].stdout
    assert "[1/3] 01_ok started (cells from .ipynb; last time unknown)" in out
    assert re.search(r"^\[1/3\] 01_ok ok in (?:\d+m)?\d+s, 1 figure\(s\); 1 of 3 done, elapsed (?:\d+m)?\d+s, estimated left unknown$",
                     out, re.MULTILINE), out  # fmt: skip
    assert re.search(r"^\[2/3\] 02_fail FAILED in (?:\d+m)?\d+s, 0 figure\(s\); 2 of 3 done, ", out, re.MULTILINE), out
    assert re.search(
        r"^\[3/3\] 03_ok ok in .*; 3 of 3 done, elapsed (?:\d+m)?\d+s, estimated left 0s$", out, re.MULTILINE
    ), out


def test_expected_durations_from_this_tree_else_the_committed_manifest():
    tree = {"notebooks": {"01_a": {"status": "ok", "duration_s": 10.0},
                          "02_b": {"status": "interrupted", "duration_s": 1.0,
                                   "committed": {"status": "ok", "duration_s": 20.0}},
                          "03_c": {"status": "interrupted", "duration_s": 2.0}}}  # fmt: skip
    committed = {"profile": "default", "notebooks": {"01_a": {"status": "ok", "duration_s": 99.0},
                                                     "03_c": {"status": "ok", "duration_s": 30.0}}}  # fmt: skip
    names = ["01_a", "02_b", "03_c", "04_d"]
    assert expected_durations(names, "default", tree, committed) == {
        "01_a": 10.0, "02_b": 20.0, "03_c": 30.0, "04_d": None}  # fmt: skip
    # another profile: the committed (default) durations say nothing about it
    assert expected_durations(names, "smoke", tree, committed) == {
        "01_a": 10.0, "02_b": 20.0, "03_c": None, "04_d": None}  # fmt: skip
    assert expected_durations(["01_a"], "default", {}, committed) == {"01_a": 99.0}
    # several committed manifests (the redirected reference's, the checkout's): the first that has it
    other = {"profile": "default", "notebooks": {"04_d": {"status": "ok", "duration_s": 7.0}}}
    assert expected_durations(["01_a", "04_d"], "default", {}, committed, other) == {"01_a": 99.0, "04_d": 7.0}
    assert expected_durations(["01_a"], "default", {}) == {"01_a": None}


def test_committed_manifest_gives_durations():
    """The estimate of a default run comes from the committed manifest, in the format run_all writes."""
    committed = read_manifest(REPO / "results" / "run_manifest_default.json")
    names = sorted(committed.get("notebooks", {}))
    expected = expected_durations(names, "default", {}, committed)
    assert names and all(v is not None and v > 0 for v in expected.values()), expected
    assert set(expected_durations(names, "smoke", {}, committed).values()) == {None}


def test_estimate_left():
    expected = {"a": 100.0, "b": 60.0, "c": None}
    assert estimate_left(["a", "b"], expected, {}, 1) == 160.0
    assert estimate_left(["a", "b"], expected, {"a": 30.0}, 1) == 130.0  # a has run for 30 s
    assert estimate_left(["a", "b"], expected, {"a": 500.0}, 1) == 60.0  # over time: 0 left, not < 0
    assert estimate_left(["a", "b"], expected, {}, 4) == 100.0  # never less than the longest
    assert estimate_left(["a", "b", "c"], expected, {}, 1) is None
    assert estimate_left([], expected, {}, 1) == 0.0
    assert format_seconds(None, "unknown") == "unknown" and format_seconds(3725.0) == "62m05s"


def test_heartbeat_shows_the_progress_a_sweep_left(tmp_path, monkeypatch):
    import ropelib.runs

    assert PROGRESS_FILE_ENV == ropelib.runs.PROGRESS_FILE_ENV  # the kernel writes where run_all reads
    tree = OutputTree(False, tmp_path / "n", tmp_path / "f", tmp_path / "r", tmp_path)
    runner = Runner(tree, False, {}, tmp_path / "m.json")
    monkeypatch.setattr(runner, "running_for", lambda: {"04_x": 300.0, "05_y": 5.0})
    (tree.staging / "04_x").mkdir(parents=True)
    (tree.staging / "04_x" / PROGRESS_FILE).write_text("sweep: 6 of 10 runs finished (3 cached, 3 trained)\n")
    line = heartbeat_line(runner, {"04_x": "4/9", "05_y": "5/9"}, {"04_x": 1617.3})
    assert line == ("      ... running [4/9] 04_x for 5m00s of ~26m57s (sweep: 6 of 10 runs finished (3 cached, 3 trained)); "
                    "[5/9] 05_y for 5s of ~unknown")  # fmt: skip


def test_reference_run_replaces_committed_notebooks_and_outputs(reference_run):
    proc, nb_dir, root, before = (
        reference_run["proc"],
        reference_run["nb_dir"],
        reference_run["root"],
        reference_run["before"],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (nb_dir / "02_fail.ipynb").read_bytes() == before["02_fail.ipynb"]  # not selected
    nb = nbformat.read(nb_dir / "01_ok.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert 'profile = "default"' in injected[0].source and "n_points = 10" in injected[0].source
    assert 'profile = "default"' in (nb_dir / "01_ok.py").read_text()
    assert "A line through 10 points (default profile)." in (root / "figures" / "README.md").read_text()
    manifest = reference_run["manifest"]
    assert manifest["reference"] is True and manifest["profile"] == "default"
    assert sorted(manifest["notebooks"]) == ["01_ok", "03_ok"]
    assert manifest["notebooks"]["01_ok"]["figures"] == ["line"]
    assert not (reference_run["build"] / "reference" / "running").exists()


def test_reference_needs_the_reference_profile_and_no_output_dir(tmp_path, capsys):
    err = _config_error(tmp_path / "a", capsys, "--reference", "--profile", "smoke")
    assert "--reference" in err and "'default'" in err and "'smoke'" in err
    err = _config_error(tmp_path / "b", capsys, "--reference", "--output-dir", str(tmp_path / "out"))
    assert "--output-dir" in err


def test_list_shows_parameters_per_profile_and_last_status(reference_run, capsys, monkeypatch):
    nb_dir, build = reference_run["nb_dir"], reference_run["build"]
    for key, value in _outputs_env(reference_run["root"]).items():
        monkeypatch.setenv(key, value)
    rc = pipeline.main(
        [
            "--list",
            "--notebooks-dir",
            str(nb_dir),
            "--profiles",
            str(nb_dir / "profiles.yaml"),
            "--build-dir",
            str(build),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    block = lines[lines.index("01_ok") : lines.index("02_fail")]
    assert any("smoke" in ln and "ok in" in ln and "n_points=3" in ln for ln in block)
    assert any("full" in ln and "never run" in ln and "n_points=100" in ln for ln in block)
    assert any("reference" in ln and "ok in" in ln for ln in block)  # read from the committed manifest
    assert any("smoke" in ln and "failed in" in ln for ln in lines[lines.index("02_fail") :])
    assert any("reference" in ln and "none committed" in ln for ln in lines[lines.index("02_fail") :])


# -- errors detected before anything executes ---------------------------------------------------
def _config_error(tmp_path, capsys, *extra, profiles_text=None):
    nb_dir = _copy("notebooks", tmp_path / "nbs")
    if profiles_text is not None:
        (nb_dir / "profiles.yaml").write_text(profiles_text)
    before = {p.name: p.read_bytes() for p in nb_dir.iterdir()}
    rc = pipeline.main(
        [
            "--notebooks-dir",
            str(nb_dir),
            "--profiles",
            str(nb_dir / "profiles.yaml"),
            "--build-dir",
            str(tmp_path / "build"),
            *extra,
        ]  # fmt: skip
    )
    err = capsys.readouterr().err
    assert rc == EXIT_CONFIG
    assert {p.name: p.read_bytes() for p in nb_dir.iterdir()} == before
    assert not (tmp_path / "build").exists()  # nothing executed
    return err


def test_bad_profile_lists_profiles(tmp_path, capsys):
    err = _config_error(tmp_path, capsys, "--profile", "smok")
    assert "'smok'" in err and "smoke, default, full" in err


def test_parameter_missing_from_parameters_cell_is_an_error(tmp_path, capsys):
    text = "profiles: [smoke, default, full]\nnotebooks:\n  03_ok:\n    smoke: {labl: x}\n"
    err = _config_error(tmp_path, capsys, "--profile", "smoke", profiles_text=text)
    assert "03_ok" in err and "'labl'" in err and "device, label, profile" in err


def test_unknown_profile_in_a_section_is_an_error(tmp_path, capsys):
    text = "profiles: [smoke, default, full]\nnotebooks:\n  03_ok:\n    fast: {label: x}\n"
    err = _config_error(tmp_path, capsys, profiles_text=text)
    assert "'fast'" in err and "smoke, default, full" in err


def test_section_for_missing_notebook_is_an_error(tmp_path, capsys):
    text = "profiles: [smoke, default, full]\nnotebooks:\n  04_gone:\n    smoke: {x: 1}\n"
    err = _config_error(tmp_path, capsys, profiles_text=text)
    assert "04_gone" in err and "01_ok, 02_fail, 03_ok" in err


def test_only_unknown_notebook_is_an_error(tmp_path, capsys):
    err = _config_error(tmp_path, capsys, "--only", "09")
    assert "'09'" in err and "01_ok, 02_fail, 03_ok" in err


def test_profile_may_not_set_injected_names(tmp_path, capsys):
    text = "profiles: [smoke, default, full]\nnotebooks:\n  03_ok:\n    smoke: {device: cpu}\n"
    err = _config_error(tmp_path, capsys, profiles_text=text)
    assert "device" in err and "injects" in err


# -- helpers, unit-level --------------------------------------------------------------------------
def test_select_notebooks_by_number_or_name():
    paths = [Path(f"/x/{n}.ipynb") for n in ("01_a", "02_b", "10_c")]
    assert select_notebooks(paths, ["10", "01_a"]) == [paths[0], paths[2]]
    assert select_notebooks(paths, None) == paths


def test_defined_parameters_reads_assignments_only():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("profile = 'x'\ndevice: str = 'cpu'\na, b = 1, 2\nprint(c)\n# d = 4")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("e = 5"), cell]
    assert defined_parameters(nb) == {"profile", "device", "a", "b"}


def test_py_pair_newer_than_ipynb_wins(tmp_path):
    nb_dir = _copy("notebooks", tmp_path / "nbs")
    py = nb_dir / "03_ok.py"
    py.write_text(py.read_text().replace("print(label, profile, device)", "print('edited')"))
    os.utime(py, (time.time() + 5, time.time() + 5))
    nb, source = effective_input(nb_dir / "03_ok.ipynb")
    assert source == "py" and "print('edited')" in nb.cells[-1].source
    older = (nb_dir / "03_ok.ipynb").stat().st_mtime - 3600  # relative to the .ipynb: copies keep old mtimes
    os.utime(py, (older, older))  # older: the .ipynb wins
    nb, source = effective_input(nb_dir / "03_ok.ipynb")
    assert source == "ipynb" and "print(label, profile, device)" in nb.cells[-1].source


def test_output_dir_redirects_targets(tmp_path):
    nb_dir = _copy("notebooks", tmp_path / "nbs")
    out = tmp_path / "out"
    args = pipeline.parse_args(
        ["--notebooks-dir", str(nb_dir), "--profile", "full", "--only", "01", "03", "--output-dir", str(out)]
    )
    jobs = pipeline.plan(args, load_profiles(nb_dir / "profiles.yaml"))
    assert [(j.source, j.target) for j in jobs] == [
        (nb_dir / "01_ok.ipynb", out / "notebooks" / "01_ok.ipynb"),
        (nb_dir / "03_ok.ipynb", out / "notebooks" / "03_ok.ipynb"),
    ]
    assert jobs[0].parameters == {"n_points": 100, "profile": "full", "device": "auto"}
    assert jobs[1].parameters == {"profile": "full", "device": "auto"}  # no "full" section for 03_ok


#: the modules of the notebook pipeline behind run_all.py, and the library modules they may import
PIPELINE_MODULES = {"pipeline", "profiles", "notebook_files", "output_trees", "notebook_runs", "process_tree",
                    "run_progress", "fork", "run_messages"}  # fmt: skip
PIPELINE_MAY_IMPORT = {"gallery", "paths", "plotting", "provenance"}


def _ropelib_imports(path: Path) -> set[str]:
    """The ``ropelib`` modules a module imports at its top level (``from .x import``, ``from ropelib.x import``)."""
    import ast

    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and (node.level >= 1 or node.module.startswith("ropelib.")):
            found.add(node.module.removeprefix("ropelib.").split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ropelib.")}
    return found


def test_pipeline_modules_keep_their_layer():
    """The pipeline imports only gallery, paths, plotting and provenance of the library (so, as run_all always
    did, not torch), and nothing else in the library imports the pipeline."""
    library = REPO / "ropelib"
    for name in sorted(PIPELINE_MODULES):
        assert _ropelib_imports(library / f"{name}.py") <= PIPELINE_MODULES | PIPELINE_MAY_IMPORT, name
    for path in sorted(library.rglob("*.py")):
        if path.parent != library or path.stem not in PIPELINE_MODULES:
            assert not _ropelib_imports(path) & PIPELINE_MODULES, path.relative_to(REPO)
    for name in sorted(PIPELINE_MAY_IMPORT):
        assert not _ropelib_imports(library / f"{name}.py") - PIPELINE_MAY_IMPORT, name
    text = (REPO / "run_all.py").read_text(encoding="utf-8")
    assert "from ropelib.pipeline import main" in text and len(text.splitlines()) < 80


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_parallel_jobs(tmp_path):
    nb_dir = _copy("interrupt", tmp_path / "nbs")
    before = {p.name: p.read_bytes() for p in nb_dir.iterdir()}
    build = tmp_path / "build"
    proc = subprocess.Popen(
        _cli(nb_dir, build, "--jobs", "2"),
        env=_outputs_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = [build / "default" / "running" / f"{n}_sleep" / f"{n}_sleep.ipynb" for n in ("01", "02")]
    deadline = time.time() + 120
    while time.time() < deadline and not all(p.exists() and "sleeping" in p.read_text() for p in running):
        time.sleep(0.5)
    assert all(p.exists() and "sleeping" in p.read_text() for p in running), "both notebooks should be executing"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, out
    assert "interrupted" in out
    assert {p.name: p.read_bytes() for p in nb_dir.iterdir()} == before
    assert not any(p.exists() for p in running)  # temporary copies removed
    manifest = json.loads((build / "default" / "results" / "run_manifest_default.json").read_text())
    assert {e["status"] for e in manifest["notebooks"].values()} == {"interrupted"}
    assert not (build / "default" / "notebooks").exists()


# -- --jobs: a notebook that reads others' results waits for them ---------------------------------------
def test_prerequisites_the_audit_waits_for_the_notebooks_it_reads(tmp_path, monkeypatch):
    """The audit (07) waits for 04, 05 and 06 when they are in the run, for none of them alone; the other
    notebooks wait for nothing. ``plan`` puts that on each job."""
    paths = discover_notebooks(REPO / "notebooks")
    names = [p.stem for p in paths]
    audit = next(n for n in names if n.startswith("07_"))
    readers = tuple(n for n in names if n[:2] in ("04", "05", "06"))
    assert len(readers) == 3
    waits = prerequisites(names)
    assert waits[audit] == readers
    assert all(not after for name, after in waits.items() if name != audit)
    assert prerequisites([p.stem for p in select_notebooks(paths, ["07"])]) == {audit: ()}  # --only 07
    assert prerequisites([p.stem for p in select_notebooks(paths, ["05", "07"])])[audit] == readers[1:2]
    # plan puts them on the jobs (here a fixture notebook declared to read another's results)
    monkeypatch.setattr(notebook_files, "READS_RESULTS_OF", {"03": ("01",)})
    nb_dir = _copy("notebooks", tmp_path / "nbs")
    profiles = load_profiles(nb_dir / "profiles.yaml")
    args = pipeline.parse_args(["--notebooks-dir", str(nb_dir), "--output-dir", str(tmp_path / "out")])
    assert [(j.name, j.after) for j in pipeline.plan(args, profiles)] == [
        ("01_ok", ()), ("02_fail", ()), ("03_ok", ("01_ok",))]  # fmt: skip
    args = pipeline.parse_args(["--notebooks-dir", str(nb_dir), "--output-dir", str(tmp_path / "out"), "--only", "03"])
    assert [(j.name, j.after) for j in pipeline.plan(args, profiles)] == [("03_ok", ())]


def test_next_job_is_the_first_ready_one_in_reading_order():
    def job(name: str, *after: str) -> Job:
        return Job(Path(f"/x/{name}.ipynb"), Path(f"/y/{name}.ipynb"), nbformat.v4.new_notebook(), "ipynb", {}, after)

    audit, sweep = job("07_audit", "05_a", "06_b"), job("08_sweep")
    assert pipeline._next_job([audit, sweep], {"05_a"}, running=1) is sweep  # 06 still runs: 08 goes first
    assert pipeline._next_job([audit, sweep], {"05_a", "06_b"}, running=1) is audit  # ready: reading order
    assert pipeline._next_job([audit], {"05_a"}, running=1) is None  # waits for 06
    assert pipeline._next_job([audit], set(), running=0) is audit  # nothing left that could finish: runs anyway
    assert pipeline._next_job([], set(), running=0) is None


#: a notebook that writes a table listing the tables it found when it started (its staged copy of the
#: tree's results), after waiting for the file ``wait_for`` and then ``seconds``
READER = """# %% tags=["parameters"]
profile = "default"
device = "auto"
wait_for = ""
seconds = 0.0

# %%
import time
from pathlib import Path

from ropelib.paths import atomic_write_text, notebook_name, results_dir

seen = sorted(p.name for p in results_dir().glob("*.csv"))
deadline = time.time() + 120
while wait_for and not Path(wait_for).exists() and time.time() < deadline:
    time.sleep(0.1)
time.sleep(seconds)
atomic_write_text(results_dir() / f"{notebook_name()}.csv", "seen\\n" + "".join(f"{n}\\n" for n in seen))
"""


def test_parallel_jobs_start_a_notebook_after_those_whose_results_it_reads(tmp_path, monkeypatch, capsys):
    """``--jobs 2``, with 03 declared to read 01's results: 01 and 02 start together, 01 ends a second after
    02 has committed its table, and only then does 03 start (a worker was free since 02 ended), so its
    staged copy of the results holds 01's table. Started when 02 ended, as before, it would not."""
    monkeypatch.setattr(notebook_files, "READS_RESULTS_OF", {"03": ("01",)})
    monkeypatch.setattr(pipeline, "HEARTBEAT_S", 0.5)
    monkeypatch.setattr(pipeline, "check_device", lambda device: None)  # the notebooks need no torch
    for key in ("FIGURES", "RESULTS", "CACHE"):
        monkeypatch.setenv(f"ROPELIB_{key}_DIR", str(tmp_path / key.lower()))
    results = tmp_path / "build" / "default" / "results"
    profiles = (f"profiles: [smoke, default, full]\nnotebooks:\n  01_slow:\n"
                f"    default: {{wait_for: '{results / '02_quick.csv'}', seconds: 1.0}}\n")  # fmt: skip
    nb_dir = write_notebooks(tmp_path / "nbs", ["01_slow", "02_quick", "03_reader"], READER, profiles)
    rc = pipeline.main(["--notebooks-dir", str(nb_dir), "--profiles", str(nb_dir / "profiles.yaml"),
                        "--build-dir", str(tmp_path / "build"), "--jobs", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == EXIT_OK, out
    assert "[3/3] 03_reader starts after 01_slow (it reads their results)" in out
    lines = out.splitlines()

    def line(start: str) -> int:
        return next(i for i, text in enumerate(lines) if text.startswith(start))

    assert line("[2/3] 02_quick started") < line("[1/3] 01_slow ok")  # 02 waits for nothing
    assert line("[2/3] 02_quick ok") < line("[1/3] 01_slow ok") < line("[3/3] 03_reader started"), out
    beats = [text for text in lines[: line("[1/3] 01_slow ok")] if text.startswith("      ... running ")]
    assert beats and all("; waiting [3/3] 03_reader (for 01_slow); elapsed " in text for text in beats), out
    assert (results / "02_quick.csv").read_text() == "seen\n"  # started beside 01, before any table existed
    assert (results / "03_reader.csv").read_text() == "seen\n01_slow.csv\n02_quick.csv\n"


# -- the helpers run_all and the gallery rely on: ropelib.plotting and ropelib.provenance ------------
def test_savefig_writes_png_svg_and_caption(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ropelib import plotting

    monkeypatch.setenv("ROPELIB_FIGURES_DIR", str(tmp_path / "figs"))
    plotting.set_theme()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0], color=plotting.color_for("alibi"))
    png = plotting.savefig(fig, "demo", notebook="99_test", caption="  two\n lines  ")
    second = plotting.savefig(fig, "other", notebook="99_test", caption="another")
    plt.close(fig)
    assert png == tmp_path / "figs" / "99_test" / "demo.png" and second.name == "other.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in png.with_suffix(".svg").read_bytes()
    assert plotting.read_captions("99_test") == {"demo": "two lines", "other": "another"}
    write_gallery()
    gallery = (tmp_path / "figs" / "README.md").read_text()
    assert "(99_test/demo.png)" in gallery and "(99_test/other.png)" in gallery and "two lines" in gallery


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(name="../evil", notebook="00_x", caption="c"),
        dict(name="a/b", notebook="00_x", caption="c"),
        dict(name="fig.png", notebook="00_x", caption="c"),
        dict(name="ok", notebook="../00_x", caption="c"),
        dict(name="ok", notebook="00_x", caption="  "),
    ],
)
def test_savefig_rejects_bad_names(kwargs, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from ropelib import plotting

    monkeypatch.setenv("ROPELIB_FIGURES_DIR", str(tmp_path))
    fig = plt.figure()
    with pytest.raises(ValueError, match="name|caption|notebook"):
        plotting.savefig(fig, **kwargs)
    plt.close(fig)
    assert not any(tmp_path.rglob("*.png"))


def test_colors_fixed_and_distinct_for_encodings():
    from ropelib.plotting import ENCODING_COLORS, color_for

    encodings = ["nope", "sinusoidal", "learned", "t5", "alibi", "rope", "xpos", "kerple", "fire", "randomized"]
    scalings = ["linear", "ntk", "dynamic", "yarn", "llama3", "longrope", "proportional"]
    assert len({ENCODING_COLORS[n] for n in encodings + scalings}) == len(encodings + scalings)
    assert color_for("RoPE") == color_for("rope") == color_for("default")
    assert color_for("my_inline_encoding") == color_for("my_inline_encoding")  # stable for unknown names
    with pytest.raises(ValueError):
        color_for("")


def test_provenance_table_has_the_facts():
    from ropelib.provenance import provenance_table, show_provenance

    assert show_provenance("smoke", "cpu") is None  # shown once in a notebook, not displayed and echoed
    table = provenance_table("smoke", "cpu", steps=3)
    values = table["value"].to_dict()
    assert values["profile"] == "smoke" and values["device"].startswith("cpu")
    assert values["param.steps"] == "3"
    assert values["version.torch"].startswith("2.") and values["version.python"].count(".") == 2
    assert values["date_utc"].endswith("UTC") and int(values["cpu_count"]) >= 1
    assert {"git_commit", "code_hash", "code_dirty", "platform", "version.ropelib", "version.numpy"} <= set(values)


def test_source_state_hashes_code_not_outputs(tmp_path):
    """A reference run rewrites outputs and the notebooks' injected-parameters cells: neither makes the code
    dirty or changes its hash; an edit of a library file does both."""
    from ropelib.provenance import source_state

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "ropelib").mkdir()
    (tmp_path / "ropelib" / "a.py").write_text("x = 1\n")
    (tmp_path / "notebooks").mkdir()
    cell = '# %% tags=["injected-parameters"]\n# Parameters\nprofile = "{}"\n\n'
    text = '# %% tags=["parameters"]\nprofile = "default"\n\n' + cell + "# %%\nprint(1)\n"
    (tmp_path / "notebooks" / "01_x.py").write_text(text.format("default"))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "01_x.csv").write_text("a\n1\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    clean = source_state(tmp_path)
    assert clean["code_dirty"] is False and len(clean["code_hash"]) == 16 and len(clean["commit"]) == 40
    (tmp_path / "results" / "01_x.csv").write_text("a\n2\n")  # an output
    (tmp_path / "notebooks" / "01_x.py").write_text(text.format("smoke"))  # a run-specific cell
    assert source_state(tmp_path) == clean
    (tmp_path / "ropelib" / "a.py").write_text("x = 2\n")
    edited = source_state(tmp_path)
    assert edited["code_dirty"] is True and edited["code_hash"] != clean["code_hash"]
