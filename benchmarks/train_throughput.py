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

    python benchmarks/train_throughput.py            # the default size, 5 repetitions
    python benchmarks/train_throughput.py --quick    # a smoke run: tiny sizes, one repetition

Ends with one ``SUMMARY`` line: reference tokens/s, RoPE / ALiBi / T5 ratios to the reference and the
goals (RoPE within 10 %, ALiBi and T5 within 25 %), GEMM GFLOP/s.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from ropelib.encodings import ENCODINGS
from ropelib.model import ModelConfig, ToyTransformer

REFERENCE = "reference"
GOALS = {"rope": 0.90, "alibi": 0.75, "t5": 0.75}  # minimum tokens/s ratio to the reference


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
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.batch_size, args.seq_len, args.gemm_size = 1, 1, 4, 64, 256
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
    header = f"{'variant':<12} {'tokens/s':>10} {'spread':>8} {'vs ref':>7} {'GFLOP/s':>8} {'of GEMM':>8} {'MFLOP/tok':>10}"
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
        f"\nSUMMARY reference {ref_rate:.0f} tokens/s; " + "; ".join(goals) + f"; GEMM {gemm_flops / 1e9:.1f} GFLOP/s"
        + ("; quick smoke run, sizes not representative" if args.quick else "")
    )


if __name__ == "__main__":
    main()
