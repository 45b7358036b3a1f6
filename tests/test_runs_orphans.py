"""Sweep workers never outlive the process that started them (issue 14, case 1, worker side): a sweep
of two long tiny runs with two spawned workers runs in a subprocess; once both workers are training, the
subprocess is killed with SIGKILL (as a kernel is) or interrupted with SIGINT (Ctrl-C), and every process
it had started — the workers and multiprocessing's resource tracker — must be gone within seconds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import ropelib.encodings.nope  # noqa: F401  (registers "nope")
from ropelib.data import TaskConfig
from ropelib.model import ModelConfig
from ropelib.paths import REPO_ROOT
from ropelib.runs import RunSpec, run_dir
from ropelib.train import CHECKPOINT_NAME, TrainConfig

psutil = pytest.importorskip("psutil")
if not hasattr(signal, "SIGKILL"):
    pytest.skip("no SIGKILL on this platform", allow_module_level=True)

#: seconds the workers get to disappear after their parent is gone (the fallback watcher polls every 1 s)
GRACE_S = 15


def long_spec(seq_len: int) -> RunSpec:
    """A tiny model with far more steps than the test waits for: its worker is busy when the parent dies."""
    model = ModelConfig(vocab_size=15, n_layers=1, n_heads=2, d_model=16, encoding="nope")
    train = TrainConfig(
        steps=1_000_000, batch_size=2, seq_len=seq_len, warmup_steps=1, checkpoint_every=5, device="cpu"
    )
    return RunSpec(model=model, task=TaskConfig("passkey"), train=train)


def start_sweep(cache):
    specs = [long_spec(12), long_spec(14)]
    script = textwrap.dedent(
        f"""
        import json, signal
        # Ctrl-C raises KeyboardInterrupt, as in a Jupyter kernel, even where the test runner started this
        # process with SIGINT ignored (Python then installs no handler of its own)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from ropelib.runs import RunSpec, sweep
        specs = [RunSpec.from_dict(d) for d in json.loads({json.dumps(json.dumps([s.to_dict() for s in specs]))})]
        sweep(specs, max_workers=2, cache_dir={str(cache)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
    checkpoints = [run_dir(s, cache) / CHECKPOINT_NAME for s in specs]
    deadline = time.time() + 180
    try:
        while not all(c.exists() for c in checkpoints):  # both workers are training
            assert proc.poll() is None, "the sweep ended before both workers trained"
            assert time.time() < deadline, "the workers did not start training within 180 s"
            time.sleep(0.2)
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    assert len(descendants) >= 2, descendants  # two workers (and the resource tracker)
    return proc, descendants


def alive(procs):
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_until_gone(procs, seconds):
    deadline = time.time() + seconds
    while alive(procs) and time.time() < deadline:
        time.sleep(0.2)
    survivors = []
    for p in alive(procs):  # leave nothing behind, whatever the outcome
        try:
            survivors.append((p.pid, " ".join(p.cmdline())[:200]))
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return survivors


@pytest.mark.slow  # three Python processes, each importing torch
def test_workers_die_when_the_sweeping_process_is_killed(tmp_path):
    proc, descendants = start_sweep(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survivors = wait_until_gone(descendants, GRACE_S)
    assert not survivors, survivors


@pytest.mark.slow
def test_ctrl_c_terminates_the_workers(tmp_path):
    proc, descendants = start_sweep(tmp_path)
    proc.send_signal(signal.SIGINT)  # to the sweeping process alone, as a kernel's interrupt is
    try:
        returncode = proc.wait(timeout=GRACE_S + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        wait_until_gone(descendants, 0)
        pytest.fail("the interrupted sweep waited for its workers instead of terminating them")
    assert returncode != 0
    survivors = wait_until_gone(descendants, GRACE_S)
    assert not survivors, survivors
