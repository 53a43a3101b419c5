"""Many-core scaling: kernel threads (one process) and WASAP/WASSP ranks (MPI).

For a machine with more cores than the 2-core development VMs (issues 20 and
22).  Two parts, each writing into one JSON file:

threads  ``bench/bench_epoch.py --no-torch`` at each thread count on the
         Higgs, FashionMNIST and CIFAR10 shapes (seconds per epoch, training
         + evolution, the real Trainer);
ranks    ``mpiexec -n K+1 run_experiment.py --parallel MODE`` on synthetic
         data of the Higgs and FashionMNIST shapes (all epochs in phase 1,
         one thread per rank), beside the sequential engine on 1 thread and
         on every core, same data and settings: seconds per epoch (from
         metrics.csv), the parameter server's wait and the bytes through it
         (summary.json).

    python bench/bench_scaling.py --threads 1,2,4,8,16 --workers 1,2,4,8,15 \\
        --json results/scaling_16core.json

Nothing here is asserted: the figures go to BENCHMARKS.md with the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (features, classes, training samples, hidden, epsilon, init) of the paper's shapes
RANK_SHAPES = {
    "higgs": (28, 2, 105_000, "1000,1000,1000", 10, "xavier"),
    "fmnist": (784, 10, 60_000, "1000,1000,1000", 20, "he_uniform"),
}


def machine() -> dict:
    info = {"python": platform.python_version(), "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)), "platform": platform.platform()}
    try:
        model = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                 if ln.startswith("model name")]
        info["cpu"] = model[0] if model else None
    except OSError:
        info["cpu"] = None
    return info


def thread_part(threads: str, fraction: float, shapes: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "epoch.json"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_epoch.py"), "--threads",
                            threads, "--repeat", "1", "--fraction", str(fraction), "--shapes",
                            shapes, "--no-torch", "--json", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
        res = {"returncode": r.returncode, "seconds": time.perf_counter() - t0,
               "stdout_tail": r.stdout[-4000:], "stderr_tail": r.stderr[-2000:]}
        if out.exists():
            res["result"] = json.loads(out.read_text())
        return res


def _epoch_seconds(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as fh:
        return [float(r["train_s"]) + float(r["evolution_s"] or 0) for r in csv.DictReader(fh)]


def _run(cmd: list[str], run_dir: Path, timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"cmd": " ".join(cmd), "error": f"timed out after {timeout:.0f}s"}
    res = {"cmd": " ".join(cmd), "returncode": r.returncode,
           "wall_s": time.perf_counter() - t0}
    if r.returncode != 0:
        res["stderr_tail"] = (r.stdout + r.stderr)[-3000:]
        return res
    res["epoch_s"] = _epoch_seconds(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    res["test_acc"] = summary.get("final_test_acc")
    res["parallel"] = summary.get("parallel")
    return res


def rank_part(workers: list[int], modes: list[str], shapes: list[str], epochs: int,
              all_cores: int, mpiexec: str, timeout: float, out: dict, save) -> dict:
    """Fills ``out`` run by run, calling ``save()`` after each (a run cut
    short by a time limit keeps what was measured)."""
    tmp = Path(tempfile.mkdtemp(prefix="scaling_"))
    try:
        for shape in shapes:
            f, c, n, hidden, eps, init = RANK_SHAPES[shape]
            common = ["--dataset", "synthetic", "--n-features", str(f), "--n-classes", str(c),
                      "--n-train", str(n), "--n-test", "2000", "--hidden", hidden, "--epsilon",
                      str(eps), "--weight-init", init, "--dropout", "0.3", "--batch-size",
                      "128", "--epochs", str(epochs), "--eval-every", str(epochs),
                      "--checkpoint-every", "0", "--no-progress", "--quiet"]
            rows = out[shape] = {}
            for threads in sorted({1, all_cores}):
                d = tmp / f"{shape}_seq_t{threads}"
                rows[f"sequential_t{threads}"] = _run(
                    [sys.executable, "run_experiment.py", *common, "--threads", str(threads),
                     "--out", str(d)], d, timeout)
                print(shape, f"sequential t{threads}", rows[f"sequential_t{threads}"].get(
                    "epoch_s"), flush=True)
                save()
            for mode in modes:
                for k in workers:
                    d = tmp / f"{shape}_{mode}_k{k}"
                    rows[f"{mode}_k{k}"] = _run(
                        [mpiexec, "-n", str(k + 1), sys.executable, "run_experiment.py",
                         *common, "--parallel", mode, "--phase1-epochs", str(epochs),
                         "--threads", "1", "--out", str(d)], d, timeout)
                    print(shape, mode, k, rows[f"{mode}_k{k}"].get("epoch_s"),
                          rows[f"{mode}_k{k}"].get("error") or "", flush=True)
                    save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2,4,8,16")
    p.add_argument("--workers", default="1,2,4,8,15")
    p.add_argument("--modes", default="wasap,wassp")
    p.add_argument("--shapes", default="higgs,fmnist")
    p.add_argument("--thread-shapes", default="higgs,fmnist,cifar")
    p.add_argument("--fraction", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--parts", default="threads,ranks")
    p.add_argument("--mpiexec", default=shutil.which("mpiexec") or "mpiexec")
    p.add_argument("--timeout", type=float, default=240.0, help="per run, seconds")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    res: dict = {"machine": machine(), "argv": sys.argv}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        path.write_text(json.dumps(res, indent=1))

    parts = args.parts.split(",")
    if "threads" in parts:
        res["threads"] = thread_part(args.threads, args.fraction, args.thread_shapes,
                                     args.timeout * 3)
        save()
        print(res["threads"].get("stdout_tail", ""), flush=True)
    if "ranks" in parts:
        res["ranks"] = {}
        rank_part([int(k) for k in args.workers.split(",")], args.modes.split(","),
                  args.shapes.split(","), args.epochs,
                  max(int(t) for t in args.threads.split(",")), args.mpiexec, args.timeout,
                  res["ranks"], save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
