"""One figure style for the whole collection: a seaborn theme, a fixed colour per encoding, ``savefig``.

Every notebook calls ``set_theme()`` once and colours a curve by ``color_for(encoding_name)``, so the
same encoding has the same colour in every figure (docs/design.md §9, "plotting.py"). ``savefig`` writes
``figures_dir()/<notebook>/<name>.png`` and ``.svg`` atomically (``ropelib.paths``) and records a
one-line caption in ``figures_dir()/<notebook>/captions.json``, which ``run_all.py`` turns into the
gallery ``figures/README.md``.

Colours: an encoding or RoPE scaling method always has the same saturated colour (``color_for``,
``method_color``); series that are not encodings (head sizes, bases, lengths) take a separate
sequential palette (``sequential_colors``), so a reader never mistakes a head size for an encoding.
The ``plot_*`` functions draw the collection's multi-panel figures from result tables (data in, figure
out; the notebooks call them): legends outside the data, plain-number log ticks (``log_ticks``),
confidence bands clipped at their physical limits (``clipped_band``).
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from .paths import atomic_write_bytes, atomic_write_text, figures_dir

__all__ = [
    "ENCODING_COLORS",
    "CAPTIONS_FILE",
    "DPI",
    "set_theme",
    "color_for",
    "palette_for",
    "method_color",
    "method_style",
    "sequential_colors",
    "log_ticks",
    "multiplier_ticks",
    "clipped_band",
    "legend_outside",
    "plot_perplexity_vs_length",
    "plot_accuracy_vs_length",
    "plot_training_curves",
    "plot_zero_shot_ppl",
    "plot_pair_factors",
    "plot_decay_bound_far",
    "savefig",
    "read_captions",
]

#: dpi of the PNG files (the SVG is resolution-free)
DPI = 150
#: name of the per-notebook caption index read by the gallery
CAPTIONS_FILE = "captions.json"

# Fixed colours: the positional encodings take the "tab10" hues, the RoPE scaling types a second,
# distinct and equally saturated set. "rope" and "default" (RoPE without scaling) share a colour on purpose.
ENCODING_COLORS: Mapping[str, str] = {
    # positional encodings
    "nope": "#7f7f7f",  # grey
    "sinusoidal": "#8c564b",  # brown
    "learned": "#e377c2",  # pink
    "t5": "#9467bd",  # purple
    "alibi": "#2ca02c",  # green
    "rope": "#1f77b4",  # blue
    "xpos": "#17becf",  # cyan
    "kerple": "#bcbd22",  # olive
    "fire": "#d62728",  # red
    "randomized": "#ff7f0e",  # orange
    # RoPE scaling types (HF rope_type names, plus "ntk", "proportional" and "yarn_default", YaRN's default ramp
    # as an earlier notebook 06 named it):
    # saturated, and distinct from each other and from the encodings (Dark2-like hues)
    "default": "#1f77b4",  # = rope
    "linear": "#d95f02",  # dark orange
    "ntk": "#1b9e77",  # teal
    "dynamic": "#e6ab02",  # mustard
    "yarn": "#6a3d9a",  # purple
    "yarn_default": "#e7298a",  # magenta (YaRN with its Llama-2 default ramp)
    "llama3": "#a6761d",  # ochre brown
    "longrope": "#66a61e",  # leaf green
    "proportional": "#b2182b",  # crimson
}

# Colours for names outside the table (e.g. an encoding a reader defines in a notebook): stable per
# name, drawn from a palette disjoint in order from the table above.
_EXTRA_PALETTE = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def set_theme(context: str = "notebook") -> None:
    """Apply the collection's one seaborn theme (white grid, colour-blind-safe defaults, tidy fonts)."""
    sns.set_theme(
        context=context,
        style="whitegrid",
        palette="colorblind",
        rc={
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": DPI,
            "axes.titlesize": "medium",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "svg.hashsalt": "ropelib",  # stable SVG ids, so re-rendered figures diff cleanly
        },
    )


def color_for(name: str) -> str:
    """The fixed colour of an encoding or RoPE scaling type (case-insensitive).

    Names outside ``ENCODING_COLORS`` get a stable colour derived from the name, so a notebook's own
    inline encoding is coloured consistently too.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"color_for needs a non-empty encoding name, got {name!r}")
    key = name.lower()
    if key in ENCODING_COLORS:
        return ENCODING_COLORS[key]
    # stable across processes (unlike hash()): sum of code points
    return _EXTRA_PALETTE[sum(map(ord, key)) % len(_EXTRA_PALETTE)]


def palette_for(names) -> dict[str, str]:
    """``{name: colour}`` for seaborn's ``palette=`` argument."""
    return {n: color_for(n) for n in names}


#: notebook 06's method names -> the RoPE scaling type whose colour they take (``ropelib.context_extension``)
_METHOD_TYPES = {
    "none": "default",
    "dynamic_cache": "dynamic",
    "dynamic_recompute": "dynamic",
    "dynamic_f1": "dynamic",
    "yarn_rescaled": "yarn",
    "p_rope_0.75": "proportional",
    "p_rope_0.5": "proportional",
}
#: line styles that tell apart methods sharing a colour (one type, several protocols or settings)
_METHOD_STYLES = {
    "yarn_default": "--",
    "yarn_rescaled": "--",
    "dynamic_cache": "--",
    "dynamic_recompute": ":",
    "dynamic_f1": "-.",
    "p_rope_0.5": "--",
}


def method_color(method: str) -> str:
    """Colour of a context-extension method (notebooks 03, 06): ``"none"`` (plain RoPE) has the ``rope``
    colour, every other method its RoPE scaling type's (the dynamic-NTK protocols share ``dynamic``'s,
    p-RoPE ``proportional``'s; ``yarn_default`` has its own)."""
    if not isinstance(method, str):
        return color_for(method)
    return color_for(_METHOD_TYPES.get(method.lower(), method))


def method_style(method: str) -> str:
    """Line style of a method: solid, except the variants that share a colour with another method
    (dashed ``yarn_default``/``yarn_rescaled``/``dynamic_cache``/``p_rope_0.5``, dotted
    ``dynamic_recompute``, dash-dot ``dynamic_f1``)."""
    return _METHOD_STYLES.get(method, "-")


def sequential_colors(n: int, cmap: str = "viridis") -> list[str]:
    """``n`` colours of a sequential palette, dark to light, for series that are *not* encodings
    (head sizes, bases, lengths): they never borrow an encoding's colour."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"sequential_colors needs n >= 1 colours, got {n!r}")
    points = [0.4] if n == 1 else np.linspace(0.05, 0.8, n)
    colormap = mpl.colormaps[cmap]
    return [mpl.colors.to_hex(colormap(float(x))) for x in points]


#: mantissas of the major ticks of ``log_ticks``: readable over less than a decade too
LOG_SUBS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)


def _plain_number(x: float, _pos=None) -> str:
    return f"{x:g}"


def log_ticks(axis, subs: Sequence[float] = LOG_SUBS) -> None:
    """Plain-number major ticks at ``subs`` × 10^k on a log ``axis`` (``ax.yaxis``), no minor labels: one
    style for every log axis (no ``2×10^1`` next to ``20``)."""
    axis.set_major_locator(LogLocator(base=10, subs=tuple(subs)))
    axis.set_major_formatter(FuncFormatter(_plain_number))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def multiplier_ticks(ax, multipliers: Sequence[float], *, label_every_power_of_two: bool = False) -> None:
    """Log-2 x axis with a tick per length ratio labelled ``"2x"``; with ``label_every_power_of_two`` only
    powers of two carry a label (small panels) and the others an unlabelled tick."""
    ms = sorted({float(m) for m in multipliers})
    if not ms or ms[0] <= 0:
        raise ValueError(f"multipliers must be positive length ratios, got {list(multipliers)!r}")
    ax.set_xscale("log", base=2)
    labels = [f"{m:g}x" if not label_every_power_of_two or float(math.log2(m)).is_integer() else "" for m in ms]
    ax.set_xticks(ms, labels)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def clipped_band(
    ax, x, low, high, *, color: str, lower: float | None = None, upper: float | None = None, alpha: float = 0.15
):
    """``fill_between`` of a confidence band clipped at the quantity's physical limits (a loss is >= 0, an
    accuracy in [0, 1], a perplexity >= 1): a t-interval can reach past them, the quantity cannot."""
    lo = (
        np.clip(np.asarray(low, dtype=float), lower, upper)
        if (lower, upper) != (None, None)
        else np.asarray(low, float)
    )
    hi = (
        np.clip(np.asarray(high, dtype=float), lower, upper)
        if (lower, upper) != (None, None)
        else np.asarray(high, float)
    )
    return ax.fill_between(np.asarray(x, dtype=float), lo, hi, color=color, alpha=alpha, linewidth=0)


def legend_outside(
    fig: Figure, handles=None, labels=None, *, title: str | None = None, ncol: int = 1, fontsize: float = 8
):
    """One legend for the figure, to the right of every panel (never over the data). ``fig`` must use the
    constrained layout; without ``handles`` it collects the labelled artists of all axes (first
    occurrence of each label)."""
    if handles is None:
        seen = {}
        for ax in fig.axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        labels, handles = list(seen), list(seen.values())
    return fig.legend(
        handles, labels, loc="outside right upper", title=title, ncol=ncol, fontsize=fontsize, title_fontsize=fontsize
    )


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; its columns: {list(df.columns)}")


def _mode_label(mode: str) -> str:
    return {"nonoverlap": "non-overlapping", "sliding": "sliding"}.get(mode, mode)


def plot_perplexity_vs_length(
    lm_summary: pd.DataFrame,
    published: pd.DataFrame,
    ngram: Mapping[int, float],
    *,
    encodings: Sequence[str],
    multipliers: Sequence[float],
    modes: Sequence[str] = ("nonoverlap", "sliding"),
    ngram_orders: Sequence[int] = (3, 4),
) -> Figure:
    """Notebook 05's ``perplexity_vs_length``: test perplexity against the evaluation length, one panel
    per window mode (``lm_summary``: ``mode, encoding, multiplier, ppl_mean, ppl_ci_low, ppl_ci_high``;
    seed means with 95% CI bands, clipped at perplexity 1), dashed n-gram baselines (``ngram``:
    ``{order: perplexity}``), and the ALiBi paper's Table 1 on the right (``published``: ``encoding,
    multiplier, ppl``). One legend outside the panels; every axis has plain-number ticks."""
    _require(lm_summary, ["mode", "encoding", "multiplier", "ppl_mean", "ppl_ci_low", "ppl_ci_high"], "lm_summary")
    _require(published, ["encoding", "multiplier", "ppl"], "published")
    fig, axes = plt.subplots(1, len(modes) + 1, figsize=(5.0 * (len(modes) + 1) + 1.6, 4.2), layout="constrained")
    for ax, mode in zip(axes[:-1], modes):
        for enc in encodings:
            s = lm_summary[(lm_summary["mode"] == mode) & (lm_summary.encoding == enc)].sort_values("multiplier")
            s = s[np.isfinite(s.ppl_mean)]
            ax.plot(s.multiplier, s.ppl_mean, marker="o", markersize=3, color=color_for(enc), label=enc)
            clipped_band(ax, s.multiplier, s.ppl_ci_low, s.ppl_ci_high, color=color_for(enc), lower=1.0)
        for order, ls in zip(ngram_orders, ("--", "-.", ":")):
            if order in ngram:
                ax.axhline(ngram[order], color="0.3", linestyle=ls, linewidth=0.9, label=f"{order}-gram (test split)")
        ax.axvline(1.0, color="0.5", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        multiplier_ticks(ax, multipliers)
        log_ticks(ax.yaxis)
        ax.set_xlabel("evaluation length / training length")
        ax.set_ylabel("test perplexity (chars)")
        ax.set_title(f"ours, {_mode_label(mode)} windows (passing models)")
    ax = axes[-1]
    for enc in published.encoding.unique():
        s = published[published.encoding == enc].dropna().sort_values("multiplier")
        ax.plot(s.multiplier, s.ppl, marker="s", markersize=3, color=color_for(enc), label=enc)
    ax.set_yscale("log")
    top = float(published.multiplier.max()) if len(published) else 1.0
    multiplier_ticks(ax, [2.0**k for k in range(0, int(math.ceil(math.log2(max(top, 1.0)))) + 1)])
    log_ticks(ax.yaxis)
    ax.set_xlabel("evaluation length / 512")
    ax.set_ylabel("perplexity (WikiText-103)")
    ax.set_title("ALiBi paper, Table 1 (non-overlapping)")
    legend_outside(fig, title="encoding")
    return fig


def plot_accuracy_vs_length(
    acc_summary: pd.DataFrame,
    *,
    encodings: Sequence[str],
    tasks: Sequence[str],
    multipliers: Sequence[float],
    floors: Mapping[str, float],
    train_lengths: Mapping[str, int],
    retrieval: pd.DataFrame | None = None,
    distance_task: str | None = None,
    ncols: int = 5,
) -> Figure:
    """Notebook 05's ``accuracy_vs_length`` as small multiples: per task, one panel per encoding with its
    seed mean and 95% band (clipped to [0, 1]) over the other encodings in light grey, the dashed
    position-blind floor (``floors``) and the training length (dotted). ``acc_summary``: ``task, encoding,
    multiplier, mean, ci_low, ci_high``. With ``retrieval`` (05_retrieval rows: ``task, encoding,
    multiplier, distance, accuracy, status, passed_gate``) and ``distance_task``, a panel at the right of
    that task shows exact match by needle distance at the longest length (lines, no bands)."""
    _require(acc_summary, ["task", "encoding", "multiplier", "mean", "ci_low", "ci_high"], "acc_summary")
    if not tasks:
        raise ValueError("plot_accuracy_vs_length needs at least one task")
    ncols = max(1, min(ncols, len(encodings)))
    nrows = math.ceil(len(encodings) / ncols)
    fig = plt.figure(
        figsize=(2.5 * ncols + (5.6 if distance_task else 0.8), 2.3 * nrows * len(tasks) + 0.4), layout="constrained"
    )
    rows = fig.subfigures(len(tasks), 1, squeeze=False)[:, 0]
    for sf, task in zip(rows, tasks):
        t = acc_summary[acc_summary.task == task]
        grid_fig, dist_fig = sf, None
        if distance_task is not None and retrieval is not None:  # the same column split on every row: aligned panels
            grid_fig, dist_fig = sf.subfigures(1, 2, width_ratios=[2.5 * ncols, 5.4])
            if task != distance_task:
                dist_fig = None
        axes = grid_fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
        curves = {
            enc: t[t.encoding == enc].sort_values("multiplier").pipe(lambda d: d[np.isfinite(d["mean"])])
            for enc in encodings
        }
        for ax, enc in zip(axes.flat, encodings):
            for other, s in curves.items():
                if other != enc and len(s):
                    ax.plot(s.multiplier, s["mean"], color="0.82", linewidth=0.8, zorder=1)
            s = curves[enc]
            if len(s):
                clipped_band(
                    ax, s.multiplier, s.ci_low, s.ci_high, color=color_for(enc), lower=0.0, upper=1.0, alpha=0.25
                )
                ax.plot(
                    s.multiplier, s["mean"], marker="o", markersize=3, color=color_for(enc), linewidth=1.6, zorder=3
                )
            else:
                ax.text(
                    0.5,
                    0.5,
                    "no passing model",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="0.4",
                )
            if task in floors:
                ax.axhline(floors[task], color="0.3", linestyle="--", linewidth=0.8)
            ax.axvline(1.0, color="0.5", linestyle=":", linewidth=1)
            multiplier_ticks(ax, multipliers, label_every_power_of_two=True)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(enc, color=color_for(enc), fontsize=10, fontweight="bold")
            ax.tick_params(labelsize=8)
        for ax in axes.flat[len(encodings) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("exact match", fontsize=9)
        for ax in axes[-1, :]:
            ax.set_xlabel("length / training length", fontsize=9)
        floor_note = f"; dashed: position-blind floor {floors[task]:.3f}" if task in floors else ""
        grid_fig.suptitle(
            f"{task} (L = {train_lengths.get(task, '?')}): exact match by length, seed mean and 95% band{floor_note}",
            fontsize=10,
        )
        if dist_fig is not None:
            ax = dist_fig.subplots()
            _require(
                retrieval,
                ["task", "encoding", "multiplier", "distance", "accuracy", "status", "passed_gate"],
                "retrieval",
            )
            far = retrieval[(retrieval.task == task) & (retrieval.status == "ok") & retrieval.passed_gate.astype(bool)]
            far = far[far.multiplier == far.multiplier.max()]
            by_d = far.groupby(["encoding", "distance"], as_index=False).accuracy.mean()
            for enc in encodings:
                s = by_d[by_d.encoding == enc]
                if len(s):
                    ax.plot(s.distance, s.accuracy, marker="o", markersize=3, color=color_for(enc), label=enc)
            if task in train_lengths:
                ax.axvline(train_lengths[task], color="0.5", linestyle=":", linewidth=1)
            if task in floors:
                ax.axhline(floors[task], color="0.3", linestyle="--", linewidth=0.8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("distance needle -> query (tokens)", fontsize=9)
            ax.set_ylabel("exact match (seed mean)", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.set_title(f"{task} at {far.multiplier.max():g}x: by distance" if len(far) else task, fontsize=10)
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0)
    return fig


def plot_training_curves(
    band: pd.DataFrame,
    *,
    tasks: Sequence[str],
    encodings: Sequence[str],
    train_lengths: Mapping[str, int],
    ylabel: str = "training loss (nats / scored token)",
) -> Figure:
    """Notebook 04's ``training_curves``: per task, the seed-mean training loss by step with its 95% band,
    clipped at zero (a cross-entropy is never negative). ``band``: ``task, encoding, step, mean, ci_low,
    ci_high`` (``ropelib.stats.aggregate_seeds``). One legend outside the panels."""
    _require(band, ["task", "encoding", "step", "mean", "ci_low", "ci_high"], "band")
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks) + 1.4, 4), squeeze=False, layout="constrained")
    for ax, task in zip(axes[0], tasks):
        for enc in encodings:
            b = band[(band.task == task) & (band.encoding == enc)].sort_values("step")
            ax.plot(b.step, b["mean"], color=color_for(enc), label=enc, linewidth=1.3)
            clipped_band(ax, b.step, b.ci_low, b.ci_high, color=color_for(enc), lower=0.0, alpha=0.2)
        ax.set_ylim(bottom=0.0)
        ax.set_title(f"{task} (trained at {train_lengths.get(task, '?')} tokens)")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
    legend_outside(fig, title="encoding")
    return fig


def _no_gated_data(ax, task: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"no {task} model passed its gate:\nnothing to show",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=9,
        color="0.35",
    )


def plot_zero_shot_ppl(
    ext_summary: pd.DataFrame,
    cost_summary: pd.DataFrame,
    *,
    methods: Sequence[str],
    factors: Sequence[float],
    train_length: int,
    task: str,
    base_ppl: float | None = None,
) -> Figure:
    """Notebook 06's ``zero_shot_ppl``: perplexity at s·L with each method set to factor s (left; log axis,
    plain ticks) and the perplexity change at L from the same setting (right, in %), means with 95% bands
    (clipped at perplexity 1 and at a -100% change). ``ext_summary``/``cost_summary``: ``method, factor,
    mean, ci_low, ci_high`` (``cost_summary`` as a fraction). One saturated colour per method
    (``method_color``); ``base_ppl`` (plain RoPE at L) is drawn dotted; ``None``: no model passed its gate."""
    _require(ext_summary, ["method", "factor", "mean", "ci_low", "ci_high"], "ext_summary")
    _require(cost_summary, ["method", "factor", "mean", "ci_low", "ci_high"], "cost_summary")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    for method in methods:
        kw = dict(color=method_color(method), marker="o", label=method, ls=method_style(method))
        d = ext_summary[ext_summary.method == method].sort_values("factor")
        axes[0].plot(d.factor, d["mean"], **kw)
        clipped_band(axes[0], d.factor, d.ci_low, d.ci_high, color=method_color(method), lower=1.0)
        if method != "none":
            c = cost_summary[cost_summary.method == method].sort_values("factor")
            axes[1].plot(c.factor, 100 * c["mean"], **kw)
            clipped_band(axes[1], c.factor, 100 * c.ci_low, 100 * c.ci_high, color=method_color(method), lower=-100.0)
    if base_ppl is not None and np.isfinite(base_ppl):
        axes[0].axhline(base_ppl, color="0.3", lw=0.8, ls=":", label=f"plain RoPE at L = {train_length}")
        axes[0].set_yscale("log")
        log_ticks(axes[0].yaxis)
    else:
        for ax in axes:
            _no_gated_data(ax, task)
    axes[0].set(
        xlabel="evaluation length / L (= factor s)",
        ylabel="perplexity",
        title="At the extended length s·L, no training",
    )
    axes[1].axhline(0, color="0.3", lw=0.8, ls=":")
    axes[1].set(xlabel="factor s", ylabel="perplexity change at L (%)", title="Cost at the original length L")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(list(factors), [f"{f:g}" for f in factors])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    legend_outside(fig, title="method")
    return fig


def plot_pair_factors(
    factors: Mapping[str, np.ndarray],
    *,
    title: str,
    full_turn_pair: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Notebook 06's ``pair_factors``: the per-pair frequency factor θ'_i/θ_i of each method (``factors``:
    ``{method: (d/2,) array}``), one saturated colour per method, ``yarn_default`` dashed; a dotted line
    before pair ``full_turn_pair`` (the first whose wavelength exceeds L). Legend outside the axes."""
    fig, ax = plt.subplots(figsize=(8.2, 3.8), layout="constrained")
    for method, f in factors.items():
        f = np.asarray(f, dtype=float)
        ax.plot(
            np.arange(len(f)),
            f,
            marker="o",
            ms=4,
            label=(labels or {}).get(method, method),
            color=method_color(method),
            ls=method_style(method),
        )
    if full_turn_pair is not None:
        ax.axvline(full_turn_pair - 0.5, color="0.5", lw=0.8, ls=":")
        ax.annotate("wavelength > L →", (full_turn_pair - 0.4, 1.0), fontsize=8, color="0.4", va="top")
    ax.set(xlabel="pair i (fast → slow)", ylabel="θ'ᵢ / θᵢ", title=title)
    legend_outside(fig, title="method")
    return fig


def plot_decay_bound_far(
    r: np.ndarray,
    bounds: Mapping[tuple[float, int], np.ndarray],
    plateau: Mapping[tuple[float, int], float] | None = None,
) -> Figure:
    """Notebook 02's ``decay_bound_far``: RoFormer's bound B(r) to long distances, one panel per RoPE base,
    one line per head size (``bounds``: ``{(base, head_dim): B(r)}``) in a sequential palette (head sizes
    are not encodings), dashed at the plateau level (``plateau``: ``{(base, head_dim): level}``)."""
    bases = list(dict.fromkeys(b for b, _ in bounds))
    dims = sorted(dict.fromkeys(d for _, d in bounds))
    if not bases:
        raise ValueError("plot_decay_bound_far needs at least one (base, head_dim) curve")
    colors = dict(zip(dims, sequential_colors(len(dims))))
    fig, axes = plt.subplots(
        1, len(bases), figsize=(4 * len(bases) + 1.0, 3.6), sharey=True, squeeze=False, layout="constrained"
    )
    r = np.asarray(r)
    for ax, b in zip(axes[0], bases):
        for d in dims:
            if (b, d) not in bounds:
                continue
            ax.plot(np.maximum(r, 1), bounds[(b, d)], lw=0.8, color=colors[d], label=f"d = {d}")
            if plateau is not None and (b, d) in plateau:
                ax.axhline(plateau[(b, d)], color=colors[d], ls="--", lw=0.9)
        ax.set_xscale("log")
        ax.set_title(f"base {b:g}")
        ax.set_xlabel("relative distance r")
    axes[0, 0].set_ylabel("B(r)")
    legend_outside(fig, title="head dim")
    return fig


def _check_name(label: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value in (".", ".."):
        raise ValueError(
            f"{label} must be a plain file name (letters, digits, '_', '-', '.'; no path separators), got {value!r}"
        )
    return value


def read_captions(notebook: str) -> dict[str, str]:
    """The ``{figure name: caption}`` index of one notebook's figures (empty if none)."""
    path = figures_dir() / _check_name("notebook", notebook) / CAPTIONS_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def savefig(fig: Figure, name: str, *, notebook: str, caption: str) -> Path:
    """Write ``fig`` as ``figures_dir()/<notebook>/<name>.png`` (dpi ``DPI``) and ``.svg``.

    Both files are rendered to memory first and written atomically; the one-line ``caption`` is
    recorded in that folder's ``captions.json``. Returns the PNG path. ``name`` and ``notebook`` must
    be plain names (no path separators); ``name`` has no extension.
    """
    _check_name("name", name)
    _check_name("notebook", notebook)
    if name.lower().endswith((".png", ".svg")):
        raise ValueError(f"name must not carry an extension (PNG and SVG are both written), got {name!r}")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty one-line string, got {caption!r}")
    caption = " ".join(caption.split())  # one line
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")

    folder = figures_dir() / notebook
    outputs = {}
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        # metadata without dates, so an unchanged figure re-renders to identical bytes
        metadata = {"Software": None} if ext == "png" else {"Date": None, "Creator": None}
        fig.savefig(buf, format=ext, dpi=DPI, bbox_inches="tight", metadata=metadata)
        outputs[ext] = buf.getvalue()
    png = atomic_write_bytes(folder / f"{name}.png", outputs["png"])
    atomic_write_bytes(folder / f"{name}.svg", outputs["svg"])

    captions = read_captions(notebook)
    captions[name] = caption
    atomic_write_text(folder / CAPTIONS_FILE, json.dumps(dict(sorted(captions.items())), indent=2) + "\n")
    return png
