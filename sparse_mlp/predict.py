"""Predicting on new data with a trained model: ``run_experiment.py
--predict NEW --model RUN_OR_CHECKPOINT --out predictions.csv``.

The file is read by the training readers (:func:`sparse_mlp.datasets.files.
read_features`: .csv/.tsv, .npz, libsvm), never split or standardised by
them: the model applies the training run's standardisation
(:class:`~sparse_mlp.trained.TrainedModel`).  The output has one row per
sample, in the file's order: the predicted label (column ``prediction``),
then the probability of each class (one column per class, named after it).
A label column in the file is left out of the features and, when present,
gives the accuracy.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import load
from .datasets.files import read_features
from .errors import CheckpointError, ConfigError
from .preprocessing import MissingPreprocessingWarning

log = logging.getLogger(__name__)

PREDICTION_COLUMN = "prediction"


def prediction_column(classes: list) -> str:
    """The name of the predicted-label column: ``prediction``, unless a
    class is named so."""
    name = PREDICTION_COLUMN
    names = {str(c) for c in classes}
    while name in names:
        name = "_" + name
    return name


def predict_file(data: str | os.PathLike, model: str | os.PathLike,
                 out: str | os.PathLike | None = None, *, label_column: str | int | None = None,
                 threads: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Predict every sample of a file with a saved model and write the results.

    Parameters
    ----------
    data : path-like
        The samples: .csv/.tsv (optionally .gz), .npz or libsvm, raw
        features as in the training file (see
        :func:`~sparse_mlp.datasets.files.read_features`).
    model : path-like
        A checkpoint file or a run folder (its ``best.h5`` if any, else its
        newest checkpoint).
    out : path-like, optional
        The output: .csv (default ``<data name>.predictions.csv`` in the
        current folder) or .npz (arrays ``prediction``, ``probabilities``
        float32 (n, C), ``classes``).  Replaced if it exists (atomically).
    label_column : str or int, optional
        The file's label column (default: the training file's, if present).
    threads, batch_size : int, optional
        Kernel threads; samples per inference block.

    Returns
    -------
    dict
        ``checkpoint``, ``n_samples``, ``out``, ``prediction_column``,
        ``classes``, and with labels ``accuracy``, ``n_labelled``,
        ``n_unknown_labels`` (labels the model never saw, counted wrong).

    Raises
    ------
    CheckpointError
        No valid checkpoint, or one without a preprocessing record.
    DatasetError, ConfigError
        An unreadable file, missing columns, a wrong number of features.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingPreprocessingWarning)
        trained = load(model, n_threads=threads)
    pre = trained.preprocessing
    if pre is None:
        raise CheckpointError(
            f"{trained.path} carries no preprocessing record (written by an older sparse_mlp): "
            f"its model takes features standardised with the training statistics, which it "
            f"does not have, so it cannot predict raw features. Train the model again with "
            f"this version, or in Python wrap it with the training data's record: "
            f"TrainedModel(network, load_dataset(...).preprocessing)")
    if pre.task != "classification":
        raise ConfigError(f"--predict writes class predictions; {trained.path} is a "
                          f"{pre.task} model")
    data = Path(data)
    X, y, info = read_features(data, pre.n_features, feature_names=pre.feature_names,
                               label_column=label_column, train_label_column=pre.label_column)
    ids, proba = trained._ids_and_proba(X, batch_size)
    labels = pre.labels(ids)
    classes = list(pre.classes)
    col = prediction_column(classes)
    target = Path(out) if out is not None else Path(data.name.split(".")[0]
                                                     + ".predictions.csv")
    _write_atomic(target, labels, proba, classes, col)
    result: dict[str, Any] = {"checkpoint": str(trained.path), "data": str(data),
                              "n_samples": int(ids.size), "out": str(target),
                              "prediction_column": col, "classes": classes,
                              "architecture": "-".join(map(str, trained.sizes)),
                              "label_column": info.get("label_column") if y is not None
                              else None}
    if y is not None:
        want = pre.class_ids(y)
        result.update(accuracy=float(np.mean(ids == want)) if ids.size else float("nan"),
                      n_labelled=int(y.size), n_unknown_labels=int((want < 0).sum()))
    log.info("predicted %d samples of %s with %s into %s", ids.size, data, trained.path, target)
    return result


def _write_atomic(target: Path, labels: np.ndarray, proba: np.ndarray, classes: list,
                  col: str) -> None:
    """The predictions as .npz or .csv, written to a temporary file and renamed."""
    if target.exists() and target.is_dir():
        raise ConfigError(f"--out {target} is a folder; give the file to write "
                          f"(predictions.csv or predictions.npz)")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {folder} for --out: {exc.strerror or exc}") from None
    tmp = folder / f".{target.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    try:
        if target.name.lower().endswith(".npz"):
            with open(tmp, "wb") as f:
                np.savez(f, prediction=labels, probabilities=proba.astype(np.float32),
                         classes=np.asarray(classes))
        else:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow([col, *[str(c) for c in classes]])
                step = 8192
                for s in range(0, labels.shape[0], step):
                    w.writerows([_cell(lab), *(f"{p:.7g}" for p in row)]
                                for lab, row in zip(labels[s:s + step].tolist(),
                                                    proba[s:s + step].tolist()))
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"could not write {target}: {exc.strerror or exc}; choose another "
                          f"--out") from None


def _cell(label: Any) -> str:
    return str(label)
