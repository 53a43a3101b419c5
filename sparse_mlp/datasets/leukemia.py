"""Leukemia (NCBI GEO GSE13159, the MILE study): the series matrix
``GSE13159_series_matrix.txt.gz``, 2096 samples x 54675 probes, 18
classes; stratified seeded split 1397 / 699.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sparse_mlp.download import _Progress
from sparse_mlp.errors import DatasetError

from .base import (
    _encode,
    _locate,
    _open_gzip_error,
    _Options,
    _Raw,
    _reject,
    _split_then_limit,
)
from .cache import _cached

logger = logging.getLogger(__name__)

#: Paper size of the test set (docs/semantics.md, "Data splits").
LEUKEMIA_N_TEST = 699


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
