"""The base models of notebooks 04–06 and the statistics they share.

One place defines *which* toy models the length-extrapolation notebooks train, so that notebook 04
(training), 05 (length extrapolation) and 06 (context extension of the RoPE models) build identical
``RunSpec`` s and hit the same run-cache entries (``ropelib.runs``): ``base_setup(profile)`` gives the
frozen ``BaseSetup`` of a profile, ``base_specs(setup, device)`` every spec keyed by
``(encoding, task, seed)``.

The comparison follows Press et al. 2021 (ALiBi, arXiv 2108.12409, §4: same model, same budget, only
the positional encoding differs, trained short and evaluated long) and Kazemnejad et al. 2023
(arXiv 2305.19466, §3: decoder-only models on algorithmic tasks, NoPE included). Randomized positions
are Ruoss et al. 2023 (arXiv 2305.16843, §3) around RoPE.

Statistics: ``mean_ci`` is the two-sided Student-t confidence interval of a mean over seeds
(``scipy.stats.t``), ``aggregate_seeds`` applies it per group of a tidy table. ``attention_distance``
measures where attention goes; ``ordering_table`` sets our seed means beside the published orderings
of ``ropelib.published``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .data import TaskConfig, make_task
from .model import INIT_STD, ModelConfig
from .runs import RunResult, RunSpec, is_finished, run, sweep
from .train import TrainConfig

__all__ = [
    "ENCODING_VARIANTS",
    "SINUSOID_SCALE",
    "TASK_KINDS",
    "TaskSetup",
    "BaseSetup",
    "SETUPS",
    "base_setup",
    "encoding_config",
    "base_spec",
    "base_specs",
    "run_specs",
    "mean_ci",
    "aggregate_seeds",
    "attention_distance",
    "exact_match_accuracy",
    "nearest_multiplier",
    "ordering_table",
]

#: the encodings of the comparison (labels = names in ``ropelib.encodings.ENCODINGS``), in table order
ENCODING_VARIANTS: tuple[str, ...] = (
    "nope", "sinusoidal", "learned", "t5", "alibi", "rope", "xpos", "kerple", "fire", "randomized",
)
#: the sinusoids' scale in the base models: a fresh token embedding's RMS (``INIT_STD``) over a sinusoid
#: column's RMS (``1/sqrt(2)``), the balance Vaswani et al. keep by multiplying the embeddings by
#: ``sqrt(d_model)`` (§3.4). Unscaled, position vectors ~35x the size of the token vectors drown them
#: (notebook 04 trains that model too and measures the damage).
SINUSOID_SCALE: float = INIT_STD * math.sqrt(2.0)
#: task name -> what it measures in notebook 05
TASK_KINDS: Mapping[str, str] = {
    "chars": "lm", "passkey": "retrieval", "kv_recall": "retrieval", "copy": "algorithmic", "reverse": "algorithmic",
}


@dataclass(frozen=True)
class TaskSetup:
    """One task the base models train on: its name and parameters (``ropelib.data``), training
    length, steps and batch size (the same for every encoding)."""

    name: str
    train_length: int
    steps: int
    batch_size: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in TASK_KINDS:
            raise ValueError(f"unknown task {self.name!r} for the base models; allowed: {', '.join(TASK_KINDS)}")
        for key in ("train_length", "steps", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TaskSetup.{key} must be a positive integer, got {value!r}")
        TaskConfig(self.name, dict(self.params))  # unknown parameter -> ValueError listing accepted ones

    @property
    def kind(self) -> str:
        """``"lm"``, ``"retrieval"`` or ``"algorithmic"``."""
        return TASK_KINDS[self.name]


@dataclass(frozen=True)
class BaseSetup:
    """Model size, optimiser and the tasks/encodings/seeds of the base models of one profile."""

    tasks: tuple[TaskSetup, ...]
    seeds: tuple[int, ...]
    encodings: tuple[str, ...] = ENCODING_VARIANTS
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    lr: float = 1e-2
    warmup_steps: int = 30
    randomized_max_position: int = 1024
    sinusoid_scale: float = SINUSOID_SCALE
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        unknown = [e for e in self.encodings if e not in ENCODING_VARIANTS]
        if unknown or not self.encodings:
            raise ValueError(f"unknown encoding(s) {unknown}; allowed: {', '.join(ENCODING_VARIANTS)}")
        if not self.tasks or not all(isinstance(t, TaskSetup) for t in self.tasks):
            raise ValueError(f"tasks must be a non-empty tuple of TaskSetup, got {self.tasks!r}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"each task may appear once, got {names}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds
        ):
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds!r}")
        if isinstance(self.sinusoid_scale, bool) or not isinstance(self.sinusoid_scale, (int, float)) or not (
            0 < self.sinusoid_scale < math.inf
        ):
            raise ValueError(f"sinusoid_scale must be a finite number > 0, got {self.sinusoid_scale!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"d_model={self.d_model} / n_heads={self.n_heads} must give an even head dimension (RoPE pairs)"
            )

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
        return pd.DataFrame([
            {"task": t.name, "kind": t.kind, "train_length": t.train_length, "steps": t.steps,
             "batch_size": t.batch_size, "task_params": dict(t.params), "d_model": self.d_model,
             "n_layers": self.n_layers, "n_heads": self.n_heads, "lr": self.lr, "seeds": list(self.seeds),
             "n_encodings": len(self.encodings)}
            for t in self.tasks
        ])


#: the base models of each profile (the one source of truth for notebooks 04, 05 and 06).
#: default: sized to train 10 encodings x 3 seeds x 2 tasks in a few minutes on 2 CPU cores. The
#: retrieval task is passkey with 2 digits at length 32: in pilot runs (RoPE, lr 1e-2, 300-400 steps)
#: 4-digit passkey stayed at 0% exact match and kv_recall below 70%, while 2-digit passkey was learned.
#: copy/reverse (Kazemnejad) only where the budget allows: smoke (code path) and full. Pilot for default
#: (this model, copy at train_length 16, i.e. instances of up to 7 symbols, seed 0, one CPU thread each):
#: 1000 steps x 32 gave exact match at 1x of 0.30 (rope), 0.00 (nope), 0.55 (learned) and 0.00 for all
#: at 2x, at ~21 s per run; 30 such runs would add ~5 min to 04 for models that have not learned the task.
SETUPS: Mapping[str, BaseSetup] = {
    "smoke": BaseSetup(
        tasks=(
            TaskSetup("chars", train_length=32, steps=8, batch_size=8),
            TaskSetup("passkey", train_length=16, steps=8, batch_size=8, params={"n_digits": 2}),
            TaskSetup("reverse", train_length=16, steps=8, batch_size=8),
        ),
        seeds=(0, 1),
        encodings=("nope", "sinusoidal", "learned", "alibi", "rope"),
        d_model=32,
        n_heads=2,
        warmup_steps=2,
        randomized_max_position=256,
        checkpoint_every=0,
    ),
    "default": BaseSetup(
        tasks=(
            TaskSetup("chars", train_length=64, steps=200, batch_size=16),
            TaskSetup("passkey", train_length=32, steps=300, batch_size=32, params={"n_digits": 2}),
        ),
        seeds=(0, 1, 2),
    ),
    "full": BaseSetup(
        tasks=(
            TaskSetup("chars", train_length=128, steps=3000, batch_size=64),
            TaskSetup("passkey", train_length=64, steps=2000, batch_size=64, params={"n_digits": 4}),
            TaskSetup("copy", train_length=42, steps=3000, batch_size=64),
            TaskSetup("reverse", train_length=42, steps=3000, batch_size=64),
        ),
        seeds=(0, 1, 2, 3, 4),
        d_model=128,
        n_layers=4,
        lr=3e-3,
        warmup_steps=100,
        randomized_max_position=4096,
        checkpoint_every=500,
    ),
}


def base_setup(profile: str) -> BaseSetup:
    """The ``BaseSetup`` of ``profile`` (``smoke``, ``default`` or ``full``)."""
    try:
        return SETUPS[profile]
    except (KeyError, TypeError):
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(SETUPS)}") from None


def encoding_config(encoding: str, train_length: int, setup: BaseSetup) -> tuple[str, dict[str, Any]]:
    """``(ModelConfig.encoding, encoding_params)`` of an encoding label for a model trained at
    ``train_length``. ``learned`` gets a table of exactly ``train_length`` rows (so it cannot be run
    past it: NaN with a reason, never clamped); ``randomized`` wraps RoPE with positions drawn from
    ``[0, setup.randomized_max_position)``; ``sinusoidal`` is scaled by ``setup.sinusoid_scale``
    (``SINUSOID_SCALE``: the size of a token embedding at initialisation); every other encoding its
    defaults."""
    if encoding not in ENCODING_VARIANTS:
        raise ValueError(f"unknown encoding {encoding!r}; allowed: {', '.join(ENCODING_VARIANTS)}")
    if encoding == "learned":
        return "learned", {"max_positions": int(train_length)}
    if encoding == "randomized":
        if setup.randomized_max_position < train_length:
            raise ValueError(
                f"randomized_max_position={setup.randomized_max_position} must be >= train_length={train_length}"
            )
        return "randomized", {"inner": "rope", "max_position": int(setup.randomized_max_position)}
    if encoding == "sinusoidal":
        return "sinusoidal", {"scale": float(setup.sinusoid_scale)}
    return encoding, {}


@lru_cache(maxsize=None)
def _vocab_size(name: str, params_json: str) -> int:
    return make_task(name, **json.loads(params_json)).vocab_size


def base_spec(setup: BaseSetup, encoding: str, task: str, seed: int, device: str = "auto") -> RunSpec:
    """The ``RunSpec`` of one base model: ``encoding`` trained on ``task`` with ``seed``.

    ``device`` does not enter the spec's hash, so the same model is found in the cache whatever the
    device it is loaded on."""
    ts = setup.task(task)
    if seed not in setup.seeds:
        raise ValueError(f"seed {seed!r} is not in this setup; its seeds: {list(setup.seeds)}")
    task_config = TaskConfig(ts.name, dict(ts.params))
    vocab_size = _vocab_size(ts.name, json.dumps(dict(ts.params), sort_keys=True))
    enc_name, enc_params = encoding_config(encoding, ts.train_length, setup)
    model = ModelConfig(
        vocab_size=vocab_size, n_layers=setup.n_layers, n_heads=setup.n_heads, d_model=setup.d_model,
        encoding=enc_name, encoding_params=enc_params,
    )
    train = TrainConfig(
        steps=ts.steps, batch_size=ts.batch_size, seq_len=ts.train_length, lr=setup.lr,
        warmup_steps=min(setup.warmup_steps, ts.steps), seed=int(seed), checkpoint_every=setup.checkpoint_every,
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
) -> dict[tuple[str, str, int], RunSpec]:
    """Every base-model spec, keyed by ``(encoding, task, seed)``, in the order encodings x tasks x seeds.

    ``encodings`` / ``tasks`` / ``seeds`` select a subset of the setup's (e.g. notebook 06 asks for
    ``encodings=["rope"]``); a name outside the setup raises ValueError."""
    encodings = list(setup.encodings if encodings is None else encodings)
    tasks = [t.name for t in setup.tasks] if tasks is None else list(tasks)
    seeds = list(setup.seeds if seeds is None else seeds)
    outside = [e for e in encodings if e not in setup.encodings]
    if outside:
        raise ValueError(f"encoding(s) {outside} are not in this setup; its encodings: {', '.join(setup.encodings)}")
    return {(e, t, s): base_spec(setup, e, t, s, device) for e in encodings for t in tasks for s in seeds}


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
    if jobs == 1:
        return {k: run(specs[k], progress=progress) for k in keys}
    was_finished = {k: is_finished(specs[k]) for k in keys}
    results = dict(zip(keys, sweep([specs[k] for k in keys], max_workers=jobs)))
    for k, r in results.items():
        r.cached = was_finished[k]
    return results


# -- statistics over seeds -------------------------------------------------------------------------


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, ci_low, ci_high, n)`` of the finite ``values``: a two-sided Student-t interval.

    ``mean ± t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (ddof=1), i.e. ``scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=sem)``. NaNs are dropped
    (``n`` counts the rest). ``n == 0``: all NaN; ``n == 1``: the value and a NaN interval; all values
    equal: the interval collapses to the mean.
    """
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a float in (0, 1), got {confidence!r}")
    x = np.asarray(list(values), dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    sem = float(x.std(ddof=1) / math.sqrt(n))
    if sem == 0.0:
        return mean, mean, mean, n
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return mean, float(low), float(high), n


def aggregate_seeds(
    df: pd.DataFrame, by: Sequence[str], value: str, confidence: float = 0.95, prefix: str = ""
) -> pd.DataFrame:
    """Mean and confidence interval of column ``value`` over the rows of each group ``by`` (the seeds).

    Returns one row per group with the ``by`` columns and ``n_seeds``, ``{prefix}mean``,
    ``{prefix}ci_low``, ``{prefix}ci_high`` (``mean_ci``), groups in sorted order."""
    missing = [c for c in [*by, value] if c not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the table; its columns: {list(df.columns)}")
    rows = []
    for key, group in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high, n = mean_ci(group[value].to_numpy(dtype=float), confidence)
        rows.append({**dict(zip(by, key)), "n_seeds": n, f"{prefix}mean": mean, f"{prefix}ci_low": low,
                     f"{prefix}ci_high": high})
    return pd.DataFrame(rows, columns=[*by, "n_seeds", f"{prefix}mean", f"{prefix}ci_low", f"{prefix}ci_high"])


@torch.no_grad()
def exact_match_accuracy(model: torch.nn.Module, task: Any, length: int, n_samples: int, seed: int) -> float:
    """Fraction of ``n_samples`` sequences from the task's *training* distribution (random depth,
    distance or instance length; generator seeded with ``seed``) whose every scored prediction
    (argmax, teacher forcing) is right."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    batch = task.sample(n_samples, length, torch.Generator().manual_seed(int(seed)))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        pred = model(batch.x.to(device)).argmax(-1).cpu()  # (B, T)
    finally:
        model.train(was_training)
    scored = batch.y != -100  # (B, T)
    ok = ((pred == batch.y) | ~scored).all(-1)  # (B,)
    return float(ok.double().mean())


# -- where attention goes --------------------------------------------------------------------------


@torch.no_grad()
def attention_distance(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Mean attention distance ``(n_layers, n_heads)`` of ``model`` on inputs ``x`` (B, T) long.

    For query ``i`` the attention-weighted mean of ``i - j`` over keys ``j <= i``, averaged over the
    queries and the batch (tokens). Uniform causal attention at query ``i`` gives ``i / 2``; attention
    to the token itself gives 0."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.long:
        raise ValueError("x must be a (B, T) torch.long tensor")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        _, attn = model(x.to(device), return_attention=True)  # list of (B, H, T, T)
    finally:
        model.train(was_training)
    T = x.shape[1]
    pos = torch.arange(T, dtype=torch.float64)
    dist = (pos[:, None] - pos[None, :]).clamp(min=0)  # (T, T) query minus key
    out = [(a.double().cpu() * dist).sum(-1).mean(dim=(0, 2)).numpy() for a in attn]  # (H,) each
    return np.stack(out)  # (L, H)


# -- published orderings beside ours ---------------------------------------------------------------


def nearest_multiplier(target: float, available: Iterable[float]) -> float:
    """The value of ``available`` closest to ``target`` on a log scale (length ratios)."""
    available = [float(a) for a in available]
    if not available or target <= 0:
        raise ValueError(f"need positive target and at least one available multiplier, got {target!r}, {available}")
    return min(available, key=lambda a: abs(math.log(a / target)))


def ordering_table(
    claims: pd.DataFrame,
    ours: pd.DataFrame,
    *,
    metric: str,
    lower_is_better: bool,
    multipliers: Iterable[float] | None = None,
) -> pd.DataFrame:
    """Check each published claim "``better`` beats ``worse``" against our seed means.

    ``claims``: rows of ``ropelib.published.published_orderings()`` (one source). ``ours``: a summary
    with columns ``encoding, multiplier, mean, ci_low, ci_high`` for one metric. Each published length
    ratio is mapped to the nearest of our ``multipliers`` (log scale; default: those in ``ours``); when
    several map to the same one, the closest is kept. Returns ``05_orderings.csv`` columns (without
    ``profile``): ``source, comparison, better, worse, multiplier, metric, better_value, worse_value,
    published_better, published_worse, reproduced, note``. ``reproduced`` is ``True``/``False``, or NaN
    where we have no finite value for one side (e.g. ``learned`` past its table); ``note`` says
    ``significant`` when the two 95% intervals do not overlap, ``within CI`` otherwise (the order of the
    means is then not resolved by the seeds)."""
    need = {"encoding", "multiplier", "mean", "ci_low", "ci_high"}
    if not need <= set(ours.columns):
        raise ValueError(f"ours must have columns {sorted(need)}, got {list(ours.columns)}")
    avail = sorted(set(ours["multiplier"])) if multipliers is None else sorted(set(multipliers))
    nearest = {float(pm): nearest_multiplier(float(pm), avail) for pm in set(claims["published_multiplier"])}
    mapped: dict[float, float] = {}  # published ratio -> our multiplier (one published ratio per ours)
    for m in set(nearest.values()):
        closest = min((pm for pm, q in nearest.items() if q == m), key=lambda pm: abs(math.log(pm / m)))
        mapped[closest] = m
    index = {(r.encoding, float(r.multiplier)): r for r in ours.itertuples()}
    rows = []
    for c in claims.itertuples():
        if c.published_multiplier not in mapped:
            continue
        m = mapped[c.published_multiplier]
        b, w = index.get((c.better, m)), index.get((c.worse, m))
        if b is None or w is None:
            continue  # an encoding we did not train
        bv, wv = float(b.mean), float(w.mean)
        if not (math.isfinite(bv) and math.isfinite(wv)):
            reproduced, note = math.nan, "no value (cannot run at this length)"
        else:
            reproduced = bool(bv < wv) if lower_is_better else bool(bv > wv)
            if not all(math.isfinite(v) for v in (b.ci_low, b.ci_high, w.ci_low, w.ci_high)):
                note = "no CI (fewer than 2 seeds)"
            elif b.ci_high < w.ci_low or w.ci_high < b.ci_low:
                note = "significant"
            else:
                note = "within CI"
        rows.append({
            "source": c.source, "comparison": f"{c.better} > {c.worse}", "better": c.better, "worse": c.worse,
            "multiplier": m, "metric": metric, "better_value": bv, "worse_value": wv,
            "published_better": c.published_better, "published_worse": c.published_worse,
            "reproduced": reproduced, "note": note,
        })
    return pd.DataFrame(rows, columns=["source", "comparison", "better", "worse", "multiplier", "metric",
                                       "better_value", "worse_value", "published_better", "published_worse",
                                       "reproduced", "note"])
