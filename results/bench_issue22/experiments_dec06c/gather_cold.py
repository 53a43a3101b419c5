"""The batch gather (spmm.gather_columns, one thread) of 128 random rows, from
rows the caches have lost (24 MB written between two gathers) and again at
once (warm): median us of 200, for Higgs's 28 features and FashionMNIST's 784.

    python results/bench_issue22/experiments_dec06c/gather_cold.py [--tree DIR]

--tree: another built checkout (an A/B of two builds, runs interleaved).
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from _tree import parse_tree_args, tree_parser  # noqa: E402

args = parse_tree_args(tree_parser(__doc__))
import numpy as np  # noqa: E402

from sparse_mlp import kernels  # noqa: E402

sp = kernels.spmm_serial
rng = np.random.default_rng(0)
res = {"tree": args.tree}
for n, f in ((26250, 28), (15000, 784)):
    X = rng.standard_normal((n, f), dtype=np.float32)
    out = np.empty((f, 128), np.float32)
    junk = np.ones(6 << 20, np.float32)  # 24 MB
    cold, warm = [], []
    for _ in range(200):
        rows = rng.integers(0, n, 128)
        junk += 1.0  # push X out of the caches
        t0 = time.perf_counter()
        sp.gather_columns(X, rows, out, n_threads=1)
        t1 = time.perf_counter()
        sp.gather_columns(X, rows, out, n_threads=1)
        t2 = time.perf_counter()
        cold.append(t1 - t0)
        warm.append(t2 - t1)
    res[f"{n}x{f}"] = {"cold_us": round(float(np.median(cold)) * 1e6, 1),
                       "warm_us": round(float(np.median(warm)) * 1e6, 1)}
print(res)
