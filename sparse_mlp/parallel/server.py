"""The WASAP-SGD / WASSP-SGD parameter server (paper Algorithm 1; rank 0),
over :mod:`.transport`: the global model in phase 1, the averaging in
phase 2, the epoch bookkeeping, metrics and checkpoints.  The workers'
side is :mod:`.worker`; what both share, :mod:`.state`.

Epochs count passes over the whole training set: an "epoch" of phase 1 is
n // B gradient updates at the server, whichever workers they came from.

Phase 1, WASAP (asynchronous), per message:
  take the first gradient that arrives; if the topology evolved since the
  worker's version, map the gradient onto the current one ("retain valid
  updates", :func:`.ops.retain_valid_updates`: entries of removed
  connections dropped, new connections get 0); momentum SGD exactly as the
  sequential step; send the current model back to that worker (weights
  and biases, plus the topology when the worker's is outdated).
Phase 1, WASSP (synchronous): every step the server waits for one gradient
  from each worker (all at the same weights), averages them in rank order
  (deterministic), and applies momentum SGD with the learning rate scaled
  by K after a linear warm-up from lr to K*lr over ``warmup_epochs``
  (:func:`.state.warmup_factor`; Goyal et al. 2017; the reference's
  per-step weight decay is scaled with it, so decay per epoch matches the
  sequential run).  n // (K*B) steps make an epoch; every worker gets the
  new model.
End of a phase-1 epoch: :func:`sparse_mlp.epoch.end_of_epoch`, as the
  sequential trainer (finite check, evaluation when due and the best
  accuracy, then Importance Pruning when due and SET with the run's
  evolution stream); a changed topology gets a new version number.
Phase 2 (both; from epoch ``phase1_epochs`` to ``epochs``): the workers
  train alone and evolve their own topologies (``parallel_semantics``
  'code': each takes the PS's model, the global model as of the switch,
  every ``phase2_sync_every`` of its own steps; it kept a copy, so this
  needs no message); after each epoch they report; when an evaluation is
  due they send their models and the server evaluates the average the
  algorithm would return at that point (:meth:`ParameterServer._average`:
  the union of the K topologies with weights averaged, absent = 0, each
  layer pruned back to its target nnz: 'code' per sign to the PS's nnz,
  'text' by |w| to the workers' mean), through ``end_of_epoch`` without
  evolution.  The average after the last epoch is the result.
Semantics ('code', the default, as the authors' code; 'text', the paper's
  text; :func:`.state.resolve_semantics`): phase-1 weight decay none /
  the run's; the WASSP warm-up by PS epoch with momentum correction / by
  step; the parallel Importance Pruning schedule (``self.ecfg``).

Receiving: the server keeps a :class:`.state.Peer` per worker (its phase
and the kinds, and epochs, of the messages it owes next; the protocol is
in :mod:`.state`) and takes each kind only from the workers that owe one
(:meth:`ParameterServer._next`).  Workers run at their own pace: when the
switch to phase 2 comes, a worker that has been paused (a slow node, a GC
pause) may still owe its last phase-1 gradient while another, already
switched, has finished a local epoch and sent its REPORT.  The late
gradient is received, counted (``late_gradients``) and not applied (it was
computed on the model before the switch; the switch sends every worker
the same model), and answered with PHASE2 (or STOP); the REPORT waits in
MPI's queue until phase 2 asks for it.  A message that is not the one a
worker owes is a protocol error naming the rank.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from ..config import TrainConfig
from ..epoch import end_of_epoch, eval_due, nonfinite_parts
from ..errors import DivergenceError
from ..kernels import spmm
from ..model import SparseMLP
from ..training import PreemptedError, StopRequest, TrainState, checkpoint_due, stop_exit_code
from . import codec
from .codec import Header, Layout
from .ops import average_models, retain_valid_updates
from .state import (
    DIVERGED_EXIT_CODE,
    Peer,
    WorkerState,
    coordinated,
    evolution_config,
    jumped_words,
    momentum_correction,
    replica,
    resolve_semantics,
    warmup_factor,
    warmup_factor_epoch,
)

if TYPE_CHECKING:  # mpi4py only when a run starts (the tests drive these directly)
    from .transport import Transport

log = logging.getLogger(__name__)

__all__ = ["ParameterServer"]


def _apply_srelu(model: SparseMLP, sgs: list, lr: float, momentum: float,
                 nesterov: bool) -> None:
    for act, g in zip(model.acts, sgs):
        if g is not None:  # SReLU parameters: same optimiser, no weight decay
            spmm.apply_update(act.params.reshape(-1), act.velocity.reshape(-1),
                              np.ascontiguousarray(g).reshape(-1), lr, momentum, 0.0, nesterov,
                              n_threads=1)



class ParameterServer:
    """Rank 0: the global model in phase 1, the averaging in phase 2, the
    epoch bookkeeping, metrics and checkpoints.

    Parameters
    ----------
    cfg : TrainConfig
        With ``parallel`` ('wasap' or 'wassp') and ``phase1_epochs`` resolved.
    transport : Transport
    model : SparseMLP
        The global model (phase 1) / the latest average (phase 2).
    streams : RandomStreams
        The run's streams: the PS evolves the topology in phase 1 with them.
    state : TrainState
    X_test, y_test : ndarray
    partition_sizes : list of int
        Training samples of each worker.
    workers : list of WorkerState
        Where each worker is (new run: the start; resume: the checkpoint's).
    on_epoch : callable(row)
    on_checkpoint : callable(ps, reason) -> path or None
    stop : StopRequest
    """

    def __init__(self, cfg: TrainConfig, transport: Transport, model: SparseMLP, streams,
                 state: TrainState, X_test: np.ndarray, y_test: np.ndarray,
                 partition_sizes: list[int], workers: list[WorkerState],
                 on_epoch: Callable[[dict], None], on_checkpoint: Callable, stop: StopRequest,
                 progress=None, switch_model: SparseMLP | None = None) -> None:
        cfg = resolve_semantics(cfg)
        self.cfg = cfg
        self.code = cfg.parallel_semantics == "code"
        # end_of_epoch's configuration: the parallel Importance Pruning schedule
        self.ecfg = evolution_config(cfg)
        # the PS's model in phase 2: the global model as of the switch (the
        # authors' PS answers the workers' empty phase-2 updates with it)
        self.switch_model = switch_model
        self.t = transport
        self.model = model
        self.streams = streams
        self.state = state
        self.X_test = X_test
        self.y_test = y_test
        self.K = len(partition_sizes)
        self.partition_sizes = list(partition_sizes)
        self.workers = workers
        self.on_epoch = on_epoch
        self.on_checkpoint = on_checkpoint
        self.stop = stop
        self.bar = progress
        self.sync = cfg.parallel == "wassp"
        self.tau1 = int(cfg.phase1_epochs)
        B = cfg.batch_size
        n_train = sum(partition_sizes)
        # phase-1 updates per epoch: n // B (WASAP); n // (K B) synchronous steps (WASSP)
        self.steps_per_epoch = (min(n // B for n in partition_sizes) if self.sync
                                else n_train // B)
        self.layout = Layout.of(model)
        self.hin = Header(model.n_layers)
        self.hout = [Header(model.n_layers) for _ in range(self.K + 1)]
        self.pending: dict[int, list] = {}  # worker -> requests of its last reply
        self.version = 0
        self.worker_version = {k: 0 for k in range(1, self.K + 1)}
        self.topologies: dict[int, list] = {}
        self._remember_topology()
        self.reply_values: dict[int, np.ndarray] = {}
        self._grad_buf = np.empty(0, dtype=np.float32)
        self._grad_sum = np.empty(0, dtype=np.float32)
        self.packed_topology: tuple[int, tuple] | None = None
        self.final_model: SparseMLP | None = None
        self.phase = 1 if state.epoch < self.tau1 else 2
        # each worker's side of the protocol, as if START were sent (start_workers sends it)
        self.peers = {k: Peer(k, self._name(k)) for k in range(1, self.K + 1)}
        for peer in self.peers.values():
            peer.started(self._start_phase(), state.epoch)
        self._last_checkpoint_time = time.perf_counter()
        self._epoch_t0 = time.perf_counter()
        self._paused_s = 0.0
        self._bytes_mark = self._traffic()
        # statistics for the summary
        self.stats = {"stale_gradients": 0, "gradients": 0, "entries_dropped": 0,
                      "entries_sent": 0, "bytes_phase1": 0, "bytes_phase2": 0,
                      "epochs_phase1": 0, "epochs_phase2": 0, "late_gradients": 0,
                      "phase2_syncs": 0}

    # ------------------------------------------------------------------ helpers
    def _name(self, k: int) -> str:
        """'rank k (worker k, pid P on H)' from the transport's rank table."""
        table = getattr(self.t, "table", None)
        if table and 0 <= k < len(table):
            return f"rank {k} (worker {k}, pid {table[k].pid} on {table[k].host})"
        return f"rank {k} (worker {k})"

    def _start_phase(self) -> int:
        """The phase START puts the workers in: 1, 2, or 0 (nothing left)."""
        return self.phase if self.state.epoch < self.cfg.epochs else 0

    def _next(self, kind: int, ranks: list[int] | None = None) -> int:
        """Receive the header (into ``self.hin``) of the next ``kind``
        message, from one of the workers that owe one (of ``ranks`` only,
        when given): whichever comes first.  Messages of workers that owe
        something else stay queued.  Returns the sender's rank."""
        h = self.hin
        if ranks is None:
            ranks = [k for k, p in self.peers.items() if p.next_kind == kind]
        if not ranks:
            raise RuntimeError(f"parameter server: waiting for "
                               f"{codec.KIND_NAMES.get(kind, kind)}, which no worker owes: "
                               f"{list(self.peers.values())}")
        if len(ranks) == 1:
            k = self.t.recv_header(h.arr, source=ranks[0])
        elif len(ranks) == self.K:  # every worker may send it: take the first that comes
            k = self.t.recv_header(h.arr)
        else:
            k = self.t.recv_header_from(h.arr, ranks)
        self.peers[k].received(h.kind, h[Header.EPOCH])
        if h.kind != kind:  # received() knows better: it owed something else
            raise RuntimeError(f"parameter server: {self.peers[k].name} sent "
                               f"{codec.KIND_NAMES.get(h.kind, h.kind)}, expected "
                               f"{codec.KIND_NAMES.get(kind, kind)}")
        return k

    def _traffic(self) -> int:
        return self.t.bytes_sent + self.t.bytes_received

    def _remember_topology(self) -> None:
        self.topologies[self.version] = [(lay.indptr, lay.indices) for lay in self.model.layers]

    def _forget_topologies(self) -> None:
        live = set(self.worker_version.values()) | {self.version}
        for v in list(self.topologies):
            if v not in live:
                del self.topologies[v]

    def checkpoint_due(self, epoch: int) -> bool:
        return checkpoint_due(self.cfg, epoch, self._last_checkpoint_time)

    def checkpoint(self, reason: str, model: SparseMLP | None = None):
        t0 = time.perf_counter()
        path = self.on_checkpoint(self, reason, model if model is not None else self.model)
        self._last_checkpoint_time = time.perf_counter()
        self._paused_s += time.perf_counter() - t0
        return path

    def _wait_reply(self, k: int) -> None:
        reqs = self.pending.pop(k, None)
        if reqs:
            self.t.wait(reqs)

    def _reply(self, k: int, kind: int, exit_code: int = 0) -> None:
        """Send worker k the current model (MODEL), the switch to phase 2
        (PHASE2: model, momenta and its evolution stream) or STOP."""
        self._wait_reply(k)
        h = self.hout[k].clear()
        h[Header.KIND], h[Header.STEP], h[Header.VERSION] = kind, self.state.step, self.version
        h[Header.EPOCH] = self.state.epoch if kind != codec.STOP else exit_code
        arrays = []
        if kind in (codec.MODEL, codec.PHASE2):
            flags = codec.F_VALUES
            if kind == codec.PHASE2 or self.worker_version[k] != self.version:
                flags |= codec.F_TOPOLOGY
                arrays += list(self._topology_arrays())
            buf = self.layout.pack(self.model, out=self.reply_values.get(k))
            self.reply_values[k] = buf
            arrays.append(buf)
            if kind == codec.PHASE2:
                flags |= codec.F_VELOCITY
                arrays.append(self.layout.pack(self.model, velocity=True))
                h.set_rng(Header.RNG_EVOLUTION, jumped_words(self.streams.evolution, k - 1))
            h[Header.FLAGS] = flags
            h.nnz = self.model.nnz_per_layer()
            self.worker_version[k] = self.version
        self.peers[k].told(kind, self.state.epoch)
        self.pending[k] = self.t.isend(k, h.arr, arrays)

    def _topology_arrays(self) -> tuple:
        if self.packed_topology is None or self.packed_topology[0] != self.version:
            self.packed_topology = (self.version, self.layout.pack_topology(self.model))
        return self.packed_topology[1]

    def start_workers(self) -> None:
        """START: every worker gets the model and its position (a new run:
        the initial network; a resume: the checkpoint's)."""
        st = self.state
        phase = self._start_phase()
        for k in range(1, self.K + 1):
            ws = self.workers[k - 1]
            own = phase == 2 and ws.model is not None
            model = ws.model if own else self.model
            h = self.hout[k].clear()
            h[Header.KIND], h[Header.PHASE], h[Header.STEP] = codec.START, phase, st.step
            h[Header.VERSION], h[Header.EPOCH] = self.version, st.epoch
            h[Header.LOCAL_EPOCH], h[Header.BATCH] = ws.local_epoch, ws.batch
            h[Header.LOCAL_STEP] = ws.local_step
            h[Header.COUNT] = self.steps_per_epoch if self.sync else 0
            h.set_rng(Header.RNG_SHUFFLE, ws.shuffle)
            if phase == 2:
                h.set_rng(Header.RNG_EVOLUTION, ws.evolution if own else
                          jumped_words(self.streams.evolution, k - 1))
            ip, ix = self.layout.pack_topology(model)
            arrays = [ip, ix, self.layout.pack(model), self.layout.pack(model, velocity=True)]
            h[Header.FLAGS] = (codec.F_TOPOLOGY | codec.F_VALUES | codec.F_VELOCITY)
            h.nnz = model.nnz_per_layer()
            if own and self.cfg.phase2_sync_every:
                h[Header.FLAGS] |= codec.F_PS_MODEL  # then the PS's model, to sync with
            self.t.send(k, h.arr, arrays)
            if own and self.cfg.phase2_sync_every:
                ps_model = self.switch_model if self.switch_model is not None else self.model
                hp = Header(ps_model.n_layers)
                hp[Header.KIND] = codec.MODEL
                hp[Header.FLAGS] = codec.F_TOPOLOGY | codec.F_VALUES | codec.F_VELOCITY
                hp.nnz = ps_model.nnz_per_layer()
                self.t.send(k, hp.arr, [*self.layout.pack_topology(ps_model),
                                        self.layout.pack(ps_model),
                                        self.layout.pack(ps_model, velocity=True)])
            self.peers[k].started(phase, st.epoch)
            if own:
                ws.model = None  # the worker has it now; free the PS's copy

    # ------------------------------------------------------------------ phase 1
    def _receive_gradient(self, k: int, h: Header) -> tuple[np.ndarray, int]:
        """The arrays of the GRAD whose header :meth:`_next` took from worker k."""
        v = h[Header.VERSION]
        if v not in self.topologies:
            raise RuntimeError(f"{self.peers[k].name} computed a gradient on topology version "
                               f"{v}, which the parameter server no longer knows")
        n = self.layout.n_values(h.nnz)
        if self._grad_buf.size != n:  # reused: a gradient is applied before the next arrives
            self._grad_buf = np.empty(n, dtype=np.float32)
        buf = self._grad_buf
        self.t.recv(k, [buf])
        ws = self.workers[k - 1]
        ws.local_epoch, ws.batch = h[Header.LOCAL_EPOCH], h[Header.BATCH]
        ws.local_step = h[Header.LOCAL_STEP]
        ws.shuffle = h.rng(Header.RNG_SHUFFLE).copy()
        if h.flags & codec.F_STOP_REQUEST:
            self.stop.request()
        return buf, v

    def _apply(self, buf: np.ndarray, v: int, nnz: list[int], lr: float, decay: float,
               momentum: float | None = None) -> None:
        """Momentum SGD with a gradient computed on topology version ``v``
        (retain valid updates first when the topology evolved since);
        ``momentum``: this step's (default ``cfg.momentum``)."""
        cfg, model = self.cfg, self.model
        mu = cfg.momentum if momentum is None else momentum
        w, b, s = self.layout.split(buf, nnz)
        old = self.topologies[v]
        self.stats["gradients"] += 1
        if v != self.version:
            self.stats["stale_gradients"] += 1
        for li, lay in enumerate(model.layers):
            g = w[li]
            old_ip, old_ix = old[li]
            if old_ip is not lay.indptr or old_ix is not lay.indices:
                g, kept = retain_valid_updates(old_ip, old_ix, g, lay, n_threads=model.n_threads)
                self.stats["entries_dropped"] += old_ix.size - kept
            self.stats["entries_sent"] += old_ix.size
            lay.apply_gradient(g, b[li], lr, mu, decay, nesterov=cfg.nesterov,
                               n_threads=model.n_threads)
        _apply_srelu(model, s, lr, mu, cfg.nesterov)

    @property
    def phase1_decay(self) -> float:
        """The per-step weight decay of phase 1: the run's (``--phase1-decay
        paper``) or none (``none``, the authors' code)."""
        return self.cfg.decay if self.cfg.phase1_decay == "paper" else 0.0

    def _account(self, loss: float, correct: int) -> None:
        st = self.state
        st.epoch_loss_sum += loss
        st.epoch_correct += correct

    def phase1(self) -> None:
        """Phase 1 to epoch ``phase1_epochs`` (WASAP or WASSP), then every
        worker is switched to phase 2 (or stopped when there is none)."""
        st = self.state
        self._epoch_t0 = time.perf_counter()
        self._paused_s = 0.0
        self._bytes_mark = self._traffic()
        while st.epoch < self.tau1:
            if self.sync:
                waiting = self._sync_step()
            else:
                waiting = [self._async_step()]
            if st.batch == self.steps_per_epoch:
                self._end_epoch_phase1(waiting)
            if st.epoch >= self.tau1:
                break
            if self.stop.requested:
                self._preempt_phase1(waiting)
            for k in waiting:
                self._reply(k, codec.MODEL)
            self._forget_topologies()
        # the switch: PHASE2 (or STOP when the run ends with phase 1)
        done = self.tau1 >= self.cfg.epochs
        kind = codec.STOP if done else codec.PHASE2
        self.phase = 2
        self.switch_model = self.model  # not changed in place from here on
        self._finish_phase1(waiting, kind)
        if done:
            self.final_model = self.model

    def _async_step(self) -> int:
        """WASAP: one gradient from whichever worker is ready, applied."""
        st, h = self.state, self.hin
        k = self._next(codec.GRAD)
        buf, v = self._receive_gradient(k, h)
        loss = h.loss
        if not math.isfinite(loss):
            self._diverged_phase1([k], loss, k)
        self._apply(buf, v, h.nnz, self.cfg.lr, self.phase1_decay)
        self._account(loss, h[Header.COUNT])
        st.step += 1
        st.batch += 1
        return k

    def _sync_step(self) -> list[int]:
        """WASSP: one gradient from every worker (rank order), averaged, applied."""
        cfg, st, h = self.cfg, self.state, self.hin
        total = None
        bad = None
        for k in range(1, self.K + 1):  # rank order: the sum is the same every run
            self._next(codec.GRAD, [k])
            buf, v = self._receive_gradient(k, h)
            if v != self.version:
                raise RuntimeError(f"WASSP: rank {k} is at topology version {v}, the PS at "
                                   f"{self.version}")
            loss = h.loss
            if not math.isfinite(loss) and bad is None:
                bad = (loss, k)
            self._account(loss, h[Header.COUNT])
            if total is None:
                if self._grad_sum.size != buf.size:
                    self._grad_sum = np.empty_like(buf)
                total = self._grad_sum
                total[...] = buf
            else:
                total += buf
        everyone = list(range(1, self.K + 1))
        if bad is not None:  # every gradient is in: all workers wait for an answer
            self._diverged_phase1(everyone, *bad)
        total *= np.float32(1.0 / self.K)
        if self.code:  # by PS epoch, momentum corrected when the lr changes; decay unscaled
            factor = warmup_factor_epoch(st.epoch, cfg.warmup_epochs, self.K)
            mu = cfg.momentum * momentum_correction(st.epoch, st.batch, cfg.warmup_epochs,
                                                    self.K)
            decay = self.phase1_decay
        else:  # by step; the decay scaled with the lr (per epoch as the sequential run's)
            factor = warmup_factor(st.step, self.steps_per_epoch, cfg.warmup_epochs, self.K)
            mu, decay = cfg.momentum, self.phase1_decay * factor
        self._apply(total, self.version, self.model.nnz_per_layer(), cfg.lr * factor, decay,
                    momentum=mu)
        st.step += 1
        st.batch += 1
        return everyone

    def _samples_per_step(self) -> int:
        return self.cfg.batch_size * (self.K if self.sync else 1)

    def _evaluate(self, model: SparseMLP) -> tuple[float, float]:
        """Test loss and accuracy of ``model`` (the global model or an average)."""
        return model.evaluate(self.X_test, self.y_test, batch_size=self.cfg.eval_batch_size)

    def _end_epoch_phase1(self, waiting: list[int]) -> None:
        """The sequential trainer's end of epoch, at the PS
        (:func:`~sparse_mlp.epoch.end_of_epoch`: finite check, evaluation
        when due, Importance Pruning when due and SET with the run's
        evolution stream, not after the last epoch); a new topology version
        when it evolved; then the metrics row and the checkpoint.
        ``waiting``: the workers that wait for an answer now."""
        cfg, st, model = self.cfg, self.state, self.model
        epoch = st.epoch
        train_s = st.epoch_train_s + time.perf_counter() - self._epoch_t0 - self._paused_s
        n = st.batch * self._samples_per_step()
        train_loss, train_acc = st.epoch_loss_sum / n, st.epoch_correct / n
        end = end_of_epoch(
            self.ecfg, model, st, epoch, train_loss=train_loss,
            on_diverged=lambda loss, _parts: self._diverged_phase1(waiting, loss, None),
            evaluate=lambda: self._evaluate(model), rng=self.streams.evolution)
        if end.topology_changed:
            self.version += 1
            self._remember_topology()
        traffic = self._traffic()
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
               "test_loss": end.test_loss, "test_acc": end.test_acc, "nnz": model.nnz,
               "train_s": train_s, "test_s": end.test_s, "evolution_s": end.evolution_s,
               "phase": 1, "bytes": traffic - self._bytes_mark}
        self.stats["bytes_phase1"] += traffic - self._bytes_mark
        self.stats["epochs_phase1"] += 1
        self._bytes_mark = traffic
        self._finish_row(row)
        if self.checkpoint_due(epoch):
            self.checkpoint("final" if epoch == cfg.epochs - 1 else "scheduled")
        self._epoch_t0 = time.perf_counter()
        self._paused_s = 0.0

    def _finish_row(self, row: dict) -> None:
        st = self.state
        st.history.append(row)
        st.epoch = row["epoch"] + 1
        st.batch, st.epoch_loss_sum, st.epoch_correct, st.epoch_train_s = 0, 0.0, 0, 0.0
        self.on_epoch(row)
        cfg = self.cfg
        msg = (f"epoch {row['epoch'] + 1}/{cfg.epochs} [phase {row['phase']}] loss "
               f"{row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}% | test loss "
               f"{row['test_loss']:.4f} acc {100 * row['test_acc']:.2f}% (best "
               f"{100 * st.best_test_acc:.2f}%) | nnz {row['nnz']} | {row['train_s']:.2f}s "
               f"train {row['test_s']:.2f}s test {row['evolution_s']:.3f}s evolution | "
               f"{row['bytes'] / 1e6:.1f} MB through rank 0")
        if self.bar is not None:
            self.bar.set_postfix_str(f"test {100 * row['test_acc']:.2f}% best "
                                     f"{100 * st.best_test_acc:.2f}% phase {row['phase']}",
                                     refresh=False)
            self.bar.update(1)
            log.debug(msg)
        else:
            log.info(msg)

    def _finish_phase1(self, waiting: list[int], kind: int, exit_code: int = 0) -> None:
        """Send ``kind`` (PHASE2 or STOP) to every worker: now to those
        waiting, and (WASAP) in answer to the gradient each other worker is
        computing.  Only those workers are listened to: one already switched
        may send its phase-2 REPORT before a slow one's last gradient comes
        in, and it waits in MPI's queue until phase 2 takes it.  A late
        gradient was computed on a model before the last update: it is
        drained, counted and not applied."""
        for k in waiting:
            self._reply(k, kind, exit_code)
        h = self.hin
        late = 0
        while True:
            computing = [k for k, p in self.peers.items() if p.next_kind == codec.GRAD]
            if not computing:
                break
            k = self._next(codec.GRAD, computing)
            self._receive_gradient(k, h)
            late += 1
            self._reply(k, kind, exit_code)
        if late:
            self.stats["late_gradients"] += late
            log.debug("phase 1 ended with %d gradient(s) in flight: answered with %s, not "
                      "applied", late, codec.KIND_NAMES[kind])
        for k in list(self.pending):
            self._wait_reply(k)

    def _preempt_phase1(self, waiting: list[int]) -> None:
        st = self.state
        where = (f"after update {st.batch}/{self.steps_per_epoch} of epoch {st.epoch + 1}"
                 if st.batch else f"at the end of epoch {st.epoch}")
        log.warning("received %s: stopping %s (step %d), saving a checkpoint", self.stop.name,
                    where, st.step)
        t0 = time.perf_counter()
        st.epoch_train_s += t0 - self._epoch_t0 - self._paused_s  # (a resume adds the rest)
        path = self.checkpoint("preempted")
        self._finish_phase1(waiting, codec.STOP, stop_exit_code(self.stop.signum))
        raise coordinated(PreemptedError(
            f"received {self.stop.name}: stopped {where} (step {st.step}); saved checkpoint "
            f"{path} in {time.perf_counter() - t0:.2f}s", checkpoint=path,
            signum=self.stop.signum))

    def _diverged_phase1(self, waiting: list[int], loss: float, k: int | None) -> None:
        st = self.state
        self._finish_phase1(waiting, codec.STOP, DIVERGED_EXIT_CODE)
        found = nonfinite_parts(self.model)
        what = f"; NaN or inf in {', '.join(found)}" if found else ""
        src = f" (a gradient of rank {k})" if k is not None else ""
        raise coordinated(DivergenceError(
            f"training diverged in epoch {st.epoch + 1} (step {st.step}){src}: the training "
            f"loss is {loss}{what}. Lower the learning rate (--lr, now {self.cfg.lr}"
            f"{', and the WASSP warm-up scales it by the number of workers' if self.sync else ''}"
            f") or the initial weight scale (--weight-init)."))

    # ------------------------------------------------------------------ phase 2
    def _gather(self, state: bool) -> list[SparseMLP]:
        """Every worker's replica (rank order); with ``state`` also its
        momenta, random streams and step count (kept in ``self.workers``)."""
        h = self.hin
        models = []
        for k in range(1, self.K + 1):  # rank order: the average is the same every run
            self._next(codec.WEIGHTS, [k])
            nnz = h.nnz
            ip, ix = self.layout.topology_buffers(nnz)
            values = np.empty(self.layout.n_values(nnz), dtype=np.float32)
            arrays = [ip, ix, values]
            vel = None
            if h.flags & codec.F_VELOCITY:
                vel = np.empty_like(values)
                arrays.append(vel)
            self.t.recv(k, arrays)
            m = replica(self.model, self.layout.layers_from(ip, ix, nnz, self.cfg.weight_init))
            self.layout.unpack(m, values)
            if vel is not None:
                self.layout.unpack(m, vel, velocity=True)
            models.append(m)
            if state:
                ws = self.workers[k - 1]
                ws.shuffle = h.rng(Header.RNG_SHUFFLE).copy()
                ws.evolution = h.rng(Header.RNG_EVOLUTION).copy()
                ws.local_step, ws.local_epoch = h[Header.LOCAL_STEP], h[Header.LOCAL_EPOCH]
                ws.batch = 0
                ws.model = m
        return models

    def _average(self, models: list[SparseMLP]) -> SparseMLP:
        """The average of the workers' models: code semantics, each layer
        thresholded per sign back to the PS's nnz (its model as of the
        switch); text, pruned by |w| back to the workers' mean nnz."""
        if self.code:
            ps = self.switch_model if self.switch_model is not None else self.model
            return average_models(models, targets=ps.nnz_per_layer(),
                                  n_threads=self.model.n_threads, prune="sign")
        return average_models(models, n_threads=self.model.n_threads)

    def phase2(self) -> None:
        """Epochs ``phase1_epochs`` .. ``epochs - 1``: collect the workers'
        reports, evaluate the average when due, checkpoint, stop on request."""
        cfg, st = self.cfg, self.state
        h = self.hin
        t0 = time.perf_counter()  # the workers train from here (the switch / the start)
        for epoch in range(st.epoch, cfg.epochs):
            loss_sum, correct, samples, stop_req = 0.0, 0, 0, False
            for k in range(1, self.K + 1):  # rank order: the sums are the same every run
                self._next(codec.REPORT, [k])  # of this epoch (the Peer checks)
                loss_sum += h.loss
                correct += h[Header.COUNT]
                samples += h[Header.BATCH]
                self.stats["phase2_syncs"] += h[Header.STEP]
                stop_req |= bool(h.flags & codec.F_STOP_REQUEST)
            train_s = time.perf_counter() - t0
            if stop_req:
                self.stop.request()
            last = epoch == cfg.epochs - 1
            diverged = not math.isfinite(loss_sum)
            stop = self.stop.requested and not last and not diverged
            want_eval = not diverged and eval_due(cfg, epoch)
            want_state = not diverged and (self.checkpoint_due(epoch) or stop)
            flags = 0
            if want_eval and not (last and want_state):
                flags |= codec.F_WANT_WEIGHTS
            if want_state:
                flags |= codec.F_WANT_STATE
            if last or stop or diverged:
                flags |= codec.F_LAST
            code = (DIVERGED_EXIT_CODE if diverged else
                    stop_exit_code(self.stop.signum) if stop else 0)
            for k in range(1, self.K + 1):
                hk = self.hout[k].clear()
                hk[Header.KIND], hk[Header.FLAGS], hk[Header.EPOCH] = codec.CONTROL, flags, code
                self.peers[k].controlled(epoch, flags, code)
                self.t.send(k, hk.arr)
            t0 = time.perf_counter()  # the next local epoch starts now
            if diverged:
                raise coordinated(DivergenceError(
                    f"training diverged in epoch {epoch + 1} (phase 2, local training): a "
                    f"worker's training loss is not finite. Lower the learning rate (--lr, "
                    f"now {cfg.lr}) or the initial weight scale (--weight-init)."))
            avg = None
            if flags & codec.F_WANT_WEIGHTS:
                avg = self._average(self._gather(state=False))
            # the workers' evolution: nnz afterwards (the row's, as the sequential trainer's)
            evolution_s, nnzs = 0.0, []
            for k in range(1, self.K + 1):
                self._next(codec.EVOLVED, [k])
                evolution_s = max(evolution_s, h.loss)
                nnzs.append(sum(h.nnz))
            if want_state:
                states = self._gather(state=True)
                avg_state = self._average(states)
                if avg is None:
                    avg = avg_state  # the last epoch: no evolution, the same weights
            # the end of epoch of the average: evaluation when due (avg is there
            # then) and the best accuracy; the workers checked and evolved already
            end = end_of_epoch(self.ecfg, avg, st, epoch, train_loss=loss_sum / max(samples, 1),
                               on_diverged=None, evaluate=partial(self._evaluate, avg), rng=None)
            if avg is not None:
                self.model = avg
            if last:
                self.final_model = avg
            traffic = self._traffic()
            row = {"epoch": epoch, "train_loss": loss_sum / max(samples, 1),
                   "train_acc": correct / max(samples, 1), "test_loss": end.test_loss,
                   "test_acc": end.test_acc, "nnz": int(round(np.mean(nnzs))),
                   "train_s": train_s, "test_s": end.test_s, "evolution_s": evolution_s,
                   "phase": 2,
                   "bytes": traffic - self._bytes_mark}
            self.stats["bytes_phase2"] += traffic - self._bytes_mark
            self.stats["epochs_phase2"] += 1
            self._bytes_mark = traffic
            self._finish_row(row)
            if want_state:
                reason = "preempted" if stop else ("final" if last else "scheduled")
                path = self.checkpoint(reason, model=avg_state)
                for ws in self.workers:
                    ws.model = None
                if stop:
                    raise coordinated(PreemptedError(
                        f"received {self.stop.name}: stopped at the end of epoch {epoch + 1} "
                        f"(phase 2); saved checkpoint {path}", checkpoint=path,
                        signum=self.stop.signum))

    def run(self) -> None:
        self.start_workers()
        if self.state.epoch < self.tau1:
            self.phase1()
        elif self.state.epoch < self.cfg.epochs and self.phase == 1:
            self.phase = 2
        if self.switch_model is None and self.phase == 2:
            self.switch_model = self.model  # resumed at the switch: the phase-1 model
        if self.state.epoch < self.cfg.epochs:
            self.phase2()
        elif self.final_model is None:
            self.final_model = self.model
