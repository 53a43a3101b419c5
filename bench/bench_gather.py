"""The mini-batch gather (``spmm.gather_columns``: sample-major rows into a
feature-major batch) on the paper's shapes, one thread, the scalar path
against the AVX-512 one (16 x 16 tiles transposed in registers).

    python bench/bench_gather.py [--json OUT]

Microseconds per batch, the best of five rounds of 2,000 calls, random
data of each dataset's size: ``*_us``, the same random batch of rows every
call (its rows stay in cache), and ``*_epoch_us``, successive batches of a
permutation of the whole set, as an epoch of training draws them (each
batch's rows come from memory).  ``--tree`` imports sparse_mlp from another
checkout (built), for an A/B of two versions in one session.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _tree import parse_tree_args, tree_parser

SHAPES = {"madelon": (2000, 500, 32), "higgs": (100000, 28, 128),
          "fmnist": (60000, 784, 128), "cifar10": (50000, 3072, 128)}


def main() -> None:
    ap = tree_parser(__doc__)
    ap.add_argument("--json", default=None)
    args = parse_tree_args(ap)
    from bench.bench_layers import best_time
    from sparse_mlp.kernels import spmm
    rng = np.random.default_rng(0)
    rows_out = []
    old = spmm.simd_level()
    for name, (n, f, B) in SHAPES.items():
        X = rng.standard_normal((n, f), dtype=np.float32)
        rows = rng.permutation(n)[:B].astype(np.int64)
        out = np.empty((f, B), np.float32)
        row = {"tree": args.tree, "shape": name, "samples": n, "features": f, "batch": B}
        for level in ("scalar", "avx512"):
            spmm.set_simd_level(level)
            t = best_time(lambda: spmm.gather_columns(X, rows, out, 1), 5, 2000)  # noqa: B023
            row[f"{spmm.simd_level()}_us"] = round(t * 1e6, 2)
            order = rng.permutation(n).astype(np.int64)
            batches = [order[i:i + B] for i in range(0, n - B + 1, B)]
            pos = [0]

            def next_batch():
                spmm.gather_columns(X, batches[pos[0] % len(batches)], out, 1)  # noqa: B023
                pos[0] += 1  # noqa: B023
            t = best_time(next_batch, 5, 2000)
            row[f"{spmm.simd_level()}_epoch_us"] = round(t * 1e6, 2)
            spmm.gather_columns(X, rows, out, 1)
        spmm.set_simd_level(old)
        assert np.array_equal(out, X[rows].T)
        rows_out.append(row)
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows_out, fh, indent=1)


if __name__ == "__main__":
    main()
