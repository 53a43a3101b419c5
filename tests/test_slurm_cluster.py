"""The SLURM job scripts under a real SLURM (slow; `.ci/run` runs it).

A one-node SLURM 22.05 cluster on localhost (Debian's slurmctld, slurmd and
munge, set up by ``scripts/ci/slurm_cluster.sh``, which installs them when
absent) runs, on the real Madelon files:

* ``scripts/slurm/submit_table2.sh madelon 1 EPOCHS``: the 6-task array and
  the collect job (``--dependency=afterany``), which writes Table 2 and 6;
* one task of ``table2_array.sbatch`` sent USR1 mid-run with
  ``scancel --signal=USR1 --batch``: it checkpoints, exits 75, requeues
  itself, resumes and ends with the metrics of an uninterrupted run;
* ``scripts/slurm_wasap.sh`` (LAUNCH=mpiexec, 6 ranks) and
  ``scripts/slurm/table3_mpi.sbatch`` with pip's MPICH ``mpiexec`` inside the
  allocation, the latter reading the Table 2 runs of the first test.

Skipped, with the reason, when not root, when the packages cannot be
installed, when the cluster does not start, or without the Madelon files.
The cluster is stopped at the end unless it was already up before.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import MADELON_DIR, madelon_available

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "ci" / "slurm_cluster.sh"
SLURM = ROOT / "scripts" / "slurm"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
EPOCHS = 20        # the array + collect job (the issue's `submit_table2.sh madelon 1 20`)
LONG_EPOCHS = 300  # the preempted task: long enough (~10 s alone) to be signalled mid-run
ALLRELU_SEED0 = 2  # task index of (allrelu, seed 0) with SEEDS=1


def _skip(reason: str):
    print(f"test_slurm_cluster skipped: {reason}")
    pytest.skip(reason)


def _node_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip().startswith(("idle", "mixed", "allocated"))


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        _skip("needs root: it installs slurmctld/slurmd/munge and starts the daemons")
    if not madelon_available():
        _skip(f"the UCI Madelon files are not in {MADELON_DIR} (set SPARSE_MLP_MADELON_DIR)")
    if not shutil.which("mpiexec"):
        _skip("no mpiexec (`make mpi` installs MPICH's, or use the cluster's MPI)")
    was_up = _node_up()
    try:
        r = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True,
                           timeout=900)
    except subprocess.TimeoutExpired:
        _skip("scripts/ci/slurm_cluster.sh up did not finish within 15 minutes")
    if r.returncode != 0:
        why = "cannot set it up here" if r.returncode == 77 else "the cluster did not start"
        _skip(f"one-node SLURM cluster: {why} (exit {r.returncode}):\n{r.stderr[-3000:]}")
    yield
    if not was_up:
        subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, timeout=120)


def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "PMI_", "PMIX_", "OMPI_", "HYDRA_"))}
    # %j: one file per job and per array task; never into the repository root
    env["SBATCH_OUTPUT"] = str(tmp / "slurm-%x-%j.out")
    env["PYTHON"] = env.get("PYTHON", "python3")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _sbatch(args: list[str], env: dict) -> str:
    r = subprocess.run(["sbatch", "--parsable", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().split(";")[0]


def _jobs(jobid: str) -> list[dict]:
    """Every record of JOBID (an array: one per task, the pending ones in one)."""
    r = subprocess.run(["scontrol", "-o", "show", "job", jobid], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = []
    for line in r.stdout.splitlines():
        if line.strip():
            recs.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
    return recs


def _wait(jobids: list[str], timeout: float, logs: Path) -> list[dict]:
    t0 = time.monotonic()
    while True:
        recs = [rec for j in jobids for rec in _jobs(j)]
        if recs and all(rec["JobState"] in TERMINAL for rec in recs):
            return recs
        if time.monotonic() - t0 > timeout:
            subprocess.run(["scancel", *jobids])
            pytest.fail(f"jobs {jobids} not done within {timeout:.0f}s: "
                        + "; ".join(f"{r['JobId']} {r['JobState']}" for r in recs)
                        + "\n" + _logs(logs))
        time.sleep(2)


def _logs(folder: Path) -> str:
    return "\n".join(f"==> {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                     for p in sorted(folder.glob("*.out")))


def _assert_ok(recs: list[dict], logs: Path):
    bad = [r for r in recs if r["JobState"] != "COMPLETED" or r["ExitCode"] != "0:0"]
    assert not bad, ("; ".join(f"{r['JobId']} {r['JobState']} exit {r['ExitCode']}"
                               for r in bad) + "\n" + _logs(logs))


def _rows(path: Path) -> list[dict]:
    """metrics.csv without the timing columns (*_s)."""
    with path.open() as f:
        return [{k: v for k, v in row.items() if not k.endswith("_s")}
                for row in csv.DictReader(f)]


def _csv_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("slurm")


def test_table2_array_and_collect_job(cluster, work):
    out = work / "madelon_table2"
    logs = work / "logs_table2"
    logs.mkdir()
    env = _env(logs, DATA_DIR=MADELON_DIR, OUT=out)
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SLURM / "submit_table2.sh"), "madelon", "1", str(EPOCHS)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    collect = r.stdout.strip().split()[-1]          # "Submitted batch job N"
    dep = re.match(r"afterany:(\d+)_\*", _jobs(collect)[0].get("Dependency", ""))
    array = dep.group(1) if dep else str(int(collect) - 1)   # submitted just before it
    assert {rec.get("ArrayJobId") for rec in _jobs(array)} == {array}
    recs = _wait([array, collect], 420, logs)
    print(f"Table 2 array + collect job: {time.monotonic() - t0:.0f}s")
    _assert_ok(recs, logs)
    tasks = sorted(int(rec["ArrayTaskId"]) for rec in recs if rec.get("ArrayJobId") == array)
    assert tasks == list(range(6))
    table = _csv_rows(out / "table2.csv")
    assert len(table) == 6, table
    assert sorted(row["key"] for row in table) == sorted(
        ["relu", "relu_ip", "allrelu", "allrelu_ip", "dense_relu", "dense_allrelu"])
    assert all(row["status"] == "ok" and int(row["epochs"]) == EPOCHS for row in table), table
    assert (out / "table2.md").is_file() and (out / "table6.md").is_file()
    assert (out / "table6.csv").is_file()
    for row in ("relu", "allrelu", "dense_relu"):
        assert (out / row / "seed0" / "summary.json").is_file()


def _wait_for_epoch(log: Path, jobid: str, epoch: int, epochs: int, timeout: float) -> int:
    pattern = re.compile(rf"epoch (\d+)/{epochs}\b")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        text = log.read_text(errors="replace") if log.exists() else ""
        seen = [int(m) for m in pattern.findall(text)]
        if seen and max(seen) >= epoch:
            return max(seen)
        if any(rec["JobState"] in TERMINAL for rec in _jobs(jobid)):
            break
        time.sleep(0.2)
    pytest.fail(f"job {jobid} never reached epoch {epoch}:\n{_logs(log.parent)}")


def test_preempted_table2_task_requeues_and_resumes_exactly(cluster, work):
    """USR1 to the batch shell of one task (what `--signal=B:USR1@300` does
    before the time limit): the training checkpoints and exits 75, the task
    requeues itself, and the requeued task resumes from the checkpoint and
    ends with the metrics of an uninterrupted run of the same row and seed."""
    logs = work / "logs_preempt"
    logs.mkdir()
    common = dict(DATASET="madelon", SEEDS=1, EPOCHS=LONG_EPOCHS, DATA_DIR=MADELON_DIR)
    args = [f"--array={ALLRELU_SEED0}", str(SLURM / "table2_array.sbatch")]
    straight = _sbatch(args, _env(logs, OUT=work / "straight", **common))
    preempted = _sbatch(args, _env(logs, OUT=work / "preempted", **common))
    t0 = time.monotonic()
    # the task's own job id (a one-task array: the array's id)
    task = _jobs(preempted)[0]["JobId"]
    at = _wait_for_epoch(logs / f"slurm-table2-{task}.out", preempted, 10, LONG_EPOCHS, 240)
    r = subprocess.run(["scancel", "--signal=USR1", "--batch", f"{preempted}_{ALLRELU_SEED0}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = _wait([straight, preempted], 360, logs)
    print(f"preempted at epoch {at}/{LONG_EPOCHS}; both runs done in {time.monotonic() - t0:.0f}s")
    _assert_ok(recs, logs)
    rec = {r["JobId"]: r for r in recs}
    assert rec[task]["Restarts"] == "1", rec[task]
    log = (logs / f"slurm-table2-{task}.out").read_text()
    # the first session's lines stay (#SBATCH --open-mode=append) above the requeued one's
    assert f"preempted: checkpoint saved, requeueing job {task}" in log, log
    assert "Continue it exactly with --resume auto" in log, log
    run = work / "preempted" / "allrelu" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sessions"] == 2 and len(summary["resumed_from"]) == 1, summary
    ref = work / "straight" / "allrelu" / "seed0"
    assert json.loads((ref / "summary.json").read_text())["sessions"] == 1
    got, want = _rows(run / "metrics.csv"), _rows(ref / "metrics.csv")
    assert len(want) == LONG_EPOCHS
    assert got == want, "resumed run's metrics differ from the uninterrupted run's"


def test_slurm_wasap_with_mpiexec_preempted_requeues_and_resumes_exactly(cluster, work):
    """scripts/slurm_wasap.sh, LAUNCH=mpiexec: 6 ranks (5 workers + the
    parameter server) inside the allocation. WASSP (deterministic): one job
    runs straight, the other gets USR1 mid-run; the script passes it to
    mpiexec, which passes it to every rank; rank 0 checkpoints, every rank
    exits 75, the job requeues itself and resumes with the same ranks, and
    ends with the straight run's metrics."""
    logs = work / "logs_wasap"
    logs.mkdir()
    epochs = 40
    extra = f"--data-dir {MADELON_DIR} --epochs {epochs}"
    common = dict(LAUNCH="mpiexec", MODE="wassp", DATASET="madelon", EXTRA=extra)
    script = str(ROOT / "scripts" / "slurm_wasap.sh")
    straight = _sbatch([script], _env(logs, OUT=work / "wassp_straight", **common))
    preempted = _sbatch([script], _env(logs, OUT=work / "wassp_preempted", **common))
    t0 = time.monotonic()
    log = logs / f"slurm-wasap-{preempted}.out"
    at = _wait_for_epoch(log, preempted, 3, epochs, 240)
    r = subprocess.run(["scancel", "--signal=USR1", "--batch", preempted],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = _wait([straight, preempted], 360, logs)
    print(f"slurm_wasap.sh x2 (6 ranks each), preempted at epoch {at}/{epochs}: "
          f"{time.monotonic() - t0:.0f}s")
    _assert_ok(recs, logs)
    rec = {r["JobId"]: r for r in recs}
    assert rec[preempted]["Restarts"] == "1", rec[preempted]
    text = log.read_text()
    assert text.count("MPI: 6 ranks (1 parameter server + 5 workers)") == 2, text
    assert "SIGUSR1 received: asking every rank to checkpoint and stop" in text, text
    assert "requeueing" in text, text
    run, ref = work / "wassp_preempted", work / "wassp_straight"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sessions"] == 2 and summary["parallel"]["mode"] == "wassp", summary
    assert summary["parallel"]["workers"] == 5, summary
    got = [{k: v for k, v in row.items() if k != "bytes"} for row in _rows(run / "metrics.csv")]
    want = [{k: v for k, v in row.items() if k != "bytes"} for row in _rows(ref / "metrics.csv")]
    assert len(want) == epochs
    assert got == want, "resumed WASSP run's metrics differ from the uninterrupted run's"


def test_table3_mpi_sbatch_with_mpiexec_in_the_allocation(cluster, work):
    """Table 3's four parallel rows on 5 workers + 1 parameter server; the
    sequential rows come from the first test's Table 2 runs beside OUT."""
    logs = work / "logs_table3"
    logs.mkdir()
    out = work / "madelon_table3"
    env = _env(logs, DATASET="madelon", SEEDS=1, EPOCHS=EPOCHS, OUT=out, DATA_DIR=MADELON_DIR)
    job = _sbatch([str(SLURM / "table3_mpi.sbatch")], env)
    t0 = time.monotonic()
    recs = _wait([job], 420, logs)
    print(f"table3_mpi.sbatch (6 ranks): {time.monotonic() - t0:.0f}s")
    _assert_ok(recs, logs)
    assert (out / "table3.md").is_file() and (out / "table3.csv").is_file(), _logs(logs)
    table = {row["key"]: row for row in _csv_rows(out / "table3.csv")}
    for key in ("wassp", "wassp_ip", "wasap", "wasap_ip"):
        summary = json.loads((out / key / "seed0" / "summary.json").read_text())
        assert summary["epochs"] == EPOCHS and summary["parallel"]["workers"] == 5, summary
        assert table[key]["seeds"] == "1" and table[key]["processes"] == "6", table[key]
    if (work / "madelon_table2" / "allrelu" / "seed0" / "summary.json").is_file():
        # the sequential rows: the first test's Table 2 runs, in madelon_table2 beside OUT
        assert table["allrelu"]["seeds"] == "1" and table["allrelu_ip"]["seeds"] == "1", table
