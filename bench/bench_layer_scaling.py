"""Where a training epoch's time goes, layer by layer, on 1 and 2 threads: the
real Trainer on synthetic data of one shape of bench_epoch.py (a quarter of an
epoch after one warm-up epoch), each layer method timed around its calls;
microseconds per batch and the 1-thread / 2-thread ratio of each.

    python bench/bench_layer_scaling.py [--shape higgs|fmnist|cifar]

Speed only, and noisy on a shared VM: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_epoch  # noqa: E402

from sparse_mlp.layers import SparseLayer  # noqa: E402

METHODS = ("forward", "backward_update", "gradient", "apply_gradient", "update")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="higgs", choices=sorted(bench_epoch.SHAPES))
    args = ap.parse_args()
    spent = defaultdict(float)

    def wrap(name):
        orig = getattr(SparseLayer, name)

        def timed(self, *a, **k):
            t0 = time.perf_counter()
            r = orig(self, *a, **k)
            spent[(name, self.n_in, self.n_out)] += time.perf_counter() - t0
            return r
        setattr(SparseLayer, name, timed)
    for name in METHODS:
        wrap(name)
    per_batch, totals = {}, {}
    for threads in (1, 2):
        tr = bench_epoch.make_trainer(args.shape, threads, 0.25)
        bench_epoch.time_engine(tr, 1, 0.25)
        spent.clear()
        bench_epoch.fresh_epoch(tr)
        t0 = time.perf_counter()
        tr.train_epoch()
        totals[threads] = (time.perf_counter() - t0) / tr.n_batches * 1e6
        per_batch[threads] = {k: v / tr.n_batches * 1e6 for k, v in spent.items()}
    print(f"# {args.shape}: us per batch, 1 thread | 2 threads | ratio")
    for key, one in per_batch[1].items():
        two = per_batch[2].get(key, float("nan"))
        print(f"{key[0]:16s} {key[1]:5d} x {key[2]:5d}  {one:8.1f} | {two:8.1f} | {one / two:.2f}")
    print(f"{'whole batch':29s} {totals[1]:8.1f} | {totals[2]:8.1f} | "
          f"{totals[1] / totals[2]:.2f}")


if __name__ == "__main__":
    main()
