"""Does a one-thread training run slow down when the other core is busy?

If two threads of one run lose against one thread because of what the
engine does between them (rows of one layer read by the other core), a
one-thread run next to an *independent* busy core loses nothing.  If it
slows down anyway, the two cores share something the engine cannot change
(the host's power or frequency budget, the VM's scheduling, the L3).

Each measurement is one process pinned to CPU 0 (``taskset -c 0``) timing
``--seconds`` of one-thread training epochs of a benchmark network
(bench_epoch.make_trainer: the real Trainer, synthetic data of the shape,
``--fraction`` of an epoch, the best of its blocks), under one of:
  alone  - CPU 1 idle;
  twin   - CPU 1 runs the same measurement (an independent process);
  fma    - CPU 1 runs a register-only AVX-512 FMA loop (no memory);
and the kernel floor of one layer (roofline.c, one thread) alone and next to
a copy of itself.  Conditions alternate, ``--rounds`` times.

    python results/bench_issue22/experiments_dec06g/neighbour.py --shape higgs --rounds 6
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
FMA_C = r"""
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
int main(int c, char **v) { double secs = c > 1 ? atof(v[1]) : 1; struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0); __m512 a[10]; float s = 0;
  for (int i = 0; i < 10; i++) a[i] = _mm512_set1_ps(i * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999f), k = _mm512_set1_ps(1e-4f);
  do {
    for (long n = 0; n < 1000000; n++)
      for (int i = 0; i < 10; i++) a[i] = _mm512_fmadd_ps(a[i], m, k);
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while ((t.tv_sec - t0.tv_sec) + 1e-9 * (t.tv_nsec - t0.tv_nsec) < secs);
  for (int i = 0; i < 10; i++) s += _mm512_reduce_add_ps(a[i]); return s == 1.2345f; }
"""


def work(shape: str, seconds: float, fraction: float) -> None:
    """One-thread epochs for about ``seconds``; prints {"batch_us": best}."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_epoch
    tr = bench_epoch.make_trainer(shape, 1, fraction)
    best, t_end = float("inf"), time.perf_counter() + seconds
    first = True
    while time.perf_counter() < t_end or first:
        bench_epoch.fresh_epoch(tr)
        _, _, s = tr.train_epoch()
        if not first:
            best = min(best, 1e6 * s / tr.n_batches)
        first = False
    print(json.dumps({"batch_us": best}))


def pinned(cpu: int, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="higgs")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--layer", default="1000 1000 10", help="roofline.c's N_IN N_OUT EPS")
    ap.add_argument("--json", help="append one JSON line per round here")
    ap.add_argument("work", nargs="?")
    args = ap.parse_args()
    if args.work == "work":
        return work(args.shape, args.seconds, args.fraction)
    tmp = Path(tempfile.mkdtemp())
    subprocess.run(["gcc", "-O2", "-mavx512f", "-x", "c", "-", "-o", str(tmp / "fma")],
                   input=FMA_C, text=True, check=True)
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp",
                    str(ROOT.parent / "shared/bench/roofline.c"), "-o", str(tmp / "roofline"),
                    "-lm"], check=True)
    me = [sys.executable, __file__, "--shape", args.shape, "--seconds", str(args.seconds),
          "--fraction", str(args.fraction), "work"]
    floor = [str(tmp / "roofline")] + args.layer.split() + ["2000"]

    def engine(neighbour: list[str] | None) -> float:
        other = pinned(1, neighbour) if neighbour else None
        p = pinned(0, me)
        out = json.loads(p.communicate()[0])["batch_us"]
        if other:
            other.communicate()
        return out

    def floor_us(twin: bool) -> float:
        ps = [pinned(0, floor)] + ([pinned(1, floor)] if twin else [])
        lines = [p.communicate()[0] for p in ps]
        for line in lines[0].splitlines():
            d = json.loads(line)
            if d.get("kernel") == "fwd+bwd_w+bwd_x":
                return 1e6 * d["median_s"]
        raise SystemExit(f"no fwd+bwd_w+bwd_x line in {lines[0]!r}")

    fma = [str(tmp / "fma"), str(args.seconds + 6)]
    for r in range(args.rounds):
        row = {"round": r + 1, "shape": args.shape,
               "time": time.strftime("%H:%M:%S", time.gmtime())}
        order = ["alone", "twin", "fma"] if r % 2 == 0 else ["fma", "twin", "alone"]
        for cond in order:
            row[cond] = engine(None if cond == "alone" else me if cond == "twin" else fma)
        row["floor_alone"], row["floor_twin"] = floor_us(False), floor_us(True)
        row["twin/alone"] = row["twin"] / row["alone"]
        row["fma/alone"] = row["fma"] / row["alone"]
        row["floor twin/alone"] = row["floor_twin"] / row["floor_alone"]
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
