"""The audit machinery of notebook 07: claims as data, typed verdicts and evidence, and their rendering.

A ``Claim`` holds the text of one claim, the ``results/`` tables it needs and a verdict function
(``check``). ``audit(claims, tables)`` runs every claim's check on the tables (``load_tables``: a
``pandas.DataFrame`` per file, ``None`` for a missing file) and returns a ``ClaimResult`` per claim;
``verdict_table``, ``verdict_markdown``, ``evidence_frame`` and ``write_verdicts`` (->
``results/07_claims.csv``) render them. The claims themselves, and the rules that judge them, live in
``ropelib.claims``.

A check takes its tables positionally, ``thresholds=`` and the keyword options it lists, and returns
``(Verdict, Evidence)``:

* ``Verdict(category, detail)``: ``category`` one of ``VERDICTS``, ``detail`` an optional reason or
  condition. It *is* its rendered text (a ``str``: ``"partly supported (only at 2x)"``), and carries the
  category as a field, so nothing parses the text back;
* ``Evidence(summary, values)``: a one-line summary and the numbers behind the verdict by label (read
  from the tables or computed with ``ropelib``, never typed in), in display order. It reads as a
  mapping of the labels, then ``"summary"``.

Comparisons use ``Estimate`` (a seed mean with its 95% CI) and ``compare``: "better" / "worse" only when
the CIs do not overlap; ``tally`` turns several comparison cells into a verdict.

No torch here: the machinery reads tables and writes text.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from . import results as R
from .paths import figures_dir
from .stats import ci_order

__all__ = [
    "VERDICTS",
    "Verdict",
    "verdict_category",
    "Evidence",
    "not_testable",
    "missing_verdict",
    "first_missing",
    "Thresholds",
    "DEFAULT_THRESHOLDS",
    "Estimate",
    "compare",
    "tally",
    "Claim",
    "ClaimResult",
    "tables_read",
    "read_table",
    "load_tables",
    "evaluate_claim",
    "audit",
    "verdict_table",
    "verdict_markdown",
    "evidence_frame",
    "write_verdicts",
]

#: the verdict categories, in the order the notebook reports them
VERDICTS = ("supported", "partly supported", "contradicted", "not testable here")


# ---------------------------------------------------------------------------------------------
# verdicts and evidence
# ---------------------------------------------------------------------------------------------
class Verdict(str):
    """A verdict: its rendered text (``category`` or ``"category (detail)"``), with both parts as fields.

    ``category`` must be one of ``VERDICTS``; ``detail`` is a reason or condition (``""``: none).
    Immutable; equal to its text (``Verdict("supported") == "supported"``).
    """

    category: str
    detail: str

    def __new__(cls, category: str, detail: str = "") -> Verdict:
        if category not in VERDICTS:
            raise ValueError(f"verdict category must be one of {', '.join(map(repr, VERDICTS))}, got {category!r}")
        if not isinstance(detail, str):
            raise ValueError(f"verdict detail must be a string, got {detail!r}")
        self = super().__new__(cls, f"{category} ({detail})" if detail else category)
        self.__dict__.update(category=category, detail=detail)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Verdict is immutable (cannot set {name!r})")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return Verdict, (self.category, self.detail)

    @classmethod
    def parse(cls, text: str) -> Verdict:
        """The verdict whose text is ``text`` (e.g. a ``verdict`` cell of ``07_claims.csv``); ValueError
        when ``text`` is not ``category`` or ``"category (detail)"``."""
        for category in sorted(VERDICTS, key=len, reverse=True):  # "partly supported" before "supported"
            if not isinstance(text, str) or not text.startswith(category):
                continue
            rest = text[len(category) :]
            if not rest:
                return cls(category)
            if rest.startswith(" (") and rest.endswith(")"):
                return cls(category, rest[2:-1])
        raise ValueError(f"verdict {text!r} does not start with one of {', '.join(map(repr, VERDICTS))}")


def verdict_category(verdict: str) -> str:
    """The category of a verdict (one of ``VERDICTS``): its field for a ``Verdict``, parsed from the text
    of any other string (``Verdict.parse``; ValueError when it is not a verdict)."""
    return verdict.category if isinstance(verdict, Verdict) else Verdict.parse(verdict).category


@dataclass(frozen=True, eq=False)
class Evidence(Mapping[str, Any]):
    """The evidence of a verdict: a one-line ``summary`` and the numbers behind it, ``values`` (label ->
    number or word, in display order; read-only). As a mapping: every label, then ``"summary"``."""

    summary: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.summary, str):
            raise ValueError(f"Evidence.summary must be a string, got {self.summary!r}")
        bad = [k for k in self.values if not isinstance(k, str) or k == "summary"]
        if bad:
            raise ValueError(f"Evidence labels must be strings other than 'summary', got {bad}")
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def __getitem__(self, label: str) -> Any:
        return self.summary if label == "summary" else self.values[label]

    def __iter__(self) -> Iterator[str]:
        yield from self.values
        yield "summary"

    def __len__(self) -> int:
        return len(self.values) + 1


def not_testable(detail: str, summary: str, values: Mapping[str, Any] | None = None) -> tuple[Verdict, Evidence]:
    """``(Verdict("not testable here", detail), Evidence(summary, values))``."""
    return Verdict("not testable here", detail), Evidence(summary, values or {})


def missing_verdict(filename: str) -> Verdict:
    """``"not testable here (missing results/<file>: run notebook NN)"``."""
    nn = R.TABLE_NOTEBOOK.get(filename, filename[:2])
    return Verdict("not testable here", f"missing results/{filename}: run notebook {nn}")


def first_missing(**tables: pd.DataFrame | None) -> tuple[Verdict, Evidence] | None:
    """The not-testable result for the first required table that is ``None`` (keyword = file stem), or
    ``None`` when every table is present."""
    for stem, table in tables.items():
        if table is None:
            return missing_verdict(f"{stem}.csv"), Evidence(f"results/{stem}.csv is missing")
    return None


# ---------------------------------------------------------------------------------------------
# the rules: thresholds, estimates and comparisons
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """The numbers that turn measurements into verdicts (``ropelib.claims`` states the rules)."""

    quality_tolerance: float = 0.05  # relative perplexity increase still counted as "no loss of quality"
    retention_fraction: float = 0.8  # retrieval accuracy kept, relative to short distances at 1x
    min_learned_accuracy: float = 0.5  # short-distance accuracy at 1x below which the task was not learned
    relative_tolerance: float = 1e-4  # relative Toeplitz deviation below which scores depend on m - n only
    absolute_min_deviation: float = 1e-2  # relative Toeplitz deviation above which they clearly do not
    formula_atol: float = 1e-6  # two sin/cos tables equal within this

    def __post_init__(self) -> None:
        for name in (
            "quality_tolerance",
            "retention_fraction",
            "min_learned_accuracy",
            "relative_tolerance",
            "absolute_min_deviation",
            "formula_atol",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"Thresholds.{name} must be a number >= 0, got {value!r}")
        if self.retention_fraction > 1 or self.min_learned_accuracy > 1:
            raise ValueError(
                f"retention_fraction and min_learned_accuracy must be <= 1, got "
                f"{self.retention_fraction!r}, {self.min_learned_accuracy!r}"
            )


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Estimate:
    """A seed mean with its 95% CI (NaN CI = a single seed: the interval is the point)."""

    mean: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n_seeds: int = 1

    @property
    def interval(self) -> tuple[float, float]:
        lo = self.mean if not np.isfinite(self.ci_low) else self.ci_low
        hi = self.mean if not np.isfinite(self.ci_high) else self.ci_high
        return float(lo), float(hi)

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.mean))


def compare(a: Estimate, b: Estimate, *, lower_is_better: bool) -> str:
    """``"better"`` / ``"worse"`` when ``a``'s and ``b``'s CIs do not overlap, else ``"tie"``.

    An undefined ``b`` (NaN mean: e.g. a learned table past its length) loses to a defined ``a``.
    """
    if not a.defined:
        return "worse" if b.defined else "tie"
    if not b.defined:
        return "better"
    return ci_order(*a.interval, *b.interval, lower_is_better=lower_is_better)  # ropelib.stats' one rule


def tally(outcomes: Sequence[str]) -> Verdict:
    """The verdict of a claim judged on several comparison cells (``compare`` outcomes): *supported* when
    it wins every cell, *contradicted* when it wins none and loses at least one, *partly supported* when
    it wins some, *not testable here* when every cell is a tie (within the seed noise)."""
    if not outcomes:
        raise ValueError("no comparison cells to judge")
    wins = sum(o == "better" for o in outcomes)
    losses = sum(o == "worse" for o in outcomes)
    if wins == len(outcomes):
        return Verdict("supported")
    if wins == 0 and losses > 0:
        return Verdict("contradicted")
    if wins == 0:
        return Verdict("not testable here", "every difference is within the seed noise")
    return Verdict("partly supported")


# ---------------------------------------------------------------------------------------------
# claims and results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """One checkable claim.

    ``tables`` are the results files passed, in order, as positional arguments to ``check`` (``None``
    for a missing file); ``figures`` are ``(notebook, name)`` of the figures that show the evidence;
    ``options`` the keyword options of ``check`` that the audit's ``context`` may supply. ``check``
    returns ``(Verdict, Evidence)``.
    """

    id: str
    short: str
    paraphrase: str
    section: str
    literature: str
    check: Callable[..., tuple[Verdict, Evidence]]
    tables: tuple[str, ...] = ()
    figures: tuple[tuple[str, str], ...] = ()
    options: tuple[str, ...] = ()

    def figure_links(self, relative_to: str = "..") -> list[str]:
        """Markdown links ``[name](../figures/<notebook>/<name>.png)`` of the figures that exist."""
        return [
            f"[{nb}/{name}]({relative_to}/figures/{nb}/{name}.png)"
            for nb, name in self.figures
            if (figures_dir() / nb / f"{name}.png").exists()
        ]


@dataclass(frozen=True)
class ClaimResult:
    """A claim with its verdict and evidence."""

    claim: Claim
    verdict: Verdict
    evidence: Evidence

    @property
    def category(self) -> str:
        return self.verdict.category


def tables_read(claims: Sequence[Claim]) -> tuple[str, ...]:
    """The results files ``claims`` read, sorted."""
    return tuple(sorted({name for c in claims for name in c.tables}))


def read_table(
    name: str, directory: str | os.PathLike | None = None, profile: str | None = None
) -> pd.DataFrame | None:
    """``ropelib.results.read_table`` (schema checked, one profile's rows), or ``None`` when the file does
    not exist: a missing table makes the claims that need it not testable rather than failing."""
    if not R.table_path(name, directory).exists():
        return None
    return R.read_table(name, directory, profile)


def load_tables(
    claims: Sequence[Claim], directory: str | os.PathLike | None = None, profile: str | None = None
) -> dict[str, pd.DataFrame | None]:
    """Every table ``claims`` read (``tables_read``), keyed by file name; ``None`` for a missing file.
    ``directory`` defaults to ``ropelib.paths.results_dir()``."""
    return {name: read_table(name, directory, profile) for name in tables_read(claims)}


def evaluate_claim(
    claim: Claim,
    tables: Mapping[str, pd.DataFrame | None],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    context: Mapping[str, Any] | None = None,
) -> ClaimResult:
    """Run one claim's check on ``tables`` (file name -> DataFrame or None).

    ``context`` supplies the keyword options the claim lists in ``options`` (e.g. ``head_dim``); the
    others are ignored. ValueError when the check does not return ``(Verdict, Evidence)``.
    """
    args = [tables.get(name) for name in claim.tables]
    kwargs = {k: v for k, v in (context or {}).items() if k in claim.options}
    verdict, evidence = claim.check(*args, thresholds=thresholds, **kwargs)
    if not isinstance(verdict, Verdict) or not isinstance(evidence, Evidence):
        raise ValueError(
            f"{claim.id}: a check must return (Verdict, Evidence), got "
            f"({type(verdict).__name__}, {type(evidence).__name__})"
        )
    return ClaimResult(claim, verdict, evidence)


def audit(
    claims: Sequence[Claim],
    tables: Mapping[str, pd.DataFrame | None],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    context: Mapping[str, Any] | None = None,
) -> list[ClaimResult]:
    """Every claim's verdict, in the order of ``claims`` (``ropelib.claims.CLAIMS`` for notebook 07), on
    ``tables`` (``load_tables``). ``context`` supplies keyword options of the checks (``evaluate_claim``)."""
    if isinstance(claims, Claim) or not all(isinstance(c, Claim) for c in claims) or not claims:
        raise ValueError(f"claims must be a non-empty sequence of Claim, got {claims!r:.80}")
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"claim ids must be unique, got {ids}")
    if not isinstance(tables, Mapping):
        raise ValueError(f"tables must map results file names to DataFrames (or None), got {type(tables).__name__}")
    return [evaluate_claim(c, tables, thresholds=thresholds, context=context) for c in claims]


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def verdict_table(results: Sequence[ClaimResult], *, links: bool = True) -> pd.DataFrame:
    """One row per claim: ``id, claim, section, verdict, evidence, figures, literature``."""
    rows = []
    for r in results:
        rows.append(
            {
                "id": r.claim.id,
                "claim": r.claim.short,
                "section": r.claim.section,
                "verdict": str(r.verdict),
                "evidence": r.evidence.summary,
                "figures": ", ".join(r.claim.figure_links()) if links else "",
                "literature": r.claim.literature,
            }
        )
    return pd.DataFrame(rows)


def _md_cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def verdict_markdown(results: Sequence[ClaimResult], *, literature: bool = False) -> str:
    """The verdict table as a Markdown table (claim, section, verdict, evidence, figure links)."""
    table = verdict_table(results)
    columns = ["id", "claim", "section", "verdict", "evidence", "figures"] + (["literature"] if literature else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = [f"**{_md_cell(row[c])}**" if c == "verdict" else _md_cell(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evidence_frame(result: ClaimResult) -> pd.DataFrame:
    """A claim's evidence numbers as a one-column table (the summary left out)."""
    items = result.evidence.values
    return pd.DataFrame({"value": [_fmt(v) for v in items.values()]}, index=pd.Index(list(items), name="evidence"))


def write_verdicts(results: Sequence[ClaimResult], profile: str, filename: str = "07_claims.csv") -> Path:
    """Write the verdict table to ``results_dir()/<filename>`` (``ropelib.results.write_table``: schema
    checked, written atomically) and return the path.

    Columns ``profile, claim_id, claim, section, category, verdict, summary, evidence_json, figures,
    literature``; ``evidence_json`` holds every evidence number (and the summary).
    """
    rows = []
    for r in results:
        evidence = {k: (_fmt(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.evidence.items()}
        rows.append(
            {
                "claim_id": r.claim.id,
                "claim": r.claim.short,
                "section": r.claim.section,
                "category": r.category,
                "verdict": str(r.verdict),
                "summary": r.evidence.summary,
                "evidence_json": json.dumps(evidence, sort_keys=True, default=str),
                "figures": ";".join(f"{nb}/{name}" for nb, name in r.claim.figures),
                "literature": r.claim.literature,
            }
        )
    columns = [c for c in R.columns(filename) if c != "profile"]
    return R.write_table(pd.DataFrame(rows, columns=columns), filename, profile)
