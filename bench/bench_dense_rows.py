"""The forward product of full output layers, four rows at a time
(``spmm.dense_rows(True)``, rowkern.h smlp_forward_dense_avx512) against row
by row (``dense_rows(False)``): microseconds a call, best of five rounds of
300, on 1 and 2 threads, the output layers of the paper's networks at batch
128 and 32.

    python bench/bench_dense_rows.py [--json out.jsonl]

Speed only (the two give the same bits; tests/test_kernels.py compares them).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from sparse_mlp.kernels import aligned_empty, spmm  # noqa: E402
from sparse_mlp.layers import SparseLayer  # noqa: E402

# (n_in, n_out, eps): Higgs, FashionMNIST, CIFAR10, Madelon
LAYERS = [(1000, 2, 10), (1000, 10, 20), (4000, 10, 20), (400, 2, 10)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="append one JSON line per layer and batch")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    old = spmm.dense_rows()
    try:
        for n_in, n_out, eps in LAYERS:
            layer = SparseLayer.erdos_renyi(n_in, n_out, eps, "xavier", rng)
            for B in (128, 32):
                X = aligned_empty((n_in, B))
                X[...] = rng.standard_normal((n_in, B))
                Z = aligned_empty((n_out, B))
                us = {}
                for threads in (1, 2):
                    for dense in (False, True):
                        spmm.dense_rows(dense)
                        t = min(timeit.repeat(functools.partial(layer.forward, X, Z,
                                                                n_threads=threads),
                                              number=300, repeat=5)) / 300
                        us[f"{threads}T_{'dense' if dense else 'rows'}"] = round(t * 1e6, 1)
                rec = {"layer": f"{n_in}x{n_out}", "nnz": layer.nnz, "B": B, **us}
                print(json.dumps(rec))
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(rec) + "\n")
    finally:
        spmm.dense_rows(old)


if __name__ == "__main__":
    main()
