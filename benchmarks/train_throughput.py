"""Training throughput of the toy transformer with every positional encoding, on the CPU.

Measures training tokens/s (forward + backward + AdamW step) of ``ropelib.model.ToyTransformer`` at the
default size (2 layers, width 128, 4 heads, sequence 256, batch 32) for each registered encoding, and
of a plain reference written here (nanoGPT-style: learned absolute positions added at the input,
attention through ``scaled_dot_product_attention(is_causal=True)``, same sizes, same bias-free linear
layers and tied head). In the same run it measures the machine's float32 GEMM rate (a square
``torch.mm``). Everything is interleaved: each repetition runs every variant (and the GEMM) once, in a
round-robin, and the reported number is the median over repetitions, so slow drifts of a shared
machine hit every variant alike.

FLOP count per training token (nanoGPT's ``estimate_mfu``, after PaLM appendix B):
``6 * N + 12 * n_layers * d_model * T``, where ``N`` is the number of parameters that take part in
matrix products (the model's parameters minus the positional encoding's own: the tied token embedding
counts once, as the output head) and the second term is attention's ``Q K^T`` and ``A V`` over the full
``T x T`` square (forward 4 T d per layer, backward twice that; the causal half is not discounted).
The achieved FLOP/s is reported as a fraction of the GEMM rate.

Second comparison, the training *loop* (``--loop-only`` runs it alone): for the base models of a profile
(``ropelib.base_models.SETUPS``, default ``default``: the ``books`` task at train length 128, batch 8,
d_model 64, 2 layers, 4 heads; RoPE and ALiBi), the real spec of each encoding (``base_spec``, seed 0,
``--loop-steps`` steps, so warm-up and cosine are over those steps) is trained twice per round, on one
torch thread:

(a) by ``ropelib.train.train`` (no checkpoints, progress bar off): tokens/s from the wall time of the
    whole call (optimiser and scheduler set-up, per-step batch generation from ``task.sample`` with
    ``batch_generator(seed, step)``, the finite-loss check, grad-norm and loss reads, history records);
(b) by a bare PyTorch loop of the same ``ToyTransformer`` (same initialisation) over the same batches,
    generated before the clock starts: AdamW on the same parameter groups, ``clip_grad_norm_``, the same
    ``LambdaLR(warmup_cosine)``, nothing else.

Both start from the same weights and see the same batches, so they must end with bit-identical weights
(checked, and printed as ``same weights``): the only difference is the loop's own overhead. Rounds are
interleaved ((a), (b) of every encoding, the order of (a) and (b) alternating between rounds); the
median over rounds of each is reported, and the ratio (a)/(b) against the goal (>= 0.90).

    python benchmarks/train_throughput.py            # the default size, 5 repetitions, then the loop
    python benchmarks/train_throughput.py --quick    # a smoke run: tiny sizes, one repetition
    python benchmarks/train_throughput.py --loop-only --loop-steps 40 --rounds 5

Ends with ``SUMMARY`` lines: (model comparison) reference tokens/s, RoPE / ALiBi / T5 ratios to the
reference and the goals (RoPE within 10 %, ALiBi and T5 within 25 %), GEMM GFLOP/s; (loop comparison,
``SUMMARY loop``) the median ratio train()/bare loop of each encoding and the goal.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ropelib import base_models
from ropelib.data import batch_generator, make_task
from ropelib.encodings import ENCODINGS
from ropelib.model import ModelConfig, ToyTransformer, select_device, start_windows
from ropelib.train import TrainConfig, param_groups, train, warmup_cosine

REFERENCE = "reference"
GOALS = {"rope": 0.90, "alibi": 0.75, "t5": 0.75}  # minimum tokens/s ratio to the reference
LOOP_GOAL = 0.90  # minimum tokens/s ratio of ropelib.train.train to a bare loop of the same model


# ---------------------------------------------------------------------------------------------
# the plain reference: nanoGPT-style, learned absolute positions, SDPA with is_causal
# ---------------------------------------------------------------------------------------------
class RefBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln_1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ln_2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, mlp_ratio * d, bias=False)
        self.fc_proj = nn.Linear(mlp_ratio * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))  # (B, T, C)
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))  # (B, T, C)


class Reference(nn.Module):
    """nanoGPT's GPT at our sizes: token + learned position embeddings, pre-norm blocks, tied head."""

    def __init__(self, vocab_size: int, n_layers: int, n_heads: int, d_model: int, mlp_ratio: int, max_len: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList([RefBlock(d_model, n_heads, mlp_ratio) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)  # (T,) long
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)).float()  # (B, T, V)


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
def matmul_params(model: nn.Module) -> int:
    """Parameters taking part in matrix products: everything but position tables / encodings."""
    if isinstance(model, Reference):
        return sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    return model.num_parameters() - sum(p.numel() for p in model.encoding.parameters())


def flops_per_token(model: nn.Module, n_layers: int, d_model: int, seq_len: int) -> float:
    """``6 N + 12 L d T`` (module docstring)."""
    return 6 * matmul_params(model) + 12 * n_layers * d_model * seq_len


class Variant:
    """One model, its optimiser and a fixed batch; ``run(steps)`` returns tokens/s."""

    def __init__(self, name: str, args: argparse.Namespace, vocab_size: int) -> None:
        torch.manual_seed(0)
        self.name = name
        if name == REFERENCE:
            self.model = Reference(vocab_size, args.n_layers, args.n_heads, args.d_model, 4, args.seq_len)
        else:
            cfg = ModelConfig(
                vocab_size=vocab_size, n_layers=args.n_layers, n_heads=args.n_heads, d_model=args.d_model, encoding=name
            )
            self.model = ToyTransformer(cfg)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.1)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, vocab_size, (args.batch_size, args.seq_len), generator=g)  # (B, T)
        self.y = torch.randint(0, vocab_size, (args.batch_size, args.seq_len), generator=g)  # (B, T)
        self.flops_per_token = flops_per_token(self.model, args.n_layers, args.d_model, args.seq_len)
        self.samples: list[float] = []

    def step(self) -> None:
        logits = self.model(self.x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), self.y.flatten())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        elapsed = time.perf_counter() - start
        rate = steps * self.x.numel() / elapsed
        self.samples.append(rate)
        return rate


def gemm_rate(n: int, repeats: int) -> float:
    """float32 FLOP/s of ``torch.mm`` on two (n, n) matrices (2 n^3 per product)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.mm(a, b)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# the training loop: ropelib.train.train against a bare PyTorch loop of the same model and batches
# ---------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh_model(spec, device: torch.device) -> ToyTransformer:
    torch.manual_seed(spec.train.seed)  # as ropelib.runs does: the initialisation is seeded
    return ToyTransformer(spec.model).to(device)


def run_train(spec, task, device: torch.device) -> tuple[float, dict[str, torch.Tensor]]:
    """(a): wall seconds of ``ropelib.train.train`` on a fresh model (no checkpoints, no bar); final weights."""
    model = _fresh_model(spec, device)
    _sync(device)
    start = time.perf_counter()
    train(model, task, spec.train, progress=False)
    _sync(device)
    return time.perf_counter() - start, model.state_dict()


def bare_batches(spec, task, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches ``train`` draws at each step (``batch_generator(seed, step)``), generated up front, with
    the model's start token in place as ``train`` puts it (``ropelib.model.start_windows``)."""
    cfg = spec.train
    marker = SimpleNamespace(config=spec.model)  # start_windows reads only the config
    out = []
    for step in range(cfg.steps):
        batch = task.sample(cfg.batch_size, cfg.seq_len, batch_generator(cfg.seed, step))
        out.append((start_windows(marker, batch.x).to(device), batch.y.to(device)))  # (B, T) long each
    return out


def run_bare(spec, batches, device: torch.device) -> tuple[float, dict[str, torch.Tensor]]:
    """(b): wall seconds of a bare loop (AdamW, clip, LambdaLR) over pre-generated batches; final weights."""
    cfg: TrainConfig = spec.train
    model = _fresh_model(spec, device)
    model.train()
    use_amp = cfg.amp and device.type == "cuda"
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    _sync(device)
    start = time.perf_counter()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
    for x, y in batches:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        opt.step()
        sched.step()
    _sync(device)
    return time.perf_counter() - start, model.state_dict()


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def loop_comparison(args: argparse.Namespace) -> dict[str, float]:
    """Prints the (a)/(b) table and the ``SUMMARY loop`` line; returns encoding -> median ratio."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads if args.threads is not None else 1)
    try:
        return _loop_comparison(args)
    finally:
        torch.set_num_threads(old_threads)


def _loop_comparison(args: argparse.Namespace) -> dict[str, float]:
    setup = base_models.base_setup(args.loop_profile)
    device = select_device(args.device)
    specs = {}
    for enc in args.loop_encodings:
        spec = base_models.base_spec(
            setup, enc, args.loop_task, setup.seeds[0], device=str(device), steps=args.loop_steps
        )
        specs[enc] = dataclasses.replace(spec, train=dataclasses.replace(spec.train, checkpoint_every=0))
    first = next(iter(specs.values()))
    task = make_task(first.task)
    cfg, mcfg = first.train, first.model
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    print(
        f"\ntraining loop, profile {args.loop_profile!r} task {args.loop_task!r}: {mcfg.n_layers} layers, "
        f"d_model {mcfg.d_model}, {mcfg.n_heads} heads, seq {cfg.seq_len}, batch {cfg.batch_size}, lr {cfg.lr:g}; "
        f"device {device}, {torch.get_num_threads()} torch thread(s); {args.rounds} interleaved rounds x "
        f"{cfg.steps} steps ({tokens} tokens) per loop"
    )
    batches = {enc: bare_batches(spec, task, device) for enc, spec in specs.items()}
    warm = {
        enc: dataclasses.replace(
            spec,
            train=dataclasses.replace(
                spec.train, steps=min(2, cfg.steps), warmup_steps=min(2, cfg.warmup_steps, cfg.steps)
            ),
        )
        for enc, spec in specs.items()
    }
    for enc, spec in warm.items():  # warm-up: allocator, first-call overheads, lazy imports
        run_train(spec, task, device)
        run_bare(spec, batches[enc][: spec.train.steps], device)
    rates: dict[str, dict[str, list[float]]] = {enc: {"train": [], "bare": []} for enc in specs}
    same: dict[str, bool] = {}
    for r in range(args.rounds):
        for enc, spec in specs.items():
            order = ("train", "bare") if r % 2 == 0 else ("bare", "train")
            for which in order:
                if which == "train":
                    seconds, weights = run_train(spec, task, device)
                else:
                    seconds, weights = run_bare(spec, batches[enc], device)
                rates[enc][which].append(tokens / seconds)
                if r == 0:
                    if which == order[0]:
                        first_weights = weights
                    else:
                        same[enc] = _same_weights(first_weights, weights)
        print(
            f"  round {r + 1}/{args.rounds}: "
            + ", ".join(f"{e} {rates[e]['train'][-1] / rates[e]['bare'][-1]:.3f}" for e in specs),
            flush=True,
        )

    header = (
        f"{'encoding':<10} {'train() tok/s':>13} {'bare tok/s':>11} {'ratio':>6} {'spread':>7} "
        f"{'same weights':>12}  per-round ratios"
    )
    print(header)
    print("-" * len(header))
    ratios: dict[str, float] = {}
    for enc in specs:
        a, b = statistics.median(rates[enc]["train"]), statistics.median(rates[enc]["bare"])
        per_round = [x / y for x, y in zip(rates[enc]["train"], rates[enc]["bare"])]
        ratios[enc] = statistics.median(per_round)
        spread = (max(per_round) - min(per_round)) if len(per_round) > 1 else math.nan
        print(
            f"{enc:<10} {a:>13.0f} {b:>11.0f} {ratios[enc]:>6.3f} {spread:>7.3f} "
            f"{'yes' if same[enc] else 'NO':>12}  " + " ".join(f"{x:.3f}" for x in per_round)
        )
    verdict = "ok" if all(v >= LOOP_GOAL for v in ratios.values()) else "MISSED"
    print(
        "\nSUMMARY loop train()/bare tokens/s: "
        + "; ".join(f"{e} {v:.3f}x" for e, v in ratios.items())
        + f" (goal >= {LOOP_GOAL:.2f}: {verdict}); same weights: {'yes' if all(same.values()) else 'NO'}"
        + ("; quick smoke run, not representative" if args.quick else "")
    )
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repetition")
    parser.add_argument("--encodings", nargs="*", default=None, help="default: every registered encoding")
    parser.add_argument("--repeats", type=int, default=5, help="round-robin repetitions (median reported)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per variant per repetition")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=128)
    parser.add_argument("--gemm-size", type=int, default=1024)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's; the loop comparison: 1)"
    )
    loop = parser.add_argument_group("training-loop comparison (ropelib.train.train vs a bare loop)")
    loop.add_argument("--loop-only", action="store_true", help="run only the training-loop comparison")
    loop.add_argument("--no-loop", action="store_true", help="skip the training-loop comparison")
    loop.add_argument("--loop-steps", type=int, default=40, help="training steps per loop per round")
    loop.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    loop.add_argument(
        "--loop-profile", default="default", choices=list(base_models.SETUPS), help="base models of this profile"
    )
    loop.add_argument("--loop-task", default="books", help="a language-model task of that profile")
    loop.add_argument("--loop-encodings", nargs="+", default=["rope", "alibi"])
    loop.add_argument("--device", default="cpu", help="device of the loop comparison: cpu | cuda | mps | auto")
    args = parser.parse_args(argv)
    if args.loop_only and args.no_loop:
        parser.error("--loop-only and --no-loop exclude each other")
    if args.loop_steps < 1 or args.rounds < 1:
        parser.error(f"--loop-steps and --rounds must be >= 1, got {args.loop_steps} and {args.rounds}")
    if args.quick:
        args.repeats, args.steps, args.batch_size, args.seq_len, args.gemm_size = 1, 1, 4, 64, 256
        args.loop_steps, args.rounds = min(args.loop_steps, 3), 1
    if args.loop_only:
        loop_comparison(args)
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = sorted(ENCODINGS) if args.encodings is None else list(args.encodings)
    unknown = sorted(set(names) - set(ENCODINGS))
    if unknown:
        raise SystemExit(f"unknown encoding(s) {unknown}; registered: {', '.join(sorted(ENCODINGS))}")

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads; model: {args.n_layers} layers, d_model {args.d_model}, "
        f"{args.n_heads} heads, seq {args.seq_len}, batch {args.batch_size}; "
        f"{args.repeats} round-robin repetitions x {args.steps} steps"
    )
    variants = [Variant(REFERENCE, args, args.vocab_size)] + [Variant(n, args, args.vocab_size) for n in names]
    for v in variants:  # warm-up: allocator, first-call overheads
        v.step()
    gemm: list[float] = []
    for rep in range(args.repeats):
        gemm.append(gemm_rate(args.gemm_size, repeats=10 if not args.quick else 3))
        for v in variants:
            v.run(args.steps)
        print(f"  repetition {rep + 1}/{args.repeats}: reference {variants[0].samples[-1]:.0f} tokens/s", flush=True)
    gemm_flops = statistics.median(gemm)
    ref_rate = statistics.median(variants[0].samples)

    print(f"\nfloat32 GEMM ({args.gemm_size}^3): {gemm_flops / 1e9:.1f} GFLOP/s (median of {len(gemm)})")
    header = (
        f"{'variant':<12} {'tokens/s':>10} {'spread':>8} {'vs ref':>7} {'GFLOP/s':>8} {'of GEMM':>8} {'MFLOP/tok':>10}"
    )
    print(header)
    print("-" * len(header))
    results = {}
    for v in variants:
        rate = statistics.median(v.samples)
        spread = (max(v.samples) - min(v.samples)) / rate if len(v.samples) > 1 else math.nan
        achieved = rate * v.flops_per_token
        results[v.name] = rate / ref_rate
        print(
            f"{v.name:<12} {rate:>10.0f} {spread:>7.0%} {rate / ref_rate:>7.2f} {achieved / 1e9:>8.2f} "
            f"{achieved / gemm_flops:>8.2f} {v.flops_per_token / 1e6:>10.2f}"
        )
    goals = []
    for name, minimum in GOALS.items():
        if name in results:
            verdict = "ok" if results[name] >= minimum else "MISSED"
            goals.append(f"{name} {results[name]:.2f}x (goal >= {minimum:.2f}: {verdict})")
    print(
        f"\nSUMMARY reference {ref_rate:.0f} tokens/s; "
        + "; ".join(goals)
        + f"; GEMM {gemm_flops / 1e9:.1f} GFLOP/s"
        + ("; quick smoke run, sizes not representative" if args.quick else "")
    )
    if not args.no_loop:
        loop_comparison(args)


if __name__ == "__main__":
    main()
