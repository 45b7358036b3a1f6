"""Tests of ``ropelib.claims``: every verdict branch on synthetic tables, and the committed verdicts
against the committed results."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib import claims as C
from ropelib.encodings.sinusoidal import sinusoidal_table
from ropelib.paths import REPO_ROOT

MULTS = (1.0, 2.0, 4.0)
MODES = ("nonoverlap", "sliding")


# ---------------------------------------------------------------------------------------------
# synthetic tables (schema of results/README.md)
# ---------------------------------------------------------------------------------------------
def lm_summary(ppl: dict[str, dict[float, float]], half_width: float = 0.01, modes=MODES) -> pd.DataFrame:
    """``{encoding: {multiplier: ppl}}`` -> a 05_lm_summary table (same values in every mode)."""
    rows = []
    for enc, by_mult in ppl.items():
        for mode in modes:
            for m, p in by_mult.items():
                rows.append({"profile": "default", "encoding": enc, "train_length": 64, "length": int(64 * m),
                             "multiplier": m, "mode": mode, "n_seeds": 3, "loss_mean": math.log(p),
                             "loss_ci_low": math.nan, "loss_ci_high": math.nan, "ppl_mean": p,
                             "ppl_ci_low": p - half_width, "ppl_ci_high": p + half_width})
    return pd.DataFrame(rows)


def summary04(values: dict[tuple[str, str, str], float], half_width: float = 0.01) -> pd.DataFrame:
    """``{(encoding, task, metric): mean}`` -> a 04_summary table."""
    rows = [{"profile": "default", "encoding": e, "task": t, "metric": m, "n_seeds": 3, "mean": v,
             "ci_low": v - half_width, "ci_high": v + half_width} for (e, t, m), v in values.items()]
    return pd.DataFrame(rows)


def retrieval(acc: dict[tuple[float, int], float], task: str = "kv_recall", encoding: str = "rope") -> pd.DataFrame:
    """``{(multiplier, distance): accuracy}`` -> a 05_retrieval table (two seeds, same accuracy)."""
    rows = [{"profile": "default", "encoding": encoding, "task": task, "seed": s, "run_hash": "x", "train_length": 64,
             "length": int(64 * m), "multiplier": m, "distance": d, "accuracy": a, "token_accuracy": a,
             "n_samples": 32, "status": "ok", "reason": ""}
            for (m, d), a in acc.items() for s in (0, 1)]
    return pd.DataFrame(rows)


FLAT = {1.0: 5.0, 2.0: 5.0, 4.0: 5.05}
RISING = {1.0: 5.0, 2.0: 9.0, 4.0: 30.0}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def test_verdict_category_and_missing_message():
    assert C.verdict_category("partly supported (only at 2x)") == "partly supported"
    assert C.verdict_category("supported") == "supported"
    msg = C.missing_verdict("05_lm_summary.csv")
    assert msg == "not testable here (missing results/05_lm_summary.csv: run notebook 05)"
    assert C.verdict_category(msg) == "not testable here"
    with pytest.raises(ValueError, match="does not start with one of"):
        C.verdict_category("probably true")


def test_thresholds_validate():
    with pytest.raises(ValueError, match="quality_tolerance"):
        C.Thresholds(quality_tolerance=-0.1)
    with pytest.raises(ValueError, match="retention_fraction"):
        C.Thresholds(retention_fraction=1.5)


def test_compare_uses_confidence_intervals():
    a, b = C.Estimate(1.0, 0.9, 1.1), C.Estimate(2.0, 1.9, 2.1)
    assert C.compare(a, b, lower_is_better=True) == "better"
    assert C.compare(a, b, lower_is_better=False) == "worse"
    assert C.compare(a, C.Estimate(1.05, 1.0, 1.1), lower_is_better=True) == "tie"
    assert C.compare(a, C.Estimate(math.nan), lower_is_better=True) == "better"  # undefined loses
    assert C.compare(C.Estimate(1.0), C.Estimate(1.0 + 1e-9), lower_is_better=True) == "better"  # one seed: a point


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 10), st.floats(0, 2), st.floats(0, 10), st.floats(0, 2), st.booleans())
def test_compare_is_antisymmetric(m1, w1, m2, w2, lower):
    a, b = C.Estimate(m1, m1 - w1, m1 + w1), C.Estimate(m2, m2 - w2, m2 + w2)
    flip = {"better": "worse", "worse": "better", "tie": "tie"}
    assert C.compare(b, a, lower_is_better=lower) == flip[C.compare(a, b, lower_is_better=lower)]


def test_ppl_ratios():
    r = C.ppl_ratios(lm_summary({"rope": RISING}), "rope")
    assert set(r["mode"]) == set(MODES)
    assert r.loc[(r["mode"] == "sliding") & (r["multiplier"] == 4.0), "ratio"].item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="no rows for encoding 'alibi'"):
        C.ppl_ratios(lm_summary({"rope": RISING}), "alibi")


def test_read_table_missing_and_profiles(tmp_path):
    assert C.read_table("05_lm_summary.csv", tmp_path) is None
    both = pd.concat([lm_summary({"rope": FLAT}), lm_summary({"rope": RISING}).assign(profile="smoke")])
    both.to_csv(tmp_path / "05_lm_summary.csv", index=False)
    with pytest.raises(ValueError, match="holds profiles"):
        C.read_table("05_lm_summary.csv", tmp_path)
    smoke = C.read_table("05_lm_summary.csv", tmp_path, profile="smoke")
    assert set(smoke["profile"]) == {"smoke"} and smoke["ppl_mean"].max() == 30.0
    with pytest.raises(ValueError, match="unknown results table"):
        C.read_table("99_nothing.csv", tmp_path)


# ---------------------------------------------------------------------------------------------
# every table-based claim: missing table -> not testable, no crash
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("claim", [c for c in C.CLAIMS if c.tables], ids=lambda c: c.id)
def test_missing_tables_give_not_testable(claim):
    result = C.evaluate_claim(claim, {})
    first = claim.tables[0]
    assert result.verdict == f"not testable here (missing results/{first}: run notebook {first[:2]})"


# ---------------------------------------------------------------------------------------------
# C1 — extrapolation vs traditional
# ---------------------------------------------------------------------------------------------
def test_c1_branches():
    learned_nan = {1.0: 5.0, 2.0: math.nan, 4.0: math.nan}
    v, ev = C.verdict_extrapolation_vs_traditional(lm_summary({"rope": {1.0: 5, 2.0: 6, 4.0: 9},
                                                               "sinusoidal": RISING, "learned": learned_nan}))
    assert v == "supported"
    assert ev["nonoverlap 4x: rope ppl"] == 9 and ev["nonoverlap 4x: sinusoidal ppl"] == 30.0
    v, _ = C.verdict_extrapolation_vs_traditional(lm_summary({"rope": {1.0: 5, 2.0: 20, 4.0: 40},
                                                              "sinusoidal": RISING}))
    assert v == "contradicted"
    v, _ = C.verdict_extrapolation_vs_traditional(lm_summary({"rope": {1.0: 5, 2.0: 20, 4.0: 40},
                                                              "sinusoidal": RISING, "learned": learned_nan}))
    assert v == "partly supported"  # beats only the undefined learned table
    v, _ = C.verdict_extrapolation_vs_traditional(lm_summary({"rope": RISING, "sinusoidal": RISING}))
    assert C.verdict_category(v) == "not testable here"  # all ties


# ---------------------------------------------------------------------------------------------
# C2 — no loss of quality, with the context-extension condition
# ---------------------------------------------------------------------------------------------
def zero_shot(ppl: dict[tuple[str, float, float], float]) -> pd.DataFrame:
    """``{(method, factor, multiplier): ppl}`` -> a 06_zero_shot_ppl table (two seeds, same value)."""
    return pd.DataFrame([{"profile": "default", "task": "chars", "seed": s, "run_hash": "x", "method": m, "factor": f,
                          "train_length": 64, "length": int(64 * x), "multiplier": x, "loss": math.log(p), "ppl": p,
                          "n_tokens": 1000} for (m, f, x), p in ppl.items() for s in (0, 1)])


def finetune(ppl: dict[tuple[str, int, float], float]) -> pd.DataFrame:
    """``{(method, ft_steps, multiplier): ppl}`` -> a 06_finetune table (chars ppl rows, plus a distractor)."""
    rows = [{"profile": "default", "task": "chars", "seed": 0, "method": m, "factor": 4.0, "ft_steps": k,
             "run_hash": "x", "train_length": 64, "ft_length": 256, "length": int(64 * x), "multiplier": x,
             "metric": "ppl", "value": p} for (m, k, x), p in ppl.items()]
    rows.append({**rows[0], "task": "passkey", "metric": "accuracy", "value": 0.0})
    return pd.DataFrame(rows)


def test_c2_branches():
    ext_missing = C.missing_verdict("06_zero_shot_ppl.csv")
    v, ev = C.verdict_no_quality_loss(lm_summary({"rope": FLAT}))
    assert v == "supported" and ev["condition (06)"] == ext_missing
    v, ev = C.verdict_no_quality_loss(lm_summary({"rope": RISING}))
    assert v == "contradicted" and ev["sliding 2x: rope ppl / 1x"] == pytest.approx(1.8)
    v, _ = C.verdict_no_quality_loss(lm_summary({"rope": {1.0: 5.0, 2.0: 5.1, 4.0: 30.0}}))
    assert v == "partly supported (only at 2x nonoverlap, 2x sliding)"
    # a loose tolerance turns the same numbers into "supported"
    v, _ = C.verdict_no_quality_loss(lm_summary({"rope": RISING}), thresholds=C.Thresholds(quality_tolerance=10))
    assert v == "supported"


ZS = {("none", 2.0, 1.0): 5.0, ("none", 2.0, 2.0): 9.0, ("none", 2.0, 4.0): 30.0,
      ("linear", 2.0, 1.0): 6.0, ("linear", 2.0, 2.0): 8.0, ("linear", 4.0, 4.0): 12.0}


def test_extension_settings():
    s = C.extension_settings(zero_shot(ZS), finetune({("none", 0, 1.0): 5.0, ("linear", 0, 4.0): 12.0,
                                                       ("linear", 30, 4.0): 5.2, ("none", 30, 4.0): 6.0}))
    assert set(s["ppl_1x"]) == {5.0}
    at4 = s[s["multiplier"] == 4.0]
    assert list(at4["setting"]) == ["linear + 30 fine-tune steps", "plain RoPE + 30 fine-tune steps",
                                    "linear, no fine-tune", "plain RoPE, no fine-tune"]
    assert at4["ratio"].iloc[0] == pytest.approx(5.2 / 5.0)
    # a method's rows at lengths other than factor * L are not its setting: linear at factor 2 has no 4x row
    assert len(s[(s["method"] == "linear") & (s["ft_steps"] == 0)]) == 2


def test_c2_condition_from_extension():
    ft = finetune({("none", 0, 1.0): 5.0, ("linear", 30, 4.0): 5.2, ("none", 30, 4.0): 6.0})
    v, ev = C.verdict_no_quality_loss(lm_summary({"rope": RISING}), zero_shot(ZS), ft)
    assert v == "partly supported (only with context extension: linear + 30 fine-tune steps)"
    assert ev["06: plain RoPE + 30 fine-tune steps, ratio at 4x"] == pytest.approx(6.0 / 5.0)
    assert "plain RoPE fine-tuned as long: x1.200" in ev["summary"]
    assert ev["06: best ppl ratio at 4x"] == pytest.approx(5.2 / 5.0)
    assert ev["06: plain RoPE ppl ratio at 2x"] == pytest.approx(9.0 / 5.0)
    assert "with context extension it holds up to 4x" in ev["summary"]
    v, ev = C.verdict_no_quality_loss(lm_summary({"rope": RISING}), zero_shot(ZS), None)
    assert v == "contradicted" and "no context-extension setting of 06 stays within" in ev["summary"]


# ---------------------------------------------------------------------------------------------
# C3 — long-range dependencies
# ---------------------------------------------------------------------------------------------
def test_c3_branches():
    def table(near, far, beyond):
        return retrieval({(1.0, 4): near, (1.0, 8): near, (1.0, 40): far, (1.0, 60): far,
                          (2.0, 100): beyond, (4.0, 200): beyond})

    v, ev = C.verdict_long_range_dependencies(table(1.0, 0.95, 0.9), model_head_dim=32)
    assert v == "supported"
    assert ev["theory: B(0)"] == pytest.approx((32 / 2 + 1) / 2)
    assert ev["theory: mean Gaussian score at any r"] == 0.0
    v, _ = C.verdict_long_range_dependencies(table(1.0, 0.95, 0.1))
    assert v == "partly supported (only within the training length)"
    v, _ = C.verdict_long_range_dependencies(table(1.0, 0.3, 0.1))
    assert v == "contradicted"
    v, _ = C.verdict_long_range_dependencies(table(0.2, 0.2, 0.1))
    assert v == "not testable here (the RoPE model did not learn kv_recall: accuracy 0.20)"
    # rows of other encodings are ignored
    v, _ = C.verdict_long_range_dependencies(retrieval({(1.0, 4): 1.0, (1.0, 40): 1.0}, encoding="alibi"))
    assert C.verdict_category(v) == "not testable here"


# ---------------------------------------------------------------------------------------------
# C4, C9 — computed from ropelib, no tables
# ---------------------------------------------------------------------------------------------
def test_blog_formula_is_the_sinusoidal_table():
    table = C.blog_formula_table(50, 16)
    assert np.abs(table - sinusoidal_table(50, 16).double().numpy()).max() < 1e-6
    assert table[0].tolist() == [0.0, 1.0] * 8  # position 0: sin 0, cos 0 for every pair
    with pytest.raises(ValueError, match="d_model must be an even integer"):
        C.blog_formula_table(4, 7)


def test_c4_and_c9():
    v, ev = C.verdict_blog_formula(length=32, d_model=16)
    assert v == "contradicted"
    assert ev["max |blog formula - sinusoidal table|"] < 1e-6
    assert ev["Toeplitz deviation, vectors added (sinusoidal)"] > 0.01 > ev["Toeplitz deviation, q/k rotated (RoPE)"]
    v, ev = C.verdict_relative_position(length=32, head_dim=16)
    assert v == "supported" and ev["Toeplitz deviation (relative): rope"] < 1e-5
    v, _ = C.verdict_relative_position(length=32, head_dim=16, thresholds=C.Thresholds(relative_tolerance=0.0))
    assert v == "contradicted"  # float32 rounding is above a zero tolerance


# ---------------------------------------------------------------------------------------------
# C5, C10 — the post's two opposite statements about traditional encodings
# ---------------------------------------------------------------------------------------------
def test_c5_c10_are_mirror_images():
    rising = lm_summary({"sinusoidal": RISING, "learned": {1.0: 5.0, 2.0: math.nan, 4.0: math.nan}})
    assert C.verdict_sinusoidal_extrapolates(rising)[0] == "contradicted"
    v, ev = C.verdict_traditional_decline(rising)
    assert v == "supported" and ev["learned: cells past 1x without a value"] == 4
    flat = lm_summary({"sinusoidal": FLAT})
    assert C.verdict_sinusoidal_extrapolates(flat)[0] == "supported"
    assert C.verdict_traditional_decline(flat)[0] == "contradicted"
    mixed = lm_summary({"sinusoidal": {1.0: 5.0, 2.0: 5.1, 4.0: 30.0}})
    assert C.verdict_sinusoidal_extrapolates(mixed)[0] == "partly supported"
    assert C.verdict_traditional_decline(mixed)[0] == "partly supported"


def test_weak_sinusoidal_baseline_is_not_evidence():
    """A sinusoidal model worse than NoPE at 1x stays flat because it never used its positions."""
    weak = lm_summary({"sinusoidal": {1.0: 20.0, 2.0: 20.0, 4.0: 20.0}, "nope": {1.0: 10.0, 2.0: 10.0, 4.0: 10.0},
                       "learned": {1.0: 9.0, 2.0: math.nan, 4.0: math.nan}, "rope": {1.0: 8.0, 2.0: 9.0, 4.0: 12.0}})
    assert C.worse_than_nope(weak, "sinusoidal") == (True, 20.0, 10.0)
    assert C.worse_than_nope(weak, "rope")[0] is False
    v, _ = C.verdict_sinusoidal_extrapolates(weak)
    assert v.startswith("not testable here (our sinusoidal model is worse than NoPE")
    v, ev = C.verdict_traditional_decline(weak)
    assert v == "supported (learned positions only; sinusoidal left out: worse than NoPE at 1x, ppl 20.00 vs 10.00)"
    v, ev = C.verdict_extrapolation_vs_traditional(weak)
    assert v == "supported (against a weak sinusoidal baseline: worse than NoPE even at 1x)"
    assert ev["sliding 4x: rope vs nope"] == "worse" and "worse than no positions at all" in ev["summary"]


def test_sinusoidal_models_that_barely_use_positions_are_a_weak_test():
    """05_without_positions.csv: removing the sinusoids changes the 1x perplexity by at most the tolerance."""
    flat = lm_summary({"sinusoidal": FLAT})
    barely = pd.DataFrame({"encoding": ["sinusoidal"] * 2, "ppl": [10.0, 12.0], "ppl_without_positions": [10.1, 12.1]})
    assert C.position_use(barely, "sinusoidal") == (11.0, 11.1)
    assert C.position_use(barely, "learned") is None and C.position_use(None, "sinusoidal") is None
    v, ev = C.verdict_sinusoidal_extrapolates(flat, barely)
    assert v.startswith("supported (a weak test: removing the position vectors from our sinusoidal models changes")
    assert "+0.9%" in v and ev["sinusoidal ppl at 1x without its position vectors"] == 11.1
    v, ev = C.verdict_traditional_decline(flat, barely)
    assert v.startswith("contradicted (sinusoidal is a weak test") and "barely use them" in ev["summary"]
    used = barely.assign(ppl_without_positions=[15.0, 18.0])  # +50%: the positions matter
    assert C.verdict_sinusoidal_extrapolates(flat, used)[0] == "supported"
    assert C.verdict_traditional_decline(flat, used)[0] == "contradicted"
    assert C.verdict_sinusoidal_extrapolates(flat)[0] == "supported"  # the table is optional
    with pytest.raises(ValueError, match="ppl_without_positions"):
        C.verdict_sinusoidal_extrapolates(flat, barely.drop(columns="ppl_without_positions"))


# ---------------------------------------------------------------------------------------------
# C6, C7, C8 — pairwise comparisons in 04_summary
# ---------------------------------------------------------------------------------------------
def quality(rope_loss, sin_loss, learned_loss, rope_acc=0.9, sin_acc=0.5, learned_acc=0.5):
    return summary04({("rope", "chars", "val_loss"): rope_loss, ("sinusoidal", "chars", "val_loss"): sin_loss,
                      ("learned", "chars", "val_loss"): learned_loss, ("rope", "kv_recall", "accuracy"): rope_acc,
                      ("sinusoidal", "kv_recall", "accuracy"): sin_acc, ("learned", "kv_recall", "accuracy"): learned_acc})


def test_c8_rope_outperforms_branches():
    v, ev = C.verdict_rope_outperforms(quality(1.0, 1.5, 1.5))
    assert v == "supported" and ev["kv_recall accuracy: rope vs learned"] == "better"
    assert C.verdict_rope_outperforms(quality(2.0, 1.5, 1.5, rope_acc=0.1))[0] == "contradicted"
    assert C.verdict_rope_outperforms(quality(2.0, 1.5, 1.5, rope_acc=0.9))[0] == "partly supported"
    v, _ = C.verdict_rope_outperforms(quality(1.0, 1.0, 1.0, 0.5, 0.5, 0.5))
    assert v == "not testable here (every difference is within the seed noise)"


def test_c6_learned_richer_direction():
    # learned has the lowest loss and the highest accuracy -> supported; metric directions matter
    assert C.verdict_learned_richer(quality(1.5, 1.5, 1.0, 0.5, 0.5, 0.9))[0] == "supported"
    assert C.verdict_learned_richer(quality(1.0, 1.0, 1.5, 0.9, 0.9, 0.1))[0] == "contradicted"


def throughput(speeds: dict[str, list[float]]) -> pd.DataFrame:
    """``{encoding: [tokens/s per round]}`` -> a 04_throughput table."""
    return pd.DataFrame([{"profile": "default", "encoding": e, "task": "chars", "seq_len": 64, "batch_size": 16,
                          "round": i, "tokens_per_s": v} for e, vs in speeds.items() for i, v in enumerate(vs)])


def test_paired_speed_ratio_matches_scipy():
    from scipy import stats

    tp = throughput({"rope": [90.0, 95.0, 80.0], "sinusoidal": [100.0, 100.0, 100.0]})
    r = C.paired_speed_ratio(tp, "rope", "sinusoidal")
    ratios = np.array([0.9, 0.95, 0.8])
    lo, hi = stats.t.interval(0.95, 2, loc=ratios.mean(), scale=stats.sem(ratios))
    assert (r.mean, r.ci_low, r.ci_high, r.n_seeds) == pytest.approx((ratios.mean(), lo, hi, 3))
    assert C.paired_speed_ratio(tp, "rope", "alibi") is None


def test_c7_speed():
    # the machine slows down between rounds; the paired ratio still sees RoPE 10% slower
    slow = throughput({"rope": [900, 450, 180], "sinusoidal": [1000, 500, 200], "learned": [1000, 500, 200]})
    v, ev = C.verdict_rope_faster(slow)
    assert v == "contradicted" and ev["rope / sinusoidal tokens per s"] == pytest.approx(0.9)
    fast = throughput({"rope": [1200, 600, 240], "sinusoidal": [1000, 500, 200], "learned": [1000, 500, 200]})
    assert C.verdict_rope_faster(fast)[0] == "supported"
    noisy = throughput({"rope": [1100, 450, 200], "sinusoidal": [1000, 500, 200], "learned": [1000, 500, 200]})
    assert C.verdict_category(C.verdict_rope_faster(noisy)[0]) == "not testable here"


# ---------------------------------------------------------------------------------------------
# the audit as a whole
# ---------------------------------------------------------------------------------------------
def synthetic_tables():
    lm = lm_summary({"rope": {1.0: 5, 2.0: 6, 4.0: 9}, "sinusoidal": RISING,
                     "learned": {1.0: 5.0, 2.0: math.nan, 4.0: math.nan}})
    runs = pd.DataFrame([{"encoding": "rope", "d_model": 64, "n_heads": 4}])
    return {"05_lm_summary.csv": lm, "04_summary.csv": quality(1.0, 1.5, 1.5), "04_runs.csv": runs,
            "05_retrieval.csv": retrieval({(1.0, 4): 1.0, (1.0, 40): 1.0, (2.0, 100): 0.2})}


def test_audit_and_write(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPELIB_RESULTS_DIR", str(tmp_path))
    results = C.audit(synthetic_tables())
    assert [r.claim.id for r in results] == [c.id for c in C.CLAIMS]
    by_id = {r.claim.id: r for r in results}
    assert by_id["C1"].verdict == "supported"
    assert by_id["C3"].evidence["theory: B(0)"] == pytest.approx((16 / 2 + 1) / 2)  # head_dim 64/4 from 04_runs
    assert by_id["C11"].category == "not testable here"
    path = C.write_verdicts(results, "default")
    assert path == tmp_path / "07_claims.csv"
    back = pd.read_csv(path)
    assert list(back["verdict"]) == [r.verdict for r in results]
    assert json.loads(back.loc[0, "evidence_json"])["nonoverlap 4x: rope ppl"] == "9"
    table = C.verdict_table(results)
    assert list(table.columns) == ["id", "claim", "section", "verdict", "evidence", "figures", "literature"]


def test_every_claim_is_complete():
    ids = [c.id for c in C.CLAIMS]
    assert len(set(ids)) == len(ids)
    text = (REPO_ROOT.parent / "shared" / "seed" / "rope-long-context-blog-post.txt")
    headings = text.read_text(encoding="utf-8") if text.exists() else None
    for c in C.CLAIMS:
        assert c.paraphrase and c.literature and c.short
        if headings is not None:
            assert c.section in headings, f"{c.id}: section {c.section!r} is not a heading of the post"
        for name in c.tables:
            assert name in C.TABLE_NOTEBOOK


# ---------------------------------------------------------------------------------------------
# the committed verdicts match the committed results
# ---------------------------------------------------------------------------------------------
def test_committed_verdicts_match_committed_results():
    committed = REPO_ROOT / "results" / "07_claims.csv"
    if not committed.exists():
        pytest.skip("results/07_claims.csv not committed yet (run notebook 07)")
    verdicts = pd.read_csv(committed)
    profile = str(verdicts["profile"].iloc[0])
    tables = C.load_tables(REPO_ROOT / "results", profile=profile)
    recomputed = {r.claim.id: r.verdict for r in C.audit(tables)}
    assert dict(zip(verdicts["claim_id"], verdicts["verdict"])) == recomputed


def test_claim_figures_are_saved_by_their_notebooks():
    """Each figure a claim links to is written by a ``savefig(fig, "<name>", …)`` call of its notebook."""
    for c in C.CLAIMS:
        for nb, name in c.figures:
            source = REPO_ROOT / "notebooks" / f"{nb}.py"
            if not source.exists():
                pytest.skip(f"notebooks/{nb}.py not in this checkout")
            assert f'savefig(fig, "{name}"' in source.read_text(encoding="utf-8"), f"{c.id}: {nb}/{name}"


def test_pairwise_caveat_for_weak_sinusoidal():
    table = pd.concat([quality(1.0, 3.0, 1.5), summary04({("nope", "chars", "val_loss"): 2.0})])
    assert "caveat: our sinusoidal model is worse than NoPE" in C.verdict_rope_outperforms(table)[1]["summary"]
    table = pd.concat([quality(1.0, 1.5, 1.5), summary04({("nope", "chars", "val_loss"): 2.0})])
    assert "caveat" not in C.verdict_rope_outperforms(table)[1]["summary"]


def test_tables_without_the_needed_encodings_are_not_testable():
    only_alibi = lm_summary({"alibi": FLAT})
    for check in (C.verdict_extrapolation_vs_traditional, C.verdict_no_quality_loss,
                  C.verdict_sinusoidal_extrapolates, C.verdict_traditional_decline):
        assert C.verdict_category(check(only_alibi)[0]) == "not testable here", check.__name__
    with pytest.raises(ValueError, match="lacks column"):
        C.verdict_no_quality_loss(only_alibi.drop(columns=["ppl_ci_low"]))
