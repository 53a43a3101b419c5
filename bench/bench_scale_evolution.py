"""Initialisation and one SET step of every weight matrix of a huge network.

    python bench/bench_scale_evolution.py                       # 65536-5Mx10-2, eps 1
    python bench/bench_scale_evolution.py --hidden 500000,500000 --epsilon 10

Builds the model only (no data, no activations), so it measures what Table 4
calls weight initialisation and weight evolution, for networks whose
training epoch is too long to repeat; prints seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparse_mlp.evolution import set_step  # noqa: E402
from sparse_mlp.kernels import default_threads  # noqa: E402
from sparse_mlp.model import SparseMLP  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=65536)
    ap.add_argument("--hidden", default=",".join(["5000000"] * 10))
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--zeta", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    threads = args.threads or default_threads()
    sizes = [args.features, *[int(h) for h in args.hidden.split(",")], args.classes]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    model = SparseMLP(sizes, epsilon=args.epsilon, activation="allrelu", alpha=0.6,
                      init="he_uniform", rng=rng, n_threads=threads)
    init_s = time.perf_counter() - t
    t = time.perf_counter()
    for layer in model.layers[:-1]:  # SET skips the last weight matrix, as in training
        set_step(layer, args.zeta, rng, n_threads=threads)
    evo_s = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{'-'.join(map(str, sizes))} eps {args.epsilon:g}: {model.nnz:,} weights, "
          f"{threads} threads | init {init_s:.1f} s | SET on {model.n_layers - 1} matrices "
          f"{evo_s:.1f} s | peak RSS {rss:.2f} GiB")


if __name__ == "__main__":
    main()
