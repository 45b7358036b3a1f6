#!/usr/bin/env python
"""Run the notebook collection through papermill: ``python run_all.py [--profile smoke|default|full]``.

    python run_all.py [--profile smoke|default|full] [--only 02 05 …] [--device auto|cpu|cuda|mps]
                      [--jobs N] [--html] [--list] [--reference] [--output-dir DIR]
    python run_all.py --new NN_my_idea [--from 00_template]
    python run_all.py --export-html [--only 02 05 …] [--output-dir DIR]

Each ``notebooks/NN_*.ipynb`` runs in order, in its own papermill subprocess (kernel ``python3``), with
the chosen profile's parameters from ``profiles.yaml`` plus ``profile`` and ``device`` injected
(docs/design.md §11, "run_all.py"). Every parameter is checked against the notebook's ``parameters`` cell
before anything executes.

Where a run writes (``OutputTree``). Only ``--reference`` (profile ``default`` only; with ``--only``, just
those notebooks) replaces the committed notebooks, ``figures/`` and ``results/``. Any other run writes a
sandbox: ``build/<profile>/`` (or ``--output-dir``) with its own ``notebooks/``, ``figures/`` (and gallery)
and ``results/`` (and manifest), and leaves every tracked file as it was. The run cache (``cache/``) is
shared: it is content-addressed and not an output.

All or nothing. A notebook executes in a staging folder (``<work>/running/<name>/``; the kernel's
``ROPELIB_FIGURES_DIR``/``ROPELIB_RESULTS_DIR`` point there, ``ROPELIB_NOTEBOOK`` names it). Only when it
succeeds do its tables, its figure folder, the executed notebook (papermill's metadata stripped) with its
jupytext pair, its HTML, the gallery and its manifest entry (``results/run_manifest_<profile>.json``) move
into the tree. A failure changes none of them, keeps the failed copy as ``<work>/failed/<name>.ipynb`` and
the run goes on; the next run removes what a killed run left. One run per tree at a time: an exclusive
``flock`` on the tree's results folder; a second run is refused with exit code 3.

Processes. papermill runs in its own session; run_all records the kernel's session too and, on Ctrl-C,
SIGTERM, SIGHUP, a dead kernel or its own exit, kills every process of those sessions (papermill, kernel,
training workers). If run_all itself is killed, papermill gets SIGTERM (Linux ``PR_SET_PDEATHSIG``) and
takes its kernel's session down. The next run resumes: finished training runs come back from the run
cache of ``ropelib.runs``.

Progress. One line when a notebook starts (``[3/9] 04_train_tiny_models started``) and one when it ends
(``[3/9] 04_train_tiny_models ok in 26m57s, 6 figure(s); 5 of 9 done, elapsed 28m10s, estimated left
7m40s``); every ``HEARTBEAT_S`` seconds a line on what is running, with the progress line of the
notebook's current ``ropelib.runs.sweep`` (the kernel writes it to ``$ROPELIB_PROGRESS_FILE`` in the
staging folder). The estimate adds up each remaining notebook's last duration: from this tree's
manifest, else (profile ``default``) the committed one; "unknown" if a notebook has none.

Gallery and pages. After each notebook the tree's gallery (``figures/README.md``) is regenerated
(``ropelib.gallery.write_gallery``: contents, one section per notebook under its title, figures with
alt text and captions). ``--html`` also writes ``<work>/html/<name>.html`` and ``index.html``;
``--export-html`` executes nothing and converts the committed notebooks (or ``--only`` those) into
``build/html/`` (or ``--output-dir``), every image with its figure's caption as alt text.

If a notebook's ``.py`` pair is newer than its ``.ipynb`` and their cells differ (it was edited as
text), the ``.py`` cells are what runs. ``--new`` forks a notebook (``new_notebook``).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import jupytext
import nbformat
import yaml
from jupytext.config import load_jupytext_config

from ropelib.gallery import export_html, notebook_title, write_gallery, write_html_index
from ropelib.paths import atomic_write_bytes, atomic_write_text, cache_dir, figures_dir, results_dir
from ropelib.provenance import device_description, package_versions, source_state

try:  # the lock of an output tree (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:  # finding a notebook's processes (a dependency of ipykernel, so always there in practice)
    import psutil
except ImportError:  # pragma: no cover
    psutil = None  # type: ignore[assignment]

REPO_ROOT = Path(__file__).resolve().parent
DEVICES = ("auto", "cpu", "cuda", "mps")
KERNEL = "python3"
#: the kernel's display name: the one `make venv` installs the venv's kernel under (the name stays
#: ``python3``, so papermill finds a kernel in any environment that has ipykernel)
KERNEL_DISPLAY_NAME = "Python 3 (ropelib)"
#: parameters run_all injects into every notebook (a notebook's parameters cell must define them)
INJECTED = ("profile", "device")
NOTEBOOK_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_-]+$")
#: seconds between "still running" lines while a notebook executes
HEARTBEAT_S = 60.0
#: the kernel's environment variable naming the file where ``ropelib.runs.sweep`` keeps its progress line
#: (``ropelib.runs.PROGRESS_FILE_ENV``; not imported, which would import torch); the heartbeat shows it
PROGRESS_FILE_ENV = "ROPELIB_PROGRESS_FILE"
#: seconds a notebook's processes get between SIGTERM and SIGKILL when run_all stops them
GRACE_S = 10.0
#: seconds the processes a finished notebook left behind (e.g. a dead kernel's workers) get before SIGKILL
KILL_GRACE_S = 3.0
#: the profile of the committed outputs; only ``--reference`` (with this profile) writes them
REFERENCE_PROFILE = "default"
#: signals that stop a run cleanly (children killed, nothing half-written kept)
STOP_SIGNALS = (
    (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGINT, signal.SIGTERM)
)

# Exit codes
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class ConfigError(ValueError):
    """A bad profile, notebook selection or parameter name: reported before anything executes."""


class BusyError(RuntimeError):
    """Another run_all holds the lock of the output tree this run would write."""


# --------------------------------------------------------------------------------------------------
# profiles.yaml
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profiles:
    """The contents of ``profiles.yaml``: profile names and ``{notebook: {profile: {param: value}}}``."""

    names: tuple[str, ...]
    notebooks: Mapping[str, Mapping[str, Mapping[str, Any]]]

    def parameters(self, notebook: str, profile: str) -> dict[str, Any]:
        """The parameters ``profiles.yaml`` sets for ``notebook`` under ``profile`` (without profile/device)."""
        if profile not in self.names:
            raise ConfigError(f"unknown profile {profile!r}; profiles in profiles.yaml: {', '.join(self.names)}")
        return dict(self.notebooks.get(notebook, {}).get(profile) or {})


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated within one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first_line[key] + 1})", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _shown(path: Path) -> str:
    """``path`` as the user would type it: relative to the working directory when inside it."""
    rel = os.path.relpath(Path(path).absolute())
    return str(path) if rel.startswith("..") else rel


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    """One line: ``file:line:column: <PyYAML's problem> (<its context>, line n)``."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{_shown(path)}:{mark.line + 1}:{mark.column + 1}" if mark is not None else _shown(path)
    problem = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        problem += f" ({context}" + (f" at line {context_mark.line + 1})" if context_mark is not None else ")")
    return ConfigError(f"{where}: invalid YAML: {' '.join(problem.split())}")


def load_profiles(path: Path, notebooks_dir: Path | None = None) -> Profiles:
    """Read and validate ``profiles.yaml`` (format in its header comment).

    Rejected with a one-line ``ConfigError`` (exit code 2 in ``main``): a YAML syntax error (with file, line
    and column), a key repeated in one mapping, a bad layout. With ``notebooks_dir``, every value is also
    checked against the notebook's parameters cell (``check_profile_values``), so that a bad value stops the
    run before any notebook starts rather than inside a notebook after its models have trained.
    """
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except FileNotFoundError:
        raise ConfigError(f"profiles file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{_shown(path)}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    path = _shown(path)
    if not isinstance(raw, dict) or set(raw) - {"profiles", "notebooks"}:
        got = sorted(map(str, raw)) if isinstance(raw, dict) else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: top-level keys must be 'profiles' and 'notebooks', got {got}")
    names = raw.get("profiles")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: 'profiles' must be a non-empty list of names, got {names!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: 'profiles' lists a name twice: {names!r}")
    sections = raw.get("notebooks") or {}
    if not isinstance(sections, dict):
        raise ConfigError(f"{path}: 'notebooks' must map notebook names to profile sections")
    notebooks: dict[str, dict[str, dict[str, Any]]] = {}
    for nb_name, section in sections.items():
        section = section or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: notebooks.{nb_name} must map profile names to parameters")
        unknown = sorted(map(str, set(section) - set(names)))
        if unknown:
            raise ConfigError(
                f"{path}: notebooks.{nb_name} has unknown profile(s) {', '.join(map(repr, unknown))}; "
                f"profiles: {', '.join(names)}"
            )
        for prof, params in section.items():
            if params is not None and not isinstance(params, dict):
                raise ConfigError(f"{path}: notebooks.{nb_name}.{prof} must be a mapping of parameters, got {params!r}")
            reserved = sorted(set(params or {}) & set(INJECTED))
            if reserved:
                raise ConfigError(
                    f"{path}: notebooks.{nb_name}.{prof} sets {', '.join(reserved)}, which run_all injects itself"
                )
        notebooks[str(nb_name)] = {p: dict(v or {}) for p, v in section.items()}
    profiles = Profiles(tuple(names), notebooks)
    if notebooks_dir is not None:
        check_profile_values(profiles, Path(notebooks_dir), path)
    return profiles


# Value checks. The type of a parameter is that of its default in the notebook's parameters cell; the ranges
# below are what a default cannot say. A name means the same thing in every notebook that has it.
POSITIVE = "positive"
PROBABILITY = "probability"
PARAMETER_RANGES: dict[str, str] = {
    **dict.fromkeys(
        [  # sizes, counts, lengths, steps, threads, factors (lists: each item)
            "steps",
            "batch_size",
            "seq_len",
            "d_model",
            "n_layers",
            "n_heads",
            "head_dim",
            "eval_multiples",
            "eval_windows",
            "length",
            "original_length",
            "scaling_factor",
            "dynamic_lengths",
            "max_symbolic_dim",
            "head_dims",
            "bases",
            "r_max_fig2",
            "r_max_far",
            "n_random",
            "mc_head_dim",
            "train_steps",
            "train_seq_len",
            "train_batch_size",
            "extension_factor",
            "toy_head_dim",
            "toy_base",
            "toy_length",
            "toy_factor",
            "reference_factor",
            "dynamic_multiples",
            "jobs",
            "cpu_threads",
            "curve_every",
            "smooth_steps",
            "eval_threads",
            "attention_samples",
            "bench_rounds",
            "bench_steps",
            "sinusoid_scales",
            "multipliers",
            "eval_tokens",
            "position_windows",
            "position_bins",
            "retrieval_samples",
            "algorithmic_samples",
            "factors",
            "finetune_factor",
            "finetune_steps",
            "finetune_batch_size",
            "finetune_lr",
            "threads",
            "score_length",
            "check_head_dim",
            "attention_multipliers",
            "attention_windows",
            "band_windows",
            "needle_samples",
        ],
        POSITIVE,
    ),  # fmt: skip
    **dict.fromkeys(
        [
            "sliding_stride_fraction",
            "retrieval_depths",
            "quality_tolerance",
            "retention_fraction",
            "min_learned_accuracy",
            "tolerance",
        ],
        PROBABILITY,
    ),  # fmt: skip
}
#: parameters whose notebook documents ``None`` as a meaningful value besides its default's type
NULLABLE = frozenset({"threads", "seeds"})

_NOUNS: dict[type, tuple[str, str]] = {
    bool: ("a boolean", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    dict: ("a mapping", "mappings"),
}


@dataclass(frozen=True)
class Expected:
    """What a profile may set one parameter to (``expected_value``): its type, a range, list or not."""

    kind: type | None  # bool, int, float (int accepted), str, dict; None: anything
    is_list: bool = False
    non_empty: bool = False  # lists: at least one item (the default has one)
    rule: str | None = None  # POSITIVE (> 0) or PROBABILITY (in [0, 1]); numbers only
    nullable: bool = False

    def describe(self) -> str:
        """E.g. ``a positive integer``, ``a non-empty list of numbers in [0, 1]``."""
        singular, plural = _NOUNS.get(self.kind, ("anything", "values"))
        numeric = self.kind in (int, float)
        if numeric and self.rule == POSITIVE:
            singular, plural = f"a positive {singular.split(' ', 1)[1]}", f"positive {plural}"
        elif numeric and self.rule == PROBABILITY:
            singular, plural = f"{singular} in [0, 1]", f"{plural} in [0, 1]"
        text = f"a {'non-empty ' if self.non_empty else ''}list of {plural}" if self.is_list else singular
        return text + (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable or (self.kind is None and not self.is_list)
        if not self.is_list:
            return self._item_ok(value)
        return isinstance(value, list) and (bool(value) or not self.non_empty) and all(map(self._item_ok, value))

    def _item_ok(self, value: Any) -> bool:
        if self.kind is None:
            return True
        if self.kind in (int, float):
            allowed = int if self.kind is int else (int, float)
            if isinstance(value, bool) or not isinstance(value, allowed) or not float("-inf") < value < float("inf"):
                return False
            return {POSITIVE: value > 0, PROBABILITY: 0 <= value <= 1}.get(self.rule, True)
        return isinstance(value, self.kind)


def expected_value(name: str, default: Any) -> Expected:
    """``Expected`` of parameter ``name`` from its notebook default and ``PARAMETER_RANGES`` / ``NULLABLE``.

    A float default accepts an integer; a list default gives a list whose items have the type of the default's
    items (ints and floats mixed: numbers; other mixtures or an empty default: anything), non-empty when the
    default is; a ``None`` default accepts anything.
    """
    rule, nullable = PARAMETER_RANGES.get(name), name in NULLABLE

    def kind_of(values: Sequence[Any]) -> type | None:
        kinds = {type(v) for v in values}
        if kinds == {int, float}:
            return float
        kind = kinds.pop() if len(kinds) == 1 else None
        return kind if kind in _NOUNS else None

    if default is None:
        return Expected(None, nullable=True)
    if isinstance(default, (list, tuple)):
        return Expected(kind_of(default), is_list=True, non_empty=bool(default), rule=rule, nullable=nullable)
    return Expected(kind_of([default]), rule=rule, nullable=nullable)


def parameter_defaults(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """Default values of the notebook's parameters cell: each top-level ``name = <Python literal>``.

    A name whose (last) value is not a literal (an expression, a call) is left out, so its type is not checked.
    """
    cell = parameters_cell(nb)
    if cell is None:
        return {}
    try:
        body = ast.parse(cell.source).body
    except SyntaxError:  # check_parameters reports it
        return {}
    defaults: dict[str, Any] = {}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        try:
            defaults[name] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            defaults.pop(name, None)
    return defaults


def check_profile_values(profiles: Profiles, notebooks_dir: Path, path: Path | str = "profiles.yaml") -> None:
    """Raise ``ConfigError`` for the first value in ``profiles`` that its notebook's parameters cell rules out.

    The message is one line: ``profiles.yaml: <notebook>.<profile>.<key>: expected <what>, got <value>``.
    Sections of unknown notebooks and names the cell does not define are left to ``plan``/``check_parameters``.
    """
    paths = {p.stem: p for p in discover_notebooks(notebooks_dir)}
    for nb_name, section in profiles.notebooks.items():
        if nb_name not in paths:
            continue
        defaults = parameter_defaults(effective_input(paths[nb_name])[0])
        for prof, params in section.items():
            for key, value in params.items():
                if key not in defaults:
                    continue
                expected = expected_value(key, defaults[key])
                if not expected.accepts(value):
                    hint = ""
                    if isinstance(value, str) and expected.kind in (int, float) and "e" in value.lower():
                        try:
                            float(value)
                            hint = f" (YAML reads {value} as a string: give it a decimal point, e.g. 1.0e-3)"
                        except ValueError:
                            pass
                    raise ConfigError(
                        f"{path}: {nb_name}.{prof}.{key}: expected {expected.describe()}, got {value!r}{hint}"
                    )


# --------------------------------------------------------------------------------------------------
# Notebooks: discovery, the parameters cell, the jupytext pair, metadata
# --------------------------------------------------------------------------------------------------
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


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """The first code cell tagged ``parameters`` (papermill's convention), or ``None``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    return None


def defined_parameters(nb: nbformat.NotebookNode) -> set[str]:
    """Names assigned at top level of the notebook's ``parameters`` cell (empty set if it has none)."""
    cell = parameters_cell(nb)
    if cell is None:
        return set()
    names: set[str] = set()
    try:
        body = ast.parse(cell.source).body
    except SyntaxError as exc:
        raise ConfigError(f"the parameters cell is not valid Python: {exc}") from None
    for node in body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    names.add(sub.id)
    return names


def check_parameters(name: str, nb: nbformat.NotebookNode, params: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` unless the parameters cell defines every injected name."""
    if parameters_cell(nb) is None:
        raise ConfigError(f"notebook {name} has no code cell tagged 'parameters' (papermill injects after it)")
    defined = defined_parameters(nb)
    missing = sorted(set(params) - defined)
    if missing:
        raise ConfigError(
            f"notebook {name}: parameter(s) {', '.join(map(repr, missing))} (from profiles.yaml or run_all) are not "
            f"defined in its parameters cell; it defines: {', '.join(sorted(defined)) or '(nothing)'}"
        )


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


# --------------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One notebook to execute."""

    source: Path  # the committed notebook
    target: Path  # where the executed notebook goes on success
    input_nb: nbformat.NotebookNode
    cells_from: str
    parameters: dict[str, Any]

    @property
    def name(self) -> str:
        return self.source.stem


@dataclass
class Outcome:
    """What happened to one notebook."""

    name: str
    status: str  # ok | failed | interrupted
    duration_s: float
    parameters: dict[str, Any]
    figures: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    error: str | None = None
    failed_copy: str | None = None
    log: str | None = None
    cells_from: str = "ipynb"
    finished_utc: str = ""


# --------------------------------------------------------------------------------------------------
# Output trees: where a run writes, its lock, staging and leftovers
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputTree:
    """Where one run writes: executed notebooks (with their ``.py`` pairs), figures (with the gallery
    ``README.md``), result tables (with the manifest ``run_manifest_<profile>.json``) and a work folder
    (``running/`` for staging, ``failed/``, ``logs/``, ``html/``).

    The reference tree (``--reference``) is the committed ``notebooks/``, ``ropelib.paths.figures_dir()``
    and ``results_dir()``, with the work folder ``build/reference/``. Every other run writes a sandbox
    tree ``<root>/notebooks``, ``<root>/figures``, ``<root>/results`` (work folder ``<root>``), where
    ``<root>`` is ``--output-dir`` or ``build/<profile>/``.
    """

    reference: bool
    notebooks: Path
    figures: Path
    results: Path
    work: Path

    def manifest(self, profile: str) -> Path:
        return self.results / f"run_manifest_{profile}.json"

    @property
    def staging(self) -> Path:
        return self.work / "running"


def output_tree(args: argparse.Namespace) -> OutputTree:
    """The tree this run writes (``ConfigError`` for ``--reference`` with another profile or ``--output-dir``,
    or a sandbox that would land on committed outputs)."""
    if args.reference:
        if args.profile != REFERENCE_PROFILE:
            raise ConfigError(
                f"--reference replaces the committed outputs, which come from the {REFERENCE_PROFILE!r} profile; "
                f"got --profile {args.profile!r} (without --reference this run writes build/{args.profile}/)"
            )
        if args.output_dir is not None:
            raise ConfigError("--reference writes the committed notebooks, figures and results; drop --output-dir")
        return OutputTree(
            True, args.notebooks_dir.resolve(), figures_dir(), results_dir(), args.build_dir / "reference"
        )
    root = Path(args.output_dir or args.build_dir / args.profile).resolve()
    tree = OutputTree(False, root / "notebooks", root / "figures", root / "results", root)
    committed = {args.notebooks_dir.resolve(), figures_dir(), results_dir()}
    committed |= {REPO_ROOT / "notebooks", REPO_ROOT / "figures", REPO_ROOT / "results"}
    for folder in (tree.notebooks, tree.figures, tree.results):
        if folder in committed:
            raise ConfigError(
                f"--output-dir {root} would write the committed {folder}; only --reference replaces those"
            )
    return tree


def check_writable(tree: OutputTree) -> None:
    """``ConfigError`` (one line) unless every folder of ``tree`` can be written (probed with a temporary file,
    so a read-only file system is caught even for root)."""
    for folder in (tree.notebooks, tree.figures, tree.results, tree.work):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"cannot write outputs to {folder}: {existing} is not a folder")
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            raise ConfigError(f"cannot write outputs to {folder}: {exc.strerror or exc} ({existing})") from None


def lock_tree(tree: OutputTree) -> int | None:
    """Take the tree's lock: an exclusive ``fcntl.flock`` on its results folder, held (by the returned file
    descriptor) until this process exits, however it exits. A second run on the same tree is refused at once
    with ``BusyError``; runs on different trees (a sandbox and the reference, two profiles) proceed."""
    if fcntl is None:  # not POSIX: no lock
        return None
    tree.results.mkdir(parents=True, exist_ok=True)
    fd = os.open(tree.results, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        what = "the reference outputs" if tree.reference else str(tree.work)
        raise BusyError(
            f"another run_all is writing {what} (it holds the lock on {tree.results}); wait for it to finish, "
            f"or run with another --profile or --output-dir"
        ) from None
    return fd


def clean_leftovers(tree: OutputTree) -> list[str]:
    """Remove what a killed run left behind (called under the lock): its staging folders, a figure folder
    swap cut between its two renames (put back), temporary files of atomic writes. Returns what it did."""
    done: list[str] = []
    if tree.staging.exists():
        shutil.rmtree(tree.staging, ignore_errors=True)
        done.append(f"removed {tree.staging}")
    figure_folders = [p for p in tree.figures.iterdir() if p.is_dir()] if tree.figures.is_dir() else []
    for folder in figure_folders:
        if folder.name.startswith(".") and folder.name.endswith(".new"):
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"removed {folder}")
        elif folder.name.startswith(".") and folder.name.endswith(".replaced"):
            final = folder.parent / folder.name[1 : -len(".replaced")]
            if final.exists():
                shutil.rmtree(folder, ignore_errors=True)
                done.append(f"removed {folder}")
            else:
                os.replace(folder, final)
                done.append(f"restored {final}")
    for folder in [tree.results, tree.notebooks, tree.figures, *figure_folders]:
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
            tmp.unlink(missing_ok=True)
            done.append(f"removed {tmp}")
    return done


def _copy_folder(src: Path, dest: Path, skip: str | None = None) -> None:
    """Copy ``src`` to ``dest`` (keeping modification times), leaving out ``src/skip`` and hidden entries."""
    dest.mkdir(parents=True, exist_ok=True)
    if not src.is_dir():
        return
    for entry in src.iterdir():
        if entry.name == skip or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, ignore=shutil.ignore_patterns(".*"))
        else:
            shutil.copy2(entry, dest / entry.name)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def _move_into(src: Path, dest: Path) -> None:
    """Move the file ``src`` to ``dest`` atomically (a copy and ``os.replace`` across file systems)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        atomic_write_bytes(dest, src.read_bytes())


def _swap_folder(src: Path | None, dest: Path) -> None:
    """Replace the folder ``dest`` by ``src`` (``None``: remove ``dest``): ``src`` goes next to ``dest`` as
    ``.<name>.new``, ``dest`` is renamed ``.<name>.replaced``, the new one takes its name and the old one
    is deleted. ``clean_leftovers`` repairs a swap a kill cut short."""
    new = dest.parent / f".{dest.name}.new"
    old = dest.parent / f".{dest.name}.replaced"
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src is not None:
        try:
            os.replace(src, new)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.copytree(src, new)
    if dest.exists():
        os.replace(dest, old)
    if src is not None:
        os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# The process tree: papermill, its kernel, the kernel's workers
# --------------------------------------------------------------------------------------------------
#: how papermill is started: ``python -c _PAPERMILL_BOOT <run_all's pid> <papermill arguments>``. On Linux
#: it gets SIGTERM when run_all dies, even by SIGKILL (``PR_SET_PDEATHSIG``); on SIGTERM or SIGHUP it kills
#: every process in the sessions of its descendants (the kernel leads its own session and its training
#: workers share it) before it exits, so nothing of a notebook outlives its papermill.
_PAPERMILL_BOOT = r"""
import os, signal, sys

def _down(signum, frame):
    try:
        import psutil
        me = os.getpid()
        sids = set()
        for child in psutil.Process(me).children(recursive=True):
            try:
                sids.add(os.getsid(child.pid))
            except OSError:
                pass
        sids.discard(os.getsid(0))
        for pid in psutil.pids():
            try:
                if pid != me and os.getsid(pid) in sids:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    finally:
        os._exit(128 + signum)

for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _down)
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):  # run_all died before prctl
        os._exit(1)
del sys.argv[1]
sys.argv[0] = "papermill"
import runpy
runpy.run_module("papermill", run_name="__main__", alter_sys=True)
"""


def _sessions_below(pid: int) -> set[int]:
    """Session ids of ``pid``'s descendants (empty without psutil, or when ``pid`` is gone)."""
    if psutil is None:
        return set()
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return set()
    sids = set()
    for child in children:
        try:
            sids.add(os.getsid(child.pid))
        except OSError:
            pass
    return sids


def session_members(sids: set[int]) -> list[int]:
    """Live (not zombie) processes in the sessions ``sids``, never this process or its own session."""
    own = os.getsid(0)
    sids = {s for s in sids if s and s != own}
    if not sids:
        return []
    pids = psutil.pids() if psutil is not None else [int(p) for p in os.listdir("/proc") if p.isdigit()]
    members = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            if os.getsid(pid) not in sids:
                continue
            if psutil is not None and psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, Exception):  # gone meanwhile (psutil.Error is not an OSError)
            continue
        members.append(pid)
    return members


def kill_sessions(sids: set[int], grace_s: float) -> None:
    """SIGTERM every process in the sessions ``sids``, SIGKILL what is still there after ``grace_s``, and
    repeat until none is left (a pool may start a replacement worker meanwhile)."""
    deadline = time.monotonic() + grace_s
    for _ in range(int(grace_s * 10) + 50):
        members = session_members(sids)
        if not members:
            return
        sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
        for pid in members:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        time.sleep(0.1)


class Runner:
    """Executes jobs in papermill subprocesses into staging folders and commits each notebook's outputs as
    one set; ``stop()`` kills every running notebook's process tree."""

    def __init__(
        self,
        tree: OutputTree,
        html: bool,
        manifest: dict[str, Any],
        manifest_path: Path,
        order: Mapping[str, str] | None = None,
        expected: Mapping[str, float | None] | None = None,
    ) -> None:
        self.tree = tree
        self.html = html
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.write_errors: list[str] = []
        self.stopping = threading.Event()
        self._procs: dict[str, tuple[subprocess.Popen, set[int]]] = {}
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._started = time.time()
        self._order = dict(order or {})  # name -> "i/n", for progress lines
        self._expected = dict(expected or {})  # name -> last duration in seconds
        self._job_started: dict[str, float] = {}  # name -> time.time() when it started

    def running(self) -> list[str]:
        """Names of the notebooks executing now."""
        with self._lock:
            return sorted(self._procs)

    def running_for(self) -> dict[str, float]:
        """Seconds each notebook executing now has been running."""
        now = time.time()
        with self._lock:
            return {name: now - self._job_started.get(name, now) for name in sorted(self._procs)}

    def progress_of(self, name: str) -> str | None:
        """The last progress line the notebook's kernel left (a ``ropelib.runs.sweep`` in it), or ``None``."""
        try:
            lines = (self.tree.staging / name / PROGRESS_FILE).read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        return lines[-1][:200] if lines else None

    def stop(self) -> None:
        """Kill every running notebook's process tree (papermill, kernel, workers): SIGTERM, then SIGKILL
        after ``GRACE_S``."""
        self.stopping.set()
        with self._lock:
            running = list(self._procs.values())
        sids: set[int] = set()
        for proc, sessions in running:
            sids |= sessions | _sessions_below(proc.pid) | {proc.pid}
        kill_sessions(sids, GRACE_S)
        for proc, _ in running:
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def run(self, job: Job) -> Outcome:
        """Execute ``job`` into its staging folder; on success move its outputs into the tree."""
        if self.stopping.is_set():
            return Outcome(job.name, "interrupted", 0.0, job.parameters, cells_from=job.cells_from)
        tree = self.tree
        stage = tree.staging / job.name
        shutil.rmtree(stage, ignore_errors=True)
        # the kernel reads the tree's current figures and tables (notebook 07 audits the others') from copies
        # and writes into them; its own figure folder starts empty, so it ends up holding exactly this run's
        _copy_folder(tree.figures, stage / "figures", skip=job.name)
        _copy_folder(tree.results, stage / "results")
        before = _snapshot(stage / "results")
        logs = tree.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        tmp_in = stage / f"{job.name}.input.ipynb"
        tmp_out = stage / f"{job.name}.ipynb"
        log_path = logs / f"{job.name}.log"
        nbformat.write(clean_notebook(job.input_nb), tmp_in)
        env = dict(os.environ)
        env.update(
            ROPELIB_FIGURES_DIR=str(stage / "figures"),
            ROPELIB_RESULTS_DIR=str(stage / "results"),
            ROPELIB_CACHE_DIR=str(cache_dir()),  # shared: content-addressed, not an output
            ROPELIB_NOTEBOOK=job.name,
            **{PROGRESS_FILE_ENV: str(stage / PROGRESS_FILE)},
        )
        cmd = [
            sys.executable, "-c", _PAPERMILL_BOOT, str(os.getpid()), str(tmp_in), str(tmp_out),
            "--kernel", KERNEL,
            "--cwd", str(job.source.parent),
            "--parameters_yaml", yaml.safe_dump(job.parameters, sort_keys=True),
            "--no-progress-bar",
            "--log-level", "WARNING",
        ]  # fmt: skip
        started = time.time()
        with self._lock:
            self._job_started[job.name] = started
        _say(f"[{self._order.get(job.name, '?')}] {job.name} started (cells from .{job.cells_from}; "
             f"last time {_fmt_s(self._expected.get(job.name), 'unknown')})")  # fmt: skip
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            sessions = {proc.pid}  # papermill's own session, then the kernel's
            with self._lock:
                self._procs[job.name] = (proc, sessions)
            if self.stopping.is_set():  # stop() ran between the check above and Popen
                kill_sessions(sessions, GRACE_S)
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        sessions |= _sessions_below(proc.pid)
            finally:
                with self._lock:
                    self._procs.pop(job.name, None)
                # whatever the kernel left behind (e.g. the workers of a kernel that died) goes too
                kill_sessions(sessions, KILL_GRACE_S)
        duration = time.time() - started
        outcome = Outcome(
            job.name, "ok", round(duration, 2), job.parameters, log=str(log_path), cells_from=job.cells_from,
            finished_utc=_utc_now(),
        )  # fmt: skip
        try:
            if self.stopping.is_set() and (rc != 0 or not tmp_out.exists()):
                outcome.status = "interrupted"
            elif rc != 0 or not tmp_out.exists():
                outcome.status = "failed"
                outcome.error = f"papermill exited with code {rc}: {_last_line(log_path)} (log: {log_path})"
                if tmp_out.exists():
                    executed = nbformat.read(tmp_out, as_version=4)
                    outcome.error = error_of(executed) or outcome.error
                    failed = tree.work / "failed" / f"{job.name}.ipynb"
                    failed.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp_out, failed)
                    outcome.failed_copy = str(failed)
            else:
                executed = clean_notebook(nbformat.read(tmp_out, as_version=4))
                error = error_of(executed)  # e.g. a cell tagged raises-exception: still a failure here
                if error:
                    raise RuntimeError(f"executed notebook holds an error output: {error}")
                with self._commit_lock:
                    self._commit(job, executed, stage, before, outcome)
        except Exception as exc:  # a post-processing failure is a notebook failure, never a crash of the run
            outcome.status = "failed"
            outcome.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            with self._commit_lock:
                self._record(outcome)
        return outcome

    def _commit(
        self,
        job: Job,
        executed: nbformat.NotebookNode,
        stage: Path,
        before: Mapping[str, tuple[int, int]],
        outcome: Outcome,
    ) -> None:
        """Move one successful notebook's outputs into the tree: the tables it wrote (new or changed since
        staging; the other notebooks' tables stay as they are), its figure folder (replaced as a whole), the
        executed notebook and its ``.py`` pair, its HTML; then the gallery. Called under the commit lock."""
        tree = self.tree
        results = stage / "results"
        written = sorted(rel for rel, st in _snapshot(results).items() if before.get(rel) != st)
        figures = stage / "figures" / job.name
        for rel in written:
            _move_into(results / rel, tree.results / rel)
        _swap_folder(figures if figures.is_dir() else None, tree.figures / job.name)
        atomic_write_text(job.target, nbformat.writes(executed) + "\n")
        write_pair(executed, job.target, config_from=job.source)
        if self.html:  # the same pages as --export-html, from this run's notebook and captions
            html_dir = tree.work / "html"
            export_html(executed, html_dir / f"{job.name}.html", tree.figures, job.name)
            write_html_index(html_dir, _titles(tree.notebooks), heading=f"Notebooks ({_portable(str(tree.work))})")
        write_gallery(tree.notebooks, tree.figures)
        outcome.tables = written
        folder = tree.figures / job.name
        outcome.figures = sorted(p.stem for p in folder.glob("*.png")) if folder.is_dir() else []

    def _record(self, outcome: Outcome) -> None:
        """Update the notebook's manifest entry and write the manifest (under the commit lock). A failed or
        interrupted notebook's entry keeps, as ``committed``, the entry of the outputs still in place."""
        notebooks = self.manifest.setdefault("notebooks", {})
        previous = notebooks.get(outcome.name) or {}
        entry = {
            "status": outcome.status,
            "duration_s": outcome.duration_s,
            "finished_utc": outcome.finished_utc,
            "parameters": outcome.parameters,
            "figures": outcome.figures,
            "tables": outcome.tables,
            "error": outcome.error,
            "failed_copy": _portable(outcome.failed_copy),
            "cells_from": outcome.cells_from,
            **{k: self.manifest.get(k) for k in ("git_commit", "code_hash", "code_dirty")},
        }
        if outcome.status != "ok":
            committed = previous if previous.get("status") == "ok" else previous.get("committed")
            if committed:
                entry["committed"] = {k: v for k, v in committed.items() if k != "committed"}
        notebooks[outcome.name] = entry
        self.manifest["notebooks"] = dict(sorted(notebooks.items()))
        if outcome.name not in self.manifest.setdefault("ran", []):
            self.manifest["ran"].append(outcome.name)
        self.manifest["duration_s"] = round(time.time() - self._started, 2)
        try:
            atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=2) + "\n")
        except OSError as exc:
            message = f"cannot write the manifest {self.manifest_path}: {exc.strerror or exc}"
            if message not in self.write_errors:
                self.write_errors.append(message)
                _say(f"run_all: error: {message}")


_PRINT_LOCK = threading.Lock()
#: the file in a notebook's staging folder where its kernel's sweeps report progress (``PROGRESS_FILE_ENV``)
PROGRESS_FILE = "progress.txt"


def _say(message: str) -> None:
    with _PRINT_LOCK:
        print(message, flush=True)


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip()[:200] if lines else "(no output)"


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_s(seconds: float | None, unknown: str = "?") -> str:
    if seconds is None:
        return unknown
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# --------------------------------------------------------------------------------------------------
# Manifest, summary, gallery
# --------------------------------------------------------------------------------------------------
def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path`` (empty dict if none or unreadable)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _portable(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def new_manifest(args: argparse.Namespace, tree: OutputTree, previous: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest this run starts from: provenance of this run, the entries of notebooks not run this
    time kept from ``previous``. ``Runner._record`` adds each notebook's entry as it finishes."""
    source = source_state()
    return {
        "profile": args.profile,
        "reference": tree.reference,
        "device_requested": args.device,
        "device": device_description(args.device),
        "git_commit": source["commit"],
        "code_hash": source["code_hash"],
        "code_dirty": source["code_dirty"],
        "versions": package_versions(),
        "started_utc": _utc_now(),
        "duration_s": 0.0,
        "jobs": args.jobs,
        "ran": [],
        "notebooks": dict(previous.get("notebooks", {})),
    }


def summary_table(outcomes: Sequence[Outcome]) -> str:
    """A plain-text table: notebook, status, duration, figures written (and the error of a failure)."""
    rows = [("notebook", "status", "duration", "figures")]
    rows += [(o.name, o.status, _fmt_s(o.duration_s), str(len(o.figures))) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for o in outcomes:
        if o.error:
            lines.append(f"  {o.name}: {o.error}" + (f"  (failed copy: {o.failed_copy})" if o.failed_copy else ""))
    return "\n".join(lines)


def _titles(notebooks_dir: Path) -> dict[str, str]:
    """``{notebook name: its title}`` (``ropelib.gallery.notebook_title``) of the notebooks in a folder."""
    titles = {}
    for path in discover_notebooks(notebooks_dir) if Path(notebooks_dir).is_dir() else []:
        title = notebook_title(path) if path.exists() else None
        if title:
            titles[path.stem] = title
    return titles


def export_committed_html(args: argparse.Namespace) -> int:
    """``--export-html [--only NN ...] [--output-dir DIR]``: convert the committed executed notebooks to HTML
    pages in ``DIR`` (default ``build/html/``) without running them, with alt text on every image (from
    ``figures/``'s captions, ``ropelib.gallery.export_html``), and write ``DIR/index.html`` linking them."""
    for flag, given in (("--reference", args.reference), ("--html", args.html), ("--list", args.list)):
        if given:
            raise ConfigError(f"--export-html executes nothing; drop {flag}")
    notebooks_dir = args.notebooks_dir.resolve()
    paths = select_notebooks(discover_notebooks(notebooks_dir), args.only)
    if not paths:
        raise ConfigError(f"no NN_*.ipynb notebooks in {notebooks_dir}")
    out = Path(args.output_dir or args.build_dir / "html").resolve()
    committed = {notebooks_dir, figures_dir(), results_dir(), REPO_ROOT / "notebooks", REPO_ROOT / "figures",
                 REPO_ROOT / "results"}  # fmt: skip
    if out in committed:
        raise ConfigError(f"--output-dir {out} is a folder of committed outputs; pick another (default: build/html/)")
    written = 0
    for i, path in enumerate(paths, 1):
        if not path.exists():
            _say(f"[{i}/{len(paths)}] {path.stem}: skipped (only its .py exists: it has never been executed)")
            continue
        page = export_html(nbformat.read(path, as_version=4), out / f"{path.stem}.html", figures_dir(), path.stem)
        _say(f"[{i}/{len(paths)}] {path.stem} -> {_shown(page)}")
        written += 1
    index = write_html_index(out, _titles(notebooks_dir), heading="Notebooks (committed outputs)")
    print(f"run_all: {written} page(s) written; index: {_shown(index)}", flush=True)
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# A fork in one command: --new NN_my_idea [--from 00_template]
# --------------------------------------------------------------------------------------------------
def _python_command() -> str:
    """How to call this Python in printed commands: ``.venv/bin/python`` inside the checkout, else ``python``."""
    exe = Path(sys.executable)
    try:
        exe.absolute().relative_to(REPO_ROOT)
    except ValueError:
        return "python"
    return os.path.relpath(exe.absolute())


def fork_notebook(nb: nbformat.NotebookNode, old: str, new: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` for a new notebook ``new``: no injected-parameters cell, outputs and execution counts
    cleared, minimal metadata with the kernelspec, and the quoted name ``"<old>"`` in code cells (e.g. a
    ``notebook_name(fallback=...)`` or a ``NOTEBOOK = ...`` constant) replaced by ``"<new>"``."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            for quote in ('"', "'"):
                cell.source = cell.source.replace(f"{quote}{old}{quote}", f"{quote}{new}{quote}")
    return clean_notebook(nb)


def profile_section_with(text: str, old: str, new: str) -> str | None:
    """``profiles.yaml`` text with notebook ``old``'s section copied as ``new``'s, appended as the last entry
    of ``notebooks:`` (the rest of the file, comments included, is left as it is). ``None`` when ``old`` has
    no section; ``ConfigError`` when the file's layout is not ``notebooks:`` with two-space sections."""
    lines = text.splitlines(keepends=True)
    top = [i for i, ln in enumerate(lines) if re.match(r"notebooks:\s*(#.*)?$", ln)]
    if not top:
        raise ConfigError("cannot find a top-level 'notebooks:' line in the profiles file: add the section by hand")
    start = top[0] + 1
    end = next((i for i in range(start, len(lines)) if lines[i].strip() and not lines[i][0].isspace()
                and not lines[i].startswith("#")), len(lines))  # fmt: skip
    header = re.compile(rf"  (['\"]?){re.escape(old)}\1:(\s|$)")
    first = next((i for i in range(start, end) if header.match(lines[i])), None)
    if first is None:
        return None
    last = first + 1
    while last < end and (not lines[last].strip() or lines[last].startswith("   ")):
        last += 1
    while last > first + 1 and not lines[last - 1].strip():
        last -= 1
    section = [lines[first].replace(old, new, 1)] + lines[first + 1 : last]
    section[-1] = section[-1].rstrip("\n") + "\n"
    insert = 1 + max(i for i in range(start, end) if lines[i].startswith("  ") and lines[i].strip())
    if not lines[insert - 1].endswith("\n"):
        lines[insert - 1] += "\n"
    return "".join(lines[:insert] + section + lines[insert:])


def new_notebook(args: argparse.Namespace) -> int:
    """``--new NN_my_idea [--from 00_template]``: write ``notebooks/NN_my_idea.py`` and ``.ipynb`` from the
    source notebook (``fork_notebook``), copy its ``profiles.yaml`` section, print the next command."""
    name = args.new
    notebooks_dir = args.notebooks_dir.resolve()
    if not NOTEBOOK_RE.match(name):
        raise ConfigError(
            f"--new {name!r}: a notebook name is two digits, '_' and letters, digits, '_' or '-', e.g. 08_my_idea"
        )
    paths = discover_notebooks(notebooks_dir)
    for suffix in (".py", ".ipynb"):
        if (notebooks_dir / f"{name}{suffix}").exists():
            raise ConfigError(f"--new {name!r}: {notebooks_dir / (name + suffix)} already exists")
    taken = [p.stem for p in paths if p.stem[:2] == name[:2]]
    if taken:
        used = ", ".join(sorted({p.stem[:2] for p in paths}))
        raise ConfigError(
            f"--new {name!r}: number {name[:2]} is taken by {taken[0]} (--only {name[:2]} must pick one notebook); "
            f"numbers in use: {used}"
        )
    sources = select_notebooks(paths, [args.source])
    if len(sources) != 1:
        raise ConfigError(f"--from {args.source!r} matches {len(sources)} notebooks; give the full name")
    source = sources[0]
    profiles_text = args.profiles.read_text(encoding="utf-8")
    profiles = load_profiles(args.profiles)
    if name in profiles.notebooks:
        raise ConfigError(f"--new {name!r}: {args.profiles} already has a section {name!r}")
    new_text = profile_section_with(profiles_text, source.stem, name)
    nb, _ = effective_input(source)
    forked = fork_notebook(nb, source.stem, name)
    target = notebooks_dir / f"{name}.ipynb"
    written: list[Path] = []
    try:
        written.append(atomic_write_text(target, nbformat.writes(forked) + "\n"))
        written.append(write_pair(forked, target, config_from=source))
        if new_text is not None:
            atomic_write_text(args.profiles, new_text)
            load_profiles(args.profiles, notebooks_dir=notebooks_dir)  # the copy must pass the same checks
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if new_text is not None:
            atomic_write_text(args.profiles, profiles_text)
        raise
    shown = [os.path.relpath(p) for p in written]
    print(f"run_all: created {shown[1]} and {shown[0]} from {source.stem}", flush=True)
    if new_text is not None:
        print(f"run_all: added a {name} section to {os.path.relpath(args.profiles)}, copied from {source.stem}'s")
    else:
        print(
            f"run_all: {source.stem} has no section in {os.path.relpath(args.profiles)}; add one for {name} if it has knobs"
        )
    print(f"next: {_python_command()} {os.path.relpath(REPO_ROOT / 'run_all.py')} --profile smoke --only {name[:2]}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="default", help="profile from profiles.yaml (default: default)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (number or full name)")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="device injected into every notebook")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at the same time (separate processes)")
    parser.add_argument("--html", action="store_true",
                        help="also export each executed notebook to <work folder>/html/ (with index.html)")  # fmt: skip
    parser.add_argument("--export-html", action="store_true",
                        help="execute nothing: convert the committed notebooks (or --only those) to HTML pages with "
                             "alt text on every image, plus index.html, in --output-dir (default: build/html/)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list notebooks, their parameters and last status")
    parser.add_argument("--reference", action="store_true",
                        help=f"replace the committed notebooks, figures/ and results/ (profile {REFERENCE_PROFILE!r} "
                             "only; with --only, just those notebooks' outputs)")  # fmt: skip
    parser.add_argument("--new", metavar="NN_NAME", help="start a new notebook NN_NAME from --from (a fork) and exit")
    parser.add_argument("--from", dest="source", default="00_template", metavar="NOTEBOOK",
                        help="the notebook --new copies (default: 00_template)")  # fmt: skip
    parser.add_argument("--notebooks-dir", type=Path, default=REPO_ROOT / "notebooks", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write this run's notebooks, figures, results and manifest under this folder "
                             "(default: build/<profile>/); with --export-html, the folder of the pages")  # fmt: skip
    parser.add_argument("--profiles", type=Path, default=REPO_ROOT / "profiles.yaml", help="profiles file")
    parser.add_argument("--build-dir", type=Path, default=REPO_ROOT / "build",
                        help="sandbox trees build/<profile>/ and the reference run's work folder (default: build/)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    return args


def check_device(device: str) -> None:
    """Fail early (``ConfigError``) when the requested device is not available here."""
    import torch

    available = ["cpu"]
    if torch.cuda.is_available():
        available.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        available.append("mps")
    if device != "auto" and device not in available:
        raise ConfigError(
            f"device {device!r} is not available on this machine; available: auto, {', '.join(available)}"
        )


def plan(args: argparse.Namespace, profiles: Profiles, tree: OutputTree | None = None) -> list[Job]:
    """Every job of this run, validated (profile, notebook names, parameters) before anything executes."""
    tree = tree or output_tree(args)
    notebooks_dir = args.notebooks_dir.resolve()
    paths = discover_notebooks(notebooks_dir)
    if not paths:
        raise ConfigError(f"no NN_*.ipynb notebooks in {notebooks_dir}")
    stray = sorted(set(profiles.notebooks) - {p.stem for p in paths})
    if stray:
        raise ConfigError(
            f"profiles.yaml has section(s) for unknown notebook(s) {', '.join(stray)}; "
            f"notebooks: {', '.join(p.stem for p in paths)}"
        )
    jobs = []
    for path in select_notebooks(paths, args.only):
        params = profiles.parameters(path.stem, args.profile)
        params.update(profile=args.profile, device=args.device)
        nb, cells_from = effective_input(path)
        check_parameters(path.stem, nb, params)
        jobs.append(Job(path, tree.notebooks / path.name, nb, cells_from, params))
    return jobs


def _status(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "never run"
    return f"{entry['status']} in {_fmt_s(entry.get('duration_s'))} at {entry.get('finished_utc', '?')}"


def list_notebooks(args: argparse.Namespace, profiles: Profiles) -> str:
    """The ``--list`` text: each notebook, its committed reference run (from the committed manifest), and per
    profile its parameters and the last status in that profile's sandbox tree."""
    lines = []
    reference_path = results_dir() / f"run_manifest_{REFERENCE_PROFILE}.json"
    reference_manifest = read_manifest(reference_path)
    reference = reference_manifest.get("notebooks", {})
    roots = {p: Path(args.output_dir or args.build_dir / p) for p in profiles.names}
    manifests = {p: read_manifest(roots[p] / "results" / f"run_manifest_{p}.json") for p in profiles.names}
    for path in discover_notebooks(args.notebooks_dir):
        lines.append(path.stem)
        ref = reference.get(path.stem)
        if ref and ref.get("status") != "ok":
            ref = ref.get("committed")
        commit = (ref or {}).get("git_commit") or (reference_manifest.get("git_commit") if ref else None)
        commit = f", commit {commit[:10]}" if commit else ""
        lines.append(f"  {'reference':<8} {_status(ref) + commit if ref else 'none committed'}")
        for prof in profiles.names:
            params = profiles.notebooks.get(path.stem, {}).get(prof) or {}
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "(no parameters)"
            last = manifests[prof].get("notebooks", {}).get(path.stem)
            lines.append(f"  {prof:<8} last: {_status(last):<40} {shown}")
    if not lines:
        return f"no NN_*.ipynb notebooks in {args.notebooks_dir}"
    return "\n".join(lines + ["", f"reference: {_portable(str(reference_path))}; sandboxes: "
                              f"{', '.join(_portable(str(r)) or '' for r in roots.values())}"])  # fmt: skip


def _ignore_signals() -> None:
    """During the shutdown, a second Ctrl-C (or SIGTERM/SIGHUP) must not cut the cleanup short."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def execute(args: argparse.Namespace, tree: OutputTree, jobs: Sequence[Job]) -> tuple[list[Outcome], bool, Runner]:
    """Run the jobs (``--jobs`` at a time); returns the outcomes in reading order, whether interrupted, and
    the runner (its manifest and write errors). Every child process is gone when this returns."""
    manifest_path = tree.manifest(args.profile)
    manifest = new_manifest(args, tree, read_manifest(manifest_path))
    reference_folders = dict.fromkeys([results_dir(), REPO_ROOT / "results"])  # the reference's, the checkout's
    committed = [read_manifest(folder / f"run_manifest_{REFERENCE_PROFILE}.json") for folder in reference_folders]
    expected = expected_durations([j.name for j in jobs], args.profile, manifest, *committed)
    order = {j.name: f"{i}/{len(jobs)}" for i, j in enumerate(jobs, 1)}
    runner = Runner(tree, args.html, manifest, manifest_path, order, expected)
    outcomes: dict[str, Outcome] = {}
    started = time.time()
    total = len(jobs)
    interrupted = False
    where = "the committed reference outputs" if tree.reference else f"{_portable(str(tree.work))}/"
    print(f"run_all: profile={args.profile} device={args.device} ({manifest['device']}) "
          f"notebooks={total} jobs={args.jobs}; writing {where}", flush=True)  # fmt: skip

    def left() -> str:
        unfinished = [j.name for j in jobs if j.name not in outcomes]
        return _fmt_s(estimate_left(unfinished, expected, runner.running_for(), args.jobs), "unknown")

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures: dict[Future, Job] = {}
        for job in jobs:
            futures[pool.submit(runner.run, job)] = job
        pending = set(futures)
        last_beat = time.monotonic()
        try:
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    o = fut.result()
                    outcomes[o.name] = o
                    elapsed = time.time() - started
                    status = o.status if o.status == "ok" else o.status.upper()
                    _say(f"[{order[o.name]}] {o.name} {status} in {_fmt_s(o.duration_s)}, {len(o.figures)} figure(s); "
                         f"{len(outcomes)} of {total} done, elapsed {_fmt_s(elapsed)}, estimated left {left()}"
                         + (f"\n      {o.error}" if o.error else ""))  # fmt: skip
                if time.monotonic() - last_beat > HEARTBEAT_S:
                    last_beat = time.monotonic()
                    _say(heartbeat_line(runner, order, expected) + f"; elapsed {_fmt_s(time.time() - started)}, "
                         f"estimated left {left()}")  # fmt: skip
        except KeyboardInterrupt:
            interrupted = True
            _ignore_signals()
            print("\nrun_all: interrupted; stopping the notebooks and their processes (no outputs of an unfinished "
                  "notebook are kept) ...", flush=True)  # fmt: skip
            for fut in futures:
                fut.cancel()
            runner.stop()
            for fut in futures:
                if not fut.cancelled():
                    o = fut.result()
                    outcomes[o.name] = o
        finally:  # an unexpected error here must not leave notebooks running either
            if not interrupted and pending:
                _ignore_signals()
                for fut in futures:
                    fut.cancel()
                runner.stop()
    ordered = [outcomes[j.name] for j in jobs if j.name in outcomes]
    return ordered, interrupted, runner


def expected_durations(
    names: Sequence[str], profile: str, manifest: Mapping[str, Any], *committed: Mapping[str, Any]
) -> dict[str, float | None]:
    """Each notebook's expected duration, for the estimate of the time left: its ``duration_s`` in this
    tree's manifest (the last completed execution, ok or failed), else in the first ``committed`` manifest
    (the reference outputs' ``results/run_manifest_default.json``: ``results_dir()``'s, then the checkout's)
    of the same profile that has it (so a first sandbox run of ``default`` has an estimate), else ``None``."""
    sources = [manifest.get("notebooks", {})]
    sources += [c.get("notebooks", {}) for c in committed if c.get("profile", REFERENCE_PROFILE) == profile]
    expected: dict[str, float | None] = {}
    for name in names:
        expected[name] = None
        for notebooks in sources:
            entry = notebooks.get(name) or {}
            if entry.get("status") not in ("ok", "failed"):
                entry = entry.get("committed") or {}  # an interrupted run keeps the last good entry
            if entry.get("status") in ("ok", "failed") and isinstance(entry.get("duration_s"), (int, float)):
                expected[name] = float(entry["duration_s"])
                break
    return expected


def estimate_left(
    unfinished: Sequence[str], expected: Mapping[str, float | None], running_for: Mapping[str, float], jobs: int
) -> float | None:
    """Seconds the unfinished notebooks should still take: each its expected duration less the time it has
    been running (at least 0), spread over ``jobs`` (but never less than the longest of them); ``None``
    when one of them has no expected duration."""
    left = []
    for name in unfinished:
        if expected.get(name) is None:
            return None
        left.append(max(0.0, expected[name] - running_for.get(name, 0.0)))
    return max([sum(left) / max(1, jobs), *left]) if left else 0.0


def heartbeat_line(runner: Runner, order: Mapping[str, str], expected: Mapping[str, float | None]) -> str:
    """``      ... running [3/9] 04_x for 5m00s of ~26m57s (sweep: 6 of 10 runs finished ...)``: what each
    executing notebook is doing, with the progress line its sweeps leave (``Runner.progress_of``)."""
    parts = []
    for name, seconds in runner.running_for().items():
        part = f"[{order.get(name, '?')}] {name} for {_fmt_s(seconds)} of ~{_fmt_s(expected.get(name), 'unknown')}"
        progress = runner.progress_of(name)
        parts.append(part + (f" ({progress})" if progress else ""))
    return "      ... running " + ("; ".join(parts) or "(none)")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 1 a notebook failed, 2 bad input, 3 another run
    holds the output tree, 130 interrupted)."""
    args = parse_args(argv)
    if threading.current_thread() is not threading.main_thread():
        return _main(args)
    # Ctrl-C, SIGTERM (a job scheduler, `kill`) and SIGHUP (the terminal closed) stop the run cleanly, even
    # where the shell started this process with SIGINT ignored (a background job)
    old = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in STOP_SIGNALS[1:]:
        signal.signal(sig, _raise_interrupt)
    try:
        return _main(args)
    except KeyboardInterrupt:  # before any notebook started: nothing to clean up
        print("run_all: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _main(args: argparse.Namespace) -> int:
    args.build_dir = args.build_dir.resolve()
    try:
        if args.new:
            return new_notebook(args)
        if args.export_html:
            return export_committed_html(args)
        profiles = load_profiles(args.profiles, notebooks_dir=args.notebooks_dir)
        if args.list:
            print(list_notebooks(args, profiles))
            return EXIT_OK
        if args.profile not in profiles.names:
            raise ConfigError(
                f"unknown profile {args.profile!r}; profiles in {args.profiles.name}: {', '.join(profiles.names)}"
            )
        tree = output_tree(args)
        check_device(args.device)
        jobs = plan(args, profiles, tree)
        check_writable(tree)
        lock = lock_tree(tree)
    except ConfigError as exc:
        print(f"run_all: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BusyError as exc:
        print(f"run_all: error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except OSError as exc:
        print(f"run_all: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        for line in clean_leftovers(tree):
            print(f"run_all: a previous run was cut short: {line}", flush=True)
        outcomes, interrupted, runner = execute(args, tree, jobs)
        if tree.staging.is_dir() and not any(tree.staging.iterdir()):
            shutil.rmtree(tree.staging, ignore_errors=True)
    finally:
        if lock is not None:
            os.close(lock)

    print()
    print(summary_table(outcomes))
    print(
        f"\nmanifest: {_portable(str(tree.manifest(args.profile)))}; gallery: {_portable(str(tree.figures / 'README.md'))}"
    )
    for message in runner.write_errors:
        print(f"run_all: error: {message}", file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if runner.write_errors or any(o.status != "ok" for o in outcomes) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
