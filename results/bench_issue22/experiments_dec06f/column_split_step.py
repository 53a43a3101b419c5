"""A whole training step with the batch's columns split between two
processes, update included: a bound on what splitting the batch (instead of
the layers' rows) between two cores could give, with the reduction and the
shared weights it costs.

Two forked processes share the layers' weights, velocities and biases and
two partial-gradient arrays (multiprocessing shared memory).  Each step,
process h (h = 0, 1) runs the one-thread kernels on its 64 columns of the
batch (its own activations, deltas and bits): forward with the half's dropout
columns, loss, backward writing its partial weight gradients (sums over its
64 samples, in the weights' own order).  A barrier; then each process
updates its half of every layer's weights with the sum of the two partials
(half 0 + half 1, read in order, half of them written by the other core); a
barrier.  The barriers spin on shared flags (no system call).  The next
step's forward passes read weights that the other process updated.

Against it, in the same run: the engine's train_step (rows split between
threads) on 1 and 2 threads.  The halves' arithmetic is that of a batch
split into two micro-batches (the same weights bit for bit on 1 and 2
processes; within float rounding of the full batch's step).

    python column_split_step.py SHAPE STEPS ROUNDS
"""
import json
import multiprocessing as mp
import sys
import time

import numpy as np

sys.path.insert(0, "results/bench_issue22/experiments_dec06f")
from halves import DECAY, LR, MU, Half, Net, half_pass, max_rel_diff  # noqa: E402

from sparse_mlp import _spmm_serial as serial  # noqa: E402

shape, STEPS, ROUNDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
net = Net(shape)
ctx = mp.get_context("fork")


def shared(a):
    """A copy of float32 array a in shared memory."""
    raw = ctx.RawArray("f", max(a.size, 1))
    s = np.frombuffer(raw, np.float32, a.size)
    s[...] = a
    return s


class Split:
    """The shared state of the two halves."""

    def __init__(self):
        self.m = m = net.model(1)
        for L in m.layers:  # weights, velocities and biases in shared memory
            L.data, L.velocity = shared(L.data), shared(L.velocity)
            L.bias, L.bias_velocity = shared(L.bias), shared(L.bias_velocity)
        self.P = [[(shared(np.zeros(L.nnz, np.float32)), shared(np.zeros(L.n_out, np.float32)))
                   for L in m.layers] for _ in range(2)]
        self.flags = np.frombuffer(ctx.RawArray("q", 16), np.int64)  # one line each
        self.flags[...] = 0
        self.times = np.frombuffer(ctx.RawArray("d", 4), np.float64)


def barrier(flags, h, gen):
    flags[8 * h] = gen
    other = 8 * (1 - h)
    while flags[other] < gen:
        pass


def update(sp, h):
    """Half h of every layer's weights and biases: half 0 + half 1, then the
    update (h None: all of them)."""
    for li, lay in enumerate(sp.m.layers):
        (g0, b0), (g1, b1) = sp.P[0][li], sp.P[1][li]
        for n, w, v, p0, p1 in ((lay.nnz, lay.data, lay.velocity, g0, g1),
                                (lay.n_out, lay.bias, lay.bias_velocity, b0, b1)):
            a, b = (0, n) if h is None else (h * n // 2, (h + 1) * n // 2)
            serial.apply_update(w[a:b], v[a:b], np.add(p0[a:b], p1[a:b]), LR, MU, DECAY,
                                False, n_threads=1)


def step(sp, h, hb, keys, gen):
    half_pass(sp.m, hb, keys, sp.P[h], False)
    barrier(sp.flags, h, gen)
    update(sp, h)
    barrier(sp.flags, h, gen + 1)


def worker(sp, h, steps, warm):
    hb = Half(net, h)
    keys = sp.m.dropout_keys(0, 0)
    gen = 1
    for _ in range(warm):
        step(sp, h, hb, keys, gen)
        gen += 2
    t = time.perf_counter()
    for _ in range(steps):
        step(sp, h, hb, keys, gen)
        gen += 2
    sp.times[2 * h], sp.times[2 * h + 1] = t, time.perf_counter()


def run_split(steps, warm=30):
    sp = Split()
    ps = [ctx.Process(target=worker, args=(sp, h, steps, warm)) for h in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    t = sp.times
    return (max(t[1], t[3]) - min(t[0], t[2])) / max(steps, 1) * 1e6, sp


def sequential_halves(n_steps):
    """The same arithmetic on one thread: both halves, then the update."""
    sp = Split()
    hbs = [Half(net, 0), Half(net, 1)]
    keys = sp.m.dropout_keys(0, 0)
    for _ in range(n_steps):
        for h in range(2):
            half_pass(sp.m, hbs[h], keys, sp.P[h], False)
        update(sp, None)
    return sp


# check: the split's weights equal those of the same halves in sequence, and
# are within rounding of the full batch's
_, sp2 = run_split(3, warm=0)
sp1 = sequential_halves(3)
full = net.model(1)
keys = full.dropout_keys(0, 0)
for _ in range(3):
    full.train_step(net.X, net.y, LR, MU, DECAY, keys)
same = all(np.array_equal(a.data, b.data) and np.array_equal(a.bias, b.bias)
           for a, b in zip(sp1.m.layers, sp2.m.layers))

out = {"shape": shape, "steps": STEPS, "rounds": ROUNDS,
       "split_same_bits_as_sequential_halves": same,
       "split_vs_full_batch_max_rel_diff_after_3_steps": max_rel_diff(sp2.m.layers,
                                                                      full.layers),
       "engine_1T": [], "engine_2T": [], "split_2p": []}
for r in range(ROUNDS):
    out["engine_1T"].append(round(net.engine_us(1, STEPS), 1))
    out["engine_2T"].append(round(net.engine_us(2, STEPS), 1))
    out["split_2p"].append(round(run_split(STEPS)[0], 1))
best = {k: min(out[k]) for k in ("engine_1T", "engine_2T", "split_2p")}
out["best"] = best
out["engine_2T_speedup"] = round(best["engine_1T"] / best["engine_2T"], 3)
out["split_2p_speedup"] = round(best["engine_1T"] / best["split_2p"], 3)
print(json.dumps(out))
