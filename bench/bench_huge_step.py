"""One training step of a Table-4-like network (eps 1, 5M-wide layers) at a
micro-batch, timed step by step and kernel by kernel.

    python bench/bench_huge_step.py                          # 4096-5Mx3-2, micro-batch 16
    python bench/bench_huge_step.py --depth 10 --micro-batch 64 --steps 3
    python bench/bench_huge_step.py --tree /tmp/base         # another checkout (built)

The model is ``[features] + [width] * depth + [2]``, All-ReLU, dropout 0.4,
lean activations, 2 threads, batch 128: the shape of Table 4's eps-1 rows
with a smaller input layer (the input layer is dense data here, the part
Table 4 does not stress).  The first step is timed apart (it touches every
buffer for the first time); the kernel split wraps the layer methods and
reports milliseconds per micro-batch for each layer.  ``--tree`` imports
sparse_mlp from another checkout, for an A/B of two versions in one session
(run both, interleaved, on a quiet machine).  About 4 GB at the defaults.
"""

from __future__ import annotations

import collections
import time

import numpy as np
from _tree import parse_tree_args, tree_parser


def main() -> None:
    ap = tree_parser(__doc__)
    ap.add_argument("--width", type=int, default=5_000_000)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-split", action="store_true", help="skip the per-kernel split")
    args = parse_tree_args(ap)
    from sparse_mlp import layers as layers_mod
    from sparse_mlp.model import SparseMLP

    rng = np.random.default_rng(0)
    sizes = [args.features] + [args.width] * args.depth + [2]
    model = SparseMLP(sizes, epsilon=1.0, activation="allrelu", alpha=0.6, dropout=0.4, rng=rng,
                      n_threads=args.threads, activation_memory="lean")
    X = rng.standard_normal((args.features, 128), dtype=np.float32)
    y = rng.integers(0, 2, 128).astype(np.int32)
    split: dict = collections.defaultdict(float)
    if not args.no_split:
        for name in ("forward", "backward_update", "gradient"):
            orig = getattr(layers_mod.SparseLayer, name)

            def timed(self, *a, _orig=orig, _name=name, **k):
                t = time.perf_counter()
                out = _orig(self, *a, **k)
                split[_name, model.layers.index(self)] += time.perf_counter() - t
                return out

            setattr(layers_mod.SparseLayer, name, timed)
    times = []
    for step in range(args.steps):
        if step == 1:
            split.clear()
        t = time.perf_counter()
        model.train_step(X, y, 0.01, 0.9, 2e-4, model.dropout_keys(0, step),
                         micro_batch=args.micro_batch)
        times.append(time.perf_counter() - t)
    check = float(np.sum(model.layers[1].data, dtype=np.float64))
    print(f"# {args.tree}: {'-'.join(map(str, sizes))}, eps 1, micro-batch {args.micro_batch}, "
          f"{args.threads} threads; {model.nnz:,} weights")
    print(f"step seconds: first {times[0]:.2f}, then "
          + " ".join(f"{t:.2f}" for t in times[1:]) + f"  (weights check {check:.6f})")
    if split and args.steps > 1:
        per = (args.steps - 1) * (128 // args.micro_batch)
        for (name, li), s in sorted(split.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            print(f"  layer {li} {name:<16} {s / per * 1e3:7.1f} ms per micro-batch "
                  f"({model.layers[li].nnz:,} weights)")


if __name__ == "__main__":
    main()
