"""What batch_halves_step.py and column_split_step.py share: a benchmark
network's shape, one batch of 128 samples, the engine's step timed on it,
and one half of the batch (64 columns) run through every layer with the
one-thread kernels, its weight gradients (sums over its 64 samples) written
out."""
import sys
import time

import numpy as np

sys.path.insert(0, ".")
sys.path.insert(0, "bench")
from bench_epoch import SHAPES  # noqa: E402

from sparse_mlp import _activation_serial as act_serial  # noqa: E402
from sparse_mlp import _spmm  # noqa: E402
from sparse_mlp.kernels import aligned_empty  # noqa: E402
from sparse_mlp.model import SparseMLP  # noqa: E402

B, H = 128, 64
LR, MU, DECAY = 0.01, 0.9, 2e-4


class Net:
    """A shape of bench_epoch.SHAPES and one batch for it."""

    def __init__(self, shape):
        self.sizes, self.eps, _, self.init = SHAPES[shape]
        rng = np.random.default_rng(1)
        self.X = aligned_empty((self.sizes[0], B))
        self.X[...] = rng.standard_normal((self.sizes[0], B))
        self.y = rng.integers(0, self.sizes[-1], B).astype(np.int32)

    def model(self, nt):
        return SparseMLP(self.sizes, self.eps, "relu", None, self.init, dropout=0.3,
                         rng=np.random.default_rng(0), n_threads=nt)

    def engine_us(self, nt, steps):
        """The engine's train_step on the whole batch: us a step."""
        m = self.model(nt)
        keys = m.dropout_keys(0, 0)
        for _ in range(30):
            m.train_step(self.X, self.y, LR, MU, DECAY, keys)
        t = time.perf_counter()
        for _ in range(steps):
            m.train_step(self.X, self.y, LR, MU, DECAY, keys)
        return (time.perf_counter() - t) / steps * 1e6


class Half:
    """Half h's arrays: its columns of the batch, activations, deltas, bits."""

    def __init__(self, net, h):
        sizes = net.sizes
        self.h = h
        self.X = aligned_empty((sizes[0], H))
        self.X[...] = net.X[:, h * H:(h + 1) * H]
        self.y = np.ascontiguousarray(net.y[h * H:(h + 1) * H])
        self.Z = [aligned_empty((n, H)) for n in sizes[1:]]
        self.A = [aligned_empty((n, H)) for n in sizes[1:-1]]
        self.bits = [np.zeros((n, _spmm.epilogue_bits_words(H)), np.uint16)
                     for n in sizes[1:-1]]


def half_pass(m, hb, keys, grads, grads_t):
    """Forward (dropout with the half's column offset, so that each sample
    keeps its mask), loss and backward of half hb on model m's layers; each
    layer's partial gradients into grads[li] (in the transposed index's order
    with grads_t, but the first layer's, else in the weights' own)."""
    off = hb.h * H
    L = m.layers
    kept = []
    x = hb.X
    for li in range(len(L) - 1):
        kept.append(L[li].forward(x, hb.Z[li], hb.A[li], act=m.acts[li], dropout=m.dropout,
                                  key=keys[li], b_offset=off, n_threads=1, bits=hb.bits[li],
                                  keep_z=False))
        x = hb.A[li]
    L[-1].forward(x, hb.Z[-1], n_threads=1)
    loss, _ = act_serial.softmax_xent(hb.Z[-1], hb.y, True, None, n_threads=1)
    D = hb.Z[-1]
    for li in range(len(L) - 1, 0, -1):
        k = li - 1
        L[li].backward_update(hb.A[k], D, hb.A[k], 0.0, 0.0, 0.0, Z_in=hb.Z[k],
                              act_in=m.acts[k], dropout=m.dropout, key=keys[k], b_offset=off,
                              scale=1.0 / B, grads=grads[li], n_threads=1,
                              bits=hb.bits[k] if kept[k] else None, grads_t=grads_t)
        D = hb.A[k]
    L[0].gradient(hb.X, D, *grads[0], scale=1.0 / B, n_threads=1)
    return loss


def max_rel_diff(layers, full_layers):
    """The largest weight difference, relative to the largest weight, of two
    models' layers."""
    return max(float(np.max(np.abs(a.data - f.data)) / np.max(np.abs(f.data)))
               for a, f in zip(layers, full_layers))
