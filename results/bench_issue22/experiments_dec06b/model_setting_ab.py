# Trainer epochs alternating in one process: a module setting of sparse_mlp.model at its
# default or at VALUE (usage: SHAPE THREADS ROUNDS NAME VALUE); us a batch, pairs won
import sys, json, statistics
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import bench_epoch
from sparse_mlp import model
shape, threads, rounds, attr, val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
tr = bench_epoch.make_trainer(shape, threads, 0.25)
default = getattr(model, attr)
us = {"default": [], "alt": []}
for r in range(rounds):
    for mode in (("default", "alt") if r % 2 == 0 else ("alt", "default")):
        setattr(model, attr, default if mode == "default" else val)
        bench_epoch.fresh_epoch(tr)
        _, _, s = tr.train_epoch()
        us[mode].append(round(s / tr.n_batches * 1e6, 1))
setattr(model, attr, default)
wins = sum(a < b for a, b in zip(us["alt"], us["default"]))
print(shape, threads, attr, val, json.dumps(us), f"alt faster in {wins} of {rounds}; medians",
      statistics.median(us["default"]), statistics.median(us["alt"]))
