"""Madelon's 500 epochs on this CPU against the kernel floor of its step, in
rounds (floor, then a whole run), and how much of a step is Python and call
overhead.

Each round: (1) the floor: roofline.c built with -DBATCH=32, one thread, on
Madelon's four layers (500-400, 400-100, 100-400, 400-2, eps 10), the sum of
their "fwd+bwd_w+bwd_x" medians less the first layer's bwd_x (training
computes no gradient to the inputs), times 31,000 steps; (2) one run of
``run_experiment.py --dataset madelon --data-dir DATA --threads 1`` (the
paper's All-ReLU preset, 500 epochs), its ``train_s`` from summary.json; (3)
``train_step`` of Madelon's network and of a network of 8-neuron layers on
one thread at batch 32 (us a step, best of five rounds): the second is the
step's fixed cost (Python, the kernels' calls and their entry), which the
first pays too.

    python results/bench_issue22/experiments_dec06g/madelon_here.py DATA_DIR ROUNDS OUT.jsonl
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
LAYERS = ["500 400 10", "400 100 10", "100 400 10", "400 2 10"]
STEPS = 31000  # 500 epochs of Madelon's 2000 training samples at batch 32 (62 a epoch)


def floor_s(binary: Path) -> float:
    total = 0.0
    for layer in LAYERS:
        out = subprocess.run([str(binary)] + layer.split() + ["3000"], capture_output=True,
                             text=True, check=True, env={"OMP_NUM_THREADS": "1"}).stdout
        rows = {json.loads(x)["kernel"]: json.loads(x)["median_s"] for x in out.splitlines()}
        total += rows["fwd+bwd_w+bwd_x"] - (rows["bwd_x"] if layer == LAYERS[0] else 0.0)
    return total * STEPS


def step_us() -> dict:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from small_nets import best_us, small_step; "
            "print(json.dumps({n: round(best_us(small_step(n), 2000), 1) "
            "for n in ('madelon', 'tiny')}))")
    return json.loads(subprocess.run([sys.executable, "-c", code, str(HERE)], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout)


def main() -> None:
    data, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    tmp = Path(tempfile.mkdtemp())
    binary = tmp / "roofline32"
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-DBATCH=32",
                    str(ROOT.parent / "shared/bench/roofline.c"), "-o", str(binary), "-lm"],
                   check=True)
    with open(out, "a") as f:
        for r in range(rounds):
            row = {"round": r + 1, "commit": commit,
                   "utc": time.strftime("%H:%M:%S", time.gmtime()),
                   "floor_500_epochs_s": round(floor_s(binary), 3)}
            with tempfile.TemporaryDirectory() as run_dir:
                subprocess.run([sys.executable, "run_experiment.py", "--dataset", "madelon",
                                "--data-dir", data, "--threads", "1", "--out", run_dir],
                               cwd=ROOT, check=True, capture_output=True)
                s = json.load(open(f"{run_dir}/summary.json"))
            row.update(train_s=round(s["train_s"], 3), final_test_acc=s["final_test_acc"],
                       final_train_loss=s["final_train_loss"])
            row["engine_at_pct_of_floor"] = round(
                100 * row["floor_500_epochs_s"] / row["train_s"], 1)
            row["step_us"] = step_us()
            print(json.dumps(row), flush=True)
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
