# %% [markdown]
# # 01 — The relative-position property
#
# RoPE's central claim (Su et al. 2021, RoFormer, arXiv 2104.09864, §3.2, eq. 16): rotating the
# query at position $m$ by $R_m$ and the key at position $n$ by $R_n$ makes their dot product a
# function of the *difference* $m - n$ only,
#
# $$\langle R_m q,\; R_n k\rangle = q^\top R_m^\top R_n\, k = q^\top R_{n-m}\, k .$$
#
# This notebook derives the identity symbolically, checks it numerically for every RoPE variant in
# `ropelib` and both pair layouts, contrasts it with additive absolute encodings (sinusoidal and
# learned), where it fails, and looks at what context-extension scaling does to it.

# %% tags=["parameters"]
profile = "default"
device = "auto"
head_dim = 32  # the toy model's head dimension
n_heads = 1
length = 64  # positions in each score matrix (heat maps are length x length)
original_length = 32  # "training length" given to the scaling methods (shorter than `length`)
scaling_factor = 4.0
dynamic_lengths = [64, 256]  # input lengths at which dynamic NTK is compared
seed = 0
max_symbolic_dim = 16  # block-diagonal identity checked symbolically for d = 2, 4, ..., this

# %% tags=["injected-parameters"]
# Parameters
device = "auto"
dynamic_lengths = [64, 256]
length = 64
max_symbolic_dim = 16
original_length = 32
profile = "default"

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import sympy as sp
import torch
from IPython.display import Markdown, display

from ropelib import analysis
from ropelib.encodings import make_encoding
from ropelib.encodings.sinusoidal import sinusoidal_table
from ropelib.plotting import color_for, savefig, set_theme
from ropelib.provenance import show_provenance
from ropelib.rope import half_to_interleaved, interleaved_to_half

NOTEBOOK = "01_relative_position"
set_theme()
pd.set_option("display.precision", 3)
torch.manual_seed(seed)
gen = torch.Generator().manual_seed(seed)

# %% [markdown]
# ## 1. The identity, symbolically
#
# ### Two dimensions, in complex form
# Read a pair $(x_1, x_2)$ as the complex number $x_1 + i x_2$. Rotating by the angle $m\theta$ is
# multiplication by $e^{im\theta}$, and the real dot product of two pairs is
# $\mathrm{Re}[a\,\bar b]$. So the score is $\mathrm{Re}[q e^{im\theta}\,\overline{k e^{in\theta}}]$.

# %%
m, n, r = sp.symbols("m n r", real=True)
theta = sp.symbols("theta", positive=True)
q1, q2, k1, k2 = sp.symbols("q1 q2 k1 k2", real=True)
qc, kc = q1 + sp.I * q2, k1 + sp.I * k2

score_2d = sp.re(qc * sp.exp(sp.I * m * theta) * sp.conjugate(kc * sp.exp(sp.I * n * theta)))
relative_2d = sp.re(qc * sp.conjugate(kc) * sp.exp(sp.I * (m - n) * theta))
difference = sp.simplify(sp.expand_complex(score_2d - relative_2d))
print("Re[q e^{imθ} conj(k e^{inθ})] - Re[q conj(k) e^{i(m-n)θ}] simplifies to:", difference)
assert difference == 0
expanded = sp.simplify(sp.expand_complex(relative_2d))
print("score(m, n) =", expanded)
shifted = sp.simplify(expanded.subs(m, n + r))  # write m = n + r
print("with m = n + r:", shifted, "| depends on n:", n in shifted.free_symbols)
assert n not in shifted.free_symbols


# %% [markdown]
# ### Any even $d$: block-diagonal rotations
# In $d$ dimensions RoPE rotates $d/2$ pairs independently, pair $i$ by $m\theta_i$: $R_m$ is block
# diagonal with $2\times2$ blocks $R(m\theta_i)$. Since $R(a)^\top R(b) = R(b-a)$ for each block, the
# product of two block-diagonal matrices is again block diagonal and $R_m^\top R_n = R_{n-m}$.
# sympy checks the $2\times2$ identity in general and the full matrices for $d = 2, 4, \dots$

# %%
def rot(a):
    return sp.Matrix([[sp.cos(a), -sp.sin(a)], [sp.sin(a), sp.cos(a)]])


block_identity = sp.simplify(rot(m * theta).T * rot(n * theta) - rot((n - m) * theta))
print("R(mθ)^T R(nθ) - R((n-m)θ) =", block_identity.tolist())
assert block_identity == sp.zeros(2, 2)

def expand_trig(expr):
    """Expand sin/cos of sums into products, then multiply out: an exact identity becomes 0."""
    return sp.expand(sp.expand_trig(expr))


checked = []
for d in range(2, max_symbolic_dim + 1, 2):
    thetas = sp.symbols(f"theta_0:{d // 2}", positive=True)
    R = lambda pos: sp.diag(*[rot(sp.expand(pos * t)) for t in thetas])  # noqa: E731  (d x d, block diagonal)
    residual = (R(m).T * R(n) - R(n - m)).applyfunc(expand_trig)
    assert residual == sp.zeros(d, d), d
    # the score of arbitrary q, k depends on m - n only: shifting both positions changes nothing
    qv = sp.Matrix(sp.symbols(f"q_0:{d}", real=True))
    kv = sp.Matrix(sp.symbols(f"k_0:{d}", real=True))
    score = ((R(m) * qv).T * (R(n) * kv))[0, 0]
    shift = sp.expand(sp.diff(score, m) + sp.diff(score, n))
    assert shift == 0, d
    checked.append({"d": d, "R_m^T R_n - R_{n-m}": "0" if residual == sp.zeros(d, d) else "≠ 0",
                    "(∂_m + ∂_n) <R_m q, R_n k>": str(shift)})
pd.DataFrame(checked).set_index("d")

# %%
print("Identity (checked above for every d listed):  R_m^T R_n = R_{n-m}")
print("so  <R_m q, R_n k> = q^T R_{n-m} k  — a function of m - n only. For d = 2:")
sp.Eq(sp.Symbol("score"), sp.simplify(sp.expand_trig(expanded.subs(m, n + r))))

# %% [markdown]
# ## 2. Numerically, for every RoPE variant and both layouts
#
# For one fixed query vector $q$ and key vector $k$, the score matrix $S_{mn} = \langle R_m q, R_n
# k\rangle/\sqrt{d}$ over all positions should be constant along every diagonal (a Toeplitz matrix).
# `ropelib.analysis.position_scores` builds $S$ through an encoding's hooks and
# `toeplitz_deviation` reports the largest spread along any diagonal, relative to $\max|S|$.

# %%
L0, s = original_length, scaling_factor
rope_variants = {
    "default": {},
    "linear": {"rope_type": "linear", "factor": s},
    "ntk": {"rope_type": "ntk", "factor": s},
    "dynamic": {"rope_type": "dynamic", "factor": s, "original_max_position_embeddings": L0},
    "yarn": {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L0},
    "llama3": {"rope_type": "llama3", "factor": s, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": L0},
    "longrope": {"rope_type": "longrope", "factor": s, "original_max_position_embeddings": L0,
                 "short_factor": [1.0] * (head_dim // 2),
                 "long_factor": list(np.linspace(1.0, s, head_dim // 2))},
}


def rope_encoding(variant: dict, layout: str):
    return make_encoding("rope", n_heads=n_heads, head_dim=head_dim, d_model=n_heads * head_dim,
                         layout=layout, **variant)


q = torch.randn(head_dim, generator=gen)
k = torch.randn(head_dim, generator=gen)
rows, heat = [], {}
for name, variant in rope_variants.items():
    for layout in ("half", "interleaved"):
        S = analysis.position_scores(rope_encoding(variant, layout), q, k, length)[0]  # (T, T)
        rows.append({"variant": name, "layout": layout,
                     "max |S|": float(S.abs().max()),
                     "Toeplitz deviation (relative)": analysis.toeplitz_deviation(S, relative=True)})
        heat[(name, layout)] = S
rope_table = pd.DataFrame(rows).set_index(["variant", "layout"])
worst_rope = rope_table["Toeplitz deviation (relative)"].max()
print(f"largest relative Toeplitz deviation over {len(rows)} RoPE variant/layout pairs: {worst_rope:.2e}")
rope_table

# %% [markdown]
# ## 3. Additive absolute positions break it
#
# The sinusoidal encoding (Vaswani et al. 2017, §3.5) and a learned table *add* a position vector
# $p_m$ to the token embedding once, at the input. With token vectors $x, y$ the score (before any
# projection) is
#
# $$\langle x + p_m,\, y + p_n\rangle = \langle x, y\rangle + \langle x, p_n\rangle + \langle p_m, y\rangle + \langle p_m, p_n\rangle .$$
#
# For sinusoidal vectors the last term is $\sum_i \cos((m-n)\omega_i)$ — relative — but the two cross
# terms depend on $m$ and $n$ separately:

# %%
w = sp.symbols("omega", positive=True)
x1, x2, y1, y2 = sp.symbols("x1 x2 y1 y2", real=True)
p = lambda pos: sp.Matrix([sp.sin(pos * w), sp.cos(pos * w)])  # noqa: E731  one sinusoidal pair
xv, yv = sp.Matrix([x1, x2]), sp.Matrix([y1, y2])
pos_pos = sp.simplify((p(m).T * p(n))[0, 0])
cross = sp.simplify((xv.T * p(n))[0, 0] + (p(m).T * yv)[0, 0])
full = (xv + p(m)).T * (yv + p(n))
print("<p_m, p_n>           =", pos_pos)
print("cross terms          =", cross)
print("(∂_m + ∂_n) score    =", sp.simplify(sp.diff(full[0, 0], m) + sp.diff(full[0, 0], n)))
assert sp.simplify(sp.diff(pos_pos, m) + sp.diff(pos_pos, n)) == 0  # the p.p term is relative
assert sp.simplify(sp.diff(full[0, 0], m) + sp.diff(full[0, 0], n)) != 0  # the full score is not

# %% [markdown]
# ### The "sin/cos table" often presented as RoPE is the sinusoidal encoding
#
# A popular write-up, *How Rotary Positional Embedding Improves Long-Context Extrapolation* (Logic
# Nest blog), describes RoPE with this formula:
#
# > pos_embedding(i) = [sin(position / 10000^(2j/d_model)), cos(position / 10000^(2j/d_model))],
# > where i is the position index, j is the dimension index, and d_model is the total number of
# > dimensions
#
# That is the sinusoidal table of Vaswani et al., column for column — computed below from the quoted
# formula and compared with `ropelib.encodings.sinusoidal.sinusoidal_table`:

# %%
d_model = n_heads * head_dim
position = np.arange(length)[:, None].astype(np.float64)
j = np.arange(d_model // 2)[None, :]
blog = np.stack([np.sin(position / 10000 ** (2 * j / d_model)), np.cos(position / 10000 ** (2 * j / d_model))],
                axis=-1).reshape(length, d_model)  # [sin, cos] per pair, pairs side by side
blog_vs_sinusoidal = float(np.abs(blog - sinusoidal_table(length, d_model).double().numpy()).max())
print(f"max |blog formula - sinusoidal_table| over {length} positions x {d_model} dims: {blog_vs_sinusoidal:.1e}")

# %% [markdown]
# What actually differs is *where and how* the positions act. The table below lists which hooks of
# `ropelib`'s encoding interface each scheme uses: RoPE does not add anything to the embeddings; it
# multiplies (rotates) the queries and keys in **every layer**, and never touches the values.

# %%
encodings = {
    "rope": rope_encoding({}, "half"),
    "sinusoidal": make_encoding("sinusoidal", n_heads=n_heads, head_dim=head_dim, d_model=d_model),
    "learned": make_encoding("learned", n_heads=n_heads, head_dim=head_dim, d_model=d_model),
}
pd.DataFrame(
    {name: {"adds to embeddings, once (embed)": enc.has_embed,
            "rotates q and k, every layer (rotate)": enc.has_rotate,
            "adds to logits (bias)": enc.has_bias}
     for name, enc in encodings.items()}
).T

# %% [markdown]
# Heat maps: the same $q, k$ (as token vectors, identity projections) through each scheme. For
# the learned table, a freshly initialised table stands in for a trained one — any table that is not
# itself a function of $m - n$ breaks the property the same way.

# %%
contrast = {"rope": heat[("default", "half")]}
for name in ("sinusoidal", "learned"):
    contrast[name] = analysis.position_scores(encodings[name], q, k, length)[0]
contrast_dev = {name: analysis.toeplitz_deviation(S, relative=True) for name, S in contrast.items()}

fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, (name, S) in zip(axes, contrast.items()):
    im = ax.imshow(S.numpy(), cmap="RdBu_r", vmin=-float(S.abs().max()), vmax=float(S.abs().max()))
    ax.set_title(f"{name}: Toeplitz deviation {contrast_dev[name]:.1e}")
    ax.set_xlabel("key position n")
    ax.grid(False)
    fig.colorbar(im, ax=ax, shrink=0.8)
axes[0].set_ylabel("query position m")
savefig(fig, "score_heatmaps", notebook=NOTEBOOK,
        caption="Score of one fixed q, k at every (m, n): RoPE is constant along diagonals, additive sinusoidal and learned positions are not.")
plt.show()

# %% [markdown]
# ## 4. Layouts: interleaved vs half-split
#
# Meta's LLaMA code rotates interleaved pairs $(2i, 2i+1)$; HF/GPT-NeoX rotate $(i, i + d/2)$. They
# are the same function up to a fixed permutation of the query/key output rows of $W_q$, $W_k$
# (`ropelib.rope.interleaved_to_half`). With the permuted weights the scores agree:

# %%
C = d_model
w_q = torch.randn(head_dim, C, generator=gen) / math.sqrt(C)
w_k = torch.randn(head_dim, C, generator=gen) / math.sqrt(C)
x_tok = torch.randn(C, generator=gen)
y_tok = torch.randn(C, generator=gen)
S_inter = analysis.position_scores(rope_encoding({}, "interleaved"), x_tok @ w_q.T, y_tok @ w_k.T, length)[0]
w_q_half, w_k_half = interleaved_to_half(w_q, n_heads, head_dim), interleaved_to_half(w_k, n_heads, head_dim)
S_half = analysis.position_scores(rope_encoding({}, "half"), x_tok @ w_q_half.T, y_tok @ w_k_half.T, length)[0]
S_half_unpermuted = analysis.position_scores(rope_encoding({}, "half"), x_tok @ w_q.T, y_tok @ w_k.T, length)[0]
layout_diff = float((S_inter - S_half).abs().max())
layout_wrong = float((S_inter - S_half_unpermuted).abs().max())
roundtrip = float((half_to_interleaved(w_q_half, n_heads, head_dim) - w_q).abs().max())
print(f"max |S_interleaved - S_half (permuted weights)|   = {layout_diff:.1e}")
print(f"max |S_interleaved - S_half (unpermuted weights)| = {layout_wrong:.3f}  (the layout mix-up bug)")
print(f"half_to_interleaved(interleaved_to_half(W)) == W: max diff {roundtrip:.1e}")

# %% [markdown]
# ## 5. What scaling does to the property
#
# PI, NTK, YaRN, Llama 3 and LongRoPE only change the frequencies $\theta_i$ (and YaRN/LongRoPE
# multiply cos and sin by a constant), so each still gives a Toeplitz score matrix — see the table in
# section 2. Two cases are different:
#
# * **Dynamic NTK** recomputes the base from the *current input length*: within one input the scores
#   are relative, but the same pair of positions scores differently in a short and a long input.
# * **xPos** (Sun et al. 2022, arXiv 2212.10554) multiplies pair $i$ of the query by
#   $\zeta_i^{m/\gamma}$ and of the key by $\zeta_i^{-n/\gamma}$: the score keeps a relative form
#   with an explicit decay factor $\zeta_i^{(m-n)/\gamma}$.

# %%
dyn_enc = rope_encoding(rope_variants["dynamic"], "half")
dyn_scores = {T: analysis.position_scores(dyn_enc, q, k, T)[0] for T in dynamic_lengths}
T0 = min(dynamic_lengths)
dyn_rows = []
for T, S in dyn_scores.items():
    dyn_rows.append({"input length": T,
                     "Toeplitz deviation within the input": analysis.toeplitz_deviation(S, relative=True),
                     f"max |S - S(length {T0})| on the first {T0} positions":
                         float((S[:T0, :T0] - dyn_scores[T0]).abs().max())})
dyn_table = pd.DataFrame(dyn_rows).set_index("input length")
dyn_table

# %%
xpos = make_encoding("xpos", n_heads=n_heads, head_dim=head_dim, d_model=d_model)
S_xpos = analysis.position_scores(xpos, q, k, length)[0]
xpos_dev = analysis.toeplitz_deviation(S_xpos, relative=True)
S_rope = heat[("default", "half")]
dist = np.arange(length)
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for name, S in (("rope", S_rope), ("xpos", S_xpos)):
    axes[0].plot(dist, [float(S[t, 0]) for t in dist], color=color_for(name), label=name)  # S(m, 0) = f(m)
axes[0].set_xlabel("relative distance m - n")
axes[0].set_ylabel("score")
axes[0].set_title(f"Same q, k: xPos Toeplitz deviation {xpos_dev:.1e}")
axes[0].legend()
for T, S in dyn_scores.items():
    axes[1].plot(np.arange(T0), [float(S[t, 0]) for t in range(T0)], label=f"dynamic NTK, input length {T}")
axes[1].plot(np.arange(T0), [float(S_rope[t, 0]) for t in range(T0)], ls=":", color=color_for("rope"), label="no scaling")
axes[1].set_xlabel("relative distance m - n")
axes[1].set_title("Dynamic NTK: same positions, different input lengths")
axes[1].legend(fontsize=8)
savefig(fig, "scaling_and_relative_form", notebook=NOTEBOOK,
        caption="xPos keeps a relative score with a decay; dynamic NTK scores the same positions differently at different input lengths.")
plt.show()

# %% [markdown]
# ## What this shows

# %%
dyn_change = float(dyn_table.iloc[-1, 1])
display(Markdown(
    f"* The identity `R_m^T R_n = R_(n-m)` holds symbolically (2-D complex form, and block-diagonal for "
    f"d = 2 … {max_symbolic_dim}); the score depends on m - n only.\n"
    f"* Numerically, all {len(rope_variants)} RoPE variants in both layouts give Toeplitz score matrices: "
    f"largest relative deviation {worst_rope:.1e} (float32 rounding).\n"
    f"* Additive encodings do not: relative deviation {contrast_dev['sinusoidal']:.2f} for sinusoidal and "
    f"{contrast_dev['learned']:.2f} for a learned table — the cross terms `<x, p_n> + <p_m, y>` depend on "
    f"absolute positions.\n"
    f"* The blog's 'RoPE' formula equals the sinusoidal table to {blog_vs_sinusoidal:.0e}: it describes "
    f"additive sinusoidal positions, not a rotation of q and k.\n"
    f"* Interleaved and half-split layouts agree to {layout_diff:.1e} after permuting W_q, W_k rows; "
    f"without the permutation they differ by up to {layout_wrong:.2f}.\n"
    f"* Dynamic NTK stays relative within an input (deviation {dyn_table.iloc[-1, 0]:.1e}) but changes the "
    f"scores of the same positions by up to {dyn_change:.2f} between input lengths {T0} and "
    f"{max(dynamic_lengths)}; xPos is relative with a decay (deviation {xpos_dev:.1e})."
))

# %%
show_provenance(profile, device)
