"""RoPE as a positional encoding: rotate queries and keys (Su et al. 2021, RoFormer, arXiv 2104.09864, §3.4).

Every HF ``rope_type`` (``default``, ``linear``, ``ntk``, ``dynamic``, ``yarn``, ``llama3``, ``longrope``,
``proportional``; see ``ropelib.rope``) through the same keyword parameters as HF's rope config, plus
``layout``. ``rotate`` uses ``seq_len = max(k_positions) + 1`` for queries and keys alike, so a
length-dependent scaling (dynamic NTK, LongRoPE's switch) is consistent within one forward; the model's
KV cache stores keys before rotation, so the full key set is re-rotated each call.

The default ``layout`` is ``"interleaved"`` (RoFormer's and Meta's pairing): in a model trained from
scratch the q/k projections are learned, so both layouts compute the same family of functions (see
``interleaved_to_half``), and the interleaved rotation is a single complex multiply that runs at about the
speed of a tensor copy on a CPU, where the half-split form needs three passes
(``benchmarks/rope_apply.py``). Pass ``layout="half"`` to match HF checkpoints.

``enc.with_scaling(rope_type="yarn", factor=4, original_max_position_embeddings=256)`` returns a copy
with another scaling config: evaluation-time context extension of a trained model (RoPE has no
trainable parameters, so nothing else needs copying).
"""

from __future__ import annotations

from typing import Any

import torch

from ..rope import RoPE, RopeConfig
from .base import PositionalEncoding, register_encoding

__all__ = ["RoPEEncoding"]


@register_encoding("rope")
class RoPEEncoding(PositionalEncoding):
    """Rotary position embedding with HF-style scaling; ``self.rope`` is the underlying ``ropelib.rope.RoPE``."""

    def __init__(
        self,
        *,
        n_heads: int,
        head_dim: int,
        d_model: int,
        rope_theta: float = 10000.0,
        rope_type: str = "default",
        factor: float | None = None,
        original_max_position_embeddings: int | None = None,
        max_position_embeddings: int | None = None,
        beta_fast: float | None = None,
        beta_slow: float | None = None,
        mscale: float | None = None,
        mscale_all_dim: float | None = None,
        truncate: bool | None = None,
        attention_factor: float | None = None,
        low_freq_factor: float | None = None,
        high_freq_factor: float | None = None,
        short_factor: list[float] | tuple[float, ...] | None = None,
        long_factor: list[float] | tuple[float, ...] | None = None,
        partial_rotary_factor: float | None = None,
        layout: str = "interleaved",
    ) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        config = RopeConfig(
            rope_theta=rope_theta,
            rope_type=rope_type,
            factor=factor,
            original_max_position_embeddings=original_max_position_embeddings,
            max_position_embeddings=max_position_embeddings,
            beta_fast=beta_fast,
            beta_slow=beta_slow,
            mscale=mscale,
            mscale_all_dim=mscale_all_dim,
            truncate=truncate,
            attention_factor=attention_factor,
            low_freq_factor=low_freq_factor,
            high_freq_factor=high_freq_factor,
            short_factor=short_factor,
            long_factor=long_factor,
            partial_rotary_factor=partial_rotary_factor,
        )
        self.rope = RoPE(config, head_dim, layout)

    @property
    def params(self) -> dict[str, Any]:
        """The keyword parameters that rebuild this encoding (set keys only, plus ``layout``)."""
        return {**self.rope.config.as_dict(), "layout": self.rope.layout}

    def with_scaling(self, **hf_keys: Any) -> RoPEEncoding:
        """A copy with some RoPE config keys replaced (``None`` clears a key); the layout is kept unless given."""
        params = {**self.params, **hf_keys}
        params = {k: v for k, v in params.items() if v is not None}
        return type(self)(n_heads=self.n_heads, head_dim=self.head_dim, d_model=self.d_model, **params)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate ``q`` (B, H, Tq, D) and ``k`` (B, H, Tk, D) with the frequencies for ``max(k_positions)+1``."""
        seq_len = int(k_positions.max()) + 1
        return self.rope(q, q_positions, seq_len), self.rope(k, k_positions, seq_len)
