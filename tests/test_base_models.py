"""Tests of ropelib.base_models: the base models of notebooks 04-06 (setups, specs, run cache identity)
and the length-dependent encoding settings (``encoding_config`` / ``encoding_settings``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ropelib import base_models
from ropelib.data import make_task
from ropelib.encodings import ENCODINGS
from ropelib.model import ToyTransformer

# -- setups and specs --------------------------------------------------------------------------------


def test_every_variant_is_a_registered_encoding():
    assert set(base_models.ENCODING_VARIANTS) <= set(ENCODINGS)
    assert len(base_models.ENCODING_VARIANTS) == 10


def test_default_setup_covers_the_comparison():
    s = base_models.base_setup("default")
    assert s.encodings == base_models.ENCODING_VARIANTS
    assert len(s.seeds) >= 3
    kinds = {t.kind for t in s.tasks}
    assert {"lm", "retrieval"} <= kinds
    books = s.task("books")  # pilot numbers in base_models.SETUPS
    assert books.train_length * books.batch_size * books.steps >= 2_000_000  # the issue's ~2M tokens per LM model
    assert s.init_std == pytest.approx(0.02 * math.sqrt(768 / s.d_model))  # GPT-2's init, fan-in scaled


def test_language_models_read_a_start_token_and_synthetic_tasks_do_not():
    s = base_models.base_setup("default")
    lm = base_models.base_spec(s, "nope", "books", s.seeds[0], "cpu")
    assert lm.model.bos_token_id == make_task("books").BOS == 1
    assert lm.model.init_std == s.init_std
    assert base_models.base_spec(s, "nope", "passkey", s.seeds[0], "cpu").model.bos_token_id is None


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_base_specs_one_per_encoding_task_seed(profile):
    s = base_models.base_setup(profile)
    specs = base_models.base_specs(s, "cpu")
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
    s = base_models.base_setup("default")
    specs = base_models.base_specs(s)
    for task in s.tasks:
        group = [spec for (e, t, _), spec in specs.items() if t == task.name]
        assert len({(sp.model.d_model, sp.model.n_layers, sp.model.n_heads) for sp in group}) == 1
        assert len({sp.train.to_dict().__repr__() for sp in group if sp.train.seed == s.seeds[0]}) == 1


def test_device_is_not_part_of_the_identity():
    s = base_models.base_setup("default")
    a = base_models.base_spec(s, "rope", "books", 0, device="cpu")
    b = base_models.base_spec(s, "rope", "books", 0, device="auto")
    assert a.hash() == b.hash() and a.train.device != b.train.device


def test_learned_table_is_exactly_the_training_length_and_randomized_range():
    s = base_models.base_setup("default")
    for task in s.tasks:
        name, params = base_models.encoding_config("learned", task.train_length, s)
        assert name == "learned" and params == {"max_positions": task.train_length}
    name, params = base_models.encoding_config("randomized", 64, s)
    assert name == "randomized" and params == {"inner": "rope", "max_position": 16 * 64, "eval_positions": "random"}
    assert base_models.encoding_config("alibi", 64, s) == ("alibi", {})


def test_sinusoids_start_at_the_size_of_a_token_embedding():
    """sinusoid_scale = init_std * sqrt(2): the scaled sinusoids' RMS equals a fresh embedding's std."""
    from ropelib.encodings.sinusoidal import sinusoidal_table
    from ropelib.model import INIT_STD, ToyTransformer

    s = base_models.base_setup("default")
    assert base_models.encoding_config("sinusoidal", 64, s) == ("sinusoidal", {"scale": s.sinusoid_scale})
    assert s.sinusoid_scale == pytest.approx(s.init_std * math.sqrt(2), rel=1e-15)
    assert base_models.SINUSOID_SCALE == pytest.approx(INIT_STD * math.sqrt(2), rel=1e-15)
    spec = base_models.base_spec(s, "sinusoidal", "books", s.seeds[0], "cpu")
    model = ToyTransformer(spec.model)
    table = sinusoidal_table(4096, s.d_model).double()
    pe_rms = float(model.encoding.scale * table.pow(2).mean().sqrt())
    assert pe_rms == pytest.approx(s.init_std, rel=1e-3)
    assert float(model.tok_emb.weight.detach().std()) == pytest.approx(s.init_std, rel=0.05)
    with pytest.raises(ValueError, match="sinusoid_scale"):
        base_models.BaseSetup(tasks=s.tasks, seeds=s.seeds, sinusoid_scale=0.0)
    with pytest.raises(ValueError, match="init_std"):
        base_models.BaseSetup(tasks=s.tasks, seeds=s.seeds, init_std=-1.0)
    with pytest.raises(ValueError, match="init_std"):
        base_models.sinusoid_scale_for(float("nan"))


def test_smoke_specs_build_models():
    for spec in base_models.base_specs(base_models.base_setup("smoke")).values():
        model = ToyTransformer(spec.model)
        if spec.model.encoding == "learned":
            assert model.encoding.max_positions == spec.train.seq_len


def test_subset_selection_and_errors():
    s = base_models.base_setup("default")
    rope = base_models.base_specs(s, encodings=["rope"], tasks=["books"], seeds=[1])
    assert list(rope) == [("rope", "books", 1)]
    assert rope[("rope", "books", 1)].hash() == base_models.base_spec(s, "rope", "books", 1).hash()
    with pytest.raises(ValueError, match="unknown profile 'huge'.*smoke"):
        base_models.base_setup("huge")
    with pytest.raises(ValueError, match="not in this setup"):
        base_models.base_specs(base_models.base_setup("smoke"), encodings=["fire"])
    with pytest.raises(ValueError, match="task 'copy' is not in this setup"):
        s.task("copy")
    with pytest.raises(ValueError, match="seed 99"):
        base_models.base_spec(s, "rope", "books", 99)
    with pytest.raises(ValueError, match="unknown encoding 'roap'"):
        base_models.encoding_config("roap", 64, s)
    with pytest.raises(ValueError, match="unknown task 'wiki'"):
        base_models.TaskSetup("wiki", train_length=8, steps=1, batch_size=1)
    with pytest.raises(ValueError, match="even head dimension"):
        base_models.BaseSetup(tasks=s.tasks, seeds=(0,), d_model=30, n_heads=6)
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        base_models.run_specs({}, jobs=0)


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
    return sorted({t.train_length for p in base_models.SETUPS.values() for t in p.tasks})


@pytest.mark.parametrize("L", sorted({3, 4, 16, 17, 18, 24, 31, 32, 33, 100, 256, 1000, *_train_lengths()}))
def test_t5_buckets_reached_past_training_are_trained(L):
    """Every bucket a distance up to 8L - 1 reaches is one some distance 0 … L-1 of a training window reaches."""
    from ropelib.encodings import t5_relative_bucket

    name, params = base_models.encoding_config("t5", L, base_models.base_setup("default"))
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
    s = base_models.base_setup("default")
    for task in s.tasks:
        enc = ToyTransformer(base_models.base_spec(s, "t5", task.name, s.seeds[0], "cpu").model).encoding
        assert (enc.num_buckets, enc.max_distance) == (min(32, task.train_length), task.train_length - 1)


def test_fire_threshold_starts_at_the_training_length():
    s = base_models.base_setup("default")
    for task in s.tasks:
        L = task.train_length
        assert base_models.encoding_config("fire", L, s) == ("fire", {"init_threshold": float(L)})
        enc = ToyTransformer(base_models.base_spec(s, "fire", task.name, s.seeds[0], "cpu").model).encoding
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
    s = base_models.base_setup("default")
    for L in [*_train_lengths(), 1024]:
        name, params = base_models.encoding_config("xpos", L, s)
        assert name == "xpos" and params["scale_base"] / L == 512 / 1024  # torchscale: 512 at training length 1024
    assert base_models.encoding_config("xpos", 1024, s)[1] == {"scale_base": 512.0}
    enc = ToyTransformer(base_models.base_spec(s, "xpos", "books", s.seeds[0], "cpu").model).encoding
    assert enc.scale_base == s.task("books").train_length / 2


def test_randomized_range_covers_the_longest_evaluation_length():
    import inspect

    from ropelib.encodings.randomized import random_positions
    from ropelib.evaluate import LENGTH_MULTIPLIERS, lengths_for

    default = inspect.signature(base_models.encoding_config).parameters["max_eval_multiple"].default
    assert default == inspect.signature(base_models.encoding_settings).parameters["max_eval_multiple"].default
    assert default >= max(LENGTH_MULTIPLIERS)  # the evaluation lengths of notebook 05 are all covered
    s = base_models.base_setup("default")
    for L in _train_lengths():
        name, params = base_models.encoding_config("randomized", L, s)
        assert name == "randomized" and params == {
            "inner": "rope",
            "max_position": int(default * L),
            "eval_positions": "random",
        }
        assert params["max_position"] >= max(lengths_for(L))
        assert len(set(random_positions(L, params["max_position"]).tolist())) == L
    assert base_models.encoding_config("randomized", 42, s, max_eval_multiple=1.5)[1]["max_position"] == 63
    assert base_models.encoding_config("randomized", 10, s, max_eval_multiple=2.25)[1]["max_position"] == 23  # ceil
    assert base_models.encoding_config("randomized", 64, s, max_eval_multiple=1)[1]["max_position"] == 64
    enc = ToyTransformer(base_models.base_spec(s, "randomized", "passkey", s.seeds[0], "cpu").model).encoding
    assert enc.max_position == default * s.task("passkey").train_length


@pytest.mark.parametrize("profile", list(base_models.SETUPS))
def test_settings_table_is_what_encoding_config_builds(profile):
    from ropelib.encodings import alibi_slopes, resolved_params

    s = base_models.base_setup(profile)
    for task in s.tasks:
        L = task.train_length
        df = base_models.encoding_settings(s, L)
        assert list(df.columns) == ["encoding", "parameter", "value", "rule", "source"]
        assert list(dict.fromkeys(df.encoding)) == list(s.encodings)  # every encoding, in setup order
        assert not df.duplicated(["encoding", "parameter"]).any()
        assert all(isinstance(t, str) and len(t) > 20 for t in [*df.rule, *df.source])
        for e in s.encodings:
            rows = df[df.encoding == e]
            assert set(rows.parameter) == _SETTINGS[e]
            name, params = base_models.encoding_config(e, L, s)
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
            enc = ToyTransformer(base_models.base_spec(s, e, task.name, s.seeds[0], "cpu").model).encoding
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
    s = base_models.base_setup("default")
    df = base_models.encoding_settings(s, 64, max_eval_multiple=4.0).set_index(["encoding", "parameter"])
    assert df.value["randomized", "max_position"] == 256 and "= 256" in df.rule["randomized", "max_position"]
    assert df.value["randomized", "eval_positions"] == "random"  # the paper's test protocol
    assert "at evaluation too" in df.rule["randomized", "eval_positions"]
    assert "bucket 31" in df.rule["t5", "max_distance"] and "= 63" in df.rule["t5", "max_distance"]
    assert "1/m = 256 tokens = 4.00 x L" in df.rule["alibi", "slopes"]
    assert "arXiv 2305.16843" in df.source["randomized", "max_position"]
    assert "arXiv 2310.04418" in df.source["fire", "init_threshold"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "64", None, np.float64(64.0)])
def test_encoding_config_rejects_bad_train_lengths(bad):
    s = base_models.base_setup("default")
    with pytest.raises(ValueError, match="train_length must be a positive integer"):
        base_models.encoding_config("rope", bad, s)
    with pytest.raises(ValueError, match="train_length must be a positive integer"):
        base_models.encoding_settings(s, bad)


@pytest.mark.parametrize("bad", [0.5, 0, -16.0, math.nan, math.inf, True, "16", None])
def test_encoding_config_rejects_bad_eval_multiples(bad):
    s = base_models.base_setup("default")
    with pytest.raises(ValueError, match="max_eval_multiple must be a finite number >= 1"):
        base_models.encoding_config("randomized", 64, s, max_eval_multiple=bad)
    with pytest.raises(ValueError, match="max_eval_multiple must be a finite number >= 1"):
        base_models.encoding_settings(s, 64, max_eval_multiple=bad)


def test_encoding_config_other_errors():
    s = base_models.base_setup("default")
    assert base_models.encoding_config("t5", 3, s) == ("t5", {"num_buckets": 3, "max_distance": 2})
    with pytest.raises(ValueError, match="t5 needs train_length >= 3"):
        base_models.encoding_config("t5", 2, s)
    assert base_models.encoding_config("rope", 1, s) == ("rope", {})  # the other encodings accept any positive L
    with pytest.raises(ValueError, match="setup must be a BaseSetup"):
        base_models.encoding_settings("default", 64)
    with pytest.raises(ValueError, match="unknown encoding 'roap'"):
        base_models.encoding_config("roap", 64, s, max_eval_multiple=16.0)
