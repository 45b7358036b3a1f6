#!/usr/bin/env python
"""Run the notebook collection through papermill: ``python run_all.py [--profile smoke|default|full]``.

    python run_all.py [--profile smoke|default|full] [--only 02 05 …] [--device auto|cpu|cuda|mps]
                      [--jobs N] [--html] [--list]

Each ``notebooks/NN_*.ipynb`` runs in order, in its own papermill subprocess (kernel ``python3``), with
the chosen profile's parameters from ``profiles.yaml`` plus ``profile`` and ``device`` injected
(docs/design.md §11, "run_all.py"). Every parameter name is checked against the notebook's ``parameters`` cell
before anything executes. A notebook executes into a temporary file under ``build/running/``; only on
success does it replace the committed notebook (atomically, with papermill's timing metadata stripped)
and its jupytext ``py:percent`` pair is rewritten. On a failure the committed notebook is untouched,
the failed copy (with papermill's error banner) is kept as ``build/failed/<name>.ipynb`` and the run
goes on. The run ends with a summary table, a JSON manifest ``build/manifest-<profile>.json`` (a copy
for a run of the whole collection in ``results/run_manifest_<profile>.json``), the figure gallery
``figures/README.md``, and a non-zero exit code if any notebook failed.

Ctrl-C stops cleanly: running papermill processes are told to shut their kernels down, temporary files
are removed and committed notebooks are left as they were; the next run resumes (finished training runs
come back from the run cache of ``ropelib.runs``).

If a notebook's ``.py`` pair is newer than its ``.ipynb`` and their cells differ (it was edited as
text), the ``.py`` cells are what runs.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
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

from ropelib.paths import atomic_write_bytes, atomic_write_text, figures_dir, results_dir
from ropelib.plotting import CAPTIONS_FILE
from ropelib.provenance import device_description, git_state, package_versions

REPO_ROOT = Path(__file__).resolve().parent
DEVICES = ("auto", "cpu", "cuda", "mps")
KERNEL = "python3"
#: parameters run_all injects into every notebook (a notebook's parameters cell must define them)
INJECTED = ("profile", "device")
NOTEBOOK_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_-]+$")
#: seconds between "still running" lines while a notebook executes
HEARTBEAT_S = 60.0
#: seconds a papermill process gets to shut its kernel down after Ctrl-C before it is killed
GRACE_S = 20.0

# Exit codes
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130


class ConfigError(ValueError):
    """A bad profile, notebook selection or parameter name: reported before anything executes."""


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


def load_profiles(path: Path) -> Profiles:
    """Read and validate ``profiles.yaml`` (format in its header comment)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"profiles file not found: {path}") from None
    if not isinstance(raw, dict) or set(raw) - {"profiles", "notebooks"}:
        raise ConfigError(f"{path}: top-level keys must be 'profiles' and 'notebooks', got {sorted(raw)}")
    names = raw.get("profiles")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: 'profiles' must be a non-empty list of names, got {names!r}")
    sections = raw.get("notebooks") or {}
    if not isinstance(sections, dict):
        raise ConfigError(f"{path}: 'notebooks' must map notebook names to profile sections")
    notebooks: dict[str, dict[str, dict[str, Any]]] = {}
    for nb_name, section in sections.items():
        section = section or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: notebooks.{nb_name} must map profile names to parameters")
        unknown = sorted(set(section) - set(names))
        if unknown:
            raise ConfigError(
                f"{path}: notebooks.{nb_name} has unknown profile(s) {', '.join(map(repr, unknown))}; "
                f"profiles: {', '.join(names)}"
            )
        for prof, params in section.items():
            if params is not None and not isinstance(params, dict):
                raise ConfigError(f"{path}: notebooks.{nb_name}.{prof} must be a mapping of parameters")
            reserved = sorted(set(params or {}) & set(INJECTED))
            if reserved:
                raise ConfigError(
                    f"{path}: notebooks.{nb_name}.{prof} sets {', '.join(reserved)}, which run_all injects itself"
                )
        notebooks[str(nb_name)] = {p: dict(v or {}) for p, v in section.items()}
    return Profiles(tuple(names), notebooks)


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
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
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


def write_pair(nb: nbformat.NotebookNode, ipynb: Path) -> Path:
    """Write ``nb``'s ``py:percent`` pair next to ``ipynb`` (atomically), honouring ``jupytext.toml``."""
    py = pair_path(ipynb)
    config = load_jupytext_config(str(ipynb))
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
    meta["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": KERNEL}
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
    error: str | None = None
    failed_copy: str | None = None
    log: str | None = None
    cells_from: str = "ipynb"
    finished_utc: str = ""


class Runner:
    """Executes jobs in papermill subprocesses; ``stop()`` shuts every running one down cleanly."""

    def __init__(
        self,
        build_dir: Path,
        html: bool,
        order: Mapping[str, str] | None = None,
        expected: Mapping[str, float | None] | None = None,
    ) -> None:
        self.build_dir = build_dir
        self.html = html
        self.stopping = threading.Event()
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._order = dict(order or {})  # name -> "i/n", for progress lines
        self._expected = dict(expected or {})  # name -> last duration in seconds

    def running(self) -> list[str]:
        """Names of the notebooks executing now."""
        with self._lock:
            return sorted(self._procs)

    def stop(self) -> None:
        """Ask every running papermill process to shut its kernel down; kill it after ``GRACE_S``."""
        self.stopping.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()

    def run(self, job: Job) -> Outcome:
        """Execute ``job``; replace its target only on success."""
        if self.stopping.is_set():
            return Outcome(job.name, "interrupted", 0.0, job.parameters, cells_from=job.cells_from)
        running = self.build_dir / "running"
        logs = self.build_dir / "logs"
        running.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        tmp_in = running / f"{job.name}.input.ipynb"
        tmp_out = running / f"{job.name}.ipynb"
        log_path = logs / f"{job.name}.log"
        nbformat.write(clean_notebook(job.input_nb), tmp_in)
        tmp_out.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "papermill", str(tmp_in), str(tmp_out),
            "--kernel", KERNEL,
            "--cwd", str(job.source.parent),
            "--parameters_yaml", yaml.safe_dump(job.parameters, sort_keys=True),
            "--no-progress-bar",
            "--log-level", "WARNING",
        ]  # fmt: skip
        _say(f"start {job.name} ({self._order.get(job.name, '?')}) cells from .{job.cells_from}; "
             f"last time {_fmt_s(self._expected.get(job.name))}")  # fmt: skip
        started = time.time()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            with self._lock:
                self._procs[job.name] = proc
            if self.stopping.is_set():  # stop() ran between the check above and Popen
                _signal_group(proc, signal.SIGTERM)
            try:
                rc = proc.wait()
            finally:
                with self._lock:
                    self._procs.pop(job.name, None)
        duration = time.time() - started
        outcome = Outcome(
            job.name, "ok", round(duration, 2), job.parameters, log=str(log_path), cells_from=job.cells_from,
            finished_utc=_utc_now(),
        )  # fmt: skip
        outcome.figures = _figures_written_since(job.name, started)
        try:
            if self.stopping.is_set() and (rc != 0 or not tmp_out.exists()):
                outcome.status = "interrupted"
            elif rc != 0 or not tmp_out.exists():
                outcome.status = "failed"
                outcome.error = f"papermill exited with code {rc}: {_last_line(log_path)} (log: {log_path})"
                if tmp_out.exists():
                    executed = nbformat.read(tmp_out, as_version=4)
                    outcome.error = error_of(executed) or outcome.error
                    failed = self.build_dir / "failed" / f"{job.name}.ipynb"
                    failed.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp_out, failed)
                    outcome.failed_copy = str(failed)
            else:
                executed = clean_notebook(nbformat.read(tmp_out, as_version=4))
                error = error_of(executed)  # e.g. a cell tagged raises-exception: still a failure here
                if error:
                    raise RuntimeError(f"executed notebook holds an error output: {error}")
                atomic_write_text(job.target, nbformat.writes(executed) + "\n")
                write_pair(executed, job.target)
                if self.html:
                    _export_html(executed, self.build_dir / "html" / f"{job.name}.html")
        except Exception as exc:  # a post-processing failure is a notebook failure, never a crash of the run
            outcome.status = "failed"
            outcome.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            tmp_in.unlink(missing_ok=True)
            tmp_out.unlink(missing_ok=True)
        return outcome


_PRINT_LOCK = threading.Lock()


def _say(message: str) -> None:
    with _PRINT_LOCK:
        print(message, flush=True)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the papermill process leads its own session (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip()[:200] if lines else "(no output)"


def _export_html(nb: nbformat.NotebookNode, path: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    atomic_write_text(path, body)


def _figures_written_since(notebook: str, since: float) -> list[str]:
    folder = figures_dir() / notebook
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.png") if p.stat().st_mtime >= since - 1.0)


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# --------------------------------------------------------------------------------------------------
# Manifest, summary, gallery
# --------------------------------------------------------------------------------------------------
def manifest_path(build_dir: Path, profile: str) -> Path:
    return build_dir / f"manifest-{profile}.json"


def read_manifest(build_dir: Path, profile: str) -> dict[str, Any]:
    """The last manifest of ``profile`` (empty dict if none or unreadable)."""
    try:
        return json.loads(manifest_path(build_dir, profile).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _portable(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def build_manifest(
    args: argparse.Namespace, outcomes: Sequence[Outcome], previous: Mapping[str, Any], started: float
) -> dict[str, Any]:
    """The run's manifest; notebooks not run this time keep their entry from ``previous``."""
    git = git_state()
    notebooks = dict(previous.get("notebooks", {}))
    for o in outcomes:
        notebooks[o.name] = {
            "status": o.status,
            "duration_s": o.duration_s,
            "finished_utc": o.finished_utc,
            "parameters": o.parameters,
            "figures": o.figures,
            "error": o.error,
            "failed_copy": _portable(o.failed_copy),
            "cells_from": o.cells_from,
        }
    return {
        "profile": args.profile,
        "device_requested": args.device,
        "device": device_description(args.device),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "versions": package_versions(),
        "started_utc": dt.datetime.fromtimestamp(started, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.time() - started, 2),
        "jobs": args.jobs,
        "ran": [o.name for o in outcomes],
        "notebooks": dict(sorted(notebooks.items())),
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


def write_gallery(notebooks_dir: Path | None = None) -> Path:
    """Regenerate ``figures_dir()/README.md``: every figure with its notebook and caption."""
    root = figures_dir()
    lines = [
        "# Figures",
        "",
        "Every figure of the notebook collection, with its one-line caption. Generated by `run_all.py` from the",
        "`captions.json` files that `ropelib.plotting.savefig` writes; do not edit by hand. Each figure also",
        "exists as SVG beside the PNG.",
        "",
    ]
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    count = 0
    for folder in folders:
        pngs = sorted(folder.glob("*.png"))
        if not pngs:
            continue
        captions_file = folder / CAPTIONS_FILE
        captions = json.loads(captions_file.read_text(encoding="utf-8")) if captions_file.exists() else {}
        heading = f"## {folder.name}"
        if notebooks_dir is not None and (Path(notebooks_dir) / f"{folder.name}.ipynb").exists():
            rel = os.path.relpath(Path(notebooks_dir) / f"{folder.name}.ipynb", root)
            heading = f"## [{folder.name}]({rel})"
        lines += [heading, ""]
        for png in pngs:
            caption = captions.get(png.stem, "(no caption recorded)")
            svg = png.with_suffix(".svg")
            lines.append(f"### {png.stem}")
            lines.append("")
            lines.append(f"![{caption}]({folder.name}/{png.name})")
            lines.append("")
            lines.append(caption + (f" ([SVG]({folder.name}/{svg.name}))" if svg.exists() else ""))
            lines.append("")
            count += 1
    if count == 0:
        lines += ["(No figures yet: run `python run_all.py`.)", ""]
    return atomic_write_text(root / "README.md", "\n".join(lines))


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="profile from profiles.yaml (default: default)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (number or full name)")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="device injected into every notebook")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at the same time (separate processes)")
    parser.add_argument("--html", action="store_true", help="also export each executed notebook to build/html/")
    parser.add_argument("--list", action="store_true", help="list notebooks, their parameters and last status")
    parser.add_argument("--notebooks-dir", type=Path, default=REPO_ROOT / "notebooks", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write executed notebooks (and .py pairs) here instead of replacing them in place")
    parser.add_argument("--profiles", type=Path, default=REPO_ROOT / "profiles.yaml", help="profiles file")
    parser.add_argument("--build-dir", type=Path, default=REPO_ROOT / "build",
                        help="failed copies, logs, HTML and manifests (default: build/)")  # fmt: skip
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
        raise ConfigError(f"device {device!r} is not available on this machine; available: auto, {', '.join(available)}")


def plan(args: argparse.Namespace, profiles: Profiles) -> list[Job]:
    """Every job of this run, validated (profile, notebook names, parameters) before anything executes."""
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
    out_dir = args.output_dir.resolve() if args.output_dir else None
    for path in select_notebooks(paths, args.only):
        params = profiles.parameters(path.stem, args.profile)
        params.update(profile=args.profile, device=args.device)
        nb, cells_from = effective_input(path)
        check_parameters(path.stem, nb, params)
        target = (out_dir / path.name) if out_dir else path
        jobs.append(Job(path, target, nb, cells_from, params))
    return jobs


def list_notebooks(args: argparse.Namespace, profiles: Profiles) -> str:
    """The ``--list`` text: each notebook, its parameters per profile and its last status per profile."""
    lines = []
    manifests = {p: read_manifest(args.build_dir, p) for p in profiles.names}
    for path in discover_notebooks(args.notebooks_dir):
        lines.append(path.stem)
        for prof in profiles.names:
            params = profiles.notebooks.get(path.stem, {}).get(prof) or {}
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "(no parameters)"
            last = manifests[prof].get("notebooks", {}).get(path.stem)
            status = f"{last['status']} in {_fmt_s(last['duration_s'])} at {last['finished_utc']}" if last else "never run"
            lines.append(f"  {prof:<8} last: {status:<40} {shown}")
    return "\n".join(lines) if lines else f"no NN_*.ipynb notebooks in {args.notebooks_dir}"


def execute(args: argparse.Namespace, jobs: Sequence[Job]) -> tuple[list[Outcome], bool]:
    """Run the jobs (``--jobs`` at a time); returns the outcomes in reading order and whether interrupted."""
    previous = read_manifest(args.build_dir, args.profile).get("notebooks", {})
    expected = {  # durations of the last completed execution, for the estimate of the time left
        j.name: previous[j.name]["duration_s"] if previous.get(j.name, {}).get("status") in ("ok", "failed") else None
        for j in jobs
    }
    order = {j.name: f"{i}/{len(jobs)}" for i, j in enumerate(jobs, 1)}
    runner = Runner(args.build_dir, args.html, order, expected)
    outcomes: dict[str, Outcome] = {}
    started = time.time()
    total = len(jobs)
    interrupted = False
    print(f"run_all: profile={args.profile} device={args.device} ({device_description(args.device)}) "
          f"notebooks={total} jobs={args.jobs}", flush=True)  # fmt: skip

    def remaining_estimate() -> float | None:
        left = [expected[j.name] for j in jobs if j.name not in outcomes]
        return None if any(v is None for v in left) else sum(left) / args.jobs

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
                    _say(f"done  {o.name}: {o.status.upper()} in {_fmt_s(o.duration_s)}, {len(o.figures)} figure(s)"
                         f" [{len(outcomes)}/{total} finished; elapsed {_fmt_s(elapsed)}, "
                         f"~{_fmt_s(remaining_estimate())} left]" + (f"\n      {o.error}" if o.error else ""))  # fmt: skip
                if time.monotonic() - last_beat > HEARTBEAT_S:
                    last_beat = time.monotonic()
                    _say(f"      ... running {', '.join(runner.running())}; elapsed {_fmt_s(time.time() - started)}")
        except KeyboardInterrupt:
            interrupted = True
            print("\nrun_all: interrupted; shutting kernels down (committed notebooks are untouched) ...", flush=True)
            runner.stop()
            for fut in futures:
                fut.cancel()
            for fut, job in futures.items():
                if fut.cancelled():
                    continue
                o = fut.result()
                outcomes[o.name] = o
    ordered = [outcomes[j.name] for j in jobs if j.name in outcomes]
    return ordered, interrupted


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 1 a notebook failed, 2 bad input, 130 interrupted)."""
    args = parse_args(argv)
    if threading.current_thread() is not threading.main_thread():
        return _main(args)
    # Ctrl-C (and SIGTERM, e.g. from a job scheduler) stop the run cleanly, even where the shell
    # started this process with SIGINT ignored (a background job)
    old = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _main(args)
    except KeyboardInterrupt:  # before any notebook started: nothing to clean up
        print("run_all: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])


def _main(args: argparse.Namespace) -> int:
    args.build_dir = args.build_dir.resolve()
    try:
        profiles = load_profiles(args.profiles)
        if args.list:
            print(list_notebooks(args, profiles))
            return EXIT_OK
        if args.profile not in profiles.names:
            raise ConfigError(f"unknown profile {args.profile!r}; profiles in {args.profiles.name}: {', '.join(profiles.names)}")
        check_device(args.device)
        jobs = plan(args, profiles)
    except ConfigError as exc:
        print(f"run_all: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    started = time.time()
    previous = read_manifest(args.build_dir, args.profile)
    outcomes, interrupted = execute(args, jobs)
    manifest = build_manifest(args, outcomes, previous, started)
    atomic_write_text(manifest_path(args.build_dir, args.profile), json.dumps(manifest, indent=2) + "\n")
    whole_collection = not args.only and args.output_dir is None and not interrupted
    if whole_collection:
        atomic_write_text(results_dir() / f"run_manifest_{args.profile}.json", json.dumps(manifest, indent=2) + "\n")
    write_gallery(args.notebooks_dir.resolve())
    running_dir = args.build_dir / "running"
    if running_dir.is_dir() and not any(running_dir.iterdir()):
        shutil.rmtree(running_dir, ignore_errors=True)

    print()
    print(summary_table(outcomes))
    print(f"\nmanifest: {manifest_path(args.build_dir, args.profile)}; gallery: {figures_dir() / 'README.md'}")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(o.status != "ok" for o in outcomes) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
