"""Tests of ropelib.experiments (base-model specs, seed statistics, attention distance, orderings) and
ropelib.published (the published numbers as data)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ropelib import experiments as X
from ropelib import published
from ropelib.data import make_task
from ropelib.encodings import ENCODINGS
from ropelib.model import ToyTransformer

# -- setups and specs --------------------------------------------------------------------------------


def test_every_variant_is_a_registered_encoding():
    assert set(X.ENCODING_VARIANTS) <= set(ENCODINGS)
    assert len(X.ENCODING_VARIANTS) == 10


def test_default_setup_covers_the_comparison():
    s = X.base_setup("default")
    assert s.encodings == X.ENCODING_VARIANTS
    assert len(s.seeds) >= 3
    kinds = {t.kind for t in s.tasks}
    assert {"lm", "retrieval"} <= kinds
    books = s.task("books")  # pilot numbers in experiments.SETUPS
    assert books.train_length * books.batch_size * books.steps >= 2_000_000  # the issue's ~2M tokens per LM model
    assert s.init_std == pytest.approx(0.02 * math.sqrt(768 / s.d_model))  # GPT-2's init, fan-in scaled


def test_language_models_read_a_start_token_and_synthetic_tasks_do_not():
    s = X.base_setup("default")
    lm = X.base_spec(s, "nope", "books", s.seeds[0], "cpu")
    assert lm.model.bos_token_id == make_task("books").BOS == 1
    assert lm.model.init_std == s.init_std
    assert X.base_spec(s, "nope", "passkey", s.seeds[0], "cpu").model.bos_token_id is None


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_base_specs_one_per_encoding_task_seed(profile):
    s = X.base_setup(profile)
    specs = X.base_specs(s, "cpu")
    assert len(specs) == len(s.encodings) * len(s.tasks) * len(s.seeds)
    assert list(specs)[0] == (s.encodings[0], s.tasks[0].name, s.seeds[0])
    hashes = {spec.hash() for spec in specs.values()}
    assert len(hashes) == len(specs)  # every model is a distinct cache entry
    vocab = {}  # task config -> vocabulary size (building the books task reads its corpus: once per config)
    for spec in specs.values():
        key = json.dumps(spec.task.to_dict(), sort_keys=True)
        if key not in vocab:
            vocab[key] = make_task(spec.task).vocab_size
    for (enc, task, seed), spec in specs.items():
        ts = s.task(task)
        assert spec.train.seq_len == ts.train_length and spec.train.steps == ts.steps
        assert spec.train.seed == seed and spec.task.name == task
        assert spec.model.d_model == s.d_model and spec.model.encoding == enc
        assert spec.model.vocab_size == vocab[json.dumps(spec.task.to_dict(), sort_keys=True)]


def test_same_size_and_budget_across_encodings():
    s = X.base_setup("default")
    specs = X.base_specs(s)
    for task in s.tasks:
        group = [spec for (e, t, _), spec in specs.items() if t == task.name]
        assert len({(sp.model.d_model, sp.model.n_layers, sp.model.n_heads) for sp in group}) == 1
        assert len({sp.train.to_dict().__repr__() for sp in group if sp.train.seed == s.seeds[0]}) == 1


def test_device_is_not_part_of_the_identity():
    s = X.base_setup("default")
    a = X.base_spec(s, "rope", "books", 0, device="cpu")
    b = X.base_spec(s, "rope", "books", 0, device="auto")
    assert a.hash() == b.hash() and a.train.device != b.train.device


def test_learned_table_is_exactly_the_training_length_and_randomized_range():
    s = X.base_setup("default")
    for task in s.tasks:
        name, params = X.encoding_config("learned", task.train_length, s)
        assert name == "learned" and params == {"max_positions": task.train_length}
    name, params = X.encoding_config("randomized", 64, s)
    assert name == "randomized" and params == {"inner": "rope", "max_position": 16 * 64, "eval_positions": "random"}
    assert X.encoding_config("alibi", 64, s) == ("alibi", {})


def test_sinusoids_start_at_the_size_of_a_token_embedding():
    """sinusoid_scale = init_std * sqrt(2): the scaled sinusoids' RMS equals a fresh embedding's std."""
    from ropelib.encodings.sinusoidal import sinusoidal_table
    from ropelib.model import INIT_STD, ToyTransformer

    s = X.base_setup("default")
    assert X.encoding_config("sinusoidal", 64, s) == ("sinusoidal", {"scale": s.sinusoid_scale})
    assert s.sinusoid_scale == pytest.approx(s.init_std * math.sqrt(2), rel=1e-15)
    assert X.SINUSOID_SCALE == pytest.approx(INIT_STD * math.sqrt(2), rel=1e-15)
    spec = X.base_spec(s, "sinusoidal", "books", s.seeds[0], "cpu")
    model = ToyTransformer(spec.model)
    table = sinusoidal_table(4096, s.d_model).double()
    pe_rms = float(model.encoding.scale * table.pow(2).mean().sqrt())
    assert pe_rms == pytest.approx(s.init_std, rel=1e-3)
    assert float(model.tok_emb.weight.detach().std()) == pytest.approx(s.init_std, rel=0.05)
    with pytest.raises(ValueError, match="sinusoid_scale"):
        X.BaseSetup(tasks=s.tasks, seeds=s.seeds, sinusoid_scale=0.0)
    with pytest.raises(ValueError, match="init_std"):
        X.BaseSetup(tasks=s.tasks, seeds=s.seeds, init_std=-1.0)
    with pytest.raises(ValueError, match="init_std"):
        X.sinusoid_scale_for(float("nan"))


def test_smoke_specs_build_models():
    for spec in X.base_specs(X.base_setup("smoke")).values():
        model = ToyTransformer(spec.model)
        if spec.model.encoding == "learned":
            assert model.encoding.max_positions == spec.train.seq_len


def test_subset_selection_and_errors():
    s = X.base_setup("default")
    rope = X.base_specs(s, encodings=["rope"], tasks=["books"], seeds=[1])
    assert list(rope) == [("rope", "books", 1)]
    assert rope[("rope", "books", 1)].hash() == X.base_spec(s, "rope", "books", 1).hash()
    with pytest.raises(ValueError, match="unknown profile 'huge'.*smoke"):
        X.base_setup("huge")
    with pytest.raises(ValueError, match="not in this setup"):
        X.base_specs(X.base_setup("smoke"), encodings=["fire"])
    with pytest.raises(ValueError, match="task 'copy' is not in this setup"):
        s.task("copy")
    with pytest.raises(ValueError, match="seed 99"):
        X.base_spec(s, "rope", "books", 99)
    with pytest.raises(ValueError, match="unknown encoding 'roap'"):
        X.encoding_config("roap", 64, s)
    with pytest.raises(ValueError, match="unknown task 'wiki'"):
        X.TaskSetup("wiki", train_length=8, steps=1, batch_size=1)
    with pytest.raises(ValueError, match="even head dimension"):
        X.BaseSetup(tasks=s.tasks, seeds=(0,), d_model=30, n_heads=6)
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        X.run_specs({}, jobs=0)


# -- statistics ---------------------------------------------------------------------------------------


def test_mean_ci_matches_scipy_and_the_formula():
    x = [1.0, 2.0, 3.0, 4.0]
    mean, low, high, n = X.mean_ci(x)
    ref = stats.t.interval(0.95, 3, loc=2.5, scale=stats.sem(x))
    assert n == 4 and mean == pytest.approx(2.5)
    assert (low, high) == pytest.approx(ref)
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2.0
    assert high - mean == pytest.approx(half)
    assert (low, high) == pytest.approx((0.4457397432, 4.5542602568))  # t_{0.975,3} = 3.18245


def test_mean_ci_edge_cases():
    assert X.mean_ci([2.0, float("nan"), 4.0])[:2] == (3.0, pytest.approx(3.0 - 12.706204736 * 1.0))
    mean, low, high, n = X.mean_ci([5.0])
    assert (mean, n) == (5.0, 1) and math.isnan(low) and math.isnan(high)
    assert X.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5, 3)
    assert X.mean_ci([float("nan")])[3] == 0 and math.isnan(X.mean_ci([])[0])
    with pytest.raises(ValueError, match="confidence"):
        X.mean_ci([1.0, 2.0], confidence=95)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12), st.floats(0.5, 0.99))
def test_mean_ci_brackets_the_mean_and_widens_with_confidence(values, confidence):
    mean, low, high, n = X.mean_ci(values, confidence)
    assert n == len(values)
    assert low <= mean + 1e-9 and mean <= high + 1e-9
    _, low99, high99, _ = X.mean_ci(values, 0.995)
    assert low99 <= low + 1e-9 and high <= high99 + 1e-9


def test_aggregate_seeds_per_group():
    df = pd.DataFrame(
        {
            "encoding": ["a", "a", "a", "b", "b", "b"],
            "length": [8, 8, 8, 8, 8, 8],
            "seed": [0, 1, 2, 0, 1, 2],
            "loss": [1.0, 2.0, 3.0, 5.0, 5.0, float("nan")],
        }
    )
    out = X.aggregate_seeds(df, ["encoding", "length"], "loss", prefix="loss_")
    assert list(out.columns) == ["encoding", "length", "n_seeds", "loss_mean", "loss_ci_low", "loss_ci_high"]
    a = out[out.encoding == "a"].iloc[0]
    assert a.n_seeds == 3 and a.loss_mean == 2.0
    assert (a.loss_ci_low, a.loss_ci_high) == pytest.approx(
        stats.t.interval(0.95, 2, loc=2.0, scale=stats.sem([1, 2, 3]))
    )
    b = out[out.encoding == "b"].iloc[0]
    assert b.n_seeds == 2 and b.loss_mean == 5.0 and b.loss_ci_low == 5.0
    with pytest.raises(ValueError, match=r"\['ppl'\] not in the table"):
        X.aggregate_seeds(df, ["encoding"], "ppl")


# -- attention distance and exact match ---------------------------------------------------------------


class _FixedAttention(torch.nn.Module):
    """A stand-in model whose attention is given: 'self' (the diagonal) or 'first' (key 0)."""

    def __init__(self, kind: str, n_layers: int = 2, n_heads: int = 3):
        super().__init__()
        self.kind, self.n_layers, self.n_heads = kind, n_layers, n_heads
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, return_attention=False):
        B, T = x.shape
        a = torch.eye(T) if self.kind == "self" else torch.zeros(T, T).index_fill_(1, torch.tensor([0]), 1.0)
        attn = [a.expand(B, self.n_heads, T, T) for _ in range(self.n_layers)]
        return torch.zeros(B, T, 5), attn


def test_attention_distance_known_patterns():
    x = torch.zeros(2, 9, dtype=torch.long)
    assert np.allclose(X.attention_distance(_FixedAttention("self"), x), 0.0)
    first = X.attention_distance(_FixedAttention("first"), x)
    assert first.shape == (2, 3)
    assert np.allclose(first, np.mean(np.arange(9)))  # query i looks back i tokens: mean 4


def test_attention_distance_of_a_real_model_is_within_bounds():
    torch.manual_seed(0)
    model = ToyTransformer(X.base_spec(X.base_setup("smoke"), "alibi", "books", 0).model)
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    d = X.attention_distance(model, x)
    assert d.shape == (model.config.n_layers, model.config.n_heads)
    assert (d >= 0).all() and (d <= 15 / 2 + 1e-6).all()  # query i can look back at most i: mean 7.5
    with pytest.raises(ValueError, match="torch.long"):
        X.attention_distance(model, x.float())


class _Oracle(torch.nn.Module):
    """Predicts the targets of the batch the task draws with ``seed`` (optionally wrong on row 0)."""

    def __init__(self, task, length, n, seed, wrong_row=None):
        super().__init__()
        batch = task.sample(n, length, torch.Generator().manual_seed(seed))
        y = batch.y.clone()
        if wrong_row is not None:
            scored = (y[wrong_row] != -100).nonzero()[0, 0]
            y[wrong_row, scored] = (y[wrong_row, scored] + 1) % task.vocab_size
        self.logits = torch.nn.functional.one_hot(y.clamp(min=0), task.vocab_size).float()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits


def test_exact_match_accuracy_counts_whole_answers():
    task = make_task("passkey", n_digits=2)
    assert X.exact_match_accuracy(_Oracle(task, 16, 8, 7), task, 16, 8, seed=7) == 1.0
    assert X.exact_match_accuracy(_Oracle(task, 16, 8, 7, wrong_row=0), task, 16, 8, seed=7) == 7 / 8
    assert X.exact_match_accuracy(_Oracle(task, 16, 8, 7), task, 16, 8, seed=8) < 1.0  # other samples
    with pytest.raises(ValueError, match="n_samples"):
        X.exact_match_accuracy(_Oracle(task, 16, 8, 7), task, 16, 0, seed=7)


# -- published numbers and orderings ------------------------------------------------------------------


def test_published_numbers_match_references():
    assert published.ALIBI_TABLE1[512]["sinusoidal"] == 20.05
    assert published.ALIBI_TABLE1[2512]["rope"] == 31.58
    assert math.isnan(published.ALIBI_TABLE1[15512]["t5"])
    assert published.ALIBI_TABLE1[15512]["alibi"] == 18.31
    assert published.KAZEMNEJAD_MRR == {"nope": 0.69, "t5": 0.55, "alibi": 0.50, "rope": 0.33, "learned": 0.22}
    # docs/references.md §3.8: PI Table 3 (8192) 16.10 / 7.12 / 6.95 after 0 / 200 / 1000 steps; Table 1 "> 1000"
    assert published.PI_TABLE3 == {0: 16.10, 200: 7.12, 1000: 6.95}
    assert published.PI_NO_EXTENSION_MIN == 1000.0 and "2306.15595" in published.PI_SOURCE
    t = published.alibi_table()
    assert len(t) == 20 and t.multiplier.max() == pytest.approx(15512 / 512)


def test_published_orderings_are_in_published_order():
    claims = published.published_orderings()
    alibi = claims[claims.source == "alibi_table1"]
    kaz = claims[claims.source == "kazemnejad2023"]
    assert len(alibi) == 6 * 3 + 3 and len(kaz) == 10
    assert (alibi.published_better < alibi.published_worse).all()  # lower perplexity is better
    assert (kaz.published_better > kaz.published_worse).all()  # higher MRR is better
    at_2512 = alibi[alibi.published_length == 2512]
    assert set(zip(at_2512.better, at_2512.worse)) >= {("alibi", "t5"), ("t5", "rope"), ("rope", "sinusoidal")}


def test_relative_published_orderings():
    rel = published.published_orderings(relative=True)
    alibi = rel[rel.source == "alibi_table1"]
    assert set(alibi.metric) == {"ppl_ratio"} and (alibi.published_better < alibi.published_worse).all()
    row = alibi[(alibi.published_length == 1012) & (alibi.better == "alibi") & (alibi.worse == "t5")].iloc[0]
    assert row.published_better == pytest.approx(18.73 / 19.73) and row.published_worse == pytest.approx(18.79 / 19.65)


def test_nearest_multiplier_log_scale():
    assert X.nearest_multiplier(1012 / 512, [1, 1.5, 2, 4, 8]) == 2
    assert X.nearest_multiplier(2512 / 512, [1, 1.5, 2, 4, 8]) == 4
    assert X.nearest_multiplier(3.0, [2, 4]) == 4  # log(3/2) > log(4/3)
    with pytest.raises(ValueError):
        X.nearest_multiplier(2.0, [])


def _ours(values: dict[tuple[str, float], tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"encoding": e, "multiplier": m, "mean": v[0], "ci_low": v[1], "ci_high": v[2]}
            for (e, m), v in values.items()
        ]
    )


def test_ordering_table_flags_reproduced_significant_and_missing():
    claims = published.published_orderings()
    alibi = claims[claims.source == "alibi_table1"]
    ours = _ours(
        {
            ("alibi", 2.0): (5.0, 4.9, 5.1),
            ("t5", 2.0): (5.5, 5.0, 6.0),
            ("rope", 2.0): (5.2, 5.0, 6.0),
            ("sinusoidal", 2.0): (9.0, 8.0, 10.0),
            ("alibi", 8.0): (5.0, 4.9, 5.1),
            ("t5", 8.0): (7.0, 6.0, 8.0),
            ("rope", 8.0): (math.nan, math.nan, math.nan),
            ("sinusoidal", 8.0): (20.0, 19.0, 21.0),
        }
    )
    t = X.ordering_table(alibi, ours, metric="ppl_nonoverlap", lower_is_better=True)
    # our multipliers are {2, 8}: 1012/512 -> 2x; 2512/512, 5512/512 and 15512/512 all map to 8x on a log
    # scale, and 5512/512 (the closest) is kept, so each multiplier carries the 6 pairs of 4 encodings
    assert t.groupby("multiplier").size().to_dict() == {2.0: 6, 8.0: 6}
    assert set(t.loc[t.multiplier == 8.0, "published_better"]) <= set(published.ALIBI_TABLE1[5512].values())
    row = t[(t.multiplier == 2.0) & (t.better == "alibi") & (t.worse == "t5")].iloc[0]
    assert row.reproduced == True and row.note == "within CI"  # noqa: E712  [4.9, 5.1] overlaps [5.0, 6.0]
    row = t[(t.multiplier == 2.0) & (t.better == "rope") & (t.worse == "sinusoidal")].iloc[0]
    assert row.reproduced == True and row.note == "significant"  # noqa: E712
    row = t[(t.multiplier == 2.0) & (t.better == "t5") & (t.worse == "rope")].iloc[0]
    assert row.reproduced == False  # noqa: E712  ours: rope 5.2 < t5 5.5
    row = t[(t.multiplier == 8.0) & (t.better == "rope") & (t.worse == "sinusoidal")].iloc[0]
    assert math.isnan(row.reproduced) and row.note.startswith("no value")


def test_ordering_table_details():
    claims = pd.DataFrame(
        [
            {
                "source": "s",
                "better": "a",
                "worse": "b",
                "metric": "ppl",
                "published_better": 1.0,
                "published_worse": 2.0,
                "published_length": 20,
                "published_multiplier": 2.0,
            },
            {
                "source": "s",
                "better": "a",
                "worse": "c",
                "metric": "ppl",
                "published_better": 1.0,
                "published_worse": 3.0,
                "published_length": 20,
                "published_multiplier": 2.0,
            },
            {
                "source": "s",
                "better": "b",
                "worse": "c",
                "metric": "ppl",
                "published_better": 2.0,
                "published_worse": 3.0,
                "published_length": 20,
                "published_multiplier": 2.0,
            },
            {
                "source": "s",
                "better": "a",
                "worse": "b",
                "metric": "ppl",
                "published_better": 1.0,
                "published_worse": 2.0,
                "published_length": 22,
                "published_multiplier": 2.2,
            },
        ]
    )
    ours = _ours({("a", 2.0): (1.0, 0.9, 1.1), ("b", 2.0): (3.0, 2.0, 4.0), ("c", 2.0): (2.5, 0.0, 5.0)})
    t = X.ordering_table(claims, ours, metric="m", lower_is_better=True)
    assert len(t) == 3  # the 2.2 claim maps to 2x too, but 2.0 is closer and is kept
    got = {(r.better, r.worse): (r.reproduced, r.note) for r in t.itertuples()}
    assert got[("a", "b")] == (True, "significant")
    assert got[("a", "c")] == (True, "within CI")
    assert got[("b", "c")] == (False, "within CI")
    higher = X.ordering_table(claims, ours, metric="m", lower_is_better=False)
    assert dict(zip(zip(higher.better, higher.worse), higher.reproduced))[("a", "b")] is False
    nan = _ours({("a", 2.0): (1.0, 0.9, 1.1), ("b", 2.0): (math.nan,) * 3, ("c", 2.0): (1.0, math.nan, math.nan)})
    t = X.ordering_table(claims, nan, metric="m", lower_is_better=True)
    row = t[(t.better == "a") & (t.worse == "b")].iloc[0]
    assert math.isnan(row.reproduced) and "no value" in row.note
    row = t[(t.better == "a") & (t.worse == "c")].iloc[0]
    assert row.reproduced is False and row.note.startswith("no CI")
    with pytest.raises(ValueError, match="columns"):
        X.ordering_table(claims, ours.drop(columns="ci_low"), metric="m", lower_is_better=True)


# -- length-dependent encoding settings (encoding_config / encoding_settings) -----------------------

#: the parameters each encoding's settings table lists ("(none)": nothing of it depends on L)
_SETTINGS = {
    "nope": {"(none)"},
    "sinusoidal": {"scale"},
    "learned": {"max_positions"},
    "t5": {"num_buckets", "max_distance"},
    "alibi": {"slopes"},
    "rope": {"rope_theta"},
    "xpos": {"scale_base", "rope_theta"},
    "kerple": {"(none)"},
    "fire": {"init_threshold"},
    "randomized": {"max_position", "eval_positions"},
}


def _train_lengths() -> list[int]:
    return sorted({t.train_length for p in X.SETUPS.values() for t in p.tasks})


@pytest.mark.parametrize("L", sorted({3, 4, 16, 17, 18, 24, 31, 32, 33, 100, 256, 1000, *_train_lengths()}))
def test_t5_buckets_reached_past_training_are_trained(L):
    """Every bucket a distance up to 8L - 1 reaches is one some distance 0 … L-1 of a training window reaches."""
    from ropelib.encodings import t5_relative_bucket

    name, params = X.encoding_config("t5", L, X.base_setup("default"))
    assert name == "t5" and params == {"num_buckets": min(32, L), "max_distance": L - 1}
    nb, M = params["num_buckets"], params["max_distance"]
    train = set(t5_relative_bucket(-torch.arange(L), False, nb, M).tolist())
    evaluated = t5_relative_bucket(-torch.arange(8 * L), False, nb, M)
    assert set(evaluated.tolist()) <= train
    assert (evaluated[L:] == nb - 1).all() and nb - 1 in train  # past L: the last bucket, trained at L - 1
    if L >= 32:  # 32 buckets: at most a few unreachable ones (log bins narrower than one token), ~all trained
        assert nb == 32 and len(train) >= 31


def test_t5_old_defaults_leave_buckets_untrained_and_the_model_uses_the_rule():
    from ropelib.encodings import t5_relative_bucket

    L = 64
    train = set(t5_relative_bucket(-torch.arange(L), False, 32, 128).tolist())  # the former defaults
    assert not set(t5_relative_bucket(-torch.arange(8 * L), False, 32, 128).tolist()) <= train
    s = X.base_setup("default")
    for task in s.tasks:
        enc = ToyTransformer(X.base_spec(s, "t5", task.name, s.seeds[0], "cpu").model).encoding
        assert (enc.num_buckets, enc.max_distance) == (min(32, task.train_length), task.train_length - 1)


def test_fire_threshold_starts_at_the_training_length():
    s = X.base_setup("default")
    for task in s.tasks:
        L = task.train_length
        assert X.encoding_config("fire", L, s) == ("fire", {"init_threshold": float(L)})
        enc = ToyTransformer(X.base_spec(s, "fire", task.name, s.seeds[0], "cpu").model).encoding
        assert float(enc.threshold().detach()) == L
        with torch.no_grad():
            trained = enc.normalized_distance(torch.arange(L), torch.arange(L)).tril()
            long = enc.normalized_distance(torch.arange(16 * L), torch.arange(16 * L)).tril()
        # below the threshold the normaliser is fixed: the MLP input depends on the distance only
        d = torch.arange(L)
        assert torch.equal(trained[L - 1, L - 1 - d], trained[d, 0])  # distance d from the last query and from d
        assert float(trained[L - 1, 0]) > 0.95  # training covers almost all of [0, 1] ...
        assert float(long.max()) <= 1.0 + 1e-9  # ... and inputs past L stay in [0, 1]
        c = float(enc.c.detach())
        assert float(trained[L - 1, 0]) == pytest.approx(math.log1p(c * (L - 1)) / math.log1p(c * L), rel=1e-5)


def test_xpos_gamma_keeps_the_papers_ratio_to_the_training_length():
    s = X.base_setup("default")
    for L in [*_train_lengths(), 1024]:
        name, params = X.encoding_config("xpos", L, s)
        assert name == "xpos" and params["scale_base"] / L == 512 / 1024  # torchscale: 512 at training length 1024
    assert X.encoding_config("xpos", 1024, s)[1] == {"scale_base": 512.0}
    enc = ToyTransformer(X.base_spec(s, "xpos", "books", s.seeds[0], "cpu").model).encoding
    assert enc.scale_base == s.task("books").train_length / 2


def test_randomized_range_covers_the_longest_evaluation_length():
    import inspect

    from ropelib.encodings.randomized import random_positions
    from ropelib.evaluate import LENGTH_MULTIPLIERS, lengths_for

    default = inspect.signature(X.encoding_config).parameters["max_eval_multiple"].default
    assert default == inspect.signature(X.encoding_settings).parameters["max_eval_multiple"].default
    assert default >= max(LENGTH_MULTIPLIERS)  # the evaluation lengths of notebook 05 are all covered
    s = X.base_setup("default")
    for L in _train_lengths():
        name, params = X.encoding_config("randomized", L, s)
        assert name == "randomized" and params == {
            "inner": "rope",
            "max_position": int(default * L),
            "eval_positions": "random",
        }
        assert params["max_position"] >= max(lengths_for(L))
        assert len(set(random_positions(L, params["max_position"]).tolist())) == L
    assert X.encoding_config("randomized", 42, s, max_eval_multiple=1.5)[1]["max_position"] == 63
    assert X.encoding_config("randomized", 10, s, max_eval_multiple=2.25)[1]["max_position"] == 23  # ceil
    assert X.encoding_config("randomized", 64, s, max_eval_multiple=1)[1]["max_position"] == 64
    enc = ToyTransformer(X.base_spec(s, "randomized", "passkey", s.seeds[0], "cpu").model).encoding
    assert enc.max_position == default * s.task("passkey").train_length


@pytest.mark.parametrize("profile", list(X.SETUPS))
def test_settings_table_is_what_encoding_config_builds(profile):
    from ropelib.encodings import alibi_slopes, resolved_params

    s = X.base_setup(profile)
    for task in s.tasks:
        L = task.train_length
        df = X.encoding_settings(s, L)
        assert list(df.columns) == ["encoding", "parameter", "value", "rule", "source"]
        assert list(dict.fromkeys(df.encoding)) == list(s.encodings)  # every encoding, in setup order
        assert not df.duplicated(["encoding", "parameter"]).any()
        assert all(isinstance(t, str) and len(t) > 20 for t in [*df.rule, *df.source])
        for e in s.encodings:
            rows = df[df.encoding == e]
            assert set(rows.parameter) == _SETTINGS[e]
            name, params = X.encoding_config(e, L, s)
            resolved = resolved_params(name, params)
            for key, value in params.items():  # every setting encoding_config makes is in the table
                if key != "inner":
                    assert rows.set_index("parameter").value[key] == value
            for r in rows.itertuples():
                if r.parameter == "(none)":
                    assert r.value is None and params == {}
                elif e == "alibi":
                    assert r.value == tuple(alibi_slopes(s.n_heads))
                else:
                    assert r.value == resolved[r.parameter]
        # end to end: the models the specs build carry the table's values
        for e in s.encodings:
            enc = ToyTransformer(X.base_spec(s, e, task.name, s.seeds[0], "cpu").model).encoding
            got = {
                "learned": lambda: {"max_positions": enc.max_positions},
                "t5": lambda: {"num_buckets": enc.num_buckets, "max_distance": enc.max_distance},
                "alibi": lambda: {"slopes": enc.slopes},
                "fire": lambda: {"init_threshold": enc.init_threshold},
                "xpos": lambda: {"scale_base": enc.scale_base, "rope_theta": enc.rope.config.rope_theta},
                "rope": lambda: {"rope_theta": enc.rope.config.rope_theta},
                "randomized": lambda: {"max_position": enc.max_position, "eval_positions": enc.eval_positions},
                "sinusoidal": lambda: {"scale": enc.scale},
            }.get(e, dict)()
            table = df[df.encoding == e].set_index("parameter").value
            assert got == {k: table[k] for k in got}, e


def test_settings_table_text_follows_the_values():
    s = X.base_setup("default")
    df = X.encoding_settings(s, 64, max_eval_multiple=4.0).set_index(["encoding", "parameter"])
    assert df.value["randomized", "max_position"] == 256 and "= 256" in df.rule["randomized", "max_position"]
    assert df.value["randomized", "eval_positions"] == "random"  # the paper's test protocol
    assert "at evaluation too" in df.rule["randomized", "eval_positions"]
    assert "bucket 31" in df.rule["t5", "max_distance"] and "= 63" in df.rule["t5", "max_distance"]
    assert "1/m = 256 tokens = 4.00 x L" in df.rule["alibi", "slopes"]
    assert "arXiv 2305.16843" in df.source["randomized", "max_position"]
    assert "arXiv 2310.04418" in df.source["fire", "init_threshold"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "64", None, np.float64(64.0)])
def test_encoding_config_rejects_bad_train_lengths(bad):
    s = X.base_setup("default")
    with pytest.raises(ValueError, match="train_length must be a positive integer"):
        X.encoding_config("rope", bad, s)
    with pytest.raises(ValueError, match="train_length must be a positive integer"):
        X.encoding_settings(s, bad)


@pytest.mark.parametrize("bad", [0.5, 0, -16.0, math.nan, math.inf, True, "16", None])
def test_encoding_config_rejects_bad_eval_multiples(bad):
    s = X.base_setup("default")
    with pytest.raises(ValueError, match="max_eval_multiple must be a finite number >= 1"):
        X.encoding_config("randomized", 64, s, max_eval_multiple=bad)
    with pytest.raises(ValueError, match="max_eval_multiple must be a finite number >= 1"):
        X.encoding_settings(s, 64, max_eval_multiple=bad)


def test_encoding_config_other_errors():
    s = X.base_setup("default")
    assert X.encoding_config("t5", 3, s) == ("t5", {"num_buckets": 3, "max_distance": 2})
    with pytest.raises(ValueError, match="t5 needs train_length >= 3"):
        X.encoding_config("t5", 2, s)
    assert X.encoding_config("rope", 1, s) == ("rope", {})  # the other encodings accept any positive L
    with pytest.raises(ValueError, match="setup must be a BaseSetup"):
        X.encoding_settings("default", 64)
    with pytest.raises(ValueError, match="unknown encoding 'roap'"):
        X.encoding_config("roap", 64, s, max_eval_multiple=16.0)
