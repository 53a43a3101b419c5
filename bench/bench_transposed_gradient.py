"""Training epochs with the split update's gradient written through the
transposed index's permutation (the weights' own order) against written in
the transposed index's order and read back through its inverse
(model.TRANSPOSED_GRADIENT), in one process: the two settings take
turns epoch after epoch on the same trainer (the machine's noise hits both
alike).  Microseconds per batch of each epoch, and the best of each; one JSON
line per shape.

    python bench/bench_transposed_gradient.py [--shapes higgs,fmnist,cifar]
        [--threads 2] [--fraction 0.1] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_epoch  # noqa: E402
from sparse_mlp import model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="higgs,fmnist,cifar")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    before = model.TRANSPOSED_GRADIENT
    for shape in args.shapes.split(","):
        tr = bench_epoch.make_trainer(shape, args.threads, args.fraction)
        us = {"own_order": [], "transposed_order": []}
        for rnd in range(args.rounds):
            order = list(us) if rnd % 2 == 0 else list(us)[::-1]
            for name in order:
                model.TRANSPOSED_GRADIENT = name == "transposed_order"
                bench_epoch.fresh_epoch(tr)
                _, _, seconds = tr.train_epoch()
                us[name].append(round(seconds / tr.n_batches * 1e6, 1))
        model.TRANSPOSED_GRADIENT = before
        print(json.dumps({"shape": shape, "threads": args.threads, "fraction": args.fraction,
                          "best_own_order_us": min(us["own_order"]),
                          "best_transposed_order_us": min(us["transposed_order"]),
                          "us_per_batch": us}), flush=True)


if __name__ == "__main__":
    main()
