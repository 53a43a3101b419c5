"""A WASAP-SGD / WASSP-SGD worker (paper Algorithm 1; ranks 1..K): a
replica of the model, its partition of the training data (every K-th
sample) and the loops below, over :mod:`.transport`.  The parameter
server's side is :mod:`.server`; what both share, :mod:`.state`.

Phase 1 (WASAP and WASSP), per message:
  draw a batch of the partition (reshuffled after each local pass), compute
  the batch-mean gradient at the replica's weights (no update), send it
  with the step and topology version it was computed at, then wait for the
  parameter server's answer: the new model (MODEL), the switch to phase 2
  (PHASE2: model, momenta and this worker's evolution stream) or STOP.
Phase 2 (from epoch ``phase1_epochs``), per epoch:
  one pass over the partition with momentum SGD on the replica, the
  finite check, a REPORT, the server's CONTROL (send the weights for the
  average when an evaluation is due), then this worker's own end of epoch
  (:func:`sparse_mlp.epoch.end_of_epoch` with no evaluation: Importance
  Pruning when due, then SET), an EVOLVED report and, when the server
  checkpoints, its full state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..augment import gather_batch
from ..config import TrainConfig
from ..epoch import end_of_epoch, nonfinite_parts
from ..kernels import aligned_empty
from ..model import SparseMLP
from ..training import StopRequest
from . import codec
from .codec import Header, Layout
from .state import (
    DIVERGED_EXIT_CODE,
    copy_model,
    evolution_config,
    resolve_semantics,
    restore_model,
    worker_dropout_seed,
)

if TYPE_CHECKING:  # mpi4py only when a run starts (the tests drive these directly)
    from .transport import Transport

__all__ = ["Worker"]


class Worker:
    """One worker rank: a replica, a data partition, the phase-1 exchange
    loop and the phase-2 local training.

    Parameters
    ----------
    cfg : TrainConfig
    transport : Transport
    model : SparseMLP
        The replica (built from the START message).
    X, y : ndarray
        This worker's partition: float32 (n, features) and int32 (n,).
    index : int
        0-based worker index (rank - 1).
    stop : StopRequest
        Set by SIGTERM / SIGUSR1 on this rank; forwarded to the PS.
    """

    def __init__(self, cfg: TrainConfig, transport: Transport, model: SparseMLP,
                 X: np.ndarray, y: np.ndarray, index: int, stop: StopRequest) -> None:
        cfg = resolve_semantics(cfg)
        self.cfg = cfg
        self.ecfg = evolution_config(cfg)  # end_of_epoch: the parallel IP schedule
        self.sync_every = int(cfg.phase2_sync_every)
        self.ps_model: SparseMLP | None = None  # phase 2: the PS's model, to sync with
        self.syncs = 0  # phase-2 syncs in the current local epoch
        self.t = transport
        self.model = model
        self.X = X
        self.y = y
        self.index = index
        self.stop = stop
        self.layout = Layout.of(model)
        self.hin = Header(model.n_layers)
        self.hout = Header(model.n_layers)
        self.dropout_seed = worker_dropout_seed(cfg.seed, index)
        self.xb = aligned_empty((model.sizes[0], cfg.batch_size))
        # position in the partition (restored from START)
        self.shuffle: np.random.Generator | None = None
        self.evolution: np.random.Generator | None = None
        self.epoch_words = np.zeros(6, np.uint64)
        self.order: np.ndarray | None = None
        self.local_epoch = 0
        self.batch = 0
        self.local_step = 0
        self.batches_per_pass = X.shape[0] // cfg.batch_size
        self.step = 0       # the PS step of the replica's weights
        self.version = 0    # the PS topology version of the replica
        self.epoch = 0      # global epoch (phase 2)

    # ------------------------------------------------------------------ data order
    def restore_position(self, h: Header) -> None:
        self.local_epoch, self.batch = h[Header.LOCAL_EPOCH], h[Header.BATCH]
        self.local_step = h[Header.LOCAL_STEP]
        self.epoch_words = h.rng(Header.RNG_SHUFFLE).copy()
        self.shuffle = codec.generator_from(self.epoch_words)
        self.order = None  # phase 1: re-drawn from the restored stream at the next batch

    def new_pass(self) -> None:
        """Start a pass over the partition: remember the stream, draw the order."""
        self.epoch_words = codec.pack_pcg64(self.shuffle)
        self.order = self.shuffle.permutation(self.X.shape[0])
        self.batch = 0
        self.local_epoch += 1

    def next_batch(self) -> np.ndarray:
        if self.order is None:  # the pass in progress at the (re)start
            self.order = self.shuffle.permutation(self.X.shape[0])
        if self.batch >= self.batches_per_pass:
            self.new_pass()
        B = self.cfg.batch_size
        idx = self.order[self.batch * B:(self.batch + 1) * B]
        self.batch += 1
        # --augment: shifted / flipped images, drawn from (seed, local step, position)
        gather_batch(self.X, idx, self.xb, self.cfg.augment, self.dropout_seed,
                     self.local_step, n_threads=self.model.n_threads)
        return idx

    # ------------------------------------------------------------------ messages
    def _receive_model(self, h: Header, velocity: bool = False) -> None:
        """The arrays that follow a MODEL / PHASE2 / START header."""
        nnz = h.nnz
        arrays = []
        if h.flags & codec.F_TOPOLOGY:
            ip, ix = self.layout.topology_buffers(nnz)
            arrays += [ip, ix]
        values = np.empty(self.layout.n_values(nnz), dtype=np.float32)
        arrays.append(values)
        vel = None
        if h.flags & codec.F_VELOCITY:
            vel = np.empty_like(values)
            arrays.append(vel)
        self.t.recv(0, arrays)
        if h.flags & codec.F_TOPOLOGY:
            self.layout.set_topology(self.model, ip, ix, nnz)
        self.layout.unpack(self.model, values)
        if vel is not None:
            self.layout.unpack(self.model, vel, velocity=True)
        self.step, self.version = h[Header.STEP], h[Header.VERSION]

    def run(self) -> int:
        """Serve the run to its end; returns the exit code the PS decided."""
        h = self.hin
        self.t.recv_header(h.arr, source=0)
        if h.kind != codec.START:
            raise RuntimeError(f"worker {self.index + 1}: expected START, got "
                               f"{codec.KIND_NAMES.get(h.kind, h.kind)}")
        self._receive_model(h, velocity=bool(h.flags & codec.F_VELOCITY))
        self.restore_position(h)
        self.epoch = h[Header.EPOCH]
        if h.flags & codec.F_PS_MODEL:  # resumed in phase 2: the PS's model follows
            self.ps_model = self._receive_ps_model()
        if h[Header.PHASE] == 0:  # a resumed run that has nothing left to do
            return 0
        if h[Header.PHASE] == 1:
            self.batches_per_pass = h[Header.COUNT] or self.batches_per_pass
            code = self.phase1()
            if code is not None:
                return code
        else:
            self.evolution = codec.generator_from(h.rng(Header.RNG_EVOLUTION))
        return self.phase2()

    def _receive_ps_model(self) -> SparseMLP:
        """The MODEL message (topology, values, momenta) after a START with
        F_PS_MODEL, as a separate model."""
        h = Header(self.model.n_layers)
        self.t.recv_header(h.arr, source=0)
        if h.kind != codec.MODEL:
            raise RuntimeError(f"worker {self.index + 1}: expected the PS's model after START, "
                               f"got {codec.KIND_NAMES.get(h.kind, h.kind)}")
        nnz = h.nnz
        ip, ix = self.layout.topology_buffers(nnz)
        values = np.empty(self.layout.n_values(nnz), dtype=np.float32)
        vel = np.empty_like(values)
        self.t.recv(0, [ip, ix, values, vel])
        m = copy_model(self.model)
        self.layout.set_topology(m, ip, ix, nnz)
        self.layout.unpack(m, values)
        self.layout.unpack(m, vel, velocity=True)
        return m

    def sync_due(self) -> bool:
        """Phase 2: whether this worker takes the PS's model after its
        current step (every ``phase2_sync_every`` of its own steps, counted
        from its first step of phase 1, as the authors' step counter)."""
        return bool(self.sync_every) and self.local_step % self.sync_every == 0

    def sync(self) -> None:
        """Replace the replica (topology, weights, momenta, biases) by the
        PS's model.  The PS's model does not change in phase 2 (the
        authors' PS applies the empty update, a no-op, and answers with its
        model), so the copy received at the switch is that model: no
        message is needed."""
        restore_model(self.model, self.ps_model)
        self.syncs += 1

    # ------------------------------------------------------------------ phase 1
    def phase1(self) -> int | None:
        """Gradients out, models in, until the PS says PHASE2 (returns None)
        or STOP (returns its exit code)."""
        cfg, model, h, out = self.cfg, self.model, self.hin, self.hout
        gbuf = None
        while True:
            idx = self.next_batch()
            keys = model.dropout_keys(self.dropout_seed, self.local_step)
            loss, correct, acc = model._accumulate(self.xb, self.y[idx], keys, cfg.micro_batch)
            self.local_step += 1
            nnz = model.nnz_per_layer()
            if gbuf is None or gbuf.size != self.layout.n_values(nnz):
                gbuf = np.empty(self.layout.n_values(nnz), dtype=np.float32)
            self.layout.pack_gradients(acc["grads"], acc["sg"], gbuf)
            out.clear()
            out[Header.KIND], out[Header.STEP], out[Header.VERSION] = (
                codec.GRAD, self.step, self.version)
            out[Header.LOCAL_EPOCH], out[Header.BATCH] = self.local_epoch, self.batch
            out[Header.LOCAL_STEP], out[Header.COUNT] = self.local_step, correct
            out[Header.FLAGS] = codec.F_VALUES | (codec.F_STOP_REQUEST if self.stop.requested
                                                  else 0)
            out.set_rng(Header.RNG_SHUFFLE, self.epoch_words)
            out.loss = loss
            out.nnz = nnz
            reqs = self.t.isend(0, out.arr, [gbuf])
            self.t.recv_header(h.arr, source=0)
            self.t.wait(reqs)
            kind = h.kind
            if kind == codec.MODEL:
                self._receive_model(h)
            elif kind == codec.PHASE2:
                self._receive_model(h, velocity=True)
                self.evolution = codec.generator_from(h.rng(Header.RNG_EVOLUTION))
                self.epoch = h[Header.EPOCH]
                return None
            elif kind == codec.STOP:
                return h[Header.EPOCH]
            else:
                raise RuntimeError(f"worker {self.index + 1}: unexpected "
                                   f"{codec.KIND_NAMES.get(kind, kind)} in phase 1")

    # ------------------------------------------------------------------ phase 2
    def _send_weights(self, state: bool) -> None:
        """The replica to the PS: topology and values (with ``state``: also
        momenta, random streams and the step count, for a checkpoint)."""
        model, out = self.model, self.hout
        ip, ix = self.layout.pack_topology(model)
        arrays = [ip, ix, self.layout.pack(model)]
        flags = codec.F_TOPOLOGY | codec.F_VALUES
        out.clear()
        if state:
            arrays.append(self.layout.pack(model, velocity=True))
            flags |= codec.F_VELOCITY
            out.set_rng(Header.RNG_SHUFFLE, codec.pack_pcg64(self.shuffle))
            out.set_rng(Header.RNG_EVOLUTION, codec.pack_pcg64(self.evolution))
        out[Header.KIND], out[Header.FLAGS], out[Header.EPOCH] = codec.WEIGHTS, flags, self.epoch
        out[Header.LOCAL_STEP], out[Header.LOCAL_EPOCH] = self.local_step, self.local_epoch
        out.nnz = model.nnz_per_layer()
        self.t.send(0, out.arr, arrays)

    def phase2(self) -> int:
        """Local epochs with independent evolution; after each one a report,
        the PS's instructions, and the weights when asked."""
        cfg, model, h, out = self.cfg, self.model, self.hin, self.hout
        self.batches_per_pass = self.X.shape[0] // cfg.batch_size
        if self.sync_every and self.ps_model is None:  # the switch (or a start at it):
            self.ps_model = copy_model(model)           # the replica is the PS's model
        while True:
            self.new_pass()
            loss_sum, correct, done = 0.0, 0, 0
            self.syncs = 0
            for _ in range(self.batches_per_pass):
                idx = self.next_batch()
                keys = model.dropout_keys(self.dropout_seed, self.local_step)
                lo, c = model.train_step(self.xb, self.y[idx], cfg.lr, cfg.momentum, cfg.decay,
                                         keys, nesterov=cfg.nesterov,
                                         micro_batch=cfg.micro_batch)
                self.local_step += 1
                loss_sum += lo
                correct += c
                done += 1
                if not math.isfinite(lo):
                    break
                if self.sync_due():
                    self.sync()
            if math.isfinite(loss_sum) and nonfinite_parts(model):
                loss_sum = float("nan")
            out.clear()
            out[Header.KIND], out[Header.EPOCH], out[Header.COUNT] = (
                codec.REPORT, self.epoch, correct)
            out[Header.BATCH] = done * cfg.batch_size
            out[Header.LOCAL_STEP] = self.local_step
            out[Header.STEP] = self.syncs
            out[Header.FLAGS] = codec.F_STOP_REQUEST if self.stop.requested else 0
            out.loss = loss_sum
            out.nnz = model.nnz_per_layer()
            self.t.send(0, out.arr)
            self.t.recv_header(h.arr, source=0)
            if h.kind != codec.CONTROL:
                raise RuntimeError(f"worker {self.index + 1}: unexpected "
                                   f"{codec.KIND_NAMES.get(h.kind, h.kind)} in phase 2")
            flags, code = h.flags, h[Header.EPOCH]
            if flags & codec.F_WANT_WEIGHTS:
                self._send_weights(state=False)
            if code == DIVERGED_EXIT_CODE:
                return code
            # this worker's end of epoch: its own Importance Pruning when due and
            # SET (none after the last epoch; also before a preemption checkpoint).
            # The finite check came before the report; the server evaluates the average.
            end = end_of_epoch(self.ecfg, model, None, self.epoch, train_loss=loss_sum,
                               on_diverged=None, evaluate=None, rng=self.evolution)
            out.clear()
            out[Header.KIND], out[Header.EPOCH] = codec.EVOLVED, self.epoch
            out.loss = end.evolution_s
            out.nnz = model.nnz_per_layer()
            self.t.send(0, out.arr)
            if flags & codec.F_WANT_STATE:
                self._send_weights(state=True)
            if flags & codec.F_LAST:
                return code
            self.epoch += 1
