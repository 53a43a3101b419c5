"""Alternating two-thread (or one-thread) epochs on one trainer with a setting
off and on, the batch time of each epoch and each kernel call's median us a
batch under either setting (the call timeline).  The setting is a module
variable of sparse_mlp.model (NAME), or a setter of the compiled kernels
(spmm.FUNC, called with True / False; spmm.FUNC:ON:OFF, called with the
integers ON / OFF).  The experiments of this folder add their settings with
a patch (the .diff files here; apply, build, run):

    python ab_switch.py SHAPE THREADS FRACTION ROUNDS SETTING
"""
import json
import sys

import numpy as np

sys.path.insert(0, "bench")
import bench_epoch  # noqa: E402
import bench_timeline  # noqa: E402

from sparse_mlp import model as M  # noqa: E402

shape, nt, frac, rounds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
var = sys.argv[5]


def setting(on):
    if var.startswith("spmm."):
        import sparse_mlp._spmm as S
        fn, _, vals = var[5:].partition(":")
        if vals:
            on_v, off_v = (int(x) for x in vals.split(":"))
            getattr(S, fn)(on_v if on else off_v)
        else:
            getattr(S, fn)(on)
    else:
        setattr(M, var, on)


tr = bench_epoch.make_trainer(shape, nt, frac)
bench_epoch.fresh_epoch(tr)
tr.train_epoch()
nb = tr.n_batches
res = {"off": {"batch": [], "calls": {}}, "on": {"batch": [], "calls": {}}}
for r in range(rounds):
    for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
        setting(name == "on")
        rec, s = bench_timeline.record_epoch(tr)
        res[name]["batch"].append(round(s / nb * 1e6, 1))
        for row in bench_timeline.summarise(rec, nb):
            key = f'{row["kernel"]} {row["n_in"]}x{row["n_out"]} t{row["threads"]}'
            res[name]["calls"].setdefault(key, []).append(row["us_per_batch"])
wins = sum(a < b for a, b in zip(res["on"]["batch"], res["off"]["batch"]))
print(json.dumps({"shape": shape, "threads": nt, "fraction": frac, "var": var,
                  "batch_us": {k: v["batch"] for k, v in res.items()},
                  "median": {k: float(np.median(v["batch"])) for k, v in res.items()},
                  "on_faster_pairs": f"{wins} of {rounds}"}))
for key in res["off"]["calls"]:
    off = np.median(res["off"]["calls"][key])
    on = np.median(res["on"]["calls"].get(key, [np.nan]))
    print(f"  {key:34s} off {off:8.1f}  on {on:8.1f}  ({on - off:+.1f})")
