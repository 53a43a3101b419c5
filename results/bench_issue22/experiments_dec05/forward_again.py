# A Higgs-shaped epoch with each forward call timed, then repeated at once on the same inputs
# (python forward_again.py higgs 2 0.1, from the checkout root; BENCHMARKS.md §2, "Latest").
import sys, time, collections
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
from sparse_mlp import kernels
shape, threads, frac = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
tot = collections.defaultdict(float); cnt = collections.Counter()
def wrap(mod, name, tag):
    f = getattr(mod, name)
    def w(*a, **k):
        shp = "x".join(str(x.shape[0]) for x in a[:6] if hasattr(x, "ndim") and x.ndim == 2)
        key = f"{name}:{tag}:{shp}"
        t = time.perf_counter(); r = f(*a, **k); t1 = time.perf_counter()
        tot[key] += t1 - t; cnt[key] += 1
        if name == "forward":  # again, same inputs (inputs now in this call's caches)
            t = time.perf_counter(); f(*a, **k); tot[key + " again"] += time.perf_counter() - t
        return r
    setattr(mod, name, w)
for mod, tag in ((kernels.spmm, "omp"), (kernels.spmm_serial, "ser")):
    wrap(mod, "forward", tag)
tr = bench_epoch.make_trainer(shape, threads, frac)
for e in range(3):
    tot.clear(); cnt.clear()
    bench_epoch.fresh_epoch(tr)
    _, _, s = tr.train_epoch()
nb = tr.n_batches
for k in sorted(tot):
    print(f"  {k:34s} {tot[k]/nb*1e6:8.1f} us/batch")
