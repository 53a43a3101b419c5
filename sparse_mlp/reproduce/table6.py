"""Table 6: Importance Pruning once after training, of Table 2's All-ReLU
models without IP, next to the paper's."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..checkpoint import BEST_CHECKPOINT, latest_checkpoint, load_checkpoint
from ..config import TrainConfig
from ..errors import ConfigError, SparseMLPError
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
    ``out`` to prune its models instead of training new ones.  Each run keeps
    its best-test-accuracy model (``--keep-best test``, ``checkpoints/best.h5``):
    the paper's Table 6 prunes that one (its 0% row is Table 2's best
    accuracy); the final model's rows are reported beside it.
    """
    base = table2_base(dataset, epochs, {**(overrides or {}), "diagnostics": True,
                                         "keep_best": "test"}, synthetic)
    summaries = post_prune_rows(base, seeds, Path(out), percentiles, data, progress)
    return write_table6(dataset, summaries, Path(out), base.epochs, percentiles, synthetic)


def best_model(run_dir: Path, summary: dict, n_threads: int | None = None):
    """(model, epoch) of the run's ``checkpoints/best.h5`` when it holds the
    run's best test epoch (``summary["best_test_epoch"]``), else None (a run
    trained without ``--keep-best test``, or a stale file)."""
    path = Path(run_dir) / "checkpoints" / BEST_CHECKPOINT
    if not path.is_file():
        return None
    try:
        ck = load_checkpoint(path, n_threads=n_threads)
    except SparseMLPError as exc:
        log.warning("%s: %s", path, exc)
        return None
    epoch = (ck.extra or {}).get("best", {}).get("epoch")
    if epoch is None or int(epoch) != summary.get("best_test_epoch"):
        return None
    return ck.model, int(epoch)


def post_prune_rows(base: TrainConfig, seeds: int, out: Path, percentiles=POST_PRUNE_PERCENTILES,
                    data=None, progress: bool = False) -> list[dict]:
    """The All-ReLU run of every seed in ``<out>/allrelu/seed<k>`` with its
    ``post_pruning`` rows (the final model) and ``post_pruning_best`` rows
    (the best-test-accuracy model, ``best.h5``; None when the run has none):
    a finished run is pruned from its checkpoints (its summary.json gets the
    rows), a missing or unfinished one is trained (or continued) with
    ``post_prune`` and ``keep_best`` set."""

    percentiles = [float(p) for p in percentiles]
    summaries = []
    for seed in range(seeds):
        run_dir = Path(out) / "allrelu" / f"seed{seed}"
        cfg = _row_config(base, "allrelu", False, seed, run_dir).replace(post_prune=percentiles)
        summary = _finished(run_dir / "summary.json", cfg)

        def done(key: str, summary=summary) -> bool:
            rows = (summary or {}).get(key)
            return rows is not None and set(percentiles) <= {float(r["percentile"])
                                                             for r in rows}
        if summary is not None and done("post_pruning") and (
                done("post_pruning_best") or "post_pruning_best" in summary):
            summaries.append(summary)  # (post_pruning_best None: the run has no best.h5)
            continue
        if data is None:
            data = load_data(cfg)
        if summary is None:
            log.info("allrelu seed %d -> %s (training, then post-training pruning)", seed,
                     run_dir)
            summary = run(cfg, data=data, progress=progress, resume="auto",
                          overrides={"threads": cfg.threads, "post_prune": percentiles,
                                     "keep_best": cfg.keep_best})
        elif not done("post_pruning"):
            ckpt = latest_checkpoint(run_dir / "checkpoints", n_threads=cfg.threads)
            if ckpt is None or ckpt.state is None or ckpt.state.epoch != cfg.epochs:
                raise ConfigError(
                    f"{run_dir} holds a finished run but not its final checkpoint (was it "
                    f"trained with --checkpoint-every 0, or were the checkpoints deleted?), so "
                    f"its model cannot be pruned; give another --out to train new All-ReLU runs")
            log.info("allrelu seed %d: pruning the final model of %s", seed, ckpt.path)
            summary["post_pruning"] = post_training_pruning(
                ckpt.model, data.X_test, data.y_test, percentiles, cfg.eval_batch_size)
        best = best_model(run_dir, summary, cfg.threads)
        if best is None:
            log.warning("allrelu seed %d: %s holds no best-test-accuracy model (trained "
                        "without --keep-best test); Table 6 has only its final model", seed,
                        run_dir)
            summary["post_pruning_best"] = None
        else:
            log.info("allrelu seed %d: pruning the best model (epoch %d)", seed, best[1] + 1)
            summary["post_pruning_best"] = post_training_pruning(
                best[0], data.X_test, data.y_test, percentiles, cfg.eval_batch_size)
            summary["post_pruning_best_epoch"] = best[1]
        write_json(run_dir / "summary.json", summary)
        summaries.append(summary)
    return summaries


def table6_rows(dataset: str, summaries: list[dict], percentiles,
                key: str = "post_pruning") -> list[dict]:
    """One dict per pruning threshold (percentile 0: the unpruned model) over
    the runs that have ``key`` rows: ``post_pruning`` (the final model) or
    ``post_pruning_best`` (the best-test-accuracy model)."""
    name, _ = preset_for(dataset)
    paper = PAPER_TABLE6.get(name, (None, None, {}))
    have = [s for s in summaries if s.get(key)]
    rows = []
    if not have:
        return rows
    for p in [0.0, *percentiles]:
        found = [next(r for r in s[key] if float(r["percentile"]) == p) for s in have]
        acc_m, acc_s = _mean_std([100 * r["test_acc"] for r in found])
        pp = paper[2].get(p, (None, None)) if p else (None, paper[1])
        rows.append({"model": "best" if key.endswith("_best") else "final", "percentile": p,
                     "seeds": len(found), "acc_mean": acc_m, "acc_std": acc_s,
                     "nnz": float(np.mean([r["nnz"] for r in found])),
                     "paper_acc": pp[0], "paper_nnz": pp[1]})
    return rows


def _table(rows: list[dict]) -> list[str]:
    lines = ["| pruning threshold | accuracy [%] (mean ± std) | paper [%] | end nnz | "
             "paper end nnz |", "|---|---|---|---|---|"]
    for r in rows[1:]:
        lines.append(f"| {r['percentile']:g}th percentile | {r['acc_mean']:.2f} ± "
                     f"{r['acc_std']:.2f} | {_fmt(r['paper_acc'], '.2f')} | {r['nnz']:,.0f} | "
                     f"{_fmt(r['paper_nnz'], ',')} |")
    return lines


def write_table6(dataset: str, summaries: list[dict], out: Path, epochs: int, percentiles,
                 synthetic: bool = False) -> str:
    name, _ = preset_for(dataset)
    paper = PAPER_TABLE6.get(name, (None, None, {}))
    best_rows = table6_rows(dataset, summaries, percentiles, "post_pruning_best")
    final_rows = table6_rows(dataset, summaries, percentiles, "post_pruning")
    best_m, best_s = _mean_std([100 * s["best_test_acc"] for s in summaries])
    pruned = (best_rows or final_rows or [{"nnz": float("nan")}])[0]["nnz"]
    lines = [f"# Table 6, {dataset}{' shape on synthetic data (TIMING ONLY)' if synthetic else ''}"
             f": Importance Pruning once after training, All-ReLU without IP, "
             f"{len(summaries)} seeds x {epochs} epochs", "",
             f"Model: best test accuracy {best_m:.2f} ± {best_s:.2f} % (paper "
             f"{_fmt(paper[0], '.2f')}), {pruned:,.0f} weights "
             f"(paper {_fmt(paper[1], ',')}).", ""]
    if best_rows:
        b = best_rows[0]
        lines += [f"## The best-epoch model (the paper's protocol: the epoch of the best test "
                  f"accuracy, `checkpoints/best.h5`; {b['seeds']} of {len(summaries)} seeds)",
                  "", f"Unpruned: {b['acc_mean']:.2f} ± {b['acc_std']:.2f} %, "
                  f"{b['nnz']:,.0f} weights.", "", *_table(best_rows), ""]
    else:
        lines += ["The runs hold no best-epoch model (trained without `--keep-best test`): "
                  "only the final models are pruned below.", ""]
    if final_rows:
        f = final_rows[0]
        lines += ["## The final model (after the last epoch, no epoch selected)", "",
                  f"Unpruned: {f['acc_mean']:.2f} ± {f['acc_std']:.2f} %, {f['nnz']:,.0f} "
                  f"weights.", "", *_table(final_rows), ""]
    lines += ["Each model is pruned once: in every hidden layer the neurons whose importance "
              "(sum of |incoming weights|) is at or below the percentile lose all their "
              "incoming weights; then the test set is evaluated. The paper's 0% row equals "
              "its Table 2 best accuracy, so it pruned the best-epoch model."]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "table6.md", text)
    _write_csv(out / "table6.csv", best_rows + final_rows)
    return text
