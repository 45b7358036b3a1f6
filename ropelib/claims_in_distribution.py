"""The post's claims about RoPE at the training length, with their verdicts: what it computes (C4, C9,
closed forms of ``ropelib.analysis``), its quality (C6, C8, ``04_summary``), its speed (C7,
``04_throughput``) and its applications (C11).

Each ``Claim`` (``ropelib.audit``) sits next to its verdict function; the rules are stated in
``ropelib.claims``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from . import analysis as A
from . import evidence as E
from . import published
from .audit import (
    DEFAULT_THRESHOLDS,
    Claim,
    Estimate,
    Evidence,
    Thresholds,
    Verdict,
    compare,
    first_missing,
    not_testable,
    tally,
)
from .claims_extrapolation import TRADITIONAL, alibi_ppl

__all__ = [
    "verdict_blog_formula",
    "verdict_learned_richer",
    "verdict_rope_faster",
    "verdict_rope_outperforms",
    "verdict_relative_position",
    "verdict_applications",
    "CLAIMS",
]

_SUMMARY_COLUMNS = ("encoding", "task", "metric", "mean", "ci_low", "ci_high")
#: 04_summary metrics of in-distribution quality -> lower is better (``loss``: the LM's test loss at L)
_QUALITY_METRICS = {"loss": True, "accuracy": False}


# ---------------------------------------------------------------------------------------------
# C4, C9 — closed forms, no tables
# ---------------------------------------------------------------------------------------------
def verdict_blog_formula(
    *, length: int = 64, d_model: int = 32, seed: int = 0, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[Verdict, Evidence]:
    """C4: is the post's sin/cos vector per position RoPE? Compared with the sinusoidal table, RoPE's
    angles, and the relative-position property of adding it vs rotating with it
    (``ropelib.analysis.blog_formula_deviations``, ``relative_position_check``)."""
    diff = A.blog_formula_deviations(length, d_model)
    dev = A.relative_position_check(length, d_model, seed)
    ev = {
        "max |blog formula - sinusoidal table|": diff["sinusoidal"],
        "max |blog formula - sin/cos of RoPE's angles|": diff["rope_angles"],
        "Toeplitz deviation, vectors added (sinusoidal)": dev["sinusoidal"],
        "Toeplitz deviation, q/k rotated (RoPE)": dev["rope"],
    }
    is_sinusoidal = diff["sinusoidal"] <= thresholds.formula_atol
    differs = dev["sinusoidal"] >= thresholds.absolute_min_deviation and dev["rope"] <= thresholds.relative_tolerance
    if is_sinusoidal and differs:
        verdict = Verdict("contradicted")
    elif is_sinusoidal:
        verdict = Verdict("partly supported")
    else:
        verdict = Verdict("not testable here", "the formula matches neither table")
    summary = (
        f"the formula is the sinusoidal table (max difference {diff['sinusoidal']:.0e}); "
        f"RoPE uses the same angles but rotates q and k: added, the scores depend on absolute "
        f"positions (Toeplitz deviation {dev['sinusoidal']:.2f}), rotated they do not ({dev['rope']:.0e})"
    )
    return verdict, Evidence(summary, ev)


def verdict_relative_position(
    *, length: int = 64, head_dim: int = 32, seed: int = 0, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[Verdict, Evidence]:
    """C9: does RoPE make scores depend on relative position only? (Toeplitz deviation, no tables)."""
    dev = A.relative_position_check(length, head_dim, seed)
    ev = {f"Toeplitz deviation (relative): {k}": v for k, v in dev.items()}
    verdict = Verdict("supported" if dev["rope"] <= thresholds.relative_tolerance else "contradicted")
    summary = (
        f"one fixed q, k at every (m, n): RoPE's scores are constant along diagonals to {dev['rope']:.0e} "
        f"(float32), sinusoidal {dev['sinusoidal']:.2f}, learned {dev['learned']:.2f}"
    )
    return verdict, Evidence(summary, ev)


# ---------------------------------------------------------------------------------------------
# C6, C8 — pairwise in-distribution comparisons in 04_summary
# ---------------------------------------------------------------------------------------------
def _quality_cells(summary: pd.DataFrame, metrics: Mapping[str, bool]) -> list[tuple[str, str]]:
    """The (task, metric) cells of ``04_summary`` with a quality metric, sorted."""
    cells = summary[summary["metric"].isin(list(metrics))][["task", "metric"]].drop_duplicates()
    return sorted((str(t), str(m)) for t, m in cells.itertuples(index=False))


def _pairwise(
    summary: pd.DataFrame,
    subject: str,
    comparators: Sequence[str],
    metrics: Mapping[str, bool],
    gates: pd.DataFrame | None = None,
) -> tuple[list[str], dict[str, Any]]:
    E.require_columns(summary, _SUMMARY_COLUMNS, "04_summary")
    outcomes, ev = [], {}
    for task, metric in _quality_cells(summary, metrics):
        a = E.summary_estimate(summary, subject, task, metric, gates)
        if a is None:
            continue
        ev[f"{task} {metric}: {subject}"] = a.mean
        for comp in comparators:
            b = E.summary_estimate(summary, comp, task, metric, gates)
            if b is None:
                continue
            outcome = compare(a, b, lower_is_better=metrics[metric])
            outcomes.append(outcome)
            ev[f"{task} {metric}: {comp}"] = b.mean
            ev[f"{task} {metric}: {subject} vs {comp}"] = outcome
    return outcomes, ev


def _pairwise_gate_failures(
    summary: pd.DataFrame, encodings: Sequence[str], metrics: Mapping[str, bool], gates: pd.DataFrame
) -> dict[str, list[E.FailedModel]]:
    """``gate_failures`` over every task of ``04_summary``'s quality cells, for the encodings it has rows of."""
    failures: dict[str, list[E.FailedModel]] = {}
    for task in sorted({t for t, _ in _quality_cells(summary, metrics)}):
        present = set(summary.loc[summary["task"] == task, "encoding"])
        for enc, models in E.gate_failures(gates, [e for e in encodings if e in present], task=task).items():
            failures.setdefault(enc, []).extend(models)
    return failures


def _weak_sinusoidal_note(summary: pd.DataFrame, gates: pd.DataFrame | None = None) -> str:
    """A caveat when the sinusoidal model's in-distribution test loss (language-model task) is worse than
    NoPE's (CIs apart); ``""`` when either has no model that passed its gate."""
    for task in sorted({str(t) for t in summary["task"] if E.is_lm_task(t)}):
        if gates is not None and E.gate_failures(
            gates,
            [e for e in ("sinusoidal", "nope") if ((summary["encoding"] == e) & (summary["task"] == task)).any()],
            task=task,
        ):
            continue
        sin, nope = (E.summary_estimate(summary, e, task, "loss", gates) for e in ("sinusoidal", "nope"))
        if sin is None or nope is None or not (sin.defined and nope.defined):
            continue
        if compare(sin, nope, lower_is_better=True) == "worse":
            return (
                f"; caveat: our sinusoidal model is worse than NoPE at the training length "
                f"({task} test loss {sin.mean:.3f} vs {nope.mean:.3f}), a weak baseline"
            )
    return ""


def _pairwise_verdict(
    summary: pd.DataFrame | None,
    gates: pd.DataFrame | None,
    subject: str,
    comparators: Sequence[str],
    metrics: Mapping[str, bool],
    what: str,
) -> tuple[Verdict, Evidence]:
    missing = first_missing(**{"04_summary": summary, "04_gates": gates})
    if missing:
        return missing
    summary = E.single_profile(summary, "04_summary")
    E.require_columns(summary, _SUMMARY_COLUMNS, "04_summary")
    failures = _pairwise_gate_failures(summary, [subject, *comparators], metrics, gates)
    if failures:
        return E.gate_verdict(failures)
    outcomes, ev = _pairwise(summary, subject, comparators, metrics, gates)
    if not outcomes:
        return not_testable(f"04_summary has no {subject} vs {'/'.join(comparators)} rows", "no comparable rows")
    counts = {o: outcomes.count(o) for o in ("better", "worse", "tie")}
    summary_line = (
        f"{subject} vs {'/'.join(comparators)} on {what}: significantly better in {counts['better']}, "
        f"worse in {counts['worse']}, tied in {counts['tie']} of {len(outcomes)} comparisons"
    )
    if "sinusoidal" in comparators:
        summary_line += _weak_sinusoidal_note(summary, gates)
    return tally(outcomes), Evidence(summary_line, ev)


def verdict_learned_richer(
    summary: pd.DataFrame | None, gates: pd.DataFrame | None = None, *, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[Verdict, Evidence]:
    """C6: do learned absolute positions give better in-distribution quality than sinusoidal and RoPE?
    (``04_summary``: test loss of the language model, accuracy of the retrieval task; gated by ``04_gates``.)"""
    return _pairwise_verdict(
        summary,
        gates,
        "learned",
        ("sinusoidal", "rope"),
        _QUALITY_METRICS,
        "in-distribution quality (test loss, accuracy)",
    )


def verdict_rope_outperforms(
    summary: pd.DataFrame | None, gates: pd.DataFrame | None = None, *, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[Verdict, Evidence]:
    """C8: is RoPE's in-distribution quality better than sinusoidal's and learned's on every task?
    (``04_summary``: test loss of the language model, accuracy of the retrieval task; gated by ``04_gates``.)"""
    return _pairwise_verdict(
        summary, gates, "rope", TRADITIONAL, _QUALITY_METRICS, "in-distribution quality (test loss, accuracy)"
    )


# ---------------------------------------------------------------------------------------------
# C7 — speed (freshly initialised models, no gate)
# ---------------------------------------------------------------------------------------------
def verdict_rope_faster(
    throughput: pd.DataFrame | None, *, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[Verdict, Evidence]:
    """C7: is RoPE's training throughput (tokens/s) higher than sinusoidal's and learned's?

    From ``04_throughput.csv``: per-round speed ratios RoPE / comparator (``evidence.paired_speed_ratio``),
    "better" when the CI of the mean ratio lies above 1, "worse" when below (``audit.tally``).
    """
    missing = first_missing(**{"04_throughput": throughput})
    if missing:
        return missing
    tp = E.single_profile(throughput, "04_throughput")
    outcomes: list[str] = []
    ev: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    for comp in (*TRADITIONAL, "nope"):
        ratio = E.paired_speed_ratio(tp, "rope", comp)
        if ratio is None:
            continue
        lo, hi = ratio.interval
        ratios[comp] = ratio.mean
        ev[f"rope / {comp} tokens per s"] = ratio.mean
        ev[f"rope / {comp}: 95% CI"] = f"{lo:.3f}–{hi:.3f} ({ratio.n_seeds} rounds)"
        if comp in TRADITIONAL:
            outcomes.append(compare(ratio, Estimate(1.0), lower_is_better=False))
    if not outcomes:
        return not_testable("04_throughput has no rope vs sinusoidal/learned rows", "no comparable rows", ev)
    med = tp.groupby("encoding")["tokens_per_s"].median()
    ev.update({f"median tokens per s: {e}": float(med[e]) for e in ("rope", *TRADITIONAL, "nope") if e in med.index})
    shown = ", ".join(f"x{ratios[c]:.3f} of {c}" for c in TRADITIONAL if c in ratios)
    summary = f"RoPE's training throughput is {shown} (paired rounds; below 1 = slower)"
    return tally(outcomes), Evidence(summary, ev)


# ---------------------------------------------------------------------------------------------
# C11
# ---------------------------------------------------------------------------------------------
def verdict_applications(*, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[Verdict, Evidence]:
    """C11: applications (translation, summarisation, speech, vision): no such task in this collection."""
    return not_testable(
        "no translation, speech or vision task in this collection",
        "this collection trains tiny character-level and synthetic-task models only",
    )


# ---------------------------------------------------------------------------------------------
# the claims
# ---------------------------------------------------------------------------------------------
CLAIMS: tuple[Claim, ...] = (
    Claim(
        "C4",
        "RoPE is a sin/cos vector per position",
        "RoPE gives each position the vector [sin(p/10000^(2j/d)), cos(p/10000^(2j/d))] as positional cues.",
        "Mechanisms of Rotary Positional Embedding",
        "That vector is the sinusoidal encoding of Vaswani et al. 2017 (arXiv 1706.03762 §3.5), added once "
        "to the embeddings. RoPE (RoFormer §3.2, eq. 14–16) multiplies q and k by rotation matrices R_m with "
        "the same angles, in every layer, and never touches the values.",
        verdict_blog_formula,
        (),
        (("01_relative_position", "score_heatmaps"),),
        options=("length", "d_model", "seed"),
    ),
    Claim(
        "C6",
        "Learned absolute embeddings capture richer relations",
        "A learned vector per position can capture more complex position relations and may improve performance.",
        "Understanding Positional Embeddings",
        "Vaswani et al. (§3.5): learned and sinusoidal gave nearly identical results. EleutherAI (2021), "
        "125M on OpenWebText2: val loss learned 2.809 vs rotary 2.759. A learned table has no vector past "
        "its last row, so it cannot extrapolate at all.",
        verdict_learned_richer,
        ("04_summary.csv", "04_gates.csv"),
        (("04_train_tiny_models", "in_distribution"),),
    ),
    Claim(
        "C7",
        "RoPE makes computation faster",
        "RoPE's efficiency gives faster computation, useful for real-time applications.",
        "Improvements Over Traditional Methods",
        f"ALiBi paper (V100, L=512): training words/s sinusoidal {published.ALIBI_SPEED['sinusoidal']:g}, "
        f"rotary {published.ALIBI_SPEED['rope']:g}. RoPE adds a rotation of q and k in every layer; "
        f"EleutherAI's ~30% is faster convergence (fewer steps), not faster computation.",
        verdict_rope_faster,
        ("04_throughput.csv",),
        (("04_train_tiny_models", "throughput"),),
    ),
    Claim(
        "C8",
        "RoPE outperforms traditional encodings on benchmarks",
        "Models with RoPE beat models with traditional positional encodings on several benchmarks.",
        "Improvements Over Traditional Methods",
        f"RoFormer: WMT14 En-De BLEU 27.3 -> 27.5. EleutherAI: val loss learned 2.809 / T5 2.801 / rotary "
        f"2.759 (125M, OWT2), 2.24 / 2.223 / 2.173 (1.4B, Pile). ALiBi Table 1 at the training length: "
        f"sinusoidal {alibi_ppl('sinusoidal', 512)} vs rotary {alibi_ppl('rope', 512)} (a tie).",
        verdict_rope_outperforms,
        ("04_summary.csv", "04_gates.csv"),
        (("04_train_tiny_models", "in_distribution"),),
    ),
    Claim(
        "C9",
        "RoPE encodes relative position",
        "The rotations let the model use relative rather than only absolute positional information.",
        "Introduction to Rotary Positional Embedding",
        "RoFormer §3.2 eq. 16: <R_m q, R_n k> depends on m - n only. Scaling methods that only change the "
        "frequencies keep it; dynamic NTK changes the scores of the same positions with the input length.",
        verdict_relative_position,
        (),
        (("01_relative_position", "score_heatmaps"),),
        options=("length", "head_dim", "seed"),
    ),
    Claim(
        "C11",
        "RoPE improves translation, summarisation, speech and vision",
        "RoPE brings gains in machine translation, summarisation, speech recognition and video understanding.",
        "Applications in Various Domains",
        "RoFormer: WMT14 En-De BLEU 27.3 -> 27.5 (translation); the post cites no study for the others.",
        verdict_applications,
    ),
)
