"""Tests of ``ropelib.audit``, the machinery of the claims audit: typed verdicts and evidence, the rules
that compare estimates, ``audit(claims, tables)`` on claims built here, and that it needs no torch."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ropelib import audit as A
from ropelib import results as R
from ropelib.paths import REPO_ROOT


# ---------------------------------------------------------------------------------------------
# verdicts and evidence
# ---------------------------------------------------------------------------------------------
def test_verdict_category_and_missing_message():
    assert A.verdict_category("partly supported (only at 2x)") == "partly supported"
    assert A.verdict_category("supported") == "supported"
    msg = A.missing_verdict("05_lm_summary.csv")
    assert msg == "not testable here (missing results/05_lm_summary.csv: run notebook 05)"
    assert A.verdict_category(msg) == "not testable here"
    with pytest.raises(ValueError, match="does not start with one of"):
        A.verdict_category("probably true")


def test_thresholds_validate():
    with pytest.raises(ValueError, match="quality_tolerance"):
        A.Thresholds(quality_tolerance=-0.1)
    with pytest.raises(ValueError, match="retention_fraction"):
        A.Thresholds(retention_fraction=1.5)


def test_compare_uses_confidence_intervals():
    a, b = A.Estimate(1.0, 0.9, 1.1), A.Estimate(2.0, 1.9, 2.1)
    assert A.compare(a, b, lower_is_better=True) == "better"
    assert A.compare(a, b, lower_is_better=False) == "worse"
    assert A.compare(a, A.Estimate(1.05, 1.0, 1.1), lower_is_better=True) == "tie"
    assert A.compare(a, A.Estimate(math.nan), lower_is_better=True) == "better"  # undefined loses
    assert A.compare(A.Estimate(1.0), A.Estimate(1.0 + 1e-9), lower_is_better=True) == "better"  # one seed: a point


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 10), st.floats(0, 2), st.floats(0, 10), st.floats(0, 2), st.booleans())
def test_compare_is_antisymmetric(m1, w1, m2, w2, lower):
    a, b = A.Estimate(m1, m1 - w1, m1 + w1), A.Estimate(m2, m2 - w2, m2 + w2)
    flip = {"better": "worse", "worse": "better", "tie": "tie"}
    assert A.compare(b, a, lower_is_better=lower) == flip[A.compare(a, b, lower_is_better=lower)]


def test_verdict_is_its_text_with_the_category_as_a_field():
    v = A.Verdict("partly supported", "only at 2x")
    assert v == "partly supported (only at 2x)" and isinstance(v, str)
    assert (v.category, v.detail) == ("partly supported", "only at 2x")
    assert A.Verdict("supported") == "supported" and A.Verdict("supported").detail == ""
    # the category is the field, not a prefix of the text: a detail that starts with a category changes nothing
    tricky = A.Verdict("contradicted", "supported elsewhere")
    assert tricky.category == "contradicted" and A.verdict_category(tricky) == "contradicted"
    assert A.Verdict.parse(str(v)) == v and A.Verdict.parse(str(v)).category == "partly supported"
    assert A.Verdict.parse("not testable here (a (nested) reason)").detail == "a (nested) reason"
    with pytest.raises(ValueError, match="must be one of"):
        A.Verdict("probably true")
    with pytest.raises(ValueError, match="does not start with one of"):
        A.Verdict.parse("supportedness")
    with pytest.raises(AttributeError, match="immutable"):
        v.category = "supported"
    assert pickle.loads(pickle.dumps(v)).category == "partly supported"
    assert A.missing_verdict("04_gates.csv").category == "not testable here"


def test_evidence_is_a_read_only_record():
    ev = A.Evidence("one line", {"b": 2.0, "a": "better"})
    assert ev.summary == "one line" and ev["summary"] == "one line" and ev["a"] == "better"
    assert list(ev) == ["b", "a", "summary"] and len(ev) == 3 and dict(ev.values) == {"b": 2.0, "a": "better"}
    with pytest.raises(TypeError):
        ev.values["c"] = 1  # type: ignore[index]
    source = {"x": 1.0}
    copied = A.Evidence("s", source)
    source["x"] = 2.0
    assert copied["x"] == 1.0  # the record keeps its own copy
    with pytest.raises(ValueError, match="other than 'summary'"):
        A.Evidence("s", {"summary": "twice"})
    with pytest.raises(ValueError, match="summary must be a string"):
        A.Evidence(None, {})  # type: ignore[arg-type]
    v, e = A.not_testable("no rows", "nothing to judge", {"n": 0})
    assert v == "not testable here (no rows)" and e.summary == "nothing to judge" and e["n"] == 0
    assert A.first_missing(a=pd.DataFrame(), b=None) == (
        A.missing_verdict("b.csv"),
        A.Evidence("results/b.csv is missing"),
    )
    assert A.first_missing(a=pd.DataFrame()) is None


def test_tally():
    assert A.tally(["better", "better"]) == "supported"
    assert A.tally(["tie", "worse"]) == "contradicted"
    assert A.tally(["better", "worse"]).category == "partly supported"
    v = A.tally(["tie", "tie"])
    assert v == "not testable here (every difference is within the seed noise)" and v.category == "not testable here"
    with pytest.raises(ValueError, match="no comparison cells"):
        A.tally([])


# ---------------------------------------------------------------------------------------------
# the audit on claims built here
# ---------------------------------------------------------------------------------------------
def _check_rows(table, *, thresholds, scale: float = 1.0):
    if table is None:
        return A.missing_verdict("04_runs.csv"), A.Evidence("results/04_runs.csv is missing")
    return A.Verdict("supported", f"{len(table)} rows"), A.Evidence("counted", {"rows x scale": len(table) * scale})


def _untyped(*, thresholds):
    return "supported", {"summary": "a plain string and dict"}


CLAIM = A.Claim("T1", "short", "paraphrase", "section", "literature", _check_rows, ("04_runs.csv",), options=("scale",))


def test_audit_takes_the_claims_and_the_tables_explicitly():
    runs = pd.DataFrame({"encoding": ["rope", "nope"]})
    (r,) = A.audit([CLAIM], {"04_runs.csv": runs}, context={"scale": 2.0, "unused": 1})
    assert r.verdict == "supported (2 rows)" and r.category == "supported" and r.evidence["rows x scale"] == 4.0
    assert A.audit([CLAIM], {})[0].category == "not testable here"  # a missing table
    with pytest.raises(TypeError):
        A.audit({"04_runs.csv": runs})  # type: ignore[call-arg]  # no default claims
    with pytest.raises(ValueError, match="non-empty sequence of Claim"):
        A.audit([], {"04_runs.csv": runs})
    with pytest.raises(ValueError, match="non-empty sequence of Claim"):
        A.audit(CLAIM, {"04_runs.csv": runs})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique"):
        A.audit([CLAIM, CLAIM], {})
    with pytest.raises(ValueError, match="tables must map"):
        A.audit([CLAIM], [runs])  # type: ignore[arg-type]


def test_a_check_must_return_typed_records():
    claim = A.Claim("T2", "short", "paraphrase", "section", "literature", _untyped)
    with pytest.raises(ValueError, match=r"T2: a check must return \(Verdict, Evidence\)"):
        A.evaluate_claim(claim, {})


def test_rendering_and_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPELIB_RESULTS_DIR", str(tmp_path))
    results = A.audit([CLAIM], {"04_runs.csv": pd.DataFrame({"encoding": ["rope"]})})
    table = A.verdict_table(results)
    assert table.loc[0, "verdict"] == "supported (1 rows)" and table.loc[0, "evidence"] == "counted"
    assert "| T1 | short | section | **supported (1 rows)** | counted |" in A.verdict_markdown(results)
    frame = A.evidence_frame(results[0])
    assert list(frame.index) == ["rows x scale"] and frame["value"].tolist() == ["1"]
    back = R.read_table("07_claims", A.write_verdicts(results, "default").parent)
    assert back.loc[0, "category"] == "supported" and back.loc[0, "verdict"] == "supported (1 rows)"
    assert json.loads(back.loc[0, "evidence_json"]) == {"rows x scale": "1", "summary": "counted"}


def test_tables_read_and_load_tables(tmp_path):
    other = A.Claim("T3", "s", "p", "sec", "lit", _check_rows, ("04_gates.csv", "04_runs.csv"))
    assert A.tables_read([CLAIM, other]) == ("04_gates.csv", "04_runs.csv")
    assert A.load_tables([CLAIM, other], tmp_path) == {"04_gates.csv": None, "04_runs.csv": None}


def test_audit_machinery_imports_no_torch():
    code = "import sys, ropelib.audit; print('torch' in sys.modules, 'ropelib.encodings' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    source = (REPO_ROOT / "ropelib" / "audit.py").read_text(encoding="utf-8")
    assert "import torch" not in source and "encodings" not in source


def test_estimate_interval_of_one_seed_is_its_point():
    assert A.Estimate(2.0).interval == (2.0, 2.0) and A.Estimate(math.nan).defined is False
