"""The output trees of the notebook pipeline: where a run writes, its lock, its leftovers and its manifest.

Where a run writes (``OutputTree``). Only ``--reference`` (profile ``default`` only; with ``--only``, just
those notebooks) replaces the committed notebooks, ``figures/`` and ``results/``. Any other run writes a
sandbox: ``build/<profile>/`` (or ``--output-dir``) with its own ``notebooks/``, ``figures/`` (and gallery)
and ``results/`` (and manifest), and leaves every tracked file as it was. The run cache (``cache/``) is
shared: it is content-addressed and not an output.

One run per tree at a time: an exclusive ``flock`` on the tree's results folder (``lock_tree``); a second
run is refused with exit code 3. The next run removes what a killed run left (``clean_leftovers``): its
staging folders, a figure-folder swap cut short (``swap_folder``), temporary files of atomic writes.

The manifest (``results/run_manifest_<profile>.json`` of the tree) records this run's provenance
(``new_manifest``) and one entry per notebook (``ropelib.notebook_runs.Runner`` writes each as it finishes);
the entries of notebooks not run this time are kept.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import atomic_write_bytes, figures_dir, results_dir
from .provenance import device_description, package_versions, source_state
from .run_messages import BusyError, ConfigError, utc_now

try:  # the lock of an output tree (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: the profile of the committed outputs; only ``--reference`` (with this profile) writes them
REFERENCE_PROFILE = "default"


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
    committed |= {args.repo_root / "notebooks", args.repo_root / "figures", args.repo_root / "results"}
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


def copy_folder(src: Path, dest: Path, skip: str | None = None) -> None:
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


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def move_into(src: Path, dest: Path) -> None:
    """Move the file ``src`` to ``dest`` atomically (a copy and ``os.replace`` across file systems)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        atomic_write_bytes(dest, src.read_bytes())


def swap_folder(src: Path | None, dest: Path) -> None:
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


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path`` (empty dict if none or unreadable)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


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
        "started_utc": utc_now(),
        "duration_s": 0.0,
        "jobs": args.jobs,
        "ran": [],
        "notebooks": dict(previous.get("notebooks", {})),
    }
