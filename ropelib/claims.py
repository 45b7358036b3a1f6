"""The claims of a popular blog post about RoPE, as data, and the verdict our own measurements give each.

Source audited: "How Rotary Positional Embedding Improves Long-Context Extrapolation", a post on the
Logic Nest blog. Each ``Claim`` holds our paraphrase,
the section of the post it comes from, what the literature reports (docs/references.md §1–§4: RoFormer, Su et al.
2021, arXiv 2104.09864 §3; sinusoidal, Vaswani et al. 2017, arXiv 1706.03762 §3.5; ALiBi, Press et al.
2021, arXiv 2108.12409 Table 1; PI, Chen et al. 2023, arXiv 2306.15595; YaRN, Peng et al. 2023, arXiv
2309.00071; Kazemnejad et al. 2023, arXiv 2305.19466; Barbero et al. 2024, arXiv 2410.06205; Liu et al.
2023, arXiv 2310.05209), the ``results/`` tables it needs, the figures that show the evidence, and a
verdict function.

A verdict function takes the tables (``pandas.DataFrame`` or ``None`` when the file is missing) and
returns ``(Verdict, Evidence)`` (``ropelib.audit``): the verdict's category is one of ``VERDICTS``, with an
optional reason or condition (``"not testable here (missing results/05_lm_summary.csv: run notebook
05)"``); the evidence is a one-line summary and the numbers behind it, read from the tables
(``ropelib.evidence``) or computed with ``ropelib`` (never typed in). The claims live beside their verdict
functions, by theme: ``ropelib.claims_extrapolation`` (C1, C5, C10: perplexity past the training
length against traditional encodings), ``ropelib.claims_long_context`` (C2, C3: quality and retrieval on
long contexts, with context extension) and ``ropelib.claims_in_distribution`` (C4, C6, C7, C8, C9, C11: what RoPE computes,
its quality and speed at the training length, its applications). ``CLAIMS`` gathers them in order;
notebook 07 runs ``ropelib.audit.audit(CLAIMS, load_tables(CLAIMS))``. Rules (thresholds in
``ropelib.audit.Thresholds``):

* **gates first** (``ropelib.gates``, ``results/04_gates.csv``, read by ``ropelib.evidence``): a trained
  model's numbers count only if it passed its gate. A verdict that rests on trained models needs ``04_gates.csv``; when one of the
  encodings a claim is about (its subject and the encodings it is compared with) has no model that
  passed its gate on the task in question, the verdict is *not testable here* and the evidence names
  each failed model with its gate's reason — it is never computed from failed models. A reference
  encoding that only adds a caveat (NoPE) is left out, with a note, when it failed. Per-seed tables
  (``05_retrieval``, ``05_without_positions``, ``06_*``) are read through their ``passed_gate`` rows
  only; the 05 summaries are over passing seeds already; ``04_summary`` is over all seeds, so where only
  some seeds passed the estimate is recomputed from the passing rows of ``04_gates.csv``. The
  language-model task is any task of kind ``"lm"`` (``ropelib.base_models.TASK_KINDS``);
* comparisons of two encodings use the seed means and their 95% CIs: "better" / "worse" only when the
  CIs do not overlap (a single seed has a point CI), else "tie". A claim judged on several such cells is
  *supported* when it wins every cell, *contradicted* when it wins none and loses at least one,
  *partly supported* when it wins some, and *not testable here* when every cell is a tie (the difference
  is within seed noise at our scale);
* "no loss of quality" at a length = perplexity at most ``quality_tolerance`` above the 1x value;
* "retained" retrieval = accuracy at least ``retention_fraction`` of the short-distance accuracy at the
  training length; a model below ``min_learned_accuracy`` there did not learn the task (not testable).
"""

from __future__ import annotations

from collections.abc import Mapping

from . import claims_extrapolation, claims_in_distribution, claims_long_context
from . import results as R
from .audit import Claim, tables_read

__all__ = ["AUDIT_NOTEBOOK", "CLAIMS", "TABLE_NOTEBOOK"]


def _number(claim: Claim) -> int:
    return int(claim.id.removeprefix("C"))


#: every claim of the post, C1 to C11
CLAIMS: tuple[Claim, ...] = tuple(
    sorted((*claims_extrapolation.CLAIMS, *claims_long_context.CLAIMS, *claims_in_distribution.CLAIMS), key=_number)
)

#: results file -> the notebook that writes it, for every table the claims read
TABLE_NOTEBOOK: Mapping[str, str] = {name: R.TABLE_NOTEBOOK[name] for name in tables_read(CLAIMS)}

#: the notebook that runs the audit. It reads the tables of ``TABLE_NOTEBOOK``, so with ``--jobs`` above 1
#: run_all starts it only after their notebooks have finished (``ropelib.notebook_files.READS_RESULTS_OF``
#: names them for the pipeline, which may not import this module; tests/test_claims.py checks they agree)
AUDIT_NOTEBOOK = "07_claims_audit"
