"""N-gram language-model baseline over integer token ids: interpolated modified Kneser-Ney.

The reference a trained transformer must beat on a character-level corpus (vocabulary size ``V`` up to
~256, training arrays up to ~12M tokens).

What it computes — Chen & Goodman 1998, "An Empirical Study of Smoothing Techniques for Language
Modeling" (Harvard TR-10-98), interpolated *modified* Kneser-Ney, eq. (26) (eq. 17 there for the
discount estimates). For the model of order ``n`` and a context ``h`` of ``k - 1`` tokens at level
``k = n, n-1, …, 1`` (``h'`` is ``h`` without its oldest token)::

    p_k(w | h) = max(c(hw) - D(c(hw)), 0) / sum_v c(hv)  +  gamma(h) * p_{k-1}(w | h')
    gamma(h)   = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / sum_v c(hv)
    p_0(w)     = 1 / V                                   (uniform: every id in 0..V-1 gets p > 0)

* ``c`` is the raw count at the top level ``k = n`` and the *continuation* count
  ``N1+(. h w)`` (number of distinct tokens seen before ``hw``) at every lower level ``k < n``.
* ``N_r(h.)`` is the number of tokens ``v`` with ``c(hv) = r`` (``N3+``: ``>= 3``); ``D(0) = 0``,
  ``D(1) = D1``, ``D(2) = D2``, ``D(c >= 3) = D3+``.
* Discounts per level from that level's count-of-counts ``n_r`` (number of ``k``-grams with count
  exactly ``r``, using the counts that level discounts, raw or continuation — as KenLM does)::

      Y = n1 / (n1 + 2 n2),  D1 = 1 - 2Y n2/n1,  D2 = 2 - 3Y n3/n2,  D3+ = 3 - 4Y n4/n3

  If a denominator is zero or some ``D_r`` falls outside ``(0, r]`` (tiny corpora, or the unigram
  level of a small vocabulary where no token is rare) the level uses KenLM's fallback discounts
  ``(0.5, 1.0, 1.5)`` (``lmplz --discount_fallback``); ``KNLevel.discounts_estimated`` says which.
  ``D_r > 0`` keeps ``gamma(h) > 0`` for every seen context, hence every probability non-zero.
* A context never seen in training (``sum_v c(hv) = 0``) backs off entirely: ``p_k = p_{k-1}``.
* Order 1 is a unigram over *raw* counts (it is the top level of its own model, so the rule above
  applies: raw counts, modified-KN discounts, interpolated with the uniform ``1/V``) — neither the
  continuation-count unigram nor add-one. In models of order ``n >= 2`` the unigram level uses
  continuation counts.

Scoring ``model.log_probs(ids)`` (``ids``: (N,)) returns (N,) natural-log probabilities of each token
given up to ``n - 1`` previous tokens *within* ``ids``; the first ``n - 1`` tokens use the shorter
contexts available, i.e. the model's own lower-level distribution ``p_k`` with ``k = i + 1`` (there is
no begin-of-sequence token). ``cross_entropy`` is ``-mean(log_probs)`` in nats, ``perplexity`` its
``exp``. Every level is a proper distribution over ``0..V-1`` (sums to 1).

Implementation: each ``k``-gram is one int64 key, ids in base ``V`` with the newest token least
significant (the key of its context is ``key // V``); counting is ``np.unique`` over all keys, look-up
``np.searchsorted``; no Python loop over tokens. ``V ** order`` must be below ``2 ** 63`` (true for
``V <= 256`` up to order 6, the largest allowed), else ``ValueError``.

Timing (measured once, ``OMP_NUM_THREADS=1`` on a shared 2-core machine, NumPy 2.4, uniform random
ids, ``V = 256``, 10M training and 200k evaluation tokens): ``ngram_baselines`` for orders 1..5 (count
tables shared between orders), fitting and scoring all five: 8.8 s in total. Five separate
``NGramLM.fit`` calls, orders 1..5: 13.2 s, then scoring 200k tokens with all five: 3.1 s. One order-5
model: fit 5.3 s, score 200k tokens 1.7 s (mostly ``searchsorted`` into the 10M-key tables).

Bad input raises ``ValueError`` naming the value: ids outside ``0..V-1``, non-integer or non-1-D or
empty arrays, an order that is not an int in ``1..6``, ``V ** order >= 2 ** 63``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

__all__ = [
    "NGramLM",
    "KNLevel",
    "ngram_baselines",
    "estimate_discounts",
    "FALLBACK_DISCOUNTS",
    "MAX_ORDER",
]

#: largest supported order (``V ** 6 < 2 ** 63`` for ``V <= 256``)
MAX_ORDER = 6

#: KenLM's ``--discount_fallback`` defaults (D1, D2, D3+), used where count-of-counts are degenerate
FALLBACK_DISCOUNTS: tuple[float, float, float] = (0.5, 1.0, 1.5)

_KEY_LIMIT = 2**63


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------
def _check_vocab_size(vocab_size: int) -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ValueError(f"vocab_size must be an integer >= 1, got {vocab_size!r}")
    return int(vocab_size)


def _check_order(order: int, vocab_size: int) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer in 1..{MAX_ORDER}, got {order!r}")
    order = int(order)
    if vocab_size**order >= _KEY_LIMIT:
        raise ValueError(
            f"vocab_size ** order = {vocab_size}**{order} = {vocab_size**order} does not fit an int64 "
            f"n-gram key (must be < 2**63); use a smaller order or vocabulary"
        )
    return order


def _as_token_array(ids: np.ndarray | torch.Tensor | Sequence[int], vocab_size: int, name: str) -> np.ndarray:
    """Validated int64 copy-or-view of ``ids``: 1-D, non-empty, integer, every value in 0..V-1. (N,)"""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of token ids, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one token id")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{name} contains token id {int(bad)}, outside the allowed range 0..{vocab_size - 1} "
            f"(vocab_size={vocab_size})"
        )
    return arr.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------
# keys and counts
# ---------------------------------------------------------------------------------------------
def _ngram_keys(ids: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
    """Key of every k-gram in ``ids`` (N,), newest token least significant. (N - k + 1,)"""
    m = ids.size - k + 1
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    keys = ids[:m].copy()  # (m,)
    for j in range(1, k):
        keys *= vocab_size
        keys += ids[j : j + m]
    return keys


def _unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys (G,) and how often each occurs (G,) int64."""
    uniq, counts = np.unique(keys, return_counts=True)
    return uniq.astype(np.int64, copy=False), counts.astype(np.int64, copy=False)


class _CountTables:
    """Raw and continuation counts of one training array, computed once per length and shared."""

    def __init__(self, ids: np.ndarray, vocab_size: int):
        self.ids = ids  # (N,)
        self.vocab_size = vocab_size
        self._raw: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cont: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def raw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distinct k-gram keys and their counts c(w_1..w_k)."""
        if k not in self._raw:
            self._raw[k] = _unique_counts(_ngram_keys(self.ids, k, self.vocab_size))
        return self._raw[k]

    def continuation(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distinct k-gram keys g and N1+(. g): distinct (k+1)-grams ending in g."""
        if k not in self._cont:
            longer, _ = self.raw(k + 1)  # (G',) distinct (k+1)-grams
            self._cont[k] = _unique_counts(longer % (self.vocab_size**k))  # drop the oldest token
        return self._cont[k]


# ---------------------------------------------------------------------------------------------
# one level of the interpolation
# ---------------------------------------------------------------------------------------------
def estimate_discounts(counts: np.ndarray) -> tuple[tuple[float, float, float], bool]:
    """Modified-KN discounts (D1, D2, D3+) from the count-of-counts of ``counts`` (G,).

    Chen & Goodman 1998 eq. (26): ``Y = n1/(n1+2 n2)``, ``D_r = r - (r+1) Y n_{r+1}/n_r``. Returns
    ``(discounts, estimated)``; ``estimated`` is False where the estimate is undefined or some
    ``D_r`` is outside ``(0, r]`` and ``FALLBACK_DISCOUNTS`` are returned instead.
    """
    n1, n2, n3, n4 = (int(np.count_nonzero(counts == r)) for r in (1, 2, 3, 4))
    if n1 == 0 or n2 == 0 or n3 == 0:
        return FALLBACK_DISCOUNTS, False
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d_r <= r for r, d_r in zip((1, 2, 3), d)):
        return FALLBACK_DISCOUNTS, False
    return (float(d[0]), float(d[1]), float(d[2])), True


@dataclass(frozen=True, eq=False)
class KNLevel:
    """Level ``k`` (k-grams, contexts of ``k - 1`` tokens) of an interpolated modified-KN model."""

    k: int
    continuation: bool  # counts are continuation counts N1+(. h w) (False: raw counts)
    gram_keys: np.ndarray  # (G,) sorted k-gram keys
    counts: np.ndarray  # (G,) int64 count of each k-gram
    context_keys: np.ndarray  # (C,) sorted context keys (gram_key // V)
    context_totals: np.ndarray  # (C,) int64 sum_v c(hv)
    context_gammas: np.ndarray  # (C,) float64 back-off weight gamma(h)
    discounts: tuple[float, float, float]  # (D1, D2, D3+)
    discounts_estimated: bool  # False: FALLBACK_DISCOUNTS

    @property
    def discount_table(self) -> np.ndarray:
        """D(c) for c = 0, 1, 2, >=3. (4,)"""
        return np.array((0.0, *self.discounts))


def _build_level(k: int, gram_keys: np.ndarray, counts: np.ndarray, vocab_size: int, continuation: bool) -> KNLevel:
    discounts, estimated = estimate_discounts(counts)
    if gram_keys.size == 0:
        empty_i, empty_f = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return KNLevel(k, continuation, gram_keys, counts, empty_i, empty_i, empty_f, discounts, estimated)
    ctx = gram_keys // vocab_size  # (G,) sorted, since gram_keys are
    starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])  # (C,)
    totals = np.add.reduceat(counts, starts)  # (C,)
    n_r = [np.add.reduceat((counts == r).astype(np.int64), starts) for r in (1, 2)]  # 2 x (C,)
    n_3plus = np.add.reduceat((counts >= 3).astype(np.int64), starts)  # (C,)
    d1, d2, d3 = discounts
    gammas = (d1 * n_r[0] + d2 * n_r[1] + d3 * n_3plus) / totals  # (C,)
    return KNLevel(k, continuation, gram_keys, counts, ctx[starts], totals, gammas, discounts, estimated)


def _lookup(sorted_keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into ``sorted_keys`` (S,) of each query (M,) and whether it is there. (M,), (M,)"""
    if sorted_keys.size == 0:
        return np.zeros(query.shape, dtype=np.int64), np.zeros(query.shape, dtype=bool)
    idx = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)  # (M,)
    return idx, sorted_keys[idx] == query


def _level_probability(level: KNLevel, gram_keys: np.ndarray, p_lower: np.ndarray, vocab_size: int) -> np.ndarray:
    """p_k(w | h) for each k-gram key ``hw`` (M,), given p_{k-1}(w | h') (M,). (M,)"""
    if level.context_keys.size == 0:  # nothing counted at this level: back off everywhere
        return p_lower
    ci, seen_ctx = _lookup(level.context_keys, gram_keys // vocab_size)  # (M,), (M,)
    gi, seen_gram = _lookup(level.gram_keys, gram_keys)  # (M,), (M,)
    c = np.where(seen_gram, level.counts[gi], 0)  # (M,)
    discounted = c - level.discount_table[np.minimum(c, 3)]  # (M,) >= 0 as D_r <= r
    p = discounted / level.context_totals[ci] + level.context_gammas[ci] * p_lower  # (M,)
    return np.where(seen_ctx, p, p_lower)


def _interpolate(
    levels: Sequence[KNLevel], keys: Sequence[np.ndarray], depth: np.ndarray, vocab_size: int
) -> np.ndarray:
    """Probability of each target (M,): ``keys[k-1]`` (M,) is the k-gram ending at it, ``depth`` (M,) how
    many levels apply there (its context length + 1, capped at the order)."""
    p = np.full(depth.shape, 1.0 / vocab_size)  # (M,) p_0 = uniform
    for level, gram_keys in zip(levels, keys):
        applies = depth >= level.k  # (M,)
        if not applies.any():
            break
        p = np.where(applies, _level_probability(level, gram_keys, p, vocab_size), p)
    return p


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class NGramLM:
    """Interpolated modified Kneser-Ney n-gram model over ids ``0..vocab_size-1`` (see module docstring).

    Build with ``NGramLM.fit(train_ids, order, vocab_size)``; ``levels[k-1]`` is level ``k``.
    """

    order: int
    vocab_size: int
    n_train_tokens: int
    levels: tuple[KNLevel, ...]

    @classmethod
    def fit(cls, train_ids: np.ndarray | torch.Tensor | Sequence[int], order: int, vocab_size: int) -> NGramLM:
        """Count ``train_ids`` (N,) and build the ``order``-gram model."""
        vocab_size = _check_vocab_size(vocab_size)
        order = _check_order(order, vocab_size)
        ids = _as_token_array(train_ids, vocab_size, "train_ids")  # (N,)
        return cls._from_tables(_CountTables(ids, vocab_size), order)

    @classmethod
    def _from_tables(cls, tables: _CountTables, order: int) -> NGramLM:
        levels = []
        for k in range(1, order + 1):
            continuation = k < order
            gram_keys, counts = tables.continuation(k) if continuation else tables.raw(k)
            levels.append(_build_level(k, gram_keys, counts, tables.vocab_size, continuation))
        return cls(order, tables.vocab_size, int(tables.ids.size), tuple(levels))

    # ------------------------------------------------------------------ scoring
    def log_probs(self, ids: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
        """log p(ids[i] | ids[max(0, i-order+1):i]) for every i, in nats. (N,) float64"""
        arr = _as_token_array(ids, self.vocab_size, "ids")  # (N,)
        n = arr.size
        keys = [arr]  # keys[k-1][i]: the k-gram ending at i (garbage where i < k-1, masked by depth)
        for k in range(2, self.order + 1):
            shifted = np.zeros(n, dtype=np.int64)  # (N,) ids[i - (k-1)]
            if n > k - 1:
                shifted[k - 1 :] = arr[: n - k + 1]
            keys.append(keys[-1] + shifted * self.vocab_size ** (k - 1))
        depth = np.minimum(np.arange(1, n + 1), self.order)  # (N,)
        return np.log(_interpolate(self.levels, keys, depth, self.vocab_size))

    def next_log_probs(self, context: np.ndarray | torch.Tensor | Sequence[int] = ()) -> np.ndarray:
        """log p(w | last ``order - 1`` tokens of ``context``) for every w in 0..V-1. (V,) float64"""
        if isinstance(context, torch.Tensor):
            context = context.detach().cpu().numpy()
        if len(context) == 0:
            ctx = np.empty(0, dtype=np.int64)  # (0,) unigram level only
        else:
            ctx = _as_token_array(context, self.vocab_size, "context")  # (L,)
        ctx = ctx[max(0, ctx.size - (self.order - 1)) :]  # (<= order-1,)
        w = np.arange(self.vocab_size, dtype=np.int64)  # (V,)
        keys, ctx_key = [], 0
        for k in range(1, ctx.size + 2):
            keys.append(ctx_key * self.vocab_size + w)  # (V,)
            if k <= ctx.size:
                ctx_key += int(ctx[ctx.size - k]) * self.vocab_size ** (k - 1)  # extend to the left
        depth = np.full(self.vocab_size, ctx.size + 1)  # (V,)
        return np.log(_interpolate(self.levels, keys, depth, self.vocab_size))

    def cross_entropy(self, ids: np.ndarray | torch.Tensor | Sequence[int]) -> float:
        """Mean negative log-probability of ``ids`` (N,), nats per token."""
        return float(-self.log_probs(ids).mean())

    def perplexity(self, ids: np.ndarray | torch.Tensor | Sequence[int]) -> float:
        """``exp(cross_entropy(ids))``."""
        return float(np.exp(self.cross_entropy(ids)))


def ngram_baselines(
    train_ids: np.ndarray | torch.Tensor | Sequence[int],
    eval_ids: np.ndarray | torch.Tensor | Sequence[int],
    vocab_size: int,
    orders: Iterable[int] = (1, 2, 3, 4, 5),
) -> pd.DataFrame:
    """Fit one model per order on ``train_ids`` (N,) (count tables shared) and score ``eval_ids`` (M,).

    One row per order: ``order, cross_entropy`` (nats/token), ``perplexity, n_train_tokens, n_eval_tokens``.
    """
    vocab_size = _check_vocab_size(vocab_size)
    orders = [_check_order(o, vocab_size) for o in orders]
    if not orders:
        raise ValueError("orders is empty: give at least one order in 1..%d" % MAX_ORDER)
    train = _as_token_array(train_ids, vocab_size, "train_ids")  # (N,)
    evaluation = _as_token_array(eval_ids, vocab_size, "eval_ids")  # (M,)
    tables = _CountTables(train, vocab_size)
    rows = []
    for order in orders:
        ce = NGramLM._from_tables(tables, order).cross_entropy(evaluation)
        rows.append(
            {
                "order": order,
                "cross_entropy": ce,
                "perplexity": float(np.exp(ce)),
                "n_train_tokens": int(train.size),
                "n_eval_tokens": int(evaluation.size),
            }
        )
    return pd.DataFrame(rows, columns=["order", "cross_entropy", "perplexity", "n_train_tokens", "n_eval_tokens"])
