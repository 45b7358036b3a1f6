"""Pilot one base language model of a profile with a few settings changed: validation perplexity and context gain.

"Pilot, then scale": before a profile's language-model settings change, train a few variants of one base
model (seed 0 by default) and compare them on the validation split. This is the script behind the pilot
numbers in the comment above ``ropelib.base_models.SETUPS``. Examples::

    python benchmarks/pilot_lm.py --encoding learned --init-std 0.02 0.069 --steps 1200
    python benchmarks/pilot_lm.py --encoding nope --no-start-token --steps 1200 2000
    python benchmarks/pilot_lm.py --encoding rope alibi --train-length 64 128 --batch-size 16

Every combination of the values given is trained (one thread per run, ``--jobs`` at a time) into
``--cache-dir`` (default ``build/pilot-cache``, never the project's run cache, so pilots cannot be mistaken
for base models), then scored: perplexity over the validation split at the training length (non-overlapping
windows; the whole split, or the first ``lm_eval_tokens`` of a profile that caps it, as ``smoke`` does) and the
context gain of ``ropelib.gates.context_gain``. One line per run, then the n-gram references on the same text,
fitted as the profile fits them (``ngram_train_tokens``). Nothing is written to ``results/`` or ``figures/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from ropelib import base_models, protocols  # noqa: E402


def _no_cache(name, key, compute):  # pilots are scored afresh, never through the evaluation memo
    return compute()


def pilot_spec(
    setup: base_models.BaseSetup,
    encoding: str,
    *,
    train_length: int,
    batch_size: int,
    steps: int,
    lr: float,
    init_std: float,
    n_layers: int,
    start_token: bool,
    seed: int,
):
    """The profile's base LM spec of ``encoding`` with these settings (length-dependent encoding
    settings follow ``train_length`` by the same rules as the base models)."""
    task = setup.task(protocols.lm_task(setup))
    task = dataclasses.replace(
        task, train_length=train_length, batch_size=batch_size, steps=steps, lrs=(), sweep_steps=0
    )  # a pilot trains at the rate it is given: no sweep
    setup = dataclasses.replace(
        setup, tasks=(task,), seeds=(seed,), init_std=init_std, n_layers=n_layers, sinusoid_scale=None
    )
    spec = base_models.base_spec(setup, encoding, task.name, seed, "cpu", lr=lr)
    if not start_token:
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, bos_token_id=None))
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help="profile whose base LM is the starting point")
    parser.add_argument("--encoding", nargs="+", default=["rope"], help="encodings to pilot")
    parser.add_argument("--train-length", type=int, nargs="+", help="training lengths (default: the profile's)")
    parser.add_argument("--batch-size", type=int, nargs="+", help="batch sizes (default: the profile's)")
    parser.add_argument("--steps", type=int, nargs="+", help="step counts (default: the profile's)")
    parser.add_argument("--lr", type=float, nargs="+", help="learning rates (default: the profile's lr)")
    parser.add_argument("--init-std", type=float, nargs="+", help="init std (default: the profile's)")
    parser.add_argument("--n-layers", type=int, nargs="+", help="layer counts (default: the profile's)")
    parser.add_argument("--no-start-token", action="store_true", help="also train without the start token")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--cache-dir", type=Path, default=Path("build/pilot-cache"))
    args = parser.parse_args(argv)
    try:
        setup = base_models.base_setup(args.profile)
        unknown = [e for e in args.encoding if e not in base_models.ENCODING_VARIANTS]
        if unknown:
            raise ValueError(f"unknown encoding(s) {unknown}; allowed: {', '.join(base_models.ENCODING_VARIANTS)}")
        task = setup.task(protocols.lm_task(setup))
    except ValueError as exc:
        parser.error(str(exc))
    grid = {
        "encoding": args.encoding,
        "train_length": args.train_length or [task.train_length],
        "batch_size": args.batch_size or [task.batch_size],
        "steps": args.steps or [task.steps],
        "lr": args.lr or [setup.lr],
        "init_std": args.init_std or [setup.init_std],
        "n_layers": args.n_layers or [setup.n_layers],
        "start_token": [True, False] if args.no_start_token else [True],
    }
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    try:
        specs = {i: pilot_spec(setup, seed=args.seed, **c) for i, c in enumerate(combos)}
    except ValueError as exc:
        parser.error(str(exc))
    torch.set_num_threads(1)
    os.environ["ROPELIB_CACHE_DIR"] = str(args.cache_dir.resolve())  # the pilot's own run cache (workers too)
    t0 = time.time()
    runs = base_models.run_specs(specs, jobs=args.jobs)
    print(f"{len(runs)} pilot runs in {time.time() - t0:.0f} s ({args.cache_dir})")
    print(
        f"{'encoding':<11} {'layers':>6} {'L':>4} {'B':>3} {'steps':>5} {'tokens':>8} {'lr':>7} {'init':>6} {'start':>5} "
        f"{'val ppl':>8} {'gain':>6} {'train s':>7}"
    )
    for i, c in enumerate(combos):
        r = runs[i]
        q = protocols.lm_quality(r, split="validation", max_tokens=setup.lm_eval_tokens, cached=_no_cache)
        tokens = c["train_length"] * c["batch_size"] * c["steps"]
        print(
            f"{c['encoding']:<11} {c['n_layers']:>6} {c['train_length']:>4} {c['batch_size']:>3} {c['steps']:>5} {tokens:>8} "
            f"{c['lr']:>7.3g} {c['init_std']:>6.3f} {str(c['start_token']):>5} {q['ppl']:>8.2f} "
            f"{q['context_gain']:>6.3f} {float(r.metadata['train_time_s']):>7.0f}"
        )
    refs = protocols.ngram_reference(
        specs[0].task, split="validation", orders=(2, 3, 4, 5), max_tokens=setup.lm_eval_tokens,
        train_tokens=setup.ngram_train_tokens, cached=_no_cache,
    )  # fmt: skip
    print(
        "n-gram references (validation): " + ", ".join(f"order {r.order} {r.perplexity:.2f}" for r in refs.itertuples())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
