"""Datasets: the paper's five, a synthetic generator, digits and user files.

:func:`load_dataset` is the one entry point.  ``spec`` is either a dataset
name (:data:`PAPER_DATASETS`) or the path of a user's file (``.npz``,
``.csv``, ``.tsv``, libsvm/svmlight).  It returns a :class:`Dataset` whose
features are float32, C-contiguous and standardised with the training
set's mean and standard deviation, and whose labels are int32 class ids
``0..C-1`` (``Dataset.classes`` holds the original label of each id, in
sorted order).

Paper datasets and the rows used (``data/README.md`` has the details):

* ``madelon``: UCI train file (2000 rows) / UCI "valid" file (600 rows).
* ``higgs``: ``HIGGS.csv.gz``; train = rows ``0 .. n_train-1`` (default
  105000), test = rows ``HIGGS_TEST_START .. HIGGS_TEST_START+n_test-1``
  with ``HIGGS_TEST_START = 10_500_000`` (the official test part is the
  last 500000 rows; default ``n_test`` 50000).  Rows count from 0, header
  free, in file order.  The gzip is streamed: only kept rows are parsed.
* ``fashionmnist``: the four IDX gzip files, 60000 / 10000.
* ``cifar10``: ``cifar-10-python.tar.gz``, 50000 / 10000, read from the
  tarball without extracting.
* ``leukemia``: GEO GSE13159 series matrix, 2096 samples x 54675 probes,
  18 classes; stratified seeded split 1397 / 699.
* ``synthetic``: scikit-learn's ``make_classification`` (Table 4 shape by
  default: 10000 samples x 65536 features, 2 classes, 70/30).
* ``digits``: scikit-learn's bundled 8x8 digits, stratified 75/25.

Raw paper-dataset files are parsed once and cached next to them as
``sparse_mlp-cache-<name>-<key>.npz`` (written atomically, keyed by the
parameters that change the parse, invalidated when a source file's size or
modification time changes).  Missing files are downloaded on first use
(:mod:`sparse_mlp.download`).

Every problem a user can cause raises :class:`~sparse_mlp.errors.DatasetError`
(or :class:`~sparse_mlp.errors.ConfigError` for impossible option
combinations) with a message that names the problem and the fix.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import math
import operator
import os
import pickle
import re
import struct
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparse_mlp.download import REMOTE_FILES, _Progress, download_dataset, expected_files
from sparse_mlp.download import manual_download_help as _manual_help
from sparse_mlp.errors import ConfigError, DatasetError, MemoryBudgetError

logger = logging.getLogger(__name__)

#: Dataset names accepted by ``--dataset`` besides file paths.
PAPER_DATASETS: tuple[str, ...] = (
    "leukemia", "higgs", "madelon", "fashionmnist", "cifar10", "synthetic", "digits",
)

#: Environment variable naming the data directory.
DATA_DIR_ENV = "SPARSE_MLP_DATA_DIR"

#: First row (0-based) of HIGGS's official test part: the last 500000 of 11M rows.
HIGGS_TEST_START = 10_500_000
#: Number of rows in HIGGS's official test part.
HIGGS_TEST_ROWS = 500_000
#: Paper sizes (REFERENCE.md, Table 1).
HIGGS_N_TRAIN = 105_000
HIGGS_N_TEST = 50_000
LEUKEMIA_N_TEST = 699

#: Table 4 shape of the synthetic dataset.
SYNTHETIC_N_SAMPLES = 10_000
SYNTHETIC_N_FEATURES = 65_536
SYNTHETIC_N_CLASSES = 2
SYNTHETIC_TEST_FRACTION = 0.3
#: Above this many matrix entries the chunked float32 generator replaces sklearn's.
SYNTHETIC_SKLEARN_MAX_ENTRIES = 1 << 24

#: Default held-out fraction for data without a test set.
DEFAULT_TEST_FRACTION = 0.2
DIGITS_TEST_FRACTION = 0.25

#: Bump when the cache layout or any parser changes.
CACHE_VERSION = 1

_ALIASES = {
    "fashionmnist": "fashionmnist", "fmnist": "fashionmnist",
    "cifar10": "cifar10", "cifar": "cifar10",
    "gse13159": "leukemia", "leukemia": "leukemia",
    "higgs": "higgs", "madelon": "madelon", "synthetic": "synthetic", "digits": "digits",
}

_USER_FORMATS = ".npz, .csv, .tsv (optionally .gz) or libsvm/svmlight (.svm, .libsvm, .svmlight)"
_DENSE_WARN_BYTES = 1 << 30


# ---------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------


@dataclass(repr=False)
class Dataset:
    """A classification dataset ready for training.

    Attributes
    ----------
    name : str
        Dataset name (``"madelon"``, ``"synthetic"``...) or the file name.
    X_train : numpy.ndarray
        float32, shape (n_train, n_features), C-contiguous; standardised
        with the training mean and std unless ``standardize=False``.
    y_train : numpy.ndarray
        int32, shape (n_train,), class ids ``0..n_classes-1``.
    X_test : numpy.ndarray
        float32, shape (n_test, n_features), standardised with the
        *training* mean and std.
    y_test : numpy.ndarray
        int32, shape (n_test,).
    classes : list
        Original label of each class id (str, int, float or bool), sorted.
    info : dict
        JSON-serialisable provenance: source files, rows used, split, seed,
        label mapping, cache, standardisation.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: list
    info: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.X_test.shape[0])

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
                f"n_features={self.n_features}, n_classes={self.n_classes})")


def default_data_dir() -> Path:
    """Return the directory where paper datasets are looked for and downloaded.

    Returns
    -------
    pathlib.Path
        ``$SPARSE_MLP_DATA_DIR`` if set and non-empty, else ``./data``
        (relative to the current working directory), made absolute.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return Path("data").absolute()


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@dataclass
class _Options:
    n_train: int | None
    n_test: int | None
    n_features: int | None
    n_samples: int | None
    n_classes: int | None
    label_column: str | int | None
    test_fraction: float | None
    seed: int
    download: bool
    progress: bool | None
    standardize: bool

    def given(self, *names: str) -> list[str]:
        return [n for n in names if getattr(self, n) is not None]


_FLAG = {
    "n_train": "--n-train", "n_test": "--n-test", "n_features": "--n-features",
    "n_samples": "--n-samples", "n_classes": "--n-classes", "label_column": "--label-column",
    "test_fraction": "--test-fraction",
}


def _count(value: Any, name: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{name} ({_FLAG.get(name, name)}) must be an integer, got {value!r}.")
    try:
        value = operator.index(value)
    except TypeError:
        raise ConfigError(
            f"{name} ({_FLAG.get(name, name)}) must be an integer, got {value!r}."
        ) from None
    if value < minimum:
        raise ConfigError(f"{name} ({_FLAG.get(name, name)}) must be at least {minimum}, "
                          f"got {value}.")
    return int(value)


def _make_options(n_train: Any, n_test: Any, n_features: Any, n_samples: Any, n_classes: Any,
                  label_column: Any, test_fraction: Any, seed: Any, download: Any,
                  progress: Any, standardize: Any) -> _Options:
    if test_fraction is not None:
        try:
            test_fraction = float(test_fraction)
        except (TypeError, ValueError):
            raise ConfigError(f"test_fraction (--test-fraction) must be a number between 0 and "
                              f"1, got {test_fraction!r}.") from None
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"test_fraction (--test-fraction) must be strictly between 0 and "
                              f"1, got {test_fraction}.")
    if isinstance(seed, bool):
        raise ConfigError(f"seed (--seed) must be an integer, got {seed!r}.")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ConfigError(f"seed (--seed) must be an integer, got {seed!r}.") from None
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed (--seed) must be between 0 and 2**32-1, got {seed}.")
    if label_column is not None and (isinstance(label_column, bool)
                                     or not isinstance(label_column, (str, int, np.integer))):
        raise ConfigError(f"label_column (--label-column) must be a column name or index, "
                          f"got {label_column!r}.")
    return _Options(
        n_train=_count(n_train, "n_train"), n_test=_count(n_test, "n_test"),
        n_features=_count(n_features, "n_features"), n_samples=_count(n_samples, "n_samples", 2),
        n_classes=_count(n_classes, "n_classes", 2),
        label_column=label_column if not isinstance(label_column, np.integer)
        else int(label_column),
        test_fraction=test_fraction, seed=int(seed), download=bool(download),
        progress=progress, standardize=bool(standardize),
    )


def _reject(opts: _Options, what: str, *names: str, why: str = "") -> None:
    bad = opts.given(*names)
    if bad:
        flags = ", ".join(f"{n} ({_FLAG[n]})" for n in bad)
        raise ConfigError(f"{flags} cannot be used with {what}{': ' + why if why else ''}. "
                          "Remove the option.")


# ---------------------------------------------------------------------------
# Labels, splits, checks, standardisation
# ---------------------------------------------------------------------------


def _canonical_labels(y: np.ndarray, source: str) -> np.ndarray:
    """Return labels as a 1-D int64, float64, bool or str array."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{source}: labels must be one value per sample (a 1-D array), got "
                           f"shape {y.shape}.")
    kind = y.dtype.kind
    if kind == "b":
        return y
    if kind in "iu":
        return y.astype(np.int64, copy=False)
    if kind == "f":
        if not np.isfinite(y).all():
            bad = int(np.flatnonzero(~np.isfinite(y))[0])
            raise DatasetError(f"{source}: label of sample {bad} is {y[bad]}; every sample needs "
                               "a finite label. Remove or fix those rows.")
        if np.all(y == np.round(y)) and np.all(np.abs(y) < 2**53):
            return y.astype(np.int64)
        return y.astype(np.float64, copy=False)
    if kind == "S":
        return np.char.decode(y, "utf-8", errors="replace").astype(str)
    if kind == "U":
        return y
    raise DatasetError(f"{source}: labels of dtype {y.dtype} are not supported; use numbers or "
                       "strings.")


def _labels_from_strings(values: Sequence[str], source: str) -> np.ndarray:
    """Interpret text labels as ints, then floats, else keep them as strings."""
    try:
        return _canonical_labels(np.array([int(v) for v in values], dtype=np.int64), source)
    except (ValueError, OverflowError):
        pass
    try:
        return _canonical_labels(np.array([float(v) for v in values], dtype=np.float64), source)
    except ValueError:
        pass
    return np.array(values, dtype=str)


def _encode(y_train: np.ndarray, y_test: np.ndarray | None, source: str
            ) -> tuple[np.ndarray, np.ndarray | None, list]:
    """Map labels to class ids ``0..C-1`` sorted by label.

    The classes are those of ``y_train``; test labels outside them raise
    :class:`DatasetError`.
    """
    y_train = _canonical_labels(y_train, source)
    classes = np.unique(y_train)
    if classes.size < 2:
        raise DatasetError(
            f"{source}: the training data has a single class ({classes.tolist()!r}); a classifier "
            "needs at least 2 classes. Check the label column (--label-column) and the file."
        )
    train_ids = np.searchsorted(classes, y_train).astype(np.int32)
    test_ids = None
    if y_test is not None:
        y_test = _canonical_labels(y_test, source)
        if y_test.dtype.kind != y_train.dtype.kind and not (
                {y_test.dtype.kind, y_train.dtype.kind} <= {"i", "f"}):
            raise DatasetError(f"{source}: test labels are {y_test.dtype} but training labels are "
                               f"{y_train.dtype}; use the same kind of labels in both.")
        known = np.isin(y_test, classes)
        if not known.all():
            unknown = np.unique(y_test[~known]).tolist()
            raise DatasetError(
                f"{source}: the test set has labels the training set lacks: "
                f"{unknown[:10]!r}{' ...' if len(unknown) > 10 else ''} "
                f"(training classes: {classes.tolist()[:20]!r}). A model cannot predict classes it "
                "never saw: add training samples of those classes or drop those test samples."
            )
        test_ids = np.searchsorted(classes, y_test).astype(np.int32)
    return train_ids, test_ids, [_py(v) for v in classes.tolist()]


def _py(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _allocate(counts: np.ndarray, n_pick: int, lo: np.ndarray, hi: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Split ``n_pick`` over classes in proportion to ``counts`` within [lo, hi]."""
    if lo.sum() > n_pick or hi.sum() < n_pick:
        raise ConfigError(f"Cannot pick {n_pick} samples with between {int(lo.sum())} and "
                          f"{int(hi.sum())} allowed by the class sizes; choose another size.")
    ideal = counts * (n_pick / counts.sum())
    alloc = np.clip(np.floor(ideal).astype(np.int64), lo, hi)
    jitter = rng.random(counts.size) * 1e-9
    while alloc.sum() < n_pick:
        gap = np.where(alloc < hi, ideal - alloc + jitter, -np.inf)
        alloc[int(np.argmax(gap))] += 1
    while alloc.sum() > n_pick:
        gap = np.where(alloc > lo, ideal - alloc + jitter, np.inf)
        alloc[int(np.argmin(gap))] -= 1
    return alloc


def _stratified_pick(y: np.ndarray, n_pick: int, rng: np.random.Generator, *,
                     keep_out: int = 0, at_least: int = 0) -> np.ndarray:
    """Pick ``n_pick`` indices of ``y``, stratified by class, in ascending order.

    Each class keeps at least ``keep_out`` of its samples unpicked and gets
    at least ``at_least`` picked (where it has that many).
    """
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    lo = np.minimum(at_least, counts)
    hi = np.maximum(counts - keep_out, 0)
    alloc = _allocate(counts.astype(np.float64), n_pick, lo, hi, rng)
    picked = []
    for c in range(classes.size):
        members = np.flatnonzero(inverse == c)
        picked.append(rng.permutation(members)[: alloc[c]])
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


def _n_from_fraction(fraction: float, n: int) -> int:
    return max(1, math.ceil(fraction * n - 1e-9))


def _split(X: np.ndarray, y: np.ndarray, n_test: int, seed: int, source: str
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified seeded split; every class keeps at least one training sample."""
    n = y.shape[0]
    n_classes = np.unique(y).size
    if n_test > n - n_classes:
        raise ConfigError(
            f"{source}: cannot hold out {n_test} of {n} samples and keep every one of the "
            f"{n_classes} classes in the training set; use a test size of at most "
            f"{n - n_classes} (--n-test / --test-fraction)"
            + (" or check the label column (--label-column): almost every sample has its own "
               "label" if n_classes > n // 2 else "") + "."
        )
    rng = np.random.default_rng([seed, 1])
    test_idx = _stratified_pick(y, n_test, rng, keep_out=1)
    mask = np.ones(n, dtype=bool)
    mask[test_idx] = False
    train_idx = np.flatnonzero(mask)
    return X[train_idx], y[train_idx], X[test_idx], y[test_idx], train_idx, test_idx


def _subsample(X: np.ndarray, y: np.ndarray, n: int | None, seed: int, what: str,
               source: str, stream: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Keep a stratified seeded subset of ``n`` rows (original order kept)."""
    if n is None or n == y.shape[0]:
        return X, y, None
    flag = "--n-train" if what == "train" else "--n-test"
    if n > y.shape[0]:
        raise ConfigError(f"{source}: asked for {n} {what} samples ({flag}) but only "
                          f"{y.shape[0]} are available; use at most {y.shape[0]}.")
    n_classes = np.unique(y).size
    if what == "train" and n < n_classes:
        raise ConfigError(f"{source}: {n} training samples ({flag}) cannot cover all "
                          f"{n_classes} classes; use at least {n_classes}.")
    rng = np.random.default_rng([seed, stream])
    idx = _stratified_pick(y, n, rng, at_least=1 if what == "train" else 0)
    return X[idx], y[idx], idx


def _check_finite(X: np.ndarray, what: str, source: str) -> None:
    rows = max(1, (32 << 20) // max(1, X.shape[1] * 4))
    for start in range(0, X.shape[0], rows):
        block = X[start:start + rows]
        bad = ~np.isfinite(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DatasetError(
                f"{source}: {what} has NaN or infinite values (first at sample {start + r}, "
                f"feature {c}: {block[r, c]}). Remove those rows or impute the values before "
                "loading; sparse_mlp does not impute."
            )


def standardize_inplace(X_train: np.ndarray, X_test: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise features in place with the training set's mean and std.

    Statistics are accumulated in float64 over row chunks (no float64 copy
    of the whole matrix); the arrays are updated in place in their own
    dtype.  Features whose training std is 0 become exactly 0 in both sets
    (never NaN).

    Parameters
    ----------
    X_train : numpy.ndarray
        Float array, shape (n_train, n_features); modified in place.
    X_test : numpy.ndarray or None
        Float array, shape (n_test, n_features); modified in place.

    Returns
    -------
    mean : numpy.ndarray
        float64, shape (n_features,).
    std : numpy.ndarray
        float64, shape (n_features,), population std (ddof=0).
    constant : numpy.ndarray
        bool, shape (n_features,): features with zero training variance.
    """
    n, f = X_train.shape
    if n == 0:
        raise DatasetError("Cannot standardise an empty training set.")
    rows = max(1, (64 << 20) // max(1, 8 * f))
    mean = np.zeros(f, dtype=np.float64)
    for s in range(0, n, rows):
        mean += X_train[s:s + rows].sum(axis=0, dtype=np.float64)
    mean /= n
    m2 = np.zeros(f, dtype=np.float64)
    for s in range(0, n, rows):
        d = X_train[s:s + rows].astype(np.float64) - mean
        m2 += np.einsum("ij,ij->j", d, d)
    std = np.sqrt(m2 / n)
    constant = ~(std > 0.0)
    shift = mean.astype(X_train.dtype)
    scale = np.where(constant, 1.0, std).astype(X_train.dtype)
    for X in (X_train, X_test):
        if X is None or X.shape[0] == 0:
            continue
        step = max(1, (64 << 20) // max(1, X.itemsize * f))
        for s in range(0, X.shape[0], step):
            X[s:s + step] -= shift
            X[s:s + step] /= scale
        if constant.any():
            X[:, constant] = 0.0
    return mean, std, constant


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------
# Raw data and the common final step
# ---------------------------------------------------------------------------


@dataclass
class _Raw:
    """Parsed, unstandardised data with labels already mapped to class ids."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: list
    info: dict = field(default_factory=dict)


def _as_matrix(X: Any, what: str, source: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise DatasetError(f"{source}: {what} must be a 2-D array (samples x features), got "
                           f"shape {X.shape}. Reshape it, e.g. X.reshape(len(X), -1).")
    if X.dtype.kind not in "biuf":
        raise DatasetError(f"{source}: {what} has dtype {X.dtype}; features must be numbers.")
    try:
        return np.ascontiguousarray(X, dtype=np.float32)
    except MemoryError:
        raise MemoryBudgetError(f"{source}: not enough memory to hold {what} "
                                f"({X.shape[0]} x {X.shape[1]} float32).") from None


def _finalize(name: str, raw: _Raw, opts: _Options, source: str) -> Dataset:
    X_train = _as_matrix(raw.X_train, "X_train", source)
    X_test = _as_matrix(raw.X_test, "X_test", source)
    y_train = np.ascontiguousarray(raw.y_train, dtype=np.int32)
    y_test = np.ascontiguousarray(raw.y_test, dtype=np.int32)
    if X_train.shape[0] != y_train.shape[0] or X_test.shape[0] != y_test.shape[0]:
        raise DatasetError(f"{source}: {X_train.shape[0]} training samples but "
                           f"{y_train.shape[0]} labels, {X_test.shape[0]} test samples but "
                           f"{y_test.shape[0]} labels; every sample needs one label.")
    if X_train.shape[0] == 0:
        raise DatasetError(f"{source}: the training set is empty.")
    if X_test.shape[0] == 0:
        raise DatasetError(f"{source}: the test set is empty; give a test set or a larger "
                           "--test-fraction.")
    if X_train.shape[1] != X_test.shape[1]:
        raise DatasetError(f"{source}: X_train has {X_train.shape[1]} features but X_test has "
                           f"{X_test.shape[1]}; both need the same features.")
    if X_train.shape[1] == 0:
        raise DatasetError(f"{source}: there are no feature columns.")
    n_classes = len(raw.classes)
    present = np.unique(y_train)
    if present.size < 2:
        raise DatasetError(f"{source}: the training set has a single class; a classifier needs "
                           "at least 2.")
    if present.size < n_classes:
        missing = [raw.classes[i] for i in sorted(set(range(n_classes)) - set(present.tolist()))]
        raise DatasetError(f"{source}: the training set lacks classes {missing[:10]!r} that the "
                           "test set has; add training samples of those classes.")
    _check_finite(X_train, "X_train", source)
    _check_finite(X_test, "X_test", source)
    info = dict(raw.info)
    constant_count = 0
    if opts.standardize:
        _, _, constant = standardize_inplace(X_train, X_test)
        constant_count = int(constant.sum())
        if constant_count:
            logger.info("%s: %d features are constant in the training set; they are set to 0",
                        source, constant_count)
    info.update(
        n_train=int(X_train.shape[0]), n_test=int(X_test.shape[0]),
        n_features=int(X_train.shape[1]), n_classes=n_classes, classes=list(raw.classes),
        label_mapping={str(c): i for i, c in enumerate(raw.classes)},
        standardized=opts.standardize,
        standardization="train mean/std (ddof=0), zero-variance features set to 0"
        if opts.standardize else "none",
        constant_features=constant_count, seed=opts.seed,
        train_class_counts=np.bincount(y_train, minlength=n_classes).tolist(),
        test_class_counts=np.bincount(y_test, minlength=n_classes).tolist(),
    )
    ds = Dataset(name=name, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                 classes=list(raw.classes), info=_jsonable(info))
    logger.info("loaded %r", ds)
    return ds


def _limit(raw: _Raw, opts: _Options, source: str) -> _Raw:
    """Apply ``n_train`` / ``n_test`` as stratified seeded subsets of a fixed split."""
    X_tr, y_tr, idx_tr = _subsample(raw.X_train, raw.y_train, opts.n_train, opts.seed,
                                    "train", source, 2)
    X_te, y_te, idx_te = _subsample(raw.X_test, raw.y_test, opts.n_test, opts.seed,
                                    "test", source, 3)
    info = dict(raw.info)
    if idx_tr is not None:
        info["train_subsample"] = (f"{opts.n_train} of {raw.y_train.shape[0]} rows, stratified, "
                                   f"seed {opts.seed}, file order kept")
    if idx_te is not None:
        info["test_subsample"] = (f"{opts.n_test} of {raw.y_test.shape[0]} rows, stratified, "
                                  f"seed {opts.seed}, file order kept")
    return _Raw(X_tr, y_tr, X_te, y_te, raw.classes, info)


def _split_then_limit(X: np.ndarray, y: np.ndarray, classes: list, info: dict,
                      opts: _Options, source: str, default_fraction: float,
                      default_n_test: int | None = None) -> _Raw:
    """Hold out a stratified test set, then apply ``n_train``."""
    n = y.shape[0]
    if opts.n_test is not None and opts.test_fraction is not None:
        raise ConfigError("Give either n_test (--n-test) or test_fraction (--test-fraction), "
                          "not both.")
    if opts.n_test is not None:
        n_test = opts.n_test
        how = f"n_test={n_test}"
    elif opts.test_fraction is not None:
        n_test = _n_from_fraction(opts.test_fraction, n)
        how = f"test_fraction={opts.test_fraction}"
    elif default_n_test is not None:
        n_test = default_n_test
        how = f"default n_test={n_test}"
    else:
        n_test = _n_from_fraction(default_fraction, n)
        how = f"default test_fraction={default_fraction}"
    X_tr, y_tr, X_te, y_te, _, _ = _split(X, y, n_test, opts.seed, source)
    info = dict(info)
    info["split"] = (f"stratified seeded split ({how}, seed {opts.seed}): {X_tr.shape[0]} train "
                     f"/ {X_te.shape[0]} test, each class keeps >= 1 training sample; file order "
                     "kept within each part")
    raw = _Raw(X_tr, y_tr, X_te, y_te, classes, info)
    if opts.n_train is not None:
        X_tr2, y_tr2, _ = _subsample(X_tr, y_tr, opts.n_train, opts.seed, "train", source, 2)
        raw = _Raw(X_tr2, y_tr2, X_te, y_te, classes, info)
        raw.info["train_subsample"] = (f"{opts.n_train} of {X_tr.shape[0]} rows, stratified, "
                                       f"seed {opts.seed}")
    return raw


# ---------------------------------------------------------------------------
# Cache of parsed paper datasets
# ---------------------------------------------------------------------------


def _source_stats(paths: Sequence[Path]) -> list[dict]:
    stats = []
    for p in paths:
        st = p.stat()
        stats.append({"file": p.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return stats


def _cache_path(directory: Path, name: str, params: dict) -> Path:
    key = json.dumps({"dataset": name, "params": params, "version": CACHE_VERSION},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return directory / f"sparse_mlp-cache-{name}-{digest}.npz"


def _read_cache(path: Path, name: str, params: dict, sources: list[dict]) -> _Raw | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            if (meta.get("version") != CACHE_VERSION or meta.get("dataset") != name
                    or meta.get("params") != params or meta.get("sources") != sources):
                logger.info("cache %s is stale (source files or parameters changed); "
                            "re-parsing", path)
                return None
            arrays = {k: z[k] for k in ("X_train", "y_train", "X_test", "y_test") if k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        logger.warning("ignoring unreadable cache %s (%s); re-parsing", path, exc)
        return None
    info = dict(meta.get("info", {}))
    info["cache"] = str(path)
    info["cache_hit"] = True
    logger.info("loaded %s from cache %s", name, path)
    return _Raw(arrays["X_train"], arrays["y_train"], arrays.get("X_test"), arrays.get("y_test"),
                meta["classes"], info)


def _writable_dir(directory: Path) -> bool:
    """True if ``directory`` may be written; a directory without any write
    permission bit counts as read-only even for root (shared data folders)."""
    try:
        mode = directory.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(directory, os.W_OK)


def _write_cache(path: Path, raw: _Raw, name: str, params: dict, sources: list[dict]) -> bool:
    meta = {"version": CACHE_VERSION, "dataset": name, "params": params, "sources": sources,
            "classes": raw.classes, "info": _jsonable(raw.info)}
    arrays = {"X_train": raw.X_train, "y_train": raw.y_train,
              "meta": np.array(json.dumps(meta))}
    if raw.X_test is not None:
        arrays.update(X_test=raw.X_test, y_test=raw.y_test)
    if not _writable_dir(path.parent):
        logger.info("not writing a cache into %s: the directory is read-only", path.parent)
        return False
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        logger.info("could not write the cache %s (%s); the next load will parse again",
                    path, exc)
        return False
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    logger.info("wrote cache %s", path)
    return True


def _cached(name: str, directory: Path, sources: list[Path], params: dict,
            parse: Any) -> _Raw:
    """Return the parse of ``sources``, from the cache when it is still valid."""
    stats = _source_stats(sources)
    path = _cache_path(directory, name, params)
    raw = _read_cache(path, name, params, stats)
    if raw is not None:
        return raw
    raw = parse()
    raw.info.setdefault("files", [str(p) for p in sources])
    written = _write_cache(path, raw, name, params, stats)
    raw.info["cache"] = str(path) if written else None
    raw.info["cache_hit"] = False
    return raw


# ---------------------------------------------------------------------------
# Finding (and downloading) a paper dataset's files
# ---------------------------------------------------------------------------


def _locate(name: str, data_dir: str | os.PathLike | None, opts: _Options) -> dict[str, Path]:
    """Return ``{file name: path}`` for a paper dataset, downloading missing files."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if root.exists() and not root.is_dir():
        raise DatasetError(f"The data directory {root} is a file; give a directory "
                           f"(--data-dir or ${DATA_DIR_ENV}).")
    files = expected_files(name)
    candidates = [root / name, root]
    for d in candidates:
        for f in files:
            if (d / f).is_dir():
                raise DatasetError(f"{d / f} is a directory, but {name} needs the file {f} "
                                   "there (do not extract it). Remove the directory and put "
                                   "the original file in its place.")
        if all((d / f).is_file() for f in files):
            return {f: d / f for f in files}
    target = next((d for d in candidates if any((d / f).is_file() for f in files)), root / name)
    missing = [f for f in files if not (target / f).is_file()]
    if not opts.download:
        raise DatasetError(
            f"Dataset {name!r} needs the file(s) {', '.join(missing)}, not found in "
            f"{candidates[0]} or {candidates[1]}, and downloading is off. "
            + _manual_help(name, target) + " Or allow the download (download=True)."
        )
    logger.info("dataset %s: downloading %s into %s", name, ", ".join(missing), target)
    download_dataset(name, target, progress=opts.progress, only=missing)
    return {f: target / f for f in files}


def _open_gzip_error(path: Path, exc: BaseException) -> DatasetError:
    return DatasetError(
        f"{path} is truncated or not a valid gzip file ({type(exc).__name__}: {exc}). Delete it "
        "and download it again (it is downloaded automatically when missing)."
    )


# ---------------------------------------------------------------------------
# Madelon
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# HIGGS
# ---------------------------------------------------------------------------


class _LineReader:
    """Count and cut whole lines out of a binary stream read in large blocks."""

    def __init__(self, stream: Any, block: int = 1 << 22) -> None:
        self._stream = stream
        self._block = block
        self._pending = b""
        self._blocks = self._iter_blocks()
        self.line = 0

    def _iter_blocks(self) -> Iterator[bytes]:
        tail = b""
        while True:
            chunk = self._stream.read(self._block)
            if not chunk:
                if tail:
                    yield tail + b"\n"
                return
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                tail = data
                continue
            tail = data[cut:]
            yield data[:cut]

    def _advance(self, n: int, keep: bool) -> tuple[bytes, int]:
        out: list[bytes] = []
        got = 0
        while got < n:
            if not self._pending:
                self._pending = next(self._blocks, b"")
                if not self._pending:
                    break
            count = self._pending.count(b"\n")
            need = n - got
            if count <= need:
                if keep:
                    out.append(self._pending)
                got += count
                self._pending = b""
            else:
                newlines = np.flatnonzero(np.frombuffer(self._pending, dtype=np.uint8) == 10)
                cut = int(newlines[need - 1]) + 1
                if keep:
                    out.append(self._pending[:cut])
                self._pending = self._pending[cut:]
                got += need
        self.line += got
        return b"".join(out), got

    def take(self, n: int) -> tuple[bytes, int]:
        """Return the next ``n`` lines (fewer at the end) and how many."""
        return self._advance(n, keep=True)

    def skip(self, n: int) -> int:
        """Skip ``n`` lines; return how many were skipped."""
        return self._advance(n, keep=False)[1]


def _parse_higgs_rows(reader: _LineReader, n: int, out: np.ndarray, path: Path,
                      bar: _Progress | None = None) -> None:
    """Parse the next ``n`` lines of HIGGS into ``out`` (float32, (n, 29))."""
    done = 0
    while done < n:
        first = reader.line
        text, got = reader.take(min(50_000, n - done))
        if got < min(50_000, n - done):
            raise DatasetError(
                f"{path} ends after {reader.line} rows but rows up to {first + n - done} are "
                "needed; it is truncated (the UCI file has 11,000,000 rows). Delete it and "
                "download it again."
            )
        try:
            block = np.loadtxt(io.StringIO(text.decode("latin-1")), delimiter=",",
                               dtype=np.float32, ndmin=2)
        except ValueError as exc:
            raise DatasetError(
                f"{path}: a row in {first}..{first + got - 1} (0-based) is not 29 comma-separated "
                f"numbers ({exc}). This is not the UCI HIGGS.csv.gz; delete it and download it "
                "again."
            ) from None
        if block.shape[1] != 29:
            raise DatasetError(f"{path}: rows have {block.shape[1]} values, expected 29 (label + "
                               "28 features). This is not the UCI HIGGS.csv.gz.")
        out[done:done + got] = block
        done += got
        if bar is not None:
            bar.update(got)


def _parse_higgs(path: Path, n_train: int, n_test: int, test_start: int,
                 progress: bool | None) -> _Raw:
    train = np.empty((n_train, 29), dtype=np.float32)
    test = np.empty((n_test, 29), dtype=np.float32)
    logger.info("higgs: parsing rows 0..%d and %d..%d of %s (the gzip is decompressed up to "
                "the last row needed)", n_train - 1, test_start, test_start + n_test - 1, path)
    bar = _Progress(test_start + n_test, "higgs rows", progress, unit="rows")
    try:
        with gzip.open(path, "rb") as stream:
            reader = _LineReader(stream)
            _parse_higgs_rows(reader, n_train, train, path, bar)
            gap = test_start - n_train
            while gap > 0:
                step = min(gap, 1_000_000)
                skipped = reader.skip(step)
                bar.update(skipped)
                if skipped < step:
                    raise DatasetError(
                        f"{path} ends after {reader.line} rows but the test part starts at row "
                        f"{test_start}; it is truncated (the UCI file has 11,000,000 rows). "
                        "Delete it and download it again."
                    )
                gap -= step
            _parse_higgs_rows(reader, n_test, test, path, bar)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _open_gzip_error(path, exc) from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None
    finally:
        bar.close()
    for part, arr in (("train", train), ("test", test)):
        labels = arr[:, 0]
        if not np.isin(labels, (0.0, 1.0)).all():
            raise DatasetError(f"{path}: the first column of the {part} rows must be the label 0 "
                               "or 1. This is not the UCI HIGGS.csv.gz.")
    y_train, y_test, classes = _encode(train[:, 0].astype(np.int64),
                                       test[:, 0].astype(np.int64), "higgs")
    info = {
        "source": "UCI HIGGS",
        "split": (f"train = rows 0..{n_train - 1}, test = rows {test_start}.."
                  f"{test_start + n_test - 1} of HIGGS.csv.gz (0-based data rows, file order; "
                  f"the official test part is the last {HIGGS_TEST_ROWS} rows)"),
        "train_rows": [0, n_train], "test_rows": [test_start, test_start + n_test],
        "class_names": {"0": "background", "1": "signal"},
    }
    return _Raw(np.ascontiguousarray(train[:, 1:]), y_train,
                np.ascontiguousarray(test[:, 1:]), y_test, classes, info)


def _load_higgs(opts: _Options, data_dir: Any) -> _Raw:
    _reject(opts, "higgs", "n_features", "n_samples", "n_classes", "label_column",
            "test_fraction", why="train rows come from the start of the file and test rows "
            "from its official test part; set their numbers with n_train/n_test")
    n_train = opts.n_train if opts.n_train is not None else HIGGS_N_TRAIN
    n_test = opts.n_test if opts.n_test is not None else HIGGS_N_TEST
    if n_train > HIGGS_TEST_START:
        raise ConfigError(f"higgs: n_train (--n-train) is {n_train} but the training part has "
                          f"only {HIGGS_TEST_START} rows.")
    if n_test > HIGGS_TEST_ROWS:
        raise ConfigError(f"higgs: n_test (--n-test) is {n_test} but the official test part has "
                          f"only {HIGGS_TEST_ROWS} rows.")
    paths = _locate("higgs", data_dir, opts)
    path = paths["HIGGS.csv.gz"]
    params = {"n_train": n_train, "n_test": n_test, "test_start": HIGGS_TEST_START}
    return _cached("higgs", path.parent, [path], params,
                   lambda: _parse_higgs(path, n_train, n_test, HIGGS_TEST_START, opts.progress))


# ---------------------------------------------------------------------------
# Fashion-MNIST (IDX)
# ---------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _open_gzip_error(path, exc) from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (as used by MNIST and Fashion-MNIST), gzipped or not.

    Parameters
    ----------
    path : path-like
        The file.
    ndim : int or None
        Required number of dimensions (3 for images, 1 for labels).

    Returns
    -------
    numpy.ndarray
        Read-only array with the header's dimensions and dtype.

    Raises
    ------
    DatasetError
        Wrong magic number, wrong number of dimensions, or a payload whose
        size does not match the header (truncated or padded file).
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    expected_magic = f"0x0000080{ndim}" if ndim else "0x000008NN"
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (magic number 0x{data[:4].hex()}, expected "
                           f"{expected_magic}). Replace it with the original Fashion-MNIST file.")
    dims_n = data[3]
    if ndim is not None and dims_n != ndim:
        raise DatasetError(f"{path} has {dims_n} dimensions (magic 0x{data[:4].hex()}), expected "
                           f"{ndim} (magic {expected_magic}): images and labels files swapped or "
                           "wrong file. Use the original Fashion-MNIST files.")
    header = 4 + 4 * dims_n
    if len(data) < header:
        raise DatasetError(f"{path}: the IDX header is truncated. Delete it and download it again.")
    dims = struct.unpack(f">{dims_n}I", data[4:header])
    dtype = _IDX_DTYPES[data[2]]
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(data) - header
    if have != need:
        raise DatasetError(f"{path}: the header says dimensions {dims} ({need} bytes of data) but "
                           f"the file holds {have} bytes; it is truncated or damaged. Delete it "
                           "and download it again.")
    return np.frombuffer(data, dtype=dtype, count=need // dtype.itemsize,
                         offset=header).reshape(dims)


def _parse_fashionmnist(paths: dict[str, Path]) -> _Raw:
    parts = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        img_path = paths[f"{prefix}-images-idx3-ubyte.gz"]
        lab_path = paths[f"{prefix}-labels-idx1-ubyte.gz"]
        images = read_idx(img_path, ndim=3)
        labels = read_idx(lab_path, ndim=1)
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise DatasetError(f"{img_path} / {lab_path}: expected unsigned-byte IDX data (magic "
                               "0x00000803 / 0x00000801). Use the original Fashion-MNIST files.")
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(f"{img_path} has {images.shape[0]} images but {lab_path} has "
                               f"{labels.shape[0]} labels; the files do not belong together.")
        parts[part] = (images, labels)
    (tr_img, tr_lab), (te_img, te_lab) = parts["train"], parts["test"]
    if tr_img.shape[1:] != te_img.shape[1:]:
        raise DatasetError(f"Fashion-MNIST train images are {tr_img.shape[1:]} but test images are "
                           f"{te_img.shape[1:]}; use the original files.")
    if tr_img.shape != (60000, 28, 28) or te_img.shape != (10000, 28, 28):
        logger.warning("fashionmnist: shapes %s / %s differ from the official (60000, 28, 28) / "
                       "(10000, 28, 28)", tr_img.shape, te_img.shape)
    y_train, y_test, classes = _encode(tr_lab, te_lab, "fashionmnist")
    info = {"source": "Zalando Fashion-MNIST",
            "split": "official: train-* files / t10k-* files",
            "class_names": {"0": "T-shirt/top", "1": "Trouser", "2": "Pullover", "3": "Dress",
                            "4": "Coat", "5": "Sandal", "6": "Shirt", "7": "Sneaker",
                            "8": "Bag", "9": "Ankle boot"}}
    return _Raw(tr_img.reshape(tr_img.shape[0], -1).astype(np.float32), y_train,
                te_img.reshape(te_img.shape[0], -1).astype(np.float32), y_test, classes, info)


def _load_fashionmnist(opts: _Options, data_dir: Any) -> _Raw:
    _reject(opts, "fashionmnist", "n_features", "n_samples", "n_classes", "label_column",
            "test_fraction", why="its train/test split is fixed by the official files")
    paths = _locate("fashionmnist", data_dir, opts)
    directory = next(iter(paths.values())).parent
    raw = _cached("fashionmnist", directory, list(paths.values()), {},
                  lambda: _parse_fashionmnist(paths))
    return _limit(raw, opts, "fashionmnist")


# ---------------------------------------------------------------------------
# CIFAR-10 (python pickles inside the official tarball)
# ---------------------------------------------------------------------------

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"{_CIFAR_DIR}/data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = f"{_CIFAR_DIR}/test_batch"
_CIFAR_META = f"{_CIFAR_DIR}/batches.meta"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and NumPy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_batch(obj: Any, member: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    bad = DatasetError(f"{path}: member {member} is not a CIFAR-10 batch (a dict with b'data', a "
                       "uint8 array N x 3072, and b'labels', N ints 0..9). Use the official "
                       "cifar-10-python.tar.gz.")
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        raise bad
    data, labels = obj[b"data"], obj[b"labels"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.dtype != np.uint8:
        raise bad
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise bad from None
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise bad
    return data, labels


def _parse_cifar10(path: Path) -> _Raw:
    wanted = set(_CIFAR_TRAIN) | {_CIFAR_TEST, _CIFAR_META}
    found: dict[str, Any] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                if not member.isfile():
                    raise DatasetError(f"{path}: {member.name} is not a regular file; use the "
                                       "official cifar-10-python.tar.gz.")
                stream = tar.extractfile(member)
                try:
                    found[member.name] = _NumpyOnlyUnpickler(stream, encoding="bytes").load()
                except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                    raise DatasetError(f"{path}: member {member.name} is truncated or damaged "
                                       f"({exc}). Delete the file and download it "
                                       "again.") from None
                except (pickle.UnpicklingError, ValueError, TypeError,
                        AttributeError, ImportError, IndexError) as exc:
                    raise DatasetError(f"{path}: member {member.name} is not a valid CIFAR-10 "
                                       f"pickle ({exc}). Use the official "
                                       "cifar-10-python.tar.gz.") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path} is truncated or not a tar.gz archive ({exc}). Delete it and "
                           "download it again.") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None
    missing = [m for m in (*_CIFAR_TRAIN, _CIFAR_TEST) if m not in found]
    if missing:
        raise DatasetError(f"{path} lacks {', '.join(missing)}; it is not the official "
                           "cifar-10-python.tar.gz (python version). Download that file.")
    train = [_cifar_batch(found[m], m, path) for m in _CIFAR_TRAIN]
    Xte, yte = _cifar_batch(found[_CIFAR_TEST], _CIFAR_TEST, path)
    widths = {d.shape[1] for d, _ in train} | {Xte.shape[1]}
    if len(widths) != 1:
        raise DatasetError(f"{path}: batches have different widths {sorted(widths)}; use the "
                           "official cifar-10-python.tar.gz.")
    if widths != {3072}:
        logger.warning("cifar10: %d values per image, the official files have 3072", *widths)
    Xtr = np.concatenate([d for d, _ in train]).astype(np.float32)
    ytr = np.concatenate([lab for _, lab in train])
    y_train, y_test, classes = _encode(ytr, yte, "cifar10")
    info: dict[str, Any] = {"source": "Toronto CIFAR-10 (python version)",
                            "split": "official: data_batch_1..5 / test_batch",
                            "layout": "each row: 1024 red, 1024 green, 1024 blue values, "
                                      "row-major 32x32"}
    meta = found.get(_CIFAR_META)
    if isinstance(meta, dict) and isinstance(meta.get(b"label_names"), list):
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)
                 for n in meta[b"label_names"]]
        info["class_names"] = {str(i): n for i, n in enumerate(names)}
    return _Raw(Xtr, y_train, Xte.astype(np.float32), y_test, classes, info)


def _load_cifar10(opts: _Options, data_dir: Any) -> _Raw:
    _reject(opts, "cifar10", "n_features", "n_samples", "n_classes", "label_column",
            "test_fraction", why="its train/test split is fixed by the official files")
    paths = _locate("cifar10", data_dir, opts)
    path = paths["cifar-10-python.tar.gz"]
    raw = _cached("cifar10", path.parent, [path], {}, lambda: _parse_cifar10(path))
    return _limit(raw, opts, "cifar10")


# ---------------------------------------------------------------------------
# Leukemia (GEO GSE13159 series matrix)
# ---------------------------------------------------------------------------

_LEUKEMIA_KEY = "leukemia class:"

#: The 18 'leukemia class' values of GSE13159, in class-id order (sorted).
LEUKEMIA_CLASSES: tuple[str, ...] = (
    "ALL with hyperdiploid karyotype", "ALL with t(12;21)", "ALL with t(1;19)",
    "AML complex aberrant karyotype", "AML with inv(16)/t(16;16)",
    "AML with normal karyotype + other abnormalities", "AML with t(11q23)/MLL",
    "AML with t(15;17)", "AML with t(8;21)", "CLL", "CML", "MDS",
    "Non-leukemia and healthy bone marrow", "Pro-B-ALL with t(11q23)/MLL", "T-ALL",
    "c-ALL/Pre-B-ALL with t(9;22)", "c-ALL/Pre-B-ALL without t(9;22)",
    "mature B-ALL with t(8;14)",
)


def _geo_fields(line: str) -> list[str]:
    return [v.strip().strip('"').strip() for v in line.rstrip("\r\n").split("\t")]


def _parse_series_matrix(path: Path, progress: bool | None) -> _Raw:
    sample_ids: list[str] | None = None
    labels: list[str] | None = None
    chunks: list[np.ndarray] = []
    n_probes = 0
    ended = False
    bar = _Progress(54675, "leukemia probes", progress, unit="probes")
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            for line in f:
                if line.startswith("!Sample_geo_accession"):
                    sample_ids = _geo_fields(line)[1:]
                elif line.startswith("!Sample_characteristics_ch1"):
                    values = _geo_fields(line)[1:]
                    if values and all(v.lower().startswith(_LEUKEMIA_KEY) for v in values):
                        labels = [v[len(_LEUKEMIA_KEY):].strip() for v in values]
                elif line.startswith("!series_matrix_table_begin"):
                    break
            else:
                raise DatasetError(f"{path} has no '!series_matrix_table_begin' line; it is not a "
                                   "GEO series matrix file or it is truncated. Download "
                                   "GSE13159_series_matrix.txt.gz again.")
            header = _geo_fields(next(f, ""))
            columns = header[1:]
            if not columns:
                raise DatasetError(f"{path}: the expression table has no sample columns.")
            block: list[str] = []

            def flush() -> None:
                nonlocal n_probes
                if not block:
                    return
                try:
                    values = np.loadtxt(io.StringIO("".join(block)), delimiter="\t",
                                        dtype=np.float32, ndmin=2)
                except ValueError as exc:
                    raise DatasetError(
                        f"{path}: probe rows {n_probes}..{n_probes + len(block) - 1} of the "
                        f"expression table are not all numbers ({exc}); missing or text values "
                        "are not supported. Download GSE13159_series_matrix.txt.gz again."
                    ) from None
                if values.shape[1] != len(columns):
                    raise DatasetError(f"{path}: expression rows have {values.shape[1]} values "
                                       f"but the header names {len(columns)} samples.")
                chunks.append(values)
                n_probes += values.shape[0]
                bar.update(values.shape[0])
                block.clear()

            for line in f:
                if line.startswith("!series_matrix_table_end"):
                    ended = True
                    break
                if not line.strip():
                    continue
                parts = line.split("\t", 1)
                if len(parts) != 2:
                    raise DatasetError(f"{path}: expression row {n_probes + len(block)} has no "
                                       "values (expected tab-separated probe id and values).")
                block.append(parts[1] if parts[1].endswith("\n") else parts[1] + "\n")
                if len(block) >= 2000:
                    flush()
            flush()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _open_gzip_error(path, exc) from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None
    finally:
        bar.close()
    if not ended:
        raise DatasetError(f"{path} has no '!series_matrix_table_end' line; it is truncated. "
                           "Download GSE13159_series_matrix.txt.gz again.")
    if labels is None:
        raise DatasetError(f"{path} has no '!Sample_characteristics_ch1' line of "
                           f"'{_LEUKEMIA_KEY} ...' values; it is not the GSE13159 series matrix.")
    if len(labels) != len(columns) or (sample_ids is not None and sample_ids != columns):
        raise DatasetError(f"{path}: {len(labels)} leukemia-class labels for {len(columns)} "
                           "samples in the table; the file is inconsistent.")
    if n_probes == 0:
        raise DatasetError(f"{path}: the expression table is empty.")
    X = np.empty((len(columns), n_probes), dtype=np.float32)
    start = 0
    while chunks:
        c = chunks.pop(0)
        X[:, start:start + c.shape[0]] = c.T
        start += c.shape[0]
    if X.shape != (2096, 54675):
        logger.warning("leukemia: %d samples x %d probes, GSE13159 has 2096 x 54675", *X.shape)
    y, _, classes = _encode(np.array(labels, dtype=str), None, "leukemia")
    if tuple(classes) != LEUKEMIA_CLASSES:
        logger.warning("leukemia: the file has %d classes, not the 18 of GSE13159 listed in "
                       "data/README.md; class ids follow the file's sorted labels", len(classes))
    info = {"source": "NCBI GEO GSE13159 (MILE study), series matrix",
            "features": "one per probe (Affymetrix HG-U133 Plus 2.0), values as in the matrix",
            "label": "'leukemia class' sample characteristic"}
    return _Raw(X, y, None, None, classes, info)


def _load_leukemia(opts: _Options, data_dir: Any) -> _Raw:
    _reject(opts, "leukemia", "n_features", "n_samples", "n_classes", "label_column")
    paths = _locate("leukemia", data_dir, opts)
    path = paths["GSE13159_series_matrix.txt.gz"]
    raw = _cached("leukemia", path.parent, [path], {},
                  lambda: _parse_series_matrix(path, opts.progress))
    default_n_test = LEUKEMIA_N_TEST if raw.y_train.shape[0] > 2 * LEUKEMIA_N_TEST else None
    return _split_then_limit(raw.X_train, raw.y_train, raw.classes, raw.info, opts, "leukemia",
                             default_fraction=1 / 3, default_n_test=default_n_test)


# ---------------------------------------------------------------------------
# Synthetic (make_classification)
# ---------------------------------------------------------------------------


def make_classification_float32(n_samples: int, n_features: int, *, n_informative: int = 2,
                                n_redundant: int = 2, n_classes: int = 2,
                                n_clusters_per_class: int = 2, flip_y: float = 0.01,
                                class_sep: float = 1.0, seed: int = 0,
                                chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float32 twin of :func:`sklearn.datasets.make_classification` for big shapes.

    The same algorithm (Guyon's Madelon generator) with the same random
    stream as scikit-learn for ``hypercube=True, shift=0.0, scale=1.0,
    n_repeated=0, weights=None, shuffle=True`` and a
    ``numpy.random.RandomState(seed)``: clusters on hypercube vertices,
    informative features with a random covariance per cluster, redundant
    features as random linear combinations of the informative ones, noise
    features, label flips, then a row and a column permutation.

    What differs from scikit-learn: the matrix is float32 from the start
    (the informative and redundant columns are computed in float64 and
    rounded once, so values equal ``make_classification(...)`` cast to
    float32); the noise columns are drawn in row chunks straight into the
    float32 matrix, and both permutations are applied in place, so peak
    memory is the float32 matrix plus one chunk instead of several float64
    copies.  ``n_repeated``, ``weights``, ``shift``/``scale`` and
    ``hypercube=False`` are not offered.

    Parameters
    ----------
    n_samples, n_features : int
        Shape of X.
    n_informative, n_redundant, n_classes, n_clusters_per_class : int
        As in scikit-learn.
    flip_y, class_sep : float
        As in scikit-learn.
    seed : int
        Seed of the ``RandomState``.
    chunk_rows : int or None
        Rows per noise chunk (default: about 64 MiB of float64).

    Returns
    -------
    X : numpy.ndarray
        float32, shape (n_samples, n_features), C-contiguous.
    y : numpy.ndarray
        int64, shape (n_samples,).
    """
    from sklearn.utils.random import sample_without_replacement

    n_clusters = n_classes * n_clusters_per_class
    if n_informative + n_redundant > n_features:
        raise ConfigError("n_informative + n_redundant must not exceed n_features.")
    if 2**n_informative < n_clusters or n_informative > 30:
        raise ConfigError("n_classes * n_clusters_per_class must be at most 2**n_informative "
                          "(and n_informative at most 30).")
    rng = np.random.RandomState(seed)
    per_cluster = [int(n_samples * (1.0 / n_classes) / n_clusters_per_class)
                   for _ in range(n_clusters)]
    for i in range(n_samples - sum(per_cluster)):
        per_cluster[i % n_clusters] += 1
    vertices = sample_without_replacement(2**n_informative, n_clusters, random_state=rng)
    bits = (np.asarray(vertices, dtype=np.int64)[:, None]
            >> np.arange(n_informative - 1, -1, -1)) & 1
    centroids = bits.astype(np.float64)
    centroids *= 2 * class_sep
    centroids -= class_sep
    informative = rng.standard_normal(size=(n_samples, n_informative))
    y = np.zeros(n_samples, dtype=np.int64)
    stop = 0
    for k in range(n_clusters):
        start, stop = stop, stop + per_cluster[k]
        y[start:stop] = k % n_classes
        A = 2 * rng.uniform(size=(n_informative, n_informative)) - 1
        informative[start:stop] = np.dot(informative[start:stop], A)
        informative[start:stop] += centroids[k]
    try:
        X = np.empty((n_samples, n_features), dtype=np.float32)
    except MemoryError:
        raise MemoryBudgetError(
            f"synthetic: {n_samples} x {n_features} float32 needs "
            f"{n_samples * n_features * 4 / 2**30:.1f} GiB; use fewer samples or features "
            "(--n-samples / --n-features).") from None
    X[:, :n_informative] = informative
    if n_redundant > 0:
        B = 2 * rng.uniform(size=(n_informative, n_redundant)) - 1
        X[:, n_informative:n_informative + n_redundant] = np.dot(informative, B)
    del informative
    n_noise = n_features - n_informative - n_redundant
    if chunk_rows is None:
        chunk_rows = max(1, (64 << 20) // max(1, 8 * n_features))
    if n_noise > 0:
        first = n_informative + n_redundant
        for s in range(0, n_samples, chunk_rows):
            e = min(n_samples, s + chunk_rows)
            X[s:e, first:] = rng.standard_normal(size=(e - s, n_noise))
    if flip_y >= 0.0:
        flip = rng.uniform(size=n_samples) < flip_y
        y[flip] = rng.randint(n_classes, size=int(flip.sum()))
    rows = np.arange(n_samples)
    rng.shuffle(rows)
    cols = np.arange(n_features)
    rng.shuffle(cols)
    _permute_inplace(X, rows, cols)
    return X, y[rows]


def _permute_inplace(X: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """Set ``X = X_old[rows][:, cols]`` with two rows of scratch memory.

    Rows are moved along the cycles of ``rows`` (each source row is read
    once, before it is overwritten) and their columns permuted on the way.
    """
    done = np.zeros(rows.shape[0], dtype=bool)
    for start in range(rows.shape[0]):
        if done[start]:
            continue
        saved = X[start].copy()
        j = start
        while True:
            done[j] = True
            k = int(rows[j])
            if k == start:
                np.take(saved, cols, out=X[j])
                break
            np.take(X[k], cols, out=X[j])
            j = k


def _synthetic_sizes(opts: _Options) -> tuple[int, int, int]:
    """Return (n_samples, n_train, n_test) from the options; Table 4 by default."""
    fraction = opts.test_fraction if opts.test_fraction is not None else SYNTHETIC_TEST_FRACTION
    n_train, n_test, total = opts.n_train, opts.n_test, opts.n_samples
    if n_train is not None and n_test is not None and opts.test_fraction is not None:
        raise ConfigError("synthetic: n_train and n_test fix the split; drop test_fraction "
                          "(--test-fraction).")
    if total is not None:
        if n_train is not None and n_test is not None and n_train + n_test != total:
            raise ConfigError(f"synthetic: n_train + n_test = {n_train + n_test} but n_samples = "
                              f"{total}; give two of the three.")
        if n_train is None and n_test is None:
            n_test = _n_from_fraction(fraction, total)
        if n_train is None:
            n_train = total - n_test
        elif n_test is None:
            n_test = total - n_train
    else:
        if n_train is None and n_test is None:
            total = SYNTHETIC_N_SAMPLES
            n_test = _n_from_fraction(fraction, total)
            n_train = total - n_test
        elif n_test is None:
            n_test = max(1, round(n_train * fraction / (1 - fraction)))
        elif n_train is None:
            n_train = max(1, round(n_test * (1 - fraction) / fraction))
        total = n_train + n_test
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"synthetic: the split leaves {n_train} train / {n_test} test samples of "
                          f"{total}; both need at least 1 (--n-samples / --n-train / --n-test).")
    return total, n_train, n_test


def _load_synthetic(opts: _Options, data_dir: Any) -> _Raw:
    _reject(opts, "synthetic", "label_column")
    n_features = opts.n_features if opts.n_features is not None else SYNTHETIC_N_FEATURES
    n_classes = opts.n_classes if opts.n_classes is not None else SYNTHETIC_N_CLASSES
    total, n_train, n_test = _synthetic_sizes(opts)
    n_informative = 2
    while 2**n_informative < 2 * n_classes:
        n_informative += 1
    if n_informative > n_features:
        raise ConfigError(f"synthetic: {n_classes} classes need at least {n_informative} features "
                          f"(--n-features), got {n_features}.")
    n_redundant = min(2, n_features - n_informative)
    params = dict(n_samples=total, n_features=n_features, n_informative=n_informative,
                  n_redundant=n_redundant, n_repeated=0, n_classes=n_classes,
                  n_clusters_per_class=2, flip_y=0.01, class_sep=1.0, hypercube=True,
                  shift=0.0, scale=1.0, shuffle=True, random_state=opts.seed)
    if total * n_features <= SYNTHETIC_SKLEARN_MAX_ENTRIES:
        from sklearn.datasets import make_classification

        X, y = make_classification(**params)
        X = X.astype(np.float32)
        generator = "sklearn.datasets.make_classification (float64, cast to float32)"
    else:
        logger.info("synthetic: generating %d x %d in float32 (%.1f GiB)", total, n_features,
                    total * n_features * 4 / 2**30)
        X, y = make_classification_float32(
            total, n_features, n_informative=n_informative, n_redundant=n_redundant,
            n_classes=n_classes, seed=opts.seed)
        generator = ("sparse_mlp.datasets.make_classification_float32 (same algorithm and random "
                     "stream as sklearn, float32, chunked)")
    y_train, y_test, classes = _encode(y[:n_train], y[n_train:], "synthetic")
    info = {"source": "synthetic", "generator": generator, "parameters": params,
            "split": f"first {n_train} rows train, last {n_test} rows test (rows are already "
                     "shuffled by the generator)"}
    return _Raw(X[:n_train], y_train, X[n_train:], y_test, classes, info)


# ---------------------------------------------------------------------------
# Digits (bundled with scikit-learn)
# ---------------------------------------------------------------------------


def _load_digits(opts: _Options, data_dir: Any) -> _Raw:
    _reject(opts, "digits", "n_features", "n_samples", "n_classes", "label_column")
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    y_ids, _, classes = _encode(y, None, "digits")
    info = {"source": "sklearn.datasets.load_digits (UCI optical digits, 8x8, bundled)"}
    return _split_then_limit(X.astype(np.float32), y_ids, classes, info, opts, "digits",
                             default_fraction=DIGITS_TEST_FRACTION)


_LOADERS = {
    "leukemia": _load_leukemia, "higgs": _load_higgs, "madelon": _load_madelon,
    "fashionmnist": _load_fashionmnist, "cifar10": _load_cifar10,
    "synthetic": _load_synthetic, "digits": _load_digits,
}


# ---------------------------------------------------------------------------
# User files
# ---------------------------------------------------------------------------

_LIBSVM_EXT = (".svm", ".libsvm", ".svmlight")
_UNSUPPORTED = {
    ".npy": "a .npy file holds one array; save features and labels together with "
            "numpy.savez(path, X_train=X, y_train=y)",
    ".xlsx": "export the sheet as .csv", ".xls": "export the sheet as .csv",
    ".parquet": "convert it with pandas: df.to_csv('data.csv')",
    ".feather": "convert it with pandas: df.to_csv('data.csv')",
    ".json": "convert it to .csv or .npz", ".pkl": "convert it to .npz (pickles are not loaded)",
    ".pickle": "convert it to .npz (pickles are not loaded)",
    ".h5": "convert it to .npz", ".hdf5": "convert it to .npz", ".mat": "convert it to .npz",
    ".arff": "convert it to .csv", ".zip": "unzip it first",
}
_LIBSVM_LINE = re.compile(r"^\s*[-+]?[0-9A-Za-z_.]+(\s+(qid:\S+|\d+:\S+))+\s*(#.*)?$")


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _first_lines(path: Path, n: int = 5) -> list[str]:
    lines: list[str] = []
    try:
        with _open_text(path) as f:
            for line in f:
                if line.strip() and not line.lstrip().startswith("#"):
                    lines.append(line)
                if len(lines) >= n:
                    break
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _open_gzip_error(path, exc) from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not a text file and not an .npz archive; supported "
                           f"formats: {_USER_FORMATS}.") from None
    return lines


def _detect_format(path: Path) -> tuple[str, str | None]:
    """Return (format, delimiter) with format one of npz, delimited, libsvm."""
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    ext = os.path.splitext(base)[1]
    if ext == ".npz":
        return "npz", None
    if ext == ".csv":
        return "delimited", ","
    if ext in (".tsv", ".tab"):
        return "delimited", "\t"
    if ext in _LIBSVM_EXT:
        return "libsvm", None
    if ext in _UNSUPPORTED:
        raise DatasetError(f"{path}: {ext} files are not supported ({_UNSUPPORTED[ext]}). "
                           f"Supported formats: {_USER_FORMATS}.")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return "npz", None
    lines = _first_lines(path)
    if not lines:
        raise DatasetError(f"{path} is empty; supported formats: {_USER_FORMATS}.")
    if all(_LIBSVM_LINE.match(line) for line in lines):
        return "libsvm", None
    first = lines[0]
    for delim in ("\t", ",", ";"):
        if delim in first:
            return "delimited", delim
    return "delimited", None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _rows(path: Path, delimiter: str | None) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of the non-blank rows of a delimited text file."""
    with _open_text(path) as f:
        if delimiter is None:
            for lineno, line in enumerate(f, 1):
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    yield lineno, fields
            return
        reader = csv.reader(f, delimiter=delimiter)
        for fields in reader:
            if fields and any(c.strip() for c in fields):
                yield reader.line_num, fields


def _resolve_label_column(label_column: str | int | None, header: list[str] | None,
                          columns: list[int], path: Path) -> int:
    """Return the file column index of the label."""
    names = [h.strip() for h in header] if header is not None else None
    if label_column is None:
        return columns[-1]
    if isinstance(label_column, str):
        text = label_column.strip()
        if names is not None and text in names:
            return names.index(text)
        if re.fullmatch(r"[-+]?\d+", text):
            label_column = int(text)
        elif names is None:
            raise DatasetError(f"{path} has no header row, so the label column cannot be found by "
                               f"name {text!r}; give its index instead (--label-column N, 0-based, "
                               "negative counts from the end).")
        else:
            shown = [n for i, n in enumerate(names) if i in columns]
            raise DatasetError(f"{path} has no column named {text!r}; its columns are "
                               f"{shown[:30]!r}{' ...' if len(shown) > 30 else ''} "
                               "(--label-column NAME or INDEX).")
    try:
        return columns[label_column]
    except IndexError:
        raise DatasetError(f"{path}: label column index {label_column} is out of range; the file "
                           f"has {len(columns)} data columns (use -{len(columns)}.."
                           f"{len(columns) - 1}).") from None


def _convert_block(rows: list[tuple], lines: list[int], names: list[str], path: Path
                   ) -> np.ndarray:
    try:
        return np.array(rows, dtype=np.float32)
    except ValueError:
        pass
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if not _is_number(cell):
                what = "an empty (missing) value" if not cell.strip() else f"{cell.strip()!r}"
                raise DatasetError(
                    f"{path}, line {lines[r]}: feature column {names[c]!r} holds {what}, not a "
                    "number. Every feature must be numeric: encode text features as numbers, "
                    "impute missing values, or choose the label column with --label-column."
                )
    raise DatasetError(f"{path}: could not read the feature values as numbers.")


def _load_delimited(path: Path, delimiter: str | None, opts: _Options) -> tuple[
        np.ndarray, np.ndarray, dict]:
    rows = _rows(path, delimiter)
    try:
        sample: list[tuple[int, list[str]]] = []
        for item in rows:
            sample.append(item)
            if len(sample) >= 51:
                break
        if not sample:
            raise DatasetError(f"{path} has no data rows.")
        first = sample[0][1]
        rest = [r for _, r in sample[1:]]
        if rest:
            # a header cell is text (or empty) above a column that is numeric below it
            has_header = any(
                (not cell.strip() or not _is_number(cell))
                and all(j < len(r) and _is_number(r[j]) for r in rest)
                for j, cell in enumerate(first)
            )
        else:
            has_header = not any(_is_number(c) for c in first)
        if (isinstance(opts.label_column, str) and not re.fullmatch(r"[-+]?\d+",
                                                                   opts.label_column.strip())):
            has_header = has_header or not all(_is_number(c) for c in first)
        header = first if has_header else None
        n_cols = len(first)
        drop_index = header is not None and header[0].strip() in ("", "Unnamed: 0")
        columns = [j for j in range(n_cols) if not (drop_index and j == 0)]
        if len(columns) < 2:
            raise DatasetError(f"{path} has {len(columns)} data column(s); it needs at least one "
                               "feature column and one label column. Check the delimiter (.csv "
                               "is comma-separated, .tsv tab-separated).")
        label_idx = _resolve_label_column(opts.label_column, header, columns, path)
        feature_cols = [j for j in columns if j != label_idx]
        names = ([header[j].strip() for j in feature_cols] if header is not None
                 else [f"#{j}" for j in feature_cols])
        getter = operator.itemgetter(*feature_cols)
        blocks: list[np.ndarray] = []
        labels: list[str] = []
        pending: list[tuple] = []
        pending_lines: list[int] = []

        def all_rows() -> Iterator[tuple[int, list[str]]]:
            yield from (sample[1:] if has_header else sample)
            yield from rows

        for lineno, fields in all_rows():
            if len(fields) != n_cols:
                raise DatasetError(
                    f"{path}, line {lineno}: {len(fields)} fields, but the "
                    f"{'header' if has_header else 'first row'} has {n_cols}. Every row needs the "
                    "same number of fields (ragged rows; check for stray delimiters or quotes)."
                )
            label = fields[label_idx].strip()
            if not label:
                raise DatasetError(f"{path}, line {lineno}: the label is empty; every row needs a "
                                   "label (--label-column selects the label column).")
            labels.append(label)
            values = getter(fields)
            pending.append(values if len(feature_cols) > 1 else (values,))
            pending_lines.append(lineno)
            if len(pending) >= 8192:
                blocks.append(_convert_block(pending, pending_lines, names, path))
                pending, pending_lines = [], []
        if pending:
            blocks.append(_convert_block(pending, pending_lines, names, path))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8 CSV.") from None
    except csv.Error as exc:
        raise DatasetError(f"{path} is not valid delimited text ({exc}).") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _open_gzip_error(path, exc) from None
    if not blocks:
        raise DatasetError(f"{path} has a header but no data rows.")
    X = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    y = _labels_from_strings(labels, str(path))
    info = {"format": "delimited text", "delimiter": delimiter or "whitespace",
            "header": has_header, "dropped_index_column": drop_index,
            "label_column": header[label_idx].strip() if header is not None else label_idx,
            "feature_names": names if len(names) <= 1000 else None}
    if drop_index:
        logger.info("%s: dropped the unnamed first column (a pandas index)", path)
    return X, y, info


def _load_libsvm(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from sklearn.datasets import load_svmlight_file

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            X_sparse, y = load_svmlight_file(str(path), dtype=np.float32)
    except (ValueError, UnicodeDecodeError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path} is not a valid libsvm/svmlight file ({exc}). Expected lines "
                           "like '<label> <index>:<value> <index>:<value> ...'.") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None
    dense_bytes = X_sparse.shape[0] * X_sparse.shape[1] * 4
    if dense_bytes > _DENSE_WARN_BYTES:
        logger.warning("%s: densifying %d x %d libsvm data to float32 takes %.1f GiB", path,
                       X_sparse.shape[0], X_sparse.shape[1], dense_bytes / 2**30)
    try:
        X = X_sparse.toarray()
    except MemoryError:
        raise MemoryBudgetError(f"{path}: the dense {X_sparse.shape[0]} x {X_sparse.shape[1]} "
                                "float32 matrix does not fit in memory.") from None
    info = {"format": "libsvm/svmlight", "nnz": int(X_sparse.nnz),
            "density": float(X_sparse.nnz / max(1, X.size))}
    return X, y, info


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                   np.ndarray | None, dict]:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None
    if magic != b"PK\x03\x04":
        raise DatasetError(f"{path} is not an .npz archive (a zip file written by numpy.savez); "
                           "write it with numpy.savez(path, X_train=..., y_train=...).")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "X_train" in keys:
                if "y_train" not in keys:
                    raise DatasetError(f"{path} has X_train but no y_train; save the labels too: "
                                       "numpy.savez(path, X_train=..., y_train=...).")
                if ("X_test" in keys) != ("y_test" in keys):
                    raise DatasetError(f"{path} has only one of X_test / y_test; save both or "
                                       "neither.")
                arrays = {k: z[k] for k in ("X_train", "y_train", "X_test", "y_test") if k in keys}
            elif "X" in keys and "y" in keys:
                arrays = {"X_train": z["X"], "y_train": z["y"]}
            else:
                raise DatasetError(f"{path} holds arrays {sorted(keys)!r}; expected X_train and "
                                   "y_train (and optionally X_test, y_test), e.g. "
                                   "numpy.savez(path, X_train=X, y_train=y).")
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DatasetError(f"{path} stores an array of Python objects, which is not loaded "
                               "(unsafe). Save numbers, or labels as fixed-width strings: "
                               "y.astype(str).") from None
        raise DatasetError(f"{path} is not a valid .npz file ({exc}).") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(f"{path} is not a valid .npz archive ({exc}); write it with "
                           "numpy.savez(path, X_train=..., y_train=...).") from None
    info = {"format": "npz", "arrays": sorted(arrays)}
    return (arrays["X_train"], arrays["y_train"], arrays.get("X_test"), arrays.get("y_test"),
            info)


def _load_user_file(path: Path, opts: _Options) -> _Raw:
    fmt, delimiter = _detect_format(path)
    source = str(path)
    if fmt != "delimited":
        _reject(opts, f"a {fmt} file", "label_column", why="only .csv/.tsv files have a label "
                "column to choose")
    _reject(opts, "a user file", "n_features", "n_samples", "n_classes",
            why="they only shape the synthetic dataset")
    X_test = y_test = None
    if fmt == "npz":
        X, y, X_test, y_test, info = _load_npz(path)
    elif fmt == "libsvm":
        X, y, info = _load_libsvm(path)
    else:
        X, y, info = _load_delimited(path, delimiter, opts)
    X = _as_matrix(X, "X_train", source)
    info["source"] = source
    info["files"] = [source]
    if X.shape[0] != np.asarray(y).reshape(-1).shape[0]:
        raise DatasetError(f"{source}: {X.shape[0]} samples but {np.asarray(y).size} labels; "
                           "every sample needs exactly one label.")
    if X_test is not None:
        if opts.test_fraction is not None:
            raise ConfigError(f"{source} already has a test set (X_test, y_test); drop "
                              "test_fraction (--test-fraction).")
        X_test = _as_matrix(X_test, "X_test", source)
        if X_test.shape[0] != np.asarray(y_test).reshape(-1).shape[0]:
            raise DatasetError(f"{source}: {X_test.shape[0]} test samples but "
                               f"{np.asarray(y_test).size} test labels.")
        y_tr, y_te, classes = _encode(y, y_test, source)
        info["split"] = "the file's own X_test / y_test"
        return _limit(_Raw(X, y_tr, X_test, y_te, classes, info), opts, source)
    y_ids, _, classes = _encode(y, None, source)
    return _split_then_limit(X, y_ids, classes, info, opts, source,
                             default_fraction=DEFAULT_TEST_FRACTION)


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def _canonical_name(spec: str) -> str | None:
    key = re.sub(r"[-_ ]", "", spec.strip().lower())
    return _ALIASES.get(key)


def _looks_like_path(spec: str) -> bool:
    return (os.sep in spec or (os.altsep is not None and os.altsep in spec)
            or spec.startswith(("~", ".")) or bool(os.path.splitext(spec)[1]))


def load_dataset(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                 n_train: int | None = None, n_test: int | None = None,
                 n_features: int | None = None, n_samples: int | None = None,
                 n_classes: int | None = None, label_column: str | int | None = None,
                 test_fraction: float | None = None, seed: int = 0, download: bool = True,
                 progress: bool | None = None, standardize: bool = True) -> Dataset:
    """Load a paper dataset by name, or a user's file by path.

    Parameters
    ----------
    spec : str or path-like
        A name from :data:`PAPER_DATASETS` (case, ``-`` and ``_`` ignored:
        ``fashion-mnist`` works) or the path of a ``.npz``, ``.csv``,
        ``.tsv`` or libsvm file.  A name wins over a file of the same name
        in the current directory; write ``./name`` for the file.
    data_dir : path-like or None
        Where paper datasets are looked for (``data_dir/<name>/`` first,
        then ``data_dir/``) and downloaded to (``data_dir/<name>/``).
        Default :func:`default_data_dir`.
    n_train, n_test : int or None
        higgs: rows taken from the train / test part (default 105000 /
        50000).  synthetic: sizes of the split.  Other datasets: a
        stratified seeded subset of that many rows (default all); for data
        that is split here, ``n_test`` is the held-out size.
    n_features, n_samples, n_classes : int or None
        synthetic only: shape (default 65536 features, 10000 samples in
        total, 2 classes).
    label_column : str, int or None
        csv/tsv only: label column name, or 0-based index (negative from
        the end) among the data columns; default the last column.
    test_fraction : float or None
        Held-out fraction where no test set is given (user files 0.2,
        digits 0.25, synthetic 0.3; leukemia defaults to 699 samples).
    seed : int
        Seed of every split, subsample and of the synthetic generator.
    download : bool
        Download missing paper-dataset files.
    progress : bool or None
        Progress bars (True), periodic log lines (False), or decide by
        whether stderr is a terminal (None).
    standardize : bool
        Standardise features with the training mean/std.

    Returns
    -------
    Dataset
        float32 C-contiguous features, int32 class ids.

    Raises
    ------
    DatasetError
        Missing, malformed or unusable data; the message says how to fix it.
    ConfigError
        Options that do not apply to this dataset or contradict each other.
    """
    opts = _make_options(n_train, n_test, n_features, n_samples, n_classes, label_column,
                         test_fraction, seed, download, progress, standardize)
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"The dataset must be a name or a file path, got {spec!r}.")
    text = os.fspath(spec)
    name = _canonical_name(text) if isinstance(spec, str) else None
    if name is not None and not (_looks_like_path(text) and Path(text).exists()):
        raw = _LOADERS[name](opts, data_dir)
        return _finalize(name, raw, opts, name)
    path = Path(text).expanduser()
    if not path.exists():
        if _looks_like_path(text):
            raise DatasetError(f"The data file {path} does not exist. Check the path; supported "
                               f"formats: {_USER_FORMATS}.")
        raise DatasetError(f"Unknown dataset {text!r}. Valid names: {', '.join(PAPER_DATASETS)}; "
                           f"or give the path of a data file ({_USER_FORMATS}).")
    if path.is_dir():
        raise DatasetError(f"{path} is a directory; give the path of a data file "
                           f"({_USER_FORMATS}) or a dataset name. To say where the paper datasets "
                           "are, use --data-dir (data_dir=) with a dataset name.")
    raw = _load_user_file(path, opts)
    return _finalize(path.name, raw, opts, str(path))


__all__ = [
    "CACHE_VERSION", "DATA_DIR_ENV", "Dataset", "HIGGS_TEST_START", "PAPER_DATASETS",
    "REMOTE_FILES", "default_data_dir", "load_dataset", "make_classification_float32",
    "read_idx", "standardize_inplace",
]
