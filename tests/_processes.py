"""Shared by the tests that drive real subprocesses (not a test module)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def read_until(proc: subprocess.Popen, marker: str, timeout: float = 60.0,
               group: bool = False) -> str:
    """Read a process's output until a line contains ``marker`` and return
    what was read; on timeout or end of output kill it (its whole process
    group with ``group``) and fail with what it printed."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    raise AssertionError(f"{marker!r} never appeared; output:\n{''.join(seen)}")


# ---------------------------------------------------------------------- MPI
# mpiexec on PATH, or beside this Python (pip's mpich installs it into the environment's bin/)
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
try:
    from mpi4py import MPI  # noqa: F401
    HAVE_MPI4PY = True
except Exception:  # ImportError, or no MPI library behind it
    HAVE_MPI4PY = False

needs_mpi4py = pytest.mark.skipif(not HAVE_MPI4PY, reason="mpi4py (with an MPI library) is not "
                                  "installed: pip install mpich mpi4py")
needs_mpiexec = pytest.mark.skipif(
    MPIEXEC is None or not HAVE_MPI4PY,
    reason="no mpiexec on PATH (or no mpi4py): `pip install mpich mpi4py` provides both")


def slow_down(delay: float) -> None:
    """In a subprocess helper: every training step takes ``delay`` seconds
    longer (results unchanged), so that a signal or a pause lands mid-run."""
    from sparse_mlp.model import SparseMLP

    accumulate, train_step = SparseMLP._accumulate, SparseMLP.train_step

    def slow_accumulate(self, *args, **kwargs):
        time.sleep(delay)
        return accumulate(self, *args, **kwargs)

    def slow_train_step(self, *args, **kwargs):
        time.sleep(delay)
        return train_step(self, *args, **kwargs)

    SparseMLP._accumulate = slow_accumulate
    SparseMLP.train_step = slow_train_step
