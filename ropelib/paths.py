"""Where the collection reads and writes: the repository's ``figures/``, ``results/`` and ``cache/``.

Each can be redirected by an environment variable (the test suite points all three at a temporary
folder so it never touches committed outputs): ``ROPELIB_FIGURES_DIR``, ``ROPELIB_RESULTS_DIR``,
``ROPELIB_CACHE_DIR``. Also: ``atomic_write_bytes`` / ``atomic_write_text``, the one way files are
written (a temporary file in the same folder, fsync, then ``os.replace``), so a crash never leaves a
half-written file behind.
"""

from __future__ import annotations

import os
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
