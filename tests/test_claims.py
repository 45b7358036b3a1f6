"""Tests of ``ropelib.claims``: every verdict branch on synthetic tables (schema of ``ropelib.results``),
the gates (a claim whose evidence comes from a model that failed its gate is not testable), and the
committed verdicts against the committed results."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib import analysis as AN
from ropelib import audit as A
from ropelib import claims as C
from ropelib import claims_extrapolation as X
from ropelib import claims_in_distribution as D
from ropelib import claims_long_context as LC
from ropelib import evidence as E
from ropelib import results as R
from ropelib.encodings.sinusoidal import sinusoidal_table
from ropelib.paths import REPO_ROOT

MULTS = (1.0, 2.0, 4.0)
MODES = ("nonoverlap", "sliding")
LM, RET = "books", "passkey"
ENCODINGS = ("nope", "sinusoidal", "learned", "t5", "alibi", "rope")
FAIL_LM = (
    "context_gain failed: mean loss over the first eighth of the window minus over the last half must be "
    ">= 0.15 nats (the model must use its context), got 0.02; ppl_below_3gram failed: perplexity must be "
    "below the 3-gram baseline 6.93 (every encoding), got 10.3"
)
FAIL_RET = (
    "wilson_low_above_floor failed: the 95% Wilson lower bound of accuracy (40/512) must exceed the "
    "position-blind floor 0.1667 + margin 0, got 0.0582"
)


# ---------------------------------------------------------------------------------------------
# synthetic tables (schema of ropelib.results.SCHEMA)
# ---------------------------------------------------------------------------------------------
def schema(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the schema's columns of table ``name`` in order (absent ones NaN), checked."""
    out = df.reindex(columns=list(R.columns(name)))
    R.check_columns(out.columns, name)
    return out


def lm_summary(ppl: dict[str, dict[float, float]], half_width: float = 0.01, modes=MODES) -> pd.DataFrame:
    """``{encoding: {multiplier: ppl}}`` -> a 05_lm_summary table (same values in every mode; NaN: no value)."""
    rows = []
    for enc, by_mult in ppl.items():
        for mode in modes:
            for m, p in by_mult.items():
                n = 3 if np.isfinite(p) else 0
                rows.append(
                    {
                        "profile": "default",
                        "encoding": enc,
                        "train_length": 64,
                        "length": int(64 * m),
                        "multiplier": m,
                        "mode": mode,
                        "n_seeds": n,
                        "loss_mean": math.log(p),
                        "loss_ci_low": math.nan,
                        "loss_ci_high": math.nan,
                        "ppl_mean": p,
                        "ppl_ci_low": p - half_width,
                        "ppl_ci_high": p + half_width,
                        "n_failed": 3 - n,
                    }
                )
    return schema("05_lm_summary", pd.DataFrame(rows))


def summary04(values: dict[tuple[str, str, str], float], half_width: float = 0.01, n_passed: int = 3) -> pd.DataFrame:
    """``{(encoding, task, metric): mean}`` -> a 04_summary table (3 seeds, ``n_passed`` of them passed)."""
    rows = [
        {
            "profile": "default",
            "encoding": e,
            "task": t,
            "metric": m,
            "n_seeds": 3,
            "mean": v,
            "ci_low": v - half_width,
            "ci_high": v + half_width,
            "n_passed": n_passed,
        }
        for (e, t, m), v in values.items()
    ]
    return schema("04_summary", pd.DataFrame(rows))


def retrieval(
    acc: dict[tuple[float, int], float],
    task: str = RET,
    encoding: str = "rope",
    passed: tuple[bool, bool] = (True, True),
) -> pd.DataFrame:
    """``{(multiplier, distance): accuracy}`` -> a 05_retrieval table (two seeds, same accuracy)."""
    rows = [
        {
            "profile": "default",
            "encoding": encoding,
            "task": task,
            "seed": s,
            "run_hash": "x",
            "passed_gate": passed[s],
            "train_length": 64,
            "length": int(64 * m),
            "multiplier": m,
            "depth": 0.5,
            "distance": d,
            "accuracy": a,
            "token_accuracy": a,
            "n_correct": int(32 * a),
            "n_samples": 32,
            "floor": 1 / 6,
            "status": "ok",
            "reason": "",
        }
        for (m, d), a in acc.items()
        for s in (0, 1)
    ]
    return schema("05_retrieval", pd.DataFrame(rows))


def gates(
    failed: dict[tuple[str, str], tuple[int, ...]] | None = None,
    encodings=ENCODINGS,
    seeds=(0, 1, 2),
    values: dict[tuple[str, str, int], dict] | None = None,
) -> pd.DataFrame:
    """A 04_gates table of every (encoding, task, seed): all passed except the seeds in ``failed``
    (``{(encoding, task): seeds}``); ``values`` sets measured values of single models."""
    failed, values = failed or {}, values or {}
    rows = []
    for enc in encodings:
        for task, kind in ((LM, "lm"), (RET, "retrieval")):
            for seed in seeds:
                bad = seed in failed.get((enc, task), ())
                row = {
                    "profile": "default",
                    "encoding": enc,
                    "task": task,
                    "seed": seed,
                    "kind": kind,
                    "run_hash": f"{enc}{task}{seed}",
                    "passed": not bad,
                    "reason": (FAIL_LM if kind == "lm" else FAIL_RET) if bad else "",
                }
                if kind == "lm":
                    row.update(loss=1.0, ppl=math.e, context_gain=0.3, n_tokens=1000)
                else:
                    row.update(correct=400, n=512, accuracy=400 / 512, floor=1 / 6)
                row.update(values.get((enc, task, seed), {}))
                rows.append(row)
    return schema("04_gates", pd.DataFrame(rows))


ALL_PASS = gates()


FLAT = {1.0: 5.0, 2.0: 5.0, 4.0: 5.05}
RISING = {1.0: 5.0, 2.0: 9.0, 4.0: 30.0}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def test_ppl_ratios():
    r = E.ppl_ratios(lm_summary({"rope": RISING}), "rope")
    assert set(r["mode"]) == set(MODES)
    assert r.loc[(r["mode"] == "sliding") & (r["multiplier"] == 4.0), "ratio"].item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="no rows for encoding 'alibi'"):
        E.ppl_ratios(lm_summary({"rope": RISING}), "alibi")


def test_read_table_missing_stale_and_profiles(tmp_path):
    assert A.read_table("05_lm_summary.csv", tmp_path) is None
    both = pd.concat([lm_summary({"rope": FLAT}), lm_summary({"rope": RISING}).assign(profile="smoke")])
    both.to_csv(tmp_path / "05_lm_summary.csv", index=False)
    with pytest.raises(ValueError, match="holds profiles"):
        A.read_table("05_lm_summary.csv", tmp_path)
    smoke = A.read_table("05_lm_summary.csv", tmp_path, profile="smoke")
    assert set(smoke["profile"]) == {"smoke"} and smoke["ppl_mean"].max() == 30.0
    with pytest.raises(ValueError, match="unknown results table"):
        A.read_table("99_nothing.csv", tmp_path)
    # a table of the schema before the gates: refused, with the notebook to rerun
    both.drop(columns="n_failed").to_csv(tmp_path / "05_lm_summary.csv", index=False)
    with pytest.raises(ValueError, match="stale: rerun notebook 05"):
        A.read_table("05_lm_summary.csv", tmp_path, profile="smoke")
    tables = A.load_tables(C.CLAIMS, tmp_path / "empty")
    assert (
        set(tables) == set(C.TABLE_NOTEBOOK)
        and "04_gates.csv" in tables
        and not any(t is not None for t in tables.values())
    )


# ---------------------------------------------------------------------------------------------
# every table-based claim: missing table -> not testable, no crash
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("claim", [c for c in C.CLAIMS if c.tables], ids=lambda c: c.id)
def test_missing_tables_give_not_testable(claim):
    result = A.evaluate_claim(claim, {})
    first = claim.tables[0]
    assert result.verdict == f"not testable here (missing results/{first}: run notebook {first[:2]})"


@pytest.mark.parametrize("claim", [c for c in C.CLAIMS if "04_gates.csv" in c.tables], ids=lambda c: c.id)
def test_trained_model_claims_need_the_gates(claim):
    """Every claim judged on trained models reads 04_gates.csv; without it, it is not testable."""
    tables = synthetic_tables()
    del tables["04_gates.csv"]
    result = A.evaluate_claim(claim, tables)
    assert result.verdict == "not testable here (missing results/04_gates.csv: run notebook 04)"


def test_claims_on_trained_models_read_the_gates():
    gated = {c.id for c in C.CLAIMS if "04_gates.csv" in c.tables}
    assert gated == {"C1", "C2", "C3", "C5", "C6", "C8", "C10"}  # C7: fresh untrained models; C4, C9, C11: none


# ---------------------------------------------------------------------------------------------
# gates: failed models are never evidence
# ---------------------------------------------------------------------------------------------
def test_gate_failures_lists_failed_models_only():
    g = gates({("sinusoidal", LM): (0, 1, 2), ("rope", LM): (0,), ("rope", RET): (0, 1, 2)})
    assert E.gate_failures(g, ["rope", "learned"], kind="lm") == {}  # rope: seeds 1 and 2 passed
    fail = E.gate_failures(g, ["sinusoidal", "rope"], kind="lm")
    assert list(fail) == ["sinusoidal"] and [m[1] for m in fail["sinusoidal"]] == [0, 1, 2]
    assert fail["sinusoidal"][0] == (LM, 0, FAIL_LM)
    assert list(E.gate_failures(g, ["rope"], task=RET)) == ["rope"]
    assert E.gate_failures(g, ["xpos"], kind="lm")["xpos"][0][1] == -1  # no gate row: not usable either
    verdict, ev = E.gate_verdict(fail)
    assert verdict == "not testable here (no model of sinusoidal (books) passed its gate)"
    assert ev["gate failed: sinusoidal books seed 2"] == FAIL_LM
    assert "seed 0: context_gain failed (got 0.02), ppl_below_3gram failed (got 10.3)" in ev["summary"]
    with pytest.raises(ValueError):
        E.gate_verdict({})


def test_claim_on_a_failed_model_is_not_testable():
    """C1 with every sinusoidal LM failed: not testable, the evidence says which model failed and why,
    whatever the (NaN) summary would have said; the same numbers with passing models give a verdict."""
    lm = lm_summary(
        {"rope": {1.0: 5, 2.0: 6, 4.0: 9}, "sinusoidal": RISING, "learned": {1.0: 5.0, 2.0: math.nan, 4.0: math.nan}}
    )
    assert X.verdict_extrapolation_vs_traditional(lm, ALL_PASS)[0] == "supported"
    failed = gates({("sinusoidal", LM): (0, 1, 2)})
    v, ev = X.verdict_extrapolation_vs_traditional(lm, failed)
    assert v == "not testable here (no model of sinusoidal (books) passed its gate)"
    assert ev["gate failed: sinusoidal books seed 0"] == FAIL_LM
    assert "sinusoidal/books" in ev["summary"] and "context_gain failed" in ev["summary"]
    assert not any(k.startswith("nonoverlap") for k in ev)  # no number of the failed models is used
    # a failed retrieval model does not stop an LM claim
    assert X.verdict_extrapolation_vs_traditional(lm, gates({("sinusoidal", RET): (0, 1, 2)}))[0] == "supported"
    # one passing seed is enough (05's summaries are over the passing seeds)
    assert X.verdict_extrapolation_vs_traditional(lm, gates({("sinusoidal", LM): (0, 1)}))[0] == "supported"


@pytest.mark.parametrize(
    "claim_id, encoding, task",
    [
        ("C1", "rope", LM),
        ("C1", "learned", LM),
        ("C2", "rope", LM),
        ("C3", "rope", RET),
        ("C5", "sinusoidal", LM),
        ("C6", "learned", LM),
        ("C6", "rope", RET),
        ("C8", "sinusoidal", RET),
        ("C8", "rope", LM),
        ("C10", "sinusoidal", LM),
        ("C10", "learned", LM),
    ],
)
def test_every_gated_claim_is_not_testable_when_its_encoding_failed(claim_id, encoding, task):
    claim = next(c for c in C.CLAIMS if c.id == claim_id)
    tables = synthetic_tables()
    assert A.verdict_category(A.evaluate_claim(claim, tables).verdict) != "not testable here"
    tables["04_gates.csv"] = gates({(encoding, task): (0, 1, 2)})
    result = A.evaluate_claim(claim, tables)
    assert result.verdict.startswith("not testable here (no model of") and f"{encoding} ({task}" in result.verdict
    assert result.evidence[f"gate failed: {encoding} {task} seed 1"] in (FAIL_LM, FAIL_RET)


def test_failed_reference_encoding_is_left_out_not_used():
    """NoPE only adds a caveat: when it failed, the claim is judged without it (and says so)."""
    weak = lm_summary(
        {
            "sinusoidal": {1.0: 20.0, 2.0: 20.0, 4.0: 20.0},
            "nope": {1.0: 10.0, 2.0: 10.0, 4.0: 10.0},
            "rope": {1.0: 8.0, 2.0: 9.0, 4.0: 12.0},
        }
    )
    assert X.verdict_sinusoidal_extrapolates(weak, None, ALL_PASS)[0].startswith("not testable here (our sinusoidal")
    # NoPE failed: its (would-be) numbers are NaN in 05_lm_summary, and it is not a reference any more
    nope_failed = lm_summary(
        {
            "sinusoidal": {1.0: 20.0, 2.0: 20.0, 4.0: 20.0},
            "nope": {1.0: math.nan, 2.0: math.nan, 4.0: math.nan},
            "rope": {1.0: 8.0, 2.0: 9.0, 4.0: 12.0},
        }
    )
    g = gates({("nope", LM): (0, 1, 2)})
    v, ev = X.verdict_sinusoidal_extrapolates(nope_failed, None, g)
    assert v == "supported" and ev["nope: reference left out"] == "no model passed its gate"
    assert not any(k.startswith(("nonoverlap 2x: nope", "sliding 2x: nope")) for k in ev)
    assert E.worse_than_nope(nope_failed, "sinusoidal") == (False, 20.0, pytest.approx(math.nan, nan_ok=True))
    v, ev = X.verdict_extrapolation_vs_traditional(
        lm_summary(
            {
                "rope": {1.0: 5, 2.0: 6, 4.0: 9},
                "sinusoidal": RISING,
                "nope": {1.0: math.nan, 2.0: math.nan, 4.0: math.nan},
            }
        ),
        g,
    )
    assert v == "supported" and not any("vs nope" in k for k in ev)


# ---------------------------------------------------------------------------------------------
# C1 — extrapolation vs traditional
# ---------------------------------------------------------------------------------------------
def test_c1_branches():
    learned_nan = {1.0: 5.0, 2.0: math.nan, 4.0: math.nan}
    v, ev = X.verdict_extrapolation_vs_traditional(
        lm_summary({"rope": {1.0: 5, 2.0: 6, 4.0: 9}, "sinusoidal": RISING, "learned": learned_nan}), ALL_PASS
    )
    assert v == "supported"
    assert ev["nonoverlap 4x: rope ppl"] == 9 and ev["nonoverlap 4x: sinusoidal ppl"] == 30.0
    v, _ = X.verdict_extrapolation_vs_traditional(
        lm_summary({"rope": {1.0: 5, 2.0: 20, 4.0: 40}, "sinusoidal": RISING}), ALL_PASS
    )
    assert v == "contradicted"
    v, _ = X.verdict_extrapolation_vs_traditional(
        lm_summary({"rope": {1.0: 5, 2.0: 20, 4.0: 40}, "sinusoidal": RISING, "learned": learned_nan}), ALL_PASS
    )
    assert v == "partly supported"  # beats only the undefined learned table
    v, _ = X.verdict_extrapolation_vs_traditional(lm_summary({"rope": RISING, "sinusoidal": RISING}), ALL_PASS)
    assert A.verdict_category(v) == "not testable here"  # all ties


# ---------------------------------------------------------------------------------------------
# C2 — no loss of quality, with the context-extension condition
# ---------------------------------------------------------------------------------------------
def zero_shot(ppl: dict[tuple[str, float, float], float], passed=(True, True)) -> pd.DataFrame:
    """``{(method, factor, multiplier): ppl}`` -> a 06_zero_shot_ppl table (two seeds, same value)."""
    return schema(
        "06_zero_shot_ppl",
        pd.DataFrame(
            [
                {
                    "profile": "default",
                    "task": LM,
                    "seed": s,
                    "run_hash": "x",
                    "method": m,
                    "factor": f,
                    "train_length": 64,
                    "length": int(64 * x),
                    "multiplier": x,
                    "loss": math.log(p),
                    "ppl": p,
                    "n_tokens": 1000,
                    "passed_gate": passed[s],
                }
                for (m, f, x), p in ppl.items()
                for s in (0, 1)
            ]
        ),
    )


def finetune(ppl: dict[tuple[str, int, float], float], passed: bool = True) -> pd.DataFrame:
    """``{(method, ft_steps, multiplier): ppl}`` -> a 06_finetune table (books ppl rows, plus a distractor)."""
    rows = [
        {
            "profile": "default",
            "task": LM,
            "seed": 0,
            "method": m,
            "factor": 4.0,
            "ft_steps": k,
            "run_hash": "x",
            "train_length": 64,
            "ft_length": 256,
            "length": int(64 * x),
            "multiplier": x,
            "metric": "ppl",
            "value": p,
            "passed_gate": passed,
        }
        for (m, k, x), p in ppl.items()
    ]
    rows.append({**rows[0], "task": RET, "metric": "accuracy", "value": 0.0})
    return schema("06_finetune", pd.DataFrame(rows))


def test_c2_branches():
    ext_missing = A.missing_verdict("06_zero_shot_ppl.csv")
    v, ev = LC.verdict_no_quality_loss(lm_summary({"rope": FLAT}), gates=ALL_PASS)
    assert v == "supported" and ev["condition (06)"] == ext_missing
    v, ev = LC.verdict_no_quality_loss(lm_summary({"rope": RISING}), gates=ALL_PASS)
    assert v == "contradicted" and ev["sliding 2x: rope ppl / 1x"] == pytest.approx(1.8)
    v, _ = LC.verdict_no_quality_loss(lm_summary({"rope": {1.0: 5.0, 2.0: 5.1, 4.0: 30.0}}), gates=ALL_PASS)
    assert v == "partly supported (only at 2x nonoverlap, 2x sliding)"
    # a loose tolerance turns the same numbers into "supported"
    v, _ = LC.verdict_no_quality_loss(
        lm_summary({"rope": RISING}), gates=ALL_PASS, thresholds=A.Thresholds(quality_tolerance=10)
    )
    assert v == "supported"
    v, ev = LC.verdict_no_quality_loss(lm_summary({"rope": FLAT}), gates=gates({("rope", LM): (0, 1, 2)}))
    assert (
        v == "not testable here (no model of rope (books) passed its gate)" and "gate failed: rope books seed 0" in ev
    )


ZS = {
    ("none", 2.0, 1.0): 5.0,
    ("none", 2.0, 2.0): 9.0,
    ("none", 2.0, 4.0): 30.0,
    ("linear", 2.0, 1.0): 6.0,
    ("linear", 2.0, 2.0): 8.0,
    ("linear", 4.0, 4.0): 12.0,
}


def test_extension_settings():
    s = E.extension_settings(
        zero_shot(ZS),
        finetune({("none", 0, 1.0): 5.0, ("linear", 0, 4.0): 12.0, ("linear", 30, 4.0): 5.2, ("none", 30, 4.0): 6.0}),
    )
    assert set(s["ppl_1x"]) == {5.0}
    at4 = s[s["multiplier"] == 4.0]
    assert list(at4["setting"]) == [
        "linear + 30 fine-tune steps",
        "plain RoPE + 30 fine-tune steps",
        "linear, no fine-tune",
        "plain RoPE, no fine-tune",
    ]
    assert at4["ratio"].iloc[0] == pytest.approx(5.2 / 5.0)
    # a method's rows at lengths other than factor * L are not its setting: linear at factor 2 has no 4x row
    assert len(s[(s["method"] == "linear") & (s["ft_steps"] == 0)]) == 2


def test_extension_settings_use_passing_base_models_only():
    """06 rows of a base model that failed its gate are left out; none passed: no setting at all."""
    mixed = pd.concat(
        [
            zero_shot(ZS, passed=(True, False)).query("seed == 0"),
            zero_shot({k: 100 * v for k, v in ZS.items()}, passed=(True, False)).query("seed == 1"),
        ]
    )
    s = E.extension_settings(mixed, None)
    assert set(s["ppl_1x"]) == {5.0} and s["ppl"].max() == 30.0  # seed 1's (failed) x100 values are not used
    assert E.extension_settings(
        zero_shot(ZS, passed=(False, False)), finetune({("none", 30, 4.0): 6.0}, passed=False)
    ).empty


def test_c2_condition_from_extension():
    ft = finetune({("none", 0, 1.0): 5.0, ("linear", 30, 4.0): 5.2, ("none", 30, 4.0): 6.0})
    v, ev = LC.verdict_no_quality_loss(lm_summary({"rope": RISING}), zero_shot(ZS), ft, ALL_PASS)
    assert v == "partly supported (only with context extension: linear + 30 fine-tune steps)"
    assert ev["06: plain RoPE + 30 fine-tune steps, ratio at 4x"] == pytest.approx(6.0 / 5.0)
    assert "plain RoPE fine-tuned as long: x1.200" in ev["summary"]
    assert ev["06: best ppl ratio at 4x"] == pytest.approx(5.2 / 5.0)
    assert ev["06: plain RoPE ppl ratio at 2x"] == pytest.approx(9.0 / 5.0)
    assert "with context extension it holds up to 4x" in ev["summary"]
    v, ev = LC.verdict_no_quality_loss(lm_summary({"rope": RISING}), zero_shot(ZS), None, ALL_PASS)
    assert v == "contradicted" and "no context-extension setting of 06 stays within" in ev["summary"]
    # the same 06 rows from base models that failed their gate are no condition
    v, _ = LC.verdict_no_quality_loss(
        lm_summary({"rope": RISING}),
        zero_shot(ZS, passed=(False, False)),
        finetune({("linear", 30, 4.0): 5.2}, passed=False),
        ALL_PASS,
    )
    assert v == "contradicted"


# ---------------------------------------------------------------------------------------------
# C3 — long-range dependencies
# ---------------------------------------------------------------------------------------------
def test_c3_branches():
    def table(near, far, beyond, passed=(True, True)):
        return retrieval(
            {(1.0, 4): near, (1.0, 8): near, (1.0, 40): far, (1.0, 60): far, (2.0, 100): beyond, (4.0, 200): beyond},
            passed=passed,
        )

    v, ev = LC.verdict_long_range_dependencies(table(1.0, 0.95, 0.9), ALL_PASS, model_head_dim=32)
    assert v == "supported"
    assert ev["theory: B(0)"] == pytest.approx((32 / 2 + 1) / 2)
    assert ev["theory: mean Gaussian score at any r"] == 0.0
    v, _ = LC.verdict_long_range_dependencies(table(1.0, 0.95, 0.1), ALL_PASS)
    assert v == "partly supported (only within the training length)"
    v, _ = LC.verdict_long_range_dependencies(table(1.0, 0.3, 0.1), ALL_PASS)
    assert v == "contradicted"
    v, _ = LC.verdict_long_range_dependencies(table(0.2, 0.2, 0.1), ALL_PASS)
    assert v == "not testable here (the RoPE model did not learn passkey: accuracy 0.20)"
    # rows of other encodings are ignored
    v, _ = LC.verdict_long_range_dependencies(retrieval({(1.0, 4): 1.0, (1.0, 40): 1.0}, encoding="alibi"), ALL_PASS)
    assert A.verdict_category(v) == "not testable here"
    # every RoPE passkey model failed its gate: not testable, whatever the accuracies say
    v, ev = LC.verdict_long_range_dependencies(
        table(1.0, 0.95, 0.9, passed=(False, False)), gates({("rope", RET): (0, 1, 2)})
    )
    assert v == "not testable here (no model of rope (passkey) passed its gate)"
    assert ev["gate failed: rope passkey seed 0"] == FAIL_RET and "wilson_low_above_floor failed" in ev["summary"]
    # one seed failed: only the passing seed's rows are read (seed 1's rows say 0.0 here)
    one = pd.concat(
        [
            table(1.0, 0.95, 0.9, passed=(True, False)).query("seed == 0"),
            table(0.0, 0.0, 0.0, passed=(True, False)).query("seed == 1"),
        ]
    )
    assert LC.verdict_long_range_dependencies(one, gates({("rope", RET): (1,)}))[0] == "supported"


# ---------------------------------------------------------------------------------------------
# C4, C9 — computed from ropelib, no tables
# ---------------------------------------------------------------------------------------------
def test_blog_formula_is_the_sinusoidal_table():
    table = AN.blog_formula_table(50, 16)
    assert np.abs(table - sinusoidal_table(50, 16).double().numpy()).max() < 1e-6
    assert table[0].tolist() == [0.0, 1.0] * 8  # position 0: sin 0, cos 0 for every pair
    with pytest.raises(ValueError, match="d_model must be an even integer"):
        AN.blog_formula_table(4, 7)


def test_c4_and_c9():
    v, ev = D.verdict_blog_formula(length=32, d_model=16)
    assert v == "contradicted"
    assert ev["max |blog formula - sinusoidal table|"] < 1e-6
    assert ev["Toeplitz deviation, vectors added (sinusoidal)"] > 0.01 > ev["Toeplitz deviation, q/k rotated (RoPE)"]
    v, ev = D.verdict_relative_position(length=32, head_dim=16)
    assert v == "supported" and ev["Toeplitz deviation (relative): rope"] < 1e-5
    v, _ = D.verdict_relative_position(length=32, head_dim=16, thresholds=A.Thresholds(relative_tolerance=0.0))
    assert v == "contradicted"  # float32 rounding is above a zero tolerance


# ---------------------------------------------------------------------------------------------
# C5, C10 — the post's two opposite statements about traditional encodings
# ---------------------------------------------------------------------------------------------
def test_c5_c10_are_mirror_images():
    rising = lm_summary({"sinusoidal": RISING, "learned": {1.0: 5.0, 2.0: math.nan, 4.0: math.nan}})
    assert X.verdict_sinusoidal_extrapolates(rising, gates=ALL_PASS)[0] == "contradicted"
    v, ev = X.verdict_traditional_decline(rising, gates=ALL_PASS)
    assert v == "supported" and ev["learned: cells past 1x without a value"] == 4
    flat = lm_summary({"sinusoidal": FLAT})
    assert X.verdict_sinusoidal_extrapolates(flat, gates=ALL_PASS)[0] == "supported"
    assert X.verdict_traditional_decline(flat, gates=ALL_PASS)[0] == "contradicted"
    mixed = lm_summary({"sinusoidal": {1.0: 5.0, 2.0: 5.1, 4.0: 30.0}})
    assert X.verdict_sinusoidal_extrapolates(mixed, gates=ALL_PASS)[0] == "partly supported"
    assert X.verdict_traditional_decline(mixed, gates=ALL_PASS)[0] == "partly supported"
    # a learned table that failed its gate makes C10 not testable (not "declines to nothing")
    v, ev = X.verdict_traditional_decline(rising, gates=gates({("learned", LM): (0, 1, 2)}))
    assert v == "not testable here (no model of learned (books) passed its gate)"
    assert "learned: cells past 1x without a value" not in ev


def test_weak_sinusoidal_baseline_is_not_evidence():
    """A sinusoidal model worse than NoPE at 1x stays flat because it never used its positions."""
    weak = lm_summary(
        {
            "sinusoidal": {1.0: 20.0, 2.0: 20.0, 4.0: 20.0},
            "nope": {1.0: 10.0, 2.0: 10.0, 4.0: 10.0},
            "learned": {1.0: 9.0, 2.0: math.nan, 4.0: math.nan},
            "rope": {1.0: 8.0, 2.0: 9.0, 4.0: 12.0},
        }
    )
    assert E.worse_than_nope(weak, "sinusoidal") == (True, 20.0, 10.0)
    assert E.worse_than_nope(weak, "rope")[0] is False
    v, _ = X.verdict_sinusoidal_extrapolates(weak, gates=ALL_PASS)
    assert v.startswith("not testable here (our sinusoidal model is worse than NoPE")
    v, ev = X.verdict_traditional_decline(weak, gates=ALL_PASS)
    assert v == "supported (learned positions only; sinusoidal left out: worse than NoPE at 1x, ppl 20.00 vs 10.00)"
    v, ev = X.verdict_extrapolation_vs_traditional(weak, ALL_PASS)
    assert v == "supported (against a weak sinusoidal baseline: worse than NoPE even at 1x)"
    assert ev["sliding 4x: rope vs nope"] == "worse" and "worse than no positions at all" in ev["summary"]
    # a sinusoidal model with no passing seed (NaN at 1x) is never "worse than NoPE"
    nan_sin = lm_summary({"sinusoidal": {1.0: math.nan, 2.0: math.nan}, "nope": {1.0: 10.0, 2.0: 10.0}})
    assert E.worse_than_nope(nan_sin, "sinusoidal")[0] is False


def without_positions(rows: list[tuple[str, str, int, float, float, bool]]) -> pd.DataFrame:
    """``[(encoding, kind, seed, as_trained, without_positions, passed_gate)]`` -> a 05_without_positions table."""
    task = {"lm": LM, "retrieval": RET}
    return schema(
        "05_without_positions",
        pd.DataFrame(
            [
                {
                    "profile": "default",
                    "encoding": e,
                    "task": task[k],
                    "kind": k,
                    "seed": s,
                    "run_hash": "x",
                    "passed_gate": p,
                    "train_length": 64,
                    "length": 64,
                    "metric": "ppl" if k == "lm" else "accuracy",
                    "as_trained": a,
                    "without_positions": w,
                }
                for e, k, s, a, w, p in rows
            ]
        ),
    )


def test_sinusoidal_models_that_barely_use_positions_are_a_weak_test():
    """05_without_positions.csv: removing the sinusoids changes the 1x perplexity by at most the tolerance."""
    flat = lm_summary({"sinusoidal": FLAT})
    barely = without_positions(
        [
            ("sinusoidal", "lm", 0, 10.0, 10.1, True),
            ("sinusoidal", "lm", 1, 12.0, 12.1, True),
            ("sinusoidal", "lm", 2, 50.0, 99.0, False),  # failed its gate: not read
            ("sinusoidal", "retrieval", 0, 0.9, 0.1, True),  # not an LM row: not read
            ("rope", "lm", 0, 10.0, 30.0, True),
        ]
    )
    assert E.position_use(barely, "sinusoidal") == (11.0, 11.1)
    assert E.position_use(barely, "learned") is None and E.position_use(None, "sinusoidal") is None
    assert E.position_use(barely[barely.seed == 2], "sinusoidal") is None  # only a failed model
    v, ev = X.verdict_sinusoidal_extrapolates(flat, barely, ALL_PASS)
    assert v.startswith("supported (a weak test: removing the position vectors from our sinusoidal models changes")
    assert "+0.9%" in v and ev["sinusoidal ppl at 1x without its position vectors"] == 11.1
    v, ev = X.verdict_traditional_decline(flat, barely, ALL_PASS)
    assert v.startswith("contradicted (sinusoidal is a weak test") and "barely use them" in ev["summary"]
    used = barely.assign(without_positions=[15.0, 18.0, 99.0, 0.1, 30.0])  # +50%: the positions matter
    assert X.verdict_sinusoidal_extrapolates(flat, used, ALL_PASS)[0] == "supported"
    assert X.verdict_traditional_decline(flat, used, ALL_PASS)[0] == "contradicted"
    assert X.verdict_sinusoidal_extrapolates(flat, None, ALL_PASS)[0] == "supported"  # the table is optional
    with pytest.raises(ValueError, match="without_positions"):
        X.verdict_sinusoidal_extrapolates(flat, barely.drop(columns="without_positions"), ALL_PASS)


# ---------------------------------------------------------------------------------------------
# C6, C7, C8 — pairwise comparisons in 04_summary
# ---------------------------------------------------------------------------------------------
def quality(rope_loss, sin_loss, learned_loss, rope_acc=0.9, sin_acc=0.5, learned_acc=0.5, n_passed=3):
    return summary04(
        {
            ("rope", LM, "loss"): rope_loss,
            ("sinusoidal", LM, "loss"): sin_loss,
            ("learned", LM, "loss"): learned_loss,
            ("rope", RET, "accuracy"): rope_acc,
            ("sinusoidal", RET, "accuracy"): sin_acc,
            ("learned", RET, "accuracy"): learned_acc,
            ("rope", LM, "tokens_per_s"): 1.0,
        },
        n_passed=n_passed,
    )


def test_c8_rope_outperforms_branches():
    v, ev = D.verdict_rope_outperforms(quality(1.0, 1.5, 1.5), ALL_PASS)
    assert v == "supported" and ev["passkey accuracy: rope vs learned"] == "better"
    assert ev["books loss: rope vs sinusoidal"] == "better" and not any("tokens_per_s" in k for k in ev)
    assert D.verdict_rope_outperforms(quality(2.0, 1.5, 1.5, rope_acc=0.1), ALL_PASS)[0] == "contradicted"
    assert D.verdict_rope_outperforms(quality(2.0, 1.5, 1.5, rope_acc=0.9), ALL_PASS)[0] == "partly supported"
    v, _ = D.verdict_rope_outperforms(quality(1.0, 1.0, 1.0, 0.5, 0.5, 0.5), ALL_PASS)
    assert v == "not testable here (every difference is within the seed noise)"
    v, ev = D.verdict_rope_outperforms(quality(1.0, 1.5, 1.5), gates({("learned", RET): (0, 1, 2)}))
    assert v == "not testable here (no model of learned (passkey) passed its gate)"
    assert ev["gate failed: learned passkey seed 2"] == FAIL_RET


def test_c6_learned_richer_direction():
    # learned has the lowest loss and the highest accuracy -> supported; metric directions matter
    assert D.verdict_learned_richer(quality(1.5, 1.5, 1.0, 0.5, 0.5, 0.9), ALL_PASS)[0] == "supported"
    assert D.verdict_learned_richer(quality(1.0, 1.0, 1.5, 0.9, 0.9, 0.1), ALL_PASS)[0] == "contradicted"


def test_04_summary_is_recomputed_from_the_passing_seeds():
    """04_summary mixes every seed; where some failed, the estimate comes from the passing seeds' gate rows."""
    # every seed says loss 1.0 in 04_gates except the failed rope seed 2, whose 9.0 dragged 04_summary's mean up
    g = gates({("rope", LM): (2,)}, values={("rope", LM, 2): {"loss": 9.0}})
    summary = quality(3.67, 1.5, 1.5)  # as 04 would write it: rope's mean over all three seeds
    summary.loc[(summary.encoding == "rope") & (summary.task == LM), "n_passed"] = 2
    assert E.summary_estimate(summary, "rope", LM, "loss").mean == pytest.approx(3.67)
    est = E.summary_estimate(summary, "rope", LM, "loss", g)
    assert (est.mean, est.n_seeds) == (pytest.approx(1.0), 2)
    v, ev = D.verdict_rope_outperforms(summary, g)
    assert ev["books loss: rope"] == pytest.approx(1.0) and ev["books loss: rope vs sinusoidal"] == "better"
    # accuracy from the passing seeds' counts (an interval in [0, 1])
    g2 = gates({("rope", RET): (0,)}, values={("rope", RET, 0): {"correct": 0, "accuracy": 0.0}})
    summary2 = quality(1.0, 1.5, 1.5, rope_acc=0.52)
    summary2.loc[(summary2.encoding == "rope") & (summary2.task == RET), "n_passed"] = 2
    acc = E.summary_estimate(summary2, "rope", RET, "accuracy", g2)
    assert acc.mean == pytest.approx(400 / 512) and 0.0 <= acc.ci_low <= acc.mean <= acc.ci_high <= 1.0


def throughput(speeds: dict[str, list[float]]) -> pd.DataFrame:
    """``{encoding: [tokens/s per round]}`` -> a 04_throughput table."""
    return schema(
        "04_throughput",
        pd.DataFrame(
            [
                {
                    "profile": "default",
                    "encoding": e,
                    "task": LM,
                    "seq_len": 64,
                    "batch_size": 16,
                    "round": i,
                    "tokens_per_s": v,
                }
                for e, vs in speeds.items()
                for i, v in enumerate(vs)
            ]
        ),
    )


def test_paired_speed_ratio_matches_scipy():
    from scipy import stats

    tp = throughput({"rope": [90.0, 95.0, 80.0], "sinusoidal": [100.0, 100.0, 100.0]})
    r = E.paired_speed_ratio(tp, "rope", "sinusoidal")
    ratios = np.array([0.9, 0.95, 0.8])
    lo, hi = stats.t.interval(0.95, 2, loc=ratios.mean(), scale=stats.sem(ratios))
    assert (r.mean, r.ci_low, r.ci_high, r.n_seeds) == pytest.approx((ratios.mean(), lo, hi, 3))
    assert E.paired_speed_ratio(tp, "rope", "alibi") is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.5, 2.0), min_size=1, max_size=8))
def test_paired_speed_ratio_is_the_former_inline_student_t(ratios):
    """ropelib.stats.mean_ci gives the numbers of the inline interval it replaced (mean ± t sd / sqrt(n))."""
    from scipy import stats

    tp = throughput({"rope": [100.0 * r for r in ratios], "sinusoidal": [100.0] * len(ratios)})
    got = E.paired_speed_ratio(tp, "rope", "sinusoidal")
    x = (tp[tp.encoding == "rope"]["tokens_per_s"].to_numpy() / 100.0).astype(float)
    mean = float(x.mean())
    if x.size < 2:
        assert (got.mean, got.n_seeds) == (mean, 1) and math.isnan(got.ci_low) and math.isnan(got.ci_high)
        return
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    assert got.n_seeds == x.size and got.mean == pytest.approx(mean, rel=1e-12)
    assert (got.ci_low, got.ci_high) == (
        pytest.approx(mean - half, rel=1e-9, abs=1e-12),
        pytest.approx(mean + half, rel=1e-9, abs=1e-12),
    )


def test_c7_speed():
    # the machine slows down between rounds; the paired ratio still sees RoPE 10% slower
    slow = throughput({"rope": [900, 450, 180], "sinusoidal": [1000, 500, 200], "learned": [1000, 500, 200]})
    v, ev = D.verdict_rope_faster(slow)
    assert v == "contradicted" and ev["rope / sinusoidal tokens per s"] == pytest.approx(0.9)
    fast = throughput({"rope": [1200, 600, 240], "sinusoidal": [1000, 500, 200], "learned": [1000, 500, 200]})
    assert D.verdict_rope_faster(fast)[0] == "supported"
    noisy = throughput({"rope": [1100, 450, 200], "sinusoidal": [1000, 500, 200], "learned": [1000, 500, 200]})
    assert A.verdict_category(D.verdict_rope_faster(noisy)[0]) == "not testable here"


# ---------------------------------------------------------------------------------------------
# the audit as a whole
# ---------------------------------------------------------------------------------------------
def synthetic_tables():
    lm = lm_summary(
        {"rope": {1.0: 5, 2.0: 6, 4.0: 9}, "sinusoidal": RISING, "learned": {1.0: 5.0, 2.0: math.nan, 4.0: math.nan}}
    )
    runs = pd.DataFrame([{"encoding": "rope", "d_model": 64, "n_heads": 4}])
    return {
        "05_lm_summary.csv": lm,
        "04_summary.csv": quality(1.0, 1.5, 1.5),
        "04_runs.csv": runs,
        "05_retrieval.csv": retrieval({(1.0, 4): 1.0, (1.0, 40): 1.0, (2.0, 100): 0.2}),
        "04_gates.csv": ALL_PASS,
    }


def test_audit_and_write(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPELIB_RESULTS_DIR", str(tmp_path))
    results = A.audit(C.CLAIMS, synthetic_tables())
    assert [r.claim.id for r in results] == [c.id for c in C.CLAIMS]
    by_id = {r.claim.id: r for r in results}
    assert by_id["C1"].verdict == "supported"
    assert by_id["C3"].evidence["theory: B(0)"] == pytest.approx((16 / 2 + 1) / 2)  # head_dim 64/4 from 04_runs
    assert by_id["C11"].category == "not testable here"
    path = A.write_verdicts(results, "default")
    assert path == tmp_path / "07_claims.csv"
    back = R.read_table("07_claims", tmp_path)
    assert tuple(back.columns) == R.SCHEMA["07_claims.csv"]
    assert list(back["verdict"]) == [r.verdict for r in results]
    assert json.loads(back.loc[0, "evidence_json"])["nonoverlap 4x: rope ppl"] == "9"
    table = A.verdict_table(results)
    assert list(table.columns) == ["id", "claim", "section", "verdict", "evidence", "figures", "literature"]


def test_audit_reads_tables_written_with_the_schema(tmp_path):
    """The synthetic tables written by ropelib.results and loaded by load_tables give the same verdicts."""
    tables = synthetic_tables()
    for name, t in tables.items():
        if name != "04_runs.csv":  # a partial 04_runs (the head dim only)
            R.write_table(t.drop(columns="profile"), name, "default", directory=tmp_path)
    loaded = A.load_tables(C.CLAIMS, tmp_path, profile="default")
    assert loaded["06_finetune.csv"] is None and loaded["04_gates.csv"] is not None
    loaded["04_runs.csv"] = tables["04_runs.csv"]
    assert [r.verdict for r in A.audit(C.CLAIMS, loaded)] == [r.verdict for r in A.audit(C.CLAIMS, tables)]


def test_every_claim_is_complete():
    ids = [c.id for c in C.CLAIMS]
    assert len(set(ids)) == len(ids)
    text = REPO_ROOT.parent / "shared" / "seed" / "rope-long-context-blog-post.txt"
    headings = text.read_text(encoding="utf-8") if text.exists() else None
    for c in C.CLAIMS:
        assert c.paraphrase and c.literature and c.short
        if headings is not None:
            assert c.section in headings, f"{c.id}: section {c.section!r} is not a heading of the post"
        for name in c.tables:
            assert name in C.TABLE_NOTEBOOK and name in R.SCHEMA


@pytest.mark.parametrize(
    "module", ["claims", "claims_extrapolation", "claims_long_context", "claims_in_distribution", "evidence", "audit"]
)
def test_claims_module_names_no_machine_path(module):
    source = (REPO_ROOT / "ropelib" / f"{module}.py").read_text(encoding="utf-8")
    absolute = re.findall(r"[\"'`](/(?:[\w.-]+/)+[\w.-]*)", source)  # a string that starts with an absolute path
    assert not absolute, f"{module}.py names file-system paths {absolute}"
    assert ".txt" not in source  # the seed post is cited by title and publisher, not by a file
    if module == "claims":
        assert "How Rotary Positional Embedding Improves Long-Context Extrapolation" in source


def test_each_claim_lives_in_one_theme_module():
    """CLAIMS is C1..C11 in order, gathered from the theme modules, each claim beside its verdict function."""
    assert [c.id for c in C.CLAIMS] == [f"C{i}" for i in range(1, 12)]
    themes = (X, LC, D)
    for c in C.CLAIMS:
        homes = [m for m in themes if c in m.CLAIMS]
        assert len(homes) == 1 and c.check.__module__ == homes[0].__name__, c.id
    assert C.TABLE_NOTEBOOK == {name: name[:2] for name in sorted({t for c in C.CLAIMS for t in c.tables})}


def test_run_all_waits_for_the_notebooks_whose_tables_the_audit_reads():
    """The pipeline's declaration of what the audit reads (written out there: the pipeline may not import
    the claims, which import torch) names exactly the notebooks of ``TABLE_NOTEBOOK``."""
    from ropelib.notebook_files import READS_RESULTS_OF

    assert (REPO_ROOT / "notebooks" / f"{C.AUDIT_NOTEBOOK}.py").exists()
    assert READS_RESULTS_OF == {C.AUDIT_NOTEBOOK[:2]: tuple(sorted(set(C.TABLE_NOTEBOOK.values())))}


def test_verdicts_are_typed_records():
    """Every verdict function returns (Verdict, Evidence): the category is a field, the summary a field."""
    for result in A.audit(C.CLAIMS, synthetic_tables()):
        assert isinstance(result.verdict, A.Verdict) and isinstance(result.evidence, A.Evidence), result.claim.id
        assert result.category == result.verdict.category == A.verdict_category(str(result.verdict))
        assert result.evidence.summary == result.evidence["summary"]


def test_c3_head_dim_comes_from_04_runs_unless_given():
    ret = retrieval({(1.0, 4): 1.0, (1.0, 40): 1.0, (2.0, 100): 0.2})
    runs = pd.DataFrame([{"encoding": "rope", "d_model": 64, "n_heads": 4}])
    b0 = {hd: (hd / 2 + 1) / 2 for hd in (16, 32, 8)}
    assert LC.verdict_long_range_dependencies(ret, ALL_PASS, runs)[1]["theory: B(0)"] == pytest.approx(b0[16])
    assert LC.verdict_long_range_dependencies(ret, ALL_PASS)[1]["theory: B(0)"] == pytest.approx(b0[32])
    ev = LC.verdict_long_range_dependencies(ret, ALL_PASS, runs, model_head_dim=8)[1]
    assert ev["theory: B(0)"] == pytest.approx(b0[8])


# ---------------------------------------------------------------------------------------------
# the committed verdicts match the committed results
# ---------------------------------------------------------------------------------------------
def test_committed_verdicts_match_committed_results():
    committed = REPO_ROOT / "results" / "07_claims.csv"
    if not committed.exists():
        pytest.skip("results/07_claims.csv not committed yet (run notebook 07)")
    verdicts = pd.read_csv(committed)
    profile = str(verdicts["profile"].iloc[0])
    try:
        R.check_columns(verdicts.columns, "07_claims.csv")
        tables = A.load_tables(C.CLAIMS, REPO_ROOT / "results", profile=profile)
    except ValueError as e:
        pytest.fail(f"stale: rerun notebooks 04-07 (`python run_all.py --profile {profile} --only 04 05 06 07`): {e}")
    if tables["04_gates.csv"] is None:
        pytest.fail(
            "stale: rerun notebooks 04-07: results/04_gates.csv is missing (the committed results predate the gates)"
        )
    recomputed = {r.claim.id: r.verdict for r in A.audit(C.CLAIMS, tables)}
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
    table = pd.concat([quality(1.0, 3.0, 1.5), summary04({("nope", LM, "loss"): 2.0})])
    assert (
        "caveat: our sinusoidal model is worse than NoPE" in D.verdict_rope_outperforms(table, ALL_PASS)[1]["summary"]
    )
    table = pd.concat([quality(1.0, 1.5, 1.5), summary04({("nope", LM, "loss"): 2.0})])
    assert "caveat" not in D.verdict_rope_outperforms(table, ALL_PASS)[1]["summary"]
    # NoPE failed its gate: no caveat drawn from it
    table = pd.concat([quality(1.0, 3.0, 1.5), summary04({("nope", LM, "loss"): 2.0})])
    summary = D.verdict_rope_outperforms(table, gates({("nope", LM): (0, 1, 2)}))[1]["summary"]
    assert "caveat" not in summary


def test_tables_without_the_needed_encodings_are_not_testable():
    only_alibi = lm_summary({"alibi": FLAT})
    for check in (
        X.verdict_extrapolation_vs_traditional,
        LC.verdict_no_quality_loss,
        X.verdict_sinusoidal_extrapolates,
        X.verdict_traditional_decline,
    ):
        assert A.verdict_category(check(only_alibi, gates=ALL_PASS)[0]) == "not testable here", check.__name__
    with pytest.raises(ValueError, match="lacks column"):
        LC.verdict_no_quality_loss(only_alibi.drop(columns=["ppl_ci_low"]), gates=ALL_PASS)


def test_reference_run_is_audited_without_failed_models():
    """On a complete run (the committed reference by default), every claim whose evidence is a failed model
    is not testable and names the failed models with their reasons; the closed-form ones get a verdict."""
    import os
    from pathlib import Path

    folder = os.environ.get("ROPELIB_CHECK_RESULTS_DIR") or str(Path(__file__).resolve().parent.parent / "results")
    if not (Path(folder) / "04_gates.csv").exists():
        pytest.skip("set ROPELIB_CHECK_RESULTS_DIR to the results of a complete run")
    tables = A.load_tables(C.CLAIMS, folder)
    g = tables["04_gates.csv"]
    results = {r.claim.id: r for r in A.audit(C.CLAIMS, tables)}
    for claim in C.CLAIMS:
        if "04_gates.csv" not in claim.tables:
            continue
        r = results[claim.id]
        if r.verdict.startswith("not testable here (no model of"):
            failed = [k for k in r.evidence if k.startswith("gate failed: ")]
            assert failed, claim.id
            for key in failed:
                enc, task, _, seed = key.removeprefix("gate failed: ").split()
                row = g[(g.encoding == enc) & (g.task == task) & (g.seed == int(seed))]
                assert len(row) == 1 and not bool(row.passed.iloc[0]) and row.reason.iloc[0] == r.evidence[key]
    assert results["C4"].category == "contradicted" and results["C9"].category == "supported"
