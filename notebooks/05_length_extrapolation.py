# %% [markdown]
# # 05 — Length extrapolation: trained short, tested long
#
# Every model of notebook 04 (ten positional encodings, several seeds, same size and budget, each with
# its own tuned learning rate) is evaluated at 1×, 1.5×, 2×, 4×, 8× (16× in `full`) its training length
# $L$ — but only the models that **passed their gate** in notebook 04 (they beat an n-gram baseline and
# use their context, or beat the retrieval task's position-blind floor) enter a summary, an ordering or a
# conclusion. Failed models are listed, not averaged in.
#
# * **character LM perplexity** on the whole *test* split, with **non-overlapping** windows (the
#   protocol of the ALiBi paper's Table 1: every window starts from scratch, so on average a token sees
#   only $(L'-1)/2$ tokens of context) and with **sliding** windows of stride $L'/4$ (every scored token
#   after the first window sees at least $3L'/4 + 1$ tokens; ALiBi's Appendix B uses small strides) —
#   the difference is the *early-token effect*;
# * **loss by position** out to the longest length: where, exactly, a model breaks;
# * **passkey retrieval accuracy** by length and by distance between the needle and the query, against
#   the task's position-blind floor;
# * **copy / reverse exact match** by length where the profile trains them (Kazemnejad et al. 2023);
# * **positions removed**: every model evaluated again with its positional encoding switched off
#   (`ropelib.ablation.without_positions`), to see how much each one relies on it.
#
# Perplexities are means over the passing seeds with a 95% Student-t interval; accuracies carry a
# bootstrap interval over seeds and samples that stays in [0, 1] (`ropelib.stats`). At the end our
# orderings are set beside the published ones: the ALiBi paper's Table 1 (sinusoidal ≫ rotary > T5 >
# ALiBi past $L$) and Kazemnejad et al.'s ranking on algorithmic tasks (NoPE ≥ T5 > ALiBi > rotary ≈
# absolute), whose numbers live in `ropelib.published` with their source.
#
# The models come from the run cache (the same `RunSpec`s as notebook 04, `ropelib.protocols`); on a
# cache miss this notebook trains them.

# %% tags=["parameters"]
profile = "default"  # smoke | default | full: also selects the models (ropelib.base_models.SETUPS)
device = "auto"  # auto | cpu | cuda | mps
jobs = 2  # training processes in parallel on a cache miss (one GPU: 1)
cpu_threads = 2  # torch intra-op threads of this process for the evaluations (training workers use one each)
multipliers = [1.0, 1.5, 2.0, 4.0, 8.0]  # evaluation lengths = round(m * L)
eval_tokens = 16384  # sliding windows: scored test tokens per cell (non-overlapping windows score the whole test split)
sliding_stride_fraction = 0.25  # sliding-window stride = fraction x evaluation length (at most 1/4)
position_windows = 64  # loss by position: windows of the longest length
position_bins = 32
retrieval_depths = [0.0, 0.25, 0.5, 0.75, 1.0]  # passkey needle depth (0: first token, 1: just before the query)
retrieval_samples = 32  # sequences per (length, depth) cell
algorithmic_samples = 64  # sequences per length (copy / reverse)
eval_seed = 2024

# %% tags=["injected-parameters"]
# Parameters
algorithmic_samples = 64
device = "auto"
eval_tokens = 16384
jobs = 2
multipliers = [1.0, 1.5, 2.0, 4.0, 8.0]
position_bins = 32
position_windows = 64
profile = "default"
retrieval_samples = 32

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from ropelib import base_models, extrapolation, memo, protocols, published, results, stats
from ropelib.data import make_task
from ropelib.evaluate import algorithmic_accuracy, lengths_for, lm_loss_at_lengths, loss_by_position, retrieval_accuracy, unsupported_reason
from ropelib.model import select_device
from ropelib.plotting import (clipped_band, color_for, legend_outside, log_ticks, plot_accuracy_vs_length,
                              plot_perplexity_vs_length, savefig, set_theme)
from ropelib.provenance import show_provenance

NOTEBOOK = "05_length_extrapolation"
set_theme()
EVAL_VERSION = 1  # bump after changing how this notebook evaluates: it is part of every evaluation-cache key
cached = memo.versioned(EVAL_VERSION)  # evaluations read back while run, parameters, library and version match


pd.set_option("display.precision", 3)
torch_device = select_device(device)
if torch_device.type == "cpu":
    torch.set_num_threads(cpu_threads)
setup = base_models.base_setup(profile)
ENCODINGS = list(setup.encodings)
SEEDS = list(setup.seeds)
LM_TASKS = setup.tasks_of_kind("lm")
RET_TASKS = setup.tasks_of_kind("retrieval")
ALG_TASKS = setup.tasks_of_kind("algorithmic")
t_start = time.time()


def write_table(df: pd.DataFrame, name: str) -> None:
    """Write results/<name>.csv (ropelib.results: columns checked against its schema, written atomically)."""
    results.write_table(df, name, profile)


specs, _ = protocols.tuned_specs(setup, device, jobs=jobs)
runs = base_models.run_specs(specs, jobs=jobs)
n_trained = sum(not r.cached for r in runs.values())
gates = protocols.gate_models(runs, setup)
gate_samples, gate_seed = setup.gate_samples, protocols.GATE_SEED
PASSED = protocols.passed_keys(gates)


def passed(enc: str, task: str, seed: int) -> bool:
    return (enc, task, int(seed)) in PASSED


print(f"profile={profile}, device={torch_device}: {len(runs)} models ({n_trained} trained now), "
      f"multipliers {multipliers}; {len(PASSED)} passed their gate")
failed_gate = gates[~gates.passed.fillna(False).astype(bool) & gates.kind.isin(["lm", "retrieval"])]
if len(failed_gate):
    display(Markdown("**Failed their gate (notebook 04), excluded from every summary below:** " + "; ".join(
        f"{enc}/{task} seeds {', '.join(str(s) for s in g.seed)}" for (enc, task), g in failed_gate.groupby(["encoding", "task"]))))

# %% [markdown]
# ## 1. Character LM: perplexity at longer lengths
#
# Non-overlapping windows score the whole test split at every length (the same text: with a fixed number
# of windows instead, longer windows would cover more and different text, and part of any trend with
# length would be a trend in the text). Sliding windows, which cost $1/f$ times more, score the first
# `eval_tokens` targets of the test split at every length.
#
# `learned` has a position table of exactly $L$ rows: past $L$ it has no position vector at all, so its
# rows are NaN with an explicit reason (never clamped to the last row).

# %%
LM_TASK = protocols.lm_task(setup)
tokens = protocols.split_tokens(specs[(ENCODINGS[0], LM_TASK, SEEDS[0])].task, "test", setup.lm_eval_tokens)
lm = extrapolation.lm_length_grid(runs, setup, PASSED, multipliers, sliding_stride_fraction=sliding_stride_fraction,
                                  sliding_tokens=eval_tokens, device=torch_device.type, cached=cached)
write_table(lm, "05_lm_loss")
lm_ok = lm[lm.passed_gate]  # the models that passed their gate: the only ones summarised
lm_summary = extrapolation.summarise_lm(lm)
write_table(lm_summary, "05_lm_summary")

# positions removed (ropelib.ablation.without_positions), every encoding on every task, at 1x: the language
# models over the test split (non-overlapping), the retrieval models on the gate's sequences (exact match)
abl = extrapolation.positions_removed(runs, setup, gates, device=torch_device.type, cached=cached)
write_table(abl, "05_without_positions")
abl_summary = (abl[abl.passed_gate].assign(change=lambda d: np.where(d.metric == "ppl", d.without_positions / d.as_trained,
                                                                     d.without_positions - d.as_trained))
               .groupby(["task", "metric", "encoding"]).agg(as_trained=("as_trained", "mean"),
                                                             without_positions=("without_positions", "mean"),
                                                             change=("change", "mean"), n_seeds=("seed", "count")))
display(Markdown("**Positions removed at 1x** (passing models; `change`: perplexity ratio for the language model, "
                 "accuracy difference for retrieval):"))
display(abl_summary)
print(f"{(lm.status != 'ok').sum()} of {len(lm)} cells without a value: "
      f"{sorted(set(lm.loc[lm.status != 'ok', 'encoding']))} ({', '.join(sorted(set(lm.loc[lm.status != 'ok', 'status'])))})")


def ppl_table(mode: str) -> pd.DataFrame:
    s = lm_summary[lm_summary["mode"] == mode]
    cell = s.apply(lambda r: "—" if not np.isfinite(r.ppl_mean) else
                   f"{r.ppl_mean:.2f} [{r.ppl_ci_low:.2f}, {r.ppl_ci_high:.2f}]", axis=1)
    t = s.assign(cell=cell).pivot(index="encoding", columns="multiplier", values="cell").loc[ENCODINGS]
    t.columns = [f"{m:g}x" for m in t.columns]
    return t


display(Markdown(f"**Perplexity, non-overlapping windows** (mean over {len(SEEDS)} seeds [95% CI]; L = "
                 f"{setup.task(LM_TASKS[0]).train_length if LM_TASKS else '-'})"))
display(ppl_table("nonoverlap"))
display(Markdown("**Perplexity, sliding windows** (stride = "
                 f"{sliding_stride_fraction:g} x length)"))
display(ppl_table("sliding"))
NGRAM = protocols.ngram_reference(specs[(ENCODINGS[0], LM_TASK, SEEDS[0])].task, "test", max_tokens=setup.lm_eval_tokens,
                                  train_tokens=setup.ngram_train_tokens).set_index("order").perplexity
display(Markdown("Models that failed their gate show —. Reference: Kneser–Ney n-grams fitted on the training split "
                 "score the test split at " + ", ".join(f"{p:.2f} (order {o})" for o, p in NGRAM.items()) + "."))

# %%
# ropelib.plotting.plot_perplexity_vs_length: one legend outside the panels, plain-number log ticks, bands >= 1
fig = plot_perplexity_vs_length(lm_summary, published.alibi_table(), NGRAM, encodings=ENCODINGS, multipliers=multipliers)
savefig(fig, "perplexity_vs_length", notebook=NOTEBOOK,
        caption=f"Character-LM test perplexity vs evaluation length (multiples of L) for the encodings whose models passed their gate, non-overlapping and sliding windows (stride L'/4), seed means with 95% CI bands, dashed: 3- and 4-gram baselines; right: the ALiBi paper's Table 1 ({profile} profile).")
plt.show()

# %% [markdown]
# ## 2. Loss by position inside one long window
#
# Mean loss at each position of non-overlapping windows of the longest evaluation length (`position_windows`
# windows of the test split, binned). Left of the dotted line the model is inside its training length;
# right of it every position is new.

# %%
pos_rows = []
for task in LM_TASKS:
    L = setup.task(task).train_length
    P = int(round(max(multipliers) * L))
    edges = np.linspace(0, P, position_bins + 1).round().astype(int)
    for enc in ENCODINGS:
        for seed in SEEDS:
            model = runs[(enc, task, seed)].model
            if unsupported_reason(model, P) is not None:
                continue  # learned positions: no vector past the table
            curve = cached("05_loss_by_position", {"run": runs[(enc, task, seed)].hash, "device": torch_device.type,
                                                   "length": P, "windows": position_windows},
                           lambda: loss_by_position(model, tokens, P, max_windows=position_windows))  # (P,)
            for lo, hi in zip(edges[:-1], edges[1:]):
                pos_rows.append({"encoding": enc, "seed": seed, "passed_gate": passed(enc, task, seed), "length": P,
                                 "position_lo": int(lo),
                                 "position_hi": int(hi), "loss": float(curve[lo:hi].mean())})
pos = pd.DataFrame(pos_rows)
write_table(pos, "05_loss_by_position")

late_vs_all = pd.Series(dtype=float)
if len(pos):
    pos_summary = stats.aggregate_seeds(pos[pos.passed_gate], ["encoding", "position_lo", "position_hi"], "loss")
    L = setup.task(LM_TASKS[0]).train_length
    # inside the training length a causal model sees in a long window exactly what it sees in a window of L
    inside = pos_summary[pos_summary.position_hi <= L]
    late_vs_all = (inside[inside.position_lo >= (1 - sliding_stride_fraction) * L].groupby("encoding")["mean"].mean()
                   - inside.groupby("encoding")["mean"].mean())
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    for enc in [e for e in ENCODINGS if e in set(pos_summary.encoding)]:
        s = pos_summary[pos_summary.encoding == enc]
        mid = (s.position_lo + s.position_hi) / 2
        ax.plot(mid, s["mean"], color=color_for(enc), label=enc, linewidth=1.3)
        clipped_band(ax, mid, s.ci_low, s.ci_high, color=color_for(enc), lower=0.0)  # a loss is >= 0
    ax.axvline(L, color="0.4", linestyle=":", linewidth=1)
    ax.text(L, ax.get_ylim()[1], " training length", va="top", fontsize=8, color="0.3")
    ax.set_yscale("log")
    log_ticks(ax.yaxis)
    ax.set_xlabel("position in the window")
    ax.set_ylabel("loss (nats / char)")
    ax.set_title(f"Loss by position, windows of {int(max(multipliers) * L)} tokens (passing models)")
    legend_outside(fig, title="encoding")
    savefig(fig, "loss_by_position", notebook=NOTEBOOK,
            caption=f"Character-LM test loss by position inside windows of {max(multipliers):g}x the training length, models that passed their gate (seed means, 95% CI bands); the dotted line is the training length.")
    plt.show()

# %% [markdown]
# ## 3. Passkey retrieval by length and distance
#
# Exact match of the digits after the query, `retrieval_samples` sequences per (length, depth) cell.
# The distance is the number of tokens between the needle's last digit and the query. The dashed line
# is the task's position-blind floor: the best exact match of a predictor that knows which tokens
# occurred but not their order (`PasskeyTask.position_blind_floor`, $1/k!$ for $k$ distinct digits).

# %%
ret = extrapolation.retrieval_grid(runs, setup, PASSED, multipliers, retrieval_depths, n_samples=retrieval_samples,
                                   seed=eval_seed, device=torch_device.type, cached=cached)
write_table(ret, "05_retrieval")
FLOOR = ret.groupby("task").floor.first().to_dict() if len(ret) else {}

# %% [markdown]
# ## 4. Copy and reverse (Kazemnejad et al.)

# %%
alg_rows = []
for task in ALG_TASKS:
    L = setup.task(task).train_length
    task_obj = make_task(specs[(ENCODINGS[0], task, SEEDS[0])].task)
    for enc in ENCODINGS:
        for seed in SEEDS:
            r = runs[(enc, task, seed)]
            df = cached("05_algorithmic", {"run": r.hash, "device": torch_device.type,
                                           "lengths": lengths_for(L, multipliers), "samples": algorithmic_samples,
                                           "seed": eval_seed},
                        lambda: algorithmic_accuracy(r.model, task_obj, lengths_for(L, multipliers),
                                                     n_samples=algorithmic_samples, seed=eval_seed))
            alg_rows.append(df.assign(encoding=enc, task=task, seed=seed, run_hash=r.hash[:16], train_length=L,
                                      multiplier=df.length / L, passed_gate=True))
alg_cols = ["encoding", "task", "seed", "run_hash", "passed_gate", "train_length", "length", "multiplier", "n",
            "accuracy", "token_accuracy", "n_correct", "n_samples", "status", "reason"]
alg = pd.concat(alg_rows, ignore_index=True)[alg_cols] if alg_rows else pd.DataFrame(columns=alg_cols)
write_table(alg, "05_algorithmic")
if not ALG_TASKS:
    print(f"The {profile} profile trains no copy/reverse models (budget: see ropelib.base_models.SETUPS); "
          f"the Kazemnejad comparison below uses {', '.join(RET_TASKS)} accuracy instead.")

# %%
# per seed: exact-match counts pooled over depths (retrieval) or instance lengths (algorithmic); summary over
# the passing seeds with an interval that stays in [0, 1] (ropelib.stats.accuracy_ci)
acc_seed, acc_summary = extrapolation.accuracy_summary([ret, alg], FLOOR, seed=eval_seed)
write_table(acc_summary, "05_accuracy_summary")

acc_tasks = RET_TASKS + ALG_TASKS
# ropelib.plotting.plot_accuracy_vs_length: small multiples (one panel per encoding, bands clipped to [0, 1]) and,
# for the first retrieval task, exact match by needle distance at the longest length
fig = plot_accuracy_vs_length(acc_summary, encodings=ENCODINGS, tasks=acc_tasks, multipliers=multipliers, floors=FLOOR,
                              train_lengths={t: setup.task(t).train_length for t in acc_tasks}, retrieval=ret,
                              distance_task=RET_TASKS[0] if RET_TASKS else None)
savefig(fig, "accuracy_vs_length", notebook=NOTEBOOK,
        caption="Retrieval (and copy/reverse where trained) exact match vs evaluation length for the models that passed their gate, one panel per encoding (the others in grey), seed means with 95% bootstrap bands (in [0, 1]), dashed: the position-blind floor; right: passkey accuracy by needle distance at the longest length.")
plt.show()

# %% [markdown]
# ## 5. Beside the published orderings
#
# Each published ranking is split into pairwise claims "A beats B". We check each against our seed
# means at the nearest length ratio (ALiBi's 1012/2512/5512/15512 tokens over 512 map to our 2×, 4×,
# 8×, 16×; Kazemnejad's test lengths up to 2× the training ones map to our 2×). A claim counts as
# *reproduced* when our means are in the published order; "significant" means the two 95% intervals do
# not overlap. The Kazemnejad claims are about algorithmic tasks; where the profile trains none, they
# are checked on passkey retrieval, which is a different task (noted in the table).

# %%
claims = published.published_orderings()
alibi_claims = claims[claims.source == "alibi_table1"]
alibi_ratio_claims = published.published_orderings(relative=True).query("source == 'alibi_table1'")
kaz_claims = claims[claims.source == "kazemnejad2023"]
# per seed: perplexity relative to the same model's perplexity at 1x (same protocol)
at_1x = lm_ok[lm_ok.multiplier == 1.0].set_index(["encoding", "seed", "mode"]).ppl.rename("ppl_1x")
lm_ratio = lm_ok.join(at_1x, on=["encoding", "seed", "mode"]).assign(ratio=lambda d: d.ppl / d.ppl_1x)
ratio_summary = stats.aggregate_seeds(lm_ratio, ["encoding", "multiplier", "mode"], "ratio")
tables = []
for mode in ("nonoverlap", "sliding"):
    ours = (lm_summary[lm_summary["mode"] == mode]
            .rename(columns={"ppl_mean": "mean", "ppl_ci_low": "ci_low", "ppl_ci_high": "ci_high"}))
    tables.append(stats.ordering_table(alibi_claims, ours[ours.multiplier > 1], metric=f"ppl_{mode}", lower_is_better=True))
    ours_r = ratio_summary[(ratio_summary["mode"] == mode) & (ratio_summary.multiplier > 1)]
    tables.append(stats.ordering_table(alibi_ratio_claims, ours_r, metric=f"ppl_ratio_{mode}", lower_is_better=True))
kaz_task = ALG_TASKS if ALG_TASKS else RET_TASKS
kaz_seed = (acc_seed[acc_seed.task.isin(kaz_task) & acc_seed.passed_gate.astype(bool)]
            .groupby(["encoding", "seed", "multiplier"], as_index=False).accuracy.mean())
kaz_ours = stats.aggregate_seeds(kaz_seed, ["encoding", "multiplier"], "accuracy")
kaz_ours = kaz_ours[kaz_ours.multiplier > 1]
kaz = stats.ordering_table(kaz_claims, kaz_ours, metric="accuracy", lower_is_better=False)
kaz["note"] = kaz["note"] + f"; measured on {'+'.join(kaz_task)}"
orderings = pd.concat(tables + [kaz], ignore_index=True)
# a side with no passing model is not a result: say so instead of "no value"
lm_failed = {e for e in ENCODINGS if LM_TASKS and not any(passed(e, LM_TASKS[0], sd) for sd in SEEDS)}
acc_failed = {e for e in ENCODINGS if kaz_task and not any(passed(e, kaz_task[0], sd) for sd in SEEDS)}
orderings["reproduced"] = orderings["reproduced"].astype(object)  # True / False / NaN (not testable)
for i, r in orderings.iterrows():
    gone = sorted({r.better, r.worse} & (acc_failed if r.metric == "accuracy" else lm_failed))
    if gone:
        orderings.loc[i, ["reproduced", "note"]] = [np.nan, f"not testable: {', '.join(gone)} failed the gate"]
write_table(orderings, "05_orderings")

show = orderings.assign(
    ours=lambda d: d.apply(lambda r: f"{r.better_value:.3g} vs {r.worse_value:.3g}", axis=1),
    published=lambda d: d.apply(lambda r: f"{r.published_better:.3g} vs {r.published_worse:.3g}", axis=1),
)[["source", "metric", "multiplier", "comparison", "ours", "published", "reproduced", "note"]]
show

# %%
judged = orderings.dropna(subset=["reproduced"]).assign(
    reproduced=lambda d: d.reproduced.astype(bool), significant=lambda d: d.note.str.startswith("significant"))
rep = judged.groupby(["source", "metric"], sort=False).apply(
    lambda g: pd.Series({"claims": len(g), "reproduced": int(g.reproduced.sum()),
                         "reproduced, CIs apart": int((g.reproduced & g.significant).sum()),
                         "contradicted, CIs apart": int((~g.reproduced & g.significant).sum())}),
    include_groups=False)
rep

# %% [markdown]
# ## 6. The early-token effect
#
# Under non-overlapping evaluation a longer window means *more context per token on average*: the
# first tokens of each window, which see almost nothing, are a smaller share. An encoding that merely
# tolerates longer inputs therefore looks like it *improves* past $L$. Sliding windows remove that
# effect (every scored token after the first window has at least $1 - f$ of the window as context,
# here `sliding_stride_fraction` $f$).
# The table shows perplexity at each length divided by the value at 1×, under both protocols.

# %%
ratio = lm_summary.pivot_table(index=["encoding", "mode"], columns="multiplier", values="ppl_mean", dropna=False)
ratio = ratio.div(ratio[1.0], axis=0)
ratio.columns = [f"{m:g}x" for m in ratio.columns]
ratio = ratio.reindex([(e, m) for e in ENCODINGS for m in ("nonoverlap", "sliding")])
ratio

# %%
early = lm_summary[lm_summary.multiplier == 1.0].pivot(index="encoding", columns="mode", values="ppl_mean").loc[ENCODINGS]
early["nonoverlap / sliding at 1x"] = early["nonoverlap"] / early["sliding"]
early

# %% [markdown]
# ## What this shows

# %%
lines = []
for (enc, task), g in failed_gate.groupby(["encoding", "task"]):
    lines.append(f"* Failed its gate, so not a result here: {enc} on {task} ({len(g)} of {len(SEEDS)} seeds; "
                 f"{g.reason.iloc[0].split(':')[0]}, ...).")
if LM_TASKS and not lm_summary.ppl_mean.notna().any():
    lines.append(f"* No {LM_TASKS[0]} model passed its gate: there is no length-extrapolation result for the language model.")
elif LM_TASKS:
    L = setup.task(LM_TASKS[0]).train_length
    top = max(multipliers)
    non = lm_summary[lm_summary["mode"] == "nonoverlap"].set_index(["encoding", "multiplier"])
    sl = lm_summary[lm_summary["mode"] == "sliding"].set_index(["encoding", "multiplier"])
    at_top = non.xs(top, level="multiplier").ppl_mean.dropna().sort_values()
    lines.append(
        f"* Character LM at {top:g}x the training length ({int(top * L)} tokens, non-overlapping): best "
        f"{at_top.index[0]} (perplexity {at_top.iloc[0]:.2f}), worst {at_top.index[-1]} ({at_top.iloc[-1]:.2f}); "
        f"order: {' < '.join(f'{e} {v:.2f}' for e, v in at_top.items())}.")
    r_top = (non.xs(top, level="multiplier").ppl_mean / non.xs(1.0, level="multiplier").ppl_mean).dropna()
    flat = [e for e, v in r_top.items() if v <= 1.1]
    lines.append(
        f"* Perplexity at {top:g}x relative to 1x (non-overlapping): within 10% for {', '.join(flat) or 'none'}; "
        f"largest rise {r_top.idxmax()} ({r_top.max():.2f}x). Learned positions cannot be evaluated past 1x at all.")
    for enc in [e for e in ("alibi", "t5", "rope", "sinusoidal") if e in ENCODINGS and np.isfinite(non.loc[(e, 1.0), "ppl_mean"])
                and 2.0 in multipliers]:
        a, b = non.loc[(enc, 2.0), "ppl_mean"], sl.loc[(enc, 2.0), "ppl_mean"]
        a1, b1 = non.loc[(enc, 1.0), "ppl_mean"], sl.loc[(enc, 1.0), "ppl_mean"]
        lines.append(f"* {enc}: 2x/1x perplexity {a / a1:.3f} non-overlapping vs {b / b1:.3f} sliding.")
    e1 = early["nonoverlap / sliding at 1x"]
    helped, hurt = list(e1[e1 > 1].index), list(e1[e1 < 1].index)
    lines.append(
        f"* Early-token effect at 1x: non-overlapping / sliding perplexity {e1.min():.3f}–{e1.max():.3f}. Sliding "
        f"windows (more context per scored token) are better for {', '.join(helped) or 'none'} — the expected "
        f"effect — and worse for {', '.join(hurt) or 'none'}.")
    if hurt and len(pos):
        late = late_vs_all.reindex(hurt).dropna()
        diffs = ", ".join(f"{e} {v:+.3f}" for e, v in late.items())
        if len(late) and (late > 0).all():
            lines.append(
                f"  For the latter, the positions that sliding windows score at 1x (the last "
                f"{sliding_stride_fraction:.0%} of the training window) have a higher loss than the window's "
                f"average (difference {diffs} nats/char, loss-by-position data): they use long context poorly even "
                f"inside the training length, so scoring only late positions (sliding) costs more than the "
                f"early-token effect saves.")
        else:
            lines.append(
                f"  The loss-by-position data (last {sliding_stride_fraction:.0%} of the training window minus its average: {diffs} "
                f"nats/char) do not explain this for all of them.")
for task in RET_TASKS:
    s = acc_summary[acc_summary.task == task].set_index(["encoding", "multiplier"])["mean"]
    m2 = 2.0 if 2.0 in multipliers else max(multipliers)
    kept = [e for e in ENCODINGS if s.get((e, m2), np.nan) >= 0.5 * s.get((e, 1.0), np.nan) and s.get((e, 1.0), 0) > 0.5]
    lines.append(
        f"* {task}: accuracy at 1x / {m2:g}x / {max(multipliers):g}x — "
        + "; ".join(f"{e} {s.get((e, 1.0), np.nan):.2f}/{s.get((e, m2), np.nan):.2f}/{s.get((e, max(multipliers)), np.nan):.2f}"
                    for e in ENCODINGS)
        + f". Keeping at least half their 1x accuracy at {m2:g}x (with > 50% at 1x): {', '.join(kept) or 'none'}.")
if not ALG_TASKS and RET_TASKS:
    id_acc = acc_summary[(acc_summary.task == RET_TASKS[0]) & (acc_summary.multiplier == 1.0)].set_index("encoding")["mean"]
    lines.append(
        f"* The Kazemnejad ranking is checked on {RET_TASKS[0]}, not on their algorithmic tasks, and our models are not "
        f"all near-perfect in distribution as theirs were: 1x accuracy ranges from {id_acc.min():.2f} "
        f"({id_acc.idxmin()}) to {id_acc.max():.2f} ({id_acc.idxmax()}), so accuracy at 2x mostly restates "
        f"in-distribution skill. That comparison is weak evidence either way.")
for (source, metric), row in rep.iterrows():
    lines.append(f"* {source} ({metric}): {row.reproduced} of {row.claims} pairwise orderings reproduced "
                 f"({row['reproduced, CIs apart']} with the two 95% CIs apart); {row['contradicted, CIs apart']} "
                 f"contradicted with the CIs apart.")
failed = judged[(judged.source == "alibi_table1") & ~judged.reproduced]
if len(failed):
    lines.append("* ALiBi-paper orderings not reproduced: " + "; ".join(
        f"{r.comparison} at {r.multiplier:g}x ({r.metric}: {r.better_value:.3g} vs {r.worse_value:.3g}, {r.note})"
        for r in failed.itertuples()) + ".")
id_ppl = lm_summary[(lm_summary.multiplier == 1.0) & (lm_summary["mode"] == "nonoverlap")].set_index("encoding").ppl_mean
if {"t5", "rope"} <= set(ENCODINGS) and LM_TASKS and np.isfinite(id_ppl.get("t5", np.nan)) and np.isfinite(id_ppl.get("rope", np.nan)):
    lines.append(
        f"* Much of the absolute-perplexity disagreement is in-distribution quality, not extrapolation: at 1x "
        f"T5 has perplexity {id_ppl['t5']:.2f} against RoPE's {id_ppl['rope']:.2f} (the ALiBi paper's four models "
        f"were within {max(published.ALIBI_TABLE1[512].values()) - min(published.ALIBI_TABLE1[512].values()):.2f} "
        f"of each other at L), which is why the orderings are also checked on perplexity relative "
        f"to 1x (ppl_ratio rows).")
if len(abl_summary):
    for (task, metric), g in abl_summary.groupby(level=["task", "metric"]):
        g = g.droplevel(["task", "metric"])
        if metric == "ppl":
            lines.append(f"* Positions removed at 1x ({task}, perplexity as trained -> without positions): "
                         + ", ".join(f"{e} {r.as_trained:.2f} -> {r.without_positions:.2f} (x{r.change:.2f})" for e, r in g.iterrows())
                         + ". A small ratio means the model barely reads its positional encoding.")
        else:
            lines.append(f"* Positions removed at 1x ({task}, exact match as trained -> without positions; floor "
                         f"{FLOOR.get(task, np.nan):.3f}): "
                         + ", ".join(f"{e} {r.as_trained:.2f} -> {r.without_positions:.2f}" for e, r in g.iterrows()) + ".")
if {"sinusoidal", "nope"} <= set(ENCODINGS) and LM_TASKS:
    sr = ratio_summary[(ratio_summary.encoding == "sinusoidal") & (ratio_summary["mode"] == "nonoverlap")].set_index("multiplier")["mean"]
    pub_sr = published.ALIBI_TABLE1[2512]["sinusoidal"] / published.ALIBI_TABLE1[512]["sinusoidal"]
    top = max(multipliers)
    if sr.get(top, np.nan) < 1.5:
        lines.append(f"* Sinusoidal does not blow up with length here (perplexity x{sr.get(top, np.nan):.2f} at {top:g}x; "
                     f"the ALiBi paper: x{pub_sr:.1f} at about 5x), contradicting Table 1.")
    elif not len(sr):
        lines.append("* The ALiBi paper's sinusoidal blow-up cannot be tested here: no sinusoidal model passed its gate.")
lines.append(f"* Evaluation took {time.time() - t_start:.0f} s in this execution ({torch_device.type}).")
display(Markdown("\n".join(lines)))

# %%
show_provenance(profile, torch_device, multipliers=multipliers, eval_tokens=eval_tokens,
                sliding_stride_fraction=sliding_stride_fraction, retrieval_samples=retrieval_samples,
                n_passed=len(PASSED));
