"""Benchmark: applying RoPE to q and k on CPU, ropelib against HF transformers and rotary-embedding-torch.

For each shape (B, H, T, D) and dtype (float32, bfloat16), forward and forward+backward, every
implementation rotates a query and a key tensor of that shape:

* ``ours-half``        ``ropelib.rope.RoPE(layout="half")`` (cos/sin cached; HF's layout)
* ``ours-interleaved`` ``ropelib.rope.RoPE(layout="interleaved")`` (complex multiply)
* ``hf``               ``transformers.models.llama.modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)`` with
                       cos/sin precomputed once by ``LlamaRotaryEmbedding`` (the HF way)
* ``rotary-emb-torch`` ``rotary_embedding_torch.RotaryEmbedding(dim=D).rotate_queries_or_keys`` on q and k
* ``copy``             ``q.clone(), k.clone()``: the same bytes read and written, the memory-bound floor

Repetitions are interleaved round-robin (every implementation once per round) and the median is reported,
so a slow period of a shared machine hits all of them alike. The table gives each median, the ratio
peer/ours (against ``ours-half``), and the effective bandwidth as a fraction of the copy measured in the
same run (copy time / implementation time; 1.0 = as fast as a plain copy of the same bytes).

Usage: ``python benchmarks/rope_apply.py [--quick] [--reps N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from ropelib.encodings import encoding_params
from ropelib.rope import RoPE

Impl = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_impls(shape: tuple[int, int, int, int], dtype: torch.dtype) -> dict[str, Impl]:
    """The implementations for one shape and dtype, each with its cos/sin already computed."""
    B, H, T, D = shape
    positions = torch.arange(T)
    impls: dict[str, Impl] = {}

    half = RoPE({}, D, layout="half")
    impls["ours-half"] = lambda q, k: (half(q, positions), half(k, positions))
    inter = RoPE({}, D, layout="interleaved")
    impls["ours-interleaved"] = lambda q, k: (inter(q, positions), inter(k, positions))

    try:
        from transformers import LlamaConfig
        from transformers.models.llama import modeling_llama as hf

        config = LlamaConfig(hidden_size=H * D, num_attention_heads=H, head_dim=D, max_position_embeddings=T)
        probe = torch.zeros(1, dtype=dtype)
        cos, sin = hf.LlamaRotaryEmbedding(config)(probe, positions[None].expand(B, T))  # (B, T, D)
        impls["hf"] = lambda q, k: hf.apply_rotary_pos_emb(q, k, cos, sin)
    except ImportError:
        print("transformers not installed: skipping the HF comparison")

    try:
        from rotary_embedding_torch import RotaryEmbedding

        lucid = RotaryEmbedding(dim=D)
        impls["rotary-emb-torch"] = lambda q, k: (lucid.rotate_queries_or_keys(q), lucid.rotate_queries_or_keys(k))
    except ImportError:
        print("rotary-embedding-torch not installed: skipping it")

    impls["copy"] = lambda q, k: (q.clone(), k.clone())
    return impls


def run_case(shape, dtype, backward: bool, reps: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of every implementation, repetitions interleaved round-robin."""
    torch.manual_seed(0)
    q = torch.randn(shape).to(dtype).requires_grad_(backward)
    k = torch.randn(shape).to(dtype).requires_grad_(backward)
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    impls = make_impls(shape, dtype)

    def once(fn: Impl) -> float:
        start = time.perf_counter()
        oq, ok = fn(q, k)
        if backward:
            torch.autograd.backward((oq, ok), (gq, gk))
        elapsed = time.perf_counter() - start
        q.grad = k.grad = None
        return elapsed

    for _ in range(warmup):
        for fn in impls.values():
            once(fn)
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(reps):
        for name, fn in impls.items():
            times[name].append(once(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes, few repetitions (smoke check)")
    parser.add_argument("--reps", type=int, default=None, help="round-robin repetitions (default 15, quick 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [(2, 4, 256, 64)] if args.quick else [(8, 8, 1024, 64), (8, 8, 4096, 64)]
    reps = args.reps or (3 if args.quick else 15)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"{reps} round-robin repetitions, median; each call rotates q and k of the shape"
    )

    # the toy model's layout is the rope encoding's default ("interleaved"); the goals apply to it
    model_layout = "ours-" + str(encoding_params("rope")["layout"])
    worst_hf = {"ours-half": float("inf"), "ours-interleaved": float("inf")}  # HF / ours, float32 forward
    worst_copy = {"ours-half": float("inf"), "ours-interleaved": float("inf")}  # copy / ours, float32 forward
    slower_than_hf: list[str] = []
    for shape in shapes:
        for dtype in (torch.float32, torch.bfloat16):
            for backward in (False, True):
                medians = run_case(shape, dtype, backward, reps)
                label = f"{tuple(shape)} {str(dtype).replace('torch.', '')} {'fwd+bwd' if backward else 'fwd'}"
                print(f"\n{label}")
                print(f"  {'impl':<18}{'median ms':>10}{'peer/ours':>11}{'copy frac':>11}")
                ours = medians[model_layout]
                for name, t in medians.items():
                    ratio = t / ours
                    print(f"  {name:<18}{t * 1e3:>10.3f}{ratio:>11.2f}{medians['copy'] / t:>11.2f}")
                for variant in worst_hf:
                    if "hf" in medians and medians[variant] > medians["hf"]:
                        slower_than_hf.append(f"{variant} {label}")
                    if dtype == torch.float32 and not backward:
                        if "hf" in medians:
                            worst_hf[variant] = min(worst_hf[variant], medians["hf"] / medians[variant])
                        worst_copy[variant] = min(worst_copy[variant], medians["copy"] / medians[variant])

    other = "ours-half" if model_layout == "ours-interleaved" else "ours-interleaved"
    print(
        f"\nSUMMARY float32 forward, {model_layout} (the toy model's layout): HF/ours >= {worst_hf[model_layout]:.2f}x "
        f"(goal 5x), copy fraction >= {worst_copy[model_layout]:.2f} (goal 0.60); {other}: HF/ours >= "
        f"{worst_hf[other]:.2f}x, copy fraction >= {worst_copy[other]:.2f}; slower than HF in "
        f"{len(slower_than_hf)} case(s)" + (f": {'; '.join(slower_than_hf)}" if slower_than_hf else "")
    )


if __name__ == "__main__":
    main()
