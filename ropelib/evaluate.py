"""Evaluation at many lengths: language-model loss and perplexity (non-overlapping and sliding
windows), loss by position, retrieval accuracy by depth/distance, algorithmic exact match by length,
and RoPE context extension applied at evaluation time (``with_rope_scaling``).

Window schemes for ``lm_loss_at_lengths`` over a token stream ``t[0 … N-1]`` at window length ``L``
(inputs ``t[s : s+L]``, next-token targets ``t[s+1 : s+L+1]``, so a window needs ``L + 1`` tokens):

* ``"nonoverlap"``: windows start at ``0, L, 2L, …`` and every target is scored — the evaluation of
  Press et al. 2021 (ALiBi, arXiv 2108.12409, §4 / Table 1): on average a token sees ``(L-1)/2``
  tokens of context, and the first token of each window none.
* ``"sliding"`` with ``stride`` ``S`` (``1 <= S <= L``; default ``max(1, L // 4)``): windows start at
  ``0, S, 2S, …``; the first window scores all its ``L`` targets, every later window only its last
  ``S`` targets. Each target is therefore scored exactly once, and every target after the first
  window sees at least ``L - S + 1`` input tokens (itself and ``L - S`` before it) — the scheme of the
  HF "perplexity of fixed-length models" guide and ALiBi's appendix B, which uses small strides
  (``S = 1``: full context ``L`` for every token). The default keeps ``S <= L / 4``, so every target
  past the first window sees at least three quarters of a window. With ``S = L`` it is exactly
  ``"nonoverlap"``.

In both schemes only full windows are used (the tail of the stream that does not fill one, fewer
than ``S`` targets, is not scored). With ``max_windows=None`` and ``max_tokens=None`` every target
of the stream but that tail is scored; ``max_windows`` keeps the first windows and ``max_tokens``
the first windows until at least that many targets are scored (sliding over a whole split at 8x
the training length is expensive), to bound compute. The loss is the mean over scored tokens (token-weighted),
``ppl = exp(loss)``.

An encoding with a finite table (learned absolute positions: ``encoding.max_positions``) cannot
represent a position past it; such a length gets ``loss = NaN`` and an explicit ``reason`` (or a
ValueError with ``strict=True``): positions are never clamped.

Retrieval and algorithmic accuracy are exact match under teacher forcing: a row counts as correct
when the argmax prediction equals the target at every scored position. This equals greedy decoding
of the answer (if every teacher-forced argmax is right, greedy decoding follows the same path; if one
is wrong, greedy decoding goes wrong there), at the cost of one forward pass. ``exact_match_counts``
is that count on one batch (every exact-match score of the package goes through it);
``exact_match_accuracy`` scores fresh samples of a task's training distribution.

RoPE context extension (Chen et al. 2023, arXiv 2306.15595 — ``linear``; bloc97 2023 — ``ntk``,
``dynamic``; Peng et al. 2023, arXiv 2309.00071 — ``yarn``; Meta Llama 3 — ``llama3``) is applied
without retraining by ``with_rope_scaling``, which rebuilds the RoPE encoding with HF-style keys.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .data import IGNORE_INDEX, batch_generator
from .model import start_windows

__all__ = [
    "MODES",
    "LENGTH_MULTIPLIERS",
    "lengths_for",
    "lm_loss_at_lengths",
    "loss_by_position",
    "retrieval_accuracy",
    "algorithmic_accuracy",
    "exact_match_counts",
    "exact_match_accuracy",
    "with_rope_scaling",
    "unsupported_reason",
]

#: window schemes of ``lm_loss_at_lengths``
MODES = ("nonoverlap", "sliding")
#: evaluation lengths as multiples of the training length
LENGTH_MULTIPLIERS = (1.0, 1.5, 2.0, 4.0, 8.0, 16.0)


# -- helpers -----------------------------------------------------------------------------------------


def lengths_for(train_length: int, multipliers: Iterable[float] = LENGTH_MULTIPLIERS) -> list[int]:
    """Evaluation lengths ``round(m * train_length)`` for each multiplier (default 1x … 16x)."""
    _check_positive_int("train_length", train_length)
    out = []
    for m in multipliers:
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not m > 0:
            raise ValueError(f"length multipliers must be positive numbers, got {m!r}")
        out.append(max(1, int(round(m * train_length))))
    return out


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_lengths(lengths: Any) -> list[int]:
    if isinstance(lengths, (int, np.integer)) and not isinstance(lengths, bool):
        lengths = [lengths]
    lengths = list(lengths)
    if not lengths:
        raise ValueError("lengths must name at least one evaluation length")
    return [_check_positive_int("each evaluation length", L) for L in lengths]


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def unsupported_reason(model: nn.Module, length: int) -> str | None:
    """Why ``model`` cannot run a sequence of ``length`` tokens (``None`` if it can).

    Today the one reason is a finite position table (learned absolute positions)."""
    limit = getattr(getattr(model, "encoding", None), "max_positions", None)
    if limit is not None and length > limit:
        return (
            f"the {model.encoding.name!r} encoding has positions 0..{limit - 1} only; length {length} needs "
            f"position {length - 1} (a learned table cannot extrapolate; positions are never clamped)"
        )
    return None


def _token_nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood (B, T); 0 where ``y == IGNORE_INDEX``. The windows ``x`` get the model's
    start token, if it has one (``ropelib.model.start_windows``)."""
    logits = model(start_windows(model, x))  # (B, T, V) float32
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return nll.view_as(y)  # (B, T)


def _window_starts(
    n_tokens: int, length: int, stride: int, max_windows: int | None, max_tokens: int | None = None
) -> list[int]:
    """Window starts ``0, S, 2S, …`` of full windows, cut to ``max_windows`` windows and to the first
    windows that score at least ``max_tokens`` targets (the first scores ``length``, later ones ``stride``)."""
    last = n_tokens - length - 1  # a window needs length + 1 tokens
    starts = list(range(0, last + 1, stride)) if last >= 0 else []
    if max_windows is not None:
        starts = starts[:max_windows]
    if max_tokens is not None:
        needed = 1 + max(0, -(-(max_tokens - length) // stride))  # 1 + ceil((max_tokens - L) / S)
        starts = starts[:needed]
    return starts


# -- language modelling ------------------------------------------------------------------------------


@torch.no_grad()
def lm_loss_at_lengths(
    model: nn.Module,
    tokens: torch.Tensor,
    lengths: Sequence[int] | int,
    mode: str = "nonoverlap",
    stride: int | None = None,
    max_windows: int | None = None,
    *,
    max_tokens: int | None = None,
    batch_size: int = 8,
    strict: bool = False,
) -> pd.DataFrame:
    """Mean next-token loss and perplexity of ``model`` over ``tokens`` (N,) at each window length.

    ``mode``: ``"nonoverlap"`` or ``"sliding"`` (module docstring); ``stride`` (sliding only; default
    ``max(1, L // 4)``, at most ``L``). ``max_windows``: use only the first windows; ``max_tokens``: use
    only the first windows until at least ``max_tokens`` targets are scored (``1 + ceil((max_tokens -
    L) / S)`` windows; either mode, meant for sliding windows at long lengths). Both ``None`` (the
    default): the whole stream (every target but the tail that fills no window). Returns one row
    per length with columns ``length, mode, stride, loss, ppl, n_tokens`` (targets scored),
    ``n_windows, min_context, status, reason``; ``status`` is ``"ok"``, ``"unsupported"`` (e.g. a
    learned position table too short: NaN loss, never clamped; ``strict=True`` raises ValueError
    instead) or ``"too_short"`` (not enough tokens for one window). ``min_context`` is the fewest
    input tokens a scored target outside the first window sees: ``L - S + 1`` (1 for non-overlapping
    windows; the first window's targets see ``1 … L``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown evaluation mode {mode!r}; allowed: {', '.join(MODES)}")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.dtype != torch.long:
        got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a 1-D torch.long tensor, got {got}")
    lengths = _check_lengths(lengths)
    if max_windows is not None:
        max_windows = _check_positive_int("max_windows", max_windows)
    if max_tokens is not None:
        max_tokens = _check_positive_int("max_tokens", max_tokens)
    batch_size = _check_positive_int("batch_size", batch_size)
    if mode == "nonoverlap" and stride is not None:
        raise ValueError(f"stride={stride!r} applies to mode='sliding' only; mode='nonoverlap' uses stride = length")
    if stride is not None:
        stride = _check_positive_int("stride", stride)
        too_big = [L for L in lengths if stride > L]
        if too_big:
            raise ValueError(f"stride={stride} exceeds evaluation length(s) {too_big}; need 1 <= stride <= length")

    was_training = model.training
    model.eval()
    device = _device_of(model)
    rows = []
    try:
        for L in lengths:
            S = L if mode == "nonoverlap" else (stride if stride is not None else max(1, L // 4))
            row = {
                "length": L,
                "mode": mode,
                "stride": S,
                "loss": math.nan,
                "ppl": math.nan,
                "n_tokens": 0,
                "n_windows": 0,
                "min_context": L - S + 1,
                "status": "ok",
                "reason": "",
            }
            reason = unsupported_reason(model, L)
            starts = _window_starts(tokens.numel(), L, S, max_windows, max_tokens)
            if reason is not None:
                if strict:
                    raise ValueError(f"cannot evaluate at length {L}: {reason}")
                row.update(status="unsupported", reason=reason)
            elif not starts:
                row.update(status="too_short", reason=f"{tokens.numel()} tokens cannot fill one window of {L} + 1")
            else:
                offsets = torch.arange(L + 1)  # (L+1,)
                total, count = 0.0, 0
                for i in range(0, len(starts), batch_size):
                    chunk = torch.tensor(starts[i : i + batch_size])  # (b,)
                    seq = tokens[chunk[:, None] + offsets[None, :]]  # (b, L+1)
                    x, y = seq[:, :-1].clone(), seq[:, 1:].clone()  # (b, L) each
                    later = chunk > 0  # every window but the first scores only its last S targets
                    y[later, : L - S] = IGNORE_INDEX
                    nll = _token_nll(model, x.to(device), y.to(device))  # (b, L)
                    total += float(nll.double().sum())
                    count += int((y != IGNORE_INDEX).sum())
                loss = total / count
                row.update(loss=loss, ppl=math.exp(loss), n_tokens=count, n_windows=len(starts), min_context=L - S + 1)
            rows.append(row)
    finally:
        model.train(was_training)
    return pd.DataFrame(rows)


@torch.no_grad()
def loss_by_position(
    model: nn.Module,
    tokens: torch.Tensor,
    length: int,
    max_windows: int | None = None,
    *,
    batch_size: int = 8,
) -> np.ndarray:
    """Mean loss at each position ``0 … length-1`` over non-overlapping windows: ``(length,)`` float64.

    Position ``p`` is the prediction of the token after ``p + 1`` inputs. ``length`` may exceed the
    training length (the curve past it is the extrapolation) wherever the encoding can represent it;
    a length it cannot (learned table too short) raises ValueError naming the reason (there is no row
    to hold a NaN with a reason here), as does a stream too short for one window.
    """
    length = _check_positive_int("length", length)
    if max_windows is not None:
        max_windows = _check_positive_int("max_windows", max_windows)
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.dtype != torch.long:
        raise ValueError("tokens must be a 1-D torch.long tensor")
    reason = unsupported_reason(model, length)
    if reason is not None:
        raise ValueError(f"cannot evaluate at length {length}: {reason}")
    starts = _window_starts(tokens.numel(), length, length, max_windows)
    if not starts:
        raise ValueError(f"{tokens.numel()} tokens cannot fill one window of length {length} + 1")
    was_training = model.training
    model.eval()
    device = _device_of(model)
    sums = torch.zeros(length, dtype=torch.float64)
    offsets = torch.arange(length + 1)
    try:
        for i in range(0, len(starts), _check_positive_int("batch_size", batch_size)):
            chunk = torch.tensor(starts[i : i + batch_size])
            seq = tokens[chunk[:, None] + offsets[None, :]]  # (b, L+1)
            nll = _token_nll(model, seq[:, :-1].to(device), seq[:, 1:].to(device))  # (b, L)
            sums += nll.double().sum(0).cpu()
    finally:
        model.train(was_training)
    return (sums / len(starts)).numpy()


# -- retrieval and algorithmic tasks ----------------------------------------------------------------


@torch.no_grad()
def exact_match_counts(model: nn.Module, batch: Any, batch_size: int | None = None) -> tuple[int, int, int]:
    """``(rows_ok, tokens_ok, n_tokens)`` of ``batch`` (``x``, ``y`` (B, T) long; ``y == IGNORE_INDEX``
    where not scored): the rows whose every scored argmax prediction (teacher forcing, the model's
    start token prepended) is right, the scored tokens predicted right, and the scored tokens.

    The rows go through the model ``batch_size`` at a time (``None``: all at once). The model is run as
    it is: callers put it in eval mode."""
    device = _device_of(model)
    n = batch.x.shape[0]
    step = n if batch_size is None else _check_positive_int("batch_size", batch_size)
    rows_ok, tokens_ok, n_tokens = 0, 0, 0
    for i in range(0, n, step):
        x = batch.x[i : i + step].to(device)  # (b, T)
        y = batch.y[i : i + step].to(device)  # (b, T)
        pred = model(start_windows(model, x)).argmax(-1)  # (b, T)
        scored = y != IGNORE_INDEX
        right = (pred == y) & scored
        rows_ok += int((right | ~scored).all(-1).sum())
        tokens_ok += int(right.sum())
        n_tokens += int(scored.sum())
    return rows_ok, tokens_ok, n_tokens


@torch.no_grad()
def exact_match_accuracy(model: nn.Module, task: Any, length: int, n_samples: int, seed: int) -> float:
    """Fraction of ``n_samples`` sequences of ``length`` from the task's *training* distribution
    (random depth, distance or instance length; generator seeded with ``seed``) whose every scored
    prediction (argmax, teacher forcing) is right: ``exact_match_counts`` in one batch, in eval mode."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    batch = task.sample(n_samples, length, torch.Generator().manual_seed(int(seed)))
    was_training = model.training
    model.eval()
    try:
        rows_ok, _, _ = exact_match_counts(model, batch)
    finally:
        model.train(was_training)
    return rows_ok / n_samples


def _eval_rows(model, task, lengths, control, values, n_samples, seed, batch_size, fits, strict):
    lengths = _check_lengths(lengths)
    n_samples = _check_positive_int("n_samples", n_samples)
    batch_size = _check_positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for L in lengths:
            for v in values:
                row = {
                    "length": L,
                    control: v,
                    "accuracy": math.nan,
                    "token_accuracy": math.nan,
                    "n_samples": n_samples,
                    "n_correct": pd.NA,
                    "status": "ok",
                    "reason": "",
                }
                reason = unsupported_reason(model, L)
                if reason is None:
                    reason = fits(L, v)
                    status = "does_not_fit"
                else:
                    status = "unsupported"
                if reason is not None:
                    if strict:
                        raise ValueError(f"cannot evaluate {control}={v} at length {L}: {reason}")
                    row.update(status=status, reason=reason)
                else:
                    g = batch_generator(seed, "eval", task.name, L, control, v)
                    batch = task.sample(n_samples, L, g, **{control: v})
                    rows_ok, tokens_ok, n_tokens = exact_match_counts(model, batch, batch_size)
                    row.update(
                        accuracy=rows_ok / n_samples, token_accuracy=tokens_ok / max(n_tokens, 1), n_correct=rows_ok
                    )
                rows.append(row)
    finally:
        model.train(was_training)
    df = pd.DataFrame(rows)
    df["n_correct"] = df["n_correct"].astype("Int64")  # <NA> where the cell was not evaluated
    return df


def retrieval_accuracy(
    model: nn.Module,
    task: Any,
    lengths: Sequence[int] | int,
    depths: Sequence[float] | None = None,
    distances: Sequence[int] | None = None,
    n_samples: int = 32,
    seed: int = 0,
    *,
    batch_size: int = 32,
    strict: bool = False,
) -> pd.DataFrame:
    """Exact-match accuracy of a retrieval task at each (length, depth) or (length, distance).

    Give exactly one of ``depths`` (passkey: 0 = needle first, 1 = right before the query) or
    ``distances`` (kv_recall: tokens between the queried value and the query), matching the task's
    evaluation control (``task.controls``). The ``n_samples`` sequences of each cell come from a
    generator seeded from ``(seed, task, length, control, value)``. Columns: ``length``, ``depth`` or
    ``distance``, ``accuracy``, ``token_accuracy``, ``n_samples``, ``n_correct`` (rows exactly right,
    nullable ``Int64``: with ``n_samples`` it gives a Wilson interval), ``status``, ``reason``; a cell
    that cannot be built (distance longer than the length allows, learned table too short) is NaN
    (``n_correct`` ``<NA>``) with a reason (``strict=True`` raises ValueError).

    Compare an accuracy with the task's ``position_blind_floor()`` (kv_recall with
    ``distinct_values=True``: ``1 / n_pairs``; passkey: ``1 / n_digits!``), what a predictor that sees
    only the bag of input tokens can reach: retrieval shown to use positions must clear it.
    """
    if (depths is None) == (distances is None):
        raise ValueError("give exactly one of depths= (passkey) or distances= (kv_recall)")
    control, values = ("depth", list(depths)) if depths is not None else ("distance", list(distances))
    controls = getattr(task, "controls", ())
    if control not in controls:
        raise ValueError(
            f"task {getattr(task, 'name', task)!r} has no {control!r} control; its evaluation controls: "
            f"{', '.join(controls) or '(none)'}"
        )
    if not values:
        raise ValueError(f"{control}s must list at least one value")

    def fits(L: int, v: Any) -> str | None:
        if L < task.min_length():
            return f"length {L} is shorter than the task's minimum {task.min_length()}"
        if control == "distance" and hasattr(task, "max_distance") and v > task.max_distance(L):
            return f"distance {v} does not fit in length {L} (at most {task.max_distance(L)})"
        return None

    return _eval_rows(model, task, lengths, control, values, n_samples, seed, batch_size, fits, strict)


def algorithmic_accuracy(
    model: nn.Module,
    task: Any,
    lengths: Sequence[int] | int,
    n_samples: int = 64,
    seed: int = 0,
    *,
    batch_size: int = 64,
    strict: bool = False,
) -> pd.DataFrame:
    """Exact match of an algorithmic task (copy, reverse) at each sequence length ``T``.

    At each ``T`` every sample has the longest instance that fits, ``n = task.max_n(T)`` (copy and
    reverse: ``(T - 2) // 2``), so the rows are the instance lengths a model trained at a shorter
    ``T`` never saw. Columns: ``length``, ``n`` (instance length), ``accuracy`` (whole answer right),
    ``token_accuracy``, ``n_samples``, ``n_correct`` (rows exactly right, ``Int64``), ``status``,
    ``reason``.
    """
    if "n" not in getattr(task, "controls", ()) or not hasattr(task, "max_n"):
        raise ValueError(
            f"task {getattr(task, 'name', task)!r} is not an algorithmic task with an instance length "
            f"(n= control and max_n); use copy or reverse"
        )
    lengths = _check_lengths(lengths)
    frames = []
    for L in lengths:
        n = task.max_n(L)

        def fits(T: int, v: int) -> str | None:
            return None if v >= 1 else f"length {T} is too short for an instance (needs >= {task.min_length()})"

        frames.append(_eval_rows(model, task, [L], "n", [n], n_samples, seed, batch_size, fits, strict))
    return pd.concat(frames, ignore_index=True)


# -- RoPE context extension at evaluation time -------------------------------------------------------


def with_rope_scaling(model: nn.Module, **rope_keys: Any) -> nn.Module:
    """A copy of a RoPE ``model`` whose rotary encoding uses another scaling, without retraining.

    ``rope_keys`` are HF rope-config keys: ``rope_type`` (``linear``, ``ntk``, ``dynamic``, ``yarn``,
    ``llama3``, also ``default``, ``longrope``, ``proportional``; the legacy key ``type`` is accepted),
    ``factor``, ``original_max_position_embeddings``, ``beta_fast``, ``beta_slow``, … They replace the
    corresponding keys of the model's RoPE config (``RoPEEncoding.with_scaling``; ``None`` clears a
    key), and ``RopeConfig`` validates them, the one place that does (an unknown key or value raises
    ValueError listing what is allowed). The model is deep-copied, so the original is untouched; the
    copy's ``config`` still describes the trained model and its ``rope_scaling`` attribute records the
    keys applied (the legacy ``type`` as ``rope_type``). A model whose encoding is not ``"rope"`` raises
    ValueError.
    """
    encoding = getattr(model, "encoding", None)
    name = getattr(encoding, "name", None)
    if name != "rope" or not hasattr(encoding, "with_scaling"):
        raise ValueError(
            f"with_rope_scaling needs a model with the 'rope' positional encoding; this model's encoding is {name!r}"
        )
    if not rope_keys:
        raise ValueError("with_rope_scaling needs at least one rope key, e.g. rope_type='linear', factor=2.0")
    keys = dict(rope_keys)
    new_encoding = encoding.with_scaling(**keys)
    scaled = copy.deepcopy(model)
    scaled.replace_encoding(new_encoding)
    scaled.rope_scaling = {("rope_type" if k == "type" else k): v for k, v in keys.items()}
    return scaled
