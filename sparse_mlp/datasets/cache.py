"""The cache of parsed paper datasets.

Raw paper-dataset files are parsed once and the arrays saved next to them
as ``sparse_mlp-cache-<name>-<key>.npz`` (written atomically, keyed by the
parameters that change the parse, invalidated when a source file's size or
modification time changes; nothing is written into a read-only directory).
The cache stores a SHA-256 of its own arrays and is used only when they
still hash to it: a cache edited after it was written is parsed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import _jsonable, _Raw

logger = logging.getLogger(__name__)

#: Bump when the cache layout or any parser changes.
CACHE_VERSION = 2
ARRAYS = ("X_train", "y_train", "X_test", "y_test")


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of named arrays: names, dtypes, shapes and every byte."""
    h = hashlib.sha256()
    for key in ARRAYS:
        if arrays.get(key) is None:
            continue
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _source_stats(paths: Sequence[Path]) -> list[dict]:
    stats = []
    for p in paths:
        st = p.stat()
        stats.append({"file": p.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return stats


def _cache_path(directory: Path, name: str, params: dict) -> Path:
    key = json.dumps({"dataset": name, "params": params, "version": CACHE_VERSION},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return directory / f"sparse_mlp-cache-{name}-{digest}.npz"


def _read_cache(path: Path, name: str, params: dict, sources: list[dict]) -> _Raw | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            if (meta.get("version") != CACHE_VERSION or meta.get("dataset") != name
                    or meta.get("params") != params or meta.get("sources") != sources):
                logger.info("cache %s is stale (source files or parameters changed); "
                            "re-parsing", path)
                return None
            arrays = {k: z[k] for k in ARRAYS if k in z.files}
            classes = meta["classes"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        logger.warning("ignoring unreadable cache %s (%s); re-parsing", path, exc)
        return None
    if meta.get("sha256") != arrays_digest(arrays):
        logger.warning("cache %s does not match its own checksum (edited or damaged after it "
                       "was written); ignoring it and parsing the source files again", path)
        return None
    info = dict(meta.get("info", {}))
    info["cache"] = str(path)
    info["cache_hit"] = True
    logger.info("loaded %s from cache %s", name, path)
    return _Raw(arrays["X_train"], arrays["y_train"], arrays.get("X_test"), arrays.get("y_test"),
                classes, info)


def _writable_dir(directory: Path) -> bool:
    """True if ``directory`` may be written; a directory without any write
    permission bit counts as read-only even for root (shared data folders)."""
    try:
        mode = directory.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(directory, os.W_OK)


def _write_cache(path: Path, raw: _Raw, name: str, params: dict, sources: list[dict]) -> bool:
    arrays = {"X_train": raw.X_train, "y_train": raw.y_train}
    if raw.X_test is not None:
        arrays.update(X_test=raw.X_test, y_test=raw.y_test)
    meta = {"version": CACHE_VERSION, "dataset": name, "params": params, "sources": sources,
            "classes": raw.classes, "info": _jsonable(raw.info), "sha256": arrays_digest(arrays)}
    arrays["meta"] = np.array(json.dumps(meta))
    if not _writable_dir(path.parent):
        logger.info("not writing a cache into %s: the directory is read-only", path.parent)
        return False
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        logger.info("could not write the cache %s (%s); the next load will parse again",
                    path, exc)
        return False
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    logger.info("wrote cache %s", path)
    return True


def _cached(name: str, directory: Path, sources: list[Path], params: dict,
            parse: Any) -> _Raw:
    """Return the parse of ``sources``, from the cache when it is still valid."""
    stats = _source_stats(sources)
    path = _cache_path(directory, name, params)
    raw = _read_cache(path, name, params, stats)
    if raw is not None:
        return raw
    raw = parse()
    raw.info.setdefault("files", [str(p) for p in sources])
    written = _write_cache(path, raw, name, params, stats)
    raw.info["cache"] = str(path) if written else None
    raw.info["cache_hit"] = False
    return raw
