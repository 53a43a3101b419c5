"""The compiled kernels, imported in one place with a clear error when the
package has not been built yet.

``spmm``       sparse products of a layer (``pyx/_spmm.pyx``)
``activation`` activations, dropout and output losses (``pyx/_activation.pyx``)
``topology``   transposed index, SET selection/merge, importance (``pyx/_topology.pyx``)
``merge``      sorted-row merges of the parallel trainer: retain valid updates,
               union of two topologies (``pyx/_merge.pyx``)
"""

from __future__ import annotations

import os

try:
    from . import _activation as activation
    from . import _merge as merge
    from . import _spmm as spmm
    from . import _topology as topology
except ImportError as exc:  # pragma: no cover - exercised only on unbuilt trees
    raise ImportError(
        "sparse_mlp's compiled kernels are missing or out of date "
        f"({exc}). Build them with `make` (or `pip install .`) in the project root."
    ) from exc

# activation codes shared with pyx/rowkern.h
ACT_IDENTITY = 0
ACT_RELU = 1
ACT_LEAKY = 2
ACT_TANH = 3
ACT_SIGMOID = 4
ACT_SRELU = 5


def default_threads() -> int:
    """Cores this process may run on (respects taskset/cgroups affinity and
    the SPARSE_MLP_THREADS / OMP_NUM_THREADS environment variables)."""
    for var in ("SPARSE_MLP_THREADS", "OMP_NUM_THREADS"):
        val = os.environ.get(var, "").strip()
        if val.isdigit() and int(val) > 0:
            return int(val)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def build_info() -> dict:
    """How the kernels were built and which SIMD path runs."""
    return {
        "openmp": spmm.openmp_enabled(),
        "simd": spmm.simd_level(),
        "cpu_simd": spmm.cpu_simd_level(),
    }


__all__ = ["spmm", "activation", "topology", "merge", "default_threads", "build_info"]
