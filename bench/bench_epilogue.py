"""The forward product's epilogue on Higgs's two layer shapes at batch 128,
one thread: the product alone (``fwd``), with ReLU (``relu``: the second
store, A), with ReLU and dropout (``relu_drop``: the mask's hash), and with
the masks kept for the backward pass (``relu_drop_bits``, what training
runs).  Microseconds per call, the best of 5 rounds of 300 calls; what the
epilogue adds is each column minus ``fwd``.

    python bench/bench_epilogue.py [--tree OTHER_CHECKOUT]
    SPARSE_MLP_SIMD=avx2 python bench/bench_epilogue.py     # the AVX2 path

``--tree`` imports sparse_mlp from another checkout (built), for an A/B of
two versions in one session: interleave them and keep the best of each.
"""

from __future__ import annotations

import json

from _tree import parse_tree_args, tree_parser


def main() -> None:
    ap = tree_parser(__doc__)
    args = parse_tree_args(ap)
    import numpy as np

    from bench.bench_layers import best_time
    from sparse_mlp.kernels import aligned_empty, spmm
    from sparse_mlp.model import SparseMLP

    rng = np.random.default_rng(0)
    B = 128
    for n_in, n_out, eps in [(28, 1000, 10), (1000, 1000, 10)]:
        m = SparseMLP([n_in, n_out, n_out, 2], eps, "relu", None, "xavier", dropout=0.3,
                      rng=rng, n_threads=1)
        layer, act = (m.layers[0] if n_in == 28 else m.layers[1]), m.acts[0]
        X = aligned_empty((n_in, B))
        X[...] = rng.standard_normal((n_in, B))
        Z, A = aligned_empty((n_out, B)), aligned_empty((n_out, B))
        bits = aligned_empty((n_out, spmm.epilogue_bits_words(B)), np.uint16)
        calls = {
            "fwd": lambda: layer.forward(X, Z, n_threads=1),  # noqa: B023
            "relu": lambda: layer.forward(X, Z, A, act, 0.0, 7, 0, 1),  # noqa: B023
            "relu_drop": lambda: layer.forward(X, Z, A, act, 0.3, 7, 0, 1),  # noqa: B023
            "relu_drop_bits": lambda: layer.forward(X, Z, A, act, 0.3, 7, 0, 1, bits),  # noqa: B023
        }
        out = {"tree": args.tree, "simd": spmm.simd_level(), "layer": f"{n_in}x{n_out}",
               "eps": eps, "nnz": layer.nnz}
        out.update({k: round(1e6 * best_time(f, 5, 300), 1) for k, f in calls.items()})
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
