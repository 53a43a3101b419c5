"""Training epochs with one of the model's speed switches off and on, in one
process: the two settings take turns epoch after epoch on the same trainer
(the machine's noise hits both alike).  Microseconds per batch of each epoch,
the best of each, the ratio of their medians and how many pairs the switch
won; one JSON line per shape.  The switches change speed
only, never a result (the tests compare both settings bit for bit):

  TRANSPOSED_GRADIENT  the split update's gradient written in the transposed
                       index's order and read back through its inverse (off:
                       written through the permutation, the weights' order)
  SKIP_Z_WITH_BITS     the training forward leaves Z unwritten where it keeps
                       the masks the backward pass reads (off: Z always stored)
  FUSE_FULL_ROWS       on several threads, a layer whose rows are all full (the
                       output layer) keeps the fused backward update (off: split
                       as the other layers)
  DELTA_OVER_INPUT     the backward pass writes a hidden layer's delta over its
                       activations A, each row right after its last read (off:
                       over its Z buffer)

    python bench/bench_model_switch.py [--switch TRANSPOSED_GRADIENT]
        [--shapes higgs,fmnist,cifar] [--threads 2] [--fraction 0.1] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_epoch  # noqa: E402
from sparse_mlp import model  # noqa: E402

SWITCHES = ("TRANSPOSED_GRADIENT", "SKIP_Z_WITH_BITS", "FUSE_FULL_ROWS", "DELTA_OVER_INPUT")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switch", choices=SWITCHES, default="TRANSPOSED_GRADIENT")
    ap.add_argument("--shapes", default="higgs,fmnist,cifar")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    before = getattr(model, args.switch)
    try:
        for shape in args.shapes.split(","):
            tr = bench_epoch.make_trainer(shape, args.threads, args.fraction)
            us = {"off": [], "on": []}
            for rnd in range(args.rounds):
                for name in (("off", "on") if rnd % 2 == 0 else ("on", "off")):
                    setattr(model, args.switch, name == "on")
                    bench_epoch.fresh_epoch(tr)
                    _, _, seconds = tr.train_epoch()
                    us[name].append(round(seconds / tr.n_batches * 1e6, 1))
            # the rounds are pairs taken a moment apart: count the pairs "on" won
            wins = sum(a < b for a, b in zip(us["on"], us["off"]))
            print(json.dumps({"switch": args.switch, "shape": shape, "threads": args.threads,
                              "fraction": args.fraction, "best_off_us": min(us["off"]),
                              "best_on_us": min(us["on"]),
                              "median_on_over_off": round(statistics.median(us["on"])
                                                          / statistics.median(us["off"]), 4),
                              "pairs_on_faster": f"{wins} of {args.rounds}",
                              "us_per_batch": us}), flush=True)
    finally:
        setattr(model, args.switch, before)


if __name__ == "__main__":
    main()
