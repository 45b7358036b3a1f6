"""The post's claims about extrapolation (C1, C5, C10), with their verdicts: the perplexity of RoPE and
of the traditional encodings (sinusoidal, learned) on inputs longer than the training length (05).

Each ``Claim`` (``ropelib.audit``) sits next to its verdict function, which reads the gated numbers of
notebook 05 through ``ropelib.evidence``; the rules are stated in ``ropelib.claims``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from . import evidence as E
from . import published
from .audit import (
    DEFAULT_THRESHOLDS,
    Claim,
    Evidence,
    Thresholds,
    Verdict,
    compare,
    first_missing,
    not_testable,
    tally,
)

__all__ = [
    "TRADITIONAL",
    "alibi_ppl",
    "verdict_extrapolation_vs_traditional",
    "verdict_sinusoidal_extrapolates",
    "verdict_traditional_decline",
    "CLAIMS",
]

TRADITIONAL = ("sinusoidal", "learned")


def _reference_ok(table: pd.DataFrame, gates: pd.DataFrame, encoding: str, ev: dict, *, kind: str = "lm") -> bool:
    """Whether a reference encoding (one that only adds a caveat) can be used: it is in ``table`` and
    one of its models passed its gate; a failed one is noted in ``ev``."""
    if not (table["encoding"] == encoding).any():
        return False
    if not E.gate_failures(gates, [encoding], kind=kind):
        return True
    ev[f"{encoding}: reference left out"] = "no model passed its gate"
    return False


# ---------------------------------------------------------------------------------------------
# C1
# ---------------------------------------------------------------------------------------------
def verdict_extrapolation_vs_traditional(
    lm_summary: pd.DataFrame | None, gates: pd.DataFrame | None = None, *, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[Verdict, Evidence]:
    """C1: RoPE's perplexity past the training length against sinusoidal and learned positions.

    Cells: every (mode, multiplier > 1) x comparator; a learned table undefined past its length loses.
    Not testable when RoPE or a comparator has no language model that passed its gate (``04_gates``).
    """
    missing = first_missing(**{"05_lm_summary": lm_summary, "04_gates": gates})
    if missing:
        return missing
    E.require_columns(lm_summary, E.LM_COLUMNS, "05_lm_summary")
    lm = E.single_profile(lm_summary, "05_lm_summary")
    multipliers = sorted(m for m in lm.loc[lm["encoding"] == "rope", "multiplier"].unique() if m > 1 + 1e-9)
    comparators = [c for c in TRADITIONAL if (lm["encoding"] == c).any()]
    if not multipliers or not comparators:
        return not_testable(
            "05_lm_summary has no RoPE rows past 1x or no traditional encoding",
            "no RoPE rows past 1x or no sinusoidal/learned rows",
        )
    failed = E.gate_check(gates, ["rope", *comparators], kind="lm")
    if failed:
        return failed
    ev: dict[str, Any] = {}
    nope_ok = _reference_ok(lm, gates, "nope", ev)
    outcomes: list[str] = []
    ppl: dict[tuple[str, float, str], float] = {}  # (mode, multiplier, encoding) -> mean ppl
    for mode in sorted(lm["mode"].unique()):
        for m in multipliers:
            rope = E.lm_estimate(lm, "rope", mode, m)
            if rope is None:
                continue
            for comp in comparators:
                other = E.lm_estimate(lm, comp, mode, m)
                if other is None:
                    continue
                outcome = compare(rope, other, lower_is_better=True)
                outcomes.append(outcome)
                ppl[(mode, m, "rope")], ppl[(mode, m, comp)] = rope.mean, other.mean
                ev[f"{mode} {m:g}x: rope ppl"] = rope.mean
                ev[f"{mode} {m:g}x: {comp} ppl"] = other.mean
                ev[f"{mode} {m:g}x: rope vs {comp}"] = outcome
    verdict = tally(outcomes)
    top = max(multipliers)
    best = lm[np.isclose(lm["multiplier"], top) & (lm["mode"] == "nonoverlap")].dropna(subset=["ppl_mean"])
    if not best.empty:
        b = best.loc[best["ppl_mean"].idxmin()]
        ev[f"best encoding at {top:g}x (nonoverlap)"] = str(b["encoding"])
        ev[f"best ppl at {top:g}x (nonoverlap)"] = float(b["ppl_mean"])
    cells_won = f"{sum(o == 'better' for o in outcomes)} of {len(outcomes)}"
    ev["cells won"] = cells_won
    rope_top = ppl.get(("nonoverlap", top, "rope"), math.nan)
    sin_top = ppl.get(("nonoverlap", top, "sinusoidal"), math.nan)
    learned_undefined = any(e == "learned" and not np.isfinite(v) for (_, _, e), v in ppl.items())
    summary = (
        f"RoPE beats sinusoidal/learned in {cells_won} (mode, length) cells; at {top:g}x "
        f"(non-overlapping) ppl RoPE {rope_top:.2f} vs sinusoidal {sin_top:.2f}"
        + ("; learned positions are undefined past 1x" if learned_undefined else "")
    )
    for mode in sorted(lm["mode"].unique()) if nope_ok else ():  # the no-position reference
        rope, nope = E.lm_estimate(lm, "rope", mode, top), E.lm_estimate(lm, "nope", mode, top)
        if rope is not None and nope is not None:
            outcome = compare(rope, nope, lower_is_better=True)
            ev[f"{mode} {top:g}x: nope ppl"] = nope.mean
            ev[f"{mode} {top:g}x: rope vs nope"] = outcome
            if outcome == "worse":
                summary += (
                    f"; at {top:g}x ({mode}) RoPE ({rope.mean:.2f}) is worse than no positions at all "
                    f"(NoPE {nope.mean:.2f})"
                )
    broken, sin_ppl, nope_ppl = E.worse_than_nope(lm, "sinusoidal")
    if broken:
        summary += (
            f"; our sinusoidal baseline is weak: worse than NoPE even at 1x (ppl {sin_ppl:.2f} vs {nope_ppl:.2f})"
        )
        if verdict == "supported":
            verdict = Verdict("supported", "against a weak sinusoidal baseline: worse than NoPE even at 1x")
    return verdict, Evidence(summary, ev)


# ---------------------------------------------------------------------------------------------
# C5, C10 — the post's two opposite statements about traditional encodings
# ---------------------------------------------------------------------------------------------
def _barely_uses_positions(without_positions: pd.DataFrame | None, encoding: str, tol: float, ev: dict) -> str:
    """A caveat (or ``""``) when removing ``encoding``'s position vectors changes its 1x perplexity by at most
    ``tol``: such a model reads little from its positions, so a flat curve past the training length is
    weak evidence that the encoding extrapolates. Adds the numbers to ``ev``."""
    use = E.position_use(without_positions, encoding)
    if use is None:
        return ""
    ppl, stripped = use
    ev[f"{encoding} ppl at 1x without its position vectors"] = stripped
    change = stripped / ppl - 1.0
    if change > tol:
        return ""
    return (
        f"a weak test: removing the position vectors from our {encoding} models changes their 1x perplexity "
        f"by {change:+.1%} ({ppl:.2f} -> {stripped:.2f}), so they barely use them"
    )


def _degradation_cells(lm: pd.DataFrame, encoding: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    ratios = E.beyond(E.ppl_ratios(lm, encoding))
    ev = {f"{r.mode} {r.multiplier:g}x: {encoding} ppl / 1x": r.ratio for r in ratios.itertuples()}
    return ratios, ev


def _share_verdict(flags: pd.Series | list[bool]) -> Verdict:
    """supported when every flag holds, contradicted when none does, partly supported otherwise."""
    flags = list(flags)
    return Verdict("supported" if all(flags) else "contradicted" if not any(flags) else "partly supported")


def verdict_sinusoidal_extrapolates(
    lm_summary: pd.DataFrame | None,
    without_positions: pd.DataFrame | None = None,
    gates: pd.DataFrame | None = None,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[Verdict, Evidence]:
    """C5: does the sinusoidal model keep its 1x perplexity (within ``quality_tolerance``) on longer inputs?

    With ``05_without_positions.csv`` (optional): when removing the sinusoids barely changes the 1x
    perplexity, the verdict carries the caveat that the test is weak (``_barely_uses_positions``).
    Not testable when no sinusoidal language model passed its gate (``04_gates``); NoPE, the reference
    of the weak-baseline check, is left out when none of its models passed."""
    missing = first_missing(**{"05_lm_summary": lm_summary, "04_gates": gates})
    if missing:
        return missing
    lm = E.single_profile(lm_summary, "05_lm_summary")
    E.require_columns(lm, E.LM_COLUMNS, "05_lm_summary")
    if not (lm["encoding"] == "sinusoidal").any():
        return not_testable("05_lm_summary has no sinusoidal rows", "no sinusoidal rows")
    failed = E.gate_check(gates, ["sinusoidal"], kind="lm")
    if failed:
        return failed
    ratios, ev = _degradation_cells(lm, "sinusoidal")
    if ratios.empty:
        return not_testable("no sinusoidal rows past 1x", "no sinusoidal rows past 1x")
    ok = ratios["ratio"] <= 1 + thresholds.quality_tolerance
    verdict = _share_verdict(ok)
    if _reference_ok(lm, gates, "nope", ev):
        nope = E.beyond(E.ppl_ratios(lm, "nope"))
        ev.update({f"{r.mode} {r.multiplier:g}x: nope ppl / 1x": r.ratio for r in nope.itertuples()})
    worst = ratios.loc[ratios["ratio"].idxmax()]
    summary = (
        f"sinusoidal ppl reaches x{worst['ratio']:.2f} of its 1x value at {worst['multiplier']:g}x "
        f"({worst['mode']}); within {thresholds.quality_tolerance:.0%} in {int(ok.sum())} of {len(ok)} "
        f"cells"
    )
    broken, ppl, nope_ppl = E.worse_than_nope(lm, "sinusoidal")
    ev["sinusoidal ppl at 1x"], ev["nope ppl at 1x"] = ppl, nope_ppl
    if broken:
        verdict = Verdict(
            "not testable here",
            f"our sinusoidal model is worse than NoPE at the training length: ppl "
            f"{ppl:.2f} vs {nope_ppl:.2f}, so its flat curve does not show extrapolation",
        )
        summary += f"; but at 1x it is worse than no positional encoding (ppl {ppl:.2f} vs NoPE {nope_ppl:.2f})"
        return verdict, Evidence(summary, ev)
    caveat = _barely_uses_positions(without_positions, "sinusoidal", thresholds.quality_tolerance, ev)
    if caveat:
        verdict = Verdict(verdict.category, caveat)
        summary += f"; {caveat}"
    return verdict, Evidence(summary, ev)


def verdict_traditional_decline(
    lm_summary: pd.DataFrame | None,
    without_positions: pd.DataFrame | None = None,
    gates: pd.DataFrame | None = None,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[Verdict, Evidence]:
    """C10: do traditional encodings decline past the training length? Sinusoidal perplexity above
    ``1 + quality_tolerance`` times its 1x value, learned undefined (a decline to nothing). The caveat of
    C5 (``05_without_positions.csv``, optional) is added when the sinusoidal models barely use positions.
    Not testable when the sinusoidal or the learned encoding (those in the table) has no language model
    that passed its gate (``04_gates``)."""
    missing = first_missing(**{"05_lm_summary": lm_summary, "04_gates": gates})
    if missing:
        return missing
    lm = E.single_profile(lm_summary, "05_lm_summary")
    E.require_columns(lm, E.LM_COLUMNS, "05_lm_summary")
    failed = E.gate_check(gates, [e for e in TRADITIONAL if (lm["encoding"] == e).any()], kind="lm")
    if failed:
        return failed
    tol = thresholds.quality_tolerance
    declines: list[bool] = []
    ev: dict[str, Any] = {}
    why = ""
    if (lm["encoding"] == "sinusoidal").any():
        ratios, ev = _degradation_cells(lm, "sinusoidal")
        broken, ppl, nope_ppl = E.worse_than_nope(lm, "sinusoidal")
        if broken:  # a model that never learned to use its positions cannot show whether they extrapolate
            why = f"sinusoidal left out: worse than NoPE at 1x, ppl {ppl:.2f} vs {nope_ppl:.2f}"
        else:
            declines += list(ratios["ratio"] > 1 + tol)
    if (lm["encoding"] == "learned").any():
        learned = E.beyond(E.ppl_ratios(lm, "learned"))
        ev["learned: cells past 1x without a value"] = int(learned["ratio"].isna().sum())
        declines += [bool(np.isnan(x) or x > 1 + tol) for x in learned["ratio"]]
    if not declines:
        note = f"no usable sinusoidal/learned rows past 1x{'; ' + why if why else ''}"
        return not_testable(f"no usable traditional rows past 1x{'; ' + why if why else ''}", note, ev)
    verdict = _share_verdict(declines)
    caveat = "" if why else _barely_uses_positions(without_positions, "sinusoidal", tol, ev)
    if why:
        verdict = Verdict(verdict.category, f"learned positions only; {why}")
    elif caveat:
        verdict = Verdict(verdict.category, f"sinusoidal is {caveat}")
    summary = (
        f"traditional encodings lose quality (or are undefined) in {sum(declines)} of {len(declines)} "
        f"(encoding, mode, length) cells past 1x{'; ' + why if why else ''}"
        f"{'; sinusoidal is ' + caveat if caveat else ''}"
    )
    return verdict, Evidence(summary, ev)


# ---------------------------------------------------------------------------------------------
# the claims
# ---------------------------------------------------------------------------------------------
def alibi_ppl(enc: str, length: int) -> str:
    """A perplexity of the ALiBi paper's Table 1 (``ropelib.published.ALIBI_TABLE1``), as cited."""
    return f"{published.ALIBI_TABLE1[length][enc]:g}"


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "C1",
        "RoPE extrapolates past the training length better than traditional encodings",
        "Rotating queries and keys lets a model extrapolate beyond its training context more effectively "
        "than sinusoidal or learned absolute positions.",
        "Introduction to Rotary Positional Embedding",
        f"ALiBi paper Table 1 (arXiv 2108.12409, trained at 512): at 2512 tokens rotary {alibi_ppl('rope', 2512)} vs "
        f"sinusoidal {alibi_ppl('sinusoidal', 2512)} ppl — better than sinusoidal, but far behind T5 "
        f"({alibi_ppl('t5', 2512)}) and ALiBi ({alibi_ppl('alibi', 2512)}). RoFormer (arXiv 2104.09864) does not test "
        f"extrapolation. Kazemnejad et al. (arXiv 2305.19466): MRR rotary {published.KAZEMNEJAD_MRR['rope']} "
        f"vs absolute {published.KAZEMNEJAD_MRR['learned']}, NoPE {published.KAZEMNEJAD_MRR['nope']}.",
        verdict_extrapolation_vs_traditional,
        ("05_lm_summary.csv", "04_gates.csv"),
        (("05_length_extrapolation", "perplexity_vs_length"),),
    ),
    Claim(
        "C5",
        "Sinusoidal encodings extrapolate beyond the training length",
        "Fixed sinusoidal positions let a model generalise to sequences longer than those seen in training.",
        "Understanding Positional Embeddings",
        f"Vaswani et al. (§3.5) only hypothesised it. ALiBi Table 1: sinusoidal ppl {alibi_ppl('sinusoidal', 512)} "
        f"at 512 -> {alibi_ppl('sinusoidal', 1012)} at 1012 -> {alibi_ppl('sinusoidal', 15512)} at 15512.",
        verdict_sinusoidal_extrapolates,
        ("05_lm_summary.csv", "05_without_positions.csv", "04_gates.csv"),
        (("05_length_extrapolation", "perplexity_vs_length"),),
    ),
    Claim(
        "C10",
        "Traditional encodings decline markedly beyond the training length",
        "Fixed (sinusoidal or learned) positions lose much quality on sequences longer than in training "
        "(the post says the opposite of sinusoidal encodings in C5).",
        "Challenges with Traditional Positional Embeddings",
        f"ALiBi Table 1: sinusoidal ppl {alibi_ppl('sinusoidal', 512)} -> {alibi_ppl('sinusoidal', 1012)} at ~2x. "
        f"Kazemnejad et al.: absolute MRR {published.KAZEMNEJAD_MRR['learned']}, the lowest. Learned tables are "
        f"undefined past their length.",
        verdict_traditional_decline,
        ("05_lm_summary.csv", "05_without_positions.csv", "04_gates.csv"),
        (("05_length_extrapolation", "perplexity_vs_length"),),
    ),
)
