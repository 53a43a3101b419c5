"""One experiment end to end: data -> model -> training -> results on disk.

``run(cfg)`` is what ``run_experiment.py`` calls.  It writes into the
output folder:
  config.json          the fully resolved configuration (and the data's provenance)
  metrics.csv          one row per epoch (written as training goes)
  summary.json         best / final accuracy, nnz, times, peak memory, versions
  post_pruning.csv     Table 6 rows, when --post-prune is given
  learning_curves.png  loss, accuracy and nnz over epochs
"""

from __future__ import annotations

import logging
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import TrainConfig
from .evolution import importance_prune
from .kernels import build_info, default_threads
from .memory import check_fits, estimate
from .model import SparseMLP
from .report import MetricsCSV, plot_learning_curves, write_json
from .training import METRIC_COLUMNS, RandomStreams, Trainer

log = logging.getLogger(__name__)


def resolve_out_dir(cfg: TrainConfig) -> Path:
    """The run's folder: --out, or a new runs/<dataset>_<time> folder."""
    if cfg.out:
        out = Path(cfg.out)
    else:
        name = Path(cfg.dataset).stem if ("/" in cfg.dataset or "." in cfg.dataset) \
            else cfg.dataset
        out = Path("runs") / f"{name}_{time.strftime('%Y%m%d_%H%M%S')}_seed{cfg.seed}"
        k = 1
        while out.exists():
            out = out.with_name(out.name.split("__")[0] + f"__{k}")
            k += 1
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_data(cfg: TrainConfig):
    """The dataset of a configuration (sparse_mlp.datasets)."""
    from .datasets import load_dataset
    return load_dataset(cfg.dataset, cfg.data_dir, n_train=cfg.n_train, n_test=cfg.n_test,
                        n_features=cfg.n_features, n_classes=cfg.n_classes,
                        label_column=cfg.label_column, test_fraction=cfg.test_fraction,
                        seed=cfg.seed)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def versions() -> dict[str, Any]:
    import scipy
    return {"sparse_mlp": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, **build_info(),
            "machine": platform.machine(), "platform": platform.platform()}


def build_model(cfg: TrainConfig, n_features: int, n_classes: int, streams: RandomStreams,
                n_samples: int = 0) -> SparseMLP:
    """Check the memory estimate, then draw the sparse network."""
    sizes = [n_features, *cfg.hidden, n_classes]
    est = estimate(sizes, cfg.epsilon, cfg.batch_size, cfg.eval_batch_size, n_samples,
                   srelu=cfg.activation == "srelu")
    check_fits(est, sizes, cfg.batch_size)
    return SparseMLP(sizes, epsilon=cfg.epsilon, activation=cfg.activation, alpha=cfg.alpha,
                     init=cfg.weight_init, output=cfg.output, dropout=cfg.dropout,
                     rng=streams.init, n_threads=cfg.threads or default_threads())


def post_training_pruning(model: SparseMLP, X_test, y_test, percentiles, batch_size: int
                          ) -> list[dict]:
    """Paper Table 6: prune once at each percentile (on a copy) and evaluate."""
    rows = []
    base_loss, base_acc = model.evaluate(X_test, y_test, batch_size)
    rows.append({"percentile": 0, "test_acc": base_acc, "test_loss": base_loss,
                 "nnz": model.nnz})
    for p in percentiles:
        m = model.copy()
        for layer in m.layers[:-1]:
            importance_prune(layer, p, n_threads=m.n_threads)
        loss, acc = m.evaluate(X_test, y_test, batch_size)
        rows.append({"percentile": p, "test_acc": acc, "test_loss": loss, "nnz": m.nnz})
    return rows


def run(cfg: TrainConfig, data=None, progress: bool | None = None) -> dict[str, Any]:
    """Run one experiment; returns the summary (also in summary.json)."""
    cfg.validate()
    t_start = time.perf_counter()
    if data is None:
        data = load_data(cfg)
    threads = cfg.threads or default_threads()
    cfg = cfg.replace(threads=threads)
    out = resolve_out_dir(cfg)
    cfg = cfg.replace(out=str(out))
    write_json(out / "config.json", {**cfg.to_dict(), "data": data.info,
                                     "n_features": data.n_features,
                                     "n_classes": data.n_classes, "classes": data.classes})
    log.info("dataset %s: %d train / %d test samples, %d features, %d classes", data.name,
             data.X_train.shape[0], data.X_test.shape[0], data.n_features, data.n_classes)

    streams = RandomStreams(cfg.seed)
    t0 = time.perf_counter()
    model = build_model(cfg, data.n_features, data.n_classes, streams,
                        data.X_train.shape[0] + data.X_test.shape[0])
    init_s = time.perf_counter() - t0
    nnz_start = model.nnz_per_layer()
    log.info("model %s: %s weights (%s per layer), init %.2fs, %d threads",
             "-".join(map(str, model.sizes)), f"{model.nnz:,}", nnz_start, init_s, threads)

    csv_out = MetricsCSV(out / "metrics.csv", METRIC_COLUMNS)
    trainer = Trainer(cfg, model, data.X_train, data.y_train, data.X_test, data.y_test,
                      streams, on_epoch=csv_out)
    try:
        state = trainer.run(progress=progress)
    finally:
        csv_out.close()
    hist = state.history

    post_rows = []
    if cfg.post_prune:
        post_rows = post_training_pruning(model, data.X_test, data.y_test, cfg.post_prune,
                                          cfg.eval_batch_size)
        pp = MetricsCSV(out / "post_pruning.csv", ["percentile", "test_acc", "test_loss", "nnz"])
        for r in post_rows:
            pp(r)
        pp.close()

    final = hist[-1]
    summary = {
        "dataset": data.name,
        "architecture": "-".join(map(str, model.sizes)),
        "activation": cfg.activation, "alpha": cfg.alpha,
        "importance_pruning": cfg.importance_pruning,
        "epochs": cfg.epochs, "seed": cfg.seed,
        "best_test_acc": state.best_test_acc, "best_epoch": state.best_epoch,
        "final_test_acc": final["test_acc"], "final_test_loss": final["test_loss"],
        "final_train_loss": final["train_loss"],
        "nnz_start": int(sum(nnz_start)), "nnz_end": model.nnz,
        "nnz_per_layer_start": nnz_start, "nnz_per_layer_end": model.nnz_per_layer(),
        "init_s": init_s,
        "train_s": sum(r["train_s"] for r in hist),
        "test_s": sum(r["test_s"] for r in hist),
        "evolution_s": sum(r["evolution_s"] for r in hist),
        "wall_s": time.perf_counter() - t_start,
        "mean_epoch_train_s": float(np.mean([r["train_s"] for r in hist])),
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": threads,
        "post_pruning": post_rows,
        "versions": versions(),
        "out": str(out),
    }
    write_json(out / "summary.json", summary)
    try:
        plot_learning_curves(hist, out / "learning_curves.png",
                             title=f"{data.name} {summary['architecture']} {cfg.activation}"
                                   f"{' + IP' if cfg.importance_pruning else ''}")
    except Exception as exc:  # a plot must never lose a finished run
        log.warning("could not draw learning_curves.png: %s", exc)
    return summary
