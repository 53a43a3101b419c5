"""CIFAR-10 (Toronto): ``cifar-10-python.tar.gz``, official split 50000 /
10000, read from the tarball without extracting it (the batches are
pickles, rebuilt by an unpickler that only allows NumPy arrays).
"""

from __future__ import annotations

import gzip
import logging
import pickle
import tarfile
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sparse_mlp.errors import DatasetError

from .base import _encode, _limit, _locate, _Options, _Raw, _reject
from .cache import _cached

logger = logging.getLogger(__name__)


_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"{_CIFAR_DIR}/data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = f"{_CIFAR_DIR}/test_batch"
_CIFAR_META = f"{_CIFAR_DIR}/batches.meta"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and NumPy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_batch(obj: Any, member: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    bad = DatasetError(f"{path}: member {member} is not a CIFAR-10 batch (a dict with b'data', a "
                       "uint8 array N x 3072, and b'labels', N ints 0..9). Use the official "
                       "cifar-10-python.tar.gz.")
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        raise bad
    data, labels = obj[b"data"], obj[b"labels"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.dtype != np.uint8:
        raise bad
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise bad from None
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise bad
    return data, labels


def _parse_cifar10(path: Path) -> _Raw:
    wanted = set(_CIFAR_TRAIN) | {_CIFAR_TEST, _CIFAR_META}
    found: dict[str, Any] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                if not member.isfile():
                    raise DatasetError(f"{path}: {member.name} is not a regular file; use the "
                                       "official cifar-10-python.tar.gz.")
                stream = tar.extractfile(member)
                try:
                    found[member.name] = _NumpyOnlyUnpickler(stream, encoding="bytes").load()
                except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                    raise DatasetError(f"{path}: member {member.name} is truncated or damaged "
                                       f"({exc}). Delete the file and download it "
                                       "again.") from None
                except (pickle.UnpicklingError, ValueError, TypeError,
                        AttributeError, ImportError, IndexError) as exc:
                    raise DatasetError(f"{path}: member {member.name} is not a valid CIFAR-10 "
                                       f"pickle ({exc}). Use the official "
                                       "cifar-10-python.tar.gz.") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path} is truncated or not a tar.gz archive ({exc}). Delete it and "
                           "download it again.") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from None
    missing = [m for m in (*_CIFAR_TRAIN, _CIFAR_TEST) if m not in found]
    if missing:
        raise DatasetError(f"{path} lacks {', '.join(missing)}; it is not the official "
                           "cifar-10-python.tar.gz (python version). Download that file.")
    train = [_cifar_batch(found[m], m, path) for m in _CIFAR_TRAIN]
    Xte, yte = _cifar_batch(found[_CIFAR_TEST], _CIFAR_TEST, path)
    widths = {d.shape[1] for d, _ in train} | {Xte.shape[1]}
    if len(widths) != 1:
        raise DatasetError(f"{path}: batches have different widths {sorted(widths)}; use the "
                           "official cifar-10-python.tar.gz.")
    if widths != {3072}:
        logger.warning("cifar10: %d values per image, the official files have 3072", *widths)
    Xtr = np.concatenate([d for d, _ in train]).astype(np.float32)
    ytr = np.concatenate([lab for _, lab in train])
    y_train, y_test, classes = _encode(ytr, yte, "cifar10")
    info: dict[str, Any] = {"source": "Toronto CIFAR-10 (python version)",
                            "split": "official: data_batch_1..5 / test_batch",
                            "layout": "each row: 1024 red, 1024 green, 1024 blue values, "
                                      "row-major 32x32"}
    meta = found.get(_CIFAR_META)
    if isinstance(meta, dict) and isinstance(meta.get(b"label_names"), list):
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)
                 for n in meta[b"label_names"]]
        info["class_names"] = {str(i): n for i, n in enumerate(names)}
    return _Raw(Xtr, y_train, Xte.astype(np.float32), y_test, classes, info)


def _load_cifar10(opts: _Options, data_dir: Any) -> _Raw:
    _reject(opts, "cifar10", "n_features", "n_samples", "n_classes", "label_column",
            "test_fraction", why="its train/test split is fixed by the official files")
    paths = _locate("cifar10", data_dir, opts)
    path = paths["cifar-10-python.tar.gz"]
    raw = _cached("cifar10", path.parent, [path], {}, lambda: _parse_cifar10(path))
    return _limit(raw, opts, "cifar10")
