"""Rotary positional embedding (RoPE): cos/sin tables, the rotation kernels and the ``RoPE`` module.

RoPE: Su et al. 2021, RoFormer, arXiv 2104.09864, §3.4 (eq. 13-16): pair ``i`` of a query/key vector at
integer position ``m`` is turned by the angle ``m * theta_i``. The frequencies ``theta_i`` and the
attention factor of every scaling type (linear, NTK, dynamic, YaRN, Llama 3, LongRoPE, p-RoPE) come
from ``ropelib.rope_scaling`` (HF's ``modeling_rope_utils``); this module rotates with them, numerically
equal to HF transformers' ``apply_rotary_pos_emb``. ``RoPE.from_hf_config`` also takes a whole
transformers model config (the object, its ``to_dict()`` or a ``config.json`` dict).

``RoPE`` applies the rotation in either layout (docs/references.md §1.2):

* ``"half"``        pair ``i`` = coordinates ``(i, i + d_rot/2)``: GPT-NeoX / HF ``apply_rotary_pos_emb``.
* ``"interleaved"`` pair ``i`` = coordinates ``(2i, 2i+1)``: RoFormer paper, Meta LLaMA (complex multiply).

``interleaved_to_half`` / ``half_to_interleaved`` convert q/k projection weights between the two.

Precision: angles are computed in float64 from the integer positions and the float32 frequencies, and
only cos/sin (times the attention factor) are cast to the compute dtype, so bf16 inputs and positions
near 2^20 stay exact (HF's float32 product ``position * inv_freq`` errs by about 1e-2 rad there).
Positions are integer tensors and never pass through a reduced-precision float.

Deliberate difference from HF's ``*RotaryEmbedding`` modules (the frequencies themselves are equal):
the ``dynamic`` frequencies depend only on the current ``seq_len`` (HF keeps grown frequencies until the
input drops below the original length: for an input between ``L`` and an earlier longer one it reuses
the longer one's).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .rope_scaling import RopeConfig, _check_head_dim, frequency_key, rope_config_from_hf, rope_frequencies

__all__ = [
    "LAYOUTS",
    "RoPE",
    "apply_rotary",
    "interleaved_to_half",
    "half_to_interleaved",
]

#: the two pair layouts (module docstring)
LAYOUTS = ("half", "interleaved")

#: largest position accepted: float64 holds every integer up to 2^53 exactly (angles are float64)
MAX_EXACT_POSITION = 2**53
#: ``RoPE`` tabulates cos/sin for the whole span min..max of the positions (cached; contiguous ranges
#: use it as is) unless the span exceeds both this many rows and this ratio times the number of
#: positions; then only the given positions' angles are computed (cost proportional to their number)
_DIRECT_MIN_SPAN = 2**16
_DIRECT_SPAN_RATIO = 4


# ---------------------------------------------------------------------------------------------------
# Applying the rotation
# ---------------------------------------------------------------------------------------------------
# Two kernels, each ``kernel(x, *tables) -> new tensor`` rotating the first d_rot coordinates of x
# (..., D) and copying the rest. Chosen by measurement on a 2-core CPU (benchmarks/rope_apply.py):
# the rotation is memory-bound, so what counts is the number of passes over x and of allocations.
def _new_with_tail(x: torch.Tensor, rd: int) -> torch.Tensor:
    out = torch.empty_like(x)
    if rd < x.shape[-1]:
        out[..., rd:].copy_(x[..., rd:])  # partial rotary: the tail passes through
    return out


def _half_split_kernel(
    x: torch.Tensor, cos_full: torch.Tensor, sin_a: torch.Tensor, sin_b: torch.Tensor
) -> torch.Tensor:
    """Half layout: ``out = x*cat(cos,cos)``, then ``out1 += x2*sin_a`` and ``out2 += x1*sin_b``.

    (sin_a, sin_b) = (-sin, sin) rotates forward, (sin, -sin) backward. One allocation and three passes
    (HF: five allocating passes, including the ``rotate_half`` copy). Measured against a two-pass
    broadcast form (``x[..., :1, :] * stack(cos, sin) + x[..., 1:, :] * stack(-sin, cos)`` on a
    (..., 2, h) view), which was no faster: its short broadcast inner loops cost more than the pass saved.
    """
    rd = cos_full.shape[-1]
    h = rd // 2
    out = _new_with_tail(x, rd)
    torch.mul(x[..., :rd], cos_full, out=out[..., :rd])
    out[..., :h].addcmul_(x[..., h:rd], sin_a)
    out[..., h:rd].addcmul_(x[..., :h], sin_b)
    return out


def _interleaved_kernel(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Interleaved layout: Meta's complex multiply by ``cis = cos + i sin`` (..., d_rot/2); one pass.

    Reduced-precision inputs are rotated in float32 and cast back (there is no complex bf16).
    """
    rd = 2 * cis.shape[-1]
    xr = x[..., :rd]
    work = xr if xr.dtype in (torch.float32, torch.float64) else xr.float()
    try:
        z = torch.view_as_complex(work.unflatten(-1, (-1, 2)))  # (..., d_rot/2) view
    except RuntimeError:  # strides not complex-compatible (e.g. odd head_dim): make the slice contiguous
        z = torch.view_as_complex(work.contiguous().unflatten(-1, (-1, 2)))
    rotated = torch.view_as_real(z * cis).flatten(-2)
    if rd == x.shape[-1]:
        return rotated.to(x.dtype)
    out = _new_with_tail(x, rd)
    out[..., :rd].copy_(rotated)
    return out


class _Rotate(torch.autograd.Function):
    """Autograd for a rotation kernel: the gradient of a rotation is the rotation by the opposite angle,
    i.e. the same kernel with the backward tables (constants, never differentiated)."""

    @staticmethod
    def forward(ctx, x, kernel, forward_tables, backward_tables):  # type: ignore[override]
        ctx.kernel, ctx.backward_tables, ctx.forward_tables = kernel, backward_tables, forward_tables
        return kernel(x, *forward_tables)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return _Rotate.apply(grad, ctx.kernel, ctx.backward_tables, ctx.forward_tables), None, None, None


def _plan(layout: str) -> tuple[Callable[..., torch.Tensor], tuple[str, ...], tuple[str, ...]]:
    """(kernel, forward table names, backward table names) for a layout."""
    if layout == "interleaved":
        return _interleaved_kernel, ("cis",), ("cis_conj",)
    return _half_split_kernel, ("cos_full", "neg_sin", "sin"), ("cos_full", "sin", "neg_sin")


def _derive(name: str, cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Kernel tables from per-pair cos/sin (..., h); complex ones from float64 cos/sin for accuracy."""
    if name == "cos_full":
        return torch.cat((cos, cos), dim=-1).to(dtype)
    if name == "sin":
        return sin.to(dtype)
    if name == "neg_sin":
        return (-sin).to(dtype)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    if name == "cis":
        return torch.complex(cos.double(), sin.double()).to(cdt)
    if name == "cis_conj":
        return torch.complex(cos.double(), -sin.double()).to(cdt)
    raise KeyError(name)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "half") -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` coordinates of ``x`` pair by pair; the rest pass through.

    Args:
        x: ``(..., D)`` queries or keys.
        cos, sin: per-pair ``(..., d_rot/2)``, broadcastable against ``x[..., :d_rot/2]`` (any attention
            factor or xPos scale already multiplied in), float32/float64 or ``x``'s dtype.
        layout: ``"half"`` (pair i = (i, i + d_rot/2)) or ``"interleaved"`` (pair i = (2i, 2i+1)).

    Supports autograd (with respect to ``x``). ``RoPE`` calls the same kernels with cached tables.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    kernel, fwd, bwd = _plan(layout)
    with torch.no_grad():
        tables = {n: _derive(n, cos, sin, x.dtype).to(x.device) for n in set(fwd) | set(bwd)}
    return _Rotate.apply(x, kernel, tuple(tables[n] for n in fwd), tuple(tables[n] for n in bwd))


def _check_positions(positions: Any) -> torch.Tensor:
    if not isinstance(positions, torch.Tensor):
        raise ValueError(f"positions must be an integer torch tensor, got {type(positions).__name__}")
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise ValueError(
            f"positions must be an integer tensor (torch.long), got dtype {positions.dtype}: positions never "
            "pass through a float (bf16 holds integers exactly only up to 256)"
        )
    if positions.dim() not in (1, 2) or positions.numel() == 0:
        raise ValueError(f"positions must have shape (T,) or (B, T) with T >= 1, got {tuple(positions.shape)}")
    return positions


class RoPE(nn.Module):
    """Rotary position embedding for one head size, one scaling config and one pair layout.

    ``rope(x, positions, seq_len=None)`` rotates ``x`` (B, H, T, head_dim) at integer ``positions``
    (T,) or (B, T). ``seq_len`` (default ``int(positions.max()) + 1``, as HF) selects the ``dynamic``
    and ``longrope`` frequencies. The first ``rotary_dim`` coordinates are rotated; the tail is copied.

    cos/sin tables are built in float64 from the integer positions, multiplied by the attention factor,
    cast to the compute dtype and cached (LRU, ``cache_size`` entries) by (frequency set, first position,
    last position, dtype, device). The frequency set is the config's own except for ``dynamic``
    (keyed by ``max(seq_len, L)``) and ``longrope`` (keyed by ``seq_len > L``), so a short input after a
    long one gets the original frequencies back.
    """

    cache_size = 16

    def __init__(self, config: RopeConfig | Mapping[str, Any], head_dim: int, layout: str = "half") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
        self.config = RopeConfig.from_mapping(config)
        _check_head_dim(head_dim)
        self.head_dim = head_dim
        self.layout = layout
        self.rotary_dim = self.config.rotary_dim(head_dim)
        self._freqs: OrderedDict[Any, tuple[torch.Tensor, float]] = OrderedDict()
        self._tables: OrderedDict[Any, dict[str, torch.Tensor]] = OrderedDict()
        self._memo: tuple[Any, torch.Tensor, list[torch.Tensor]] | None = None
        self.frequencies()  # validate now (e.g. LongRoPE factor lengths), not at the first forward

    @classmethod
    def from_hf_config(
        cls,
        config: Any,
        head_dim: int | None = None,
        layout: str = "half",
        *,
        layer_type: str | None = None,
    ) -> RoPE:
        """Build from an HF transformers config, as a user holds it.

        ``config`` may be

        * a transformers ``PretrainedConfig`` (``model.config``, e.g. ``LlamaConfig``, ``GPTNeoXConfig``,
          ``Phi3Config``; a composite config's text config is used),
        * its ``to_dict()`` or a ``config.json`` loaded as a dict (transformers >= 5 writes
          ``rope_parameters``; older versions ``rope_scaling`` next to ``rope_theta``),
        * a bare rope mapping with HF keys (``config.rope_parameters``, ``{"rope_theta": 1e4}``) or a
          ``RopeConfig``; then ``head_dim`` must be given.

        From a model config it reads the rope mapping (``rope_parameters`` or ``rope_scaling``),
        ``rope_theta`` (GPT-NeoX: ``rotary_emb_base``), ``partial_rotary_factor`` (GPT-NeoX: ``rotary_pct``;
        ``rotary_dim = int(head_dim * factor)``), ``max_position_embeddings``, a top-level
        ``original_max_position_embeddings`` (Phi-3), and ``head_dim`` (else ``hidden_size //
        num_attention_heads``), with the priorities of transformers 5.24 (``_rope_from_model_config``);
        other model keys are ignored. Unknown keys *inside* the rope mapping raise ``ValueError`` as in
        ``RopeConfig.from_mapping``. A mapping counts as a model config when it holds one of
        ``rope_parameters``, ``rope_scaling``, ``hidden_size``, ``num_attention_heads``, ``head_dim``,
        ``model_type``, ``rotary_pct``, ``rotary_emb_base`` or ``text_config``.

        Args:
            config: see above.
            head_dim: the attention head size; overrides the config's. Required for a bare rope mapping.
            layout: ``"half"`` (HF, GPT-NeoX) or ``"interleaved"`` (Meta); see the module docstring.
            layer_type: for configs with one rope mapping per layer type (Gemma 3's
                ``{"full_attention": {...}, "sliding_attention": {...}}``), which one to use.

        Raises:
            ValueError: a needed key is missing (named), a value is invalid, or ``config`` is none of the above.
        """
        rope_config, head_dim = rope_config_from_hf(config, head_dim, layer_type)
        return cls(rope_config, head_dim, layout)

    def with_config(self, **changes: Any) -> RoPE:
        """A new ``RoPE`` with some config keys changed (e.g. ``rope_type="yarn", factor=4``)."""
        return RoPE(self.config.replace(**changes), self.head_dim, self.layout)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, rotary_dim={self.rotary_dim}, layout={self.layout!r}, config={self.config.as_dict()}"

    # -- frequencies -------------------------------------------------------------------------------
    def _freq_key(self, seq_len: int | None) -> Any:
        return frequency_key(self.config, seq_len)[0]

    def frequencies(self, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
        """``(inv_freq, attention_factor)`` used for inputs of length ``seq_len`` (cached by
        ``ropelib.rope_scaling.frequency_key``: equal keys, equal frequencies)."""
        key, representative = frequency_key(self.config, seq_len)
        hit = self._freqs.get(key)
        if hit is None:
            hit = rope_frequencies(self.config, self.head_dim, representative)
            self._freqs[key] = hit
            while len(self._freqs) > self.cache_size:
                self._freqs.popitem(last=False)
        else:
            self._freqs.move_to_end(key)
        return hit

    @property
    def attention_factor(self) -> float:
        """The factor that multiplies cos and sin (logits scale by its square)."""
        return self.frequencies()[1]

    # -- cos/sin -----------------------------------------------------------------------------------
    def _table(
        self, seq_len: int, lo: int, hi: int, dtype: torch.dtype, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """Tables for positions lo..hi (inclusive) at ``seq_len``'s frequencies, rows (hi-lo+1, ...)."""
        key = (self._freq_key(seq_len), lo, hi, dtype, device)
        hit = self._tables.get(key)
        if hit is not None:
            self._tables.move_to_end(key)
            return hit
        inv_freq, attention_factor = self.frequencies(seq_len)
        with torch.inference_mode(False), torch.no_grad():  # cached tensors must be usable in training too
            # integer arange, then float64 (exact up to 2^53): a float64 arange near 2^53 has the wrong length
            pos = torch.arange(lo, hi + 1, dtype=torch.int64).to(torch.float64)
            angle = pos[:, None] * inv_freq.to(torch.float64)[None, :]  # (n, d_rot/2), float64
            entry = {"cos64": torch.cos(angle) * attention_factor, "sin64": torch.sin(angle) * attention_factor}
        self._tables[key] = entry
        while len(self._tables) > self.cache_size:
            self._tables.popitem(last=False)
        return entry

    def _direct(
        self,
        positions: torch.Tensor,
        seq_len: int,
        dtype: torch.dtype,
        device: torch.device,
        names: tuple[str, ...],
    ) -> list[torch.Tensor]:
        """The named tables at ``positions`` computed for those positions alone, rows (T, ...) or (B, T, ...)."""
        inv_freq, attention_factor = self.frequencies(seq_len)
        with torch.inference_mode(False), torch.no_grad():
            pos = positions.to(device="cpu", dtype=torch.float64)  # exact integers (checked <= 2^53)
            angle = pos[..., None] * inv_freq.to(torch.float64)  # (..., d_rot/2), float64
            entry = {"cos64": torch.cos(angle) * attention_factor, "sin64": torch.sin(angle) * attention_factor}
            return [self._get(entry, name, dtype, device) for name in names]

    @staticmethod
    def _get(entry: dict[str, torch.Tensor], name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = f"{name}:{dtype}"  # one entry serves one device; dtypes share the float64 angles
        if key not in entry:
            with torch.inference_mode(False), torch.no_grad():
                if name in ("cos", "sin"):
                    table = entry[f"{name}64"].to(dtype)
                else:
                    table = _derive(name, entry["cos64"], entry["sin64"], dtype)
                entry[key] = table.to(device)
        return entry[key]

    def _lookup(
        self,
        positions: torch.Tensor,
        seq_len: int | None,
        dtype: torch.dtype,
        device: torch.device,
        names: tuple[str, ...],
    ) -> list[torch.Tensor]:
        """The named tables at ``positions``: rows (T, ...) or (B, T, ...). Memoised for the last call's
        positions tensor (same object, unmodified), as a model rotates q and k in every layer with it."""
        try:
            memo_key = (id(positions), positions._version, seq_len, dtype, device, names)
        except RuntimeError:  # inference tensors have no version counter: no memo
            memo_key = None
        if memo_key is not None and self._memo is not None and self._memo[0] == memo_key:
            return self._memo[2]
        positions = _check_positions(positions)
        lo_t, hi_t = torch.aminmax(positions)
        lo, hi = int(lo_t), int(hi_t)
        if lo < 0:
            raise ValueError(f"positions must be >= 0, got a minimum of {lo}")
        if hi > MAX_EXACT_POSITION:
            raise ValueError(
                f"positions must be <= 2**53 = {MAX_EXACT_POSITION} (the largest range of integers float64 "
                f"holds exactly; the angles are formed in float64), got a maximum of {hi}"
            )
        if seq_len is None:
            seq_len = hi + 1
        elif not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
        span = hi - lo + 1
        if span > _DIRECT_MIN_SPAN and span > _DIRECT_SPAN_RATIO * positions.numel():
            # sparse positions over a huge span (e.g. [0, 2**24]): angles for the given positions only,
            # not a table of the whole span (same float64 formula; not cached)
            out = self._direct(positions, seq_len, dtype, device, names)
            if memo_key is not None:
                self._memo = (memo_key, positions, out)
            return out
        entry = self._table(seq_len, lo, hi, dtype, device)
        # contiguous positions offset..offset+T-1 use the table as is; others gather its rows
        contiguous = (
            positions.dim() == 1
            and positions.numel() == hi - lo + 1
            and (positions.numel() == 1 or bool((positions[1:] - positions[:-1] == 1).all()))
        )
        index = None if contiguous else (positions - lo).to(device)
        out = []
        for name in names:
            table = self._get(entry, name, dtype, device)
            out.append(table if index is None else table[index])
        if memo_key is not None:
            self._memo = (memo_key, positions, out)  # holding `positions` keeps its id from being reused
        return out

    def cos_sin(
        self,
        positions: torch.Tensor,
        seq_len: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair cos and sin at integer ``positions``, attention factor included.

        Returns two tensors of shape ``positions.shape + (rotary_dim // 2,)`` in ``dtype`` on ``device``
        (default: the positions' device). HF's ``(cos, sin)`` for the half layout are
        ``torch.cat((cos, cos), -1)`` and ``torch.cat((sin, sin), -1)``; Meta's ``freqs_cis`` is
        ``torch.complex(cos, sin)``. Angles are float64 ``position * inv_freq`` before the cast.
        """
        device = torch.device(positions.device if device is None else device)
        cos, sin = self._lookup(positions, seq_len, dtype, device, ("cos", "sin"))
        return cos, sin

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, positions: torch.Tensor, seq_len: int | None = None) -> torch.Tensor:
        """Rotate ``x`` (B, H, T, head_dim) at integer ``positions`` (T,) or (B, T); returns a new tensor."""
        if x.dim() != 4 or x.shape[-1] != self.head_dim:
            raise ValueError(f"x must have shape (B, H, T, {self.head_dim}), got {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        positions = _check_positions(positions)
        if positions.shape[-1] != x.shape[2] or (positions.dim() == 2 and positions.shape[0] not in (1, x.shape[0])):
            raise ValueError(
                f"positions shape {tuple(positions.shape)} does not match x (B, H, T, D) = {tuple(x.shape)}"
            )
        kernel, fwd, bwd = _plan(self.layout)
        names = fwd + tuple(n for n in bwd if n not in fwd)
        tables = dict(zip(names, self._lookup(positions, seq_len, x.dtype, x.device, names)))
        if positions.dim() == 2:  # rows (B, T, ...) -> (B, 1, T, ...): broadcast over heads
            tables = {n: t.unsqueeze(1) for n, t in tables.items()}
        return _Rotate.apply(x, kernel, tuple(tables[n] for n in fwd), tuple(tables[n] for n in bwd))


# ---------------------------------------------------------------------------------------------------
# Weight layout conversion (Meta -> HF: docs/references.md §1.2)
# ---------------------------------------------------------------------------------------------------
def _layout_perm(head_dim: int, rotary_dim: int | None, to_half: bool) -> torch.Tensor:
    rd = head_dim if rotary_dim is None else rotary_dim
    if head_dim % 2 or rd % 2 or not (2 <= rd <= head_dim):
        raise ValueError(f"need even head_dim and even 2 <= rotary_dim <= head_dim, got {head_dim}, {rd}")
    evens_then_odds = torch.cat((torch.arange(0, rd, 2), torch.arange(1, rd, 2)))  # half[j] = inter[perm[j]]
    perm = evens_then_odds if to_half else torch.argsort(evens_then_odds)
    return torch.cat((perm, torch.arange(rd, head_dim)))


def _permute_rows(weight: torch.Tensor, n_heads: int, head_dim: int, perm: torch.Tensor) -> torch.Tensor:
    if (
        not isinstance(n_heads, int)
        or n_heads < 1
        or weight.dim() not in (1, 2)
        or weight.shape[0] != n_heads * head_dim
    ):
        raise ValueError(
            f"weight must have n_heads * head_dim = {n_heads} * {head_dim} rows (a q/k projection weight "
            f"(out, in) or bias (out,)), got shape {tuple(weight.shape)}"
        )
    w = weight.reshape(n_heads, head_dim, *weight.shape[1:])
    return w[:, perm.to(weight.device)].reshape(weight.shape)


def interleaved_to_half(
    weight: torch.Tensor, n_heads: int, head_dim: int, rotary_dim: int | None = None
) -> torch.Tensor:
    """Reorder q/k projection rows from the interleaved layout (Meta) to the half layout (HF).

    Within each head, rows ``[0, 1, 2, 3, ..., d-1]`` become ``[0, 2, 4, ..., d-2, 1, 3, ..., d-1]``
    (only the first ``rotary_dim`` rows with partial rotary). ``weight`` is ``(n_heads*head_dim, in)``
    or a bias ``(n_heads*head_dim,)``. After this, half-layout RoPE scores equal interleaved ones.
    """
    return _permute_rows(weight, n_heads, head_dim, _layout_perm(head_dim, rotary_dim, to_half=True))


def half_to_interleaved(
    weight: torch.Tensor, n_heads: int, head_dim: int, rotary_dim: int | None = None
) -> torch.Tensor:
    """Inverse of ``interleaved_to_half``: HF half-layout q/k rows back to the interleaved order."""
    return _permute_rows(weight, n_heads, head_dim, _layout_perm(head_dim, rotary_dim, to_half=False))
