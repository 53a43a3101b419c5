"""The engine's epoch against the kernel floor, in rounds: each round runs the
floor (``bash ROOFLINE DIR FILE``) and then ``bench_epoch.py`` against that
floor run, so that the two always share the machine's mood of the moment.
On a shared VM either one moves by 1.5x within minutes (BENCHMARKS.md §2);
one pair of runs then says little, the median of several pairs more.

For each shape and thread count: the engine's and the floor's seconds per
epoch in every round, their medians and bests, the engine at % of the floor
from the medians and from each round, and two threads against one.  A JSON
file with all of it; one summary line per shape and thread count.

    python bench/bench_floor_rounds.py [--rounds 5] [--roofline ../shared/bench/roofline.sh]
        [--shapes higgs,fmnist,cifar] [--threads 1,2] [--fraction 0.25] [--repeat 2]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_epoch  # noqa: E402

from bench._results import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def one_round(roofline: Path, args, tmp: Path, k: int) -> dict:
    """The floor run, then the engine's epochs against it: {(shape, threads):
    (engine s, floor s)}."""
    floor = tmp / f"floor_{k}.jsonl"
    run = subprocess.run(["bash", str(roofline), str(tmp / f"build_{k}"), str(floor)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        tail = "\n".join(run.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"bench_floor_rounds: the kernel floor {roofline} failed in round "
                         f"{k + 1} (exit {run.returncode}); its last lines:\n{tail}")
    argv = ["--shapes", args.shapes, "--threads", args.threads, "--repeat", str(args.repeat),
            "--fraction", str(args.fraction), "--no-torch", "--floor", str(floor),
            "--json", str(tmp / f"epoch_{k}.json")]
    with contextlib.redirect_stdout(io.StringIO()):  # (its own lines: one summary below)
        out = bench_epoch.main(argv)
    pairs = {}
    for shape, by_threads in out["results"].items():
        for thr, res in by_threads.items():
            if res.get("floor_epoch_s") is None:
                raise SystemExit(f"bench_floor_rounds: the floor run has no line for {shape} "
                                 f"on {thr} threads ({floor})")
            pairs[(shape, int(thr))] = (res["engine"]["epoch_s"], res["floor_epoch_s"])
    return pairs


def summarise(rounds: list[dict]) -> dict:
    """Per (shape, threads): the rounds' figures, medians, bests and ratios."""
    out = {}
    for key in rounds[0]:
        eng = [r[key][0] for r in rounds]
        flo = [r[key][1] for r in rounds]
        out[key] = {"engine_s": eng, "floor_s": flo,
                    "engine_median_s": statistics.median(eng), "engine_best_s": min(eng),
                    "floor_median_s": statistics.median(flo), "floor_best_s": min(flo),
                    "pct_of_floor_medians": statistics.median(flo) / statistics.median(eng),
                    "pct_of_floor_bests": min(flo) / min(eng),
                    "pct_of_floor_rounds": [f / e for e, f in zip(eng, flo)]}
    for (shape, thr), s in out.items():
        one = out.get((shape, 1))
        if thr != 1 and one is not None:
            s["speedup_vs_1_thread_medians"] = one["engine_median_s"] / s["engine_median_s"]
            s["floor_speedup_vs_1_thread_medians"] = one["floor_median_s"] / s["floor_median_s"]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--roofline", default=str(ROOT.parent / "shared" / "bench" / "roofline.sh"))
    ap.add_argument("--shapes", default="higgs,fmnist,cifar")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    roofline = Path(args.roofline)
    if not roofline.is_file():
        raise SystemExit(f"bench_floor_rounds: no kernel floor script at {roofline} (pass "
                         f"--roofline path/to/roofline.sh)")
    if args.rounds < 1:
        raise SystemExit("bench_floor_rounds: --rounds must be at least 1")
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            rounds.append(one_round(roofline, args, Path(tmp), k))
            print(f"# round {k + 1}/{args.rounds} done", flush=True)
    summary = summarise(rounds)
    for (shape, thr), s in summary.items():
        line = (f"{shape:<7} {thr}T  engine median {s['engine_median_s']:.3f} s (best "
                f"{s['engine_best_s']:.3f}) | floor median {s['floor_median_s']:.3f} s (best "
                f"{s['floor_best_s']:.3f}) | engine at {s['pct_of_floor_medians']:.0%} of the "
                f"floor (medians; rounds "
                f"{min(s['pct_of_floor_rounds']):.0%}-{max(s['pct_of_floor_rounds']):.0%})")
        if "speedup_vs_1_thread_medians" in s:
            line += (f" | {thr}T/1T engine {s['speedup_vs_1_thread_medians']:.2f}x, floor "
                     f"{s['floor_speedup_vs_1_thread_medians']:.2f}x")
        print(line, flush=True)
    out = {"started": started, "args": vars(args), "build": bench_epoch.build_info(),
           "results": {f"{shape} {thr}": s for (shape, thr), s in summary.items()}}
    write_results(out, args.json, "floor_rounds")
    return out


if __name__ == "__main__":
    main()
