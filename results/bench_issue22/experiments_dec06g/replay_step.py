"""How much of a small network's training step is the Python around its
kernel calls: the kernel calls one ``train_step`` makes (every public
function of the four kernel modules, recorded with their arguments), replayed
with the same arguments in a plain loop, against ``train_step`` itself.  The
difference is the model's and the layers' Python (decisions, lookups,
wrappers); the replay is the kernel calls themselves (argument checks, entry
and their work).  One thread, batch 32, best of five rounds of 2000 steps,
the two alternating over ``ROUNDS``.  The replay updates the weights as the
step does; nothing is compared, only timed.

    python results/bench_issue22/experiments_dec06g/replay_step.py [ROUNDS]
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from sparse_mlp import _activation, _activation_serial, _spmm, _spmm_serial  # noqa: E402
from sparse_mlp.kernels import aligned_empty  # noqa: E402
from sparse_mlp.model import SparseMLP  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
MODULES = (_spmm_serial, _activation_serial, _spmm, _activation)


def recorded_calls(step) -> list:
    """The kernel calls ``step()`` makes, as (function, args, kwargs)."""
    calls, saved = [], {}
    for mod in MODULES:
        for name in dir(mod):
            f = getattr(mod, name)
            if callable(f) and not name.startswith("_") and not isinstance(f, type):
                def rec(*a, _f=f, **k):
                    calls.append((_f, a, k))
                    return _f(*a, **k)
                saved[(mod, name)] = f
                setattr(mod, name, rec)
    try:
        step()
    finally:
        for (mod, name), f in saved.items():
            setattr(mod, name, f)
    return calls


def best_us(fn, n=2000) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


for name, sizes, eps in (("8-neuron layers", [8, 8, 8, 8, 2], 2),
                         ("Madelon", [500, 400, 100, 400, 2], 10)):
    rng = np.random.default_rng(0)
    m = SparseMLP(sizes, epsilon=eps, activation="allrelu", alpha=0.5, dropout=0.3, rng=rng,
                  n_threads=1, init="normal")
    X = aligned_empty((sizes[0], 32))
    X[...] = rng.standard_normal((sizes[0], 32), dtype=np.float32)
    y = rng.integers(0, 2, 32).astype(np.int32)
    keys = m.dropout_keys(0, 0)

    def step(m=m, X=X, y=y, keys=keys):
        m.train_step(X, y, 0.01, 0.9, 2e-4, keys)

    for _ in range(300):
        step()
    calls = recorded_calls(step)

    def replay(calls=calls):
        for f, a, k in calls:
            f(*a, **k)

    for r in range(ROUNDS):
        a, b = (step, replay) if r % 2 == 0 else (replay, step)
        ta, tb = best_us(a), best_us(b)
        t_step, t_replay = (ta, tb) if r % 2 == 0 else (tb, ta)
        print(json.dumps({"network": name, "round": r + 1, "kernel_calls": len(calls),
                          "kernels": sorted({f.__name__ for f, _, _ in calls}),
                          "train_step_us": round(t_step, 1),
                          "replayed_calls_us": round(t_replay, 1),
                          "python_us": round(t_step - t_replay, 1)}), flush=True)
