"""Fault tests of the run cache (issue 14, case 3): a truncated ``model.pt``, a truncated or garbage
``checkpoint.pt``, garbage in ``metadata.json`` or ``spec.json``, a flipped byte — each is reported with a
warning naming the file, then the run resumes from its checkpoint if that is good, or trains again, and
ends with the weights an untouched cache gives. Also: entries without checksums (older writers) are still
read, tensors are never unpickled beyond ``weights_only``, and the evaluation cache names what it
recomputes."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings

import pytest
import torch

import ropelib.encodings.nope  # noqa: F401  (registers "nope")
import ropelib.runs as runs
from ropelib import memo
from ropelib.data import TaskConfig
from ropelib.model import ModelConfig
from ropelib.runs import RunSpec, is_finished, run, run_dir
from ropelib.train import CHECKPOINT_NAME, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


def tiny_spec(steps: int = 3) -> RunSpec:
    model = ModelConfig(vocab_size=15, n_layers=1, n_heads=2, d_model=16, encoding="nope")
    train = TrainConfig(
        steps=steps, batch_size=4, seq_len=16, warmup_steps=1, lr=1e-2, checkpoint_every=1, device="cpu"
    )
    return RunSpec(model=model, task=TaskConfig("passkey"), train=train)


@pytest.fixture
def reference(tmp_path):
    """An untouched run of the tiny spec (its own cache folder)."""
    return run(tiny_spec(), cache_dir=tmp_path / "reference", progress=False)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_repaired(result, reference, cache):
    """``result`` was trained (not read back) to the reference's weights, and the entry is sound again:
    the next run() reads it back without a warning."""
    assert not result.cached
    assert same_weights(result.model, reference.model)
    assert [h["loss"] for h in result.history] == [h["loss"] for h in reference.history]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = run(result.spec, cache_dir=cache, progress=False)
    assert again.cached and same_weights(again.model, reference.model)


def finished_entry(cache):
    spec = tiny_spec()
    run(spec, cache_dir=cache, progress=False)
    return spec, run_dir(spec, cache)


def test_a_finished_entry_records_the_code_and_each_files_checksum(tmp_path):
    spec, path = finished_entry(tmp_path)
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["code"] == runs.code_fingerprint() == json.loads((path / "spec.json").read_text())["code"]
    assert set(metadata["files"]) == {"spec.json", "model.pt", "history.json"}
    model_bytes = (path / "model.pt").read_bytes()
    assert metadata["files"]["model.pt"]["bytes"] == len(model_bytes)
    assert metadata["files"]["model.pt"]["sha256"] == hashlib.sha256(model_bytes).hexdigest()


def test_truncated_model_resumes_from_the_final_checkpoint(tmp_path, reference):
    spec, path = finished_entry(tmp_path)
    data = (path / "model.pt").read_bytes()
    (path / "model.pt").write_bytes(data[: len(data) // 2])
    assert not is_finished(spec, tmp_path)  # the cheap check sees the size: a sweep resubmits it
    with pytest.warns(UserWarning, match=r"model\.pt has \d+ bytes, \d+ were written") as record:
        result = run(spec, cache_dir=tmp_path, progress=False)
    assert str(path) in str(record[0].message)
    assert result.metadata["resumed_from_step"] == 3  # restored from the final checkpoint, no retraining
    assert (path / "model.pt.corrupt").exists()
    assert_repaired(result, reference, tmp_path)


def test_truncated_model_without_a_checkpoint_trains_again(tmp_path, reference):
    spec, path = finished_entry(tmp_path)
    (path / CHECKPOINT_NAME).unlink()
    data = (path / "model.pt").read_bytes()
    (path / "model.pt").write_bytes(data[:100])
    with pytest.warns(UserWarning, match=r"model\.pt"):
        result = run(spec, cache_dir=tmp_path, progress=False)
    assert result.metadata["resumed_from_step"] == 0
    assert_repaired(result, reference, tmp_path)


def test_a_flipped_byte_in_the_model_is_caught_by_the_checksum(tmp_path, reference):
    spec, path = finished_entry(tmp_path)
    data = bytearray((path / "model.pt").read_bytes())
    data[-200] ^= 0xFF  # same size, still perhaps loadable: only the SHA-256 tells
    (path / "model.pt").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"model\.pt has another SHA-256"):
        result = run(spec, cache_dir=tmp_path, progress=False)
    assert_repaired(result, reference, tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_bad_checkpoint_of_an_unfinished_run_trains_from_scratch(tmp_path, reference, damage):
    spec = tiny_spec()
    path = run_dir(spec, tmp_path)
    run(spec, cache_dir=tmp_path, progress=False)
    (path / "metadata.json").unlink()  # as if killed after the last checkpoint: unfinished
    ckpt = path / CHECKPOINT_NAME
    data = ckpt.read_bytes()
    ckpt.write_bytes(
        {"garbage": b"\x00garbage\xff" * 50, "truncated": data[: len(data) * 2 // 3], "empty": b""}[damage]
    )
    with pytest.warns(UserWarning, match=r"checkpoint\.pt is not a readable torch file.*from step 0") as record:
        result = run(spec, cache_dir=tmp_path, progress=False)
    assert str(path) in str(record[0].message)
    assert result.metadata["resumed_from_step"] == 0 and (path / "checkpoint.pt.corrupt").exists()
    assert_repaired(result, reference, tmp_path)


def test_checkpoint_of_another_model_is_not_resumed(tmp_path, reference):
    spec = tiny_spec()
    path = run_dir(spec, tmp_path)
    path.mkdir(parents=True)
    torch.save(
        {
            "step": 2,
            "model": {"w": torch.zeros(2)},
            "optimizer": {},
            "scheduler": {},
            "rng": {},
            "history": [],
            "train_config": {},
        },
        path / CHECKPOINT_NAME,
    )
    with pytest.warns(UserWarning, match=r"checkpoint\.pt does not hold the weights of this spec's model"):
        result = run(spec, cache_dir=tmp_path, progress=False)
    assert_repaired(result, reference, tmp_path)


@pytest.mark.parametrize("name", ["metadata.json", "spec.json", "history.json"])
def test_garbage_json_is_reported_and_the_run_restored(tmp_path, reference, name):
    spec, path = finished_entry(tmp_path)
    (path / name).write_bytes(b"{not json\x00\xff")
    with pytest.warns(UserWarning, match=rf"{name.replace('.', '[.]')} (is not valid JSON|has \d+ bytes)"):
        result = run(spec, cache_dir=tmp_path, progress=False)
    assert result.metadata["resumed_from_step"] == 3  # the final checkpoint was good
    assert_repaired(result, reference, tmp_path)


def test_metadata_that_is_json_but_not_metadata(tmp_path, reference):
    spec, path = finished_entry(tmp_path)
    (path / "metadata.json").write_text("[1, 2, 3]")
    with pytest.warns(UserWarning, match=r"metadata\.json is not a run's metadata"):
        result = run(spec, cache_dir=tmp_path, progress=False)
    assert_repaired(result, reference, tmp_path)


def strip_checksums(path):
    """Make the entry look like one written before checksums and the code fingerprint existed."""
    metadata = json.loads((path / "metadata.json").read_text())
    del metadata["files"], metadata["code"]
    (path / "metadata.json").write_text(json.dumps(metadata))
    stored = json.loads((path / "spec.json").read_text())
    del stored["code"]
    (path / "spec.json").write_text(json.dumps(stored))


def test_entry_without_checksums_is_still_read_back(tmp_path, reference):
    spec, path = finished_entry(tmp_path)
    strip_checksums(path)
    assert is_finished(spec, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(spec, cache_dir=tmp_path, progress=False)
    assert result.cached and same_weights(result.model, reference.model)


class NotATensor:  # unpickling this needs a global that weights_only refuses
    pass


def test_entry_without_checksums_is_verified_by_a_safe_load(tmp_path, reference):
    spec, path = finished_entry(tmp_path)
    strip_checksums(path)
    (path / "model.pt").write_bytes(pickle.dumps({"weights": NotATensor()}, protocol=2))
    with pytest.warns(UserWarning, match=r"model\.pt is not a readable torch file"):
        result = run(spec, cache_dir=tmp_path, progress=False)
    assert_repaired(result, reference, tmp_path)


def test_truncated_evaluation_entry_is_recomputed_with_a_warning(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"loss": [1.0, 2.0] * 100}

    memo.cached("x", {"a": 1}, compute, cache_dir=tmp_path)
    path = memo.eval_path("x", {"a": 1}, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=rf"evaluation cache entry {re.escape(str(path))}.*recomputing"):
        out = memo.cached("x", {"a": 1}, compute, cache_dir=tmp_path)
    assert len(calls) == 2 and out == compute()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        memo.cached("x", {"a": 1}, compute, cache_dir=tmp_path)  # replaced: read back silently
    assert len(calls) == 3  # (the compute() in the assertion above)
