"""The post's claims about long contexts (C2, C3), with their verdicts: does a RoPE model keep its quality
past the training length (05), or with a context-extension method (06), and does it keep far-apart
tokens connected (retrieval, 05)?

Each ``Claim`` (``ropelib.audit``) sits next to its verdict function, which reads the gated numbers of
notebooks 05 and 06 through ``ropelib.evidence``; the rules are stated in ``ropelib.claims``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import analysis as A
from . import evidence as E
from .audit import (
    DEFAULT_THRESHOLDS,
    Claim,
    Evidence,
    Thresholds,
    Verdict,
    first_missing,
    missing_verdict,
    not_testable,
)
from .claims_extrapolation import alibi_ppl

__all__ = [
    "HeldSetting",
    "verdict_no_quality_loss",
    "verdict_long_range_dependencies",
    "CLAIMS",
]


# ---------------------------------------------------------------------------------------------
# C2
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeldSetting:
    """The best context-extension setting of notebook 06 at one multiplier, when it keeps perplexity
    within the tolerance of plain RoPE at 1x; ``plain_finetuned_ratio``: plain RoPE fine-tuned as many
    steps (when the best setting is a fine-tuned method and that row exists), else ``None``."""

    multiplier: float
    setting: str
    ratio: float
    plain_finetuned_ratio: float | None = None


def _extension_condition(
    zero_shot: pd.DataFrame | None, finetune: pd.DataFrame | None, tol: float
) -> tuple[dict[str, Any], list[HeldSetting], dict[float, float]]:
    """Notebook 06's best setting at each multiplier: ``(evidence values, the settings that hold quality
    within tol, {multiplier: best ratio})``."""
    settings = E.extension_settings(zero_shot, finetune)
    values: dict[str, Any] = {}
    held: list[HeldSetting] = []
    best_ratio: dict[float, float] = {}
    if settings.empty:
        return values, held, best_ratio
    values["06: plain RoPE ppl at 1x"] = float(settings["ppl_1x"].iloc[0])
    for m, g in settings.groupby("multiplier"):
        best = g.iloc[0]  # sorted by ratio
        best_ratio[float(m)] = float(best["ratio"])
        values[f"06: best at {m:g}x"] = best["setting"]
        values[f"06: best ppl ratio at {m:g}x"] = float(best["ratio"])
        plain = g[(g["method"] == "none") & (g["ft_steps"] == 0)]
        if not plain.empty:
            values[f"06: plain RoPE ppl ratio at {m:g}x"] = float(plain["ratio"].iloc[0])
        plain_ft = None
        same_ft = g[(g["method"] == "none") & (g["ft_steps"] == best["ft_steps"])]
        if best["ft_steps"] > 0 and best["method"] != "none" and not same_ft.empty:
            plain_ft = float(same_ft["ratio"].iloc[0])
            values[f"06: plain RoPE + {int(best['ft_steps'])} fine-tune steps, ratio at {m:g}x"] = plain_ft
        if best["ratio"] <= 1 + tol:
            held.append(HeldSetting(float(m), str(best["setting"]), float(best["ratio"]), plain_ft))
    return values, held, best_ratio


def verdict_no_quality_loss(
    lm_summary: pd.DataFrame | None,
    zero_shot: pd.DataFrame | None = None,
    finetune: pd.DataFrame | None = None,
    gates: pd.DataFrame | None = None,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[Verdict, Evidence]:
    """C2: does RoPE's perplexity stay within ``quality_tolerance`` of its 1x value past the training length?

    Cells: (mode, multiplier > 1) of plain RoPE (05). If plain RoPE loses quality somewhere and one of
    notebook 06's context-extension settings (``06_zero_shot_ppl.csv``, ``06_finetune.csv``, rows of
    base models that passed their gate) holds quality, the verdict is "partly supported" with that
    condition. Not testable when no RoPE language model passed its gate (``04_gates``).
    """
    missing = first_missing(**{"05_lm_summary": lm_summary, "04_gates": gates})
    if missing:
        return missing
    tol = thresholds.quality_tolerance
    E.require_columns(lm_summary, E.LM_COLUMNS, "05_lm_summary")
    if not (lm_summary["encoding"] == "rope").any():
        return not_testable("05_lm_summary has no RoPE rows", "no RoPE rows")
    failed = E.gate_check(gates, ["rope"], kind="lm")
    if failed:
        return failed
    ratios = E.beyond(E.ppl_ratios(E.single_profile(lm_summary, "05_lm_summary"), "rope"))
    if ratios.empty:
        return not_testable("05_lm_summary has no RoPE rows past 1x", "no RoPE rows past 1x")
    ok = ratios["ratio"] <= 1 + tol
    ev: dict[str, Any] = {f"{r.mode} {r.multiplier:g}x: rope ppl / 1x": r.ratio for r in ratios.itertuples()}
    ev["tolerance"] = tol
    worst = ratios.loc[ratios["ratio"].idxmax()]
    if ok.all():
        verdict = Verdict("supported")
    elif not ok.any():
        verdict = Verdict("contradicted")
    else:
        cells = ", ".join(f"{r.multiplier:g}x {r.mode}" for r in ratios[ok].itertuples())
        verdict = Verdict("partly supported", f"only at {cells}")
    condition = ""
    if zero_shot is None and finetune is None:
        ev["condition (06)"] = missing_verdict("06_zero_shot_ppl.csv")
    elif not ok.all():
        values, held, best_ratio = _extension_condition(zero_shot, finetune, tol)
        ev.update(values)
        if held:
            top = max(held, key=lambda h: h.multiplier)
            plain = (
                f"; plain RoPE fine-tuned as long: x{top.plain_finetuned_ratio:.3f}"
                if top.plain_finetuned_ratio is not None
                else ""
            )
            condition = (
                f"; with context extension it holds up to {top.multiplier:g}x ({top.setting}: ppl x{top.ratio:.3f} "
                f"of plain RoPE at 1x{plain})"
            )
            if verdict.category == "contradicted":
                verdict = Verdict("partly supported", f"only with context extension: {top.setting}")
        else:
            shown = ", ".join(f"{m:g}x x{r:.2f}" for m, r in best_ratio.items())
            condition = f"; no context-extension setting of 06 stays within the tolerance either (best: {shown})"
    summary = (
        f"plain RoPE ppl rises to x{worst['ratio']:.2f} of its 1x value at {worst['multiplier']:g}x "
        f"({worst['mode']}); tolerance {tol:.0%}{condition}"
    )
    return verdict, Evidence(summary, ev)


# ---------------------------------------------------------------------------------------------
# C3
# ---------------------------------------------------------------------------------------------
def _rope_head_dim(runs: pd.DataFrame | None) -> int | None:
    """The trained RoPE model's head dim (``d_model / n_heads`` in ``04_runs.csv``), or ``None``."""
    if runs is None or not {"d_model", "n_heads", "encoding"} <= set(runs.columns):
        return None
    rope = runs[runs["encoding"] == "rope"]
    return None if rope.empty else int(rope["d_model"].iloc[0]) // int(rope["n_heads"].iloc[0])


def verdict_long_range_dependencies(
    retrieval: pd.DataFrame | None,
    gates: pd.DataFrame | None = None,
    runs: pd.DataFrame | None = None,
    *,
    model_head_dim: int | None = None,
    base: float = 10_000.0,
    train_length: int | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[Verdict, Evidence]:
    """C3: does RoPE keep far-apart tokens connected? Retrieval accuracy of the RoPE model by distance.

    Per task: short vs long distances at the training length (split at the median distance), and
    distances longer than any seen at 1x (longer inputs). Theory in the evidence: RoFormer's bound
    ``B(r)`` (``ropelib.analysis.decay_bound``) and the mean score of Gaussian q, k (Barbero et al.), at
    ``model_head_dim`` (default: the trained RoPE model's, from ``04_runs.csv``; 32 without it). Only the
    rows of RoPE models that passed their gate (``passed_gate``); not testable when, on a retrieval task,
    no RoPE model passed (``04_gates``).
    """
    missing = first_missing(**{"05_retrieval": retrieval, "04_gates": gates})
    if missing:
        return missing
    head_dim = model_head_dim or _rope_head_dim(runs) or 32
    E.require_columns(retrieval, ("encoding", "task", "multiplier", "distance", "accuracy"), "05_retrieval")
    ret = E.single_profile(retrieval, "05_retrieval")
    ret = ret[ret["encoding"] == "rope"]
    failures: dict[str, list] = {}
    for task in sorted(map(str, ret["task"].unique())):
        for enc, models in E.gate_failures(gates, ["rope"], task=task).items():
            failures.setdefault(enc, []).extend(models)
    if failures:
        return E.gate_verdict(failures)
    ret = E.passed_rows(ret)
    if "status" in ret.columns:
        ret = ret[ret["status"] == "ok"]
    ev: dict[str, Any] = {}
    L = train_length or (int(ret["train_length"].iloc[0]) if "train_length" in ret.columns and len(ret) else None)
    bound = ""
    if L:
        r = np.array([0, L, 8 * L], dtype=np.float64)
        B = A.decay_bound(r, head_dim, base)
        ev.update({"theory: B(0)": float(B[0]), f"theory: B({L})": float(B[1]), f"theory: B({8 * L})": float(B[2])})
        mean, _ = A.score_statistics(r, head_dim, base)
        ev["theory: mean Gaussian score at any r"] = float(np.max(np.abs(mean)))
        bound = (
            f"; RoFormer's own bound falls from {float(B[0]):.1f} to {float(B[1]):.1f} at r={L} "
            f"(it argues decay, not retention)"
        )
    verdicts: list[Verdict] = []
    notes: list[str] = []
    for task, group in ret.groupby("task"):
        at_1x = group[np.isclose(group["multiplier"], 1.0)]
        if at_1x.empty:
            continue
        split = float(at_1x["distance"].median())
        near = at_1x[at_1x["distance"] <= split]["accuracy"].mean()
        far = at_1x[at_1x["distance"] > split]["accuracy"].mean()
        beyond_rows = group[group["distance"] > at_1x["distance"].max()]
        beyond = beyond_rows["accuracy"].mean() if not beyond_rows.empty else math.nan
        ev[f"{task}: accuracy at 1x, distance <= {split:g}"] = float(near)
        ev[f"{task}: accuracy at 1x, distance > {split:g}"] = float(far)
        ev[f"{task}: accuracy at distances > {at_1x['distance'].max():g} (longer inputs)"] = float(beyond)
        if not near >= thresholds.min_learned_accuracy:
            verdicts.append(Verdict("not testable here", f"the RoPE model did not learn {task}: accuracy {near:.2f}"))
            notes.append(f"{task}: not learned ({near:.2f})")
            continue
        keep = thresholds.retention_fraction * near
        if np.isfinite(far) and far < keep:
            verdicts.append(Verdict("contradicted"))
            notes.append(f"{task}: {near:.2f} near vs {far:.2f} far even within the training length")
        elif not np.isfinite(beyond):
            verdicts.append(Verdict("partly supported", "beyond the training length not measured"))
            notes.append(f"{task}: {near:.2f} near, {far:.2f} far at 1x")
        elif beyond >= keep:
            verdicts.append(Verdict("supported"))
            notes.append(f"{task}: {near:.2f} near, {far:.2f} far, {beyond:.2f} past the training distances")
        else:
            verdicts.append(Verdict("partly supported", "only within the training length"))
            notes.append(f"{task}: {far:.2f} at far distances within the training length, {beyond:.2f} beyond")
    if not verdicts:
        return not_testable("no RoPE retrieval rows at 1x in 05_retrieval", "no RoPE rows", ev)
    testable = [v for v in verdicts if v.category != "not testable here"]
    if not testable:
        verdict = verdicts[0]
    elif len({v.category for v in testable}) == 1:
        verdict = testable[0]
    else:
        verdict = Verdict("partly supported", "differs between tasks")
    return verdict, Evidence("; ".join(notes) + bound, ev)


# ---------------------------------------------------------------------------------------------
# the claims
# ---------------------------------------------------------------------------------------------
CLAIMS: tuple[Claim, ...] = (
    Claim(
        "C2",
        "RoPE handles longer contexts without loss of quality",
        "A RoPE model keeps its output quality on contexts longer than it was trained on.",
        "Improvements Over Traditional Methods",
        f"ALiBi Table 1: rotary ppl {alibi_ppl('rope', 512)} at 512 -> {alibi_ppl('rope', 2512)} at 2512 -> "
        f"{alibi_ppl('rope', 15512)} at 15512. PI (arXiv 2306.15595) Table 1: LLaMA-7B > 1000 ppl past 2048 with no "
        f"extension; with PI and 1000 fine-tune steps 6.95 at 8192. YaRN (arXiv 2309.00071): 400 fine-tune "
        f"steps for s = 16. Long contexts need an extension method and usually a short fine-tune.",
        verdict_no_quality_loss,
        ("05_lm_summary.csv", "06_zero_shot_ppl.csv", "06_finetune.csv", "04_gates.csv"),
        (
            ("05_length_extrapolation", "perplexity_vs_length"),
            ("05_length_extrapolation", "loss_by_position"),
            ("06_context_extension", "zero_shot_ppl"),
            ("06_context_extension", "finetune_curve"),
        ),
    ),
    Claim(
        "C3",
        "RoPE's periodicity retains long-range dependencies",
        "Because RoPE is periodic, tokens stay connected whatever their distance in a long sequence.",
        "Mechanisms of Rotary Positional Embedding",
        "RoFormer §3.4.3 argues the opposite property, a long-term decay of the bound B(r); PI (arXiv "
        "2306.15595 §2.2) calls that bound vacuous; Barbero et al. (arXiv 2410.06205, Props 3.1–3.2): no "
        "decay in expectation for Gaussian q, k. Liu et al. (arXiv 2310.05209): low-frequency pairs meet "
        "unseen angles past L. Kazemnejad et al.: a 1024-context rotary code LM's ppl explodes by 1400 tokens.",
        verdict_long_range_dependencies,
        ("05_retrieval.csv", "04_gates.csv", "04_runs.csv"),
        (
            ("05_length_extrapolation", "accuracy_vs_length"),
            ("02_long_range_decay", "decay_bound_far"),
            ("02_long_range_decay", "bound_vs_scores"),
        ),
        options=("model_head_dim", "base"),
    ),
)
