"""Two-thread epochs taking turns between three settings on one trainer: each
hidden layer's delta over its Z (off), over its activations A whatever their
size (all: model.DELTA_OVER_INPUT_MIN_BYTES 0), and over A only where A's
block of the batch is at least 1 MiB (bound: the default). us a batch of each
epoch, and each call's median us a batch from the timeline.
python delta_over_input_bound.py SHAPE FRACTION ROUNDS"""
import sys, json
import numpy as np
sys.path.insert(0, "bench")
import bench_epoch, bench_timeline
from sparse_mlp import model as M
shape, frac, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
tr = bench_epoch.make_trainer(shape, 2, frac)
bench_epoch.fresh_epoch(tr); tr.train_epoch()
nb = tr.n_batches
settings = {"off": (False, 1 << 20), "all": (True, 0), "bound": (True, 1 << 20)}
res = {k: {"batch": [], "calls": {}} for k in settings}
names = list(settings)
for r in range(rounds):
    for name in names[r % 3:] + names[:r % 3]:
        M.DELTA_OVER_INPUT, M.DELTA_OVER_INPUT_MIN_BYTES = settings[name]
        rec, s = bench_timeline.record_epoch(tr)
        res[name]["batch"].append(round(s / nb * 1e6, 1))
        for row in bench_timeline.summarise(rec, nb):
            key = f'{row["kernel"]} {row["n_in"]}x{row["n_out"]} t{row["threads"]}'
            res[name]["calls"].setdefault(key, []).append(row["us_per_batch"])
M.DELTA_OVER_INPUT, M.DELTA_OVER_INPUT_MIN_BYTES = settings["bound"]
med = {k: float(np.median(v["batch"])) for k, v in res.items()}
print(json.dumps({"shape": shape, "threads": 2, "fraction": frac,
                  "batch_us": {k: v["batch"] for k, v in res.items()},
                  "median_us": med}))
for key in res["off"]["calls"]:
    vals = [np.median(res[k]["calls"].get(key, [np.nan])) for k in names]
    print(f"  {key:34s} " + "  ".join(f"{k} {v:8.1f}" for k, v in zip(names, vals)))
