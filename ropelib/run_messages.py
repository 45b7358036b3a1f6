"""How a run of the notebook pipeline (``run_all.py``, ``ropelib.pipeline``) reports: its two errors, its exit
codes, and the pieces its lines are made of.

A bad profile, notebook selection, parameter or output folder is a ``ConfigError``, found before anything
executes (exit code 2); a second run on an output tree that another run holds is a ``BusyError`` (exit
code 3). Either is printed as one line, ``run_all: error: <message>``. Every line a run prints while
notebooks execute goes through ``say`` (one lock: lines of notebooks running side by side never mix);
durations read ``26m57s``, paths are shown relative to the working directory (``shown``) or to the
checkout (``portable``, also in the manifest), times are UTC.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

# Exit codes
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class ConfigError(ValueError):
    """A bad profile, notebook selection or parameter name: reported before anything executes."""


class BusyError(RuntimeError):
    """Another run_all holds the lock of the output tree this run would write."""


_PRINT_LOCK = threading.Lock()


def say(message: str) -> None:
    """Print one line at once (flushed), never interleaved with another thread's."""
    with _PRINT_LOCK:
        print(message, flush=True)


def format_seconds(seconds: float | None, unknown: str = "?") -> str:
    """``62m05s``, ``5s``; ``unknown`` for ``None``."""
    if seconds is None:
        return unknown
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def utc_now() -> str:
    """The time now, UTC, as ``2024-01-31T12:00:00Z``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown(path: Path) -> str:
    """``path`` as the user would type it: relative to the working directory when inside it."""
    rel = os.path.relpath(Path(path).absolute())
    return str(path) if rel.startswith("..") else rel


def portable(path: str | None, root: Path) -> str | None:
    """``path`` relative to the checkout ``root`` when inside it (as the manifest records paths), else as given."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)
