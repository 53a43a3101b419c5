# Trainer epochs on 2 threads, the output layer's calls on one thread (default) or on
# both (its forward and backward forced into the OpenMP build, whatever their work),
# alternating in one process; a fourth argument "backward": only its backward pass forced
# (experiments_dec06b)
import sys, json
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
from sparse_mlp import kernels, layers
shape, frac, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
backward_only = sys.argv[4:] == ["backward"]
tr = bench_epoch.make_trainer(shape, 2, frac)
last = tr.model.layers[-1]
orig_f, orig_b = layers.SparseLayer.forward, layers.SparseLayer.backward_update
def forced(orig):
    def w(self, *a, **k):
        if self is not last:
            return orig(self, *a, **k)
        saved = kernels.spmm.min_parallel_work()
        layers.spmm_for = lambda n, work=None: kernels.spmm
        kernels.spmm.min_parallel_work(0)
        try:
            return orig(self, *a, **k)
        finally:
            kernels.spmm.min_parallel_work(saved)
            layers.spmm_for = kernels.spmm_for
    return w
us = {"serial": [], "parallel": []}
for r in range(rounds):
    for mode in (("serial", "parallel") if r % 2 == 0 else ("parallel", "serial")):
        layers.SparseLayer.forward = orig_f if mode == "serial" or backward_only else forced(orig_f)
        layers.SparseLayer.backward_update = orig_b if mode == "serial" else forced(orig_b)
        bench_epoch.fresh_epoch(tr)
        _, _, s = tr.train_epoch()
        us[mode].append(round(s / tr.n_batches * 1e6, 1))
w = sum(p < s for p, s in zip(us["parallel"], us["serial"]))
print(shape, json.dumps(us), "parallel faster in", w, "of", rounds)
