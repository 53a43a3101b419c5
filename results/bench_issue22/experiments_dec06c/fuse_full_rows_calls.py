# The output layer's calls (its backward pass and, split, the gathered update) on two
# threads with model.FUSE_FULL_ROWS on and off, epochs alternating, the call timeline of
# the quietest epoch of each (bench/bench_timeline.py): us a batch.
#   python results/bench_issue22/experiments_dec06c/fuse_full_rows_calls.py SHAPE ROUNDS
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench import bench_epoch, bench_timeline  # noqa: E402
from sparse_mlp import model  # noqa: E402
shape, rounds = sys.argv[1], int(sys.argv[2])
tr = bench_epoch.make_trainer(shape, 2, 0.25)
bench_epoch.fresh_epoch(tr)
tr.train_epoch()
n_out = tr.model.sizes[-1]
best = {}
for r in range(rounds):
    for on in ((True, False) if r % 2 == 0 else (False, True)):
        model.FUSE_FULL_ROWS = on
        rec, s = bench_timeline.record_epoch(tr)
        us = s / tr.n_batches * 1e6
        if on not in best or us < best[on][0]:
            best[on] = (us, bench_timeline.summarise(rec, tr.n_batches))
model.FUSE_FULL_ROWS = True
for on in (False, True):
    us, rows = best[on]
    out = [r for r in rows if r["n_out"] == n_out or (r["kernel"] == "apply_update"
                                                      and r["n_in"] == tr.model.layers[-1].nnz)]
    calls = ", ".join(f"{r['kernel']} {r['n_in']}x{r['n_out']}: {r['us_per_batch']}" for r in out)
    print(f"{shape} FUSE_FULL_ROWS={on}: quietest batch {us:.1f} us; output layer: {calls}")
