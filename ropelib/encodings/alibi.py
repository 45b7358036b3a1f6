"""ALiBi: attention with linear biases (Press et al. 2021, arXiv 2108.12409, §3 and Figure 3).

No position vector anywhere; head ``h`` adds ``-m_h * (i - j)`` to the logit of query ``i`` and key
``j`` (not scaled by ``1/sqrt(d)``). The slopes are a geometric sequence starting at ``2^(-8/n)`` with
the same ratio; for a head count that is not a power of two, the slopes of the closest lower power of
two are followed by every other slope of twice that power (the authors' ``get_slopes``; docs/references.md §2.4).

Keys after the query (``j > i``): the causal model masks them, so their value never matters there; this
module returns the symmetric ``-m_h * |i - j|`` so the bias stays a sensible function of distance if it
is ever used without the causal mask. (The authors' code adds only ``m_h * j``, which differs from
``-m_h * (i - j)`` by a per-row constant and hence gives the same softmax.)

``relative_positions`` — the integer ``(…, Tq, Tk)`` matrix ``i - j`` from query and key positions —
lives here because ALiBi is the template the other distance-based biases (KERPLE, FIRE, T5) follow.
"""

from __future__ import annotations

import math

import torch

from .base import PositionalEncoding, heads_first, register_encoding, relative_positions

__all__ = ["alibi_slopes", "relative_positions", "ALiBi"]


def alibi_slopes(n_heads: int) -> list[float]:
    """The ALiBi slope of each of ``n_heads`` heads (Press et al. 2021, §3), any positive head count.

    ``n_heads = 8`` gives ``1/2, 1/4, …, 1/256``; ``12`` gives the eight of ``8`` followed by every other
    slope of ``16`` heads: ``2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5``.
    """
    if not isinstance(n_heads, int) or isinstance(n_heads, bool) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (k + 1) for k in range(n)]

    closest = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = power_of_two(closest)
    if closest < n_heads:
        slopes += power_of_two(2 * closest)[0::2][: n_heads - closest]
    return slopes


@register_encoding("alibi")
class ALiBi(PositionalEncoding):
    """Fixed linear biases ``-m_h |i - j|`` per head (no trainable weights)."""

    def __init__(self, *, n_heads: int, head_dim: int, d_model: int) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        # A Python tuple, not a buffer: ``model.to(torch.bfloat16)`` must not round the slopes.
        self.slopes: tuple[float, ...] = tuple(alibi_slopes(n_heads))

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        """Float32 ``(H, Tq, Tk)`` (or ``(B, H, Tq, Tk)``): ``-m_h * |i - j|``, computed in float64."""
        distance = relative_positions(q_positions, k_positions).abs().to(torch.float64)  # (…, Tq, Tk)
        slopes = torch.tensor(self.slopes, dtype=torch.float64, device=distance.device)  # (H,)
        return heads_first(-distance[..., None] * slopes).to(torch.float32)
