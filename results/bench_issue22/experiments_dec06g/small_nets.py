"""The two small networks whose one-thread training step madelon_here.py and
replay_step.py time: Madelon's (500-400-100-400-2, eps 10) and one of
8-neuron layers (eps 2), as ``bench/bench_madelon_step.py`` builds them
(All-ReLU, dropout 0.3, batch 32, random data), and the step both time."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_madelon_step import best_us, madelon_model  # noqa: E402, F401

NETWORKS = {"madelon": ([500, 400, 100, 400, 2], 10), "tiny": ([8, 8, 8, 8, 2], 2)}


def small_step(name: str, warm: int = 300):
    """One-thread ``train_step`` of network ``name`` on a fixed batch of 32, as
    a function of no arguments, after ``warm`` steps."""
    sizes, eps = NETWORKS[name]
    m, X, y, keys = madelon_model(1, sizes, eps, warm)

    def step():
        m.train_step(X, y, 0.01, 0.9, 2e-4, keys)

    return step
