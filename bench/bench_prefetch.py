"""The cross-row prefetch on a huge eps-1 layer: each kernel with it off and on.

    python bench/bench_prefetch.py                          # 5M x 5M, eps 1, batch 64
    python bench/bench_prefetch.py --n 1000000 --distances 0,8,24,64

At eps 1 a row holds about two weights, so each gathered 64-sample row is a
random 256-byte read from a 1.3 GB activation array and the in-row prefetch
of the row kernels never fires.  This times every product of one training
step with the cross-row prefetch at each distance (0 = off, the baseline),
the distances interleaved round by round so that a noisy neighbour hits all
of them alike; best of ``--repeat`` rounds.  About 4.5 GB at the default size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparse_mlp.kernels import spmm  # noqa: E402
from sparse_mlp.layers import SparseLayer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5_000_000, help="neurons in and out (default 5M)")
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--distances", default="0,24", help="prefetch distances; 0 = off")
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args()
    distances = [int(d) for d in args.distances.split(",")]
    n, B, th = args.n, args.batch, args.threads
    rng = np.random.default_rng(0)
    layer = SparseLayer.erdos_renyi(n, n, args.epsilon, "he_uniform", rng)
    X = rng.standard_normal((n, B), dtype=np.float32)
    D = rng.standard_normal((n, B), dtype=np.float32)
    Z = np.empty((n, B), np.float32)
    G = np.empty((n, B), np.float32)
    g = np.zeros(layer.nnz, np.float32)
    bg = np.zeros(n, np.float32)
    kernels = [
        ("forward", lambda: layer.forward(X, Z, n_threads=th)),
        ("backward_input", lambda: layer.backward_input(D, G, n_threads=th)),
        ("weight_update", lambda: layer.update(X, D, 1e-9, 0.9, 0.0, n_threads=th)),
        ("backward_update", lambda: layer.backward_update(X, D, G, 1e-9, 0.9, 0.0,
                                                          n_threads=th)),
        ("backward_accumulate", lambda: layer.backward_update(
            X, D, G, 1e-9, 0.9, 0.0, grads=(g, bg), accumulate=True, n_threads=th)),
    ]
    print(f"# {n} x {n} eps {args.epsilon:g}: {layer.nnz} weights, "
          f"{layer.nnz / n:.2f} per row, batch {B}, {th} threads; ms, best of {args.repeat}")
    best: dict = {}
    old = spmm.prefetch_distance()
    try:
        for _ in range(args.repeat):
            for d in distances:
                spmm.prefetch_distance(d)
                for name, fn in kernels:
                    t = time.perf_counter()
                    fn()
                    dt = time.perf_counter() - t
                    best[name, d] = min(best.get((name, d), float("inf")), dt)
    finally:
        spmm.prefetch_distance(old)
    base = distances[0]
    print(f"{'kernel':<22}" + "".join(f"{'d=' + str(d):>10}" for d in distances)
          + f"{'speed-up':>10}")
    for name, _ in kernels:
        cells = "".join(f"{best[name, d] * 1e3:>10.0f}" for d in distances)
        fastest = min(best[name, d] for d in distances[1:]) if len(distances) > 1 else None
        up = f"{best[name, base] / fastest:>9.2f}x" if fastest else ""
        print(f"{name:<22}{cells}{up}")


if __name__ == "__main__":
    main()
