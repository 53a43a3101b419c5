"""What every data source shares: the :class:`Dataset` record, options,
labels, splits, standardisation and the final checks.

A source module parses its files into a :class:`_Raw` (features as read,
labels already mapped to class ids ``0..C-1``) and
:func:`sparse_mlp.datasets.load_dataset` passes that to :func:`_finalize`,
which checks it and returns a float32, standardised :class:`Dataset`.
Also here: stratified seeded splits and subsets, and :func:`_locate`, which
finds a paper dataset's files under the data directory and downloads the
missing ones (:mod:`sparse_mlp.download`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparse_mlp.download import download_dataset, expected_files
from sparse_mlp.download import manual_download_help as _manual_help
from sparse_mlp.errors import ConfigError, DatasetError, MemoryBudgetError
from sparse_mlp.preprocessing import Preprocessing, from_dataset

logger = logging.getLogger(__name__)

#: Environment variable naming the data directory.
DATA_DIR_ENV = "SPARSE_MLP_DATA_DIR"


# ---------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------


@dataclass(repr=False)
class Dataset:
    """A classification (or, with ``task="regression"``, regression) dataset
    ready for training.

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
    X_val, y_val : numpy.ndarray or None
        With ``val_fraction``: a stratified validation split taken from the
        training set before the standardisation statistics were computed
        (the statistics are the remaining training part's); None otherwise.
    preprocessing : sparse_mlp.preprocessing.Preprocessing or None
        What a trained model needs to take raw inputs: the standardisation
        statistics (mean, std, constant features), the feature names (a
        CSV header) and the classes; the run owner stores it in every
        checkpoint.  None for a Dataset built by hand.
    task : str
        ``"classification"`` or ``"regression"``.  Regression: ``y_train`` /
        ``y_test`` (/ ``y_val``) are float32 targets, (n,) for one target or
        (n, k), and ``classes`` is empty.
    target_mean, target_std : numpy.ndarray or None
        Regression only: float64 (k,) training mean and std (ddof=0; 1 where
        the std is 0) of the targets.  The targets held here are standardised
        with them, as the features are; a prediction p maps back to
        ``p * target_std + target_mean`` (also in ``preprocessing``).
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: list
    info: dict = field(default_factory=dict)
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    preprocessing: Preprocessing | None = None
    task: str = "classification"
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return int(self.X_train.shape[1])

    @property
    def n_targets(self) -> int:
        """Regression: number of targets (the output width); 0 otherwise."""
        if self.task != "regression":
            return 0
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes: the model's output width (for regression the
        number of targets, :attr:`n_targets`)."""
        if self.task == "regression":
            return self.n_targets
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
        last = (f"n_targets={self.n_targets}" if self.task == "regression"
                else f"n_classes={self.n_classes}")
        return (f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
                f"n_features={self.n_features}, {last})")


def default_data_dir() -> Path:
    """Return the directory where paper datasets are looked for and downloaded.

    Returns
    -------
    pathlib.Path
        ``$SPARSE_MLP_DATA_DIR`` if set and non-empty, made absolute; else
        the user cache directory, the same wherever the command runs:
        ``platformdirs.user_cache_dir("sparse_mlp")`` (``~/.cache/sparse_mlp``
        on Linux, ``~/Library/Caches/sparse_mlp`` on macOS), or without
        platformdirs the XDG convention, ``$XDG_CACHE_HOME/sparse_mlp``,
        else ``~/.cache/sparse_mlp``.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().absolute()
    try:
        import platformdirs
    except ImportError:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
        return (root / "sparse_mlp").absolute()
    return Path(platformdirs.user_cache_dir("sparse_mlp", appauthor=False)).absolute()


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
    val_fraction: float | None = None
    task: str = "classification"       # regression: float targets (load_dataset sets it)

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
    if np.asarray(y_train).size == 0:
        raise DatasetError(f"{source} holds no samples (its arrays are empty).")
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


def _validation_split(X: np.ndarray, y: np.ndarray, opts: _Options, source: str):
    """``opts.val_fraction`` of the training rows held out as a validation set:
    stratified by class (a random subset for float regression targets),
    seeded by the run's seed (a stream of its own), every class keeping at
    least one training sample, file order kept within each part.

    Returns (X_train, y_train, X_val, y_val, provenance); the validation
    parts and the provenance are None without ``val_fraction``."""
    if opts.val_fraction is None:
        return X, y, None, None, None
    n = y.shape[0]
    n_val = _n_from_fraction(opts.val_fraction, n)
    rng = np.random.default_rng([opts.seed, 4])
    if y.dtype.kind == "f":  # regression targets: no classes to stratify by
        if n_val > n - 1:
            raise ConfigError(f"{source}: --val-fraction {opts.val_fraction} leaves no "
                              f"training sample of {n}; use a smaller fraction")
        val_idx = np.sort(rng.permutation(n)[:n_val])
        how = "random"
    else:
        n_classes = np.unique(y).size
        if n_val > n - n_classes:
            raise ConfigError(
                f"{source}: --val-fraction {opts.val_fraction} would hold out {n_val} of the "
                f"{n} training samples and leave a class without training samples; use a "
                f"fraction of at most {(n - n_classes) / n:.3g}")
        val_idx = _stratified_pick(y, n_val, rng, keep_out=1)
        how = "stratified"
    keep = np.ones(n, dtype=bool)
    keep[val_idx] = False
    train_idx = np.flatnonzero(keep)
    info = {"fraction": opts.val_fraction, "n_val": int(val_idx.size),
            "n_train": int(train_idx.size),
            "split": f"{how} seeded split of the training set (seed {opts.seed}), before the "
                     f"standardisation statistics, which come from the remaining training part"}
    if y.dtype.kind != "f":
        info["val_class_counts"] = np.bincount(y[val_idx]).tolist()
    return X[train_idx], y[train_idx], X[val_idx], y[val_idx], info


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


def standardize_inplace(X_train: np.ndarray, X_test: np.ndarray | None = None,
                        *more: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    *more : numpy.ndarray
        Further arrays standardised with the same statistics (a validation
        split); modified in place.

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
    for X in (X_train, X_test, *more):
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


def _targets(y: Any, source: str) -> np.ndarray:
    """Regression targets as float64, (n,) or (n, k), finite; a clear error
    for text labels."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2):
        raise DatasetError(f"{source}: regression targets must be (n_samples,) or (n_samples, "
                           f"n_targets), got shape {y.shape}.")
    if y.dtype.kind in "SU":
        try:
            y = y.astype(np.float64)
        except ValueError:
            raise DatasetError(f"{source}: --task regression needs a numeric label column; "
                               f"it holds text such as {str(y.ravel()[0])!r}. Choose the target "
                               "column with --label-column, or train a classifier (--task "
                               "classification).") from None
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"{source}: regression targets of dtype {y.dtype} are not "
                           "supported; use numbers.")
    y = y.astype(np.float64)
    finite = np.isfinite(y).reshape(y.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise DatasetError(f"{source}: the target of sample {bad} is not finite; every sample "
                           "needs a finite target. Remove or fix those rows.")
    return y


def _shuffle_split(X: np.ndarray, y: np.ndarray, info: dict, opts: _Options, source: str,
                   default_fraction: float) -> _Raw:
    """Regression: a plain seeded shuffle split (no strata), then ``n_train``
    as a seeded random subset; file order kept within each part."""
    n = y.shape[0]
    if opts.n_test is not None and opts.test_fraction is not None:
        raise ConfigError("Give either n_test (--n-test) or test_fraction (--test-fraction), "
                          "not both.")
    if opts.n_test is not None:
        n_test, how = opts.n_test, f"n_test={opts.n_test}"
    else:
        frac = opts.test_fraction if opts.test_fraction is not None else default_fraction
        n_test = _n_from_fraction(frac, n)
        how = (f"test_fraction={frac}" if opts.test_fraction is not None
               else f"default test_fraction={frac}")
    if n_test > n - 1:
        raise ConfigError(f"{source}: cannot hold out {n_test} of {n} samples and keep a "
                          f"training set; use a test size of at most {n - 1} (--n-test / "
                          "--test-fraction).")
    rng = np.random.default_rng([opts.seed, 1])
    test_idx = np.sort(rng.permutation(n)[:n_test])
    mask = np.ones(n, dtype=bool)
    mask[test_idx] = False
    train_idx = np.flatnonzero(mask)
    info = dict(info)
    info["split"] = (f"seeded shuffle split ({how}, seed {opts.seed}; regression: not "
                     f"stratified): {train_idx.size} train / {test_idx.size} test; file order "
                     "kept within each part")
    raw = _Raw(X[train_idx], y[train_idx], X[test_idx], y[test_idx], [], info)
    return _regression_limit(raw, opts, source, test=False)


def _regression_limit(raw: _Raw, opts: _Options, source: str, test: bool = True) -> _Raw:
    """Regression: ``n_train`` (and, for a fixed split, ``n_test``) as seeded
    random subsets (no strata), file order kept."""
    info = dict(raw.info)
    parts = {"train": (raw.X_train, raw.y_train, opts.n_train, 2, "--n-train")}
    if test:
        parts["test"] = (raw.X_test, raw.y_test, opts.n_test, 3, "--n-test")
    out = {}
    for what, (X, y, n, stream, flag) in parts.items():
        if n is None or n == y.shape[0]:
            out[what] = (X, y)
            continue
        if n > y.shape[0]:
            raise ConfigError(f"{source}: asked for {n} {what} samples ({flag}) but only "
                              f"{y.shape[0]} are available; use at most {y.shape[0]}.")
        idx = np.sort(np.random.default_rng([opts.seed, stream]).permutation(y.shape[0])[:n])
        out[what] = (X[idx], y[idx])
        info[f"{what}_subsample"] = (f"{n} of {y.shape[0]} rows, random, seed {opts.seed}, "
                                     "file order kept")
    X_te, y_te = out.get("test", (raw.X_test, raw.y_test))
    return _Raw(out["train"][0], out["train"][1], X_te, y_te, [], info)


def _standardize_targets(mean: np.ndarray, std: np.ndarray, *ys: np.ndarray | None) -> list:
    """Each of ``ys`` ((n,) or (n, k)) as float32 (y - mean) / std (None stays None)."""
    out = []
    for y in ys:
        if y is None:
            out.append(None)
            continue
        shape = y.shape[1:] or ()
        out.append(np.ascontiguousarray((y - mean.reshape(shape)) / std.reshape(shape),
                                        dtype=np.float32))
    return out


def _finalize_regression(name: str, raw: _Raw, opts: _Options, source: str) -> Dataset:
    """The regression twin of :func:`_finalize`: float32 targets standardised
    with the training targets' mean and std (kept on the Dataset and in its
    preprocessing record, so predictions map back to the user's units)."""
    X_train = _as_matrix(raw.X_train, "X_train", source)
    X_test = _as_matrix(raw.X_test, "X_test", source)
    y_train = _targets(raw.y_train, source)
    y_test = _targets(raw.y_test, source)
    if X_train.shape[0] != y_train.shape[0] or X_test.shape[0] != y_test.shape[0]:
        raise DatasetError(f"{source}: {X_train.shape[0]} training samples but "
                           f"{y_train.shape[0]} targets, {X_test.shape[0]} test samples but "
                           f"{y_test.shape[0]} targets; every sample needs one target.")
    if y_train.shape[1:] != y_test.shape[1:]:
        raise DatasetError(f"{source}: training targets have shape {y_train.shape[1:]} per "
                           f"sample, test targets {y_test.shape[1:]}; use the same.")
    if X_train.shape[0] < 2:
        raise DatasetError(f"{source}: regression needs at least 2 training samples.")
    if X_test.shape[0] == 0:
        raise DatasetError(f"{source}: the test set is empty; give a test set or a larger "
                           "--test-fraction.")
    if X_train.shape[1] != X_test.shape[1] or X_train.shape[1] == 0:
        raise DatasetError(f"{source}: X_train has {X_train.shape[1]} features and X_test "
                           f"{X_test.shape[1]}; both need the same, at least one.")
    _check_finite(X_train, "X_train", source)
    _check_finite(X_test, "X_test", source)
    # --val-fraction: held out of the training set before its statistics are taken
    X_train, y_train, X_val, y_val, val_info = _validation_split(X_train, y_train, opts, source)
    info = dict(raw.info)
    info.pop("_feature_names", None)
    constant_count = 0
    mean = std = constant = None
    if opts.standardize:
        mean, std, constant = standardize_inplace(X_train, X_test,
                                                  *(() if X_val is None else (X_val,)))
        constant_count = int(constant.sum())
    Ytr = y_train.reshape(y_train.shape[0], -1)
    t_mean = Ytr.mean(axis=0)
    t_std = Ytr.std(axis=0)
    t_std = np.where(t_std > 0, t_std, 1.0)
    y_train, y_test, y_val = _standardize_targets(t_mean, t_std, y_train, y_test, y_val)
    info.update(
        task="regression", n_train=int(X_train.shape[0]), n_test=int(X_test.shape[0]),
        n_features=int(X_train.shape[1]), n_targets=int(Ytr.shape[1]),
        standardized=opts.standardize,
        standardization="train mean/std (ddof=0), zero-variance features set to 0"
        if opts.standardize else "none",
        constant_features=constant_count, seed=opts.seed,
        target_mean=t_mean.tolist(), target_std=t_std.tolist(),
        target_standardization="targets standardised with the training mean/std (ddof=0); "
                               "predictions map back as p * target_std + target_mean",
    )
    if val_info:
        info["validation"] = val_info
    prep = from_dataset(mean, std, constant, X_train.shape[1], [], raw.info,
                        raw.info.get("_feature_names"), task="regression")
    prep = dataclasses.replace(prep, target_mean=t_mean, target_std=t_std)
    ds = Dataset(name=name, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                 classes=[], info=_jsonable(info), X_val=X_val, y_val=y_val,
                 preprocessing=prep, task="regression", target_mean=t_mean, target_std=t_std)
    logger.info("loaded %r", ds)
    return ds


def _finalize(name: str, raw: _Raw, opts: _Options, source: str) -> Dataset:
    if opts.task == "regression":
        return _finalize_regression(name, raw, opts, source)
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
    # --val-fraction: held out of the training set before its statistics are taken
    X_train, y_train, X_val, y_val, val_info = _validation_split(X_train, y_train, opts, source)
    info = dict(raw.info)
    info.pop("_feature_names", None)  # every name, for the preprocessing record only
    constant_count = 0
    mean = std = constant = None
    if opts.standardize:
        mean, std, constant = standardize_inplace(X_train, X_test,
                                                  *(() if X_val is None else (X_val,)))
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
    if val_info:
        info["validation"] = val_info
    ds = Dataset(name=name, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                 classes=list(raw.classes), info=_jsonable(info), X_val=X_val, y_val=y_val,
                 preprocessing=from_dataset(mean, std, constant, X_train.shape[1],
                                            raw.classes, raw.info,
                                            raw.info.get("_feature_names")))
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


def _open_gzip_error(path: Path, exc: BaseException, user_file: bool = False
                     ) -> DatasetError:
    fix = ("Copy or compress it again from the original (a user's file is never downloaded)."
           if user_file else
           "Delete it and download it again (it is downloaded automatically when missing).")
    return DatasetError(f"{path} is truncated or not a valid gzip file "
                        f"({type(exc).__name__}: {exc}). {fix}")
