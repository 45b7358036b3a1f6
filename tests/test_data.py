"""Tests of ropelib.data: the task registry, each task's layout and targets, seeding, bad input."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib.data import IGNORE_INDEX, TASKS, Batch, TaskConfig, make_task, task_params

ALL_TASKS = sorted(TASKS)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_has_the_contract_tasks():
    assert {"chars", "passkey", "kv_recall", "copy", "reverse"} <= set(TASKS)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_batch_shapes_ranges_and_next_token_targets(name):
    task = make_task(name)
    batch = task.sample(5, 40, gen(0))
    assert isinstance(batch, Batch)
    assert batch.x.shape == (5, 40) and batch.y.shape == (5, 40)
    assert batch.x.dtype == torch.long and batch.y.dtype == torch.long
    assert batch.x.min() >= 0 and batch.x.max() < task.vocab_size
    scored = batch.y != IGNORE_INDEX
    assert scored.any(dim=1).all()  # every row has something to learn
    assert (batch.y[scored] >= 0).all() and (batch.y[scored] < task.vocab_size).all()
    # y is the next token: wherever a target is scored and the next input exists, they agree
    inner = scored[:, :-1]
    assert torch.equal(batch.y[:, :-1][inner], batch.x[:, 1:][inner])
    info = task.info()
    assert info["task"] == name and info["vocab_size"] == task.vocab_size


@pytest.mark.parametrize("name", ALL_TASKS)
def test_seeded_determinism(name):
    task = make_task(name)
    a, b, c = task.sample(4, 32, gen(7)), task.sample(4, 32, gen(7)), task.sample(4, 32, gen(8))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    d = task.sample(4, 32, 7)  # an int seed works too, same as a generator with that seed
    assert torch.equal(a.x, d.x)
    g = gen(3)
    first, second = task.sample(4, 32, g), task.sample(4, 32, g)  # the generator advances
    assert not torch.equal(first.x, second.x)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_bad_sample_input_raises(name):
    task = make_task(name)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0, 32, gen(0))
    with pytest.raises(ValueError, match="length"):
        task.sample(2, 0, gen(0))
    with pytest.raises(ValueError, match="'bogus'.*accepted"):
        task.sample(2, 32, gen(0), bogus=1)
    if task.min_length() > 1:
        with pytest.raises(ValueError, match=f"length={task.min_length() - 1}"):
            task.sample(2, task.min_length() - 1, gen(0))
        task.sample(2, task.min_length(), gen(0))  # the minimum itself works


def test_registry_errors_and_task_config():
    with pytest.raises(ValueError, match="'nope'.*chars"):
        make_task("nope")
    with pytest.raises(ValueError, match="'n_digit'.*accepted: digit_filler, n_digits, n_filler"):
        make_task("passkey", n_digit=3)
    with pytest.raises(ValueError, match="'colour'"):
        TaskConfig("copy", {"colour": 1})
    cfg = TaskConfig("passkey", {"n_digits": 3})
    assert TaskConfig.from_dict(cfg.to_dict()) == cfg
    assert len({cfg, TaskConfig.from_dict(cfg.to_dict()), TaskConfig("passkey")}) == 2  # hashable
    assert make_task(cfg).n_digits == 3
    assert make_task(cfg, n_digits=5).n_digits == 5  # keywords override
    assert make_task(cfg).params() == {"n_digits": 3, "n_filler": 4, "digit_filler": False}
    assert task_params("copy") == {"n_symbols": 10}
    with pytest.raises(ValueError, match="unknown TaskConfig"):
        TaskConfig.from_dict({"name": "copy", "extra": 1})


# -- chars -----------------------------------------------------------------------------------------
def test_chars_corpus_info_split_and_codec():
    task = make_task("chars")
    info = task.info()
    assert re.fullmatch(r"[0-9a-f]{64}", info["sha256"])
    assert info["sha256"] == hashlib.sha256(task.text.encode("utf-8")).hexdigest()
    assert "pydoc_data" in info["source"] and info["python_version"].count(".") == 2
    train, val = task.tokens("train"), task.tokens("validation")
    assert len(train) + len(val) == info["n_chars"] > 100_000
    assert abs(len(train) / info["n_chars"] - 0.9) < 1e-3
    assert task.decode(torch.cat([train, val])) == task.text  # split by position, nothing lost
    assert (
        task.vocab[0] == "\ufffd"
        and task.vocab[1:] == sorted(task.vocab[1:])
        and len(set(task.vocab)) == task.vocab_size
    )
    assert task.vocab[task.BOS] == "\x02" and task.BOS not in set(task.tokens("train").tolist())  # never in the text
    assert task.decode([task.BOS, *task.encode("ab").tolist()]) == "ab"  # the start token decodes to nothing
    assert task.encode("def \u2603")[-1].item() == 0  # unknown character -> id 0
    batch = task.sample(3, 50, gen(0), split="validation")
    for row, start in zip(batch.x, batch.meta["start"].tolist()):
        assert torch.equal(row, val[start : start + 50])
    assert (batch.y != IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="'test'.*train, validation"):
        task.tokens("test")
    with pytest.raises(ValueError, match="length=46513"):
        task.sample(1, len(val), gen(0), split="validation")
    with pytest.raises(ValueError, match="train_fraction"):
        make_task("chars", train_fraction=1.0)


# -- passkey ---------------------------------------------------------------------------------------
def test_passkey_layout_depth_and_distance():
    task = make_task("passkey", n_digits=4)
    T = 30
    for depth, first_key_pos, distance in ((0.0, 0, T - 4 - 5), (1.0, T - 4 - 5, 0)):
        batch = task.sample(6, T, gen(1), depth=depth)
        assert (batch.x[:, first_key_pos] == task.KEY).all()
        assert (batch.meta["distance"] == distance).all()
    batch = task.sample(16, T, gen(2))
    for x, y, dist in zip(batch.x, batch.y, batch.meta["distance"].tolist()):
        key_pos, query_pos = (x == task.KEY).nonzero().flatten().tolist()  # needle marker, then the query
        needle = x[key_pos + 1 : key_pos + 5]
        assert query_pos - (key_pos + 5) == dist
        assert torch.equal(y[y != IGNORE_INDEX], needle)  # the targets are the hidden digits
        assert len(set(needle.tolist())) == 4 and (needle < 10).all()
        assert (y[:query_pos] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="depth"):
        task.sample(1, T, gen(0), depth=1.5)


# -- kv_recall -------------------------------------------------------------------------------------
def test_kv_recall_target_is_the_queried_value_at_the_given_distance():
    task = make_task("kv_recall", n_pairs=4)
    T = 40
    for distance in (0, 5, task.max_distance(T)):
        batch = task.sample(8, T, gen(distance), distance=distance)
        assert (batch.meta["distance"] == distance).all()
        for x, y in zip(batch.x, batch.y):
            assert x[-2] == task.QUERY
            key = x[-1]
            target = y[-1]
            assert (y[:-1] == IGNORE_INDEX).all()
            key_positions = (x[:-1] == key).nonzero().flatten()
            assert len(key_positions) == 1  # keys are distinct within a sequence
            kp = key_positions.item()
            assert x[kp + 1] == target
            assert (T - 2) - (kp + 2) == distance
            keys = x[x < task.n_keys]
            assert len(keys) == 4 + 1  # n_pairs keys plus the query
    with pytest.raises(ValueError, match="distance=37"):
        task.sample(1, T, gen(0), distance=37)
    with pytest.raises(ValueError, match="n_pairs=20"):
        make_task("kv_recall", n_pairs=20, n_keys=16)


# -- copy / reverse --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["copy", "reverse"])
def test_copy_and_reverse_layout(name):
    task = make_task(name, n_symbols=5)
    batch = task.sample(4, 20, gen(0), n=6)
    assert (batch.meta["n"] == 6).all()
    for x, y in zip(batch.x, batch.y):
        assert x[0] == task.BOS and x[7] == task.SEP
        source = x[1:7]
        expected = source if name == "copy" else source.flip(0)
        target = y[y != IGNORE_INDEX]
        assert torch.equal(target[:-1], expected) and target[-1] == task.EOS
        assert (x[15:] == task.PAD).all()
    train = task.sample(200, 20, gen(1))
    assert train.meta["n"].min() >= 1 and train.meta["n"].max() == task.max_n(20) == 9
    with pytest.raises(ValueError, match="n=10"):
        task.sample(1, 20, gen(0), n=10)


# -- invariants over random lengths and seeds ------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["passkey", "kv_recall", "copy", "reverse"]),
    length=st.integers(min_value=10, max_value=200),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_any_length_fits_and_scores_inside_the_sequence(name, length, seed):
    task = make_task(name)
    batch = task.sample(3, length, seed)
    assert batch.x.shape == (3, length)
    scored = (batch.y != IGNORE_INDEX).sum(dim=1)
    expected = {"passkey": task.n_digits if name == "passkey" else None, "kv_recall": 1}.get(name)
    if expected is not None:
        assert (scored == expected).all()
    else:  # copy / reverse: n symbols plus EOS
        assert torch.equal(scored, batch.meta["n"] + 1)


# -- kv_recall distinct values, and the position-blind floors of the retrieval tasks ---------------
def _binomial_tolerance(p: float, n: int) -> float:
    """Four standard errors of a proportion of n draws with success probability p (plus one count)."""
    return 4.0 * (p * (1.0 - p) / n) ** 0.5 + 1.0 / n


def _bag(x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The multiset of each row's tokens as counts: (B, T) -> (B, V). Order is gone."""
    return torch.nn.functional.one_hot(x, vocab_size).sum(dim=1)


def test_kv_recall_distinct_values_and_errors():
    task = make_task("kv_recall", n_pairs=6, n_values=6, distinct_values=True)
    batch = task.sample(50, 30, gen(0))
    is_value = (batch.x >= task.n_keys) & (batch.x < task.n_keys + task.n_values)
    values = batch.x[is_value].view(50, 6)  # (B, n_pairs): every value of a row once
    assert all(len(set(row.tolist())) == 6 for row in values)
    assert task.params()["distinct_values"] is True
    assert TaskConfig("kv_recall", {"distinct_values": True}).params == {"distinct_values": True}
    default, explicit = make_task("kv_recall"), make_task("kv_recall", distinct_values=False)
    a, b = default.sample(8, 40, gen(3)), explicit.sample(8, 40, gen(3))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)  # the default draws what it always drew
    assert task_params("kv_recall")["distinct_values"] is False
    with pytest.raises(ValueError, match=r"n_pairs=5.*n_values=3"):
        make_task("kv_recall", n_pairs=5, n_values=3, distinct_values=True)
    with pytest.raises(ValueError, match="distinct_values"):
        make_task("kv_recall", distinct_values="yes")


def test_kv_recall_floor_formula_against_enumeration():
    """E[max count] / n_pairs from the EGF formula equals brute force over every value assignment."""
    import itertools
    from fractions import Fraction

    for n, v in [(1, 4), (2, 2), (3, 3), (4, 3), (3, 5), (5, 2)]:
        brute = Fraction(sum(max(t.count(s) for s in t) for t in itertools.product(range(v), repeat=n)), v**n)
        task = make_task("kv_recall", n_pairs=n, n_keys=max(n, 2), n_values=v)
        assert task.position_blind_floor() == pytest.approx(float(brute / n), abs=1e-15)
    assert make_task("kv_recall").position_blind_floor() == 1381 / 4096  # defaults: 4 pairs, 16 values
    for n in (1, 2, 4, 7):
        assert make_task("kv_recall", n_pairs=n, distinct_values=True).position_blind_floor() == 1.0 / n


@pytest.mark.parametrize(
    "params",
    [
        dict(n_pairs=4, distinct_values=True),
        dict(n_pairs=3, n_values=3, distinct_values=True),
        dict(n_pairs=4),
        dict(n_pairs=4, n_values=3),
    ],
)
def test_kv_recall_floor_is_what_the_best_bag_predictor_gets(params):
    """Monte Carlo: the Bayes-optimal bag-of-tokens predictor. Given the bag, the queried value is each of
    the n_pairs listed values with equal probability (position_blind_floor's argument), so the posterior
    of value v is its count / n_pairs and the optimal guess is a most frequent value."""
    task = make_task("kv_recall", **params)
    n = 4000
    batch = task.sample(n, 16, gen(11))
    bag = _bag(batch.x, task.vocab_size)  # (B, V): all the predictor sees
    value_counts = bag[:, task.n_keys : task.n_keys + task.n_values]  # (B, n_values)
    assert (bag[:, : task.n_keys].max(dim=1).values == 2).all()  # the bag shows the queried key (twice)
    guess = task.n_keys + value_counts.argmax(dim=1)  # (B,) a most frequent value (the first on ties)
    target = batch.y[batch.y != IGNORE_INDEX]  # (B,) one scored token per row
    accuracy = float((guess == target).double().mean())
    floor = task.position_blind_floor()
    assert abs(accuracy - floor) <= _binomial_tolerance(floor, n), (accuracy, floor)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_passkey_floor_is_what_the_best_bag_predictor_gets(k):
    """Monte Carlo: at each scored position the predictor sees the bag of the inputs so far and names the
    smallest needle digit not yet repeated in the answer (count 1); any such rule attains 1 / k!, and no
    bag rule does better (position_blind_floor's argument). Exact match under teacher forcing."""
    import math

    task = make_task("passkey", n_digits=k)
    n = 3000
    batch = task.sample(n, 20, gen(12))
    prefix_bags = torch.nn.functional.one_hot(batch.x, task.vocab_size).cumsum(dim=1)  # (B, T, V): bag of x[:, :p+1]
    digit_counts = prefix_bags[..., :10]  # (B, T, 10)
    big = torch.iinfo(torch.long).max
    candidates = torch.where(digit_counts == 1, torch.arange(10), torch.full_like(digit_counts, big))
    guess = candidates.min(dim=-1).values  # (B, T) smallest digit seen once so far
    scored = batch.y != IGNORE_INDEX
    exact = ((guess == batch.y) | ~scored).all(dim=1)  # (B,)
    accuracy = float(exact.double().mean())
    floor = task.position_blind_floor()
    assert floor == 1.0 / math.factorial(k)
    assert abs(accuracy - floor) <= _binomial_tolerance(floor, n), (accuracy, floor)
    assert make_task("passkey", n_digits=2).position_blind_floor() == 0.5


# -- books ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def books():
    return make_task("books")


def test_books_corpus_hash_sizes_and_splits(books):
    from ropelib.data import BOOKS_SHA256

    info = books.info()
    assert info["sha256"] == BOOKS_SHA256 and info["n_chars"] > 5_000_000
    assert info["n_train"] + info["n_validation"] + info["n_test"] > info["n_chars"]  # plus the separators
    for split in ("validation", "test"):  # one whole section of every book
        docs = books.documents(split)
        assert len(docs) == info[f"n_{split}_sections"] == info["n_train_books"] == 14
        assert len({d["ebook"] for d in docs}) == 14
    seen = {}
    for split in books.SPLITS:
        for d in books.documents(split):
            assert (d["ebook"], d["section"]) not in seen, "a section in two splits"
            seen[(d["ebook"], d["section"])] = split
    assert books.vocab[0] == "\ufffd" and books.vocab_size == len(set(books.vocab)) < 100
    assert books.vocab[books.BOS] == "\x02" and all(
        int((books.tokens(s) == books.BOS).sum()) == 0 for s in books.SPLITS
    )


def test_books_split_is_built_once_per_parameters_and_instances_stay_separate(books):
    from ropelib.data import make_task

    again = make_task("books")
    for split in books.SPLITS:  # the encoded splits are shared, not rebuilt
        assert again.tokens(split) is books.tokens(split)
    again.vocab.append("x")  # what an instance holds as a list is its own
    again.documents("train").clear()
    assert books.vocab_size == again.vocab_size - 1 and len(books.documents("train")) == len(again.documents("train"))
    other = make_task("books", validation_sections=2)
    assert other.tokens("validation").numel() > books.tokens("validation").numel()
    assert other.tokens("train").numel() < books.tokens("train").numel()


def test_books_text_round_trips_and_windows_stay_in_their_split(books):
    val = books.tokens("validation")
    first = books.documents("validation")[0]["text"]
    assert books.decode(val[: len(first)]) == first
    batch = books.sample(4, 64, 0, split="test")
    test = books.tokens("test").numpy()
    for row, start in zip(batch.x.numpy(), batch.meta["start"].numpy()):
        assert (row == test[start : start + 64]).all()
    again = books.sample(4, 64, 0, split="test")
    assert torch.equal(batch.x, again.x) and torch.equal(batch.y, again.y)  # seeded


def test_books_bad_input(books):
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        books.tokens("dev")
    with pytest.raises(ValueError, match="validation_sections"):
        make_task("books", validation_sections=0)
    with pytest.raises(ValueError, match="leaves no training text"):
        make_task("books", validation_sections=40, test_sections=40)


def test_books_snapshot_is_checked(tmp_path, monkeypatch):
    import lzma

    import ropelib.data as D

    try:
        corrupt = tmp_path / "corrupt.jsonl.xz"
        corrupt.write_bytes(b"not xz at all")
        monkeypatch.setattr(D, "BOOKS_PATH", corrupt)
        D._books_sections.cache_clear()
        with pytest.raises(ValueError, match="corrupt"):
            D._books_sections()
        other = tmp_path / "other.jsonl.xz"
        other.write_bytes(lzma.compress(b'{"ebook": 1, "section": 0, "title": "x", "text": "y"}\n'))
        monkeypatch.setattr(D, "BOOKS_PATH", other)
        D._books_sections.cache_clear()
        with pytest.raises(ValueError, match="SHA-256"):
            D._books_sections()
        monkeypatch.setattr(D, "BOOKS_PATH", tmp_path / "missing.jsonl.xz")
        D._books_sections.cache_clear()
        with pytest.raises(ValueError, match="missing"):
            D._books_sections()
    finally:
        monkeypatch.undo()
        D._books_sections.cache_clear()
