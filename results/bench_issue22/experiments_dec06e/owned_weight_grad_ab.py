"""The first layer's weight gradient with rows owned by threads (this tree)
against the dynamic schedule (a tree at dee3f6a, BASE), in alternating
processes: bench/bench_timeline.py --threads 2 on each tree in turn, ROUNDS
times; prints each tree's weight_grad call and batch (us, the quietest epoch
of three each time).
python owned_weight_grad_ab.py BASE SHAPES ROUNDS OUT.jsonl"""
import json, subprocess, sys, tempfile, os
base, shapes, rounds, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
here = os.getcwd()
res = {}
for r in range(rounds):
    for tree in (("owned", here), ("dynamic", base)) if r % 2 == 0 else (("dynamic", base), ("owned", here)):
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
            subprocess.run([sys.executable, "bench/bench_timeline.py", "--shapes", shapes,
                            "--threads", "2", "--fraction", "0.25", "--rounds", "3",
                            "--json", f.name], cwd=tree[1], check=True, capture_output=True)
            for line in open(f.name):
                d = json.loads(line)
                wg = [c for c in d["calls"] if c["kernel"] == "weight_grad"]
                row = {"round": r, "tree": tree[0], "shape": d["shape"],
                       "batch_us": d["batch_us"], "weight_grad_us": wg[0]["us_per_batch"],
                       "weight_grad_median_call_us": wg[0]["total_us"],
                       "calls": {f'{c["kernel"]} {c["n_in"]}x{c["n_out"]} t{c["threads"]}':
                                 c["us_per_batch"] for c in d["calls"]}}
                print(json.dumps(row), flush=True)
                with open(out, "a") as o:
                    o.write(json.dumps(row) + "\n")
