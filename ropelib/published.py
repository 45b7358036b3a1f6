"""Published length-extrapolation numbers, as data with their source (docs/references.md §4).

* ``ALIBI_TABLE1`` — Press et al. 2021, "Train Short, Test Long" (ALiBi), arXiv 2108.12409, Table 1:
  WikiText-103, 247M-parameter models trained at L = 512, perplexity with non-overlapping evaluation
  windows at several evaluation lengths (lower is better). T5 bias ran out of memory at 15512.
* ``ALIBI_SPEED`` — the same paper, training speed at L = 512 on a V100 (words per second).
* ``KAZEMNEJAD_MRR`` — Kazemnejad et al. 2023, "The Impact of Positional Encoding on Length
  Generalization in Transformers", arXiv 2305.19466, §4 / Figure 1: mean reciprocal rank of each
  encoding over 10 algorithmic tasks (train lengths up to 20, test up to 40; higher is better).
* ``PI_TABLE3`` — Chen et al. 2023, "Extending Context Window of Large Language Models via Positional
  Interpolation", arXiv 2306.15595, Table 3: LLaMA-7B extended 2048 -> 8192 with PI, PG19 perplexity at
  8192 after 0, 200 and 1000 fine-tuning steps. ``PI_NO_EXTENSION_MIN``: the same paper's Table 1, plain
  RoPE without extension at 4096-32768 tokens, perplexity "> 1000" (a lower bound, not a value).

Names follow ``ropelib.encodings`` (``"rope"`` = rotary, ``"learned"`` = the paper's "absolute").
``published_orderings()`` turns them into the pairwise claims notebook 05 tests.
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = [
    "ALIBI_SOURCE",
    "ALIBI_TRAIN_LENGTH",
    "ALIBI_TABLE1",
    "ALIBI_SPEED",
    "KAZEMNEJAD_SOURCE",
    "KAZEMNEJAD_MRR",
    "PI_SOURCE",
    "PI_TABLE3",
    "PI_NO_EXTENSION_MIN",
    "alibi_table",
    "published_orderings",
]

ALIBI_SOURCE = "Press et al. 2021 (ALiBi), arXiv 2108.12409, Table 1 (WikiText-103, 247M, L=512, non-overlapping)"
ALIBI_TRAIN_LENGTH = 512
#: eval length -> {encoding: perplexity}; NaN = not reported (T5 bias out of memory)
ALIBI_TABLE1: dict[int, dict[str, float]] = {
    512: {"sinusoidal": 20.05, "rope": 20.07, "t5": 19.65, "alibi": 19.73},
    1012: {"sinusoidal": 43.54, "rope": 21.37, "t5": 18.79, "alibi": 18.73},
    2512: {"sinusoidal": 132.41, "rope": 31.58, "t5": 20.41, "alibi": 18.41},
    5512: {"sinusoidal": 240.44, "rope": 43.14, "t5": 29.54, "alibi": 18.36},
    15512: {"sinusoidal": 406.01, "rope": 79.25, "t5": math.nan, "alibi": 18.31},
}
#: training words per second at L = 512 on a V100 (same paper)
ALIBI_SPEED: dict[str, float] = {"sinusoidal": 28.5e3, "rope": 20.0e3, "t5": 14.4e3, "alibi": 28.3e3}

KAZEMNEJAD_SOURCE = (
    "Kazemnejad et al. 2023, arXiv 2305.19466, Fig. 1 (mean reciprocal rank over 10 algorithmic tasks, "
    "~107M decoder-only, train lengths <= 20, test <= 40)"
)
#: encoding -> mean reciprocal rank (higher = better length generalisation)
KAZEMNEJAD_MRR: dict[str, float] = {"nope": 0.69, "t5": 0.55, "alibi": 0.50, "rope": 0.33, "learned": 0.22}

PI_SOURCE = "Chen et al. 2023 (PI), arXiv 2306.15595, Table 3: LLaMA-7B 2048→8192, PG19 ppl at 8192"
#: fine-tuning steps -> PG19 perplexity at 8192 (PI, LLaMA-7B 2048 -> 8192)
PI_TABLE3: dict[int, float] = {0: 16.10, 200: 7.12, 1000: 6.95}
#: PI Table 1: plain RoPE (no extension) at 4096-32768 tokens has perplexity "> 1000"
PI_NO_EXTENSION_MIN = 1000.0


def alibi_table() -> pd.DataFrame:
    """``ALIBI_TABLE1`` in long form: ``length, multiplier, encoding, ppl`` (multiplier = length / 512)."""
    rows = [
        {"length": L, "multiplier": L / ALIBI_TRAIN_LENGTH, "encoding": enc, "ppl": ppl}
        for L, row in ALIBI_TABLE1.items()
        for enc, ppl in row.items()
    ]
    return pd.DataFrame(rows)


def _pairs(ranked: list[str]) -> list[tuple[str, str]]:
    return [(ranked[i], ranked[j]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))]


def published_orderings(relative: bool = False) -> pd.DataFrame:
    """Every pairwise claim "``better`` generalises better than ``worse``" in the two sources.

    Columns: ``source``, ``better``, ``worse``, ``metric`` (``ppl`` lower-is-better, or ``mrr``
    higher-is-better), ``published_better``, ``published_worse``, ``published_length`` (ALiBi: the eval
    length; NaN for Kazemnejad), ``published_multiplier``. ALiBi claims are taken at every reported
    length past the training length where both numbers exist: all pairs of the ranking at that length.
    ``relative=True`` ranks (and reports) the ALiBi perplexities divided by each encoding's perplexity
    at the training length (metric ``ppl_ratio``), which compares extrapolation without the small
    in-distribution differences. The Kazemnejad ranking is NoPE > T5 > ALiBi > RoPE > learned (absolute).
    """
    rows = []
    for L, row in ALIBI_TABLE1.items():
        if L <= ALIBI_TRAIN_LENGTH:
            continue
        known = {k: v for k, v in row.items() if not math.isnan(v)}
        if relative:
            known = {k: v / ALIBI_TABLE1[ALIBI_TRAIN_LENGTH][k] for k, v in known.items()}
        ranked = sorted(known, key=known.get)  # lower perplexity first
        for better, worse in _pairs(ranked):
            rows.append(
                {
                    "source": "alibi_table1",
                    "better": better,
                    "worse": worse,
                    "metric": "ppl_ratio" if relative else "ppl",
                    "published_better": known[better],
                    "published_worse": known[worse],
                    "published_length": L,
                    "published_multiplier": L / ALIBI_TRAIN_LENGTH,
                }
            )
    ranked = sorted(KAZEMNEJAD_MRR, key=KAZEMNEJAD_MRR.get, reverse=True)  # higher MRR first
    for better, worse in _pairs(ranked):
        rows.append(
            {
                "source": "kazemnejad2023",
                "better": better,
                "worse": worse,
                "metric": "mrr",
                "published_better": KAZEMNEJAD_MRR[better],
                "published_worse": KAZEMNEJAD_MRR[worse],
                "published_length": math.nan,
                "published_multiplier": 2.0,
            }
        )
    return pd.DataFrame(rows)
