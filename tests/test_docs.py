"""The repository carries its own documentation: ``docs/design.md`` and ``docs/references.md``.

* no file outside ``docs/`` points at the old, out-of-repository design and reference documents, or at a
  machine path (the workspace root or a ``shared`` folder beside the checkout);
* every ``docs/<file>.md`` that code, tests, notebooks or READMEs mention exists, and so does every
  relative ``.md`` link inside ``docs/``;
* every section cited as ``design.md §N`` / ``references.md §N`` (also ``§N.M`` and lists such as
  ``§1, §3 and §5``) is a heading ``## §N …`` / ``### §N.M …`` of that file.

The files checked are the ones git knows about (tracked, plus new files not ignored), so the checks
also cover a change before it is committed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".toml")

# The forbidden strings are assembled from pieces so that this file does not contain them literally.
OLD_DOCS_RE = re.compile(r"\b(?:DESIGN|REFERENCES)(?:\.md\b|\s*§)")  # the old documents, by name
MACHINE_PATHS = ("/" + "work/", ".." + "/shared")
DOC_PATH_RE = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)\b")
MD_LINK_RE = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")
CITATION_RE = re.compile(r"\b(design|references)\.md((?:\s*(?:,|and|or|to|–|-)?\s*§\s?\d+(?:\.\d+)*)+)")
SECTION_RE = re.compile(r"§\s?(\d+(?:\.\d+)*)")
HEADING_RE = re.compile(r"^#{1,6}\s+§(\d+(?:\.\d+)*)\s", re.MULTILINE)


# -- helpers (pure functions over text, tested below on inputs made to fail) -------------------------
def bad_mentions(text: str) -> list[str]:
    """Every mention of the old documents or of a machine path in ``text``."""
    found = [m.group(0) for m in OLD_DOCS_RE.finditer(text)]
    found += [p for p in MACHINE_PATHS if p in text]
    return found


def cited_sections(text: str) -> set[tuple[str, str]]:
    """``{(document stem, section number)}`` of every ``design.md §N`` / ``references.md §N`` citation."""
    cited = set()
    for match in CITATION_RE.finditer(text):
        for number in SECTION_RE.findall(match.group(2)):
            cited.add((match.group(1), number))
    return cited


def headings(text: str) -> list[str]:
    """The section numbers of the ``§``-numbered headings of a markdown text, in order."""
    return HEADING_RE.findall(text)


def repo_files() -> list[Path]:
    """Text files git knows about (tracked, and untracked but not ignored) that exist in the work tree."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    paths = [REPO / p for p in out.split("\0") if p]
    return sorted(p for p in paths if p.suffix in TEXT_SUFFIXES and p.is_file())


def _in_docs(path: Path) -> bool:
    return path.resolve().is_relative_to(DOCS.resolve())


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


# -- the helpers can fail ----------------------------------------------------------------------------
def test_bad_mentions_detects_each_forbidden_form():
    assert bad_mentions("see " + "DESIGN" + ".md, section X") == ["DESIGN" + ".md"]
    assert bad_mentions("(" + "REFERENCES" + ".md §2)") and bad_mentions("; " + "REFERENCES" + " §2)")
    assert bad_mentions("open('" + "/" + "work/shared/x.txt')") == ["/" + "work/"]
    assert bad_mentions("path = '.." + "/shared/seed'") == [".." + "/shared"]
    assert bad_mentions("see docs/references.md §2 and docs/design.md §3; cache_dir='/shared/cache'") == []
    assert bad_mentions("## References\nSu et al. 2021") == []


def test_cited_sections_reads_single_citations_lists_and_ranges():
    text = (
        "docs/references.md §1.4 (derived); references.md §1, §3 and §5 vectors; "
        'docs/design.md §11, "run_all.py"; docs/references.md §1–§4; references.md: no section'
    )
    assert cited_sections(text) == {
        ("references", "1.4"),
        ("references", "1"),
        ("references", "3"),
        ("references", "5"),
        ("design", "11"),
        ("references", "4"),
    }


def test_headings_only_counts_section_headings():
    text = "# Title\n## §1 RoPE\ntext §9 in prose\n### §1.2 Layouts\n## Not numbered\n#### §10 Ten\n"
    assert headings(text) == ["1", "1.2", "10"]


# -- (a) nothing points outside the repository -------------------------------------------------------
def test_no_file_outside_docs_cites_the_old_documents_or_a_machine_path():
    files = repo_files()
    assert any(p.name == "run_all.py" for p in files) and any(p.suffix == ".md" for p in files)
    offenders = []
    for path in files:
        text = _read(path)
        # inside docs/ only machine paths are forbidden (the documents may name what they replace)
        found = [p for p in MACHINE_PATHS if p in text] if _in_docs(path) else bad_mentions(text)
        if found:
            offenders.append(f"{path.relative_to(REPO)}: {sorted(set(found))}")
    assert not offenders, "files citing documents or paths outside the repository:\n" + "\n".join(offenders)


# -- (b) every docs/ file mentioned exists -----------------------------------------------------------
def test_every_mentioned_docs_file_exists():
    mentioned: dict[str, list[str]] = {}
    for path in repo_files():
        for name in DOC_PATH_RE.findall(_read(path)):
            mentioned.setdefault(name, []).append(str(path.relative_to(REPO)))
    # the library and run_all.py do cite both documents: an empty result means the scan is broken
    assert {"design.md", "references.md"} <= set(mentioned), f"found only {sorted(mentioned)}"
    missing = {name: where for name, where in mentioned.items() if not (DOCS / name).is_file()}
    assert not missing, f"docs/ files mentioned but missing: {missing}"


def test_docs_relative_links_resolve():
    pages = sorted(DOCS.glob("*.md"))
    assert {"README.md", "design.md", "references.md"} <= {p.name for p in pages}
    broken = []
    for page in pages:
        for target in MD_LINK_RE.findall(_read(page)):
            if "://" not in target and not (page.parent / target).resolve().is_file():
                broken.append(f"{page.name} -> {target}")
    assert not broken, f"broken links in docs/: {broken}"


# -- (c) every cited section exists ------------------------------------------------------------------
@pytest.mark.parametrize("stem", ["references", "design"])
def test_section_headings_are_unique(stem):
    numbers = headings(_read(DOCS / f"{stem}.md"))
    assert len(numbers) >= 8, f"docs/{stem}.md has too few §-numbered headings: {numbers}"
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    assert not duplicates, f"docs/{stem}.md numbers these sections twice: {duplicates}"


def test_every_cited_section_is_a_heading():
    cited: dict[tuple[str, str], list[str]] = {}
    for path in repo_files():
        for key in cited_sections(_read(path)):
            cited.setdefault(key, []).append(str(path.relative_to(REPO)))
    in_code = {key for key, where in cited.items() if any(not w.startswith("docs/") for w in where)}
    # code, tests and notebooks cite both documents by section: an empty result means the scan is broken
    assert {"design", "references"} <= {stem for stem, _ in in_code}, f"citations found: {sorted(cited)}"
    assert len({n for stem, n in in_code if stem == "references"}) >= 5
    existing = {stem: set(headings(_read(DOCS / f"{stem}.md"))) for stem in ("design", "references")}
    missing = {f"{stem}.md §{n}": where for (stem, n), where in sorted(cited.items()) if n not in existing[stem]}
    assert not missing, f"cited sections with no heading: {missing}"
