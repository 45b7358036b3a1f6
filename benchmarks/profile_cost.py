"""How long would the base models of a profile (notebooks 04–06, ``ropelib.base_models.SETUPS``) take to
train on this machine? An estimate from measured training steps, before committing hours to ``full``.

For each task of the profile's ``BaseSetup`` it builds the real ``RunSpec`` of every encoding (seed 0),
times ``--steps`` training steps (forward, backward, AdamW update; batch and length of the spec, after
``--warmup`` untimed steps) and multiplies the time per step by the spec's step count and the number of
seeds. Fine-tuning in 06 and all evaluation come on top (on ``default`` they were about a third of
04–06's cold time). On CUDA the steps are synchronised before the clock is read.

    python benchmarks/profile_cost.py --profile full               # on this machine's default device
    python benchmarks/profile_cost.py --profile full --device cuda
    python benchmarks/profile_cost.py --profile default --encodings rope alibi

Ends with one ``SUMMARY`` line: profile, device, estimated training hours for all base models.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from ropelib import base_models
from ropelib.data import make_task
from ropelib.model import ToyTransformer, select_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_step(spec, device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per training step of ``spec``'s model on one batch of its task (the mean over ``steps`` steps)."""
    torch.manual_seed(0)
    model = ToyTransformer(spec.model).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.train.lr)
    batch = (
        make_task(spec.task)
        .sample(spec.train.batch_size, spec.train.seq_len, torch.Generator().manual_seed(0))
        .to(device)
    )

    def step() -> None:
        logits = model(batch.x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full", choices=list(base_models.SETUPS))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--encodings", nargs="+", default=None, help="a subset (default: the profile's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per (task, encoding)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    setup = base_models.base_setup(args.profile)
    encodings = list(setup.encodings if args.encodings is None else args.encodings)
    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"profile {args.profile}: {len(encodings)} encodings x {len(setup.tasks)} tasks x {len(setup.seeds)} seeds; "
        f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print(f"{'task':<9} {'encoding':<11} {'B':>4} {'T':>5} {'steps':>6} {'ms/step':>9} {'tokens/s':>10} {'min/run':>8}")
    total_s = 0.0
    for task in setup.tasks:
        for enc in encodings:
            spec = base_models.base_spec(setup, enc, task.name, setup.seeds[0], str(device))
            dt = time_per_step(spec, device, args.steps, args.warmup)
            run_s = dt * spec.train.steps
            total_s += run_s * len(setup.seeds)
            tokens = spec.train.batch_size * spec.train.seq_len
            print(
                f"{task.name:<9} {enc:<11} {spec.train.batch_size:>4} {spec.train.seq_len:>5} {spec.train.steps:>6} "
                f"{dt * 1e3:>9.1f} {tokens / dt:>10.0f} {run_s / 60:>8.2f}"
            )
    print(
        f"SUMMARY profile={args.profile} device={device.type} base-model training, one process: "
        f"{total_s / 3600:.2f} h ({total_s / 60:.1f} min)"
    )


if __name__ == "__main__":
    main()
