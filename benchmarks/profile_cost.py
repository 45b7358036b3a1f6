"""How long would the models of a profile take to train? An estimate from measured training steps (on
``--device``) and from counted FLOPs (for a GPU this machine does not have), before committing to ``full``.

Every model the profile trains is listed: the base models of notebooks 04–06 (``ropelib.base_models.SETUPS``:
tasks x encodings x seeds), their learning-rate sweep (``ropelib.protocols.sweep_specs``: seed 0 at every
rate of a task's ``lrs`` for ``sweep_steps`` steps), and notebook 08's models (``--no-08`` leaves them out):
the RoPE variants x ``variant_seeds`` (``ropelib.rope_variants``; ``base_1e4`` is the base RoPE model), their
learning-rate sweep, and the training-length sweep (``ropelib.length_sweep``: ``length_encodings`` x
``train_lengths`` x ``length_seeds``, same tokens per step), with 08's knobs from ``profiles.yaml`` (the
notebook's defaults where the profile sets none). Models that are the same run (a length-sweep model at the
base length and a base seed) are counted once.

For each distinct shape (encoding, batch, length) it times ``--steps`` training steps (forward, backward,
AdamW update, after ``--warmup`` untimed steps; bf16 autocast and fused AdamW on CUDA as ``ropelib.train``
does; synchronised before the clock is read) and counts one step's FLOPs with
``torch.utils.flop_counter.FlopCounterMode`` (forward + backward of one sequence, times the batch; attention
over the full T x T square). Fine-tuning in 06 and all evaluation come on top (on ``default`` they were
about a third of 04–06's time).

Two totals: **measured** (the step times on this device times the steps) and **estimated** for an assumed
GPU: counted FLOPs / ``--assume-tflops`` plus ``--assume-step-ms`` of fixed cost per step (kernel launches,
the Python loop, the batch). The estimate is arithmetic on an assumption, not a measurement; the defaults
(100 TFLOP/s achieved, 10 % of an H100/H200's 989 dense bf16 TFLOP/s, and 3 ms per step) are this
project's guess for models this small.

    python benchmarks/profile_cost.py --profile full --flops-only                        # FLOP estimate on a CPU
    python benchmarks/profile_cost.py --profile full --device cuda                       # measured on a GPU
    python benchmarks/profile_cost.py --profile default --encodings rope alibi --no-08

Ends with one ``SUMMARY`` line: profile, device, measured base-model training time, measured time of every
model, and the FLOP-based estimate for the assumed GPU.
"""

from __future__ import annotations

import argparse
import ast
import platform
import time
from pathlib import Path

import nbformat
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ropelib import base_models, length_sweep, protocols, rope_variants
from ropelib.data import make_task
from ropelib.model import ToyTransformer, select_device
from ropelib.notebook_files import parameters_cell
from ropelib.profiles import load_profiles

REPO = Path(__file__).resolve().parents[1]
NB08 = "08_rope_base_and_attention"
#: the knobs of notebook 08 that decide what it trains
NB08_KNOBS = ("variants", "variant_seeds", "length_encodings", "train_lengths", "length_seeds")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fn(spec, device: torch.device, batch_size: int):
    """A closure running one training step of a fresh model of ``spec`` on a fixed batch of ``batch_size``."""
    torch.manual_seed(0)
    model = ToyTransformer(spec.model).to(device).train()
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=spec.train.lr, **fused)
    batch = make_task(spec.task).sample(batch_size, spec.train.seq_len, torch.Generator().manual_seed(0)).to(device)
    amp = device.type == "cuda" and spec.train.amp

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(batch.x)  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.y.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_per_step(spec, device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per training step of ``spec``'s model on one batch of its task (the mean over ``steps`` steps)."""
    step = _step_fn(spec, device, spec.train.batch_size)
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def flops_per_step(spec) -> float:
    """FLOPs of one training step of ``spec`` (forward + backward, counted on one sequence on the CPU in
    float32, times the batch size; attention through SDPA's math kernel so its products are counted; the
    optimiser's element-wise update is not counted)."""
    step = _step_fn(spec, torch.device("cpu"), 1)
    # the math kernel: attention as matrix products the counter sees (it has no formula for CPU flash)
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops()) * spec.train.batch_size


def _nb08(profile: str) -> dict:
    """Notebook 08's ``NB08_KNOBS``: its parameters cell's defaults, overridden by ``profiles.yaml``."""
    cell = parameters_cell(nbformat.read(REPO / "notebooks" / f"{NB08}.ipynb", as_version=4))
    defaults = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in NB08_KNOBS
    }
    knobs = load_profiles(REPO / "profiles.yaml").parameters(NB08, profile)
    return {k: knobs.get(k, defaults[k]) for k in NB08_KNOBS}


def profile_runs(profile: str, encodings: list[str], with_08: bool) -> list[tuple[str, str, object, int]]:
    """``(group, label, spec, n_runs)`` for every model the profile trains (the module docstring)."""
    setup = base_models.base_setup(profile)
    rows: list[tuple[str, str, object, int]] = []
    seen: set[str] = set()

    def add(group: str, label: str, spec, n: int = 1) -> None:
        if spec.hash() not in seen:
            seen.add(spec.hash())
            rows.append((group, label, spec, n))

    for ts in setup.tasks:
        for enc in encodings:
            for seed in setup.seeds:
                add("base", enc, base_models.base_spec(setup, enc, ts.name, seed, "cpu"))
    for (enc, _task, _lr), spec in protocols.sweep_specs(setup, "cpu").items():
        if enc in encodings:
            add("sweep", enc, spec)
    if not with_08 or "rope" not in setup.encodings:
        return rows
    nb = _nb08(profile)
    lm = rope_variants.lm_task(setup)
    ts = setup.task(lm)
    variant_seeds = [s for s in nb["variant_seeds"] if s in setup.seeds]
    for name in nb["variants"]:
        for seed in variant_seeds:
            add("08-variant", name, rope_variants.variant_spec(setup, name, seed, "cpu"))
        if ts.lrs:
            for lr in ts.lrs:
                steps = ts.sweep_steps or ts.steps
                spec = rope_variants.variant_spec(setup, name, protocols.SWEEP_SEED, "cpu", lr=lr, steps=steps)
                add("08-sweep", name, spec)
    length_encodings = [e for e in nb["length_encodings"] if e in encodings]
    seeds = [s for s in nb["length_seeds"] if s in setup.seeds]
    for (enc, L, _seed), spec in length_sweep.length_specs(
        setup, length_encodings, nb["train_lengths"], seeds=seeds
    ).items():
        add("08-length", f"{enc}@{L}", spec)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full", choices=list(base_models.SETUPS))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--encodings", nargs="+", default=None, help="a subset (default: the profile's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per shape")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs, time nothing (a slow CPU)")
    parser.add_argument("--no-08", dest="with_08", action="store_false", help="leave out notebook 08's models")
    parser.add_argument("--assume-tflops", type=float, default=100.0, help="achieved TFLOP/s of the assumed GPU")
    parser.add_argument("--assume-step-ms", type=float, default=3.0, help="fixed cost per step on the assumed GPU")
    parser.add_argument("--assume-gpu", default="H100/H200", help="name of the assumed GPU, for the printout")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    if args.assume_tflops <= 0 or args.assume_step_ms < 0:
        parser.error(
            f"--assume-tflops must be > 0 and --assume-step-ms >= 0, got {args.assume_tflops}, {args.assume_step_ms}"
        )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    setup = base_models.base_setup(args.profile)
    encodings = list(setup.encodings if args.encodings is None else args.encodings)
    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    runs = profile_runs(args.profile, encodings, args.with_08)
    print(
        f"profile {args.profile}: {len(encodings)} encodings x {len(setup.tasks)} tasks x {len(setup.seeds)} seeds, "
        f"d_model {setup.d_model}, {setup.n_layers} layers, {setup.n_heads} heads; {len(runs)} runs in all; "
        f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print(f"estimate for {args.assume_gpu}: counted FLOPs / {args.assume_tflops:g} TFLOP/s + {args.assume_step_ms:g} ms per step (an assumption, not a measurement)")  # fmt: skip
    print(
        f"{'group':<10} {'model':<13} {'task':<8} {'B':>4} {'T':>5} {'steps':>6} {'runs':>4} {'ms/step':>9} "
        f"{'tokens/s':>10} {'GFLOP/step':>11} {'min meas.':>9} {'min est.':>8}"
    )
    shape_cache: dict[tuple, tuple[float, float]] = {}
    totals = {"base": 0.0, "all": 0.0, "est": 0.0, "tokens": 0.0}
    printed: dict[tuple, dict] = {}
    for group, label, spec, n in runs:
        enc = spec.model.encoding
        key = (enc, spec.task.name, spec.model.vocab_size, spec.train.batch_size, spec.train.seq_len)
        if key not in shape_cache:
            dt = float("nan") if args.flops_only else time_per_step(spec, device, args.steps, args.warmup)
            shape_cache[key] = (dt, flops_per_step(spec))
        dt, flops = shape_cache[key]
        steps = spec.train.steps * n
        measured = dt * steps
        estimated = steps * (flops / (args.assume_tflops * 1e12) + args.assume_step_ms / 1e3)
        totals["all"] += measured
        totals["est"] += estimated
        totals["base"] += measured if group == "base" else 0.0
        totals["tokens"] += spec.train.batch_size * spec.train.seq_len * steps
        row = printed.setdefault(
            (group, label, spec.task.name, spec.train.batch_size, spec.train.seq_len, spec.train.steps),
            {"runs": 0, "measured": 0.0, "estimated": 0.0, "dt": dt, "flops": flops},
        )  # one printed row per (group, model, task, shape): the seeds summed
        row["runs"] += n
        row["measured"] += measured
        row["estimated"] += estimated
    for (group, label, task, B, T, steps), row in printed.items():
        print(
            f"{group:<10} {label:<13} {task:<8} {B:>4} {T:>5} {steps:>6} {row['runs']:>4} {row['dt'] * 1e3:>9.1f} "
            f"{B * T / row['dt']:>10.0f} {row['flops'] / 1e9:>11.3f} {row['measured'] / 60:>9.2f} "
            f"{row['estimated'] / 60:>8.2f}"
        )
    print(f"training tokens in all: {totals['tokens'] / 1e9:.2f} G")
    print(
        f"SUMMARY profile={args.profile} device={device.type} base-model training, one process: "
        f"{totals['base'] / 3600:.2f} h ({totals['base'] / 60:.1f} min); every model: measured "
        f"{totals['all'] / 60:.1f} min; estimated for {args.assume_gpu} at {args.assume_tflops:g} TFLOP/s + "
        f"{args.assume_step_ms:g} ms/step: {totals['est'] / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
