"""What every table shares: the paper preset of a dataset, the run of one
(row, seed) (or its reuse, or its continuation), collecting finished runs,
number formatting and the atomic writing of ``.md`` and ``.csv`` files."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TrainConfig
from ..dense import check_dense_fits, dense_config
from ..errors import ConfigError, DivergenceError, MemoryBudgetError
from ..experiment import dataset_shape, run, run_dense
from ..presets import preset_for
from ..report import write_json
from ..run import load_data
from .paper import paper_table2

log = logging.getLogger(__name__)

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
# dataset: {row key: (accuracy %, start nnz, end nnz, minutes)} (paper_numbers.json, Table 2)
PAPER_TABLE2: dict[str, dict[str, tuple]] = paper_table2()


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
    cfg = base.replace(activation=activation, alpha=alpha, importance_pruning=ip, seed=seed,
                       out=str(out), weight_init=init)
    return dense_config(cfg) if is_dense(key) else cfg


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
    _check_same_settings(summary_path.parent, cfg)
    return summary


def _check_same_settings(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse to reuse a finished run made with another value of a setting
    that a reproduction may vary (``--er-sampling``, ``--parallel-semantics``):
    a table must not mix them.  A run folder older than the setting (no key
    in its config.json) is taken as it is."""
    keys = ["er_sampling"] + (["parallel_semantics"] if cfg.parallel else [])
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return
    for key in keys:
        if key in saved and saved[key] != getattr(cfg, key):
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"{run_dir} holds a finished run made with {flag} {saved[key]}, but this "
                f"reproduction asks for {flag} {getattr(cfg, key)}; give another --out "
                f"rather than mixing them in one table")


def _dense_precheck(cfg: TrainConfig) -> None:
    """Refuse a dense row that cannot fit before loading any data."""

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

