"""The base models of notebooks 04–06: which toy models the length-extrapolation notebooks train.

One place defines them, so that notebook 04 (training), 05 (length extrapolation) and 06 (context
extension of the RoPE models) build identical ``RunSpec`` s and hit the same run-cache entries
(``ropelib.runs``): ``base_setup(profile)`` gives the frozen ``BaseSetup`` of a profile,
``base_specs(setup, device)`` every spec keyed by ``(encoding, task, seed)``, ``run_specs`` trains them
(or reads them back), and ``encoding_config`` / ``encoding_settings`` scale each encoding's
length-dependent settings to the training length, with their sources.

The comparison follows Press et al. 2021 (ALiBi, arXiv 2108.12409, §4: same model, same budget, only
the positional encoding differs, trained short and evaluated long) and Kazemnejad et al. 2023
(arXiv 2305.19466, §3: decoder-only models on algorithmic tasks, NoPE included). Randomized positions
are Ruoss et al. 2023 (arXiv 2305.16843, §3) around RoPE. The statistics over the seeds of these models
are in ``ropelib.stats``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import torch

from .data import TaskConfig, make_task
from .gates import DEFAULT_THRESHOLDS, GateThresholds
from .model import INIT_STD, ModelConfig, width_scaled_init_std
from .runs import (
    PROGRESS_FILE_ENV,
    RunResult,
    RunSpec,
    SweepProgress,
    is_finished,
    progress_bar_default,
    run,
    sweep,
)
from .train import TrainConfig

__all__ = [
    "ENCODING_VARIANTS",
    "SINUSOID_SCALE",
    "sinusoid_scale_for",
    "TASK_KINDS",
    "TaskSetup",
    "BaseSetup",
    "SETUPS",
    "base_setup",
    "encoding_config",
    "encoding_settings",
    "base_spec",
    "base_specs",
    "run_specs",
]

#: the encodings of the comparison (labels = names in ``ropelib.encodings.ENCODINGS``), in table order
ENCODING_VARIANTS: tuple[str, ...] = (
    "nope",
    "sinusoidal",
    "learned",
    "t5",
    "alibi",
    "rope",
    "xpos",
    "kerple",
    "fire",
    "randomized",
)


def sinusoid_scale_for(init_std: float) -> float:
    """The sinusoids' scale for a model initialised with ``init_std``: a fresh token embedding's RMS
    (``init_std``) over a sinusoid column's RMS (``1/sqrt(2)``), the balance Vaswani et al. keep by
    multiplying the embeddings by ``sqrt(d_model)`` (§3.4). Unscaled, position vectors many times the
    size of the token vectors drown them (notebook 04 trains that model too and measures the damage)."""
    if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not 0 < init_std < math.inf:
        raise ValueError(f"init_std must be a finite number > 0, got {init_std!r}")
    return float(init_std) * math.sqrt(2.0)


#: the sinusoids' scale at GPT-2's init (``INIT_STD`` = 0.02): ``sinusoid_scale_for(INIT_STD)``
SINUSOID_SCALE: float = sinusoid_scale_for(INIT_STD)
#: task name -> what it measures in notebook 05
TASK_KINDS: Mapping[str, str] = {
    "books": "lm",
    "chars": "lm",
    "passkey": "retrieval",
    "kv_recall": "retrieval",
    "copy": "algorithmic",
    "reverse": "algorithmic",
}


@dataclass(frozen=True)
class TaskSetup:
    """One task the base models train on: its name and parameters (``ropelib.data``), training
    length, steps and batch size (the same for every encoding), and the learning-rate sweep.

    ``lrs``: the learning rates tried for every encoding (``ropelib.protocols.tune_learning_rates``
    picks one per encoding on validation data); empty: no sweep, every encoding uses the setup's
    ``lr``. ``sweep_steps``: steps of each sweep run (0: the full ``steps``, so the winning seed-0 run
    *is* the base model of seed 0; fewer: a cheaper proxy run with its own warm-up and cosine)."""

    name: str
    train_length: int
    steps: int
    batch_size: int
    params: Mapping[str, Any] = field(default_factory=dict)
    lrs: tuple[float, ...] = ()
    sweep_steps: int = 0

    def __post_init__(self) -> None:
        if self.name not in TASK_KINDS:
            raise ValueError(f"unknown task {self.name!r} for the base models; allowed: {', '.join(TASK_KINDS)}")
        for key in ("train_length", "steps", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TaskSetup.{key} must be a positive integer, got {value!r}")
        if (
            isinstance(self.sweep_steps, bool)
            or not isinstance(self.sweep_steps, int)
            or not (0 <= self.sweep_steps <= self.steps)
        ):
            raise ValueError(
                f"TaskSetup.sweep_steps must be an integer in [0, steps={self.steps}], got {self.sweep_steps!r}"
            )
        lrs = tuple(self.lrs)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < math.inf) for v in lrs) or (
            len(set(lrs)) != len(lrs)
        ):
            raise ValueError(f"TaskSetup.lrs must be distinct finite numbers > 0, got {self.lrs!r}")
        object.__setattr__(self, "lrs", tuple(float(v) for v in lrs))
        TaskConfig(self.name, dict(self.params))  # unknown parameter -> ValueError listing accepted ones

    @property
    def kind(self) -> str:
        """``"lm"``, ``"retrieval"`` or ``"algorithmic"``."""
        return TASK_KINDS[self.name]


@dataclass(frozen=True)
class BaseSetup:
    """Model size, optimiser and the tasks/encodings/seeds of the base models of one profile, and how
    they are judged: ``gates`` (``ropelib.gates.GateThresholds``), ``gate_samples`` (fresh sequences
    behind a retrieval model's gate, ``ropelib.protocols.gate_models``), ``lm_eval_tokens`` (the
    first tokens of a validation or test split that every LM evaluation scores; ``None``: the whole
    split — only ``smoke`` caps it, for speed) and ``ngram_train_tokens`` (the first tokens of the
    training split that the n-gram baselines are fitted on, ``ropelib.protocols.ngram_reference``;
    ``None``: all of it — again only ``smoke`` caps it).

    ``init_std`` (``None``: ``ropelib.model.width_scaled_init_std(d_model)``, GPT-2's 0.02 carried to
    the width by the fan-in rule) is every model's init; ``sinusoid_scale`` (``None``:
    ``sinusoid_scale_for(init_std)``) the sinusoids' factor. Both are filled in on construction, so
    ``setup.init_std`` and ``setup.sinusoid_scale`` are always numbers. Language models read a start
    token at position 0 of every window (``ropelib.model.ModelConfig.bos_token_id``)."""

    tasks: tuple[TaskSetup, ...]
    seeds: tuple[int, ...]
    encodings: tuple[str, ...] = ENCODING_VARIANTS
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    lr: float = 1e-2
    warmup_steps: int = 30
    sinusoid_scale: float | None = None
    init_std: float | None = None
    checkpoint_every: int = 100
    gates: GateThresholds = DEFAULT_THRESHOLDS
    gate_samples: int = 512
    lm_eval_tokens: int | None = None
    ngram_train_tokens: int | None = None

    def __post_init__(self) -> None:
        for label in ("lm_eval_tokens", "ngram_train_tokens"):
            value = getattr(self, label)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                raise ValueError(f"{label} must be None or an integer >= 2, got {value!r}")
        unknown = [e for e in self.encodings if e not in ENCODING_VARIANTS]
        if unknown or not self.encodings:
            raise ValueError(f"unknown encoding(s) {unknown}; allowed: {', '.join(ENCODING_VARIANTS)}")
        if not self.tasks or not all(isinstance(t, TaskSetup) for t in self.tasks):
            raise ValueError(f"tasks must be a non-empty tuple of TaskSetup, got {self.tasks!r}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"each task may appear once, got {names}")
        if (
            not self.seeds
            or len(set(self.seeds)) != len(self.seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds)
        ):
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"d_model={self.d_model} / n_heads={self.n_heads} must give an even head dimension (RoPE pairs)"
            )
        if self.init_std is None:
            object.__setattr__(self, "init_std", width_scaled_init_std(self.d_model))
        if (
            isinstance(self.init_std, bool)
            or not isinstance(self.init_std, (int, float))
            or not (0 < self.init_std < math.inf)
        ):
            raise ValueError(f"init_std must be None or a finite number > 0, got {self.init_std!r}")
        object.__setattr__(self, "init_std", float(self.init_std))
        if self.sinusoid_scale is None:
            object.__setattr__(self, "sinusoid_scale", sinusoid_scale_for(self.init_std))
        if (
            isinstance(self.sinusoid_scale, bool)
            or not isinstance(self.sinusoid_scale, (int, float))
            or not (0 < self.sinusoid_scale < math.inf)
        ):
            raise ValueError(f"sinusoid_scale must be None or a finite number > 0, got {self.sinusoid_scale!r}")

    def task(self, name: str) -> TaskSetup:
        """The ``TaskSetup`` called ``name`` (ValueError listing the setup's tasks)."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise ValueError(f"task {name!r} is not in this setup; its tasks: {', '.join(t.name for t in self.tasks)}")

    def tasks_of_kind(self, kind: str) -> list[str]:
        """Names of the setup's tasks of one kind (``lm``, ``retrieval``, ``algorithmic``)."""
        return [t.name for t in self.tasks if t.kind == kind]

    def to_frame(self) -> pd.DataFrame:
        """One row per task: the knobs shared by every encoding (for display in a notebook)."""
        return pd.DataFrame(
            [
                {
                    "task": t.name,
                    "kind": t.kind,
                    "train_length": t.train_length,
                    "steps": t.steps,
                    "batch_size": t.batch_size,
                    "task_params": dict(t.params),
                    "d_model": self.d_model,
                    "n_layers": self.n_layers,
                    "n_heads": self.n_heads,
                    "init_std": self.init_std,
                    "start_token": t.kind == "lm",
                    "lr": self.lr,
                    "seeds": list(self.seeds),
                    "n_encodings": len(self.encodings),
                }
                for t in self.tasks
            ]
        )


#: the base models of each profile (the one source of truth for notebooks 04, 05 and 06). Pilot numbers
#: behind ``default`` (2-core CPU, one thread per run, RoPE unless named, seed 0, books validation split;
#: n-gram references on that split: order 3 6.93, order 4 4.80, order 5 3.87):
#:
#: * LM, d=64, 2 layers, L=128, lr 1e-2 -- batch x steps (tokens): 32 x 250 (1.0M) ppl 6.84; 16 x 500
#:   (1.0M) 5.97; 8 x 1000 (1.0M) 5.61 (34 s); 32 x 500 (2.0M) 5.52; 16 x 1000 (2.0M) 5.12; 8 x 2000
#:   (2.0M) 4.95 (61 s). d=96 16 x 500: 5.74 (1.6x the time); d=128 32 x 500: 5.08 (2.6x the time);
#:   3 layers 16 x 500: 5.90. lr 2e-2 at 16 x 500: 6.43. L=256, 16 x 500: 5.45 but context gain 0.07
#:   (0.18-0.19 at L=128). NoPE at 32 x 500: 10.17 (lr 1e-2), 10.43 (lr 3e-3), 4 layers at 1.0M 10.63;
#:   sinusoidal 8 x 1000: 10.34 -- no better than a bigram (11.13) and no context gain.
#:   A first full run at 800 steps of 8 (seeds 0-2, test split): RoPE-family, ALiBi, T5, KERPLE and FIRE
#:   at perplexity 5.9-7.0 (under the order-3 n-gram's 7.01) but context gain 0.11-0.14 nats, below the
#:   0.15 gate; NoPE, sinusoidal and learned 10.3-10.8 with negative gain. RoPE at 1200 steps of 8: test
#:   perplexity 5.56, context gain 0.151; at 2000 steps of 8: 5.06 and 0.153 (ALiBi: 5.66 and 0.140) --
#:   the gain levels off near the gate, so more steps alone do not clear it.
#: * Second pilot (``benchmarks/pilot_lm.py`` reruns any of these, e.g. ``--encoding learned --init-std 0.02 0.06
#:   --train-length 64 --batch-size 16 --steps 1200 --no-start-token``; why NoPE and the absolute encodings stayed at bigram level): GPT-2's init std 0.02 is
#:   sized for width 768; at d=64 it starts query-key products ~12x smaller. At L=64, 16 x 1200 (1.2M
#:   tokens), validation: learned 10.81 (init 0.02) -> 5.72 (0.06) / 5.89 (0.125); sinusoidal 8.67 ->
#:   5.99 (0.06) / 5.69 (0.125); RoPE 5.55 -> 5.26 / 5.40; T5 5.52 -> 5.21 (0.125); ALiBi 6.17 -> 5.72
#:   (0.125). Tried at init 0.02 without effect (learned, L=128, 600 steps): no weight decay, untied
#:   embeddings, table init 0.1, 2 heads, 3 layers, beta2 0.99, lr 2e-3 or 2e-2 (all 10.6-11.9).
#:   NoPE stayed at 9.3-9.7 at every init: it has nothing to count positions from. With a start token
#:   at position 0 (Kazemnejad et al. 2023's construction needs one): 7.95 at 1.2M tokens, 6.49 at
#:   2.0M (init 0.069). Context gain at L=64 (positions 1-8 vs 32-63): RoPE 0.21, T5 0.22, learned 0.16,
#:   ALiBi 0.18 at 1.2M tokens, against 0.12-0.15 at L=128 before. So: init std by the fan-in rule
#:   (``width_scaled_init_std``, 0.069 at d=64), a start token for the LM, L=64 and 2000 steps of 16
#:   (2.0M tokens per model). Beating the order-4 n-gram (4.80) stayed out of reach (RoPE 5.26 at 1.2M),
#:   so ``default`` gates RoPE at order 3 like the others and reports the order-4 gap; ``full`` keeps 4.
#: * Third pilot (``benchmarks/pilot_lm.py --encoding nope --n-layers 3 --lr 0.005 0.01``; why NoPE failed its
#:   context gate at 2 layers, 0.10 nats against 0.15 on the test split, seeds 0-2): NoPE at 2 layers, 2000 x 16,
#:   validation, lr 2e-3 / 5e-3 / 1e-2: ppl 6.92 / 6.64 / 6.73, gain 0.089 / 0.101 / 0.112; 8 x 4000 (same
#:   tokens, 1.4x the time) 6.43 and 0.120; 16 x 4000 (4.1M tokens, 2x the time) 5.68 and 0.156. With 3 layers
#:   at 2000 x 16 (1.5x the time): 5.98 / 5.97 and 0.169 / 0.185 at lr 5e-3 / 1e-2 (seed 1: 5.88 / 6.16 and
#:   0.175 / 0.158); 4 layers (seed 1, lr 5e-3, 2x the time) 5.68 and 0.178. At 3 layers, lr 1e-2: RoPE 4.82
#:   and 0.257, sinusoidal 5.39 and 0.190, ALiBi 5.28 and 0.201, learned 5.22 and 0.193.
#:   Depth buys NoPE more context use than twice the tokens do, at less cost (a NoPE layer has to infer
#:   positions from the causal mask before a later one can use them; Haviv et al. 2022), so ``default``
#:   trains 3 layers.
#: * Retrieval: kv_recall (4 pairs, distinct values, floor 0.25) stayed at the floor after 1200 steps x 32
#:   at L=32; passkey with digits in the filler (floor 0.04) stayed below its floor after 600 steps;
#:   digit-free passkey with 3 digits (floor 1/6) reached 0.70 (rope, 1200 x 32), 0.60 (alibi, 1000 x 32),
#:   0.75 (nope, 1000 x 32); with 2 digits the floor is 0.5. At 600 x 32 (first full run) seed 0 stayed
#:   below the floor for 8 of 10 encodings; RoPE at 1200 x 16: 0.70 (seed 0), 0.28 (seed 1). So: 3-digit
#:   passkey, floor 1/6, 1000 steps of 16.
#: * Kazemnejad et al.'s copy and reverse (``benchmarks/pilot_algorithmic.py``; default's model before the third pilot, d=64, 2 layers,
#:   lr 1e-2, seed 0, exact match at the training length over 256 sequences, 95% Wilson): at T=16, 1000 x 32
#:   (0.51M tokens) RoPE 0.992 / 1.000 (copy / reverse), learned 0.992 / 1.000, ALiBi 0.988 / 0.766,
#:   T5 0.938 / 0.797; NoPE 0.008-0.13 on copy and 0.00-0.03 on reverse at every setting tried (T=16 and
#:   24, lr 3e-3 to 2e-2, up to 1.5M tokens, width 128); only 4 layers helped it (2000 x 32: 0.63 / 0.97),
#:   and the model size is shared with the LM. At 2x every model scored 0 exact match, so ``default`` could
#:   not rank the encodings either. 60 models at ~20-40 s each would add 10-20 min. So the algorithmic
#:   tasks stay in ``full`` (d=128, 4 layers; an estimated 25-40 min per model on one CPU thread, a GPU job).
SETUPS: Mapping[str, BaseSetup] = {
    "smoke": BaseSetup(
        tasks=(
            TaskSetup("books", train_length=32, steps=60, batch_size=8, lrs=(5e-3, 1e-2), sweep_steps=4),
            TaskSetup("passkey", train_length=16, steps=8, batch_size=8, params={"n_digits": 2}),
            TaskSetup("reverse", train_length=16, steps=8, batch_size=8),
        ),
        seeds=(0, 1),
        encodings=("nope", "sinusoidal", "learned", "alibi", "rope"),
        d_model=32,
        n_heads=2,
        warmup_steps=2,
        checkpoint_every=0,
        # loose gates, so that smoke runs exercise the code of passed and of failed models alike
        gates=GateThresholds(context_gain_nats=0.0, lm_baseline_order=1, rope_baseline_order=1, retrieval_margin=-0.5),
        gate_samples=16,
        lm_eval_tokens=2048,
        ngram_train_tokens=200_000,
    ),
    "default": BaseSetup(
        tasks=(
            TaskSetup("books", train_length=64, steps=2000, batch_size=16, lrs=(5e-3, 1e-2, 2e-2), sweep_steps=300),
            TaskSetup("passkey", train_length=32, steps=1000, batch_size=16, params={"n_digits": 3}),
        ),
        seeds=(0, 1, 2),
        n_layers=3,
        warmup_steps=50,
        checkpoint_every=400,
        gates=GateThresholds(rope_baseline_order=3),
    ),
    "full": BaseSetup(
        tasks=(
            TaskSetup("books", train_length=256, steps=1200, batch_size=64, lrs=(1e-3, 2e-3, 4e-3), sweep_steps=250),
            TaskSetup(
                "passkey", train_length=128, steps=600, batch_size=64, params={"n_digits": 4, "digit_filler": True}
            ),
            TaskSetup("copy", train_length=42, steps=600, batch_size=64),
            TaskSetup("reverse", train_length=42, steps=600, batch_size=64),
        ),
        seeds=(0, 1, 2),
        d_model=384,
        n_layers=6,
        n_heads=6,
        lr=2e-3,
        warmup_steps=100,
        checkpoint_every=500,
        gate_samples=1024,
    ),
}


def base_setup(profile: str) -> BaseSetup:
    """The ``BaseSetup`` of ``profile`` (``smoke``, ``default`` or ``full``)."""
    try:
        return SETUPS[profile]
    except (KeyError, TypeError):
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(SETUPS)}") from None


def encoding_config(
    encoding: str, train_length: int, setup: BaseSetup, *, max_eval_multiple: float = 16.0
) -> tuple[str, dict[str, Any]]:
    """``(ModelConfig.encoding, encoding_params)`` of an encoding label for a model trained at
    ``train_length`` (``L``), every length-dependent hyperparameter scaled to ``L`` by the rule of its
    paper (``encoding_settings`` lists them, with their sources, for the notebooks):

    * ``learned``: a table of exactly ``L`` rows (so it cannot be run past it: NaN with a reason,
      never clamped).
    * ``t5``: ``num_buckets = min(32, L)``, half of them exact, and ``max_distance = L - 1``, the longest
      distance in a causal training window. T5 (Raffel et al. 2020, §2.1; HF ``modeling_t5.py``) uses
      32 buckets up to offset 128 with 512-token inputs and 114-token decoder targets
      (``random_spans_helper``): its causal decoder reaches its last bucket at its longest training
      distance 113, which is the property kept here. Every distance ``>= L`` met at evaluation lands
      in the last bucket, and that bucket is trained (at distance ``L - 1``), so no bucket reached
      past ``L`` is untrained. Not T5's encoder ratio ``max_distance = L / 4``: that is invalid for
      ``L <= 64`` (``max_distance`` must exceed the 16 exact buckets) and would fold most training
      distances into one bucket. Fewer than 32 buckets only when the window has fewer than 32
      distances (``L < 32``), where the extra buckets could never be reached. Needs ``L >= 3``.
    * ``fire``: the learned threshold starts at ``L`` (``init_threshold``; Li et al. 2023, §3.2). Training
      queries (``i < L``) then use the fixed normaliser ``psi(L)`` and the MLP sees inputs up to
      ``psi(L - 1) / psi(L)`` (about 1); past ``L`` progressive interpolation ``psi(i - j) / psi(i)``
      keeps every input in ``[0, 1]``, inside the trained range. With the listing's 512 at ``L = 64``
      training inputs reached only 0.50 and a 16x evaluation would feed the MLP inputs up to 1.0 it
      never saw. Caveat: if the paper's 512 goes with its 2048-token pretraining, the paper's ratio is
      ``L / 4`` (interpolation already active for the last 3/4 of a training window); ``L`` is chosen
      so training sees the un-interpolated regime the threshold exists for and evaluation past ``L``
      maps into it (the threshold is learned and can move either way).
    * ``xpos``: ``scale_base = gamma = L / 2``: torchscale's ``scale_base = 512`` with the paper's
      training length 1024 (Sun et al. 2022, §3.2, §4), so the decay over one training window,
      ``zeta_i^((L - 1) / gamma)``, is the paper's. RoPE base 1e4 (default).
    * ``randomized``: RoPE with training positions drawn from ``[0, N)``,
      ``N = ceil(max_eval_multiple * L)``: the longest evaluation length (default 16x, the largest of
      ``ropelib.evaluate.LENGTH_MULTIPLIERS``), so every position an evaluation uses is one training can
      draw (Ruoss et al. 2023, §3: ``N`` much larger than the test lengths). The range
      follows the evaluation, not a fixed number. Pass a larger
      ``max_eval_multiple`` for a wider range (the authors' example script uses N = 2048 against test
      lengths up to 500, about 4x).
      At evaluation the positions are drawn too (``eval_positions="random"``, seeded, so deterministic):
      the authors' code draws random positions at test time as well (see ``encoding_settings``).
    * ``sinusoidal``: scaled by ``setup.sinusoid_scale`` (``sinusoid_scale_for(setup.init_std)``: the
      size of a token embedding at initialisation); not length-dependent.
    * ``alibi`` (slopes by head count only), ``rope`` (base 1e4), ``kerple``, ``nope``: their defaults;
      nothing of theirs depends on ``L``.

    ``max_eval_multiple`` must be a finite number ``>= 1``; ``train_length`` a positive integer.
    """
    if encoding not in ENCODING_VARIANTS:
        raise ValueError(f"unknown encoding {encoding!r}; allowed: {', '.join(ENCODING_VARIANTS)}")
    length = _check_train_length(train_length)
    n_max = _randomized_range(length, max_eval_multiple)
    if encoding == "learned":
        return "learned", {"max_positions": length}
    if encoding == "randomized":
        return "randomized", {"inner": "rope", "max_position": n_max, "eval_positions": "random"}
    if encoding == "sinusoidal":
        return "sinusoidal", {"scale": float(setup.sinusoid_scale)}
    if encoding == "t5":
        if length < 3:
            raise ValueError(
                f"t5 needs train_length >= 3 (max_distance = L - 1 must exceed the num_buckets // 2 exact "
                f"buckets), got {length}"
            )
        return "t5", {"num_buckets": min(32, length), "max_distance": length - 1}
    if encoding == "fire":
        return "fire", {"init_threshold": float(length)}
    if encoding == "xpos":
        return "xpos", {"scale_base": length / 2.0}
    return encoding, {}


def _check_train_length(train_length: Any) -> int:
    if (
        isinstance(train_length, (bool, np.bool_))
        or not isinstance(train_length, (int, np.integer))
        or (train_length < 1)
    ):
        raise ValueError(f"train_length must be a positive integer, got {train_length!r}")
    return int(train_length)


def _randomized_range(train_length: int, max_eval_multiple: Any) -> int:
    """``ceil(max_eval_multiple * train_length)`` (the longest evaluation length, as
    ``ropelib.evaluate.lengths_for`` rounds it, or one more); ValueError unless a finite number >= 1."""
    if (
        isinstance(max_eval_multiple, (bool, np.bool_))
        or not isinstance(max_eval_multiple, (int, float, np.integer, np.floating))
        or not (1.0 <= float(max_eval_multiple) < math.inf)
    ):
        raise ValueError(f"max_eval_multiple must be a finite number >= 1, got {max_eval_multiple!r}")
    return int(math.ceil(round(float(max_eval_multiple) * train_length, 9)))


def encoding_settings(setup: BaseSetup, train_length: int, *, max_eval_multiple: float = 16.0) -> pd.DataFrame:
    """The settings table of the notebooks: one row per (encoding of ``setup.encodings``, parameter) with
    columns ``encoding, parameter, value, rule, source``.

    Values are read from ``encoding_config(encoding, train_length, setup, max_eval_multiple=...)`` with
    the encoding's defaults filled in (``resolved_params``, what ``make_encoding`` builds), so the table
    shows what the models are built with; ALiBi's slopes come from ``alibi_slopes(setup.n_heads)``, the
    function its module calls. Encodings with no length-dependent setting (``nope``, ``kerple``) get one
    row with ``parameter = "(none)"`` and ``value = None``; ``sinusoidal`` (scale) and ``rope`` (base) show
    their one fixed setting, marked as not length-dependent in ``rule``.

    Randomized positions, test protocol: the authors' code (google-deepmind/randomized_positional_encodings,
    ``models/positional_encodings.py``) draws a fresh sorted subset of ``[0, noise_max_length)`` on every
    call, in training and at test (``experiments/range_evaluation.py`` passes an RNG key), and the authors
    confirm it (issue #1 there: "we also randomize at test time"); the base models do the same
    (``eval_positions="random"``, seeded).
    """
    if not isinstance(setup, BaseSetup):
        raise ValueError(f"setup must be a BaseSetup, got {type(setup).__name__}")
    rows = []
    for encoding in setup.encodings:
        name, params = encoding_config(encoding, train_length, setup, max_eval_multiple=max_eval_multiple)
        for parameter, value, rule, source in _setting_rows(encoding, name, params, setup, int(train_length)):
            rows.append({"encoding": encoding, "parameter": parameter, "value": value, "rule": rule, "source": source})
    return pd.DataFrame(rows, columns=["encoding", "parameter", "value", "rule", "source"])


def _setting_rows(
    encoding: str, name: str, params: Mapping[str, Any], setup: BaseSetup, L: int
) -> list[tuple[str, Any, str, str]]:
    """``(parameter, value, rule, source)`` of each setting of one encoding trained at ``L``: values from
    ``params`` (``encoding_config``'s output) with the registry defaults filled in; ``L`` only enters the
    explanations."""
    from ropelib.encodings import alibi_slopes, resolved_params, t5_relative_bucket

    p = resolved_params(name, params)
    none = "(none)"
    if encoding == "nope":
        return [
            (
                none,
                None,
                "no positional encoding at all: nothing depends on the training length",
                "Haviv et al. 2022, arXiv 2203.16634; Kazemnejad et al. 2023, arXiv 2305.19466, §3",
            )
        ]
    if encoding == "kerple":
        return [
            (
                none,
                None,
                f"no length-dependent setting: p, a learned per head (init p ~ 2 U(0,1), "
                f"a ~ U(0,1), clamped >= 0.01), variant {p['variant']!r}",
                "Chi et al. 2022, arXiv 2205.09921, §4 Eq. 9-10; github.com/chijames/KERPLE",
            )
        ]
    if encoding == "sinusoidal":
        return [
            (
                "scale",
                p["scale"],
                f"scale = setup.sinusoid_scale = {p['scale']:.4g} (init_std * sqrt(2): a "
                "fresh token embedding's RMS over a sinusoid column's 1/sqrt(2)); not length-dependent",
                "Vaswani et al. 2017, arXiv 1706.03762, §3.4-3.5 (the embeddings' sqrt(d_model) balance)",
            )
        ]
    if encoding == "rope":
        return [
            (
                "rope_theta",
                p["rope_theta"],
                f"base b = {p['rope_theta']:g} (the RoFormer default); not length-dependent",
                "Su et al. 2021, arXiv 2104.09864, §3.2-3.4",
            )
        ]
    if encoding == "alibi":
        slopes = tuple(alibi_slopes(setup.n_heads))
        m = min(slopes)
        return [
            (
                "slopes",
                slopes,
                f"geometric, start and ratio 2^(-8/n) for n = {setup.n_heads} heads (the "
                f"paper's rule, head count only); smallest slope {m:g}: effective range 1/m = {1 / m:g} tokens "
                f"= {1 / (m * L):.2f} x L, its penalty at distance L-1 is {m * (L - 1):.3f} logits",
                "Press et al. 2021, arXiv 2108.12409, §3 (slopes by head count)",
            )
        ]
    if encoding == "learned":
        n = p["max_positions"]
        return [
            (
                "max_positions",
                n,
                f"max_positions = L = {n}: a table of exactly the training length; a "
                "position >= L has no row (NaN with a reason at evaluation, never clamped)",
                "Radford et al. 2019 (GPT-2 learned positions); Vaswani et al. 2017, §3.5",
            )
        ]
    if encoding == "t5":
        nb, M = p["num_buckets"], p["max_distance"]
        train = t5_relative_bucket(-torch.arange(L), p["bidirectional"], nb, M)  # distances 0 … L-1
        last = int(train.max())
        first_last = int((train == last).nonzero()[0])
        src = (
            "Raffel et al. 2020, arXiv 1910.10683, §2.1 (32 buckets, offsets up to 128 share the last); HF "
            "modeling_t5.py _relative_position_bucket; t5 random_spans_helper: 512 inputs -> 114 decoder "
            "targets, whose longest distance 113 reaches the last bucket"
        )
        return [
            (
                "num_buckets",
                nb,
                f"num_buckets = min(32, L) = {nb}: T5's 32, never more than the {L} distances "
                f"of a training window; half exact (distances < {nb // 2} own a bucket), the rest log-spaced",
                src,
            ),
            (
                "max_distance",
                M,
                f"max_distance = L - 1 = {M}, the longest training distance: the log buckets "
                f"span the trained distances, distances {first_last} ... {M} and every distance >= L at "
                f"evaluation share bucket {last} (trained); {len(set(train.tolist()))} of {nb} buckets reached "
                "in training. Not T5's encoder ratio L/4 (invalid for L <= 64)",
                src,
            ),
        ]
    if encoding == "fire":
        thr, c = p["init_threshold"], p["init_c"]
        psi = lambda x: math.log1p(c * x)  # noqa: E731
        return [
            (
                "init_threshold",
                thr,
                f"threshold L_thr = L = {thr:g} at init (learned): training queries use the "
                f"fixed normaliser psi(L), MLP inputs in [0, {psi(L - 1) / psi(thr):.2f}]; past L progressive "
                f"interpolation psi(i-j)/psi(i) stays in [0, 1] (the former 512 gave training inputs only up to "
                f"{psi(L - 1) / psi(512):.2f}). psi(x) = log(1 + c x), c = {c:g}",
                "Li et al. 2023, arXiv 2310.04418, §3.2 (learnable threshold, progressive interpolation); init "
                "c = 0.1, L = 512 in the public PyTorch listing (mcleish7/arithmetic, class FIRE)",
            )
        ]
    if encoding == "xpos":
        g = p["scale_base"]
        zeta0 = 0.4 / 1.4  # the fastest-decaying pair, i = 0
        return [
            (
                "scale_base",
                g,
                f"gamma = L / 2 = {g:g}: torchscale's scale_base 512 at the paper's training length "
                f"1024; the score factor zeta_i^((n-m)/gamma) at distance L-1 is {zeta0 ** ((L - 1) / g):.3f} for "
                f"the fastest pair (paper: {zeta0 ** (1023 / 512):.3f})",
                "Sun et al. 2022, arXiv 2212.10554, §3.2 Eq. 8 and §4 (trained at 1024); microsoft/torchscale "
                "xpos_relative_position.py (scale_base=512)",
            ),
            (
                "rope_theta",
                p["rope_theta"],
                f"RoPE base {p['rope_theta']:g} (default); not length-dependent",
                "Su et al. 2021, arXiv 2104.09864, §3.4",
            ),
        ]
    if encoding == "randomized":
        n = p["max_position"]
        src = (
            "Ruoss et al. 2023, arXiv 2305.16843, §3-4 (N >> test length: train <= 40, test <= 500); "
            "google-deepmind/randomized_positional_encodings: N = 2048 in experiments/example.py, issue #1 "
            "(test-time randomization)"
        )
        return [
            (
                "max_position",
                n,
                f"N = ceil(max_eval_multiple * L) = {n}, the longest evaluation length: "
                "training draws L sorted distinct positions from [0, N), so every evaluation position was "
                "trainable",
                src,
            ),
            (
                "eval_positions",
                p["eval_positions"],
                "test protocol as the authors': sorted random positions "
                "from [0, N) at evaluation too, drawn from a generator seeded with eval_seed (the same input "
                "always gets the same positions)",
                src,
            ),
        ]
    raise AssertionError(f"no settings documented for encoding {encoding!r}")  # ENCODING_VARIANTS grew


@cache
def _bos_token_id(name: str, params_json: str) -> int | None:
    """A language-model task's start token (``BOS``); ``None`` for the synthetic tasks."""
    if TASK_KINDS.get(name) != "lm":
        return None
    return int(make_task(name, **json.loads(params_json)).BOS)


@cache
def _vocab_size(name: str, params_json: str) -> int:
    return make_task(name, **json.loads(params_json)).vocab_size


def base_spec(
    setup: BaseSetup,
    encoding: str,
    task: str,
    seed: int,
    device: str = "auto",
    *,
    lr: float | None = None,
    steps: int | None = None,
) -> RunSpec:
    """The ``RunSpec`` of one base model: ``encoding`` trained on ``task`` with ``seed``.

    ``lr`` (default: the setup's ``lr``) and ``steps`` (default: the task's) are what the learning-rate
    sweep varies (``ropelib.protocols``). ``device`` does not enter the spec's hash, so the same model is
    found in the cache whatever the device it is loaded on."""
    ts = setup.task(task)
    if seed not in setup.seeds:
        raise ValueError(f"seed {seed!r} is not in this setup; its seeds: {list(setup.seeds)}")
    lr = setup.lr if lr is None else lr
    steps = ts.steps if steps is None else steps
    task_config = TaskConfig(ts.name, dict(ts.params))
    vocab_size = _vocab_size(ts.name, json.dumps(dict(ts.params), sort_keys=True))
    enc_name, enc_params = encoding_config(encoding, ts.train_length, setup)
    model = ModelConfig(
        vocab_size=vocab_size,
        n_layers=setup.n_layers,
        n_heads=setup.n_heads,
        d_model=setup.d_model,
        encoding=enc_name,
        encoding_params=enc_params,
        init_std=setup.init_std,
        bos_token_id=_bos_token_id(ts.name, json.dumps(dict(ts.params), sort_keys=True)),
    )
    train = TrainConfig(
        steps=steps,
        batch_size=ts.batch_size,
        seq_len=ts.train_length,
        lr=lr,
        warmup_steps=min(setup.warmup_steps, steps),
        seed=int(seed),
        checkpoint_every=setup.checkpoint_every,
        device=device,
    )
    return RunSpec(model=model, task=task_config, train=train)


def base_specs(
    setup: BaseSetup,
    device: str = "auto",
    *,
    encodings: Iterable[str] | None = None,
    tasks: Iterable[str] | None = None,
    seeds: Iterable[int] | None = None,
    lrs: Mapping[tuple[str, str], float] | None = None,
) -> dict[tuple[str, str, int], RunSpec]:
    """Every base-model spec, keyed by ``(encoding, task, seed)``, in the order encodings x tasks x seeds.

    ``encodings`` / ``tasks`` / ``seeds`` select a subset of the setup's (e.g. notebook 06 asks for
    ``encodings=["rope"]``); a name outside the setup raises ValueError. ``lrs`` maps ``(encoding,
    task)`` to its tuned learning rate (``ropelib.protocols.tune_learning_rates``); a pair not in it
    uses the setup's ``lr``."""
    encodings = list(setup.encodings if encodings is None else encodings)
    tasks = [t.name for t in setup.tasks] if tasks is None else list(tasks)
    seeds = list(setup.seeds if seeds is None else seeds)
    outside = [e for e in encodings if e not in setup.encodings]
    if outside:
        raise ValueError(f"encoding(s) {outside} are not in this setup; its encodings: {', '.join(setup.encodings)}")
    lrs = dict(lrs or {})
    return {
        (e, t, s): base_spec(setup, e, t, s, device, lr=lrs.get((e, t)))
        for e in encodings
        for t in tasks
        for s in seeds
    }


def run_specs(
    specs: Mapping[tuple[str, str, int], RunSpec], jobs: int = 1, progress: bool = False
) -> dict[tuple[str, str, int], RunResult]:
    """Train (or read back from the cache) every spec; results under the same keys.

    ``jobs > 1`` trains the unfinished specs in parallel local processes (``ropelib.runs.sweep``), each
    with ``cpu_count // jobs`` torch threads; ``jobs == 1`` trains them one after another in this
    process (what a single GPU wants). Each result's ``cached`` says whether it was finished in the
    cache before this call (read back rather than trained)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    keys = list(specs)
    if jobs == 1:  # one after another here, with the same run-level progress as a sweep
        done = {k: is_finished(specs[k]) for k in keys}
        report = SweepProgress(
            len(keys), sum(done.values()), bar=progress_bar_default(), status_file=os.environ.get(PROGRESS_FILE_ENV)
        )
        results = {}
        try:
            for k in keys:
                results[k] = run(specs[k], progress=progress)
                if not done[k]:
                    report.advance()
        finally:
            report.close()
        return results
    was_finished = {k: is_finished(specs[k]) for k in keys}
    results = dict(zip(keys, sweep([specs[k] for k in keys], max_workers=jobs)))
    for k, r in results.items():
        r.cached = was_finished[k]
    return results
