"""KERPLE: kernelized relative positional embedding (Chi et al. 2022, arXiv 2205.09921, §4, Eq. 9–10).

A learned, per-head, conditionally positive definite kernel of the distance ``|i - j|`` added to the
logits:

* ``variant="log"``:   ``-p_h * log(1 + a_h * |i - j|)``  (the paper's best, "KERPLE-log")
* ``variant="power"``: ``-a_h * |i - j| ** p_h`` with ``p_h`` in ``(0, 2]`` (``p = 1`` is ALiBi with a
  learned slope)

Verified against the authors' code (github.com/chijames/KERPLE, ``megatron/mpu/layers.py``,
``ParallelKerpleLog`` / ``ParallelKerplePower``): both parameters start ``p ~ 2 * U(0, 1)`` and
``a ~ U(0, 1)`` (drawn from torch's global RNG, so a seeded model is reproducible) and are clamped
``>= 0.01`` (``p <= 2`` as well for the power variant). The authors clamp the stored values in place on
every forward; here the clamp is applied functionally in ``bias`` (same values, no hidden mutation of
the parameters; the gradient of a clamped entry is zero, as it is in practice there).

Keys after the query: the authors' distance matrix is ``tril``-ed, giving those keys distance 0; this
module uses the symmetric ``|i - j|`` instead. The causal model masks those keys either way.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import PositionalEncoding, heads_first, register_encoding, relative_positions

__all__ = ["KERPLE_VARIANTS", "Kerple"]

#: the kernel shapes of the paper, by name
KERPLE_VARIANTS = ("log", "power")
#: lower clamp of p and a (the authors' ``eps``)
EPS = 1e-2
#: upper clamp of p for the power variant (conditional positive definiteness needs p <= 2)
POWER_MAX = 2.0


@register_encoding("kerple")
class Kerple(PositionalEncoding):
    """Learned per-head log or power kernel bias; parameters ``p`` and ``a``, each of shape ``(H,)``."""

    def __init__(self, *, n_heads: int, head_dim: int, d_model: int, variant: str = "log") -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        if variant not in KERPLE_VARIANTS:
            raise ValueError(f"unknown KERPLE variant {variant!r}; allowed: {', '.join(KERPLE_VARIANTS)}")
        self.variant = variant
        self.p = nn.Parameter(2.0 * torch.rand(n_heads, dtype=torch.float32))  # (H,)
        self.a = nn.Parameter(torch.rand(n_heads, dtype=torch.float32))  # (H,)

    def clamped(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(p, a)`` actually used, after the clamps of the official code, in float64."""
        p = self.p.to(torch.float64).clamp(min=EPS, max=POWER_MAX if self.variant == "power" else None)
        a = self.a.to(torch.float64).clamp(min=EPS)
        return p, a

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        """Float32 ``(H, Tq, Tk)`` (or ``(B, H, Tq, Tk)``) kernel bias of ``|i - j|``, computed in float64."""
        distance = relative_positions(q_positions, k_positions).abs()  # (…, Tq, Tk)
        distance = distance.to(device=self.p.device, dtype=torch.float64)[..., None]  # (…, Tq, Tk, 1)
        p, a = self.clamped()  # (H,)
        if self.variant == "log":
            values = -p * torch.log1p(a * distance)
        else:
            values = -a * distance.pow(p)
        return heads_first(values).to(torch.float32)  # (…, H, Tq, Tk)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant!r}"
