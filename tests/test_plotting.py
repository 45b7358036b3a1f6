"""The collection's figure functions (``ropelib.plotting``) draw, and hold the properties issue 13 asked for:
legends outside the data, plain-number log ticks, bands clipped at physical limits, small multiples for
accuracy, one distinct saturated colour per method, a sequential palette for non-encoding series."""

from __future__ import annotations

import colorsys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex, to_rgb

from ropelib import plotting as P

ENCODINGS = ["nope", "sinusoidal", "learned", "t5", "alibi", "rope", "xpos", "kerple", "fire", "randomized"]
MULTIPLIERS = [1.0, 1.5, 2.0, 4.0, 8.0]
METHODS = ["none", "linear", "ntk", "dynamic", "yarn", "yarn_default", "llama3"]


@pytest.fixture(autouse=True)
def _close_figures():
    P.set_theme()
    yield
    plt.close("all")


def _legend_clear_of_axes(fig):
    legends = fig.legends + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    assert legends, "the figure has no legend"
    fig.canvas.draw()  # once: the layout is final after a draw
    renderer = fig.canvas.get_renderer()
    for legend in legends:
        lb = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible():
                assert not lb.overlaps(ax.get_window_extent(renderer)), f"legend overlaps the axes {ax.get_title()!r}"


def _band_values(ax) -> np.ndarray:
    """y values of every filled band of ``ax`` (its polygon vertices)."""
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    return np.concatenate([p.get_paths()[0].vertices[:, 1] for p in polys]) if polys else np.array([])


def _tick_labels(axis, draw: bool = True) -> list[str]:
    if draw:
        axis.axes.figure.canvas.draw()
    lo, hi = sorted(axis.get_view_interval())
    return [t.get_text() for t, v in zip(axis.get_ticklabels(), axis.get_ticklocs()) if lo <= v <= hi and t.get_text()]


def _lm_summary() -> pd.DataFrame:
    rows = []
    for i, enc in enumerate(ENCODINGS):
        for mode in ("nonoverlap", "sliding"):
            for m in MULTIPLIERS:
                ppl = 4.8 + i * 0.3 * m
                rows.append(
                    {
                        "mode": mode,
                        "encoding": enc,
                        "multiplier": m,
                        "ppl_mean": ppl,
                        "ppl_ci_low": 0.5,
                        "ppl_ci_high": ppl * 1.2,
                    }
                )  # a t-interval reaching below 1
    return pd.DataFrame(rows)


def _published() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "encoding": ["rope"] * 3 + ["alibi"] * 3,
            "multiplier": [1.0, 4.9, 30.3] * 2,
            "ppl": [20.0, 31.6, 79.3, 19.7, 18.4, 18.3],
        }
    )


def test_perplexity_vs_length_legend_outside_plain_log_ticks_and_bands_above_one():
    fig = P.plot_perplexity_vs_length(
        _lm_summary(), _published(), {3: 7.4, 4: 4.9}, encodings=ENCODINGS, multipliers=MULTIPLIERS
    )
    assert len(fig.axes) == 3
    _legend_clear_of_axes(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[: len(ENCODINGS)] == ENCODINGS and "3-gram (test split)" in labels
    fig.canvas.draw()
    for ax in fig.axes:
        y = _tick_labels(ax.yaxis, draw=False)
        assert len(y) >= 3, y  # more than "10" and "20" over less than a decade
        assert all(lab.replace(".", "").isdigit() for lab in y), y  # plain numbers, no 2×10^1 mixed in
        x = _tick_labels(ax.xaxis, draw=False)
        assert x and all(lab.endswith("x") for lab in x), x  # the same tick style on every panel
    for ax in fig.axes[:2]:
        assert _band_values(ax).min() >= 1.0  # perplexity cannot go below 1


def _acc_summary() -> pd.DataFrame:
    rows = [
        {
            "task": "passkey",
            "encoding": enc,
            "multiplier": m,
            "mean": 0.9 - 0.05 * i * m / 8,
            "ci_low": -0.2,
            "ci_high": 1.3,
        }
        for i, enc in enumerate(ENCODINGS)
        for m in MULTIPLIERS
    ]
    return pd.DataFrame(rows)


def _retrieval() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "task": "passkey",
                "encoding": enc,
                "multiplier": 8.0,
                "distance": d,
                "accuracy": 0.5,
                "status": "ok",
                "passed_gate": True,
            }
            for enc in ENCODINGS
            for d in (0, 64, 128)
        ]
    )


def test_accuracy_vs_length_small_multiples_with_clipped_bands():
    fig = P.plot_accuracy_vs_length(
        _acc_summary(),
        encodings=ENCODINGS,
        tasks=["passkey"],
        multipliers=MULTIPLIERS,
        floors={"passkey": 1 / 6},
        train_lengths={"passkey": 32},
        retrieval=_retrieval(),
        distance_task="passkey",
    )
    panels = [ax for ax in fig.axes if ax.get_title() in ENCODINGS]
    assert [ax.get_title() for ax in panels] == ENCODINGS  # one panel per encoding
    for ax in panels:
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 1  # one band per panel: no wash of ten overlapping bands
        assert to_hex(bands[0].get_facecolor()[0][:3]) == P.color_for(ax.get_title())
        v = _band_values(ax)
        assert v.min() >= 0.0 and v.max() <= 1.0  # an accuracy stays in [0, 1]
    distance = [ax for ax in fig.axes if "by distance" in ax.get_title()]
    assert len(distance) == 1
    _legend_clear_of_axes(fig)


def test_training_curves_band_clipped_at_zero_loss():
    band = pd.DataFrame(
        [
            {"task": t, "encoding": e, "step": s, "mean": 1.0 / (1 + s), "ci_low": -0.5, "ci_high": 2.0}
            for t in ("books", "passkey")
            for e in ENCODINGS[:3]
            for s in range(0, 50, 5)
        ]
    )
    fig = P.plot_training_curves(
        band, tasks=["books", "passkey"], encodings=ENCODINGS[:3], train_lengths={"books": 64, "passkey": 32}
    )
    for ax in fig.axes:
        assert _band_values(ax).min() >= 0.0
        assert ax.get_ylim()[0] >= 0.0
    _legend_clear_of_axes(fig)


def _saturation(color: str) -> float:
    return colorsys.rgb_to_hsv(*to_rgb(color))[1]


def test_methods_have_distinct_saturated_colours():
    colours = [P.method_color(m) for m in METHODS]
    assert len(set(colours)) == len(METHODS)
    assert P.method_color("yarn") != P.method_color("yarn_default")
    assert P.method_color("none") == P.color_for("rope")
    assert min(_saturation(c) for c in colours) >= 0.5  # no pastel lines on white
    assert P.method_style("yarn_default") == "--" and P.method_style("yarn") == "-"


def test_zero_shot_ppl_one_colour_per_method_and_legend_outside():
    ext = pd.DataFrame(
        [
            {"method": m, "factor": f, "mean": 5.0 + i + f, "ci_low": 0.8, "ci_high": 7.0 + i + f}
            for i, m in enumerate(METHODS)
            for f in (2, 4, 8)
        ]
    )
    cost = ext.assign(mean=0.1, ci_low=-1.5, ci_high=0.3)
    fig = P.plot_zero_shot_ppl(
        ext, cost, methods=METHODS, factors=[2, 4, 8], train_length=64, task="books", base_ppl=4.6
    )
    left, right = fig.axes
    lines = {ln.get_label(): to_hex(ln.get_color()) for ln in left.get_lines() if ln.get_label() in METHODS}
    assert set(lines) == set(METHODS) and len(set(lines.values())) == len(METHODS)
    assert _band_values(left).min() >= 1.0 and _band_values(right).min() >= -100.0
    assert all(lab.replace(".", "").isdigit() for lab in _tick_labels(left.yaxis))
    _legend_clear_of_axes(fig)


def test_zero_shot_ppl_says_so_when_no_model_passed():
    ext = pd.DataFrame(columns=["method", "factor", "mean", "ci_low", "ci_high"])
    fig = P.plot_zero_shot_ppl(ext, ext, methods=METHODS, factors=[2, 4], train_length=64, task="books", base_ppl=None)
    assert all(any("passed its gate" in t.get_text() for t in ax.texts) for ax in fig.axes)


def test_pair_factors_distinct_colours_and_dashed_yarn_default():
    factors = {m: np.linspace(1.0, 0.25, 8) * (1 + 0.01 * i) for i, m in enumerate(METHODS[1:])}
    fig = P.plot_pair_factors(factors, title="t", full_turn_pair=3)
    (ax,) = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines() if ln.get_label() in factors}
    assert len({to_hex(ln.get_color()) for ln in lines.values()}) == len(factors)
    assert lines["yarn_default"].get_linestyle() == "--"
    _legend_clear_of_axes(fig)


def test_decay_bound_far_uses_a_sequential_palette_not_encoding_colours():
    r = np.arange(0, 100)
    bounds = {(b, d): np.exp(-r / d) * d for b in (500.0, 1e4) for d in (32, 64, 128)}
    fig = P.plot_decay_bound_far(r, bounds, plateau={k: float(v[-1]) for k, v in bounds.items()})
    assert len(fig.axes) == 2
    colours = [to_hex(ln.get_color()) for ln in fig.axes[0].get_lines() if ln.get_label().startswith("d = ")]
    assert len(colours) == 3 and not set(colours) & set(P.ENCODING_COLORS.values())
    assert colours == P.sequential_colors(3)
    _legend_clear_of_axes(fig)


def test_sequential_colors_get_lighter_and_reject_bad_counts():
    cs = P.sequential_colors(4)
    luminance = [np.dot([0.2126, 0.7152, 0.0722], to_rgb(c)) for c in cs]  # relative luminance, dark to light
    assert luminance == sorted(luminance) and len(set(cs)) == 4
    assert len(P.sequential_colors(1)) == 1
    with pytest.raises(ValueError, match="n >= 1"):
        P.sequential_colors(0)


def test_multiplier_ticks_and_missing_columns():
    fig, ax = plt.subplots()
    ax.plot(MULTIPLIERS, MULTIPLIERS)
    P.multiplier_ticks(ax, MULTIPLIERS, label_every_power_of_two=True)
    assert _tick_labels(ax.xaxis) == ["1x", "2x", "4x", "8x"]
    with pytest.raises(ValueError, match="positive"):
        P.multiplier_ticks(ax, [0.0, 1.0])
    with pytest.raises(ValueError, match="lacks column"):
        P.plot_training_curves(pd.DataFrame({"task": []}), tasks=["a"], encodings=["rope"], train_lengths={})
