"""The loss kernel on one thread or on the model's two, alternating two-thread
epochs: the batch time, and from the timeline the gap between the output
layer's forward product and its backward pass (the loss and the Python
around it) and the backward pass's fork (the second thread's arrival).
python loss_threads_ab.py SHAPE FRACTION ROUNDS (2026-12-06 ~11:37 UTC, at
c007a0b with model.LOSS_THREADS_MIN added: loss_threads_ab.jsonl; since the
review mend it switches model.LOSS_WORK, the same split)."""
import sys, json
import numpy as np
sys.path.insert(0, "bench")
import bench_epoch, bench_timeline
from sparse_mlp import kernels, model as M
shape, frac, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
tr = bench_epoch.make_trainer(shape, 2, frac)
bench_epoch.fresh_epoch(tr); tr.train_epoch()
kinds = list(kernels.spmm.TIMELINE_KINDS)
nb = tr.n_batches
default = M.LOSS_WORK
res = {"one": {"batch": [], "gap": [], "fork": []}, "two": {"batch": [], "gap": [], "fork": []}}
for r in range(rounds):
    for name in (("one", "two") if r % 2 == 0 else ("two", "one")):
        M.LOSS_WORK = 0 if name == "one" else default
        rec, s = bench_timeline.record_epoch(tr)
        per = rec["kind"].size // nb
        kb = [i for i in range(per) if kinds[rec["kind"][i]] == "backward_update"][0]
        tc = rec["t_call"].reshape(nb, per); td = rec["t_done"].reshape(nb, per)
        st = rec["stamps"].reshape(nb, per, *rec["stamps"].shape[1:])
        gap = (tc[:, kb] - td[:, kb - 1]) / 1e3
        fork = (st[:, kb, :2, 0].max(axis=1) - tc[:, kb]) / 1e3
        res[name]["batch"].append(round(s / nb * 1e6, 1))
        res[name]["gap"].append(round(float(np.median(gap)), 1))
        res[name]["fork"].append(round(float(np.median(fork)), 1))
M.LOSS_WORK = default
wins = sum(a < b for a, b in zip(res["two"]["batch"], res["one"]["batch"]))
print(json.dumps({"shape": shape, "fraction": frac, "loss_one_thread": res["one"],
                  "loss_two_threads": res["two"], "two_faster_pairs": f"{wins} of {rounds}"}))
