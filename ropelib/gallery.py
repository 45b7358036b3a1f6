"""The reader's path through a run's outputs: the figure gallery and HTML pages of the executed notebooks.

* ``write_gallery`` writes ``figures/README.md`` from the ``captions.json`` files that
  ``ropelib.plotting.savefig`` records: a table of contents (one entry per notebook), then one section per
  notebook headed by its title (the first Markdown H1 of the notebook, ``notebook_title``), every figure
  as an image whose alt text is the first sentence of its caption, followed by the caption as text.
* ``export_html`` converts an executed notebook to a standalone HTML page (nbconvert's ``lab`` template)
  in which every image has alt text: an image output is matched to the figure its cell saved (the
  ``savefig(fig, "<name>", ...)`` calls of the cell, in order) and takes that figure's caption; an image
  that cannot be matched gets "<notebook title>, figure <k>". ``write_html_index`` links the pages.

``run_all.py`` calls these after every notebook it runs (the gallery always, HTML with ``--html``), and
``run_all.py --export-html`` exports the committed notebooks without executing them.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import nbformat

from .paths import atomic_write_text, figures_dir
from .plotting import CAPTIONS_FILE

__all__ = [
    "notebook_title",
    "first_sentence",
    "read_captions_file",
    "write_gallery",
    "figure_names",
    "add_alt_text",
    "export_html",
    "write_html_index",
]

_H1_RE = re.compile(r"^#\s+(.+?)\s*#*\s*$")
#: ``savefig(fig, "name", ...)`` or ``savefig(fig, name="name", ...)`` (``ropelib.plotting``, not a ``fig.savefig``)
_SAVEFIG_RE = re.compile(r"""(?<![.\w])savefig\(\s*(?:[^,()"']+,\s*)?(?:name\s*=\s*)?(["'])([A-Za-z0-9_-]+)\1""")


def notebook_title(nb: nbformat.NotebookNode | str | os.PathLike) -> str | None:
    """The text of the first Markdown H1 (``# Title``) of a notebook (a node or an ``.ipynb`` path), or
    ``None`` when it has none or the file cannot be read."""
    if not isinstance(nb, nbformat.NotebookNode):
        nb = _read_notebook(Path(nb))
        if nb is None:
            return None
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            match = _H1_RE.match(line)
            if match:
                return match.group(1)
    return None


def _read_notebook(path: Path) -> nbformat.NotebookNode | None:
    try:
        return nbformat.read(os.fspath(path), as_version=4)
    except (OSError, ValueError):
        return None


def first_sentence(text: str) -> str:
    """The first sentence of ``text``: up to the first ``.``, ``!`` or ``?`` outside parentheses that is
    followed by a space and an upper-case letter (so "e.g. a", "0.5" and "(a. B)" do not end it); the
    whole text when there is no such end."""
    depth = 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char in ".!?" and depth == 0 and text[i + 1 : i + 2] == " " and text[i + 2 : i + 3].isupper():
            return text[: i + 1]
    return text.strip()


def read_captions_file(folder: Path) -> dict[str, str]:
    """``{figure name: caption}`` of one figure folder (empty when it has no readable ``captions.json``)."""
    try:
        data = json.loads((Path(folder) / CAPTIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _md_escape(text: str) -> str:
    """``text`` safe inside the ``[...]`` of a Markdown image or link."""
    return re.sub(r"([\\\[\]])", r"\\\1", " ".join(text.split()))


def write_gallery(notebooks_dir: Path | None = None, root: Path | None = None) -> Path:
    """Regenerate ``<root>/README.md`` (default root ``figures_dir()``) from the figure folders under it.

    A table of contents links one section per notebook folder (anchor: the folder name). Each section is
    headed by the notebook's title (``notebook_title`` of ``<notebooks_dir>/<folder>.ipynb``; the folder
    name when there is none) and links the notebook; its figures come in the order the notebook saves them
    (``figure_names``), each an image with the first sentence of its caption as alt text, then "Figure k."
    with the whole caption, the figure's name and a link to the SVG when present.
    """
    root = Path(root) if root is not None else figures_dir()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    sections: list[tuple[str, str, Path | None, list[Path], dict[str, str]]] = []
    for folder in folders:
        pngs = sorted(folder.glob("*.png"))
        if not pngs:
            continue
        notebook = Path(notebooks_dir) / f"{folder.name}.ipynb" if notebooks_dir is not None else None
        nb = _read_notebook(notebook) if notebook is not None else None
        if nb is None:
            notebook = None
        title = (notebook_title(nb) if nb is not None else None) or folder.name
        if nb is not None:  # in the order the notebook saves them; figures it no longer names go last
            order = {
                n: i for i, n in enumerate(n for c in nb.cells if c.cell_type == "code" for n in figure_names(c.source))
            }
            pngs.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
        sections.append((folder.name, title, notebook, pngs, read_captions_file(folder)))
    lines = [
        "# Figures",
        "",
        "Every figure of the notebook collection, with its caption, one section per notebook. Generated by",
        "`run_all.py` (`ropelib.gallery.write_gallery`) from the `captions.json` files that",
        "`ropelib.plotting.savefig` writes; do not edit by hand. Each figure also exists as SVG beside the PNG.",
        "",
    ]
    if not sections:
        lines += ["(No figures yet: run `python run_all.py`.)", ""]
        return atomic_write_text(root / "README.md", "\n".join(lines))
    lines += ["## Contents", ""]
    for name, title, _, pngs, _ in sections:
        count = f"{len(pngs)} figure{'s' if len(pngs) != 1 else ''}"
        lines.append(f"- [{_md_escape(title)}](#{name}) ({count})")
    lines.append("")
    for name, title, notebook, pngs, captions in sections:
        lines += [f'<a id="{name}"></a>', "", f"## {title}", ""]
        source = f"[`{name}`]({Path(os.path.relpath(notebook, root)).as_posix()})" if notebook else f"`{name}`"
        lines += [f"Notebook: {source}", ""]
        for k, png in enumerate(pngs, 1):
            caption = " ".join(captions.get(png.stem, "").split()) or f"{png.stem} (no caption recorded)"
            svg = png.with_suffix(".svg")
            links = f"`{png.stem}`" + (f", [SVG]({name}/{svg.name})" if svg.exists() else "")
            lines += [f"![{_md_escape(first_sentence(caption))}]({name}/{png.name})", ""]
            lines += [f"**Figure {k}.** {caption} ({links})", ""]
    return atomic_write_text(root / "README.md", "\n".join(lines))


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------
#: extends nbconvert's ``lab`` page: an image output whose metadata carries ``alt`` gets it as alt text
_ALT_TEMPLATE_NAME = "ropelib_alt.html.j2"
_ALT_TEMPLATE = "{%- extends 'index.html.j2' -%}\n" + "".join(
    f"""{{% block data_{kind} scoped %}}
{{%- set alt = output | get_metadata('alt', '{mime}') -%}}
{{%- if alt -%}}{{{{ super() | replace('<img ', '<img alt="' ~ (alt | escape_html) ~ '" ', 1) }}}}
{{%- else -%}}{{{{ super() }}}}{{%- endif -%}}
{{% endblock data_{kind} %}}
"""
    for kind, mime in (("png", "image/png"), ("jpg", "image/jpeg"))
)
_IMAGE_MIMES = ("image/png", "image/jpeg")


def figure_names(source: str) -> list[str]:
    """The figure names a code cell saves, in order: the literal names of its ``savefig`` calls."""
    return [m.group(2) for m in _SAVEFIG_RE.finditer(source)]


def add_alt_text(nb: nbformat.NotebookNode, captions: Mapping[str, str], title: str) -> int:
    """Set ``alt`` in the metadata of every image output of ``nb`` (in place); returns how many images.

    Within a code cell, the k-th image output is the figure named by the cell's k-th ``savefig`` call when
    the cell saves as many figures as it shows, and takes that figure's caption from ``captions``;
    any other image gets ``"<title>, figure <n>"`` (n counts the notebook's images from 1)."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        images = [o for o in cell.get("outputs", []) if any(m in o.get("data", {}) for m in _IMAGE_MIMES)]
        names = figure_names(cell.source)
        if len(names) != len(images):
            names = [""] * len(images)
        for output, name in zip(images, names):
            count += 1
            alt = " ".join(captions.get(name, "").split()) or f"{title}, figure {count}" + (
                f" ({name})" if name else ""
            )
            meta = output.setdefault("metadata", {})
            for mime in _IMAGE_MIMES:
                if mime in output.get("data", {}):
                    meta.setdefault(mime, {})["alt"] = alt
    return count


def export_html(
    nb: nbformat.NotebookNode, path: Path, figures_root: Path | None = None, name: str | None = None
) -> Path:
    """Write ``nb`` as a standalone HTML page at ``path`` with alt text on every image (``add_alt_text``,
    captions from ``<figures_root>/<name>/captions.json``; ``name`` defaults to the page's stem,
    ``figures_root`` to ``figures_dir()``). ``nb`` is not modified."""
    import jinja2
    from nbconvert import HTMLExporter

    name = name or Path(path).stem
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a copy: the metadata added is for the page only
    folder = Path(figures_root if figures_root is not None else figures_dir()) / name
    add_alt_text(nb, read_captions_file(folder), notebook_title(nb) or name)
    exporter = HTMLExporter(
        extra_loaders=[jinja2.DictLoader({_ALT_TEMPLATE_NAME: _ALT_TEMPLATE})], template_file=_ALT_TEMPLATE_NAME
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": notebook_title(nb) or name}})
    return atomic_write_text(path, body)


def write_html_index(folder: Path, titles: Mapping[str, str] | None = None, heading: str = "Notebooks") -> Path:
    """Write ``<folder>/index.html`` linking every other ``*.html`` page of ``folder`` (reading order: by
    name), each shown as ``titles[stem]`` when given, else its stem."""
    folder = Path(folder)
    titles = dict(titles or {})
    pages: Sequence[Path] = sorted(p for p in folder.glob("*.html") if p.name != "index.html")
    items = "\n".join(
        f'<li><a href="{html.escape(p.name)}">{html.escape(titles.get(p.stem) or p.stem)}</a>'
        f" <small>({html.escape(p.stem)})</small></li>"
        for p in pages
    )
    text = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(heading)}</title>\n</head>\n<body>\n<h1>{html.escape(heading)}</h1>\n"
        f"<ol>\n{items}\n</ol>\n</body>\n</html>\n"
    )
    return atomic_write_text(folder / "index.html", text)
