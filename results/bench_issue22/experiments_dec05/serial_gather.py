import sys, json
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
import sparse_mlp.training as T
mode = sys.argv[1]; shape = sys.argv[2]
if mode == "serial":
    orig = T.gather_batch
    T.gather_batch = lambda *a, **k: orig(*a, **{**k, "n_threads": 1})
tr = bench_epoch.make_trainer(shape, 2, 0.25)
res = []
for e in range(4):
    bench_epoch.fresh_epoch(tr); _, _, s = tr.train_epoch(); res.append(s / tr.n_batches * 1e6)
print(mode, shape, round(min(res[1:]), 1), [round(x) for x in res])
