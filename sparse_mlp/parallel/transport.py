"""MPI plumbing of the parallel trainer: framed buffer messages, chunks,
waiting without spinning, and stopping the whole job when a rank fails.

Messages
--------
Every message is a fixed-length int64 *header* (tag :data:`TAG_HEADER`)
followed by zero or more NumPy arrays (tag :data:`TAG_DATA`) whose sizes
the receiver derives from the header and from what it already knows (the
model's layer shapes).  Everything goes through the upper-case, buffer
based mpi4py calls: weights and gradients are never pickled.  MPI keeps the
order of messages between two ranks on one tag, so the arrays of a message
are matched in the order they were sent.

Chunks
------
One MPI message carries at most ``chunk_bytes`` bytes (default 1 GiB,
:data:`DEFAULT_CHUNK_BYTES`): larger arrays travel as consecutive pieces of
their raw bytes, so no count ever reaches 2^31 whatever the MPI library
(the paper's implementation failed there).  Both sides cut an array the
same way, from its size alone.

Waiting
-------
MPICH's blocking calls poll the network in a busy loop.  That is the
fastest way to wait on a node where every rank has its own cores, but
when ranks share cores (more ranks x threads than cores, e.g. 3 ranks on
2 cores) a rank that spins steals the CPU the others need to compute.  A
:class:`Transport` therefore waits in one of two ways:

``spin``   ``MPI_Wait``/``MPI_Waitall``: lowest latency, one busy core per
           waiting rank;
``sleep``  ``MPI_Test`` with an exponential back-off between polls (10 us
           doubling to ``max_sleep``, 250 us by default; the thread's timer
           slack is lowered to 1 us so that short sleeps stay short): a
           waiting rank costs a few percent of a core, at the price of up to
           about one back-off step of latency per message.

``auto`` (the default of ``--mpi-wait``) picks ``sleep`` when the ranks on
a node ask for more threads than it has cores, ``spin`` otherwise.

Faults
------
:func:`rank_table` records every rank's pid and host, so that the launcher's
report of a dead process ("PID 12345 RUNNING AT node7") names a rank.
:class:`DeathWatch` notices a rank on the same node that dies without
saying goodbye (killed, crashed) and aborts the job with a message naming
it, for launchers that do not clean up by themselves.  :func:`abort` prints
which rank failed and why, then calls ``MPI_Abort``, which ends every rank
of the job: a failure never leaves the others waiting forever.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

log = logging.getLogger(__name__)

TAG_HEADER = 7101
TAG_DATA = 7102
TAG_OBJECT = 7103  # small pickled metadata (configuration, data description)
DEFAULT_CHUNK_BYTES = 1 << 30
WAIT_MODES = ("auto", "spin", "sleep")
MIN_SLEEP = 1e-5
MAX_SLEEP = 2.5e-4


class Transport:
    """Framed, chunked, non-spinning (on request) point-to-point messages.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    chunk_bytes : int
        Largest single MPI message; larger arrays are sent in pieces.
    wait : str
        'spin' or 'sleep' (see the module docs).
    max_sleep : float
        Longest pause between two polls in 'sleep' mode, seconds.
    """

    def __init__(self, comm, chunk_bytes: int = DEFAULT_CHUNK_BYTES, wait: str = "sleep",
                 max_sleep: float = MAX_SLEEP) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        if wait not in ("spin", "sleep"):
            raise ValueError(f"wait must be 'spin' or 'sleep', got {wait!r}")
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.chunk_bytes = int(chunk_bytes)
        self.spin = wait == "spin"
        self.max_sleep = float(max_sleep)
        self.bytes_sent = 0         # headers and arrays sent by this rank
        self.bytes_received = 0
        self.messages_sent = 0      # MPI messages (chunks count one each)
        self.wait_s = 0.0           # seconds spent waiting for messages
        if not self.spin:
            _fine_timer_slack()

    # ------------------------------------------------------------------ pieces
    def _pieces(self, arr: np.ndarray) -> list:
        """The raw bytes of a C-contiguous array, cut into pieces of at most
        ``chunk_bytes``; an empty array has no piece."""
        if not arr.flags.c_contiguous:
            raise ValueError("only C-contiguous arrays can be sent or received in place")
        raw = arr.reshape(-1).view(np.uint8)
        step = self.chunk_bytes
        return [[raw[i:i + step], MPI.BYTE] for i in range(0, raw.size, step)]

    # ------------------------------------------------------------------ send / receive
    def isend(self, dest: int, header: np.ndarray, arrays=()) -> list:
        """Start sending a header and its arrays; returns the requests.  The
        arrays must not change until :meth:`wait` returns for them."""
        reqs = [self.comm.Isend([header, MPI.INT64_T], dest=dest, tag=TAG_HEADER)]
        n = header.nbytes
        for arr in arrays:
            for piece in self._pieces(arr):
                reqs.append(self.comm.Isend(piece, dest=dest, tag=TAG_DATA))
            n += arr.nbytes
        self.bytes_sent += n
        self.messages_sent += len(reqs)
        return reqs

    def send(self, dest: int, header: np.ndarray, arrays=()) -> None:
        """:meth:`isend` and wait until the buffers may be reused."""
        self.wait(self.isend(dest, header, arrays))

    def recv_header(self, header: np.ndarray, source: int = MPI.ANY_SOURCE) -> int:
        """Receive a header into ``header`` (int64, the agreed length) from
        ``source`` (any rank by default); returns the sender's rank."""
        status = MPI.Status()
        req = self.comm.Irecv([header, MPI.INT64_T], source=source, tag=TAG_HEADER)
        self._wait_one(req, status)
        self.bytes_received += header.nbytes
        return status.Get_source()

    def irecv(self, source: int, arrays) -> list:
        """Start receiving arrays (allocated by the caller, with the sizes
        the sender used) from ``source``."""
        reqs = []
        for arr in arrays:
            for piece in self._pieces(arr):
                reqs.append(self.comm.Irecv(piece, source=source, tag=TAG_DATA))
            self.bytes_received += arr.nbytes
        return reqs

    def recv(self, source: int, arrays) -> None:
        self.wait(self.irecv(source, arrays))

    # ------------------------------------------------------------------ waiting
    def wait(self, reqs: list) -> None:
        """Complete every request, spinning or sleeping (module docs)."""
        if not reqs:
            return
        t0 = time.perf_counter()
        if self.spin:
            MPI.Request.Waitall(reqs)
        else:
            delay = MIN_SLEEP
            while not MPI.Request.Testall(reqs):
                time.sleep(delay)
                delay = min(delay * 2.0, self.max_sleep)
        self.wait_s += time.perf_counter() - t0

    def _wait_one(self, req, status) -> None:
        t0 = time.perf_counter()
        if self.spin:
            req.Wait(status)
        else:
            delay = MIN_SLEEP
            while not req.Test(status):
                time.sleep(delay)
                delay = min(delay * 2.0, self.max_sleep)
        self.wait_s += time.perf_counter() - t0

    def barrier(self) -> None:
        """A barrier that waits like the rest (``MPI_Ibarrier``)."""
        self.wait([self.comm.Ibarrier()])

    # ------------------------------------------------------------------ metadata
    def send_object(self, dest: int, obj) -> None:
        """Small metadata (a configuration, a description of the data) as a
        pickle; never used for weights, gradients or data."""
        self.wait([self.comm.isend(obj, dest=dest, tag=TAG_OBJECT)])

    def recv_object(self, source: int):
        """Wait for a :meth:`send_object` message without spinning, then take it."""
        t0 = time.perf_counter()
        delay = MIN_SLEEP
        while not self.comm.Iprobe(source=source, tag=TAG_OBJECT):
            time.sleep(delay)
            delay = min(delay * 2.0, self.max_sleep)
        self.wait_s += time.perf_counter() - t0
        return self.comm.recv(source=source, tag=TAG_OBJECT)


def _fine_timer_slack() -> None:
    """Let this thread's short sleeps end on time: Linux rounds every sleep
    up by the thread's timer slack (50 us by default); 1 us instead."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in nanoseconds
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        pass


# ---------------------------------------------------------------------- ranks and faults
@dataclass
class RankInfo:
    rank: int
    pid: int
    host: str
    cores: tuple[int, ...]  # the CPUs this process may run on


def rank_table(comm) -> list[RankInfo]:
    """Every rank's pid, host and CPU affinity (a collective call)."""
    try:
        cores = tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = tuple(range(os.cpu_count() or 1))
    mine = (os.getpid(), socket.gethostname(), cores)
    return [RankInfo(r, pid, host, c) for r, (pid, host, c) in enumerate(comm.allgather(mine))]


def role(rank: int) -> str:
    return "parameter server" if rank == 0 else f"worker {rank}"


def describe(info: RankInfo) -> str:
    return f"rank {info.rank} ({role(info.rank)}, pid {info.pid} on {info.host})"


def node_plan(table: list[RankInfo], rank: int) -> tuple[int, int, bool]:
    """(ranks on this rank's node, cores available to them, whether their
    CPU sets are disjoint, i.e. the launcher bound each rank to its own cores)."""
    host = table[rank].host
    local = [t for t in table if t.host == host]
    union = set().union(*(set(t.cores) for t in local))
    disjoint = sum(len(t.cores) for t in local) == len(union)
    return len(local), len(union), disjoint


class DeathWatch:
    """Watch the other ranks on this node; when one of them ends while the
    job still runs, print which rank it was and abort the job.

    Most launchers (MPICH's mpiexec, Open MPI's mpirun, ``srun
    --kill-on-bad-exit``) kill the whole job by themselves as soon as a
    rank dies, before this thread can say anything: then the launcher's
    report names the dead process's pid and host, which :func:`rank_table`
    (printed by rank 0 at the start) maps to a rank.  This watch is for the
    launchers that would leave the survivors waiting.  Linux only (pidfd);
    elsewhere it does nothing.
    """

    def __init__(self, comm, table: list[RankInfo], rank: int) -> None:
        self.comm = comm
        self._stop_r, self._stop_w = os.pipe()
        self._fds: dict[int, RankInfo] = {}
        self._thread = None
        host = table[rank].host
        if not hasattr(os, "pidfd_open"):
            return
        for info in table:
            if info.rank != rank and info.host == host:
                try:
                    self._fds[os.pidfd_open(info.pid)] = info
                except OSError:
                    pass
        if self._fds:
            self._thread = threading.Thread(target=self._run, name="sparse_mlp-deathwatch",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        while True:
            events = poller.poll()
            for fd, _ in events:
                if fd == self._stop_r:
                    return
                info = self._fds[fd]
                _say(f"sparse_mlp: {describe(info)} died (killed or crashed) while the job was "
                     f"running; stopping every rank.")
                time.sleep(ABORT_GRACE_S)  # let the launcher forward the message first
                self.comm.Abort(EXIT_RANK_DIED)
                return

    def close(self) -> None:
        """Stop watching (before ranks leave at the end of a run)."""
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in list(self._fds):
            os.close(fd)
        self._fds.clear()
        for fd in (self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stop_r = self._stop_w = -1


EXIT_RANK_DIED = 70  # EX_SOFTWARE-ish: another rank of the job died
# MPI_Abort tears the launcher's output forwarding down at once; a message
# written just before it was seen to be lost, so the aborting rank waits this long
ABORT_GRACE_S = 0.5


def _say(text: str) -> None:
    try:
        os.write(2, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def abort(comm, info: RankInfo, exc: BaseException, exit_code: int) -> None:
    """Report that this rank failed (which rank, why, where) and end the
    whole job with ``MPI_Abort``.  Never returns."""
    from ..errors import SparseMLPError

    if isinstance(exc, KeyboardInterrupt):
        _say(f"sparse_mlp: {describe(info)} interrupted; stopping every rank of the job.")
    elif isinstance(exc, SparseMLPError):  # a message written for the user: no traceback
        _say(f"sparse_mlp: error on {describe(info)}: {exc}\nstopping every rank of the job "
             f"(MPI_Abort).")
    else:
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        _say(f"sparse_mlp: {describe(info)} failed with {type(exc).__name__}: {exc}\n"
             f"stopping every rank of the job (MPI_Abort).\n{detail}")
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(exit_code)
