"""The parameter server and a worker of sparse_mlp/parallel driven directly,
in-process, without MPI: a fake transport hands them the messages a real
rank would send.  What whole runs under mpiexec cannot pin down:

* a stale gradient (computed on an older topology version) is mapped onto
  the current topology ("retain valid updates") before the server applies
  it -- SET keeps every layer's nnz, so an unmapped gradient would fit the
  buffers and silently land on the wrong connections;
* a worker's shuffle stream gives a new order on every pass over its
  partition, and the stream saved for a checkpoint replays the pass in
  progress.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sparse_mlp.config import TrainConfig
from sparse_mlp.model import SparseMLP
from sparse_mlp.parallel import codec
from sparse_mlp.parallel.codec import Header, Layout
from sparse_mlp.parallel.ops import retain_valid_numpy
from sparse_mlp.parallel.server import ParameterServer
from sparse_mlp.parallel.state import WorkerState
from sparse_mlp.parallel.worker import Worker
from sparse_mlp.training import RandomStreams, StopRequest, TrainState

SIZES = [12, 10, 8, 3]


class FakeTransport:
    """Stands in for :class:`sparse_mlp.parallel.transport.Transport`:
    ``inbox`` holds (source rank, header, arrays) in arrival order; what is
    sent is recorded in ``sent``."""

    def __init__(self) -> None:
        self.inbox: list[tuple[int, np.ndarray, list[np.ndarray]]] = []
        self.sent: list[tuple[int, np.ndarray, list[np.ndarray]]] = []
        self.bytes_sent = self.bytes_received = 0
        self._arrays: list[np.ndarray] = []

    def recv_header(self, arr: np.ndarray, source: int | None = None) -> int:
        k, header, self._arrays = self.inbox.pop(0)
        assert source in (None, k)
        arr[...] = header
        return k

    def recv(self, source: int, arrays: list[np.ndarray]) -> None:
        assert len(arrays) == len(self._arrays)
        for dst, src in zip(arrays, self._arrays):
            dst[...] = src

    def send(self, dest: int, header: np.ndarray, arrays=()) -> None:
        self.sent.append((dest, header.copy(), [a.copy() for a in arrays]))

    def isend(self, dest: int, header: np.ndarray, arrays=()) -> list:
        self.send(dest, header, arrays)
        return []

    def wait(self, reqs: list) -> None:
        pass


def _cfg(**kw) -> TrainConfig:
    base = dict(hidden=SIZES[1:-1], epochs=4, batch_size=8, parallel="wasap", phase1_epochs=3,
                checkpoint_every=0, eval_every=1, dropout=0.0, threads=1, seed=3)
    return TrainConfig(**{**base, **kw})


def _model(seed: int = 0) -> SparseMLP:
    return SparseMLP(SIZES, epsilon=3, rng=np.random.default_rng(seed), n_threads=1)


def _server(cfg: TrainConfig, model: SparseMLP, n_per_worker: int = 64, K: int = 1):
    rng = np.random.default_rng(1)
    X_test = rng.standard_normal((20, SIZES[0])).astype(np.float32)
    y_test = rng.integers(0, SIZES[-1], 20).astype(np.int32)
    t = FakeTransport()
    ps = ParameterServer(cfg, t, model, RandomStreams(cfg.seed), TrainState(), X_test, y_test,
                         [n_per_worker] * K, [WorkerState() for _ in range(K)],
                         on_epoch=lambda row: None, on_checkpoint=lambda *a: None,
                         stop=StopRequest())
    return ps, t


def _grad_message(layout: Layout, n_layers: int, nnz: list[int], version: int,
                  g: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    h = Header(n_layers)
    h[Header.KIND], h[Header.VERSION], h[Header.COUNT] = codec.GRAD, version, 3
    h[Header.FLAGS] = codec.F_VALUES
    h.loss = 0.5
    h.nnz = nnz
    assert g.size == layout.n_values(nnz)
    return h.arr.copy(), [g]


def test_a_stale_gradient_is_mapped_onto_the_current_topology_before_it_is_applied():
    cfg = _cfg()
    ps, t = _server(cfg, _model())
    model = ps.model
    old = [(lay.indptr.copy(), lay.indices.copy()) for lay in model.layers]
    nnz_old = model.nnz_per_layer()

    # the end of epoch 0 at the server (end_of_epoch: evaluation, then SET):
    # a new topology version, same nnz per layer
    ps.state.batch, ps.state.epoch_loss_sum = ps.steps_per_epoch, 1.0
    ps._end_epoch_phase1(waiting=[1])
    assert ps.version == 1 and ps.state.epoch == 1
    assert model.nnz_per_layer() == nnz_old
    assert not np.array_equal(model.layers[0].indices, old[0][1])

    # worker 1's gradient, computed on version 0, arrives now
    g_old = np.random.default_rng(7).standard_normal(ps.layout.n_values(nnz_old)) \
        .astype(np.float32)
    t.inbox.append((1, *_grad_message(ps.layout, model.n_layers, nnz_old, 0, g_old)))

    # expected: every layer's gradient mapped by the NumPy twin, then the momentum step
    expected = copy.deepcopy(model)
    w, b, _ = ps.layout.split(g_old, nnz_old)
    dropped = 0
    for li, lay in enumerate(expected.layers):
        g, kept = retain_valid_numpy(*old[li], w[li], lay.indptr, lay.indices)
        dropped += nnz_old[li] - kept
        if li == 0:  # the mapping matters: the stale entries do not line up by position
            assert not np.array_equal(g, w[li])
        lay.apply_gradient(g, b[li], cfg.lr, cfg.momentum, ps.phase1_decay,
                           nesterov=cfg.nesterov)

    assert ps._async_step() == 1
    for li, (got, want) in enumerate(zip(model.layers, expected.layers)):
        for name in ("data", "velocity", "bias", "bias_velocity"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), (li, name)
    assert ps.stats["stale_gradients"] == 1 and ps.stats["gradients"] == 1
    assert ps.stats["entries_dropped"] == dropped > 0


def test_a_current_gradient_is_applied_as_it_is():
    cfg = _cfg()
    ps, t = _server(cfg, _model())
    model = ps.model
    nnz = model.nnz_per_layer()
    g = np.random.default_rng(8).standard_normal(ps.layout.n_values(nnz)).astype(np.float32)
    t.inbox.append((1, *_grad_message(ps.layout, model.n_layers, nnz, 0, g)))
    expected = copy.deepcopy(model)
    w, b, _ = ps.layout.split(g, nnz)
    for li, lay in enumerate(expected.layers):
        lay.apply_gradient(w[li], b[li], cfg.lr, cfg.momentum, ps.phase1_decay,
                           nesterov=cfg.nesterov)
    ps._async_step()
    assert ps.stats["stale_gradients"] == 0 and ps.stats["entries_dropped"] == 0
    for got, want in zip(model.layers, expected.layers):
        assert np.array_equal(got.data, want.data) and np.array_equal(got.bias, want.bias)


def _worker(n: int, B: int, seed: int) -> Worker:
    cfg = _cfg(batch_size=B)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((n, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], n).astype(np.int32)
    w = Worker(cfg, FakeTransport(), _model(), X, y, index=0, stop=StopRequest())
    h = Header(w.model.n_layers)  # the START position of a new run
    h.set_rng(Header.RNG_SHUFFLE, codec.pack_pcg64(np.random.default_rng(seed)))
    w.restore_position(h)
    return w


@pytest.mark.parametrize("phase", [1, 2])
def test_a_worker_draws_a_new_order_every_pass_over_its_partition(phase):
    """Phase 1 starts each pass inside next_batch, phase 2 with new_pass();
    both draw pass after pass from one stream, as the sequential trainer
    draws epoch after epoch."""
    n, B, passes = 40, 8, 4
    w = _worker(n, B, seed=11)
    ref = np.random.default_rng(11)
    orders = []
    for p in range(passes):
        if phase == 2:
            w.new_pass()
        got = []
        for _ in range(w.batches_per_pass):
            idx = w.next_batch()
            assert np.array_equal(w.xb, w.X[idx].T)  # the batch gathered feature-major
            got.append(idx.copy())
            if len(got) == 1:  # the stream saved with this pass (checkpoints) replays it
                replay = codec.generator_from(w.epoch_words).permutation(n)
        order = np.concatenate(got)
        assert np.array_equal(np.sort(order), np.arange(n))  # every sample once per pass
        assert np.array_equal(order, ref.permutation(n)), f"pass {p}"
        assert np.array_equal(order, replay)
        orders.append(order)
    assert len({tuple(o) for o in orders}) == passes
