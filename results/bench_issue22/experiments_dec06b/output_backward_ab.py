# Trainer epochs on 2 threads, alternating in one process: the output layer's backward
# pass on one thread (forced into the serial build: the rule before SMLP_G_ROW_WORK) or
# as the kernels decide now (SMLP_G_ROW_WORK: split between the two threads)
import sys, json, statistics
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
from sparse_mlp import kernels, layers
shape, frac, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
tr = bench_epoch.make_trainer(shape, 2, frac)
last = tr.model.layers[-1]
orig_b = layers.SparseLayer.backward_update
def serial(self, *a, **k):
    if self is not last:
        return orig_b(self, *a, **k)
    layers.spmm_for = lambda n, work=None: kernels.spmm_serial
    try:
        return orig_b(self, *a, **k)
    finally:
        layers.spmm_for = kernels.spmm_for
us = {"one thread": [], "two threads": []}
for r in range(rounds):
    for mode in (("one thread", "two threads") if r % 2 == 0 else ("two threads", "one thread")):
        layers.SparseLayer.backward_update = serial if mode == "one thread" else orig_b
        bench_epoch.fresh_epoch(tr)
        _, _, s = tr.train_epoch()
        us[mode].append(round(s / tr.n_batches * 1e6, 1))
layers.SparseLayer.backward_update = orig_b
wins = sum(a < b for a, b in zip(us["two threads"], us["one thread"]))
print(shape, json.dumps(us), f"two threads faster in {wins} of {rounds};",
      "medians", statistics.median(us["one thread"]), statistics.median(us["two threads"]))
