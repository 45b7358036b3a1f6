"""The notebooks as files, for the pipeline (``ropelib.pipeline``): which ones there are, in which order,
which cells run, and what an executed notebook is committed as.

A notebook is ``notebooks/NN_*.ipynb`` with its jupytext ``py:percent`` pair ``NN_*.py``; a ``.py`` without
its ``.ipynb`` counts too (the ``.ipynb`` is created on its first successful run). They run in number order;
``--only`` selects by number (``02``) or full name (``02_long_range_decay``). If a notebook's ``.py`` pair is
newer than its ``.ipynb`` and their cells differ (it was edited as text), the ``.py`` cells are what runs
(``effective_input``). An executed notebook is committed without papermill's metadata (``clean_notebook``),
with the kernelspec that ``make venv`` installs, and its ``.py`` pair is rewritten from it (``write_pair``).

Some notebooks read the results tables of others: the claims audit (07) reads those of 04, 05 and 06
(``READS_RESULTS_OF``). With ``--jobs`` above 1, such a notebook waits until those of the same run have
finished (``prerequisites``); in reading order it comes after them anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import jupytext
import nbformat
from jupytext.config import load_jupytext_config

from .gallery import notebook_title
from .paths import atomic_write_text
from .run_messages import ConfigError

KERNEL = "python3"
#: the kernel's display name: the one `make venv` installs the venv's kernel under (the name stays
#: ``python3``, so papermill finds a kernel in any environment that has ipykernel)
KERNEL_DISPLAY_NAME = "Python 3 (ropelib)"
NOTEBOOK_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_-]+$")
#: which notebooks read the results tables of which others, by number: the claims audit
#: (``ropelib.claims.AUDIT_NOTEBOOK``) reads the tables of ``ropelib.claims.TABLE_NOTEBOOK``. Written out
#: here because the pipeline may not import the claims (they import torch); tests/test_claims.py checks
#: that it names exactly the notebooks whose tables the claims read.
READS_RESULTS_OF: Mapping[str, tuple[str, ...]] = {"07": ("04", "05", "06")}


def discover_notebooks(notebooks_dir: Path) -> list[Path]:
    """The ``NN_*.ipynb`` notebooks of ``notebooks_dir``, in reading order.

    A ``NN_*.py`` (jupytext percent) without its ``.ipynb`` counts too: the ``.ipynb`` path is returned
    and created from the text form on its first successful run.
    """
    folder = Path(notebooks_dir)
    stems = {p.stem for p in folder.glob("*.ipynb")} | {p.stem for p in folder.glob("*.py")}
    return [folder / f"{stem}.ipynb" for stem in sorted(stems) if NOTEBOOK_RE.match(stem)]


def select_notebooks(paths: Sequence[Path], only: Sequence[str] | None) -> list[Path]:
    """Keep the notebooks named in ``only`` (a number such as ``02`` or a full name such as ``02_decay``)."""
    if not only:
        return list(paths)
    chosen: list[Path] = []
    for item in only:
        key = Path(item).stem
        hits = [p for p in paths if p.stem == key or p.stem.split("_", 1)[0] == key]
        if not hits:
            known = ", ".join(p.stem for p in paths) or "(none)"
            raise ConfigError(f"--only {item!r} matches no notebook; notebooks: {known}")
        chosen.extend(h for h in hits if h not in chosen)
    return [p for p in paths if p in chosen]  # reading order


def prerequisites(names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """For each notebook of a run (``names``, in reading order), the notebooks of the same run it must wait
    for: those before it whose results it reads (``READS_RESULTS_OF``, matched by number). A notebook
    that reads no one's results, or whose sources are not in the run, waits for nothing."""
    waits: dict[str, tuple[str, ...]] = {}
    for i, name in enumerate(names):
        reads = READS_RESULTS_OF.get(name.split("_", 1)[0], ())
        waits[name] = tuple(n for n in names[:i] if n.split("_", 1)[0] in reads)
    return waits


def notebook_titles(notebooks_dir: Path) -> dict[str, str]:
    """``{notebook name: its title}`` (``ropelib.gallery.notebook_title``) of the notebooks in a folder."""
    titles = {}
    for path in discover_notebooks(notebooks_dir) if Path(notebooks_dir).is_dir() else []:
        title = notebook_title(path) if path.exists() else None
        if title:
            titles[path.stem] = title
    return titles


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """The first code cell tagged ``parameters`` (papermill's convention), or ``None``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    return None


def _cell_sources(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def pair_path(ipynb: Path) -> Path:
    """The jupytext ``py:percent`` pair of a notebook."""
    return ipynb.with_suffix(".py")


def read_pair(ipynb: Path) -> nbformat.NotebookNode | None:
    """The notebook read from its ``.py`` pair (jupytext config of its folder), or ``None`` if absent."""
    py = pair_path(ipynb)
    if not py.exists():
        return None
    return jupytext.read(py, config=load_jupytext_config(str(py)))


def write_pair(nb: nbformat.NotebookNode, ipynb: Path, config_from: Path | None = None) -> Path:
    """Write ``nb``'s ``py:percent`` pair next to ``ipynb`` (atomically), honouring the ``jupytext.toml`` of
    ``config_from``'s folder (default: ``ipynb``'s; a sandbox copy uses the committed notebook's)."""
    py = pair_path(ipynb)
    config = load_jupytext_config(str(config_from or ipynb))
    text = jupytext.writes(nb, fmt="py:percent", config=config)
    return atomic_write_text(py, text)


def effective_input(ipynb: Path) -> tuple[nbformat.NotebookNode, str]:
    """The notebook to execute and where its cells came from (``"ipynb"`` or ``"py"``).

    The ``.py`` pair wins when it is newer than the ``.ipynb`` and their cells differ (edited as text),
    or when there is no ``.ipynb`` yet.
    """
    text_nb = read_pair(ipynb)
    if not ipynb.exists():
        if text_nb is None:
            raise ConfigError(f"notebook {ipynb} does not exist")
        return text_nb, "py"
    nb = nbformat.read(ipynb, as_version=4)
    if text_nb is None or _cell_sources(text_nb) == _cell_sources(nb):
        return nb, "ipynb"
    if pair_path(ipynb).stat().st_mtime > ipynb.stat().st_mtime:
        text_nb.metadata = nb.metadata
        return text_nb, "py"
    return nb, "ipynb"


def clean_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip run-specific metadata (papermill timings and paths, widget state, kernelspec noise, jupytext)."""
    meta = nb.metadata
    for key in ("papermill", "widgets", "jupytext", "toc", "vscode"):
        meta.pop(key, None)
    meta["kernelspec"] = {"display_name": KERNEL_DISPLAY_NAME, "language": "python", "name": KERNEL}
    meta["language_info"] = {"name": "python"}
    for cell in nb.cells:
        for key in ("papermill", "execution", "ExecuteTime", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:  # papermill adds empty tag lists
            del cell.metadata["tags"]
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill makes a random id: keep diffs stable
            cell.source = cell.source.rstrip()
        for out in cell.get("outputs", []):
            out.get("metadata", {}).pop("papermill", None)
    return nb


def error_of(nb: nbformat.NotebookNode) -> str | None:
    """``"Ename: evalue"`` of the first error output in ``nb``, or ``None``."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue')}"[:300]
    return None
