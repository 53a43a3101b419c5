"""Each training kernel of one layer against its floor counterpart.

For the layer shapes of ``../shared/bench/roofline.sh`` at batch 128, times
in isolation (best of --repeat runs of --reps calls):
  fwd        Z = W^T X + b, no epilogue            (floor: fwd)
  fwd_epi    the same with ReLU + dropout fused    (what the trainer runs)
  bwd_w      weight gradient at the existing weights (floor: bwd_w)
  bwd_x      gradient to the inputs, no epilogue   (floor: bwd_x)
  bwd_fused  gradient to the inputs with ReLU' + dropout (the masks kept by
             the forward pass), fused with the weight gradient and the
             momentum update, split in two passes on several threads: what
             the trainer runs for every layer but the first
  update     first layer: weight gradient fused with the momentum update
and, when the roofline's JSON lines are given (--roofline FILE), the floor's
time of each counterpart and the ratio.  One thread count per call
(--threads).  Speed is measured here, never asserted in tests.

Usage: python bench/bench_kernels.py [--threads 1] [--reps 200] [--repeat 3]
           [--roofline roofline.jsonl] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_layers import best_time  # noqa: E402
from sparse_mlp.activations import make_activation  # noqa: E402
from sparse_mlp.kernels import aligned_empty, spmm  # noqa: E402
from sparse_mlp.layers import SparseLayer  # noqa: E402
from sparse_mlp.model import SPLIT_UPDATE_MAX  # noqa: E402

SHAPES = [(28, 1000, 10), (1000, 1000, 10), (784, 1000, 20), (1000, 1000, 20),
          (3072, 4000, 20), (4000, 1000, 20), (1000, 4000, 20)]


def floor_times(path: str | None, threads: int) -> dict:
    out: dict = {}
    if not path:
        return out
    for line in Path(path).read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if int(r.get("threads", 0)) != threads:
            continue
        key = (int(r["n_in"]), int(r["n_out"]), float(r["eps"]))
        # seconds per weight (the floor's own ER draw has a slightly different nnz)
        out.setdefault(key, {})[r["kernel"]] = float(r["median_s"]) / float(r["nnz"])
    return out


def time_layer(n_in: int, n_out: int, eps: float, B: int, t: int, reps: int,
               repeat: int, rng) -> tuple:
    """(layer, {kernel: best seconds}) of one shape; the layer's weights are
    restored after the timed updates."""
    lay = SparseLayer.erdos_renyi(n_in, n_out, eps, "he_uniform", rng)
    # 64-byte aligned blocks, as the model's (kernels.aligned_empty)
    X, D, Z, A, G, Zin = (aligned_empty((n, B)) for n in (n_in, n_out, n_out, n_out, n_in,
                                                          n_in))
    for arr in (X, D, Zin):
        arr[...] = rng.standard_normal(arr.shape, dtype=np.float32)
    act = make_activation("relu", 0, n_in, None, None)
    g = np.empty(lay.nnz, np.float32)
    bg = np.empty(n_out, np.float32)
    data0, vel0 = lay.data.copy(), lay.velocity.copy()

    # the trainer's fused backward: the masks kept by the forward pass, and with
    # several threads the split update (model.SPLIT_UPDATE_MAX)
    bits = aligned_empty((n_in, spmm.epilogue_bits_words(B)), np.uint16)
    act_in = make_activation("relu", 0, n_in, None, None)
    Ain = aligned_empty((n_in, B))
    with_bits = spmm.forward(np.zeros(n_in + 1, np.int64), np.zeros(0, np.int32),
                             np.zeros(0, np.float32), np.zeros(n_in, np.float32),
                             np.zeros((1, B), np.float32), Zin, Ain, act_in.kind,
                             act_in.slope, None, 0.3, 7, 0, t, bits)
    Zin[...] = rng.standard_normal(Zin.shape, dtype=np.float32)  # (any sign pattern)
    split = t > 1 and lay.nnz <= SPLIT_UPDATE_MAX

    def upd_fused():
        lay.backward_update(X, D, G, 1e-9, 0.9, 0.0, Z_in=Zin, act_in=act_in, dropout=0.3,
                            key=7, n_threads=t, bits=bits if with_bits else None,
                            grads=(g, bg) if split else None)
        if split:
            lay.apply_gradient(g, bg, 1e-9, 0.9, 0.0, n_threads=t)

    kern = {
        "fwd": lambda: lay.forward(X, Z, n_threads=t),
        "fwd_epi": lambda: lay.forward(X, Z, A, act=act, dropout=0.3, key=7, n_threads=t),
        "bwd_w": lambda: lay.gradient(X, D, g, bg, n_threads=t),
        "bwd_x": lambda: lay.backward_input(D, G, n_threads=t),
        "bwd_fused": upd_fused,
        "update": lambda: lay.update(X, D, 1e-9, 0.9, 0.0, n_threads=t),
    }
    res = {k: best_time(f, repeat, reps) for k, f in kern.items()}
    lay.data[...] = data0
    lay.velocity[...] = vel0
    return lay, res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--roofline", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    B, t = args.batch, args.threads
    floor = floor_times(args.roofline, t)
    rng = np.random.default_rng(0)
    rows = []
    for n_in, n_out, eps in SHAPES:
        lay, res = time_layer(n_in, n_out, eps, B, t, args.reps, args.repeat, rng)
        fl = floor.get((n_in, n_out, float(eps)), {})
        flops = 2.0 * lay.nnz * B
        row = {"n_in": n_in, "n_out": n_out, "eps": eps, "nnz": lay.nnz, "threads": t,
               "seconds": res, "gflops": {k: flops / v / 1e9 for k, v in res.items()},
               "floor_seconds_per_weight": fl}
        rows.append(row)
        # engine at % of the floor: the floor's seconds per weight over ours
        pct = {k: fl[k] * lay.nnz / v for k, v in res.items() if k in fl}
        row["pct_of_floor"] = pct
        parts = [f"{k} {v * 1e6:7.1f}us" + (f" ({pct[k]:4.0%})" if k in pct else "")
                 for k, v in res.items()]
        print(f"{n_in}x{n_out} eps{eps} nnz {lay.nnz}: " + " | ".join(parts), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
