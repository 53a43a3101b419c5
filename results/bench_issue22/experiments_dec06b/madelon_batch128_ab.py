# Madelon's network (500-400-100-400-2, eps 10) at batch 128 on two threads, epochs
# alternating in one process: each backward pass that SMLP_G_ROW_WORK newly splits (its
# nnz * B under min_parallel_work, its count with the input rows over it) forced back onto
# one thread (the serial build: the rule before 657417f), or as the kernels decide now.
# A second argument "busy": with a busy Python process pinned to CPU 1 meanwhile.
import sys, json, statistics, subprocess
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
from sparse_mlp import kernels, layers
bench_epoch.SHAPES["madelon"] = ([500, 400, 100, 400, 2], 10, 2000, "normal")
rounds = int(sys.argv[1])
busy = None
if sys.argv[2:] == ["busy"]:
    busy = subprocess.Popen([sys.executable, "-c",
                             "import os\nos.sched_setaffinity(0, {1})\nwhile True: pass"])
tr = bench_epoch.make_trainer("madelon", 2, 1.0)
B = 128
newly = [lay for lay in tr.model.layers[1:]
         if lay.nnz * B < kernels.min_parallel_work()
         <= (lay.nnz + kernels.spmm.G_ROW_WORK * lay.n_in) * B]
print("layers newly split:", [(lay.n_in, lay.n_out, lay.nnz) for lay in newly])
orig_b = layers.SparseLayer.backward_update
def old_rule(self, *a, **k):
    if self not in newly:
        return orig_b(self, *a, **k)
    layers.spmm_for = lambda n, work=None: kernels.spmm_serial
    try:
        return orig_b(self, *a, **k)
    finally:
        layers.spmm_for = kernels.spmm_for
us = {"old rule": [], "now": []}
try:
    for r in range(rounds):
        for mode in (("old rule", "now") if r % 2 == 0 else ("now", "old rule")):
            layers.SparseLayer.backward_update = old_rule if mode == "old rule" else orig_b
            bench_epoch.fresh_epoch(tr)
            _, _, s = tr.train_epoch()
            us[mode].append(round(s / tr.n_batches * 1e6, 1))
finally:
    layers.SparseLayer.backward_update = orig_b
    if busy is not None:
        busy.kill()
wins = sum(a < b for a, b in zip(us["now"], us["old rule"]))
print(json.dumps(us), f"now faster in {wins} of {rounds}; medians",
      statistics.median(us["old rule"]), statistics.median(us["now"]))
