"""Tests of ropelib.evaluate: window schemes, loss by position, retrieval / algorithmic exact match
(checked with rule-based oracle models), learned tables past their end, and evaluation-time RoPE scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ropelib.encodings  # noqa: F401  (registers every encoding)
import ropelib.encodings.alibi  # noqa: F401
import ropelib.encodings.learned  # noqa: F401
import ropelib.encodings.rope  # noqa: F401
from ropelib.data import IGNORE_INDEX, make_task
from ropelib.evaluate import (
    algorithmic_accuracy,
    exact_match_accuracy,
    exact_match_counts,
    lengths_for,
    lm_loss_at_lengths,
    loss_by_position,
    retrieval_accuracy,
    with_rope_scaling,
)
from ropelib.model import ModelConfig, ToyTransformer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


@pytest.fixture(scope="module")
def chars():
    return make_task("chars")


@pytest.fixture(scope="module")
def tokens(chars):
    return chars.tokens("validation")[:2000]


def toy(vocab, encoding="rope", seed=0, **params):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, n_layers=1, n_heads=2, d_model=32, encoding=encoding, encoding_params=params)
    return ToyTransformer(cfg).eval()


class Uniform(nn.Module):
    """Zero logits: every token costs exactly log(V)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab)


# -- helpers ------------------------------------------------------------------------------------------


def test_lengths_for_default_multipliers():
    assert lengths_for(128) == [128, 192, 256, 512, 1024, 2048]
    with pytest.raises(ValueError, match="train_length"):
        lengths_for(0)


# -- language-model loss ------------------------------------------------------------------------------


def test_sliding_with_stride_equal_to_length_is_nonoverlapping(chars, tokens):
    model = toy(chars.vocab_size)
    a = lm_loss_at_lengths(model, tokens, [16, 40], mode="nonoverlap", max_windows=6)
    b16 = lm_loss_at_lengths(model, tokens, [16], mode="sliding", stride=16, max_windows=6)
    b40 = lm_loss_at_lengths(model, tokens, [40], mode="sliding", stride=40, max_windows=6)
    assert a.loss[0] == b16.loss[0] and a.n_tokens[0] == b16.n_tokens[0]
    assert a.loss[1] == b40.loss[0] and a.n_tokens[1] == b40.n_tokens[0] == 6 * 40
    assert a.ppl[0] == pytest.approx(math.exp(a.loss[0]))
    assert list(a.status) == ["ok", "ok"]


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(5, 200),
    length=st.integers(1, 40),
    stride_frac=st.floats(0.01, 1.0),
    max_windows=st.one_of(st.none(), st.integers(1, 20)),
)
def test_every_target_scored_once(n, length, stride_frac, max_windows):
    """Token counts follow the documented scheme; with uniform logits the loss is exactly log V."""
    stride = max(1, int(stride_frac * length))
    tokens = torch.arange(n) % 7
    df = lm_loss_at_lengths(Uniform(7), tokens, [length], mode="sliding", stride=stride, max_windows=max_windows)
    windows = max(0, (n - length - 1) // stride + 1)
    if max_windows is not None:
        windows = min(windows, max_windows)
    row = df.iloc[0]
    assert row.n_windows == windows
    if windows == 0:
        assert row.status == "too_short" and math.isnan(row.loss)
    else:
        assert row.n_tokens == length + (windows - 1) * stride
        assert row.loss == pytest.approx(math.log(7))
        assert row.min_context == length - stride + 1


def test_sliding_matches_a_per_target_reference(chars, tokens):
    """Recompute each target's loss from its definition: target j is scored in the first window that
    ends at or after it (window starts on the stride grid), at position j - start - 1."""
    model = toy(chars.vocab_size, seed=1)
    stream = tokens[:90]
    L, S = 12, 5
    df = lm_loss_at_lengths(model, stream, [L], mode="sliding", stride=S)
    last_start = (len(stream) - L - 1) // S * S
    nll = []
    with torch.no_grad():
        for j in range(1, last_start + L + 1):
            start = 0 if j <= L else math.ceil((j - L) / S) * S
            logits = model(stream[start : start + L][None])[0]  # (L, V)
            nll.append(float(F.cross_entropy(logits[j - start - 1][None], stream[j][None])))
    assert df.n_tokens[0] == len(nll)
    assert df.loss[0] == pytest.approx(np.mean(nll), rel=1e-5)


def test_loss_by_position_averages_to_the_nonoverlapping_loss(chars, tokens):
    model = toy(chars.vocab_size, encoding="alibi")
    curve = loss_by_position(model, tokens, 24, max_windows=5)
    assert curve.shape == (24,) and np.isfinite(curve).all()
    loss = lm_loss_at_lengths(model, tokens, [24], max_windows=5).loss[0]
    assert curve.mean() == pytest.approx(loss, rel=1e-6)


def test_learned_positions_past_the_table_give_nan_with_reason(chars, tokens):
    model = toy(chars.vocab_size, encoding="learned", max_positions=32)
    df = lm_loss_at_lengths(model, tokens, [16, 32, 33, 64], max_windows=3)
    assert list(df.status) == ["ok", "ok", "unsupported", "unsupported"]
    assert np.isfinite(df.loss[:2]).all() and df.loss[2:].isna().all() and df.ppl[2:].isna().all()
    assert "learned" in df.reason[3] and "0..31" in df.reason[3] and "63" in df.reason[3]
    with pytest.raises(ValueError, match="length 64"):
        lm_loss_at_lengths(model, tokens, [16, 64], strict=True)
    with pytest.raises(ValueError, match="learned"):
        loss_by_position(model, tokens, 40)
    passkey = make_task("passkey")
    pmodel = toy(passkey.vocab_size, encoding="learned", max_positions=32)
    acc = retrieval_accuracy(pmodel, passkey, [24, 48], depths=[0.5], n_samples=4)
    assert list(acc.status) == ["ok", "unsupported"] and acc.accuracy.isna().tolist() == [False, True]


def test_too_short_stream(chars):
    df = lm_loss_at_lengths(toy(chars.vocab_size), torch.arange(10), [8, 9, 20])
    assert list(df.status) == ["ok", "ok", "too_short"] and math.isnan(df.loss[2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lengths=[16], mode="overlap"), "nonoverlap, sliding"),
        (dict(lengths=[0]), "evaluation length"),
        (dict(lengths=[]), "at least one"),
        (dict(lengths=[8, 16], mode="sliding", stride=12), "stride=12"),
        (dict(lengths=[16], stride=4), "'sliding' only"),
        (dict(lengths=[16], max_windows=0), "max_windows"),
    ],
)
def test_bad_lm_arguments(chars, tokens, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lm_loss_at_lengths(toy(chars.vocab_size), tokens, **kwargs)


def test_tokens_must_be_integer(chars):
    with pytest.raises(ValueError, match="torch.long"):
        lm_loss_at_lengths(toy(chars.vocab_size), torch.rand(100), [8])


# -- retrieval and algorithmic accuracy (rule-based oracles) ----------------------------------------


class TaskOracle(nn.Module):
    """Base of the hand-written test models below: holds the task and one dummy parameter (for the device)."""

    def __init__(self, task):
        super().__init__()
        self.task = task
        self.dummy = nn.Parameter(torch.zeros(1))


class PasskeyOracle(nn.Module):
    """Copies the digits after the first KEY once the query (the last KEY) is seen; ``wrong_last`` gets the last digit wrong."""

    def __init__(self, task, wrong_last=False):
        super().__init__()
        self.task, self.wrong_last = task, wrong_last
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        B, T = x.shape
        k = self.task.n_digits
        logits = torch.zeros(B, T, self.task.vocab_size)
        for b in range(B):
            marks = (x[b] == self.task.KEY).nonzero().flatten()  # the needle's KEY, then the query KEY
            key, query = int(marks[0]), int(marks[-1])
            for i in range(k):
                digit = int(x[b, key + 1 + i])
                if self.wrong_last and i == k - 1:
                    digit = (digit + 1) % 10
                if query + i < T:
                    logits[b, query + i, digit] = 1.0
        return logits


class CopyOracle(TaskOracle):
    """After SEP, predicts the symbols that followed BOS, then EOS."""

    def forward(self, x):
        B, T = x.shape
        logits = torch.zeros(B, T, self.task.vocab_size)
        for b in range(B):
            sep = int((x[b] == self.task.SEP).nonzero()[0])
            n = sep - 1
            for i in range(n + 1):
                if sep + i < T:
                    logits[b, sep + i, int(x[b, 1 + i]) if i < n else self.task.EOS] = 1.0
        return logits


def test_retrieval_accuracy_is_exact_match():
    task = make_task("passkey", n_digits=4)
    good = retrieval_accuracy(PasskeyOracle(task), task, [16, 40], depths=[0.0, 0.5, 1.0], n_samples=8, seed=3)
    assert len(good) == 6 and (good.accuracy == 1.0).all() and (good.token_accuracy == 1.0).all()
    assert sorted(set(good.depth)) == [0.0, 0.5, 1.0] and (good.n_samples == 8).all()
    bad = retrieval_accuracy(PasskeyOracle(task, wrong_last=True), task, [16], depths=[0.3], n_samples=8)
    assert bad.accuracy[0] == 0.0 and bad.token_accuracy[0] == pytest.approx(3 / 4)


def test_retrieval_by_distance_and_cells_that_do_not_fit():
    task = make_task("kv_recall")
    model = toy(task.vocab_size)
    df = retrieval_accuracy(model, task, [16, 32], distances=[0, 20], n_samples=4, batch_size=3)
    assert len(df) == 4
    fits = df[df.status == "ok"]
    assert ((fits.accuracy >= 0) & (fits.accuracy <= 1)).all()
    missing = df[(df.length == 16) & (df.distance == 20)].iloc[0]
    assert missing.status == "does_not_fit" and math.isnan(missing.accuracy) and "at most 12" in missing.reason
    with pytest.raises(ValueError, match="'depth'"):
        retrieval_accuracy(model, task, [16], depths=[0.5])
    with pytest.raises(ValueError, match="exactly one"):
        retrieval_accuracy(model, task, [16])
    with pytest.raises(ValueError, match="n_samples"):
        retrieval_accuracy(model, task, [16], distances=[1], n_samples=0)


def test_algorithmic_accuracy_by_length():
    task = make_task("copy")
    df = algorithmic_accuracy(CopyOracle(task), task, [10, 21, 40], n_samples=6)
    assert df.n.tolist() == [4, 9, 19]  # the longest instance that fits: (T - 2) // 2
    assert (df.accuracy == 1.0).all()
    reverse = make_task("reverse", n_symbols=50)
    # the copy rule on the reverse task: right only on palindromes, so (almost surely) never here
    assert algorithmic_accuracy(CopyOracle(reverse), reverse, [30], n_samples=6).accuracy[0] == 0.0
    with pytest.raises(ValueError, match="copy or reverse"):
        algorithmic_accuracy(CopyOracle(task), make_task("passkey"), [10])


# -- RoPE scaling at evaluation time ------------------------------------------------------------------


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def test_linear_factor_one_equals_the_original(chars, tokens):
    model = toy(chars.vocab_size, seed=2)
    x = tokens[:48][None]
    same = with_rope_scaling(model, rope_type="linear", factor=1.0)
    assert torch.equal(_logits(same, x), _logits(model, x))
    scaled = with_rope_scaling(model, rope_type="linear", factor=2.0)
    assert not torch.allclose(_logits(scaled, x), _logits(model, x), atol=1e-4)
    assert scaled.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert model.encoding.rope.config.rope_type == "default"  # the original is untouched


def test_dynamic_ntk_equals_the_original_up_to_the_original_length(chars, tokens):
    model = toy(chars.vocab_size, seed=3)
    dyn = with_rope_scaling(model, rope_type="dynamic", factor=4.0, max_position_embeddings=32)
    short, long = tokens[:32][None], tokens[:80][None]
    assert torch.equal(_logits(dyn, short), _logits(model, short))
    assert not torch.allclose(_logits(dyn, long), _logits(model, long), atol=1e-4)


@pytest.mark.parametrize(
    "keys",
    [
        dict(rope_type="ntk", factor=4.0),
        dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32),
        dict(
            rope_type="llama3",
            factor=4.0,
            original_max_position_embeddings=32,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
        ),
        dict(type="linear", factor=4.0),
    ],
)
def test_every_scaling_type_evaluates(chars, tokens, keys):
    model = toy(chars.vocab_size, seed=4)
    scaled = with_rope_scaling(model, **keys)
    df = lm_loss_at_lengths(scaled, tokens, [32, 128], max_windows=2)
    assert (df.status == "ok").all() and np.isfinite(df.loss).all()
    x = tokens[:128][None]
    assert not torch.allclose(_logits(scaled, x), _logits(model, x), atol=1e-4)


def test_rope_scaling_errors(chars):
    with pytest.raises(ValueError, match="'alibi'"):
        with_rope_scaling(toy(chars.vocab_size, encoding="alibi"), rope_type="linear", factor=2.0)
    model = toy(chars.vocab_size)
    with pytest.raises(ValueError, match="'scale'"):
        with_rope_scaling(model, rope_type="linear", scale=2.0)
    with pytest.raises(ValueError, match="at least one"):
        with_rope_scaling(model)
    with pytest.raises(ValueError):
        with_rope_scaling(model, rope_type="not-a-type", factor=2.0)


# -- exact-match counts, position-blind floors, default stride, whole-stream and max_tokens scoring ----


class KVOracle(TaskOracle):
    """kv_recall solved by order: after the last token (the query key), the token that followed that key."""

    def forward(self, x):
        B, T = x.shape
        logits = torch.zeros(B, T, self.task.vocab_size)
        for b in range(B):
            first = int((x[b] == x[b, -1]).nonzero()[0])  # the queried key's pair
            logits[b, -1, int(x[b, first + 1])] = 1.0
        return logits


class KVBagModel(TaskOracle):
    """Sees only the bag of the inputs so far: logits = each value's count (a most frequent value wins)."""

    def forward(self, x):
        counts = F.one_hot(x, self.task.vocab_size).cumsum(dim=1).float()  # (B, T, V) prefix bags
        logits = torch.zeros_like(counts)
        values = slice(self.task.n_keys, self.task.n_keys + self.task.n_values)
        logits[..., values] = counts[..., values]
        return logits


def wilson(k: int, n: int, z: float = 3.29) -> tuple[float, float]:
    """Wilson score interval of k successes in n (z = 3.29: 99.9%)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_retrieval_by_distance_reports_counts_for_a_wilson_interval():
    import pandas as pd

    task = make_task("kv_recall", n_pairs=4, distinct_values=True)
    good = retrieval_accuracy(KVOracle(task), task, [16, 24], distances=[0, 5, 13], n_samples=20, batch_size=7)
    assert {"length", "distance", "accuracy", "token_accuracy", "n_samples", "n_correct", "status", "reason"} <= set(
        good.columns
    )
    assert str(good.n_correct.dtype) == "Int64"
    ok = good[good.status == "ok"]
    assert len(ok) == 5 and (ok.accuracy == 1.0).all() and (ok.n_correct == ok.n_samples).all()
    missing = good[(good.length == 16) & (good.distance == 13)].iloc[0]
    assert missing.status == "does_not_fit" and pd.isna(missing.n_correct) and math.isnan(missing.accuracy)
    # the bag-of-tokens model: at the floor 1 / n_pairs at every distance, within its Wilson interval
    bag = retrieval_accuracy(KVBagModel(task), task, [24], distances=[0, 6, 14], n_samples=400, batch_size=200)
    floor = task.position_blind_floor()
    assert floor == 0.25
    for row in bag.itertuples():
        assert row.n_correct == round(row.accuracy * row.n_samples) and isinstance(int(row.n_correct), int)
        low, high = wilson(int(row.n_correct), int(row.n_samples))
        assert low <= floor <= high, (row.distance, row.accuracy)
    alg = algorithmic_accuracy(CopyOracle(make_task("copy")), make_task("copy"), [10, 21], n_samples=6)
    assert (alg.n_correct == 6).all()


def test_sliding_default_stride_is_a_quarter_of_the_length():
    tokens = torch.arange(300) % 7
    df = lm_loss_at_lengths(Uniform(7), tokens, [16, 40, 3, 1], mode="sliding")
    assert df.stride.tolist() == [4, 10, 1, 1]  # max(1, L // 4)
    assert (df.min_context == df.length - df.stride + 1).all()
    assert (df.stride <= np.maximum(1, df.length / 4)).all()


class Unigram(nn.Module):
    """Random logits that depend on the current token only: each target's loss is context-free, so the
    mean loss identifies which targets were scored."""

    def __init__(self, vocab: int, seed: int = 0) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return self.table[x]  # (B, T, V)

    def nll(self, tokens):  # (N-1,) loss of target t[j] from input t[j-1]
        return F.cross_entropy(self.table[tokens[:-1]], tokens[1:], reduction="none")


@pytest.mark.parametrize(
    "mode, L, S", [("nonoverlap", 16, None), ("sliding", 16, None), ("sliding", 12, 5), ("sliding", 20, 1)]
)
def test_max_windows_none_scores_the_whole_stream(mode, L, S):
    tokens = torch.randint(0, 9, (333,), generator=torch.Generator().manual_seed(0))
    model = Unigram(9)
    row = lm_loss_at_lengths(model, tokens, [L], mode=mode, stride=S, max_windows=None).iloc[0]
    stride = L if mode == "nonoverlap" else (S or max(1, L // 4))
    last_start = (len(tokens) - L - 1) // stride * stride
    scored = last_start + L  # targets t[1] … t[scored]: all but a tail shorter than one stride
    assert row.n_tokens == scored and len(tokens) - 1 - scored < stride
    assert row.n_windows == last_start // stride + 1
    with torch.no_grad():
        expected = float(model.nll(tokens)[:scored].double().mean())
    assert row.loss == pytest.approx(expected, rel=1e-6)


def test_max_tokens_keeps_the_first_windows_that_score_that_many(chars, tokens):
    model = toy(chars.vocab_size, seed=5)
    L = 32
    S = L // 4
    for max_tokens in (1, L, L + 1, 100, 10**9):
        row = lm_loss_at_lengths(model, tokens, [L], mode="sliding", max_tokens=max_tokens).iloc[0]
        full = lm_loss_at_lengths(model, tokens, [L], mode="sliding").iloc[0]
        windows = min(full.n_windows, 1 + max(0, math.ceil((max_tokens - L) / S)))
        assert row.n_windows == windows and row.n_tokens == L + (windows - 1) * S
        assert row.n_tokens >= min(max_tokens, full.n_tokens)
        assert row.n_tokens - S < max_tokens or windows == 1  # one window fewer would score too few
        same = lm_loss_at_lengths(model, tokens, [L], mode="sliding", max_windows=int(windows)).iloc[0]
        assert row.loss == same.loss
    both = lm_loss_at_lengths(model, tokens, [L], mode="sliding", max_tokens=100, max_windows=3).iloc[0]
    assert both.n_windows == 3  # the tighter limit wins
    nonoverlap = lm_loss_at_lengths(model, tokens, [L], max_tokens=70).iloc[0]
    assert nonoverlap.n_windows == 3 and nonoverlap.n_tokens == 96
    with pytest.raises(ValueError, match="max_tokens"):
        lm_loss_at_lengths(model, tokens, [L], mode="sliding", max_tokens=0)


def test_loss_by_position_beyond_the_training_length(chars, tokens):
    """RoPE has no position table: a model trained at L runs at 4L, and the curve covers every position."""
    model = toy(chars.vocab_size, encoding="rope", seed=6)
    train_length = 16
    curve = loss_by_position(model, tokens, 4 * train_length, max_windows=4)
    assert curve.shape == (4 * train_length,) and np.isfinite(curve).all()
    loss = lm_loss_at_lengths(model, tokens, [4 * train_length], max_windows=4).loss[0]
    assert curve.mean() == pytest.approx(loss, rel=1e-6)


# -- exact match on the training distribution ------------------------------------------------------


class _Oracle(torch.nn.Module):
    """Predicts the targets of the batch the task draws with ``seed`` (optionally wrong on row 0)."""

    def __init__(self, task, length, n, seed, wrong_row=None):
        super().__init__()
        batch = task.sample(n, length, torch.Generator().manual_seed(seed))
        y = batch.y.clone()
        if wrong_row is not None:
            scored = (y[wrong_row] != IGNORE_INDEX).nonzero()[0, 0]
            y[wrong_row, scored] = (y[wrong_row, scored] + 1) % task.vocab_size
        self.logits = torch.nn.functional.one_hot(y.clamp(min=0), task.vocab_size).float()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits


def test_exact_match_accuracy_counts_whole_answers():
    task = make_task("passkey", n_digits=2)
    assert exact_match_accuracy(_Oracle(task, 16, 8, 7), task, 16, 8, seed=7) == 1.0
    assert exact_match_accuracy(_Oracle(task, 16, 8, 7, wrong_row=0), task, 16, 8, seed=7) == 7 / 8
    assert exact_match_accuracy(_Oracle(task, 16, 8, 7), task, 16, 8, seed=8) < 1.0  # other samples
    with pytest.raises(ValueError, match="n_samples"):
        exact_match_accuracy(_Oracle(task, 16, 8, 7), task, 16, 0, seed=7)


class _NextToken(torch.nn.Module):
    """Predicts ``(x + 1) % vocab`` at every position (whatever the batch size)."""

    def __init__(self, vocab: int = 7):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.nn.functional.one_hot((x + 1) % self.vocab, self.vocab).float()


def test_exact_match_counts_rows_tokens_and_ignores_unscored():
    from types import SimpleNamespace

    x = torch.arange(5 * 4).reshape(5, 4) % 7  # (B=5, T=4)
    y = (x + 1) % 7  # every prediction right ...
    y[:, 0] = IGNORE_INDEX  # ... the first position of every row not scored
    y[1, 2] = (y[1, 2] + 1) % 7  # row 1: one scored token wrong
    y[3, 0] = (x[3, 0] + 3) % 7  # row 3: a wrong target at a position that is now scored
    batch = SimpleNamespace(x=x, y=y)
    n_tokens = 5 * 3 + 1
    assert exact_match_counts(_NextToken(), batch) == (3, n_tokens - 2, n_tokens)
    for size in (1, 2, 5, 64):  # chunking does not change the counts
        assert exact_match_counts(_NextToken(), batch, batch_size=size) == (3, n_tokens - 2, n_tokens)
    with pytest.raises(ValueError, match="batch_size"):
        exact_match_counts(_NextToken(), batch, batch_size=0)
