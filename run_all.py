#!/usr/bin/env python
"""Run the notebook collection through papermill: ``python run_all.py [--profile smoke|default|full]``.

    python run_all.py [--profile smoke|default|full] [--only 02 05 …] [--device auto|cpu|cuda|mps]
                      [--jobs N] [--html] [--list] [--reference] [--output-dir DIR]
    python run_all.py --new NN_my_idea [--from 00_template]
    python run_all.py --export-html [--only 02 05 …] [--output-dir DIR]

Each ``notebooks/NN_*.ipynb`` runs in order, in its own papermill subprocess, with the chosen profile's
parameters from ``profiles.yaml`` plus ``profile`` and ``device`` injected (docs/design.md §11,
"run_all.py"). Only ``--reference`` (profile ``default``) replaces the committed notebooks, ``figures/``
and ``results/``; any other run writes a sandbox, ``build/<profile>/`` (or ``--output-dir``). Exit codes:
0 ok, 1 a notebook failed, 2 bad input, 3 another run holds the output tree, 130 interrupted.

This file is the command line only; the pipeline is ``ropelib.pipeline`` (the run and ``main``), with
``ropelib.profiles`` (profiles.yaml and the parameter checks), ``ropelib.notebook_files`` (discovery, the
jupytext pair), ``ropelib.output_trees`` (where a run writes, its lock and manifest),
``ropelib.notebook_runs`` and ``ropelib.process_tree`` (one notebook's run and its processes),
``ropelib.run_progress`` (progress lines, estimates), ``ropelib.fork`` (``--new``) and
``ropelib.run_messages`` (errors, exit codes). The folder of this file is the checkout the pipeline
works on: its ``notebooks/``, ``profiles.yaml`` and ``build/`` are the defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ropelib.pipeline import main

if __name__ == "__main__":
    sys.exit(main(root=Path(__file__).resolve().parent))
