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
it, for launchers that do not clean up by themselves.  An MPI call that
fails (a library that reports a dead peer, a truncated message) raises
:class:`PeerFailure`, which names the rank at the other end (its pid and
host from the rank table) instead of mpi4py's bare "See the MPI_ERROR
field", and whose exit status is :data:`EXIT_RANK_DIED`.  :func:`abort`
prints which rank failed and why, then calls ``MPI_Abort``, which ends
every rank of the job: a failure never leaves the others waiting forever.
Within one process only the first of these reports is printed (a watch
and the main thread that both notice the same death say it once).
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

from ..errors import SparseMLPError

log = logging.getLogger(__name__)

TAG_HEADER = 7101
TAG_DATA = 7102
TAG_OBJECT = 7103  # small pickled metadata (configuration, data description)
DEFAULT_CHUNK_BYTES = 1 << 30
WAIT_MODES = ("auto", "spin", "sleep")
MIN_SLEEP = 1e-5
MAX_SLEEP = 2.5e-4
EXIT_RANK_DIED = 70  # EX_SOFTWARE-ish: another rank of the job died
# MPI_Abort tears the launcher's output forwarding down at once; a message
# written just before it was seen to be lost, so the aborting rank waits this long
ABORT_GRACE_S = 0.5


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
    table : list of RankInfo, optional
        The rank table, to name a failed peer by pid and host (default: the
        one :func:`rank_table` last built for ``comm``).
    """

    def __init__(self, comm, chunk_bytes: int = DEFAULT_CHUNK_BYTES, wait: str = "sleep",
                 max_sleep: float = MAX_SLEEP, table: list[RankInfo] | None = None) -> None:
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
        if table is None and _last_table and len(_last_table) == self.size:
            table = _last_table
        self.table = table
        self._probe_from = 0        # recv_header_from: where the next round of probes starts
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
        reqs = Requests(dest, "sending to")
        n = header.nbytes
        try:
            reqs.append(self.comm.Isend([header, MPI.INT64_T], dest=dest, tag=TAG_HEADER))
            for arr in arrays:
                for piece in self._pieces(arr):
                    reqs.append(self.comm.Isend(piece, dest=dest, tag=TAG_DATA))
                n += arr.nbytes
        except MPI.Exception as exc:
            raise self.failure(dest, "sending to", exc) from None
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
        try:
            req = self.comm.Irecv([header, MPI.INT64_T], source=source, tag=TAG_HEADER)
            self._wait_one(req, status)
        except MPI.Exception as exc:
            peer = None if source == MPI.ANY_SOURCE else source
            raise self.failure(peer, "receiving from", exc) from None
        self.bytes_received += header.nbytes
        return status.Get_source()

    def recv_header_from(self, header: np.ndarray, sources) -> int:
        """Receive the next header of any one of the ranks ``sources``
        (and of no other rank: their messages stay queued, in order, for
        a later receive); returns the sender's rank.  The ranks are probed
        in turn, starting one further at each call, so none is starved."""
        sources = [int(k) for k in sources]
        if not sources:
            raise ValueError("recv_header_from needs at least one source rank")
        if len(sources) == 1:
            return self.recv_header(header, sources[0])
        t0 = time.perf_counter()
        delay = MIN_SLEEP
        found = None
        while found is None:
            n = len(sources)
            for i in range(n):
                k = sources[(self._probe_from + i) % n]
                try:
                    ready = self.comm.Iprobe(source=k, tag=TAG_HEADER)
                except MPI.Exception as exc:
                    raise self.failure(k, "receiving from", exc) from None
                if ready:
                    found = k
                    break
            else:
                if not self.spin:
                    time.sleep(delay)
                    delay = min(delay * 2.0, self.max_sleep)
        self._probe_from += 1
        self.wait_s += time.perf_counter() - t0
        # this rank receives from one thread only: the probed message is the next one from k
        return self.recv_header(header, found)

    def irecv(self, source: int, arrays) -> list:
        """Start receiving arrays (allocated by the caller, with the sizes
        the sender used) from ``source``."""
        reqs = Requests(source, "receiving from")
        try:
            for arr in arrays:
                for piece in self._pieces(arr):
                    reqs.append(self.comm.Irecv(piece, source=source, tag=TAG_DATA))
                self.bytes_received += arr.nbytes
        except MPI.Exception as exc:
            raise self.failure(source, "receiving from", exc) from None
        return reqs

    def recv(self, source: int, arrays) -> None:
        self.wait(self.irecv(source, arrays))

    # ------------------------------------------------------------------ waiting
    def wait(self, reqs: list) -> None:
        """Complete every request, spinning or sleeping (module docs)."""
        if not reqs:
            return
        t0 = time.perf_counter()
        try:
            if self.spin:
                MPI.Request.Waitall(reqs)
            else:
                delay = MIN_SLEEP
                while not MPI.Request.Testall(reqs):
                    time.sleep(delay)
                    delay = min(delay * 2.0, self.max_sleep)
        except MPI.Exception as exc:  # ERR_IN_STATUS: "See the MPI_ERROR field"
            raise self.failure(getattr(reqs, "peer", None), getattr(reqs, "doing", "waiting on"),
                               exc) from None
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
        try:
            req = self.comm.Ibarrier()
        except MPI.Exception as exc:
            raise self.failure(None, "waiting at a barrier with", exc) from None
        self.wait(Requests(None, "waiting at a barrier with", [req]))

    # ------------------------------------------------------------------ metadata
    def send_object(self, dest: int, obj) -> None:
        """Small metadata (a configuration, a description of the data) as a
        pickle; never used for weights, gradients or data."""
        try:
            req = self.comm.isend(obj, dest=dest, tag=TAG_OBJECT)
        except MPI.Exception as exc:
            raise self.failure(dest, "sending to", exc) from None
        self.wait(Requests(dest, "sending to", [req]))

    def recv_object(self, source: int):
        """Wait for a :meth:`send_object` message without spinning, then take it."""
        t0 = time.perf_counter()
        delay = MIN_SLEEP
        try:
            while not self.comm.Iprobe(source=source, tag=TAG_OBJECT):
                time.sleep(delay)
                delay = min(delay * 2.0, self.max_sleep)
            self.wait_s += time.perf_counter() - t0
            return self.comm.recv(source=source, tag=TAG_OBJECT)
        except MPI.Exception as exc:
            raise self.failure(source, "receiving from", exc) from None

    # ------------------------------------------------------------------ failures
    def failure(self, peer: int | None, doing: str, exc: BaseException) -> PeerFailure:
        """The :class:`PeerFailure` for an MPI call that failed while
        ``doing`` ('sending to', 'receiving from') rank ``peer`` (None: any
        rank, or all of them).  A peer is named by its pid and host, and
        said to be dead when its process has ended (ranks of this node);
        without a known peer, a rank of this node that has ended is named."""
        dead = dead_ranks(self.table, self.rank) if self.table else []
        if peer is None and dead:
            peer = dead[0]
        return PeerFailure(peer, self.table, doing, _mpi_error_text(exc),
                           died=peer is not None and peer in dead)


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


class Requests(list):
    """The requests of one message (a list), with the rank at the other
    end, so that a failure can name it."""

    def __init__(self, peer: int | None, doing: str, reqs=()) -> None:
        super().__init__(reqs)
        self.peer = peer
        self.doing = doing


def _mpi_error_text(exc: BaseException) -> str:
    """An MPI error's class and text (mpi4py's own text of ERR_IN_STATUS,
    "See the MPI_ERROR field", says nothing by itself)."""
    text = str(exc).strip() or type(exc).__name__
    get_class = getattr(exc, "Get_error_class", None)
    if get_class is not None:
        try:
            code = get_class()
            text = f"{text} (MPI error class {code})"
        except Exception:  # noqa: BLE001 - the text is enough
            pass
    return text


# ---------------------------------------------------------------------- ranks and faults
@dataclass
class RankInfo:
    rank: int
    pid: int
    host: str
    cores: tuple[int, ...]  # the CPUs this process may run on


_last_table: list[RankInfo] | None = None  # what rank_table() built last (Transport's default)


def rank_table(comm) -> list[RankInfo]:
    """Every rank's pid, host and CPU affinity (a collective call)."""
    global _last_table
    try:
        cores = tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = tuple(range(os.cpu_count() or 1))
    mine = (os.getpid(), socket.gethostname(), cores)
    table = [RankInfo(r, pid, host, c) for r, (pid, host, c) in enumerate(comm.allgather(mine))]
    _last_table = table
    return table


def name_rank(table: list[RankInfo] | None, rank: int | None) -> str:
    """'rank k (role, pid P on H)' from the table, or as much as is known."""
    if rank is None:
        return "another rank"
    if table and 0 <= rank < len(table):
        return describe(table[rank])
    return f"rank {rank} ({role(rank)})"


def process_ended(pid: int) -> bool:
    """Whether the process ``pid`` of this node has ended (exited, killed,
    or a zombie that its launcher has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except (OSError, IndexError):  # no /proc (not Linux): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


def dead_ranks(table: list[RankInfo], rank: int) -> list[int]:
    """The other ranks of this rank's node whose process has ended."""
    host = table[rank].host
    return [t.rank for t in table
            if t.rank != rank and t.host == host and process_ended(t.pid)]


class PeerFailure(SparseMLPError):
    """An MPI call with another rank failed (it died, or the library
    reported an error): names that rank, exit status :data:`EXIT_RANK_DIED`."""

    exit_code = EXIT_RANK_DIED

    def __init__(self, peer: int | None, table: list[RankInfo] | None, doing: str,
                 detail: str, died: bool = False) -> None:
        self.peer = peer
        self.died = died
        who = name_rank(table, peer)
        if died:
            what = f"{who} died (killed or crashed) while this rank was {doing} it"
        elif peer is None:
            what = f"MPI failed while this rank was {doing} another rank"
        else:
            what = f"MPI failed while this rank was {doing} {who}"
        super().__init__(f"{what}; MPI said: {detail}")


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
        self.rank = rank
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
                # one report per node: the lowest rank of this node still alive says it
                # and aborts; the others wait, then abort too (a launcher that does not
                # clean up leaves each rank to end itself), and speak only if that rank
                # is still there (it may be stuck: then nobody else would say it)
                lower = [i for i in self._fds.values()
                         if i.rank < self.rank and not process_ended(i.pid)]
                if lower:
                    time.sleep(4 * ABORT_GRACE_S)
                    if any(process_ended(i.pid) for i in lower):
                        _abort(self.comm, EXIT_RANK_DIED)  # reported there
                        return
                if _claim_report():
                    _say(f"sparse_mlp: {describe(info)} died (killed or crashed) while the job "
                         f"was running; stopping every rank (exit status {EXIT_RANK_DIED}).")
                    time.sleep(ABORT_GRACE_S)  # let the launcher forward the message first
                    _abort(self.comm, EXIT_RANK_DIED)
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




_report_lock = threading.Lock()


def _claim_report() -> bool:
    """True for the first caller in this process: the one that reports the
    failure and aborts; the others (a watch thread and the main thread that
    both saw the same death) stay silent."""
    return _report_lock.acquire(blocking=False)


def _say(text: str) -> None:
    try:
        os.write(2, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def abort(comm, info: RankInfo, exc: BaseException, exit_code: int) -> None:
    """Report that this rank failed (which rank, why, where) and end the
    whole job with ``MPI_Abort``.  Never returns."""
    if not _claim_report():  # another thread of this rank is reporting and aborting
        time.sleep(10 * ABORT_GRACE_S)
        _abort(comm, exit_code)
    if isinstance(exc, PeerFailure):
        _say(f"sparse_mlp: {describe(info)}: {exc}\nstopping every rank of the job (MPI_Abort, "
             f"exit status {exit_code}).")
    elif isinstance(exc, KeyboardInterrupt):
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
    _abort(comm, exit_code)


# MPI_Abort may never return nor end the process when the launcher that would
# carry it out does not clean up (seen: a parameter server left waiting forever
# after a worker's death): the process then ends itself after this long
ABORT_DEADLINE_S = 5.0


def _abort(comm, exit_code: int) -> None:
    """``MPI_Abort``, with a deadline after which this process exits by itself."""
    timer = threading.Timer(ABORT_DEADLINE_S, os._exit, args=(exit_code,))
    timer.daemon = True
    timer.start()
    comm.Abort(exit_code)
    os._exit(exit_code)
