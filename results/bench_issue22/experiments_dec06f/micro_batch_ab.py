"""Epochs of the benchmark trainer with the batch of 128 taken whole or in two
micro-batches of 64 (TrainConfig.micro_batch, the CLI's --micro-batch:
gradients summed over the two blocks, then one update; the same step up to
float summation order), alternating on one trainer; us a batch of each epoch.

    python micro_batch_ab.py SHAPE THREADS ROUNDS
"""
import dataclasses
import json
import sys

sys.path.insert(0, "bench")
import bench_epoch  # noqa: E402

shape, nt, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tr = bench_epoch.make_trainer(shape, nt, 0.25)
bench_epoch.fresh_epoch(tr)
tr.train_epoch()
res = {"whole": [], "micro_64": []}
for r in range(rounds):
    for name in (("whole", "micro_64") if r % 2 == 0 else ("micro_64", "whole")):
        tr.cfg = dataclasses.replace(tr.cfg, micro_batch=64 if name == "micro_64" else None)
        bench_epoch.fresh_epoch(tr)
        _, _, s = tr.train_epoch()
        res[name].append(round(s / tr.n_batches * 1e6, 1))
wins = sum(a < b for a, b in zip(res["micro_64"], res["whole"]))
print(json.dumps({"shape": shape, "threads": nt, "us_per_batch": res,
                  "best": {k: min(v) for k, v in res.items()},
                  "micro_64_faster_pairs": f"{wins} of {rounds}"}))
