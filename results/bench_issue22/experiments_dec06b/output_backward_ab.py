# Trainer epochs on 2 threads, alternating in one process: the backward passes that
# SMLP_G_ROW_WORK newly splits (their nnz * B under min_parallel_work, their count with the
# input rows over it: Higgs's output layer, Madelon's 400 x 100 layer at batch 128) forced
# back onto one thread (the serial build: the rule before 657417f), or as the kernels
# decide now.  Usage: SHAPE FRACTION ROUNDS [busy]; SHAPE also "madelon" (its network at
# batch 128); "busy": a Python busy loop pinned to CPU 1 meanwhile.
import sys, json, statistics, subprocess
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
from sparse_mlp import kernels, layers
bench_epoch.SHAPES["madelon"] = ([500, 400, 100, 400, 2], 10, 2000, "normal")
shape, frac, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
busy = None
if sys.argv[4:] == ["busy"]:
    busy = subprocess.Popen([sys.executable, "-c",
                             "import os\nos.sched_setaffinity(0, {1})\nwhile True: pass"])
tr = bench_epoch.make_trainer(shape, 2, frac)
B = 128
newly = [lay for lay in tr.model.layers[1:]
         if lay.nnz * B < kernels.min_parallel_work()
         <= kernels.spmm.backward_work(lay.nnz, lay.n_in, B)]
print("layers newly split:", [(lay.n_in, lay.n_out, lay.nnz) for lay in newly])
orig_b = layers.SparseLayer.backward_update
def serial(self, *a, **k):
    if self not in newly:
        return orig_b(self, *a, **k)
    layers.spmm_for = lambda n, work=None: kernels.spmm_serial
    try:
        return orig_b(self, *a, **k)
    finally:
        layers.spmm_for = kernels.spmm_for
us = {"one thread": [], "two threads": []}
try:
    for r in range(rounds):
        for mode in (("one thread", "two threads") if r % 2 == 0 else ("two threads", "one thread")):
            layers.SparseLayer.backward_update = serial if mode == "one thread" else orig_b
            bench_epoch.fresh_epoch(tr)
            _, _, s = tr.train_epoch()
            us[mode].append(round(s / tr.n_batches * 1e6, 1))
finally:
    layers.SparseLayer.backward_update = orig_b
    if busy is not None:
        busy.kill()
wins = sum(a < b for a, b in zip(us["two threads"], us["one thread"]))
print(shape, json.dumps(us), f"two threads faster in {wins} of {rounds};",
      "medians", statistics.median(us["one thread"]), statistics.median(us["two threads"]))
