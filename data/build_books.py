"""Build ``ropelib/corpora/books.jsonl.xz`` from plain-text Project Gutenberg e-books.

The snapshot committed with the project was built by this script from the files listed in
``BOOKS`` (ebook number, title, author, SHA-256 of the raw file as read). Every book is in the
public domain in the United States; the Project Gutenberg header, footer and licence are removed,
as the Project Gutenberg licence asks of a redistributed text that no longer carries the name.

Steps, per book: cut the text between the ``*** START OF`` and ``*** END OF`` markers; normalise to
printable ASCII (curly quotes to straight, dashes to ``-``/``--``, accents dropped, anything else
removed); unwrap hard-wrapped lines into one line per paragraph; cut the book into *sections* of at
least ``SECTION_CHARS`` characters ending at a paragraph end. A section is the corpus's document:
the train/validation/test split assigns whole sections (``ropelib.corpus``).

Usage: ``python data/build_books.py RAW_DIR`` where RAW_DIR holds ``<ebook>.txt`` for each book
(any Project Gutenberg plain-text edition with these hashes; the script refuses other bytes).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import sys
import unicodedata
from pathlib import Path

SECTION_CHARS = 8000
OUT = Path(__file__).resolve().parents[1] / "ropelib" / "corpora" / "books.jsonl.xz"

#: (ebook number, title, author, file name in the GITenberg mirror, sha256 of that file)
BOOKS: list[tuple[int, str, str, str, str]] = []  # filled from books_manifest.json

_TRANSLATE = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2033": '"',
    "\u2014": "--",
    "\u2013": "-",
    "\u2012": "-",
    "\u2010": "-",
    "\u2011": "-",
    "\u2015": "--",
    "\u2026": "...",
    "\u00a0": " ",
    "\u00ad": "",
    "\ufeff": "",
    "\u00e6": "ae",
    "\u00c6": "AE",
    "\u0153": "oe",
    "\u0152": "OE",
    "\u00df": "ss",
    "\u00a3": "L",
    "\u00b0": " degrees",
}


def body(raw: str) -> str:
    """The text between the Project Gutenberg start and end markers."""
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", raw, re.M | re.I)
    end = re.search(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", raw, re.M | re.I)
    if not start or not end:
        raise ValueError("no Project Gutenberg START/END markers")
    return raw[start.end() : end.start()]


def to_ascii(text: str) -> str:
    text = "".join(_TRANSLATE.get(c, c) for c in text)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if c == "\n" or (" " <= c <= "~"))


def paragraphs(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for block in re.split(r"\n\s*\n", text):
        para = re.sub(r"\s+", " ", block).strip()
        if para:
            out.append(para)
    return out


def sections(paras: list[str], size: int = SECTION_CHARS) -> list[str]:
    out, cur, n = [], [], 0
    for p in paras:
        cur.append(p)
        n += len(p) + 1
        if n >= size:
            out.append("\n".join(cur))
            cur, n = [], 0
    if cur:
        if out and n < size // 2:
            out[-1] += "\n" + "\n".join(cur)
        else:
            out.append("\n".join(cur))
    return out


def main(raw_dir: str) -> None:
    manifest = json.loads((Path(__file__).with_name("books_manifest.json")).read_text())
    records = []
    for book in manifest["books"]:
        raw_bytes = (Path(raw_dir) / book["file"]).read_bytes()
        digest = hashlib.sha256(raw_bytes).hexdigest()
        if digest != book["sha256"]:
            raise SystemExit(f"{book['file']}: sha256 {digest} != {book['sha256']} in the manifest")
        raw = raw_bytes.decode(book.get("encoding", "utf-8"))
        secs = sections(paragraphs(to_ascii(body(raw))))
        for i, s in enumerate(secs):
            records.append({"ebook": book["ebook"], "title": book["title"], "section": i, "text": s})
        print(f"{book['ebook']:>5} {book['title'][:40]:40s} {len(secs):4d} sections {sum(map(len, secs)):>9,d} chars")
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    print(
        f"{len(records)} sections, {sum(len(r['text']) for r in records):,d} chars -> {OUT} "
        f"({OUT.stat().st_size:,d} bytes, sha256 of the uncompressed JSON lines "
        f"{hashlib.sha256(data).hexdigest()})"
    )


if __name__ == "__main__":
    main(sys.argv[1])
