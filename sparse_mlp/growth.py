"""Gradient and momentum regrowth during training (beyond the paper).

The topology a network starts with (ER and ERK density allocation) is
``initial_topology.py``'s; this module only regrows after SET's removal.

Growth strategies (``--growth``), all after SET's removal step (the same
sign-split magnitude removal of the fraction zeta, ``evolution.py``):

``random``   SET, the paper: uniformly random empty positions (the default;
             handled by :func:`sparse_mlp.evolution.set_step`).
``gradient`` RigL-style (Evci et al. 2020): each layer regrows as many
             connections as it lost, at the EMPTY positions of largest
             |dL/dW|, the mean gradient over ``growth_batches`` (default 1)
             mini-batches drawn at the end of the epoch.
``momentum`` sparse-momentum-style (Dettmers & Zettlemoyer 2019): the
             regrowth is pooled over the evolved layers and REDISTRIBUTED
             in proportion to each layer's mean |momentum| of its existing
             weights (``velocity``), capped by the room a layer has; within
             a layer, positions of largest |momentum| of the missing
             weights, estimated as the exponentially weighted gradient
             (weights mu^(M-1-t), mu = the SGD momentum) of the last of
             ``growth_batches`` (default 10) probe mini-batches: what a
             dense momentum buffer would hold, truncated to M steps.

The gradient at missing positions is never a dense array: the probe keeps
the feature-major activations entering each evolved layer and the deltas
of its outputs, A (n_in, S) and D (n_out, S) over the S = M*B probe
samples, and the kernels (``pyx/_growth.pyx``) compute g[i, j] =
A[i, :] . D[j, :] / S only at empty positions, row block by row block,
keeping a bounded heap of the best k.  Memory: O(nnz + (n_in + n_out) * S)
per layer.  Work: one forward and backward pass (no update) per probe
batch, plus O((n_in * n_out - nnz) * S) for the exhaustive search -- or,
with ``growth_candidates`` = c, only c * k uniformly sampled empty positions
per layer, O(c * k * S), for layers too large to scan.

New weights start at 0 (``growth_init='zero'``, as RigL and sparse momentum
do; the gradient makes them grow) or from the layer's init distribution
(``'init'``, as SET).  Their momentum starts at 0; kept weights keep theirs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .config import GROWTH_INITS
from .errors import ConfigError
from .evolution import EvolutionStats
from .kernels import aligned_empty, spmm, topology
from .layers import SparseLayer, init_values, sample_positions

try:
    from . import _growth as kernels
except ImportError as exc:  # pragma: no cover - exercised only on unbuilt trees
    raise ImportError(
        f"sparse_mlp's growth kernels are missing or out of date ({exc}). Build them with "
        "`make` (or `python setup.py build_ext --inplace`) in the project root.") from exc

log = logging.getLogger(__name__)

DEFAULT_GROWTH_BATCHES = {"gradient": 1, "momentum": 10}
PROBE_SALT = 0x67726F77  # "grow": probe dropout masks differ from every training step's


# ---------------------------------------------------------------------- redistribution
def redistribute(total: int, weights: Sequence[float], capacity: Sequence[int]) -> np.ndarray:
    """Split ``total`` new connections over layers in proportion to
    ``weights`` with no layer above its ``capacity`` (water-filling, then
    largest-remainder rounding, ties to the lower layer index).  Non-finite
    or all-zero weights fall back to equal weights."""
    w = np.asarray(weights, dtype=np.float64).copy()
    cap = np.asarray(capacity, dtype=np.int64)
    if w.shape != cap.shape:
        raise ValueError("redistribute: weights and capacity must have the same length")
    total = int(min(total, int(cap.sum())))
    if total <= 0:
        return np.zeros(cap.size, dtype=np.int64)
    w[~np.isfinite(w) | (w < 0)] = 0.0
    if w.sum() <= 0:
        w[:] = 1.0
    x = np.zeros(cap.size, dtype=np.float64)
    fixed = cap <= 0
    while True:
        free = ~fixed
        if not free.any():
            break
        rem = total - cap[fixed & (cap > 0)].sum()
        ws = w[free].sum()
        x[free] = rem * (w[free] / ws if ws > 0 else 1.0 / free.sum())
        over = free & (x > cap)
        if not over.any():
            break
        fixed |= over
        x[over] = cap[over]
    x[cap <= 0] = 0.0
    out = np.minimum(np.floor(x + 1e-9).astype(np.int64), cap)
    short = total - int(out.sum())
    if short > 0:
        frac = x - out
        frac[out >= cap] = -1.0
        order = np.lexsort((np.arange(cap.size), -frac))
        for li in order:
            if short == 0:
                break
            if out[li] < cap[li]:
                out[li] += 1
                short -= 1
    return out


# ---------------------------------------------------------------------- probe
@dataclass
class GradientProbe:
    """Activations and deltas of the evolved layers over the probe batches.

    ``A[l]`` (n_in, S) float32 enters layer l, ``D[l]`` (n_out, S) float32 is
    the delta of its pre-activations (weighted per batch for momentum
    growth); the gradient is g[i, j] = scale * A[l][i, :] . D[l][j, :]."""

    A: list[np.ndarray]
    D: list[np.ndarray]
    scale: float
    n_samples: int
    seconds: float


def batch_getter(X, y: np.ndarray, n_threads: int = 1
                 ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """rows -> (feature-major float32 batch (n_features, len(rows)), labels)
    for a dense sample-major float32 array or a scipy.sparse matrix (only
    the batch is densified)."""
    if sp.issparse(X):
        Xc = sp.csr_matrix(X)

        def get(rows):
            dense = np.ascontiguousarray(Xc[rows].toarray(), dtype=np.float32)
            xb = np.empty((dense.shape[1], rows.size), dtype=np.float32)
            spmm.gather_columns(dense, np.arange(rows.size, dtype=np.int64), xb,
                                n_threads=n_threads)
            return xb, y[rows]
    else:
        def get(rows):
            xb = np.empty((X.shape[1], rows.size), dtype=np.float32)
            spmm.gather_columns(X, np.ascontiguousarray(rows, dtype=np.int64), xb,
                                n_threads=n_threads)
            return xb, y[rows]
    return get


def collect_probe(model, get_batch: Callable, n_rows: int, batch_size: int, n_batches: int,
                  rng: np.random.Generator, dropout_seed: int, step: int,
                  n_layers: int, decay: float | None = None) -> GradientProbe:
    """Forward and backward passes (no update) of ``n_batches`` mini-batches
    of ``batch_size`` rows drawn without replacement (``rng``), keeping A and
    D of the first ``n_layers`` layers.  Dropout as in training, with masks
    keyed apart from the training steps.  ``decay``: batch t of M gets
    weight decay**(M-1-t) (momentum growth); None: equal weights."""
    t0 = time.perf_counter()
    B = min(batch_size, n_rows)
    M = max(1, min(n_batches, n_rows // B))
    rows_all = rng.choice(n_rows, size=M * B, replace=False).reshape(M, B)
    wts = (np.ones(M) if decay is None
           else np.asarray([decay ** (M - 1 - t) for t in range(M)], dtype=np.float64))
    A = [np.empty((model.sizes[li], M * B), dtype=np.float32) for li in range(n_layers)]
    D = [np.empty((model.sizes[li + 1], M * B), dtype=np.float32) for li in range(n_layers)]
    seed = int(dropout_seed) ^ PROBE_SALT
    L, nt = model.n_layers, model.n_threads
    # the probe's own pass through the public layer kernels: Z (pre-activation, then
    # delta) and A (after activation and dropout) per layer, as training computes them
    Zb = [aligned_empty((n, B)) for n in model.sizes[1:]]
    Ab = [aligned_empty((n, B)) for n in model.sizes[1:L]]
    for t in range(M):
        xb, yb = get_batch(rows_all[t])
        keys = model.dropout_keys(seed, step + t)
        prev = xb
        for li, layer in enumerate(model.layers):
            if li < L - 1:
                layer.forward(prev, Zb[li], Ab[li], act=model.acts[li], dropout=model.dropout,
                              key=keys[li], n_threads=nt)
                prev = Ab[li]
            else:
                layer.forward(prev, Zb[li], n_threads=nt)
        model.output_delta(Zb[-1], np.ascontiguousarray(  # float targets: regression
            yb, dtype=np.float32 if model.output == "linear" else np.int32))
        cols = slice(t * B, (t + 1) * B)
        for li in range(L - 1, -1, -1):
            if li < n_layers:
                A[li][:, cols] = xb if li == 0 else Ab[li - 1]
                np.multiply(Zb[li], np.float32(wts[t]), out=D[li][:, cols])
            if 0 < li <= n_layers:  # delta of the layer below, over its pre-activations
                model.layers[li].backward_input(Zb[li], Zb[li - 1], Zb[li - 1],
                                                act_in=model.acts[li - 1],
                                                dropout=model.dropout, key=keys[li - 1],
                                                n_threads=nt)
    return GradientProbe(A, D, float(1.0 / (B * wts.sum())), M * B, time.perf_counter() - t0)


# ---------------------------------------------------------------------- growth
def grow_positions(indptr: np.ndarray, indices: np.ndarray, n_in: int, A: np.ndarray,
                   D: np.ndarray, scale: float, k: int, seed: int,
                   candidates: float | None = None, rng: np.random.Generator | None = None,
                   data: np.ndarray | None = None, n_threads: int = 1) -> np.ndarray:
    """The ``k`` empty positions j * n_in + i (sorted int64) of largest
    |scale * A[i, :] . D[j, :]| of a CSR layer (indptr int64 (n_out+1),
    indices int32).  ``candidates`` = c: search only c * k empty positions
    drawn uniformly (needs ``rng``; ``data``, the layer's values, only saves
    a scratch array); None: all empty positions."""
    n_out = indptr.size - 1
    n_free = n_in * n_out - int(indices.size)
    k = int(min(k, n_free))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    pos = np.empty(k, dtype=np.int64)
    score = np.empty(k, dtype=np.float32)
    n_cand = None if candidates is None else int(math.ceil(candidates * k))
    if n_cand is None or 2 * n_cand >= n_free:
        n = kernels.empty_grad_topk(indptr, indices, A, D, pos, score, scale, seed,
                                    n_threads=n_threads)
    else:
        if rng is None:
            raise ValueError("grow_positions: sampled candidates need an rng")

        values = np.zeros(indices.size, np.float32) if data is None else data

        def occupied(cand):
            flags = np.empty(cand.size, dtype=np.uint8)
            topology.occupied(indptr, indices, values, -1, -1, cand, n_in, flags,
                              n_threads=n_threads)
            return flags.view(bool)

        cand = sample_positions(n_in * n_out, n_cand, rng, occupied=occupied)
        rows = cand // n_in
        cind = (cand - rows * n_in).astype(np.int32)
        cptr = np.zeros(n_out + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_out), out=cptr[1:])
        g = np.empty(cand.size, dtype=np.float32)
        kernels.candidate_grad(cptr, cind, A, D, g, scale, n_threads=n_threads)
        n = kernels.select_topk(cand, g, pos, score, seed)
    if n != k:  # cannot happen: k <= the empty positions searched
        raise RuntimeError(f"gradient growth found {n} of {k} positions")
    pos.sort()
    return pos


def _survivors(layer: SparseLayer, keys: tuple[int, int], counts: np.ndarray, n_threads: int):
    """CSR (indptr, indices, data, velocity) of the weights SET keeps."""
    indptr = np.zeros(layer.n_out + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    n = int(indptr[-1])
    out = (np.empty(n, dtype=np.int32), np.empty(n, dtype=np.float32),
           np.empty(n, dtype=np.float32))
    topology.merge_rows(layer.indptr, layer.indices, layer.data, layer.velocity, keys[0],
                        keys[1], np.zeros(layer.n_out + 1, dtype=np.int64),
                        np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float32), indptr,
                        *out, n_threads=n_threads)
    return (indptr, *out)


def gradient_evolution(layers: Sequence[SparseLayer], probe: GradientProbe, zeta: float,
                       rng: np.random.Generator, growth: str = "gradient",
                       growth_init: str = "zero", candidates: float | None = None,
                       n_threads: int = 1) -> list[EvolutionStats]:
    """One prune-and-regrow step of ``layers`` (in place) with gradient or
    momentum growth (module docstring); ``probe`` holds A and D of each.
    SET's removal; nnz per layer kept (``gradient``) or the total kept and
    redistributed (``momentum``)."""
    if growth not in ("gradient", "momentum"):
        raise ConfigError(f"gradient_evolution: growth must be 'gradient' or 'momentum', "
                          f"got {growth!r}")
    if growth_init not in GROWTH_INITS:
        raise ConfigError(f"growth_init must be one of {', '.join(GROWTH_INITS)}")
    if not 0.0 <= zeta < 1.0:
        raise ConfigError(f"zeta must be in [0, 1), got {zeta}")
    plan = []
    for layer in layers:
        # sparse momentum's layer statistic: mean |momentum| of existing weights, before removal
        mom = float(np.abs(layer.velocity).mean()) if layer.nnz else 0.0
        key_neg, key_pos, *_ = topology.magnitude_thresholds(layer.data, zeta)
        counts = np.empty(layer.n_out, dtype=np.int64)
        topology.keep_counts(layer.indptr, layer.data, key_neg, key_pos, counts,
                             n_threads=n_threads)
        n_kept = int(counts.sum())
        plan.append(((key_neg, key_pos), counts, n_kept, layer.nnz - n_kept, mom))
    removed = np.array([p[3] for p in plan], dtype=np.int64)
    if growth == "momentum":
        room = np.array([lay.n_in * lay.n_out - p[2] for lay, p in zip(layers, plan)])
        regrow = redistribute(int(removed.sum()), [p[4] for p in plan], room)
    else:
        regrow = removed
    stats = []
    for li, (layer, (keys, counts, _, n_rm, _)) in enumerate(zip(layers, plan)):
        nnz = layer.nnz
        k = int(regrow[li])
        if n_rm == 0 and k == 0:
            stats.append(EvolutionStats(nnz, 0, 0))
            continue
        s_ptr, s_ind, s_dat, s_vel = _survivors(layer, keys, counts, n_threads)
        seed = int(rng.integers(0, 2**63))
        pos = grow_positions(s_ptr, s_ind, layer.n_in, probe.A[li], probe.D[li], probe.scale,
                             k, seed, candidates=candidates, rng=rng, data=s_dat,
                             n_threads=n_threads)
        if growth_init == "zero":
            vals = np.zeros(pos.size, dtype=np.float32)
        else:
            vals = init_values(layer.init, pos.size, layer.n_in, layer.n_out, rng,
                               density=layer.density, gain2=layer.gain2)
        rows = pos // layer.n_in
        cols = (pos - rows * layer.n_in).astype(np.int32)
        new_counts = np.bincount(rows, minlength=layer.n_out)
        new_ptr = np.zeros(layer.n_out + 1, dtype=np.int64)
        np.cumsum(new_counts, out=new_ptr[1:])
        out_ptr = np.zeros(layer.n_out + 1, dtype=np.int64)
        np.cumsum(counts + new_counts, out=out_ptr[1:])
        n_new = int(out_ptr[-1])
        out = (np.empty(n_new, dtype=np.int32), np.empty(n_new, dtype=np.float32),
               np.empty(n_new, dtype=np.float32))
        topology.merge_rows(s_ptr, s_ind, s_dat, s_vel, -1, -1, new_ptr, cols, vals, out_ptr,
                            *out, n_threads=n_threads)
        layer.set_topology(out_ptr, *out, check=False)
        stats.append(EvolutionStats(nnz, n_rm, int(pos.size)))
    return stats


def evolve_with_growth(model, X, y: np.ndarray, rng: np.random.Generator, *, zeta: float,
                       growth: str, batch_size: int, growth_batches: int | None = None,
                       growth_init: str = "zero", candidates: float | None = None,
                       dropout_seed: int = 0, step: int = 0, momentum: float = 0.9,
                       n_layers: int | None = None, get_batch: Callable | None = None
                       ) -> list[EvolutionStats]:
    """Probe the gradient on the training data (X dense sample-major float32
    or scipy.sparse, y int32 class ids) and evolve the first ``n_layers``
    weight matrices (default: all but the last) with ``growth``.
    ``get_batch``: rows -> (feature-major batch, labels), default
    :func:`batch_getter` of (X, y)."""
    if growth not in ("gradient", "momentum"):
        raise ConfigError(f"evolve_with_growth: growth must be 'gradient' or 'momentum', "
                          f"got {growth!r}")
    n_layers = model.n_layers - 1 if n_layers is None else n_layers
    if n_layers <= 0:
        return []
    M = growth_batches or DEFAULT_GROWTH_BATCHES[growth]
    get_batch = get_batch or batch_getter(X, y, model.n_threads)
    probe = collect_probe(model, get_batch, X.shape[0], batch_size,
                          M, rng, dropout_seed, step, n_layers,
                          decay=momentum if growth == "momentum" else None)
    t0 = time.perf_counter()
    stats = gradient_evolution(model.layers[:n_layers], probe, zeta, rng, growth=growth,
                               growth_init=growth_init, candidates=candidates,
                               n_threads=model.n_threads)
    log.debug("%s growth: probe %d samples %.3fs, selection %.3fs, nnz %s", growth,
              probe.n_samples, probe.seconds, time.perf_counter() - t0,
              [s.nnz_after for s in stats])
    return stats
