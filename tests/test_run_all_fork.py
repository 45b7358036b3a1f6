"""``run_all.py --new NN_name [--from NN]``: a fork in one command (issue 13, item 2).

Fast checks on purpose-made notebooks in a temporary folder (what is written, what is refused), one run of
a fork there (its outputs carry its own name), and a static check of the repository's template.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jupytext
import nbformat
import pytest

from ropelib import pipeline
from ropelib.fork import fork_notebook
from ropelib.notebook_files import KERNEL, effective_input
from ropelib.profiles import load_profiles
from ropelib.run_messages import EXIT_CONFIG
from test_run_all_outputs import REPO, cli, outputs_env, write_notebooks

BASE = """# %% [markdown]
# # 01 base

# %% tags=["parameters"]
profile = "default"
device = "auto"
n = 2

# %% tags=["injected-parameters"]
# Parameters
n = 3
profile = "default"

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ropelib.paths import atomic_write_text, notebook_name, results_dir
from ropelib.plotting import savefig

NOTEBOOK = notebook_name(fallback="01_base")
atomic_write_text(results_dir() / f"{NOTEBOOK}.csv", f"n\\n{n}\\n")
fig, ax = plt.subplots()
savefig(fig, "plot", notebook=NOTEBOOK, caption=f"{NOTEBOOK}, n={n}")
print("done", NOTEBOOK)
"""
PROFILES = """# a comment that must stay
profiles: [smoke, default, full]
notebooks:
  01_base:
    smoke: {n: 1}   # tiny
    default: {n: 3}

  02_other:
    smoke: {n: 5}
# trailing comment
"""


@pytest.fixture
def nbs(tmp_path):
    folder = write_notebooks(tmp_path / "nbs", ["01_base", "02_other"], BASE, PROFILES)
    nb = nbformat.read(folder / "01_base.ipynb", as_version=4)  # as if executed: outputs to clear
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="old output\n")]
    nb.cells[-1].execution_count = 7
    nbformat.write(nb, folder / "01_base.ipynb")
    return folder


def _new(folder, *extra):
    return [*cli(folder, folder.parent / "build"), *extra]


def test_new_writes_the_pair_and_the_profile_section(nbs, capsys):
    rc = pipeline.main(_new(nbs, "--new", "05_my_idea", "--from", "01")[2:])
    out = capsys.readouterr().out
    assert rc == 0
    nb = nbformat.read(nbs / "05_my_idea.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == KERNEL
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    code = "\n".join(c.source for c in nb.cells)
    assert 'notebook_name(fallback="05_my_idea")' in code and "01_base" not in code
    pair = jupytext.read(nbs / "05_my_idea.py")
    assert [c.source for c in pair.cells] == [c.source for c in nb.cells]
    text = (nbs / "profiles.yaml").read_text()
    assert text.startswith(
        PROFILES.split("# trailing")[0].rstrip("\n") + "\n  05_my_idea:\n    smoke: {n: 1}   # tiny\n"
    )
    assert text.endswith("# trailing comment\n")
    profiles = load_profiles(nbs / "profiles.yaml")
    assert profiles.notebooks["05_my_idea"] == profiles.notebooks["01_base"]
    assert "run_all.py --profile smoke --only 05" in out


@pytest.mark.parametrize(
    "name, message",
    [
        ("5_idea", "two digits"),
        ("05-idea", "two digits"),
        ("05_", "two digits"),
        ("../05_idea", "two digits"),
        ("01_base", "already exists"),
        ("02_new", "taken by 02_other"),
    ],
)
def test_new_refuses_bad_or_taken_names(nbs, capsys, name, message):
    before = {p.name: p.read_bytes() for p in nbs.iterdir()}
    rc = pipeline.main(_new(nbs, "--new", name)[2:] + ["--from", "01_base"])
    err = capsys.readouterr().err
    assert rc == EXIT_CONFIG and message in err, err
    assert {p.name: p.read_bytes() for p in nbs.iterdir()} == before


def test_fork_runs_with_its_own_name_and_touches_nothing_else(nbs, tmp_path):
    assert pipeline.main(_new(nbs, "--new", "05_my_idea", "--from", "01_base")[2:]) == 0
    before = {p.name: p.read_bytes() for p in nbs.iterdir()}
    proc = subprocess.run(cli(nbs, tmp_path / "build", "--profile", "smoke", "--only", "05"),
                          env=outputs_env(tmp_path), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sandbox = tmp_path / "build" / "smoke"
    assert (sandbox / "results" / "05_my_idea.csv").read_text() == "n\n1\n"
    captions = json.loads((sandbox / "figures" / "05_my_idea" / "captions.json").read_text())
    assert captions == {"plot": "05_my_idea, n=1"}
    assert sorted(p.name for p in (sandbox / "figures").iterdir()) == ["05_my_idea", "README.md"]
    assert {p.name: p.read_bytes() for p in nbs.iterdir()} == before
    assert not (tmp_path / "figures").exists() and not (tmp_path / "results").exists()


def test_template_takes_its_name_from_its_file():
    nb, _ = effective_input(REPO / "notebooks" / "00_template.ipynb")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'NOTEBOOK = notebook_name(fallback="00_template")' in code
    forked = fork_notebook(nb, "00_template", "08_my_idea")
    code = "\n".join(c.source for c in forked.cells if c.cell_type == "code")
    assert "00_template" not in code and 'notebook_name(fallback="08_my_idea")' in code


def test_notebook_name_order(monkeypatch):
    from ropelib.paths import notebook_name

    monkeypatch.delenv("ROPELIB_NOTEBOOK", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert notebook_name(fallback="03_x") == "test_run_all_fork"  # this file's __file__
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/notebooks/06_y.ipynb")
    assert notebook_name(fallback="03_x") == "test_run_all_fork"
    monkeypatch.setenv("ROPELIB_NOTEBOOK", "04_z")
    assert notebook_name() == "04_z"
    monkeypatch.setenv("ROPELIB_NOTEBOOK", "../04_z")
    with pytest.raises(ValueError, match="ROPELIB_NOTEBOOK"):
        notebook_name()
    monkeypatch.delenv("ROPELIB_NOTEBOOK")
    namespace = {"__name__": "__main__"}
    exec("from ropelib.paths import notebook_name\nname = notebook_name(fallback='03_x')", namespace)
    assert namespace["name"] == "06_y"  # no __file__ in a kernel: Jupyter's session name
    monkeypatch.delenv("JPY_SESSION_NAME")
    exec("name = notebook_name(fallback='03_x')", namespace)
    assert namespace["name"] == "03_x"
    with pytest.raises(ValueError, match="cannot tell"):
        exec("name = notebook_name()", namespace)
