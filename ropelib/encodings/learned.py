"""Learned absolute positions: a trainable table of ``max_positions`` rows added at the input.

Used by BERT and GPT-2 (Radford et al. 2019; the position-embedding baseline of Vaswani et al. 2017,
arXiv 1706.03762, §3.5 and Table 3 row E). A position at or past the table has no vector: such an input
raises ``ValueError`` rather than being clamped, because a silently reused last row would hide the fact
that this encoding cannot extrapolate at all (docs/references.md §2.2).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import PositionalEncoding, register_encoding

__all__ = ["Learned"]


@register_encoding("learned")
class Learned(PositionalEncoding):
    """A ``(max_positions, d_model)`` trainable table, initialised ``N(0, init_std^2)`` (GPT-2 uses 0.02)."""

    def __init__(
        self,
        *,
        n_heads: int,
        head_dim: int,
        d_model: int,
        max_positions: int = 1024,
        init_std: float = 0.02,
    ) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        if not isinstance(max_positions, int) or isinstance(max_positions, bool) or max_positions < 1:
            raise ValueError(f"max_positions must be a positive integer, got {max_positions!r}")
        if not (isinstance(init_std, (int, float)) and not isinstance(init_std, bool) and init_std >= 0):
            raise ValueError(f"init_std must be a non-negative number, got {init_std!r}")
        self.max_positions = max_positions
        self.init_std = float(init_std)
        self.table = nn.Embedding(max_positions, d_model)  # (max_positions, C)
        nn.init.normal_(self.table.weight, mean=0.0, std=self.init_std)

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, C) plus the table rows of ``positions`` (T,) or (B, T).

        Raises ``ValueError`` for a negative position or one ``>= max_positions`` (never clamps).
        """
        if x.shape[-1] != self.d_model:
            raise ValueError(f"embeddings have width {x.shape[-1]}, expected d_model={self.d_model}")
        if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
            raise ValueError(f"positions must be an integer tensor, got dtype {positions.dtype}")
        if positions.numel():
            lo, hi = int(positions.min()), int(positions.max())
            if lo < 0:
                raise ValueError(f"position {lo} is negative; the learned table covers 0 … {self.max_positions - 1}")
            if hi >= self.max_positions:
                raise ValueError(
                    f"position {hi} is past the learned table of {self.max_positions} positions "
                    f"(0 … {self.max_positions - 1}); a learned absolute encoding cannot extrapolate"
                )
        pe = self.table(positions.to(self.table.weight.device))  # (T, C) or (B, T, C)
        return x + pe.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_positions={self.max_positions}"
