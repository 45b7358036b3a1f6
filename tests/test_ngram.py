"""ropelib.ngram: interpolated modified Kneser-Ney, checked against a plain-dict reference."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from ropelib.ngram import FALLBACK_DISCOUNTS, NGramLM, estimate_discounts, ngram_baselines


# ---------------------------------------------------------------------------------------------
# corpora
# ---------------------------------------------------------------------------------------------
def markov_corpus(n: int, vocab_size: int, seed: int, concentration: float = 0.3) -> np.ndarray:
    """First-order Markov chain with Dirichlet rows: skewed counts, so discounts get estimated. (n,)"""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)  # (V, V)
    out = np.empty(n, dtype=np.int64)
    out[0] = rng.integers(vocab_size)
    for i in range(1, n):
        out[i] = rng.choice(vocab_size, p=trans[out[i - 1]])
    return out


def pydoc_text_ids(n_chars: int = 120_000) -> tuple[np.ndarray, int]:
    """Characters of CPython's help text mapped to ids (non-ASCII characters share one id). (n_chars,), V"""
    import pydoc_data.topics as topics

    text = "".join(topics.topics[k] for k in sorted(topics.topics))[:n_chars]
    alphabet = sorted({c for c in text if ord(c) < 128})
    index = {c: i for i, c in enumerate(alphabet)}
    other = len(alphabet)
    return np.array([index.get(c, other) for c in text], dtype=np.int64), other + 1


# ---------------------------------------------------------------------------------------------
# independent brute-force reference (plain Python dicts and tuples)
# ---------------------------------------------------------------------------------------------
class ReferenceKN:
    """Interpolated modified Kneser-Ney exactly as Chen & Goodman 1998 eq. (26) reads, by brute force."""

    def __init__(self, train: list[int], order: int, vocab_size: int):
        self.order, self.V = order, vocab_size
        self.counts: dict[int, dict[tuple, int]] = {}
        self.discounts: dict[int, tuple[float, float, float]] = {}
        for k in range(1, order + 1):
            if k == order:  # raw counts at the top level
                table = Counter(tuple(train[i : i + k]) for i in range(len(train) - k + 1))
            else:  # continuation counts: distinct left neighbours
                longer = {tuple(train[i : i + k + 1]) for i in range(len(train) - k)}
                table = Counter(g[1:] for g in longer)
            self.counts[k] = dict(table)
            self.discounts[k] = self._discounts(list(table.values()))

    @staticmethod
    def _discounts(values: list[int]) -> tuple[float, float, float]:
        n = {r: sum(1 for v in values if v == r) for r in (1, 2, 3, 4)}
        if n[1] == 0 or n[2] == 0 or n[3] == 0:
            return FALLBACK_DISCOUNTS
        y = n[1] / (n[1] + 2 * n[2])
        d = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
        if not (0 < d[0] <= 1 and 0 < d[1] <= 2 and 0 < d[2] <= 3):
            return FALLBACK_DISCOUNTS
        return d

    def prob(self, w: int, context: tuple, k: int) -> float:
        """p_k(w | last k-1 tokens of context)."""
        if k == 0:
            return 1.0 / self.V
        h = context[len(context) - (k - 1) :] if k > 1 else ()
        table = self.counts[k]
        cs = [table.get(h + (v,), 0) for v in range(self.V)]
        total = sum(cs)
        lower = self.prob(w, context, k - 1)
        if total == 0:
            return lower
        d1, d2, d3 = self.discounts[k]
        disc = lambda c: 0.0 if c == 0 else d1 if c == 1 else d2 if c == 2 else d3  # noqa: E731
        gamma = (d1 * cs.count(1) + d2 * cs.count(2) + d3 * sum(1 for c in cs if c >= 3)) / total
        c = table.get(h + (w,), 0)
        return max(c - disc(c), 0.0) / total + gamma * lower

    def log_probs(self, seq: list[int]) -> list[float]:
        out = []
        for i, w in enumerate(seq):
            m = min(self.order, i + 1)
            out.append(math.log(self.prob(w, tuple(seq[i - m + 1 : i]), m)))
        return out


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vocab_size", [5, 7, 10])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 6])
def test_probabilities_normalise(order, vocab_size):
    train = markov_corpus(400, vocab_size, seed=vocab_size)
    model = NGramLM.fit(train, order, vocab_size)
    rng = np.random.default_rng(order)
    contexts = [[]] + [list(rng.integers(0, vocab_size, size=L)) for L in (1, 2, 3, 4, 6, 9)]
    contexts += [list(train[17 : 17 + order - 1])]  # a context seen in training
    for ctx in contexts:
        via_next = np.exp(model.next_log_probs(ctx))  # (V,)
        via_seq = np.exp([model.log_probs(np.array(ctx + [w], dtype=np.int64))[-1] for w in range(vocab_size)])
        assert via_next.shape == (vocab_size,)
        assert abs(via_next.sum() - 1.0) < 1e-9, (ctx, via_next.sum())
        assert abs(via_seq.sum() - 1.0) < 1e-9, (ctx, via_seq.sum())
        np.testing.assert_allclose(via_next, via_seq, rtol=1e-12, atol=0)
        assert (via_next > 0).all()


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_parity_with_bruteforce_reference(order):
    vocab_size = 4
    corpus = markov_corpus(500, vocab_size, seed=3)
    train, evaluation = corpus[:300], corpus[300:]
    evaluation = np.concatenate([evaluation, np.random.default_rng(1).integers(0, vocab_size, 50)])  # unseen n-grams
    model = NGramLM.fit(train, order, vocab_size)
    ref = ReferenceKN(train.tolist(), order, vocab_size)
    for k, level in enumerate(model.levels, start=1):
        assert level.continuation == (k < order)
        np.testing.assert_allclose(level.discounts, ref.discounts[k], rtol=0, atol=1e-12)
    for seq in (evaluation, train[:80]):
        got = model.log_probs(seq)  # (N,)
        want = np.array(ref.log_probs(seq.tolist()))
        assert got.shape == seq.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert model.cross_entropy(evaluation) == pytest.approx(-np.mean(ref.log_probs(evaluation.tolist())), abs=1e-9)


def test_parity_covers_estimated_and_fallback_discounts():
    """The parity corpus exercises both discount paths (else the reference comparison is weaker)."""
    train = markov_corpus(500, 4, seed=3)[:300]
    flags = {lvl.discounts_estimated for o in (1, 2, 3, 4) for lvl in NGramLM.fit(train, o, 4).levels}
    assert flags == {True, False}


def test_estimate_discounts_formula():
    counts = np.array([1] * 10 + [2] * 4 + [3] * 3 + [4] * 2 + [9])
    (d1, d2, d3), estimated = estimate_discounts(counts)
    y = 10 / (10 + 2 * 4)
    assert estimated
    assert (d1, d2, d3) == pytest.approx((1 - 2 * y * 4 / 10, 2 - 3 * y * 3 / 4, 3 - 4 * y * 2 / 3))
    assert estimate_discounts(np.array([5, 7, 9])) == (FALLBACK_DISCOUNTS, False)


def test_higher_order_helps_on_text():
    ids, vocab_size = pydoc_text_ids()
    split = int(0.9 * ids.size)
    df = ngram_baselines(ids[:split], ids[split:], vocab_size, orders=(1, 2, 3, 5))
    ppl = dict(zip(df["order"], df["perplexity"]))
    assert ppl[3] < ppl[2] < ppl[1] < vocab_size
    assert (df["perplexity"] < vocab_size).all()
    assert ppl[3] < 0.5 * ppl[1]


def test_ngram_baselines_frame_matches_models():
    train, evaluation = markov_corpus(2000, 8, seed=5), markov_corpus(300, 8, seed=6)
    df = ngram_baselines(train, evaluation, 8)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["order", "cross_entropy", "perplexity", "n_train_tokens", "n_eval_tokens"]
    assert df["order"].tolist() == [1, 2, 3, 4, 5]
    assert (df["n_train_tokens"] == 2000).all() and (df["n_eval_tokens"] == 300).all()
    for row in df.itertuples():
        model = NGramLM.fit(train, row.order, 8)
        assert row.cross_entropy == pytest.approx(model.cross_entropy(evaluation), abs=1e-12)
        assert row.perplexity == pytest.approx(model.perplexity(evaluation), rel=1e-12)
        assert row.perplexity == pytest.approx(math.exp(row.cross_entropy), rel=1e-12)


def test_torch_input_matches_numpy():
    train, evaluation = markov_corpus(600, 6, seed=2), markov_corpus(100, 6, seed=9)
    a = NGramLM.fit(train, 3, 6).log_probs(evaluation)
    b = NGramLM.fit(torch.from_numpy(train).to(torch.int32), 3, 6).log_probs(torch.from_numpy(evaluation))
    np.testing.assert_array_equal(a, b)


def test_unseen_tokens_and_contexts_back_off():
    vocab_size = 6
    train = np.tile([0, 1, 2], 50)  # ids 3, 4, 5 never seen, only three contexts ever seen
    evaluation = np.array([5, 4, 3, 3, 5, 0, 2, 1, 0, 4, 4, 4])
    for order in (1, 2, 3, 4, 5):
        model = NGramLM.fit(train, order, vocab_size)
        lp = model.log_probs(evaluation)
        assert np.isfinite(lp).all() and (lp < 0).all()
        assert np.isfinite(model.next_log_probs([5, 4, 3, 5])).all()
    tiny = NGramLM.fit(np.array([2]), 5, vocab_size)  # shorter than the order: lower levels are empty
    assert np.exp(tiny.next_log_probs([1, 2, 3])).sum() == pytest.approx(1.0, abs=1e-12)
    assert np.isfinite(tiny.log_probs(evaluation)).all()


def test_first_tokens_use_shorter_contexts():
    train = markov_corpus(800, 5, seed=4)
    model = NGramLM.fit(train, 4, 5)
    seq = markov_corpus(20, 5, seed=8)
    lp = model.log_probs(seq)
    for i in range(6):
        assert lp[i] == pytest.approx(model.next_log_probs(seq[max(0, i - 3) : i])[seq[i]], abs=1e-12)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (np.array([0, 1, 7]), "7"),
        (np.array([0, -1, 2]), "-1"),
    ],
)
def test_out_of_range_ids_raise(bad, fragment):
    model = NGramLM.fit(np.array([0, 1, 2, 3, 4, 5, 0, 1]), 2, 6)
    for call in (model.log_probs, model.cross_entropy, model.perplexity, model.next_log_probs):
        with pytest.raises(ValueError, match=fragment) as info:
            call(bad)
        assert "0..5" in str(info.value)
    with pytest.raises(ValueError, match=fragment):
        NGramLM.fit(bad, 2, 6)
    with pytest.raises(ValueError, match=fragment):
        ngram_baselines(np.array([0, 1]), bad, 6)


@pytest.mark.parametrize("order", [0, 7, -1, 2.5, True, "3"])
def test_bad_order_raises(order):
    with pytest.raises(ValueError, match="order") as info:
        NGramLM.fit(np.array([0, 1, 2]), order, 3)
    assert repr(order) in str(info.value)
    with pytest.raises(ValueError, match="order"):
        ngram_baselines(np.array([0, 1, 2]), np.array([0]), 3, orders=(1, order))


def test_empty_and_malformed_arrays_raise():
    model = NGramLM.fit(np.array([0, 1, 2]), 2, 3)
    with pytest.raises(ValueError, match="empty"):
        NGramLM.fit(np.array([], dtype=np.int64), 2, 3)
    with pytest.raises(ValueError, match="empty"):
        model.log_probs(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="empty"):
        ngram_baselines(np.array([0, 1]), [], 3)
    with pytest.raises(ValueError, match="float"):
        model.log_probs(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        model.log_probs(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="vocab_size"):
        NGramLM.fit(np.array([0]), 2, 0)


def test_key_overflow_raises():
    with pytest.raises(ValueError, match="2\\*\\*63") as info:
        NGramLM.fit(np.array([0, 1, 2]), 4, 2**16)  # 2**64 keys
    assert "65536" in str(info.value)
    NGramLM.fit(np.array([0, 255, 3]), 6, 256)  # 2**48: fine
