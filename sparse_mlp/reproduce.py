"""Reproduce the paper's tables, side by side with the paper's numbers.

``reproduce_table2(dataset, seeds, epochs, out)`` runs the four sparse rows
of Table 2 (ReLU and All-ReLU, each with and without Importance Pruning)
over ``seeds`` seeds with the dataset's paper preset, and writes
``table2.md`` and ``table2.csv`` into ``out``.  Each (row, seed) run lives
in its own folder; a folder whose ``summary.json`` exists is not run again,
so a killed reproduction continues where it stopped.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .errors import ConfigError
from .presets import PAPER_TABLE2, preset_for

log = logging.getLogger(__name__)

TABLE2_ROWS = (
    ("relu", "relu", False),
    ("relu_ip", "relu", True),
    ("allrelu", "allrelu", False),
    ("allrelu_ip", "allrelu", True),
)
ROW_LABELS = {"relu": "ReLU", "relu_ip": "ReLU + IP", "allrelu": "All-ReLU",
              "allrelu_ip": "All-ReLU + IP"}


def _row_config(base: TrainConfig, activation: str, ip: bool, seed: int, out: Path
                ) -> TrainConfig:
    alpha = base.alpha if activation == "allrelu" else None
    return base.replace(activation=activation, alpha=alpha, importance_pruning=ip, seed=seed,
                        out=str(out))


def run_rows(base: TrainConfig, rows, seeds: int, out: Path, data=None,
             progress: bool = False) -> dict[str, list[dict]]:
    """Run (or reuse) every (row, seed); returns the summaries per row."""
    from .experiment import load_data, run

    results: dict[str, list[dict]] = {}
    for key, activation, ip in rows:
        results[key] = []
        for seed in range(seeds):
            run_dir = out / key / f"seed{seed}"
            summary_path = run_dir / "summary.json"
            if summary_path.exists():
                results[key].append(json.loads(summary_path.read_text()))
                log.info("%s seed %d: done before, reusing %s", key, seed, summary_path)
                continue
            cfg = _row_config(base, activation, ip, seed, run_dir)
            if data is None:
                data = load_data(cfg)
            log.info("%s seed %d -> %s", key, seed, run_dir)
            results[key].append(run(cfg, data=data, progress=progress))
    return results


def _mean_std(vals: list[float]) -> tuple[float, float]:
    a = np.asarray(vals, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def table2_rows(dataset: str, results: dict[str, list[dict]]) -> list[dict[str, Any]]:
    paper = PAPER_TABLE2.get(dataset, {})
    rows = []
    for key, summaries in results.items():
        if not summaries:
            continue
        acc_m, acc_s = _mean_std([100 * s["best_test_acc"] for s in summaries])
        rows.append({
            "row": ROW_LABELS.get(key, key), "seeds": len(summaries),
            "best_acc_mean": acc_m, "best_acc_std": acc_s,
            "paper_acc": paper.get(key, (None,) * 4)[0],
            "paper_start_nnz": paper.get(key, (None,) * 4)[1],
            "paper_end_nnz": paper.get(key, (None,) * 4)[2],
            "paper_min": paper.get(key, (None,) * 4)[3],
            "start_nnz": float(np.mean([s["nnz_start"] for s in summaries])),
            "end_nnz": float(np.mean([s["nnz_end"] for s in summaries])),
            "train_min": float(np.mean([s["train_s"] + s["evolution_s"] for s in summaries]))
            / 60,
            "wall_min": float(np.mean([s["wall_s"] for s in summaries])) / 60,
        })
    return rows


def write_table2(dataset: str, rows: list[dict], out: Path, epochs: int) -> str:
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    lines = [f"# Table 2, {dataset}: best test accuracy over {rows[0]['seeds']} seeds, "
             f"{epochs} epochs", "",
             "| model | accuracy [%] (mean ± std) | paper [%] | start nnz (paper) | "
             "end nnz (paper) | training [min] (paper) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| SET-MLP {r['row']} | {r['best_acc_mean']:.2f} ± {r['best_acc_std']:.2f} | "
            f"{f(r['paper_acc'], '.2f')} | {r['start_nnz']:,.0f} ({f(r['paper_start_nnz'], ',')})"
            f" | {r['end_nnz']:,.0f} ({f(r['paper_end_nnz'], ',')}) | {r['train_min']:.2f} "
            f"({f(r['paper_min'], 'g')}) |")
    lines += ["", "Training minutes: this engine's training + evolution time (mean per run); "
                  "the paper's are for 500 epochs on one laptop core."]
    text = "\n".join(lines) + "\n"
    (out / "table2.md").write_text(text)
    with open(out / "table2.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return text


def reproduce_table2(dataset: str, seeds: int = 5, epochs: int | None = None,
                     out: str | Path = "results", overrides: dict | None = None,
                     progress: bool = False) -> str:
    """Run the sparse rows of Table 2 for ``dataset``; returns the markdown."""
    name, fields = preset_for(dataset)
    if name not in PAPER_TABLE2:
        raise ConfigError(f"Table 2 covers {', '.join(PAPER_TABLE2)}; got {dataset!r}")
    base = TrainConfig(**{**fields, "dataset": dataset, "preset": name, **(overrides or {})})
    if epochs is not None:
        base = base.replace(epochs=epochs)
    base.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_rows(base, TABLE2_ROWS, seeds, out, progress=progress)
    return write_table2(dataset, table2_rows(dataset, results), out, base.epochs)
