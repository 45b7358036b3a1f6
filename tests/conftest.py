"""Shared pytest set-up: every run writes figures, results and the run cache to temporary folders,
so the test suite never touches the committed ``figures/`` and ``results/``."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_outputs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ropelib_outputs")
    old = {k: os.environ.get(k) for k in ("ROPELIB_FIGURES_DIR", "ROPELIB_RESULTS_DIR", "ROPELIB_CACHE_DIR")}
    os.environ["ROPELIB_FIGURES_DIR"] = str(root / "figures")
    os.environ["ROPELIB_RESULTS_DIR"] = str(root / "results")
    os.environ["ROPELIB_CACHE_DIR"] = str(root / "cache")
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
