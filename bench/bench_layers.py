"""Benchmark one layer's training step against in-run baselines.

For the paper's layers at batch 128, times one training step of the layer
(forward + gradient to the inputs + weight gradient fused with the update)
with this engine on 1 and 2 threads, and in the same run:
  (a) scipy.sparse doing the same three products (the weight gradient at the
      existing weights by NumPy gather + row dot products, as the paper's
      code does it), and
  (b) dense float32 NumPy/BLAS doing the dense equivalent
      (W^T X, W D, X D^T), with BLAS limited to the same thread count.
GFLOP/s counts 6 flops per weight per sample (3 products x multiply-add).
Also the SET evolution time of each layer.

Usage:  python bench/bench_layers.py [--repeat 5] [--batch 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._results import write_results  # noqa: E402
from sparse_mlp.evolution import set_step  # noqa: E402
from sparse_mlp.kernels import build_info  # noqa: E402
from sparse_mlp.layers import SparseLayer  # noqa: E402

LAYERS = [
    ("Higgs 1000x1000 eps10", 1000, 1000, 10),
    ("FMNIST 784x1000 eps20", 784, 1000, 20),
    ("FMNIST 1000x1000 eps20", 1000, 1000, 20),
    ("CIFAR 3072x4000 eps20", 3072, 4000, 20),
    ("CIFAR 4000x1000 eps20", 4000, 1000, 20),
]


def best_time(fn, repeat: int, inner: int) -> float:
    """Best over ``repeat`` rounds of the mean of ``inner`` calls (seconds)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t) / inner)
    return best


def engine_step(layer, X, D, G, Z, threads):
    def step():
        layer.forward(X, Z, n_threads=threads)
        layer.backward_input(D, G, n_threads=threads)
        layer.update(X, D, 1e-6, 0.9, 0.0, n_threads=threads)
    return step


def scipy_step(layer, X, D):
    Wt = layer.to_scipy().T.tocsr()  # (n_out, n_in)
    W = layer.to_scipy().tocsr()     # (n_in, n_out)
    rows = np.repeat(np.arange(layer.n_out), layer.row_lengths())
    cols = layer.indices
    Xs, Ds = X.T.copy(), D.T.copy()  # sample-major for the gather, as the paper's code

    def step():
        Wt @ X
        W @ D
        np.einsum("kb,kb->k", Xs[:, cols].T, Ds[:, rows].T)
    return step


def dense_step(layer, X, D):
    Wd = layer.to_scipy().toarray()

    def step():
        Wd.T @ X
        Wd @ D
        X @ D.T
    return step


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json", default=None, help="write results here "
                    "(default bench/results/layers_<time>.json)")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threads_list = [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(0)
    B = args.batch
    info = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "batch": B, **build_info(), "numpy": np.__version__}
    print(f"# layer training step at batch {B}; {info}")
    head = (f"{'layer':<24}{'nnz':>8}{'thr':>4}{'engine ms':>10}{'GFLOP/s':>9}"
            f"{'scipy ms':>10}{'x scipy':>9}{'dense ms':>10}{'x dense':>9}")
    print(head)
    results = []
    for name, n_in, n_out, eps in LAYERS:
        layer = SparseLayer.erdos_renyi(n_in, n_out, eps, "he_uniform", rng)
        X = rng.standard_normal((n_in, B)).astype(np.float32)
        D = rng.standard_normal((n_out, B)).astype(np.float32) * 0.01
        Z = np.empty((n_out, B), np.float32)
        G = np.empty((n_in, B), np.float32)
        flops = 6.0 * layer.nnz * B
        inner = max(3, int(2e8 / flops))
        row = {"layer": name, "n_in": n_in, "n_out": n_out, "epsilon": eps, "nnz": layer.nnz,
               "by_threads": {}}
        for thr in threads_list:
            t_eng = best_time(engine_step(layer, X, D, G, Z, thr), args.repeat, inner)
            with threadpool_limits(limits=thr):
                t_sp = best_time(scipy_step(layer, X, D), max(2, args.repeat // 2),
                                 max(1, inner // 10))
                t_dn = best_time(dense_step(layer, X, D), max(2, args.repeat // 2),
                                 max(1, inner // 10))
            gf = flops / t_eng / 1e9
            print(f"{name:<24}{layer.nnz:>8}{thr:>4}{t_eng * 1e3:>10.3f}{gf:>9.1f}"
                  f"{t_sp * 1e3:>10.3f}{t_sp / t_eng:>9.1f}{t_dn * 1e3:>10.3f}"
                  f"{t_dn / t_eng:>9.1f}")
            row["by_threads"][thr] = {"engine_s": t_eng, "gflops": gf, "scipy_s": t_sp,
                                      "dense_s": t_dn}
        # SET evolution of this layer (momentum present, as in training)
        layer.velocity[:] = 0.001
        evo = {}
        for thr in threads_list:
            evo[thr] = best_time(lambda lay=layer, t=thr: set_step(lay, 0.3, rng, n_threads=t),
                                 args.repeat, 5)
        row["set_s"] = evo
        results.append(row)
    print("\n# SET evolution (zeta 0.3) per layer, ms")
    for row in results:
        print(f"{row['layer']:<24}" + "".join(
            f"{f'{t}T':>6}{row['set_s'][t] * 1e3:>8.2f}" for t in threads_list))
    if len(threads_list) >= 2:
        t1, t2 = threads_list[0], threads_list[1]
        print(f"\n# speed-up {t1} -> {t2} threads (engine step)")
        for row in results:
            bt = row["by_threads"]
            print(f"{row['layer']:<24}{bt[t1]['engine_s'] / bt[t2]['engine_s']:>6.2f}x")
    out = {"info": info, "results": results, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    print()
    write_results(out, args.json, "layers")
    return out


if __name__ == "__main__":
    main()
