"""Each kernel call of a training batch in order: the gap from the previous
call's end to its start, and its own time (the timeline; median and mean over
the quietest of three recorded epochs).  python gaps_between_calls.py SHAPE THREADS
[FRACTION]"""
import sys, numpy as np
sys.path.insert(0, "bench")
import bench_epoch, bench_timeline
from sparse_mlp import kernels
shape = sys.argv[1]; t = int(sys.argv[2])
tr = bench_epoch.make_trainer(shape, t, float(sys.argv[3]) if len(sys.argv) > 3 else 0.25)
bench_epoch.fresh_epoch(tr); tr.train_epoch()
best = None
for _ in range(3):
    rec, s = bench_timeline.record_epoch(tr)
    if best is None or s < best[1]: best = (rec, s)
rec, s = best
nb = tr.n_batches
kinds = kernels.spmm.TIMELINE_KINDS
n = rec["kind"].size
per = n // nb
print("calls", n, "batches", nb, "per batch", per, "batch us", s/nb*1e6)
# align per batch: calls per batch constant
tc = rec["t_call"][: per*nb].reshape(nb, per); td = rec["t_done"][: per*nb].reshape(nb, per)
gap_before = np.empty((nb, per))
gap_before[:, 0] = np.nan
gap_before[1:, 0] = (tc[1:, 0] - td[:-1, -1]) / 1e3
gap_before[:, 1:] = (tc[:, 1:] - td[:, :-1]) / 1e3
dur = (td - tc) / 1e3
for k in range(per):
    print(f"{k:2d} {kinds[rec['kind'][k]]:16s} {rec['n_in'][k]:6d}x{rec['n_out'][k]:6d} t{rec['threads'][k]}  gap-before med {np.nanmedian(gap_before[:,k]):6.1f} mean {np.nanmean(gap_before[:,k]):6.1f}  dur med {np.median(dur[:,k]):7.1f} mean {dur[:,k].mean():7.1f}")
