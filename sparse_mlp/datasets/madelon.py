"""Madelon (UCI): the whitespace-separated ``madelon_{train,valid}.{data,labels}``
files; train = the UCI train file (2000 rows), test = the UCI "valid" file
(600 rows, which has labels).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sparse_mlp.errors import DatasetError

from .base import _encode, _limit, _locate, _Options, _Raw, _reject
from .cache import _cached

logger = logging.getLogger(__name__)


def _read_text_matrix(path: Path, what: str, expect: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not a valid {what} ({exc}). Expected {expect}; replace it "
                           "with the original UCI file.") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None
    if arr.size == 0:
        raise DatasetError(f"{path} is empty. Expected {expect}; replace it with the original UCI "
                           "file.")
    return arr


def _parse_madelon(paths: dict[str, Path]) -> _Raw:
    Xtr = _read_text_matrix(paths["madelon_train.data"], "Madelon data file",
                            "whitespace-separated integers, 500 per line")
    ytr = _read_text_matrix(paths["madelon_train.labels"], "Madelon labels file",
                            "one label (-1 or 1) per line")
    Xte = _read_text_matrix(paths["madelon_valid.data"], "Madelon data file",
                            "whitespace-separated integers, 500 per line")
    yte = _read_text_matrix(paths["madelon_valid.labels"], "Madelon labels file",
                            "one label (-1 or 1) per line")
    for X, y, part in ((Xtr, ytr, "train"), (Xte, yte, "valid")):
        if y.shape[1] != 1:
            raise DatasetError(f"madelon_{part}.labels has {y.shape[1]} values per line; expected "
                               "one label per line. Replace it with the UCI file.")
        if X.shape[0] != y.shape[0]:
            raise DatasetError(f"madelon_{part}.data has {X.shape[0]} rows but "
                               f"madelon_{part}.labels has {y.shape[0]}; the files do not belong "
                               "together. Replace both with the UCI files.")
    if Xtr.shape[1] != Xte.shape[1]:
        raise DatasetError(f"madelon_train.data has {Xtr.shape[1]} features but madelon_valid.data "
                           f"has {Xte.shape[1]}; replace them with the UCI files.")
    if Xtr.shape != (2000, 500) or Xte.shape != (600, 500):
        logger.warning("madelon: shapes %s / %s differ from the UCI files' (2000, 500) / "
                       "(600, 500)", Xtr.shape, Xte.shape)
    y_train, y_test, classes = _encode(ytr[:, 0], yte[:, 0], "madelon")
    info = {"source": "UCI Madelon", "split": "train = madelon_train.* (all rows), test = "
            "madelon_valid.* (all rows; the UCI validation set, which has labels)"}
    return _Raw(Xtr.astype(np.float32), y_train, Xte.astype(np.float32), y_test, classes, info)


def _load_madelon(opts: _Options, data_dir: Any) -> _Raw:
    _reject(opts, "madelon", "n_features", "n_samples", "n_classes", "label_column",
            "test_fraction", why="its train/test split is fixed by the UCI files")
    paths = _locate("madelon", data_dir, opts)
    directory = next(iter(paths.values())).parent
    raw = _cached("madelon", directory, list(paths.values()), {}, lambda: _parse_madelon(paths))
    return _limit(raw, opts, "madelon")
