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

Modules: ``base`` (the :class:`Dataset` record, options, labels, splits,
standardisation, finding a paper dataset's files), ``cache`` (parsed
paper datasets saved next to their files), one module per source
(``madelon``, ``higgs``, ``fashionmnist``, ``cifar10``, ``leukemia``,
``synthetic``, ``digits``) and ``files`` (a user's npz / csv / tsv /
libsvm file).  This module is the public face: :func:`load_dataset`
dispatches a name to its source, a path to ``files``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sparse_mlp.download import REMOTE_FILES
from sparse_mlp.errors import ConfigError, DatasetError

from .base import (
    DATA_DIR_ENV,
    Dataset,
    _finalize,
    _make_options,
    default_data_dir,
    standardize_inplace,
)
from .cache import CACHE_VERSION
from .cifar10 import _load_cifar10
from .digits import DIGITS_TEST_FRACTION, _load_digits
from .fashionmnist import _load_fashionmnist, read_idx
from .files import _USER_FORMATS, DEFAULT_TEST_FRACTION, _load_user_file
from .higgs import HIGGS_N_TEST, HIGGS_N_TRAIN, HIGGS_TEST_ROWS, HIGGS_TEST_START, _load_higgs
from .leukemia import LEUKEMIA_CLASSES, LEUKEMIA_N_TEST, _load_leukemia
from .madelon import _load_madelon
from .synthetic import (
    SYNTHETIC_N_CLASSES,
    SYNTHETIC_N_FEATURES,
    SYNTHETIC_N_SAMPLES,
    SYNTHETIC_SKLEARN_MAX_ENTRIES,
    SYNTHETIC_TEST_FRACTION,
    _load_synthetic,
    make_classification_float32,
)

#: Dataset names accepted by ``--dataset`` besides file paths.
PAPER_DATASETS: tuple[str, ...] = (
    "leukemia", "higgs", "madelon", "fashionmnist", "cifar10", "synthetic", "digits",
)

_ALIASES = {
    "fashionmnist": "fashionmnist", "fmnist": "fashionmnist",
    "cifar10": "cifar10", "cifar": "cifar10",
    "gse13159": "leukemia", "leukemia": "leukemia",
    "higgs": "higgs", "madelon": "madelon", "synthetic": "synthetic", "digits": "digits",
}


_LOADERS = {
    "leukemia": _load_leukemia, "higgs": _load_higgs, "madelon": _load_madelon,
    "fashionmnist": _load_fashionmnist, "cifar10": _load_cifar10,
    "synthetic": _load_synthetic, "digits": _load_digits,
}


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def _canonical_name(spec: str) -> str | None:
    key = re.sub(r"[-_ ]", "", spec.strip().lower())
    return _ALIASES.get(key)


def canonical_name(spec: str) -> str:
    """The one name of a named dataset ('cifar-10', 'CIFAR', 'fmnist' ->
    'cifar10', 'fashionmnist'), so that presets, shapes, folders and the
    loader all agree; a file path (or an unknown name) comes back as given."""
    if _looks_like_path(spec):
        return spec
    return _canonical_name(spec) or spec


def _looks_like_path(spec: str) -> bool:
    return (os.sep in spec or (os.altsep is not None and os.altsep in spec)
            or spec.startswith(("~", ".")) or bool(os.path.splitext(spec)[1]))


def load_dataset(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                 n_train: int | None = None, n_test: int | None = None,
                 n_features: int | None = None, n_samples: int | None = None,
                 n_classes: int | None = None, label_column: str | int | None = None,
                 test_fraction: float | None = None, seed: int = 0, download: bool = True,
                 progress: bool | None = None, standardize: bool = True,
                 val_fraction: float | None = None, task: str = "classification") -> Dataset:
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
    val_fraction : float or None
        Hold out this fraction of the training set (after ``n_train``) as a
        stratified seeded validation set, ``Dataset.X_val`` / ``y_val``,
        before the standardisation statistics are taken (None: none).
    task : str
        ``"classification"`` (default) or ``"regression"``: a user file's
        numeric label column (npz: ``y`` of shape (n,) or (n, k)) as float
        targets, split by a plain seeded shuffle (no strata) and
        standardised with the training targets' mean/std
        (``Dataset.target_mean`` / ``target_std``).  The named datasets are
        classification data and refuse it.

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
    if val_fraction is not None:
        if not 0.0 < float(val_fraction) < 1.0:
            raise ConfigError(f"val_fraction (--val-fraction) must be strictly between 0 and 1, "
                              f"got {val_fraction}.")
        opts.val_fraction = float(val_fraction)
    if task not in ("classification", "regression"):
        raise ConfigError(f"task (--task) must be 'classification' or 'regression', got "
                          f"{task!r}.")
    opts.task = task
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"The dataset must be a name or a file path, got {spec!r}.")
    text = os.fspath(spec)
    name = _canonical_name(text) if isinstance(spec, str) else None
    if name is not None and not (_looks_like_path(text) and Path(text).exists()):
        if task == "regression":
            raise ConfigError(f"--task regression: {name!r} is a classification dataset (a "
                              f"paper preset or the digits demo); give a data file whose label "
                              f"column is the numeric target, or drop --task regression.")
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
    "canonical_name",
    "CACHE_VERSION", "DATA_DIR_ENV", "Dataset", "HIGGS_TEST_START", "PAPER_DATASETS",
    "REMOTE_FILES", "default_data_dir", "load_dataset", "make_classification_float32",
    "read_idx", "standardize_inplace",
    # importable from here as before the split into modules (not in the original __all__)
    "DEFAULT_TEST_FRACTION", "DIGITS_TEST_FRACTION", "HIGGS_N_TEST", "HIGGS_N_TRAIN",
    "HIGGS_TEST_ROWS", "LEUKEMIA_CLASSES", "LEUKEMIA_N_TEST", "SYNTHETIC_N_CLASSES",
    "SYNTHETIC_N_FEATURES", "SYNTHETIC_N_SAMPLES", "SYNTHETIC_SKLEARN_MAX_ENTRIES",
    "SYNTHETIC_TEST_FRACTION",
]
