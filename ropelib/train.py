"""Training loop for the toy models: AdamW, linear warm-up then cosine decay, gradient clipping,
seeded batches, periodic atomic checkpoints, and exact resumption.

Recipe (nanoGPT's ``train.py``; Loshchilov & Hutter 2019, arXiv 1711.05101, for AdamW's decoupled
weight decay; Loshchilov & Hutter 2017, arXiv 1608.03983, for the cosine schedule):

* AdamW with weight decay on the weight matrices of ``nn.Linear`` layers only. Norm gains, biases,
  token embeddings (tied to the output head by default) and every parameter of the positional
  encoding (learned position tables, T5/KERPLE/FIRE bias parameters) are not decayed: decay would
  pull a position table or a bias slope towards zero, i.e. towards "no positional information", which
  would confound the comparison between encodings.
* Learning rate: linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` steps, then
  a cosine from ``lr`` down to ``lr * min_lr_ratio`` at the last step (``warmup_cosine``).
* Gradients clipped to a global L2 norm of ``grad_clip`` (0 disables clipping).
* Determinism: the batch of step ``s`` is drawn from a ``torch.Generator`` seeded from ``(seed, s)``
  (``ropelib.data.batch_generator``), so a run resumed at step ``s`` sees the same batches as an
  uninterrupted one. The global torch RNG (dropout) is saved in every checkpoint and restored on resume. On CPU the same
  seed twice gives identical losses.
* Checkpoints (model, optimiser, scheduler, RNG states, step, history, configs) every
  ``checkpoint_every`` steps and at the end, written atomically with ``ropelib.paths.atomic_write_bytes``
  (a ``torch.save`` into memory first), so a process killed at any moment — even by SIGKILL, even
  during a write — leaves the previous checkpoint readable. ``train`` resumes from a checkpoint found
  in ``checkpoint_dir``.
* CUDA: bf16 autocast when ``amp`` is true (logits and the loss stay float32; RoPE's angles and their
  cos/sin are float64, the interleaved layout rotates in float32 and the half layout, as HF, in bf16 with
  the float64 values rounded once, ``ropelib.rope``); AdamW's fused kernel (``fused=True``, one kernel for the whole
  update, PyTorch's ``torch.optim.AdamW`` docs); host batches copied from pinned memory with
  ``non_blocking=True``. ``compile=True`` wraps the model in ``torch.compile`` (the checkpoint holds the
  uncompiled module's weights). On CPU none of these apply: the arithmetic there is the same as before
  they existed (foreach AdamW, plain copies, no autocast).
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm  # the text bar: no widget state in committed notebooks

from .data import batch_generator
from .model import resolve_device, start_windows
from .paths import atomic_write_bytes

__all__ = [
    "TrainConfig",
    "CHECKPOINT_NAME",
    "train",
    "warmup_cosine",
    "param_groups",
    "load_checkpoint",
]

#: file name of the training checkpoint inside ``checkpoint_dir``
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. ``device`` is where it runs ("auto": cuda, then mps, then cpu);
    it does not change the run's identity (``ropelib.runs.RunSpec.hash`` leaves it out).

    ``checkpoint_every``: steps between checkpoints (0: only the final one). ``eval_every``: steps
    between validation losses (0: none), each the mean over ``eval_batches`` fixed batches drawn with
    generators seeded from ``(seed, "eval", i)`` (from the ``"validation"`` split for tasks that have
    one, e.g. ``chars``; from the training distribution with fixed seeds otherwise). ``amp``: bf16
    autocast on CUDA (ignored elsewhere). ``beta1``/``beta2``: AdamW's betas (nanoGPT: 0.9, 0.95).
    """

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.95
    seed: int = 0
    checkpoint_every: int = 50
    eval_every: int = 0
    eval_batches: int = 4
    device: str = "auto"
    compile: bool = False
    amp: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "eval_batches"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "checkpoint_every", "eval_every", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.warmup_steps > self.steps:
            raise ValueError(f"TrainConfig.warmup_steps ({self.warmup_steps}) must be <= steps ({self.steps})")
        # floats are normalised so that lr=1 and lr=1.0 are the same config (and the same run hash)
        for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "beta1", "beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"TrainConfig.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                f"TrainConfig.weight_decay and grad_clip must be >= 0, got {self.weight_decay!r}, {self.grad_clip!r}"
            )
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(
                f"TrainConfig.device must be a device name ('auto', 'cpu', 'cuda', 'mps'), got {self.device!r}"
            )
        for name in ("compile", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; an unknown key raises ValueError listing the accepted ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; accepted: {', '.join(sorted(known))}")
        return cls(**dict(data))


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"TrainConfig.{name} must be {bound}, got {value!r}")


# -- schedule, optimiser ------------------------------------------------------------------


class warmup_cosine:  # noqa: N801  (a picklable callable used like a function by LambdaLR)
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based): linear warm-up to 1
    over ``warmup_steps`` steps, then a cosine from 1 to ``min_lr_ratio`` at step ``total_steps - 1``."""

    def __init__(self, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> None:
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps - 1
        if decay_steps <= 0:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``nn.Linear`` weight matrices decayed, everything else not (module
    docstring). A parameter shared by several modules (tied embeddings) is listed once, and is not
    decayed if any of its owners is an embedding or the positional encoding."""
    no_decay_owners = (nn.Embedding, nn.LayerNorm)
    encoding = getattr(model, "encoding", None)
    protected: set[int] = set()
    for module in model.modules():
        if isinstance(module, no_decay_owners) or (encoding is not None and module is encoding):
            protected.update(id(p) for p in module.parameters())
    decay: dict[int, nn.Parameter] = {}
    other: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(module, nn.Linear) and name == "weight" and id(param) not in protected:
                decay[id(param)] = param
            else:
                other[id(param)] = param
    for key in decay.keys() & other.keys():  # a shared parameter with a non-decayed owner
        del decay[key]
    return [
        {"params": list(decay.values()), "weight_decay": weight_decay},
        {"params": list(other.values()), "weight_decay": 0.0},
    ]


def _optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; on CUDA its fused kernel (on CPU the default implementation)."""
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, betas=(config.beta1, config.beta2), **fused
    )


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``: on CUDA copied from pinned (page-locked) memory with ``non_blocking=True``,
    so the copy runs asynchronously on the stream; elsewhere a plain ``.to(device)``."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # logits (B, T, V), targets (B, T) with -100 where not scored
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)


# -- checkpoints -----------------------------------------------------------------------------------


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _model_config_dict(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else None


def _identity(config: TrainConfig) -> dict[str, Any]:
    """The fields that must match for a checkpoint to be resumed under ``config`` (device may change)."""
    data = config.to_dict()
    for name in ("device", "compile"):
        data.pop(name)
    return data


def load_checkpoint(checkpoint_dir: str | Path) -> dict[str, Any] | None:
    """The checkpoint dict in ``checkpoint_dir`` (on CPU), or ``None`` if there is none."""
    path = Path(checkpoint_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# -- the loop --------------------------------------------------------------------------------------


@torch.no_grad()
def _validation_loss(model: nn.Module, task: Any, config: TrainConfig, device: torch.device, autocast) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    controls = {"split": "validation"} if "split" in getattr(task, "controls", ()) else {}
    for i in range(config.eval_batches):
        batch = task.sample(config.batch_size, config.seq_len, batch_generator(config.seed, "eval", i), **controls)
        x, y = _to_device(start_windows(model, batch.x), device), _to_device(batch.y, device)  # (B, T) each
        with autocast():
            logits = model(x)
        n = int((y != -100).sum())
        total += float(_lm_loss(logits, y)) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


def train(
    model: nn.Module,
    task: Any,
    config: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    *,
    progress: bool = True,
    stop_at: int | None = None,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` on batches from ``task`` under ``config``; return the history.

    The history is a list with one dict per optimiser step: ``step`` (1-based, steps done),
    ``loss`` (training loss of that step's batch), ``lr`` (the rate used), ``grad_norm`` (before
    clipping), ``tokens_per_s``, ``elapsed_s`` (training seconds so far, summed over resumptions) and,
    every ``eval_every`` steps, ``val_loss``.

    With ``checkpoint_dir``, a checkpoint is written there every ``checkpoint_every`` steps and at
    the end; if one is already there, training resumes from it (the model's weights, optimiser,
    scheduler and RNG states are restored) — a finished checkpoint just loads the final weights and
    returns its history. A checkpoint written under a different ``TrainConfig`` (other than
    ``device``/``compile``) or model config raises ValueError.

    ``stop_at``: stop (after checkpointing) once ``stop_at`` steps are done, for time-sliced jobs;
    a later call resumes. The model is left on the config's device, in train mode.

    ``device``: the device already resolved by the caller (``ropelib.runs.run`` resolves it once per
    run); ``None`` resolves ``config.device`` here. A device of another type than a non-``"auto"``
    ``config.device`` raises ValueError.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at < 1):
        raise ValueError(f"stop_at must be a positive integer or None, got {stop_at!r}")
    device = resolve_device(config.device if device is None else device)  # unavailable -> RuntimeError naming it
    if config.device != "auto" and torch.device(config.device).type != device.type:
        raise ValueError(f"device {str(device)!r} contradicts TrainConfig.device {config.device!r}")
    model.to(device)
    model.train()

    optimizer = _optimizer(model, config, device)
    kernel = {k: optimizer.param_groups[0][k] for k in ("fused", "foreach")}  # this device's implementation
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.steps, config.warmup_steps, config.min_lr_ratio)
    )
    history: list[dict[str, Any]] = []
    start = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    state = load_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if state is not None:
        if state["train_config"] != _identity(config):
            diff = sorted(k for k in _identity(config) if state["train_config"].get(k) != _identity(config)[k])
            raise ValueError(f"checkpoint {ckpt_path} was written under another TrainConfig (differs in {diff})")
        mine = _model_config_dict(model)
        if state.get("model_config") is not None and mine is not None and state["model_config"] != mine:
            raise ValueError(f"checkpoint {ckpt_path} was written for another ModelConfig: {state['model_config']}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # a checkpoint from another device keeps its hyperparameters only
            group.update(kernel)
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], device)
        start = int(state["step"])
        history = list(state["history"])

    end = config.steps if stop_at is None else min(stop_at, config.steps)

    def checkpoint(step: int) -> None:
        if ckpt_path is None:
            return
        _save_checkpoint(
            ckpt_path,
            {
                "step": step,
                "model": _to_cpu(model.state_dict()),
                "optimizer": _to_cpu(optimizer.state_dict()),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(device),
                "history": history,
                "train_config": _identity(config),
                "model_config": _model_config_dict(model),
            },
        )

    if start >= end:
        return history

    forward = torch.compile(model) if config.compile else model
    use_amp = config.amp and device.type == "cuda"

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp)

    elapsed = history[-1]["elapsed_s"] if history else 0.0
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc="train", leave=False)
    try:
        for step in range(start, end):
            t0 = time.perf_counter()
            batch = task.sample(config.batch_size, config.seq_len, batch_generator(config.seed, step))
            x, y = _to_device(start_windows(model, batch.x), device), _to_device(batch.y, device)  # (B, T) long each
            lr = optimizer.param_groups[0]["lr"]
            with autocast():
                logits = forward(x)  # (B, T, V)
            loss = _lm_loss(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at step {step + 1}; lower lr ({config.lr})?")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
            optimizer.step()
            scheduler.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            elapsed += dt
            record: dict[str, Any] = {
                "step": step + 1,
                "loss": loss.item(),
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": x.numel() / dt if dt > 0 else float("nan"),
                "elapsed_s": elapsed,
            }
            if config.eval_every and (step + 1) % config.eval_every == 0:
                record["val_loss"] = _validation_loss(forward, task, config, device, autocast)
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            done = step + 1
            if done == end or (config.checkpoint_every and done % config.checkpoint_every == 0):
                checkpoint(done)
    finally:
        bar.close()
    return history
