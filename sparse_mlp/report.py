"""Results on disk: metrics CSV, JSON, learning-curve plots."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import secrets
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically; NaN becomes null.

    The text goes to a temporary file of its own in the same folder
    (``.<name>.tmp-<host>-<pid>-<random>``: writers in several processes or
    on several hosts never share one), is fsynced and renamed over ``path``
    (atomic on POSIX): a reader always sees one whole document, the old one
    or the new one.  On any failure the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    text = json.dumps(_clean(obj), indent=2) + "\n"  # before any file exists
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-"
                         f"{secrets.token_hex(4)}")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


class MetricsCSV:
    """Append one row per epoch, flushed at once (a killed run keeps its rows)."""

    def __init__(self, path: Path, columns: Iterable[str], append: bool = False) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        new = not (append and self.path.exists())
        if not new:  # continue under the file's own header (one written before a column
            with open(self.path, newline="") as fh:  # was added keeps its shape)
                header = next(csv.reader(fh), None)
            new = not header
            self.columns = header or self.columns
        self._fh = open(self.path, "a" if not new else "w", newline="")
        self._w = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="ignore")
        if new:
            self._w.writeheader()
            self._fh.flush()

    def __call__(self, row: dict) -> None:
        self._w.writerow({k: _fmt(row.get(k)) for k in self.columns})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def plot_learning_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Train/test loss and accuracy (paper Figures 6-7) and nnz over epochs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]

    def col(name):
        return np.array([np.nan if r[name] is None else r[name] for r in history], float)

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(ep, col("train_loss"), label="train")
    test_loss = col("test_loss")
    ok = ~np.isnan(test_loss)
    ax[0].plot(np.array(ep)[ok], test_loss[ok], label="test")
    ax[0].set(xlabel="epoch", ylabel="loss", title="loss")
    ax[1].plot(ep, 100 * col("train_acc"), label="train (running, with dropout)")
    test_acc = col("test_acc")
    ax[1].plot(np.array(ep)[ok], 100 * test_acc[ok], label="test")
    ax[1].set(xlabel="epoch", ylabel="accuracy [%]", title="accuracy")
    ax[2].plot(ep, col("nnz"))
    ax[2].set(xlabel="epoch", ylabel="weights", title="nnz (after evolution)")
    for a in ax[:2]:
        a.legend()
    for a in ax:
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
