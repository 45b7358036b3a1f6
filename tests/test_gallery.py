"""The reader's path (issue 13, item 7): the figure gallery ``figures/README.md`` (contents, notebook titles,
figures with alt text and captions), HTML pages with alt text on every image, and
``run_all.py --export-html``, which converts the committed notebooks without executing them.

Everything runs on purpose-made notebooks and figure folders in ``tmp_path``; nothing executes."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import nbformat
import pytest

from ropelib import gallery, notebook_runs, pipeline
from ropelib.gallery import add_alt_text, export_html, figure_names, first_sentence, notebook_title, write_gallery
from ropelib.run_messages import EXIT_CONFIG

REPO = Path(__file__).resolve().parent.parent

#: a 1x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def image_output() -> nbformat.NotebookNode:
    return nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"}
    )


def make_notebook(title: str | None, cells: list[tuple[str, int]]) -> nbformat.NotebookNode:
    """A notebook with an optional H1 and code cells ``(source, number of image outputs)``."""
    nb = nbformat.v4.new_notebook()
    if title is not None:
        nb.cells.append(nbformat.v4.new_markdown_cell(f"Some text first.\n\n# {title}\n\n## Not this one"))
    for source, images in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [image_output() for _ in range(images)]
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def figure_folder(root: Path, notebook: str, captions: dict[str, str], svg: bool = True) -> Path:
    folder = root / notebook
    folder.mkdir(parents=True)
    for name in captions:
        (folder / f"{name}.png").write_bytes(PNG)
        if svg:
            (folder / f"{name}.svg").write_text("<svg/>")
    (folder / "captions.json").write_text(json.dumps(captions))
    return folder


# -- small helpers ----------------------------------------------------------------------------------
def test_notebook_title_is_the_first_h1(tmp_path):
    nb = make_notebook("06 — Extending RoPE's context: PI, NTK", [])
    assert notebook_title(nb) == "06 — Extending RoPE's context: PI, NTK"
    nbformat.write(nb, tmp_path / "06_x.ipynb")
    assert notebook_title(tmp_path / "06_x.ipynb") == "06 — Extending RoPE's context: PI, NTK"
    assert notebook_title(make_notebook(None, [("# a comment, not markdown", 0)])) is None
    assert notebook_title(tmp_path / "missing.ipynb") is None


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("One sentence. Another one.", "One sentence."),
        ("Scaled by 0.098, 1 (seed 0; dotted: NoPE). Next", "Scaled by 0.098, 1 (seed 0; dotted: NoPE)."),
        ("Loss, e.g. at 4x. Then more.", "Loss, e.g. at 4x."),
        ("Left (a. B) and right. Rest", "Left (a. B) and right."),
        ("No end at all", "No end at all"),
        ("Ends here.", "Ends here."),
    ],
)
def test_first_sentence(text, first):
    assert first_sentence(text) == first


def test_figure_names_reads_literal_savefig_calls():
    source = 'savefig(fig, "a", notebook=N, caption="x")\nfig.savefig("out.png")\nsavefig(fig, name="b")\nsavefig(fig, f"c{i}")'
    assert figure_names(source) == ["a", "b"]


# -- the gallery ------------------------------------------------------------------------------------
def test_gallery_has_contents_titles_alt_text_and_captions(tmp_path):
    figs, nbs = tmp_path / "figures", tmp_path / "notebooks"
    nbs.mkdir()
    figure_folder(figs, "01_alpha", {"zeta": "Zeta first. It is [saved] first.", "beta": "Beta second."})
    figure_folder(figs, "02_beta", {"only": "The only figure (no notebook)."}, svg=False)
    (figs / "03_empty").mkdir()  # a folder without figures: no section
    nb = make_notebook("01 — Alpha: the first one", [('savefig(fig, "zeta", notebook=N, caption=c)', 1),
                                                       ('savefig(fig, "beta", notebook=N, caption=c)', 1)])  # fmt: skip
    nbformat.write(nb, nbs / "01_alpha.ipynb")
    text = write_gallery(nbs, figs).read_text()

    contents = text[text.index("## Contents") : text.index('<a id="01_alpha">')]
    assert "- [01 — Alpha: the first one](#01_alpha) (2 figures)" in contents
    assert "- [02_beta](#02_beta) (1 figure)" in contents  # no notebook: the identifier
    assert "03_empty" not in text
    for anchor in re.findall(r"\]\(#([^)]+)\)", contents):  # every contents link has its anchor
        assert f'<a id="{anchor}"></a>' in text
    assert "## 01 — Alpha: the first one" in text and "## 02_beta" in text
    assert "Notebook: [`01_alpha`](../notebooks/01_alpha.ipynb)" in text
    # alt text: the caption's first sentence (brackets escaped); the caption in full as text
    assert "![Zeta first.](01_alpha/zeta.png)" in text and "![Beta second.](01_alpha/beta.png)" in text
    assert "**Figure 1.** Zeta first. It is [saved] first. (`zeta`, [SVG](01_alpha/zeta.svg))" in text
    assert text.index("01_alpha/zeta.png") < text.index("01_alpha/beta.png")  # the notebook's order
    assert "**Figure 1.** The only figure (no notebook). (`only`)" in text  # no SVG: no link
    assert "### " not in text  # no headings made of raw figure identifiers


def test_gallery_escapes_brackets_in_alt_text_and_reports_missing_captions(tmp_path):
    figs = tmp_path / "figures"
    figure_folder(figs, "01_x", {"a": "Range [0, 1] of it."})
    (figs / "01_x" / "b.png").write_bytes(PNG)  # saved without a caption
    text = write_gallery(None, figs).read_text()
    assert r"![Range \[0, 1\] of it.](01_x/a.png)" in text
    assert "![b (no caption recorded)](01_x/b.png)" in text


def test_gallery_without_figures(tmp_path):
    text = write_gallery(None, tmp_path / "figures").read_text()
    assert "No figures yet" in text and "## Contents" not in text


def test_committed_gallery_is_what_write_gallery_writes(tmp_path):
    """figures/README.md is generated: regenerated from the committed figures and notebooks it is identical."""
    import shutil

    shutil.copytree(REPO / "figures", tmp_path / "figures")
    (tmp_path / "notebooks").symlink_to(REPO / "notebooks")  # the same relative links as in the repository
    generated = write_gallery(tmp_path / "notebooks", tmp_path / "figures").read_text()
    assert generated == (REPO / "figures" / "README.md").read_text(), (
        "figures/README.md is not what ropelib.gallery.write_gallery writes: regenerate it with "
        "`python -c \"from ropelib.gallery import write_gallery; write_gallery('notebooks')\"` (never by hand)"
    )


# -- alt text in HTML ---------------------------------------------------------------------------------
def test_add_alt_text_matches_images_to_saved_figures():
    nb = make_notebook("05 — Title", [
        ('savefig(fig, "a", notebook=N, caption=c)\nplt.show()', 1),
        ('savefig(fig, "b", notebook=N, caption=c)\nsavefig(fig2, "c", notebook=N, caption=c)', 2),
        ("plt.show()  # shown, never saved", 1),
        ('savefig(fig, "d", notebook=N, caption=c)', 2),  # two images, one name: cannot tell which
        ('savefig(fig, "gone", notebook=N, caption=c)', 1),  # no caption recorded
    ])  # fmt: skip
    assert (
        add_alt_text(nb, {"a": "Caption  of a.", "b": "Caption of b.", "c": "Caption of c.", "d": "D."}, "05 — Title")
        == 7
    )
    alts = [o.metadata["image/png"]["alt"] for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert alts == ["Caption of a.", "Caption of b.", "Caption of c.", "05 — Title, figure 4", "05 — Title, figure 5",
                    "05 — Title, figure 6", "05 — Title, figure 7 (gone)"]  # fmt: skip


def test_export_html_gives_every_image_alt_text(tmp_path, caplog):
    figs = tmp_path / "figures"
    figure_folder(figs, "05_x", {"a": 'A "quoted" <caption> & more.'})
    nb = make_notebook("05 — Title", [('savefig(fig, "a", notebook=N, caption=c)', 1), ("plt.show()", 1)])
    before = json.dumps(nb)
    with caplog.at_level("WARNING"):
        page = export_html(nb, tmp_path / "html" / "05_x.html", figs)
    body = page.read_text()
    assert json.dumps(nb) == before  # the notebook itself is untouched
    imgs = re.findall(r"<img[^>]*>", body)
    assert len(imgs) == 2 and all(" alt=" in i for i in imgs)
    assert "No description has been provided" not in body  # nbconvert's stand-in for a missing alt
    assert (
        "A &quot;quoted&quot; &lt;caption&gt; &amp; more." in imgs[0]
        or 'A "quoted" &lt;caption&gt; &amp; more.' in imgs[0]
    )
    assert "05 — Title, figure 2" in imgs[1]
    assert "<title>05 — Title</title>" in body
    assert "Alternative text is missing" not in caplog.text


def test_exporter_without_alt_would_be_caught():
    """The check above can fail: nbconvert's own exporter leaves the stand-in on an image without alt."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(make_notebook("T", [("plt.show()", 1)]))
    assert "No description has been provided" in body


# -- run_all.py --export-html -------------------------------------------------------------------------
@pytest.fixture
def committed(tmp_path, monkeypatch):
    """Two executed 'committed' notebooks, one never executed (.py only), and their figure folders."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    nbformat.write(
        make_notebook("01 — First", [('savefig(fig, "a", notebook=N, caption=c)', 1)]), nbs / "01_first.ipynb"
    )
    nbformat.write(make_notebook("02 — Second", [("print(1)", 0)]), nbs / "02_second.ipynb")
    (nbs / "03_new.py").write_text("# %%\nprint(1)\n")
    figs = tmp_path / "figures"
    figure_folder(figs, "01_first", {"a": "The first figure. More."})
    monkeypatch.setenv("ROPELIB_FIGURES_DIR", str(figs))
    return nbs


def export_cli(nbs: Path, tmp_path: Path, *extra: str) -> int:
    return pipeline.main(["--export-html", "--notebooks-dir", str(nbs), "--build-dir", str(tmp_path / "build"), *extra])


def test_export_html_converts_committed_notebooks_without_running_them(committed, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in committed.iterdir()}
    assert export_cli(committed, tmp_path) == 0
    out = capsys.readouterr().out
    html_dir = tmp_path / "build" / "html"
    assert sorted(p.name for p in html_dir.iterdir()) == ["01_first.html", "02_second.html", "index.html"]
    assert "[3/3] 03_new: skipped" in out and "2 page(s) written" in out
    assert 'alt="The first figure. More."' in (html_dir / "01_first.html").read_text()
    index = (html_dir / "index.html").read_text()
    assert '<a href="01_first.html">01 — First</a>' in index and '<a href="02_second.html">02 — Second</a>' in index
    assert {p.name: p.read_bytes() for p in committed.iterdir()} == before  # nothing executed or rewritten
    assert not (tmp_path / "build" / "default").exists()


def test_export_html_only_and_output_dir(committed, tmp_path, capsys):
    assert export_cli(committed, tmp_path, "--only", "02", "--output-dir", str(tmp_path / "pages")) == 0
    assert sorted(p.name for p in (tmp_path / "pages").iterdir()) == ["02_second.html", "index.html"]
    assert not (tmp_path / "build").exists()


def test_export_html_refuses_options_that_execute(committed, tmp_path, capsys):
    assert export_cli(committed, tmp_path, "--reference") == EXIT_CONFIG
    assert "--export-html executes nothing; drop --reference" in capsys.readouterr().err
    assert export_cli(committed, tmp_path, "--only", "09") == EXIT_CONFIG
    assert export_cli(committed, tmp_path, "--output-dir", str(committed)) == EXIT_CONFIG
    assert not (tmp_path / "build").exists()


def test_run_all_uses_the_gallery_module():
    """One gallery and one exporter: run_all's (ropelib.notebook_runs after each notebook, ropelib.pipeline for
    --export-html) are ropelib.gallery's."""
    assert notebook_runs.write_gallery is gallery.write_gallery and notebook_runs.export_html is gallery.export_html
    assert pipeline.export_html is gallery.export_html
