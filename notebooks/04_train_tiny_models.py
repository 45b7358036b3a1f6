# %% [markdown]
# # 04 — Training tiny models with ten positional encodings
#
# Notebook 05 asks how far past their training length models with different positional encodings
# can go. This notebook trains those models: the same tiny decoder-only transformer, the same data,
# the same optimiser and the same number of steps, with only the positional encoding changed — the
# protocol of the ALiBi paper (Press et al. 2021, arXiv 2108.12409, §4) and of Kazemnejad et al. 2023
# (arXiv 2305.19466, §3):
#
# | label | what it is |
# |---|---|
# | `nope` | no positional information (causal masking only; Haviv et al. 2022, arXiv 2203.16634) |
# | `sinusoidal` | fixed sin/cos table added to the token embeddings, scaled to their size (Vaswani et al. 2017, §3.4–3.5; see §3) |
# | `learned` | trainable table added at the input, exactly as many rows as the training length |
# | `t5` | learned bucketed relative bias (Raffel et al. 2020) |
# | `alibi` | fixed linear distance penalty per head (Press et al. 2021) |
# | `rope` | rotary embedding of q and k (Su et al. 2021, arXiv 2104.09864) |
# | `xpos` | RoPE with an exponential decay (Sun et al. 2022, arXiv 2212.10554) |
# | `kerple` | learned logarithmic kernel bias (Chi et al. 2022, arXiv 2205.09921) |
# | `fire` | learned MLP of a log-normalised distance (Li et al. 2023, arXiv 2310.04418) |
# | `randomized` | RoPE fed sorted random positions from a large range in training (Ruoss et al. 2023, arXiv 2305.16843) |
#
# Two tasks. **Language modelling** of characters on 14 public-domain novels (`books`: about 12M
# characters, split by whole sections so that validation and test text comes from every book and never
# appears in training). **Passkey retrieval**: three digits hidden in filler, reproduced after a query,
# a task whose *position-blind floor* — the best exact match of any predictor that sees only which
# tokens occurred, not their order — is $1/3! = 1/6$. Which models, sizes and step counts each profile
# trains is defined once, in `ropelib.base_models.SETUPS`, so notebooks 05 and 06 load exactly these runs
# from the run cache (`ropelib.runs`) instead of training again.
#
# **Three choices every model shares**, all settled by pilots (their numbers are in the comment above
# `ropelib.base_models.SETUPS`; `benchmarks/pilot_lm.py` reruns it). First, weights start at GPT-2's
# standard deviation carried to our width by the fan-in rule, $0.02\sqrt{768/d_{model}}$
# (`ropelib.model.width_scaled_init_std`: 0.069 at $d_{model} = 64$). GPT-2's own 0.02 was chosen for
# width 768; at width 64 it starts every query–key product about 12× smaller, and with it the models
# whose positions reach attention only through the query and key projections (learned and sinusoidal)
# stayed at bigram level for the whole budget (validation perplexity 10.8 for learned at 1.2M tokens,
# against 5.7 with the scaled init). Second, every language-model window starts with a start token in
# place of its first character (`ModelConfig.bos_token_id`, applied by `ropelib.model.start_windows` in
# training and in every evaluation alike). Without one, NoPE has nothing to count positions from —
# Kazemnejad et al.'s construction of absolute positions in a NoPE model (Theorem 1) attends to the
# start token — and it stayed at bigram level at every init we tried; with one it learns. Every encoding
# gets the same token. Third, the decoder has three layers: with two, NoPE learned but barely used its
# context (its loss fell 0.10 nats from the first eighth of the window to the second half, against the
# gate's 0.15; twice the tokens gave 0.156 at twice the time), with three it reached 0.16–0.19 in the
# pilot at 1.5 times the time. A NoPE model has to infer positions from the causal mask before a later
# layer can use them.
#
# The comparison is only fair if every encoding gets its paper's settings for this training length and
# its own learning rate, and it only means something if the models *learned*. So, in order:
#
# 1. the settings each encoding gets at our training length, with the rule and source of each;
# 2. a learning-rate sweep per encoding, chosen on validation data;
# 3. the base models, trained with their chosen rate; their training curves;
# 4. **the gates**: every model must beat an n-gram baseline fitted on the same training text and use
#    its context (language models), or beat the position-blind floor (retrieval). A model that fails is
#    reported as failed and kept out of every ordering and finding of notebooks 05–07;
# 5. training throughput, and where each model's attention goes.

# %% tags=["parameters"]
profile = "default"  # smoke | default | full: also selects the models (ropelib.base_models.SETUPS)
device = "auto"  # auto | cpu | cuda | mps
jobs = 2  # training processes in parallel (CPU: the core count; one GPU: 1)
cpu_threads = 1  # torch intra-op threads of this process on CPU (more oversubscribes a busy machine)
curve_every = 5  # keep every n-th training step in results/04_training_curves.csv
smooth_steps = 10  # rolling mean of the training loss in the curves figure
eval_threads = 2  # torch threads for the evaluations, after training (nothing else runs then)
eval_windows = 32  # sinusoid-scale check: test windows of 8 x L scored at every length
attention_samples = 8  # sequences for the attention-distance measurement
eval_seed = 12345  # generator seed of the held-out samples (not a training seed)
bench_rounds = 5  # throughput benchmark: interleaved rounds over the encodings (the CI of a speed ratio needs several)
bench_steps = 8  # timed training steps per encoding and round (after one warm-up step)
sinusoid_scales = [1.0]  # extra LM models (seed 0) with other sinusoid scales, besides the base one

# %% tags=["injected-parameters"]
# Parameters
attention_samples = 8
device = "auto"
eval_windows = 32
jobs = 2
profile = "default"

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from ropelib import base_models, memo, protocols, published, results, stats
from ropelib.data import make_task
from ropelib.model import select_device, start_windows
from ropelib.plotting import color_for, palette_for, plot_training_curves, savefig, set_theme
from ropelib.provenance import show_provenance

NOTEBOOK = "04_train_tiny_models"
set_theme()
EVAL_VERSION = 1  # bump after changing how this notebook evaluates: it is part of every evaluation-cache key
cached = memo.versioned(EVAL_VERSION)  # evaluations read back while run, parameters, library and version match


pd.set_option("display.precision", 3)
torch_device = select_device(device)
if torch_device.type == "cpu":
    torch.set_num_threads(cpu_threads)
setup = base_models.base_setup(profile)
ENCODINGS = list(setup.encodings)
TASKS = [t.name for t in setup.tasks]
SEEDS = list(setup.seeds)
LM_TASK = protocols.lm_task(setup)


def write_table(df: pd.DataFrame, name: str) -> None:
    """Write results/<name>.csv (ropelib.results: columns checked against its schema, written atomically)."""
    results.write_table(df, name, profile)


print(f"profile={profile}, device={torch_device}, {len(ENCODINGS)} encodings x {len(TASKS)} tasks x "
      f"{len(SEEDS)} seeds = {len(ENCODINGS) * len(TASKS) * len(SEEDS)} models")
setup.to_frame()

# %% [markdown]
# ## 1. Settings per encoding
#
# Several encodings have settings tied to a length: T5's buckets and their maximum distance, FIRE's
# threshold, xPos' scale base, the range randomized positions are drawn from. Left at the values their
# papers used for 512–2048-token training, they would be wrong for ours (a T5 bucket that no training
# distance reaches, a FIRE threshold that never engages). `base_models.encoding_settings` lists what each encoding
# gets at each training length, the rule that scales it and where the rule comes from; the rows are
# read from the same function that builds the models.

# %%
settings = pd.concat([base_models.encoding_settings(setup, t.train_length).assign(task=t.name, train_length=t.train_length)
                      for t in setup.tasks], ignore_index=True)
settings["value"] = settings["value"].map(lambda v: v if v is None or isinstance(v, (int, float, str)) else str(v))
write_table(settings, "04_settings")
settings[settings.task == LM_TASK].drop(columns=["task"]).set_index(["encoding", "parameter"])

# %% [markdown]
# ## 2. Learning rate, tuned per encoding
#
# One rate for all would favour whichever encoding it happens to suit. For each task with a grid
# (`TaskSetup.lrs`), every encoding trains seed 0 at each rate for `sweep_steps` steps (a shorter run with
# its own warm-up and decay), and the rate with the lowest loss on *validation* data wins (the language
# model: the whole validation split; retrieval: fresh sequences). Everything reported later is on the
# *test* split.

# %%
t0 = time.time()
lrs, sweep = protocols.tune_learning_rates(setup, device, jobs=jobs)
sweep_wall_s = time.time() - t0
write_table(sweep, "04_lr_sweep")
if len(sweep):
    sweep_view = sweep.pivot_table(index=["task", "encoding"], columns="lr", values="val_loss")
    sweep_view["chosen lr"] = [lrs[k] for k in sweep_view.index.map(lambda k: (k[1], k[0]))]
    display(Markdown(f"Validation loss (nats/token) after {int(sweep.steps.iloc[0])} steps, by learning rate "
                     f"({len(sweep)} sweep runs, {sweep_wall_s:.0f} s wall in this execution):"))
    display(sweep_view)
else:
    print("This profile has no learning-rate grid: every encoding uses lr =", setup.lr)

# %% [markdown]
# ## 3. Train (or read back) every model
#
# `base_models.base_specs` builds one `RunSpec` per (encoding, task, seed) with the chosen rate; `base_models.run_specs`
# trains the ones not yet in the run cache, `jobs` at a time. A second execution of this notebook reads
# them all back.

# %%
specs = base_models.base_specs(setup, device, lrs=lrs)
t0 = time.time()
runs = base_models.run_specs(specs, jobs=jobs)
train_wall_s = time.time() - t0
n_trained = sum(not r.cached for r in runs.values())
print(f"{n_trained} models trained and {len(runs) - n_trained} read from the cache in {train_wall_s:.0f} s "
      f"(wall clock, {jobs} parallel job(s))")
if torch_device.type == "cpu":
    torch.set_num_threads(eval_threads)  # training is over: evaluations may use every core

# %%
rows = []
for (enc, task, seed), r in runs.items():
    hist = pd.DataFrame(r.history)
    tail = hist.loss.iloc[-max(1, len(hist) // 10):]
    rows.append({
        "encoding": enc, "task": task, "seed": seed, "run_hash": r.hash[:16],
        "train_length": r.spec.train.seq_len, "steps": r.spec.train.steps, "batch_size": r.spec.train.batch_size,
        "lr": r.spec.train.lr, "tokens": r.spec.train.steps * r.spec.train.batch_size * r.spec.train.seq_len,
        "d_model": r.spec.model.d_model, "n_layers": r.spec.model.n_layers, "n_heads": r.spec.model.n_heads,
        "num_parameters": r.model.num_parameters(), "final_train_loss": float(tail.mean()),
        "train_time_s": float(r.metadata["train_time_s"]), "tokens_per_s": float(hist.tokens_per_s.median()),
        "device": r.metadata["device"], "cached": r.cached,
    })
runs_df = pd.DataFrame(rows)
write_table(runs_df, "04_runs")
total_train_s = runs_df.train_time_s.sum()
print(f"Training time summed over models (measured when each was trained): {total_train_s:.0f} s")
runs_df.pivot_table(index="encoding", columns="task", values="num_parameters", aggfunc="first").loc[ENCODINGS]

# %% [markdown]
# The encodings add almost nothing to the parameter count (T5: a 32×heads table; FIRE: a small MLP;
# learned: a `train_length` × `d_model` table), so differences below come from how position enters,
# not from size.
#
# ## 4. Training curves
#
# Training loss (rolling mean over `smooth_steps` steps) by step; the line is the mean over seeds, the
# band its 95% t-interval (`stats.mean_ci`).

# %%
curves = pd.concat(
    [pd.DataFrame(r.history).assign(encoding=enc, task=task, seed=seed) for (enc, task, seed), r in runs.items()],
    ignore_index=True,
)
if "val_loss" not in curves:
    curves["val_loss"] = np.nan
keep = (curves.step % curve_every == 0) | (curves.step == curves.groupby(["encoding", "task", "seed"]).step.transform("max"))
write_table(curves.loc[keep, ["encoding", "task", "seed", "step", "loss", "val_loss"]], "04_training_curves")

curves["smoothed"] = curves.groupby(["encoding", "task", "seed"]).loss.transform(
    lambda s: s.rolling(smooth_steps, min_periods=1).mean())
band = stats.aggregate_seeds(curves, ["task", "encoding", "step"], "smoothed")

# ropelib.plotting.plot_training_curves: bands clipped at zero loss, one legend outside the panels
fig = plot_training_curves(band, tasks=TASKS, encodings=ENCODINGS,
                           train_lengths={t: setup.task(t).train_length for t in TASKS})
savefig(fig, "training_curves", notebook=NOTEBOOK,
        caption=f"Training loss by step for every encoding and task, mean over {len(SEEDS)} seeds with 95% t-interval bands ({profile} profile).")
plt.show()

# %% [markdown]
# ## 5. The gates: did each model learn its task?
#
# A number from a model that has not learned its task says nothing about its positional encoding. So
# every model is judged first (`ropelib.gates`, thresholds in the setup):
#
# * **language model** — its perplexity at the training length over the whole *test* split
#   (non-overlapping windows) must be below that of an interpolated Kneser–Ney n-gram of order
#   `lm_baseline_order` fitted on the same training split (`ropelib.ngram`; RoPE's is held to
#   `rope_baseline_order`); and it must *use its context*: its mean loss over the first eighth of the
#   window must exceed its mean loss over the last half by at least `context_gain_nats` nats, on the
#   mean over the encoding's seeds. The first eighth (positions $1 \ldots L/8$, i.e. 1–8 characters
#   of context at $L = 64$; position 0, predicted from the start token alone, is left out) is where a
#   model has the least to go on; a model whose loss does not fall as its context grows shows no gain.
# * **retrieval** — the Wilson 95% lower bound of its exact-match accuracy at the training length
#   (`setup.gate_samples` fresh sequences) must be above the task's position-blind floor.
#
# Failed models are listed with their reason and kept out of every summary, ordering and finding that
# follows (05–07 read the same gate table).

# %%
task_objs = {t: make_task(specs[(ENCODINGS[0], t, SEEDS[0])].task) for t in TASKS}
lm_config = specs[(ENCODINGS[0], LM_TASK, SEEDS[0])].task
ngram = pd.concat([protocols.ngram_reference(lm_config, split, max_tokens=setup.lm_eval_tokens, train_tokens=setup.ngram_train_tokens)
                   .assign(task=LM_TASK, split=split) for split in ("validation", "test")], ignore_index=True)
write_table(ngram, "04_ngram")
NGRAM = ngram[ngram.split == "test"].set_index("order").perplexity
info = task_objs[LM_TASK].info()
display(Markdown(
    f"**{LM_TASK}**: {info.get('n_train', 0):,} training, {info.get('n_validation', 0):,} validation and "
    f"{info.get('n_test', 0):,} test characters (SHA-256 `{info.get('sha256', '')[:16]}…`). Kneser–Ney n-gram "
    f"baselines fitted on {int(ngram.n_train_tokens.iloc[0]):,} characters of the training split, test perplexity: "
    + ", ".join(f"order {o}: {p:.2f}" for o, p in NGRAM.items()) + "."))

gates = protocols.gate_models(runs, setup)
write_table(gates, "04_gates")
PASSED = protocols.passed_keys(gates)
gate_view = gates.assign(
    value=lambda d: np.where(d.kind == "lm", d.get("ppl", np.nan), d.get("accuracy", np.nan)),
).pivot_table(index="encoding", columns=["task", "seed"], values="passed", aggfunc="first").loc[ENCODINGS]
n_pass = gates.groupby(["task"]).passed.apply(lambda s: int(s.fillna(False).astype(bool).sum()))
display(Markdown(f"Gate passed (True) per model; {', '.join(f'{t}: {n_pass[t]} of {int((gates.task == t).sum())}' for t in n_pass.index)} passed:"))
display(gate_view)
failed = gates[~gates.passed.fillna(False).astype(bool)]
if len(failed):
    display(Markdown("**Failed, excluded from every summary and finding:**\n\n" + "\n".join(
        f"* {r.encoding} / {r.task} / seed {r.seed}: {r.reason}" for r in failed.itertuples())))

# %%
# per-seed in-distribution quality, the tidy long table, and its summary over seeds (all models, with the
# number that passed): perplexity and loss with a Student-t interval, accuracy with a bootstrap over seeds
# and samples that stays in [0, 1] (ropelib.stats)
quality = []
for r in gates.itertuples():
    if r.kind == "lm":
        vals = {"loss": r.loss, "ppl": r.ppl, "context_gain": r.context_gain_per_seed}
    else:
        vals = {"accuracy": r.accuracy}
    quality += [{"encoding": r.encoding, "task": r.task, "seed": r.seed, "metric": k, "value": float(v),
                 "passed_gate": bool(r.passed)} for k, v in vals.items()]
quality = pd.DataFrame(quality)
write_table(quality, "04_in_distribution")

throughput = runs_df.assign(metric="tokens_per_s", value=runs_df.tokens_per_s)[["encoding", "task", "seed", "metric", "value"]]
summary = stats.aggregate_seeds(pd.concat([quality[quality.metric != "accuracy"], throughput], ignore_index=True),
                            ["encoding", "task", "metric"], "value")
acc_rows = []
for (enc, task), g in gates[gates.kind == "retrieval"].groupby(["encoding", "task"]):
    ci = stats.accuracy_ci([(int(c), int(n)) for c, n in zip(g.correct, g.n)], seed=eval_seed)
    acc_rows.append({"encoding": enc, "task": task, "metric": "accuracy", "n_seeds": ci["n_seeds"],
                     "mean": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]})
summary = pd.concat([summary, pd.DataFrame(acc_rows)], ignore_index=True)
summary["n_passed"] = [sum((e, t, s) in PASSED for s in SEEDS) for e, t in zip(summary.encoding, summary.task)]
write_table(summary, "04_summary")


def fmt(row) -> str:
    return f"{row['mean']:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"


id_table = (summary[summary.metric.isin(["ppl", "context_gain", "accuracy"])]
            .assign(cell=lambda d: d.apply(fmt, axis=1), column=lambda d: d.task + " " + d.metric)
            .pivot(index="encoding", columns="column", values="cell").loc[ENCODINGS])
id_table["passed"] = [", ".join(f"{t} {sum((e, t, s) in PASSED for s in SEEDS)}/{len(SEEDS)}" for t in TASKS)
                      for e in ENCODINGS]
display(Markdown(f"In-distribution quality, all models (mean over {len(SEEDS)} seeds [95% CI]) and how many passed:"))
id_table

# %%
RET_TASKS = setup.tasks_of_kind("retrieval")
panels = [("ppl", LM_TASK), ("context_gain", LM_TASK)] + [("accuracy", t) for t in RET_TASKS]
fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False, layout="constrained")
for ax, (metric, task) in zip(axes[0], panels):
    s = summary[(summary.task == task) & (summary.metric == metric)].set_index("encoding").loc[ENCODINGS]
    ax.bar(ENCODINGS, s["mean"], color=[color_for(e) for e in ENCODINGS],
           yerr=[s["mean"] - s.ci_low, s.ci_high - s["mean"]], capsize=2)
    per_seed = quality[(quality.task == task) & (quality.metric == metric)]
    x = [ENCODINGS.index(e) for e in per_seed.encoding]
    ax.scatter(x, per_seed.value, c=np.where(per_seed.passed_gate, "k", "none"), edgecolors="k", s=10, zorder=3,
               linewidths=0.6)
    if metric == "ppl":
        for order, ls in zip((2, 3, 4, 5), (":", "--", "-.", "-")):
            if order in NGRAM.index:
                ax.axhline(NGRAM[order], color="0.35", linestyle=ls, linewidth=0.9, label=f"{order}-gram {NGRAM[order]:.2f}")
        ax.set_ylabel("test perplexity at L (chars)")
        ax.legend(fontsize=7, loc="upper right")
    elif metric == "context_gain":
        ax.axhline(setup.gates.context_gain_nats, color="0.35", linestyle="--", linewidth=0.9, label="gate")
        ax.set_ylabel("loss first eighth - last half (nats)")
        ax.legend(fontsize=7)
    else:
        floor = gates[gates.task == task].floor.iloc[0]
        ax.axhline(floor, color="0.35", linestyle="--", linewidth=0.9, label=f"position-blind floor {floor:.3f}")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("exact match at L")
        ax.legend(fontsize=7)
    ax.set_title(f"{task}: {metric.replace('_', ' ')}")
    ax.tick_params(axis="x", rotation=60)
savefig(fig, "in_distribution", notebook=NOTEBOOK,
        caption=f"The gates: test perplexity at L against n-gram baselines, context gain against its threshold, retrieval exact match against the position-blind floor (bars: seed mean, 95% CI; filled dots: seeds that passed, open: failed).")
plt.show()

# %% [markdown]
# **Scale of the added encodings.** Absolute encodings are *added* to the token embeddings. In this
# model the token embeddings start at $\mathcal N(0, \sigma^2)$ with $\sigma$ = `setup.init_std` and
# are not multiplied by $\sqrt{d_{model}}$ (Vaswani et al. §3.4 do multiply), while every sinusoidal
# vector has norm $\sqrt{d_{model}/2}$: taken as is, the position vectors would be $1/(\sigma\sqrt 2)$
# times the token vectors (about 10× here) and the first layer would see mostly position. So the base
# models multiply the sinusoids by `setup.sinusoid_scale` $= \sigma\sqrt 2$
# (`base_models.sinusoid_scale_for`), which starts their entries at the RMS of the token embeddings (the balance
# Vaswani et al. keep). The table (`protocols.position_norms`) compares typical vector norms of the
# trained models.
#
# What that choice is worth, and what happens in between: more character models (seed 0, same budget)
# with the sinusoids scaled by each of `sinusoid_scales` (1 = the table as is), evaluated at $L$, $4L$ and
# $8L$ (non-overlapping windows over the same `eval_windows` × 8L test characters at every length)
# beside the base model and NoPE (`protocols.sinusoid_scale_table`, which trains the extra models and
# scores them all). This also tests a reading of notebook
# 05: if a sinusoidal model that *uses* its positions blows up past $L$ (as in the ALiBi paper), the
# flat curve of the base model says more about its scale than about sinusoids.

# %%
# ropelib.protocols.position_norms: median norms of the trained token embeddings and of the added position vectors
norms = protocols.position_norms(runs, SEEDS[0])
display(norms)

scale_check = None
if "sinusoidal" in ENCODINGS:
    # ropelib.protocols.sinusoid_scale_table: the extra scales are trained here (cached like every run), every
    # model scored on the same eval_windows x 8L test characters at L, 4L and 8L
    scale_table = protocols.sinusoid_scale_table(runs, setup, sinusoid_scales, eval_windows=eval_windows, cached=cached)
    write_table(scale_table, "04_sinusoid_scale")
    top_multiplier = int(scale_table.multiplier.max())
    scale_check = scale_table.assign(
        model=lambda d: np.where(d.encoding == "nope", "nope", "sinusoidal x " + d.scale.map("{:.3g}".format))
    ).pivot(index="model", columns="multiplier", values="loss")
    scale_check.columns = [f"test_loss {m:g}x" for m in scale_check.columns]
    scale_check[f"{top_multiplier}x / 1x ppl"] = np.exp(scale_check.iloc[:, -1] - scale_check.iloc[:, 0])
    display(scale_check)

    fig, ax = plt.subplots(figsize=(6.5, 3.6), layout="constrained")
    sc = scale_table[scale_table.encoding == "sinusoidal"]
    for (m, g), shade in zip(sc.groupby("multiplier"), (1.0, 0.7, 0.45)):
        ax.plot(g.scale, g.loss, marker="o", color=color_for("sinusoidal"), alpha=shade, label=f"sinusoidal at {m:g}L")
    if (scale_table.encoding == "nope").any():
        for (m, g), shade in zip(scale_table[scale_table.encoding == "nope"].groupby("multiplier"), (1.0, 0.7, 0.45)):
            ax.axhline(g.loss.iloc[0], color=color_for("nope"), alpha=shade, linestyle=":", label=f"nope at {m:g}L")
    ax.axvline(setup.sinusoid_scale, color="0.5", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("sinusoid scale (vertical line: the base models')")
    ax.set_ylabel("test loss (nats/char)")
    ax.set_title(f"Sinusoidal {LM_TASK} models (seed {SEEDS[0]}) by scale of the added table")
    ax.legend(fontsize=7, ncol=2)
    savefig(fig, "sinusoid_scale", notebook=NOTEBOOK,
            caption=f"Test loss at 1x, 4x and 8x the training length of character models whose sinusoids are scaled by "
                    f"{', '.join(f'{x:.3g}' for x in sorted(sc.scale.unique()))} (seed {SEEDS[0]}; dotted: NoPE).")
    plt.show()

# %% [markdown]
# ## 6. Training throughput
#
# The tokens/s logged while the models trained depend on what else the machine was doing at that
# moment (the `default` reference run shared 2 cores with other work), so they are a poor comparison
# between encodings. Instead a small benchmark (`protocols.training_throughput`) times `bench_steps`
# training steps (forward, backward, AdamW update; batch and length of the first task) of a fresh model
# per encoding, in `bench_rounds` interleaved rounds, so that a busy phase of the machine hits every
# encoding alike; we keep the median round. The timing is cached like an evaluation, keyed by the models,
# these settings and the machine (host, CPU model, core and thread counts): a rerun of the same code on
# the same machine reads it back, any change to the code or the machine times it again. Beside it the
# ALiBi paper's V100 speeds (words/s at L = 512, relative to sinusoidal).

# %%
# ropelib.protocols.training_throughput: one row per (round, encoding), tokens/s of the timed steps
bench_task = TASKS[0]
spec0 = specs[(ENCODINGS[0], bench_task, SEEDS[0])]
bench = protocols.training_throughput(specs, bench_task, SEEDS[0], rounds=bench_rounds, steps=bench_steps,
                                      batch_seed=eval_seed, device=torch_device, cached=cached)
write_table(bench, "04_throughput")

tp = bench.groupby("encoding").tokens_per_s.median().loc[ENCODINGS]
tp_rel = tp / tp.loc["nope"] if "nope" in ENCODINGS else tp / tp.max()
during = summary[summary.metric == "tokens_per_s"].pivot(index="encoding", columns="task", values="mean").loc[ENCODINGS]
pub_speed = pd.Series(published.ALIBI_SPEED)
tp_table = pd.DataFrame({
    "benchmark tokens/s": tp.round(0).astype(int),
    "vs nope": tp_rel.round(2),
    "vs sinusoidal": (tp / tp.loc["sinusoidal"]).round(2) if "sinusoidal" in ENCODINGS else np.nan,
    "published vs sinusoidal": (pub_speed / pub_speed["sinusoidal"]).round(2).reindex(ENCODINGS),
    **{f"during training, {t} (noisy)": during[t].round(0) for t in TASKS},
})
tp_table

# %%
fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
per_round = bench.assign(rel=bench.tokens_per_s / tp.loc["nope"] if "nope" in ENCODINGS else bench.tokens_per_s)
ax.bar(ENCODINGS, tp_rel.loc[ENCODINGS], color=[color_for(e) for e in ENCODINGS])
ax.scatter([ENCODINGS.index(e) for e in per_round.encoding], per_round.rel, color="k", s=6, zorder=3, label="rounds")
ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle=":")
ax.tick_params(axis="x", rotation=60)
ax.set_ylabel("training tokens/s relative to NoPE")
ax.set_title(f"Training throughput ({bench_task}, B={spec0.train.batch_size}, T={spec0.train.seq_len}, {torch_device.type})")
ax.legend(fontsize=8)
savefig(fig, "throughput", notebook=NOTEBOOK,
        caption=f"Training throughput per encoding relative to NoPE: median of {bench_rounds} interleaved benchmark rounds (dots) of {bench_steps} steps on {torch_device.type}.")
plt.show()

# %% [markdown]
# ## 7. Where does attention go?
#
# Mean attention distance of each head: the attention-weighted average of (query position − key
# position), over `attention_samples` sequences of the training length (language model: test windows;
# retrieval: fresh samples; `protocols.attention_inputs`), measured by `protocols.attention_distance_table`
# (`attention_stats.attention_distance` for each model). Uniform causal attention over a window of $L$ tokens gives
# $(L-1)/4$ on average over queries; attending to the current token gives 0.

# %%
# ropelib.protocols.attention_distance_table: one row per (model, layer, head), evaluations cached by run hash
att = protocols.attention_distance_table(runs, setup, n_samples=attention_samples, seed=eval_seed, cached=cached)
write_table(att, "04_attention_distance")

att_model = att.groupby(["encoding", "task", "seed", "layer"], as_index=False).mean_distance.mean()
att_summary = stats.aggregate_seeds(att_model, ["task", "encoding", "layer"], "mean_distance")
n_layers = int(att.layer.max()) + 1
fig, axes = plt.subplots(1, len(TASKS), figsize=(5.2 * len(TASKS), 3.6), squeeze=False, layout="constrained")
for ax, task in zip(axes[0], TASKS):
    L = setup.task(task).train_length
    width = 0.8 / n_layers
    for layer in range(n_layers):
        s = att_summary[(att_summary.task == task) & (att_summary.layer == layer)].set_index("encoding").loc[ENCODINGS]
        ax.bar(np.arange(len(ENCODINGS)) + layer * width, s["mean"], width=width,
               color=[color_for(e) for e in ENCODINGS], alpha=1.0 - 0.5 * layer / max(1, n_layers - 1),
               edgecolor="k", linewidth=0.3)
    ax.axhline((L - 1) / 4, color="0.4", linestyle=":", linewidth=0.8, label="uniform causal attention")
    ax.set_xticks(np.arange(len(ENCODINGS)) + width * (n_layers - 1) / 2, ENCODINGS, rotation=60)
    ax.set_ylabel("mean attention distance (tokens)")
    ax.set_title(f"{task}: layers 0..{n_layers - 1} (darker = earlier)")
    ax.legend(fontsize=7)
savefig(fig, "attention_distance", notebook=NOTEBOOK,
        caption="Mean attention distance per encoding and layer (mean over heads, then seeds), at the training length; dotted: uniform causal attention.")
plt.show()

# %%
map_task = TASKS[0]
L = setup.task(map_task).train_length
# the first of the inputs the distances above were measured on: (1, L)
x = protocols.attention_inputs(specs[(ENCODINGS[0], map_task, SEEDS[0])].task, L, 1, eval_seed, setup.lm_eval_tokens)
ncols = min(5, len(ENCODINGS))
nrows = -(-len(ENCODINGS) // ncols)
fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.4 * nrows), squeeze=False, layout="constrained")
for ax, enc in zip(axes.flat, ENCODINGS):
    with torch.no_grad():
        m = runs[(enc, map_task, SEEDS[0])].model
        _, attn = m(start_windows(m, x).to(torch_device), return_attention=True)
    a = attn[-1][0].mean(0).cpu().numpy()  # (T, T): last layer, mean over heads
    ax.imshow(np.log10(a + 1e-4), cmap="magma", vmin=-4, vmax=0)
    ax.set_title(enc, fontsize=9, color=color_for(enc))
    ax.set_xticks([])
    ax.set_yticks([])
for ax in list(axes.flat)[len(ENCODINGS):]:
    ax.axis("off")
fig.suptitle(f"Last-layer attention (mean over heads, log10), one {map_task} window of {L} tokens; rows = queries", fontsize=9)
savefig(fig, "attention_maps", notebook=NOTEBOOK,
        caption=f"Last-layer attention maps (head mean, log scale) of the seed-{SEEDS[0]} {map_task} model of each encoding on one window of {L} tokens.")
plt.show()

# %% [markdown]
# ## What this shows

# %%
lm_task, ret_task = LM_TASK, (RET_TASKS[0] if RET_TASKS else None)
lines = [f"* {len(runs)} models ({len(ENCODINGS)} encodings x {len(TASKS)} tasks x {len(SEEDS)} seeds), "
         f"{runs_df.num_parameters.min():,}–{runs_df.num_parameters.max():,} parameters each, plus {len(sweep)} "
         f"learning-rate sweep runs; {total_train_s:.0f} s of training summed over the base runs (this execution: "
         f"{n_trained} trained, {train_wall_s:.0f} s wall)."]
if len(sweep):
    chosen = pd.Series({e: lrs[(e, lm_task)] for e in ENCODINGS if (e, lm_task) in lrs})
    lines.append(f"* Learning rates chosen on validation ({lm_task}): "
                 + ", ".join(f"{lr:g} for {', '.join(g.index)}" for lr, g in chosen.groupby(chosen)) + ".")
s_ppl = summary[(summary.task == lm_task) & (summary.metric == "ppl")].set_index("encoding").loc[ENCODINGS]
s_gain = summary[(summary.task == lm_task) & (summary.metric == "context_gain")].set_index("encoding").loc[ENCODINGS]
lm_ok = [e for e in ENCODINGS if all((e, lm_task, s) in PASSED for s in SEEDS)]
lm_bad = [e for e in ENCODINGS if not any((e, lm_task, s) in PASSED for s in SEEDS)]
lines.append(
    f"* {lm_task} at the training length (test split): perplexity from {s_ppl['mean'].min():.2f} "
    f"({s_ppl['mean'].idxmin()}) to {s_ppl['mean'].max():.2f} ({s_ppl['mean'].idxmax()}); the n-gram baselines fitted "
    f"on the same training text score {NGRAM.get(2, np.nan):.2f} (order 2), {NGRAM.get(3, np.nan):.2f} (3), "
    f"{NGRAM.get(4, np.nan):.2f} (4) and {NGRAM.get(5, np.nan):.2f} (5). Every seed passed the gate for "
    f"{', '.join(lm_ok) or 'no encoding'}; no seed passed for {', '.join(lm_bad) or 'none'}"
    + (f" (perplexity {', '.join(e + ' ' + format(s_ppl.loc[e, 'mean'], '.2f') for e in lm_bad)}, "
       f"context gain {', '.join(e + ' ' + format(s_gain.loc[e, 'mean'], '+.3f') for e in lm_bad)} nats); "
       f"every later result about them is reported as failed, not as a finding." if lm_bad else "."))
near = [e for e in lm_bad if s_ppl.loc[e, "mean"] < NGRAM.get(setup.gates.lm_baseline_order, np.nan)]
flat = [e for e in lm_bad if e not in near]
if near:
    lines.append(
        f"* {', '.join(near)}: below the order-{setup.gates.lm_baseline_order} n-gram, so they learned more than "
        f"trigram statistics, but their context gain ({s_gain.loc[near, 'mean'].min():.3f}–{s_gain.loc[near, 'mean'].max():.3f} "
        f"nats, seed means) falls short of the {setup.gates.context_gain_nats:g}-nat gate: they are failed by the "
        f"rule, narrowly. In the pilots (ropelib.base_models.SETUPS) more steps barely raise it: the gain levels "
        f"off near the gate.")
if flat:
    lines.append(f"* {', '.join(flat)}: no better than an n-gram of order {setup.gates.lm_baseline_order} and "
                 f"(almost) no context gain: at this size and budget they did not learn to use their context.")
order4 = NGRAM.get(4, np.nan)
beat4 = [e for e in ENCODINGS if s_ppl.loc[e, "mean"] < order4]
lines.append(f"* Against the order-4 n-gram ({order4:.2f}): " + (f"{', '.join(beat4)} beat it on average."
             if beat4 else f"no encoding beats it at this budget (best {s_ppl['mean'].min():.2f}); "
             f"the profile gates at order {setup.gates.rope_baseline_order} (RoPE) and {setup.gates.lm_baseline_order} (all)."))
if ret_task:
    s = summary[(summary.task == ret_task) & (summary.metric == "accuracy")].set_index("encoding")
    floor = gates[gates.task == ret_task].floor.iloc[0]
    ok = [e for e in ENCODINGS if all((e, ret_task, sd) in PASSED for sd in SEEDS)]
    accs = ", ".join(f"{e} {s.loc[e, 'mean']:.2f}" for e in ENCODINGS)
    lines.append(
        f"* {ret_task} at the training length (exact match; position-blind floor {floor:.3f}): {accs}. Every seed "
        f"above the floor (Wilson 95% lower bound): {', '.join(ok) or 'none'}.")
lines.append(
    f"* Throughput (benchmark, {bench_task}, {torch_device.type}): fastest {tp.idxmax()} ({tp.max():.0f} tokens/s), "
    f"slowest {tp.idxmin()} ({tp.min():.0f} tokens/s, {tp.min() / tp.max():.2f}x the fastest)"
    + (f"; RoPE {tp.loc['rope'] / tp.loc['sinusoidal']:.2f}x and ALiBi {tp.loc['alibi'] / tp.loc['sinusoidal']:.2f}x "
       f"sinusoidal, where the ALiBi paper measured {published.ALIBI_SPEED['rope'] / published.ALIBI_SPEED['sinusoidal']:.2f}x "
       f"and {published.ALIBI_SPEED['alibi'] / published.ALIBI_SPEED['sinusoidal']:.2f}x on a V100 at 512 tokens."
       if {"rope", "alibi", "sinusoidal"} <= set(ENCODINGS) else "."))
if scale_check is not None:
    sn = norms[(norms.encoding == "sinusoidal") & (norms.task == LM_TASK)].iloc[0]
    st = scale_table[scale_table.encoding == "sinusoidal"].pivot(index="scale", columns="multiplier", values="loss")
    top = st.columns.max()
    base_s, unscaled_s = float(setup.sinusoid_scale), 1.0 if 1.0 in st.index else st.index.max()
    nope_l = scale_table[scale_table.encoding == "nope"].set_index("multiplier").loss
    grow = np.exp(st[top] - st[1.0])  # ppl at the longest length / at L
    lines.append(
        f"* Sinusoidal: scaled by {base_s:.3f}, the position vectors (median norm {sn.position_norm:.2f}) end training at "
        f"{sn['position / token']:.2f}x the token embeddings' median norm ({sn.token_norm_trained:.2f}). Test loss "
        f"at L by scale: " + ", ".join(f"{x:.3g}: {st.loc[x, 1.0]:.3f}" for x in st.index)
        + (f" (NoPE {nope_l.get(1.0, np.nan):.3f})" if len(nope_l) else "")
        + f"; perplexity at {top:g}L over L: " + ", ".join(f"{x:.3g}: x{grow[x]:.2f}" for x in st.index)
        + (f" (NoPE x{np.exp(nope_l[top] - nope_l[1.0]):.2f})" if len(nope_l) else "") + ". "
        + (f"The table as is costs {st.loc[unscaled_s, 1.0] - st.loc[base_s, 1.0]:.3f} nats/char at L against the base "
           f"scale, so an unscaled baseline would make absolute positions look far worse than they are. "
           if st.loc[unscaled_s, 1.0] - st.loc[base_s, 1.0] > 0.05 else "")
        + (f"Larger scales grow more past L (largest rise x{grow.max():.2f} at scale {grow.idxmax():.3g}): "
           f"sinusoids that carry more of the signal extrapolate worse, as in the ALiBi paper -- one seed of models "
           f"that would fail the gate themselves (test perplexity at L "
           + ", ".join(f"{x:.3g}: {np.exp(st.loc[x, 1.0]):.2f}" for x in st.index)
           + f", against the order-{setup.gates.lm_baseline_order} n-gram's {NGRAM.get(setup.gates.lm_baseline_order, np.nan):.2f}), "
           f"so a hint, not a finding."
           if grow.max() > 1.2 and grow.idxmax() > base_s else
           f"No scale blows up past L here (largest rise x{grow.max():.2f}; the ALiBi paper's sinusoidal model: "
           f"x{published.ALIBI_TABLE1[2512]['sinusoidal'] / published.ALIBI_TABLE1[512]['sinusoidal']:.1f} at about 5L)."))
am = att_model[att_model.task == TASKS[0]].groupby("encoding").mean_distance.mean()
L0 = setup.task(TASKS[0]).train_length
lines.append(
    f"* Attention distance ({TASKS[0]}, mean over layers and heads): shortest {am.idxmin()} ({am.min():.1f} tokens), "
    f"longest {am.idxmax()} ({am.max():.1f}); uniform causal attention would give {(L0 - 1) / 4:.1f}.")
display(Markdown("\n".join(line for line in lines if line)))

# %%
show_provenance(profile, torch_device, jobs=jobs, eval_windows=eval_windows, gate_samples=setup.gate_samples,
                corpus_sha256=task_objs[LM_TASK].info().get("sha256"));
