"""What the WASAP/WASSP parameter server (:mod:`.server`) and the workers
(:mod:`.worker`) share: where a worker is (:class:`WorkerState`, saved in
checkpoints), what the server expects from it next (:class:`Peer`, the
protocol), a replica's arrays in a checkpoint, the random streams each
worker derives from the run's, the WASSP learning-rate warm-up, and the
exception that ends a worker rank when the parameter server says stop.

The protocol, per worker, as the server sees it (:class:`Peer`): every
message the server sends a worker fixes the messages that worker sends
next, up to the point where it waits for the server again:

    START phase 1, MODEL       -> GRAD
    START phase 2 (epoch e)    -> REPORT(e)
    PHASE2 (the switch, at e)  -> REPORT(e)
    STOP, START phase 0        -> nothing (the worker leaves)
    CONTROL(e, flags, code)    -> [WEIGHTS(e) if F_WANT_WEIGHTS], then nothing if
                                  code says diverged, else EVOLVED(e),
                                  [WEIGHTS(e) with state if F_WANT_STATE],
                                  REPORT(e + 1) unless F_LAST
    GRAD, REPORT received      -> nothing until the server answers

so the server knows, for each worker, the kind (and epoch) of its next
message, and receives each kind only from the workers that owe one: a
worker that is ahead (in phase 2 while another still owes its last
phase-1 gradient) is simply not listened to until its turn, and MPI keeps
its messages queued, in order.  A message that is not the one expected is
a protocol error that names the rank.

Random streams: the parameter server draws the initial model and runs
phase-1 SET with the run's ``RandomStreams(seed)`` (so the initial network
is the sequential run's); worker i (0-based) shuffles with the run's
shuffle stream jumped i times (:func:`jumped_words`) and, in phase 2,
evolves with the server's evolution stream (as of the switch) jumped i
times; its dropout masks use :func:`worker_dropout_seed`.  With one
worker, both algorithms therefore replay the sequential run's data order,
dropout masks and evolution draws.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..activations import Activation
from ..errors import DivergenceError, SparseMLPError
from ..layers import SparseLayer
from ..model import SparseMLP
from . import codec
from .codec import Layout

__all__ = ["DIVERGED_EXIT_CODE", "MODES", "Peer", "ProtocolError", "RankStopped",
           "WorkerState", "code_sync_every", "coordinated", "copy_model", "evolution_config",
           "jumped_words", "model_from_extra", "model_to_extra", "momentum_correction",
           "replica", "resolve_semantics", "restore_model", "warmup_factor",
           "warmup_factor_epoch", "worker_dropout_seed"]

MODES = ("wasap", "wassp")
# Importance Pruning under the parallel algorithms in the authors' code
# (``weight_evolution``: every 20 epochs at the 10th percentile)
CODE_IP_EVERY = 20
CODE_IP_PERCENTILE = 10.0
DIVERGED_EXIT_CODE = DivergenceError.exit_code
GOLDEN64 = 0x9E3779B97F4A7C15


class RankStopped(SparseMLPError):
    """A worker stopped because the parameter server told it to (the run
    finished early, was preempted, or diverged); rank 0 reports why.
    ``quiet``: the command line prints nothing for it on the worker ranks."""

    quiet = True

    def __init__(self, exit_code: int, message: str = "stopped by the parameter server"):
        super().__init__(message)
        self.exit_code = int(exit_code)


class ProtocolError(RuntimeError):
    """A rank sent a message the protocol does not allow at that point (a
    bug, never a matter of timing); the message names the rank."""


class Peer:
    """The parameter server's view of one worker's side of the protocol
    (module docs): its phase (1, 2, or 0 once it has been told to leave)
    and the messages it will send, in order, before it waits for the
    server again (``expect``: (kind, epoch) pairs, epoch None when the
    message carries none).

    Parameters
    ----------
    rank : int
    name : str
        How messages name it: 'rank k (worker k, pid P on H)'.
    """

    def __init__(self, rank: int, name: str) -> None:
        self.rank = int(rank)
        self.name = name
        self.phase = 1
        self.expect: deque[tuple[int, int | None]] = deque()

    def __repr__(self) -> str:
        return f"Peer({self.rank}, phase {self.phase}, expects {self.expecting()})"

    @property
    def next_kind(self) -> int | None:
        """The kind of the next message from this worker (None: it waits)."""
        return self.expect[0][0] if self.expect else None

    def expecting(self) -> str:
        if not self.expect:
            return "nothing (it waits for the parameter server)" if self.phase else \
                "nothing (it was told to stop)"
        kind, epoch = self.expect[0]
        return codec.KIND_NAMES.get(kind, str(kind)) + ("" if epoch is None else
                                                         f" of epoch {epoch}")

    # ---------------------------------------------------------------- what the server sent
    def started(self, phase: int, epoch: int) -> None:
        """START: phase 1 (a gradient next), 2 (the report of ``epoch``) or 0."""
        self.phase = int(phase)
        self.expect.clear()
        if phase == 1:
            self.expect.append((codec.GRAD, None))
        elif phase == 2:
            self.expect.append((codec.REPORT, int(epoch)))

    def told(self, kind: int, epoch: int = 0) -> None:
        """MODEL, PHASE2 (the switch at ``epoch``) or STOP was sent."""
        if self.expect:
            raise ProtocolError(f"parameter server: answered {self.name} with "
                                f"{codec.KIND_NAMES.get(kind, kind)} while it still owes "
                                f"{self.expecting()}")
        if kind == codec.MODEL:
            self.expect.append((codec.GRAD, None))
        elif kind == codec.PHASE2:
            self.phase = 2
            self.expect.append((codec.REPORT, int(epoch)))
        elif kind == codec.STOP:
            self.phase = 0
        else:
            raise ValueError(f"told() takes MODEL, PHASE2 or STOP, not {kind}")

    def controlled(self, epoch: int, flags: int, code: int) -> None:
        """CONTROL after the report of ``epoch``: what the worker sends then
        (:meth:`Worker.phase2 <sparse_mlp.parallel.worker.Worker.phase2>`)."""
        if self.expect:
            raise ProtocolError(f"parameter server: sent CONTROL to {self.name} while it still "
                                f"owes {self.expecting()}")
        if flags & codec.F_WANT_WEIGHTS:
            self.expect.append((codec.WEIGHTS, epoch))
        if code == DIVERGED_EXIT_CODE:
            self.phase = 0
            return
        self.expect.append((codec.EVOLVED, epoch))
        if flags & codec.F_WANT_STATE:
            self.expect.append((codec.WEIGHTS, epoch))
        if flags & codec.F_LAST:
            self.phase = 0
        else:
            self.expect.append((codec.REPORT, epoch + 1))

    # ---------------------------------------------------------------- what it sent
    def received(self, kind: int, epoch: int) -> None:
        """Check a header from this worker against what it owes; raises
        :class:`ProtocolError` (naming it) for anything else."""
        if not self.expect:
            raise ProtocolError(f"parameter server: {self.name} sent "
                                f"{codec.KIND_NAMES.get(kind, kind)} (epoch {epoch}), but owes "
                                f"{self.expecting()}")
        want, want_epoch = self.expect[0]
        if kind != want or (want_epoch is not None and epoch != want_epoch):
            raise ProtocolError(f"parameter server: {self.name} sent "
                                f"{codec.KIND_NAMES.get(kind, kind)} of epoch {epoch}; the "
                                f"protocol says its next message is {self.expecting()} "
                                f"(phase {self.phase})")
        self.expect.popleft()


def coordinated(exc: BaseException) -> BaseException:
    """Mark an exception raised after every rank was told to stop: it needs
    no MPI_Abort."""
    exc.coordinated = True
    return exc


def worker_dropout_seed(seed: int, index: int) -> int:
    """Dropout seed of worker ``index`` (0-based): the run's seed for the
    first worker, distinct odd offsets for the others."""
    return (int(seed) + int(index) * GOLDEN64) % (1 << 64)


def jumped_words(gen: np.random.Generator, jumps: int) -> np.ndarray:
    """The PCG64 state of ``gen`` advanced by ``jumps`` jumps (0: unchanged),
    as codec words; ``gen`` itself is not advanced."""
    bg = np.random.PCG64()
    bg.state = gen.bit_generator.state
    if jumps:
        bg = bg.jumped(jumps)
    return codec.pack_pcg64(np.random.Generator(bg))


def warmup_factor(step: int, steps_per_epoch: int, warmup_epochs: float, K: int) -> float:
    """WASSP's learning-rate multiplier at ``step`` (``--parallel-semantics
    text``): 1 at the start, rising linearly by step to K over
    ``warmup_epochs`` epochs (Goyal et al. 2017), K after."""
    span = warmup_epochs * steps_per_epoch
    if K <= 1 or span <= 0 or step >= span:
        return float(K)
    return 1.0 + (K - 1) * step / span


def warmup_factor_epoch(epoch: int, warmup_epochs: float, K: int) -> float:
    """WASSP's learning-rate multiplier in PS epoch ``epoch`` (0-based;
    ``--parallel-semantics code``, the authors' ``lr = base_lr * ((K - 1) *
    epoch / 5 + 1)`` while ``epoch <= 5``): a step function, 1 in epoch 0,
    K from epoch ``warmup_epochs`` on."""
    if K <= 1 or warmup_epochs <= 0 or epoch >= warmup_epochs:
        return float(K)
    return 1.0 + (K - 1) * epoch / warmup_epochs


def momentum_correction(epoch: int, batch: int, warmup_epochs: float, K: int) -> float:
    """The factor on the momentum of the step ``batch`` of PS epoch ``epoch``
    under the by-epoch warm-up: lr_new / lr_old at the first step of an
    epoch whose learning rate differs from the previous epoch's (Goyal et
    al.; the authors' ``momentum_correction``), 1 otherwise."""
    if batch != 0 or epoch == 0:
        return 1.0
    return (warmup_factor_epoch(epoch, warmup_epochs, K)
            / warmup_factor_epoch(epoch - 1, warmup_epochs, K))


def code_sync_every(epochs: int) -> int:
    """The authors' phase-2 synchronisation period: round(0.3 x epochs)
    local steps (150 for 500 epochs), at least 1."""
    return max(1, int(math.floor(0.3 * epochs + 0.5)))


def resolve_semantics(cfg):
    """``cfg`` with the settings that ``parallel_semantics`` decides filled
    in (those left None): the phase-2 synchronisation period, the phase-1
    weight decay and the Importance Pruning schedule under --parallel.
    Idempotent; explicit values are kept."""
    code = cfg.parallel_semantics == "code"
    changes = {}
    if cfg.phase2_sync_every is None:
        changes["phase2_sync_every"] = code_sync_every(cfg.epochs) if code else 0
    if cfg.phase1_decay is None:
        changes["phase1_decay"] = "none" if code else "paper"
    if cfg.parallel_ip_every is None:
        changes["parallel_ip_every"] = CODE_IP_EVERY if code else cfg.ip_every
    if cfg.parallel_ip_percentile is None:
        changes["parallel_ip_percentile"] = (CODE_IP_PERCENTILE if code
                                             else float(cfg.ip_percentile))
    return cfg.replace(**changes) if changes else cfg


def evolution_config(cfg):
    """The configuration :func:`sparse_mlp.epoch.end_of_epoch` gets under
    --parallel: the Importance Pruning schedule of the parallel trainer."""
    cfg = resolve_semantics(cfg)
    return cfg.replace(ip_every=cfg.parallel_ip_every, ip_percentile=cfg.parallel_ip_percentile)


def copy_model(model: SparseMLP) -> SparseMLP:
    """A deep copy of a replica: topology, weights, momenta, biases, SReLU."""
    layers = [SparseLayer(lay.n_in, lay.n_out, lay.indptr.copy(), lay.indices.copy(),
                          lay.data.copy(), init=lay.init, bias=lay.bias.copy(),
                          velocity=lay.velocity.copy(), bias_velocity=lay.bias_velocity.copy(),
                          check=False) for lay in model.layers]
    return replica(model, layers)


def restore_model(model: SparseMLP, source: SparseMLP) -> None:
    """Make ``model`` (in place) a copy of ``source``: a phase-2 worker
    taking the parameter server's model."""
    for lay, src in zip(model.layers, source.layers):
        lay.set_topology(src.indptr.copy(), src.indices.copy(), src.data.copy(),
                         src.velocity.copy(), check=False)
        lay.bias[...] = src.bias
        lay.bias_velocity[...] = src.bias_velocity
    for act, src in zip(model.acts, source.acts):
        if act.params is not None:
            act.params[...] = src.params
            act.velocity[...] = src.velocity
    model.release_buffers()


@dataclass
class WorkerState:
    """What the PS knows of a worker, to checkpoint and resume it."""

    local_epoch: int = 0          # passes over its partition started
    batch: int = 0                # batches done in the current pass
    local_step: int = 0           # batches done since the start (dropout key)
    shuffle: np.ndarray = field(default_factory=lambda: np.zeros(6, np.uint64))
    #                               its shuffle stream before the current pass
    evolution: np.ndarray | None = None  # phase 2: its evolution stream
    model: SparseMLP | None = None       # phase 2: its replica (with momentum)

    def to_extra(self, layout: Layout) -> dict:
        out = {"local_epoch": self.local_epoch, "batch": self.batch,
               "local_step": self.local_step, "shuffle": self.shuffle.copy()}
        if self.evolution is not None:
            out["evolution"] = self.evolution.copy()
        if self.model is not None:
            out["model"] = model_to_extra(self.model)
        return out

    @classmethod
    def from_extra(cls, d: dict, template: SparseMLP | None) -> WorkerState:
        ws = cls(int(d["local_epoch"]), int(d["batch"]), int(d["local_step"]),
                 np.asarray(d["shuffle"], dtype=np.uint64))
        if "evolution" in d:
            ws.evolution = np.asarray(d["evolution"], dtype=np.uint64)
        if "model" in d and template is not None:
            ws.model = model_from_extra(d["model"], template)
        return ws


def model_to_extra(model: SparseMLP) -> dict:
    """A replica's arrays for a checkpoint's ``extra`` group."""
    out: dict = {}
    for li, lay in enumerate(model.layers):
        out[f"layer{li}"] = {"indptr": lay.indptr, "indices": lay.indices, "data": lay.data,
                             "velocity": lay.velocity, "bias": lay.bias,
                             "bias_velocity": lay.bias_velocity}
    for h, act in enumerate(model.acts):
        if act.params is not None:
            out[f"srelu{h}"] = {"params": act.params, "velocity": act.velocity}
    return out


def replica(template: SparseMLP, layers: list[SparseLayer]) -> SparseMLP:
    """A model like ``template`` (activations copied) on the given layers."""
    acts = [Activation(a.name, a.kind, a.slope, None if a.params is None else a.params.copy(),
                       None if a.velocity is None else a.velocity.copy())
            for a in template.acts]
    return SparseMLP(template.sizes, template.epsilon, template.activation, template.alpha,
                     template.init, template.output, template.dropout,
                     n_threads=template.n_threads, layers=layers, activations=acts,
                     activation_memory="lean" if template.lean else "fast")


def model_from_extra(d: dict, template: SparseMLP) -> SparseMLP:
    """The replica of :func:`model_to_extra`, shaped like ``template``."""
    layers = []
    for li, t in enumerate(template.layers):
        g = d[f"layer{li}"]
        layers.append(SparseLayer(t.n_in, t.n_out, g["indptr"], g["indices"], g["data"],
                                  init=t.init, bias=g["bias"], velocity=g["velocity"],
                                  bias_velocity=g["bias_velocity"], check=True))
    m = replica(template, layers)
    for h, act in enumerate(m.acts):
        if act.params is not None:
            act.params[...] = d[f"srelu{h}"]["params"]
            act.velocity[...] = d[f"srelu{h}"]["velocity"]
    return m

