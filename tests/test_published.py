"""Tests of ropelib.published: the published numbers and orderings as data."""

from __future__ import annotations

import math

import pytest

from ropelib import published

# -- published numbers and orderings ------------------------------------------------------------------


def test_published_numbers_match_references():
    assert published.ALIBI_TABLE1[512]["sinusoidal"] == 20.05
    assert published.ALIBI_TABLE1[2512]["rope"] == 31.58
    assert math.isnan(published.ALIBI_TABLE1[15512]["t5"])
    assert published.ALIBI_TABLE1[15512]["alibi"] == 18.31
    assert published.KAZEMNEJAD_MRR == {"nope": 0.69, "t5": 0.55, "alibi": 0.50, "rope": 0.33, "learned": 0.22}
    # docs/references.md §3.8: PI Table 3 (8192) 16.10 / 7.12 / 6.95 after 0 / 200 / 1000 steps; Table 1 "> 1000"
    assert published.PI_TABLE3 == {0: 16.10, 200: 7.12, 1000: 6.95}
    assert published.PI_NO_EXTENSION_MIN == 1000.0 and "2306.15595" in published.PI_SOURCE
    t = published.alibi_table()
    assert len(t) == 20 and t.multiplier.max() == pytest.approx(15512 / 512)


def test_published_orderings_are_in_published_order():
    claims = published.published_orderings()
    alibi = claims[claims.source == "alibi_table1"]
    kaz = claims[claims.source == "kazemnejad2023"]
    assert len(alibi) == 6 * 3 + 3 and len(kaz) == 10
    assert (alibi.published_better < alibi.published_worse).all()  # lower perplexity is better
    assert (kaz.published_better > kaz.published_worse).all()  # higher MRR is better
    at_2512 = alibi[alibi.published_length == 2512]
    assert set(zip(at_2512.better, at_2512.worse)) >= {("alibi", "t5"), ("t5", "rope"), ("rope", "sinusoidal")}


def test_relative_published_orderings():
    rel = published.published_orderings(relative=True)
    alibi = rel[rel.source == "alibi_table1"]
    assert set(alibi.metric) == {"ppl_ratio"} and (alibi.published_better < alibi.published_worse).all()
    row = alibi[(alibi.published_length == 1012) & (alibi.better == "alibi") & (alibi.worse == "t5")].iloc[0]
    assert row.published_better == pytest.approx(18.73 / 19.73) and row.published_worse == pytest.approx(18.79 / 19.65)
