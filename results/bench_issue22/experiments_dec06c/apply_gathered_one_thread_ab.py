# python results/bench_issue22/experiments_dec06c/apply_gathered_one_thread_ab.py SHAPE ROUNDS FRACTION
# the gathered momentum pass (apply_update with an index) on two threads (APPLY_INDEX_WORK 64,
# the rule now) or on one (1), alternating epochs on one two-thread trainer; us a batch
import sys, json, statistics
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
from sparse_mlp import kernels
shape, rounds, frac = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t = int(sys.argv[4]) if len(sys.argv) > 4 else 2
tr = bench_epoch.make_trainer(shape, t, frac)
bench_epoch.fresh_epoch(tr); tr.train_epoch()
us = {64: [], 1: []}
for r in range(rounds):
    for v in ((64, 1) if r % 2 == 0 else (1, 64)):
        kernels.spmm.APPLY_INDEX_WORK = v
        bench_epoch.fresh_epoch(tr); _, _, s = tr.train_epoch()
        us[v].append(round(s / tr.n_batches * 1e6, 1))
kernels.spmm.APPLY_INDEX_WORK = 64
wins = sum(a < b for a, b in zip(us[1], us[64]))
print(json.dumps({"shape": shape, "threads": t, "two_threads_us": us[64], "one_thread_us": us[1],
                  "median_one_over_two": round(statistics.median(us[1]) / statistics.median(us[64]), 4),
                  "pairs_one_faster": f"{wins} of {rounds}"}))
