"""Memory estimate of a configuration, checked before anything is allocated.

Counts what the engine will hold (all float32 / int32 unless noted):
  weights       per weight: index 4 + value 4 + momentum 4 + transposed
                index 8 = 20 bytes; per neuron: bias, bias momentum, indptr
  evolution     the SET step of the largest layer builds the new arrays
                next to the old ones: ~ 28 bytes per weight of that layer
  train batch   per hidden layer Z and A (n x B), the output logits, the
                input batch; dropout masks are never stored
  eval batch    two ping-pong blocks of the widest layer plus the input block
  dataset       the training and test matrices (already loaded by then)
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from .errors import MemoryBudgetError
from .layers import BYTES_PER_WEIGHT, expected_nnz

GiB = 1024**3
EVOLUTION_BYTES_PER_WEIGHT = 28  # new indices/data/velocity + positions + transposed index


@dataclass
class MemoryEstimate:
    weights: int
    evolution: int
    train_batch: int
    eval_batch: int
    dataset: int
    nnz: int

    @property
    def total(self) -> int:
        return self.weights + self.evolution + self.train_batch + self.eval_batch + self.dataset

    def lines(self) -> list[str]:
        def f(b: int) -> str:
            return f"{b / GiB:8.3f} GiB"
        return [f"weights + optimiser state ({self.nnz:,} weights): {f(self.weights)}",
                f"topology evolution (transient)            : {f(self.evolution)}",
                f"training batch activations                : {f(self.train_batch)}",
                f"evaluation batch activations              : {f(self.eval_batch)}",
                f"dataset                                   : {f(self.dataset)}",
                f"total                                     : {f(self.total)}"]


def train_batch_bytes(sizes: list[int], batch: int) -> int:
    hidden = sum(sizes[1:-1])
    return 4 * batch * (2 * hidden + sizes[-1] + sizes[0])


def estimate(sizes: list[int], epsilon: float, batch: int, eval_batch: int = 1024,
             n_samples: int = 0, srelu: bool = False) -> MemoryEstimate:
    """Estimate the bytes a run needs.  ``n_samples`` counts train + test rows."""
    nnz_layers = [expected_nnz(a, b, epsilon) for a, b in zip(sizes[:-1], sizes[1:])]
    nnz = sum(nnz_layers)
    neurons = sum(sizes[1:])
    weights = BYTES_PER_WEIGHT * nnz + 16 * neurons + 8 * sum(sizes)
    if srelu:
        weights += 32 * sum(sizes[1:-1])
    evolution = EVOLUTION_BYTES_PER_WEIGHT * max(nnz_layers[:-1] or [0])
    eval_b = 4 * eval_batch * (2 * max(sizes[1:]) + sizes[0])
    return MemoryEstimate(weights, evolution, train_batch_bytes(sizes, batch), eval_b,
                          4 * n_samples * sizes[0], nnz)


def available_bytes() -> int:
    """Memory this process can still take (available RAM)."""
    return int(psutil.virtual_memory().available)


def largest_batch(sizes: list[int], budget: int) -> int:
    """The largest training batch whose activations fit in ``budget`` bytes."""
    per_sample = train_batch_bytes(sizes, 1)
    return max(0, budget // per_sample)


def check_fits(est: MemoryEstimate, sizes: list[int], batch: int,
               available: int | None = None, already_loaded: bool = True) -> None:
    """Raise MemoryBudgetError (with a suggested batch) when the estimate
    does not fit in the available memory.  ``already_loaded``: the dataset
    is in memory already, so it is not counted against what is available."""
    avail = available_bytes() if available is None else available
    need = est.total - (est.dataset if already_loaded else 0)
    if need <= 0.9 * avail:
        return
    fixed = need - est.train_batch
    room = int(0.9 * avail) - fixed
    suggestion = largest_batch(sizes, room) if room > 0 else 0
    advice = (f"a batch of at most {suggestion} would fit (--batch-size {suggestion})"
              if suggestion >= 1 else
              "even a batch of 1 does not fit: lower --epsilon or the layer widths (--hidden)")
    raise MemoryBudgetError(
        f"this model needs about {need / GiB:.2f} GiB but only {avail / GiB:.2f} GiB is "
        f"available (batch {batch}):\n  " + "\n  ".join(est.lines()) + f"\n{advice}.")
