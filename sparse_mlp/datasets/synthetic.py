"""Synthetic: scikit-learn's ``make_classification`` (Table 4 shape by
default: 10000 samples x 65536 features, 2 classes, 70/30), generated
here; big shapes use :func:`make_classification_float32`, its chunked
float32 twin.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sparse_mlp.errors import ConfigError, MemoryBudgetError

from .base import _encode, _n_from_fraction, _Options, _Raw, _reject

logger = logging.getLogger(__name__)

#: Table 4 shape of the synthetic dataset.
SYNTHETIC_N_SAMPLES = 10_000
SYNTHETIC_N_FEATURES = 65_536
SYNTHETIC_N_CLASSES = 2
SYNTHETIC_TEST_FRACTION = 0.3
#: Above this many matrix entries the chunked float32 generator replaces sklearn's.
SYNTHETIC_SKLEARN_MAX_ENTRIES = 1 << 24


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
