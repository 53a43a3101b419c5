"""How far the two-thread speed-up is from 2x because threads split a layer's
ROWS: an emulation of the other split, the batch's COLUMNS.

The engine splits every layer's rows between threads, so the next layer,
which reads its input rows at random, reads half of them from the other
core's cache (and the backward pass does the same with the deltas).  If each
thread instead took half the batch's columns (samples) of every layer, it
would read and write only its own halves of the activation and delta rows;
the weights would be read by both (read-only), and the weight gradient would
come in two partial sums (one per half) to be added before the update.

This script runs a benchmark network's training sequence without the update:
the forward pass of every layer, the loss, and the backward pass with the
gradients written out (the split update's gradient pass; the update pass that
adds the partial sums is NOT emulated and is extra for the column split):
  rows_1T   one thread, batch 128 (the engine's kernels)
  rows_2T   two threads, batch 128: the engine's row split
  cols_1T   one thread, batch 64 (half a batch: what each thread does below)
  cols_2x   two Python threads, each the one-thread kernels on its own 64
            columns (own activation, delta and gradient arrays; the same
            layers), no synchronisation between them; their Python between
            the calls takes turns on the GIL
  cols_2p   the same in two processes (forked: each its own copy of the
            layers, as each core's cache would hold its own copy of the
            weights both read), no GIL between them
cols_2x and cols_2p bound the column split: no barriers and no reduction.
Microseconds per sequence, the best of each round's mean.

    python column_split_emulation.py SHAPE ITERATIONS ROUNDS
"""
import json
import multiprocessing as mp
import sys
import threading
import time

import numpy as np

sys.path.insert(0, ".")
sys.path.insert(0, "bench")
from bench_epoch import SHAPES  # noqa: E402

from sparse_mlp import _activation_serial as act_serial  # noqa: E402
from sparse_mlp import _spmm  # noqa: E402
from sparse_mlp.activations import make_activation  # noqa: E402
from sparse_mlp.kernels import aligned_empty  # noqa: E402
from sparse_mlp.layers import SparseLayer  # noqa: E402

shape, N, ROUNDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sizes, eps, _, init = SHAPES[shape]
rng = np.random.default_rng(0)
layers = [SparseLayer.erdos_renyi(a, b, eps, init, rng) for a, b in zip(sizes[:-1], sizes[1:])]
acts = [make_activation("relu", h, n, None) for h, n in enumerate(sizes[1:-1])]


class Batch:
    """One thread's arrays for a batch of B columns."""

    def __init__(self, B):
        def m(n):
            a = aligned_empty((n, B))
            a[...] = rng.standard_normal((n, B))
            return a
        self.X = m(sizes[0])
        self.Z = [m(n) for n in sizes[1:]]          # pre-activations, then deltas
        self.A = [np.abs(m(n)) for n in sizes[1:-1]]
        self.bits = [np.zeros((n, _spmm.epilogue_bits_words(B)), np.uint16) for n in sizes[1:-1]]
        self.kept = [False] * len(self.A)
        self.g = [(np.empty(L.nnz, np.float32), np.empty(L.n_out, np.float32)) for L in layers]
        self.y = rng.integers(0, sizes[-1], B).astype(np.int32)


def sequence(b, nt):
    x = b.X
    for h, L in enumerate(layers[:-1]):  # hidden layers: activation, dropout, kept bits
        b.kept[h] = L.forward(x, b.Z[h], b.A[h], act=acts[h], dropout=0.3, key=h + 1,
                              n_threads=nt, bits=b.bits[h], keep_z=False)
        x = b.A[h]
    layers[-1].forward(x, b.Z[-1], n_threads=nt)
    act_serial.softmax_xent(b.Z[-1], b.y, True, None, n_threads=1)
    D = b.Z[-1]
    for li in range(len(layers) - 1, 0, -1):
        h = li - 1
        layers[li].backward_update(b.A[h], D, b.Z[h], 0.01, 0.9, 0.0, Z_in=b.Z[h],
                                   act_in=acts[h], dropout=0.3, key=h + 1, scale=1 / 128,
                                   grads=b.g[li], n_threads=nt,
                                   bits=b.bits[h] if b.kept[h] else None, grads_t=True)
        D = b.Z[h]
    layers[0].gradient(b.X, D, *b.g[0], scale=1 / 128, n_threads=nt)


def one(b, nt):
    for _ in range(30):
        sequence(b, nt)
    t = time.perf_counter()
    for _ in range(N):
        sequence(b, nt)
    return (time.perf_counter() - t) / N * 1e6


def pair():
    bs = [Batch(64), Batch(64)]
    for b in bs:
        for _ in range(30):
            sequence(b, 1)
    bar = threading.Barrier(2)

    def work(k):
        bar.wait()
        for _ in range(N):
            sequence(bs[k], 1)
    ths = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    t = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return (time.perf_counter() - t) / N * 1e6


def _proc(k, bar, q):
    b = Batch(64)
    for _ in range(30):
        sequence(b, 1)
    bar.wait()
    t = time.perf_counter()
    for _ in range(N):
        sequence(b, 1)
    q.put((t, time.perf_counter()))


def pair_processes():
    """Two forked processes from one barrier: the span from the first start
    to the last end (CLOCK_MONOTONIC is shared by processes)."""
    ctx = mp.get_context("fork")
    bar, q = ctx.Barrier(2), ctx.Queue()
    ps = [ctx.Process(target=_proc, args=(k, bar, q)) for k in range(2)]
    for p in ps:
        p.start()
    spans = [q.get() for _ in ps]
    for p in ps:
        p.join()
    return (max(e for _, e in spans) - min(s for s, _ in spans)) / N * 1e6


out = {"shape": shape, "iterations": N, "rounds": ROUNDS,
       "rows_1T": [], "rows_2T": [], "cols_1T": [], "cols_2x": [], "cols_2p": []}
b128, b64 = Batch(128), Batch(64)
for r in range(ROUNDS):
    out["rows_1T"].append(round(one(b128, 1), 1))
    out["rows_2T"].append(round(one(b128, 2), 1))
    out["cols_1T"].append(round(one(b64, 1), 1))
    out["cols_2x"].append(round(pair(), 1))
    out["cols_2p"].append(round(pair_processes(), 1))
best = {k: min(out[k]) for k in ("rows_1T", "rows_2T", "cols_1T", "cols_2x", "cols_2p")}
out["best"] = best
out["speedup_rows_2T"] = round(best["rows_1T"] / best["rows_2T"], 3)
out["speedup_cols_2x"] = round(best["rows_1T"] / best["cols_2x"], 3)
out["speedup_cols_2p"] = round(best["rows_1T"] / best["cols_2p"], 3)
print(json.dumps(out))
