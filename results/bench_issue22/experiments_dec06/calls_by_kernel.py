# Every kernel call of a Trainer epoch timed by (function, shapes): us per batch, 1 vs 2 threads;
# a third argument "module": keyed by build (serial or OpenMP) too, with every array's length
# (experiments_dec06b)
import sys, time, collections
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
from sparse_mlp import kernels
shape, frac = sys.argv[1], float(sys.argv[2])
by_module = sys.argv[3:] == ["module"]
def run(threads):
    tot = collections.defaultdict(float)
    saved = []
    for mod in (kernels.spmm, kernels.spmm_serial, kernels.activation, kernels.activation_serial):
        for name in dir(mod):
            f = getattr(mod, name)
            if name.startswith("_") or not callable(f) or isinstance(f, type):
                continue
            def w(*a, _f=f, _n=name, _m=mod.__name__.split(".")[-1], **k):
                shp = "x".join(str(x.shape[0]) for x in a[:7]
                               if hasattr(x, "ndim") and (x.ndim == 2 or by_module and x.ndim))
                key = f"{_m}.{_n}:{shp}" if by_module else f"{_n}:{shp}"
                t = time.perf_counter(); r = _f(*a, **k); tot[key] += time.perf_counter() - t
                return r
            saved.append((mod, name, f)); setattr(mod, name, w)
    tr = bench_epoch.make_trainer(shape, threads, frac)
    best = None
    for e in range(4):
        tot.clear()
        bench_epoch.fresh_epoch(tr)
        _, _, s = tr.train_epoch()
        cur = ({k: v / tr.n_batches * 1e6 for k, v in tot.items()}, s / tr.n_batches * 1e6)
        if best is None or cur[1] < best[1]:
            best = cur
    for mod, name, f in saved:
        setattr(mod, name, f)
    return best
r1, r2 = run(1), run(2)
print(f"{shape}: whole batch 1T {r1[1]:.1f} us, 2T {r2[1]:.1f} us ({r1[1]/r2[1]:.2f}x)")
keys = sorted(set(r1[0]) | set(r2[0]), key=lambda k: -r1[0].get(k, 0))
for k in keys:
    a, b = r1[0].get(k, 0), r2[0].get(k, 0)
    print(f"  {k:48s} 1T {a:7.1f}  2T {b:7.1f}  {a/b if b else 0:5.2f}x")
print(f"  {'(sum of calls)':48s} 1T {sum(r1[0].values()):7.1f}  2T {sum(r2[0].values()):7.1f}")
