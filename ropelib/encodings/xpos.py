"""xPos: RoPE with an explicit exponential decay per pair (Sun et al. 2022, arXiv 2212.10554, §3.2, eq. 8;
reference code: microsoft/torchscale ``torchscale/component/xpos_relative_position.py``).

Per pair ``i`` of a ``d``-dimensional head, ``zeta_i = (2i + 0.4 d) / (1.4 d)`` (torchscale's
``(arange(0, d, 2) + 0.4 * d) / (1.4 * d)``, i.e. ``(2i/d + 0.4) / 1.4``, in (0.29, 1)). A query at
position ``n`` is rotated as RoPE and multiplied by ``zeta_i^((n - c) / gamma)``; a key at ``m`` by
``zeta_i^(-(m - c) / gamma)`` (torchscale's ``downscale``), ``gamma = scale_base = 512``. The score of
pair ``i`` picks up ``zeta_i^((n - m) / gamma)``: at most 1 for causal attention (n >= m), decaying
fastest for the high-frequency pairs.

Centring ``c``: torchscale centres the scale positions on the middle of the current window. Here
``c = (min(k_positions) + max(k_positions)) // 2`` in every ``rotate`` call, the same integer for the
queries and the keys of that call, so ``c`` cancels in every score (a function of ``n - m`` only) while
the powers stay within ``zeta^(+-span/(2 gamma))`` of 1 for a window of ``span`` keys (uncentred, they
would grow with the absolute position). With a KV cache the keys are re-rotated each call (base.py's
contract), so a moving ``c`` is harmless. Powers are computed in float64 from the integer positions and
folded into cos/sin before the cast to the compute dtype. xPos is unstable for long windows regardless
(``zeta_min^(-span/(2*512))`` is about 3.5e2 at span 4096); that is the method, not this code.
"""

from __future__ import annotations

import torch

from ..rope import LAYOUTS, RoPE, apply_rotary
from .base import PositionalEncoding, register_encoding

__all__ = ["XPosEncoding"]


@register_encoding("xpos")
class XPosEncoding(PositionalEncoding):
    """xPos rotation + decay; RoFormer frequencies with base ``rope_theta`` over the whole head."""

    def __init__(
        self,
        *,
        n_heads: int,
        head_dim: int,
        d_model: int,
        rope_theta: float = 10000.0,
        scale_base: float = 512.0,
        layout: str = "interleaved",
    ) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        if not isinstance(scale_base, (int, float)) or isinstance(scale_base, bool) or scale_base <= 0:
            raise ValueError(f"scale_base (gamma) must be a positive number, got {scale_base!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
        self.rope = RoPE({"rope_theta": rope_theta}, head_dim, layout)
        self.scale_base = float(scale_base)
        self.layout = layout
        # zeta_i, (d/2,) float64: torchscale's (arange(0, d, 2) + 0.4 d) / (1.4 d)
        self.zeta = (torch.arange(0, head_dim, 2, dtype=torch.float64) + 0.4 * head_dim) / (1.4 * head_dim)

    def _scaled(self, x: torch.Tensor, positions: torch.Tensor, centre: int, sign: float) -> torch.Tensor:
        if positions.dtype.is_floating_point or positions.dtype == torch.bool:
            raise ValueError(f"positions must be an integer tensor (torch.long), got dtype {positions.dtype}")
        cpu = positions.detach().to("cpu", torch.long)
        cos, sin = self.rope.cos_sin(cpu, dtype=torch.float64, device="cpu")  # (..., T, d/2)
        rel = (cpu - centre).to(torch.float64)[..., None] / self.scale_base  # exact integer offsets
        scale = self.zeta ** (sign * rel)  # (..., T, d/2)
        table_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # cast to x's dtype last
        cos = (cos * scale).to(device=x.device, dtype=table_dtype)
        sin = (sin * scale).to(device=x.device, dtype=table_dtype)
        if positions.dim() == 2:  # (B, T, n) -> (B, 1, T, n)
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return apply_rotary(x, cos, sin, self.layout)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate and scale ``q`` (B, H, Tq, D) up and ``k`` (B, H, Tk, D) down around the key-window centre."""
        for name, x in (("q", q), ("k", k)):
            if x.dim() != 4 or x.shape[-1] != self.head_dim:
                raise ValueError(f"{name} must have shape (B, H, T, {self.head_dim}), got {tuple(x.shape)}")
        centre = (int(k_positions.min()) + int(k_positions.max())) // 2
        return self._scaled(q, q_positions, centre, 1.0), self._scaled(k, k_positions, centre, -1.0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale_base={self.scale_base}, layout={self.layout!r}"
