"""The notebook pipeline behind ``run_all.py``: run a list of notebooks with a profile, and its command line.

Each ``notebooks/NN_*.ipynb`` runs in order, in its own papermill subprocess (kernel ``python3``), with
the chosen profile's parameters from ``profiles.yaml`` plus ``profile`` and ``device`` injected
(docs/design.md §11, "run_all.py"). Every parameter is checked against the notebook's ``parameters`` cell
before anything executes (``plan``; ``ropelib.profiles``). ``execute`` runs the jobs, ``--jobs`` at a time,
each through ``ropelib.notebook_runs.Runner`` into the output tree of ``ropelib.output_trees``, printing
the progress of ``ropelib.run_progress``. A notebook that reads the results of others in the same run
(``Job.after``: the claims audit reads 04, 05 and 06; ``ropelib.notebook_files.prerequisites``) starts
only once they have finished, ok or not, so it never reads stale tables; the others start in reading
order as workers free up. Ctrl-C, SIGTERM and SIGHUP stop it cleanly (every process of every running
notebook killed, ``ropelib.process_tree``; nothing half-written kept; a notebook not yet started never
starts). ``main(argv)`` is the command line: it returns the exit code (``ropelib.run_messages``).

Besides running: ``--list`` prints each notebook, its parameters per profile and its last status
(``list_notebooks``); ``--export-html`` executes nothing and converts the committed notebooks (or
``--only`` those) into ``build/html/`` (or ``--output-dir``), every image with its figure's caption as alt
text (``export_committed_html``); ``--new`` forks a notebook (``ropelib.fork``).

The checkout (``root`` of ``main``; ``run_all.py`` passes its own folder) gives the defaults of
``--notebooks-dir``, ``--profiles`` and ``--build-dir``, and its ``notebooks/``, ``figures/`` and
``results/`` are committed outputs that only ``--reference`` writes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import nbformat

from .fork import new_notebook
from .gallery import export_html, write_html_index
from .notebook_files import discover_notebooks, effective_input, notebook_titles, prerequisites, select_notebooks
from .notebook_runs import Job, Outcome, Runner
from .output_trees import (
    REFERENCE_PROFILE,
    OutputTree,
    check_writable,
    clean_leftovers,
    lock_tree,
    new_manifest,
    output_tree,
    read_manifest,
)
from .paths import REPO_ROOT, figures_dir, results_dir
from .profiles import Profiles, check_parameters, load_profiles
from .run_messages import (
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BusyError,
    ConfigError,
    format_seconds,
    portable,
    say,
    shown,
)
from .run_progress import estimate_left, expected_durations, heartbeat_line, summary_table

#: the first line of ``run_all.py --help``
DESCRIPTION = "Run the notebook collection through papermill: ``python run_all.py [--profile smoke|default|full]``."
DEVICES = ("auto", "cpu", "cuda", "mps")
#: seconds between "still running" lines while a notebook executes
HEARTBEAT_S = 60.0
#: signals that stop a run cleanly (children killed, nothing half-written kept)
STOP_SIGNALS = (
    (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGINT, signal.SIGTERM)
)


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
    root = args.repo_root
    committed = {notebooks_dir, figures_dir(), results_dir(), root / "notebooks", root / "figures",
                 root / "results"}  # fmt: skip
    if out in committed:
        raise ConfigError(f"--output-dir {out} is a folder of committed outputs; pick another (default: build/html/)")
    written = 0
    for i, path in enumerate(paths, 1):
        if not path.exists():
            say(f"[{i}/{len(paths)}] {path.stem}: skipped (only its .py exists: it has never been executed)")
            continue
        page = export_html(nbformat.read(path, as_version=4), out / f"{path.stem}.html", figures_dir(), path.stem)
        say(f"[{i}/{len(paths)}] {path.stem} -> {shown(page)}")
        written += 1
    index = write_html_index(out, notebook_titles(notebooks_dir), heading="Notebooks (committed outputs)")
    print(f"run_all: {written} page(s) written; index: {shown(index)}", flush=True)
    return EXIT_OK


def parse_args(argv: Sequence[str] | None = None, root: Path = REPO_ROOT) -> argparse.Namespace:
    """The command line of ``run_all.py``; ``root`` (the checkout, kept as ``args.repo_root``) gives the
    defaults of ``--notebooks-dir``, ``--profiles`` and ``--build-dir``."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="profile from profiles.yaml (default: default)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (number or full name)")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="device injected into every notebook")
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks run at the same time (separate processes); a notebook that reads "
                             "others' results waits for them")  # fmt: skip
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
    parser.add_argument("--notebooks-dir", type=Path, default=root / "notebooks", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write this run's notebooks, figures, results and manifest under this folder "
                             "(default: build/<profile>/); with --export-html, the folder of the pages")  # fmt: skip
    parser.add_argument("--profiles", type=Path, default=root / "profiles.yaml", help="profiles file")
    parser.add_argument("--build-dir", type=Path, default=root / "build",
                        help="sandbox trees build/<profile>/ and the reference run's work folder (default: build/)")  # fmt: skip
    parser.set_defaults(repo_root=root)
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
    selected = select_notebooks(paths, args.only)
    after = prerequisites([p.stem for p in selected])
    jobs = []
    for path in selected:
        params = profiles.parameters(path.stem, args.profile)
        params.update(profile=args.profile, device=args.device)
        nb, cells_from = effective_input(path)
        check_parameters(path.stem, nb, params)
        jobs.append(Job(path, tree.notebooks / path.name, nb, cells_from, params, after[path.stem]))
    return jobs


def _status(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "never run"
    return f"{entry['status']} in {format_seconds(entry.get('duration_s'))} at {entry.get('finished_utc', '?')}"


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
    return "\n".join(lines + ["", f"reference: {portable(str(reference_path), args.repo_root)}; sandboxes: "
                              f"{', '.join(portable(str(r), args.repo_root) or '' for r in roots.values())}"])  # fmt: skip


def _ignore_signals() -> None:
    """During the shutdown, a second Ctrl-C (or SIGTERM/SIGHUP) must not cut the cleanup short."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _next_job(waiting: Sequence[Job], finished: Collection[str], running: int) -> Job | None:
    """The first job in reading order whose ``after`` notebooks have all finished, or ``None``. When none is
    ready and nothing runs, the first one anyway. With ``prerequisites`` (each an earlier notebook of the
    run) that cannot happen: the first waiting job is then always ready. It only guards the loop of
    ``execute`` against a declaration that would otherwise leave it waiting forever."""
    for job in waiting:
        if all(name in finished for name in job.after):
            return job
    return waiting[0] if waiting and not running else None


def execute(args: argparse.Namespace, tree: OutputTree, jobs: Sequence[Job]) -> tuple[list[Outcome], bool, Runner]:
    """Run the jobs (``--jobs`` at a time, each once its ``after`` notebooks have finished; the first ready
    one in reading order whenever a worker is free); returns the outcomes in reading order, whether
    interrupted, and the runner (its manifest and write errors). Every child process is gone when this
    returns; a job not started when the run is interrupted never starts and has no outcome."""
    manifest_path = tree.manifest(args.profile)
    manifest = new_manifest(args, tree, read_manifest(manifest_path))
    reference_folders = dict.fromkeys([results_dir(), args.repo_root / "results"])  # the reference's, the checkout's
    committed = [read_manifest(folder / f"run_manifest_{REFERENCE_PROFILE}.json") for folder in reference_folders]
    expected = expected_durations([j.name for j in jobs], args.profile, manifest, *committed)
    order = {j.name: f"{i}/{len(jobs)}" for i, j in enumerate(jobs, 1)}
    runner = Runner(tree, args.html, manifest, manifest_path, order, expected, args.repo_root)
    outcomes: dict[str, Outcome] = {}
    waiting = list(jobs)  # not started yet, in reading order
    started = time.time()
    total = len(jobs)
    interrupted = False
    where = "the committed reference outputs" if tree.reference else f"{portable(str(tree.work), args.repo_root)}/"
    print(f"run_all: profile={args.profile} device={args.device} ({manifest['device']}) "
          f"notebooks={total} jobs={args.jobs}; writing {where}", flush=True)  # fmt: skip

    if args.jobs > 1:  # with one job at a time, reading order already runs them after their prerequisites
        for job in jobs:
            if job.after:
                say(f"[{order[job.name]}] {job.name} starts after {', '.join(job.after)} (it reads their results)")

    def left() -> str:
        unfinished = [j.name for j in jobs if j.name not in outcomes]
        return format_seconds(estimate_left(unfinished, expected, runner.running_for(), args.jobs), "unknown")

    def blocked() -> str:  # the jobs waiting for a prerequisite (not merely for a free worker)
        parts = [f"[{order[j.name]}] {j.name} (for {', '.join(a for a in j.after if a not in outcomes)})"
                 for j in waiting if any(a not in outcomes for a in j.after)]  # fmt: skip
        return f"; waiting {'; '.join(parts)}" if parts else ""

    # the shutdown below ignores the stop signals; they are restored before returning, so that a caller in
    # Python (a test process, a notebook) does not keep them ignored, nor hand that to processes it starts
    handlers = (
        {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures: dict[Future, Job] = {}
        pending: set[Future] = set()  # running
        last_beat = time.monotonic()
        try:
            while waiting or pending:
                # a job is submitted only when a worker is free for it, so none queues in the pool
                while len(pending) < args.jobs and (job := _next_job(waiting, outcomes, len(pending))):
                    waiting.remove(job)
                    fut = pool.submit(runner.run, job)
                    futures[fut] = job
                    pending.add(fut)
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    o = fut.result()
                    outcomes[o.name] = o
                    elapsed = time.time() - started
                    status = o.status if o.status == "ok" else o.status.upper()
                    say(f"[{order[o.name]}] {o.name} {status} in {format_seconds(o.duration_s)}, {len(o.figures)} figure(s); "
                        f"{len(outcomes)} of {total} done, elapsed {format_seconds(elapsed)}, estimated left {left()}"
                        + (f"\n      {o.error}" if o.error else ""))  # fmt: skip
                if time.monotonic() - last_beat > HEARTBEAT_S:
                    last_beat = time.monotonic()
                    say(heartbeat_line(runner, order, expected) + blocked() + f"; elapsed "
                        f"{format_seconds(time.time() - started)}, estimated left {left()}")  # fmt: skip
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
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    ordered = [outcomes[j.name] for j in jobs if j.name in outcomes]
    return ordered, interrupted, runner


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None, root: Path = REPO_ROOT) -> int:
    """Entry point; returns the process exit code (0 ok, 1 a notebook failed, 2 bad input, 3 another run
    holds the output tree, 130 interrupted). ``root`` is the checkout (``run_all.py``'s folder; by default
    the one holding ``ropelib``)."""
    args = parse_args(argv, root)
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
        f"\nmanifest: {portable(str(tree.manifest(args.profile)), args.repo_root)}; gallery: {portable(str(tree.figures / 'README.md'), args.repo_root)}"
    )
    for message in runner.write_errors:
        print(f"run_all: error: {message}", file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if runner.write_errors or any(o.status != "ok" for o in outcomes) else EXIT_OK
