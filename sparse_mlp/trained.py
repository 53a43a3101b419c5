"""A trained model as a complete artifact: the network and its preprocessing.

:func:`sparse_mlp.load` returns a :class:`TrainedModel`: the network a run
trained (:class:`~sparse_mlp.model.SparseMLP` or
:class:`~sparse_mlp.dense.DenseMLP`, in ``.network``) with the
:class:`~sparse_mlp.preprocessing.Preprocessing` record its checkpoint
carries.  ``predict``, ``predict_proba`` and ``score`` take RAW features (as
in the training file: the model standardises them with the training
statistics) and speak the user's labels (strings stay strings).  Inputs
are processed a block of rows at a time, so a large or sparse input is
never standardised whole.

A checkpoint written before checkpoints carried the record loads with a
:class:`~sparse_mlp.preprocessing.MissingPreprocessingWarning`: its model
takes features already standardised as in training and returns class ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .preprocessing import Preprocessing


class TrainedModel:
    """A trained network with what it needs to take raw inputs.

    Parameters
    ----------
    network : SparseMLP or DenseMLP
    preprocessing : Preprocessing or None
        None: a checkpoint from before preprocessing records (inputs are
        taken as the network's, standardised; outputs are class ids).
    path : Path, optional
        The checkpoint it was loaded from.
    config : TrainConfig, optional
        The run's configuration (None for a model-only file).

    Attributes
    ----------
    network : SparseMLP or DenseMLP
        The network itself (predicts class ids from standardised inputs).
    preprocessing : Preprocessing or None
    path : Path or None
    config : TrainConfig or None
    sizes : list of int
        Layer widths, input first.
    classes_ : numpy.ndarray or None
        The label of each class id, in the order of ``predict_proba``'s
        columns (None without a preprocessing record).
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray of str or None
    task : str
        "classification" or "regression".

    Other attributes (``layers``, ``nnz``, ``acts`` ...) are the network's,
    as when :func:`sparse_mlp.load` returned the network itself.
    """

    def __init__(self, network, preprocessing: Preprocessing | None = None,
                 path: str | Path | None = None, config=None) -> None:
        if preprocessing is not None:
            if preprocessing.n_features != network.sizes[0]:
                raise ConfigError(f"the preprocessing record has {preprocessing.n_features} "
                                  f"features, the network takes {network.sizes[0]}")
            if preprocessing.task == "classification" and preprocessing.classes is not None \
                    and len(preprocessing.classes) != network.sizes[-1]:
                raise ConfigError(f"the preprocessing record has {len(preprocessing.classes)} "
                                  f"classes, the network predicts {network.sizes[-1]}")
        self.network = network
        self.preprocessing = preprocessing
        self.path = Path(path) if path is not None else None
        self.config = config

    # ------------------------------------------------------------ description
    @property
    def sizes(self) -> list[int]:
        return list(self.network.sizes)

    @property
    def task(self) -> str:
        return self.preprocessing.task if self.preprocessing is not None else "classification"

    @property
    def classes_(self) -> np.ndarray | None:
        return None if self.preprocessing is None else self.preprocessing.classes_array()

    @property
    def n_features_in_(self) -> int:
        return int(self.network.sizes[0])

    @property
    def feature_names_in_(self) -> np.ndarray | None:
        names = None if self.preprocessing is None else self.preprocessing.feature_names
        return None if names is None else np.asarray(names, dtype=object)

    def __getattr__(self, name: str) -> Any:
        # the network's own attributes (layers, nnz, acts...), as before load()
        # returned this wrapper; never for private names (copy, pickle probes)
        if name.startswith("_") or name == "network":
            raise AttributeError(name)
        return getattr(self.network, name)

    def __repr__(self) -> str:
        src = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"TrainedModel({self.network!r}, {self.preprocessing!r}{src})"

    # ------------------------------------------------------------ inputs
    def _batch(self, batch_size: int | None) -> int:
        if batch_size:
            return int(batch_size)
        return int(getattr(self.config, "eval_batch_size", 0) or 1024)

    def _blocks(self, X: Any, batch_size: int | None):
        """(start, standardised float32 block) over the raw input's rows."""
        if self.preprocessing is None:  # an old checkpoint: X is the network's input
            X = X.toarray() if hasattr(X, "tocsr") else X
            X = np.ascontiguousarray(X, dtype=np.float32)
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise ConfigError(f"X has shape {X.shape}, the model takes "
                                  f"(n_samples, {self.n_features_in_})")
            yield 0, X
            return
        rows = max(self._batch(batch_size), self.preprocessing.block_rows())
        yield from self.preprocessing.iter_blocks(X, rows)

    def transform(self, X: Any) -> np.ndarray:
        """Raw features -> the network's inputs (float32, standardised as in
        training).  Without a preprocessing record: X as float32."""
        if self.preprocessing is None:
            return next(self._blocks(X, None))[1]
        return self.preprocessing.transform(X)

    # ------------------------------------------------------------ outputs
    def predict_ids(self, X: Any, batch_size: int | None = None) -> np.ndarray:
        """Class ids (int64, shape (n_samples,)) of raw inputs: the argmax of
        the network's logits, as in the run's own evaluation."""
        self._classifier("predict_ids")
        out = []
        for _, block in self._blocks(X, batch_size):
            out.append(self.network.predict(block, batch_size=self._batch(batch_size)))
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def _ids_and_proba(self, X: Any, batch_size: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Class ids and probabilities in one pass over the input's blocks."""
        self._classifier("predict_proba")
        bs = self._batch(batch_size)
        ids, proba = [], []
        for _, block in self._blocks(X, batch_size):
            ids.append(self.network.predict(block, batch_size=bs))
            proba.append(self.network.predict_proba(block, batch_size=bs))
        if not ids:
            return (np.empty(0, dtype=np.int64),
                    np.empty((0, self.network.sizes[-1]), dtype=np.float32))
        return np.concatenate(ids), np.concatenate(proba)

    def predict(self, X: Any, batch_size: int | None = None) -> np.ndarray:
        """Predictions for raw inputs.

        Parameters
        ----------
        X : array-like (n_samples, n_features), pandas DataFrame or scipy.sparse
            Raw features, as in the training file (a DataFrame's columns are
            taken by name when the training file had a header).
        batch_size : int, optional
            Samples per inference block (default: the run's
            ``eval_batch_size``).

        Returns
        -------
        numpy.ndarray, shape (n_samples,)
            Classification: the user's labels (str, int, float or bool as in
            training; class ids for an old checkpoint).  Regression: the
            predicted values on the user's scale.
        """
        if self.task == "regression":
            outs = [self.network.predict(block, batch_size=self._batch(batch_size))
                    for _, block in self._blocks(X, batch_size)]
            out = np.concatenate(outs) if outs else np.empty(0)
            return self.preprocessing.targets(out)
        ids = self.predict_ids(X, batch_size)
        return ids if self.preprocessing is None else self.preprocessing.labels(ids)

    def predict_proba(self, X: Any, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities of raw inputs: float32, shape (n_samples,
        n_classes), columns in the order of ``classes_`` (sigmoid outputs
        for a sigmoid+MSE network)."""
        self._classifier("predict_proba")
        out = [self.network.predict_proba(block, batch_size=self._batch(batch_size))
               for _, block in self._blocks(X, batch_size)]
        return (np.concatenate(out) if out else
                np.empty((0, self.network.sizes[-1]), dtype=np.float32))

    def score(self, X: Any, y: Any, batch_size: int | None = None) -> float:
        """Accuracy of ``predict(X)`` against the labels ``y`` (the user's
        labels; labels the model does not know count as wrong).  Regression:
        the coefficient of determination R^2."""
        if self.task == "regression":
            y_true = np.asarray(y, dtype=np.float64)
            y_pred = self.predict(X, batch_size).reshape(y_true.shape)
            ss_res = float(((y_true - y_pred) ** 2).sum())
            ss_tot = float(((y_true - y_true.mean(axis=0)) ** 2).sum())
            return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
        ids = self.predict_ids(X, batch_size)
        y = np.asarray(y)
        if y.shape[0] != ids.shape[0]:
            raise ConfigError(f"score: {ids.shape[0]} samples but {y.shape[0]} labels")
        want = y.astype(np.int64) if self.preprocessing is None else \
            self.preprocessing.class_ids(y)
        return float(np.mean(ids == want)) if ids.size else float("nan")

    def _classifier(self, what: str) -> None:
        if self.task != "classification":
            raise ConfigError(f"{what} is for classifiers; this model does {self.task}")
