# %% [markdown]
# # 06 — Extending RoPE's context: PI, NTK, dynamic NTK, YaRN, Llama 3, LongRoPE, p-RoPE, and fine-tuning budgets
#
# Notebook 05 showed that a RoPE model evaluated past its training length $L$ degrades. The
# literature's answer is to *change the rotation frequencies* so that positions up to $sL$ look like
# positions the model has seen (docs/references.md §3). Every method below is one record of
# `ropelib.context_extension.METHODS` (its HF rope keys at factor $s$, its source, and how the model is
# run):
#
# * **PI** — Position Interpolation (Chen et al. 2023, arXiv 2306.15595): every frequency divided by $s$
#   (HF `rope_type="linear"`).
# * **NTK-aware** (bloc97 2023; YaRN paper §3.1): a larger base $b' = b\,s^{d/(d-2)}$ (`ntk`).
# * **Dynamic NTK** (`dynamic`): the NTK base recomputed from the current input length $l$. How the
#   model is *run* matters here, so it is scored three ways: the whole window in one pass (`dynamic`),
#   as HF generates with its KV cache, where each key keeps the rotation of the step that added it
#   (`dynamic_cache`), and with keys cached before rotation and re-rotated at every step
#   (`dynamic_recompute`); plus `dynamic_f1`, HF's formula with factor 1 (below).
# * **YaRN** (Peng et al. 2023, arXiv 2309.00071, §3.2–3.4): NTK-by-parts with the paper's ramp (pairs
#   turning more than $\beta=32$ times within $L$ kept, fewer than $\alpha=1$ interpolated) and the
#   attention factor $0.1\ln s + 1$ (`yarn`), whose coefficient is swept below; `yarn_rescaled` is the
#   ramp rescaled by pair *fraction* that this notebook used before, kept as the ablation that shows why
#   it was dropped.
# * **Llama 3** (Meta llama-models): the same idea with bands set by wavelength (`llama3`).
# * **LongRoPE** (Ding et al. 2024, arXiv 2402.13753): per-pair factors found by a search on validation
#   perplexity — here an exhaustive search over a two-parameter monotone family (`longrope`).
# * **p-RoPE** (Barbero et al. 2024, arXiv 2410.06205) applied to these full-RoPE models: the slowest
#   pairs' frequencies set to zero (`p_rope_0.75`, `p_rope_0.5`; notebook 08 trains p-RoPE from scratch).
#
# This notebook takes the RoPE models that notebook 04 trained (same run-cache entries) and asks:
#
# 1. **No training**: what does each method do to perplexity and to retrieval at $s$ times the
#    training length, and what does it cost at the original length?
# 2. **Fine-tuning** at the longer length with budgets set as *fractions of the base model's
#    pre-training tokens*, PI's own budget (about 0.05 % of LLaMA's) among them: how much does each
#    budget buy, and does PI adapt faster than plain RoPE, as its paper reports?
#
# The published PI numbers are shown beside ours as data with their source, not as prose.
#
# The base models, their tasks and training lengths come from `ropelib.base_models` (one definition
# for notebooks 04–06) and their learning rates from the sweep of `ropelib.protocols` (tuned on the
# validation split, as in 04), so this notebook only sets what it evaluates. Every number reported
# here is measured on the **test** split of the language-model task; LongRoPE's search uses the
# validation split. Every base model must pass its gate (`ropelib.protocols.gate_models`) before its
# numbers are used: only models that passed enter the summaries, figures and conclusions; the per-seed
# tables hold every model, with a `passed_gate` column.

# %% tags=["parameters"]
profile = "default"
device = "auto"
# seeds of 04's RoPE models to extend (None: every seed of the profile's setup)
seeds = None
# parallel training processes for base and fine-tuning runs missing from the cache (1: one after another, in this process)
jobs = 1
# extension factors s: each method set to factor s, evaluated at s * L
factors = [2, 4, 8]
# methods (names in ropelib.context_extension.METHODS); "none" is plain RoPE run past L
methods = ["none", "linear", "ntk", "dynamic", "dynamic_cache", "dynamic_recompute", "dynamic_f1", "yarn",
           "yarn_rescaled", "llama3", "longrope", "p_rope_0.75", "p_rope_0.5"]
# perplexity: at most this many scored tokens per cell (the first non-overlapping windows of the test split)
eval_tokens = 4096
# loss by position at the largest factor: windows per model, bins per window
position_windows = 16
position_bins = 16
# retrieval: needle depths, sequences per (length, depth) cell
retrieval_depths = [0.0, 0.5, 1.0]
retrieval_samples = 16
# YaRN's temperature: coefficients c of the attention factor 1 + c ln s (0.1: the paper's)
yarn_temperatures = [0.0, 0.05, 0.1, 0.2, 0.3]
# LongRoPE's search: non-overlapping validation windows per candidate ramp
longrope_windows = 4
# fine-tuning at finetune_factor * L: budgets as fractions of the base model's pre-training tokens, one run per budget
finetune_factor = 4
finetune_methods = ["none", "linear", "yarn"]
finetune_fractions = [0.0005, 0.001, 0.01, 0.05]
finetune_batch_size = 4
# peak learning rate of a fine-tune = ratio x the base model's, tuned per (method, budget) on the LM's validation split
# over these ratios (0.0667: PI's 2e-5 against LLaMA-7B's pre-training 3e-4)
finetune_lr_ratios = [0.0667, 0.3, 1.0]
finetune_retrieval = True  # also fine-tune the retrieval models (else the language model only)
# torch CPU threads (these tiny models run fastest on one thread; None keeps torch's default)
threads = 1

# %% tags=["injected-parameters"]
# Parameters
device = "auto"
eval_tokens = 4096
factors = [2, 4, 8]
finetune_batch_size = 4
finetune_fractions = [0.0005, 0.001, 0.01, 0.05]
finetune_methods = ["none", "linear", "yarn"]
jobs = 2
longrope_windows = 4
position_bins = 16
position_windows = 16
profile = "default"
retrieval_depths = [0.0, 0.5, 1.0]
retrieval_samples = 16
yarn_temperatures = [0.0, 0.05, 0.1, 0.2, 0.3]

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

from ropelib import analysis, base_models, context_extension, memo, protocols, published, results, stats
from ropelib.data import make_task
from ropelib.evaluate import lm_loss_at_lengths, loss_by_position, retrieval_accuracy
from ropelib.model import select_device
from ropelib.plotting import (log_ticks, method_color, method_style, plot_pair_factors, plot_zero_shot_ppl, savefig,
                              set_theme)
from ropelib.provenance import show_provenance
from ropelib.rope_scaling import rope_frequencies
from ropelib.stats import accuracy_ci

NOTEBOOK = "06_context_extension"
if threads is not None:
    torch.set_num_threads(int(threads))
set_theme()
EVAL_VERSION = 3  # bump after changing how this notebook evaluates: it is part of every evaluation-cache key
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
    return stats.aggregate_seeds(df.assign(**{value: df[value].where(df.passed_gate.astype(bool))}), by, value)


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
setup = base_models.base_setup(profile)
seeds = list(setup.seeds) if seeds is None else list(seeds)
LM_TASK = protocols.lm_task(setup)  # the setup's language-modelling task
retrieval_task = setup.tasks_of_kind("retrieval")[0]
TASKS = [LM_TASK, retrieval_task]
# the sweep of RoPE alone: the same runs (same specs, same hashes) and the same choice as 04's sweep of every encoding
rope_setup = dataclasses.replace(setup, encodings=("rope",))
tuned, sweep_table = protocols.tuned_specs(rope_setup, device, jobs=jobs, encodings=["rope"], tasks=TASKS, seeds=seeds)
runs = base_models.run_specs(tuned, jobs=jobs)  # ("rope", task, seed) -> RunResult
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
gates = protocols.gate_models(runs, setup, split=SPLIT)  # the setup's thresholds (setup.gates) and gate samples
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
# ## 2. LongRoPE's search, on the validation split
#
# LongRoPE (Ding et al. 2024, §3) divides pair $i$'s frequency by its own factor $\lambda_i$, found by
# searching validation perplexity at the target length. Its evolutionary search is reduced here to an
# exhaustive one over a monotone two-parameter family (`ropelib.context_extension.longrope_factors`):
# pairs up to `lo` kept, pairs from `hi` on divided by $s$, a geometric ramp between — every
# $-1 \le lo < hi \le d/2$, from PI ($lo=-1, hi=0$) to plain RoPE. Each candidate is scored at $sL$
# on the first `longrope_windows` non-overlapping windows of the **validation** split; one ramp per
# factor is chosen, the lowest validation loss averaged over the seeds that passed their gate. Inputs no
# longer than $L$ keep the original frequencies (`short_factor` = 1); HF's attention factor
# $\sqrt{1 + \ln s / \ln L}$ (from Phi-3's code) applies at every length, so that is LongRoPE's only cost at $L$.
# The retrieval models (another $L$) get the same ramps, which are defined on pair indices.

# %%
t0 = now()
lm_config = BASE_SPECS[(LM_TASK, seeds[0])].task
val_tokens = protocols.split_tokens(lm_config, "validation")  # (N,)
search_rows = []
for seed in seeds:
    base = bases[(LM_TASK, seed)]
    for s in factors:
        found = cached("06_longrope_search", {"run": base.hash, "factor": float(s), "windows": longrope_windows,
                                              "split": "validation", "device": torch_device.type},
                       lambda: context_extension.longrope_search(base.model, val_tokens, float(s), L, max_windows=longrope_windows))
        search_rows.append(found.drop(columns="chosen").assign(task=LM_TASK, seed=seed, run_hash=base.hash[:16],
                                                               factor=float(s), train_length=L,
                                                               passed_gate=gate_of(LM_TASK, seed)))
search = pd.concat(search_rows, ignore_index=True)
pool = search[search.passed_gate] if search.passed_gate.any() else search  # no model passed: still choose, say so below
mean_search = pool.groupby(["factor", "lo", "hi"], as_index=False)["loss"].mean()
RAMP = {float(f): tuple(int(v) for v in g.loc[g["loss"].idxmin(), ["lo", "hi"]]) for f, g in mean_search.groupby("factor")}
search["chosen"] = [RAMP[r.factor] == (r.lo, r.hi) for r in search.itertuples()]
write_csv(search[["task", "seed", "run_hash", "factor", "train_length", "lo", "hi", "loss", "ppl", "chosen",
                  "passed_gate"]], "06_longrope_search.csv")
lap("LongRoPE search (validation)", t0)
N_PAIRS = HEAD_DIM // 2
ramp_rows = []
for f, (lo, hi) in RAMP.items():
    g = mean_search[mean_search.factor == f]
    pi_loss = float(g[(g.lo == -1) & (g.hi == 0)]["loss"].iloc[0])
    plain_loss = float(g[(g.lo == N_PAIRS - 1) & (g.hi == N_PAIRS)]["loss"].iloc[0])
    ramp_rows.append({"factor": f, "lo": lo, "hi": hi,
                      "factors λ_i": ", ".join(f"{v:.2f}" for v in context_extension.longrope_factors(N_PAIRS, f, lo, hi)),
                      "val ppl (chosen)": math.exp(float(g["loss"].min())), "val ppl (PI end)": math.exp(pi_loss),
                      "val ppl (plain end)": math.exp(plain_loss), "candidates": len(g)})
longrope_table = pd.DataFrame(ramp_rows)
longrope_table

# %% [markdown]
# ## 3. The methods, as the frequencies they produce
#
# Each method is a set of HF rope-config keys applied to a trained model at evaluation time
# (`ropelib.context_extension.extend`, through `ropelib.evaluate.with_rope_scaling`), and a protocol
# (`ropelib.context_extension.PROTOCOLS`): `window` (one forward pass over the window), `hf_cache`
# (as HF generates: position $p$ rotated with the frequencies for length $\max(p+1, L)$, once) or
# `recompute` (keys cached before rotation, re-rotated at every step). HF's dynamic formula scales the
# base by $(s\,l/L - s + 1)^{d/(d-2)}$ at input length $l$: with factor $s$ that is
# $(s^2 - s + 1)^{d/(d-2)}$ at $l = sL$, more than static NTK's $s^{d/(d-2)}$; `dynamic_f1` uses factor
# 1, i.e. exactly NTK's scale for the current length. The table shows the frequencies each method uses
# for an input of $sL$ tokens (for `dynamic_cache`: those of its last position).

# %%


def options(method: str, s: float) -> dict:
    """Method options at factor `s`: LongRoPE's searched ramp."""
    return {"ramp": RAMP[float(s)]} if method == "longrope" else {}


def method_keys(method: str, s: float, train_length: int) -> dict | None:
    """HF rope keys of `method` at factor `s` for a base model trained at `train_length` (None: plain RoPE)."""
    return context_extension.method_keys(method, float(s), int(train_length), HEAD_DIM, BASE, **options(method, s))


def extended(result, method: str, s: float):
    """The base run's model with `method` at factor `s`, set up for the method's protocol."""
    return context_extension.extend(result.model, method, float(s), result.spec.train.seq_len, **options(method, s))


def settings(method: str) -> list[float]:
    """The factors a method is evaluated with (plain RoPE has none: factor 1)."""
    return [1.0] if method == "none" else [float(s) for s in factors]


unknown = sorted((set(methods) | set(finetune_methods)) - set(context_extension.METHODS))
if unknown:
    raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(context_extension.METHODS)}")
method_rows = []
for task in TASKS:
    for method in methods:
        for s in settings(method):
            n = int(s * TRAIN_LEN[task])
            keys = method_keys(method, s, TRAIN_LEN[task]) or {"rope_type": "default", "rope_theta": BASE}
            _, attn = rope_frequencies(keys, HEAD_DIM, seq_len=n)  # as used for an input of s * L tokens
            ratio = analysis.pair_scale_factors(keys, HEAD_DIM, seq_len=n)  # theta_i' / theta_i per pair
            method_rows.append({
                "task": task, "method": method, "protocol": context_extension.METHODS[method].protocol, "factor": s,
                "train_length": TRAIN_LEN[task], "head_dim": HEAD_DIM, "rope_theta": BASE,
                "rope_keys": json.dumps(keys, sort_keys=True), "attention_factor": attn,
                "pairs_unchanged": int(np.isclose(ratio, 1.0, rtol=1e-5).sum()),
                "pairs_interpolated": int(np.isclose(ratio, 1.0 / s, rtol=1e-5).sum()) if s > 1 else 0,
                "min_pair_factor": float(ratio.min()), "max_pair_factor": float(ratio.max()),
            })
methods_table = pd.DataFrame(method_rows)
write_csv(methods_table, "06_methods.csv")
methods_table[methods_table.task == LM_TASK].drop(columns=["task", "rope_keys", "head_dim", "rope_theta"])

# %% [markdown]
# The YaRN ramp at this size. YaRN's criterion is counted in *rotations within $L$*, which does not
# depend on the model's size: pairs that turn more than $\beta_{fast} = 32$ times are left alone, pairs
# that turn less than $\beta_{slow} = 1$ time (they never complete a turn in training) are fully
# interpolated. `yarn` applies it as published. `yarn_rescaled` (`ropelib.analysis.tiny_yarn_params`)
# moves the ramp so that it covers the same *fraction* of the pairs as for Llama 2; it was this
# notebook's `yarn` before, and the numbers below are why it no longer is. The pair ranges (HF
# `find_correction_range`) of the two:

# %%
s_mid = float(finetune_factor)
tiny = analysis.tiny_yarn_params(HEAD_DIM, BASE, L, s_mid)
lam = analysis.wavelengths(HEAD_DIM, BASE)
pairs_full_turn = int(np.sum(lam <= L))
ramp_table = pd.DataFrame(
    [
        {"setting": name, "beta_fast": bf, "beta_slow": bs,
         "ramp low (pair)": analysis.yarn_correction_range(HEAD_DIM, BASE, L, bf, bs)[0],
         "ramp high (pair)": analysis.yarn_correction_range(HEAD_DIM, BASE, L, bf, bs)[1],
         "pairs kept (γ=1)": int(np.sum(analysis.yarn_ramp(HEAD_DIM, BASE, L, bf, bs) == 1.0)),
         "pairs interpolated (γ=0)": int(np.sum(analysis.yarn_ramp(HEAD_DIM, BASE, L, bf, bs) == 0.0))}
        for name, bf, bs in [("yarn", analysis.YARN_REFERENCE["beta_fast"], analysis.YARN_REFERENCE["beta_slow"]),
                             ("yarn_rescaled", tiny["beta_fast"], tiny["beta_slow"])]
    ]
).set_index("setting")
print(f"head_dim {HEAD_DIM} ({HEAD_DIM // 2} pairs), base {BASE:g}, L = {L}: {pairs_full_turn} of {HEAD_DIM // 2} "
      f"pairs complete a full turn within L; wavelengths {np.round(lam, 1).tolist()}")
display(ramp_table)

shown_pairs = [m for m in methods if m not in ("none", "dynamic_cache", "dynamic_recompute", "dynamic_f1")]
pair_factor = {m: analysis.pair_scale_factors(method_keys(m, s_mid, L), HEAD_DIM, seq_len=int(s_mid * L))
               for m in shown_pairs}  # {method: (HEAD_DIM/2,)}
fig = plot_pair_factors(pair_factor, title=f"Per-pair frequency factor at s = {s_mid:g}, L = {L}",
                        full_turn_pair=pairs_full_turn)
savefig(fig, "pair_factors", notebook=NOTEBOOK,
        caption=f"Per-pair frequency factor θ'/θ of each extension method at s = {s_mid:g} for the {LM_TASK} language model "
                f"(head dim {HEAD_DIM}, base {BASE:g}, L = {L}), for an input of {int(s_mid * L)} tokens; dashed: YaRN with the "
                f"ramp rescaled by pair fraction, p-RoPE at p = 0.5 (its zeroed pairs at 0); LongRoPE with its searched ramp.")
plt.show()

# %% [markdown]
# ## 4. Perplexity without training
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
test_tokens = protocols.split_tokens(lm_config, SPLIT)  # (N,)
print(f"{LM_TASK}: {SPLIT} split of {test_tokens.numel():,} tokens; at most {eval_tokens} scored per cell")


def ident(result, method: str = "none", s: float = 1.0, keys: dict | None = None) -> dict:
    """What identifies an evaluated model for the evaluation cache (ropelib.memo): the trained run's hash,
    the RoPE keys applied to it at evaluation time and the protocol it is run with."""
    keys = method_keys(method, s, result.spec.train.seq_len) if keys is None else keys
    return {"run": result.hash, "rope": keys, "protocol": context_extension.METHODS[method].protocol, "device": torch_device.type}


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
cost = (100 * cost_summary.pivot(index="method", columns="factor", values="mean").reindex(methods)).round(1)
cost.columns = [f"Δppl at L, % (s={c:g})" for c in cost.columns]
if LM_OK:
    print(f"plain RoPE at L = {L}: ppl {base_L['mean']:.3f} (95% CI {base_L['ci_low']:.3f}–{base_L['ci_high']:.3f}, "
          f"{base_L['n_seeds']} of {len(seeds)} seeds: those that passed their gate)")
else:
    print(f"no {LM_TASK} model passed its gate: the summaries below are NaN (the per-seed rows are in 06_zero_shot_ppl.csv)")
headline.join(cost)

# %%
# ropelib.plotting.plot_zero_shot_ppl: one colour per method, bands clipped at physical limits, legend outside
DYNAMIC = [m for m in methods if m.startswith("dynamic")]
MAIN = [m for m in methods if m not in DYNAMIC or m == "dynamic"]
fig = plot_zero_shot_ppl(ext_summary, cost_summary, methods=MAIN, factors=factors, train_length=L, task=LM_TASK,
                         base_ppl=base_L["mean"] if LM_OK else None)
savefig(fig, "zero_shot_ppl", notebook=NOTEBOOK,
        caption=f"Character-level {SPLIT}-split perplexity ({LM_TASK}) of 04's RoPE models (L = {L}) without training: "
                f"at s·L with each method set to factor s (left), and the change at L from the same setting (right); "
                f"mean and 95% CI over the {len(OK_SEEDS[LM_TASK])} of {len(seeds)} seeds that passed their gate. "
                f"Dynamic NTK as one window here; its generation protocols are in the next figure.")
plt.show()

# %% [markdown]
# ### Dynamic NTK: one window, HF's cache, or keys re-rotated
#
# The same frequencies formula, three ways of running the model, and HF's factor convention against
# factor 1. In one pass over a window of $sL$ tokens every position gets the base for length $sL$ — also
# the positions below $L$, where the model was trained with the original base. A generating model sees
# something else: with HF's cache, position $p$ keeps the base for $\max(p+1, L)$ (positions below $L$
# are plain RoPE, and later keys were rotated with smaller bases than the current query); with keys
# cached before rotation, every step re-rotates all keys with the current base.

# %%
dyn_view = ext_summary[ext_summary.method.isin(DYNAMIC + ["ntk", "none"])].pivot(
    index="method", columns="factor", values="mean").reindex([m for m in ["none", "ntk", *DYNAMIC] if m in methods])
dyn_view.columns = [f"ppl at {c:g}L" for c in dyn_view.columns]
dyn_cost = (100 * cost_summary[cost_summary.method.isin(DYNAMIC)].pivot(index="method", columns="factor",
                                                                        values="mean")).round(1)
dyn_cost.columns = [f"Δppl at L, % (s={c:g})" for c in dyn_cost.columns]
display(dyn_view.join(dyn_cost))
fig = plot_zero_shot_ppl(ext_summary, cost_summary, methods=[m for m in ["none", "ntk", *DYNAMIC] if m in methods],
                         factors=factors, train_length=L, task=LM_TASK, base_ppl=base_L["mean"] if LM_OK else None)
fig.suptitle("Dynamic NTK: whole window (solid), HF KV cache (dashed), keys re-rotated (dotted), factor 1 (dash-dot)",
             fontsize=10)
savefig(fig, "dynamic_protocols", notebook=NOTEBOOK,
        caption=f"Dynamic NTK scored by three protocols ({LM_TASK}, {SPLIT} split, L = {L}): one forward pass over the "
                f"window (dynamic), as HF generates with its KV cache of rotated keys (dynamic_cache), with keys cached "
                f"before rotation and re-rotated each step (dynamic_recompute), and HF's formula with factor 1 "
                f"(dynamic_f1, re-rotated); static NTK and plain RoPE for reference; mean and 95% CI over the seeds that "
                f"passed their gate.")
plt.show()

# %% [markdown]
# ## 5. YaRN's temperature at this size
#
# YaRN multiplies cos and sin by $\sqrt{1/t} = c\ln s + 1$ (so the logits by its square), with
# $c = 0.1$ fitted on LLaMA (§3.4). Here $c$ is swept with the paper's ramp, at $sL$ and at $L$, on the
# test split; the model is otherwise `yarn`. $c = 0$ is NTK-by-parts without temperature.

# %%
t0 = now()
temp_rows = []
for seed in seeds:
    base = bases[(LM_TASK, seed)]
    for s in factors:
        for c in yarn_temperatures:
            keys = context_extension.method_keys("yarn", float(s), L, HEAD_DIM, BASE, temperature=float(c))
            model = context_extension.extend(base.model, "yarn", float(s), L, temperature=float(c))
            for length in (L, int(s * L)):
                temp_rows.append({"task": LM_TASK, "seed": seed, "run_hash": base.hash[:16], "factor": float(s),
                                  "coefficient": float(c), "attention_factor": context_extension.yarn_attention_factor(float(s), float(c)),
                                  "train_length": L, "length": length, "multiplier": length / L,
                                  **perplexity(model, length, ident(base, "yarn", s, keys=keys)),
                                  "passed_gate": gate_of(LM_TASK, seed)})
temperature = pd.DataFrame(temp_rows)
write_csv(temperature, "06_yarn_temperature.csv")
lap("YaRN temperature", t0)
temp_summary = summarize(temperature, ["factor", "coefficient", "multiplier"], "ppl")
temp_view = temp_summary[temp_summary.multiplier > 1].pivot(index="coefficient", columns="factor", values="mean")
temp_view.columns = [f"ppl at {c:g}L" for c in temp_view.columns]
temp_at_L = temp_summary[temp_summary.multiplier == 1].pivot(index="coefficient", columns="factor", values="mean")
temp_at_L.columns = [f"ppl at L (s={c:g})" for c in temp_at_L.columns]
display(temp_view.join(temp_at_L))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for ax, past in zip(axes, (True, False)):
    for s, color in zip(factors, plt.cm.viridis(np.linspace(0.1, 0.8, len(factors)))):
        d = temp_summary[(temp_summary.factor == s) & ((temp_summary.multiplier > 1) == past)].sort_values("coefficient")
        ax.plot(d.coefficient, d["mean"], marker="o", color=color, label=f"s = {s:g}")
        ax.fill_between(d.coefficient, d.ci_low.clip(lower=1.0), d.ci_high, color=color, alpha=0.12)
    ax.axvline(0.1, color="0.4", lw=0.8, ls=":")
    ax.annotate(" paper's 0.1", (0.1, 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=8, color="0.35")
    ax.set(xlabel="temperature coefficient c (attention factor 1 + c ln s)", ylabel="perplexity",
           title=f"YaRN at s·L" if past else "YaRN at L (the cost)")
    if not LM_OK:
        no_gated_data(ax, LM_TASK)
axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
savefig(fig, "yarn_temperature", notebook=NOTEBOOK,
        caption=f"YaRN (β = 32, 1) with its attention factor 1 + c·ln s for several c, {LM_TASK} {SPLIT}-split perplexity at "
                f"s·L (left) and at L (right), L = {L}; mean and 95% CI over the seeds that passed their gate; dotted: "
                f"the paper's c = 0.1.")
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

fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True, layout="constrained")
for ax, group, title in ((axes[0], MAIN, "methods"), (axes[1], ["none", *DYNAMIC], "dynamic NTK protocols")):
    for method in group:
        d = by_pos_ok[by_pos_ok.method == method].groupby("position_lo")["loss"].mean()
        ax.plot(d.index + (edges[1] - edges[0]) / 2, d.values, color=mcolor(method), label=method, ls=mstyle(method))
    ax.axvline(L, color="0.3", lw=0.8, ls=":")
    ax.annotate(" L", (L, 1), xycoords=("data", "axes fraction"), va="top", fontsize=9)
    ax.set(xlabel="position in the window", title=f"{title}, windows of {n_pos} = {s_max:g}L (s = {s_max:g})")
    if LM_OK:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: never over a curve
    else:
        no_gated_data(ax, LM_TASK)
axes[0].set_ylabel("loss (nats/char)")
savefig(fig, "loss_by_position", notebook=NOTEBOOK,
        caption=f"Mean {SPLIT}-split loss by position in windows of {n_pos} characters ({s_max:g}× the training length {L}) "
                f"for plain RoPE and each method at s = {s_max:g} (right: the dynamic-NTK protocols); mean over the "
                f"{len(OK_SEEDS[LM_TASK])} of {len(seeds)} seeds that passed their gate × {position_windows} windows.")
plt.show()

# %% [markdown]
# ## 6. Retrieval without training
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


def _retrieval(model, length: int, seed: int = 0) -> pd.DataFrame:
    """Exact match by depth at `length` over `retrieval_samples` sequences drawn with `seed` (0: the reported ones)."""
    if "depth" in rtask.controls:
        df = retrieval_accuracy(model, rtask, [length], depths=retrieval_depths, n_samples=retrieval_samples, seed=seed)
    else:
        allowed = np.array(rtask.distances(length))
        dists = [int(allowed[np.argmin(abs(allowed - f * allowed[-1]))]) for f in retrieval_depths]
        df = retrieval_accuracy(model, rtask, [length], distances=dists, n_samples=retrieval_samples, seed=seed)
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
fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True, layout="constrained")
floor_x = [n / L_ret for n in FLOOR]
plain_L = ret_L[ret_L.method == "none"]
for ax, group, title in ((axes[0], MAIN, "methods"), (axes[1], ["none", *DYNAMIC], "dynamic NTK protocols")):
    for method in group:
        d = ret_summary[ret_summary.method == method].sort_values("factor")
        ax.plot(d.factor, d["mean"], color=mcolor(method), marker="o", label=method, ls=mstyle(method))
        ax.fill_between(d.factor, d.ci_low, d.ci_high, color=mcolor(method), alpha=0.10)
    ax.errorbar([1.0], plain_L["mean"], yerr=[plain_L["mean"] - plain_L.ci_low, plain_L.ci_high - plain_L["mean"]],
                color=mcolor("none"), marker="s", ls="none", capsize=3, label=f"plain RoPE at L = {L_ret}")
    if len(set(FLOOR.values())) == 1:
        ax.axhline(FLOOR[L_ret], color="0.3", lw=1.0, ls="--", label=f"position-blind floor {FLOOR[L_ret]:.3g}")
    else:  # digits in the filler: the floor depends on the length
        ax.plot(floor_x, list(FLOOR.values()), color="0.3", lw=1.0, ls="--", label="position-blind floor")
    if not RET_OK:
        no_gated_data(ax, retrieval_task)
    ax.set(xscale="log", ylim=(0, 1.02), xlabel="evaluation length / L (= factor s)",
           title=f"{retrieval_task} at s·L, no training: {title}")
    ax.set_xticks(floor_x, [f"{x:g}" for x in floor_x])
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
axes[0].set_ylabel("exact-match accuracy")
savefig(fig, "zero_shot_retrieval", notebook=NOTEBOOK,
        caption=f"{retrieval_task} exact-match accuracy of 04's RoPE models (L = {L_ret}) without training, each method at "
                f"s·L set to factor s, mean over depths (right: the dynamic-NTK protocols); 95% intervals from "
                f"ropelib.stats.accuracy_ci over the {len(OK_SEEDS[retrieval_task])} of {len(seeds)} seeds that passed "
                f"their gate; dashed: the position-blind floor.")
plt.show()

# %%
ret_ok = zero_ret[zero_ret.passed_gate]
cells = at_extended(ret_ok).groupby(["method", "length", "depth"])["accuracy"].mean().reset_index()
depths = sorted(set(zero_ret.depth))
fig, axes = plt.subplots(1, len(factors), figsize=(3.6 * len(factors) + 1, 0.32 * len(methods) + 1.6), sharey=True,
                         squeeze=False)
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
# ## 7. Fine-tuning at the longer length, with budgets relative to pre-training
#
# Each base model is fine-tuned at $s_{ft} L$ with PI (`linear`), with YaRN, or with plain RoPE
# (`none`: the model simply sees longer sequences), for budgets set as **fractions of its own
# pre-training tokens** (`finetune_fractions`), one run per budget from the base model
# (`ropelib.context_extension.finetune_spec`). PI fine-tuned LLaMA-7B for 1000 steps of 64 × 8192
# tokens after 1.0T tokens of pre-training: `context_extension.pi_budget_fraction()` ≈ 0.05 %, the first budget here;
# its 200-step checkpoint, where its Table 3 is already within 2.5 % of its final perplexity, is about
# 0.01 %. The schedule follows PI §3.1 with a decay added: linear warm-up over PI's 2 % of the steps
# (at least one), cosine decay to 10 % of the peak, no weight decay, AdamW restarted, fresh batches
# from the training split. The peak learning rate is the base model's times a ratio tuned per (method,
# budget) on held-out data of one base model per task (`finetune_lr_ratios`; PI's own ratio, 2e-5
# against LLaMA-7B's pre-training 3e-4, is the smallest): the language model's validation split, and
# for retrieval fresh samples drawn with another seed than the reported ones; the sweep's table below
# shows why one fixed ratio would not do. A budget that rounds to the same step count as a smaller one
# is run once; the tables and figures place each run at the share of pre-training it actually used. A fine-tuned model carries its base model's gate (`passed_gate`): every run is written, and
# only those of models that passed enter the summaries. Step 0 is the method without training.

# %%
t0 = now()
ft_tasks = TASKS if finetune_retrieval else [LM_TASK]
fractions = sorted(float(f) for f in finetune_fractions)
if not fractions or len(set(fractions)) != len(fractions) or not all(0 < f <= 1 for f in fractions):
    raise ValueError(f"finetune_fractions must be distinct numbers in (0, 1], got {finetune_fractions!r}")
not_trainable = [m for m in finetune_methods if not context_extension.METHODS[m].finetunable]
if not_trainable:
    raise ValueError(f"cannot fine-tune {not_trainable}: their frequencies depend on the input length; "
                     f"fine-tunable: {', '.join(m for m, r in context_extension.METHODS.items() if r.finetunable)}")
ff = float(finetune_factor)
ratios = sorted(float(r) for r in finetune_lr_ratios)
if not ratios or len(set(ratios)) != len(ratios) or not all(0 < r <= 10 for r in ratios):
    raise ValueError(f"finetune_lr_ratios must be distinct numbers in (0, 10], got {finetune_lr_ratios!r}")

# 1. the learning rate of each (task, method, budget): a sweep over `ratios` on one base model per task, scored
# on held-out data: the LM's validation split (loss at ff * L), fresh retrieval samples (exact match at ff * L,
# drawn with another seed than the test samples)
VAL_SEED = 1  # retrieval samples for choosing: the reported ones use seed 0
sweep_specs = {}  # (task, method, budget, ratio) -> RunSpec
tune_seed = {}
for task in ft_tasks:
    tune_seed[task] = (OK_SEEDS[task] or seeds)[0]
    tune_base = BASE_SPECS[(task, tune_seed[task])]
    for method in finetune_methods:
        keys = method_keys(method, ff, tune_base.train.seq_len)
        for f in fractions:
            for r in ratios:
                sweep_specs[(task, method, f, r)] = context_extension.finetune_spec(tune_base, keys, factor=ff, fraction=f, lr_ratio=r,
                                                                     batch_size=finetune_batch_size, device=device)
sweep_runs = base_models.run_specs(sweep_specs, jobs=jobs)


def held_out(task: str, result) -> dict:
    """The choice's score of a fine-tuned model: validation loss (LM; lower is better) or exact match on
    samples drawn with VAL_SEED (retrieval; higher is better), at ff * L."""
    n = int(ff * TRAIN_LEN[task])
    key = {"run": result.hash, "length": n, "device": torch_device.type}
    if task == LM_TASK:
        val = cached("06_finetune_val", {**key, "eval_tokens": eval_tokens, "split": "validation"},
                     lambda: lm_loss_at_lengths(result.model, val_tokens, [n], max_windows=max(1, eval_tokens // n)))
        return {"metric": "loss", "value": float(val["loss"].iloc[0])}
    df = cached("06_finetune_val_retrieval", {**key, "depths": retrieval_depths, "samples": retrieval_samples,
                                              "seed": VAL_SEED},
                lambda: _retrieval(result.model, n, seed=VAL_SEED))
    return {"metric": "accuracy", "value": float(df["accuracy"].mean())}


lr_rows = []
for (task, method, f, r), result in sweep_runs.items():
    lr_rows.append({"task": task, "seed": tune_seed[task], "method": method, "ft_budget": f,
                    "ft_steps": result.spec.train.steps, "lr_ratio": r, "lr": result.spec.train.lr,
                    **held_out(task, result)})
lr_sweep = pd.DataFrame(lr_rows)
# best per (task, method, budget): the lowest loss / the highest accuracy (ties: the smaller ratio, listed first)
score = np.where(lr_sweep.metric == "loss", lr_sweep.value, -lr_sweep.value)
best_rows = lr_sweep.assign(score=score).sort_values(["lr_ratio"]).groupby(["task", "method", "ft_budget"])["score"].idxmin()
LR_RATIO = {(r.task, r.method, r.ft_budget): r.lr_ratio for r in lr_sweep.loc[best_rows].itertuples()}
lr_sweep["chosen"] = [LR_RATIO[(r.task, r.method, r.ft_budget)] == r.lr_ratio for r in lr_sweep.itertuples()]
write_csv(lr_sweep, "06_finetune_lr.csv")
display(lr_sweep.pivot(index=["task", "method", "ft_budget"], columns="lr_ratio", values="value"))
lm_sweep = lr_sweep[lr_sweep.task == LM_TASK].set_index(["method", "ft_budget", "lr_ratio"])["value"]
b_lo, b_hi = min(fractions), max(fractions)
display(Markdown(
    f"Validation perplexity at {ff:g}L ({LM_TASK}, seed {tune_seed[LM_TASK]}) by peak-rate ratio "
    f"{', '.join(f'{r:g}' for r in ratios)}: "
    + "; ".join(f"`{m}` " + " / ".join(f"{math.exp(lm_sweep[(m, b_hi, r)]):.2f}" for r in ratios) + f" at {100 * b_hi:g}% "
                f"and " + " / ".join(f"{math.exp(lm_sweep[(m, b_lo, r)]):.2f}" for r in ratios) + f" at {100 * b_lo:g}%"
                for m in finetune_methods)
    + ". Chosen: " + ", ".join(f"`{m}` {LR_RATIO[(LM_TASK, m, b_lo)]:g} → {LR_RATIO[(LM_TASK, m, b_hi)]:g}"
                               for m in finetune_methods) + " (smallest → largest budget)."
))

# 2. every (task, seed, method, budget) with its task's chosen ratio
ft_specs, ft_budget = {}, {}  # (task, seed, method, steps) -> RunSpec, requested fraction
for task in ft_tasks:
    for seed in seeds:
        base_spec = BASE_SPECS[(task, seed)]
        for method in finetune_methods:
            keys = method_keys(method, ff, base_spec.train.seq_len)
            for f in fractions:
                spec = context_extension.finetune_spec(base_spec, keys, factor=ff, fraction=f, lr_ratio=LR_RATIO[(task, method, f)],
                                        batch_size=finetune_batch_size, device=device)
                key = (task, seed, method, spec.train.steps)
                if key not in ft_specs:
                    ft_specs[key], ft_budget[key] = spec, f
ft_runs = base_models.run_specs(ft_specs, jobs=jobs)
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
        pre_tokens = context_extension.pretraining_tokens(BASE_SPECS[(task, seed)])
        for method in finetune_methods:
            steps_list = [0] + sorted(k[3] for k in ft_specs if k[:3] == (task, seed, method))
            for steps in steps_list:
                if steps == 0:
                    model, run_hash, model_id = extended(base, method, ff), base.hash[:16], ident(base, method, ff)
                    budget, tokens = 0.0, 0
                else:
                    result = ft_runs[(task, seed, method, steps)]
                    model, run_hash = result.model, result.hash[:16]
                    model_id = {"run": result.hash, "rope": None, "protocol": "window", "device": torch_device.type}
                    budget = ft_budget[(task, seed, method, steps)]
                    tokens = steps * result.spec.train.batch_size * result.spec.train.seq_len
                for length in (Lt, int(ff * Lt)):
                    for metric, value in scores(task, model, length, model_id, (task, seed, method, steps)).items():
                        ft_rows.append({"task": task, "seed": seed, "method": method, "factor": ff,
                                        "ft_steps": steps, "ft_budget": budget, "ft_tokens": tokens,
                                        "ft_fraction": tokens / pre_tokens, "run_hash": run_hash, "train_length": Lt,
                                        "ft_length": int(ff * Lt), "length": length, "multiplier": length / Lt,
                                        "metric": metric, "value": value, "passed_gate": gate_of(task, seed)})
finetune = pd.DataFrame(ft_rows)
write_csv(finetune, "06_finetune.csv")
lap("fine-tuning (train or cache) and evaluation", t0)

# summaries over the models that passed: Student-t for loss / ppl, accuracy_ci (in [0, 1]) for accuracy
ft_by = ["task", "metric", "method", "multiplier", "ft_fraction"]
ft_lm = summarize(finetune[finetune.metric != "accuracy"], ft_by, "value")
ft_acc_rows = finetune[finetune.metric == "accuracy"].copy()
ft_acc_rows["n_correct"] = [ft_counts[(r.task, r.seed, r.method, r.ft_steps, r.length)][0] for r in ft_acc_rows.itertuples()]
ft_acc_rows["n_samples"] = [ft_counts[(r.task, r.seed, r.method, r.ft_steps, r.length)][1] for r in ft_acc_rows.itertuples()]
ft_summary = pd.concat([ft_lm, accuracy_summary(ft_acc_rows, ft_by)], ignore_index=True)
budget_steps = finetune.groupby(["task", "ft_budget"]).agg(ft_steps=("ft_steps", "first"), ft_tokens=("ft_tokens", "first"),
                                                           ft_fraction=("ft_fraction", "first"))
display(budget_steps)
ft_view = ft_summary[ft_summary.metric.isin(["ppl", "accuracy"])].pivot(
    index="ft_fraction", columns=["task", "metric", "multiplier", "method"], values="mean")
ft_view

# %% [markdown]
# The PI paper's Table 3 (LLaMA-7B, 2048 → 8192 with PI, PG19 perplexity at 8192) beside ours, both
# against the fine-tuning budget as a fraction of pre-training tokens: the share of the gap between no
# fine-tuning and the largest budget that each budget closes.

# %%
# Chen et al. 2023 (PI), arXiv 2306.15595, Tables 1 and 3 — data with its source in ropelib.published
PI_SOURCE, PI_TABLE3, PI_NO_EXTENSION_MIN = published.PI_SOURCE, published.PI_TABLE3, published.PI_NO_EXTENSION_MIN
PI_FRACTION = context_extension.pi_budget_fraction()  # PI's 1000 steps relative to LLaMA-7B's pre-training
pi_per_step = PI_FRACTION / context_extension.PI_FINETUNE["steps"]
pi_frame = pd.DataFrame({"source": PI_SOURCE, "method": "linear", "ft_fraction": [k * pi_per_step for k in PI_TABLE3],
                         "ppl": list(PI_TABLE3.values())})
ours = ft_summary[(ft_summary.task == LM_TASK) & (ft_summary.metric == "ppl") & (ft_summary.multiplier == ff)]
ours = ours.rename(columns={"mean": "ppl"})[["method", "ft_fraction", "ppl"]]
ours.insert(0, "source", f"this notebook: {LM_TASK}, L = {L} → {int(ff * L)}, {SPLIT}-split ppl at {int(ff * L)}, "
                         f"mean of the {len(OK_SEEDS[LM_TASK])} seeds that passed their gate")
side = pd.concat([pi_frame, ours], ignore_index=True).sort_values(["source", "method", "ft_fraction"])
grp = side.groupby(["source", "method"], sort=False)
side["gap closed"] = (grp.ppl.transform("first") - side.ppl) / (grp.ppl.transform("first") - grp.ppl.transform("last"))
side.reset_index(drop=True)

# %%
fig, axes = plt.subplots(1, len(ft_tasks), figsize=(7.5 * len(ft_tasks), 4), squeeze=False, layout="constrained")
X0 = 100 * min(fractions) / 4  # where "no fine-tuning" is drawn on the log axis (labelled "none")


def budget_x(b: pd.Series) -> np.ndarray:
    return np.where(b > 0, 100 * b, X0)


for ax, task in zip(axes[0], ft_tasks):
    metric = "ppl" if task == LM_TASK else "accuracy"
    Lt = TRAIN_LEN[task]
    for method in finetune_methods:
        for mult, ls, mk in ((ff, "-", "o"), (1.0, ":", ".")):
            d = ft_summary[(ft_summary.task == task) & (ft_summary.metric == metric) & (ft_summary.method == method)
                           & (ft_summary.multiplier == mult)].sort_values("ft_fraction")
            ax.plot(budget_x(d.ft_fraction), d["mean"], ls=ls, marker=mk, color=mcolor(method),
                    label=f"{method} at {int(mult * Lt)}")
            if mult != 1.0:
                lo = d.ci_low.clip(lower=1.0) if metric == "ppl" else d.ci_low
                ax.fill_between(budget_x(d.ft_fraction), lo, d.ci_high, color=mcolor(method), alpha=0.15)
    ax.axvline(100 * PI_FRACTION, color="0.4", lw=0.8, ls="--")
    ax.annotate(" PI's budget", (100 * PI_FRACTION, 0.98), xycoords=("data", "axes fraction"), va="top", fontsize=8,
                color="0.35")
    if not OK_SEEDS[task]:
        no_gated_data(ax, task)
    elif task == LM_TASK:
        ax.axhline(base_L["mean"], color="0.3", lw=0.8, ls="--", label=f"base model at L = {Lt}")
        ax.set(yscale="log")
        log_axis(ax.yaxis)
    if task != LM_TASK:
        long = int(ff * Lt)
        ax.axhline(FLOOR.get(long, floor_at(long)), color="0.3", lw=1.0, ls="-.", label=f"position-blind floor at {long}")
        ax.set_ylim(0, 1.02)
    ax.set_xscale("log")
    budgets_here = sorted(b for b in set(finetune[finetune.task == task].ft_fraction) if b > 0)
    ax.set_xticks([X0, *(100 * b for b in budgets_here)], ["none", *(f"{100 * b:g}%" for b in budgets_here)])
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.set(xlabel="fine-tuning tokens, share of the base model's pre-training", ylabel=metric,
           title=f"{task}: fine-tuned at {int(ff * Lt)} = {ff:g}×L")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
savefig(fig, "finetune_curve", notebook=NOTEBOOK,
        caption=f"After fine-tuning 04's RoPE models at {ff:g}× their training length with {', '.join(finetune_methods)} "
                f"for budgets of {', '.join(f'{100 * f:g}%' for f in fractions)} of their pre-training tokens (warm-up and "
                f"cosine decay): {' and '.join(ft_tasks)} at the long length (solid, 95% CI over the seeds that passed "
                f"their gate) and at L (dotted); {SPLIT} split; dashed: PI's own budget relative to LLaMA-7B's "
                f"pre-training, and the base model at L; dash-dot: the position-blind floor.")
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
TIE = 1e-3  # relative difference below which two perplexities (or losses) count as the same in the prose


def pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def excluded(task: str) -> str:
    """The failed seeds of `task` and their reasons, for a conclusion that skips it."""
    rows = failed[failed.task == task]
    return "; ".join(f"seed {r.seed}: {r.reason}" for r in rows.itertuples()) or "no seed was run"


def listed(values: dict, fmt: str = "{:.2f}") -> str:
    return ", ".join(f"{fmt.format(v)} at {f:g}L" for f, v in values.items())


ppl_at = ext_summary.set_index(["method", "factor"])["mean"]  # ppl at s*L
d_cost = cost_summary.set_index(["method", "factor"])["mean"]  # relative ppl change at L
acc_at = ret_summary.set_index(["method", "factor"])["mean"]
acc_lo = ret_summary.set_index(["method", "factor"])["ci_low"]
acc_base = float(ret_L.set_index("method").loc["none", "mean"])
lines = []
if LM_OK:
    best = {f: min(ext_methods, key=lambda m: ppl_at[(m, f)]) for f in fs}
    worst = max(ext_methods, key=lambda m: d_cost[(m, max(fs))])  # largest perplexity increase at L
    lines.append(
        f"* **Plain RoPE past its training length** ({LM_TASK}, {SPLIT} split, {len(OK_SEEDS[LM_TASK])} of {len(seeds)} "
        f"seeds). Perplexity {base_L['mean']:.2f} at L = {L}; " + listed({f: ppl_at[("none", f)] for f in fs})
        + ". With non-overlapping windows a longer window gives most tokens *more* context, so a model that used it "
        "would score lower past L; "
        + ("plain RoPE scores higher at every length past L." if all(ppl_at[("none", f)] > base_L["mean"] for f in fs)
           else "plain RoPE scores higher only at "
           + (", ".join(f"{f:g}L" for f in fs if ppl_at[("none", f)] > base_L["mean"]) or "no length past L") + ".")
    )
    lines.append(
        "* **Without training**, the best method at each factor: "
        + "; ".join(f"s = {f:g}: `{best[f]}` {ppl_at[(best[f], f)]:.2f} (plain RoPE {ppl_at[('none', f)]:.2f}, "
                    f"{pct(ppl_at[(best[f], f)] / base_L['mean'] - 1)} against the model at L)" for f in fs)
        + ". Every method at each factor is in the table of section 4."
    )
    pi_vs_none = {f: ppl_at[("linear", f)] / ppl_at[("none", f)] for f in fs}
    alibi_rope = {L_: row["rope"] for L_, row in published.ALIBI_TABLE1.items()}
    alibi_mults = {L_ / published.ALIBI_TRAIN_LENGTH: v for L_, v in alibi_rope.items()}
    alibi_mult = stats.nearest_multiplier(max(fs), [m for m in alibi_mults if m > 1])
    alibi_ratio = alibi_mults[alibi_mult] / alibi_mults[1.0]
    first_bin = by_pos_ok[by_pos_ok.position_lo == 0].groupby("method")["loss"].mean()
    pi_worse = all(v > 1 + TIE for v in pi_vs_none.values())
    text = (
        "* **Against the literature: PI without fine-tuning.** The PI paper reports LLaMA-7B at 4× its length with PI "
        f"and no fine-tuning at perplexity {PI_TABLE3[0]:.2f}, against > {PI_NO_EXTENSION_MIN:g} for plain RoPE. "
        + ("Here PI is worse than plain RoPE at every factor (" + ", ".join(f"×{pi_vs_none[f]:.2f} at {f:g}L" for f in fs)
           + "). " if pi_worse else
           "Here PI beats plain RoPE at " + (", ".join(f"{f:g}L (×{pi_vs_none[f]:.3f})" for f in fs if pi_vs_none[f] < 1 - TIE)
                                             or "no factor") + ". ")
        + f"Plain RoPE degrades by ×{ppl_at[('none', max(fs))] / base_L['mean']:.2f} at {max(fs):g}L (the ALiBi paper's "
        f"rotary model: ×{alibi_ratio:.2f} at {alibi_mult:.1f}× its length; LLaMA-7B: > {PI_NO_EXTENSION_MIN:g}), so there "
        f"is less to rescue. In the first {edges[1]} positions of a window, inside L, PI at s = {s_max:g} has loss "
        f"{first_bin['linear']:.2f} against {first_bin['none']:.2f} for plain RoPE"
        + (": PI squeezes the fast pairs that carry local order, which a character model relies on."
           if pi_worse and first_bin["linear"] > first_bin["none"] * (1 + TIE) else ".")
    )
    lines.append(text)
    lines.append(
        f"* **Cost at the original length** (method set for s = {max(fs):g}, evaluated at L): "
        + ", ".join(f"`{m}` {pct(d_cost[(m, max(fs))])}" for m in ext_methods) + f". `{worst}` costs the most. "
        "The dynamic protocols cost nothing at L by construction; LongRoPE keeps the original frequencies up to L "
        "(short factors 1) and costs only through HF's attention factor sqrt(1 + ln s / ln L), which applies at "
        "every length."
    )
    if {"dynamic", "dynamic_cache", "dynamic_recompute"} <= set(methods):
        dyn = {m: {f: ppl_at[(m, f)] for f in fs} for m in DYNAMIC}
        order = {f: sorted(DYNAMIC, key=lambda m: dyn[m][f]) for f in fs}
        first_dyn = by_pos_ok[by_pos_ok.position_lo == 0].groupby("method")["loss"].mean()
        lines.append(
            "* **Dynamic NTK depends on how the model is run.** Perplexity at s·L: "
            + "; ".join(f"`{m}` " + ", ".join(f"{dyn[m][f]:.2f}" for f in fs) for m in DYNAMIC)
            + f" (s = {', '.join(f'{f:g}' for f in fs)}). Best protocol per factor: "
            + ", ".join(f"s = {f:g}: `{order[f][0]}`" for f in fs)
            + f". In one pass over the window (`dynamic`) every position gets the base for length s·L, also the first "
            f"{edges[1]} positions, whose loss is {first_dyn['dynamic']:.2f} against {first_dyn['none']:.2f} for plain RoPE; "
            f"generating with HF's cache (`dynamic_cache`) keeps positions below L plain ({first_dyn['dynamic_cache']:.2f}). "
            + (f"HF's factor convention (factor = s, so the scale at s·L is s² − s + 1) against factor 1 (scale l/L, "
               f"`dynamic_f1`, keys re-rotated): " + ", ".join(f"{dyn['dynamic_recompute'][f]:.2f} vs {dyn['dynamic_f1'][f]:.2f}"
                                                                   for f in fs) + "."
               if "dynamic_f1" in DYNAMIC else "")
        )
    if {"yarn", "yarn_rescaled"} <= set(ext_methods):
        slow = lam > L  # pairs that never complete a turn within L
        kept_rescaled = int((slow & (analysis.yarn_ramp(HEAD_DIM, BASE, L, tiny["beta_fast"], tiny["beta_slow"]) > 0)).sum())
        lines.append(
            f"* **YaRN's ramp: the paper's criterion, not a rescaled one.** Perplexity at s·L, `yarn` (β = 32, 1 rotations) "
            f"vs `yarn_rescaled`: " + ", ".join(f"{ppl_at[('yarn', f)]:.2f} vs {ppl_at[('yarn_rescaled', f)]:.2f}" for f in fs)
            + f"; cost at L at s = {max(fs):g}: {pct(d_cost[('yarn', max(fs))])} vs {pct(d_cost[('yarn_rescaled', max(fs))])}. "
            f"The rescaled ramp leaves {kept_rescaled} of the {int(slow.sum())} pairs that never complete a turn within L less "
            "than fully interpolated: they meet angles past L that training never showed, which is what YaRN's criterion, "
            "counted in rotations within L and so independent of model size, is there to prevent. "
            + ("The rescaled ramp extends worse at every factor; it stays in the tables as the ablation that shows it, "
               "and `yarn` is the paper's ramp everywhere else (fine-tuning included)."
               if all(ppl_at[("yarn", f)] < ppl_at[("yarn_rescaled", f)] for f in fs) else
               "The rescaled ramp is not worse at every factor here, so the choice of the paper's ramp rests on its "
               "criterion, not on these numbers.")
        )
    if len(temp_summary):
        tv = temp_summary[temp_summary.multiplier > 1].set_index(["factor", "coefficient"])["mean"]
        best_c = {f: min(yarn_temperatures, key=lambda c: tv[(f, float(c))]) for f in fs}
        paper = {f: tv[(f, 0.1)] if (f, 0.1) in tv.index else math.nan for f in fs}
        near = {f: paper[f] / tv[(f, float(best_c[f]))] - 1 for f in fs}  # the paper's c against the best, relative
        lines.append(
            "* **YaRN's temperature.** Best coefficient c (attention factor 1 + c ln s) at s·L: "
            + ", ".join(f"s = {f:g}: c = {best_c[f]:g} ({tv[(f, float(best_c[f]))]:.3f}; the paper's 0.1: {paper[f]:.3f})"
                        for f in fs)
            + ". " + ("The paper's 0.1, fitted on LLaMA, is the best of the sweep, or within 1% of it, at every factor here: "
                      "its temperature carries over to head dim " + str(HEAD_DIM) + "."
                      if all(v <= 0.01 for v in near.values()) else
                      "The paper's 0.1 is more than 1% worse than the best coefficient at "
                      + ", ".join(f"s = {f:g} ({pct(v)})" for f, v in near.items() if v > 0.01)
                      + f": the fit was made for LLaMA, and at head dim {HEAD_DIM} the logits' scale need not follow it.")
        )
    if "longrope" in ext_methods:
        lines.append(
            "* **LongRoPE** (searched on validation): chosen ramps "
            + ", ".join(f"s = {f:g}: pairs ≤ {RAMP[f][0]} kept, ≥ {RAMP[f][1]} ÷ s" for f in fs)
            + "; test perplexity at s·L " + listed({f: ppl_at[("longrope", f)] for f in fs})
            + f" (`yarn`: " + ", ".join(f"{ppl_at[('yarn', f)]:.2f}" for f in fs) + ")"
            + ". A search on the target length's validation perplexity is what LongRoPE adds; here it is a 2-parameter "
            "family, not the paper's evolutionary search over every pair."
        )
    if any(m.startswith("p_rope") for m in ext_methods):
        pr = [m for m in ext_methods if m.startswith("p_rope")]
        lines.append(
            "* **p-RoPE on a model trained with full RoPE** (the slowest pairs' frequencies set to zero, no training): "
            + "; ".join(f"`{m}` cost at L {pct(d_cost[(m, max(fs))])}, at s·L " + ", ".join(f"{ppl_at[(m, f)]:.2f}" for f in fs)
                        for m in pr)
            + ". Barbero et al. train p-RoPE from the start; notebook 08 does, with the RoPE base model's budget."
        )
else:
    lines.append(f"* **{LM_TASK}: no model passed its gate** ({excluded(LM_TASK)}). Nothing is concluded about "
                 "perplexity, its cost at L, the loss by position, the dynamic protocols or YaRN; the per-seed rows are in "
                 "the results tables with `passed_gate` False.")
if RET_OK:
    best_acc = {f: max(ext_methods, key=lambda m: acc_at[(m, f)]) for f in fs}
    above = {f: [m for m in methods if acc_lo[(m, f)] > FLOOR[int(f * L_ret)]] for f in fs}
    lines.append(
        f"* **Retrieval ({retrieval_task}, L = {L_ret}, {len(OK_SEEDS[retrieval_task])} of {len(seeds)} seeds).** "
        f"Accuracy {acc_base:.2f} at L (position-blind floor {FLOOR[L_ret]:.3g}); plain RoPE "
        + listed({f: acc_at[("none", f)] for f in fs}) + "; best method per factor: "
        + ", ".join(f"`{best_acc[f]}` {acc_at[(best_acc[f], f)]:.2f} at {f:g}L" for f in fs)
        + ". Settings whose 95% interval lies above the floor: "
        + "; ".join(f"{f:g}L: " + (", ".join(f"`{m}`" for m in above[f]) or "none") for f in fs) + "."
    )
else:
    lines.append(f"* **{retrieval_task}: no model passed its gate** ({excluded(retrieval_task)}). Nothing is concluded "
                 "about retrieval.")
if LM_OK:
    ft_ppl = ft_summary[(ft_summary.task == LM_TASK) & (ft_summary.metric == "ppl")].set_index(
        ["method", "multiplier", "ft_fraction"])["mean"]
    lm_budgets = sorted(b for b in set(finetune[finetune.task == LM_TASK].ft_fraction) if b > 0)
    b_pi, b_max = lm_budgets[0], lm_budgets[-1]
    text = (
        f"* **Fine-tuning at {int(ff * L)} = {ff:g}L, budgets as a share of pre-training.** Perplexity at {int(ff * L)} after "
        + "; ".join(f"`{m}`: " + ", ".join(f"{ft_ppl[(m, ff, b)]:.2f} at {100 * b:g}%" for b in [0.0, *lm_budgets])
                    for m in finetune_methods)
        + f". The base model at L had {base_L['mean']:.2f}. At L after the largest budget: "
        + ", ".join(f"`{m}` {ft_ppl[(m, 1.0, b_max)]:.2f}" for m in finetune_methods) + ". "
    )
    if {"linear", "none"} <= set(finetune_methods):
        pi_ratio = {b: ft_ppl[("linear", ff, b)] / ft_ppl[("none", ff, b)] for b in lm_budgets}
        gap_pi = side[(side.source != PI_SOURCE) & (side.method == "linear")].set_index("ft_fraction")["gap closed"]
        ahead = [b for b, v in pi_ratio.items() if v < 1 - TIE]
        behind = [b for b, v in pi_ratio.items() if v > 1 + TIE]
        text += (
            f"At the smallest budget ({100 * b_pi:g}%; PI's own was {100 * PI_FRACTION:.3g}%), PI closes "
            f"{gap_pi.get(b_pi, math.nan):.0%} of the gap to its largest budget here; in the PI paper 200 of its 1000 "
            f"steps close {side[(side.source == PI_SOURCE) & (side.ft_fraction > 0)]['gap closed'].iloc[0]:.0%}. "
            "PI against plain RoPE fine-tuned on the same budget: "
            + ", ".join(f"×{v:.2f} at {100 * b:g}%" for b, v in pi_ratio.items()) + " — "
            + ("PI is behind plain RoPE at every budget, against the PI paper's account." if not ahead else
               "PI is ahead of plain RoPE at every budget, as the PI paper reports." if not behind else
               "PI is behind at " + ", ".join(f"{100 * b:g}%" for b in behind) + " and ahead at "
               + ", ".join(f"{100 * b:g}%" for b in ahead) + ": it does not adapt faster than plain RoPE at the small "
               "budgets the PI paper's account is about.")
            + " "
        )
    best_ft = min(((m, b) for m in finetune_methods for b in lm_budgets), key=lambda mb: ft_ppl[(mb[0], ff, mb[1])])
    text += (f"The best fine-tuned model, `{best_ft[0]}` at {100 * best_ft[1]:g}%, scores {ft_ppl[(best_ft[0], ff, best_ft[1])]:.2f} "
             f"at {ff:g}L, " + ("below" if ft_ppl[(best_ft[0], ff, best_ft[1])] < base_L["mean"] else "above")
             + f" the base model at L ({base_L['mean']:.2f}): " + ("with the longer context it predicts better than "
                                                                   "the model ever did within L."
                                                                   if ft_ppl[(best_ft[0], ff, best_ft[1])] < base_L["mean"]
                                                                   else "fine-tuning does not fully recover it."))
    lines.append(text)
if finetune_retrieval and RET_OK:
    ft_acc = ft_summary[(ft_summary.task == retrieval_task) & (ft_summary.metric == "accuracy")].set_index(
        ["method", "multiplier", "ft_fraction"])["mean"]
    r_budgets = sorted(b for b in set(finetune[finetune.task == retrieval_task].ft_fraction) if b > 0)
    floor_ft = FLOOR.get(int(ff * L_ret), floor_at(int(ff * L_ret)))
    below = [(m, b) for m in finetune_methods for b in r_budgets if ft_acc[(m, ff, b)] < floor_ft]
    lines.append(
        f"* **Retrieval after fine-tuning at {int(ff * L_ret)}** (floor {floor_ft:.3g}; learning rates chosen on held-out "
        "samples): " + "; ".join(f"`{m}` " + ", ".join(f"{ft_acc[(m, ff, b)]:.2f}" for b in [0.0, *r_budgets])
                                 for m in finetune_methods)
        + f" at budgets {', '.join(f'{100 * b:g}%' for b in [0.0, *r_budgets])}. "
        + ("Fine-tuning on passkey sequences of the longer length brings "
           + ", ".join(f"`{m}` at {100 * b:g}%" for m, b in below) + " below the position-blind floor: a short "
           "fine-tune can unlearn the retrieval these models had rather than extend it."
           if below else "No fine-tuned model falls below the position-blind floor.")
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
