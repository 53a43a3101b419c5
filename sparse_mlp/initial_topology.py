"""The initial topology: how many weights each layer starts with, and where.

The paper (docs/semantics.md, "Erdos-Renyi initialisation") starts every
weight matrix as an Erdos-Renyi random graph: each of the n_in * n_out
possible connections exists independently with probability

    p = min(1, eps * (n_in + n_out) / (n_in * n_out)),

so a layer holds about eps * (n_in + n_out) weights, linear in its widths
rather than quadratic.  That per-layer rule is ``--density-allocation er``
(the default); :class:`~sparse_mlp.model.SparseMLP` then draws the layers
itself with :meth:`~sparse_mlp.layers.SparseLayer.erdos_renyi`.

ERK allocation (``--density-allocation erk``, RigL's Erdos-Renyi-Kernel;
beyond the paper): the network's budget eps * sum_l (n_in + n_out) is split
with layer densities proportional to ((n_in + n_out) / (n_in * n_out)) **
power; a layer that would exceed density 1 is made dense and the rest is
re-split among the others.  For fully connected layers with power 1 the
proportions are exactly ER's (the "kernel" part only matters for
convolutions), so ERK differs from ``er`` only where ER caps a layer at
density 1 (typically a small output layer): ER then drops the excess, ERK
hands it to the other layers; ``power`` < 1 flattens the allocation towards
uniform density.  Each layer is then Erdos-Renyi at its own density.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import DENSITY_ALLOCATIONS
from .errors import ConfigError
from .layers import SparseLayer, layer_inits

__all__ = ["initial_layers", "layer_densities"]


def layer_densities(sizes: Sequence[int], epsilon: float, allocation: str = "er",
                    power: float = 1.0) -> list[float]:
    """Density of each weight matrix of a ``sizes`` network.

    ``er``: min(1, eps * (n_in + n_out) / (n_in * n_out)) per layer (the paper).
    ``erk``: RigL's ERK split of the budget eps * sum(n_in + n_out) (module
    docstring), densities proportional to ((n_in + n_out)/(n_in n_out))**power.
    """
    shapes = list(zip(sizes[:-1], sizes[1:]))
    if allocation == "er":
        return [min(1.0, epsilon * (a + b) / (a * b)) for a, b in shapes]
    if allocation != "erk":
        raise ConfigError(f"unknown density allocation {allocation!r}; choose one of "
                          f"{', '.join(DENSITY_ALLOCATIONS)}")
    n_par = np.array([a * b for a, b in shapes], dtype=np.float64)
    raw = np.array([((a + b) / (a * b)) ** power for a, b in shapes], dtype=np.float64)
    budget = epsilon * sum(a + b for a, b in shapes)
    dense = np.zeros(len(shapes), dtype=bool)
    while True:
        rest = ~dense
        if not rest.any():
            break
        c = (budget - n_par[dense].sum()) / float((raw[rest] * n_par[rest]).sum())
        if (c * raw[rest]).max() <= 1.0:
            break
        # as RigL: the layer(s) of largest raw density become dense, then re-split
        dense |= rest & (raw == raw[rest].max())
    if not (~dense).any():
        return [1.0] * len(shapes)
    return [1.0 if d else float(min(1.0, c * r)) for d, r in zip(dense, raw)]


def initial_layers(sizes: Sequence[int], epsilon: float, init: str, rng: np.random.Generator,
                   allocation: str = "er", power: float = 1.0,
                   output_init: str | None = None,
                   sampling: str = "exact",
                   gains: Sequence[float] | None = None) -> list[SparseLayer] | None:
    """The weight matrices of a new network under ``allocation``; None for
    ``er`` with ``sampling="exact"`` (SparseMLP draws those itself, exactly
    as it always has).  ``output_init``: the output layer's values (default
    ``init``); ``gains``: each layer's variance gain (layers.layer_gains; for
    ``kaiming_uniform_sparse``).

    ``sampling="exact"``: each layer is Erdos-Renyi at its density, connections
    exist independently, so nnz is Binomial(n_in * n_out, density).
    ``sampling="paper"`` (``--er-sampling paper``, the authors' ``normal``
    path): density * n_in * n_out positions drawn with replacement, duplicates
    merged (:func:`~sparse_mlp.layers.er_positions_paper`), so fewer weights
    where the density is high (Madelon: ~19,000 instead of ~19,800)."""
    if allocation == "er" and sampling == "exact":
        return None
    gains = list(gains) if gains is not None else [2.0] * (len(sizes) - 1)
    if allocation == "er":
        inits = layer_inits(len(sizes) - 1, init, output_init)
        return [SparseLayer.erdos_renyi(a, b, epsilon, init_l, rng, sampling=sampling, gain2=g)
                for a, b, init_l, g in zip(sizes[:-1], sizes[1:], inits, gains)]
    dens = layer_densities(sizes, epsilon, allocation, power)
    out = []
    inits = layer_inits(len(dens), init, output_init)
    for (a, b), d, init_l, g in zip(zip(sizes[:-1], sizes[1:]), dens, inits, gains):
        eps_l = d * a * b / (a + b) if d < 1.0 else 2.0 * a * b / (a + b)  # capped at 1
        out.append(SparseLayer.erdos_renyi(a, b, eps_l, init_l, rng, sampling=sampling,
                                           gain2=g))
    return out
