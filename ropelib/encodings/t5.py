"""T5 relative position bias (Raffel et al. 2020, arXiv 1910.10683, §2.1; HF ``modeling_t5.py``).

One learned scalar per (bucket, head) is added to the attention logits. The relative position
``key - query`` is mapped to a bucket: half of the buckets (per direction) are exact distances, the rest
are logarithmically wider bins up to ``max_distance``, beyond which every distance shares the last
bucket. ``t5_relative_bucket`` reproduces HF's ``T5Attention._relative_position_bucket`` exactly
(including its float32 logarithm, so both give the same bucket at every boundary). T5 computes the bias
in the first layer and shares it across layers; here the model calls ``bias`` once per forward and reuses
the result in every layer. ``bidirectional=False`` (the default) is T5's decoder setting.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import PositionalEncoding, heads_first, register_encoding, relative_positions

__all__ = ["t5_relative_bucket", "T5Bias"]


def _validate(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    if not isinstance(bidirectional, bool):
        raise ValueError(f"bidirectional must be True or False, got {bidirectional!r}")
    smallest = 4 if bidirectional else 2
    if not isinstance(num_buckets, int) or isinstance(num_buckets, bool) or num_buckets < smallest:
        raise ValueError(
            f"num_buckets must be an integer >= {smallest} (bidirectional={bidirectional}), got {num_buckets!r}"
        )
    max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
    if not isinstance(max_distance, int) or isinstance(max_distance, bool) or max_distance <= max_exact:
        raise ValueError(
            f"max_distance must be an integer > {max_exact} (the exact-bucket range for num_buckets="
            f"{num_buckets}, bidirectional={bidirectional}), got {max_distance!r}"
        )


def t5_relative_bucket(
    relative_position: torch.Tensor,
    bidirectional: bool = False,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> torch.Tensor:
    """Bucket index (long, same shape) of each integer ``relative_position = key - query``.

    Causal (``bidirectional=False``): keys after the query fall in bucket 0 with distance 0; a distance
    ``n = query - key`` below ``max_exact = num_buckets // 2`` is its own bucket, a larger one gets
    ``min(num_buckets - 1, max_exact + floor(ln(n / max_exact) / ln(max_distance / max_exact)
    * (num_buckets - max_exact)))``.
    Bidirectional: half of the buckets per side, keys after the query offset by ``num_buckets // 2``.
    """
    _validate(bidirectional, num_buckets, max_distance)
    dtype = relative_position.dtype
    if relative_position.is_floating_point() or relative_position.is_complex() or dtype == torch.bool:
        raise ValueError(f"relative_position must be an integer tensor, got dtype {relative_position.dtype}")
    relative_position = relative_position.to(torch.long)
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).to(torch.long) * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    # distance >= 0 from here on
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # HF takes the log of every entry (including 0 -> -inf, discarded by the where below); clamping the
    # small ones to max_exact first avoids the undefined -inf -> long cast without changing any result.
    log_ratio = torch.log(distance.clamp(min=max_exact).to(torch.float32) / max_exact)
    if_large = max_exact + (log_ratio / math.log(max_distance / max_exact) * (num_buckets - max_exact)).to(torch.long)
    if_large = if_large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, if_large)


@register_encoding("t5")
class T5Bias(PositionalEncoding):
    """Learned ``(num_buckets, H)`` table of logit biases indexed by ``t5_relative_bucket``."""

    def __init__(
        self,
        *,
        n_heads: int,
        head_dim: int,
        d_model: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = False,
    ) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        _validate(bidirectional, num_buckets, max_distance)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        # HF initialises this table N(0, (factor * d_model^-0.5)^2) in T5PreTrainedModel._init_weights.
        self.relative_attention_bias = nn.Embedding(num_buckets, n_heads)  # (num_buckets, H)
        nn.init.normal_(self.relative_attention_bias.weight, mean=0.0, std=d_model**-0.5)

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        """Float32 ``(H, Tq, Tk)`` (or ``(B, H, Tq, Tk)``): the learned scalar of each pair's bucket."""
        relative = -relative_positions(q_positions, k_positions)  # key - query, (…, Tq, Tk)
        buckets = t5_relative_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
        weight = self.relative_attention_bias.weight
        values = self.relative_attention_bias(buckets.to(weight.device))  # (…, Tq, Tk, H)
        return heads_first(values).to(torch.float32)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_buckets={self.num_buckets}, max_distance={self.max_distance}, "
            f"bidirectional={self.bidirectional}"
        )
