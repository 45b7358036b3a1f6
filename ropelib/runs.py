"""Cached, resumable training runs and sweeps: ``RunSpec`` -> stable hash -> ``cache/runs/<hash>/``.

``run(spec)`` trains on a cache miss and reads the finished run back on a hit; a run interrupted at
any moment (an exception, Ctrl-C, even SIGKILL mid-write) resumes from its last checkpoint, because
every file is written atomically (``ropelib.paths.atomic_write_bytes``: temp file, fsync, rename)
and a run counts as finished only once ``metadata.json`` — written last — exists. An exclusive file
lock (``fcntl.flock``; released by the kernel if the holder dies) makes a second process running the
same spec wait and then read the result back instead of training it twice.

Layout of one entry (``<hash>`` is the first 16 hex digits of ``RunSpec.hash()``)::

    <cache_dir>/runs/<hash>/spec.json       the full spec (written first)
    <cache_dir>/runs/<hash>/checkpoint.pt   training state, every ``checkpoint_every`` steps (ropelib.train)
    <cache_dir>/runs/<hash>/model.pt        final weights (state_dict, CPU tensors)
    <cache_dir>/runs/<hash>/history.json    per-step training history
    <cache_dir>/runs/<hash>/metadata.json   task/corpus info, package versions, device, wall time (last)
    <cache_dir>/runs/<hash>/lock            the lock file

Fine-tuning is first-class: ``RunSpec(parent=...)`` starts from the parent run's final weights (the
parent is run or read back first), e.g. to continue at a longer ``seq_len`` or with a RoPE scaling in
``model.encoding_params`` (Chen et al. 2023, arXiv 2306.15595, §3: PI fine-tuning; Peng et al. 2023,
arXiv 2309.00071, §4: YaRN fine-tuning). Only parameters are taken from the parent; buffers (e.g. a
RoPE frequency table) come from the child's own config.

``sweep(specs, executor=None)`` runs many specs through any ``concurrent.futures.Executor``-like object
(anything with ``submit(fn, *args)`` returning an object with ``result()``): local spawned processes
by default, or Slurm through submitit (see ``sweep``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from .data import TaskConfig, make_task
from .encodings import resolved_params
from .model import ModelConfig, ToyTransformer, select_device
from .paths import atomic_write_bytes, atomic_write_text
from .paths import cache_dir as default_cache_dir
from .provenance import device_description, package_versions
from .train import TrainConfig, load_checkpoint, train

__all__ = ["FORMAT_VERSION", "RunSpec", "RunResult", "run", "sweep", "run_dir", "is_finished"]

#: bumped when the meaning of a cached entry changes (part of every hash, so old entries are ignored)
FORMAT_VERSION = 2
#: hex digits of the hash used as the entry's folder name
DIR_HASH_CHARS = 16


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a training run: model, task, training config, and optionally the run it
    fine-tunes (``parent``). ``hash()`` identifies it; ``train.device`` is not part of the identity."""

    model: ModelConfig
    task: TaskConfig
    train: TrainConfig
    parent: "RunSpec | None" = None

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
    def from_dict(cls, data: Mapping[str, Any]) -> "RunSpec":
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
        encoding's parameter defaults filled in, plus the cache format version."""

        def strip(d: dict[str, Any]) -> dict[str, Any]:
            out = dict(d)
            out["train"] = {k: v for k, v in d["train"].items() if k != "device"}
            # the encoding's parameters with every default filled in, so a changed default is a new run
            model = dict(d["model"])
            model["encoding_params"] = resolved_params(model["encoding"], model["encoding_params"])
            out["model"] = model
            out["parent"] = None if d["parent"] is None else strip(d["parent"])
            return out

        return {"format": FORMAT_VERSION, "spec": strip(self.to_dict())}

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
    """Whether ``spec`` has a finished entry in the cache (its ``metadata.json`` exists)."""
    return (run_dir(spec, cache_dir) / "metadata.json").exists()


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


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_model(spec: RunSpec, path: Path, device: torch.device) -> ToyTransformer:
    model = ToyTransformer(spec.model)
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def _read_back(spec: RunSpec, path: Path, digest: str) -> RunResult:
    stored = _read_json(path / "spec.json")
    if RunSpec.from_dict(stored).hash() != digest:
        raise RuntimeError(f"cache entry {path} holds another spec (hash prefix collision); delete the folder")
    device = select_device(spec.train.device)
    metadata = _read_json(path / "metadata.json")
    history = _read_json(path / "history.json")
    return RunResult(spec, digest, _load_model(spec, path, device), history, path, metadata, cached=True)


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


def _train_entry(spec: RunSpec, path: Path, digest: str, cache_root: Path, progress: bool) -> RunResult:
    t_start = time.time()
    device = select_device(spec.train.device)  # unavailable device -> RuntimeError before any work
    task = make_task(spec.task)
    if not (path / "spec.json").exists():
        _write_json(path / "spec.json", spec.to_dict())
    parent_hash = None
    torch.manual_seed(spec.train.seed)  # model initialisation is seeded too
    model = ToyTransformer(spec.model)
    resumed_from = 0
    existing = load_checkpoint(path)
    if existing is not None:
        resumed_from = int(existing["step"])
    if spec.parent is not None:
        parent = run(spec.parent, cache_dir=cache_root, progress=progress)
        parent_hash = parent.hash
        if existing is None:  # on resume the checkpoint already holds the fine-tuned weights
            _init_from_parent(model, parent.model)
    history = train(model, task, spec.train, checkpoint_dir=path, progress=progress)

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    atomic_write_bytes(path / "model.pt", buffer.getvalue())
    _write_json(path / "history.json", history)
    wall = time.time() - t_start
    metadata = {
        "hash": digest,
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
    }
    _write_json(path / "metadata.json", metadata)  # last: marks the entry finished
    model.eval()
    return RunResult(spec, digest, model, history, path, metadata, cached=False)


def run(spec: RunSpec, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> RunResult:
    """Train ``spec`` (or read it back if finished) and return the ``RunResult``.

    ``cache_dir``: where entries live (default ``ropelib.paths.cache_dir()``, i.e. ``cache/`` or
    ``$ROPELIB_CACHE_DIR``). An unfinished entry resumes from its last checkpoint. Concurrent calls
    with the same spec (threads or processes sharing the cache folder) serialise on a file lock; the
    later one reads the result back. ``metadata`` records the task info (corpus source, version,
    SHA-256), package versions, device, wall time of the call that trained it (``wall_time_s``),
    training seconds summed over resumptions (``train_time_s``) and the step it resumed from.

    Training seeds the global torch RNG with ``spec.train.seed`` (model initialisation), so a run's
    weights do not depend on what ran before it in the process.

    Raises ValueError for a bad spec (unknown task, bad sizes) and RuntimeError for an unavailable
    device (``spec.train.device``).
    """
    if not isinstance(spec, RunSpec):
        raise ValueError(f"run() needs a RunSpec, got {type(spec).__name__}")
    cache_root = _resolve_cache(cache_dir)
    digest = spec.hash()
    path = run_dir(spec, cache_root)
    if (path / "metadata.json").exists():
        return _read_back(spec, path, digest)
    select_device(spec.train.device)  # fail fast, before waiting on a lock
    with _locked(path / "lock"):
        if (path / "metadata.json").exists():  # another process finished it while we waited
            return _read_back(spec, path, digest)
        return _train_entry(spec, path, digest, cache_root, progress)


# -- sweeps ------------------------------------------------------------------------------------------


def _worker_init(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def _sweep_worker(spec: RunSpec, cache_dir: str, threads: int | None = None) -> str:
    """Run one spec in a worker (a spawned process, a Slurm job, ...); return its hash.

    The caller reads the result back from the shared cache, so nothing large crosses processes."""
    _worker_init(threads)
    return run(spec, cache_dir=cache_dir, progress=False).hash


def sweep(
    specs: Sequence[RunSpec],
    executor: Any = None,
    max_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[RunResult]:
    """Run every spec (training the unfinished ones in parallel) and return their results in order.

    ``executor``: anything with ``submit(fn, *args)`` returning an object with ``.result()`` — a
    ``concurrent.futures`` executor, a submitit executor, a Dask/Ray wrapper. It is not shut down.
    Default: a ``ProcessPoolExecutor`` with the ``spawn`` start method and ``max_workers`` processes
    (default: ``min(#unfinished specs, os.cpu_count())``), each with
    ``torch.set_num_threads(cpu_count // workers)`` so the workers do not oversubscribe the cores.
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
    """
    specs = list(specs)
    for i, spec in enumerate(specs):
        if not isinstance(spec, RunSpec):
            raise ValueError(f"sweep() needs RunSpecs; item {i} is a {type(spec).__name__}")
    bad_workers = isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    if max_workers is not None and bad_workers:
        raise ValueError(f"max_workers must be a positive integer or None, got {max_workers!r}")
    cache_root = _resolve_cache(cache_dir)
    pending: dict[str, RunSpec] = {}
    for spec in specs:
        if not is_finished(spec, cache_root):
            pending.setdefault(spec.hash(), spec)
    if pending:
        if executor is None:
            cpus = os.cpu_count() or 1
            workers = max_workers or min(len(pending), cpus)
            threads = max(1, cpus // workers)
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(threads,),
            ) as pool:
                futures = [pool.submit(_sweep_worker, spec, str(cache_root)) for spec in pending.values()]
                for future in futures:
                    future.result()
        else:
            futures = [executor.submit(_sweep_worker, spec, str(cache_root)) for spec in pending.values()]
            for future in futures:
                future.result()
    return [run(spec, cache_dir=cache_root, progress=False) for spec in specs]
