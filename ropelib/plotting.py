"""One figure style for the whole collection: a seaborn theme, a fixed colour per encoding, ``savefig``.

Every notebook calls ``set_theme()`` once and colours a curve by ``color_for(encoding_name)``, so the
same encoding has the same colour in every figure (docs/design.md §9, "plotting.py"). ``savefig`` writes
``figures_dir()/<notebook>/<name>.png`` and ``.svg`` atomically (``ropelib.paths``) and records a
one-line caption in ``figures_dir()/<notebook>/captions.json``, which ``run_all.py`` turns into the
gallery ``figures/README.md``.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Mapping

import seaborn as sns
from matplotlib.figure import Figure

from .paths import atomic_write_bytes, atomic_write_text, figures_dir

__all__ = [
    "ENCODING_COLORS",
    "CAPTIONS_FILE",
    "DPI",
    "set_theme",
    "color_for",
    "palette_for",
    "savefig",
    "read_captions",
]

#: dpi of the PNG files (the SVG is resolution-free)
DPI = 150
#: name of the per-notebook caption index read by the gallery
CAPTIONS_FILE = "captions.json"

# Fixed colours: the positional encodings take the "tab10"/"tab20" hues, the RoPE scaling types a
# second, distinct set. "rope" and "default" (RoPE without scaling) share a colour on purpose.
ENCODING_COLORS: Mapping[str, str] = {
    # positional encodings
    "nope": "#7f7f7f",  # grey
    "sinusoidal": "#8c564b",  # brown
    "learned": "#e377c2",  # pink
    "t5": "#9467bd",  # purple
    "alibi": "#2ca02c",  # green
    "rope": "#1f77b4",  # blue
    "xpos": "#17becf",  # cyan
    "kerple": "#bcbd22",  # olive
    "fire": "#d62728",  # red
    "randomized": "#ff7f0e",  # orange
    # RoPE scaling types (HF rope_type names, plus "ntk" and "proportional")
    "default": "#1f77b4",  # = rope
    "linear": "#aec7e8",  # light blue
    "ntk": "#98df8a",  # light green
    "dynamic": "#ffbb78",  # light orange
    "yarn": "#c5b0d5",  # lavender
    "llama3": "#ff9896",  # salmon
    "longrope": "#c49c94",  # tan
    "proportional": "#dbdb8d",  # khaki
}

# Colours for names outside the table (e.g. an encoding a reader defines in a notebook): stable per
# name, drawn from a palette disjoint in order from the table above.
_EXTRA_PALETTE = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def set_theme(context: str = "notebook") -> None:
    """Apply the collection's one seaborn theme (white grid, colour-blind-safe defaults, tidy fonts)."""
    sns.set_theme(
        context=context,
        style="whitegrid",
        palette="colorblind",
        rc={
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": DPI,
            "axes.titlesize": "medium",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "svg.hashsalt": "ropelib",  # stable SVG ids, so re-rendered figures diff cleanly
        },
    )


def color_for(name: str) -> str:
    """The fixed colour of an encoding or RoPE scaling type (case-insensitive).

    Names outside ``ENCODING_COLORS`` get a stable colour derived from the name, so a notebook's own
    inline encoding is coloured consistently too.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"color_for needs a non-empty encoding name, got {name!r}")
    key = name.lower()
    if key in ENCODING_COLORS:
        return ENCODING_COLORS[key]
    # stable across processes (unlike hash()): sum of code points
    return _EXTRA_PALETTE[sum(map(ord, key)) % len(_EXTRA_PALETTE)]


def palette_for(names) -> dict[str, str]:
    """``{name: colour}`` for seaborn's ``palette=`` argument."""
    return {n: color_for(n) for n in names}


def _check_name(label: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value in (".", ".."):
        raise ValueError(
            f"{label} must be a plain file name (letters, digits, '_', '-', '.'; no path separators), "
            f"got {value!r}"
        )
    return value


def read_captions(notebook: str) -> dict[str, str]:
    """The ``{figure name: caption}`` index of one notebook's figures (empty if none)."""
    path = figures_dir() / _check_name("notebook", notebook) / CAPTIONS_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def savefig(fig: Figure, name: str, *, notebook: str, caption: str) -> Path:
    """Write ``fig`` as ``figures_dir()/<notebook>/<name>.png`` (dpi ``DPI``) and ``.svg``.

    Both files are rendered to memory first and written atomically; the one-line ``caption`` is
    recorded in that folder's ``captions.json``. Returns the PNG path. ``name`` and ``notebook`` must
    be plain names (no path separators); ``name`` has no extension.
    """
    _check_name("name", name)
    _check_name("notebook", notebook)
    if name.lower().endswith((".png", ".svg")):
        raise ValueError(f"name must not carry an extension (PNG and SVG are both written), got {name!r}")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty one-line string, got {caption!r}")
    caption = " ".join(caption.split())  # one line
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")

    folder = figures_dir() / notebook
    outputs = {}
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        # metadata without dates, so an unchanged figure re-renders to identical bytes
        metadata = {"Software": None} if ext == "png" else {"Date": None, "Creator": None}
        fig.savefig(buf, format=ext, dpi=DPI, bbox_inches="tight", metadata=metadata)
        outputs[ext] = buf.getvalue()
    png = atomic_write_bytes(folder / f"{name}.png", outputs["png"])
    atomic_write_bytes(folder / f"{name}.svg", outputs["svg"])

    captions = read_captions(notebook)
    captions[name] = caption
    atomic_write_text(folder / CAPTIONS_FILE, json.dumps(dict(sorted(captions.items())), indent=2) + "\n")
    return png
