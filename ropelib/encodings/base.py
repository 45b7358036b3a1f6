"""The one interface every positional encoding implements, and the registry of named encodings.

A positional encoding is an ``nn.Module`` with three hooks, each a no-op by default, so that a model
never needs to know which scheme it is using (docs/design.md §3, "encodings"):

* ``embed(x, positions)`` — absolute schemes add a vector to the token embeddings, once, at the input
  (sinusoidal, learned). ``x`` is ``(B, T, C)``, ``positions`` integer ``(T,)`` or ``(B, T)``.
* ``rotate(q, k, q_positions, k_positions)`` — multiplicative schemes act on queries and keys in every
  layer (RoPE family, xPos). ``q`` is ``(B, H, Tq, D)``, ``k`` is ``(B, H, Tk, D)``; ``k`` and
  ``k_positions`` cover *every* key the queries attend to (with a KV cache, the cache holds keys before
  rotation, so scaling that depends on the current length — dynamic NTK — stays exact).
* ``bias(q_positions, k_positions)`` — additive schemes return logits ``(H, Tq, Tk)`` (or
  ``(B, H, Tq, Tk)`` for batched positions) added to the attention scores before the softmax (ALiBi,
  T5, KERPLE, FIRE). The model adds the causal mask itself; ``None`` means "no bias".

and one more, ``positions(length, offset, device)``, which produces the integer positions a model
feeds to the hooks (``offset + arange(T)``); the randomized-positions wrapper (Ruoss et al. 2023)
overrides it in training.

Positions are always integer tensors (``torch.long``): they never pass through a reduced-precision
float (bf16 holds integers exactly only up to 256; docs/references.md §5.2).

The registry maps a name to a class. ``make_encoding(name, n_heads=, head_dim=, d_model=, **params)``
validates the name (an unknown one lists the known ones) and the keyword parameters (an unknown one
lists the accepted ones), then builds the module. Adding an encoding is one small file with a
``@register_encoding("name")`` class, one import line in ``ropelib/encodings/__init__.py``, and tests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = [
    "PositionalEncoding",
    "ENCODINGS",
    "register_encoding",
    "make_encoding",
    "encoding_params",
    "resolved_params",
    "default_positions",
    "relative_positions",
    "heads_first",
]


def default_positions(length: int, offset: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer positions ``offset, offset+1, …, offset+length-1`` as a ``(length,)`` long tensor."""
    return torch.arange(offset, offset + length, device=device, dtype=torch.long)


class PositionalEncoding(nn.Module):
    """Base class: every hook is a no-op. Subclasses override the hooks they need.

    Constructor contract: ``__init__(self, *, n_heads, head_dim, d_model, **params)`` with every
    parameter keyword-only and given a default, so the registry can validate names and a config can be
    serialised as ``{"name": ..., "params": {...}}``.
    """

    #: registry name, set by ``register_encoding``
    name: str = "base"
    #: largest position + 1 the encoding can represent (``None``: unbounded). Learned tables set it.
    max_positions: int | None = None

    def __init__(self, *, n_heads: int, head_dim: int, d_model: int) -> None:
        super().__init__()
        for label, value in (("n_heads", n_heads), ("head_dim", head_dim), ("d_model", d_model)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.d_model = d_model

    # -- hooks ---------------------------------------------------------------------------------
    def positions(
        self,
        length: int,
        offset: int = 0,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """The integer positions fed to the other hooks for ``length`` new tokens after ``offset``."""
        return default_positions(length, offset, device)

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Absolute encodings: return ``x`` (B, T, C) with position vectors added. Default: ``x``."""
        return x

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Multiplicative encodings: return rotated ``(q, k)``. Default: unchanged."""
        return q, k

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor | None:
        """Additive encodings: logits ``(H, Tq, Tk)`` added before the softmax. Default: ``None``."""
        return None

    # -- helpers -------------------------------------------------------------------------------
    @property
    def has_rotate(self) -> bool:
        return type(self).rotate is not PositionalEncoding.rotate

    @property
    def has_bias(self) -> bool:
        return type(self).bias is not PositionalEncoding.bias

    @property
    def has_embed(self) -> bool:
        return type(self).embed is not PositionalEncoding.embed

    def extra_repr(self) -> str:
        return f"name={self.name!r}, n_heads={self.n_heads}, head_dim={self.head_dim}, d_model={self.d_model}"


def relative_positions(q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
    """Integer ``i - j`` for every query position ``i`` and key position ``j``.

    ``q_positions`` ``(Tq,)`` and ``k_positions`` ``(Tk,)`` give ``(Tq, Tk)``; batched ``(B, Tq)`` and
    ``(B, Tk)`` give ``(B, Tq, Tk)``. ``Tk`` may exceed ``Tq`` (KV-cache decoding passes one query
    position and every key position). Raises ``ValueError`` for non-integer or mismatched positions.
    """
    for label, pos in (("q_positions", q_positions), ("k_positions", k_positions)):
        if not isinstance(pos, torch.Tensor):
            raise ValueError(f"{label} must be a torch.Tensor of integer positions, got {type(pos).__name__}")
        if pos.is_floating_point() or pos.is_complex() or pos.dtype == torch.bool:
            raise ValueError(f"{label} must be an integer tensor (torch.long), got dtype {pos.dtype}")
        if pos.dim() not in (1, 2):
            raise ValueError(f"{label} must have shape (T,) or (B, T), got {tuple(pos.shape)}")
    if q_positions.dim() != k_positions.dim() or (
        q_positions.dim() == 2 and q_positions.shape[0] != k_positions.shape[0]
    ):
        raise ValueError(
            f"q_positions {tuple(q_positions.shape)} and k_positions {tuple(k_positions.shape)} must both "
            "be (T,) or both (B, T) with the same B"
        )
    q = q_positions.to(torch.long)
    k = k_positions.to(device=q.device, dtype=torch.long)
    return q[..., :, None] - k[..., None, :]  # (Tq, Tk) or (B, Tq, Tk)


def heads_first(values: torch.Tensor) -> torch.Tensor:
    """``(…, Tq, Tk, H)`` -> ``(…, H, Tq, Tk)``: the layout every bias hook returns."""
    return values.movedim(-1, -3)


#: name -> class; filled by ``@register_encoding`` when ``ropelib.encodings`` is imported
ENCODINGS: dict[str, type[PositionalEncoding]] = {}

_STRUCTURAL = ("n_heads", "head_dim", "d_model")


def register_encoding(name: str) -> Callable[[type[PositionalEncoding]], type[PositionalEncoding]]:
    """Class decorator: add an encoding to the registry under ``name``."""

    def decorate(cls: type[PositionalEncoding]) -> type[PositionalEncoding]:
        if name in ENCODINGS and ENCODINGS[name] is not cls:
            raise ValueError(f"positional encoding {name!r} is already registered by {ENCODINGS[name]!r}")
        if not (isinstance(cls, type) and issubclass(cls, PositionalEncoding)):
            raise TypeError(f"{cls!r} must subclass PositionalEncoding to be registered")
        cls.name = name
        ENCODINGS[name] = cls
        return cls

    return decorate


def _lookup(name: str) -> type[PositionalEncoding]:
    try:
        return ENCODINGS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(ENCODINGS))
        raise ValueError(f"unknown positional encoding {name!r}; known encodings: {known}") from None


def encoding_params(name: str) -> dict[str, object]:
    """The keyword parameters an encoding accepts, with their defaults (structural ones excluded)."""
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _STRUCTURAL
    }


def resolved_params(name: str, params: Mapping[str, object] | None = None) -> dict[str, object]:
    """``params`` with every default of encoding ``name`` filled in (recursively for a wrapper's
    ``inner`` / ``inner_params``): what identifies an encoding, so a changed default is a different one."""
    full: dict[str, object] = {**encoding_params(name), **dict(params or {})}
    if isinstance(full.get("inner"), str) and "inner_params" in full:
        inner_params = full["inner_params"] or {}
        full["inner_params"] = resolved_params(full["inner"], inner_params)  # type: ignore[arg-type]
    return full


def make_encoding(
    name: str,
    *,
    n_heads: int,
    head_dim: int,
    d_model: int,
    params: Mapping[str, object] | None = None,
    **kwargs: object,
) -> PositionalEncoding:
    """Build the encoding registered as ``name``; parameters by ``params`` mapping and/or keywords.

    Raises ``ValueError`` naming the bad value and listing what is allowed, for an unknown name or an
    unknown parameter.
    """
    cls = _lookup(name)
    merged = dict(params or {})
    merged.update(kwargs)
    allowed = encoding_params(name)
    unknown = sorted(set(merged) - set(allowed))
    if unknown:
        listed = ", ".join(sorted(allowed)) or "(none)"
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for positional encoding {name!r}; accepted: {listed}"
        )
    return cls(n_heads=n_heads, head_dim=head_dim, d_model=d_model, **merged)
