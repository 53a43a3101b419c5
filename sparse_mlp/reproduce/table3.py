"""Table 3: WASSP-SGD and WASAP-SGD (``sparse_mlp.parallel``, under MPI)
next to the sequential rows, a PyTorch CPU reference and the paper's."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..presets import TABLE3_EXTRA, preset_for
from ..run import load_data
from .common import (
    PAPER_EPOCHS,
    _finished,
    _fmt,
    _mean_std,
    _row_config,
    _write_csv,
    _write_text,
    collect_rows,
    table2_base,
)
from .paper import paper_table3

log = logging.getLogger(__name__)

# dataset: [(framework, IP, CPU cores, GPU, accuracy % or None, minutes, CPU %, MB)]
PAPER_TABLE3: dict[str, list[tuple]] = paper_table3()
TABLE3_WORKERS = 5  # the paper: 5 workers + 1 parameter server on 6 cores
# (key, parallel mode, Importance Pruning): All-ReLU, as the paper's Table 3
TABLE3_ROWS = (
    ("wassp", "wassp", False),
    ("wassp_ip", "wassp", True),
    ("wasap", "wasap", False),
    ("wasap_ip", "wasap", True),
)
TABLE3_LABELS = {"wassp": "WASSP-SGD", "wassp_ip": "WASSP-SGD", "wasap": "WASAP-SGD",
                 "wasap_ip": "WASAP-SGD", "allrelu": "Sequential", "allrelu_ip": "Sequential"}
# environment variables MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's PMI) set
MPI_LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                     "MPI_LOCALNRANKS")


def mpi_world():
    """MPI.COMM_WORLD when this process was started by an MPI launcher with 2
    or more ranks, else None (mpi4py is not even imported then)."""
    if not any(v in os.environ for v in MPI_LAUNCHER_VARS):
        return None
    try:
        from mpi4py import MPI
    except Exception:  # no mpi4py, or a broken MPI library
        return None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() >= 2 else None


def mpiexec_command(dataset: str, seeds: int, epochs: int | None, out: str | Path,
                    workers: int = TABLE3_WORKERS, synthetic: bool = False,
                    overrides: dict | None = None) -> str:
    """The command line that runs Table 3's parallel rows (K workers + 1 PS)."""
    import shlex

    parts = ["mpiexec", "-n", str(workers + 1), "python", "run_experiment.py", "--reproduce",
             "table3", "--dataset", dataset, "--seeds", str(seeds)]
    if epochs is not None:
        parts += ["--epochs", str(epochs)]
    for key in ("data_dir", "threads", "er_sampling", "parallel_semantics"):
        if (overrides or {}).get(key) is not None:
            parts += [f"--{key.replace('_', '-')}", str(overrides[key])]
    if synthetic:
        parts.append("--synthetic-shape")
    parts += ["--out", str(out)]
    return shlex.join(parts)


def torch_cpu_reference(dataset: str, bench_dir: Path | None = None) -> list[dict]:
    """PyTorch CPU timings of the dense x mask baseline for ``dataset``'s
    shape, from ``bench/results/torch_baseline_*.json`` (bench/torch_baseline.py),
    per thread count: seconds per epoch and minutes for 500 epochs."""
    bench_dir = bench_dir or Path(__file__).resolve().parents[2] / "bench" / "results"
    found: dict[int, list[float]] = {}
    sources: dict[int, str] = {}
    for path in sorted(bench_dir.glob("torch_baseline_*.json")):
        try:
            runs = json.loads(path.read_text()).get("runs", [])
        except (OSError, ValueError):
            continue
        for r in runs:
            if r.get("dataset") == dataset and r.get("mode") == "mask" and r.get("sec_per_epoch"):
                found.setdefault(int(r["threads"]), []).extend(r["sec_per_epoch"])
                sources[int(r["threads"])] = f"{path.name} ({r.get('date', '?')})"
    return [{"threads": t, "sec_per_epoch": float(np.median(v)), "epochs_timed": len(v),
             "min_500": float(np.median(v)) * PAPER_EPOCHS / 60, "source": sources[t]}
            for t, v in sorted(found.items())]


def reproduce_table3(dataset: str, seeds: int = 5, epochs: int | None = None,
                     *, out: str | Path, overrides: dict | None = None,
                     progress: bool = False, synthetic: bool = False,
                     sequential_from: str | Path | None = None, comm=None,
                     data=None) -> str:
    """Table 3: WASSP-SGD and WASAP-SGD, with and without Importance
    Pruning (All-ReLU), next to the sequential rows and the paper's.

    Under MPI (``mpiexec -n K+1 ... --reproduce table3``, or ``comm``) every
    rank runs the parallel rows through :func:`sparse_mlp.parallel.run_parallel`
    (finished runs reused, unfinished ones continued); rank 0 writes
    ``table3.md``.  Without MPI nothing is trained: the table shows what
    exists and the exact mpiexec command.  The sequential rows are Table 2's
    All-ReLU runs, read from ``out`` or ``sequential_from`` (a Table 2
    reproduction folder).  Returns the markdown ("" on ranks other than 0).
    """

    extra = TABLE3_EXTRA.get(preset_for(dataset)[0], {})  # CIFAR10: --augment cifar
    base = table2_base(dataset, epochs, {**extra, **(overrides or {}), "activation": "allrelu"},
                       synthetic)
    out = Path(out)
    comm = comm if comm is not None else mpi_world()
    rank = 0 if comm is None else comm.Get_rank()
    if comm is not None:
        from ..parallel import run_parallel

        for key, mode, ip in TABLE3_ROWS:
            for seed in range(seeds):
                run_dir = out / key / f"seed{seed}"
                cfg = _row_config(base, "allrelu", ip, seed, run_dir).replace(parallel=mode)
                decision: tuple[bool, str] = (False, "")
                if rank == 0:
                    try:
                        decision = (_finished(run_dir / "summary.json", cfg) is not None, "")
                    except ConfigError as exc:
                        decision = (False, str(exc))
                done, problem = comm.bcast(decision, root=0)
                if problem:
                    raise ConfigError(problem)
                if done:
                    continue
                if rank == 0 and data is None:
                    data = load_data(cfg)
                log.info("%s seed %d -> %s (%d ranks)", key, seed, run_dir, comm.Get_size())
                run_parallel(cfg, comm, data=data if rank == 0 else None, resume="auto",
                             overrides={"threads": cfg.threads}, progress=progress)
        if rank != 0:
            return ""
    workers = comm.Get_size() - 1 if comm is not None else TABLE3_WORKERS
    rows_found = collect_rows(base, TABLE3_ROWS, seeds, out)
    seq_rows = (("allrelu", "allrelu", False), ("allrelu_ip", "allrelu", True))
    seq = collect_rows(base, seq_rows, seeds, out)
    if sequential_from is not None and not any(seq.values()):
        try:
            seq = collect_rows(base, seq_rows, seeds, Path(sequential_from))
        except ConfigError as exc:  # runs of another length there: not these rows
            log.warning("sequential rows not taken from %s: %s", sequential_from, exc)
    command = None if comm is not None else mpiexec_command(
        dataset, seeds, epochs, out, workers, synthetic, overrides)
    settings = (f"Settings: `--parallel-semantics {base.parallel_semantics}` (the parallel "
                f"rows), `--er-sampling {base.er_sampling}`.")
    text = write_table3(dataset, {**rows_found, **seq}, out, base.epochs, workers, command,
                        torch_cpu_reference(dataset), synthetic, settings)
    return text


def write_table3(dataset: str, results: dict[str, list[dict]], out: Path, epochs: int,
                 workers: int, command: str | None, torch_rows: list[dict],
                 synthetic: bool = False, settings: str = "") -> str:
    name, _ = preset_for(dataset)
    paper = {(r[0], r[1], r[2]): r for r in PAPER_TABLE3.get(name, [])}
    lines = [f"# Table 3, {dataset}{' shape on synthetic data (TIMING ONLY)' if synthetic else ''}"
             f": parallel training (All-ReLU), {epochs} epochs", ""]
    if settings:
        lines += [settings, ""]
    if command:
        lines += ["The parallel rows need MPI (1 parameter server + K workers); run:", "",
                  f"    {command}", ""]
    lines += ["| framework | IP | processes | accuracy [%] (mean ± std) | paper [%] | "
              "time [min] (paper) | peak RSS rank 0 [MB] (paper memory) |",
              "|---|---|---|---|---|---|---|"]
    csv_rows = []
    keys = [k for k, _, _ in TABLE3_ROWS] + ["allrelu", "allrelu_ip"]
    for key in keys:
        ip = key.endswith("_ip")
        label = TABLE3_LABELS[key]
        procs = workers + 1 if key.startswith("was") else 1
        p = paper.get((label, ip, 12 if key.startswith("was") else 1))
        ok = results.get(key, [])
        if ok:
            acc_m, acc_s = _mean_std([100 * s["best_test_acc"] for s in ok])
            minutes = float(np.mean([s["wall_s"] for s in ok])) / 60
            rss = float(np.mean([s["peak_rss_bytes"] for s in ok])) / 2**20
            cells = f"{acc_m:.2f} ± {acc_s:.2f} ({len(ok)} seeds)", f"{minutes:.2f}", f"{rss:.0f}"
        else:
            acc_m = acc_s = minutes = rss = None
            cells = ("not run" if key.startswith("was") else
                     "not run (--reproduce table2)", "", "")
        lines.append(f"| {label} | {'yes' if ip else 'no'} | {procs} | {cells[0]} | "
                     f"{_fmt(p[4] if p else None, '.2f')} | {cells[1]} "
                     f"({_fmt(p[5] if p else None, 'g')}) | {cells[2]} "
                     f"({_fmt(p[7] if p else None, 'g')}) |")
        csv_rows.append({"framework": label, "key": key, "ip": ip, "processes": procs,
                         "seeds": len(ok), "acc_mean": acc_m, "acc_std": acc_s,
                         "minutes": minutes, "peak_rss_mib": rss,
                         "paper_acc": p[4] if p else None, "paper_min": p[5] if p else None,
                         "paper_mb": p[7] if p else None})
    for t in torch_rows:
        pk = paper.get(("Keras CPU", False, 1 if t["threads"] == 1 else 12))
        lines.append(f"| PyTorch CPU, dense × mask ({t['threads']} thread"
                     f"{'s' if t['threads'] > 1 else ''}) | no | 1 | – | Keras: "
                     f"{_fmt(pk[4] if pk else None, '.2f', '–')} | {t['min_500']:.1f}* "
                     f"(Keras CPU: {_fmt(pk[5] if pk else None, 'g')}) | |")
        csv_rows.append({"framework": f"PyTorch CPU dense x mask, {t['threads']} threads",
                         "key": f"torch_cpu_{t['threads']}", "processes": 1,
                         "minutes": t["min_500"], "source": t["source"]})
    pg = paper.get(("Keras GPU", False, 12))
    lines.append(f"| dense × mask on a GPU | no | 1 | missing | "
                 f"{_fmt(pg[4] if pg else None, '.2f', '–')} | missing "
                 f"({_fmt(pg[5] if pg else None, 'g')}) | |")
    csv_rows.append({"framework": "GPU dense x mask", "key": "gpu", "status": "missing",
                     "paper_min": pg[5] if pg else None})
    lines += ["", "Time: wall-clock minutes of a whole run (mean over seeds), this machine; the "
                  "paper's: 5 workers + 1 parameter server on a 6-core laptop (WASAP/WASSP), one "
                  "core (sequential), Keras on 1 or 12 cores or a GTX 1650 GPU. Peak RSS: rank 0 "
                  "(the parameter server) only; the paper reports the whole job's memory.",
              "GPU row: missing. No GPU machine was lent to this task, so the dense-with-mask "
              "GPU timing was not measured (nothing is estimated in its place)."]
    if torch_rows:
        lines.append("* PyTorch CPU rows: bench/torch_baseline.py (dense weights times a 0/1 "
                     "mask, the paper's Keras method, in PyTorch), seconds per epoch measured "
                     "on this shape with synthetic data and scaled to 500 epochs; sources: "
                     + ", ".join(sorted({t["source"] for t in torch_rows}))
                     + ". A CPU reference, not the paper's Keras.")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "table3.md", text)
    _write_csv(out / "table3.csv", csv_rows)
    return text
