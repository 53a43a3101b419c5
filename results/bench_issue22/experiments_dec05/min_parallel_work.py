import sys, time
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
from sparse_mlp.kernels import spmm
shape = sys.argv[1] if len(sys.argv) > 1 else "higgs"
tr = bench_epoch.make_trainer(shape, 2, 0.25)
default = spmm.min_parallel_work()
vals = [default, 1 << 16, 1 << 17, 1 << 18]
res = {v: [] for v in vals}
for rnd in range(4):
    for v in vals:
        spmm.min_parallel_work(v)
        bench_epoch.fresh_epoch(tr)
        _, _, s = tr.train_epoch()
        res[v].append(s / tr.n_batches * 1e6)
spmm.min_parallel_work(default)
for v in vals:
    print(shape, "min_parallel_work", v, "us/batch best %.1f  all %s" % (min(res[v]), [round(x) for x in res[v]]))
