# %% [markdown]
# # 06 — Extending RoPE's context: PI, NTK, dynamic NTK, YaRN, Llama 3, and a short fine-tune
#
# Notebook 05 showed that a RoPE model evaluated past its training length $L$ degrades. The
# literature's answer is to *change the rotation frequencies* so that positions up to $sL$ look like
# positions the model has seen (docs/references.md §3):
#
# * **PI** — Position Interpolation (Chen et al. 2023, arXiv 2306.15595): every frequency divided by $s$
#   (HF `rope_type="linear"`).
# * **NTK-aware** (bloc97 2023; YaRN paper §3.1): a larger base $b' = b\,s^{d/(d-2)}$ — high frequencies
#   almost untouched, the lowest one divided by $s$ (`ntk`).
# * **Dynamic NTK** (`dynamic`): the NTK base recomputed from the current input length, so inputs no
#   longer than $L$ keep the original frequencies.
# * **YaRN** (Peng et al. 2023, arXiv 2309.00071, §3.2–3.4): NTK-by-parts — pairs that turn many times
#   within $L$ are left alone, slow pairs are interpolated, a linear ramp between — plus an attention
#   factor $0.1\ln s + 1$ on cos and sin (`yarn`).
# * **Llama 3** (Meta llama-models): the same idea with the bands set by wavelength, no attention factor
#   (`llama3`).
#
# This notebook takes the RoPE models that notebook 04 trained (same run-cache entries) and asks:
#
# 1. **No training**: what does each method do to perplexity and to retrieval at each factor $s$ times
#    the training length — and what does it cost at the original length?
# 2. **A short fine-tune** at the longer length, as in the PI paper's Table 3: how many steps does PI
#    need, and is it better than fine-tuning plain RoPE at the long length?
#
# The published PI numbers are shown beside ours as data with their source, not as prose.
#
# The base models, their tasks and training lengths come from `ropelib.experiments` (one definition
# for notebooks 04–06) and their learning rates from the sweep of `ropelib.protocols` (tuned on the
# validation split, as in 04), so this notebook only sets what it evaluates. Every number reported
# here is measured on the **test** split of the language-model task. Every base model must pass its
# gate (`ropelib.protocols.gate_models`) before its numbers are used: only models that passed enter
# the summaries, figures and conclusions; the per-seed tables hold every model, with a `passed_gate`
# column.

# %% tags=["parameters"]
profile = "default"
device = "auto"
# seeds of 04's RoPE models to extend (None: every seed of the profile's setup)
seeds = None
# parallel training processes for base runs missing from the cache (1: one after another, in this process)
jobs = 1
# extension factors s: each method set to factor s, evaluated at s * L
factors = [2, 4, 8]
# methods (names in METHODS below); "none" is plain RoPE run past L
methods = ["none", "linear", "ntk", "dynamic", "yarn", "yarn_default", "llama3"]
# perplexity: at most this many scored tokens per cell (the first non-overlapping windows of the test split)
eval_tokens = 4096
# loss by position at the largest factor: windows per model, bins per window
position_windows = 16
position_bins = 16
# retrieval: needle depths, sequences per (length, depth) cell
retrieval_depths = [0.0, 0.5, 1.0]
retrieval_samples = 16
# fine-tuning at finetune_factor * L (PI paper Table 3): one chain of runs per (task, method, seed), evaluated after each of finetune_steps
finetune_factor = 4
finetune_methods = ["none", "linear", "yarn"]
finetune_steps = [10, 25, 50]
finetune_batch_size = 4
finetune_lr = 1e-3
finetune_retrieval = True  # also fine-tune the retrieval models (else the language model only)
# torch CPU threads (these tiny models run fastest on one thread; None keeps torch's default)
threads = 1

# %% tags=["injected-parameters"]
# Parameters
device = "auto"
eval_tokens = 4096
factors = [2, 4, 8]
finetune_batch_size = 4
finetune_methods = ["none", "linear", "yarn"]
finetune_steps = [10, 25, 50]
position_bins = 16
position_windows = 16
profile = "default"
retrieval_depths = [0.0, 0.5, 1.0]
retrieval_samples = 16

# %%
import dataclasses
import json
import math
import time

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from ropelib import analysis as A
from ropelib import experiments as X
from ropelib import memo, published, results
from ropelib import protocols as P
from ropelib.data import make_task
from ropelib.evaluate import lm_loss_at_lengths, loss_by_position, retrieval_accuracy, with_rope_scaling
from ropelib.model import ModelConfig, select_device
from ropelib.plotting import (log_ticks, method_color, method_style, plot_pair_factors, plot_zero_shot_ppl, savefig,
                              set_theme)
from ropelib.provenance import show_provenance
from ropelib.rope import rope_frequencies
from ropelib.runs import RunSpec, run
from ropelib.stats import accuracy_ci
from ropelib.train import TrainConfig

NOTEBOOK = "06_context_extension"
if threads is not None:
    torch.set_num_threads(int(threads))
set_theme()
EVAL_VERSION = 2  # bump after changing how this notebook evaluates: it is part of every evaluation-cache key
cached = memo.versioned(EVAL_VERSION)  # evaluations read back while run, parameters, library and version match
SPLIT = "test"  # every number reported here is on the LM task's test split (learning rates were tuned on validation)


pd.set_option("display.precision", 4)
timings: dict[str, dict[str, float]] = {}  # section -> wall and CPU seconds


def now() -> tuple[float, float]:
    """(wall clock, CPU time of this process) in seconds."""
    return time.perf_counter(), time.process_time()


def lap(name: str, start: tuple[float, float]) -> None:
    """Record the wall and CPU seconds since `start` as section `name`."""
    wall, cpu = now()
    timings[name] = {"wall_s": wall - start[0], "cpu_s": cpu - start[1]}


T_START = now()
torch_device = select_device(device)
print(f"profile={profile}, device={torch_device}, torch threads={torch.get_num_threads()}")


def write_csv(df: pd.DataFrame, name: str) -> None:
    """Write results/<name> (ropelib.results: columns checked against its schema, written atomically)."""
    results.write_table(df, name, profile)


# ropelib.plotting: one distinct, saturated colour per method (plain RoPE: the `rope` colour; yarn_default its own,
# drawn dashed), and plain-number log ticks at 1, 1.5, 2, 3, 5, 7 × 10^k
mcolor, mstyle, log_axis = method_color, method_style, log_ticks


def no_gated_data(ax, task: str) -> None:
    """Say on an empty panel that no base model of `task` passed its gate."""
    ax.text(0.5, 0.5, f"no {task} model passed its gate:\nnothing to show", transform=ax.transAxes,
            ha="center", va="center", fontsize=9, color="0.35")


def summarize(df: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean and 95% Student-t CI of `value` (perplexity, loss) per group `by`, over the rows whose base
    model passed its gate (`passed_gate`); a group where none passed is kept, with NaN and n_seeds 0."""
    return X.aggregate_seeds(df.assign(**{value: df[value].where(df.passed_gate.astype(bool))}), by, value)


def accuracy_summary(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Exact-match accuracy per group `by` over the seeds whose base model passed its gate: the mean over
    seeds and the 95% interval of `ropelib.stats.accuracy_ci` (hierarchical bootstrap over seeds and
    samples; Wilson for one seed), inside [0, 1]. `df`: one row per (group, seed) with `n_correct`,
    `n_samples`, `passed_gate`. A group where no seed passed is kept, with NaN and n_seeds 0."""
    rows = []
    for key, g in df.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[g.passed_gate.astype(bool)]
        if len(ok):
            ci = accuracy_ci([(int(k), int(n)) for k, n in zip(ok.n_correct, ok.n_samples)])
            stat = {k: ci[k] for k in ("n_seeds", "mean", "ci_low", "ci_high")}
        else:
            stat = {"n_seeds": 0, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
        rows.append({**dict(zip(by, key)), **stat})
    return pd.DataFrame(rows, columns=[*by, "n_seeds", "mean", "ci_low", "ci_high"])


# %% [markdown]
# ## 1. The base models: notebook 04's RoPE runs, and their gates
#
# Read back from the run cache when 04 has run (trained here otherwise): the setup's language model
# (character level, its task named by the setup: `ropelib.protocols.lm_task`) and its retrieval model,
# every seed, with the learning rates 04's sweep chose on the validation split
# (`ropelib.protocols.tuned_specs`; only RoPE's sweep runs are needed, and they are the same runs as 04's).
#
# Then each base model is gated (`ropelib.protocols.gate_models`, with the setup's thresholds): the
# language model must beat the setup's n-gram baseline on the whole test split and use its context; the
# retrieval model's Wilson lower bound of exact match at $L$ must exceed the position-blind floor. A model
# that fails is listed below with its reason and excluded from every summary, figure and conclusion.

# %%
t0 = now()
setup = X.base_setup(profile)
seeds = list(setup.seeds) if seeds is None else list(seeds)
LM_TASK = P.lm_task(setup)  # the setup's language-modelling task
retrieval_task = setup.tasks_of_kind("retrieval")[0]
TASKS = [LM_TASK, retrieval_task]
# the sweep of RoPE alone: the same runs (same specs, same hashes) and the same choice as 04's sweep of every encoding
rope_setup = dataclasses.replace(setup, encodings=("rope",))
tuned, sweep_table = P.tuned_specs(rope_setup, device, jobs=jobs, encodings=["rope"], tasks=TASKS, seeds=seeds)
runs = X.run_specs(tuned, jobs=jobs)  # ("rope", task, seed) -> RunResult
BASE_SPECS = {(t, s): spec for (_, t, s), spec in tuned.items()}
bases = {(t, s): r for (_, t, s), r in runs.items()}  # (task, seed) -> RunResult
TRAIN_LEN = {t: setup.task(t).train_length for t in TASKS}
L = TRAIN_LEN[LM_TASK]  # the language model's training length
spec0 = BASE_SPECS[(LM_TASK, seeds[0])]
HEAD_DIM = spec0.model.head_dim
BASE = float(spec0.model.encoding_params.get("rope_theta", 10_000.0))
lap("base models (cache or train)", t0)
if len(sweep_table):
    display(sweep_table[sweep_table.chosen])
pd.DataFrame(
    [
        {"task": t, "seed": s, "run_hash": r.hash[:16], "train_length": r.spec.train.seq_len,
         "steps": r.spec.train.steps, "lr": r.spec.train.lr, "d_model": r.spec.model.d_model,
         "head_dim": r.spec.model.head_dim, "final_loss": r.metadata["final_loss"], "cached": r.cached}
        for (t, s), r in bases.items()
    ]
)

# %%
t0 = now()
gates = P.gate_models(runs, setup, split=SPLIT)  # the setup's thresholds (setup.gates) and gate samples
PASSED = {(r.task, int(r.seed)): bool(r.passed) for r in gates.itertuples()}  # (task, seed) -> passed its gate
OK_SEEDS = {t: [s for s in seeds if PASSED[(t, s)]] for t in TASKS}  # the seeds whose numbers are used
lap("gates", t0)
shown = [c for c in ["task", "seed", "run_hash", "ppl", "context_gain", *sorted(c for c in gates if c.startswith("ngram_ppl_")),
                     "correct", "n", "accuracy", "floor", "passed", "reason"] if c in gates.columns]
display(gates[shown])
failed = gates[~gates.passed.astype(bool)]
lines = [f"**Failed, excluded:** `{r.task}` seed {r.seed} — {r.reason}" for r in failed.itertuples()]
if failed.empty:
    lines.append(f"All {len(gates)} base models passed their gates.")
for t in TASKS:
    if not OK_SEEDS[t]:
        lines.append(f"**No `{t}` model passed its gate**: its rows are still computed and written (with "
                     f"`passed_gate` False), but its summaries are NaN and its results are not discussed below.")
display(Markdown("\n\n".join(lines)))


def gate_of(task: str, seed: int) -> bool:
    """Whether the base model of (task, seed) passed its gate (a fine-tuned model inherits its base's)."""
    return PASSED[(task, int(seed))]


# %% [markdown]
# ## 2. The methods, as the frequencies they produce
#
# Each method is a set of HF rope-config keys applied to a trained model at evaluation time
# (`ropelib.evaluate.with_rope_scaling`). Two YaRN settings: `yarn` uses the ramp rescaled to the
# model's size (`ropelib.analysis.tiny_yarn_params`: it covers the same *fraction* of the pairs as
# YaRN's defaults do for Llama 2), `yarn_default` YaRN's published $\beta_{fast}=32$, $\beta_{slow}=1$
# rotations. Dynamic NTK gets `factor = s` like the others; HF's formula then scales the base by
# $(s\,l/L - s + 1)^{d/(d-2)}$ at input length $l$, which at $l = sL$ is more than static NTK's $s^{d/(d-2)}$.

# %%


def _yarn_default(s: float, L: int, d: int, b: float) -> dict:
    return {"rope_type": "yarn", "rope_theta": b, "factor": s, "original_max_position_embeddings": L,
            "beta_fast": A.YARN_REFERENCE["beta_fast"], "beta_slow": A.YARN_REFERENCE["beta_slow"]}


# method name -> (s, L, head_dim, base) -> HF rope keys; None = plain RoPE
METHODS = {
    "none": None,
    "linear": lambda s, L, d, b: {"rope_type": "linear", "rope_theta": b, "factor": s},
    "ntk": lambda s, L, d, b: {"rope_type": "ntk", "rope_theta": b, "factor": s},
    "dynamic": lambda s, L, d, b: {"rope_type": "dynamic", "rope_theta": b, "factor": s, "max_position_embeddings": L},
    "yarn": lambda s, L, d, b: A.tiny_yarn_params(d, b, L, s),
    "yarn_default": _yarn_default,
    "llama3": lambda s, L, d, b: {"rope_type": "llama3", "rope_theta": b, "factor": s,
                                  "original_max_position_embeddings": L, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0},
}
unknown = sorted((set(methods) | set(finetune_methods)) - set(METHODS))
if unknown:
    raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")


def method_keys(method: str, s: float, train_length: int) -> dict | None:
    """HF rope keys of `method` at factor `s` for a base model trained at `train_length` (None: plain RoPE)."""
    fn = METHODS[method]
    return None if fn is None else fn(float(s), int(train_length), HEAD_DIM, BASE)


def extended(result, method: str, s: float):
    """The base run's model with `method`'s scaling at factor `s` (the model itself for plain RoPE)."""
    keys = method_keys(method, s, result.spec.train.seq_len)
    return result.model if keys is None else with_rope_scaling(result.model, **keys)


def settings(method: str) -> list[float]:
    """The factors a method is evaluated with (plain RoPE has none: factor 1)."""
    return [1.0] if method == "none" else [float(s) for s in factors]


method_rows = []
for task in TASKS:
    for method in methods:
        for s in settings(method):
            n = int(s * TRAIN_LEN[task])
            keys = method_keys(method, s, TRAIN_LEN[task]) or {"rope_type": "default", "rope_theta": BASE}
            _, attn = rope_frequencies(keys, HEAD_DIM, seq_len=n)  # as used for an input of s * L tokens
            ratio = A.pair_scale_factors(keys, HEAD_DIM, seq_len=n)  # theta_i' / theta_i per pair
            method_rows.append({
                "task": task, "method": method, "factor": s, "train_length": TRAIN_LEN[task], "head_dim": HEAD_DIM,
                "rope_theta": BASE, "rope_keys": json.dumps(keys, sort_keys=True), "attention_factor": attn,
                "pairs_unchanged": int(np.isclose(ratio, 1.0, rtol=1e-5).sum()),
                "pairs_interpolated": int(np.isclose(ratio, 1.0 / s, rtol=1e-5).sum()) if s > 1 else 0,
                "min_pair_factor": float(ratio.min()), "max_pair_factor": float(ratio.max()),
            })
methods_table = pd.DataFrame(method_rows)
write_csv(methods_table, "06_methods.csv")
methods_table[methods_table.task == LM_TASK].drop(columns=["task", "rope_keys", "head_dim", "rope_theta"])

# %% [markdown]
# The YaRN ramp at this size. The pairs YaRN leaves untouched should be those that turn many times
# within $L$; those it interpolates fully, those that never complete a turn. With $d = $ the head
# dimension and base $b$, the pair ranges (HF `find_correction_range`) of the two settings:

# %%
s_mid = float(finetune_factor)
tiny = A.tiny_yarn_params(HEAD_DIM, BASE, L, s_mid)
lam = A.wavelengths(HEAD_DIM, BASE)
pairs_full_turn = int(np.sum(lam <= L))
ramp_table = pd.DataFrame(
    [
        {"setting": name, "beta_fast": bf, "beta_slow": bs,
         "ramp low (pair)": A.yarn_correction_range(HEAD_DIM, BASE, L, bf, bs)[0],
         "ramp high (pair)": A.yarn_correction_range(HEAD_DIM, BASE, L, bf, bs)[1],
         "pairs kept (γ=1)": int(np.sum(A.yarn_ramp(HEAD_DIM, BASE, L, bf, bs) == 1.0)),
         "pairs interpolated (γ=0)": int(np.sum(A.yarn_ramp(HEAD_DIM, BASE, L, bf, bs) == 0.0))}
        for name, bf, bs in [("yarn (rescaled)", tiny["beta_fast"], tiny["beta_slow"]),
                             ("yarn_default", A.YARN_REFERENCE["beta_fast"], A.YARN_REFERENCE["beta_slow"])]
    ]
)
print(f"head_dim {HEAD_DIM} ({HEAD_DIM // 2} pairs), base {BASE:g}, L = {L}: {pairs_full_turn} of {HEAD_DIM // 2} "
      f"pairs complete a full turn within L; wavelengths {np.round(lam, 1).tolist()}")
display(ramp_table)

pair_factor = {m: A.pair_scale_factors(method_keys(m, s_mid, L), HEAD_DIM, seq_len=int(s_mid * L))
               for m in methods if m != "none"}  # {method: (HEAD_DIM/2,)}
fig = plot_pair_factors(pair_factor, title=f"Per-pair frequency factor at s = {s_mid:g}, L = {L}",
                        full_turn_pair=pairs_full_turn)
savefig(fig, "pair_factors", notebook=NOTEBOOK,
        caption=f"Per-pair frequency factor θ'/θ of each extension method at s = {s_mid:g} for the {LM_TASK} language model "
                f"(head dim {HEAD_DIM}, base {BASE:g}, L = {L}); dashed: YaRN with its Llama-2 default ramp.")
plt.show()

# %% [markdown]
# ## 3. Perplexity without training
#
# Character-level perplexity of the language model on the **test** split, non-overlapping windows (the
# protocol of notebook 05 and of the PI paper's Table 1). `eval_tokens` caps the scored tokens of every
# cell, the base model at $L$ included: each cell scores the first `eval_tokens // length` windows of
# the test split (at least one), so every length sees the same text from its start, and the run stays
# within the CPU budget. The gate table above has each base model's perplexity at $L$ over the *whole*
# test split. Each method at factor $s$ is evaluated at $sL$, what it is for, and at $L$, what it costs
# where the model was already good. Plain RoPE (`none`) at every length. Means and 95% Student-t
# intervals are over the seeds whose model passed its gate.

# %%
t0 = now()
lm_config = BASE_SPECS[(LM_TASK, seeds[0])].task
test_tokens = P.split_tokens(lm_config, SPLIT)  # (N,)
print(f"{LM_TASK}: {SPLIT} split of {test_tokens.numel():,} tokens; at most {eval_tokens} scored per cell")


def ident(result, method: str = "none", s: float = 1.0) -> dict:
    """What identifies an evaluated model for the evaluation cache (ropelib.memo): the trained run's hash and
    the RoPE scaling applied to it at evaluation time."""
    return {"run": result.hash, "rope": method_keys(method, s, result.spec.train.seq_len), "device": torch_device.type}


def perplexity(model, length: int, model_id: dict) -> dict:
    """Non-overlapping loss / perplexity of `model` at `length` over at most `eval_tokens` test tokens."""
    df = cached("06_ppl", {**model_id, "length": length, "eval_tokens": eval_tokens, "split": SPLIT},
                lambda: lm_loss_at_lengths(model, test_tokens, [length], mode="nonoverlap",
                                           max_windows=max(1, eval_tokens // length)))
    row = df.iloc[0]
    if row["status"] != "ok":
        raise RuntimeError(f"length {length}: {row['status']} ({row['reason']})")
    return {"loss": float(row["loss"]), "ppl": float(row["ppl"]), "n_tokens": int(row["n_tokens"])}


def eval_lengths(method: str, s: float, train_length: int) -> list[int]:
    """L and s*L for a method; every s*L for plain RoPE."""
    return [train_length] + [int(f * train_length) for f in factors] if method == "none" else [train_length, int(s * train_length)]


ppl_rows = []
for seed in seeds:
    base = bases[(LM_TASK, seed)]
    for method in methods:
        for s in settings(method):
            model = extended(base, method, s)
            for length in eval_lengths(method, s, L):
                ppl_rows.append({"task": LM_TASK, "seed": seed, "run_hash": base.hash[:16], "method": method,
                                 "factor": s, "train_length": L, "length": length, "multiplier": length / L,
                                 **perplexity(model, length, ident(base, method, s)),
                                 "passed_gate": gate_of(LM_TASK, seed)})
zero_ppl = pd.DataFrame(ppl_rows)
write_csv(zero_ppl, "06_zero_shot_ppl.csv")
lap("zero-shot perplexity", t0)


def at_extended(df: pd.DataFrame) -> pd.DataFrame:
    """Rows past L where the method is set for that length (plain RoPE: every length past L), factor = length / L."""
    keep = (df.length > df.train_length) & ((df.method == "none") | (df.length == df.factor * df.train_length))
    return df[keep].assign(factor=lambda d: d.length / d.train_length)


# headline: at s*L, and the change at L, per method and s; mean over the seeds that passed, with 95% CIs
LM_OK = bool(OK_SEEDS[LM_TASK])
none_ppl = zero_ppl[zero_ppl.method == "none"].set_index(["seed", "length"])["ppl"]
at_L = zero_ppl[(zero_ppl.method != "none") & (zero_ppl.length == L)].copy()
at_L["ppl_change"] = at_L["ppl"].to_numpy() / none_ppl.loc[list(zip(at_L.seed, at_L.length))].to_numpy() - 1.0
ext_summary = summarize(at_extended(zero_ppl), ["method", "factor"], "ppl")
cost_summary = summarize(at_L, ["method", "factor"], "ppl_change")
base_L = summarize(zero_ppl[(zero_ppl.method == "none") & (zero_ppl.length == L)], ["method"], "ppl").iloc[0]
headline = ext_summary.pivot(index="method", columns="factor", values="mean").reindex(methods)
headline.columns = [f"ppl at {c:g}L" for c in headline.columns]
cost = cost_summary.pivot(index="method", columns="factor", values="mean").reindex(methods)
cost.columns = [f"Δppl at L (s={c:g})" for c in cost.columns]
if LM_OK:
    print(f"plain RoPE at L = {L}: ppl {base_L['mean']:.3f} (95% CI {base_L['ci_low']:.3f}–{base_L['ci_high']:.3f}, "
          f"{base_L['n_seeds']} of {len(seeds)} seeds: those that passed their gate)")
else:
    print(f"no {LM_TASK} model passed its gate: the summaries below are NaN (the per-seed rows are in 06_zero_shot_ppl.csv)")
headline.join(cost)

# %%
# ropelib.plotting.plot_zero_shot_ppl: one colour per method, bands clipped at physical limits, legend outside
fig = plot_zero_shot_ppl(ext_summary, cost_summary, methods=methods, factors=factors, train_length=L, task=LM_TASK,
                         base_ppl=base_L["mean"] if LM_OK else None)
savefig(fig, "zero_shot_ppl", notebook=NOTEBOOK,
        caption=f"Character-level {SPLIT}-split perplexity ({LM_TASK}) of 04's RoPE models (L = {L}) without training: "
                f"at s·L with each method set to factor s (left), and the change at L from the same setting (right); "
                f"mean and 95% CI over the {len(OK_SEEDS[LM_TASK])} of {len(seeds)} seeds that passed their gate.")
plt.show()

# %% [markdown]
# ### Where in the window does each method fail?
#
# Mean loss by position inside windows of $s_{max} L$ tokens of the test split, each method at
# $s_{max}$: a model that fails past $L$ shows it as a rise after $L$; a method that works keeps the loss
# flat (or falling, with more context) past $L$. Curves: mean over the seeds that passed their gate.

# %%
t0 = now()
s_max = max(factors)
n_pos = int(s_max * L)
edges = np.linspace(0, n_pos, position_bins + 1).astype(int)
pos_rows = []
for seed in seeds:
    base = bases[(LM_TASK, seed)]
    for method in methods:
        s = 1.0 if method == "none" else float(s_max)
        curve = cached("06_loss_by_position", {**ident(base, method, s), "length": n_pos, "windows": position_windows,
                                               "split": SPLIT},
                       lambda: loss_by_position(extended(base, method, s), test_tokens, n_pos,
                                                max_windows=position_windows))
        for lo, hi in zip(edges[:-1], edges[1:]):
            pos_rows.append({"task": LM_TASK, "seed": seed, "method": method, "factor": s, "train_length": L,
                             "length": n_pos, "position_lo": int(lo), "position_hi": int(hi),
                             "loss": float(curve[lo:hi].mean()), "passed_gate": gate_of(LM_TASK, seed)})
by_pos = pd.DataFrame(pos_rows)
write_csv(by_pos, "06_loss_by_position.csv")
lap("loss by position", t0)
by_pos_ok = by_pos[by_pos.passed_gate]  # the curves of the models that passed

fig, ax = plt.subplots(figsize=(8, 4))
for method in methods:
    d = by_pos_ok[by_pos_ok.method == method].groupby("position_lo")["loss"].mean()
    ax.plot(d.index + (edges[1] - edges[0]) / 2, d.values, color=mcolor(method), label=method, ls=mstyle(method))
ax.axvline(L, color="0.3", lw=0.8, ls=":")
ax.annotate(" L", (L, 1), xycoords=("data", "axes fraction"), va="top", fontsize=9)
ax.set(xlabel="position in the window", ylabel="loss (nats/char)",
       title=f"Loss by position, windows of {n_pos} = {s_max:g}L (methods at s = {s_max:g})")
if LM_OK:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: never over a curve
else:
    no_gated_data(ax, LM_TASK)
savefig(fig, "loss_by_position", notebook=NOTEBOOK,
        caption=f"Mean {SPLIT}-split loss by position in windows of {n_pos} characters ({s_max:g}× the training length {L}) "
                f"for plain RoPE and each method at s = {s_max:g}; mean over the {len(OK_SEEDS[LM_TASK])} of {len(seeds)} "
                f"seeds that passed their gate × {position_windows} windows.")
plt.show()

# %% [markdown]
# ## 4. Retrieval without training
#
# The retrieval models of 04 at $L$ and at $sL$, the needle at several depths (0 = first token,
# 1 = right before the query); exact match of the whole answer over `retrieval_samples` sequences
# per cell, the same sequences for every method. Accuracies are compared with the task's
# position-blind floor (`position_blind_floor`: the best exact match of a predictor that sees only the
# bag of input tokens), drawn as a horizontal line; intervals are those of `ropelib.stats.accuracy_ci`
# (hierarchical bootstrap over seeds and samples, Wilson for one seed), so they stay in $[0, 1]$.

# %%
t0 = now()
rtask = make_task(BASE_SPECS[(retrieval_task, seeds[0])].task)
L_ret = TRAIN_LEN[retrieval_task]
RET_OK = bool(OK_SEEDS[retrieval_task])


def floor_at(length: int) -> float:
    """The retrieval task's position-blind floor at `length` (independent of it without digits in the filler)."""
    if getattr(rtask, "digit_filler", False):
        return float(rtask.position_blind_floor(length))
    return float(rtask.position_blind_floor())


def retrieval(model, length: int, model_id: dict) -> pd.DataFrame:
    """Exact-match accuracy by depth at `length` (kv_recall: depth = distance / largest distance that fits)."""
    return cached("06_retrieval", {**model_id, "length": length, "depths": retrieval_depths,
                                   "samples": retrieval_samples}, lambda: _retrieval(model, length))


def _retrieval(model, length: int) -> pd.DataFrame:
    if "depth" in rtask.controls:
        df = retrieval_accuracy(model, rtask, [length], depths=retrieval_depths, n_samples=retrieval_samples, seed=0)
    else:
        allowed = np.array(rtask.distances(length))
        dists = [int(allowed[np.argmin(abs(allowed - f * allowed[-1]))]) for f in retrieval_depths]
        df = retrieval_accuracy(model, rtask, [length], distances=dists, n_samples=retrieval_samples, seed=0)
        df.insert(1, "depth", retrieval_depths)
    if (df.status != "ok").any():
        raise RuntimeError(f"retrieval cells failed at length {length}: {df[df.status != 'ok'].reason.tolist()}")
    return df.drop(columns=["status", "reason"])


ret_frames = []
for seed in seeds:
    base = bases[(retrieval_task, seed)]
    for method in methods:
        for s in settings(method):
            model = extended(base, method, s)
            for length in eval_lengths(method, s, L_ret):
                ret_frames.append(retrieval(model, length, ident(base, method, s)).assign(
                    task=retrieval_task, seed=seed, run_hash=base.hash[:16], method=method, factor=s,
                    train_length=L_ret, multiplier=length / L_ret))
zero_ret = pd.concat(ret_frames, ignore_index=True)
lead = ["task", "seed", "run_hash", "method", "factor", "train_length", "length", "multiplier"]
zero_ret = zero_ret[lead + [c for c in zero_ret.columns if c not in lead]]
zero_ret["passed_gate"] = [gate_of(retrieval_task, s) for s in zero_ret.seed]
write_csv(zero_ret, "06_zero_shot_retrieval.csv")
lap("zero-shot retrieval", t0)
FLOOR = {n: floor_at(n) for n in sorted({L_ret, *(int(f * L_ret) for f in factors)})}  # length -> floor

# per seed: exact-match counts summed over the depths (the same number of sequences at every depth)
ret_seed = zero_ret.groupby(["method", "factor", "train_length", "length", "seed", "passed_gate"],
                            as_index=False)[["n_correct", "n_samples"]].sum()
ret_seed["accuracy"] = ret_seed.n_correct.astype(float) / ret_seed.n_samples
ret_summary = accuracy_summary(at_extended(ret_seed), ["method", "factor"])
ret_L = accuracy_summary(ret_seed[ret_seed.length == L_ret], ["method", "factor"])
acc_table = ret_summary.pivot(index="method", columns="factor", values="mean").reindex(methods)
acc_table.columns = [f"acc at {c:g}L" for c in acc_table.columns]
acc_L = ret_L.pivot(index="method", columns="factor", values="mean").reindex(methods)
acc_L.columns = ["acc at L" if c == 1 else f"acc at L (s={c:g})" for c in acc_L.columns]
print(f"{retrieval_task}: position-blind floor " + ", ".join(f"{v:.3f} at {n}" for n, v in FLOOR.items())
      + (f"; mean over the {len(OK_SEEDS[retrieval_task])} of {len(seeds)} seeds that passed their gate" if RET_OK
         else f"; no {retrieval_task} model passed its gate: the summaries below are NaN"))
acc_table.join(acc_L)

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for method in methods:
    d = ret_summary[ret_summary.method == method].sort_values("factor")
    ax.plot(d.factor, d["mean"], color=mcolor(method), marker="o", label=method, ls=mstyle(method))
    ax.fill_between(d.factor, d.ci_low, d.ci_high, color=mcolor(method), alpha=0.12)
plain_L = ret_L[ret_L.method == "none"]
ax.errorbar([1.0], plain_L["mean"], yerr=[plain_L["mean"] - plain_L.ci_low, plain_L.ci_high - plain_L["mean"]],
            color=mcolor("none"), marker="s", ls="none", capsize=3, label=f"plain RoPE at L = {L_ret}")
floor_x = [n / L_ret for n in FLOOR]
if len(set(FLOOR.values())) == 1:
    ax.axhline(FLOOR[L_ret], color="0.3", lw=1.0, ls="--", label=f"position-blind floor {FLOOR[L_ret]:.3g}")
else:  # digits in the filler: the floor depends on the length
    ax.plot(floor_x, list(FLOOR.values()), color="0.3", lw=1.0, ls="--", label="position-blind floor")
if not RET_OK:
    no_gated_data(ax, retrieval_task)
ax.set(xscale="log", ylim=(0, 1.02), xlabel="evaluation length / L (= factor s)", ylabel="exact-match accuracy",
       title=f"{retrieval_task} at s·L, no training (L = {L_ret})")
ax.set_xticks(floor_x, [f"{x:g}" for x in floor_x])
ax.xaxis.set_minor_locator(mticker.NullLocator())
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
savefig(fig, "zero_shot_retrieval", notebook=NOTEBOOK,
        caption=f"{retrieval_task} exact-match accuracy of 04's RoPE models (L = {L_ret}) without training, each method at "
                f"s·L set to factor s, mean over depths; 95% intervals from ropelib.stats.accuracy_ci over the "
                f"{len(OK_SEEDS[retrieval_task])} of {len(seeds)} seeds that passed their gate; dashed: the "
                f"position-blind floor.")
plt.show()

# %%
ret_ok = zero_ret[zero_ret.passed_gate]
cells = at_extended(ret_ok).groupby(["method", "length", "depth"])["accuracy"].mean().reset_index()
depths = sorted(set(zero_ret.depth))
fig, axes = plt.subplots(1, len(factors), figsize=(3.6 * len(factors) + 1, 3.6), sharey=True, squeeze=False)
for ax, f in zip(axes[0], factors):
    grid = (cells[cells.length == int(f * L_ret)].pivot(index="method", columns="depth", values="accuracy")
            .reindex(index=methods, columns=depths))
    im = ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(depths)), [f"{c:g}" for c in depths])
    ax.set_yticks(range(len(methods)), methods)
    ax.set(xlabel="needle depth", title=f"length {int(f * L_ret)} ({f:g}×L)")
    ax.grid(False)
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    if not RET_OK:
        no_gated_data(ax, retrieval_task)
cbar = fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label="exact-match accuracy")
for n in (int(f * L_ret) for f in factors):
    cbar.ax.axhline(FLOOR[n], color="w", lw=1.2, ls="--")  # the floor, on the colour scale
savefig(fig, "retrieval_by_depth", notebook=NOTEBOOK,
        caption=f"{retrieval_task} exact-match accuracy of 04's RoPE models (L = {L_ret}) at {factors[0]:g}–{max(factors):g}× L "
                f"without training, by needle depth and method (each method at s = length / L); mean over the "
                f"{len(OK_SEEDS[retrieval_task])} of {len(seeds)} seeds that passed their gate; dashed line on the "
                f"colour bar: the position-blind floor.")
plt.show()

# %% [markdown]
# ## 5. A short fine-tune at the longer length (PI paper, Table 3)
#
# Each base model is fine-tuned at $s_{ft} L$ with PI (`linear`), with YaRN, or with plain RoPE
# (`none`: the model simply sees longer sequences), and evaluated after each of `finetune_steps`
# steps. As in the PI paper (§3.1: a constant learning rate after a short warm-up, checkpoints of one
# run), one fine-tune is a *chain* of cached runs: the run for $k_j$ steps is a `RunSpec` whose `parent`
# is the run for $k_{j-1}$ steps (the first one's parent is the base run of 04) and trains $k_j - k_{j-1}$
# more steps at a constant learning rate. Each link draws fresh batches (its own seed) from the task's
# training data (the language model's *train* split) and restarts AdamW's moment estimates behind a
# short warm-up; the fine-tuned models are scored on the test split as in section 3. Step 0 is the
# method applied without training (sections 3–4). A fine-tuned model carries its base model's gate
# (`passed_gate`): the chains of every base model are run and written, and only those of models that
# passed enter the summaries.
#
# *Open, separate issue:* the fine-tune budgets (steps, batch size, learning rate, warm-up) are the
# ones this notebook had before the base models changed; whether they are a fair match to the PI
# paper's protocol for these models, and for PI against plain RoPE, is not settled here and is tracked
# on its own. The logic below is unchanged.

# %%
t0 = now()
ft_tasks = TASKS if finetune_retrieval else [LM_TASK]
ft_steps = sorted(int(k) for k in finetune_steps)
if not ft_steps or ft_steps[0] < 1 or len(set(ft_steps)) != len(ft_steps):
    raise ValueError(f"finetune_steps must be distinct positive integers, got {finetune_steps!r}")


def finetune_chain(base_spec: RunSpec, method: str) -> dict[int, RunSpec]:
    """Specs of one fine-tune of `base_spec` at `finetune_factor` × its length with `method`'s scaling built
    in: step count -> the run after that many steps (each run the parent of the next)."""
    keys = method_keys(method, finetune_factor, base_spec.train.seq_len) or {}
    model_config = ModelConfig.from_dict(
        {**base_spec.model.to_dict(), "encoding_params": {**base_spec.model.encoding_params, **keys}}
    )
    chain, parent, done = {}, base_spec, 0
    for k in ft_steps:
        train_config = TrainConfig.from_dict({
            **base_spec.train.to_dict(), "steps": k - done, "batch_size": finetune_batch_size,
            "seq_len": int(finetune_factor * base_spec.train.seq_len), "lr": finetune_lr, "min_lr_ratio": 1.0,
            "warmup_steps": max(1, (k - done) // 10), "checkpoint_every": 0, "eval_every": 0,
            "seed": base_spec.train.seed * 100_000 + k, "device": device,  # fresh batches in every link
        })
        chain[k] = parent = RunSpec(model=model_config, task=base_spec.task, train=train_config, parent=parent)
        done = k
    return chain


ft_counts: dict[tuple, tuple[int, int]] = {}  # (task, seed, method, ft_steps, length) -> (exact matches, sequences)


def scores(task: str, model, length: int, model_id: dict, where: tuple) -> dict[str, float]:
    """Metrics of a model at `length`: loss and ppl (the LM task, test split), mean accuracy over depths
    (retrieval; its exact-match counts go to `ft_counts[where + (length,)]`)."""
    if task == LM_TASK:
        p = perplexity(model, length, model_id)
        return {"loss": p["loss"], "ppl": p["ppl"]}
    df = retrieval(model, length, model_id)
    ft_counts[(*where, length)] = (int(df.n_correct.sum()), int(df.n_samples.sum()))
    return {"accuracy": float(df["accuracy"].mean())}


ft_rows = []
for task in ft_tasks:
    Lt = TRAIN_LEN[task]
    for seed in seeds:
        base = bases[(task, seed)]
        for method in finetune_methods:
            chain = finetune_chain(BASE_SPECS[(task, seed)], method)
            for steps in [0, *ft_steps]:
                if steps == 0:
                    model, run_hash = extended(base, method, finetune_factor), base.hash[:16]
                    model_id = ident(base, method, finetune_factor)
                else:
                    result = run(chain[steps], progress=False)
                    model, run_hash, model_id = result.model, result.hash[:16], ident(result)  # scaling in the spec
                for length in (Lt, int(finetune_factor * Lt)):
                    for metric, value in scores(task, model, length, model_id, (task, seed, method, steps)).items():
                        ft_rows.append({"task": task, "seed": seed, "method": method, "factor": float(finetune_factor),
                                        "ft_steps": steps, "run_hash": run_hash, "train_length": Lt,
                                        "ft_length": int(finetune_factor * Lt), "length": length,
                                        "multiplier": length / Lt, "metric": metric, "value": value,
                                        "passed_gate": gate_of(task, seed)})
finetune = pd.DataFrame(ft_rows)
write_csv(finetune, "06_finetune.csv")
lap("fine-tuning (train or cache) and evaluation", t0)

# summaries over the models that passed: Student-t for loss / ppl, accuracy_ci (in [0, 1]) for accuracy
ft_by = ["task", "metric", "method", "multiplier", "ft_steps"]
ft_lm = summarize(finetune[finetune.metric != "accuracy"], ft_by, "value")
ft_acc_rows = finetune[finetune.metric == "accuracy"].copy()
ft_acc_rows["n_correct"] = [ft_counts[(r.task, r.seed, r.method, r.ft_steps, r.length)][0] for r in ft_acc_rows.itertuples()]
ft_acc_rows["n_samples"] = [ft_counts[(r.task, r.seed, r.method, r.ft_steps, r.length)][1] for r in ft_acc_rows.itertuples()]
ft_summary = pd.concat([ft_lm, accuracy_summary(ft_acc_rows, ft_by)], ignore_index=True)
ft_view = ft_summary[ft_summary.metric.isin(["ppl", "accuracy"])].pivot(
    index="ft_steps", columns=["task", "metric", "multiplier", "method"], values="mean")
ft_view

# %% [markdown]
# The PI paper's Table 3 (LLaMA-7B, 2048 → 8192 with PI, PG19 perplexity at 8192) beside ours: the
# share of the gap between no fine-tuning and the longest fine-tune that is closed after each step count.

# %%
# Chen et al. 2023 (PI), arXiv 2306.15595, Tables 1 and 3 — data with its source in ropelib.published
PI_SOURCE, PI_TABLE3, PI_NO_EXTENSION_MIN = published.PI_SOURCE, published.PI_TABLE3, published.PI_NO_EXTENSION_MIN
pi_frame = pd.DataFrame({"source": PI_SOURCE, "method": "linear", "ft_steps": list(PI_TABLE3),
                         "ppl": list(PI_TABLE3.values())})
ours = ft_summary[(ft_summary.task == LM_TASK) & (ft_summary.metric == "ppl") & (ft_summary.multiplier == finetune_factor)]
ours = ours.rename(columns={"mean": "ppl"})[["method", "ft_steps", "ppl"]]
ours.insert(0, "source", f"this notebook: {LM_TASK}, L = {L} → {int(finetune_factor * L)}, {SPLIT}-split ppl at "
                         f"{int(finetune_factor * L)}, mean of the {len(OK_SEEDS[LM_TASK])} seeds that passed their gate")
side = pd.concat([pi_frame, ours], ignore_index=True).sort_values(["source", "method", "ft_steps"])
grp = side.groupby(["source", "method"], sort=False)
side["steps / longest"] = side.ft_steps / grp.ft_steps.transform("max")
side["gap closed"] = (grp.ppl.transform("first") - side.ppl) / (grp.ppl.transform("first") - grp.ppl.transform("last"))
side.reset_index(drop=True)

# %%
fig, axes = plt.subplots(1, len(ft_tasks), figsize=(7.5 * len(ft_tasks), 4), squeeze=False, layout="constrained")
for ax, task in zip(axes[0], ft_tasks):
    metric = "ppl" if task == LM_TASK else "accuracy"
    Lt = TRAIN_LEN[task]
    for method in finetune_methods:
        for mult, ls, mk in ((finetune_factor, "-", "o"), (1.0, ":", ".")):
            d = ft_summary[(ft_summary.task == task) & (ft_summary.metric == metric) & (ft_summary.method == method)
                           & (ft_summary.multiplier == mult)].sort_values("ft_steps")
            ax.plot(d.ft_steps, d["mean"], ls=ls, marker=mk, color=mcolor(method),
                    label=f"{method} at {int(mult * Lt)}")
            if mult != 1.0:
                ax.fill_between(d.ft_steps, d.ci_low, d.ci_high, color=mcolor(method), alpha=0.15)
    if not OK_SEEDS[task]:
        no_gated_data(ax, task)
    elif task == LM_TASK:
        ax.axhline(base_L["mean"], color="0.3", lw=0.8, ls="--", label=f"base model at L = {Lt}")
        ax.set(yscale="log")
        log_axis(ax.yaxis)
    if task != LM_TASK:
        long = int(finetune_factor * Lt)
        ax.axhline(FLOOR.get(long, floor_at(long)), color="0.3", lw=1.0, ls="--",
                   label=f"position-blind floor at {long}")
        ax.set_ylim(0, 1.02)
    ax.set(xlabel="fine-tuning steps", ylabel=metric, title=f"{task}: fine-tuned at {int(finetune_factor * Lt)} = "
                                                            f"{finetune_factor:g}×L")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
savefig(fig, "finetune_curve", notebook=NOTEBOOK,
        caption=f"After fine-tuning 04's RoPE models at {finetune_factor:g}× their training length for 0–{max(finetune_steps)} "
                f"steps with {', '.join(finetune_methods)}: {' and '.join(ft_tasks)} at the long length (solid, 95% CI over "
                f"the seeds that passed their gate: Student-t for perplexity, ropelib.stats.accuracy_ci for accuracy) and "
                f"at L (dotted); {SPLIT} split; dashed: the base model at L (perplexity) and the position-blind floor "
                f"(accuracy).")
plt.show()

# %% [markdown]
# ## What this shows
#
# Every number below is computed above: means over the seeds whose base model passed its gate (95%
# intervals in the tables and figures); a task with no passing model gets no conclusions. The
# interpretations are printed only when the numbers they rest on hold.

# %%
fs = [float(f) for f in factors]
ext_methods = [m for m in methods if m != "none"]
ff = float(finetune_factor)
k_last, k_first = max(finetune_steps), min(finetune_steps)
TIE = 1e-3  # relative difference below which two perplexities (or losses) count as the same in the prose


def pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def excluded(task: str) -> str:
    """The failed seeds of `task` and their reasons, for a conclusion that skips it."""
    rows = failed[failed.task == task]
    return "; ".join(f"seed {r.seed}: {r.reason}" for r in rows.itertuples()) or "no seed was run"


ppl_at = ext_summary.set_index(["method", "factor"])["mean"]  # ppl at s*L
d_cost = cost_summary.set_index(["method", "factor"])["mean"]  # relative ppl change at L
acc_at = ret_summary.set_index(["method", "factor"])["mean"]
acc_lo = ret_summary.set_index(["method", "factor"])["ci_low"]
acc_base = float(ret_L.set_index("method").loc["none", "mean"])
ramp = ramp_table.set_index("setting")
lines = []
if LM_OK:
    best = {f: min(ext_methods, key=lambda m: ppl_at[(m, f)]) for f in fs}
    worst = max(ext_methods, key=lambda m: d_cost[(m, max(fs))])  # largest perplexity increase at L
    lines.append(
        f"* **Plain RoPE past its training length** ({LM_TASK}, {SPLIT} split, {len(OK_SEEDS[LM_TASK])} of {len(seeds)} "
        f"seeds). Perplexity {base_L['mean']:.2f} at L = {L}; "
        + ", ".join(f"{ppl_at[('none', f)]:.2f} at {f:g}L" for f in fs)
        + ". With non-overlapping windows a longer window gives most tokens *more* context, so a model that "
        "used it would score lower past L; "
        + ("plain RoPE scores higher at every length past L: it gains nothing from the longer context and loses more "
           "the further it goes."
           if all(ppl_at[("none", f)] > base_L["mean"] for f in fs)
           else "plain RoPE scores higher only at "
           + (", ".join(f"{f:g}L" for f in fs if ppl_at[("none", f)] > base_L["mean"]) or "no length past L") + ".")
    )
    lines.append(
        "* **Without training**, the best method at each factor: "
        + "; ".join(f"s = {f:g}: `{best[f]}` {ppl_at[(best[f], f)]:.2f} (plain RoPE {ppl_at[('none', f)]:.2f})" for f in fs)
        + f". PI (`linear`) gives " + ", ".join(f"{ppl_at[('linear', f)]:.2f}" for f in fs)
        + f" at {', '.join(f'{f:g}L' for f in fs)}: "
        + ", ".join(f"{pct(ppl_at[('linear', f)] / ppl_at[('none', f)] - 1)}" for f in fs)
        + " against plain RoPE at the same length, and "
        + ", ".join(f"{pct(ppl_at[('linear', f)] / base_L['mean'] - 1)}" for f in fs)
        + " against the model at its own length L."
    )
    # literature: PI Table 3 (PI without fine-tuning at 4x) against plain RoPE (> 1000 in PI Table 1), ALiBi's rotary row
    pi_vs_none = {f: ppl_at[("linear", f)] / ppl_at[("none", f)] for f in fs}
    alibi_rope = {L_: row["rope"] for L_, row in published.ALIBI_TABLE1.items()}
    alibi_mults = {L_ / published.ALIBI_TRAIN_LENGTH: v for L_, v in alibi_rope.items()}
    alibi_mult = X.nearest_multiplier(max(fs), [m for m in alibi_mults if m > 1])
    alibi_ratio = alibi_mults[alibi_mult] / alibi_mults[1.0]
    first_bin = by_pos_ok[by_pos_ok.position_lo == 0].groupby("method")["loss"].mean()
    pi_worse = all(v > 1 + TIE for v in pi_vs_none.values())
    text = (
        "* **Against the literature: PI without fine-tuning.** The PI paper reports LLaMA-7B at 4× its length with PI "
        f"and no fine-tuning at perplexity {PI_TABLE3[0]:.2f}, against > {PI_NO_EXTENSION_MIN:g} for plain RoPE: PI "
        f"alone beats plain RoPE there by a factor of more than {PI_NO_EXTENSION_MIN / PI_TABLE3[0]:.0f}. "
        + ("Here it does the opposite: PI is worse than plain RoPE at every factor ("
           + ", ".join(f"×{pi_vs_none[f]:.2f} at {f:g}L" for f in fs) + "). "
           if pi_worse else
           "Here PI beats plain RoPE at " + (", ".join(f"{f:g}L (×{pi_vs_none[f]:.3f})" for f in fs
                                                        if pi_vs_none[f] < 1 - TIE) or "no factor")
           + " and does not at " + (", ".join(f"{f:g}L (×{pi_vs_none[f]:.3f})" for f in fs if pi_vs_none[f] >= 1 - TIE)
                                    or "any") + ". ")
        + f"Plain RoPE here degrades by ×{ppl_at[('none', max(fs))] / base_L['mean']:.2f} at {max(fs):g}L (the ALiBi "
        f"paper's rotary model: ×{alibi_ratio:.2f} at {alibi_mult:.1f}× its length; LLaMA-7B: > {PI_NO_EXTENSION_MIN:g}). "
        f"In the first {edges[1]} positions of a window, which are inside L, PI at s = {s_max:g} has loss "
        f"{first_bin['linear']:.2f} against {first_bin['none']:.2f} for plain RoPE"
    )
    if pi_worse and first_bin["linear"] > first_bin["none"] * (1 + TIE):
        text += (": so the likely reason is in the two halves of the trade — little to rescue past L, while PI "
                 "damages positions inside L, where it squeezes the fast pairs that encode local order, which a "
                 "character model relies on.")
    else:
        text += "."
    lines.append(text)
    lines.append(
        f"* **Cost at the original length** (method set for s = {max(fs):g}, evaluated at L): "
        + ", ".join(f"`{m}` {pct(d_cost[(m, max(fs))])}" for m in ext_methods)
        + (f". Dynamic NTK costs {pct(d_cost[('dynamic', max(fs))])} by construction (inputs no longer than L keep "
           "the original frequencies)" if "dynamic" in ext_methods else "")
        + f". `{worst}` costs the most"
        + (": PI compresses every pair by s, including the fast pairs that carry local order, while the other "
           "static methods leave the fastest pair(s) alone (`06_methods.csv`, `pairs_unchanged`)." if worst == "linear" else ".")
    )
    if {"yarn", "yarn_default"} <= set(ext_methods):
        yarn_better = {f: ppl_at[("yarn", f)] < ppl_at[("yarn_default", f)] for f in fs}
        slow = lam > L  # pairs that never complete a turn within L
        slow_pairs = int(slow.sum())
        slow_kept = int((slow & (A.yarn_ramp(HEAD_DIM, BASE, L, tiny["beta_fast"], tiny["beta_slow"]) > 0)).sum())
        default_full = int((slow & (A.yarn_ramp(HEAD_DIM, BASE, L) == 0)).sum())
        verdict = ("wins at every factor" if all(yarn_better.values()) else "loses at every factor"
                   if not any(yarn_better.values()) else "wins only at s = " + ", ".join(f"{f:g}" for f in fs if yarn_better[f]))
        lines.append(
            f"* **YaRN's ramp at toy scale.** With head dim {HEAD_DIM} and L = {L}, YaRN's default β = (32, 1) puts the "
            f"ramp at pairs {ramp.loc['yarn_default', 'ramp low (pair)']}–{ramp.loc['yarn_default', 'ramp high (pair)']} "
            f"and keeps {ramp.loc['yarn_default', 'pairs kept (γ=1)']} pair(s); the rescaled ramp (β = "
            f"{tiny['beta_fast']:.3g}, {tiny['beta_slow']:.3g}) keeps {ramp.loc['yarn (rescaled)', 'pairs kept (γ=1)']}. "
            "Perplexity at s·L, rescaled vs default: "
            + ", ".join(f"{ppl_at[('yarn', f)]:.2f} vs {ppl_at[('yarn_default', f)]:.2f}" for f in fs)
            + f" (s = {', '.join(f'{f:g}' for f in fs)}); cost at L: {pct(d_cost[('yarn', max(fs))])} vs "
            f"{pct(d_cost[('yarn_default', max(fs))])} at s = {max(fs):g}. So the rescaled ramp {verdict}"
            + (f"; in retrieval at {max(fs):g}L it scores {acc_at[('yarn', max(fs))]:.2f} against "
               f"{acc_at[('yarn_default', max(fs))]:.2f}. " if RET_OK else ". ")
            + f"YaRN's own criterion is rotations within L, which does not depend on model size: with β_slow = 1 "
            f"rotation the default ramp fully interpolates {default_full} of the {slow_pairs} pair(s) whose wavelength "
            f"exceeds L (pairs that never complete a turn in training), while the ramp rescaled by pair *fraction* "
            f"leaves {slow_kept} of them less than fully interpolated. "
            + ("That is a likely reason the default ramp extends better here — against the expectation "
               "(docs/references.md §4.4) that it must be adapted at this scale; what the rescaled ramp buys is a lower cost at L."
               if sum(yarn_better.values()) < len(fs) / 2 and default_full > slow_kept else
               "The rescaled ramp extends better here, as expected (docs/references.md §4.4)."
               if sum(yarn_better.values()) >= len(fs) / 2 else "")
        )
else:
    lines.append(f"* **{LM_TASK}: no model passed its gate** ({excluded(LM_TASK)}). Nothing is concluded about "
                 "perplexity, its cost at L, the loss by position or the YaRN ramp's effect; the per-seed rows are in "
                 "the results tables with `passed_gate` False.")
if RET_OK:
    best_acc = {f: max(ext_methods, key=lambda m: acc_at[(m, f)]) for f in fs}
    above = {f: [m for m in methods if acc_lo[(m, f)] > FLOOR[int(f * L_ret)]] for f in fs}
    pi_note = f"PI: {acc_at[('linear', max(fs))]:.2f} at {max(fs):g}L."
    if LM_OK and acc_at[("linear", max(fs))] > acc_at[("none", max(fs))] and ppl_at[("linear", max(fs))] > ppl_at[("none", max(fs))]:
        pi_note = (f"PI, which hurts perplexity, helps retrieval: {acc_at[('linear', max(fs))]:.2f} at {max(fs):g}L "
                   f"against {acc_at[('none', max(fs))]:.2f} for plain RoPE — finding one needle needs positions told "
                   "apart at long range, not fine local order.")
    lines.append(
        f"* **Retrieval ({retrieval_task}, L = {L_ret}, {len(OK_SEEDS[retrieval_task])} of {len(seeds)} seeds).** "
        f"Accuracy {acc_base:.2f} at L (position-blind floor {FLOOR[L_ret]:.3g}); plain RoPE "
        + ", ".join(f"{acc_at[('none', f)]:.2f} at {f:g}L" for f in fs)
        + "; best method per factor: "
        + ", ".join(f"`{best_acc[f]}` {acc_at[(best_acc[f], f)]:.2f} at {f:g}L" for f in fs)
        + ". Settings whose 95% interval lies above the floor: "
        + "; ".join(f"{f:g}L: " + (", ".join(f"`{m}`" for m in above[f]) or "none") for f in fs)
        + ". " + pi_note
    )
else:
    lines.append(f"* **{retrieval_task}: no model passed its gate** ({excluded(retrieval_task)}). Nothing is concluded "
                 "about retrieval.")
gaps = side.set_index(["source", "method", "ft_steps"])["gap closed"]
pi_first, pi_last = sorted(PI_TABLE3)[1], max(PI_TABLE3)
if LM_OK:
    ft_ppl = ft_summary[(ft_summary.task == LM_TASK) & (ft_summary.metric == "ppl")].set_index(
        ["method", "multiplier", "ft_steps"])["mean"]
    text = (
        f"* **Fine-tuning at {int(ff * L)} = {ff:g}L.** After {k_last} steps, perplexity at {int(ff * L)}: "
        + ", ".join(f"`{m}` {ft_ppl[(m, ff, k_last)]:.2f} (from {ft_ppl[(m, ff, 0)]:.2f})" for m in finetune_methods)
        + f"; the base model at L had {base_L['mean']:.2f}. At L after fine-tuning: "
        + ", ".join(f"`{m}` {ft_ppl[(m, 1.0, k_last)]:.2f}" for m in finetune_methods)
        + f". The first {k_first} steps close "
        + ", ".join(f"{gaps[(ours['source'].iloc[0], m, k_first)]:.0%} (`{m}`)" for m in finetune_methods)
        + f" of the gap between no fine-tuning and {k_last} steps; in the PI paper {pi_first} of {pi_last} steps close "
        f"{gaps[(PI_SOURCE, 'linear', pi_first)]:.0%}. "
    )
    if {"linear", "none"} <= set(finetune_methods):
        ratio = ft_ppl[("linear", ff, k_last)] / ft_ppl[("none", ff, k_last)]
        behind = ft_ppl[("linear", ff, 0)] > ft_ppl[("none", ff, 0)] * (1 + TIE)
        if ratio > 1 + TIE:
            text += (f"PI after {k_last} steps is still ×{ratio:.2f} the perplexity of plain RoPE fine-tuned the same "
                     "way: at this scale and step count PI does not adapt faster than plain RoPE, against the PI "
                     "paper's account"
                     + (f" (it starts further behind, ×{ft_ppl[('linear', ff, 0)] / ft_ppl[('none', ff, 0)]:.2f} at step 0, "
                        if behind else " (")
                     + f"and {k_last} steps are far fewer than the paper's {pi_last}; the fine-tune budgets are a "
                     "separate open question).")
        elif ratio < 1 - TIE:
            text += (f"PI after {k_last} steps beats plain RoPE fine-tuned the same way (×{ratio:.2f}), as the PI paper "
                     "reports.")
        else:
            text += f"PI after {k_last} steps matches plain RoPE fine-tuned the same way (×{ratio:.3f})."

    lines.append(text)
if finetune_retrieval and RET_OK:
    ft_acc = ft_summary[(ft_summary.task == retrieval_task) & (ft_summary.metric == "accuracy")].set_index(
        ["method", "multiplier", "ft_steps"])["mean"]
    lines.append(
        f"* **Retrieval after fine-tuning at {int(ff * L_ret)}** ({k_last} steps; floor "
        f"{FLOOR.get(int(ff * L_ret), floor_at(int(ff * L_ret))):.3g}): "
        + ", ".join(f"`{m}` {ft_acc[(m, ff, k_last)]:.2f} (from {ft_acc[(m, ff, 0)]:.2f})" for m in finetune_methods) + "."
    )
lap("total", T_START)
lines.append(
    f"* **Time.** This execution took {timings['total']['wall_s']:.0f} s wall, {timings['total']['cpu_s']:.0f} s CPU ("
    + ", ".join(f"{k}: {v['wall_s']:.0f} s / {v['cpu_s']:.0f} s" for k, v in timings.items() if k != "total")
    + "). The machine may be shared with other jobs, so wall times can be inflated; a rerun reads every training run "
    "from the cache."
)
display(Markdown("\n".join(lines)))

# %%
provenance = show_provenance(profile, device)
