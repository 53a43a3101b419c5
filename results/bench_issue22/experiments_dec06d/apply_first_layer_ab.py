"""The first layer's (plain, in-order) momentum update forced onto one thread
(the serial build) or onto two, in alternating two-thread epochs; the
timeline's per-call median and the batch time.  (The first run, before commit
df96777, let the work rule of the time pick one thread for "one".)
python apply_first_layer_ab.py SHAPE FRACTION ROUNDS"""
import sys, json
import numpy as np
sys.path.insert(0, "bench")
import bench_epoch, bench_timeline
from sparse_mlp import kernels, layers
shape, frac, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
tr = bench_epoch.make_trainer(shape, 2, frac)
first = tr.model.layers[0]
orig = layers.SparseLayer.apply_gradient
force = {"on": False}
def patched(self, g, bg, *a, **k):
    if self is first and not force["on"] and not k.get("transposed"):
        kernels.spmm_serial.apply_update(self.data, self.velocity, g, a[0], a[1], a[2], k.get("nesterov", False), n_threads=1)
        kernels.spmm_for(1).apply_update(self.bias, self.bias_velocity, bg, a[0], a[1], a[2], k.get("nesterov", False), n_threads=1)
        return
    if self is first and force["on"] and not k.get("transposed"):
        w = kernels.spmm.min_parallel_work()
        kernels.spmm.min_parallel_work(0)
        try:
            kernels.spmm.apply_update(self.data, self.velocity, g, a[0], a[1], a[2], k.get("nesterov", False), n_threads=2)
        finally:
            kernels.spmm.min_parallel_work(w)
        kernels.spmm_for(1).apply_update(self.bias, self.bias_velocity, bg, a[0], a[1], a[2], k.get("nesterov", False), n_threads=1)
        return
    return orig(self, g, bg, *a, **k)
layers.SparseLayer.apply_gradient = patched
bench_epoch.fresh_epoch(tr); tr.train_epoch()
kinds = list(kernels.spmm.TIMELINE_KINDS)
res = {"one": ([], []), "two": ([], [])}
for r in range(rounds):
    for name in (("one", "two") if r % 2 == 0 else ("two", "one")):
        force["on"] = name == "two"
        rec, s = bench_timeline.record_epoch(tr)
        sel = (rec["kind"] == kinds.index("apply_update")) & (rec["n_in"] == first.nnz)
        d = (rec["t_done"][sel] - rec["t_call"][sel]) / 1e3
        res[name][0].append(round(s / tr.n_batches * 1e6, 1)); res[name][1].append(round(float(np.median(d)), 1))
wins = sum(a < b for a, b in zip(res["two"][0], res["one"][0]))
print(json.dumps({"shape": shape, "nnz": first.nnz, "call_us_one": res["one"][1], "call_us_two": res["two"][1],
                  "batch_us_one": res["one"][0], "batch_us_two": res["two"][0], "two_faster_pairs": f"{wins} of {rounds}"}))
