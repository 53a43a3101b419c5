"""Where the time of a training epoch goes, call by call, on each thread
count: the kernels' call timeline (``spmm.timeline_start``, rowkern.h "call
timeline") recorded over one Trainer epoch of the benchmark networks.

For each kernel call shape, per batch and per call (medians, microseconds):
  total    from the call's start to its end on the calling thread
  fork     from the call's start until the last thread entered the parallel
           region (threads asleep show here)
  rows     each thread's time on its rows: the fastest and the slowest
           thread (load balance; after the bias sums of backward_update)
  join     from the slowest thread's last row to the call's end
and per batch: the kernels' total and the rest (Python, and whatever runs
between the calls).  Thread stamps exist for the one-row loops of
``forward`` and ``backward_update`` (not the four-row loops of batches up to
32, nor the dense output rows); the other calls show their total only.

    python bench/bench_timeline.py [--shapes higgs,fmnist,cifar] [--threads 1,2]
        [--fraction 0.1] [--rounds 3] [--json results/....jsonl]

Each thread count records --rounds epochs and keeps the quietest (the least
time a batch; the range is printed); then a table per network puts each
call's time a batch on every thread count side by side, with its speed-up
over the first, and the part of a batch that ran on one thread on the last
thread count (the calls of a team of one, and the time outside the calls)
with Amdahl's bound on the speed-up it allows at 2, 4, 8 and 16 threads.
Run it on the machine being studied, quiet; on a many-core machine pass
--threads 1,2,4,8,16.  It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_epoch  # noqa: E402
from sparse_mlp import kernels  # noqa: E402


def record_epoch(tr) -> tuple[dict, float]:
    """One epoch of ``tr`` with both builds of spmm recording; the merged
    record in call order, and the epoch's training seconds."""
    cap = 64 * tr.n_batches + 1000
    mods = (kernels.spmm, kernels.spmm_serial)
    for mod in mods:
        mod.timeline_start(cap)
    try:
        bench_epoch.fresh_epoch(tr)
        _, _, seconds = tr.train_epoch()
    finally:
        recs = [mod.timeline_take() for mod in mods]
    lost = sum(r["lost"] for r in recs)
    if lost:
        raise RuntimeError(f"the timeline lost {lost} calls: raise its capacity")
    nt = max(r["stamps"].shape[1] for r in recs)
    for r in recs:  # the serial build stamps one thread: pad to the OpenMP build's width
        pad = nt - r["stamps"].shape[1]
        r["stamps"] = np.pad(r["stamps"], ((0, 0), (0, pad), (0, 0)))
    merged = {k: np.concatenate([r[k] for r in recs])
              for k in ("kind", "threads", "n_in", "n_out", "t_call", "t_done", "stamps")}
    order = np.argsort(merged["t_call"], kind="stable")
    return {k: v[order] for k, v in merged.items()}, seconds


def summarise(rec: dict, n_batches: int) -> list[dict]:
    """One row per (kernel, n_in, n_out, threads): calls per batch, us per
    batch, and medians per call of total / fork / rows (min, max) / join."""
    kinds = kernels.spmm.TIMELINE_KINDS
    keys = np.stack([rec["kind"], rec["n_in"], rec["n_out"], rec["threads"]], axis=1)
    rows = []
    for key in np.unique(keys, axis=0):
        sel = np.all(keys == key, axis=1)
        t_call, t_done = rec["t_call"][sel], rec["t_done"][sel]
        st = rec["stamps"][sel][:, : int(key[3])]  # (calls, team, 3)
        total = (t_done - t_call) / 1e3
        row = {"kernel": kinds[int(key[0])], "n_in": int(key[1]), "n_out": int(key[2]),
               "threads": int(key[3]), "calls_per_batch": round(sel.sum() / n_batches, 2),
               "us_per_batch": round(float(total.sum()) / n_batches, 1),
               "total_us": round(float(np.median(total)), 1)}
        stamped = np.all(st[:, :, 2] > 0, axis=1)
        if stamped.any():
            s = st[stamped]
            tc, td = t_call[stamped], t_done[stamped]
            busy = (s[:, :, 2] - s[:, :, 1]) / 1e3
            row.update(fork_us=round(float(np.median((s[:, :, 0].max(1) - tc) / 1e3)), 1),
                       rows_min_us=round(float(np.median(busy.min(1))), 1),
                       rows_max_us=round(float(np.median(busy.max(1))), 1),
                       join_us=round(float(np.median((td - s[:, :, 2].max(1)) / 1e3)), 1))
        rows.append(row)
    rows.sort(key=lambda r: -r["us_per_batch"])
    return rows


def side_by_side(shape: str, runs: dict) -> None:
    """Each call's us a batch on every thread count, and the speed-up over
    the first thread count (``runs``: threads -> (batch_us, kernel_us, rows))."""
    ts = list(runs)
    per = {t: {(r["kernel"], r["n_in"], r["n_out"]): r["us_per_batch"] for r in runs[t][2]}
           for t in ts}
    keys = sorted(set().union(*per.values()), key=lambda k: -per[ts[0]].get(k, 0.0))
    print(f"\n{shape}: us a batch on {', '.join(map(str, ts))} thread(s), and the speed-up "
          f"over {ts[0]}")
    head = " ".join(f"{t:>8d}T" for t in ts)
    print(f"  {'kernel':16s} {'n_in x n_out':>13s} {head}   speed-up")
    lines = [(f"{k[0]:16s} {k[1]:6d} x {k[2]:5d}", [per[t].get(k, 0.0) for t in ts])
             for k in keys]
    lines.append(("(in kernel calls)", [runs[t][1] for t in ts]))
    lines.append(("(outside them)", [runs[t][0] - runs[t][1] for t in ts]))
    lines.append(("(the batch)", [runs[t][0] for t in ts]))
    for name, v in lines:
        ups = " ".join(f"{v[0] / x:5.2f}x" if x > 0 and v[0] > 0 else "     -" for x in v[1:])
        print(f"  {name:30s} " + " ".join(f"{x:9.1f}" for x in v) + f"   {ups}")
    t_last = ts[-1]
    if t_last > 1:
        serial, bound = amdahl(runs[ts[0]][0], runs[t_last])
        print(f"  serial on {t_last} threads: {serial:.1f} us a batch (calls of a team of "
              f"one, and the time outside the calls); Amdahl's bound on the speed-up "
              f"over {ts[0]} thread(s): " + ", ".join(f"{n} threads {b:.1f}x"
                                                   for n, b in bound.items()))


def amdahl(first_batch_us: float, run: tuple, threads=(2, 4, 8, 16)) -> tuple[float, dict]:
    """The part of a batch that ran on one thread in ``run`` (threads ->
    (batch_us, kernel_us, rows)): the calls whose team was one and the time
    outside the calls, in us a batch; and the speed-up over ``first_batch_us``
    that N threads could reach at most if everything else divided perfectly."""
    batch_us, kernel_us, rows = run
    serial = (batch_us - kernel_us) + sum(r["us_per_batch"] for r in rows if r["threads"] == 1)
    rest = max(0.0, first_batch_us - serial)
    return serial, {n: first_batch_us / (serial + rest / n) for n in threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="higgs,fmnist,cifar")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=3,
                    help="epochs recorded per thread count; the quietest is kept")
    ap.add_argument("--json", help="append one JSON line per shape and thread count here")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    for shape in args.shapes.split(","):
        runs = {}
        for t in (int(x) for x in args.threads.split(",")):
            tr = bench_epoch.make_trainer(shape, t, args.fraction)
            bench_epoch.fresh_epoch(tr)
            tr.train_epoch()  # warm caches and allocators
            nb = tr.n_batches
            taken = []
            for _ in range(args.rounds):
                rec, seconds = record_epoch(tr)
                taken.append((seconds / nb * 1e6, rec))
            batch_all = sorted(round(b, 1) for b, _ in taken)
            batch_us, rec = min(taken, key=lambda x: x[0])
            kern_us = float((rec["t_done"] - rec["t_call"]).sum()) / 1e3 / nb
            rows = summarise(rec, nb)
            runs[t] = (batch_us, kern_us, rows)
            print(f"\n{shape}, {t} thread(s): {batch_us:.1f} us a batch (the quietest of "
                  f"{batch_all}), {kern_us:.1f} in kernel calls, {batch_us - kern_us:.1f} "
                  f"outside them ({nb} batches)")
            print(f"  {'kernel':16s} {'n_in x n_out':>13s} {'team':>4s} {'calls':>5s} "
                  f"{'us/batch':>8s} | {'total':>6s} {'fork':>5s} {'rows min':>8s} "
                  f"{'rows max':>8s} {'join':>5s}")
            for r in rows:
                extra = (f"{r['fork_us']:5.1f} {r['rows_min_us']:8.1f} {r['rows_max_us']:8.1f} "
                         f"{r['join_us']:5.1f}" if "fork_us" in r else "")
                print(f"  {r['kernel']:16s} {r['n_in']:6d} x {r['n_out']:5d} {r['threads']:4d} "
                      f"{r['calls_per_batch']:5.2f} {r['us_per_batch']:8.1f} | "
                      f"{r['total_us']:6.1f} {extra}")
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"shape": shape, "threads": t, "fraction": args.fraction,
                                        "batch_us": round(batch_us, 1),
                                        "batch_us_rounds": batch_all,
                                        "kernel_us": round(kern_us, 1), "calls": rows}) + "\n")
        if len(runs) > 1:
            side_by_side(shape, runs)


if __name__ == "__main__":
    main()
