"""FIRE: functional interpolation for relative positions (Li et al. 2023, arXiv 2310.04418, §3.2, Eq. 4).

The logit bias of query ``i`` and key ``j`` is ``f(psi(i - j) / psi(max(L, i)))`` with
``psi(x) = log(c * x + 1)``, ``c > 0`` and the threshold ``L`` learned, and ``f`` a small MLP
``1 -> mlp_width -> H`` (ReLU) whose ``H`` outputs are the per-head biases. Dividing by
``psi(max(L, i))`` maps every distance a query sees into ``[0, 1]`` ("progressive interpolation"), so
longer inputs reuse the trained input range of ``f``.

What is verified: the formula, the MLP shape (``Linear(1, 32)``, ReLU, ``Linear(32, H)``) and the
initialisation (``c = 0.1``, threshold ``L = |L_mult * 512|`` with ``L_mult`` learned from 1.0 and 512
fixed, ``eps = 1e-6`` added to the normaliser, ``psi`` applied to ``|c x|``) agree with the PyTorch
reference listing that public re-implementations reproduce and attribute to the paper (e.g.
github.com/mcleish7/arithmetic, ``cramming/architectures/embeddings.py``, class ``FIRE``). What is
assumed: that this listing is the authors' (the paper PDF was not available here to compare), and the
symmetric ``|i - j|`` for keys after the query, which that listing also uses (the causal model masks
them anyway).

FIRE is **not** a function of ``i - j`` alone: the normaliser depends on the query position ``i`` once
``i > L``. Only the diagonal (``i = j``, where ``psi(0) = 0``) is the same for every query, and for
queries below the threshold the bias is shift invariant. The paper uses one FIRE per layer; in this
project the model calls ``bias`` once and shares it across layers, as for T5.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import PositionalEncoding, heads_first, register_encoding, relative_positions

__all__ = ["Fire"]


def _positive(label: str, value: object) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{label} must be a positive number, got {value!r}")
    return float(value)


@register_encoding("fire")
class Fire(PositionalEncoding):
    """Learned ``f(psi(i - j) / psi(max(L, i)))`` per head; ``c``, ``L_mult`` and the MLP are trained."""

    def __init__(
        self,
        *,
        n_heads: int,
        head_dim: int,
        d_model: int,
        mlp_width: int = 32,
        init_c: float = 0.1,
        init_threshold: float = 512.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        if not isinstance(mlp_width, int) or isinstance(mlp_width, bool) or mlp_width < 1:
            raise ValueError(f"mlp_width must be a positive integer, got {mlp_width!r}")
        self.init_threshold = _positive("init_threshold", init_threshold)
        self.eps = _positive("eps", eps)
        self.mlp_width = mlp_width
        self.mlp = nn.Sequential(nn.Linear(1, mlp_width), nn.ReLU(), nn.Linear(mlp_width, n_heads))
        self.c = nn.Parameter(torch.tensor(_positive("init_c", init_c), dtype=torch.float32))
        self.L_mult = nn.Parameter(torch.tensor(1.0, dtype=torch.float32))

    def threshold(self) -> torch.Tensor:
        """The learned threshold ``L = |L_mult * init_threshold|`` (a float64 scalar tensor)."""
        return (self.L_mult.to(torch.float64) * self.init_threshold).abs()

    def normalized_distance(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        """``psi(|i - j|) / (psi(max(L, i)) + eps)`` as float64 ``(…, Tq, Tk)``: the MLP's input."""
        relative = relative_positions(q_positions, k_positions)  # (…, Tq, Tk), long
        device = self.c.device
        c = self.c.to(torch.float64)
        distance = relative.to(device=device, dtype=torch.float64)
        query = q_positions.to(device=device, dtype=torch.float64)[..., :, None]  # (…, Tq, 1)
        normaliser = torch.maximum(query, self.threshold())
        psi_distance = torch.log1p((c * distance).abs())
        psi_normaliser = torch.log1p((c * normaliser).abs()) + self.eps
        return psi_distance / psi_normaliser

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        """Float32 ``(H, Tq, Tk)`` (or ``(B, H, Tq, Tk)``): the MLP applied to each normalised distance."""
        x = self.normalized_distance(q_positions, k_positions)  # (…, Tq, Tk)
        weight = self.mlp[0].weight
        values = self.mlp(x.to(weight.dtype)[..., None])  # (…, Tq, Tk, H)
        return heads_first(values).to(torch.float32)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mlp_width={self.mlp_width}, init_threshold={self.init_threshold}"
