"""Which SDPA kernel (math, flash, memory-efficient, cuDNN) each positional encoding's attention can run on.

Prints ``ropelib.sdpa_backends.backend_table``: for every encoding, one forward and backward pass of a
one-layer model (head dim 64 by default, bf16 autocast on CUDA as training runs) under
``torch.nn.attention.sdpa_kernel([backend])`` for each backend, and the backend PyTorch picks by
default. A measurement on the device given, not the documented constraints (docs/design.md §4.1 has those).

    python benchmarks/sdpa_backends.py --device cuda
    python benchmarks/sdpa_backends.py --device cpu --length 64

Ends with one ``SUMMARY`` line: device, dtype, and per encoding the backends that ran.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from ropelib.sdpa_backends import backend_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--length", type=int, default=256, help="sequence length")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--errors", action="store_true", help="print what each refused kernel raised")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = backend_table(args.device, length=args.length, n_heads=args.heads, head_dim=args.head_dim)
    wide = table.pivot(index=["encoding", "mask", "default"], columns="backend", values="works")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"torch {torch.__version__}, device {table.device.iloc[0]}, dtype {table.dtype.iloc[0]}")
        print(wide.replace({True: "yes", False: "-"}).to_string())
    if args.errors:
        for (enc, backend), err in table[~table.works].set_index(["encoding", "backend"]).error.items():
            print(f"  {enc:<11} {backend:<20} {err}")
    ran = {enc: "+".join(b for b in g.backend[g.works]) for enc, g in table.groupby("encoding", sort=False)}
    print(
        f"SUMMARY sdpa device={table.device.iloc[0]} dtype={table.dtype.iloc[0]} "
        + " ".join(f"{e}={b}" for e, b in ran.items())
    )


if __name__ == "__main__":
    main()
