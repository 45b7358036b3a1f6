"""Where the collection reads and writes: the repository's ``figures/``, ``results/`` and ``cache/``.

Each can be redirected by an environment variable (the test suite points all three at a temporary
folder so it never touches committed outputs): ``ROPELIB_FIGURES_DIR``, ``ROPELIB_RESULTS_DIR``,
``ROPELIB_CACHE_DIR``. Also: ``atomic_write_bytes`` / ``atomic_write_text``, the one way files are
written (a temporary file in the same folder, fsync, then ``os.replace``), so a crash never leaves a
half-written file behind.

``notebook_name()`` is how a notebook knows its own name (the stem of its file), so that a copy of a
notebook writes ``figures/<its name>/`` and ``results/<its name>*`` with no constant to edit.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _dir(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser().resolve() if value else REPO_ROOT / default


def figures_dir() -> Path:
    return _dir("ROPELIB_FIGURES_DIR", "figures")


def results_dir() -> Path:
    return _dir("ROPELIB_RESULTS_DIR", "results")


def cache_dir() -> Path:
    return _dir("ROPELIB_CACHE_DIR", "cache")


#: a notebook name: a plain file stem (what ``ropelib.plotting.savefig`` accepts as ``notebook``)
NOTEBOOK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def notebook_name(fallback: str | None = None) -> str:
    """The name of the running notebook: the stem of its file (``"04_train_tiny_models"``).

    Looked up in this order:

    1. ``ROPELIB_NOTEBOOK`` — ``run_all.py`` sets it for the kernel of every notebook it runs;
    2. the caller's ``__vsc_ipynb_file__`` (VS Code) or ``__file__`` (``python notebooks/NN_x.py``,
       IPython's ``%run``);
    3. ``JPY_SESSION_NAME`` — the notebook's path, set by Jupyter Server (2.0 and later) for its kernel;
    4. ``fallback`` (e.g. when papermill runs the notebook directly).

    Raises ``ValueError`` when none gives a plain name (letters, digits, ``_``, ``-``).
    """
    caller = sys._getframe(1).f_globals  # the notebook's namespace
    candidates = [
        ("ROPELIB_NOTEBOOK", os.environ.get("ROPELIB_NOTEBOOK")),
        ("__vsc_ipynb_file__", caller.get("__vsc_ipynb_file__")),
        ("__file__", caller.get("__file__")),
        ("JPY_SESSION_NAME", os.environ.get("JPY_SESSION_NAME")),
        ("fallback", fallback),
    ]
    for source, value in candidates:
        if not value:
            continue
        stem = Path(str(value)).stem
        if source == "ROPELIB_NOTEBOOK" or source == "fallback":
            if not NOTEBOOK_NAME_RE.match(stem) or stem != str(value):
                raise ValueError(
                    f"{source} must be a plain notebook name such as '04_train_tiny_models', got {value!r}"
                )
            return stem
        if NOTEBOOK_NAME_RE.match(stem) and Path(str(value)).suffix in (".ipynb", ".py"):
            return stem
    raise ValueError(
        "cannot tell this notebook's name: run it through run_all.py, from Jupyter, or pass "
        "notebook_name(fallback='NN_name')"
    )


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
