"""Where attention goes past the training length: entropy, mass beyond ``L``, needle mass, RoPE's bands.

Notebook 05 measures *that* models degrade past their training length ``L``; these diagnostics measure
*how* their attention changes there, on the same trained models and inputs (test-split windows for a
language model, fresh passkey sequences for retrieval):

* ``attention_profile`` — per layer and head, for the queries of the last ``L`` positions of each window:
  attention **entropy** (nats) beside the entropy of uniform attention over the same keys, and the
  attention **mass at distances >= L** (keys no training query ever reached). At ``1x`` the far mass is 0
  by construction; a model that keeps its training-length habits keeps it small at ``8x``; a model whose
  attention spreads over the longer window ("attention dilution", cf. Chiang & Cholak 2022, arXiv
  2202.12172, and the entropy-invariance argument of Su 2021 behind YaRN's temperature, Peng et al. 2023,
  arXiv 2309.00071, §3.4) shows entropy rising towards uniform.
* ``needle_attention`` — for passkey sequences: the attention the query ``KEY`` pays to the needle
  (``KEY d1 … dk``), per layer and head, with the needle's distance. The retrieval head is the head with
  the most needle mass at ``1x``; whether it still finds the needle at ``8x`` separates a distance
  failure from a distraction failure (notebook 05's depth-1.0 result).
* ``rope_band_scores`` — for RoPE models (``rope`` encodings, any base or rotary fraction): the query-key
  score split into the contributions of three bands of pairs, ``turning`` (period ``<= L``: every angle
  seen in training), ``slow`` (period ``> L``: the pairs Liu et al. 2023, arXiv 2310.05209 §3, blame for
  the extrapolation limit) and ``position-free`` (zero frequency or unrotated coordinates: p-RoPE,
  partial rotary), each as its mean and its spread over keys (standard deviation across the keys of a
  query, the part that moves attention), for keys nearer than ``L`` and keys at ``>= L``.

* ``attention_distance`` — per layer and head, the attention-weighted mean distance ``i - j`` over all
  queries of the windows (notebook 04's summary of the trained models at their training length).

All inputs go through ``ropelib.model.start_windows`` (a model's start token, as in training). Shapes:
attention ``(B, H, T, T)`` per layer; queries are rows, keys columns.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import memo
from .evaluate import exact_match_counts
from .model import start_windows

__all__ = [
    "attention_maps",
    "attention_profile",
    "attention_distance",
    "needle_attention",
    "rope_band_scores",
    "band_of_pairs",
    "lm_windows",
    "lm_attention_grid",
    "needle_grid",
    "band_grid",
    "BANDS",
]

#: the bands of ``rope_band_scores``, in display order
BANDS = ("turning", "slow", "position-free")


def _check_windows(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.long or x.shape[1] < 2:
        raise ValueError("x must be a (B, T) torch.long tensor with T >= 2")
    return x


def _check_length(train_length: Any) -> int:
    if isinstance(train_length, bool) or not isinstance(train_length, (int, np.integer)) or train_length < 1:
        raise ValueError(f"train_length must be a positive integer, got {train_length!r}")
    return int(train_length)


@torch.no_grad()
def attention_maps(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Attention weights of every layer, float64 ``(B, H, T, T)`` each, for windows ``x`` (B, T) (with the
    model's start token), computed by the model's explicit attention path (``return_attention=True``)."""
    x = _check_windows(x)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        _, attn = model(start_windows(model, x).to(device), return_attention=True)
    finally:
        model.train(was_training)
    return [a.double().cpu() for a in attn]


def _distance(T: int) -> torch.Tensor:
    pos = torch.arange(T)
    return pos[:, None] - pos[None, :]  # (T, T) query minus key; negative above the diagonal


@torch.no_grad()
def attention_distance(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Mean attention distance ``(n_layers, n_heads)`` of ``model`` on inputs ``x`` (B, T) long, ``T >= 2``.

    For query ``i`` the attention-weighted mean of ``i - j`` over keys ``j <= i``, averaged over the
    queries and the batch (tokens). Uniform causal attention at query ``i`` gives ``i / 2``; attention
    to the token itself gives 0."""
    attn = attention_maps(model, x)  # list of (B, H, T, T)
    dist = _distance(x.shape[1]).clamp(min=0).double()  # (T, T) query minus key, 0 above the diagonal
    return np.stack([(a * dist).sum(-1).mean(dim=(0, 2)).numpy() for a in attn])  # (L, H)


@torch.no_grad()
def attention_profile(model: torch.nn.Module, x: torch.Tensor, train_length: int) -> pd.DataFrame:
    """Entropy and far mass of ``model``'s attention on windows ``x`` (B, T), one row per (layer, head).

    The queries are the last ``min(L, T)`` positions of each window (at ``T = 8 L``: positions ``7 L …
    8 L - 1``, each with at least ``7 L`` keys). Columns: ``layer, head, length`` (T), ``n_queries``,
    ``entropy`` (mean over those queries of ``-sum_j a_ij ln a_ij``, nats), ``uniform_entropy`` (mean
    ``ln(i + 1)``, the entropy of uniform causal attention at the same queries), ``entropy_ratio``
    (``entropy / uniform_entropy``), ``far_mass`` (mean attention on keys at distance ``>= L``), ``mean_distance``
    (attention-weighted mean distance, tokens)."""
    L = _check_length(train_length)
    attn = attention_maps(model, x)
    T = x.shape[1]
    q = torch.arange(max(0, T - L), T)  # (Q,) query positions
    dist = _distance(T)[q].double()  # (Q, T)
    far = (dist >= L).double()
    uniform = float(torch.log(q.double() + 1).mean())
    rows = []
    for layer, a in enumerate(attn):
        aq = a[:, :, q, :]  # (B, H, Q, T)
        ent = -(aq * torch.log(aq.clamp_min(1e-300))).sum(-1)  # (B, H, Q)
        far_mass = (aq * far).sum(-1)  # (B, H, Q)
        mean_d = (aq * dist.clamp_min(0)).sum(-1)  # (B, H, Q)
        for h in range(a.shape[1]):
            e = float(ent[:, h].mean())
            rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "length": T,
                    "n_queries": int(q.numel() * x.shape[0]),
                    "entropy": e,
                    "uniform_entropy": uniform,
                    "entropy_ratio": e / uniform if uniform > 0 else math.nan,
                    "far_mass": float(far_mass[:, h].mean()),
                    "mean_distance": float(mean_d[:, h].mean()),
                }
            )
    return pd.DataFrame(rows)


@torch.no_grad()
def needle_attention(
    model: torch.nn.Module, task: Any, length: int, n_samples: int, seed: int, depth: float | None = None
) -> pd.DataFrame:
    """Attention from the passkey query to the needle, one row per (layer, head), on ``n_samples`` fresh
    sequences of ``length`` (generator ``seed``; ``depth`` fixes the needle's depth, default drawn).

    The query is the second ``KEY`` (the position whose output is the first digit); the needle is the
    first ``KEY`` and its ``k`` digits. Columns: ``layer, head, length, n_samples, needle_mass`` (mean
    attention the query pays to the needle's ``k + 1`` tokens), ``needle_share`` (``needle_mass`` over
    the uniform share ``(k + 1) / (query + 1)``: 1 for attention spread evenly), ``mean_needle_distance``
    (tokens from the query back to the needle's last digit), ``accuracy`` (exact match of the digits,
    teacher forcing, on the same sequences)."""
    if not hasattr(task, "KEY") or not hasattr(task, "n_digits"):
        raise ValueError(f"needle_attention needs a passkey task (with KEY and n_digits), got {type(task).__name__}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    gen = torch.Generator().manual_seed(int(seed))
    controls = {} if depth is None else {"depth": float(depth)}
    batch = task.sample(n_samples, int(length), gen, **controls)
    x = batch.x  # (B, T)
    attn = attention_maps(model, x)
    is_key = x == task.KEY  # (B, T)
    if not bool((is_key.sum(-1) >= 2).all()):
        raise ValueError("every passkey sequence must hold two KEY tokens (needle and query)")
    order = torch.arange(x.shape[1]).expand_as(x)
    needle_start = torch.where(is_key, order, x.shape[1]).min(-1).values  # (B,)
    query = torch.where(is_key, order, -1).max(-1).values  # (B,)
    k = task.n_digits
    span = (order >= needle_start[:, None]) & (order <= needle_start[:, None] + k)  # (B, T)
    model.eval()
    rows_ok, _, _ = exact_match_counts(model, batch)
    accuracy = rows_ok / x.shape[0]
    b = torch.arange(x.shape[0])
    # tokens between the needle's last digit and the query (the task's own ``distance`` when it gives one)
    distance = batch.meta.get("distance", query - needle_start - k - 1).double()  # (B,)
    uniform = (k + 1) / (query.double() + 1)  # (B,)
    rows = []
    for layer, a in enumerate(attn):
        aq = a[b, :, query, :]  # (B, H, T): the query row of each sequence
        mass = (aq * span[:, None, :].double()).sum(-1)  # (B, H)
        for h in range(a.shape[1]):
            rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "length": int(length),
                    "n_samples": int(n_samples),
                    "needle_mass": float(mass[:, h].mean()),
                    "needle_share": float((mass[:, h] / uniform).mean()),
                    "mean_needle_distance": float(distance.mean()),
                    "accuracy": accuracy,
                }
            )
    return pd.DataFrame(rows)


def band_of_pairs(inv_freq: Any, train_length: int) -> np.ndarray:
    """The band of each rotated pair: ``"turning"`` if its period ``2 pi / theta`` is at most ``L``,
    ``"slow"`` if longer, ``"position-free"`` if ``theta = 0`` (p-RoPE's removed frequencies)."""
    L = _check_length(train_length)
    theta = np.asarray(inv_freq, dtype=np.float64).reshape(-1)
    out = np.full(theta.shape, "slow", dtype=object)
    with np.errstate(divide="ignore"):
        period = np.where(theta > 0, 2 * math.pi / np.where(theta > 0, theta, 1.0), np.inf)
    out[period <= L] = "turning"
    out[theta == 0] = "position-free"
    return out


def _pair_dims(layout: str, rotary_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The two coordinates of each pair ``p`` (``interleaved``: ``2p, 2p + 1``; ``half``: ``p, p + rd/2``)."""
    p = np.arange(rotary_dim // 2)
    if layout == "interleaved":
        return 2 * p, 2 * p + 1
    return p, p + rotary_dim // 2


@torch.no_grad()
def rope_band_scores(model: torch.nn.Module, x: torch.Tensor, train_length: int) -> pd.DataFrame:
    """Each band's share of the query-key scores of a RoPE model on windows ``x`` (B, T).

    Queries: the last ``min(L, T)`` positions of each window. The score ``q_i . k_j / sqrt(D)`` (rotated
    q, k as the model computes them) is the sum over pairs of ``(q_i^p . k_j^p) / sqrt(D)`` plus the
    unrotated coordinates; summing those terms by band (``band_of_pairs``; unrotated coordinates count
    as ``position-free``) gives ``c_band(i, j)``. One row per (layer, head, band, keys), ``keys`` either
    ``"< L"`` (distance ``0 … L - 1``) or ``">= L"``: ``mean`` (mean ``c_band`` over those query-key
    pairs), ``spread`` (mean over queries of the standard deviation of ``c_band`` across those keys: how
    much the band moves attention between keys) and ``n_pairs`` (rotated pairs in the band). Needs a
    ``rope`` encoding (``model.encoding.rope``)."""
    L = _check_length(train_length)
    x = _check_windows(x)
    enc = model.encoding
    if getattr(enc, "name", None) != "rope" or not hasattr(enc, "rope"):
        raise ValueError(f"rope_band_scores needs a model with the 'rope' encoding, got {getattr(enc, 'name', enc)!r}")
    rope = enc.rope
    D = enc.head_dim
    rd = rope.config.rotary_dim(D)
    T = x.shape[1]
    inv_freq, _ = rope.frequencies(T)
    bands = band_of_pairs(inv_freq.double().numpy(), L)  # (rd/2,)
    a_dims, b_dims = _pair_dims(rope.layout, rd)
    captured: list[torch.Tensor] = []
    hooks = [blk.attn.qkv.register_forward_hook(lambda m, i, o: captured.append(o.detach())) for blk in model.blocks]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(start_windows(model, x).to(device))
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was_training)
    B, H = x.shape[0], enc.n_heads
    pos = torch.arange(T, device=captured[0].device)
    q_idx = torch.arange(max(0, T - L), T)
    dist = _distance(T)[q_idx]  # (Q, T)
    key_sets = {"< L": (dist >= 0) & (dist < L), ">= L": dist >= L}
    rows = []
    for layer, qkv in enumerate(captured):
        q, k, _ = qkv.float().split(enc.d_model, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        q, k = enc.rotate(q, k, pos, pos)  # (B, H, T, D) each
        q, k = q.double().cpu()[:, :, q_idx], k.double().cpu()  # (B, H, Q, D), (B, H, T, D)
        prod_terms = {}
        for band in BANDS:
            sel = [int(p) for p in np.nonzero(bands == band)[0]]
            dims = [int(a_dims[p]) for p in sel] + [int(b_dims[p]) for p in sel]
            if band == "position-free":
                dims += list(range(rd, D))
            n_pairs = len(sel) + (D - rd) // 2 if band == "position-free" else len(sel)
            if not dims:
                continue
            c = torch.einsum("bhqd,bhkd->bhqk", q[..., dims], k[..., dims]) / math.sqrt(D)  # (B, H, Q, T)
            prod_terms[band] = (c, n_pairs)
        for band, (c, n_pairs) in prod_terms.items():
            for keys, mask in key_sets.items():
                m = mask.double()  # (Q, T)
                count = m.sum(-1)  # (Q,)
                ok = count >= 2
                if not bool(ok.any()):
                    continue
                mean_q = (c * m).sum(-1) / count.clamp_min(1)  # (B, H, Q)
                var_q = ((c - mean_q[..., None]) ** 2 * m).sum(-1) / (count - 1).clamp_min(1)  # (B, H, Q)
                for h in range(H):
                    w = count[ok]
                    rows.append(
                        {
                            "layer": layer,
                            "head": h,
                            "length": T,
                            "band": band,
                            "keys": keys,
                            "n_pairs": n_pairs,
                            "mean": float((mean_q[:, h][:, ok] * w).sum() / (w.sum() * B)),
                            "spread": float(var_q[:, h][:, ok].sqrt().mean()),
                        }
                    )
    return pd.DataFrame(rows)


# -- the grids of the notebook: every passing model at every length ------------------------------------


def _chunks(x: torch.Tensor, size: int):
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]


def lm_windows(tokens: torch.Tensor, length: int, n_windows: int) -> torch.Tensor:
    """The first ``n_windows`` non-overlapping windows of ``length`` tokens of a 1-D token tensor
    (B, T) long; ValueError if the tokens hold fewer."""
    tokens = torch.as_tensor(tokens).reshape(-1)
    n = min(int(n_windows), tokens.numel() // int(length))
    if n < 1:
        raise ValueError(f"{tokens.numel()} tokens hold no window of {length}")
    return tokens[: n * length].view(n, length).long()


def lm_attention_grid(
    runs: Any,
    train_length: int,
    tokens: torch.Tensor,
    multipliers: Any,
    *,
    n_windows: int = 8,
    batch_size: int = 2,
    cached: Any = None,
) -> pd.DataFrame:
    """``attention_profile`` of every model of ``runs`` (``{(encoding, task, seed): RunResult}``) at each
    length ``round(m L)``, on the first ``n_windows`` windows of ``tokens`` (the same text for every
    model), averaged over windows: one row per (encoding, task, seed, multiplier, layer, head).
    ``cached`` (``ropelib.memo.cached`` by default) memoises each model-length cell."""
    cached = cached or memo.cached
    L = _check_length(train_length)
    frames = []
    for (enc, task, seed), r in runs.items():
        for m in multipliers:
            T = int(round(float(m) * L))
            x = lm_windows(tokens, T, n_windows)

            def compute(r=r, x=x) -> pd.DataFrame:
                parts = [attention_profile(r.model, c, L) for c in _chunks(x, batch_size)]
                df = pd.concat(parts)
                return df.groupby(["layer", "head", "length"], as_index=False).agg(
                    n_queries=("n_queries", "sum"),
                    entropy=("entropy", "mean"),
                    uniform_entropy=("uniform_entropy", "mean"),
                    entropy_ratio=("entropy_ratio", "mean"),
                    far_mass=("far_mass", "mean"),
                    mean_distance=("mean_distance", "mean"),
                )

            df = cached(
                "attention_profile",
                {"run": r.hash, "length": T, "n_windows": int(x.shape[0]), "train_length": L},
                compute,
            )
            frames.append(df.assign(encoding=enc, task=task, seed=seed, multiplier=T / L))
    cols = [
        "encoding",
        "task",
        "seed",
        "multiplier",
        "length",
        "layer",
        "head",
        "n_queries",
        "entropy",
        "uniform_entropy",
        "entropy_ratio",
        "far_mass",
        "mean_distance",
    ]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def needle_grid(
    runs: Any,
    task: Any,
    train_length: int,
    multipliers: Any,
    *,
    n_samples: int = 64,
    seed: int = 4321,
    depth: float | None = None,
    cached: Any = None,
) -> pd.DataFrame:
    """``needle_attention`` of every passkey model of ``runs`` at each length ``round(m L)`` (``n_samples``
    sequences, generator ``seed``, the same sequences for every model): one row per (encoding, task,
    seed, multiplier, layer, head)."""
    cached = cached or memo.cached
    L = _check_length(train_length)
    frames = []
    for (enc, task_name, s), r in runs.items():
        for m in multipliers:
            T = int(round(float(m) * L))
            df = cached(
                "needle_attention",
                {"run": r.hash, "length": T, "n_samples": n_samples, "seed": seed, "depth": depth},
                lambda r=r, T=T: needle_attention(r.model, task, T, n_samples, seed, depth),
            )
            frames.append(df.assign(encoding=enc, task=task_name, seed=s, multiplier=T / L))
    cols = [
        "encoding",
        "task",
        "seed",
        "multiplier",
        "length",
        "layer",
        "head",
        "n_samples",
        "needle_mass",
        "needle_share",
        "mean_needle_distance",
        "accuracy",
    ]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def band_grid(
    runs: Any,
    train_length: int,
    tokens: torch.Tensor,
    multipliers: Any,
    *,
    n_windows: int = 4,
    batch_size: int = 2,
    cached: Any = None,
) -> pd.DataFrame:
    """``rope_band_scores`` of every ``rope``-encoded model of ``runs`` at each length (others skipped),
    averaged over windows: one row per (encoding, task, seed, multiplier, layer, head, band, keys)."""
    cached = cached or memo.cached
    L = _check_length(train_length)
    frames = []
    for (enc, task, seed), r in runs.items():
        if getattr(r.model.encoding, "name", None) != "rope":
            continue
        for m in multipliers:
            T = int(round(float(m) * L))
            x = lm_windows(tokens, T, n_windows)

            def compute(r=r, x=x) -> pd.DataFrame:
                df = pd.concat([rope_band_scores(r.model, c, L) for c in _chunks(x, batch_size)])
                return df.groupby(["layer", "head", "length", "band", "keys", "n_pairs"], as_index=False).agg(
                    mean=("mean", "mean"), spread=("spread", "mean")
                )

            df = cached(
                "rope_band_scores",
                {"run": r.hash, "length": T, "n_windows": int(x.shape[0]), "train_length": L},
                compute,
            )
            frames.append(df.assign(encoding=enc, task=task, seed=seed, multiplier=T / L))
    cols = [
        "encoding",
        "task",
        "seed",
        "multiplier",
        "length",
        "layer",
        "head",
        "band",
        "keys",
        "n_pairs",
        "mean",
        "spread",
    ]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
