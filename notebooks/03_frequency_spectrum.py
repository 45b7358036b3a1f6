# %% [markdown]
# # 03 — The frequency spectrum, and why RoPE fails past its training length
#
# RoPE turns pair $i$ of a query or key by the angle $m\,\theta_i$, with $\theta_i = b^{-2i/d}$
# (Su et al. 2021, arXiv 2104.09864, §3.2). Each pair is a clock with its own period, the
# wavelength $\lambda_i = 2\pi/\theta_i$ tokens. This notebook asks, for the toy model of the
# experiment notebooks and for published models:
#
# 1. which pairs complete a full period within the training length $L$ — and so see every angle in
#    training — and which meet angles past $L$ that they never saw (Liu et al. 2023, arXiv 2310.05209:
#    the *critical dimension*);
# 2. what each context-extension method does to each pair's frequency: Position Interpolation (PI),
#    NTK-aware, dynamic NTK, YaRN, Llama 3, LongRoPE (docs/references.md §3);
# 3. what YaRN's ramp does at tiny-model scale, where its rotation criterion protects almost no pair,
#    and what rescaling the ramp to the model's size would change (notebook 06 measures both on trained
#    models).
#
# Every number below comes from `ropelib.analysis` (closed forms) and `ropelib.rope`
# (the frequencies the models actually use); the tests assert the same checks.

# %% tags=["parameters"]
profile = "default"
device = "auto"
# the toy model of the experiment notebooks
toy_head_dim = 32
toy_base = 10_000.0
toy_length = 128
toy_factor = 4.0  # extension factor the experiments use (128 -> 512)
# the published model used for the per-method chart (a name in ropelib.published_rope)
reference_model = "llama-2-7b"
reference_factor = 16.0  # s = 16: Llama 2 4k -> 64k, as Yarn-Llama-2-7b-64k
# lengths at which dynamic NTK is evaluated, in multiples of the original length
dynamic_multiples = [1.0, 2.0, 4.0, 8.0, 16.0]

# %% tags=["injected-parameters"]
# Parameters
device = "auto"
dynamic_multiples = [1.0, 2.0, 4.0, 8.0, 16.0]
profile = "default"

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from ropelib import analysis, context_extension
from ropelib.plotting import color_for, log_ticks, method_color, method_style, savefig, set_theme
from ropelib.provenance import show_provenance
from ropelib.published_rope import MODEL_CONFIGS, get_model_config
from ropelib.rope_scaling import rope_frequencies

NOTEBOOK = "03_frequency_spectrum"
set_theme()
pd.set_option("display.precision", 4)


def freqs(params: dict, head_dim: int, seq_len: int | None = None) -> np.ndarray:
    """float64 copy of ropelib.rope's frequencies for an HF-style RoPE dict."""
    inv, _ = rope_frequencies(params, head_dim, seq_len=seq_len)
    return torch.as_tensor(inv).double().numpy()


# %% [markdown]
# ## 1. Wavelength of every pair against the training length
#
# A pair whose wavelength is at most $L$ turns through a full circle inside every training
# sequence: any angle it meets later was already seen. A pair with $\lambda_i > L$ only ever
# covered the arc $[0, (L-1)\theta_i]$ in training. Liu et al. count the first kind:
# $d_{\text{extra}} = 2\lceil \tfrac{d}{2}\log_b \tfrac{L}{2\pi}\rceil$ dimensions.

# %%
rows = []
for name, cfg in MODEL_CONFIGS.items():
    d, b, L = cfg.rotary_dim, cfg.rope_theta, cfg.training_length
    lam = analysis.wavelengths(d, b)
    rows.append(
        {
            "model": name,
            "rotary dim d": d,
            "base b": b,
            "training length L": L,
            "pairs": d // 2,
            "pairs with λ ≤ L": int(np.sum(lam <= L)),
            "critical dim (Liu et al.)": analysis.critical_dimension(d, b, L),
            "shortest λ": lam[0],
            "longest λ": lam[-1],
            "source": cfg.source,
        }
    )
spectrum = pd.DataFrame(rows).set_index("model")
spectrum

# %%
llama2 = get_model_config("llama-2-7b")
llama2_dc = analysis.critical_dimension(llama2.rotary_dim, llama2.rope_theta, llama2.training_length)
toy_dc = analysis.critical_dimension(toy_head_dim, toy_base, toy_length)
print(f"Llama 2 (d={llama2.rotary_dim}, b={llama2.rope_theta:g}, L={llama2.training_length}): critical dimension {llama2_dc}")
print(f"toy model (d={toy_head_dim}, b={toy_base:g}, L={toy_length}): critical dimension {toy_dc}")
assert llama2_dc == 92, llama2_dc

# %%
groups: dict[tuple, list[str]] = {}  # models with the same (d, b, L) share one curve
for name, cfg in MODEL_CONFIGS.items():
    groups.setdefault((cfg.rotary_dim, cfg.rope_theta, cfg.training_length), []).append(name)
fig, ax = plt.subplots(figsize=(8, 4.5))
for (d, b, L), names in groups.items():
    lam = analysis.wavelengths(d, b)
    frac = (np.arange(d // 2) + 0.5) / (d // 2)  # pair position as a fraction of the rotated pairs
    label = f"{', '.join(names)} (d={d}, b={b:g}, L={L})"
    ax.plot(frac, lam / L, lw=2.5 if "toy" in names else 1.2, label=label,
            color="black" if "toy" in names else None)
ax.axhline(1.0, color="grey", ls="--", lw=1)
ax.text(0.01, 1.15, "wavelength = training length", color="grey", fontsize=8)
ax.set_yscale("log")
ax.set_xlabel("pair index i / (d/2)")
ax.set_ylabel("wavelength λ_i / training length L")
ax.set_title("Pairs below the dashed line complete a period within the training length")
ax.legend(fontsize=7)
savefig(fig, "wavelength_vs_training_length", notebook=NOTEBOOK,
        caption="Wavelength of every RoPE pair divided by the training length, for the toy model and published configs.")
plt.show()

# %% [markdown]
# ### The angles never seen in training
#
# For a pair with $\lambda_i > L$, training positions $0 \dots L-1$ cover only the arc
# $[0, (L-1)\theta_i]$ of the circle. At a longer length $L'$ the pair reaches angles up to
# $(L'-1)\theta_i$; the share of the circle that is new is what the model has to extrapolate to.

# %%
def unseen_share(head_dim: int, base: float, L: int, L_new: int) -> np.ndarray:
    """Share of the circle pair i reaches at length L_new but never reached in training (length L)."""
    theta = analysis.inv_frequencies(head_dim, base)
    seen = np.minimum((L - 1) * theta, 2 * math.pi)
    reached = np.minimum((L_new - 1) * theta, 2 * math.pi)
    return (reached - seen) / (2 * math.pi)


fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, (label, d, b, L) in zip(
    axes,
    [("toy model", toy_head_dim, toy_base, toy_length),
     ("Llama 2 7B", llama2.rotary_dim, llama2.rope_theta, llama2.training_length)],
):
    for mult in (2, 4, 16):
        ax.plot(np.arange(d // 2), unseen_share(d, b, L, mult * L), marker=".", label=f"at {mult}×L")
    ax.axvline(analysis.critical_dimension(d, b, L) / 2 - 0.5, color="grey", ls="--", lw=1)
    ax.set_title(f"{label} (d={d}, b={b:g}, L={L})")
    ax.set_xlabel("pair index i")
axes[0].set_ylabel("share of the circle first reached past L")
axes[0].legend()
savefig(fig, "unseen_angles", notebook=NOTEBOOK,
        caption="Share of each pair's circle that is first reached beyond the training length; dashed: critical dimension / 2.")
plt.show()

toy_unseen = unseen_share(toy_head_dim, toy_base, toy_length, int(toy_factor * toy_length))
print(f"toy model at {toy_factor:g}×L: {int(np.sum(toy_unseen > 0))} of {toy_head_dim // 2} pairs meet new angles; "
      f"the slowest pair reaches {toy_unseen[-1]:.1%} more of its circle than in training")

# %% [markdown]
# ## 2. What each extension method does to each pair
#
# Every method multiplies pair $i$'s frequency by a factor $\theta_i'/\theta_i$ — read here off
# `ropelib.rope.rope_frequencies` (scaled frequencies divided by the default ones, via
# `ropelib.analysis.pair_scale_factors`), for the same base model and factor $s$:
#
# * **PI** (`linear`, Chen et al. 2023, arXiv 2306.15595): every pair divided by $s$.
# * **NTK-aware** (bloc97; YaRN §3.1): base $b' = b\,s^{d/(d-2)}$ — fast pairs almost unchanged,
#   the slowest divided by exactly $s$.
# * **Dynamic NTK** (`dynamic`): the NTK base recomputed at the current length (below).
# * **YaRN** (`yarn`, Peng et al. 2023, arXiv 2309.00071): pairs that turn more than $\beta_{fast}=32$
#   times within $L$ unchanged, fewer than $\beta_{slow}=1$ times divided by $s$, a linear ramp between.
# * **Llama 3** (`llama3`): by wavelength — $\lambda < L/4$ unchanged, $\lambda > L$ divided by $s$,
#   blended between.

# %%
ref = get_model_config(reference_model)
d_ref, b_ref, L_ref, s = ref.rotary_dim, ref.rope_theta, ref.training_length, reference_factor
# the HF keys of each method: the same records notebook 06 applies to trained models (ropelib.context_extension)
methods = {name: context_extension.method_keys(name, s, L_ref, d_ref, b_ref) for name in ("linear", "ntk", "dynamic", "yarn", "llama3")}
factors = {
    name: analysis.pair_scale_factors(p, d_ref, seq_len=int(s * L_ref) if name == "dynamic" else None)
    for name, p in methods.items()
}
low, high = analysis.yarn_correction_range(d_ref, b_ref, L_ref)
print(f"{reference_model} (d={d_ref}, b={b_ref:g}, L={L_ref}), s={s:g}: YaRN correction range (low, high) = ({low}, {high})")
print(f"NTK-aware base b' = {analysis.ntk_base(b_ref, s, d_ref):,.1f}; for s=2: {analysis.ntk_base(b_ref, 2, d_ref):,.1f}")
if (d_ref, b_ref, L_ref, s) == (128, 10_000.0, 4096, 16.0):
    assert (low, high) == (20, 46)

# %%
fig, ax = plt.subplots(figsize=(8, 4.5))
i = np.arange(d_ref // 2)
for name, f in factors.items():
    label = name if name != "dynamic" else f"dynamic (at {int(s * L_ref):,} tokens)"
    ax.plot(i, f, marker=".", ms=4, color=color_for(name), label=label)
phi3 = get_model_config("phi-3-mini-128k")
ax.plot((np.arange(phi3.rotary_dim // 2) + 0.5) * (d_ref / phi3.rotary_dim) - 0.5,
        1 / np.asarray(phi3.rope_parameters()["long_factor"]), ls=":", color=color_for("longrope"),
        label="longrope (Phi-3-mini-128k long_factor, x rescaled)")
ax.axvspan(low, high, color=color_for("yarn"), alpha=0.15, lw=0)
ax.axvline(llama2_dc / 2 - 0.5, color="grey", ls="--", lw=1)
ax.text(llama2_dc / 2, 0.5, "critical dim / 2", color="grey", fontsize=8)
ax.set_yscale("log")
ax.set_xlabel("pair index i")
ax.set_ylabel("frequency factor θ'_i / θ_i")
ax.set_title(f"Per-pair frequency factor at s = {s:g} ({reference_model}); shaded: YaRN ramp")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: never over a curve
savefig(fig, "per_pair_factors", notebook=NOTEBOOK,
        caption="Per-pair frequency factor of PI, NTK-aware, dynamic NTK, YaRN, Llama 3 (and Phi-3's LongRoPE factors) at one scale factor.")
plt.show()

# %%
table = pd.DataFrame(factors, index=pd.Index(i, name="pair")).iloc[:: max(1, d_ref // 32)]
table

# %% [markdown]
# ### Llama 3.1's split
#
# With Llama 3.1's own settings (b = 500000, factor 8, original length 8192), how many pairs does
# the transform leave alone, blend, and divide?

# %%
l31 = get_model_config("llama-3.1-8b")
p31 = l31.rope_parameters()
split = analysis.llama3_split(l31.rotary_dim, p31["rope_theta"], p31["factor"], p31["low_freq_factor"],
                       p31["high_freq_factor"], p31["original_max_position_embeddings"])
print(f"Llama 3.1 ({l31.source}): {split}")
assert (split["unchanged"], split["blended"], split["divided"]) == (29, 6, 29)

# %% [markdown]
# ### Dynamic NTK: the base as a function of the current length
#
# Dynamic NTK leaves the frequencies alone up to the original length and then raises the base as
# the input grows (HF: $b' = b\,(s\,l/L - (s-1))^{d/(d-2)}$). The same token pair therefore gets
# different angles depending on how long the whole input is (notebook 01 shows the consequence).

# %%
dyn_lengths = [int(m * L_ref) for m in dynamic_multiples]
dyn = pd.DataFrame(
    {
        "length": dyn_lengths,
        "base": [analysis.dynamic_ntk_base(b_ref, s, l, L_ref, d_ref) for l in dyn_lengths],
        "slowest pair factor": [
            analysis.pair_scale_factors(methods["dynamic"], d_ref, seq_len=l)[-1] for l in dyn_lengths
        ],
    }
).set_index("length")
dyn

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
grid = np.unique(np.geomspace(L_ref / 4, s * L_ref * 2, 60).astype(int))
ax.plot(grid, [analysis.dynamic_ntk_base(b_ref, s, l, L_ref, d_ref) for l in grid], color=color_for("dynamic"),
        label=f"dynamic NTK, factor {s:g}")
ax.axhline(analysis.ntk_base(b_ref, s, d_ref), color=color_for("ntk"), ls="--", label=f"static NTK, s={s:g}")
ax.axvline(L_ref, color="grey", lw=1, ls=":")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("current input length l")
ax.set_ylabel("RoPE base b'")
ax.legend()
savefig(fig, "dynamic_ntk_base", notebook=NOTEBOOK,
        caption="Dynamic NTK recomputes the RoPE base from the current input length; static NTK uses one base.")
plt.show()

# %% [markdown]
# ## 3. YaRN at tiny-model scale
#
# YaRN's defaults count *rotations within the original length*: pairs turning more than 32 times
# are kept, fewer than once are interpolated. In the toy model (d = 32, L = 128) the fastest pair
# turns only $128/2\pi \approx 20$ times, so the ramp's lower end clamps to pair 0: the default
# protects almost nothing. `ropelib.analysis.tiny_yarn_params` rescales $\beta_{fast}, \beta_{slow}$
# so that the ramp covers the same *fraction* of the pairs as the defaults do for Llama 2. That keeps
# more fast pairs, but it also leaves pairs that never complete a turn within $L$ partly
# uninterpolated, which YaRN's criterion (counted in rotations, whatever the model's size) exists to
# prevent. Notebook 06 evaluates both on the trained RoPE models (`yarn` with the paper's ramp,
# `yarn_rescaled`) and uses the paper's ramp, which extends better there.

# %%
toy_default = {"rope_type": "yarn", "rope_theta": toy_base, "factor": toy_factor,
               "original_max_position_embeddings": toy_length}
toy_rescaled = analysis.tiny_yarn_params(toy_head_dim, toy_base, toy_length, toy_factor)
rot = analysis.rotations_in_context(toy_head_dim, toy_base, toy_length)
yarn_rows = []
for label, p in [("YaRN defaults (β_fast=32, β_slow=1)", toy_default),
                 (f"rescaled (β_fast={toy_rescaled['beta_fast']:.4g}, β_slow={toy_rescaled['beta_slow']:.4g})", toy_rescaled)]:
    lo, hi = analysis.yarn_correction_range(toy_head_dim, toy_base, toy_length,
                                     p.get("beta_fast", 32.0), p.get("beta_slow", 1.0))
    f = analysis.pair_scale_factors(p, toy_head_dim)
    yarn_rows.append({"ramp": label, "low": lo, "high": hi,
                      "pairs kept (factor 1)": int(np.sum(np.isclose(f, 1.0))),
                      "pairs blended": int(np.sum(~np.isclose(f, 1.0) & ~np.isclose(f, 1 / toy_factor))),
                      "pairs interpolated (1/s)": int(np.sum(np.isclose(f, 1 / toy_factor)))})
yarn_table = pd.DataFrame(yarn_rows).set_index("ramp")
ref_low, ref_high = analysis.yarn_correction_range(128, 10_000.0, 4096, truncate=False)
print(f"Llama 2 reference ramp: pairs {ref_low:.1f} … {ref_high:.1f} of 64 "
      f"= {ref_low / 64:.1%} … {ref_high / 64:.1%} of the pairs")
print(f"toy model: the fastest pair turns {rot[0]:.1f} times in {toy_length} tokens (< 32)")
yarn_table

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
ti = np.arange(toy_head_dim // 2)
# the colours and styles of notebook 06's two YaRN settings: `yarn` (the paper's ramp), `yarn_rescaled` (dashed)
ax.plot(ti, analysis.pair_scale_factors(toy_default, toy_head_dim), marker="o", color=method_color("yarn"),
        ls=method_style("yarn"), label="YaRN defaults (notebook 06: yarn)")
ax.plot(ti, analysis.pair_scale_factors(toy_rescaled, toy_head_dim), marker="s", color=method_color("yarn_rescaled"),
        ls=method_style("yarn_rescaled"), label="YaRN, rescaled ramp (notebook 06: yarn_rescaled)")
ax.plot(ti, analysis.pair_scale_factors({"rope_type": "linear", "rope_theta": toy_base, "factor": toy_factor}, toy_head_dim),
        ls="--", color=color_for("linear"), label="PI")
ax.axvline(toy_dc / 2 - 0.5, color="grey", ls="--", lw=1)
ax.set_yscale("log")
ax.set_xlabel("pair index i (toy model)")
ax.set_ylabel("frequency factor θ'_i / θ_i")
ax.set_title(f"Toy model (d={toy_head_dim}, L={toy_length}), s = {toy_factor:g}")
log_ticks(ax.yaxis)  # plain numbers (0.3, 0.5, 0.7, 1) instead of a mix of 10^0 and 6x10^-1
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
savefig(fig, "tiny_yarn_ramp", notebook=NOTEBOOK,
        caption="At tiny scale YaRN's default ramp keeps almost no pair; the ramp rescaled by pair fraction keeps the same share of pairs as for Llama 2 (dashed; notebook 06 measures both).")
plt.show()

# %% [markdown]
# ## What this shows

# %%
kept_default = int(yarn_table.iloc[0]["pairs kept (factor 1)"])
kept_rescaled = int(yarn_table.iloc[1]["pairs kept (factor 1)"])
display(Markdown(
    f"* Published models: only part of the pairs complete a period within training. In Llama 2, "
    f"{llama2_dc} of {llama2.rotary_dim} dimensions do (critical dimension {llama2_dc}); the other "
    f"{(llama2.rotary_dim - llama2_dc) // 2} pairs meet angles past {llama2.training_length} tokens that "
    f"they never saw.\n"
    f"* The toy model (d={toy_head_dim}, L={toy_length}) has critical dimension {toy_dc}: "
    f"{(toy_head_dim - toy_dc) // 2} of its {toy_head_dim // 2} pairs never complete a period in training.\n"
    f"* At s={s:g} on {reference_model}: PI divides every pair by {s:g}; NTK-aware leaves the fastest pair at "
    f"{factors['ntk'][0]:.3f} and divides the slowest by {1 / factors['ntk'][-1]:.2f}; YaRN keeps pairs "
    f"0–{low} and interpolates from pair {high} on; Llama 3.1's own transform keeps {split['unchanged']}, "
    f"blends {split['blended']} and divides {split['divided']} pairs.\n"
    f"* Dynamic NTK's base grows from {dyn['base'].iloc[0]:,.0f} at {dyn.index[0]:,} tokens to "
    f"{dyn['base'].iloc[-1]:,.0f} at {dyn.index[-1]:,} tokens: scores depend on the input length.\n"
    f"* At tiny scale YaRN's default ramp keeps {kept_default} of {toy_head_dim // 2} pairs unchanged; "
    f"the rescaled ramp (β_fast={toy_rescaled['beta_fast']:.4g}, β_slow={toy_rescaled['beta_slow']:.4g}) keeps "
    f"{kept_rescaled}, the share YaRN's defaults keep for Llama 2, but only by leaving slow pairs partly "
    f"uninterpolated. Which extends a trained model better is measured in notebook 06, not here."
))

# %%
show_provenance(profile, device)
