"""Shared by the tests that drive real subprocesses (not a test module)."""

from __future__ import annotations

import os
import signal
import subprocess
import time


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
