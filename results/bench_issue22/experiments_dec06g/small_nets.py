"""The two small networks whose one-thread training step madelon_here.py and
replay_step.py time: Madelon's (500-400-100-400-2, eps 10) and one of
8-neuron layers (eps 2), All-ReLU, dropout 0.3, batch 32, random data, and
the step both time."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from sparse_mlp.kernels import aligned_empty  # noqa: E402
from sparse_mlp.model import SparseMLP  # noqa: E402

NETWORKS = {"madelon": ([500, 400, 100, 400, 2], 10), "tiny": ([8, 8, 8, 8, 2], 2)}


def small_step(name: str, warm: int = 300):
    """One-thread ``train_step`` of network ``name`` on a fixed batch of 32, as
    a function of no arguments, after ``warm`` steps."""
    sizes, eps = NETWORKS[name]
    rng = np.random.default_rng(0)
    m = SparseMLP(sizes, epsilon=eps, activation="allrelu", alpha=0.5, dropout=0.3, rng=rng,
                  n_threads=1, init="normal")
    X = aligned_empty((sizes[0], 32))
    X[...] = rng.standard_normal((sizes[0], 32), dtype=np.float32)
    y = rng.integers(0, 2, 32).astype(np.int32)
    keys = m.dropout_keys(0, 0)

    def step():
        m.train_step(X, y, 0.01, 0.9, 2e-4, keys)

    for _ in range(warm):
        step()
    return step


def best_us(fn, n: int = 2000) -> float:
    """The best of five rounds of ``n`` calls, us a call."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best
