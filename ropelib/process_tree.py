"""A notebook's process tree: papermill, its kernel and the kernel's workers, and how they are stopped.

papermill runs in its own session (started with ``PAPERMILL_BOOT``); the pipeline records the kernel's
session too (``sessions_below``) and, on Ctrl-C, SIGTERM, SIGHUP, a dead kernel or its own exit, kills
every process of those sessions (papermill, kernel, training workers; ``kill_sessions``). If the pipeline
itself is killed, papermill gets SIGTERM (Linux ``PR_SET_PDEATHSIG``) and takes its kernel's session down.
The next run resumes: finished training runs come back from the run cache of ``ropelib.runs``.
"""

from __future__ import annotations

import os
import signal
import time

try:  # finding a notebook's processes (a dependency of ipykernel, so always there in practice)
    import psutil
except ImportError:  # pragma: no cover
    psutil = None  # type: ignore[assignment]

#: seconds a notebook's processes get between SIGTERM and SIGKILL when run_all stops them
GRACE_S = 10.0
#: seconds the processes a finished notebook left behind (e.g. a dead kernel's workers) get before SIGKILL
KILL_GRACE_S = 3.0

#: how papermill is started: ``python -c PAPERMILL_BOOT <run_all's pid> <papermill arguments>``. On Linux
#: it gets SIGTERM when run_all dies, even by SIGKILL (``PR_SET_PDEATHSIG``); on SIGTERM or SIGHUP it kills
#: every process in the sessions of its descendants (the kernel leads its own session and its training
#: workers share it) before it exits, so nothing of a notebook outlives its papermill.
PAPERMILL_BOOT = r"""
import os, signal, sys

def _down(signum, frame):
    try:
        import psutil
        me = os.getpid()
        sids = set()
        for child in psutil.Process(me).children(recursive=True):
            try:
                sids.add(os.getsid(child.pid))
            except OSError:
                pass
        sids.discard(os.getsid(0))
        for pid in psutil.pids():
            try:
                if pid != me and os.getsid(pid) in sids:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    finally:
        os._exit(128 + signum)

for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _down)
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):  # run_all died before prctl
        os._exit(1)
del sys.argv[1]
sys.argv[0] = "papermill"
import runpy
runpy.run_module("papermill", run_name="__main__", alter_sys=True)
"""


def sessions_below(pid: int) -> set[int]:
    """Session ids of ``pid``'s descendants (empty without psutil, or when ``pid`` is gone)."""
    if psutil is None:
        return set()
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return set()
    sids = set()
    for child in children:
        try:
            sids.add(os.getsid(child.pid))
        except OSError:
            pass
    return sids


def session_members(sids: set[int]) -> list[int]:
    """Live (not zombie) processes in the sessions ``sids``, never this process or its own session."""
    own = os.getsid(0)
    sids = {s for s in sids if s and s != own}
    if not sids:
        return []
    pids = psutil.pids() if psutil is not None else [int(p) for p in os.listdir("/proc") if p.isdigit()]
    members = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            if os.getsid(pid) not in sids:
                continue
            if psutil is not None and psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, Exception):  # gone meanwhile (psutil.Error is not an OSError)
            continue
        members.append(pid)
    return members


def kill_sessions(sids: set[int], grace_s: float) -> None:
    """SIGTERM every process in the sessions ``sids``, SIGKILL what is still there after ``grace_s``, and
    repeat until none is left (a pool may start a replacement worker meanwhile)."""
    deadline = time.monotonic() + grace_s
    for _ in range(int(grace_s * 10) + 50):
        members = session_members(sids)
        if not members:
            return
        sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
        for pid in members:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        time.sleep(0.1)
