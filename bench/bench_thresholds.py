"""SET's magnitude thresholds (``topology.magnitude_thresholds``) on layers of
800 to 10 million weights: microseconds a call, best of five rounds, and
the thresholds themselves (two versions must agree on them).

    python bench/bench_thresholds.py                  # this checkout
    python bench/bench_thresholds.py --tree /tmp/base # another checkout (built)

Weights drawn N(0, 0.05^2), zeta 0.3 (the paper's).  Interleave runs of two
trees for an A/B on a shared machine.
"""

from __future__ import annotations

import json
import timeit

from _tree import parse_tree_args, tree_parser


def main() -> None:
    ap = tree_parser(__doc__)
    args = parse_tree_args(ap)
    import numpy as np

    from sparse_mlp.kernels import topology

    rng = np.random.default_rng(0)
    for n in (800, 9115, 100_000, 10_000_000):
        data = (rng.standard_normal(n) * 0.05).astype(np.float32)
        reps = max(3, 2_000_000 // n)
        best = min(timeit.repeat(lambda d=data: topology.magnitude_thresholds(d, 0.3),
                                 number=reps, repeat=5)) / reps
        print(json.dumps({"tree": args.tree, "nnz": n, "us": round(best * 1e6, 1),
                          "thresholds": list(topology.magnitude_thresholds(data, 0.3))}))


if __name__ == "__main__":
    main()
