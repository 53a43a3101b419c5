"""MPI side of tests/test_parallel_faults.py (not a test module): run under
``mpiexec -n K+1 python tests/_faults_mpi_helper.py ARGS...``, which are
``run_experiment.main``'s, on every rank.  Environment switches (each rank
reads them; results are unchanged, only time passes):

    SLOW_STEP_S=S           every mini-batch of every worker first sleeps S s,
                            so that a signal sent from outside lands mid-run
    FAULT_SEND_DELAY=SEED:MAX
                            every message a rank sends (header and arrays)
                            first waits a random 0..MAX s, drawn from a stream
                            seeded by SEED and the rank: the other ranks see
                            messages arrive in a shuffled interleaving
    FAULT_NO_WATCH=1        no watch on the other ranks of the node (as when
                            they run on other nodes): a death must be noticed
                            through MPI itself
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _processes import slow_down  # noqa: E402 (tests/ is this script's folder)


def _delay_sends(spec: str) -> None:
    import numpy as np
    from mpi4py import MPI

    from sparse_mlp.parallel import transport

    seed, top = spec.split(":")
    rng = np.random.default_rng([int(seed), MPI.COMM_WORLD.Get_rank()])
    isend = transport.Transport.isend

    def delayed_isend(self, *args, **kwargs):
        time.sleep(float(rng.uniform(0.0, float(top))))
        return isend(self, *args, **kwargs)

    transport.Transport.isend = delayed_isend  # send() goes through isend()


def _no_watch() -> None:
    from sparse_mlp.parallel import transport

    class NoWatch:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def close(self) -> None:
            pass

    transport.DeathWatch = NoWatch


def main(argv: list[str]) -> int:
    import run_experiment

    delay = float(os.environ.get("SLOW_STEP_S", "0") or 0)
    if delay:
        slow_down(delay)
    if os.environ.get("FAULT_SEND_DELAY"):
        _delay_sends(os.environ["FAULT_SEND_DELAY"])
    if os.environ.get("FAULT_NO_WATCH"):
        _no_watch()
    return run_experiment.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
