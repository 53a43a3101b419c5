"""Same seeds, same metrics: run a set of command lines in two checkouts and
compare their metrics.csv files (timing columns left out).

    git worktree add /tmp/base <commit> && (cd /tmp/base && make NO_DEPS=1)
    python bench/same_metrics.py --base /tmp/base [--data-dir ../shared/data/madelon]

Each case runs ``run_experiment.py`` in both trees with its own ``--out`` under
a temporary folder; exit status 0 when every case gives identical rows (and
identical post_pruning.csv), 1 otherwise.  Used to check that a refactor
leaves every result of the README as it was.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"train_s", "test_s", "evolution_s", "train_eval_s", "bytes"}
CASES = {
    "digits": ["--epochs", "3", "--threads", "1"],
    "digits_growth": ["--epochs", "3", "--growth", "gradient", "--hidden", "100,100",
                      "--threads", "1"],
    "digits_diagnostics": ["--epochs", "2", "--diagnostics", "--train-eval", "200",
                           "--hidden", "60,60", "--threads", "1"],
    "digits_topology_srelu": ["--epochs", "3", "--save-topology", "--activation", "srelu",
                              "--hidden", "80,80", "--threads", "2"],
    "digits_micro_batches": ["--epochs", "3", "--micro-batch", "8", "--hidden", "100,100",
                             "--threads", "2"],
}


def madelon_case(data_dir: str) -> list[str]:
    return ["--dataset", "madelon", "--data-dir", data_dir, "--epochs", "8",
            "--importance-pruning", "--ip-start", "2", "--ip-every", "2", "--threads", "2",
            "--post-prune", "10,20"]


def results(out: Path) -> tuple:
    with open(out / "metrics.csv") as fh:
        rows = [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]
    pp = out / "post_pruning.csv"
    return rows, pp.read_text() if pp.exists() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the other checkout (built)")
    p.add_argument("--data-dir", help="Madelon's files: adds the paper-preset case with IP")
    args = p.parse_args(argv)
    cases = dict(CASES)
    if args.data_dir:
        cases["madelon_ip"] = madelon_case(str(Path(args.data_dir).resolve()))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in cases.items():
            got = []
            for label, tree in (("base", Path(args.base).resolve()), ("this", ROOT)):
                out = Path(tmp) / f"{label}_{name}"
                r = subprocess.run([sys.executable, "run_experiment.py", *flags, "--out",
                                    str(out), "--no-progress", "--quiet"], cwd=tree,
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"{name}: {label} failed ({r.returncode}): {r.stderr.strip()}")
                    return 1
                got.append(results(out))
            same = got[0] == got[1]
            ok &= same
            print(f"{name}: {'identical' if same else 'DIFFERENT'} metrics "
                  f"({len(got[1][0])} epochs)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
