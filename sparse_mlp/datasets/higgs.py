"""HIGGS (UCI): ``HIGGS.csv.gz``, label then 28 features per row.

Train = rows ``0 .. n_train-1`` (default 105000), test = rows
``HIGGS_TEST_START .. HIGGS_TEST_START+n_test-1`` with ``HIGGS_TEST_START =
10_500_000`` (the official test part is the last 500000 rows; default
``n_test`` 50000).  Rows count from 0, header free, in file order.  The
gzip is streamed: only kept rows are parsed.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sparse_mlp.download import _Progress
from sparse_mlp.errors import ConfigError, DatasetError

from .base import _encode, _locate, _open_gzip_error, _Options, _Raw, _reject
from .cache import _cached

logger = logging.getLogger(__name__)

#: First row (0-based) of HIGGS's official test part: the last 500000 of 11M rows.
HIGGS_TEST_START = 10_500_000
#: Number of rows in HIGGS's official test part.
HIGGS_TEST_ROWS = 500_000
#: Paper sizes (docs/semantics.md, "Data splits").
HIGGS_N_TRAIN = 105_000
HIGGS_N_TEST = 50_000


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
