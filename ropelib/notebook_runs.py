"""One notebook's run: executed by papermill in its own process tree into a staging folder, and its outputs
committed to the output tree as one set.

All or nothing. A notebook executes in a staging folder (``<work>/running/<name>/``; the kernel's
``ROPELIB_FIGURES_DIR``/``ROPELIB_RESULTS_DIR`` point there, ``ROPELIB_NOTEBOOK`` names it). Only when it
succeeds do its tables, its figure folder, the executed notebook (papermill's metadata stripped) with its
jupytext pair, its HTML, the gallery and its manifest entry (``results/run_manifest_<profile>.json``) move
into the tree. A failure changes none of them, keeps the failed copy as ``<work>/failed/<name>.ipynb`` and
the run goes on.

After each notebook the tree's gallery (``figures/README.md``) is regenerated
(``ropelib.gallery.write_gallery``: contents, one section per notebook under its title, figures with
alt text and captions); ``--html`` also writes ``<work>/html/<name>.html`` and ``index.html``.

While a notebook runs, the progress line of its current ``ropelib.runs.sweep`` is in ``PROGRESS_FILE`` of
its staging folder (the kernel gets its path in ``$ROPELIB_PROGRESS_FILE``); ``Runner.progress_of`` reads
it for the pipeline's heartbeat. Its processes are those of ``ropelib.process_tree``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

from .gallery import export_html, write_gallery, write_html_index
from .notebook_files import KERNEL, clean_notebook, error_of, notebook_titles, write_pair
from .output_trees import OutputTree, copy_folder, move_into, snapshot, swap_folder
from .paths import REPO_ROOT, atomic_write_text, cache_dir
from .process_tree import GRACE_S, KILL_GRACE_S, PAPERMILL_BOOT, kill_sessions, sessions_below
from .run_messages import format_seconds, portable, say, utc_now

#: the kernel's environment variable naming the file where ``ropelib.runs.sweep`` keeps its progress line
#: (``ropelib.runs.PROGRESS_FILE_ENV``; not imported, which would import torch); the heartbeat shows it
PROGRESS_FILE_ENV = "ROPELIB_PROGRESS_FILE"
#: the file in a notebook's staging folder where its kernel's sweeps report progress (``PROGRESS_FILE_ENV``)
PROGRESS_FILE = "progress.txt"


@dataclass
class Job:
    """One notebook to execute."""

    source: Path  # the committed notebook
    target: Path  # where the executed notebook goes on success
    input_nb: nbformat.NotebookNode
    cells_from: str
    parameters: dict[str, Any]
    #: the notebooks of the same run that must have finished (ok or not) before this one starts: those
    #: whose results it reads (``ropelib.notebook_files.prerequisites``)
    after: tuple[str, ...] = ()

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
        root: Path = REPO_ROOT,
    ) -> None:
        self.tree = tree
        self.root = root  # the checkout: the manifest and the pages name paths relative to it
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
            sids |= sessions | sessions_below(proc.pid) | {proc.pid}
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
        copy_folder(tree.figures, stage / "figures", skip=job.name)
        copy_folder(tree.results, stage / "results")
        before = snapshot(stage / "results")
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
            sys.executable, "-c", PAPERMILL_BOOT, str(os.getpid()), str(tmp_in), str(tmp_out),
            "--kernel", KERNEL,
            "--cwd", str(job.source.parent),
            "--parameters_yaml", yaml.safe_dump(job.parameters, sort_keys=True),
            "--no-progress-bar",
            "--log-level", "WARNING",
        ]  # fmt: skip
        started = time.time()
        with self._lock:
            self._job_started[job.name] = started
        say(f"[{self._order.get(job.name, '?')}] {job.name} started (cells from .{job.cells_from}; "
            f"last time {format_seconds(self._expected.get(job.name), 'unknown')})")  # fmt: skip
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
                        sessions |= sessions_below(proc.pid)
            finally:
                with self._lock:
                    self._procs.pop(job.name, None)
                # whatever the kernel left behind (e.g. the workers of a kernel that died) goes too
                kill_sessions(sessions, KILL_GRACE_S)
        duration = time.time() - started
        outcome = Outcome(
            job.name, "ok", round(duration, 2), job.parameters, log=str(log_path), cells_from=job.cells_from,
            finished_utc=utc_now(),
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
        written = sorted(rel for rel, st in snapshot(results).items() if before.get(rel) != st)
        figures = stage / "figures" / job.name
        for rel in written:
            move_into(results / rel, tree.results / rel)
        swap_folder(figures if figures.is_dir() else None, tree.figures / job.name)
        atomic_write_text(job.target, nbformat.writes(executed) + "\n")
        write_pair(executed, job.target, config_from=job.source)
        if self.html:  # the same pages as --export-html, from this run's notebook and captions
            html_dir = tree.work / "html"
            export_html(executed, html_dir / f"{job.name}.html", tree.figures, job.name)
            write_html_index(
                html_dir, notebook_titles(tree.notebooks), heading=f"Notebooks ({portable(str(tree.work), self.root)})"
            )
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
            "failed_copy": portable(outcome.failed_copy, self.root),
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
                say(f"run_all: error: {message}")


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip()[:200] if lines else "(no output)"
