"""MPI side of tests/test_parallel.py (not a test module): run under
``mpiexec -n K+1 python tests/_mpi_helper.py MODE ...``.

    cli ARGS...
        run_experiment.main(ARGS) on every rank; with $SLOW_STEP_S set,
        every mini-batch of every worker first sleeps that long (results
        are unchanged: only time passes), so that a signal or a kill sent
        from outside lands in the middle of training.
    runs JSON
        run_experiment.main(argv) for each argv of the JSON list, one after
        the other on the same ranks (as ``--reproduce table3`` does); exits
        with the first non-zero status.
    raise RANK STEP ARGS...
        as ``cli``, but the worker of rank RANK raises RuntimeError at its
        STEP-th gradient.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _processes import slow_down  # noqa: E402 (tests/ is this script's folder)


def _raise_on(rank: int, step: int) -> None:
    from mpi4py import MPI

    from sparse_mlp.model import SparseMLP

    if MPI.COMM_WORLD.Get_rank() != rank:
        return
    accumulate = SparseMLP._accumulate
    calls = []

    def failing_accumulate(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise RuntimeError(f"injected failure at gradient {step}")
        return accumulate(self, *args, **kwargs)

    SparseMLP._accumulate = failing_accumulate


def main(argv: list[str]) -> int:
    import run_experiment

    mode, rest = argv[0], argv[1:]
    delay = float(os.environ.get("SLOW_STEP_S", "0") or 0)
    if delay:
        slow_down(delay)
    if mode == "cli":
        return run_experiment.main(rest)
    if mode == "runs":
        for args in json.loads(rest[0]):
            code = run_experiment.main(args)
            if code:
                return code
        return 0
    if mode == "raise":
        _raise_on(int(rest[0]), int(rest[1]))
        return run_experiment.main(rest[2:])
    return f"unknown mode {mode!r}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
