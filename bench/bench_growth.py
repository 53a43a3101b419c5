"""Cost of gradient-based regrowth against a training epoch.

On the FashionMNIST shape (784-1000-1000-1000-10, eps 20, batch 128, 60000
synthetic samples, All-ReLU, dropout 0.3) this times, per thread count:

  epoch        one training epoch (timed on --fraction of it, scaled up)
  set          SET's random regrowth step on the 3 evolved layers
  probe(M)     M probe mini-batches: forward + backward, no update, A and D kept
  select       the exhaustive top-k over every empty position (pyx/_growth.pyx)
  select c=10  the sampled mode: 10 x k random empty positions per layer
  gradient     a whole gradient-growth step (probe M=1 + selection + merge)
  momentum     a whole momentum-growth step (probe M=10 + redistribution + ...)

With --large N it also times the selection on one N x N layer (eps 20,
batch 128, random activations): exhaustive against 10x sampled candidates,
the case the sampled mode exists for.

Usage:  python bench/bench_growth.py [--threads 1,2] [--fraction 0.1] [--large 20000]
                                     [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparse_mlp import growth  # noqa: E402
from sparse_mlp.evolution import set_step  # noqa: E402
from sparse_mlp.kernels import build_info, spmm  # noqa: E402
from sparse_mlp.model import SparseMLP  # noqa: E402

SIZES = [784, 1000, 1000, 1000, 10]
EPS, BATCH, N = 20, 128, 60000


def data(rng):
    centers = rng.standard_normal((10, SIZES[0])).astype(np.float32)
    y = rng.integers(0, 10, N).astype(np.int32)
    X = centers[y] + rng.standard_normal((N, SIZES[0]), dtype=np.float32)
    return X, y


def model(threads, seed=0):
    return SparseMLP(SIZES, epsilon=EPS, activation="allrelu", alpha=0.6, init="he_uniform",
                     dropout=0.3, rng=np.random.default_rng(seed), n_threads=threads)


def time_epoch(m, X, y, fraction):
    nb = int(round(N // BATCH * fraction))
    xb = np.empty((SIZES[0], BATCH), np.float32)
    order = np.random.default_rng(1).permutation(N)
    t0 = time.perf_counter()
    for b in range(nb):
        idx = order[b * BATCH:(b + 1) * BATCH]
        spmm.gather_columns(X, idx, xb, n_threads=m.n_threads)
        m.train_step(xb, y[idx], 0.01, 0.9, 2e-4, m.dropout_keys(0, b))
    return (time.perf_counter() - t0) * (N // BATCH) / nb


def best(fn, repeat=3):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def run(threads, fraction):
    rng = np.random.default_rng(0)
    X, y = data(rng)
    m = model(threads)
    row = {"threads": threads, "epoch_s": time_epoch(m, X, y, fraction)}
    get = growth.batch_getter(X, y, threads)
    L = m.n_layers - 1

    def fresh():
        return m.copy()

    row["set_s"] = best(lambda: [set_step(lay, 0.3, np.random.default_rng(2), threads)
                                 for lay in fresh().layers[:L]])
    for M in (1, 10):
        row[f"probe{M}_s"] = best(lambda M=M: growth.collect_probe(
            m, get, N, BATCH, M, np.random.default_rng(3), 0, 0, L))
    probe = growth.collect_probe(m, get, N, BATCH, 1, np.random.default_rng(3), 0, 0, L)
    ks = [int(0.3 * lay.nnz) for lay in m.layers[:L]]

    def select(cands):
        for li, lay in enumerate(m.layers[:L]):
            growth.grow_positions(lay.indptr, lay.indices, lay.n_in, probe.A[li], probe.D[li],
                                  probe.scale, ks[li], 7, candidates=cands,
                                  rng=np.random.default_rng(4), data=lay.data,
                                  n_threads=threads)

    row["select_s"] = best(lambda: select(None))
    row["select_c10_s"] = best(lambda: select(10.0))
    for mode in ("gradient", "momentum"):
        row[f"{mode}_s"] = best(lambda mode=mode: growth.evolve_with_growth(
            fresh(), X, y, np.random.default_rng(5), zeta=0.3, growth=mode,
            batch_size=BATCH, dropout_seed=0))
    # exhaustive work: candidates x batch
    n_empty = sum(lay.n_in * lay.n_out - lay.nnz for lay in m.layers[:L])
    row["select_gflops"] = 2.0 * n_empty * BATCH / row["select_s"] / 1e9
    row["nnz"] = m.nnz_per_layer()
    return row


def run_large(n, threads):
    """Selection on one n x n eps-20 layer: exhaustive vs 10x sampled candidates."""
    from sparse_mlp.layers import SparseLayer
    rng = np.random.default_rng(0)
    lay = SparseLayer.erdos_renyi(n, n, EPS, "he_uniform", rng)
    A = rng.standard_normal((n, BATCH), dtype=np.float32)
    D = rng.standard_normal((n, BATCH), dtype=np.float32)
    k = int(0.3 * lay.nnz)
    out = {"n": n, "nnz": lay.nnz, "k": k}
    for name, c in (("exhaustive_s", None), ("sampled_c10_s", 10.0)):
        t0 = time.perf_counter()
        growth.grow_positions(lay.indptr, lay.indices, n, A, D, 1.0 / BATCH, k, 1,
                              candidates=c, rng=np.random.default_rng(1), data=lay.data,
                              n_threads=threads)
        out[name] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--large", type=int, help="also time one N x N layer's selection")
    ap.add_argument("--json")
    args = ap.parse_args()
    info = build_info()
    print(f"FashionMNIST shape {'-'.join(map(str, SIZES))}, eps {EPS}, batch {BATCH}, "
          f"{N} samples; simd {info['simd']}, openmp {info['openmp']}, "
          f"growth kernels {growth.kernels.simd_level()}")
    rows = []
    for th in (int(t) for t in args.threads.split(",")):
        r = run(th, args.fraction)
        rows.append(r)
        e = r["epoch_s"]
        print(f"threads {th}: epoch {e:.2f}s (nnz {r['nnz']})")
        for key, label in (("set_s", "SET random step"), ("probe1_s", "probe 1 batch"),
                           ("probe10_s", "probe 10 batches"),
                           ("select_s", "top-k, all empty positions"),
                           ("select_c10_s", "top-k, 10x sampled candidates"),
                           ("gradient_s", "gradient growth step (M=1)"),
                           ("momentum_s", "momentum growth step (M=10)")):
            print(f"  {label:32s} {r[key]:8.4f}s  {100 * r[key] / e:6.2f}% of an epoch")
        print(f"  exhaustive top-k throughput      {r['select_gflops']:8.1f} GFLOP/s")
        if args.large:
            big = run_large(args.large, th)
            r["large"] = big
            print(f"  one {big['n']} x {big['n']} layer (nnz {big['nnz']}, k {big['k']}): "
                  f"exhaustive {big['exhaustive_s']:.3f}s, 10x sampled "
                  f"{big['sampled_c10_s']:.3f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
