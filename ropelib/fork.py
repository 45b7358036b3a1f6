"""A fork in one command: ``run_all.py --new NN_my_idea [--from 00_template]``.

``new_notebook`` writes ``notebooks/NN_my_idea.py`` and ``.ipynb`` from the source notebook (default the
template; ``fork_notebook``: outputs cleared, the kernelspec set, the quoted source name in code cells
replaced by the new one), appends a copy of the source's ``profiles.yaml`` section (``profile_section_with``,
the rest of the file left as it is) and prints the command that runs the fork. The copy takes its name from
its own file (``ropelib.paths.notebook_name()``), so its figures and tables go to ``figures/NN_my_idea/``
and ``results/NN_my_idea*``. Nothing is written when a check fails, and nothing is left half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import nbformat

from .notebook_files import (
    NOTEBOOK_RE,
    clean_notebook,
    discover_notebooks,
    effective_input,
    select_notebooks,
    write_pair,
)
from .paths import atomic_write_text
from .profiles import load_profiles
from .run_messages import EXIT_OK, ConfigError


def _python_command(root: Path) -> str:
    """How to call this Python in printed commands: ``.venv/bin/python`` inside the checkout ``root``, else
    ``python``."""
    exe = Path(sys.executable)
    try:
        exe.absolute().relative_to(root)
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
    print(
        f"next: {_python_command(args.repo_root)} {os.path.relpath(args.repo_root / 'run_all.py')} --profile smoke --only {name[:2]}"
    )
    return EXIT_OK
