"""Cached, resumable training runs and sweeps: ``RunSpec`` -> stable hash -> ``cache/runs/<hash>/``.

``run(spec)`` trains on a cache miss and reads the finished run back on a hit; a run interrupted at
any moment (an exception, Ctrl-C, even SIGKILL mid-write) resumes from its last checkpoint, because
every file is written atomically (``ropelib.paths.atomic_write_bytes``: temp file, fsync, rename)
and a run counts as finished only once ``metadata.json`` — written last — exists. An exclusive file
lock (``fcntl.flock``; released by the kernel if the holder dies) makes a second process running the
same spec wait and then read the result back instead of training it twice.

The hash covers the spec and the code that trains it (``ropelib.fingerprint.training_fingerprint``:
model, encodings, RoPE, tasks, training loop; comments and docstrings do not count), so a change to
that code trains afresh instead of reading back models the old code trained; ``spec.json`` and
``metadata.json`` record it as ``code``.

Every read is verified: ``metadata.json`` records the size and SHA-256 of ``spec.json``, ``model.pt``
and ``history.json`` (``files``), tensors are read with ``torch.load(..., weights_only=True)`` and
loaded into a model of the spec, and a checkpoint must load before training resumes from it. A corrupt
entry (a truncated or garbage file) is reported with a ``UserWarning`` naming the file and what is
wrong, the bad file is moved aside (``<name>.corrupt``), and the run is treated as missing: it resumes
from its checkpoint if that is good (a finished run's final checkpoint just restores its weights),
or trains from scratch. Entries without ``files`` (older writers) are verified by loading them.

Layout of one entry (``<hash>`` is the first 16 hex digits of ``RunSpec.hash()``)::

    <cache_dir>/runs/<hash>/spec.json       the full spec (written first)
    <cache_dir>/runs/<hash>/checkpoint.pt   training state, every ``checkpoint_every`` steps (ropelib.train)
    <cache_dir>/runs/<hash>/model.pt        final weights (state_dict, CPU tensors)
    <cache_dir>/runs/<hash>/history.json    per-step training history
    <cache_dir>/runs/<hash>/metadata.json   task/corpus info, versions, device, wall time, file checksums (last)
    <cache_dir>/runs/<hash>/lock            the lock file

Fine-tuning is first-class: ``RunSpec(parent=...)`` starts from the parent run's final weights (the
parent is run or read back first), e.g. to continue at a longer ``seq_len`` or with a RoPE scaling in
``model.encoding_params`` (Chen et al. 2023, arXiv 2306.15595, §3: PI fine-tuning; Peng et al. 2023,
arXiv 2309.00071, §4: YaRN fine-tuning). Only parameters are taken from the parent; buffers (e.g. a
RoPE frequency table) come from the child's own config.

``sweep(specs, executor=None)`` runs many specs through any ``concurrent.futures.Executor``-like object
(anything with ``submit(fn, *args)`` returning an object with ``result()``): local spawned processes
by default, or Slurm through submitit (see ``sweep``). The default pool's workers exit when the
process that started them dies (even by SIGKILL), and are terminated when the sweep is interrupted.
A sweep reports its progress over runs (``SweepProgress``): a tqdm bar on stderr, and, where
``$ROPELIB_PROGRESS_FILE`` names a file (``run_all.py`` sets it for each notebook), one status line in
that file, which run_all's heartbeat shows.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as _dt
import hashlib
import io
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm  # the text bar (stderr): no widget state in committed notebooks

from . import fingerprint as _fingerprint
from .data import TaskConfig, make_task
from .encodings import resolved_params
from .model import ModelConfig, ToyTransformer, select_device
from .paths import atomic_write_bytes, atomic_write_text
from .paths import cache_dir as default_cache_dir
from .provenance import device_description, package_versions
from .train import CHECKPOINT_NAME, TrainConfig, train

__all__ = [
    "FORMAT_VERSION", "RunSpec", "RunResult", "run", "sweep", "SweepProgress", "run_dir", "is_finished", "code_fingerprint",
]  # fmt: skip

#: bumped when the meaning of a cached entry changes (part of every hash, so old entries are ignored)
FORMAT_VERSION = 2
#: hex digits of the hash used as the entry's folder name
DIR_HASH_CHARS = 16
#: keys a training checkpoint must hold (ropelib.train) to be resumed
_CHECKPOINT_KEYS = ("step", "model", "optimizer", "scheduler", "rng", "history", "train_config")


def code_fingerprint() -> str:
    """Fingerprint of the code that determines a trained model
    (``ropelib.fingerprint.training_fingerprint``); part of every run hash."""
    return _fingerprint.training_fingerprint()


_fingerprint.snapshot()  # now: the fingerprint describes the code this process imported, even if edited later


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a training run: model, task, training config, and optionally the run it
    fine-tunes (``parent``). ``hash()`` identifies it; ``train.device`` is not part of the identity."""

    model: ModelConfig
    task: TaskConfig
    train: TrainConfig
    parent: RunSpec | None = None

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelConfig), ("task", TaskConfig), ("train", TrainConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"RunSpec.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.parent is not None and not isinstance(self.parent, RunSpec):
            raise ValueError(f"RunSpec.parent must be a RunSpec or None, got {type(self.parent).__name__}")
        try:
            json.dumps(self.to_dict(), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"RunSpec must be JSON-serialisable (task params, encoding params): {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable); ``from_dict`` inverts it."""
        return {
            "model": self.model.to_dict(),
            "task": self.task.to_dict(),
            "train": self.train.to_dict(),
            "parent": None if self.parent is None else self.parent.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """Inverse of ``to_dict``."""
        parent = data.get("parent")
        return cls(
            model=ModelConfig.from_dict(data["model"]),
            task=TaskConfig.from_dict(data["task"]),
            train=TrainConfig.from_dict(data["train"]),
            parent=None if parent is None else cls.from_dict(parent),
        )

    def identity(self) -> dict[str, Any]:
        """What the hash covers: ``to_dict()`` without ``train.device`` (at every level), with the
        encoding's parameter defaults filled in, plus the cache format version and the fingerprint of
        the training code (``code_fingerprint()``; one for the whole chain of parents, since a parent
        is trained by the same code in the same process)."""

        def strip(d: dict[str, Any]) -> dict[str, Any]:
            out = dict(d)
            out["train"] = {k: v for k, v in d["train"].items() if k != "device"}
            # the encoding's parameters with every default filled in, so a changed default is a new run
            model = dict(d["model"])
            model["encoding_params"] = resolved_params(model["encoding"], model["encoding_params"])
            out["model"] = model
            out["parent"] = None if d["parent"] is None else strip(d["parent"])
            return out

        return {"format": FORMAT_VERSION, "code": code_fingerprint(), "spec": strip(self.to_dict())}

    def hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of ``identity()`` (sorted keys, no spaces)."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class RunResult:
    """A finished run: its spec and hash, the trained model (eval mode, on the spec's device), the
    training history, the cache folder, the metadata, and whether it was read back from the cache."""

    spec: RunSpec
    hash: str
    model: ToyTransformer
    history: list[dict[str, Any]]
    path: Path
    metadata: dict[str, Any]
    cached: bool = False


# -- cache entries -----------------------------------------------------------------------------------


def _resolve_cache(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser().resolve() if cache_dir is not None else default_cache_dir()


def run_dir(spec: RunSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of ``spec`` (``<cache_dir>/runs/<first 16 hex of hash>``); not created."""
    return _resolve_cache(cache_dir) / "runs" / spec.hash()[:DIR_HASH_CHARS]


def is_finished(spec: RunSpec, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether ``spec`` has a finished entry in the cache: its ``metadata.json`` parses and every file
    it records has the recorded size (a cheap check; reading the entry back verifies the checksums)."""
    path = run_dir(spec, cache_dir)
    try:
        metadata = _read_metadata(path)
    except _Corrupt:
        return False
    for name, record in metadata.get("files", {}).items():
        try:
            if (path / name).stat().st_size != record["bytes"]:
                return False
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(0.5)
            try:
                yield
            finally:
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class _Corrupt(Exception):
    """A cache file that cannot be trusted: its ``path`` and what is wrong with it (``problem``)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _short(exc: BaseException) -> str:
    """``Type: first line of the message`` (torch's unpickling errors run to a page of advice)."""
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0] if lines else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n").encode("utf-8")


def _write_file(path: Path, data: bytes) -> dict[str, Any]:
    """Write ``data`` atomically; return its record for ``metadata["files"]`` (size and SHA-256)."""
    atomic_write_bytes(path, data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _read_verified(path: Path, files: Mapping[str, Any] | None = None) -> bytes:
    """The bytes of ``path``, checked against its record in ``files`` if there is one; _Corrupt if
    missing, unreadable, of another size or another SHA-256."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _Corrupt(path, "is missing") from None
    except OSError as exc:
        raise _Corrupt(path, f"is unreadable ({_short(exc)})") from None
    record = (files or {}).get(path.name)
    if record is not None:
        if len(data) != record["bytes"]:
            raise _Corrupt(path, f"has {len(data)} bytes, {record['bytes']} were written (truncated or overwritten)")
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise _Corrupt(path, "has another SHA-256 than the one recorded when it was written")
    return data


def _parse_json(path: Path, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Corrupt(path, f"is not valid JSON ({_short(exc)})") from None


def _load_tensors(path: Path, data: bytes) -> Any:
    """``torch.load`` of ``data`` on CPU with ``weights_only=True`` (no arbitrary unpickling)."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, pickle and EOF errors all mean the same: unreadable
        raise _Corrupt(path, f"is not a readable torch file ({_short(exc)})") from None


def _fits(path: Path, spec: RunSpec, state: Any) -> None:
    """_Corrupt unless ``state`` loads into a model of ``spec`` (strictly: every name and shape)."""
    try:
        ToyTransformer(spec.model).load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise _Corrupt(path, f"does not hold the weights of this spec's model ({_short(exc)})") from None


def _read_metadata(path: Path) -> dict[str, Any]:
    file = path / "metadata.json"
    metadata = _parse_json(file, _read_verified(file))
    files = metadata.get("files", {}) if isinstance(metadata, dict) else None
    good = isinstance(files, dict) and all(
        isinstance(r, dict) and isinstance(r.get("bytes"), int) and isinstance(r.get("sha256"), str)
        for r in files.values()
    )
    if not good:
        raise _Corrupt(file, "is not a run's metadata (a JSON object with a 'files' record)")
    return metadata


def _read_back(spec: RunSpec, path: Path, digest: str, device: torch.device) -> RunResult:
    """The finished entry at ``path``, every file verified, its model on ``device``; _Corrupt naming the
    first bad one. Entries without a ``files`` record (written before it existed) are verified by loading them."""
    metadata = _read_metadata(path)
    files = metadata.get("files")
    if metadata.get("hash", digest) != digest:
        raise _Corrupt(path / "metadata.json", f"records the hash {metadata['hash']!r}, not {digest!r}")
    spec_file = path / "spec.json"
    stored = _parse_json(spec_file, _read_verified(spec_file, files))
    try:
        stored_hash = RunSpec.from_dict(stored).hash()
    except Exception as exc:  # noqa: BLE001
        raise _Corrupt(spec_file, f"is not a run spec ({_short(exc)})") from None
    if stored_hash != digest or stored.get("code", code_fingerprint()) != code_fingerprint():
        raise _Corrupt(spec_file, "holds another spec or code (a hash prefix collision or a copied folder)")
    history_file = path / "history.json"
    history = _parse_json(history_file, _read_verified(history_file, files))
    if not isinstance(history, list):
        raise _Corrupt(history_file, "is not a list of training steps")
    model_file = path / "model.pt"
    state = _load_tensors(model_file, _read_verified(model_file, files))
    model = ToyTransformer(spec.model)
    try:
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise _Corrupt(model_file, f"does not hold the weights of this spec's model ({_short(exc)})") from None
    return RunResult(spec, digest, model.to(device).eval(), history, path, metadata, cached=True)


def _set_aside(file: Path) -> Path:
    """Move a corrupt ``file`` to ``<name>.corrupt`` (replacing an older one); return the new path."""
    target = file.with_name(file.name + ".corrupt")
    with contextlib.suppress(FileNotFoundError):
        os.replace(file, target)
    return target


def _discard_finished(path: Path, err: _Corrupt) -> None:
    """Report the corrupt finished entry at ``path`` and make it unfinished (caller holds the lock)."""
    _set_aside(err.path)
    with contextlib.suppress(FileNotFoundError):
        (path / "metadata.json").unlink()  # the "finished" mark; rewritten when the run is done again
    warnings.warn(
        f"run cache entry {path} is corrupt: {err.path.name} {err.problem}; moved it aside to "
        f"{err.path.name}.corrupt and treating the run as unfinished (it resumes from its checkpoint "
        "if that is good, else trains again)",
        stacklevel=3,
    )


def _good_checkpoint(spec: RunSpec, path: Path) -> dict[str, Any] | None:
    """The entry's checkpoint if it loads and fits the spec's model; a corrupt one is reported and
    moved aside (``checkpoint.pt.corrupt``), so training starts from scratch. None if there is none."""
    file = path / CHECKPOINT_NAME
    if not file.exists():
        return None
    try:
        state = _load_tensors(file, _read_verified(file))
        missing = [k for k in _CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise _Corrupt(file, f"lacks {missing}")
        _fits(file, spec, state["model"])
    except _Corrupt as err:
        _set_aside(file)
        warnings.warn(
            f"run cache entry {path} is corrupt: {file.name} {err.problem}; moved it aside to "
            f"{file.name}.corrupt and training the run from step 0",
            stacklevel=4,
        )
        return None
    return state


def _init_from_parent(model: nn.Module, parent: ToyTransformer) -> None:
    """Copy every parameter of ``parent`` into ``model`` (names and shapes must match)."""
    mine = dict(model.named_parameters())
    theirs = dict(parent.named_parameters())
    if set(mine) != set(theirs):
        raise ValueError(
            "cannot fine-tune from the parent run: parameter names differ "
            f"(only in child: {sorted(set(mine) - set(theirs))}, only in parent: {sorted(set(theirs) - set(mine))})"
        )
    bad = {n: (tuple(theirs[n].shape), tuple(p.shape)) for n, p in mine.items() if theirs[n].shape != p.shape}
    if bad:
        raise ValueError(f"cannot fine-tune from the parent run: parameter shapes differ (parent, child): {bad}")
    with torch.no_grad():
        for name, p in mine.items():
            p.copy_(theirs[name].to(p.device))


def _train_entry(
    spec: RunSpec, path: Path, digest: str, cache_root: Path, progress: bool, device: torch.device
) -> RunResult:
    t_start = time.time()
    task = make_task(spec.task)
    files = {"spec.json": _write_file(path / "spec.json", _json_bytes({**spec.to_dict(), "code": code_fingerprint()}))}
    parent_hash = None
    existing = _good_checkpoint(spec, path)  # before seeding: checking it builds a model
    torch.manual_seed(spec.train.seed)  # model initialisation is seeded too
    model = ToyTransformer(spec.model)
    resumed_from = 0 if existing is None else int(existing["step"])
    if spec.parent is not None:
        parent_device = device if spec.parent.train.device == spec.train.device else None
        parent = _run(spec.parent, cache_root, progress, parent_device)
        parent_hash = parent.hash
        if existing is None:  # on resume the checkpoint already holds the fine-tuned weights
            _init_from_parent(model, parent.model)
    del existing
    history = train(model, task, spec.train, checkpoint_dir=path, progress=progress, device=device)

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    files["model.pt"] = _write_file(path / "model.pt", buffer.getvalue())
    files["history.json"] = _write_file(path / "history.json", _json_bytes(history))
    wall = time.time() - t_start
    metadata = {
        "hash": digest,
        "code": code_fingerprint(),
        "spec": spec.to_dict(),
        "parent_hash": parent_hash,
        "task_info": task.info(),
        "versions": package_versions(),
        "device": str(device),
        "device_description": device_description(device),
        "torch_threads": torch.get_num_threads(),
        "num_parameters": model.num_parameters(),
        "steps": len(history),
        "final_loss": history[-1]["loss"] if history else None,
        "train_time_s": history[-1]["elapsed_s"] if history else 0.0,
        "wall_time_s": wall,
        "resumed_from_step": resumed_from,
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "files": files,
    }
    atomic_write_bytes(path / "metadata.json", _json_bytes(metadata))  # last: marks the entry finished
    model.eval()
    return RunResult(spec, digest, model, history, path, metadata, cached=False)


def run(spec: RunSpec, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> RunResult:
    """Train ``spec`` (or read it back if finished) and return the ``RunResult``.

    ``cache_dir``: where entries live (default ``ropelib.paths.cache_dir()``, i.e. ``cache/`` or
    ``$ROPELIB_CACHE_DIR``). An unfinished entry resumes from its last checkpoint. Concurrent calls
    with the same spec (threads or processes sharing the cache folder) serialise on a file lock; the
    later one reads the result back. ``metadata`` records the task info (corpus source, version,
    SHA-256), package versions, device, wall time of the call that trained it (``wall_time_s``),
    training seconds summed over resumptions (``train_time_s``), the step it resumed from, the
    training code's fingerprint (``code``) and the size and SHA-256 of each file (``files``).

    A corrupt entry (see the module docstring) is reported with a ``UserWarning`` naming the file,
    then resumed from its checkpoint if that is good, or trained again.

    Training seeds the global torch RNG with ``spec.train.seed`` (model initialisation), so a run's
    weights do not depend on what ran before it in the process.

    Raises ValueError for a bad spec (unknown task, bad sizes) and RuntimeError for an unavailable
    device (``spec.train.device``).
    """
    if not isinstance(spec, RunSpec):
        raise ValueError(f"run() needs a RunSpec, got {type(spec).__name__}")
    return _run(spec, _resolve_cache(cache_dir), progress, None)


def _run(spec: RunSpec, cache_root: Path, progress: bool, device: torch.device | None) -> RunResult:
    """``run`` on a resolved cache folder; ``device``: the run's device, resolved by the caller (a sweep
    resolves each device name once), or ``None``: resolve ``spec.train.device`` here, once, for the
    whole run (reading back, training, the parent of a fine-tuning run)."""
    if device is None:
        device = select_device(spec.train.device)  # unavailable -> RuntimeError, before any lock or work
    digest = spec.hash()
    path = run_dir(spec, cache_root)
    if (path / "metadata.json").exists():
        try:
            return _read_back(spec, path, digest, device)
        except _Corrupt:
            pass  # reported and repaired below, under the lock (another process may be repairing it)
    with _locked(path / "lock"):
        if (path / "metadata.json").exists():  # another process finished it while we waited
            try:
                return _read_back(spec, path, digest, device)
            except _Corrupt as err:
                _discard_finished(path, err)
        return _train_entry(spec, path, digest, cache_root, progress, device)


# -- sweeps ------------------------------------------------------------------------------------------

#: seconds between two checks of the pool workers' fallback watcher that their parent is alive
PARENT_POLL_S = 1.0


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def _exit_with_parent(parent_pid: int) -> None:
    """Make this process (a pool worker) end when the process ``parent_pid`` that started it dies,
    even by SIGKILL: on Linux the kernel sends SIGTERM (``prctl(PR_SET_PDEATHSIG)``); everywhere a
    daemon thread checks ``os.getppid()`` every ``PARENT_POLL_S`` seconds (the orphan is adopted by
    another process). Training checkpoints are written atomically, so dying at any moment is safe."""

    def die() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        os._exit(1)  # SIGTERM handled or ignored by someone: leave anyway

    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # no libc, a sandbox refusing prctl: the thread still watches
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        die()

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                die()

    threading.Thread(target=watch, name="ropelib-parent-watch", daemon=True).start()


def _worker_init(threads: int | None, parent_pid: int | None = None) -> None:
    """Initializer of the default pool's workers: torch threads, and exit when ``parent_pid`` dies."""
    _set_threads(threads)
    if parent_pid is not None:
        _exit_with_parent(parent_pid)


def _sweep_worker(spec: RunSpec, cache_dir: str, threads: int | None = None, expected_hash: str | None = None) -> str:
    """Run one spec in a worker (a spawned process, a Slurm job, ...); return its hash.

    The caller reads the result back from the shared cache, so nothing large crosses processes.
    ``expected_hash``: the spec's hash in the caller; a worker whose training code differs from the
    caller's (a file edited after the caller imported ropelib) refuses rather than train a model the
    caller would not find."""
    _set_threads(threads)
    if expected_hash is not None and spec.hash() != expected_hash:
        raise RuntimeError(
            f"the training code changed since the sweeping process imported ropelib (fingerprint "
            f"{code_fingerprint()[:12]} here, another there): restart that process (the kernel) and sweep again"
        )
    return run(spec, cache_dir=cache_dir, progress=False).hash


def _terminate(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Cancel what is queued and end the pool's workers now (SIGTERM, then SIGKILL after 5 s)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle before 3.14
    pool.shutdown(wait=False, cancel_futures=True)  # (this forgets the processes: read them first)
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.terminate()
    deadline = time.time() + 5
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.time()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)


#: environment variable naming a file where ``sweep`` keeps one line of progress (run_all sets it per notebook)
PROGRESS_FILE_ENV = "ROPELIB_PROGRESS_FILE"


def _fmt_duration(seconds: float | None) -> str:
    """``1m05s``, ``42s``, or ``unknown`` for ``None``."""
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class SweepProgress:
    """Run-level progress of one ``sweep``: ``n`` of ``total`` distinct runs finished, how many were
    already in the cache and how many were trained, the time since the sweep started and an estimate
    of the time left (runs still to train times the mean wall time per trained run so far; "unknown"
    before the first one finishes).

    ``bar``: show a tqdm bar on ``sys.stderr`` (updated once per finished run, so it is cheap).
    ``status_file``: also keep ``line()`` in this file (written atomically on every change), for a
    process that watches this one (run_all's heartbeat). A file that cannot be written is ignored:
    progress must never fail a sweep."""

    def __init__(
        self,
        total: int,
        cached: int,
        bar: bool,
        status_file: str | os.PathLike | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.total, self.cached, self.trained = total, cached, 0
        self._clock = clock
        self._started = clock()
        self._file = Path(status_file) if status_file else None
        self._bar = None
        if bar:
            self._bar = tqdm(
                total=total,
                initial=cached,
                desc="sweep",
                unit="run",
                file=sys.stderr,
                leave=True,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs{postfix}",
            )  # tqdm puts ", " before a postfix
        self._show()

    @property
    def done(self) -> int:
        return self.cached + self.trained

    def elapsed(self) -> float:
        return self._clock() - self._started

    def remaining(self) -> float | None:
        """Estimated seconds left: 0 when done, ``None`` until a run has been trained."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        if self.trained == 0:
            return None
        return left * self.elapsed() / self.trained

    def line(self) -> str:
        """E.g. ``sweep: 6 of 10 runs finished (3 cached, 3 trained); elapsed 1m02s, estimated left 1m22s``."""
        return (f"sweep: {self.done} of {self.total} runs finished ({self.cached} cached, {self.trained} trained); "
                f"elapsed {_fmt_duration(self.elapsed())}, estimated left {_fmt_duration(self.remaining())}")  # fmt: skip

    def advance(self) -> None:
        """One more run trained (or, in a worker, read back) by this sweep."""
        self.trained += 1
        if self._bar is not None:
            self._bar.update(1)
        self._show()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _show(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(
                f"{self.cached} cached, {self.trained} trained, elapsed {_fmt_duration(self.elapsed())}, "
                f"left {_fmt_duration(self.remaining())}", refresh=True,
            )  # fmt: skip
        if self._file is not None:
            with contextlib.suppress(OSError):
                atomic_write_text(self._file, self.line() + "\n")


def progress_bar_default() -> bool:
    """The bar's default: on, except in a notebook that ``run_all.py`` executes (``$ROPELIB_NOTEBOOK`` set),
    where stderr is recorded into the executed notebook (run_all shows the progress file instead)."""
    return not os.environ.get("ROPELIB_NOTEBOOK")


def _wait_all(futures: Sequence[Any], progress: SweepProgress) -> None:
    """Wait for every future, advancing ``progress`` as each finishes; the first failure propagates.
    ``concurrent.futures`` futures are taken as they complete; others (a submitit job: only
    ``result()`` is promised) in submission order."""
    if all(isinstance(f, concurrent.futures.Future) for f in futures):
        futures = concurrent.futures.as_completed(futures)
    for future in futures:
        future.result()
        progress.advance()


def sweep(
    specs: Sequence[RunSpec],
    executor: Any = None,
    max_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> list[RunResult]:
    """Run every spec (training the unfinished ones in parallel) and return their results in order;
    each result's ``cached`` says whether it was finished in the cache before this call.

    ``executor``: anything with ``submit(fn, *args)`` returning an object with ``.result()`` — a
    ``concurrent.futures`` executor, a submitit executor, a Dask/Ray wrapper. It is not shut down.
    Default: a ``ProcessPoolExecutor`` with the ``spawn`` start method and ``max_workers`` processes
    (default: ``min(#unfinished specs, os.cpu_count())``), each with
    ``torch.set_num_threads(cpu_count // workers)`` so the workers do not oversubscribe the cores.
    Its workers exit when this process dies (even by SIGKILL), and an exception here (a failed run,
    Ctrl-C) cancels the queued runs and terminates the running ones before it propagates (each resumes
    from its last checkpoint next time).
    Finished specs are read back without being submitted; duplicate specs are run once. Workers only
    return hashes; results are read back from the cache here, on this process's device, so the
    cache folder must be shared with the workers (a network file system on a cluster).

    On a Slurm cluster, through submitit (``pip install submitit``)::

        import submitit
        from ropelib.runs import sweep
        executor = submitit.AutoExecutor(folder="cache/submitit")
        executor.update_parameters(timeout_min=60, slurm_partition="gpu", gpus_per_node=1,
                                   cpus_per_task=8, mem_gb=32)
        results = sweep(specs, executor=executor, cache_dir="/shared/ropelib-cache")

    A job killed by the scheduler resumes from its last checkpoint when the sweep is run again.

    ``progress``: a tqdm bar over the distinct runs on stderr (``SweepProgress``: n of N finished, cached
    and trained, elapsed, estimated time left). ``None`` (default): on, except inside a notebook that
    ``run_all.py`` executes, whose stderr would land in the committed notebook. Independently of it,
    where ``$ROPELIB_PROGRESS_FILE`` is set the same status is kept as one line in that file.
    """
    specs = list(specs)
    for i, spec in enumerate(specs):
        if not isinstance(spec, RunSpec):
            raise ValueError(f"sweep() needs RunSpecs; item {i} is a {type(spec).__name__}")
    bad_workers = isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    if max_workers is not None and bad_workers:
        raise ValueError(f"max_workers must be a positive integer or None, got {max_workers!r}")
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress must be True, False or None (automatic), got {progress!r}")
    cache_root = _resolve_cache(cache_dir)
    # each device name resolved once, here (unavailable -> RuntimeError before any worker starts);
    # the workers are other processes and resolve their spec's name once each
    devices = {name: select_device(name) for name in dict.fromkeys(spec.train.device for spec in specs)}
    finished = {spec.hash(): is_finished(spec, cache_root) for spec in specs}
    pending = {spec.hash(): spec for spec in specs if not finished[spec.hash()]}
    report = SweepProgress(
        total=len(finished), cached=len(finished) - len(pending),
        bar=progress_bar_default() if progress is None else progress, status_file=os.environ.get(PROGRESS_FILE_ENV),
    )  # fmt: skip
    try:
        if pending and executor is None:
            cpus = os.cpu_count() or 1
            workers = max_workers or min(len(pending), cpus)
            threads = max(1, cpus // workers)
            pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(threads, os.getpid()),
            )
            try:
                futures = [
                    pool.submit(_sweep_worker, spec, str(cache_root), None, digest) for digest, spec in pending.items()
                ]
                _wait_all(futures, report)
            except BaseException:
                _terminate(pool)
                raise
            pool.shutdown(wait=True)
        elif pending:
            futures = [
                executor.submit(_sweep_worker, spec, str(cache_root), None, digest) for digest, spec in pending.items()
            ]
            _wait_all(futures, report)
    finally:
        report.close()
    results = [_run(spec, cache_root, False, devices[spec.train.device]) for spec in specs]
    for result in results:  # trained by this call (in a worker, or here if its entry was corrupt) or not
        result.cached = result.cached and finished[result.hash]
    return results
