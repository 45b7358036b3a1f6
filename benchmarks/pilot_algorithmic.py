"""Pilot the copy and reverse models (Kazemnejad et al. 2023) of a profile: exact match at 1x and 2x, and their cost.

"Pilot, then scale": before a profile trains copy/reverse models (``ropelib.base_models.SETUPS``), train a
few settings of them (seed 0 by default) and check they solve the task in distribution. Kazemnejad et al.
2023 (arXiv 2305.19466, §3) train decoder-only models on ``[BOS] s [SEP] f(s) [EOS]`` and test on longer
instances; here the task is ``ropelib.data``'s ``copy`` / ``reverse`` (10 symbols, instance length ``n``
drawn in ``[1, (T - 2) // 2]`` in training). Examples::

    python benchmarks/pilot_algorithmic.py --encoding rope nope --task copy reverse --train-length 24 --steps 1000
    python benchmarks/pilot_algorithmic.py --encoding alibi t5 learned --train-length 24 --steps 1000 --batch-size 32
    python benchmarks/pilot_algorithmic.py --quick   # a few steps: checks that the script runs

The model is the profile's base model (width, layers, heads, init std by ``width_scaled_init_std``, warm-up,
the profile's ``lr``) with the values given here changed; length-dependent encoding settings follow the
training length by the same rules as the base models (``ropelib.base_models.encoding_config``). Every
combination of the values given is trained (``--jobs`` at a time, one torch thread each) into ``--cache-dir``
(default ``build/pilot_algorithmic``, never the project's run cache), then scored by
``ropelib.evaluate.algorithmic_accuracy`` as notebook 05 scores it: exact match (every target token of
``f(s) [EOS]`` right, teacher forcing) of ``--samples`` sequences with the longest instance that fits, at the
training length ``T`` (``n = (T - 2) // 2``, the hardest in-distribution instance) and at ``2T`` (about twice
that instance length), with 95% Wilson intervals (``ropelib.stats.wilson_interval``); also exact match on the
training mix of instance lengths (``ropelib.evaluate.exact_match_accuracy``). Then, per setting, the cost of
training every encoding x task x seed of the profile at it (measured seconds per model, ``--estimate-jobs``
parallel jobs). Nothing is written to ``results/`` or ``figures/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from ropelib import base_models  # noqa: E402
from ropelib.data import make_task  # noqa: E402
from ropelib.evaluate import algorithmic_accuracy, exact_match_accuracy  # noqa: E402
from ropelib.stats import wilson_interval  # noqa: E402

ALGORITHMIC_TASKS = tuple(t for t, kind in base_models.TASK_KINDS.items() if kind == "algorithmic")
EVAL_SEED = 2024  # notebook 05's eval_seed
MIX_SEED = 7  # the training-mix sample (a generator of its own, not a training batch)


def pilot_setup(
    profile: str,
    task: str,
    *,
    train_length: int,
    batch_size: int,
    steps: int,
    d_model: int | None,
    n_layers: int | None,
    seed: int,
) -> base_models.BaseSetup:
    """The profile's ``BaseSetup`` with one algorithmic task ``TaskSetup(task, train_length, steps, batch_size)``
    (no lr sweep), ``seed`` and, if given, another width or depth (init std and sinusoid scale then follow the
    width by the base models' rules)."""
    setup = base_models.base_setup(profile)
    task_setup = base_models.TaskSetup(task, train_length=train_length, steps=steps, batch_size=batch_size)
    return dataclasses.replace(
        setup,
        tasks=(task_setup,),
        seeds=(seed,),
        d_model=d_model or setup.d_model,
        n_layers=n_layers or setup.n_layers,
        init_std=None,
        sinusoid_scale=None,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help="profile whose base model is the starting point")
    parser.add_argument("--encoding", nargs="+", default=["rope", "nope"], help="encodings to pilot")
    parser.add_argument("--task", nargs="+", default=list(ALGORITHMIC_TASKS), help="copy and/or reverse")
    parser.add_argument("--train-length", type=int, nargs="+", default=[24], help="training sequence lengths T")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000])
    parser.add_argument("--lr", type=float, nargs="+", help="learning rates (default: the profile's lr)")
    parser.add_argument("--d-model", type=int, nargs="+", help="widths (default: the profile's)")
    parser.add_argument("--n-layers", type=int, nargs="+", help="depths (default: the profile's)")
    parser.add_argument("--samples", type=int, default=256, help="sequences per exact-match cell (>= 128 for a pilot)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one torch thread each)")
    parser.add_argument("--estimate-jobs", type=int, default=2, help="parallel jobs assumed by the cost estimate")
    parser.add_argument("--estimate-seeds", type=int, default=3, help="seeds per encoding and task in the estimate")
    parser.add_argument(
        "--estimate-lrs",
        type=int,
        default=1,
        help="full-length runs per encoding and task for an lr sweep (1: no sweep)",
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("build/pilot_algorithmic"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few steps and samples at T=16 (checks the script runs; the numbers mean nothing)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.train_length, args.batch_size, args.steps, args.samples = [16], [4], [3], 8
    try:
        unknown = [e for e in args.encoding if e not in base_models.ENCODING_VARIANTS]
        if unknown:
            raise ValueError(f"unknown encoding(s) {unknown}; allowed: {', '.join(base_models.ENCODING_VARIANTS)}")
        bad_tasks = [t for t in args.task if t not in ALGORITHMIC_TASKS]
        if bad_tasks:
            raise ValueError(f"unknown task(s) {bad_tasks}; allowed: {', '.join(ALGORITHMIC_TASKS)}")
        for name in ("samples", "jobs", "estimate_jobs", "estimate_seeds", "estimate_lrs"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        short = [L for L in args.train_length if L < 4]
        if short:
            raise ValueError(f"--train-length {short}: a copy/reverse window needs T >= 4")
        base_models.base_setup(args.profile)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = base_models.base_setup(args.profile)
    grid = {
        "train_length": args.train_length,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "lr": args.lr or [base.lr],
        "d_model": args.d_model or [base.d_model],
        "n_layers": args.n_layers or [base.n_layers],
        "encoding": args.encoding,
        "task": args.task,
    }
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    specs = {}
    try:
        for i, c in enumerate(combos):
            setup = pilot_setup(
                args.profile,
                c["task"],
                train_length=c["train_length"],
                batch_size=c["batch_size"],
                steps=c["steps"],
                d_model=c["d_model"],
                n_layers=c["n_layers"],
                seed=args.seed,
            )
            specs[i] = base_models.base_spec(setup, c["encoding"], c["task"], args.seed, "cpu", lr=c["lr"])
    except ValueError as exc:
        print(f"pilot_algorithmic.py: error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    os.environ["ROPELIB_CACHE_DIR"] = str(args.cache_dir.resolve())  # the pilot's own run cache (workers too)
    t0 = time.time()
    runs = base_models.run_specs(specs, jobs=args.jobs)
    print(
        f"{len(runs)} pilot runs in {time.time() - t0:.0f} s ({args.cache_dir}; {sum(r.cached for r in runs.values())}"
        f" read back from it), exact match of {args.samples} sequences per cell, 95% Wilson intervals"
    )
    print(
        f"{'encoding':<10} {'task':<7} {'T':>3} {'n':>3} {'d/lay':>6} {'steps x B':>10} {'tokens':>7} {'lr':>7} "
        f"{'train s':>7} {'mix EM':>6} {'EM@1x':>6} {'1x 95% CI':>13} {'EM@2x':>6} {'2x 95% CI':>13} {'tok@2x':>6} "
        f"{'eval s':>6}"
    )
    seconds: dict[tuple, list[float]] = {}
    for i, c in enumerate(combos):
        r = runs[i]
        task = make_task(specs[i].task)
        L = c["train_length"]
        t1 = time.time()
        mix = exact_match_accuracy(r.model, task, L, args.samples, seed=MIX_SEED)
        df = algorithmic_accuracy(r.model, task, [L, 2 * L], n_samples=args.samples, seed=EVAL_SEED)
        eval_s = time.time() - t1
        cells = []
        for row in df.itertuples():
            if row.status != "ok":
                cells.append(f"{'n/a':>6} {row.status[:13]:>13}")
                continue
            lo, hi = wilson_interval(int(row.n_correct), int(row.n_samples))
            cells.append(f"{row.accuracy:>6.3f} {f'[{lo:.3f},{hi:.3f}]':>13}")
        tok_2x = df.token_accuracy.iloc[1]  # NaN where the model cannot run at 2T (learned)
        train_s = float(r.metadata["train_time_s"])
        tokens = L * c["batch_size"] * c["steps"]
        print(
            f"{c['encoding']:<10} {c['task']:<7} {L:>3} {task.max_n(L):>3} {c['d_model']:>3}/{c['n_layers']:<2} "
            f"{c['steps']:>5}x{c['batch_size']:<4} {tokens / 1e6:>6.2f}M {c['lr']:>7.3g} {train_s:>7.1f} {mix:>6.3f} "
            f"{cells[0]} {cells[1]} {tok_2x:>6.3f} {eval_s:>6.1f}"
        )
        key = tuple(c[k] for k in ("train_length", "batch_size", "steps", "lr", "d_model", "n_layers"))
        seconds.setdefault(key, []).append(train_s)
    n_models = len(base.encodings) * len(ALGORITHMIC_TASKS) * args.estimate_seeds * args.estimate_lrs
    print(
        f"\ncost of the profile's {len(base.encodings)} encodings x {len(ALGORITHMIC_TASKS)} tasks x "
        f"{args.estimate_seeds} seeds x {args.estimate_lrs} lr = {n_models} models on {args.estimate_jobs} jobs, at "
        f"the mean measured training seconds per model of each setting (one thread; a loaded machine is slower):"
    )
    for (L, B, steps, lr, d, layers), values in seconds.items():
        per_model = statistics.fmean(values)
        total = per_model * n_models / args.estimate_jobs
        print(
            f"  T={L} {steps}x{B} lr={lr:g} d={d}/{layers} layers: {per_model:.1f} s per model "
            f"({min(values):.1f}-{max(values):.1f}, {len(values)} runs) -> {total / 60:.1f} min"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
