"""Cached evaluations: the same evaluation of the same trained model is computed once.

Training runs are cached by ``ropelib.runs``; this module caches what the notebooks compute *from*
them (perplexity tables, accuracies, loss curves), so that rerunning a notebook whose models are all
in the cache takes seconds instead of re-evaluating every model.

``cached(name, key, compute)`` returns ``compute()`` — a DataFrame, array, number or any picklable
value — computed once and stored under ``<cache_dir>/evals/<name>/<digest>.pkl``. The digest covers

* ``name`` and ``key``: a JSON-serialisable mapping that must hold everything the result depends on
  besides the library (the run hash of each model evaluated, lengths, sample counts, seeds, ...);
* ``code_fingerprint()``: ``ropelib.fingerprint.package_fingerprint()``, the SHA-256 of every
  ``ropelib/**/*.py`` source file with comments, docstrings and formatting normalised away, so any change
  to the library's code (an evaluation, a task generator, an encoding) invalidates every stored
  evaluation, and an edited comment or docstring does not;
* the torch version and ``EVAL_FORMAT``.

Code that lives in a notebook cell is not fingerprinted: put what it depends on into ``key``, and give
the notebook a version to bump when its own evaluation code changes: ``cached = versioned(EVAL_VERSION)``. Entries are written atomically (``ropelib.paths.atomic_write_bytes``), so an
interrupted notebook keeps every evaluation it finished; an entry that cannot be read back (truncated,
garbage) is recomputed and replaced, with a warning naming the file. ``ROPELIB_EVAL_CACHE=0`` turns the cache off
(always compute, never read or write).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from .fingerprint import package_fingerprint, snapshot
from .paths import atomic_write_bytes
from .paths import cache_dir as default_cache_dir

__all__ = ["EVAL_FORMAT", "cached", "versioned", "eval_path", "code_fingerprint", "enabled"]

#: bumped when the meaning of a stored evaluation changes (part of every digest)
EVAL_FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
T = TypeVar("T")


def code_fingerprint() -> str:
    """Fingerprint of the ``ropelib`` package's code (``ropelib.fingerprint.package_fingerprint``: every
    ``.py`` file, comments, docstrings and formatting left out); computed once per process."""
    return package_fingerprint()


snapshot()  # now: the fingerprint describes the code this process imported, even if a file is edited later


def enabled() -> bool:
    """False when the environment variable ``ROPELIB_EVAL_CACHE`` is ``0``, ``false`` or ``no``."""
    return os.environ.get("ROPELIB_EVAL_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (numpy scalars and arrays included); ValueError naming ``where``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return repr(value)  # 'nan', 'inf': JSON has no such numbers
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"key {where}: mapping keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), where)
    raise ValueError(
        f"key {where}: {type(value).__name__} is not allowed in an evaluation key; use str, int, float, bool, "
        f"None, lists and string-keyed mappings of them (e.g. a run's hash, not the model)"
    )


def _digest(name: str, key: Mapping[str, Any]) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be a non-empty string of letters, digits, '_', '.', '-', got {name!r}")
    if not isinstance(key, Mapping):
        raise ValueError(f"key must be a mapping, got {type(key).__name__}")
    payload = {
        "format": EVAL_FORMAT,
        "code": code_fingerprint(),
        "torch": torch.__version__,
        "name": name,
        "key": _plain(key, "key"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def eval_path(name: str, key: Mapping[str, Any], cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``cached(name, key, ...)`` stores its value."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "evals" / name / f"{_digest(name, key)[:24]}.pkl"


def cached(
    name: str, key: Mapping[str, Any], compute: Callable[[], T], cache_dir: str | os.PathLike | None = None
) -> T:
    """``compute()``, read back from the evaluation cache when this ``(name, key)`` was computed before
    with the same library code (see the module docstring); otherwise computed and stored atomically.

    An unreadable entry (truncated by a crash of an older writer, garbage, another pickle protocol)
    is recomputed and replaced rather than trusted, with a ``UserWarning`` naming the file."""
    path = eval_path(name, key, cache_dir)  # validates name and key even when the cache is off
    if not enabled():
        return compute()
    if path.exists():
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh)
        except Exception as exc:  # noqa: BLE001 - a bad entry is recomputed, never returned
            warnings.warn(
                f"evaluation cache entry {path} is unreadable ({type(exc).__name__}: {exc}); recomputing it",
                stacklevel=2,
            )
    value = compute()
    buf = io.BytesIO()
    pickle.dump(value, buf, protocol=pickle.HIGHEST_PROTOCOL)
    atomic_write_bytes(path, buf.getvalue())
    return value


def versioned(version: int | str) -> Callable[[str, Mapping[str, Any], Callable[[], T]], T]:
    """``cached`` with ``"eval_version": version`` added to every key: a notebook's
    ``cached = memo.versioned(EVAL_VERSION)``, bumped after changing how the notebook evaluates."""
    _plain(version, "eval_version")  # validates

    def cached_versioned(name: str, key: Mapping[str, Any], compute: Callable[[], T]) -> T:
        if not isinstance(key, Mapping):
            raise ValueError(f"key must be a mapping, got {type(key).__name__}")
        return cached(name, {**key, "eval_version": version}, compute)

    return cached_versioned
