"""Data-parallel training of truly sparse MLPs over MPI: WASAP-SGD and
WASSP-SGD (paper Algorithm 1).

    mpiexec -n K+1 python run_experiment.py --parallel wasap ...   # or wassp

Rank 0 is the parameter server, ranks 1..K the workers.  From Python, on
every rank::

    from sparse_mlp.parallel import run_parallel
    summary = run_parallel(cfg)   # rank 0: the summary dict; workers: None

Modules: ``driver`` (:func:`run_parallel`: setup, data partitions, results
on disk), ``server`` (the parameter server, rank 0), ``worker`` (a worker,
ranks 1..K), ``state`` (what both share: a worker's position for
checkpoints, replicas, the workers' random streams, the WASSP warm-up),
``transport`` (framed, chunked, non-spinning MPI messages; fault
handling), ``codec`` (models and gradients as flat NumPy buffers), ``ops``
(retain valid updates, averaging of K sparse models; kernels in
``pyx/_merge.pyx``).  Every end of an epoch, at the server and in the
workers, goes through :func:`sparse_mlp.epoch.end_of_epoch`.

mpi4py is imported only when a parallel run starts, so the rest of the
package works without MPI installed.
"""

from __future__ import annotations

from typing import Any


def run_parallel(cfg, comm=None, **kwargs: Any) -> dict[str, Any] | None:
    """Train with WASAP-SGD or WASSP-SGD over MPI; see
    :func:`sparse_mlp.parallel.driver.run_parallel`."""
    try:
        from .driver import run_parallel as _run
    except ImportError as exc:
        if "mpi4py" not in str(exc) and "libmpi" not in str(exc):
            raise
        from ..errors import ConfigError
        raise ConfigError(
            f"--parallel needs mpi4py and an MPI library ({exc}). Install them with "
            f"`pip install mpich mpi4py` (any machine), or on a cluster build mpi4py against "
            f"the site MPI: `module load <mpi>; MPICC=$(which mpicc) pip install "
            f"--no-binary=mpi4py --no-cache-dir mpi4py`") from None
    return _run(cfg, comm, **kwargs)


def mpi_available() -> bool:
    """Whether mpi4py (and an MPI library behind it) can be imported."""
    try:
        from mpi4py import MPI  # noqa: F401
    except Exception:  # ImportError, or a missing/broken MPI shared library
        return False
    return True


__all__ = ["run_parallel", "mpi_available"]
