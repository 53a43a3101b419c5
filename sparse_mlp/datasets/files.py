"""A user's own data file: ``.npz``, ``.csv``, ``.tsv`` (optionally
gzipped) or libsvm/svmlight, given by path.

The format comes from the extension, else from the first bytes and lines.
An ``.npz`` may carry its own test set (``X_test``, ``y_test``); otherwise
a stratified seeded test set is held out (default 20%).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import operator
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sparse_mlp.errors import ConfigError, DatasetError, MemoryBudgetError

from .base import (
    _as_matrix,
    _canonical_labels,
    _encode,
    _labels_from_strings,
    _limit,
    _make_options,
    _open_gzip_error,
    _Options,
    _Raw,
    _regression_limit,
    _reject,
    _shuffle_split,
    _split_then_limit,
    _targets,
)

logger = logging.getLogger(__name__)

#: Default held-out fraction for data without a test set.
DEFAULT_TEST_FRACTION = 0.2

_USER_FORMATS = ".npz, .csv, .tsv (optionally .gz) or libsvm/svmlight (.svm, .libsvm, .svmlight)"
_DENSE_WARN_BYTES = 1 << 30


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
        raise _open_gzip_error(path, exc, user_file=True) from None
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


def _numbered_header(row: list[str]) -> bool:
    """A first row that reads 0,1,...,n-1 (or 1,...,n): column numbers, not data."""
    cells = [c.strip() for c in row]
    return any(cells == [str(i + start) for i in range(len(cells))] for start in (0, 1)) \
        and len(cells) > 2


def _refuse_duplicate_names(header: list[str], path: Path) -> None:
    """Two columns with one name make the label (or a feature, when predicting by
    name) ambiguous: a silent choice could turn the label into a feature."""
    seen: dict[str, int] = {}
    for j, name in enumerate(c.strip() for c in header):
        if name in seen and name:
            raise DatasetError(f"{path}: the header names two columns {name!r} (columns "
                               f"{seen[name]} and {j}, 0-based); rename one so that the label "
                               f"and every feature have a name of their own.")
        seen[name] = j


def _load_delimited(path: Path, delimiter: str | None, opts: _Options, select=None
                    ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Features and labels of a delimited text file.  ``select(header,
    columns)`` -> (label column or None, feature columns), when given,
    chooses the columns instead of ``opts.label_column`` (:func:`read_features`);
    without a label column the labels are None."""
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
        if not has_header and rest and _numbered_header(first):
            # what pandas writes for an unnamed frame (to_csv(index=False)): 0,1,...,n-1
            has_header = True
            logger.info("%s: the first row 0,1,...,%d names the columns (a header, as pandas "
                        "writes it), not a sample", path, len(first) - 1)
        trailing = all(not r[-1].strip() for r in [first, *rest]) and len(first) > 1
        if trailing:  # every line ends with the delimiter: an empty last column, not data
            logger.info("%s: every line ends with a delimiter; ignoring the empty last column",
                        path)
        header = first if has_header else None
        if header is not None:
            _refuse_duplicate_names(header[:-1] if trailing else header, path)
        n_cols = len(first)
        drop_index = header is not None and header[0].strip() in ("", "Unnamed: 0")
        columns = [j for j in range(n_cols) if not (drop_index and j == 0)
                   and not (trailing and j == n_cols - 1)]
        if len(columns) < (2 if select is None else 1):
            raise DatasetError(f"{path} has {len(columns)} data column(s); it needs at least one "
                               "feature column and one label column. Check the delimiter (.csv "
                               "is comma-separated, .tsv tab-separated).")
        if select is None:
            label_idx = _resolve_label_column(opts.label_column, header, columns, path)
            feature_cols = [j for j in columns if j != label_idx]
        else:  # read_features: a model's feature columns, and a label column if any
            label_idx, feature_cols = select(header, columns)
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
            if label_idx is not None:
                label = fields[label_idx].strip()
                if not label:
                    raise DatasetError(f"{path}, line {lineno}: the label is empty; every row "
                                       "needs a label (--label-column selects the label "
                                       "column).")
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
        raise _open_gzip_error(path, exc, user_file=True) from None
    if not blocks:
        raise DatasetError(f"{path} has a header but no data rows.")
    X = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    y = _labels_from_strings(labels, str(path)) if label_idx is not None else None
    info = {"format": "delimited text", "delimiter": delimiter or "whitespace",
            "header": has_header, "dropped_index_column": drop_index,
            "label_column": (header[label_idx].strip() if header is not None and
                             label_idx is not None else label_idx),
            "feature_names": names if len(names) <= 1000 else None,
            # every name, for the preprocessing record (left out of config.json)
            "_feature_names": names if header is not None else None}
    if drop_index:
        logger.info("%s: dropped the unnamed first column (a pandas index)", path)
    return X, y, info


def _load_libsvm(path: Path, dense: bool = True, n_features: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Features (dense float32, or with ``dense=False`` the CSR matrix) and
    labels of a libsvm/svmlight file; ``n_features``: the width to read."""
    from sklearn.datasets import load_svmlight_file

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            X_sparse, y = load_svmlight_file(str(path), dtype=np.float32,
                                             n_features=n_features)
    except (ValueError, UnicodeDecodeError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path} is not a valid libsvm/svmlight file ({exc}). Expected lines "
                           "like '<label> <index>:<value> <index>:<value> ...'.") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None
    if not dense:
        return X_sparse, y, {"format": "libsvm/svmlight", "nnz": int(X_sparse.nnz)}
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
    _load_npz_magic(path, "X_train=..., y_train=...")
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
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _npz_error(path, exc, "X_train=..., y_train=...") from None
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
    if opts.task == "regression":  # float targets, (n,) or (n, k): no class mapping
        return _regression_raw(X, y, X_test, y_test, info, opts, source)
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


def _regression_raw(X: np.ndarray, y, X_test, y_test, info: dict, opts: _Options,
                    source: str) -> _Raw:
    """``--task regression``: the file's numeric labels as float targets; the
    file's own test set, else a plain seeded shuffle split (not stratified)."""
    y = _targets(y, source)
    if X.shape[0] != y.shape[0]:
        raise DatasetError(f"{source}: {X.shape[0]} samples but {y.shape[0]} targets; every "
                           "sample needs one target.")
    if X_test is None:
        return _shuffle_split(X, y, info, opts, source, default_fraction=DEFAULT_TEST_FRACTION)
    if opts.test_fraction is not None:
        raise ConfigError(f"{source} already has a test set (X_test, y_test); drop "
                          "test_fraction (--test-fraction).")
    info["split"] = "the file's own X_test / y_test"
    return _regression_limit(_Raw(X, y, _as_matrix(X_test, "X_test", source),
                                  _targets(y_test, source), [], info), opts, source)


def _read_npz_features(path: Path) -> tuple[object, np.ndarray | None, dict]:
    """Features (and labels, if saved) of an .npz to predict: ``X`` (``y``),
    else ``X_test`` (``y_test``), else ``X_train`` (``y_train``); or a
    matrix written by ``scipy.sparse.save_npz`` (kept sparse)."""
    _load_npz_magic(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if {"format", "shape", "indptr", "indices", "data"} <= keys:
                import scipy.sparse as sp

                return sp.load_npz(path).tocsr(), None, {"format": "npz (scipy.sparse)"}
            for xk, yk in (("X", "y"), ("X_test", "y_test"), ("X_train", "y_train")):
                if xk in keys:
                    X = z[xk]
                    y = z[yk] if yk in keys else None
                    return X, y, {"format": "npz", "arrays": [k for k in (xk, yk) if k in keys]}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _npz_error(path, exc) from None
    raise DatasetError(f"{path} holds arrays {sorted(keys)!r}; expected the features as X "
                       "(and optionally the labels as y): numpy.savez(path, X=X).")


def _npz_error(path: Path, exc: Exception, arrays: str | None = None) -> DatasetError:
    """What went wrong reading an .npz archive, in the user's words."""
    if isinstance(exc, ValueError):
        if "pickle" in str(exc).lower():
            return DatasetError(f"{path} stores an array of Python objects, which is not loaded "
                                "(unsafe). Save numbers, or labels as fixed-width strings: "
                                "y.astype(str).")
        return DatasetError(f"{path} is not a valid .npz file ({exc}).")
    fix = f"; write it with numpy.savez(path, {arrays})" if arrays else ""
    return DatasetError(f"{path} is not a valid .npz archive ({exc}){fix}.")


def _load_npz_magic(path: Path, arrays: str = "X=...") -> None:
    """Refuse a file that is not a zip archive, saying how to write one."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None
    if magic != b"PK\x03\x04":
        raise DatasetError(f"{path} is not an .npz archive (a zip file written by numpy.savez); "
                           f"write it with numpy.savez(path, {arrays}).")


def read_features(path: str | os.PathLike, n_features: int, *,
                  feature_names: list[str] | None = None,
                  label_column: str | int | None = None,
                  train_label_column: str | int | None = None
                  ) -> tuple[object, np.ndarray | None, dict]:
    """Read a file of samples to predict: raw features and, where the file
    has them, labels.  No split, no subset, no standardisation.

    The formats of training files (:data:`_USER_FORMATS`), read by the same
    readers.  A .csv/.tsv with a header and a model that knows its feature
    names: the feature columns are taken by name, in the model's order (the
    file's order does not matter; other columns are ignored, with a log
    line); the label column is ``label_column`` if given, else the training
    file's (``train_label_column``) when the file has it.  Otherwise by
    position: ``n_features`` columns of features, or one more, which is then
    the label column (``label_column``, the training file's index, else the
    last).

    Parameters
    ----------
    path : path-like
    n_features : int
        The features the model takes.
    feature_names : list of str, optional
        The model's feature names, in order.
    label_column : str or int, optional
        --label-column: the column of the labels (csv/tsv only).
    train_label_column : str or int, optional
        The training file's label column (the model's preprocessing record).

    Returns
    -------
    X : numpy.ndarray (float32, n_samples x n_features) or scipy.sparse.csr_matrix
        Raw features (libsvm and sparse .npz stay sparse).
    y : numpy.ndarray or None
        The labels (int64, float64, bool or str), None when the file has none.
    info : dict
        format, source, label column (if any).

    Raises
    ------
    DatasetError
        A missing, malformed or unreadable file, missing feature columns, or
        a number of features other than ``n_features``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"The file to predict {path} does not exist (or is not a file); "
                           f"supported formats: {_USER_FORMATS}.")
    fmt, delimiter = _detect_format(path)
    if fmt != "delimited" and label_column is not None:
        raise ConfigError(f"--label-column: {path} is a {fmt} file; only .csv/.tsv files have a "
                          "label column to choose.")
    source = str(path)
    if fmt == "npz":
        X, y, info = _read_npz_features(path)
    elif fmt == "libsvm":
        X, y, info = _load_libsvm(path, dense=False, n_features=n_features)
    else:
        def select(header: list[str] | None, columns: list[int]
                   ) -> tuple[int | None, list[int]]:
            names = [h.strip() for h in header] if header is not None else None
            by_name = (names is not None and feature_names is not None
                       and len(set(feature_names)) == len(feature_names))
            label_idx = None
            if label_column is not None:
                label_idx = _resolve_label_column(label_column, header, columns, path)
            elif by_name and isinstance(train_label_column, str) and \
                    train_label_column in names:
                label_idx = names.index(train_label_column)
            if by_name:
                pos: dict[str, int] = {}
                for j in columns:
                    if j != label_idx:
                        pos.setdefault(names[j], j)
                missing = [n for n in feature_names if n not in pos]
                if missing:
                    raise DatasetError(
                        f"{path} lacks {len(missing)} of the {len(feature_names)} feature "
                        f"columns the model was trained on: {missing[:20]!r}"
                        f"{' ...' if len(missing) > 20 else ''} (its columns: "
                        f"{[names[j] for j in columns][:20]!r}). Give every one of them, by "
                        "name in the header; the order does not matter.")
                cols = [pos[n] for n in feature_names]
                extra = [names[j] for j in columns if j not in set(cols) and j != label_idx]
                if extra:
                    logger.info("%s: ignoring %d columns the model was not trained on: %s",
                                path, len(extra), extra[:10])
                return label_idx, cols
            rest = [j for j in columns if j != label_idx]
            if label_idx is None and len(rest) == n_features + 1:
                label_idx = columns[-1]
                if isinstance(train_label_column, int) and \
                        -len(columns) <= train_label_column < len(columns):
                    label_idx = columns[train_label_column]
                rest = [j for j in columns if j != label_idx]
            if len(rest) != n_features:
                raise DatasetError(
                    f"{path} has {len(rest)} feature columns"
                    f"{' besides the label column' if label_idx is not None else ''}, the "
                    f"model was trained on {n_features}. Give the same features in the same "
                    f"order (with a header naming them, if the training file had one)"
                    f"{'' if label_idx is not None else ', and at most one label column'}.")
            return label_idx, rest

        opts = _make_options(None, None, None, None, None, label_column, None, 0, False,
                             None, False)
        X, y, info = _load_delimited(path, delimiter, opts, select=select)
        info.pop("_feature_names", None)
    if y is not None:
        y = _canonical_labels(y, source)
    if not hasattr(X, "tocsr"):
        X = _as_matrix(X, "the features", source)
    if y is not None and X.shape[0] != y.shape[0]:
        raise DatasetError(f"{source}: {X.shape[0]} samples but {y.shape[0]} labels.")
    if X.shape[1] != n_features:
        raise DatasetError(f"{source} has {X.shape[1]} features, the model was trained on "
                           f"{n_features}. Give the same features in the same order.")
    info["source"] = source
    return X, y, info
