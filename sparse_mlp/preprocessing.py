"""What a trained model needs besides its weights to take raw inputs.

A network is trained on *standardised* features (the training split's mean
and standard deviation, zero-variance features set to 0; see
:func:`sparse_mlp.datasets.standardize_inplace`) and predicts *class ids*
``0..C-1``.  :class:`Preprocessing` is the record that turns the user's raw
features into the network's inputs and its class ids back into the user's
labels: the standardisation statistics, the feature names in order, the
label of each class id and the task.  The dataset loaders attach one to
every :class:`~sparse_mlp.datasets.Dataset`, the run owner writes it into
every checkpoint (``/preprocessing``), and :func:`sparse_mlp.load` returns a
model that applies it (:class:`~sparse_mlp.trained.TrainedModel`).

Inputs are taken as NumPy arrays, pandas DataFrames (columns selected and
ordered by name when the model knows the names) and SciPy sparse matrices
(transformed a block of rows at a time: the standardised matrix is dense,
so the whole of it is never built unless :meth:`Preprocessing.transform`
is asked for it).  Pure NumPy: no kernel is imported here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

TASKS = ("classification", "regression")
#: rows per block when inputs are converted and standardised (bounded memory)
BLOCK_BYTES = 32 << 20


class MissingPreprocessingWarning(UserWarning):
    """A checkpoint without a preprocessing record (written before
    checkpoints carried one): its model takes standardised features and
    returns class ids."""


def _is_dataframe(X: Any) -> bool:
    """A pandas DataFrame (duck-typed: pandas is never imported here)."""
    return hasattr(X, "columns") and hasattr(X, "iloc") and hasattr(X, "dtypes")


def _is_sparse(X: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return sp.issparse(X)


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(repr=False)
class Preprocessing:
    """How raw features become a network's inputs, and class ids labels.

    Attributes
    ----------
    n_features : int
        Features the network takes.
    mean, std : numpy.ndarray or None
        float64, shape (n_features,): the training split's mean and
        population std (ddof=0).  None: the features were not standardised.
    constant : numpy.ndarray or None
        bool, shape (n_features,): features with zero training variance
        (always 0 after standardisation).
    feature_names : list of str or None
        The feature names in the network's order (a CSV header); None when
        the training data had none (inputs are then taken by position).
    classes : list or None
        The label of each class id (str, int, float or bool), sorted as in
        :attr:`Dataset.classes`; None for regression.
    task : str
        "classification" or "regression".
    label_column : str, int or None
        The training file's label column (its header name, or its index),
        so that a file to predict can leave it out of the features.
    target_mean, target_std : numpy.ndarray or None
        Regression: float64, shape (n_targets,); a network's outputs y are
        mapped back to the user's scale as ``y * target_std + target_mean``.
    """

    n_features: int
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    constant: np.ndarray | None = None
    feature_names: list[str] | None = None
    classes: list | None = None
    task: str = "classification"
    label_column: str | int | None = None
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.n_features = int(self.n_features)
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("Preprocessing: give both mean and std, or neither")
        if self.mean is not None:
            self.mean = np.ascontiguousarray(self.mean, dtype=np.float64).reshape(-1)
            self.std = np.ascontiguousarray(self.std, dtype=np.float64).reshape(-1)
            if self.constant is None:
                self.constant = ~(self.std > 0.0)
            self.constant = np.ascontiguousarray(self.constant, dtype=bool).reshape(-1)
            for name in ("mean", "std", "constant"):
                if getattr(self, name).shape != (self.n_features,):
                    raise ConfigError(f"Preprocessing: {name} has shape "
                                      f"{getattr(self, name).shape}, expected "
                                      f"({self.n_features},)")
            if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()):
                raise ConfigError("Preprocessing: mean and std must be finite")
        else:
            self.constant = None
        if self.feature_names is not None:
            self.feature_names = [str(n) for n in self.feature_names]
            if len(self.feature_names) != self.n_features:
                raise ConfigError(f"Preprocessing: {len(self.feature_names)} feature names for "
                                  f"{self.n_features} features")
            if len(set(self.feature_names)) != self.n_features:
                log.info("the feature names are not unique: inputs are taken by position")
        if self.classes is not None:
            self.classes = [_py(c) for c in self.classes]
        if self.task == "classification" and self.classes is not None and \
                len(self.classes) < 2:
            raise ConfigError("Preprocessing: a classifier needs at least 2 classes")
        for name in ("target_mean", "target_std"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        if isinstance(self.label_column, np.integer):
            self.label_column = int(self.label_column)

    # ------------------------------------------------------------ properties
    @property
    def standardized(self) -> bool:
        """Were the features standardised in training?"""
        return self.mean is not None

    @property
    def n_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    @property
    def by_name(self) -> bool:
        """Are DataFrame columns selected by name (known, unique names)?"""
        return (self.feature_names is not None
                and len(set(self.feature_names)) == self.n_features)

    def __repr__(self) -> str:
        names = ("None" if self.feature_names is None else
                 f"[{', '.join(map(repr, self.feature_names[:4]))}"
                 f"{', ...' if self.n_features > 4 else ''}]")
        return (f"Preprocessing(task={self.task!r}, n_features={self.n_features}, "
                f"standardized={self.standardized}, feature_names={names}, "
                f"classes={self.classes!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preprocessing):
            return NotImplemented
        a, b = self.to_record(), other.to_record()
        return a[0] == b[0] and a[1].keys() == b[1].keys() and all(
            np.array_equal(a[1][k], b[1][k]) for k in a[1])

    # ------------------------------------------------------------ record
    def to_record(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-serialisable metadata, numeric arrays): what a checkpoint stores."""
        meta = {"task": self.task, "n_features": self.n_features,
                "standardized": self.standardized, "feature_names": self.feature_names,
                "classes": self.classes, "label_column": self.label_column}
        arrays: dict[str, np.ndarray] = {}
        if self.standardized:
            arrays.update(mean=self.mean, std=self.std,
                          constant=self.constant.astype(np.uint8))
        if self.target_mean is not None:
            arrays["target_mean"] = self.target_mean
        if self.target_std is not None:
            arrays["target_std"] = self.target_std
        return meta, arrays

    @classmethod
    def from_record(cls, meta: dict, arrays: dict[str, np.ndarray]) -> Preprocessing:
        """The inverse of :meth:`to_record` (raises ConfigError when inconsistent)."""
        standardized = bool(meta.get("standardized", "mean" in arrays))
        if standardized and not {"mean", "std", "constant"} <= set(arrays):
            raise ConfigError("the preprocessing record lacks mean, std or constant")
        return cls(n_features=int(meta["n_features"]),
                   mean=arrays.get("mean") if standardized else None,
                   std=arrays.get("std") if standardized else None,
                   constant=(np.asarray(arrays["constant"]).astype(bool)
                             if standardized else None),
                   feature_names=meta.get("feature_names"), classes=meta.get("classes"),
                   task=meta.get("task", "classification"),
                   label_column=meta.get("label_column"),
                   target_mean=arrays.get("target_mean"), target_std=arrays.get("target_std"))

    # ------------------------------------------------------------ inputs
    def _columns(self, X: Any, source: str) -> tuple[Any, np.ndarray | None]:
        """(the input, column positions to take from a DataFrame or None)."""
        if _is_dataframe(X):
            cols = [str(c) for c in X.columns]
            if self.by_name and all(isinstance(c, str) for c in X.columns):
                pos = {c: i for i, c in enumerate(cols)}
                missing = [n for n in self.feature_names if n not in pos]
                if missing:
                    raise DatasetError(
                        f"{source} lacks {len(missing)} of the {self.n_features} feature "
                        f"columns the model was trained on: {missing[:20]!r}"
                        f"{' ...' if len(missing) > 20 else ''}. Give every one of them (by "
                        f"name; the order does not matter)")
                extra = [c for c in cols if c not in set(self.feature_names)]
                if extra:
                    log.info("%s: ignoring %d columns the model was not trained on: %s",
                             source, len(extra), extra[:10])
                return X, np.array([pos[n] for n in self.feature_names], dtype=np.int64)
            self._check_count(len(cols), source)
            return X, None
        if _is_sparse(X):
            if X.ndim != 2:
                raise DatasetError(f"{source} must be 2-D (samples x features), got {X.shape}")
            self._check_count(X.shape[1], source)
            X = X.tocsr() if X.format not in ("csr", "csc") else X
            if X.format == "csc":  # row blocks of a CSC matrix are slow: one conversion
                X = X.tocsr()
            return X, None
        X = np.asarray(X)
        if X.ndim == 1:
            raise DatasetError(f"{source} is 1-D (shape {X.shape}); give samples x features, "
                               f"e.g. X.reshape(1, -1) for one sample of {self.n_features} "
                               f"features")
        if X.ndim != 2:
            raise DatasetError(f"{source} must be 2-D (samples x features), got shape "
                               f"{X.shape}")
        if X.dtype.kind not in "biuf":
            raise DatasetError(f"{source} has dtype {X.dtype}; features must be numbers")
        self._check_count(X.shape[1], source)
        return X, None

    def _check_count(self, n: int, source: str) -> None:
        if n != self.n_features:
            named = (f" ({', '.join(self.feature_names[:8])}"
                     f"{', ...' if self.n_features > 8 else ''})"
                     if self.feature_names is not None else "")
            raise DatasetError(f"{source} has {n} features, the model was trained on "
                               f"{self.n_features}{named}. Give the same features in the same "
                               f"order")

    def _raw_block(self, X: Any, cols: np.ndarray | None, s: int, e: int,
                   source: str) -> np.ndarray:
        """Rows s:e of the input as a new float32 C-contiguous array."""
        if _is_dataframe(X):
            part = X.iloc[s:e] if cols is None else X.iloc[s:e, cols]
            try:
                block = part.to_numpy(dtype=np.float32)
            except (TypeError, ValueError) as exc:
                bad = [str(c) for c, t in zip(part.columns, part.dtypes)
                       if getattr(t, "kind", "O") not in "biuf"]
                raise DatasetError(f"{source}: features must be numbers; columns "
                                   f"{bad[:10]!r} are not ({exc})") from None
            return np.ascontiguousarray(block)
        if _is_sparse(X):
            return np.ascontiguousarray(X[s:e].toarray(), dtype=np.float32)
        return np.array(X[s:e], dtype=np.float32, order="C")

    def _standardize(self, block: np.ndarray) -> None:
        """In place, exactly as :func:`~sparse_mlp.datasets.standardize_inplace`
        (float32 shift and scale, constant features set to 0)."""
        if not self.standardized:
            return
        block -= self.mean.astype(block.dtype)
        block /= np.where(self.constant, 1.0, self.std).astype(block.dtype)
        if self.constant.any():
            block[:, self.constant] = 0.0

    def block_rows(self) -> int:
        """Rows per block so that one float32 block stays near BLOCK_BYTES."""
        return max(1, BLOCK_BYTES // max(1, 4 * self.n_features))

    def n_samples(self, X: Any) -> int:
        return int(X.shape[0]) if hasattr(X, "shape") else len(X)

    def iter_blocks(self, X: Any, block_rows: int | None = None, *, source: str = "X"
                    ) -> Iterator[tuple[int, np.ndarray]]:
        """Standardised float32 blocks of raw input rows.

        Parameters
        ----------
        X : array-like (n_samples, n_features), pandas DataFrame or scipy.sparse
            Raw features, as in the training file.
        block_rows : int, optional
            Rows per block (default :meth:`block_rows`).
        source : str
            How error messages name the input.

        Yields
        ------
        start : int
            Index of the block's first row.
        block : numpy.ndarray
            float32, shape (rows, n_features), C-contiguous, standardised.

        Raises
        ------
        DatasetError
            Wrong number of features, missing DataFrame columns, values that
            are not numbers, NaN or infinite values.
        """
        X, cols = self._columns(X, source)
        n = self.n_samples(X)
        step = int(block_rows) if block_rows else self.block_rows()
        for s in range(0, n, step):
            block = self._raw_block(X, cols, s, min(n, s + step), source)
            bad = ~np.isfinite(block)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                name = (f" ({self.feature_names[c]!r})" if self.feature_names is not None
                        else "")
                raise DatasetError(f"{source}: sample {s + r}, feature {c}{name} is "
                                   f"{block[r, c]}; every feature needs a finite value (impute "
                                   f"missing values first)")
            self._standardize(block)
            yield s, block

    def transform(self, X: Any, *, source: str = "X") -> np.ndarray:
        """Raw features -> the network's inputs.

        Parameters
        ----------
        X : array-like (n_samples, n_features), pandas DataFrame or scipy.sparse

        Returns
        -------
        numpy.ndarray
            float32, shape (n_samples, n_features), C-contiguous.  Built a
            block at a time (a sparse input is never densified whole in
            float64); prediction never needs it whole
            (:meth:`iter_blocks`).
        """
        X, _ = self._columns(X, source)
        out = np.empty((self.n_samples(X), self.n_features), dtype=np.float32)
        for s, block in self.iter_blocks(X, source=source):
            out[s:s + block.shape[0]] = block
        return out

    # ------------------------------------------------------------ outputs
    def labels(self, ids: np.ndarray) -> np.ndarray:
        """Class ids -> the user's labels (str stays str); ids unchanged
        when the classes are unknown."""
        ids = np.asarray(ids)
        if self.classes is None:
            return ids
        return self.classes_array()[ids]

    def classes_array(self) -> np.ndarray | None:
        """The classes as a NumPy array (str, int64, float64 or bool)."""
        if self.classes is None:
            return None
        return np.asarray(self.classes)

    def class_ids(self, y: Sequence | np.ndarray) -> np.ndarray:
        """The user's labels -> class ids (int64; -1 for labels the model does
        not know).  Labels read as text ("3") match numeric classes (3)."""
        y = np.asarray(y)
        if y.ndim != 1:
            y = y.reshape(-1)
        classes = self.classes_array()
        if classes is None:
            return y.astype(np.int64)
        if (y.dtype.kind in "US") != (classes.dtype.kind in "US"):
            key = np.array([_label_text(v) for v in classes.tolist()])
            y = np.array([_label_text(v) for v in y.tolist()])
        else:
            key = classes
        order = np.argsort(key, kind="stable")
        pos = np.searchsorted(key[order], y)
        pos = np.minimum(pos, key.size - 1)
        found = key[order][pos] == y
        return np.where(found, order[pos], -1).astype(np.int64)

    def targets(self, outputs: np.ndarray) -> np.ndarray:
        """Regression: a network's outputs -> the user's scale (float64),
        ``outputs * target_std + target_mean`` (per target column)."""
        out = np.asarray(outputs, dtype=np.float64)
        if self.target_std is not None:
            out = out * (self.target_std if out.ndim > 1 else self.target_std[0])
        if self.target_mean is not None:
            out = out + (self.target_mean if out.ndim > 1 else self.target_mean[0])
        return out


def _label_text(v: Any) -> str:
    """A label as text, "3" for 3 and 3.0 alike (labels read from text files)."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, str):
        t = v.strip()
        try:
            f = float(t)
        except ValueError:
            return t
        return str(int(f)) if f.is_integer() and abs(f) < 2**53 else repr(f)
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def from_dataset(mean: np.ndarray | None, std: np.ndarray | None,
                 constant: np.ndarray | None, n_features: int, classes: list | None,
                 info: dict | None = None, feature_names: list[str] | None = None,
                 task: str | None = None) -> Preprocessing:
    """The record of a loaded dataset (``datasets.base._finalize``).

    ``task`` defaults to "classification" when there are classes, else
    "regression" (``info["task"]`` wins when set)."""
    info = info or {}
    task = task or info.get("task") or ("classification" if classes else "regression")
    label_column = info.get("label_column") if info.get("format") == "delimited text" else None
    return Preprocessing(n_features=n_features, mean=mean, std=std, constant=constant,
                         feature_names=feature_names,
                         classes=list(classes) if task == "classification" else None,
                         task=task, label_column=label_column)
