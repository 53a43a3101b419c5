"""The paper's figures from a reproduction's run folders, as PNG files.

Reads ``<out>/<row>/seed<k>/metrics.csv`` and ``diagnostics.json`` (runs
made with ``cfg.diagnostics``; ``--reproduce`` switches it on) and draws,
each curve the mean over the seeds found (band: +- one standard deviation):

  fig_learning_curves.png     train and test loss and accuracy of every row
                              over epochs, overlaid (paper Figures 6 and 7)
  fig_nnz_per_layer.png       weights of every layer over epochs, one panel
                              per row (Importance Pruning shrinks them)
  fig_gradient_flow.png       squared norm of the loss gradient on a fixed
                              training batch per epoch, ReLU against All-ReLU
                              (paper Figure 5)
  fig_input_connectivity.png  connections of every input neuron over epochs:
                              heatmaps in the image's layout for image data
                              (28x28, 3x32x32 summed over channels), one row
                              of pixels per epoch for other data

Rows without the needed files (runs made before diagnostics existed) are
left out of that figure, with a log line.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DPI = 110  # of every PNG

LABELS = {"relu": "SET-MLP ReLU", "relu_ip": "SET-MLP ReLU + IP",
          "allrelu": "SET-MLP All-ReLU", "allrelu_ip": "SET-MLP All-ReLU + IP",
          "dense_relu": "Dense ReLU", "dense_allrelu": "Dense All-ReLU"}
COLORS = {"relu": "tab:blue", "relu_ip": "tab:cyan", "allrelu": "tab:red",
          "allrelu_ip": "tab:orange", "dense_relu": "tab:gray", "dense_allrelu": "black"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv as float columns (empty cells: NaN)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = rows[0].keys() if rows else []
    return {c: np.array([float(r[c]) if r[c] not in ("", None) else np.nan for r in rows])
            for c in cols}


def load_runs(out: Path, keys, seeds: int) -> dict[str, list[dict]]:
    """Per row key, one {"metrics", "diagnostics"} per seed whose run folder
    has a metrics.csv (diagnostics: the dict of diagnostics.json or None)."""
    runs: dict[str, list[dict]] = {}
    for key in keys:
        found = []
        for seed in range(seeds):
            d = Path(out) / key / f"seed{seed}"
            if not (d / "metrics.csv").exists():
                continue
            diag = None
            if (d / "diagnostics.json").exists():
                diag = json.loads((d / "diagnostics.json").read_text())
            found.append({"metrics": read_metrics(d / "metrics.csv"), "diagnostics": diag,
                          "seed": seed})
        if found:
            runs[key] = found
        elif (Path(out) / key).exists():
            log.info("figures: %s has no per-epoch metrics (runs made before they were "
                     "kept); left out", Path(out) / key)
    return runs


def _stack(series: list[np.ndarray]) -> np.ndarray:
    n = min(len(s) for s in series)
    return np.vstack([np.asarray(s[:n], dtype=float) for s in series])


def _band(ax, x, Y, label, color, style="-", log_y=False):
    """Mean line and +-1 std band of the rows of Y (NaN ignored)."""
    with np.errstate(all="ignore"):
        m = np.nanmean(Y, axis=0)
        s = np.nanstd(Y, axis=0) if Y.shape[0] > 1 else np.zeros_like(m)
    ok = np.isfinite(m)
    x = np.asarray(x)[: m.size]
    ax.plot(x[ok], m[ok], style, color=color, label=label, lw=1.2)
    if Y.shape[0] > 1:
        lo, hi = m - s, m + s
        if log_y:
            lo = np.where(lo > 0, lo, m)
        ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.15, lw=0)


def plot_learning_curves(runs: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Train/test loss and accuracy of every row over epochs (Figures 6-7)."""
    plt = _plt()
    fig, ax = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    panels = [("train_loss", ax[0, 0], "train loss (running, with dropout)", 1),
              ("test_loss", ax[0, 1], "test loss", 1),
              ("train_acc", ax[1, 0], "train accuracy [%] (running, with dropout)", 100),
              ("test_acc", ax[1, 1], "test accuracy [%]", 100)]
    for key, rs in runs.items():
        n_seeds = len(rs)
        label = f"{LABELS.get(key, key)} ({n_seeds} seed{'s' if n_seeds > 1 else ''})"
        x = rs[0]["metrics"]["epoch"] + 1
        for col, a, _, scale in panels:
            Y = _stack([r["metrics"][col] * scale for r in rs])
            _band(a, x, Y, label, COLORS.get(key), "--" if key.startswith("dense") else "-")
    for _col, a, name, _ in panels:
        a.set_title(name)
        a.grid(alpha=0.3)
    for a in ax[1]:
        a.set_xlabel("epoch")
    ax[0, 1].legend(fontsize=8)
    fig.suptitle(f"Learning curves, {title} (mean ± std over seeds)" if title else
                 "Learning curves")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_nnz_per_layer(runs: dict[str, list[dict]], path: Path, title: str = "") -> Path | None:
    """Weights of every layer over epochs, one panel per row."""
    have = {k: rs for k, rs in runs.items()
            if all(r["diagnostics"] and r["diagnostics"].get("nnz_layers") for r in rs)}
    if not have:
        log.info("figures: no run has per-layer nnz (diagnostics); no %s", path.name)
        return None
    plt = _plt()
    n = len(have)
    cols = min(n, 3)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(5 * cols, 3.6 * rows_), squeeze=False)
    for a, (key, rs) in zip(axes.ravel(), have.items()):
        x = np.asarray(rs[0]["diagnostics"]["epoch"]) + 1
        per = [np.asarray(r["diagnostics"]["nnz_layers"], dtype=float) for r in rs]
        n_ep = min(p.shape[0] for p in per)
        per = np.stack([p[:n_ep] for p in per])  # seeds x epochs x layers
        for li in range(per.shape[2]):
            _band(a, x[:n_ep], per[:, :, li], f"layer {li + 1}", f"C{li}")
        a.set(title=LABELS.get(key, key), xlabel="epoch", ylabel="weights")
        a.set_yscale("log")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    for a in axes.ravel()[n:]:
        a.axis("off")
    fig.suptitle(f"Weights per layer (after each epoch's evolution), {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_gradient_flow(runs: dict[str, list[dict]], path: Path, title: str = "") -> Path | None:
    """Gradient flow per epoch, ReLU against All-ReLU (paper Figure 5)."""
    have = {k: rs for k, rs in runs.items()
            if all(r["diagnostics"] and r["diagnostics"].get("grad_flow") for r in rs)}
    if not have:
        log.info("figures: no run has the gradient flow (diagnostics); no %s", path.name)
        return None
    plt = _plt()
    sparse = {k: v for k, v in have.items() if not k.startswith("dense")}
    dense = {k: v for k, v in have.items() if k.startswith("dense")}
    groups = [(g, name) for g, name in ((sparse, "SET-MLP"), (dense, "dense MLP")) if g]
    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 4.5), squeeze=False)
    for a, (group, name) in zip(axes[0], groups):
        for key, rs in group.items():
            x = np.asarray(rs[0]["diagnostics"]["epoch"]) + 1
            Y = _stack([np.asarray(r["diagnostics"]["grad_flow"], dtype=float) for r in rs])
            _band(a, x, Y, f"{LABELS.get(key, key)} ({len(rs)} seeds)", COLORS.get(key),
                  "--" if key.endswith("_ip") else "-", log_y=True)
        a.set_yscale("log")
        a.set(title=name, xlabel="epoch", ylabel="gradient flow  ||dL/dw||²")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"Gradient flow, {title}: squared norm of the loss gradient on a fixed "
                 "training batch, no dropout, at each epoch's end")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _snapshot_epochs(n: int, k: int = 5) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(k, n))})


def plot_input_connectivity(runs: dict[str, list[dict]], path: Path,
                            image_shape: tuple[int, int, int] | None = None,
                            title: str = "") -> Path | None:
    """Connections of every input neuron over epochs (first seed of each
    sparse row): image heatmaps at a few epochs, or epochs x inputs."""
    have = {k: rs[0] for k, rs in runs.items()
            if rs[0]["diagnostics"] and rs[0]["diagnostics"].get("in_degree")
            and rs[0]["diagnostics"]["in_degree"][0] is not None}
    if not have:
        log.info("figures: no sparse run has the input connectivity (diagnostics); no %s",
                 path.name)
        return None
    plt = _plt()
    n_rows = len(have)
    if image_shape is not None:
        c, h, w = image_shape
        n_ep = min(len(r["diagnostics"]["in_degree"]) for r in have.values())
        snaps = _snapshot_epochs(n_ep)
        fig, axes = plt.subplots(n_rows, len(snaps), figsize=(2.6 * len(snaps) + 1,
                                                               2.6 * n_rows + 0.6),
                                 squeeze=False, layout="constrained")
        for i, (key, r) in enumerate(have.items()):
            deg = np.asarray(r["diagnostics"]["in_degree"], dtype=float)
            if deg.shape[1] != c * h * w:
                raise ValueError(f"{deg.shape[1]} inputs are not a {c}x{h}x{w} image")
            maps = deg.reshape(-1, c, h, w).sum(axis=1)
            vmax = maps[snaps].max()
            for j, e in enumerate(snaps):
                a = axes[i, j]
                im = a.imshow(maps[e], cmap="viridis", vmin=0, vmax=vmax)
                a.set_xticks([])
                a.set_yticks([])
                if i == 0:
                    a.set_title(f"epoch {r['diagnostics']['epoch'][e] + 1}")
                if j == 0:
                    a.set_ylabel(LABELS.get(key, key), fontsize=8)
            fig.colorbar(im, ax=axes[i].tolist(), shrink=0.8, label="connections")
        what = f"per pixel{' (summed over the 3 channels)' if c > 1 else ''}"
    else:
        fig, axes = plt.subplots(n_rows, 1, figsize=(10, 2.4 * n_rows + 0.6), squeeze=False,
                                 layout="constrained")
        for i, (key, r) in enumerate(have.items()):
            deg = np.asarray(r["diagnostics"]["in_degree"], dtype=float)
            a = axes[i, 0]
            im = a.imshow(deg, aspect="auto", cmap="viridis", interpolation="nearest",
                          extent=(-0.5, deg.shape[1] - 0.5, deg.shape[0] + 0.5, 0.5))
            a.set(ylabel="epoch", title=LABELS.get(key, key))
            fig.colorbar(im, ax=a, label="connections")
        axes[-1, 0].set_xlabel("input feature")
        what = "per input feature"
    fig.suptitle(f"Input-layer connectivity {what}, {title} (seed "
                 f"{next(iter(have.values()))['seed']}, after each epoch's evolution)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def draw_table_figures(out: Path, keys, seeds: int, title: str = "",
                       image_shape: tuple[int, int, int] | None = None) -> list[Path]:
    """Every figure of a Table 2 reproduction folder; returns the files written."""
    out = Path(out)
    runs = load_runs(out, keys, seeds)
    if not runs:
        log.info("figures: no run in %s has per-epoch metrics", out)
        return []
    written = [plot_learning_curves(runs, out / "fig_learning_curves.png", title),
               plot_nnz_per_layer(runs, out / "fig_nnz_per_layer.png", title),
               plot_gradient_flow(runs, out / "fig_gradient_flow.png", title),
               plot_input_connectivity(runs, out / "fig_input_connectivity.png", image_shape,
                                       title)]
    return [p for p in written if p is not None]
