"""One training step of Madelon's network (500-400-100-400-2, eps 10,
All-ReLU, dropout 0.3, batch 32): microseconds per step, per hidden layer's
forward product and per layer's fused backward (layers 1-3), so that the
Python and call overhead of a small network can be told from its kernels
(issue 22: 500 epochs are 31,000 such steps).  The repeated updates use a
small step, lr 1e-4: with lr 0 the momenta decay by 0.9 a call into
subnormal floats, whose arithmetic is several times slower (the backward
passes read 3-6 us too slow that way, which no training run sees).

    python bench/bench_madelon_step.py                  # 1 thread
    python bench/bench_madelon_step.py --tree /tmp/base # another checkout (built)

Random data of Madelon's shape; the best of five rounds of ``--steps``
steps each, after 300 steps of warm-up.  ``--tree`` imports sparse_mlp from
another checkout, for an A/B of two versions in one session (interleave
them, on a quiet machine).
"""

from __future__ import annotations

import json

from _tree import parse_tree_args, tree_parser

MADELON_SIZES = [500, 400, 100, 400, 2]


def best_us(fn, steps: int) -> float:
    """Best of five rounds of the mean of ``steps`` calls, in us."""
    from bench.bench_layers import best_time
    return 1e6 * best_time(fn, 5, steps)


def madelon_model(threads: int = 1, sizes=MADELON_SIZES, epsilon: float = 10,
                  warm: int = 300):
    """Madelon's network (or another of the same settings: All-ReLU 0.5,
    dropout 0.3, normal init, seed 0) with a random batch of 32 and one
    step's dropout keys, after ``warm`` training steps: (model, X, y, keys)."""
    import numpy as np

    from sparse_mlp.kernels import aligned_empty
    from sparse_mlp.model import SparseMLP

    rng = np.random.default_rng(0)
    m = SparseMLP(sizes, epsilon=epsilon, activation="allrelu", alpha=0.5,
                  dropout=0.3, rng=rng, n_threads=threads, init="normal")
    X = aligned_empty((sizes[0], 32))  # as the Trainer's batch buffer (64-byte rows)
    X[...] = rng.standard_normal((sizes[0], 32), dtype=np.float32)
    y = rng.integers(0, 2, 32).astype(np.int32)
    keys = m.dropout_keys(0, 0)
    for _ in range(warm):
        m.train_step(X, y, 0.01, 0.9, 2e-4, keys)
    return m, X, y, keys


def main() -> None:
    ap = tree_parser(__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2000)
    args = parse_tree_args(ap)
    import numpy as np

    from sparse_mlp.kernels import aligned_empty

    m, X, y, keys = madelon_model(args.threads)
    bufs = m._train_bufs
    A = [m._activation_buffer(h) for h in range(3)]
    inputs = [X] + A[:2]

    def forward(h):
        return lambda: m.layers[h].forward(inputs[h], bufs["Z"][h], A[h], act=m.acts[h],
                                           dropout=0.3, key=keys[h], n_threads=args.threads,
                                           bits=bufs["bits"][h], keep_z=m.keeps_z())

    def backward(li):
        layer, D, h = m.layers[li], bufs["Z"][li], li - 1
        A_in, G = m._layer_input(h, keys, 0), bufs["Z"][h].copy()
        return lambda: layer.backward_update(A_in, D, G, 1e-4, 0.9, 0.0, Z_in=G,
                                             act_in=m.acts[h], dropout=0.3, key=keys[h],
                                             scale=1 / 32, n_threads=args.threads,
                                             bits=bufs["bits"][h])

    out = {"tree": args.tree, "threads": args.threads, "nnz": m.nnz_per_layer(),
           "step_us": best_us(lambda: m.train_step(X, y, 0.01, 0.9, 2e-4, keys), args.steps),
           "forward_train_us": best_us(lambda: m.forward_train(X, keys), args.steps),
           "hidden_forward_us": [best_us(forward(h), args.steps) for h in range(3)]}
    m.output_delta(m.forward_train(X, keys), y)  # the deltas the backward passes read
    out["backward_us"] = [best_us(backward(li), args.steps) for li in (1, 2, 3)]
    # the first layer: its weight gradient and update as training runs them (one
    # fused call), and the gradient and the momentum pass apart (lr 1e-4, see above)
    first, D0 = m.layers[0], bufs["Z"][0]
    g, bg = np.empty(first.nnz, np.float32), np.empty(first.n_out, np.float32)
    out["first_layer_us"] = {
        "weight_update": best_us(lambda: first.update(X, D0, 1e-4, 0.9, 0.0,
                                                      n_threads=args.threads), args.steps),
        "weight_grad": best_us(lambda: first.gradient(X, D0, g, bg, n_threads=args.threads),
                               args.steps),
        "apply_update": best_us(lambda: first.apply_gradient(g, bg, 1e-4, 0.9, 0.0,
                                                             n_threads=args.threads),
                                args.steps)}
    # its forward product alone (no activation), at batch 32 and at 16
    out["first_forward_product_us"] = {}
    for B in (32, 16):
        Xb, Zb = aligned_empty((500, B)), aligned_empty((first.n_out, B))
        Xb[...] = X[:, :B]
        out["first_forward_product_us"][B] = best_us(
            lambda: first.forward(Xb, Zb, n_threads=args.threads), args.steps)  # noqa: B023
    print(json.dumps(out))


if __name__ == "__main__":
    main()
