"""Tests of the evaluation cache (ropelib.memo): computed once, keyed by everything, invalidated by code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ropelib import fingerprint, memo


@pytest.fixture
def counter():
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"loss": [1.0, np.nan], "length": [64, 128]})

    return calls, compute


def test_computed_once_then_read_back_exactly(tmp_path, counter):
    calls, compute = counter
    key = {"run": "abc", "lengths": [64, 128], "n": np.int64(3), "frac": np.float32(0.5)}
    a = memo.cached("lm_loss", key, compute, cache_dir=tmp_path)
    b = memo.cached("lm_loss", dict(key), compute, cache_dir=tmp_path)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(a, b)
    assert memo.eval_path("lm_loss", key, tmp_path).is_file()


def test_every_part_of_the_key_and_name_matters(tmp_path, counter):
    calls, compute = counter
    memo.cached("lm_loss", {"run": "abc", "n": 3}, compute, cache_dir=tmp_path)
    memo.cached("lm_loss", {"run": "abd", "n": 3}, compute, cache_dir=tmp_path)
    memo.cached("lm_loss", {"run": "abc", "n": 4}, compute, cache_dir=tmp_path)
    memo.cached("retrieval", {"run": "abc", "n": 3}, compute, cache_dir=tmp_path)
    assert len(calls) == 4


def test_library_code_change_invalidates(tmp_path, counter, monkeypatch):
    calls, compute = counter
    memo.cached("x", {"a": 1}, compute, cache_dir=tmp_path)
    monkeypatch.setattr(memo, "code_fingerprint", lambda: "0" * 64)
    memo.cached("x", {"a": 1}, compute, cache_dir=tmp_path)
    assert len(calls) == 2


def test_fingerprint_covers_the_package_sources():
    fp = memo.code_fingerprint()
    assert len(fp) == 64 and fp == memo.code_fingerprint()
    assert fp == fingerprint.fingerprint(fingerprint.read_sources(["**/*.py"]))  # every module, normalised


def test_corrupt_entry_is_recomputed_and_replaced(tmp_path, counter):
    calls, compute = counter
    path = memo.eval_path("x", {"a": 1}, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a pickle")
    with pytest.warns(UserWarning, match=rf"evaluation cache entry .*{path.name} is unreadable \(UnpicklingError"):
        out = memo.cached("x", {"a": 1}, compute, cache_dir=tmp_path)
    assert len(calls) == 1 and list(out.length) == [64, 128]
    memo.cached("x", {"a": 1}, compute, cache_dir=tmp_path)
    assert len(calls) == 1


def test_disabled_by_environment(tmp_path, counter, monkeypatch):
    calls, compute = counter
    monkeypatch.setenv("ROPELIB_EVAL_CACHE", "0")
    memo.cached("x", {"a": 1}, compute, cache_dir=tmp_path)
    memo.cached("x", {"a": 1}, compute, cache_dir=tmp_path)
    assert len(calls) == 2 and not (tmp_path / "evals").exists()


def test_failed_compute_stores_nothing(tmp_path):
    def boom():
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError):
        memo.cached("x", {"a": 1}, boom, cache_dir=tmp_path)
    assert not memo.eval_path("x", {"a": 1}, tmp_path).exists()


@pytest.mark.parametrize(
    "name, key, match",
    [
        ("bad name", {"a": 1}, "name must be"),
        ("", {"a": 1}, "name must be"),
        ("x", [1, 2], "key must be a mapping"),
        ("x", {"model": object()}, r"key\.model: object is not allowed"),
        ("x", {"a": {1: 2}}, "mapping keys must be strings"),
    ],
)
def test_bad_names_and_keys(tmp_path, name, key, match):
    with pytest.raises(ValueError, match=match):
        memo.cached(name, key, lambda: 0, cache_dir=tmp_path)


def test_versioned_adds_the_version_to_every_key(tmp_path, counter, monkeypatch):
    calls, compute = counter
    monkeypatch.setenv("ROPELIB_CACHE_DIR", str(tmp_path))
    v1, v1_again, v2 = memo.versioned(1), memo.versioned(1), memo.versioned(2)
    v1("x", {"a": 1}, compute)
    v1_again("x", {"a": 1}, compute)
    assert len(calls) == 1
    v2("x", {"a": 1}, compute)
    memo.cached("x", {"a": 1}, compute)  # unversioned: another entry
    assert len(calls) == 3
    assert memo.eval_path("x", {"a": 1, "eval_version": 1}).is_file()
    with pytest.raises(ValueError, match="eval_version"):
        memo.versioned(object())
    with pytest.raises(ValueError, match="key must be a mapping"):
        v1("x", [1], compute)
