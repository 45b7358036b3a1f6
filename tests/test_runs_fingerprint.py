"""The code fingerprint in the run hash (issue 14, case 4): a change to the code that trains a model
changes every run hash (so it retrains), a comment, docstring or formatting change does not, and the
fingerprint covers every library module that training imports. Edits are made to temporary copies of
the sources, never to the real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

import ropelib.encodings.nope  # noqa: F401  (registers "nope")
import ropelib.runs as runs
from ropelib import fingerprint as fp
from ropelib import memo
from ropelib.data import TaskConfig
from ropelib.model import ModelConfig
from ropelib.paths import REPO_ROOT
from ropelib.runs import RunSpec, run, run_dir
from ropelib.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)

#: the learning-rate warm-up in ropelib/train.py (the change of issue 14's case 4 is of this kind)
WARMUP = "return (step + 1) / self.warmup_steps"


def tiny_spec(steps: int = 2, parent: RunSpec | None = None) -> RunSpec:
    model = ModelConfig(vocab_size=15, n_layers=1, n_heads=2, d_model=16, encoding="nope")
    train = TrainConfig(steps=steps, batch_size=4, seq_len=16, warmup_steps=1, lr=1e-2, device="cpu")
    return RunSpec(model=model, task=TaskConfig("passkey"), train=train, parent=parent)


@pytest.fixture
def sources(tmp_path):
    """A temporary copy of the package's sources and a function fingerprinting the copy's training code."""
    root = tmp_path / "ropelib"
    shutil.copytree(fp.PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "corpora"))

    def fingerprint() -> str:
        return fp.fingerprint(fp.read_sources(fp.TRAINING_SOURCES, fp.TRAINING_FUNCTIONS, root=root))

    return root, fingerprint


def edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} is no longer in {path.name}: update this test"
    path.write_text(text.replace(old, new, 1))


def test_the_copy_has_the_fingerprint_of_the_package(sources):
    _, fingerprint = sources
    assert fingerprint() == fp.fingerprint(fp.training_sources())
    assert len(fingerprint()) == 64


def test_comments_docstrings_and_formatting_do_not_count(sources):
    root, fingerprint = sources
    before = fingerprint()
    train = root / "train.py"
    edit(train, WARMUP, WARMUP + "  # a comment at the end of a line")
    edit(
        train,
        '"""Multiplier of the base learning rate',
        '"""Rewritten docstring.\n\n    Multiplier of the base learning rate',
    )
    train.write_text(
        "# a new first line\n"
        + train.read_text().replace("\n\n\ndef ", "\n\n\n\n\ndef ")
        + '\n\n"""a bare string at the end"""\n'
    )
    edit(root / "model.py", "import math\n", "import math  # for sqrt\n\n")
    assert fingerprint() == before


@pytest.mark.parametrize(
    "file, old, new",
    [
        ("train.py", WARMUP, "return step / self.warmup_steps"),  # the learning-rate schedule
        ("train.py", WARMUP, WARMUP.replace("step + 1", "step+1") + "\n        x = 1"),  # a statement more
        ("rope.py", "import torch\n", "import torch\nimport cmath\n"),
        ("rope_scaling.py", "import math\n", "import math\nimport cmath\n"),
        ("encodings/alibi.py", "import math\n", "import math\nimport cmath\n"),
        ("data.py", "import json\n", "import json\nimport cmath\n"),
        ("runs.py", "torch.manual_seed(spec.train.seed)", "torch.manual_seed(spec.train.seed + 1)"),
    ],
)
def test_a_change_to_the_training_code_counts(sources, file, old, new):
    root, fingerprint = sources
    before = fingerprint()
    edit(root / file, old, new)
    assert fingerprint() != before


def test_the_cache_machinery_of_runs_does_not_count(sources):
    root, fingerprint = sources
    before = fingerprint()
    edit(root / "runs.py", "DIR_HASH_CHARS = 16", "DIR_HASH_CHARS = 20")  # not a training function
    assert fingerprint() == before


def test_normalise_keeps_code_and_drops_docstrings():
    a = fp.normalise('def f(x):\n    """Doc."""\n    # comment\n    return x+1\n')
    b = fp.normalise("def f( x ):\n    return (x + 1)\n")
    assert a == b == "def f(x):\n    return x + 1"
    assert fp.normalise('def g():\n    """Only a docstring."""\n') == "def g():\n    pass"
    assert fp.normalise("x = 'a string value'") != fp.normalise("x = 'another value'")  # not a docstring
    assert fp.normalise("def f(): pass\ndef g(): return 1\n", functions=["g"]) == "def g():\n    return 1"
    with pytest.raises(ValueError, match=r"no top-level function or class \['h'\]"):
        fp.normalise("def f(): pass\n", "x.py", functions=["h"])
    with pytest.raises(ValueError, match=r"no source file matches 'nothing_\*\.py'"):
        fp.read_sources(["nothing_*.py"])


def test_the_hash_and_the_entry_follow_the_fingerprint(tmp_path, monkeypatch):
    parent = tiny_spec()
    child = tiny_spec(steps=1, parent=parent)
    first = run(child, cache_dir=tmp_path, progress=False)
    code = runs.code_fingerprint()
    assert first.metadata["code"] == code
    assert json.loads((first.path / "spec.json").read_text())["code"] == code
    assert RunSpec.identity(child)["code"] == code

    monkeypatch.setattr(runs, "code_fingerprint", lambda: "0" * 64)  # as if train.py had changed
    assert child.hash() != first.hash and parent.hash() != first.metadata["parent_hash"]
    assert run_dir(child, tmp_path) != first.path
    second = run(child, cache_dir=tmp_path, progress=False)
    assert not second.cached and second.metadata["code"] == "0" * 64
    assert second.metadata["parent_hash"] == parent.hash()  # the parent was trained again too
    assert json.loads((run_dir(parent, tmp_path) / "metadata.json").read_text())["code"] == "0" * 64

    monkeypatch.undo()  # the old code again: its entries are still there
    assert run(child, cache_dir=tmp_path, progress=False).cached


def test_eval_cache_shares_the_implementation(monkeypatch):
    assert memo.code_fingerprint() == fp.package_fingerprint()
    assert fp.package_fingerprint() != fp.training_fingerprint()


@pytest.mark.slow  # a fresh process: a torch import and a tiny training
def test_training_sources_cover_every_module_training_imports(tmp_path):
    """Train a tiny run (lazy imports included) in a fresh process and list the ``ropelib`` modules it
    loaded: each must be fingerprinted, or be one that cannot change the weights."""
    not_training = {"ropelib", "ropelib.runs", "ropelib.fingerprint", "ropelib.paths", "ropelib.provenance"}
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        torch.set_num_threads(1)
        from ropelib.runs import RunSpec, run
        spec = RunSpec.from_dict(json.loads({json.dumps(json.dumps(tiny_spec().to_dict()))}))
        spec = RunSpec.from_dict({{**spec.to_dict(), "model": {{**spec.model.to_dict(), "encoding": "rope"}}}})
        run(spec, cache_dir={str(tmp_path)!r}, progress=False)
        print(json.dumps(sorted(m for m in sys.modules if m == "ropelib" or m.startswith("ropelib."))))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    covered = {
        "ropelib." + name.removesuffix(".py").replace("/", ".") for name in fp.training_sources() if ":" not in name
    }
    covered = {m.removesuffix(".__init__") for m in covered}
    assert "ropelib.train" in loaded and "ropelib.encodings.rope" in loaded
    assert loaded - covered - not_training == set(), "add these modules to ropelib.fingerprint.TRAINING_SOURCES"
