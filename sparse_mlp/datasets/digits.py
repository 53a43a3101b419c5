"""Digits: scikit-learn's bundled 8x8 handwritten digits
(``sklearn.datasets.load_digits``, 1797 samples, 10 classes), stratified
seeded split 75/25.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import _encode, _Options, _Raw, _reject, _split_then_limit

DIGITS_TEST_FRACTION = 0.25


def _load_digits(opts: _Options, data_dir: Any) -> _Raw:
    _reject(opts, "digits", "n_features", "n_samples", "n_classes", "label_column")
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    y_ids, _, classes = _encode(y, None, "digits")
    info = {"source": "sklearn.datasets.load_digits (UCI optical digits, 8x8, bundled)"}
    return _split_then_limit(X.astype(np.float32), y_ids, classes, info, opts, "digits",
                             default_fraction=DIGITS_TEST_FRACTION)
