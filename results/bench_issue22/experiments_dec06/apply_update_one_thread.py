import sys, json, time
ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(0, str(ROOT))
import bench_epoch
from sparse_mlp import layers
shape, threads, frac = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
orig = layers.SparseLayer.apply_gradient
def one(self, *a, n_threads=1, **k):
    return orig(self, *a, n_threads=1, **k)
tr = bench_epoch.make_trainer(shape, threads, frac)
res = {"par": [], "one": []}
for r in range(4):
    for mode in ("par", "one"):
        layers.SparseLayer.apply_gradient = orig if mode == "par" else one
        bench_epoch.fresh_epoch(tr)
        _, _, s = tr.train_epoch()
        res[mode].append(round(s / tr.n_batches * 1e6, 1))
print(shape, threads, json.dumps(res))
