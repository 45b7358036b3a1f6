"""NoPE: no positional information at all.

A causal decoder can still infer positions from the causal mask (Haviv et al. 2022, arXiv 2203.16634;
Kazemnejad et al. 2023, arXiv 2305.19466, §3 and Theorem 1); a bidirectional encoder cannot. Every hook
keeps the base class's no-op, so a model with this encoding sees token content only.
"""

from __future__ import annotations

from .base import PositionalEncoding, register_encoding

__all__ = ["NoPE"]


@register_encoding("nope")
class NoPE(PositionalEncoding):
    """No positional encoding: ``embed``, ``rotate`` and ``bias`` are the base class's no-ops."""

    def __init__(self, *, n_heads: int, head_dim: int, d_model: int) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
