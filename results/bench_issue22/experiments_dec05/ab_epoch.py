import sys, json, time
tree, shape, threads, frac = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sys.path.insert(0, tree + "/bench"); sys.path.insert(0, tree)
import bench_epoch
tr = bench_epoch.make_trainer(shape, threads, frac)
res = []
for e in range(4):
    bench_epoch.fresh_epoch(tr)
    _, _, s = tr.train_epoch()
    res.append(s / tr.n_batches * 1e6)
print(json.dumps({"tree": tree, "shape": shape, "threads": threads, "us_per_batch_best": round(min(res[1:]), 1), "all": [round(x, 1) for x in res]}))
