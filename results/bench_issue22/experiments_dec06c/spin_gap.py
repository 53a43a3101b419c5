# How long a 2-thread kernel call takes after the main thread has been busy alone for a
# gap of g us (the worker spins GOMP_SPINCOUNT turns, then sleeps and must be woken):
# a 64-row forward product, min_parallel_work 0, median and 90th percentile of 400.
#   python results/bench_issue22/experiments_dec06c/spin_gap.py   [GOMP_SPINCOUNT=N ...]
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from sparse_mlp import kernels  # noqa: E402

sp = kernels.spmm
sp.min_parallel_work(0)
n, B = 64, 16
indptr = np.arange(n + 1, dtype=np.int64)
indices = np.arange(n, dtype=np.int32)
data, bias = np.ones(n, np.float32), np.zeros(n, np.float32)
X, Z = np.ones((n, B), np.float32), np.empty((n, B), np.float32)


def call():
    sp.forward(indptr, indices, data, bias, X, Z, None, 0, 0.0, None, 0.0, 0, 0, 2, None, True)


pc = time.perf_counter
print("wait policy:", kernels.WAIT_POLICY)
for g in (5, 10, 15, 20, 25, 30, 40, 60, 120, 400, 1000):
    ts = []
    for _ in range(400):
        call()
        t0 = pc()
        while pc() - t0 < g * 1e-6:
            pass
        t1 = pc()
        call()
        ts.append(pc() - t1)
    print(f"gap {g:5d} us: call median {np.median(ts) * 1e6:6.1f} us, "
          f"90th percentile {np.percentile(ts, 90) * 1e6:6.1f}")
