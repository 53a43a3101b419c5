"""The compiled kernels, imported in one place with a clear error when the
package has not been built yet.

``spmm``       sparse products of a layer (``pyx/_spmm.pyx``)
``activation`` activations, dropout and output losses (``pyx/_activation.pyx``)
``topology``   transposed index, SET selection/merge, importance (``pyx/_topology.pyx``)
``merge``      sorted-row merges of the parallel trainer: retain valid updates,
               union of two topologies (``pyx/_merge.pyx``)

``spmm`` and ``activation`` also come as serial builds of the same source
(``pyx/*_serial.pyx``, compiled without OpenMP): :func:`spmm_for` and
:func:`activation_for` pick them for a call that runs on one thread.
"""

from __future__ import annotations

import logging
import os
import time

# How long an idle OpenMP thread spins before it sleeps.  libgomp's default
# (OMP_WAIT_POLICY unset) is 300000 spins, ~8 ms on the EPYC this was
# measured on: longer than a scheduler time slice, so a thread whose core
# another process also wants burns its share spinning, and every barrier
# then waits a time slice for it.  1000 spins (~0.1 ms here) still bridge the
# gap between two kernel calls of a step (~5 us), but a thread that does
# sleep is woken ahead of a CPU-bound neighbour: a Higgs-sized network on 2
# threads next to one busy process took 1.0-2.2x the time of 1 thread over 8
# runs, against 0.6-13x (once 70x) with the default spin (calls too small to
# split run on one thread anyway, see min_parallel_work).  Applied only when
# the user set neither variable, and only to the libgomp our modules link,
# which reads them once, when it is loaded by the imports below; then removed
# again, so other libraries and child processes see the environment as it
# was.  A clang/libomp build ignores it (its KMP_BLOCKTIME is left alone).
SPINCOUNT = 1000
_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _libgomp_loaded() -> bool:
    """True when the libgomp our modules link is already mapped into this
    process, so its settings are fixed: the system one, or the copy that
    auditwheel bundles into a wheel (sparse_mlp.libs/libgomp-<hash>.so...)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
        return "/libgomp.so" in maps or "/sparse_mlp.libs/libgomp" in maps
    except OSError:  # pragma: no cover - non-Linux
        return False


def _bound_spin() -> str:
    """Set GOMP_SPINCOUNT for the import below unless the user chose a wait
    policy; returns what happened ('user', 'preloaded' or 'bounded')."""
    if any(v in os.environ for v in _WAIT_VARS):
        return "user"
    if _libgomp_loaded():
        logging.getLogger(__name__).debug(
            "libgomp was loaded before sparse_mlp's kernels: its spin count is its own")
        return "preloaded"
    os.environ["GOMP_SPINCOUNT"] = str(SPINCOUNT)
    return "bounded"


WAIT_POLICY = _bound_spin()
try:
    from . import _activation as activation
    from . import _activation_serial as activation_serial
    from . import _merge as merge
    from . import _spmm as spmm
    from . import _spmm_serial as spmm_serial
    from . import _topology as topology
except ImportError as exc:  # pragma: no cover - exercised only on unbuilt trees
    raise ImportError(
        "sparse_mlp's compiled kernels are missing or out of date "
        f"({exc}). Build them with `make` (or `pip install .`) in the project root."
    ) from exc
finally:
    if WAIT_POLICY == "bounded":  # read by now; other libraries' OpenMP keeps its own
        os.environ.pop("GOMP_SPINCOUNT", None)

spmm._link_twin(spmm_serial)  # spmm's setters (SIMD level, prefetching ...) set both builds


def spmm_for(n_threads: int, work: int | None = None):
    """The ``spmm`` build for a call on ``n_threads``: the serial one
    (``pyx/_spmm_serial.pyx``) when the call runs on one thread anyway
    (``n_threads`` 1, or ``work`` multiply-adds given and fewer than
    :func:`min_parallel_work`, the kernels' own rule for the products); else
    the OpenMP build, whose kernel decides (``work`` None: the gathers, which
    count their work their own way).  Even a team of one costs libgomp a
    ``futex`` system call at every parallel region and barrier, ~27 a step of
    Madelon's network (BENCHMARKS.md §2).  Speed only: the same source, the
    same bits."""
    if n_threads <= 1 or (work is not None and work < spmm.min_parallel_work()):
        return spmm_serial
    return spmm


def activation_for(n_threads: int, work: int | None = None):
    """The ``activation`` build for a call on ``n_threads``: the serial one on
    one thread, or when ``work`` (in multiply-adds of the products) is given
    and below :func:`min_parallel_work` (the rule of :func:`spmm_for`)."""
    return activation_serial if spmm_for(n_threads, work) is spmm_serial else activation


# activation codes shared with pyx/rowkern.h
ACT_IDENTITY = 0
ACT_RELU = 1
ACT_LEAKY = 2
ACT_TANH = 3
ACT_SIGMOID = 4
ACT_SRELU = 5


def _positive(text: str | None) -> int:
    """A positive integer from an environment value ('4', or OMP's '4,2'), else 0."""
    head = (text or "").split(",")[0].strip()
    return int(head) if head.isdigit() and int(head) > 0 else 0


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cgroup
    cpusets, srun/mpiexec binding), capped by SLURM_CPUS_PER_TASK when set
    (a job step that was not bound still sees every core of the node)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    slurm = _positive(os.environ.get("SLURM_CPUS_PER_TASK"))
    if slurm:
        n = min(n, slurm)
    return max(1, n)


def threads_source() -> tuple[int, str]:
    """The default kernel thread count and where it comes from, in order:
    SPARSE_MLP_THREADS, OMP_NUM_THREADS, else :func:`usable_cpus`."""
    for var in ("SPARSE_MLP_THREADS", "OMP_NUM_THREADS"):
        n = _positive(os.environ.get(var))
        if n:
            return n, var
    return usable_cpus(), "usable CPUs"


def default_threads() -> int:
    """Kernel threads when none are given: $SPARSE_MLP_THREADS, else
    $OMP_NUM_THREADS, else the CPUs this process may use (affinity, capped
    by $SLURM_CPUS_PER_TASK)."""
    return threads_source()[0]


def busy_cpus(cpus: set[int] | None = None, sample_s: float = 0.1) -> float | None:
    """How many of ``cpus`` (default: this process's) other processes keep
    busy, from /proc/stat sampled over ``sample_s`` seconds while this
    process sleeps: the sum over those CPUs of their non-idle fraction.
    None where /proc/stat cannot be read."""
    def read() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3:4].isdigit():
                    name, *vals = line.split()
                    v = [int(x) for x in vals[:8]]
                    out[int(name[3:])] = (sum(v), v[3] + v[4])  # (total, idle + iowait)
        return out
    try:
        cpus = set(os.sched_getaffinity(0)) if cpus is None else set(cpus)
        a = read()
        time.sleep(sample_s)
        b = read()
    except (OSError, AttributeError, ValueError):
        return None
    busy = 0.0
    for c in cpus & a.keys() & b.keys():
        total = b[c][0] - a[c][0]
        if total > 0:
            busy += 1.0 - (b[c][1] - a[c][1]) / total
    return busy


def thread_warnings(requested: int | None = None, sample_s: float = 0.05) -> list[str]:
    """One-line warnings (for the CLI to print) when the kernel threads
    exceed the CPUs this process may use, or the CPUs other processes leave
    free (sampled for ``sample_s`` s; 0 skips that check).  Warns, never
    refuses: ``requested`` is --threads, None for the default."""
    n, source = (requested, "--threads") if requested else threads_source()
    usable = usable_cpus()
    if n > usable:
        where = "--threads" if source == "--threads" else f"${source}"
        return [f"{where} {n} is more than the {usable} CPU{'s' * (usable > 1)} this "
                f"process may use "
                f"(affinity / SLURM_CPUS_PER_TASK): extra threads only wait for each other; "
                f"use {usable} or fewer"]
    if n < 2 or sample_s <= 0:
        return []
    busy = busy_cpus(sample_s=sample_s)
    if busy is None:
        return []
    free = usable - busy
    if n > free + 0.5:
        return [f"{n} kernel threads but only about {max(free, 0):.1f} of the {usable} usable "
                f"CPUs are free (other processes use ~{busy:.1f}): threads sharing a core run "
                f"slower; consider --threads {max(1, int(free + 0.5))}"]
    return []


def min_parallel_work(work: int | None = None) -> int:
    """Kernel calls with less work than this (multiply-adds, nnz * B; weights
    for the topology kernels) run on one thread, whatever ``n_threads`` says
    (pyx/rowkern.h, "threads per call").  With an argument, set it in every
    module first (0: always use the threads asked for).  Speed only: results
    are bit-identical for any thread count.  $SPARSE_MLP_MIN_PARALLEL_WORK
    sets it at import."""
    if work is not None:
        topology.min_parallel_work(work)
    return spmm.min_parallel_work(work)


def _min_work_from_environment() -> None:
    value = os.environ.get("SPARSE_MLP_MIN_PARALLEL_WORK", "").strip()
    if value:
        if not value.isdigit():
            raise ValueError(f"SPARSE_MLP_MIN_PARALLEL_WORK={value!r}: the work below which a "
                             f"kernel call runs on one thread must be an integer >= 0 (0: "
                             f"always split); unset it for the default "
                             f"{spmm.min_parallel_work()}")
        min_parallel_work(int(value))


_min_work_from_environment()


ALIGN = 64  # bytes: one cache line, one AVX-512 vector


def aligned_empty(shape, dtype=None):
    """An uninitialised C-contiguous array whose first element starts on a
    64-byte boundary (NumPy's allocator gives 16).  Activation blocks are
    read a row at a time in AVX-512 vectors: with rows of a multiple of 16
    floats (batch 32, 128, ...) every vector load is then within one cache
    line instead of straddling two.  The values computed are the same."""
    import numpy as np

    dtype = np.dtype(np.float32 if dtype is None else dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def build_info() -> dict:
    """How the kernels were built and which SIMD path runs."""
    return {
        "openmp": spmm.openmp_enabled(),
        "simd": spmm.simd_level(),
        "cpu_simd": spmm.cpu_simd_level(),
        "min_parallel_work": spmm.min_parallel_work(),
        "openmp_wait": WAIT_POLICY,
    }


__all__ = ["spmm", "activation", "topology", "merge", "spmm_for", "activation_for",
           "spmm_serial", "activation_serial", "default_threads", "usable_cpus",
           "threads_source", "busy_cpus", "thread_warnings", "min_parallel_work", "build_info",
           "aligned_empty"]
