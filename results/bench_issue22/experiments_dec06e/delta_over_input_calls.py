"""The backward pass writing each hidden layer's delta over its activations A
(model.DELTA_OVER_INPUT, on) or over its Z buffer (off), alternating epochs
on one trainer: the batch time and, from the timeline, each call's median us
a batch under either setting.
python delta_over_input_calls.py SHAPE THREADS FRACTION ROUNDS"""
import sys, json
import numpy as np
sys.path.insert(0, "bench")
import bench_epoch, bench_timeline
from sparse_mlp import model as M
shape, nt, frac, rounds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
tr = bench_epoch.make_trainer(shape, nt, frac)
bench_epoch.fresh_epoch(tr); tr.train_epoch()
nb = tr.n_batches
res = {"off": {"batch": [], "calls": {}}, "on": {"batch": [], "calls": {}}}
for r in range(rounds):
    for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
        M.DELTA_OVER_INPUT = name == "on"
        rec, s = bench_timeline.record_epoch(tr)
        res[name]["batch"].append(round(s / nb * 1e6, 1))
        for row in bench_timeline.summarise(rec, nb):
            key = f'{row["kernel"]} {row["n_in"]}x{row["n_out"]} t{row["threads"]}'
            res[name]["calls"].setdefault(key, []).append(row["us_per_batch"])
M.DELTA_OVER_INPUT = True
wins = sum(a < b for a, b in zip(res["on"]["batch"], res["off"]["batch"]))
print(json.dumps({"shape": shape, "threads": nt, "fraction": frac,
                  "batch_us": {k: v["batch"] for k, v in res.items()},
                  "on_faster_pairs": f"{wins} of {rounds}"}))
for key in res["off"]["calls"]:
    off = np.median(res["off"]["calls"][key]); on = np.median(res["on"]["calls"].get(key, [np.nan]))
    print(f"  {key:34s} off {off:8.1f}  on {on:8.1f}  ({on - off:+.1f})")
