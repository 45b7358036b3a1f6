"""Fingerprints of the library's source code, for the caches: a change to the code invalidates what
it computed, an edit to a comment, a docstring or the formatting does not.

A source file is normalised by parsing it (``ast.parse``), dropping every docstring and every other
bare string statement (they cannot change what the code computes), and printing the tree back
(``ast.unparse``): comments, blank lines, line breaks, quotes and spacing are gone. A fingerprint is
the SHA-256 over the sorted ``(relative path, normalised text)`` pairs of a set of files.

Two fingerprints use it:

* ``training_fingerprint()`` — the code that determines a trained model's weights (``TRAINING_SOURCES``:
  model, encodings, RoPE, tasks and corpora, the training loop, and the functions of ``ropelib.runs``
  that seed and initialise a run). It is part of every run hash (``ropelib.runs.RunSpec.hash``), so a
  change there retrains instead of reading back stale models.
* ``package_fingerprint()`` — every ``ropelib/**/*.py`` file; part of every evaluation digest
  (``ropelib.memo``), since an evaluation may depend on any of them.

Both are computed once per process, from ``snapshot()``: the text of every source file as it was when
``ropelib.runs`` or ``ropelib.memo`` was imported (reading is cheap; parsing waits for the first
fingerprint), so a fingerprint describes the code the process runs even if a file is edited after
the import. ``ast.unparse`` may print a tree differently in another Python minor version, which then
counts as a code change (one retraining, never a stale model).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "PACKAGE_ROOT",
    "TRAINING_SOURCES",
    "TRAINING_FUNCTIONS",
    "normalise",
    "fingerprint",
    "read_sources",
    "snapshot",
    "training_sources",
    "training_fingerprint",
    "package_fingerprint",
]

#: the ``ropelib`` package folder
PACKAGE_ROOT = Path(__file__).resolve().parent
#: files (globs relative to ``PACKAGE_ROOT``) whose whole code determines a run's trained weights:
#: every ``ropelib`` module that ``ropelib.runs`` imports except ``paths`` (file writing) and
#: ``provenance`` (metadata); tests/test_runs_fingerprint.py checks that the list stays complete
TRAINING_SOURCES: tuple[str, ...] = ("data.py", "model.py", "rope.py", "rope_scaling.py", "train.py", "encodings/*.py")
#: functions of ``runs.py`` that determine the weights too (seeding, fine-tuning initialisation); the
#: rest of that module (cache layout, locks, sweeps) does not, and changing it does not retrain
TRAINING_FUNCTIONS: Mapping[str, tuple[str, ...]] = {"runs.py": ("_train_entry", "_init_from_parent")}


class _StripDocstrings(ast.NodeTransformer):
    """Drop every statement that is a bare string (docstrings and string "comments")."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list):
                kept = [s for s in body if not _is_bare_string(s)]
                if field == "body" and not kept and body:
                    kept = [ast.Pass()]  # a body of only a docstring: keep it printable
                setattr(node, field, kept)
        return node


def _is_bare_string(stmt: ast.AST) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def normalise(text: str, filename: str = "<source>", functions: Sequence[str] | None = None) -> str:
    """``text`` (Python source) without comments, docstrings and formatting: the stripped syntax tree
    printed back by ``ast.unparse``. ``functions``: keep only the top-level functions (or classes) of
    these names, in this order (ValueError naming any that is missing). SyntaxError for bad source."""
    tree = ast.parse(text, filename=filename)
    if functions is not None:
        defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        missing = [name for name in functions if name not in defs]
        if missing:
            raise ValueError(f"{filename} defines no top-level function or class {missing}; allowed: {sorted(defs)}")
        tree = ast.Module(body=[defs[name] for name in functions], type_ignores=[])
    return ast.unparse(_StripDocstrings().visit(tree))


@lru_cache(maxsize=256)
def _normalise_cached(text: str, filename: str, functions: tuple[str, ...] | None) -> str:
    return normalise(text, filename, functions)


def fingerprint(sources: Mapping[str, str]) -> str:
    """SHA-256 (hex) over the sorted ``(name, normalised text)`` pairs; ``sources`` maps a name (the
    file's path relative to the package) to already normalised text (``normalise``)."""
    h = hashlib.sha256()
    for name in sorted(sources):
        for part in (name, sources[name]):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
    return h.hexdigest()


@lru_cache(maxsize=1)
def snapshot() -> Mapping[str, str]:
    """The text of every ``.py`` file of the package (keys: POSIX paths relative to ``PACKAGE_ROOT``),
    read at the first call and kept for the life of the process."""
    paths = sorted(PACKAGE_ROOT.glob("**/*.py"))
    return MappingProxyType({p.relative_to(PACKAGE_ROOT).as_posix(): p.read_text(encoding="utf-8") for p in paths})


def read_sources(
    patterns: Sequence[str], functions: Mapping[str, Sequence[str]] | None = None, root: Path | None = None
) -> dict[str, str]:
    """Normalised text of every file under ``root`` that matches one of ``patterns`` (globs), and of
    the named functions of each file in ``functions``; keys are POSIX paths relative to ``root``.
    ``root`` None: the package as ``snapshot()`` holds it (a file added since is read now); another
    folder is read now. ValueError if a pattern matches no file."""
    base = PACKAGE_ROOT if root is None else Path(root)
    held = snapshot() if root is None else {}

    def text(name: str) -> str:
        return held[name] if name in held else (base / name).read_text(encoding="utf-8")

    out: dict[str, str] = {}
    for pattern in patterns:
        names = sorted(p.relative_to(base).as_posix() for p in base.glob(pattern))
        if not names:
            raise ValueError(f"no source file matches {pattern!r} under {base}")
        for name in names:
            out[name] = _normalise_cached(text(name), str(base / name), None)
    for name, funcs in (functions or {}).items():
        out[f"{name}:{','.join(funcs)}"] = _normalise_cached(text(name), str(base / name), tuple(funcs))
    return out


def training_sources() -> dict[str, str]:
    """``read_sources`` of ``TRAINING_SOURCES`` and ``TRAINING_FUNCTIONS``."""
    return read_sources(TRAINING_SOURCES, TRAINING_FUNCTIONS)


@lru_cache(maxsize=1)
def training_fingerprint() -> str:
    """Fingerprint of the code that determines a trained model (see the module docstring)."""
    return fingerprint(training_sources())


@lru_cache(maxsize=1)
def package_fingerprint() -> str:
    """Fingerprint of every ``.py`` file of the ``ropelib`` package."""
    return fingerprint(read_sources(["**/*.py"]))
