"""Table 6: Importance Pruning once after training, of Table 2's All-ReLU
models without IP, next to the paper's."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..checkpoint import latest_checkpoint
from ..config import TrainConfig
from ..errors import ConfigError
from ..experiment import run
from ..presets import preset_for
from ..report import write_json
from ..run import load_data, post_training_pruning
from .common import _finished, _fmt, _mean_std, _row_config, _write_csv, _write_text, table2_base
from .paper import paper_table6

log = logging.getLogger(__name__)

POST_PRUNE_PERCENTILES = (5.0, 10.0, 15.0, 20.0, 25.0)
# dataset: (model accuracy %, its parameters, {percentile: (accuracy %, end nnz)})
PAPER_TABLE6: dict[str, tuple[float, int, dict[float, tuple[float, int]]]] = paper_table6()


def reproduce_table6(dataset: str, seeds: int = 5, epochs: int | None = None,
                     *, out: str | Path, overrides: dict | None = None,
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

