"""Reproduce the paper's tables and figures, side by side with the paper's numbers.

One function per table; each writes ``table<N>.md`` and ``table<N>.csv``
(and the figures, ``sparse_mlp.figures``) into its output folder, and
returns the markdown:

``reproduce_table2(dataset, seeds, epochs, out)``
    Every row of Table 2: SET-MLP with ReLU and All-ReLU, each with and
    without Importance Pruning, and the dense MLP with both activations
    (``sparse_mlp.dense``, BLAS), over ``seeds`` seeds with the dataset's
    paper preset: mean +- std of the best test accuracy, start and end nnz,
    training minutes.  ``synthetic=True`` trains on synthetic data of the
    dataset's shape (features, classes, train/test sizes): for timing only.
``reproduce_table6(...)``
    Importance Pruning once after training (5th ... 25th percentile) of the
    All-ReLU models without IP: the Table-2 runs of the same folder are
    pruned from their final checkpoints, missing ones are trained.
``reproduce_table4(out, epochs, ...)``
    The extreme-scale rows on synthetic data (65536 features): per
    architecture init, train, test and evolution time and peak memory, each
    in its own process, after the memory planner decided how it fits.
``reproduce_table3(dataset, ...)``
    The parallel rows (WASAP-SGD / WASSP-SGD, with and without IP) through
    ``sparse_mlp.parallel``, next to the sequential rows; needs mpiexec.

Resuming: each (row, seed) run lives in ``<out>/<row>/seed<k>``.  A run
whose ``summary.json`` exists is reused; an unfinished one continues from
its newest checkpoint (``experiment.run(..., resume="auto")``, the dense
twin likewise), so a killed reproduction goes on where it stopped.  A
finished run made with another number of epochs is refused (use another
``out``), never mixed in.  A row whose model does not fit in memory (the
dense Leukemia MLP) is reported as a memory error, not trained.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .errors import ConfigError, DivergenceError, MemoryBudgetError, SparseMLPError
from .presets import PAPER_TABLE2, PRESETS, preset_for

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------ Table 2
# (key, hidden activation, Importance Pruning); the sparse rows of Table 2
TABLE2_ROWS = (
    ("relu", "relu", False),
    ("relu_ip", "relu", True),
    ("allrelu", "allrelu", False),
    ("allrelu_ip", "allrelu", True),
)
# the dense MLPs of Table 2 (sparse_mlp.dense): every connection, no evolution
DENSE_ROWS = (
    ("dense_relu", "relu", False),
    ("dense_allrelu", "allrelu", False),
)
TABLE2_ALL_ROWS = TABLE2_ROWS + DENSE_ROWS
ROW_LABELS = {"relu": "ReLU", "relu_ip": "ReLU + IP", "allrelu": "All-ReLU",
              "allrelu_ip": "All-ReLU + IP", "dense_relu": "ReLU", "dense_allrelu": "All-ReLU"}
# the paper's dense All-ReLU rows used another slope than the sparse ones
# (Table 2: FashionMNIST and CIFAR10 alpha 0.25); the others keep the preset's
DENSE_ALPHA = {"fashionmnist": 0.25, "cifar10": 0.25}
# the paper's dense rows ran in Keras, whose default initialiser is Glorot uniform
# (xavier); Madelon's sparse N(0,1)/10 makes the dense All-ReLU MLP diverge
DENSE_INIT = "xavier"
PAPER_EPOCHS = 500

# (features, classes, train samples, test samples) of the paper's datasets
PAPER_SHAPES = {"leukemia": (54_675, 18, 1397, 699), "higgs": (28, 2, 105_000, 50_000),
                "madelon": (500, 2, 2000, 600), "fashionmnist": (784, 10, 60_000, 10_000),
                "cifar10": (3072, 10, 50_000, 10_000)}
# how an input row is an image (connectivity heatmaps): (channels, height, width)
IMAGE_SHAPES = {"fashionmnist": (1, 28, 28), "cifar10": (3, 32, 32)}

# ------------------------------------------------------------------------ Table 6
POST_PRUNE_PERCENTILES = (5.0, 10.0, 15.0, 20.0, 25.0)
# dataset: (model accuracy %, its parameters, {percentile: (accuracy %, end nnz)})
PAPER_TABLE6: dict[str, tuple[float, int, dict[float, tuple[float, int]]]] = {
    "leukemia": (86.42, 1684944, {5: (86.89, 1074251), 10: (86.69, 1034977),
                                  15: (85.84, 992711), 20: (85.84, 947981),
                                  25: (85.69, 901289)}),
    "higgs": (73.67, 50224, {5: (73.00, 48508), 10: (73.16, 46693), 15: (72.61, 44897),
                             20: (72.27, 42601), 25: (71.51, 40491)}),
    "madelon": (71.33, 19006, {5: (71.33, 18385), 10: (72.00, 17661), 15: (70.33, 16883),
                               20: (69.16, 16106), 25: (65.33, 15297)}),
    "fashionmnist": (91.38, 125901, {5: (90.66, 120894), 10: (90.12, 115486),
                                     15: (89.37, 109923), 20: (88.7, 104158),
                                     25: (85.97, 98360)}),
    "cifar10": (69.83, 381758, {5: (69.53, 368062), 10: (68.61, 352791), 15: (68.38, 336968),
                                20: (67.35, 320316), 25: (66.57, 276349)}),
}

# ------------------------------------------------------------------------ Table 4
# (name, hidden widths, epsilon, paper: neurons, parameters, workers, and minutes
# per epoch: weight initialisation, training, testing, weight evolution)
TABLE4_ARCHS: tuple[tuple[str, list[int], float, dict[str, Any]], ...] = (
    ("65536-0.5M-0.5M-2", [500_000] * 2, 10,
     {"neurons": "1 M", "params": "20.6 M", "workers": 16, "init": 1, "train": 6, "test": 2.5,
      "evolution": 1}),
    ("65536-2.5M-2.5M-2", [2_500_000] * 2, 5,
     {"neurons": "5 M", "params": "50.3 M", "workers": 16, "init": 2, "train": 10, "test": 6,
      "evolution": 2}),
    ("65536-5M-5M-2", [5_000_000] * 2, 5,
     {"neurons": "10 M", "params": "100.3 M", "workers": 16, "init": 3, "train": 20,
      "test": 11, "evolution": 5}),
    ("65536-5Mx4-2", [5_000_000] * 4, 1,
     {"neurons": "20 M", "params": "40.3 M", "workers": 8, "init": 5, "train": 26, "test": 18,
      "evolution": 6}),
    ("65536-5Mx10-2", [5_000_000] * 10, 1,
     {"neurons": "50 M", "params": "100.3 M", "workers": 8, "init": 9, "train": 52,
      "test": 20, "evolution": 6}),
)
TABLE4_FEATURES = 65_536
TABLE4_EPOCHS = 2  # evolution runs after every epoch but the last: 2 epochs time it once
TABLE4_DROPOUT = 0.4

# ------------------------------------------------------------------------ Table 3
# dataset: [(framework, IP, CPU cores, GPU, accuracy % or None, minutes, CPU %, MB)]
PAPER_TABLE3: dict[str, list[tuple]] = {
    "higgs": [("WASSP-SGD", False, 12, False, 74.26, 142.52, 62, 2800),
              ("WASSP-SGD", True, 12, False, 74.16, 113.33, 62, 2800),
              ("WASAP-SGD", False, 12, False, 74.47, 138.52, 62, 2800),
              ("WASAP-SGD", True, 12, False, 74.88, 108.33, 62, 2800),
              ("Sequential", False, 1, False, 73.67, 216.67, 24, 1700),
              ("Sequential", True, 1, False, 73.76, 182.3, 24, 1700),
              ("Keras CPU", False, 1, False, 74.28, 350, 27, 2100),
              ("Keras CPU", False, 12, False, 74.28, 191.7, 65, 2300),
              ("Keras GPU", False, 12, True, 74.28, 78.3, 25, 2400)],
    "fashionmnist": [("WASSP-SGD", False, 12, False, 90.52, 90.6, 65, 3300),
                     ("WASSP-SGD", True, 12, False, 89.96, 77.6, 65, 3300),
                     ("WASAP-SGD", False, 12, False, 91.23, 87.25, 65, 3300),
                     ("WASAP-SGD", True, 12, False, 90.15, 74.85, 65, 3300),
                     ("Sequential", False, 1, False, 91.38, 137.5, 20, 1900),
                     ("Sequential", True, 1, False, 90.12, 96.25, 20, 1900),
                     ("Keras CPU", False, 1, False, None, 316, 20, 2800),
                     ("Keras CPU", False, 12, False, None, 135.6, 76, 2800),
                     ("Keras GPU", False, 12, True, None, 65, 26, 3000)],
    "cifar10": [("WASSP-SGD", False, 12, False, 67.13, 309.9, 70, 6500),
                ("WASSP-SGD", True, 12, False, 66.88, 279.9, 70, 6500),
                ("WASAP-SGD", False, 12, False, 69.03, 281.9, 70, 6500),
                ("WASAP-SGD", True, 12, False, 68.51, 246.5, 70, 6500),
                ("Sequential", False, 1, False, 69.83, 590, 25, 2200),
                ("Sequential", True, 1, False, 68.55, 530, 25, 2200),
                ("Keras CPU", False, 1, False, None, 1000, 20, 4700),
                ("Keras CPU", False, 12, False, None, 530.7, 80, 4700),
                ("Keras GPU", False, 12, True, None, 195, 20, 4800)],
}
TABLE3_WORKERS = 5  # the paper: 5 workers + 1 parameter server on 6 cores


# ======================================================================== helpers
def _write_text(path: Path, text: str) -> None:
    """Write a file atomically (several array tasks may write the same table)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _mean_std(vals: list[float]) -> tuple[float, float]:
    a = np.asarray(vals, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _fmt(v, fmt: str, none: str = "n/a") -> str:
    return none if v is None else format(v, fmt)


def _mean_or_none(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def _times(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a * b


def _capped(share: float | None) -> float | None:
    return None if share is None else min(share, 1.0)


def is_dense(key: str) -> bool:
    return key.startswith("dense_")


def table2_base(dataset: str, epochs: int | None = None, overrides: dict | None = None,
                synthetic: bool = False) -> TrainConfig:
    """The paper preset of ``dataset`` (with ``overrides``); ``synthetic``:
    on synthetic data of the dataset's shape instead of the real files."""
    name, fields = preset_for(dataset)
    if name not in PAPER_TABLE2:
        raise ConfigError(f"Table 2 covers {', '.join(PAPER_TABLE2)}; got {dataset!r}")
    data: dict[str, Any] = {"dataset": dataset}
    if synthetic:
        f, c, n_train, n_test = PAPER_SHAPES[name]
        data = {"dataset": "synthetic", "n_features": f, "n_classes": c, "n_train": n_train,
                "n_test": n_test}
    base = TrainConfig(**{**fields, **data, "preset": name, **(overrides or {})})
    if epochs is not None:
        base = base.replace(epochs=epochs)
    base.validate()
    return base


def _row_config(base: TrainConfig, activation: str, ip: bool, seed: int, out: Path,
                key: str = "") -> TrainConfig:
    alpha = base.alpha if activation == "allrelu" else None
    init = base.weight_init
    if is_dense(key):
        init = DENSE_INIT
        if activation == "allrelu":
            alpha = DENSE_ALPHA.get(base.preset or "", alpha)
    return base.replace(activation=activation, alpha=alpha, importance_pruning=ip, seed=seed,
                        out=str(out), weight_init=init)


def _finished(summary_path: Path, cfg: TrainConfig) -> dict | None:
    """The summary of a finished run, or None; a run of another length is refused."""
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("epochs") != cfg.epochs:
        raise ConfigError(
            f"{summary_path.parent} holds a finished {summary.get('epochs')}-epoch run, but "
            f"this reproduction asks for {cfg.epochs} epochs; give another --out (or delete "
            f"that folder) rather than mixing them")
    return summary


def _dense_precheck(cfg: TrainConfig) -> None:
    """Refuse a dense row that cannot fit before loading any data."""
    from .dense import check_dense_fits
    from .experiment import dataset_shape

    shape = dataset_shape(cfg)
    if shape is not None:
        f, c, n = shape
        check_dense_fits([f, *cfg.hidden, c], cfg.batch_size, cfg.eval_batch_size, n,
                         already_loaded=False)


def run_rows(base: TrainConfig, rows, seeds: int, out: Path, data=None,
             progress: bool = False, seed_list=None) -> dict[str, list[dict]]:
    """Run (or reuse, or continue) every (row, seed); returns the summaries
    per row.  Rows whose key starts with ``dense_`` train a DenseMLP.  A row
    refused for memory gets one entry ``{"failed": "memory error",
    "message": ...}`` instead of summaries."""
    from .dense import run_dense
    from .experiment import load_data, run

    out = Path(out)
    results: dict[str, list[dict]] = {}
    for key, activation, ip in rows:
        results[key] = []
        for seed in (range(seeds) if seed_list is None else seed_list):
            run_dir = out / key / f"seed{seed}"
            cfg = _row_config(base, activation, ip, seed, run_dir, key)
            done = _finished(run_dir / "summary.json", cfg)
            if done is not None:
                results[key].append(done)
                log.info("%s seed %d: done before, reusing %s", key, seed, run_dir)
                continue
            try:
                if is_dense(key) and data is None:
                    _dense_precheck(cfg)
                if data is None:
                    data = load_data(cfg)
                log.info("%s seed %d -> %s", key, seed, run_dir)
                cpu0 = time.process_time()
                if is_dense(key):
                    summary = run_dense(cfg, data=data, progress=progress, resume="auto")
                else:
                    summary = run(cfg, data=data, progress=progress, resume="auto",
                                  overrides={"threads": cfg.threads})
                _record_cpu(summary, time.process_time() - cpu0)
            except MemoryBudgetError as exc:
                log.warning("%s: %s", key, exc)
                results[key] = [{"failed": "memory error", "message": str(exc), "seed": seed}]
                break
            except DivergenceError as exc:  # a result too: reported, the other runs go on
                log.warning("%s seed %d: %s", key, seed, exc)
                summary = {"failed": "diverged", "message": str(exc), "seed": seed}
            results[key].append(summary)
    return results


def _record_cpu(summary: dict, cpu_s: float) -> None:
    """Add this process's CPU seconds for the run to its summary.json: on a
    shared machine, cpu_s / wall_s is the share of a core the run got (for
    a one-thread run, 1 when it had a core to itself)."""
    from .report import write_json

    summary["cpu_s"] = cpu_s
    summary["core_share"] = (cpu_s / summary["wall_s"]
                             if summary.get("sessions", 1) == 1 and summary["wall_s"] > 0
                             else None)
    write_json(Path(summary["out"]) / "summary.json", summary)


def collect_rows(base: TrainConfig, rows, seeds: int, out: Path) -> dict[str, list[dict]]:
    """The finished runs of every (row, seed) found in ``out`` (nothing is run)."""
    results: dict[str, list[dict]] = {}
    for key, activation, ip in rows:
        results[key] = []
        for seed in range(seeds):
            run_dir = Path(out) / key / f"seed{seed}"
            done = _finished(run_dir / "summary.json",
                             _row_config(base, activation, ip, seed, run_dir, key))
            if done is not None:
                results[key].append(done)
    return results


def _minutes_500(s: dict) -> float:
    """Training + evolution minutes of one run, scaled to 500 epochs when it
    ran fewer (per-epoch means; evolution runs after all epochs but the last)."""
    e = int(s["epochs"])
    if e == PAPER_EPOCHS:
        return (s["train_s"] + s["evolution_s"]) / 60
    evo = s["evolution_s"] / (e - 1) if e > 1 else 0.0
    return (s["train_s"] / e * PAPER_EPOCHS + evo * (PAPER_EPOCHS - 1)) / 60


def table2_rows(dataset: str, results: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """One dict per row of Table 2 (our figures and the paper's)."""
    name, _ = preset_for(dataset)
    paper = PAPER_TABLE2.get(name, {})
    rows = []
    for key, summaries in results.items():
        p = paper.get(key, (None,) * 4)
        failed = [s for s in summaries if "failed" in s]
        ok = [s for s in summaries if "failed" not in s]
        if not ok and not failed:
            continue
        row: dict[str, Any] = {"row": ROW_LABELS.get(key, key), "seeds": len(ok),
                               "best_acc_mean": None, "best_acc_std": None,
                               "paper_acc": p[0], "paper_start_nnz": p[1], "paper_end_nnz": p[2],
                               "paper_min": p[3], "start_nnz": None, "end_nnz": None,
                               "train_min": None, "wall_min": None}
        if ok:
            acc_m, acc_s = _mean_std([100 * s["best_test_acc"] for s in ok])
            row.update({
                "best_acc_mean": acc_m, "best_acc_std": acc_s,
                "start_nnz": float(np.mean([s["nnz_start"] for s in ok])),
                "end_nnz": float(np.mean([s["nnz_end"] for s in ok])),
                "train_min": float(np.mean([s["train_s"] + s["evolution_s"] for s in ok])) / 60,
                "wall_min": float(np.mean([s["wall_s"] for s in ok])) / 60})
        row.update({
            "key": key, "model": "Dense MLP" if is_dense(key) else "SET-MLP",
            "epochs": int(ok[0]["epochs"]) if ok else None,
            "train_min_500": float(np.mean([_minutes_500(s) for s in ok])) if ok else None,
            "test_min": float(np.mean([s["test_s"] for s in ok])) / 60 if ok else None,
            "peak_rss_mib": (float(np.mean([s["peak_rss_bytes"] for s in ok])) / 2**20
                             if ok else None),
            "core_share": _mean_or_none([s.get("core_share") for s in ok]),
            "dataset_used": ok[0]["dataset"] if ok else None,
            "status": "ok" if ok else failed[0]["failed"],
            "message": "; ".join(f"seed {f.get('seed')}: {f['message'].splitlines()[0]}"
                                 for f in failed)})
        rows.append(row)
    return rows


def write_table2(dataset: str, rows: list[dict], out: Path, epochs: int,
                 synthetic: bool = False) -> str:
    """Write ``table2.md`` and ``table2.csv`` into ``out``; returns the markdown."""
    out = Path(out)
    seeds = max((r["seeds"] for r in rows), default=0)
    extrapolated = epochs != PAPER_EPOCHS
    if synthetic:
        title = (f"# Table 2 shapes of {dataset} on synthetic data: TIMING ONLY, "
                 f"{seeds} seeds x {epochs} epochs")
    else:
        title = (f"# Table 2, {dataset}: best test accuracy over {seeds} seeds, "
                 f"{epochs} epochs")
    t_head = ("training [min], 500 epochs extrapolated (paper)" if extrapolated
              else "training [min] (paper)")
    lines = [title, ""]
    if synthetic:
        lines += ["The data are random (`make_classification` with the dataset's features, "
                  "classes and train/test sizes), so the accuracies mean nothing; the table "
                  "is about time and size.", ""]
    lines += ["| model | accuracy [%] (mean ± std) | paper [%] | start nnz (paper) | "
              f"end nnz (paper) | {t_head} | core share | ≈ on a free core [min] |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = f"{r.get('model', 'SET-MLP')} {r['row']}"
        if r.get("status", "ok") != "ok":
            lines.append(f"| {label} | {r['status']} | {_fmt(r['paper_acc'], '.2f', 'n/a')} | "
                         f"({_fmt(r['paper_start_nnz'], ',')}) | "
                         f"({_fmt(r['paper_end_nnz'], ',')}) | n/a | | |")
            continue
        minutes = r.get("train_min_500") if extrapolated else r["train_min"]
        lines.append(
            f"| {label} | {r['best_acc_mean']:.2f} ± {r['best_acc_std']:.2f} | "
            f"{_fmt(r['paper_acc'], '.2f')} | {r['start_nnz']:,.0f} "
            f"({_fmt(r['paper_start_nnz'], ',')}) | {r['end_nnz']:,.0f} "
            f"({_fmt(r['paper_end_nnz'], ',')}) | {_fmt(minutes, '.2f')} "
            f"({_fmt(r['paper_min'], 'g')}) | {_fmt(r.get('core_share'), '.2f')} | "
            f"{_fmt(_times(minutes, _capped(r.get('core_share'))), '.2f')} |")
    notes = ["", "Training minutes: this engine's training + evolution time (mean per run, "
                 "one process, the thread count of `threads` in each summary.json); the "
                 "paper's are for 500 epochs on one laptop core (SET-MLP) and on 12 cores "
                 "with Keras (dense). Core share: the run's CPU time / its wall time (one "
                 "thread: 1.00 = a core to itself; lower = the machine was shared, and the "
                 "minutes are inflated by about 1 / share; above 1, a library used more than "
                 "one thread for part of the run); ≈ on a free core = minutes x "
                 "min(share, 1), an estimate from the CPU time."]
    if extrapolated:
        notes.append(f"Measured over {epochs} epochs and scaled to 500 (per-epoch means). "
                     "For the + IP rows this ignores the speed-up after epoch 200, when "
                     "pruning shrinks the network: an upper bound.")
    if any(r.get("model") == "Dense MLP" for r in rows):
        notes.append("Dense rows: this engine's DenseMLP (BLAS through NumPy) with the "
                     "preset's learning rate, batch, dropout, loss and momentum update, "
                     "initialised as Keras' dense layers (where the paper ran them): Glorot "
                     "uniform (xavier); nnz counts weights only (the paper's dense counts "
                     "include the biases). Dense All-ReLU uses the paper's dense slope where "
                     "it differs (alpha 0.25 for FashionMNIST and CIFAR10).")
    for r in rows:
        if r.get("message"):
            notes.append(f"{r.get('model', '')} {r['row']}, left out: {r['message']}")
    text = "\n".join(lines + notes) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "table2.md", text)
    _write_csv(out / "table2.csv", rows)
    return text


def _figures(out: Path, keys: list[str], seeds: int, title: str, dataset: str) -> list[Path]:
    from .figures import draw_table_figures

    name, _ = preset_for(dataset)
    try:
        return draw_table_figures(out, keys, seeds, title, IMAGE_SHAPES.get(name))
    except Exception as exc:  # a figure must never lose a finished table
        log.warning("could not draw the figures of %s: %s", out, exc)
        return []


def reproduce_table2(dataset: str, seeds: int = 5, epochs: int | None = None,
                     out: str | Path = "results", overrides: dict | None = None,
                     progress: bool = False, synthetic: bool = False,
                     rows: list[str] | None = None, only_seed: int | None = None,
                     figures: bool = True, data=None) -> str:
    """Run (or reuse) every row of Table 2 for ``dataset``; returns the markdown.

    Parameters
    ----------
    dataset : str
        A paper dataset (leukemia, higgs, madelon, fashionmnist, cifar10).
    seeds, epochs : int
        Seeds per row (0 ... seeds-1); epochs (default: the preset's 500).
    out : path
        Folder of the runs (``<row>/seed<k>``), the tables and the figures.
    overrides : dict
        TrainConfig fields over the preset (data_dir, threads, ...).
    synthetic : bool
        Synthetic data of the dataset's shape (timing only).
    rows, only_seed :
        Run only these row keys / this seed (a SLURM array task); the table
        is then written from every finished run found, without figures.
    """
    base = table2_base(dataset, epochs, {**(overrides or {}), "diagnostics": True}, synthetic)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    selected = [r for r in TABLE2_ALL_ROWS if rows is None or r[0] in rows]
    unknown = sorted(set(rows or ()) - {r[0] for r in TABLE2_ALL_ROWS})
    if unknown:
        raise ConfigError(f"unknown Table 2 rows {unknown}; choose from "
                          f"{', '.join(r[0] for r in TABLE2_ALL_ROWS)}")
    if only_seed is not None and not 0 <= only_seed < seeds:
        raise ConfigError(f"--only-seed {only_seed} is not one of the {seeds} seeds 0..{seeds - 1}")
    partial = rows is not None or only_seed is not None
    done = run_rows(base, selected, seeds, out, data=data, progress=progress,
                    seed_list=None if only_seed is None else [only_seed])
    results = done
    if partial:  # every finished run found, and this call's failures
        results = collect_rows(base, TABLE2_ALL_ROWS, seeds, out)
        for key, summaries in done.items():
            results[key] += [s for s in summaries if "failed" in s]
    text = write_table2(dataset, table2_rows(dataset, results), out, base.epochs, synthetic)
    if figures and not partial:
        what = f"{dataset}{' shape, synthetic data' if synthetic else ''}"
        _figures(out, [r[0] for r in TABLE2_ALL_ROWS], seeds, what, dataset)
    return text


# ======================================================================== Table 6
def reproduce_table6(dataset: str, seeds: int = 5, epochs: int | None = None,
                     out: str | Path = "results", overrides: dict | None = None,
                     progress: bool = False, synthetic: bool = False,
                     percentiles=POST_PRUNE_PERCENTILES, data=None) -> str:
    """Post-training Importance Pruning of the All-ReLU models without IP
    (paper Table 6); returns the markdown of ``table6.md``.

    The models are Table 2's All-ReLU runs in ``<out>/allrelu/seed<k>``
    (:func:`post_prune_rows`): pass the folder of a Table 2 reproduction as
    ``out`` to prune its models instead of training new ones.
    """
    base = table2_base(dataset, epochs, {**(overrides or {}), "diagnostics": True}, synthetic)
    summaries = post_prune_rows(base, seeds, Path(out), percentiles, data, progress)
    return write_table6(dataset, summaries, Path(out), base.epochs, percentiles, synthetic)


def post_prune_rows(base: TrainConfig, seeds: int, out: Path, percentiles=POST_PRUNE_PERCENTILES,
                    data=None, progress: bool = False) -> list[dict]:
    """The All-ReLU run of every seed in ``<out>/allrelu/seed<k>`` with its
    ``post_pruning`` rows: a finished run is pruned from its final
    checkpoint (its summary.json gets the rows), a missing or unfinished one
    is trained (or continued) with ``post_prune`` set."""
    from .checkpoint import latest_checkpoint
    from .experiment import load_data, post_training_pruning, run
    from .report import write_json

    percentiles = [float(p) for p in percentiles]
    summaries = []
    for seed in range(seeds):
        run_dir = Path(out) / "allrelu" / f"seed{seed}"
        cfg = _row_config(base, "allrelu", False, seed, run_dir).replace(post_prune=percentiles)
        summary = _finished(run_dir / "summary.json", cfg)
        have = {float(r["percentile"]) for r in (summary or {}).get("post_pruning", [])}
        if summary is not None and set(percentiles) <= have:
            summaries.append(summary)
            continue
        if data is None:
            data = load_data(cfg)
        if summary is None:
            log.info("allrelu seed %d -> %s (training, then post-training pruning)", seed,
                     run_dir)
            summaries.append(run(cfg, data=data, progress=progress, resume="auto",
                                 overrides={"threads": cfg.threads, "post_prune": percentiles}))
            continue
        ckpt = latest_checkpoint(run_dir / "checkpoints", n_threads=cfg.threads)
        if ckpt is None or ckpt.state is None or ckpt.state.epoch != cfg.epochs:
            raise ConfigError(
                f"{run_dir} holds a finished run but not its final checkpoint (was it trained "
                f"with --checkpoint-every 0, or were the checkpoints deleted?), so its model "
                f"cannot be pruned; give another --out to train new All-ReLU runs")
        log.info("allrelu seed %d: pruning the final model of %s", seed, ckpt.path)
        summary["post_pruning"] = post_training_pruning(
            ckpt.model, data.X_test, data.y_test, percentiles, cfg.eval_batch_size)
        write_json(run_dir / "summary.json", summary)
        summaries.append(summary)
    return summaries


def table6_rows(dataset: str, summaries: list[dict], percentiles) -> list[dict]:
    """One dict per pruning threshold (percentile 0: the unpruned final model)."""
    name, _ = preset_for(dataset)
    paper = PAPER_TABLE6.get(name, (None, None, {}))
    rows = []
    for p in [0.0, *percentiles]:
        found = [next(r for r in s["post_pruning"] if float(r["percentile"]) == p)
                 for s in summaries]
        acc_m, acc_s = _mean_std([100 * r["test_acc"] for r in found])
        pp = paper[2].get(p, (None, None)) if p else (None, paper[1])
        rows.append({"percentile": p, "seeds": len(found), "acc_mean": acc_m, "acc_std": acc_s,
                     "nnz": float(np.mean([r["nnz"] for r in found])),
                     "paper_acc": pp[0], "paper_nnz": pp[1]})
    return rows


def write_table6(dataset: str, summaries: list[dict], out: Path, epochs: int, percentiles,
                 synthetic: bool = False) -> str:
    name, _ = preset_for(dataset)
    paper = PAPER_TABLE6.get(name, (None, None, {}))
    rows = table6_rows(dataset, summaries, percentiles)
    best_m, best_s = _mean_std([100 * s["best_test_acc"] for s in summaries])
    base = rows[0]
    lines = [f"# Table 6, {dataset}{' shape on synthetic data (TIMING ONLY)' if synthetic else ''}"
             f": Importance Pruning once after training, All-ReLU without IP, "
             f"{len(summaries)} seeds x {epochs} epochs", "",
             f"Model: best test accuracy {best_m:.2f} ± {best_s:.2f} % (paper "
             f"{_fmt(paper[0], '.2f')}), final model {base['acc_mean']:.2f} ± "
             f"{base['acc_std']:.2f} %, {base['nnz']:,.0f} weights (paper "
             f"{_fmt(paper[1], ',')}).", "",
             "| pruning threshold | accuracy [%] (mean ± std) | paper [%] | end nnz | "
             "paper end nnz |", "|---|---|---|---|---|"]
    for r in rows[1:]:
        lines.append(f"| {r['percentile']:g}th percentile | {r['acc_mean']:.2f} ± "
                     f"{r['acc_std']:.2f} | {_fmt(r['paper_acc'], '.2f')} | {r['nnz']:,.0f} | "
                     f"{_fmt(r['paper_nnz'], ',')} |")
    lines += ["", "Each final model (after the last epoch, not the best epoch) is pruned once: "
                  "in every hidden layer the neurons whose importance (sum of |incoming "
                  "weights|) is at or below the percentile lose all their incoming weights; "
                  "then the test set is evaluated."]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "table6.md", text)
    _write_csv(out / "table6.csv", rows)
    return text


# ======================================================================== Table 4
def table4_configs(epochs: int = TABLE4_EPOCHS, threads: int | None = None,
                   width_scale: float = 1.0, n_features: int | None = None,
                   n_samples: int | None = None, out: str | Path = "results",
                   archs=None, weight_init: str | None = None,
                   output_init: str | None = None, lr_fan_in_cap: float | None = None,
                   dropout: float | None = None, train_eval: int | None = None,
                   zeta: float | None = None,
                   regrow_init: str | None = None) -> list[tuple[str, TrainConfig, dict]]:
    """(name, configuration, paper figures) of every Table 4 architecture.
    ``width_scale`` multiplies every hidden width (trying the pipeline on a
    small machine); ``n_features`` / ``n_samples`` replace 65536 / 10000;
    ``weight_init`` replaces the preset's he_uniform, ``dropout`` Table 4's
    0.4, ``zeta`` SET's 0.3, ``output_init``, ``lr_fan_in_cap`` and
    ``regrow_init`` add those options (not the paper's: such runs get
    folders of their own,
    ``<architecture>_<init>_out-<init>_cap<F>_drop<p>_zeta<z>_regrow-zero``);
    ``train_eval`` measures the loss without dropout on that many training
    samples after every epoch (a measurement only: same folder)."""
    fields = dict(PRESETS["synthetic"])
    suffix = ""
    if weight_init is not None and weight_init != fields["weight_init"]:
        fields["weight_init"], suffix = weight_init, f"_{weight_init}"
    if output_init is not None:
        fields["output_init"] = output_init
        suffix += f"_out-{output_init}"
    if lr_fan_in_cap is not None:
        fields["lr_fan_in_cap"] = float(lr_fan_in_cap)
        suffix += f"_cap{lr_fan_in_cap:g}"
    drop = TABLE4_DROPOUT if dropout is None else float(dropout)
    if drop != TABLE4_DROPOUT:
        suffix += f"_drop{drop:g}"
    if zeta is not None and zeta != fields["zeta"]:
        fields["zeta"] = float(zeta)
        suffix += f"_zeta{zeta:g}"
    if regrow_init is not None and regrow_init != "init":
        fields["regrow_init"] = regrow_init
        suffix += f"_regrow-{regrow_init}"
    if train_eval is not None:
        fields["train_eval"] = int(train_eval)
    out = Path(out)
    names = [a[0] for a in TABLE4_ARCHS]
    unknown = sorted(set(archs or ()) - set(names))
    if unknown:
        raise ConfigError(f"unknown Table 4 architecture(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(names)}")
    wanted = TABLE4_ARCHS if archs is None else [a for a in TABLE4_ARCHS if a[0] in archs]
    configs = []
    for name, hidden, eps, paper in wanted:
        widths = [max(1, int(round(h * width_scale))) for h in hidden]
        # a scaled run gets a folder of its own size, never the paper's name
        # (a finished run in a folder is reused)
        scaled = width_scale != 1.0 or (n_features or TABLE4_FEATURES) != TABLE4_FEATURES
        folder = ("-".join(map(str, [n_features or TABLE4_FEATURES, *widths, 2])) if scaled
                  else name)
        data = {"n_features": n_features or TABLE4_FEATURES}
        if n_samples is not None:
            data.update(n_train=int(round(0.7 * n_samples)),
                        n_test=n_samples - int(round(0.7 * n_samples)))
        cfg = TrainConfig(**{**fields, **data, "dataset": "synthetic", "preset": "synthetic",
                             "hidden": widths, "epsilon": eps, "epochs": epochs,
                             "batch_size": 128, "lr": 0.01, "dropout": drop, "threads": threads,
                             "out": str(out / (folder + suffix))})
        cfg.validate()
        configs.append((name, cfg, paper))
    return configs


def _table4_child(config_json: str) -> int:
    """Entry point of one Table 4 architecture in its own process (so that its
    peak memory is its own): run or continue it; exit 0, 75 (preempted) or
    the error's exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    from .experiment import run

    cfg = TrainConfig.from_dict(json.loads(Path(config_json).read_text()))
    try:
        run(cfg, progress=False, resume="auto", overrides={"threads": cfg.threads})
    except SparseMLPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _run_child(cfg: TrainConfig, run_dir: Path) -> int:
    """Run one architecture in a child process, forwarding SIGTERM/SIGUSR1 to
    it (it checkpoints and exits 75); output in ``run.log``."""
    from .report import write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "table4_config.json"
    write_json(cfg_path, cfg.to_dict())
    code = ("import sys; from sparse_mlp.reproduce import _table4_child; "
            "sys.exit(_table4_child(sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    with open(run_dir / "run.log", "a") as logf:
        child = subprocess.Popen([sys.executable, "-c", code, str(cfg_path)], stdout=logf,
                                 stderr=subprocess.STDOUT, env=env)
        previous = {}

        def forward(signum, frame):
            child.send_signal(signum)

        for name in ("SIGTERM", "SIGUSR1"):
            sig = getattr(signal, name, None)
            if sig is not None:
                try:
                    previous[sig] = signal.signal(sig, forward)
                except ValueError:  # not the main thread
                    pass
        try:
            return child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _epoch_losses(run_dir: Path, column: str = "train_loss") -> list[float]:
    """The training (or ``column``) loss of every epoch of a run (its
    metrics.csv); NaN for an epoch without one, [] without the column."""
    try:
        with open(run_dir / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or column not in rows[0]:
            return []
        return [float(r[column]) if r[column] else float("nan") for r in rows]
    except (OSError, ValueError):
        return []


def reproduce_table4(out: str | Path = "results", epochs: int = TABLE4_EPOCHS,
                     threads: int | None = None, width_scale: float = 1.0,
                     n_features: int | None = None, n_samples: int | None = None,
                     archs=None, isolate: bool = True, dry_run: bool = False,
                     weight_init: str | None = None, output_init: str | None = None,
                     lr_fan_in_cap: float | None = None, dropout: float | None = None,
                     train_eval: int | None = None, zeta: float | None = None,
                     regrow_init: str | None = None) -> str:
    """The extreme-scale rows of Table 4 on synthetic data; returns the markdown.

    For every architecture the memory planner (``experiment.plan_memory``)
    first decides how a batch is held (fast or lean activations,
    micro-batches) or refuses it (reported, not run).  Each run goes in its
    own process (``isolate``) so the peak RSS is that architecture's; a
    finished run (summary.json) is reused, an unfinished one continues from
    its checkpoint.  ``dry_run``: the plans only, nothing is trained.
    """
    from .experiment import dataset_shape, plan_memory, run
    from .memory import GiB
    from .training import PREEMPTED_EXIT_CODE, PreemptedError

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, cfg, paper in table4_configs(epochs, threads, width_scale, n_features,
                                           n_samples, out, archs, weight_init,
                                           output_init, lr_fan_in_cap, dropout,
                                           train_eval, zeta, regrow_init):
        f, c, n = dataset_shape(cfg)
        arch = "-".join(map(str, [f, *cfg.hidden, c]))
        scaled = width_scale != 1.0 or f != TABLE4_FEATURES
        row: dict[str, Any] = {"architecture": arch, "name": arch if scaled else name,
                               "paper_architecture": name, "epsilon": cfg.epsilon,
                               "neurons": int(sum(cfg.hidden) + f + c), **{
                                   f"paper_{k}": v for k, v in paper.items()}}
        try:
            planned, est = plan_memory(cfg, f, c, n)
            row.update(plan=est.activation_memory, micro_batch=est.micro_batch,
                       estimated_gib=est.total / GiB, nnz_expected=est.nnz, status="planned")
        except MemoryBudgetError as exc:
            row.update(status="does not fit", message=str(exc).split("\n")[0])
            rows.append(row)
            continue
        run_dir = Path(cfg.out)
        summary_path = run_dir / "summary.json"
        if not dry_run:
            if _finished(summary_path, cfg) is None:
                log.info("Table 4: %s -> %s", name, run_dir)
                if isolate:
                    rc = _run_child(cfg, run_dir)
                    if rc == PREEMPTED_EXIT_CODE:
                        raise PreemptedError(f"{name} was preempted (checkpoint in {run_dir}); "
                                             f"run the same command again to continue")
                    if rc != 0:
                        row.update(status=f"failed (exit {rc}, see {run_dir / 'run.log'})")
                        rows.append(row)
                        continue
                else:
                    run(cfg, progress=False, resume="auto", overrides={"threads": cfg.threads})
            s = json.loads(summary_path.read_text())
            e = int(s["epochs"])
            row.update(status="ok", epochs=e, nnz=s["nnz_start"], threads=s["threads"],
                       init_min=s["init_s"] / 60, train_min_epoch=s["train_s"] / e / 60,
                       test_min_epoch=s["test_s"] / e / 60,
                       evolution_min_epoch=(s["evolution_s"] / (e - 1) / 60 if e > 1 else None),
                       peak_rss_gib=s["peak_rss_bytes"] / GiB,
                       weight_init=cfg.weight_init, output_init=cfg.output_init,
                       lr_fan_in_cap=cfg.lr_fan_in_cap, dropout=cfg.dropout, zeta=cfg.zeta,
                       regrow_init=cfg.regrow_init,
                       train_loss=_epoch_losses(run_dir),
                       train_eval_loss=_epoch_losses(run_dir, "train_eval_loss"),
                       test_loss=_epoch_losses(run_dir, "test_loss"),
                       best_test_acc=s["best_test_acc"])
        rows.append(row)
    return write_table4(rows, out, epochs, width_scale, isolate, dry_run)


def _table4_recipe(row: dict) -> str:
    """How a Table 4 row was initialised and stepped, in words."""
    init, out_init = row.get("weight_init", "he_uniform"), row.get("output_init")
    cap = row.get("lr_fan_in_cap")
    drop = row.get("dropout", TABLE4_DROPOUT)
    zeta = row.get("zeta", PRESETS["synthetic"]["zeta"])
    regrow = row.get("regrow_init", "init")
    if (init == "he_uniform" and out_init is None and cap is None and drop == TABLE4_DROPOUT
            and zeta == PRESETS["synthetic"]["zeta"] and regrow == "init"):
        return "the paper's (he_uniform, lr 0.01 in every layer)"
    words = [f"weights {init}"]
    if out_init is not None:
        words.append(f"output layer {out_init}")
    if cap is not None:
        words.append(f"step lr x min(1, {cap:g} / fan-in) (--lr-fan-in-cap {cap:g})")
    if drop != TABLE4_DROPOUT:
        words.append(f"dropout {drop:g}")
    if zeta != PRESETS["synthetic"]["zeta"]:
        words.append(f"SET zeta {zeta:g}")
    if regrow != "init":
        words.append(f"SET regrows at {regrow} (--regrow-init {regrow})")
    return ", ".join(words) + " (not the paper's)"


def _losses(values) -> str:
    """Losses by epoch as 'a → b → c' (epochs without one, e.g. not evaluated, left out)."""
    return " → ".join(f"{v:.4f}" for v in values or [] if v == v)


def write_table4(rows: list[dict], out: Path, epochs: int, width_scale: float,
                 isolate: bool, dry_run: bool) -> str:
    lines = [f"# Table 4: extreme-scale sparse MLPs on synthetic data, {epochs} epochs"
             f"{' (memory plans only: --dry-run)' if dry_run else ''}", ""]
    if width_scale != 1.0:
        lines += [f"Every hidden width scaled by {width_scale:g}: NOT the paper's sizes.", ""]
    lines += ["| architecture | eps | weights | plan (est. GiB) | init [min] (paper) | "
              "train [min/epoch] (paper) | test [min/epoch] (paper) | evolution [min/epoch] "
              "(paper) | peak RSS [GiB] | train loss by epoch | ... without dropout | "
              "test loss by epoch | best test acc [%] |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "does not fit" or r["status"].startswith("failed"):
            lines.append(f"| {r['name']} | {r['epsilon']:g} | | {r['status']}: "
                         f"{r.get('message', '')} | ({r['paper_init']}) | ({r['paper_train']}) "
                         f"| ({r['paper_test']}) | ({r['paper_evolution']}) | | | | | |")
            continue
        plan = r["plan"] + (f", micro-batch {r['micro_batch']}" if r["micro_batch"] < 128
                            else "")
        plan += f" ({r['estimated_gib']:.1f})"
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['epsilon']:g} | {r['nnz_expected'] / 1e6:.1f} M "
                         f"expected ({r['paper_params']}) | {plan} | ({r['paper_init']}) | "
                         f"({r['paper_train']}) | ({r['paper_test']}) | "
                         f"({r['paper_evolution']}) | | | | | |")
            continue
        lines.append(
            f"| {r['name']} | {r['epsilon']:g} | {r['nnz'] / 1e6:.1f} M "
            f"({r['paper_params']}) | {plan} | {r['init_min']:.2f} ({r['paper_init']}) | "
            f"{r['train_min_epoch']:.2f} ({r['paper_train']}) | {r['test_min_epoch']:.2f} "
            f"({r['paper_test']}) | {_fmt(r['evolution_min_epoch'], '.2f')} "
            f"({r['paper_evolution']}) | {r['peak_rss_gib']:.2f} | "
            f"{_losses(r.get('train_loss'))} | {_losses(r.get('train_eval_loss'))} | "
            f"{_losses(r.get('test_loss'))} | "
            f"{100 * r['best_test_acc']:.2f} |")
    threads = sorted({r["threads"] for r in rows if "threads" in r})
    recipes = sorted({_table4_recipe(r) for r in rows if r["status"] == "ok"})
    if recipes != ["the paper's (he_uniform, lr 0.01 in every layer)"]:
        lines += ["", "Initial values and step sizes: " + "; ".join(recipes) + "."]
    lines += ["", "This engine: sequential training (one process, "
                  f"{'/'.join(map(str, threads)) or 'the given'} kernel threads), each "
                  f"architecture {'in its own process' if isolate else 'in this process'}; "
                  "the paper: WASAP-SGD with 16 (8) workers on a 96-core machine. Test: the "
                  "3000-sample test set once per epoch. Loss without dropout: on the "
                  "first N training samples after every epoch (--train-eval N; blank when "
                  "not asked). Peak RSS: the whole process, data "
                  "included. The plan is the memory planner's (--dry-run): fast or lean "
                  "activations, micro-batches. Weights: ours are Erdos-Renyi with the "
                  "probability capped at 1, so a 0.5M x 2 output layer holds at most 1 M "
                  "(the paper's counts take eps x (n_in + n_out) = 5 M there)."]
    text = "\n".join(lines) + "\n"
    # a dry run never overwrites a measured table
    stem = "table4_plan" if dry_run else "table4"
    _write_text(out / f"{stem}.md", text)
    _write_csv(out / f"{stem}.csv", rows)
    return text


# ======================================================================== Table 3
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
    for key in ("data_dir", "threads"):
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
    bench_dir = bench_dir or Path(__file__).resolve().parents[1] / "bench" / "results"
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
                     out: str | Path = "results", overrides: dict | None = None,
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
    from .experiment import load_data

    base = table2_base(dataset, epochs, {**(overrides or {}), "activation": "allrelu"},
                       synthetic)
    out = Path(out)
    comm = comm if comm is not None else mpi_world()
    rank = 0 if comm is None else comm.Get_rank()
    if comm is not None:
        from .parallel import run_parallel

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
        seq = collect_rows(base, seq_rows, seeds, Path(sequential_from))
    command = None if comm is not None else mpiexec_command(
        dataset, seeds, epochs, out, workers, synthetic, overrides)
    text = write_table3(dataset, {**rows_found, **seq}, out, base.epochs, workers, command,
                        torch_cpu_reference(dataset), synthetic)
    return text


def write_table3(dataset: str, results: dict[str, list[dict]], out: Path, epochs: int,
                 workers: int, command: str | None, torch_rows: list[dict],
                 synthetic: bool = False) -> str:
    name, _ = preset_for(dataset)
    paper = {(r[0], r[1], r[2]): r for r in PAPER_TABLE3.get(name, [])}
    lines = [f"# Table 3, {dataset}{' shape on synthetic data (TIMING ONLY)' if synthetic else ''}"
             f": parallel training (All-ReLU), {epochs} epochs", ""]
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
