"""Shared pytest set-up: every run writes figures, results and the run cache to temporary folders,
so the test suite never touches the committed ``figures/`` and ``results/``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def shared_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run cache for the whole test session, shared by the pytest-xdist workers (the parent of the
    workers' base temp folders): the smoke runs of notebooks 04-06, the fork test and the rerun test train
    the same smoke base models, and ``ropelib.runs`` locks each entry, so a model trained by one worker is
    read back by the others instead of trained again."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "ropelib_shared"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(autouse=True, scope="session")
def _isolated_outputs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ropelib_outputs")
    old = {k: os.environ.get(k) for k in ("ROPELIB_FIGURES_DIR", "ROPELIB_RESULTS_DIR", "ROPELIB_CACHE_DIR")}
    os.environ["ROPELIB_FIGURES_DIR"] = str(root / "figures")
    os.environ["ROPELIB_RESULTS_DIR"] = str(root / "results")
    os.environ["ROPELIB_CACHE_DIR"] = str(shared_cache_root(tmp_path_factory) / "cache")
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and most reproducibly, on one intra-op thread (above all on a shared CPU)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def dict_cache():
    """A fresh in-memory stand-in for ``ropelib.memo.cached`` (same call signature), so evaluations in a
    test are computed once and never touch the on-disk cache."""
    store: dict = {}

    def cached(name, key, compute):
        k = (name, repr(sorted(key.items())))
        if k not in store:
            store[k] = compute()
        return store[k]

    return cached
