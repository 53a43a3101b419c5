"""Call the output layer's backward pass twice per batch (the second on lines
the first just wrote) and compare the two calls' durations in the timeline."""
import sys, numpy as np
sys.path.insert(0, "bench")
import bench_epoch, bench_timeline
from sparse_mlp import kernels, layers
shape = sys.argv[1]; t = int(sys.argv[2]); mode = sys.argv[3]
tr = bench_epoch.make_trainer(shape, t, 0.25)
out = tr.model.layers[-1]
orig = layers.SparseLayer.backward_update
def twice(self, *a, **k):
    if self is out:
        if mode == "twice":
            orig(self, *a, **k)
        elif mode == "touch0":  # main thread writes G first
            a[2].fill(0.0)
    return orig(self, *a, **k)
layers.SparseLayer.backward_update = twice
bench_epoch.fresh_epoch(tr); tr.train_epoch()
res = []
for _ in range(4):
    rec, s = bench_timeline.record_epoch(tr)
    sel = (rec["kind"] == list(kernels.spmm.TIMELINE_KINDS).index("backward_update")) & (rec["n_out"] == out.n_out)
    d = (rec["t_done"][sel] - rec["t_call"][sel]) / 1e3
    if mode == "twice":
        res.append((s / tr.n_batches * 1e6, np.median(d[0::2]), np.median(d[1::2])))
    else:
        res.append((s / tr.n_batches * 1e6, np.median(d)))
for r in res: print(mode, t, " ".join(f"{x:7.1f}" for x in r))
