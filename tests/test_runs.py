"""Tests of ropelib.runs: spec hashing, the run cache (hit, miss, resume after a crash or SIGKILL, lock),
fine-tuning from a parent, and sweeps through the default executor and submitit."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

import ropelib.encodings.learned  # noqa: F401  (registers "learned" even before the package imports it)
import ropelib.encodings.nope  # noqa: F401
import ropelib.runs as runs
import ropelib.train as train_module
from ropelib.data import TaskConfig
from ropelib.model import ModelConfig
from ropelib.paths import REPO_ROOT
from ropelib.runs import RunSpec, is_finished, run, run_dir, sweep
from ropelib.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


VOCAB = 10 + 4 + 1  # passkey with n_filler=4: digits, fillers, KEY


def spec_for(steps=4, seq_len=16, encoding="nope", parent=None, lr=1e-2, device="cpu", checkpoint_every=2, **enc):
    model = ModelConfig(vocab_size=VOCAB, n_layers=1, n_heads=2, d_model=16, encoding=encoding, encoding_params=enc)
    train = TrainConfig(
        steps=steps,
        batch_size=4,
        seq_len=seq_len,
        warmup_steps=1,
        lr=lr,
        checkpoint_every=checkpoint_every,
        device=device,
    )
    return RunSpec(model=model, task=TaskConfig("passkey"), train=train, parent=parent)


# -- spec and hash ------------------------------------------------------------------------------------


def test_hash_is_stable_and_ignores_only_the_device():
    a = spec_for()
    assert a.hash() == spec_for().hash() and len(a.hash()) == 64
    assert a.hash() == spec_for(device="auto").hash()  # device recorded, not hashed
    assert a.hash() != spec_for(seq_len=32).hash()
    assert a.hash() != spec_for(lr=2e-2).hash()
    assert a.hash() != spec_for(parent=spec_for(steps=2)).hash()
    assert spec_for(parent=spec_for(device="auto")).hash() == spec_for(parent=spec_for()).hash()
    assert RunSpec.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_spec_rejects_wrong_types():
    with pytest.raises(ValueError, match="RunSpec.train"):
        RunSpec(model=spec_for().model, task=TaskConfig("passkey"), train={"steps": 3})
    with pytest.raises(ValueError, match="parent"):
        RunSpec(model=spec_for().model, task=TaskConfig("passkey"), train=spec_for().train, parent="abc")


def test_unknown_task_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="unknown task 'nonexistent'"):
        TaskConfig("nonexistent")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=-1)


def test_unavailable_device_raises_before_training(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="'cuda'"):
        run(spec_for(device="cuda"), cache_dir=tmp_path, progress=False)
    assert not (run_dir(spec_for(), tmp_path)).exists()


# -- cache hit and miss -------------------------------------------------------------------------------


def test_miss_trains_and_hit_reads_back_without_training(tmp_path, monkeypatch):
    spec = spec_for()
    first = run(spec, cache_dir=tmp_path, progress=False)
    assert not first.cached and first.path == run_dir(spec, tmp_path) and is_finished(spec, tmp_path)
    assert [h["step"] for h in first.history] == [1, 2, 3, 4]
    md = first.metadata
    assert md["hash"] == spec.hash() and md["device"] == "cpu" and md["wall_time_s"] > 0
    assert md["task_info"]["task"] == "passkey" and md["versions"]["torch"] == torch.__version__
    assert md["num_parameters"] == first.model.num_parameters() and md["resumed_from_step"] == 0

    def forbidden(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(runs, "train", forbidden)
    second = run(spec, cache_dir=tmp_path, progress=False)
    assert second.cached and second.history == first.history and second.metadata == md
    assert not second.model.training
    for p, q in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(p, q)


def test_default_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ROPELIB_CACHE_DIR", str(tmp_path / "elsewhere"))
    result = run(spec_for(steps=1), progress=False)
    assert result.path.is_relative_to(tmp_path / "elsewhere")


def test_chars_run_records_corpus_provenance(tmp_path):
    from ropelib.data import make_task

    spec = RunSpec(
        model=ModelConfig(vocab_size=make_task("chars").vocab_size, n_layers=1, n_heads=2, d_model=16, encoding="nope"),
        task=TaskConfig("chars"),
        train=TrainConfig(steps=1, batch_size=2, seq_len=8, warmup_steps=0, device="cpu"),
    )
    info = run(spec, cache_dir=tmp_path, progress=False).metadata["task_info"]
    assert len(info["sha256"]) == 64 and "pydoc_data" in info["source"] and info["python_version"]


# -- interruption -------------------------------------------------------------------------------------


def test_crash_during_a_checkpoint_write_resumes(tmp_path, monkeypatch):
    """The second checkpoint write dies halfway (a torn temp file, then an exception): the cache keeps
    the first checkpoint, and the next run() resumes from it and ends where an uninterrupted run does."""
    spec = spec_for(steps=6, checkpoint_every=2)
    reference = run(spec, cache_dir=tmp_path / "reference", progress=False)

    real_write = train_module.atomic_write_bytes
    calls = {"n": 0}

    def dying_write(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).with_name(f".{Path(path).name}.torn.tmp").write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt("killed while writing the checkpoint")
        return real_write(path, data)

    monkeypatch.setattr(train_module, "atomic_write_bytes", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run(spec, cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.undo()

    path = run_dir(spec, tmp_path / "cache")
    assert not is_finished(spec, tmp_path / "cache")
    assert load_checkpoint(path)["step"] == 2  # the last complete checkpoint is intact
    resumed = run(spec, cache_dir=tmp_path / "cache", progress=False)
    assert resumed.metadata["resumed_from_step"] == 2
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in reference.history]
    for p, q in zip(reference.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(p, q)


def test_sigkill_mid_run_resumes(tmp_path):
    """A subprocess training the spec is killed with SIGKILL after its first checkpoint; run() then
    resumes from a step > 0 and finishes with the same losses as an uninterrupted run."""
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    spec = spec_for(steps=60, checkpoint_every=5)
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import json, torch
        torch.set_num_threads(1)
        import ropelib.encodings.nope
        from ropelib.runs import RunSpec, run
        spec = RunSpec.from_dict(json.loads({json.dumps(json.dumps(spec.to_dict()))}))
        run(spec, cache_dir={str(cache)!r}, progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)
    ckpt = run_dir(spec, cache) / CHECKPOINT_NAME
    try:
        deadline = time.time() + 120
        while not ckpt.exists():
            assert proc.poll() is None, "the training subprocess ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not is_finished(spec, cache)
    killed_at = load_checkpoint(run_dir(spec, cache))["step"]
    assert 0 < killed_at < 60

    # CPU float reductions depend on the thread count: resume and compare with the subprocess's one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = run(spec, cache_dir=cache, progress=False)
        reference = run(spec, cache_dir=tmp_path / "reference", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert resumed.metadata["resumed_from_step"] >= killed_at
    assert [h["step"] for h in resumed.history] == list(range(1, 61))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in reference.history]


def test_two_concurrent_runs_of_one_spec_train_once(tmp_path):
    spec = spec_for(steps=6)
    results = [None, None]

    def go(i):
        results[i] = run(spec, cache_dir=tmp_path, progress=False)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.cached for r in results) == [False, True]
    assert results[0].history == results[1].history


# -- fine-tuning --------------------------------------------------------------------------------------


def test_fine_tune_starts_from_the_parent_weights(tmp_path):
    parent = spec_for(steps=4)
    # a near-zero learning rate: after one step the child's weights are still the parent's
    child = spec_for(steps=1, seq_len=32, lr=1e-12, parent=parent)
    result = run(child, cache_dir=tmp_path, progress=False)
    assert is_finished(parent, tmp_path) and result.metadata["parent_hash"] == parent.hash()
    parent_model = run(parent, cache_dir=tmp_path, progress=False).model
    for (name, p), q in zip(parent_model.named_parameters(), result.model.parameters()):
        assert torch.allclose(p, q, atol=1e-9), name
    # and not just the same initialisation: a child without parent ends elsewhere
    orphan = run(spec_for(steps=1, seq_len=32, lr=1e-12), cache_dir=tmp_path, progress=False).model
    assert not all(torch.allclose(p, q, atol=1e-6) for p, q in zip(parent_model.parameters(), orphan.parameters()))


def test_fine_tune_with_mismatched_parameters_is_refused(tmp_path):
    parent = spec_for(steps=1, encoding="learned", max_positions=16)
    child = spec_for(steps=1, seq_len=32, encoding="learned", max_positions=32, parent=parent)
    with pytest.raises(ValueError, match="shapes differ"):
        run(child, cache_dir=tmp_path, progress=False)


# -- sweeps -------------------------------------------------------------------------------------------


def test_sweep_with_default_process_pool(tmp_path):
    specs = [spec_for(steps=2), spec_for(steps=3), spec_for(steps=2)]  # a duplicate runs once
    results = sweep(specs, max_workers=1, cache_dir=tmp_path)  # one spawned process: each pays a torch import
    assert [len(r.history) for r in results] == [2, 3, 2]
    assert not any(r.cached for r in results)  # trained by this sweep (in the workers), read back here
    assert results[0].hash == results[2].hash
    assert {r.metadata["torch_threads"] for r in results} == {os.cpu_count() or 1}  # cpu_count // workers

    class Refusing(concurrent.futures.Executor):
        def submit(self, fn, *args, **kwargs):
            raise AssertionError("finished specs must not be submitted")

    again = sweep(specs, executor=Refusing(), cache_dir=tmp_path)
    assert [r.hash for r in again] == [r.hash for r in results] and all(r.cached for r in again)


def test_sweep_with_submitit(tmp_path):
    """Through submitit's API (``submit`` -> ``Job.result()``), with its in-process DebugExecutor:
    its LocalExecutor / AutoExecutor take the same calls but pay a fresh torch import per job."""
    submitit = pytest.importorskip("submitit")
    executor = submitit.DebugExecutor(folder=tmp_path / "submitit")
    specs = [spec_for(steps=2, seq_len=12), spec_for(steps=2, seq_len=14)]
    results = sweep(specs, executor=executor, cache_dir=tmp_path / "cache")
    assert [r.spec for r in results] == specs
    assert all(not r.cached and len(r.history) == 2 for r in results)
    assert list((tmp_path / "submitit").iterdir())  # the jobs really went through submitit


def test_sweep_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="item 1"):
        sweep([spec_for(), "not a spec"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="max_workers"):
        sweep([spec_for()], max_workers=0, cache_dir=tmp_path)


def test_a_worker_with_other_training_code_refuses(tmp_path):
    """A worker whose fingerprint differs from the sweeping process's (a file edited after the kernel
    imported ropelib) would train under a hash the caller never looks up: it refuses instead."""
    spec = spec_for(steps=1)
    with pytest.raises(RuntimeError, match="training code changed since the sweeping process imported"):
        runs._sweep_worker(spec, str(tmp_path), None, "0" * 64)
    assert not run_dir(spec, tmp_path).exists()
    assert runs._sweep_worker(spec, str(tmp_path), None, spec.hash()) == spec.hash()


# -- sweep progress -----------------------------------------------------------------------------------


def test_sweep_progress_line_counts_cached_and_trained_and_estimates(tmp_path):
    now = [100.0]
    status = tmp_path / "progress.txt"
    report = runs.SweepProgress(total=5, cached=2, bar=False, status_file=status, clock=lambda: now[0])
    assert report.line() == ("sweep: 2 of 5 runs finished (2 cached, 0 trained); elapsed 0s, "
                             "estimated left unknown")  # fmt: skip
    assert status.read_text() == report.line() + "\n"
    now[0] = 130.0
    report.advance()  # one trained in 30 s: 2 to go, ~60 s
    assert report.line() == "sweep: 3 of 5 runs finished (2 cached, 1 trained); elapsed 30s, estimated left 1m00s"
    assert status.read_text().strip() == report.line()
    now[0] = 190.0
    report.advance()
    report.advance()
    assert report.remaining() == 0.0 and "5 of 5 runs finished (2 cached, 3 trained)" in status.read_text()
    runs.SweepProgress(1, 0, bar=False, status_file=tmp_path / "missing" / "dir" / "x").advance()  # never fails


def test_sweep_reports_progress_to_the_status_file_and_stderr(tmp_path, monkeypatch, capsys):
    """Through an in-process executor (no spawned interpreter): the status file ends at N of N, the bar is on
    stderr by default, and off inside a notebook run_all executes (its stderr lands in the notebook)."""
    status = tmp_path / "progress.txt"
    monkeypatch.setenv(runs.PROGRESS_FILE_ENV, str(status))
    monkeypatch.delenv("ROPELIB_NOTEBOOK", raising=False)
    specs = [spec_for(steps=1, seq_len=12), spec_for(steps=1, seq_len=14), spec_for(steps=1, seq_len=12)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        sweep(specs, executor=executor, cache_dir=tmp_path / "cache")
    assert status.read_text().startswith("sweep: 2 of 2 runs finished (0 cached, 2 trained); elapsed ")  # distinct runs
    err = capsys.readouterr().err
    assert "sweep: 100%" in err and "2/2 runs" in err and "0 cached, 2 trained" in err

    monkeypatch.setenv("ROPELIB_NOTEBOOK", "04_x")
    more = specs + [spec_for(steps=1, seq_len=10)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        sweep(more, executor=executor, cache_dir=tmp_path / "cache")
    assert status.read_text().startswith("sweep: 3 of 3 runs finished (2 cached, 1 trained)")
    assert "sweep" not in capsys.readouterr().err  # no bar in a notebook run_all executes
    sweep(specs, executor=executor, cache_dir=tmp_path / "cache", progress=True)  # all cached: nothing submitted
    assert "2/2 runs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="progress"):
        sweep(specs, cache_dir=tmp_path / "cache", progress="yes")


def test_sweep_failure_propagates_and_closes_the_progress(tmp_path, monkeypatch):
    status = tmp_path / "progress.txt"
    monkeypatch.setenv(runs.PROGRESS_FILE_ENV, str(status))

    class Failing(concurrent.futures.Executor):
        def submit(self, fn, *args, **kwargs):
            future = concurrent.futures.Future()
            future.set_exception(RuntimeError("worker died"))
            return future

    with pytest.raises(RuntimeError, match="worker died"):
        sweep([spec_for(steps=1)], executor=Failing(), cache_dir=tmp_path, progress=False)
    assert status.read_text().startswith("sweep: 0 of 1 runs finished")
