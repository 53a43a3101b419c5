"""Fashion-MNIST (Zalando): the four IDX gzip files, official split 60000 /
10000; also :func:`read_idx`, the IDX reader.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sparse_mlp.errors import DatasetError

from .base import _encode, _limit, _locate, _open_gzip_error, _Options, _Raw, _reject
from .cache import _cached

logger = logging.getLogger(__name__)


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
