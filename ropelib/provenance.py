"""Where a notebook's numbers came from: profile, device, source identity, package versions, time, machine.

Every notebook ends with ``show_provenance(profile, device, **params)`` (docs/design.md §10, "Notebooks": the
committed outputs record the profile, device, package versions and git commit of their reference run).
``collect_provenance`` returns the same facts as a dict; ``run_all.py`` writes them into its manifest.

The source identity (``source_state``) is the commit plus a hash of the tracked *code* (``CODE_PATHSPECS``:
the library, the notebooks' ``.py`` texts without their injected-parameters cell, ``run_all.py``,
``profiles.yaml``, ``pyproject.toml``), not of the outputs: a reference run committed right after the
code it ran reports ``code_dirty: False`` even though it rewrote notebooks, figures and results.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from .paths import REPO_ROOT

__all__ = [
    "PACKAGES",
    "CODE_PATHSPECS",
    "git_state",
    "source_state",
    "package_versions",
    "device_description",
    "machine_identity",
    "collect_provenance",
    "provenance_table",
    "show_provenance",
]

#: the distributions whose versions are recorded (missing ones are reported as "not installed")
PACKAGES = ("ropelib", "torch", "numpy", "scipy", "pandas", "matplotlib", "seaborn", "transformers", "papermill")


def git_state(root: os.PathLike | str = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` for the repository at ``root``.

    ``None`` values when git or the repository is unavailable (e.g. an installed copy).
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status.strip())}


#: the tracked files whose contents determine the outputs (git pathspecs); outputs and docs are not code
CODE_PATHSPECS = ("ropelib", "notebooks/*.py", "run_all.py", "profiles.yaml", "pyproject.toml")

#: a jupytext percent cell holding the parameters papermill injected (run-specific, not code)
_INJECTED_CELL = re.compile(r'^# %% tags=\["injected-parameters"\]\n.*?(?=^# %%|\Z)', re.S | re.M)


def _git(root: os.PathLike | str, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=30, check=True).stdout


def _normalised(path: str, data: bytes) -> bytes:
    """``data`` as hashed: a notebook's ``.py`` text loses its injected-parameters cell."""
    if path.startswith("notebooks/") and path.endswith(".py"):
        return _INJECTED_CELL.sub("", data.decode("utf-8", errors="replace")).encode("utf-8")
    return data


def source_state(root: os.PathLike | str = REPO_ROOT) -> dict[str, Any]:
    """``{"commit", "code_hash", "code_dirty"}``: the commit, a hash of the tracked code as it is on disk,
    and whether that code differs from the commit (outputs never count, see ``CODE_PATHSPECS``).

    ``code_hash`` is the first 16 hex digits of a SHA-256 over each tracked code file's path and
    normalised contents, so two checkouts with the same code give the same hash. ``None`` values when
    git or the repository is unavailable (e.g. an installed copy).
    """
    try:
        commit = _git(root, "rev-parse", "HEAD").decode().strip() or None
        files = sorted(f for f in _git(root, "ls-files", "-z", "--", *CODE_PATHSPECS).decode().split("\0") if f)
        changed = [
            line[3:]
            for line in _git(root, "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHSPECS)
            .decode()
            .splitlines()
            if line.strip()
        ]
        digest = hashlib.sha256()
        contents = {}
        for name in files:
            try:
                contents[name] = _normalised(name, (Path(root) / name).read_bytes())
            except FileNotFoundError:
                contents[name] = b"<deleted>"
            digest.update(name.encode() + b"\0" + hashlib.sha256(contents[name]).digest())
        dirty = False
        for name in changed:
            name = name.split(" -> ")[-1].strip('"')
            try:
                committed = _normalised(name, _git(root, "show", f"HEAD:{name}"))
            except subprocess.CalledProcessError:  # added since the commit
                committed = None
            if committed != contents.get(name):
                dirty = True
                break
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "code_hash": None, "code_dirty": None}
    return {"commit": commit, "code_hash": digest.hexdigest()[:16], "code_dirty": dirty}


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{"python": ..., package: version}``; a package that is not installed maps to ``"not installed"``."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(device: Any) -> str:
    """The torch device actually used, with the GPU name where there is one (e.g. ``"cuda:0 (NVIDIA H100)"``).

    ``device`` may be a ``torch.device``, a string such as ``"cpu"``/``"cuda"``/``"auto"`` (resolved like
    ``ropelib.model.select_device``: cuda, then mps, then cpu), or ``None`` (same as ``"auto"``).
    """
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"{dev} (CUDA not available)"
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if dev.type == "mps":
        return f"mps ({platform.machine()})"
    return f"cpu ({platform.processor() or platform.machine()})"


def machine_identity(device: Any) -> dict[str, Any]:
    """What a timing depends on besides the code: the host name, the CPU model (``/proc/cpuinfo``'s
    ``model name`` where there is one), the number of cores, torch's intra-op thread count and the device
    (``device_description``). A timing read back from a cache is only reused on a machine with all of these
    equal (``ropelib.protocols.training_throughput``)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device_description(device),
    }


def collect_provenance(profile: str, device: Any, **params: Any) -> dict[str, Any]:
    """The provenance facts as a flat dict (``params`` are recorded as given, e.g. the notebook's knobs)."""
    source = source_state()
    info: dict[str, Any] = {
        "profile": profile,
        "device": device_description(device),
        "git_commit": source["commit"],
        "code_hash": source["code_hash"],
        "code_dirty": source["code_dirty"],
    }
    info.update({f"version.{k}": v for k, v in package_versions().items()})
    info.update(
        {
            "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        }
    )
    info.update({f"param.{k}": v for k, v in params.items()})
    return info


def provenance_table(profile: str, device: Any, **params: Any) -> pd.DataFrame:
    """A one-column table (index ``item``, column ``value``) of ``collect_provenance(...)``."""
    info = collect_provenance(profile, device, **params)
    return pd.DataFrame({"value": [str(v) for v in info.values()]}, index=pd.Index(list(info), name="item"))


def show_provenance(profile: str, device: Any, **params: Any) -> None:
    """Display (in a notebook) or print the ``provenance_table``. Returns ``None``, so a notebook's last
    line ``show_provenance(profile, device)`` shows the table once."""
    table = provenance_table(profile, device, **params)
    try:  # in IPython/Jupyter show it as a table; elsewhere print it
        from IPython.display import display

        get_ipython  # type: ignore[name-defined]  # noqa: B018
        display(table)
    except (ImportError, NameError):
        print(table.to_string(), file=sys.stdout)
