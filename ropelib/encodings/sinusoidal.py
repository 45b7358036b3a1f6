"""Sinusoidal absolute positions (Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762, §3.5).

``PE(p, 2i) = sin(p / base^(2i/dim))``, ``PE(p, 2i+1) = cos(p / base^(2i/dim))`` with ``base = 10000``,
**added** to the token embeddings once, at the input. The table is a fixed function of the position,
so it is computed on the fly for whatever positions arrive (any length, any offset): the angle
``p * base^(-2i/dim)`` is formed in float64 from the integer position and only the sin/cos values are
cast to the model dtype.

``scale`` multiplies the vectors before they are added. Vaswani et al. multiply the token embeddings
by ``sqrt(d_model)`` instead (§3.4), so that embedding and position vectors have comparable sizes; a
model whose token embeddings start small (GPT-2's ``N(0, 0.02^2)``, as ``ropelib.model``) needs
``scale`` of about ``0.02 * sqrt(2)`` to keep that balance (the sinusoids' RMS is ``1/sqrt(2)``),
otherwise the first layer sees mostly position (notebook 04 measures what that costs).

This is not RoPE: nothing is rotated, and after the query/key projections the attention score of two
tokens depends on both absolute positions, not only on their difference (see the tests).
"""

from __future__ import annotations

import torch

from .base import PositionalEncoding, register_encoding

__all__ = ["sinusoidal_encoding", "sinusoidal_table", "Sinusoidal"]

#: largest position magnitude accepted: float64 holds every integer up to 2^53 exactly
MAX_EXACT_POSITION = 2**53


def _check_dim(dim: int) -> None:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")


def sinusoidal_encoding(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Sinusoidal vectors for integer ``positions`` of any shape ``(...)``: float32 ``(..., dim)``.

    Column ``2i`` holds ``sin(p / base^(2i/dim))`` and column ``2i+1`` the matching cosine. An odd
    ``dim`` is allowed: its last column is the sine of pair ``(dim-1)/2`` (the formula is defined
    column by column, so the table is simply cut after ``dim`` columns). Angles are computed in float64.
    """
    _check_dim(dim)
    if not (isinstance(base, (int, float)) and not isinstance(base, bool) and base > 1):
        raise ValueError(f"base must be a number > 1, got {base!r}")
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
        raise ValueError(f"positions must be an integer tensor, got dtype {positions.dtype}")
    if positions.numel():
        lo, hi = (int(v) for v in torch.aminmax(positions))
        worst = hi if abs(hi) >= abs(lo) else lo
        if abs(worst) > MAX_EXACT_POSITION:
            raise ValueError(
                f"positions must be within +-2**53 = {MAX_EXACT_POSITION} (the integers float64 holds "
                f"exactly; the angles are formed in float64), got {worst}"
            )
    n_pairs = (dim + 1) // 2
    exponent = torch.arange(n_pairs, dtype=torch.float64, device=positions.device) * 2.0 / dim
    inv_freq = torch.pow(torch.tensor(float(base), dtype=torch.float64, device=positions.device), -exponent)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # (..., n_pairs)
    table = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1)  # (..., n_pairs, 2)
    return table.flatten(-2)[..., :dim].to(torch.float32)  # (..., dim): sin, cos, sin, cos, ...


def sinusoidal_table(n_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The float32 ``(n_positions, dim)`` table of positions ``0 … n_positions-1`` (Vaswani et al. §3.5)."""
    if not isinstance(n_positions, int) or isinstance(n_positions, bool) or n_positions < 0:
        raise ValueError(f"n_positions must be a non-negative integer, got {n_positions!r}")
    return sinusoidal_encoding(torch.arange(n_positions, dtype=torch.long), dim, base)


@register_encoding("sinusoidal")
class Sinusoidal(PositionalEncoding):
    """Adds ``scale * sinusoidal_encoding(positions, d_model)`` to the token embeddings (no trainable
    weights). ``scale = 1`` is the paper's table as is."""

    def __init__(self, *, n_heads: int, head_dim: int, d_model: int, base: float = 10000.0, scale: float = 1.0) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        if not (isinstance(base, (int, float)) and not isinstance(base, bool) and base > 1):
            raise ValueError(f"base must be a number > 1, got {base!r}")
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < float("inf")):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.base = float(base)
        self.scale = float(scale)

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, C) plus the sinusoidal vectors of ``positions`` (T,) or (B, T)."""
        if x.shape[-1] != self.d_model:
            raise ValueError(f"embeddings have width {x.shape[-1]}, expected d_model={self.d_model}")
        if positions.shape[-1] != x.shape[-2]:
            raise ValueError(f"positions cover {positions.shape[-1]} tokens but the embeddings have {x.shape[-2]}")
        pe = sinusoidal_encoding(positions.to(x.device), self.d_model, self.base)  # (T, C) or (B, T, C)
        if self.scale != 1.0:
            pe = pe * self.scale  # float32, before the cast to the model dtype
        return x + pe.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, base={self.base}, scale={self.scale:g}"
