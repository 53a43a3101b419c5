"""Sparse operations of WASAP-SGD: retain valid updates, average K models.

``retain_valid_updates``  a gradient computed on an older topology, mapped
                          onto the current one (paper Algorithm 1, line 14)
``average_models``        the union of K workers' topologies with values,
                          momenta, biases and SReLU parameters averaged
                          (absent = 0), then each layer pruned back to its
                          target number of weights (Algorithm 1, line 37):
                          by |w| (the text) or by a per-sign threshold
                          (``sign_prune_to``, the authors' code)

Both are O(nnz) merges of sorted rows in ``pyx/_merge.pyx``; the
``*_numpy`` twins compute the same with plain NumPy on positions and are
kept for the tests.
"""

from __future__ import annotations

import numpy as np

from ..activations import Activation
from ..evolution import magnitude_prune_to
from ..kernels import merge, topology
from ..layers import SparseLayer
from ..model import SparseMLP


def retain_valid_updates(old_indptr: np.ndarray, old_indices: np.ndarray, g_old: np.ndarray,
                         layer: SparseLayer, n_threads: int = 1) -> tuple[np.ndarray, int]:
    """The gradient ``g_old`` (one float32 per weight of the topology
    ``old_indptr, old_indices``) on the current topology of ``layer``.

    Returns
    -------
    g : ndarray float32 (layer.nnz,)
        The old entry where the connection still exists, 0 on connections
        grown since (they have no gradient yet).
    kept : int
        How many of the old entries were kept; the others fell on
        connections that the topology evolution removed meanwhile.
    """
    g = np.empty(layer.nnz, dtype=np.float32)
    kept = merge.retain_valid(np.ascontiguousarray(old_indptr, np.int64),
                              np.ascontiguousarray(old_indices, np.int32),
                              np.ascontiguousarray(g_old, np.float32), layer.indptr,
                              layer.indices, g, n_threads=n_threads)
    return g, int(kept)


def retain_valid_numpy(old_indptr, old_indices, g_old, new_indptr, new_indices
                       ) -> tuple[np.ndarray, int]:
    """Slow twin of :func:`retain_valid_updates` (searchsorted on positions)."""
    old_rows = np.repeat(np.arange(old_indptr.size - 1, dtype=np.int64), np.diff(old_indptr))
    new_rows = np.repeat(np.arange(new_indptr.size - 1, dtype=np.int64), np.diff(new_indptr))
    old_pos = (old_rows << 32) + old_indices
    new_pos = (new_rows << 32) + new_indices
    at = np.searchsorted(old_pos, new_pos)
    at_c = np.minimum(at, max(old_pos.size - 1, 0))
    hit = (at < old_pos.size) & (old_pos[at_c] == new_pos) if old_pos.size else \
        np.zeros(new_pos.size, dtype=bool)
    g = np.zeros(new_pos.size, dtype=np.float32)
    g[hit] = np.asarray(g_old, np.float32)[at_c[hit]]
    return g, int(hit.sum())


def union_add(a: SparseLayer, b: SparseLayer, n_threads: int = 1) -> SparseLayer:
    """A new layer on the union of the topologies of ``a`` and ``b``, with
    values, momenta, biases and bias momenta summed (absent = 0)."""
    if a.shape != b.shape:
        raise ValueError(f"union_add: layers of different shapes {a.shape} and {b.shape}")
    counts = np.empty(a.n_out, dtype=np.int64)
    merge.union_count(a.indptr, a.indices, b.indptr, b.indices, counts, n_threads=n_threads)
    indptr = np.zeros(a.n_out + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    velocity = np.empty(nnz, dtype=np.float32)
    merge.union_add(a.indptr, a.indices, a.data, a.velocity, b.indptr, b.indices, b.data,
                    b.velocity, indptr, indices, data, velocity, n_threads=n_threads)
    return SparseLayer(a.n_in, a.n_out, indptr, indices, data, init=a.init,
                       bias=a.bias + b.bias, velocity=velocity,
                       bias_velocity=a.bias_velocity + b.bias_velocity, check=False)


def _row_col_keys(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
    return (rows << 32) + indices


def union_add_numpy(a: SparseLayer, b: SparseLayer) -> SparseLayer:
    """Slow twin of :func:`union_add` (np.unique on positions, float32 sums)."""
    keys, inv = np.unique(np.concatenate((_row_col_keys(a.indptr, a.indices),
                                          _row_col_keys(b.indptr, b.indices))),
                          return_inverse=True)
    data = np.zeros(keys.size, dtype=np.float32)
    velocity = np.zeros(keys.size, dtype=np.float32)
    np.add.at(data, inv, np.concatenate((a.data, b.data)))
    np.add.at(velocity, inv, np.concatenate((a.velocity, b.velocity)))
    indptr = np.zeros(a.n_out + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys >> 32, minlength=a.n_out), out=indptr[1:])
    return SparseLayer(a.n_in, a.n_out, indptr, (keys & 0xFFFFFFFF).astype(np.int32), data,
                       init=a.init, bias=a.bias + b.bias, velocity=velocity,
                       bias_velocity=a.bias_velocity + b.bias_velocity, check=True)


def sign_prune_to(layer: SparseLayer, target_nnz: int) -> int:
    """Per-sign magnitude threshold back to about ``target_nnz`` weights
    (the authors' final averaging): with zeta = (nnz - target) / nnz, remove
    the fraction zeta of the negative weights closest to zero and the
    fraction zeta of the positive ones, by SET's removal rule (classes by
    sign bit; in a class of n, the n - floor((1 - zeta) n) smallest |w| go,
    and every weight tied with the last of them).  The result can fall a
    few weights below the target (rounding per class, ties), never above.
    Nothing is removed when ``target_nnz >= nnz``.  Returns the number
    removed."""
    nnz = layer.nnz
    if target_nnz < 0:
        raise ValueError("target_nnz must be non-negative")
    if target_nnz >= nnz:
        return 0
    zeta = (nnz - target_nnz) / nnz
    key_neg, key_pos, *_ = topology.magnitude_thresholds(layer.data, zeta)
    keep = topology.removal_mask(layer.data, key_neg, key_pos) == 0
    rows = np.repeat(np.arange(layer.n_out), layer.row_lengths())
    indptr = np.zeros(layer.n_out + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=layer.n_out), out=indptr[1:])
    layer.set_topology(indptr, layer.indices[keep], layer.data[keep], layer.velocity[keep],
                       check=False)
    return nnz - layer.nnz


def sign_prune_numpy(data: np.ndarray, target_nnz: int) -> np.ndarray:
    """Slow twin of :func:`sign_prune_to`: the keep mask, from sorted
    magnitudes of each sign class."""
    data = np.asarray(data, np.float32)
    keep = np.ones(data.size, dtype=bool)
    if target_nnz >= data.size:
        return keep
    zeta = (data.size - target_nnz) / data.size
    for cls in (np.signbit(data), ~np.signbit(data)):
        mags = np.abs(data[cls])
        k = mags.size - int((1.0 - zeta) * mags.size)
        if k > 0:
            cut = np.sort(mags)[k - 1]
            sub = keep[cls]
            sub[mags <= cut] = False
            keep[cls] = sub
    return keep


#: how :func:`average_models` prunes the union back: ``magnitude`` (the
#: text: the largest |w|, exactly the target) or ``sign`` (the authors'
#: code: a per-sign threshold, :func:`sign_prune_to`)
AVERAGE_PRUNES = ("magnitude", "sign")


def average_models(models: list[SparseMLP], targets: list[int] | None = None,
                   n_threads: int = 1, prune: str = "magnitude") -> SparseMLP:
    """The WASAP average of K models: per layer the union of their
    topologies with weights, momenta and biases averaged (a connection a
    model lacks counts as 0), SReLU parameters averaged, then each layer
    pruned back to ``targets[l]`` weights (default: the mean nnz of the
    models' layer l, rounded): ``prune='magnitude'`` keeps the largest |w|
    (:func:`~sparse_mlp.evolution.magnitude_prune_to`), ``prune='sign'``
    thresholds each sign class (:func:`sign_prune_to`).  The models are
    not modified."""
    if prune not in AVERAGE_PRUNES:
        raise ValueError(f"prune must be one of {', '.join(AVERAGE_PRUNES)}, got {prune!r}")
    if not models:
        raise ValueError("average_models needs at least one model")
    K = len(models)
    first = models[0]
    if targets is None:
        targets = [int(round(np.mean([m.layers[li].nnz for m in models])))
                   for li in range(first.n_layers)]
    inv = np.float32(1.0 / K)
    layers = []
    for li in range(first.n_layers):
        acc = models[0].layers[li]
        for m in models[1:]:
            acc = union_add(acc, m.layers[li], n_threads=n_threads)
        if K > 1:
            acc.data *= inv
            acc.velocity *= inv
            acc.bias *= inv
            acc.bias_velocity *= inv
        else:  # a copy: the caller's model stays untouched
            acc = SparseLayer(acc.n_in, acc.n_out, acc.indptr.copy(), acc.indices.copy(),
                              acc.data.copy(), init=acc.init, bias=acc.bias,
                              velocity=acc.velocity.copy(), bias_velocity=acc.bias_velocity,
                              check=False)
        if prune == "sign":
            sign_prune_to(acc, targets[li])
        else:
            magnitude_prune_to(acc, targets[li])
        layers.append(acc)
    acts = []
    for h, act in enumerate(first.acts):
        params = velocity = None
        if act.params is not None:
            params = np.mean([m.acts[h].params for m in models], axis=0, dtype=np.float32)
            velocity = np.mean([m.acts[h].velocity for m in models], axis=0, dtype=np.float32)
        acts.append(Activation(act.name, act.kind, act.slope, params, velocity))
    return SparseMLP(first.sizes, first.epsilon, first.activation, first.alpha, first.init,
                     first.output, first.dropout, n_threads=first.n_threads, layers=layers,
                     activations=acts, activation_memory="lean" if first.lean else "fast")
