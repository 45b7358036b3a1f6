"""Closed-form quantities about RoPE and its context-extension methods (notebooks 01–03).

Notation as in docs/references.md §0: ``d`` the rotated head dimension (even), ``b`` the base, ``L`` the
training (original) length, ``s`` the scale factor, pair ``i = 0 … d/2 - 1``, ``theta_i = b^(-2i/d)``.

* Frequencies and wavelengths ``lambda_i = 2 pi / theta_i`` — RoFormer (Su et al. 2021, arXiv
  2104.09864) §3.2, eq. (15).
* ``decay_bound`` — RoFormer §3.4.3 "long-term decay", Figure 2:
  ``B(r) = (2/d) sum_{j=1}^{d/2} |S_j(r)|``, ``S_j(r) = sum_{i<j} e^{i r theta_i}``.
* ``critical_dimension`` — Liu et al. 2023, "Scaling laws of RoPE-based extrapolation", arXiv
  2310.05209 §3: ``d_extra = 2 ceil((d/2) log_b(L / 2 pi))``; ``extrapolation_limit`` — their bound
  ``T_extra = 2 pi b^(d_extra / d)``, the period of the first pair that does not turn fully within ``L``;
  ``unseen_angle_limit`` — the same bound read off any frequency vector (partial rotary, p-RoPE).
* ``score_statistics`` — Barbero et al. 2024, "Round and round we go", arXiv 2410.06205 Props 3.1–3.2:
  for Gaussian q, k the expected RoPE score is 0 at every distance; a decay appears only through the
  means (aligned q, k).
* ``ntk_base`` / ``dynamic_ntk_base`` — bloc97 2023, YaRN paper (Peng et al. 2023, arXiv 2309.00071)
  §3.1, HF ``_compute_dynamic_ntk_parameters``.
* ``yarn_correction_range`` / ``yarn_ramp`` — YaRN §3.2 ("NTK-by-parts", eq. 17–18) as HF computes it.
* ``llama3_split`` — Llama 3.1 frequency transform (Meta llama-models; HF ``_compute_llama3_parameters``).
* ``pair_scale_factors`` — per-pair factor ``theta_i' / theta_i`` of any HF ``rope_type``, read off
  ``ropelib.rope_scaling.rope_frequencies`` (so the notebooks plot what the library computes).
* ``toeplitz_deviation`` / ``position_scores`` — the relative-position property (RoFormer §3.2,
  eq. 16): a score matrix over (query position m, key position n) is constant along diagonals.
* ``blog_formula_table`` / ``blog_formula_deviations`` / ``relative_position_check`` — the closed-form
  checks of the audited post's claims C4 and C9 (``ropelib.claims``): its "RoPE" formula is the
  sinusoidal table of Vaswani et al. 2017 (arXiv 1706.03762 §3.5), and only rotating q and k (not
  adding the vectors) makes scores depend on ``m - n`` alone (RoFormer §3.2, eq. 16).
* ``tiny_yarn_params`` — a YaRN setting for tiny models whose ramp covers the same fraction of pairs as
  YaRN's defaults do for Llama 2 (docs/references.md §4.4, "tiny-model caveat").

Everything is float64 NumPy unless stated; frequencies are computed from integer pair indices.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .encodings import make_encoding
from .encodings.sinusoidal import sinusoidal_table

__all__ = [
    "inv_frequencies",
    "wavelengths",
    "rotations_in_context",
    "decay_bound",
    "decay_bound_from_frequencies",
    "critical_dimension",
    "extrapolation_limit",
    "unseen_angle_limit",
    "yarn_correction_dim",
    "yarn_correction_range",
    "yarn_ramp",
    "yarn_attention_factor",
    "ntk_base",
    "dynamic_ntk_base",
    "llama3_split",
    "default_rope_parameters",
    "pair_scale_factors",
    "score_statistics",
    "toeplitz_deviation",
    "position_scores",
    "blog_formula_table",
    "blog_formula_deviations",
    "relative_position_check",
    "tiny_yarn_params",
    "YARN_REFERENCE",
]

#: YaRN's published defaults and the model they were chosen for (Llama 2: d=128, b=1e4, L=4096)
YARN_REFERENCE: Mapping[str, float] = {
    "head_dim": 128,
    "base": 10_000.0,
    "original_length": 4096,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
}


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------
def _check_head_dim(head_dim: int) -> int:
    if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even integer >= 2, got {head_dim!r}")
    return int(head_dim)


def _check_base(base: float) -> float:
    if isinstance(base, bool) or not isinstance(base, (int, float, np.floating, np.integer)) or not base > 1:
        raise ValueError(f"base must be a number > 1, got {base!r}")
    return float(base)


def _check_positive(label: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not value > 0:
        raise ValueError(f"{label} must be a positive number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# frequencies
# ---------------------------------------------------------------------------------------------
def inv_frequencies(head_dim: int, base: float = 10_000.0) -> np.ndarray:
    """RoPE frequencies ``theta_i = base^(-2i/d)``, ``i = 0 … d/2-1``, as float64 ``(d/2,)``."""
    d = _check_head_dim(head_dim)
    b = _check_base(base)
    i = np.arange(d // 2, dtype=np.float64)
    return b ** (-2.0 * i / d)


def wavelengths(head_dim: int, base: float = 10_000.0) -> np.ndarray:
    """Wavelength of each pair in tokens, ``lambda_i = 2 pi / theta_i`` (float64 ``(d/2,)``)."""
    return 2.0 * math.pi / inv_frequencies(head_dim, base)


def rotations_in_context(head_dim: int, base: float, length: int) -> np.ndarray:
    """Full turns pair ``i`` makes over ``length`` positions: ``r_i = L / lambda_i`` (YaRN §3.2)."""
    _check_positive("length", length)
    return float(length) / wavelengths(head_dim, base)


# ---------------------------------------------------------------------------------------------
# long-term decay (RoFormer §3.4.3)
# ---------------------------------------------------------------------------------------------
def decay_bound_from_frequencies(r: Any, inv_freq: Any, *, chunk: int = 8192) -> np.ndarray:
    """RoFormer's bound ``B(r) = (2/d) sum_{j=1}^{d/2} |S_j(r)|`` for arbitrary pair frequencies.

    ``S_j(r) = sum_{i<j} e^{i r theta_i}``; ``d/2 = len(inv_freq)``. ``r`` is a scalar or array of
    relative distances (any real values); the result has ``r``'s shape, float64. Use this with the
    frequencies of a scaled RoPE (``rope_frequencies(...)[0]``) to see how a method changes the bound.
    """
    theta = np.asarray(inv_freq, dtype=np.float64).reshape(-1)  # (d/2,)
    if theta.size == 0:
        raise ValueError("inv_freq must hold at least one frequency")
    r_arr = np.asarray(r, dtype=np.float64)
    flat = r_arr.reshape(-1)  # (R,)
    out = np.empty(flat.shape, dtype=np.float64)
    half = theta.size
    for start in range(0, flat.size, chunk):
        rr = flat[start : start + chunk]
        phases = np.exp(1j * rr[:, None] * theta[None, :])  # (R, d/2)
        partial = np.cumsum(phases, axis=1)  # S_1 … S_{d/2}: (R, d/2)
        out[start : start + chunk] = np.abs(partial).sum(axis=1) / half  # (2/d) = 1/(d/2)
    return out.reshape(r_arr.shape)


def decay_bound(r: Any, head_dim: int, base: float = 10_000.0) -> np.ndarray:
    """RoFormer Figure 2's curve ``B(r)`` for RoPE with ``head_dim`` and ``base`` (float64).

    ``B(0) = (d/2 + 1) / 2`` exactly. For large ``r`` the curve plateaus and oscillates rather than
    going to zero (docs/references.md §1.4).
    """
    return decay_bound_from_frequencies(r, inv_frequencies(head_dim, base))


# ---------------------------------------------------------------------------------------------
# critical dimension (Liu et al. 2023)
# ---------------------------------------------------------------------------------------------
def critical_dimension(head_dim: int, base: float, length: int) -> int:
    """Liu et al.'s critical dimension ``2 * ceil((d/2) * log_b(L / (2 pi)))``, clamped to ``[0, d]``.

    The dimensions below it (pairs ``i < d_extra / 2``) complete at least one full period within the
    training length ``L`` and so see every angle in training; the rest meet unseen angles beyond L.
    Llama 2 (128, 1e4, 4096) -> 92.
    """
    d = _check_head_dim(head_dim)
    b = _check_base(base)
    length = _check_positive("length", length)
    value = 2 * math.ceil((d / 2) * math.log(length / (2 * math.pi)) / math.log(b))
    return int(min(max(value, 0), d))


def extrapolation_limit(head_dim: int, base: float, length: int) -> float:
    """Liu et al.'s extrapolation bound ``T_extra = 2 pi b^(d_extra / d)`` in tokens (arXiv 2310.05209 §3).

    ``d_extra = critical_dimension(head_dim, base, length)``. Pair ``d_extra / 2`` is the fastest pair
    that does not complete a full turn within ``L``: its angles past ``L`` were never seen in training,
    and ``T_extra`` is its period, the length at which it has swept every angle once. ``inf`` when every
    pair turns fully within ``L`` (``d_extra = d``, the small-base regime: no angle past ``L`` is new).
    For ``(16, 1e4, 64)``: ``d_extra = 6`` and ``T_extra = 2 pi 1e4^(3/8) = 198.7`` tokens (3.1 L).
    """
    d = _check_head_dim(head_dim)
    dx = critical_dimension(d, base, length)
    if dx >= d:
        return math.inf
    return 2.0 * math.pi * float(base) ** (dx / d)


def unseen_angle_limit(inv_freq: Any, length: int) -> float:
    """``extrapolation_limit`` for any frequency vector: the smallest period ``2 pi / theta_i`` among the
    pairs whose period exceeds ``length`` (they meet unseen angles past ``length``); ``inf`` if there is
    none. Pairs with ``theta_i = 0`` (p-RoPE's removed frequencies, NoPE) never change angle and count as
    seen. Equals ``extrapolation_limit(d, b, L)`` for the default frequencies ``b^(-2i/d)`` (unless a
    period equals ``L`` exactly, where the ceiling of ``critical_dimension`` and ``>`` here may differ).
    """
    theta = np.asarray(inv_freq, dtype=np.float64).reshape(-1)
    if theta.size == 0 or not np.all(np.isfinite(theta)) or np.any(theta < 0):
        raise ValueError("inv_freq must be a non-empty vector of finite frequencies >= 0")
    L = _check_positive("length", length)
    with np.errstate(divide="ignore"):
        periods = np.where(theta > 0, 2.0 * math.pi / np.where(theta > 0, theta, 1.0), math.inf)
    unseen = periods[(periods > L) & np.isfinite(periods)]
    return float(unseen.min()) if unseen.size else math.inf


# ---------------------------------------------------------------------------------------------
# YaRN (NTK-by-parts)
# ---------------------------------------------------------------------------------------------
def yarn_correction_dim(num_rotations: float, head_dim: int, base: float, original_length: int) -> float:
    """Pair index (fractional) whose frequency turns ``num_rotations`` times within ``original_length``.

    ``dim(n) = d * ln(L / (2 pi n)) / (2 ln b)`` (HF ``find_correction_dim``).
    """
    d = _check_head_dim(head_dim)
    b = _check_base(base)
    n = _check_positive("num_rotations", num_rotations)
    length = _check_positive("original_length", original_length)
    return d * math.log(length / (n * 2 * math.pi)) / (2 * math.log(b))


def yarn_correction_range(
    head_dim: int,
    base: float,
    original_length: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    truncate: bool = True,
) -> tuple[float, float]:
    """YaRN's ramp ends ``(low, high)`` in pair indices, as HF computes them.

    ``low = floor(dim(beta_fast))``, ``high = ceil(dim(beta_slow))`` (no rounding when ``truncate`` is
    False), clamped to ``[0, d-1]``. ``original_length`` must be the *original* (pre-extension) length.
    Llama 2 (128, 1e4, 4096), s = 16: ``(20, 46)``.
    """
    low = yarn_correction_dim(beta_fast, head_dim, base, original_length)
    high = yarn_correction_dim(beta_slow, head_dim, base, original_length)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, head_dim - 1)


def yarn_ramp(
    head_dim: int,
    base: float,
    original_length: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    truncate: bool = True,
) -> np.ndarray:
    """Per-pair share ``gamma_i`` of the original frequency YaRN keeps (float64 ``(d/2,)``).

    ``theta_i' = (1 - gamma_i) * theta_i / s + gamma_i * theta_i``: ``gamma = 1`` for fast pairs
    (below ``low``: extrapolated, unchanged), ``0`` for slow pairs (above ``high``: interpolated by
    ``s``), linear in the pair index between (HF ``linear_ramp_factor``).
    """
    low, high = yarn_correction_range(head_dim, base, original_length, beta_fast, beta_slow, truncate)
    if low == high:
        high += 0.001  # HF: prevent a division by zero
    i = np.arange(head_dim // 2, dtype=np.float64)
    ramp = np.clip((i - low) / (high - low), 0.0, 1.0)
    return 1.0 - ramp


def yarn_attention_factor(factor: float, mscale: float | None = None, mscale_all_dim: float | None = None) -> float:
    """YaRN's attention factor ``0.1 ln(s) + 1`` (1 for ``s <= 1``); DeepSeek's ratio when both mscales given."""
    s = _check_positive("factor", factor)

    def get_mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if mscale and mscale_all_dim:
        return get_mscale(s, mscale) / get_mscale(s, mscale_all_dim)
    return get_mscale(s)


def tiny_yarn_params(
    head_dim: int,
    base: float,
    original_length: int,
    factor: float,
    *,
    reference: Mapping[str, float] = YARN_REFERENCE,
) -> dict[str, Any]:
    """HF ``yarn`` keys for a small model, with ``beta_fast``/``beta_slow`` rescaled to its size.

    YaRN's defaults (beta_fast 32, beta_slow 1 rotations) were chosen for Llama 2 (d=128, b=1e4,
    L=4096), where the ramp runs from pair 20.8 to pair 45.0 of 64, i.e. over the same *fraction*
    ``f = ln(L / (2 pi beta)) / ln(b)`` of the pairs for any d. At tiny scale (d=32, L=128) the defaults
    put ``low`` at 0: YaRN protects almost nothing. This returns the betas that give the same
    fractions for ``(head_dim, base, original_length)``:
    ``beta' = (L / (2 pi)) * b^(-f)`` — for the reference model itself, exactly ``(32, 1)``.

    Returns ``{"rope_type": "yarn", "rope_theta", "factor", "original_max_position_embeddings",
    "beta_fast", "beta_slow"}``; notebook 06 passes it to the RoPE encoding unchanged.
    """
    _check_head_dim(head_dim)
    b = _check_base(base)
    length = _check_positive("original_length", original_length)
    s = _check_positive("factor", factor)
    ref_b = _check_base(reference["base"])
    ref_len = _check_positive("reference original_length", reference["original_length"])
    betas = {}
    for key in ("beta_fast", "beta_slow"):
        ref_beta = _check_positive(f"reference {key}", reference[key])
        fraction = math.log(ref_len / (2 * math.pi * ref_beta)) / math.log(ref_b)
        # 12 significant digits: exact for the reference itself, and stable in a run's JSON hash
        betas[key] = float(f"{(length / (2 * math.pi)) * b ** (-fraction):.12g}")
    return {
        "rope_type": "yarn",
        "rope_theta": b,
        "factor": s,
        "original_max_position_embeddings": int(original_length),
        "beta_fast": betas["beta_fast"],
        "beta_slow": betas["beta_slow"],
    }


# ---------------------------------------------------------------------------------------------
# NTK-aware bases
# ---------------------------------------------------------------------------------------------
def ntk_base(base: float, factor: float, head_dim: int) -> float:
    """NTK-aware base ``b' = b * s^(d / (d - 2))`` (bloc97; YaRN §3.1). (1e4, 2, 128) -> 20221.3."""
    b = _check_base(base)
    s = _check_positive("factor", factor)
    d = _check_head_dim(head_dim)
    if d == 2:
        raise ValueError("head_dim must be >= 4 for the NTK base (exponent d/(d-2))")
    return b * s ** (d / (d - 2))


def dynamic_ntk_base(base: float, factor: float, seq_len: int, original_length: int, head_dim: int) -> float:
    """HF's dynamic-NTK base at the current length ``l`` (``l = max(seq_len, L)``):

    ``b' = b * (factor * l / L - (factor - 1))^(d/(d-2))`` — the original base for ``l <= L``.
    """
    b = _check_base(base)
    s = _check_positive("factor", factor)
    d = _check_head_dim(head_dim)
    length = _check_positive("original_length", original_length)
    l_cur = max(_check_positive("seq_len", seq_len), length)
    return b * (s * l_cur / length - (s - 1)) ** (d / (d - 2))


# ---------------------------------------------------------------------------------------------
# per-pair factors of each method (read off ropelib.rope_scaling)
# ---------------------------------------------------------------------------------------------
def default_rope_parameters(rope_parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The unscaled (``rope_type="default"``) counterpart of an HF-style RoPE dict: same base and
    partial rotary factor, no scaling. For ``proportional`` (p-RoPE) ``partial_rotary_factor`` is the
    fraction of frequencies kept, over a fully rotated head, so the counterpart is full RoPE."""
    if "rope_theta" not in rope_parameters:
        raise ValueError(f"rope parameters need 'rope_theta'; got keys {sorted(rope_parameters)}")
    out: dict[str, Any] = {"rope_type": "default", "rope_theta": rope_parameters["rope_theta"]}
    if "partial_rotary_factor" in rope_parameters and rope_parameters.get("rope_type") != "proportional":
        out["partial_rotary_factor"] = rope_parameters["partial_rotary_factor"]
    return out


def _frequencies(rope_parameters: Mapping[str, Any], head_dim: int, seq_len: int | None) -> tuple[np.ndarray, float]:
    from ropelib.rope_scaling import rope_frequencies  # helper A's module; imported lazily

    inv_freq, attention_factor = rope_frequencies(dict(rope_parameters), head_dim, seq_len=seq_len)
    return np.asarray(torch.as_tensor(inv_freq).double().cpu().numpy()), float(attention_factor)


def pair_scale_factors(rope_parameters: Mapping[str, Any], head_dim: int, seq_len: int | None = None) -> np.ndarray:
    """Per-pair frequency factor ``theta_i' / theta_i`` of a RoPE setting (float64 ``(d_rot/2,)``).

    ``rope_parameters`` is an HF-style dict (``rope_type``, ``rope_theta``, scaling keys); both
    frequency sets come from ``ropelib.rope_scaling.rope_frequencies`` (``seq_len`` matters for ``dynamic`` and
    ``longrope``). 1 = pair unchanged, ``1/s`` = fully interpolated.
    """
    scaled, _ = _frequencies(rope_parameters, head_dim, seq_len)
    default, _ = _frequencies(default_rope_parameters(rope_parameters), head_dim, None)
    return scaled / default


def llama3_split(
    head_dim: int = 128,
    base: float = 500_000.0,
    factor: float = 8.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_length: int = 8192,
) -> dict[str, int]:
    """How many pairs Llama 3's transform leaves ``unchanged``, ``blended``, ``divided`` (by ``factor``).

    Counted from ``ropelib.rope_scaling.rope_frequencies`` with ``rope_type="llama3"``. (128, 5e5) -> 29/6/29.
    """
    params = {
        "rope_type": "llama3",
        "rope_theta": float(base),
        "factor": float(factor),
        "low_freq_factor": float(low_freq_factor),
        "high_freq_factor": float(high_freq_factor),
        "original_max_position_embeddings": int(original_length),
    }
    ratio = pair_scale_factors(params, head_dim)
    unchanged = np.isclose(ratio, 1.0, rtol=1e-6, atol=0.0)
    divided = np.isclose(ratio, 1.0 / factor, rtol=1e-6, atol=0.0)
    return {
        "unchanged": int(unchanged.sum()),
        "blended": int((~unchanged & ~divided).sum()),
        "divided": int(divided.sum()),
    }


# ---------------------------------------------------------------------------------------------
# score statistics for random q, k (Barbero et al. 2024)
# ---------------------------------------------------------------------------------------------
def _pairs_as_complex(vec: Any, head_dim: int, label: str) -> np.ndarray:
    """A scalar (every coordinate) or an interleaved ``(d,)`` vector as ``d/2`` complex numbers."""
    arr = np.asarray(vec, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(head_dim, float(arr))
    if arr.shape != (head_dim,):
        raise ValueError(f"{label} must be a scalar or a ({head_dim},) vector, got shape {arr.shape}")
    return arr[0::2] + 1j * arr[1::2]


def score_statistics(
    r: Any,
    head_dim: int,
    base: float = 10_000.0,
    *,
    mean_q: Any = 0.0,
    mean_k: Any = 0.0,
    std: float = 1.0,
    inv_freq: Any = None,
) -> tuple[np.ndarray, float]:
    """Exact mean and standard deviation of the RoPE score ``<R_m q, R_n k>`` at distance ``r = m - n``.

    ``q ~ N(mean_q, std^2 I)`` and ``k ~ N(mean_k, std^2 I)`` independent; means are scalars (every
    coordinate) or interleaved ``(d,)`` vectors (pair i = coordinates 2i, 2i+1). Then
    ``E = Re sum_i mq_i conj(mk_i) e^{i r theta_i}`` and ``Var = std^4 d + std^2 (|mean_q|^2 + |mean_k|^2)``
    — the spread does not depend on r. Zero means (Barbero et al. Prop. 3.1): mean 0 at every distance,
    no decay; aligned means (e.g. all ones): ``E = 2 sum_i cos(r theta_i)``, which decays.
    ``inv_freq`` overrides the default frequencies (e.g. a scaled RoPE's). Returns ``(mean (r's shape),
    std)``.
    """
    d = _check_head_dim(head_dim)
    theta = inv_frequencies(d, base) if inv_freq is None else np.asarray(inv_freq, dtype=np.float64).reshape(-1)
    if theta.shape != (d // 2,):
        raise ValueError(f"inv_freq must have {d // 2} entries for head_dim {d}, got {theta.shape}")
    sigma = float(std)
    if not sigma >= 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    mq = _pairs_as_complex(mean_q, d, "mean_q")
    mk = _pairs_as_complex(mean_k, d, "mean_k")
    r_arr = np.asarray(r, dtype=np.float64)
    weights = mq * np.conj(mk)  # (d/2,)
    mean = np.real(np.exp(1j * r_arr[..., None] * theta) @ weights)  # (...,)
    var = sigma**4 * d + sigma**2 * (np.sum(np.abs(mq) ** 2) + np.sum(np.abs(mk) ** 2))
    return mean, float(math.sqrt(var))


# ---------------------------------------------------------------------------------------------
# the relative-position property
# ---------------------------------------------------------------------------------------------
def toeplitz_deviation(scores: Any, *, relative: bool = False) -> float:
    """Largest spread (max - min) along any diagonal of a score matrix ``(..., Tq, Tk)``.

    0 exactly when every matrix is Toeplitz, i.e. the score depends on positions only through
    ``m - n``. With ``relative=True`` the spread is divided by the largest ``|score|`` (0 if all zero).
    NaN / inf entries (e.g. a causal mask) raise ``ValueError``: pass the unmasked scores.
    """
    if isinstance(scores, torch.Tensor):
        arr = scores.detach().to(torch.float64).cpu().numpy()
    else:
        arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[-1] == 0 or arr.shape[-2] == 0:
        raise ValueError(f"scores must have shape (..., Tq, Tk) with Tq, Tk >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("scores contain NaN or inf; pass the unmasked score matrix")
    tq, tk = arr.shape[-2:]
    worst = 0.0
    for offset in range(-(tq - 1), tk):
        diag = np.diagonal(arr, offset=offset, axis1=-2, axis2=-1)  # (..., len)
        worst = max(worst, float(np.max(diag.max(axis=-1) - diag.min(axis=-1))))
    if relative:
        scale = float(np.max(np.abs(arr)))
        return worst / scale if scale > 0 else 0.0
    return worst


@torch.no_grad()
def position_scores(
    encoding: Any,
    q: torch.Tensor,
    k: torch.Tensor,
    length: int,
    *,
    w_q: torch.Tensor | None = None,
    w_k: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """The attention logits ``(H, T, T)`` of one fixed query vector at every position m against one
    fixed key vector at every position n, through a positional encoding's hooks.

    * ``embed`` encodings (sinusoidal, learned): ``q`` and ``k`` are token vectors ``(d_model,)``; the
      position vector is added to each (``encoding.embed``), then projected by ``w_q`` / ``w_k``
      ``(D, d_model)`` (identity when omitted, so ``D = d_model``).
    * ``rotate`` encodings (RoPE, xPos): ``q``, ``k`` are head vectors ``(D,)`` with
      ``D = encoding.head_dim`` (after the optional projections), rotated in every head.
    * ``bias`` encodings (ALiBi, T5, …): the bias ``(H, T, T)`` is added.

    Logits are ``scale * <q_m, k_n> + bias`` with ``scale = 1/sqrt(D)`` by default, with no causal mask
    (so the full matrix can be checked with ``toeplitz_deviation``). Positions come from
    ``encoding.positions(length)`` (integers).
    """
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    if q.ndim != 1 or k.ndim != 1:
        raise ValueError(f"q and k must be single vectors (1-D), got shapes {tuple(q.shape)}, {tuple(k.shape)}")
    device = q.device
    positions = encoding.positions(length, 0, device)  # (T,) long
    n_heads = int(encoding.n_heads)
    xq = q.reshape(1, 1, -1).expand(1, length, q.shape[0]).clone()  # (1, T, C)
    xk = k.reshape(1, 1, -1).expand(1, length, k.shape[0]).clone()  # (1, T, C)
    if encoding.has_embed:
        xq = encoding.embed(xq, positions)  # (1, T, C)
        xk = encoding.embed(xk, positions)  # (1, T, C)
    if w_q is not None:
        xq = xq @ w_q.T  # (1, T, D)
    if w_k is not None:
        xk = xk @ w_k.T  # (1, T, D)
    dim = xq.shape[-1]
    if xk.shape[-1] != dim:
        raise ValueError(f"query and key widths differ after projection: {dim} vs {xk.shape[-1]}")
    qh = xq.unsqueeze(1).expand(1, n_heads, length, dim).contiguous()  # (1, H, T, D)
    kh = xk.unsqueeze(1).expand(1, n_heads, length, dim).contiguous()  # (1, H, T, D)
    if encoding.has_rotate:
        if dim != encoding.head_dim:
            raise ValueError(f"rotate encodings need vectors of head_dim {encoding.head_dim}, got {dim}")
        qh, kh = encoding.rotate(qh, kh, positions, positions)
    factor = 1.0 / math.sqrt(dim) if scale is None else float(scale)
    logits = factor * (qh @ kh.transpose(-1, -2))[0]  # (H, T, T)
    if encoding.has_bias:
        bias = encoding.bias(positions, positions)
        if bias is not None:
            logits = logits + bias.to(logits.dtype)  # (H, T, T)
    return logits


# ---------------------------------------------------------------------------------------------
# closed-form checks of the audited post (notebook 07, claims C4 and C9)
# ---------------------------------------------------------------------------------------------
def blog_formula_table(n_positions: int, d_model: int) -> np.ndarray:
    """The post's "RoPE" formula, evaluated literally (float64 ``(n_positions, d_model)``):
    ``pos_embedding(p) = [sin(p / 10000^(2j/d_model)), cos(p / 10000^(2j/d_model))]`` for pairs
    ``j = 0 … d_model/2 - 1``, the sin/cos of each pair side by side."""
    if not isinstance(n_positions, int) or isinstance(n_positions, bool) or n_positions < 1:
        raise ValueError(f"n_positions must be a positive integer, got {n_positions!r}")
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model < 2 or d_model % 2:
        raise ValueError(f"d_model must be an even integer >= 2, got {d_model!r}")
    position = np.arange(n_positions, dtype=np.float64)[:, None]  # (P, 1)
    j = np.arange(d_model // 2, dtype=np.float64)[None, :]  # (1, d/2)
    angle = position / 10000.0 ** (2.0 * j / d_model)  # (P, d/2)
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1).reshape(n_positions, d_model)


def blog_formula_deviations(n_positions: int, d_model: int) -> dict[str, float]:
    """Largest absolute difference between ``blog_formula_table`` and ``"sinusoidal"``: the sinusoidal
    table of ``ropelib.encodings`` (Vaswani et al. §3.5), and ``"rope_angles"``: the sin/cos of RoPE's
    own angles ``p theta_i`` (``ropelib.rope_scaling.rope_frequencies``, base 10000, same pair layout)."""
    blog = blog_formula_table(n_positions, d_model)  # (P, d)
    sin_table = sinusoidal_table(n_positions, d_model).double().numpy()  # (P, d)
    inv_freq, _ = _frequencies({"rope_type": "default", "rope_theta": 10_000.0}, d_model, None)  # (d/2,)
    angle = np.arange(n_positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # (P, d/2)
    rope_pairs = np.stack([np.sin(angle), np.cos(angle)], axis=-1).reshape(n_positions, d_model)
    return {"sinusoidal": float(np.abs(blog - sin_table).max()), "rope_angles": float(np.abs(blog - rope_pairs).max())}


@functools.lru_cache(maxsize=8)
def relative_position_check(length: int = 64, head_dim: int = 32, seed: int = 0) -> dict[str, float]:
    """Relative Toeplitz deviation of one fixed (q, k) scored at every (m, n) through each encoding.

    ``position_scores`` + ``toeplitz_deviation(relative=True)`` for ``rope`` (rotates q, k),
    ``sinusoidal`` (adds the sin/cos table to the token vectors) and ``learned`` (a freshly initialised
    table, seeded). 0 = the score depends on ``m - n`` only (RoFormer §3.2, eq. 16).
    """
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(head_dim, generator=gen)  # (D,)
    k = torch.randn(head_dim, generator=gen)  # (D,)
    out = {}
    for name in ("rope", "sinusoidal", "learned"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            extra = {"max_positions": length} if name == "learned" else {}
            enc = make_encoding(name, n_heads=1, head_dim=head_dim, d_model=head_dim, **extra)
        scores = position_scores(enc, q, k, length)[0]  # (T, T)
        out[name] = toeplitz_deviation(scores, relative=True)
    return out
