"""A whole training step with the batch split into two halves of 64 samples,
one half per thread, against the engine's step (rows split between threads).

Each half runs the one-thread kernels over all layers: forward (dropout with
the half's column offset, so that each sample keeps its mask), loss, and the
backward pass writing the half's weight gradients (its partial sums over 64
samples).  Then the two partial gradients are added, half 0 + half 1, and the
momentum update applied once (on the model's two threads).  The two halves
run in two Python threads (the kernels release the GIL; the Python between
calls takes turns on it), or one after the other on one thread: the same
arithmetic either way, so the same weights bit for bit.  Against the full
batch's single sum over 128 samples, the weights differ by float rounding.

    python batch_halves_step.py SHAPE STEPS ROUNDS

Prints, us a step (best round's mean): the engine's train_step on 1 and 2
threads (SparseMLP, the trainer's step), and the halves on 1 and 2 threads;
and checks that the halves give the same weights on 1 and 2 threads and
weights within float rounding of the full batch's.
"""
import json
import sys
import threading
import time

import numpy as np

sys.path.insert(0, "results/bench_issue22/experiments_dec06f")
from halves import DECAY, LR, MU, Half, Net, half_pass, max_rel_diff  # noqa: E402

shape, STEPS, ROUNDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
net = Net(shape)


def combine_and_update(m, grads, nt):
    """g = half 0 + half 1 (into half 0's arrays), then the update once."""
    for li, L in enumerate(m.layers):
        (g0, b0), (g1, b1) = grads[0][li], grads[1][li]
        np.add(g0, g1, out=g0)
        np.add(b0, b1, out=b0)
        L.apply_gradient(g0, b0, LR, MU, DECAY, n_threads=nt, transposed=li > 0)


class Worker:
    """A second Python thread that runs half 1 of each step."""

    def __init__(self):
        self.go, self.done = threading.Semaphore(0), threading.Semaphore(0)
        self.job = None
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while True:
            self.go.acquire()
            if self.job is None:
                return
            self.job()
            self.done.release()

    def stop(self):
        self.job = None
        self.go.release()
        self.t.join()


def halves_step(m, halves, grads, keys, worker):
    if worker is None:
        half_pass(m, halves[0], keys, grads[0], True)
        half_pass(m, halves[1], keys, grads[1], True)
    else:
        worker.job = lambda: half_pass(m, halves[1], keys, grads[1], True)
        worker.go.release()
        half_pass(m, halves[0], keys, grads[0], True)
        worker.done.acquire()
    combine_and_update(m, grads, m.n_threads)


def run_halves(nt, steps, warm=30):
    m = net.model(nt)
    keys = m.dropout_keys(0, 0)
    halves = [Half(net, 0), Half(net, 1)]
    grads = [[(np.empty(L.nnz, np.float32), np.empty(L.n_out, np.float32)) for L in m.layers]
             for _ in range(2)]
    worker = Worker() if nt == 2 else None
    for _ in range(warm):
        halves_step(m, halves, grads, keys, worker)
    t = time.perf_counter()
    for _ in range(steps):
        halves_step(m, halves, grads, keys, worker)
    us = (time.perf_counter() - t) / max(steps, 1) * 1e6
    if worker is not None:
        worker.stop()
    return us, m


# the same bits on 1 and 2 threads; within rounding of the full batch's step
_, m1 = run_halves(1, 0, warm=3)
_, m2 = run_halves(2, 0, warm=3)
mf = net.model(1)
keys = mf.dropout_keys(0, 0)
for _ in range(3):
    mf.train_step(net.X, net.y, LR, MU, DECAY, keys)
same = all(np.array_equal(a.data, b.data) and np.array_equal(a.bias, b.bias)
           for a, b in zip(m1.layers, m2.layers))

out = {"shape": shape, "steps": STEPS, "rounds": ROUNDS, "halves_same_bits_1T_2T": same,
       "halves_vs_full_batch_max_rel_diff_after_3_steps": max_rel_diff(m1.layers, mf.layers),
       "engine_1T": [], "engine_2T": [], "halves_1T": [], "halves_2T": []}
for r in range(ROUNDS):
    out["engine_1T"].append(round(net.engine_us(1, STEPS), 1))
    out["engine_2T"].append(round(net.engine_us(2, STEPS), 1))
    out["halves_1T"].append(round(run_halves(1, STEPS)[0], 1))
    out["halves_2T"].append(round(run_halves(2, STEPS)[0], 1))
best = {k: min(out[k]) for k in ("engine_1T", "engine_2T", "halves_1T", "halves_2T")}
out["best"] = best
out["engine_2T_over_1T"] = round(best["engine_1T"] / best["engine_2T"], 3)
out["halves_2T_over_engine_1T"] = round(best["engine_1T"] / best["halves_2T"], 3)
out["halves_2T_over_halves_1T"] = round(best["halves_1T"] / best["halves_2T"], 3)
print(json.dumps(out))
