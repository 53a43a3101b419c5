"""HDF5 checkpoints: save, load and resume a run exactly.

A checkpoint is a plain record of everything needed to continue a run bit
for bit: the fully resolved configuration, the model (a SparseMLP's CSR
arrays or a DenseMLP's weight matrices, with momentum, biases, SReLU
parameters), the loop's state (epoch, step, position inside the epoch,
history, best accuracy) and every random stream's state.  N epochs
straight and N/2 epochs + resume + N/2 epochs give identical weights,
topology and metrics.

File layout (schema version :data:`SCHEMA_VERSION`; "u8 JSON" is a uint8
dataset holding UTF-8 JSON text; every dataset is chunked with a fletcher32
checksum; strings in attributes are fixed-length ASCII)::

    /                    attrs format="sparse_mlp.checkpoint", schema_version,
                         sparse_mlp_version, created (UTC, ISO 8601)
    /config              u8 JSON: the TrainConfig (absent in a model-only file)
    /model               attrs kind ("sparse": SparseMLP, "dense": dense.DenseMLP;
                         absent in files written before dense models were
                         stored here: sparse), sizes (int64), epsilon (sparse
                         only), activation, alpha (NaN: none), weight_init,
                         output, dropout
    /model/layers/<l>    l = 0 (input -> first hidden) ... L-1; attrs n_in, n_out,
                         nnz, init; sparse: datasets indptr int64 (n_out+1),
                         indices int32 (nnz; input neuron of each weight, sorted
                         per output neuron), data float32 (nnz), velocity float32
                         (nnz); dense: W float32 (n_out, n_in) (row j: the
                         weights into output neuron j), velocity float32 (n_out,
                         n_in); both: bias float32 (n_out), bias_velocity float32
                         (n_out)
    /model/activations/<h>  h = 0 ... L-2; attrs name, kind, slope; SReLU only:
                         params float32 (n, 4) = (t_left, a_left, t_right,
                         a_right) per neuron, velocity float32 (n, 4)
    /state               attrs epoch (next epoch, 0-based), step, batch (batches of
                         ``epoch`` already done: non-zero mid-epoch), epoch_loss_sum,
                         epoch_correct, epoch_train_s, best_test_acc, best_epoch
    /streams             u8 JSON: {seed, dropout_seed, init, evolution, shuffle}, each
                         stream a numpy ``bit_generator.state`` dict (PCG64)
    /history             one dataset per metrics column (int64 or float64, one
                         entry per finished epoch; NaN: not evaluated), the
                         column order in the u8 JSON dataset ``columns``
    /extra               free-form: dict -> group, ndarray -> dataset, any other
                         value -> u8 JSON dataset with attr json=1
    /preprocessing       what the model needs to take raw inputs (absent in files
                         written before it was stored, and in files saved without
                         one): u8 JSON ``meta`` {task, n_features, standardized,
                         feature_names (list or null), classes (the label of each
                         class id), label_column}; when standardized: mean float64,
                         std float64 (n_features; population std of the training
                         split), constant uint8 (n_features; zero-variance
                         features, set to 0); regression: target_mean, target_std
                         float64 (n_targets)

Reading one with plain h5py::

    with h5py.File(path, "r") as f:
        cfg = json.loads(f["config"][()].tobytes())
        W0 = scipy.sparse.csc_matrix((f["model/layers/0/data"][()],
                                      f["model/layers/0/indices"][()],
                                      f["model/layers/0/indptr"][()]),
                                     shape=(n_in, n_out))

Crash safety: a checkpoint is written to a hidden temporary file in the
target folder, flushed, fsynced, then renamed over the target (atomic on
POSIX), and the folder is fsynced.  A process killed at any moment leaves
either the previous file or the new one, never a mix.  A model holding NaN
or inf is never written (:class:`~sparse_mlp.errors.DivergenceError`), so a
diverged run cannot replace a good checkpoint.

Write failures (disk full, quota, permission, I/O error): HDF5 cannot
recover from a write that fails under it -- its metadata cache is left half
flushed, later calls raise from destructors, and the process can crash.  So
HDF5 never writes to disk itself here: files are written through h5py's
Python-file driver into :class:`_GuardedFile`, which keeps a failed write
(and every later one) in memory, lets HDF5 finish and close cleanly, and
then raises the error.  :func:`save_checkpoint` first compares the free
space with the checkpoint's size, and turns any failure into one
:class:`~sparse_mlp.errors.CheckpointError`; the temporary file is removed
and the checkpoints already there are untouched (:class:`CheckpointDir`
deletes old ones only after a successful save).  Appending to an existing
file (the topology log) writes the new bytes past its old end first and
applies HDF5's updates inside the old part only once those are on disk: a
failed append is cut off again and leaves the file as it was.

Integrity: besides fletcher32 on every dataset, files are written with
HDF5 1.10 format bounds (``libver=("v110", "v110")``: readable by HDF5 >=
1.10), whose superblock and object headers (where the attributes live)
carry checksums of their own; JSON is never stored as variable-length
strings, which live in HDF5's unchecked global heap.  Loading reads and so
verifies everything, then checks the structure (shapes, sorted indices,
finite values): a truncated, bit-flipped, foreign or other-version file
raises :class:`~sparse_mlp.errors.CheckpointError` naming the file and the
problem, never returns silently wrong weights.

File locking: HDF5 locks files it opens (``flock``).  Some network
filesystems (NFS without lockd, some Lustre or GPFS mounts) refuse locks,
and HDF5 then fails with "unable to lock file" (errno 37).  A file that
another process has open for writing fails with errno 11: that raises
:class:`~sparse_mlp.errors.CheckpointBusyError`, and :func:`latest_checkpoint`
never takes such a file for damaged (it raises too, instead of quietly
resuming from an older checkpoint).  So does a file whose superblock still
carries HDF5's "open for write" mark, left by a process killed while it
had the file open (``h5clear -s`` removes the mark).  Damaged checkpoints
are renamed ``*.corrupt`` and listed by :func:`quarantined_checkpoints`, so
that ``--resume auto`` can refuse every time instead of starting afresh.
Files here are opened with
h5py's ``locking="best-effort"`` (lock where the filesystem supports it);
a filesystem that still refuses is retried once without locking, with a
warning.  ``SPARSE_MLP_HDF5_LOCKING=true|false|best-effort`` chooses the
mode; HDF5's own ``HDF5_USE_FILE_LOCKING=FALSE`` switches locking off for
every HDF5 program and takes precedence.  Checkpoints never need the lock
for safety: each one is written once, under a unique temporary name, by
one process, and only renamed when complete.  A file appended in place
(the topology log) is locked by :class:`_GuardedFile` itself, with the
``flock`` HDF5 uses, so readers see it busy while it changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import logging
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__
from .activations import Activation
from .config import TrainConfig
from .dense import DenseLayer, DenseMLP
from .epoch import nonfinite_parts
from .errors import CheckpointBusyError, CheckpointError, ConfigError, DivergenceError
from .layers import SparseLayer
from .model import SparseMLP
from .preprocessing import MissingPreprocessingWarning, Preprocessing
from .trained import TrainedModel
from .training import RandomStreams, TrainState

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT = "sparse_mlp.checkpoint"
LIBVER = ("v110", "v110")
CHECKPOINT_DIR = "checkpoints"  # inside a run's output folder
PREPROCESSING_ARRAYS = {"mean": np.float64, "std": np.float64, "constant": np.uint8,
                        "target_mean": np.float64, "target_std": np.float64}
# --val-fraction: the model of the best epoch chosen on the validation set, in
# CHECKPOINT_DIR; never deleted by the keep-newest rule (not a ckpt_* name)
BEST_CHECKPOINT = "best.h5"
LOCKING_ENV = "SPARSE_MLP_HDF5_LOCKING"
LAYER_ARRAYS = {"indptr": np.int64, "indices": np.int32, "data": np.float32,
                "velocity": np.float32, "bias": np.float32, "bias_velocity": np.float32}
DENSE_LAYER_ARRAYS = {"W": np.float32, "velocity": np.float32, "bias": np.float32,
                      "bias_velocity": np.float32}
CHUNK_BYTES = 4 << 20  # larger datasets are stored in chunks of this size (few, large writes)
_NAME = re.compile(r"^ckpt_e(\d+)_s(\d+)\.h5$")
_TMP = re.compile(r"^\.(.+)\.tmp-(.+)-(\d+)$")
_unlocked_fallback = False  # set once a filesystem has refused HDF5 locks


# ---------------------------------------------------------------------- HDF5 access
def _locking_mode() -> bool | str:
    mode = os.environ.get(LOCKING_ENV, "best-effort").strip().lower()
    if mode in ("false", "0", "no", "off"):
        return False
    if mode in ("true", "1", "yes", "on"):
        return True
    if mode != "best-effort":
        raise ConfigError(f"{LOCKING_ENV} must be true, false or best-effort, got {mode!r}")
    return False if _unlocked_fallback else "best-effort"


def open_h5(path: str | Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file with this package's locking policy (module docs).

    Parameters
    ----------
    path : str or Path
    mode : str
        h5py mode: "r", "w", "a"...

    Raises
    ------
    CheckpointBusyError
        When another process has the file open (holds its lock).
    OSError
        Any other failure to open (the caller words it).
    """
    global _unlocked_fallback
    locking = _locking_mode()
    try:
        return h5py.File(path, mode, locking=locking, libver=LIBVER)
    except ValueError as exc:  # an HDF5 older than 1.10.7 / 1.12.1: no locking options
        if "lock" not in str(exc).lower():
            raise
        return h5py.File(path, mode, libver=LIBVER)
    except OSError as exc:
        msg = str(exc).lower()
        if "already open for write" in msg:  # the superblock's mark of a writer
            raise CheckpointBusyError(
                f"{path} is marked as open for writing by another process, or by one that "
                f"was killed while it had the file open; it is not damaged. If no process "
                f"uses it, clear the mark with `h5clear -s {path}` (HDF5's tools).") from exc
        # (HDF5 says "unable to lock file"; a truncated file's message names the
        # "sblock" (superblock), which a bare "lock" would match)
        if "unable to lock" not in msg or locking is False:
            raise
        if "errno = 11" in msg or "temporarily unavailable" in msg:
            raise _busy(path) from exc
        log.warning("the filesystem of %s refuses HDF5 file locks (%s); continuing without "
                    "locking. Set HDF5_USE_FILE_LOCKING=FALSE (or %s=false) to skip this "
                    "attempt.", path, exc, LOCKING_ENV)
        _unlocked_fallback = True
        return h5py.File(path, mode, locking=False, libver=LIBVER)


def _busy(path: str | Path) -> CheckpointBusyError:
    return CheckpointBusyError(
        f"{path} is locked by another process that has it open (HDF5 file lock): it is "
        f"being written or read elsewhere, not damaged. Wait for that program or close it, "
        f"or set HDF5_USE_FILE_LOCKING=FALSE to read it anyway.")


class _GuardedFile(io.RawIOBase):
    """The bytes under an HDF5 file that h5py writes through its Python-file
    driver, kept so that HDF5 never sees a failed write (module docs).

    A failed write is remembered; it and every later write are held in
    memory (HDF5 reads back what it wrote) and :meth:`finish`, called after
    HDF5 closed the file, raises the error.  ``in_place=False``: a new file,
    written straight through.  ``in_place=True``: an existing file; writes
    past its old end go straight to disk, writes inside it are held until
    :meth:`finish` has made the appended bytes durable; a failure before
    that cuts the file back to its old length.

    Parameters
    ----------
    path : Path
    in_place : bool
    lock : bool
        Take HDF5's exclusive ``flock`` on the file (with the package's
        locking policy); raises CheckpointBusyError when another process
        holds it.
    """

    def __init__(self, path: Path, in_place: bool, lock: bool = False) -> None:
        super().__init__()
        self.path, self.in_place = Path(path), in_place
        flags = os.O_RDWR | (0 if in_place else os.O_CREAT | os.O_TRUNC)
        self.fd = os.open(self.path, flags, 0o644)
        try:
            if lock:
                self._lock()
            self.base = os.fstat(self.fd).st_size if in_place else 0
        except BaseException:
            os.close(self.fd)
            raise
        self.size = self.base   # the length HDF5 sees
        self.pos = 0
        self.held: list[tuple[int, bytes]] = []  # (offset, bytes) not on disk yet, in order
        self.error: OSError | None = None

    def _lock(self) -> None:
        if fcntl is None or _locking_mode() is False or \
                os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(self.path) from None
        except OSError:  # a filesystem without locks: best effort, as HDF5
            pass

    # the io interface h5py's driver uses
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = start + int(offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def truncate(self, size: int | None = None) -> int:
        self.size = self.pos if size is None else int(size)  # applied in finish()
        return self.size

    def flush(self) -> None:
        pass

    def readinto(self, b) -> int:
        out = memoryview(b).cast("B")
        pos = self.pos
        n = min(len(out), max(0, self.size - pos))
        got = os.preadv(self.fd, [out[:n]], pos) if n else 0
        if got < n:
            out[got:n] = bytes(n - got)
        for off, data in self.held:  # what HDF5 wrote that is not on disk (yet)
            lo, hi = max(off, pos), min(off + len(data), pos + n)
            if lo < hi:
                out[lo - pos:hi - pos] = data[lo - off:hi - off]
        self.pos = pos + n
        return n

    def write(self, b) -> int:
        data = memoryview(b).cast("B")
        pos, n = self.pos, len(data)
        inside = min(n, max(0, self.base - pos))  # bytes inside the old file: held
        if inside:
            self.held.append((pos, bytes(data[:inside])))
        if inside < n:
            self._to_disk(pos + inside, data[inside:])
        self.pos = pos + n
        self.size = max(self.size, self.pos)
        return n

    def _to_disk(self, pos: int, data: memoryview) -> None:
        if self.error is None:
            try:
                _pwrite_all(self.fd, data, pos)
                return
            except OSError as exc:
                self.error = exc
        self.held.append((pos, bytes(data)))

    # after HDF5 closed the file
    def finish(self) -> None:
        """Make the file durable, or raise the first failed write (OSError)."""
        applying = False
        try:
            if self.error is None:
                os.fsync(self.fd)  # the appended bytes, before anything in the old part
                applying = True
                for off, data in self.held:
                    _pwrite_all(self.fd, memoryview(data), off)
                self.held = []
                if os.fstat(self.fd).st_size != self.size:
                    os.ftruncate(self.fd, self.size)
                os.fsync(self.fd)
        except OSError as exc:
            self.error = exc
        if self.error is not None:
            if not applying:
                self.abort()
            raise self.error

    def abort(self) -> None:
        """Forget what HDF5 wrote: an existing file is cut back to its old length."""
        self.held = []
        if self.in_place:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.base)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def _pwrite_all(fd: int, data: memoryview, pos: int) -> None:
    while len(data):
        k = os.pwrite(fd, data, pos)
        if k <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        data, pos = data[k:], pos + k


@contextlib.contextmanager
def guarded_h5(path: str | Path, mode: str = "w"):
    """Open an HDF5 file for writing so that a failing disk cannot break HDF5
    (:class:`_GuardedFile`, module docs).

    Parameters
    ----------
    path : str or Path
    mode : "w" or "a"
        "w": create or replace the file (not locked: for a new, unique
        temporary file); "a": change an existing file in place, under an
        exclusive lock (created first when missing).

    Yields
    ------
    h5py.File

    Raises
    ------
    CheckpointBusyError
        ("a") another process has the file open.
    OSError
        A write failed (disk full, quota, I/O error): a new file is left
        incomplete (the caller removes it), an existing one as it was.
    """
    if mode not in ("w", "a"):
        raise ConfigError(f"guarded_h5 writes with mode 'w' or 'a', got {mode!r}")
    path = Path(path)
    in_place = mode == "a" and path.exists() and path.stat().st_size > 0
    raw = _GuardedFile(path, in_place=in_place, lock=mode == "a")
    try:
        with h5py.File(raw, "r+" if in_place else "w", libver=LIBVER) as f:
            yield f
        raw.finish()
    except BaseException:
        raw.abort()
        if mode == "a" and not in_place:  # a log this call started: nothing of it is kept
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    finally:
        raw.close()


def _put_str(obj, name: str, value: str) -> None:
    obj.attrs[name] = np.bytes_(value.encode("utf-8"))


def _get_str(obj, name: str) -> str:
    v = obj.attrs[name]
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store a {type(o).__name__} in a checkpoint")


def _put_json(group, name: str, obj: Any):
    raw = json.dumps(obj, default=_json_default).encode("utf-8")
    return group.create_dataset(name, data=np.frombuffer(raw, dtype=np.uint8),
                                fletcher32=True)


def _get_json(ds) -> Any:
    return json.loads(ds[()].tobytes().decode("utf-8"))


def _put_array(group, name: str, arr: np.ndarray, dtype=None):
    arr = np.ascontiguousarray(arr, dtype=dtype)
    chunks = None  # h5py's guess for small arrays; large ones in few, large writes,
    if arr.nbytes > CHUNK_BYTES and arr.ndim:  # of equal rows (HDF5 stores edge chunks whole)
        n_chunks = -(-arr.nbytes // CHUNK_BYTES)
        chunks = (-(-arr.shape[0] // n_chunks), *arr.shape[1:])
    return group.create_dataset(name, data=arr, fletcher32=True, chunks=chunks)


# ---------------------------------------------------------------------- writing
def _model_kind(model: SparseMLP | DenseMLP) -> str:
    return "dense" if isinstance(model, DenseMLP) else "sparse"


def _write_model(g, model: SparseMLP | DenseMLP) -> None:
    kind = _model_kind(model)
    _put_str(g, "kind", kind)
    g.attrs["sizes"] = np.asarray(model.sizes, dtype=np.int64)
    if kind == "sparse":
        g.attrs["epsilon"] = float(model.epsilon)
    _put_str(g, "activation", model.activation)
    g.attrs["alpha"] = float("nan") if model.alpha is None else float(model.alpha)
    _put_str(g, "weight_init", model.init)
    _put_str(g, "output", model.output)
    g.attrs["dropout"] = float(model.dropout)
    for li, layer in enumerate(model.layers):
        lg = g.create_group(f"layers/{li}")
        lg.attrs["n_in"], lg.attrs["n_out"], lg.attrs["nnz"] = layer.n_in, layer.n_out, layer.nnz
        _put_str(lg, "init", layer.init)
        if kind == "dense":
            for name, dtype in DENSE_LAYER_ARRAYS.items():
                a = getattr(layer, name)
                _put_array(lg, name, a.reshape(layer.W.shape) if name == "velocity" else a,
                           dtype)
            continue
        for name, dtype in LAYER_ARRAYS.items():
            _put_array(lg, name, getattr(layer, name), dtype)
    for h, act in enumerate(model.acts):
        ag = g.create_group(f"activations/{h}")
        _put_str(ag, "name", act.name)
        ag.attrs["kind"], ag.attrs["slope"] = int(act.kind), float(act.slope)
        if act.params is not None:
            _put_array(ag, "params", act.params, np.float32)
            _put_array(ag, "velocity", act.velocity, np.float32)


def _write_state(f, state: TrainState) -> None:
    sg = f.create_group("state")
    for fld in dataclasses.fields(TrainState):
        if fld.name != "history":
            sg.attrs[fld.name] = getattr(state, fld.name)
    hg = f.create_group("history")
    columns = list(dict.fromkeys(k for row in state.history for k in row))
    _put_json(hg, "columns", columns)
    for col in columns:
        vals = [row.get(col) for row in state.history]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
            _put_array(hg, col, np.asarray(vals, dtype=np.int64))
        elif all(v is None or isinstance(v, (int, float, np.number)) for v in vals):
            _put_array(hg, col, np.asarray([np.nan if v is None else v for v in vals],
                                           dtype=np.float64))
        else:
            _put_json(hg, col, vals).attrs["json"] = 1


def _write_extra(g, extra: dict) -> None:
    for key, value in extra.items():
        if not isinstance(key, str) or not key or "/" in key or key == ".":
            raise ConfigError(f"checkpoint extra keys must be non-empty strings without '/', "
                              f"got {key!r}")
        if isinstance(value, dict):
            _write_extra(g.create_group(key), value)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            ds = _put_array(g, key, value.reshape(-1) if value.ndim == 0 else value)
            if value.ndim == 0:
                ds.attrs["scalar"] = 1
        else:
            _put_json(g, key, value).attrs["json"] = 1


def _write_preprocessing(g, pre: Preprocessing) -> None:
    meta, arrays = pre.to_record()
    _put_json(g, "meta", meta)
    for name, arr in arrays.items():
        _put_array(g, name, arr, PREPROCESSING_ARRAYS[name])


def _streams_dict(streams: RandomStreams | dict | None) -> dict | None:
    if streams is None or isinstance(streams, dict):
        return streams
    return {**streams.state(), "seed": streams.seed, "dropout_seed": streams.dropout_seed}


def _model_bytes(model: SparseMLP | DenseMLP) -> int:
    names = DENSE_LAYER_ARRAYS if isinstance(model, DenseMLP) else LAYER_ARRAYS
    n = sum(int(getattr(lay, k).nbytes) for lay in model.layers for k in names)
    return n + sum(int(a.nbytes) for act in model.acts for a in (act.params, act.velocity)
                   if a is not None)


def _check_space(folder: Path, need: int) -> None:
    """Refuse before writing when the filesystem has clearly too little room."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs: the write itself will tell
        return
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise OSError(errno.ENOSPC, f"No space left on device: the checkpoint needs about "
                                    f"{need / 2**20:.1f} MiB, {folder} has "
                                    f"{free / 2**20:.1f} MiB free")


def _write_failure(path: Path, exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    low = text.lower()
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "no space" in low or "quota" in low \
            or "errno = 28" in low or "errno = 122" in low:
        fix = "Free some disk space (or quota) or choose another --out"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) or "permission" in low \
            or "read-only" in low:
        fix = "Make the folder writable or choose another --out"
    else:
        fix = "Check the disk and the folder, or choose another --out"
    return (f"could not write checkpoint {path}: {text}. {fix}; the checkpoints already "
            f"there are untouched.")


def save_checkpoint(path: str | Path, *, cfg: TrainConfig | None,
                    model: SparseMLP | DenseMLP,
                    state: TrainState | None, streams: RandomStreams | dict | None,
                    extra: dict | None = None,
                    preprocessing: Preprocessing | None = None) -> Path:
    """Write a checkpoint atomically (module docs: layout, crash safety).

    Parameters
    ----------
    path : str or Path
        The file to create or replace.  Its folder is created if needed.
    cfg : TrainConfig or None
        The run's configuration (None: a model-only file, which loads and
        predicts but cannot resume training).
    model : SparseMLP or DenseMLP
    state : TrainState or None
    streams : RandomStreams, dict or None
        The random streams, or their state as :meth:`Trainer.streams_state`
        returns it (mid-epoch: the shuffle stream before the permutation).
    extra : dict, optional
        Anything else to store (nested dicts, numeric arrays, JSON values);
        :func:`load_checkpoint` returns it as ``Checkpoint.extra``.
    preprocessing : Preprocessing, optional
        What the model needs to take raw inputs (the data's
        ``Dataset.preprocessing``); without it the file's model takes
        standardised inputs and predicts class ids.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DivergenceError
        The model holds NaN or inf (nothing is written).
    CheckpointError
        The file could not be written (disk full, quota, no permission, an
        HDF5 error...): one message naming the file, the cause and the fix.
        The temporary file is removed; the previous file at ``path``, if
        any, is untouched.
    """
    path = Path(path)
    bad = nonfinite_parts(model)
    if bad:
        raise DivergenceError(f"not saving checkpoint {path}: NaN or inf in {', '.join(bad)}")
    folder = path.parent
    tmp = folder / f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _check_space(folder, _model_bytes(model) + (64 << 10))
        with guarded_h5(tmp, "w") as f:
            f.attrs["format"] = np.bytes_(FORMAT.encode())
            f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            _put_str(f, "sparse_mlp_version", __version__)
            _put_str(f, "created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if cfg is not None:
                _put_json(f, "config", cfg.to_dict())
            _write_model(f.create_group("model"), model)
            if state is not None:
                _write_state(f, state)
            streams_state = _streams_dict(streams)
            if streams_state is not None:
                _put_json(f, "streams", streams_state)
            _write_extra(f.create_group("extra"), extra or {})
            if preprocessing is not None:
                _write_preprocessing(f.create_group("preprocessing"), preprocessing)
        os.replace(tmp, path)  # guarded_h5 fsynced the file
        _fsync(folder, directory=True)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if not isinstance(exc, Exception) or isinstance(exc, (ConfigError, TypeError)):
            raise  # an interrupt, or what the caller asked to store cannot be stored
        raise CheckpointError(_write_failure(path, exc)) from exc
    return path


def _fsync(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open folders; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- reading
@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes
    ----------
    path : Path
    cfg : TrainConfig or None
        None for a model-only file.
    model : SparseMLP or DenseMLP
        Ready to predict or to continue training (``kind`` says which).
    state : TrainState or None
    streams_state : dict or None
        Every random stream's state (see :meth:`streams`).
    extra : dict
    schema_version : int
    sparse_mlp_version : str
        The version that wrote the file.
    created : str
        UTC time of writing, ISO 8601.
    preprocessing : Preprocessing or None
        The standardisation, feature names and classes of the training
        data; None in files written before checkpoints carried them.
    """

    path: Path
    cfg: TrainConfig | None
    model: SparseMLP | DenseMLP
    state: TrainState | None
    streams_state: dict | None
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    sparse_mlp_version: str = ""
    created: str = ""
    preprocessing: Preprocessing | None = None

    def streams(self) -> RandomStreams:
        """The run's random streams, restored to their saved state."""
        if self.streams_state is None:
            raise CheckpointError(f"{self.path} holds no random-stream state (a model-only "
                                  f"file): it can predict but not resume training")
        seed = self.streams_state.get("seed", self.cfg.seed if self.cfg else 0)
        streams = RandomStreams(seed)
        streams.set_state(self.streams_state)
        streams.dropout_seed = int(self.streams_state.get("dropout_seed", seed))
        return streams

    @property
    def kind(self) -> str:
        """"sparse" (SparseMLP) or "dense" (DenseMLP)."""
        return _model_kind(self.model)

    @property
    def resumable(self) -> bool:
        return self.cfg is not None and self.state is not None and self.streams_state is not None


def _read_dense_layers(g, sizes: list[int]) -> list[DenseLayer]:
    layers = []
    for li in range(len(sizes) - 1):
        lg = g[f"layers/{li}"]
        n_in, n_out = int(lg.attrs["n_in"]), int(lg.attrs["n_out"])
        if (n_in, n_out) != (sizes[li], sizes[li + 1]):
            raise ValueError(f"layer {li} is {n_in} x {n_out}, the sizes say "
                             f"{sizes[li]} x {sizes[li + 1]}")
        arr = {}
        for name, dtype in DENSE_LAYER_ARRAYS.items():
            a = lg[name][()]
            want = (n_out,) if "bias" in name else (n_out, n_in)
            if a.dtype != dtype or a.shape != want:
                raise ValueError(f"layer {li} {name} is {a.dtype} {a.shape}, expected "
                                 f"{np.dtype(dtype)} {want}")
            arr[name] = a
        layers.append(DenseLayer(n_in, n_out, arr["W"], _get_str(lg, "init"), arr["bias"],
                                 arr["velocity"], arr["bias_velocity"]))
    return layers


def _read_sparse_layers(g, sizes: list[int]) -> list[SparseLayer]:
    layers = []
    for li in range(len(sizes) - 1):
        lg = g[f"layers/{li}"]
        n_in, n_out, nnz = (int(lg.attrs[k]) for k in ("n_in", "n_out", "nnz"))
        if (n_in, n_out) != (sizes[li], sizes[li + 1]):
            raise ValueError(f"layer {li} is {n_in} x {n_out}, the sizes say "
                             f"{sizes[li]} x {sizes[li + 1]}")
        arr = {}
        for name, dtype in LAYER_ARRAYS.items():
            a = lg[name][()]
            want = (n_out + 1,) if name == "indptr" else (n_out,) if "bias" in name else (nnz,)
            if a.dtype != dtype or a.shape != want:
                raise ValueError(f"layer {li} {name} is {a.dtype} {a.shape}, expected "
                                 f"{np.dtype(dtype)} {want}")
            arr[name] = a
        if arr["indptr"][0] != 0 or arr["indptr"][-1] != nnz:
            raise ValueError(f"layer {li} indptr does not span its {nnz} weights")
        layers.append(SparseLayer(n_in, n_out, arr["indptr"], arr["indices"], arr["data"],
                                  init=_get_str(lg, "init"), bias=arr["bias"],
                                  velocity=arr["velocity"], bias_velocity=arr["bias_velocity"],
                                  check=True))
    return layers


def _read_model(g, n_threads: int | None) -> SparseMLP | DenseMLP:
    kind = _get_str(g, "kind") if "kind" in g.attrs else "sparse"  # older files: sparse
    if kind not in ("sparse", "dense"):
        raise ValueError(f"its model is of an unknown kind {kind!r}")
    sizes = [int(s) for s in g.attrs["sizes"]]
    alpha = float(g.attrs["alpha"])
    read_layers = _read_dense_layers if kind == "dense" else _read_sparse_layers
    layers = read_layers(g, sizes)
    acts = []
    for h in range(len(sizes) - 2):
        ag = g[f"activations/{h}"]
        params = ag["params"][()] if "params" in ag else None
        velocity = ag["velocity"][()] if "velocity" in ag else None
        for a in (params, velocity):
            if a is not None and (a.dtype != np.float32 or a.shape != (sizes[h + 1], 4)):
                raise ValueError(f"activation {h} parameters are {a.dtype} {a.shape}")
        acts.append(Activation(_get_str(ag, "name"), int(ag.attrs["kind"]),
                               float(ag.attrs["slope"]), params, velocity))
    settings = dict(activation=_get_str(g, "activation"),
                    alpha=None if np.isnan(alpha) else alpha,
                    init=_get_str(g, "weight_init"), output=_get_str(g, "output"),
                    dropout=float(g.attrs["dropout"]), n_threads=n_threads, layers=layers,
                    activations=acts)
    if kind == "dense":
        model = DenseMLP(sizes, **settings)
    else:
        model = SparseMLP(sizes, epsilon=float(g.attrs["epsilon"]), **settings)
    bad = nonfinite_parts(model)
    if bad:
        raise ValueError(f"NaN or inf in {', '.join(bad)}")
    return model


def _py(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def _read_state(f) -> TrainState:
    sg = f["state"]
    names = {fld.name for fld in dataclasses.fields(TrainState)} - {"history"}
    kw = {k: _py(sg.attrs[k]) for k in names if k in sg.attrs}
    hg = f["history"]
    columns = _get_json(hg["columns"])
    cols = {c: (_get_json(hg[c]) if hg[c].attrs.get("json", 0) else hg[c][()].tolist())
            for c in columns}
    n = len(cols[columns[0]]) if columns else 0
    history = [{c: cols[c][i] for c in columns} for i in range(n)]
    return TrainState(history=history, **kw)


def _read_extra(g) -> dict:
    out: dict = {}
    for key, item in g.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_extra(item)
        elif item.attrs.get("json", 0):
            out[key] = _get_json(item)
        else:
            a = item[()]
            out[key] = a.reshape(()) if item.attrs.get("scalar", 0) else a
    return out


def _read_preprocessing(g, sizes: list[int]) -> Preprocessing:
    meta = _get_json(g["meta"])
    arrays = {}
    for name, dtype in PREPROCESSING_ARRAYS.items():
        if name in g:
            a = g[name][()]
            if a.dtype != dtype or a.ndim != 1:
                raise ValueError(f"preprocessing {name} is {a.dtype} {a.shape}, expected "
                                 f"{np.dtype(dtype)} (n,)")
            arrays[name] = a
    pre = Preprocessing.from_record(meta, arrays)
    if pre.n_features != sizes[0]:
        raise ValueError(f"its preprocessing record has {pre.n_features} features, the model "
                         f"takes {sizes[0]}")
    if pre.task == "classification" and pre.classes is not None \
            and len(pre.classes) != sizes[-1]:
        raise ValueError(f"its preprocessing record has {len(pre.classes)} classes, the model "
                         f"predicts {sizes[-1]}")
    return pre


def _check_header(f, path: Path) -> None:
    if "format" not in f.attrs or _get_str(f, "format") != FORMAT:
        raise CheckpointError(
            f"{path} is an HDF5 file but not a sparse_mlp checkpoint (its root has no "
            f"format={FORMAT!r} attribute); give the path of a file written by sparse_mlp")
    version = int(f.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        writer = _get_str(f, "sparse_mlp_version") if "sparse_mlp_version" in f.attrs else "?"
        raise CheckpointError(
            f"{path} has checkpoint schema version {version} (written by sparse_mlp "
            f"{writer}); this sparse_mlp {__version__} reads schema version {SCHEMA_VERSION} "
            f"only. Load it with the sparse_mlp version that wrote it.")


def load_checkpoint(path: str | Path, n_threads: int | None = None) -> Checkpoint:
    """Load and verify a checkpoint.

    Parameters
    ----------
    path : str or Path
    n_threads : int, optional
        Kernel threads of the loaded model (default: the cores available).

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointError
        The file is missing, not HDF5, truncated, damaged (a checksum or
        structure check fails), not a sparse_mlp checkpoint, or of another
        schema version; the message names the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    if not h5py.is_hdf5(path):
        raise CheckpointError(f"{path} is not an HDF5 file: it is damaged, empty, or not a "
                              f"checkpoint")
    try:
        with open_h5(path, "r") as f:
            _check_header(f, path)
            cfg = TrainConfig.from_dict(_get_json(f["config"])) if "config" in f else None
            model = _read_model(f["model"], n_threads)
            state = _read_state(f) if "state" in f else None
            streams = _get_json(f["streams"]) if "streams" in f else None
            extra = _read_extra(f["extra"]) if "extra" in f else {}
            pre = (_read_preprocessing(f["preprocessing"], model.sizes)
                   if "preprocessing" in f else None)
            return Checkpoint(path, cfg, model, state, streams, extra,
                              int(f.attrs["schema_version"]),
                              _get_str(f, "sparse_mlp_version"), _get_str(f, "created"),
                              preprocessing=pre)
    except (CheckpointError, MemoryError):
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, TypeError...
        raise CheckpointError(_describe_damage(path, exc)) from exc


def _describe_damage(path: Path, exc: Exception) -> str:
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    if "truncated" in low or "eof" in low:
        what = "is truncated (the copy or the write did not finish)"
    elif "checksum" in low or "filter" in low:
        what = "is corrupt: a checksum does not match (the data changed after writing)"
    else:
        what = "is corrupt or incomplete"
    return (f"{path} {what} [{type(exc).__name__}: {msg}]. Use another checkpoint "
            f"(--resume auto picks the newest valid one).")


def load(path: str | Path, n_threads: int | None = None, *,
         which: str = "best") -> TrainedModel:
    """A saved model, ready to predict from raw features.

    Parameters
    ----------
    path : str or Path
        A checkpoint file, a run's output folder or its ``checkpoints``
        folder.
    n_threads : int, optional
        Kernel threads (default: the cores available).
    which : "best" or "last"
        For a folder: "best" (default) takes ``checkpoints/best.h5`` (the
        best epoch's model, written when the run has a validation split)
        when there is one, else the newest valid checkpoint; "last" always
        the newest valid checkpoint.

    Returns
    -------
    TrainedModel
        ``predict``, ``predict_proba``, ``score`` take raw features and give
        the user's labels; ``.network`` is the SparseMLP or DenseMLP,
        ``.preprocessing`` the training data's record.  A checkpoint written
        before checkpoints carried that record loads with a
        :class:`~sparse_mlp.preprocessing.MissingPreprocessingWarning`: its
        model takes standardised features and predicts class ids.

    Raises
    ------
    CheckpointError
        No (valid) checkpoint at ``path``.
    """
    if which not in ("best", "last"):
        raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
    target = resolve_checkpoint(path, prefer_best=which == "best")
    try:
        ck = load_checkpoint(target, n_threads=n_threads)
    except CheckpointBusyError:
        raise
    except CheckpointError as exc:
        if target.name != BEST_CHECKPOINT or not Path(path).is_dir():
            raise
        log.warning("not using %s: %s; taking the newest checkpoint instead", target, exc)
        ck = load_checkpoint(resolve_checkpoint(path), n_threads=n_threads)
    if ck.preprocessing is None:
        warnings.warn(
            f"{ck.path} carries no preprocessing record (it was written by sparse_mlp "
            f"{ck.sparse_mlp_version or '?'} before checkpoints stored one, or saved without "
            f"one): its model takes features standardised as in training, not raw ones, and "
            f"predicts class ids, not labels. Train it again with this version, or give it the "
            f"training data's record: TrainedModel(model.network, "
            f"load_dataset(...).preprocessing).", MissingPreprocessingWarning,
            stacklevel=2)
    return TrainedModel(ck.model, ck.preprocessing, path=ck.path, config=ck.cfg)


# ---------------------------------------------------------------------- a run's folder
def checkpoint_name(epoch: int, step: int) -> str:
    """File name of a run's checkpoint after ``epoch`` finished epochs and
    ``step`` mini-batches: ``ckpt_e<epoch>_s<step>.h5``."""
    return f"ckpt_e{int(epoch):06d}_s{int(step):010d}.h5"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoints of a run's checkpoint folder, oldest first (by step,
    then epoch).  Temporary, corrupt and superseded files are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append(((int(m.group(2)), int(m.group(1))), p))
    return [p for _, p in sorted(found)]


def _checkpoint_folder(path: Path) -> Path:
    if path.name != CHECKPOINT_DIR and (path / CHECKPOINT_DIR).is_dir():
        return path / CHECKPOINT_DIR
    return path


def quarantined_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints found damaged and renamed aside (``ckpt_*.h5.corrupt*``),
    sorted by name.  A run whose folder holds these but no valid checkpoint
    must not start afresh under ``--resume auto``.

    Parameters
    ----------
    folder : str or Path
        A run's output folder or its ``checkpoints`` folder.
    """
    folder = _checkpoint_folder(Path(folder))
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name.startswith("ckpt_") and ".h5.corrupt" in p.name and p.is_file())


def resolve_checkpoint(path: str | Path, prefer_best: bool = False) -> Path:
    """A checkpoint file as given, or for a folder (a run's output folder or
    its ``checkpoints`` folder) the newest checkpoint that loads; with
    ``prefer_best``, the folder's ``best.h5`` when it has one.

    Raises
    ------
    CheckpointBusyError
        The newest checkpoint is open in another process (never skipped).
    CheckpointError
        The folder holds no valid checkpoint."""
    path = Path(path)
    if not path.is_dir():
        return path
    best = _checkpoint_folder(path) / BEST_CHECKPOINT
    if prefer_best and best.is_file():
        return best
    ck = latest_checkpoint(_checkpoint_folder(path), quarantine=False)
    if ck is None:
        raise CheckpointError(f"no valid checkpoint in {path} (looked for "
                              f"{_checkpoint_folder(path)}/ckpt_*.h5)")
    return ck.path


def latest_checkpoint(folder: str | Path, n_threads: int | None = None,
                      quarantine: bool = True) -> Checkpoint | None:
    """The newest checkpoint of ``folder`` that loads, or None if it has none.

    Damaged files are skipped with a warning and, with ``quarantine``,
    renamed to ``<name>.corrupt`` so that nothing picks them again (see
    :func:`quarantined_checkpoints`).

    Raises
    ------
    CheckpointBusyError
        A checkpoint newer than any valid one is open in another process
        (HDF5 file lock held).  It is not damaged, so it is neither skipped
        nor renamed: resuming from an older one would silently lose work.
    """
    for p in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(p, n_threads=n_threads)
        except CheckpointBusyError as exc:
            raise CheckpointBusyError(
                f"the newest checkpoint {p} is open in another process: is this run still "
                f"going elsewhere, or is the file being copied? Not resuming from an older "
                f"checkpoint. {exc}") from exc
        except CheckpointError as exc:
            log.warning("skipping a damaged checkpoint: %s", exc)
            if quarantine:
                _rename_aside(p, "corrupt")
    return None


def _rename_aside(path: Path, suffix: str) -> Path:
    target = path.with_name(f"{path.name}.{suffix}")
    k = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{suffix}{k}")
        k += 1
    os.replace(path, target)
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CheckpointDir:
    """The checkpoints of one run: ``<out>/checkpoints/ckpt_e<E>_s<S>.h5``.

    Parameters
    ----------
    folder : str or Path
    keep : int
        After each save, only the ``keep`` newest checkpoints stay.
    preprocessing : Preprocessing, optional
        Written into every checkpoint saved here (unless a save gives one).
    """

    def __init__(self, folder: str | Path, keep: int = 3,
                 preprocessing: Preprocessing | None = None) -> None:
        if keep < 1:
            raise ConfigError(f"keep must be at least 1, got {keep}")
        self.folder = Path(folder)
        self.keep = int(keep)
        self.preprocessing = preprocessing
        self.clean_temporary()

    def list(self) -> list[Path]:
        return list_checkpoints(self.folder)

    def save(self, *, cfg: TrainConfig, model: SparseMLP | DenseMLP, state: TrainState,
             streams: RandomStreams | dict, extra: dict | None = None,
             preprocessing: Preprocessing | None = None) -> Path:
        """Save the state (sparse or dense model) as the folder's newest
        checkpoint and delete the ones beyond ``keep`` -- only after the new
        one is safely renamed: a failed save (CheckpointError) deletes
        nothing.  ``preprocessing``: default the folder's."""
        path = self.folder / checkpoint_name(state.epoch, state.step)
        save_checkpoint(path, cfg=cfg, model=model, state=state, streams=streams, extra=extra,
                        preprocessing=preprocessing if preprocessing is not None
                        else self.preprocessing)
        for old in self.list()[:-self.keep]:
            try:
                old.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete the old checkpoint %s: %s", old, exc)
        return path

    def quarantined(self) -> list[Path]:
        """Checkpoints renamed aside as damaged (:func:`quarantined_checkpoints`)."""
        return quarantined_checkpoints(self.folder)

    def latest(self, n_threads: int | None = None) -> Checkpoint | None:
        """The newest checkpoint that loads (damaged ones renamed aside)."""
        return latest_checkpoint(self.folder, n_threads=n_threads)

    def retire_after(self, step: int, epoch: int) -> list[Path]:
        """Rename checkpoints newer than (step, epoch) to ``<name>.superseded``:
        a run resumed from an older checkpoint must never pick them again."""
        moved = []
        for p in self.list():
            m = _NAME.match(p.name)
            if (int(m.group(2)), int(m.group(1))) > (step, epoch):
                moved.append(_rename_aside(p, "superseded"))
                log.warning("checkpoint %s is newer than the one this run resumes from; "
                            "renamed to %s", p.name, moved[-1].name)
        return moved

    @property
    def best_path(self) -> Path:
        return self.folder / BEST_CHECKPOINT

    def save_best(self, *, cfg: TrainConfig, model: SparseMLP | DenseMLP,
                  extra: dict) -> Path:
        """Save ``model`` as ``best.h5`` (atomically replacing the previous
        best): the configuration, the model and ``extra`` (``extra["best"]``:
        epoch, scores), no loop state or streams -- a model to predict with,
        never one to resume from.  Never deleted by the keep-newest rule."""
        return save_checkpoint(self.best_path, cfg=cfg, model=model, state=None, streams=None,
                               extra=extra, preprocessing=self.preprocessing)

    def best_epoch(self) -> int | None:
        """The epoch (0-based) ``best.h5`` holds, or None when there is no
        readable ``best.h5`` (read from its attributes, not its weights)."""
        if not self.best_path.is_file():
            return None
        try:
            with open_h5(self.best_path, "r") as f:
                return int(_read_extra(f["extra/best"])["epoch"])
        except Exception:  # damaged: as good as absent
            return None

    def retire_best(self, epoch: int) -> Path | None:
        """On resume: a ``best.h5`` that does not hold ``epoch`` (the resumed
        state's best epoch; -1 for none) was written after the checkpoint
        resumed from (or is damaged): renamed to ``best.h5.superseded``, so
        that the run's best model and its summary agree.  The resumed run
        writes ``best.h5`` again when it reaches a better epoch."""
        if not self.best_path.exists() or self.best_epoch() == epoch:
            return None
        moved = _rename_aside(self.best_path, "superseded")
        log.warning("%s does not hold the best epoch of the state resumed from (epoch %d); "
                    "renamed to %s", BEST_CHECKPOINT, epoch + 1, moved.name)
        return moved

    def clean_temporary(self) -> None:
        """Delete temporary files left by killed writers on this host."""
        if not self.folder.is_dir():
            return
        host = socket.gethostname()
        for p in self.folder.iterdir():
            m = _TMP.match(p.name)
            if m and m.group(2) == host and not _pid_alive(int(m.group(3))):
                log.info("removing %s, left by a writer that was killed", p.name)
                p.unlink(missing_ok=True)
