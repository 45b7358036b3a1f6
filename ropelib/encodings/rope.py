"""RoPE as a positional encoding: rotate queries and keys (Su et al. 2021, RoFormer, arXiv 2104.09864, §3.4).

Every HF ``rope_type`` (``default``, ``linear``, ``ntk``, ``dynamic``, ``yarn``, ``llama3``, ``longrope``,
``proportional``; see ``ropelib.rope_scaling``) through the same keyword parameters as HF's rope config
(``RopeConfig``'s fields, which validates them), plus ``layout``. ``rotate`` uses ``seq_len = max(k_positions) + 1`` for queries and keys alike, so a
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

import dataclasses
import inspect
from typing import Any

import torch

from ..rope import RoPE
from ..rope_scaling import RopeConfig
from .base import PositionalEncoding, register_encoding

__all__ = ["RoPEEncoding"]

#: the pair layout of an encoding built without one (module docstring)
DEFAULT_LAYOUT = "interleaved"


@register_encoding("rope")
class RoPEEncoding(PositionalEncoding):
    """Rotary position embedding with HF-style scaling; ``self.rope`` is the underlying ``ropelib.rope.RoPE``.

    Keyword parameters: ``n_heads``, ``head_dim``, ``d_model``, every ``RopeConfig`` field (HF's rope keys,
    default ``None`` = not given, except ``rope_theta`` and ``rope_type``) and ``layout``. The signature
    (``ropelib.encodings.encoding_params("rope")``) is derived from ``RopeConfig``'s fields, and
    ``RopeConfig`` alone validates the keys, so a new config key needs no change here.
    """

    def __init__(self, *, n_heads: int, head_dim: int, d_model: int, layout: str = DEFAULT_LAYOUT, **rope_keys: Any):
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        self.rope = RoPE(RopeConfig.from_mapping(rope_keys), head_dim, layout)

    @property
    def params(self) -> dict[str, Any]:
        """The keyword parameters that rebuild this encoding (set keys only, plus ``layout``)."""
        return {**self.rope.config.as_dict(), "layout": self.rope.layout}

    def with_scaling(self, **hf_keys: Any) -> RoPEEncoding:
        """A copy with some RoPE config keys replaced (``None`` clears a key; the legacy ``type`` sets
        ``rope_type``), validated by ``RopeConfig.replace``; the layout is kept unless given."""
        layout = hf_keys.pop("layout", self.rope.layout)
        config = self.rope.config.replace(**hf_keys)
        return type(self)(
            n_heads=self.n_heads,
            head_dim=self.head_dim,
            d_model=self.d_model,
            layout=DEFAULT_LAYOUT if layout is None else layout,
            **config.as_dict(),
        )

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


def _signature() -> inspect.Signature:
    """``__init__``'s signature as ``inspect`` (and ``encoding_params``) sees it: the structural keywords,
    then ``RopeConfig``'s fields with their defaults, then ``layout``."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(name, kw, annotation="int") for name in ("n_heads", "head_dim", "d_model")]
    params += [
        inspect.Parameter(f.name, kw, default=f.default, annotation=f.type) for f in dataclasses.fields(RopeConfig)
    ]
    params.append(inspect.Parameter("layout", kw, default=DEFAULT_LAYOUT, annotation="str"))
    return inspect.Signature(params, return_annotation="None")


RoPEEncoding.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
