"""Topology evolution of one layer: SET, Importance Pruning, magnitude pruning.

SET step (docs/semantics.md, "SET"): remove the fraction zeta of the positive weights
closest to zero and the fraction zeta of the negative weights closest to
zero, then regrow as many connections at uniformly random empty positions,
values drawn from the layer's init distribution, momentum 0; kept weights
keep their momentum.  Precisely: weights are split by sign bit; in a class
of n weights the k = n - floor((1 - zeta) n) of smallest |w| are removed
(every weight tied with the k-th goes too, as in the reference code).  A
removed position may be drawn again by the regrowth (as in the reference).

Everything is O(nnz): magnitude thresholds by radix selection, survivors
counted and merged with the sorted new positions per row in parallel
kernels (``pyx/_topology.pyx``); random positions are drawn with the run's
evolution generator, so the result does not depend on the thread count.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .config import GROWTH_INITS
from .errors import ConfigError
from .kernels import topology
from .layers import SparseLayer, init_values, sample_positions

log = logging.getLogger(__name__)

#: Importance Pruning never leaves a layer with fewer neurons that keep their
#: inputs than this fraction of its neurons (and never fewer than one): a layer
#: pruned to nothing would make the network's output constant.  Past the floor
#: the layer keeps its most important neurons, and a warning says so.
IP_FLOOR_FRACTION = 0.05


def ip_floor(n_neurons: int) -> int:
    """The fewest neurons with inputs that Importance Pruning leaves a layer."""
    return min(n_neurons, max(1, math.ceil(IP_FLOOR_FRACTION * n_neurons)))


@dataclass
class EvolutionStats:
    """What one evolution step did to one layer."""

    nnz_before: int
    removed: int
    regrown: int
    pruned: int = 0  # weights deleted by Importance Pruning (not regrown)

    @property
    def nnz_after(self) -> int:
        return self.nnz_before - self.removed - self.pruned + self.regrown


def _regrow_positions(layer: SparseLayer, keys: tuple[int, int], n_kept: int, n_new: int,
                      rng: np.random.Generator, n_threads: int) -> np.ndarray:
    """``n_new`` sorted positions j*n_in + i, uniform over the positions that
    hold no surviving weight."""
    n_in = layer.n_in
    n_total = n_in * layer.n_out
    n_free = n_total - n_kept
    if n_new > n_free:  # cannot happen: removed positions are free again
        raise RuntimeError("SET regrowth: fewer free positions than weights to regrow")
    key_neg, key_pos = keys
    if 2 * n_kept > n_total or n_free < 2 * n_new:
        # dense layer: enumerate the free positions exactly (O(n_total) = O(nnz) here)
        free = np.empty(n_free, dtype=np.int64)
        topology.empty_positions(layer.indptr, layer.indices, layer.data, key_neg, key_pos,
                                 n_in, free)
        return np.sort(rng.choice(free, size=n_new, replace=False))

    def occupied(cand: np.ndarray) -> np.ndarray:
        flags = np.empty(cand.size, dtype=np.uint8)
        topology.occupied(layer.indptr, layer.indices, layer.data, key_neg, key_pos, cand,
                          n_in, flags, n_threads=n_threads)
        return flags.view(bool)

    return sample_positions(n_total, n_new, rng, occupied=occupied)


def set_step(layer: SparseLayer, zeta: float, rng: np.random.Generator,
             n_threads: int = 1, regrow_init: str = "init") -> EvolutionStats:
    """One SET prune-and-regrow cycle on ``layer`` (in place); nnz is kept.

    ``regrow_init='init'`` (the paper's) draws the regrown weights from the
    layer's initialiser; ``'zero'`` starts them at 0 (velocity 0 either way).
    Pruning the smallest magnitudes and redrawing them from the initialiser
    raises the layer's mean squared weight at every step, which compounds
    over deep eps-1 stacks; regrowing at zero lowers it instead, and a new
    weight the gradient leaves small is the first pruned at the next step.
    """
    if not 0.0 <= zeta < 1.0:
        raise ConfigError(f"zeta must be in [0, 1), got {zeta}")
    if regrow_init not in GROWTH_INITS:
        raise ConfigError(f"regrow_init must be one of {', '.join(GROWTH_INITS)}, "
                          f"got {regrow_init!r}")
    nnz = layer.nnz
    key_neg, key_pos, *_ = topology.magnitude_thresholds(layer.data, zeta)
    counts = np.empty(layer.n_out, dtype=np.int64)
    topology.keep_counts(layer.indptr, layer.data, key_neg, key_pos, counts,
                         n_threads=n_threads)
    n_kept = int(counts.sum())
    n_new = nnz - n_kept
    if n_new == 0:
        return EvolutionStats(nnz, 0, 0)

    pos = _regrow_positions(layer, (key_neg, key_pos), n_kept, n_new, rng, n_threads)
    if regrow_init == "zero":
        values = np.zeros(n_new, dtype=np.float32)
    else:
        values = init_values(layer.init, n_new, layer.n_in, layer.n_out, rng,
                             density=layer.density, gain2=layer.gain2)
    rows = pos // layer.n_in
    cols = (pos - rows * layer.n_in).astype(np.int32)
    new_counts = np.bincount(rows, minlength=layer.n_out)
    new_ptr = np.zeros(layer.n_out + 1, dtype=np.int64)
    np.cumsum(new_counts, out=new_ptr[1:])
    out_indptr = np.zeros(layer.n_out + 1, dtype=np.int64)
    np.cumsum(counts + new_counts, out=out_indptr[1:])

    out_indices = np.empty(nnz, dtype=np.int32)
    out_data = np.empty(nnz, dtype=np.float32)
    out_velocity = np.empty(nnz, dtype=np.float32)
    topology.merge_rows(layer.indptr, layer.indices, layer.data, layer.velocity, key_neg,
                        key_pos, new_ptr, cols, values, out_indptr, out_indices, out_data,
                        out_velocity, n_threads=n_threads)
    layer.set_topology(out_indptr, out_indices, out_data, out_velocity, check=False)
    return EvolutionStats(nnz, n_new, n_new)


def remove_neurons(layer: SparseLayer, dead: np.ndarray) -> int:
    """Delete all incoming weights of the output neurons flagged in ``dead``
    (bool, (n_out,)).  Returns the number of weights deleted."""
    dead = np.asarray(dead, dtype=bool)
    if dead.shape != (layer.n_out,):
        raise ConfigError(f"dead must be a boolean array of shape ({layer.n_out},)")
    lengths = layer.row_lengths()
    n_removed = int(lengths[dead].sum())
    if n_removed == 0:
        return 0
    keep = np.repeat(~dead, lengths)
    indptr = np.zeros(layer.n_out + 1, dtype=np.int64)
    np.cumsum(np.where(dead, 0, lengths), out=indptr[1:])
    layer.set_topology(indptr, layer.indices[keep], layer.data[keep], layer.velocity[keep],
                       check=False)
    return n_removed


def importance_threshold(importance: np.ndarray, percentile: float) -> float:
    """The percentile of the importances over ALL neurons of a layer
    (already-dead ones, importance 0, included), linear interpolation."""
    if not 0.0 <= percentile <= 100.0:
        raise ConfigError(f"the importance percentile must be in [0, 100], got {percentile}")
    return float(np.percentile(importance, percentile))


def importance_prune(layer: SparseLayer, percentile: float, n_threads: int = 1
                     ) -> tuple[int, np.ndarray]:
    """Importance Pruning (paper Algorithm 2): neurons whose importance
    (sum of |incoming w|) is <= the given percentile lose all their incoming
    weights, down to the floor of :func:`ip_floor` neurons with inputs (the
    most important ones stay; a warning says when the floor holds).
    Returns (weights deleted, boolean mask of pruned neurons)."""
    imp = layer.importance(n_threads=n_threads)
    t = importance_threshold(imp, percentile)
    dead = imp <= t
    floor = ip_floor(layer.n_out)
    if layer.n_out - int(dead.sum()) < floor and int((imp > 0).sum()) > 0:
        keep = np.argsort(-imp, kind="stable")[:floor]  # the most important, ties by index
        keep = keep[imp[keep] > 0]  # (a neuron without inputs cannot be kept alive)
        wanted = int(dead.sum())
        dead[keep] = False
        log.warning("Importance Pruning at the %gth percentile would leave %d of the %d -> %d "
                    "layer's neurons with inputs; it stops at the floor of %d (the most "
                    "important ones keep their inputs)", percentile, layer.n_out - wanted,
                    layer.n_in, layer.n_out, layer.n_out - int(dead.sum()))
    return remove_neurons(layer, dead), dead


def magnitude_prune_to(layer: SparseLayer, target_nnz: int) -> int:
    """Keep the ``target_nnz`` weights of largest |w| (WASAP's averaging
    step); ties broken by position.  Returns the number removed."""
    nnz = layer.nnz
    if target_nnz >= nnz:
        return 0
    if target_nnz < 0:
        raise ConfigError("target_nnz must be non-negative")
    order = np.argsort(-np.abs(layer.data), kind="stable")
    keep = np.zeros(nnz, dtype=bool)
    keep[order[:target_nnz]] = True
    rows = np.repeat(np.arange(layer.n_out), layer.row_lengths())
    indptr = np.zeros(layer.n_out + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=layer.n_out), out=indptr[1:])
    layer.set_topology(indptr, layer.indices[keep], layer.data[keep], layer.velocity[keep],
                       check=False)
    return nnz - target_nnz
