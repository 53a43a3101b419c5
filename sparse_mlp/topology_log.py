"""The evolving topology: every epoch's connectivity, compactly, on disk.

With ``--save-topology`` a run writes ``<out>/topology.h5``: snapshot ``e``
is the connectivity after ``e`` finished epochs (``0``: the initial
Erdos-Renyi draw; snapshot ``e`` is what epoch ``e + 1`` trains with; the
last one is the final model's).  Weights are not stored, only positions.

Layout (format "sparse_mlp.topology", schema version :data:`SCHEMA_VERSION`)::

    /                      attrs format, schema_version, sizes (int64)
    /epochs/<e>/<l>        e zero-padded to 6 digits, l = 0 (input -> first
                           hidden) ... L-1; attrs n_in, n_out, nnz

Each layer's connections are its sorted positions ``p = j * n_in + i``
(output neuron j, input neuron i: the CSR-by-output order of the layer),
stored delta-encoded (``p[0]``, then ``p[k] - p[k-1] >= 1``) in the smallest
unsigned integer type that holds the largest gap, byte-shuffled and gzip
compressed, with a fletcher32 checksum: about 1-1.5 bytes per connection
for the paper's densities, readable by any HDF5 tool (``np.cumsum`` of the
dataset gives the positions back).

The file is appended in place, opened only while one snapshot is written
(other programs can read it between epochs), through
:func:`~sparse_mlp.checkpoint.guarded_h5`: the new snapshot's bytes go past
the file's old end first, HDF5's updates inside the old part follow only
once those are on disk, and a failed write (disk full, quota, I/O error)
is cut off again, so the file keeps every snapshot written before.  After
such a failure the log logs one warning and writes no more snapshots in
that run; training goes on.  A resumed run drops the snapshots written
after its checkpoint; a log damaged by a kill during an append is renamed
to ``topology.h5.damaged`` and a new one started.

Reading::

    hist = load_topology("runs/x/topology.h5")
    W = hist.layer(10, 0)            # scipy.sparse (n_in x n_out), True = connected
    hist.change(9, 10, layer=0)      # what SET changed in epoch 10
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .checkpoint import guarded_h5, open_h5
from .errors import CheckpointBusyError, CheckpointError, ConfigError
from .layers import SparseLayer

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT = "sparse_mlp.topology"
TOPOLOGY_FILE = "topology.h5"
BUSY_WAITS = (0.2, 0.5, 1.0, 2.0)  # seconds to wait for a reader that has the file open


def layer_positions(layer: SparseLayer) -> np.ndarray:
    """Sorted positions ``j * n_in + i`` of a layer's connections (int64)."""
    rows = np.repeat(np.arange(layer.n_out, dtype=np.int64), np.diff(layer.indptr))
    return rows * layer.n_in + layer.indices


def encode_positions(pos: np.ndarray) -> np.ndarray:
    """Delta-encode sorted unique positions in the smallest unsigned type."""
    pos = np.asarray(pos, dtype=np.int64)
    delta = np.empty_like(pos)
    if pos.size:
        delta[0] = pos[0]
        np.subtract(pos[1:], pos[:-1], out=delta[1:])
    top = int(delta.max()) if delta.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return delta.astype(dtype)
    return delta.astype(np.uint64)


def decode_positions(delta: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_positions` (int64 positions)."""
    return np.cumsum(delta, dtype=np.int64)


def _key(epoch: int) -> str:
    return f"{int(epoch):06d}"


class TopologyLog:
    """Writer of a run's ``topology.h5``.

    Parameters
    ----------
    path : str or Path
    sizes : list of int
        The network's layer widths (checked against an existing file).

    Attributes
    ----------
    failed : str or None
        Why the log stopped (a snapshot could not be written); None while
        it works.
    """

    def __init__(self, path: str | Path, sizes: list[int]) -> None:
        self.path = Path(path)
        self.sizes = [int(s) for s in sizes]
        self.failed: str | None = None

    def start(self, model) -> None:
        """A new log holding snapshot 0 (replaces any file at ``path``)."""
        self.path.unlink(missing_ok=True)
        self.append(0, model)

    def resume(self, epoch: int, model) -> None:
        """Continue a log after a checkpoint at ``epoch`` finished epochs:
        drop later snapshots, add snapshot ``epoch`` if it is missing."""
        if self.path.exists():
            try:
                with guarded_h5(self.path, "a") as f:
                    self._check(f)
                    for key in [k for k in f["epochs"] if int(k) > epoch]:
                        del f["epochs"][key]
            except CheckpointBusyError:
                raise  # another process has it open: not damaged, not ours to move
            except (OSError, KeyError, ValueError, RuntimeError, CheckpointError) as exc:
                aside = self.path.with_name(self.path.name + ".damaged")
                os.replace(self.path, aside)
                log.warning("the topology log %s could not be continued (%s); moved it to %s "
                            "and started a new one", self.path, exc, aside)
        self.append(epoch, model, replace=False)

    def _check(self, f) -> None:
        if f.attrs.get("format", b"").decode() != FORMAT:
            raise ValueError("not a sparse_mlp topology log")
        if list(f.attrs["sizes"]) != self.sizes:
            raise ValueError(f"it records a {'-'.join(map(str, f.attrs['sizes']))} network, "
                             f"this one is {'-'.join(map(str, self.sizes))}")

    def append(self, epoch: int, model, replace: bool = True) -> bool:
        """Store the connectivity of every layer of ``model`` as snapshot ``epoch``.

        Returns
        -------
        bool
            False when the snapshot could not be written (one warning; the
            file keeps the earlier snapshots) or the log stopped after an
            earlier failure: training goes on without it.
        """
        if self.failed is not None:
            log.debug("topology log stopped (%s): no snapshot %d", self.failed, epoch)
            return False
        for wait in (*BUSY_WAITS, None):
            try:
                self._append(epoch, model, replace)
                return True
            except CheckpointBusyError as exc:
                if wait is None:
                    return self._stop(epoch, exc)
                time.sleep(wait)  # a reader between epochs: it closes the file soon
            except (OSError, RuntimeError, ValueError, KeyError, CheckpointError) as exc:
                return self._stop(epoch, exc)
        return False  # pragma: no cover

    def _stop(self, epoch: int, exc: Exception) -> bool:
        self.failed = f"{type(exc).__name__}: {exc}"
        log.warning("could not add snapshot %d to the topology log %s (%s); it keeps the "
                    "snapshots written before, and this run writes no more of them "
                    "(training goes on)", epoch, self.path, self.failed)
        return False

    def _append(self, epoch: int, model, replace: bool) -> None:
        with guarded_h5(self.path, "a") as f:
            if "format" not in f.attrs:
                f.attrs["format"] = np.bytes_(FORMAT.encode())
                f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
                f.attrs["sizes"] = np.asarray(self.sizes, dtype=np.int64)
            self._check(f)
            epochs = f.require_group("epochs")
            key = _key(epoch)
            if key in epochs:
                if not replace:
                    return
                del epochs[key]
            g = epochs.create_group(key)
            for li, layer in enumerate(model.layers):
                delta = encode_positions(layer_positions(layer))
                ds = g.create_dataset(str(li), data=delta, shuffle=delta.itemsize > 1,
                                      compression="gzip", compression_opts=1,
                                      fletcher32=True,
                                      chunks=(min(max(delta.size, 1), 1 << 20),))
                ds.attrs["n_in"], ds.attrs["n_out"] = layer.n_in, layer.n_out
                ds.attrs["nnz"] = layer.nnz


@dataclass
class TopologyChange:
    """How one layer's (or the whole network's) connectivity differs between
    two snapshots A (earlier) and B.

    Attributes
    ----------
    nnz_a, nnz_b : int
        Connections in A and in B.
    kept : int
        Connections in both.
    removed : int
        In A, not in B.
    added : int
        In B, not in A.
    """

    nnz_a: int
    nnz_b: int
    kept: int
    removed: int
    added: int

    @property
    def fraction_removed(self) -> float:
        """Share of A's connections gone in B."""
        return self.removed / self.nnz_a if self.nnz_a else 0.0

    @property
    def fraction_added(self) -> float:
        """Share of B's connections that are new."""
        return self.added / self.nnz_b if self.nnz_b else 0.0

    @property
    def jaccard_distance(self) -> float:
        """1 - |A and B| / |A or B|: 0 for equal topologies, 1 for disjoint."""
        union = self.kept + self.removed + self.added
        return 1.0 - self.kept / union if union else 0.0

    def __add__(self, other: TopologyChange) -> TopologyChange:
        return TopologyChange(self.nnz_a + other.nnz_a, self.nnz_b + other.nnz_b,
                              self.kept + other.kept, self.removed + other.removed,
                              self.added + other.added)


class TopologyHistory:
    """Reader of a ``topology.h5`` (see :func:`load_topology`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"topology log {self.path} does not exist; train with "
                                  f"--save-topology to write one")
        try:
            with open_h5(self.path, "r") as f:
                if f.attrs.get("format", b"").decode() != FORMAT:
                    raise CheckpointError(f"{self.path} is not a sparse_mlp topology log")
                version = int(f.attrs["schema_version"])
                if version != SCHEMA_VERSION:
                    raise CheckpointError(f"{self.path} has topology schema version {version}; "
                                          f"this sparse_mlp reads {SCHEMA_VERSION}")
                self.sizes = [int(s) for s in f.attrs["sizes"]]
                self.epochs = sorted(int(k) for k in f["epochs"])
        except CheckpointError:
            raise
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{self.path} is not a readable topology log ({exc})") from exc

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def positions(self, epoch: int, layer: int) -> np.ndarray:
        """Sorted positions ``j * n_in + i`` (int64) of one layer's connections
        in snapshot ``epoch``."""
        if epoch not in self.epochs:
            raise ConfigError(f"{self.path} has no snapshot of epoch {epoch}; it has "
                              f"{self._epoch_span()}")
        if not 0 <= layer < self.n_layers:
            raise ConfigError(f"layer must be in [0, {self.n_layers}), got {layer}")
        try:
            with open_h5(self.path, "r") as f:
                return decode_positions(f[f"epochs/{_key(epoch)}/{layer}"][()])
        except (OSError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{self.path}: snapshot {epoch} layer {layer} is damaged "
                                  f"({exc})") from exc

    def layer(self, epoch: int, layer: int) -> sp.csc_matrix:
        """One layer's connectivity in snapshot ``epoch`` as a boolean
        scipy.sparse matrix of shape (n_in, n_out), the orientation of
        :meth:`SparseLayer.to_scipy`."""
        n_in, n_out = self.sizes[layer], self.sizes[layer + 1]
        pos = self.positions(epoch, layer)
        rows = pos // n_in
        indices = (pos - rows * n_in).astype(np.int32)
        indptr = np.zeros(n_out + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_out), out=indptr[1:])
        m = sp.csc_matrix((np.ones(pos.size, dtype=bool), indices, indptr),
                          shape=(n_in, n_out))
        m.has_sorted_indices = True
        return m

    def change(self, epoch_a: int, epoch_b: int, layer: int | None = None) -> TopologyChange:
        """How the connectivity changed from snapshot ``epoch_a`` to
        ``epoch_b``, for one layer or (``layer=None``) summed over all."""
        layers = range(self.n_layers) if layer is None else [layer]
        total = TopologyChange(0, 0, 0, 0, 0)
        for li in layers:
            a = self.positions(epoch_a, li)
            b = self.positions(epoch_b, li)
            kept = int(np.intersect1d(a, b, assume_unique=True).size)
            total = total + TopologyChange(a.size, b.size, kept, a.size - kept, b.size - kept)
        return total

    def _epoch_span(self) -> str:
        if not self.epochs:
            return "no snapshots"
        return f"snapshots {self.epochs[0]}..{self.epochs[-1]}" + (
            "" if len(self.epochs) == self.epochs[-1] - self.epochs[0] + 1 else " (with gaps)")

    def __repr__(self) -> str:
        return (f"TopologyHistory({self.path}, {'-'.join(map(str, self.sizes))}, "
                f"{self._epoch_span()})")


def load_topology(path: str | Path) -> TopologyHistory:
    """Open a topology log: a ``topology.h5`` or the run folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / TOPOLOGY_FILE
    return TopologyHistory(path)


__all__ = ["TopologyLog", "TopologyHistory", "TopologyChange", "load_topology",
           "layer_positions", "encode_positions", "decode_positions", "TOPOLOGY_FILE"]
