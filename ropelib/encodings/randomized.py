"""Randomized positional encodings (Ruoss et al. 2023, arXiv 2305.16843, §3, "Randomized positional encodings").

A wrapper around any other encoding. In training, a sequence of ``n`` tokens gets ``n`` distinct
positions drawn uniformly from ``[0, max_position)`` and sorted, in place of ``0 … n-1``; so a model
trained on short inputs has already seen every position up to ``max_position`` (chosen much larger than
any test length). At evaluation, ``eval_positions="ordered"`` (the default) gives the ordinary
``offset … offset+n-1``; ``eval_positions="random"`` is the paper's protocol — the authors' code draws a
fresh sorted subset at test time too — made deterministic: every evaluation forward draws from a
generator seeded with ``eval_seed``, so the same input always gets the same positions. Every other hook
is the inner encoding's.

The draw uses torch's global RNG (``torch.manual_seed`` makes seeded training deterministic); it is made
on the CPU and then moved, so a seed gives the same positions on every device. One draw is shared by
the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .base import PositionalEncoding, default_positions, make_encoding, register_encoding

__all__ = ["Randomized", "random_positions", "EVAL_POSITIONS"]

#: what a randomized encoding feeds its inner encoding at evaluation
EVAL_POSITIONS = ("ordered", "random")


def random_positions(
    length: int,
    max_position: int,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``length`` distinct integers from ``[0, max_position)``, sorted ascending: a ``(length,)`` long tensor.

    Uses ``generator`` (default: torch's global RNG). Raises ``ValueError`` if ``length > max_position``.
    """
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    if not isinstance(max_position, int) or isinstance(max_position, bool) or max_position < 1:
        raise ValueError(f"max_position must be a positive integer, got {max_position!r}")
    if length > max_position:
        raise ValueError(
            f"cannot draw {length} distinct positions from [0, {max_position}): length must be <= max_position"
        )
    drawn = torch.randperm(max_position, dtype=torch.long, generator=generator)[:length]
    return torch.sort(drawn).values.to(device)


@register_encoding("randomized")
class Randomized(PositionalEncoding):
    """Random sorted positions in training around an ``inner`` encoding built with ``make_encoding``."""

    def __init__(
        self,
        *,
        n_heads: int,
        head_dim: int,
        d_model: int,
        inner: str = "rope",
        inner_params: Mapping[str, object] | None = None,
        max_position: int = 2048,
        eval_positions: str = "ordered",
        eval_seed: int = 0,
    ) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        if eval_positions not in EVAL_POSITIONS:
            raise ValueError(f"unknown eval_positions {eval_positions!r}; allowed: {', '.join(EVAL_POSITIONS)}")
        if not isinstance(eval_seed, int) or isinstance(eval_seed, bool) or eval_seed < 0:
            raise ValueError(f"eval_seed must be a non-negative integer, got {eval_seed!r}")
        self.eval_positions = eval_positions
        self.eval_seed = eval_seed
        if not isinstance(max_position, int) or isinstance(max_position, bool) or max_position < 1:
            raise ValueError(f"max_position must be a positive integer, got {max_position!r}")
        if inner == "randomized":
            raise ValueError("inner encoding 'randomized' cannot wrap itself; choose any other encoding")
        if inner_params is not None and not isinstance(inner_params, Mapping):
            raise ValueError(f"inner_params must be a mapping or None, got {type(inner_params).__name__}")
        self.max_position = max_position
        self.inner_name = inner
        self.inner_params = dict(inner_params or {})
        try:  # an unknown name or parameter raises ValueError listing the allowed ones
            self.inner = make_encoding(
                inner, n_heads=n_heads, head_dim=head_dim, d_model=d_model, params=self.inner_params
            )
        except ValueError as error:
            raise ValueError(f"inner encoding of 'randomized': {error}") from None
        table = self.inner.max_positions
        if table is not None and table < max_position:
            raise ValueError(
                f"inner encoding {inner!r} represents only {table} positions but max_position={max_position}; "
                f"give it at least {max_position} (or lower max_position)"
            )
        self.max_positions = table

    def positions(self, length: int, offset: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
        """Training: ``length`` sorted distinct draws from ``[0, max_position)``. Eval: ``offset …
        offset+length-1`` (``eval_positions="ordered"``) or a draw seeded with ``eval_seed`` (``"random"``).

        Random positions are drawn for a whole sequence, so ``offset`` must be 0 there.
        """
        if not self.training and self.eval_positions == "ordered":
            return default_positions(length, offset, device)
        if not self.training:
            if offset != 0:
                raise ValueError(
                    f"offset={offset} with eval_positions='random': positions are drawn for a whole sequence "
                    "(incremental decoding needs eval_positions='ordered')"
                )
            generator = torch.Generator().manual_seed(self.eval_seed)
            return random_positions(length, self.max_position, device, generator)
        if offset != 0:
            raise ValueError(
                f"offset={offset} in training: randomized positions are drawn for a whole sequence "
                "(offset must be 0; incremental decoding runs in eval mode)"
            )
        return random_positions(length, self.max_position, device)

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The inner encoding's ``embed``."""
        return self.inner.embed(x, positions)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The inner encoding's ``rotate``."""
        return self.inner.rotate(q, k, q_positions, k_positions)

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor | None:
        """The inner encoding's ``bias``."""
        return self.inner.bias(q_positions, k_positions)

    @property
    def has_rotate(self) -> bool:
        return self.inner.has_rotate

    @property
    def has_bias(self) -> bool:
        return self.inner.has_bias

    @property
    def has_embed(self) -> bool:
        return self.inner.has_embed

    def extra_repr(self) -> str:
        return f"inner={self.inner_name!r}, max_position={self.max_position}, eval_positions={self.eval_positions!r}"
