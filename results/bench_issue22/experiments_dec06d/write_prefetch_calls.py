"""Per-call medians (us) of each two-thread kernel call under write_prefetch
settings, recorded with the timeline in alternating epochs."""
import sys, json
import numpy as np
sys.path.insert(0, "bench")
import bench_epoch, bench_timeline
from sparse_mlp import kernels
shape, t, frac, rounds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
vals = [int(v) for v in sys.argv[5].split(",")]
tr = bench_epoch.make_trainer(shape, t, frac)
bench_epoch.fresh_epoch(tr); tr.train_epoch()
kinds = kernels.spmm.TIMELINE_KINDS
durs = {v: {} for v in vals}
batch = {v: [] for v in vals}
for r in range(rounds):
    for v in (vals if r % 2 == 0 else vals[::-1]):
        kernels.spmm.write_prefetch(v)
        rec, s = bench_timeline.record_epoch(tr)
        batch[v].append(round(s / tr.n_batches * 1e6, 1))
        d = (rec["t_done"] - rec["t_call"]) / 1e3
        for k in set(zip(rec["kind"], rec["n_in"], rec["n_out"], rec["threads"])):
            if k[3] < 2:
                continue
            sel = (rec["kind"] == k[0]) & (rec["n_in"] == k[1]) & (rec["n_out"] == k[2]) & (rec["threads"] == k[3])
            durs[v].setdefault(f"{kinds[k[0]]} {k[1]}x{k[2]}", []).append(float(np.median(d[sel])))
print(shape, t, "batch us (median of epochs):", {v: float(np.median(batch[v])) for v in vals})
for name in sorted(durs[vals[0]]):
    print(f"  {name:28s}", "  ".join(f"{v}: {np.median(durs[v][name]):7.1f}" for v in vals))
