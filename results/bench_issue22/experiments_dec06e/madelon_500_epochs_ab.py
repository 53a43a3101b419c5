"""Madelon, 500 epochs, the paper's All-ReLU preset, one thread (the issue's
figure), with each hidden layer's delta over its Z (off) or over its
activations (on, model.DELTA_OVER_INPUT), in alternating processes: the run's
training seconds, final training loss and test accuracy (summary.json).
python madelon_500_epochs_ab.py DATA_DIR PAIRS OUT.jsonl"""
import json, subprocess, sys, tempfile
data, pairs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
code = ("import sys, runpy; import sparse_mlp.model as M; M.DELTA_OVER_INPUT = {on}; "
        "sys.argv = ['run_experiment.py'] + sys.argv[1:]; "
        "runpy.run_path('run_experiment.py', run_name='__main__')")
with open(out, "a") as f:
    for p in range(pairs):
        for on in ((False, True) if p % 2 == 0 else (True, False)):
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run([sys.executable, "-c", code.format(on=on), "--dataset", "madelon",
                                "--data-dir", data, "--threads", "1", "--out", tmp],
                               check=True, capture_output=True)
                s = json.load(open(f"{tmp}/summary.json"))
            row = {"pair": p, "DELTA_OVER_INPUT": on, "commit": commit,
                   "train_s": round(s["train_s"], 3), "final_train_loss": s["final_train_loss"],
                   "final_test_acc": s["final_test_acc"]}
            print(json.dumps(row), flush=True)
            f.write(json.dumps(row) + "\n")
