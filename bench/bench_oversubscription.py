"""Kernel threads next to a busy process (issue 19, item 9): seconds per
training epoch on 1 and 2 threads, on a quiet node and with one busy process
(a pure-Python loop pinned to this process's last CPU).

Settings compared (each in its own process, since libgomp reads its
environment once, when it is loaded):
  before      every kernel call split (SPARSE_MLP_MIN_PARALLEL_WORK=0) and
              libgomp's default spin (GOMP_SPINCOUNT=300000): the old engine
  spin        bounded spin only (split every call)
  serial      one thread below 2^20 multiply-adds only (default spin)
  after       both: the defaults of sparse_mlp.kernels
Shapes (synthetic data, momentum SGD, All-ReLU, no dropout):
  madelon     500-400-100-400-2  eps 10, batch 32  (2000 samples: 63 steps)
  madelon128  500-400-100-400-2  eps 10, batch 128 (16 steps)
  higgs       28-1000-1000-1000-2 eps 10, batch 128 (--steps steps)
The busy process and this one share the CPUs; anything else running on the
machine adds noise: each figure is the best of --repeat epochs, 1 and 2
threads interleaved.

Usage:  python bench/bench_oversubscription.py [--shapes madelon,madelon128,higgs]
            [--settings before,spin,serial,after] [--repeat 3] [--steps 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "before": {"SPARSE_MLP_MIN_PARALLEL_WORK": "0", "GOMP_SPINCOUNT": "300000"},
    "spin": {"SPARSE_MLP_MIN_PARALLEL_WORK": "0"},
    "serial": {"GOMP_SPINCOUNT": "300000"},
    "after": {},
    # other bounds on the spin, with the one-thread rule (issue 22)
    "spin4500": {"GOMP_SPINCOUNT": "4500"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "spin30k": {"GOMP_SPINCOUNT": "30000"},
    "spin100k": {"GOMP_SPINCOUNT": "100000"},
}
SHAPES = {  # sizes, epsilon, batch, steps per epoch (None: --steps)
    "madelon": ([500, 400, 100, 400, 2], 10, 32, 63),
    "madelon128": ([500, 400, 100, 400, 2], 10, 128, 16),
    "higgs": ([28, 1000, 1000, 1000, 2], 10, 128, None),
}


def child(shape: str, steps: int, repeat: int) -> None:
    """In a fresh process: best epoch time on 1 and 2 threads, as JSON."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from sparse_mlp import kernels
    from sparse_mlp.model import SparseMLP

    sizes, eps, B, n = SHAPES[shape]
    n = n or steps
    rng = np.random.default_rng(0)
    X = rng.standard_normal((sizes[0], B), dtype=np.float32)
    y = rng.integers(0, sizes[-1], B).astype(np.int32)
    models = {t: SparseMLP(sizes, eps, "allrelu", 0.5, "normal", rng=np.random.default_rng(1),
                           n_threads=t) for t in (1, 2)}
    keys = models[1].dropout_keys(0, 0)
    best = {1: float("inf"), 2: float("inf")}
    for m in models.values():
        m.train_step(X, y, 0.01, 0.9, 2e-4, keys)
    for _ in range(repeat):
        for t, m in models.items():
            t0 = time.perf_counter()
            for _ in range(n):
                m.train_step(X, y, 0.01, 0.9, 2e-4, keys)
            best[t] = min(best[t], time.perf_counter() - t0)
    print(json.dumps({"t1": best[1], "t2": best[2], "steps": n,
                      "min_parallel_work": kernels.min_parallel_work(),
                      "wait": kernels.WAIT_POLICY}))


def measure(shape: str, setting: str, busy: bool, steps: int, repeat: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "SPARSE_MLP_MIN_PARALLEL_WORK",
                        "SPARSE_MLP_THREADS", "OMP_NUM_THREADS")}
    env.update(SETTINGS[setting])
    hog = None
    if busy:
        cpu = max(os.sched_getaffinity(0))
        hog = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, "
                                                      f"{{{cpu}}})\nwhile True:\n    pass\n"])
        time.sleep(0.2)
    try:
        out = subprocess.run([sys.executable, __file__, "--child", shape, "--steps", str(steps),
                              "--repeat", str(repeat)], env=env, capture_output=True, text=True,
                             check=True).stdout
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="madelon,madelon128,higgs")
    ap.add_argument("--settings", default="before,spin,serial,after")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="steps per epoch of 'higgs'")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.steps, args.repeat)
        return
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs at least two CPUs")
    rows = []
    print(f"{'shape':11s} {'setting':7s} {'node':5s} {'1 thread':>10s} {'2 threads':>10s} "
          f"{'2t / 1t':>8s}   (seconds per epoch, best of {args.repeat})")
    for shape in args.shapes.split(","):
        for setting in args.settings.split(","):
            for busy in (False, True):
                r = measure(shape, setting, busy, args.steps, args.repeat)
                r.update(shape=shape, setting=setting, busy=busy)
                rows.append(r)
                print(f"{shape:11s} {setting:7s} {'busy' if busy else 'quiet':5s} "
                      f"{r['t1']:10.4f} {r['t2']:10.4f} {r['t2'] / r['t1']:8.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
