"""Table 2: every row (SET-MLP with ReLU and All-ReLU, with and without
Importance Pruning, and the dense MLP) over several seeds, next to the paper's."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..presets import preset_for
from .common import (
    PAPER_EPOCHS,
    PAPER_TABLE2,
    _capped,
    _fmt,
    _mean_or_none,
    _mean_std,
    _times,
    _write_csv,
    _write_text,
    collect_rows,
    is_dense,
    run_rows,
    table2_base,
)

log = logging.getLogger(__name__)

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
# how an input row is an image (connectivity heatmaps): (channels, height, width)
IMAGE_SHAPES = {"fashionmnist": (1, 28, 28), "cifar10": (3, 32, 32)}


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
                 synthetic: bool = False, settings: str = "") -> str:
    """Write ``table2.md`` and ``table2.csv`` into ``out``; returns the markdown.
    ``settings``: a line naming the non-default settings of the runs."""
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
    if settings:
        lines += [settings, ""]
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
    from ..figures import draw_table_figures

    name, _ = preset_for(dataset)
    try:
        return draw_table_figures(out, keys, seeds, title, IMAGE_SHAPES.get(name))
    except Exception as exc:  # a figure must never lose a finished table
        log.warning("could not draw the figures of %s: %s", out, exc)
        return []


def reproduce_table2(dataset: str, seeds: int = 5, epochs: int | None = None,
                     *, out: str | Path, overrides: dict | None = None,
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
    # keep_best: each run's best-test-accuracy model, which Table 6 prunes (the paper's)
    base = table2_base(dataset, epochs, {**(overrides or {}), "diagnostics": True,
                                         "keep_best": "test"}, synthetic)
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
    settings = ("" if base.er_sampling == "exact" else
                f"Settings: `--er-sampling {base.er_sampling}` (the sparse rows; the paper's "
                f"sampling of the Erdős–Rényi positions, with replacement).")
    text = write_table2(dataset, table2_rows(dataset, results), out, base.epochs, synthetic,
                        settings)
    if figures and not partial:
        what = f"{dataset}{' shape, synthetic data' if synthetic else ''}"
        _figures(out, [r[0] for r in TABLE2_ALL_ROWS], seeds, what, dataset)
    return text

