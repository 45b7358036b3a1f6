# %% [markdown]
# # 08 — RoPE's own questions: the base, the rotary fraction, and where attention goes past L
#
# Notebooks 02–03 answer RoPE's questions in closed form; this one asks them of trained models.
#
# **1. Base and rotary fraction.** With head dimension $d$, base $b$ and training length $L$, pair $i$
# turns with period $2\pi b^{2i/d}$. Only the pairs whose period fits inside $L$ see every angle in
# training. Liu et al. 2023 (*Scaling laws of RoPE-based extrapolation*, arXiv 2310.05209, §3) call the
# number of coordinates in those pairs the **critical dimension** $d_\text{extra} = 2\lceil \tfrac{d}{2}\log_b
# \tfrac{L}{2\pi}\rceil$. They bound extrapolation by the period of the first pair that does *not* turn
# fully, $T_\text{extra} = 2\pi b^{d_\text{extra}/d}$ (`ropelib.analysis.extrapolation_limit`). Both the
# base and the rotary fraction move that bound:
#
# * a **small base** makes every pair turn within $L$: no angle past $L$ is new, and there is no bound;
# * a **large base** slows every pair, so fewer of them turn, but the first unseen one has a longer period;
# * **partial rotary** (GPT-NeoX) rotates only a fraction of the coordinates, with the frequencies spread over them;
# * **p-RoPE** (Barbero et al. 2024, arXiv 2410.06205, §5) keeps the fastest fraction of the full spectrum and
#   removes the slow pairs, the ones that would meet unseen angles.
#
# Each variant is the profile's RoPE language model with only its RoPE keys changed
# (`ropelib.rope_variants`). Its learning rate is tuned on validation data by the same sweep as the base
# models, and it must pass the same RoPE gates. It is then evaluated to 16× $L$ on the test split, and its
# curve is set beside its predicted bound.
#
# **2. Attention past L** (`ropelib.attention_stats`), on the base models of notebook 04 and on the variants:
# * attention entropy and the attention mass at distances $\ge L$, at 1× to 8×;
# * for passkey models, how much attention the query pays to the needle;
# * for RoPE models, the query–key score split by frequency band (pairs that turn within $L$, slower pairs,
#   position-free coordinates), for keys nearer and farther than $L$.
#
# **3. Training length** (`ropelib.length_sweep`): RoPE, ALiBi and NoPE trained at several lengths on the
# same number of tokens. If an encoding fails past $L$ because of relative distances it never saw, its
# perplexity ratio depends on the multiple of $L$ alone, and the curves for different $L$ fall on one.

# %% tags=["parameters"]
profile = "default"  # smoke | default | full: also selects the models (ropelib.base_models.SETUPS)
device = "auto"  # auto | cpu | cuda | mps
jobs = 2  # training processes in parallel on a cache miss (one GPU: 1)
cpu_threads = 2  # torch intra-op threads of this process for the evaluations
variants = ["base_10", "base_100", "base_500", "base_1e4", "base_1e6", "partial_0.25", "partial_0.5",
            "p_rope_0.25", "p_rope_0.5"]  # ropelib.rope_variants.ROPE_VARIANTS
variant_seeds = [0, 1, 2]  # seeds trained per variant (a subset of the profile's seeds)
multipliers = [1.0, 2.0, 4.0, 8.0, 16.0]  # perplexity at round(m * L)
tolerance = 0.05  # a length is "worse" when its perplexity exceeds (1 + tolerance) x the 1x value
attention_multipliers = [1.0, 2.0, 4.0, 8.0]
attention_windows = 8  # test-split windows per (model, length) for the attention profile
band_windows = 4  # windows per (model, length) for the RoPE band scores
needle_samples = 64  # passkey sequences per (model, length)
length_encodings = ["rope", "alibi", "nope"]  # the training-length sweep (section 3)
train_lengths = [32, 64, 128, 256]  # same tokens per step: batch size = (batch x L of the profile) / length
length_seeds = [0]
length_multipliers = [1.0, 2.0, 4.0, 8.0]
eval_seed = 4321

# %% tags=["injected-parameters"]
# Parameters
attention_multipliers = [1.0, 2.0, 4.0, 8.0]
attention_windows = 8
band_windows = 4
device = "auto"
jobs = 2
length_seeds = [0]
multipliers = [1.0, 2.0, 4.0, 8.0, 16.0]
needle_samples = 64
profile = "default"
train_lengths = [32, 64, 128, 256]
variant_seeds = [0, 1]

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from ropelib import attention_stats as attn_stats
from ropelib import base_models, extrapolation, length_sweep, memo, protocols, results, rope_variants
from ropelib.data import make_task
from ropelib.model import select_device
from ropelib.plotting import color_for, savefig, set_theme
from ropelib.provenance import show_provenance

NOTEBOOK = "08_rope_base_and_attention"
set_theme()
EVAL_VERSION = 1  # bump after changing how this notebook evaluates: it is part of every evaluation-cache key
cached = memo.versioned(EVAL_VERSION)

pd.set_option("display.precision", 3)
torch_device = select_device(device)
if torch_device.type == "cpu":
    torch.set_num_threads(cpu_threads)
setup = base_models.base_setup(profile)
LM_TASK = protocols.lm_task(setup)
L = setup.task(LM_TASK).train_length
HEAD_DIM = setup.d_model // setup.n_heads
t_start = time.time()


def write_table(df: pd.DataFrame, name: str) -> None:
    """Write results/<name>.csv (ropelib.results: columns checked against its schema, written atomically)."""
    results.write_table(df, name, profile)


predictions = rope_variants.variant_predictions(variants, HEAD_DIM, L).assign(train_length=L, head_dim=HEAD_DIM)
write_table(predictions, "08_predictions")
display(Markdown(f"**Closed-form predictions** (head dimension {HEAD_DIM}, L = {L}; `predicted_limit_x` = "
                 "T_extra / L, inf: no pair meets an unseen angle)"))
display(predictions.drop(columns=["source", "train_length", "head_dim"]))

# %% [markdown]
# ## 1. The variants, trained
#
# The learning-rate sweep runs each variant at the rates of the base models' grid (seed 0, the sweep's
# step count) and keeps the rate with the lowest validation loss. Then every variant trains on the full budget
# of the base models (same data, size, steps, start token). `base_1e4` *is* the base RoPE model of
# notebook 04 (same spec, same cache entry).

# %%
lrs, sweep_table = rope_variants.tune_variant_lrs(setup, variants, device=device, jobs=jobs, cached=cached)
write_table(sweep_table, "08_lr_sweep")
runs = rope_variants.train_variants(setup, variants, lrs=lrs, seeds=variant_seeds, device=device, jobs=jobs)
n_trained = sum(not r.cached for r in runs.values())
gates = rope_variants.gate_variants(runs, setup, cached=cached)
gate_cols = ["variant", "task", "seed", "run_hash", "ppl", "context_gain", "context_gain_per_seed", "ngram_ppl_3",
             "ngram_ppl_4", "passed", "reason"]
write_table(gates[gate_cols], "08_gates")
PASSED = {(r.variant, r.task, int(r.seed)) for r in gates[gates.passed.fillna(False).astype(bool)].itertuples()}
print(f"profile={profile}, device={torch_device}: {len(runs)} variant models ({n_trained} trained now), "
      f"{len(PASSED)} passed their gate; learning rates: " + ", ".join(f"{k} {v:g}" for k, v in lrs.items()))
display(gates[["variant", "seed", "ppl", "context_gain", "ngram_ppl_3", "passed", "reason"]])

# %%
grid = rope_variants.variant_length_grid(runs, setup, PASSED, multipliers, device=torch_device.type, cached=cached)
write_table(grid, "08_lm_loss")
summary = extrapolation.summarise_lm(grid.rename(columns={"variant": "encoding"})).rename(columns={"encoding": "variant"})
write_table(summary, "08_lm_summary")
check = rope_variants.prediction_check(summary, predictions, tolerance=tolerance)
write_table(check, "08_prediction_check")


def ppl_cells(s: pd.DataFrame) -> pd.DataFrame:
    cell = s.apply(lambda r: "—" if not np.isfinite(r.ppl_mean) else
                   f"{r.ppl_mean:.2f} [{r.ppl_ci_low:.2f}, {r.ppl_ci_high:.2f}]", axis=1)
    t = s.assign(cell=cell).pivot(index="variant", columns="multiplier", values="cell")
    t = t.loc[[v for v in variants if v in t.index]]
    t.columns = [f"{m:g}x" for m in t.columns]
    return t


display(Markdown(f"**Test perplexity, non-overlapping windows** (mean over the passing seeds [95% CI]; L = {L})"))
display(ppl_cells(summary))
display(Markdown(f"**Prediction against measurement** (worse: perplexity above {1 + tolerance:g}× its 1× value)"))
display(check)

# %%
FAMILY_PANELS = {"base": [v for v in variants if rope_variants.variant(v).family == "base"],
                 "rotary fraction": [v for v in variants if rope_variants.variant(v).family != "base"]}
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
pred = predictions.set_index("variant")
for ax, (title, names) in zip(axes, FAMILY_PANELS.items()):
    cmap = plt.get_cmap("viridis" if title == "base" else "plasma")
    for i, name in enumerate(names):
        s = summary[summary.variant == name].sort_values("multiplier")
        if not len(s) or not np.isfinite(s.ppl_mean).any():
            continue
        base = float(s[np.isclose(s.multiplier, 1.0)].ppl_mean.iloc[0])
        colour = cmap(0.1 + 0.8 * i / max(1, len(names) - 1))
        ax.plot(s.multiplier, s.ppl_mean / base, "o-", color=colour, label=name)
        # band: the range of the passing seeds' own ratios (a t-interval over two seeds would be ~13x wider
        # than their spread and leave the ratio's range [0, inf))
        g = grid[(grid.variant == name) & grid.passed_gate & (grid.status == "ok")]
        own = g.pivot_table(index="seed", columns="multiplier", values="ppl")
        own = own.div(own[1.0], axis=0)
        ax.fill_between(own.columns, own.min(), own.max(), color=colour, alpha=0.15, lw=0)
        limit = float(pred.loc[name, "predicted_limit_x"])
        if np.isfinite(limit) and limit <= max(multipliers):
            ax.axvline(limit, color=colour, ls=":", lw=1.5)
    ax.axhline(1 + tolerance, color="0.5", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(multipliers, [f"{m:g}" for m in multipliers])
    ax.set_xlabel("evaluation length / L")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
axes[0].set_ylabel("perplexity / perplexity at 1x")
fig.suptitle("RoPE variants past L: measured perplexity ratio; dotted: Liu et al.'s bound T_extra / L")
fig.tight_layout()
savefig(fig, "variant_ppl_ratio", notebook=NOTEBOOK,
        caption=f"Test perplexity relative to 1x vs evaluation length for RoPE variants of one character LM (L = {L}, head dim {HEAD_DIM}), seed means over passing models, bands: the range of the seeds' own ratios ({len(variant_seeds)} seeds); dotted verticals: the predicted bound T_extra/L of each variant in its colour; dashed: the {1 + tolerance:g}x line ({profile} profile).")
plt.show()

# %% [markdown]
# ## 2. Where attention goes past L
#
# The base models of notebook 04 (every encoding, the seeds that passed their gate), on the same
# test-split windows: for the queries in the last $L$ positions of each window, the entropy of their
# attention relative to uniform attention over the same keys, and the mass they put on keys at distance
# $\ge L$ (which no training query ever reached).

# %%
base_specs, _ = protocols.tuned_specs(setup, device, jobs=jobs)
base_runs = base_models.run_specs(base_specs, jobs=jobs)
base_gates = protocols.gate_models(base_runs, setup, cached=cached)
BASE_PASSED = protocols.passed_keys(base_gates)
def evaluable(r, train_length: int) -> bool:
    """Whether the model's encoding is defined at every attention length (learned tables stop at L)."""
    n = r.model.encoding.max_positions
    return n is None or n >= max(attention_multipliers) * train_length


def with_gate(df: pd.DataFrame, passed: set) -> pd.DataFrame:
    return df.assign(passed_gate=[(e, t, int(s)) in passed for e, t, s in zip(df.encoding, df.task, df.seed)])


# every evaluable model is measured (and written with its gate); only the passing ones are summarised
lm_runs = {k: r for k, r in base_runs.items() if k[1] == LM_TASK and evaluable(r, L)}
skipped = sorted({k[0] for k in base_runs if k[1] == LM_TASK} - {k[0] for k in lm_runs})
tokens = protocols.split_tokens(base_specs[next(iter(base_specs))].task, "test", setup.lm_eval_tokens)
profile_table = with_gate(attn_stats.lm_attention_grid(lm_runs, L, tokens, attention_multipliers,
                                                       n_windows=attention_windows, cached=cached), BASE_PASSED)
write_table(profile_table, "08_attention_profile")
per_model = profile_table[profile_table.passed_gate].groupby(["encoding", "seed", "multiplier"], as_index=False)[
    ["entropy_ratio", "far_mass"]].mean()
by_enc = per_model.groupby(["encoding", "multiplier"], as_index=False)[["entropy_ratio", "far_mass"]].mean()
failed_lm = sorted({k[0] for k in lm_runs if k not in BASE_PASSED})
display(Markdown("**Attention of the last L queries** (mean over layers, heads and passing seeds; not defined "
                 f"past L: {', '.join(skipped) or 'none'}; with a failed seed: {', '.join(failed_lm) or 'none'})"))
display(by_enc.pivot(index="encoding", columns="multiplier", values=["entropy_ratio", "far_mass"]).round(3))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for enc, g in by_enc.groupby("encoding"):
    axes[0].plot(g.multiplier, g.entropy_ratio, "o-", color=color_for(enc), label=enc)
    axes[1].plot(g.multiplier, g.far_mass, "o-", color=color_for(enc), label=enc)
axes[0].set_ylabel("entropy / entropy of uniform attention")
axes[1].set_ylabel("attention mass at distance >= L")
for ax in axes:
    ax.set_xscale("log", base=2)
    ax.set_xticks(attention_multipliers, [f"{m:g}" for m in attention_multipliers])
    ax.set_xlabel("evaluation length / L")
axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
fig.tight_layout()
savefig(fig, "attention_entropy_far_mass", notebook=NOTEBOOK,
        caption=f"Character-LM attention of the last L query positions vs evaluation length: entropy relative to uniform causal attention (left) and attention mass on keys at distance >= L (right), mean over layers, heads and passing seeds, per encoding ({profile} profile).")
plt.show()

# %% [markdown]
# ### Passkey: does the query still find the needle?
#
# The passkey models of notebook 04 at 1× to 8× their training length: the attention the query `KEY`
# pays to the needle (its `KEY` and digits), for the head that pays it the most at 1× (the retrieval
# head), beside the exact-match accuracy on the same sequences. Once with the needle at a random depth
# and once right before the query (depth 1: the needle is as close as at 1×, only the filler before it
# is longer).

# %%
RET_TASK = setup.tasks_of_kind("retrieval")[0]
ret_task = make_task(RET_TASK, **dict(setup.task(RET_TASK).params))
L_RET = setup.task(RET_TASK).train_length
ret_runs = {k: r for k, r in base_runs.items() if k[1] == RET_TASK and evaluable(r, L_RET)}
needle = with_gate(pd.concat([
    attn_stats.needle_grid(ret_runs, ret_task, L_RET, attention_multipliers, n_samples=needle_samples, seed=eval_seed,
                           depth=depth, cached=cached).assign(depth=np.nan if depth is None else depth)
    for depth in (None, 1.0)], ignore_index=True), BASE_PASSED)
write_table(needle, "08_needle_attention")
needle_ok = needle[needle.passed_gate]
at_1x = needle_ok[np.isclose(needle_ok.multiplier, 1.0) & needle_ok.depth.isna()]
head_of = at_1x.loc[at_1x.groupby(["encoding", "seed"]).needle_mass.idxmax(), ["encoding", "seed", "layer", "head"]]
best = needle_ok.merge(head_of, on=["encoding", "seed", "layer", "head"])
best_summary = best.assign(depth=best.depth.fillna(-1)).groupby(["encoding", "depth", "multiplier"], as_index=False)[
    ["needle_mass", "needle_share", "accuracy"]].mean()
best_summary["depth"] = best_summary.depth.map(lambda d: "random" if d < 0 else f"{d:g}")
if not len(best_summary):
    display(Markdown(f"**No passkey model passed its gate in this profile ({profile}):** nothing to summarise; "
                     f"`08_needle_attention.csv` holds the measurements of the {len(ret_runs)} failed models."))
display(Markdown("**The retrieval head's attention on the needle** (mean over passing seeds; `needle_share` 1 = "
                 "as much as uniform attention)"))
display(best_summary.pivot(index=["encoding", "depth"], columns="multiplier",
                           values=["needle_mass", "accuracy"]).round(3))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, depth in zip(axes, ["random", "1"]):
    for enc, g in best_summary[best_summary.depth == depth].groupby("encoding"):
        ax.plot(g.multiplier, g.needle_mass, "o-", color=color_for(enc), label=enc)
    ax.set_xscale("log", base=2)
    ax.set_xticks(attention_multipliers, [f"{m:g}" for m in attention_multipliers])
    ax.set_xlabel("evaluation length / L")
    ax.set_title(f"needle depth {depth}")
axes[0].set_ylabel("retrieval head's attention on the needle")
if len(best_summary):
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
fig.tight_layout()
savefig(fig, "needle_attention", notebook=NOTEBOOK,
        caption=f"Passkey: attention the query pays to the needle (the head that pays it most at 1x), vs evaluation length, needle at a random depth (left) and right before the query (right), mean over passing seeds ({profile} profile).")
plt.show()

# %% [markdown]
# ### RoPE's frequency bands past L
#
# For the RoPE models (the base model and every variant), the query–key score split into three bands:
# * `turning`: pairs whose period fits inside $L$;
# * `slow`: pairs with a longer period;
# * `position-free`: removed frequencies and unrotated coordinates.
#
# `spread` is the standard deviation of a band's contribution across the keys of a query. It is the part
# of the score that moves attention from one key to another. It is shown for keys nearer than $L$ and
# for keys at $\ge L$.

# %%
rope_runs = {k: r for k, r in lm_runs.items() if k[0] == "rope"}
rope_runs.update({k: r for k, r in runs.items() if k[0] != "base_1e4"})  # base_1e4 is the rope model itself
bands = with_gate(attn_stats.band_grid(rope_runs, L, tokens, attention_multipliers, n_windows=band_windows,
                                       cached=cached), BASE_PASSED | PASSED)
write_table(bands, "08_rope_bands")
band_summary = bands[bands.passed_gate].groupby(["encoding", "multiplier", "band", "keys"], as_index=False)[["spread", "mean"]].mean()
band_view = band_summary[band_summary.multiplier.isin([1.0, max(attention_multipliers)])]
display(Markdown("**Score spread per band** (mean over layers, heads and passing seeds)"))
display(band_view.pivot_table(index=["encoding", "band"], columns=["multiplier", "keys"], values="spread").round(3))

# %%
far_m = max(attention_multipliers)
enc_order = [e for e in ["rope"] + [v for v in variants if v != "base_1e4"] if e in set(band_summary.encoding)]
fig, ax = plt.subplots(figsize=(11, 4))
width = 0.8 / 3
band_colours = {"turning": "#1b9e77", "slow": "#d95f02", "position-free": "#7570b3"}
for j, band in enumerate(attn_stats.BANDS):
    near = band_summary[(band_summary.band == band) & (band_summary.multiplier == far_m) & (band_summary["keys"] == "< L")]
    far = band_summary[(band_summary.band == band) & (band_summary.multiplier == far_m) & (band_summary["keys"] == ">= L")]
    x = np.arange(len(enc_order)) + (j - 1) * width
    ax.bar(x, [near.set_index("encoding").spread.get(e, np.nan) for e in enc_order], width * 0.9,
           color=band_colours[band], alpha=0.45, label=f"{band}, keys < L")
    ax.scatter(x, [far.set_index("encoding").spread.get(e, np.nan) for e in enc_order], color=band_colours[band],
               marker="D", edgecolor="k", zorder=3, label=f"{band}, keys >= L")
ax.set_xticks(np.arange(len(enc_order)), enc_order, rotation=30, ha="right")
ax.set_ylabel(f"score spread across keys at {far_m:g}x")
ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
fig.tight_layout()
savefig(fig, "rope_band_spread", notebook=NOTEBOOK,
        caption=f"RoPE models at {far_m:g}x L: spread (std across keys) of each frequency band's score contribution, bars for keys nearer than L, diamonds for keys at distance >= L; mean over layers, heads and passing seeds ({profile} profile).")
plt.show()

# %% [markdown]
# ## 3. Does degradation collapse on the ×L axis?
#
# Each encoding's base language model is trained again at each length in `train_lengths`, on the same
# tokens per step (batch size × length fixed) for the same steps, at its tuned learning rate (tuned at
# the profile's length). At the profile's own length the model is the base model. Each model is gated at
# its own length. The context gain compares the same early window at every length: the first $L_0/8$
# positions of the profile's length $L_0$, against the last half of the model's own window. At $L = 256$
# the first eighth would already hold 32 characters of context. Each model is then evaluated at multiples of
# its own length on the test split (non-overlapping windows).
# `spread` is the largest ratio over the smallest across lengths at one multiple: 1 when the curves collapse.

# %%
base_lrs, _ = protocols.tune_learning_rates(setup, device, jobs=jobs, cached=cached)
len_specs = length_sweep.length_specs(setup, length_encodings, train_lengths, seeds=length_seeds, lrs=base_lrs,
                                      device=device)
len_runs = length_sweep.train_lengths(len_specs, jobs=jobs)
len_gates = length_sweep.gate_lengths(len_runs, setup, cached=cached)
len_gate_cols = ["encoding", "task", "seed", "train_length", "run_hash", "ppl", "context_gain", "context_gain_per_seed",
                 "ngram_ppl_3", "ngram_ppl_4", "passed", "reason"]
write_table(len_gates[len_gate_cols], "08_length_gates")
LEN_PASSED = {(r.encoding, int(r.train_length), int(r.seed))
              for r in len_gates[len_gates.passed.fillna(False).astype(bool)].itertuples()}
len_grid = length_sweep.length_grid(len_runs, setup, LEN_PASSED, length_multipliers, device=torch_device.type,
                                    cached=cached)
write_table(len_grid, "08_length_loss")
collapse = length_sweep.collapse_table(len_grid)
write_table(collapse, "08_length_collapse")
display(Markdown(f"**Gates at each training length** ({len(LEN_PASSED)} of {len(len_runs)} models passed)"))
display(len_gates[["encoding", "train_length", "seed", "ppl", "context_gain", "ngram_ppl_3", "passed", "reason"]])
display(Markdown("**Perplexity ratio to 1x** (mean over passing seeds) at each training length, and its spread"))
if len(collapse):
    display(collapse.pivot_table(index=["encoding", "multiplier"], columns="train_length", values="ratio")
            .join(collapse.groupby(["encoding", "multiplier"]).spread.first()).round(3))

# %%
fig, axes = plt.subplots(1, len(length_encodings), figsize=(4 * len(length_encodings), 3.8), sharey=True,
                         squeeze=False)
len_colours = dict(zip(sorted(train_lengths), plt.get_cmap("viridis")(np.linspace(0.1, 0.85, len(train_lengths)))))
for ax, enc in zip(axes[0], length_encodings):
    c = collapse[collapse.encoding == enc]
    for Lk, g in c.groupby("train_length"):
        g = g.sort_values("multiplier")
        ax.plot(g.multiplier, g.ratio, "o-", color=len_colours[int(Lk)], label=f"L = {int(Lk)}")
    if not len(c):
        ax.text(0.5, 0.5, "no model passed its gate", transform=ax.transAxes, ha="center", va="center")
    ax.set_xscale("log", base=2)
    ax.set_xticks(length_multipliers, [f"{m:g}x" for m in length_multipliers])
    ax.set_title(enc, color=color_for(enc))
    ax.set_xlabel("evaluation length / L")
axes[0][0].set_ylabel("perplexity / perplexity at 1x")
handles = [plt.Line2D([], [], color=len_colours[Lk], marker="o", label=f"L = {Lk}") for Lk in sorted(train_lengths)]
fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
fig.tight_layout()
savefig(fig, "length_collapse", notebook=NOTEBOOK,
        caption=f"Perplexity ratio to 1x vs evaluation length in multiples of L, one panel per encoding, one line per training length (same tokens per model), passing models only ({profile} profile).")
plt.show()

# %% [markdown]
# ## What holds here

# %%
def _fmt_limit(x: float) -> str:
    return "none" if not np.isfinite(x) else f"{x:.2f}x"


lines = []
for r in check.itertuples():
    verdict = ("no model passed its gate" if pd.isna(r.consistent) else
               ("consistent" if r.consistent else "not consistent"))
    worse = "never" if not np.isfinite(r.first_worse_x) else f"from {r.first_worse_x:g}x"
    lines.append(f"| {r.variant} | {_fmt_limit(r.predicted_limit_x)} | {r.ppl_1x:.2f} | {worse} | "
                 f"{r.ppl_ratio_max:.2f} | {verdict}{' — ' + r.note if r.note else ''} |")
n_ok = int(check.consistent.fillna(False).astype(bool).sum())
n_judged = int(check.consistent.notna().sum())
ranked = check.dropna(subset=["consistent"])
rho = ranked[["predicted_limit_x", "ppl_ratio_max"]].replace(np.inf, 1e9).corr(method="spearman").iloc[0, 1] if len(ranked) > 2 else math.nan
display(Markdown(
    f"**Liu et al.'s bound on trained models: consistent for {n_ok} of {n_judged} variants** (head dimension "
    f"{HEAD_DIM}, L = {L}, {len(variant_seeds)} seeds per variant). Rank correlation between the predicted bound "
    f"and the largest perplexity ratio up to {max(multipliers):g}x: {rho:.2f} (a working bound gives a negative "
    "value: a longer bound, less degradation).\n\n"
    "| variant | predicted bound | ppl at 1x | worse | max ratio | verdict |\n|---|---|---|---|---|---|\n"
    + "\n".join(lines)))
M_MAX, A_MAX = max(multipliers), max(attention_multipliers)
ratio_at_max = {r.variant: r.ppl_ratio_max for r in check.itertuples() if np.isfinite(r.ppl_ratio_max)}
facts = []
if ratio_at_max:
    mild = min(ratio_at_max, key=ratio_at_max.get)
    facts.append(f"The mildest variant is **{mild}** (largest perplexity ratio {ratio_at_max[mild]:.2f} up to "
                 f"{M_MAX:g}x); the base model base_1e4 reaches {ratio_at_max.get('base_1e4', math.nan):.2f}.")
    unbounded = [v for v in ratio_at_max if not np.isfinite(pred.loc[v, "predicted_limit_x"])]
    if unbounded and "base_1e4" in ratio_at_max:
        facts.append("Variants with no predicted bound (every rotated pair turns within L): " + ", ".join(
            f"{v} {ratio_at_max[v]:.2f}" for v in unbounded) + f", against {ratio_at_max['base_1e4']:.2f} for base_1e4 — "
            + ("all milder, as predicted, " if all(ratio_at_max[v] < ratio_at_max["base_1e4"] for v in unbounded)
               else "not all milder, against the prediction, ")
            + "but none flat: turning pairs alone do not make a model length-invariant.")
far_a = by_enc[np.isclose(by_enc.multiplier, A_MAX)].set_index("encoding")
if len(far_a):
    facts.append(f"At {A_MAX:g}x the last L queries of the language models put {far_a.far_mass.min():.2f} "
                 f"({far_a.far_mass.idxmin()}) to {far_a.far_mass.max():.2f} ({far_a.far_mass.idxmax()}) of their "
                 f"attention on keys at distance >= L; their entropy is {far_a.entropy_ratio.min():.2f}–"
                 f"{far_a.entropy_ratio.max():.2f} of uniform attention's.")
rb = band_summary[(band_summary.encoding == "rope") & np.isclose(band_summary.multiplier, A_MAX)]
rb = rb.pivot(index="band", columns="keys", values="spread") if len(rb) else rb
if len(rb) and {"< L", ">= L"} <= set(rb.columns):
    facts.append(f"In the RoPE base model at {A_MAX:g}x, the score spread across keys at distance >= L versus "
                 "nearer keys: " + ", ".join(f"{b} {rb.loc[b, '>= L']:.2f} vs {rb.loc[b, '< L']:.2f}"
                                            for b in attn_stats.BANDS if b in rb.index) + ".")
if len(best_summary):
    rows = []
    for enc, g in best_summary[best_summary.depth == "1"].groupby("encoding"):
        g = g.set_index("multiplier")
        rows.append(f"{enc} {g.needle_mass.get(1.0, math.nan):.2f} → {g.needle_mass.get(A_MAX, math.nan):.2f} "
                    f"(accuracy {g.accuracy.get(1.0, math.nan):.2f} → {g.accuracy.get(A_MAX, math.nan):.2f})")
    at_far = best_summary[np.isclose(best_summary.multiplier, A_MAX)]
    facts.append(f"Needle right before the query, 1x → {A_MAX:g}x, the retrieval head's attention on the needle: "
                 + "; ".join(rows) + f". At {A_MAX:g}x the head still puts {at_far.needle_mass.min():.2f}–"
                 f"{at_far.needle_mass.max():.2f} of the query's attention on the needle (any depth), while accuracy "
                 "falls: past L the query still attends to the needle (its marker `KEY` and digits; this measure does "
                 "not separate the two), so the accuracy drop comes from what the model reads there, not from failing "
                 "to locate it.")
if len(collapse):
    L_MAX = max(length_multipliers)
    sp = collapse[np.isclose(collapse.multiplier, L_MAX)].drop_duplicates("encoding").set_index("encoding")
    facts.append(f"Across training lengths {', '.join(str(x) for x in train_lengths)}, the spread of the perplexity "
                 f"ratio at {L_MAX:g}x (1 = the curves collapse on the xL axis): " + ", ".join(
                     (f"{e} {r.spread:.2f} over {int(r.n_lengths)} lengths" if np.isfinite(r.spread) else
                      f"{e} — (a passing model at one length only)") for e, r in sp.iterrows()) + ".")
display(Markdown("\n".join(f"- {f}" for f in facts)))

# %%
show_provenance(profile, torch_device, variants=variants, variant_seeds=variant_seeds, multipliers=multipliers,
                attention_multipliers=attention_multipliers, train_lengths=train_lengths, n_passed=len(PASSED),
                elapsed_s=round(time.time() - t_start))
