"""Faults of the parallel trainer with real processes (issue 19, items 7-8):
workers that fall behind, messages that arrive in any order, ranks that die.

* a worker paused (SIGSTOP ... SIGCONT) across the switch from phase 1 to
  phase 2 while the other worker runs ahead into phase 2: the run finishes
  (WASAP and WASSP), the late phase-1 gradient is answered and not applied;
* every message of every rank delayed by a random, seeded time
  (tests/_faults_mpi_helper.py): the run finishes; WASSP's result does not
  depend on timing, so it equals the paused run's bit for bit;
* a WASSP worker killed in phase 2, and a WASAP worker killed during the
  switch: the job ends within seconds, one message names the dead rank
  with its pid and host, and the job's exit status is 70 (README: "another
  MPI rank died").  These runs start each rank through ``sh -c`` under
  ``mpiexec -disable-auto-cleanup``, i.e. a launcher that does not clean up
  by itself: the ranks' own handling decides what is printed and the exit
  status (MPICH's default ``mpiexec`` kills every rank within milliseconds
  and exits 9, test_parallel.py covers that);
* an MPI call that fails names the rank at the other end (PeerFailure)
  instead of mpi4py's bare "See the MPI_ERROR field" (in-process loopback).

The tiny runs: digits on 64-24-24-10, 2 workers, every mini-batch slowed
down by 20 ms so that an epoch lasts about half a second.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _processes import HAVE_MPI4PY, MPIEXEC, needs_mpi4py, needs_mpiexec

from sparse_mlp.checkpoint import LAYER_ARRAYS, list_checkpoints, load, load_checkpoint
from sparse_mlp.training import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).with_name("_faults_mpi_helper.py")

# the text's semantics (independent phase 2): with the authors' code's
# (round(0.3 x 4) = 1), every phase-2 step would end on the PS's model of the
# switch after 2 epochs, below these runs' accuracy check; the messages are the same
BASE = ["--dataset", "digits", "--hidden", "24,24", "--epsilon", "5", "--threads", "1",
        "--no-progress", "--checkpoint-every", "1", "--parallel-semantics", "text"]
SLOW = {"SLOW_STEP_S": "0.02"}
EXIT_RANK_DIED = 70


class Job:
    """``mpiexec -n 3`` on the helper, its output read line by line in a
    thread (so that waiting for a line never blocks past its timeout)."""

    def __init__(self, args: list[str], env_extra: dict, cleanup: bool = True) -> None:
        cmd = [sys.executable, str(HELPER), *args]
        flags = []
        if not cleanup:  # a launcher that leaves the survivors to the ranks themselves
            flags = ["-disable-auto-cleanup"]
            cmd = ["sh", "-c", shlex.join(cmd)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **env_extra}
        self.proc = subprocess.Popen([MPIEXEC, *flags, "-n", "3", *cmd], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line)
        self._q.put(None)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait_for(self, marker: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                self._q.put(None)
                break
            self.lines.append(line)
            if marker in line:
                return
        self.kill()
        raise AssertionError(f"{marker!r} never appeared; output:\n{self.text}")

    def finish(self, timeout: float) -> int:
        """Wait for the job to end (kill it and fail after ``timeout``);
        returns its exit status, with every line in ``self.lines``."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
            raise AssertionError(f"the job did not end within {timeout}s:\n{self.text}") from None
        while (line := self._q.get(timeout=10)) is not None:
            self.lines.append(line)
        return code


def _pids(out: Path) -> dict[int, int]:
    return {r["rank"]: r["pid"] for r in json.loads((out / "ranks.json").read_text())}


def _rows(path: Path) -> list[dict]:
    import csv
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k not in (*TIMING_COLUMNS, "bytes")}
                for r in csv.DictReader(fh)]


def _check_summary(out: Path, mode: str, epochs: int, tau1: int) -> dict:
    s = json.loads((out / "summary.json").read_text())
    par = s["parallel"]
    assert par["mode"] == mode and par["workers"] == 2 and par["phase1_epochs"] == tau1
    assert [r["phase"] for r in _rows(out / "metrics.csv")] == ["1"] * tau1 + ["2"] * (
        epochs - tau1)
    # every phase-1 update applied once: n // B gradients (WASAP) or min_k n_k // B
    # averaged steps (WASSP) per epoch, none lost, none applied twice
    assert par["gradients_applied"] == tau1 * par["phase1_steps_per_epoch"]
    assert 0.3 < s["best_test_acc"] <= 1.0
    assert load(out).nnz_per_layer() == s["nnz_per_layer_end"]
    return s


def _stats(out: Path) -> dict:
    ck = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    return ck.extra["parallel"]["stats"]


# ---------------------------------------------------------------------- message delays
@pytest.fixture(scope="module")
def delayed_runs(tmp_path_factory):
    """WASAP and WASSP, 4 epochs (2 in phase 1), every message of every rank
    sent after a random 0-10 ms wait (seeded per rank)."""
    if MPIEXEC is None or not HAVE_MPI4PY:
        pytest.skip("no mpiexec / mpi4py")
    root = tmp_path_factory.mktemp("delayed")
    results = {}
    for seed, mode in enumerate(("wasap", "wassp"), start=5):
        out = root / mode
        job = Job([*BASE, "--epochs", "4", "--phase1-epochs", "2", "--parallel", mode,
                   "--out", str(out)], {"FAULT_SEND_DELAY": f"{seed}:0.01"})
        results[mode] = (job.finish(timeout=300), job.text, out)
    return results


@needs_mpiexec
@pytest.mark.parametrize("mode", ["wasap", "wassp"])
def test_random_message_delays_on_every_rank_still_finish(delayed_runs, mode):
    code, text, out = delayed_runs[mode]
    assert code == 0, text
    _check_summary(out, mode, epochs=4, tau1=2)


# ---------------------------------------------------------------------- a paused worker
@needs_mpiexec
@pytest.mark.parametrize("mode", ["wasap", "wassp"])
def test_a_worker_paused_across_the_switch_to_phase_2(tmp_path, mode, delayed_runs):
    """Worker 2 stopped (SIGSTOP) before the end of phase 1 and continued
    (SIGCONT) only after the server switched to phase 2 and worker 1 had
    time to finish a local epoch and report it.  WASAP: worker 2 stops at
    the end of epoch 1; worker 1 alone finishes epoch 2, is switched, and
    reports epoch 3 while worker 2 still owes its last phase-1 gradient,
    which is answered with PHASE2 and not applied.  WASSP (synchronous):
    worker 2 stops as the switch is sent."""
    out = tmp_path / "run"
    job = Job([*BASE, "--epochs", "4", "--phase1-epochs", "2", "--parallel", mode,
               "--out", str(out)], SLOW)
    job.wait_for("epoch 1/4" if mode == "wasap" else "epoch 2/4")
    pid = _pids(out)[2]
    os.kill(pid, signal.SIGSTOP)
    try:
        if mode == "wasap":
            job.wait_for("epoch 2/4", timeout=90)  # the switch, with worker 2 stopped
        time.sleep(2.5)  # worker 1: one local epoch (~0.5 s) and its REPORT
    finally:
        os.kill(pid, signal.SIGCONT)
    code = job.finish(timeout=180)
    assert code == 0, job.text
    _check_summary(out, mode, epochs=4, tau1=2)
    if mode == "wasap":  # worker 2's gradient in flight at the switch: answered, not applied
        assert _stats(out)["late_gradients"] == 1
    else:  # WASSP does not depend on timing: the same run as the delayed one, bit for bit
        code_d, text_d, out_d = delayed_runs["wassp"]
        assert code_d == 0, text_d
        assert _rows(out / "metrics.csv") == _rows(out_d / "metrics.csv")
        for la, lb in zip(load(out).layers, load(out_d).layers):
            for name in LAYER_ARRAYS:
                assert np.array_equal(getattr(la, name), getattr(lb, name)), name


# ---------------------------------------------------------------------- a killed worker
def _assert_named_death(job: Job, code: int, pid: int) -> None:
    text = job.text
    assert code == EXIT_RANK_DIED, text
    named = re.findall(rf"rank 2 \(worker 2, pid {pid} on [^)]+\) died", text)
    assert len(named) == 1, text  # one report, by one rank
    assert "See the MPI_ERROR field" not in text and "Traceback" not in text, text


@needs_mpiexec
def _assert_no_rank_left(out: Path, timeout: float = 15.0) -> None:
    """Every rank of the job has ended (a survivor left waiting forever spins on a
    core of the node); any that has not is killed, then the test fails."""
    pids = list(_pids(out).values())
    deadline = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < deadline:
        alive = [p for p in pids if _running(p)]
        if not alive:
            return
        time.sleep(0.2)
    for p in alive:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise AssertionError(f"ranks with pids {alive} were still running {timeout:.0f}s after "
                         f"the job ended")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@needs_mpiexec
def test_a_wassp_worker_killed_in_phase_2_is_named_and_the_job_exits_70(tmp_path):
    out = tmp_path / "run"
    job = Job([*BASE, "--epochs", "8", "--phase1-epochs", "2", "--parallel", "wassp",
               "--out", str(out)], SLOW, cleanup=False)
    job.wait_for("epoch 3/8 [phase 2]")
    pid = _pids(out)[2]
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    code = job.finish(timeout=30)
    assert time.monotonic() - t0 < 15
    _assert_named_death(job, code, pid)
    _assert_no_rank_left(out)


@needs_mpiexec
def test_a_wasap_worker_killed_during_the_switch_is_named_and_the_job_exits_70(tmp_path):
    """Worker 2 stopped in phase 1, the server switched worker 1 to phase 2
    and waits for worker 2's last gradient; worker 2 is killed there."""
    out = tmp_path / "run"
    job = Job([*BASE, "--epochs", "4", "--phase1-epochs", "2", "--parallel", "wasap",
               "--out", str(out)], SLOW, cleanup=False)
    job.wait_for("epoch 1/4")
    pid = _pids(out)[2]
    os.kill(pid, signal.SIGSTOP)
    try:
        job.wait_for("epoch 2/4", timeout=90)
        time.sleep(1.0)  # worker 1 in phase 2
    finally:
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
    code = job.finish(timeout=30)
    assert time.monotonic() - t0 < 15
    _assert_named_death(job, code, pid)
    _assert_no_rank_left(out)


# ---------------------------------------------------------------------- MPI errors
@needs_mpi4py
def test_a_failed_mpi_call_names_the_rank_at_the_other_end():
    """A loopback on MPI_COMM_SELF where the receiver's buffers are too
    short (MPI_ERR_TRUNCATE): one request raises MPI's own error, several
    raise ERR_IN_STATUS ("See the MPI_ERROR field"); both become a
    PeerFailure naming the peer by pid and host, exit status 70."""
    from mpi4py import MPI

    from sparse_mlp.parallel.transport import PeerFailure, RankInfo, Transport

    table = [RankInfo(0, os.getpid(), "node-a", (0,))]
    t = Transport(MPI.COMM_SELF, wait="sleep", table=table)
    header = np.arange(30, dtype=np.int64)
    reqs = t.isend(0, header, [np.ones(10, np.float32), np.ones(10, np.float32)])
    with pytest.raises(PeerFailure) as err:
        t.recv_header(np.empty(20, np.int64), source=0)
    assert err.value.exit_code == EXIT_RANK_DIED and err.value.peer == 0
    assert f"rank 0 (parameter server, pid {os.getpid()} on node-a)" in str(err.value)
    with pytest.raises(PeerFailure) as err:
        t.recv(0, [np.empty(3, np.float32), np.empty(3, np.float32)])
    msg = str(err.value)
    assert "while this rank was receiving from rank 0 (parameter server, pid" in msg, msg
    t.wait(reqs)


# ---------------------------------------------------------------------- the protocol, in-process
class QueueTransport:
    """Stands in for the Transport: messages wait in arrival order; a
    receive takes the first one from an allowed source, as MPI matches
    (per-source order kept), and fails where MPI would block forever."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, np.ndarray, list]] = []
        self.sent: list[tuple[int, np.ndarray]] = []
        self.bytes_sent = self.bytes_received = 0
        self._arrays: list = []

    def deliver(self, k: int, header: np.ndarray, arrays=()) -> None:
        self.queue.append((k, header.copy(), list(arrays)))

    def _take(self, arr: np.ndarray, allowed) -> int:
        for i, (k, header, arrays) in enumerate(self.queue):
            if allowed(k):
                del self.queue[i]
                arr[...] = header
                self._arrays = arrays
                return k
        raise AssertionError("the server would wait forever")

    def recv_header(self, arr, source=None) -> int:
        return self._take(arr, lambda k: source in (None, k))

    def recv_header_from(self, arr, sources) -> int:
        return self._take(arr, lambda k: k in sources)

    def recv(self, source, arrays) -> None:
        for dst, src in zip(arrays, self._arrays):
            dst[...] = src

    def send(self, dest, header, arrays=()) -> None:
        self.sent.append((dest, header.copy()))

    def isend(self, dest, header, arrays=()) -> list:
        self.send(dest, header, arrays)
        return []

    def wait(self, reqs) -> None:
        pass


def _ps_two_workers():
    from sparse_mlp.config import TrainConfig
    from sparse_mlp.model import SparseMLP
    from sparse_mlp.parallel.server import ParameterServer
    from sparse_mlp.parallel.state import WorkerState
    from sparse_mlp.training import RandomStreams, StopRequest, TrainState

    sizes = [12, 10, 3]
    cfg = TrainConfig(hidden=sizes[1:-1], epochs=4, batch_size=8, parallel="wasap",
                      phase1_epochs=1, checkpoint_every=0, eval_every=1, dropout=0.0, threads=1,
                      seed=3)
    model = SparseMLP(sizes, epsilon=3, rng=np.random.default_rng(0), n_threads=1)
    rng = np.random.default_rng(1)
    t = QueueTransport()
    ps = ParameterServer(cfg, t, model, RandomStreams(3), TrainState(),
                         rng.standard_normal((20, 12)).astype(np.float32),
                         rng.integers(0, 3, 20).astype(np.int32), [64, 64],
                         [WorkerState(), WorkerState()], on_epoch=lambda row: None,
                         on_checkpoint=lambda *a: None, stop=StopRequest())
    return ps, t


def _header(ps, kind: int, epoch: int = 0):
    from sparse_mlp.parallel import codec
    from sparse_mlp.parallel.codec import Header

    h = Header(ps.model.n_layers)
    h[Header.KIND], h[Header.EPOCH] = kind, epoch
    h.nnz = ps.model.nnz_per_layer()
    if kind == codec.GRAD:
        h[Header.FLAGS] = codec.F_VALUES
        g = np.full(ps.layout.n_values(h.nnz), 0.5, np.float32)
        return h.arr, [g]
    return h.arr, []


def test_a_report_that_overtakes_a_late_gradient_at_the_switch_waits_its_turn():
    """The crash of issue 19 item 7, in-process: at the switch worker 1 (just
    answered with PHASE2) has already reported its first local epoch when
    worker 2's last phase-1 gradient arrives.  The server answers worker 2
    with PHASE2, does not apply its gradient, and leaves the REPORT queued
    for phase 2 (before: 'expected a gradient from rank 2, got REPORT')."""
    from sparse_mlp.parallel import codec
    from sparse_mlp.parallel.codec import Header

    ps, t = _ps_two_workers()
    t.deliver(1, *_header(ps, codec.GRAD))
    assert ps._async_step() == 1  # worker 1's gradient: the last update of phase 1
    ps.state.epoch = 1
    before = [lay.data.copy() for lay in ps.model.layers]
    t.deliver(1, *_header(ps, codec.REPORT, epoch=1))  # what worker 1 sends after PHASE2
    t.deliver(2, *_header(ps, codec.GRAD))             # worker 2, resumed after a pause
    ps._finish_phase1([1], codec.PHASE2)
    assert [(k, int(h[Header.KIND])) for k, h in t.sent] == [(1, codec.PHASE2),
                                                             (2, codec.PHASE2)]
    assert ps.stats["late_gradients"] == 1 and ps.stats["gradients"] == 1
    for lay, b in zip(ps.model.layers, before):
        assert np.array_equal(lay.data, b)  # the late gradient is not applied
    assert [p.expecting() for p in ps.peers.values()] == ["REPORT of epoch 1"] * 2
    assert len(t.queue) == 1 and t.queue[0][0] == 1  # the report waits for phase 2


def test_a_message_the_protocol_does_not_allow_names_the_rank():
    from sparse_mlp.parallel import codec
    from sparse_mlp.parallel.state import Peer, ProtocolError

    p = Peer(2, "rank 2 (worker 2, pid 7 on node-b)")
    p.started(2, epoch=5)
    with pytest.raises(ProtocolError, match=r"rank 2 \(worker 2, pid 7 on node-b\) sent GRAD"):
        p.received(codec.GRAD, 0)
    with pytest.raises(ProtocolError, match="REPORT of epoch 4; the protocol says its next "
                                            "message is REPORT of epoch 5"):
        p.received(codec.REPORT, 4)
    p.received(codec.REPORT, 5)
    # a CONTROL asking for the weights and a checkpoint, not the last epoch
    p.controlled(5, codec.F_WANT_WEIGHTS | codec.F_WANT_STATE, 0)
    assert list(p.expect) == [(codec.WEIGHTS, 5), (codec.EVOLVED, 5), (codec.WEIGHTS, 5),
                              (codec.REPORT, 6)]
    p.expect.clear()
    p.controlled(6, codec.F_LAST, 3)  # diverged: the worker leaves at once
    assert not p.expect and p.phase == 0
