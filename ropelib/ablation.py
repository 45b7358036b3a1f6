"""Positions-removed ablation: run a model with its positional encoding switched off, then restore it.

``with without_positions(model): ...`` makes the model's positional encoding contribute nothing, for
every registered encoding (``ropelib.encodings.ENCODINGS``), by replacing its hooks (the interface of
``ropelib.encodings.base``) with no-ops on that encoding object:

* ``embed(x, positions)`` returns ``x`` unchanged (no position vectors at the input: sinusoidal,
  Vaswani et al. 2017, arXiv 1706.03762, §3.5; learned, GPT-2),
* ``rotate(q, k, …)`` returns ``q, k`` unchanged (no rotation in any layer: RoPE, Su et al. 2021,
  arXiv 2104.09864; xPos, Sun et al. 2022, arXiv 2212.10554),
* ``bias(…)`` returns ``None`` (no additive logits, the causal mask only: T5, Raffel et al. 2020;
  ALiBi, Press et al. 2021, arXiv 2108.12409; KERPLE, arXiv 2205.09921; FIRE, arXiv 2310.04418),
* ``positions(T, offset, device)`` returns the plain ``offset … offset+T-1`` (no random training
  positions: Ruoss et al. 2023, arXiv 2305.16843); no hook reads them any more,
* ``max_positions`` is ``None`` (a learned table no longer limits the length, as it is not read).

So inside the context the model computes exactly what the same weights compute with the ``"nope"``
encoding (Kazemnejad et al. 2023, arXiv 2305.19466): the causal mask is then the only source of
order, which a causal decoder can still exploit (Haviv et al. 2022, arXiv 2203.16634), so "without
positions" is not "blind to order". The randomized wrapper is handled by its own hooks, which are
the ones the model calls (its inner encoding is left as it is). The encoding's parameters stay in
the model (``state_dict`` is unchanged), and on leaving the context — also on an exception — the
encoding's hooks and ``max_positions`` are restored exactly. ``has_embed`` / ``has_rotate`` /
``has_bias`` keep describing the encoding as built. Meant for eager models (a ``torch.compile``
graph traced earlier may keep the old hooks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .encodings.base import PositionalEncoding, default_positions

__all__ = ["HOOKS", "without_positions", "describe"]

#: the encoding attributes ``without_positions`` replaces, with what each loses
HOOKS: dict[str, str] = {
    "embed": "position vectors added to the token embeddings at the input (sinusoidal, learned): "
    "embed returns x unchanged",
    "rotate": "the rotation of queries and keys in every layer (RoPE family, xPos): rotate returns q, k unchanged",
    "bias": "the additive attention-logit bias (T5, ALiBi, KERPLE, FIRE): bias returns None, the causal mask only",
    "positions": "non-default positions (randomized positions' sorted random draws in training): "
    "positions returns offset … offset+T-1, read by no hook",
    "max_positions": "a finite position table's length limit (learned): None, any length runs",
}

_MISSING = object()


def _no_embed(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return x  # (B, T, C) unchanged


def _no_rotate(
    q: torch.Tensor, k: torch.Tensor, q_positions: torch.Tensor, k_positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return q, k  # (B, H, Tq, D), (B, H, Tk, D) unchanged


def _no_bias(q_positions: torch.Tensor, k_positions: torch.Tensor) -> None:
    return None  # no additive logits


def _plain_positions(length: int, offset: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
    return default_positions(length, offset, device)  # (T,) long


_REPLACEMENTS: dict[str, Any] = {
    "embed": _no_embed,
    "rotate": _no_rotate,
    "bias": _no_bias,
    "positions": _plain_positions,
    "max_positions": None,
}


def _encoding_of(model: Any) -> PositionalEncoding:
    encoding = model if isinstance(model, PositionalEncoding) else getattr(model, "encoding", None)
    if not isinstance(encoding, PositionalEncoding):
        raise ValueError(
            f"without_positions needs a model with an `encoding` attribute holding a PositionalEncoding "
            f"(a ropelib ToyTransformer), got {type(model).__name__} with encoding {type(encoding).__name__}"
        )
    return encoding


@contextmanager
def without_positions(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: inside it ``model``'s positional encoding contributes nothing (module docstring).

    Yields ``model`` itself (modified in place, not copied). On exit, normal or by an exception, the
    encoding object's hooks and ``max_positions`` are exactly what they were (instance attributes
    put back, or removed if there were none). Nesting is allowed. ``model`` must have an ``encoding``
    attribute holding a ``PositionalEncoding`` (else ValueError); an encoding may be passed directly.
    """
    encoding = _encoding_of(model)
    saved = {name: encoding.__dict__.get(name, _MISSING) for name in _REPLACEMENTS}
    try:
        for name, replacement in _REPLACEMENTS.items():
            object.__setattr__(encoding, name, replacement)  # shadows the class's method for this object
        yield model
    finally:
        for name, old in saved.items():
            if old is _MISSING:
                encoding.__dict__.pop(name, None)
            else:
                object.__setattr__(encoding, name, old)


def describe(model: nn.Module | PositionalEncoding | None = None) -> dict[str, str]:
    """What ``without_positions`` removes, per hook: ``{hook: text}``.

    Without an argument: the generic description of each hook (``HOOKS``). With a model (or an
    encoding): for that encoding, ``"removed: …"`` where it uses the hook and ``"unused by '<name>':
    nothing to remove"`` where it does not (the randomized wrapper reports its inner encoding's hooks).
    """
    if model is None:
        return dict(HOOKS)
    encoding = _encoding_of(model)
    used = {
        "embed": encoding.has_embed,
        "rotate": encoding.has_rotate,
        "bias": encoding.has_bias,
        "positions": type(encoding).positions is not PositionalEncoding.positions,
        "max_positions": encoding.max_positions is not None,
    }
    return {
        hook: (f"removed: {text}" if used[hook] else f"unused by {encoding.name!r}: nothing to remove")
        for hook, text in HOOKS.items()
    }
