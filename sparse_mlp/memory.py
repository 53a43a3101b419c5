"""Memory estimate of a configuration, checked before anything is allocated.

Counts what the engine will hold (all float32 / int32 unless noted):
  weights       per weight: index 4 + value 4 + momentum 4 + transposed
                index 8 = 20 bytes; per neuron: bias, bias momentum, indptr
  gradients     with micro-batches, a batch-mean gradient accumulator:
                4 bytes per weight and per neuron, and a scratch of the
                largest layer (its weights gathered into transposed order,
                model._accumulators); else the scratch of the
                split update (one layer, model.SPLIT_UPDATE_MAX weights at
                most) and, for every layer but the first of at most that
                many weights, the inverse of its transposed index's
                permutation (4 bytes per weight, SparseLayer.t_inverse: the
                split update reads its gradient through it)
  evolution     the SET step of the largest layer builds the new arrays
                next to the old ones: ~ 28 bytes per weight of that layer
  train batch   'fast': Z and A of every hidden layer (n x B), 'lean': Z of
                every hidden layer plus two scratch blocks of the widest one;
                plus the output logits and the input batch.  Dropout masks
                are never stored.  With micro-batches, B is the micro-batch.
  eval batch    two ping-pong blocks of the widest layer plus the input block;
                when memory is tight (lean or micro-batches) the evaluation
                block is no larger than the training block, and likewise when
                a block of --eval-batch-size samples would take over 1 GiB;
                'lean' runs never hold training and evaluation blocks at once
  dataset       the training and test matrices (already loaded by then)

:func:`plan` picks the cheapest way to run a batch that fits: 'fast'
activations, else 'lean', else 'lean' with the largest micro-batch (a
divisor of the batch) that fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from .errors import MemoryBudgetError
from .layers import BYTES_PER_WEIGHT, expected_nnz
from .model import SPLIT_UPDATE_MAX

GiB = 1024**3
EVOLUTION_BYTES_PER_WEIGHT = 28  # new indices/data/velocity + positions + transposed index
HEADROOM = 0.9                   # use at most this fraction of the available memory
EVAL_BLOCK_BYTES = GiB           # larger evaluation blocks shrink to the training block


@dataclass
class MemoryEstimate:
    weights: int
    gradients: int
    evolution: int
    train_batch: int
    eval_batch: int
    dataset: int
    nnz: int
    batch: int = 0
    micro_batch: int = 0
    activation_memory: str = "fast"
    eval_block: int = 1024

    @property
    def total(self) -> int:
        # 'lean' runs free the training blocks before evaluating and back
        activations = (max(self.train_batch, self.eval_batch) if self.activation_memory == "lean"
                       else self.train_batch + self.eval_batch)
        return self.weights + self.gradients + self.evolution + activations + self.dataset

    def lines(self) -> list[str]:
        def f(b: int) -> str:
            return f"{b / GiB:9.3f} GiB"
        not_at_once = " (not with training)" if self.activation_memory == "lean" else ""
        mb = (f", micro-batches of {self.micro_batch}"
              if self.micro_batch and self.micro_batch < self.batch else "")
        return [f"weights + optimiser state ({self.nnz:,} weights)   : {f(self.weights)}",
                f"gradient accumulators / update scratch         : {f(self.gradients)}",
                f"topology evolution (transient)                 : {f(self.evolution)}",
                f"training activations (batch {self.batch}, {self.activation_memory}{mb})"
                .ljust(47) + f": {f(self.train_batch)}",
                (f"evaluation activations{not_at_once}".ljust(47)
                 + f": {f(self.eval_batch)}"),
                f"dataset                                        : {f(self.dataset)}",
                f"total                                          : {f(self.total)}"]


def train_batch_bytes(sizes: list[int], batch: int, lean: bool = False) -> int:
    """Activation bytes of one training (micro-)batch."""
    hidden = sizes[1:-1]
    per_sample = sizes[0] + sizes[-1]
    if lean:
        per_sample += sum(hidden) + 2 * max(hidden, default=0)
    else:
        per_sample += 2 * sum(hidden)
    return 4 * batch * per_sample


def eval_batch_bytes(sizes: list[int], block: int) -> int:
    """Activation bytes of one inference block."""
    return 4 * block * (2 * max(sizes[1:]) + sizes[0])


def estimate(sizes: list[int], epsilon: float, batch: int, eval_batch: int = 1024,
             n_samples: int = 0, srelu: bool = False, activation_memory: str = "fast",
             micro_batch: int | None = None) -> MemoryEstimate:
    """Estimate the bytes a run needs.  ``n_samples`` counts train + test rows."""
    nnz_layers = [expected_nnz(a, b, epsilon) for a, b in zip(sizes[:-1], sizes[1:])]
    nnz = sum(nnz_layers)
    neurons = sum(sizes[1:])
    weights = BYTES_PER_WEIGHT * nnz + 16 * neurons + 8 * sum(sizes)
    if srelu:
        weights += 32 * sum(sizes[1:-1])
    mb = batch if not micro_batch or micro_batch >= batch else micro_batch
    # micro-batches: a gradient accumulator per weight and a scratch of the largest
    # layer but the first (its weights in transposed order); else the scratch of
    # the split update (any layer, the first too; model.SPLIT_UPDATE_MAX weights at most)
    # and the inverse permutations of the split layers but the first
    gradients = (4 * (nnz + neurons) + 4 * (max(nnz_layers[1:] or [0]) + max(sizes))
                 if mb < batch
                 else 4 * (min(max(nnz_layers or [0]), SPLIT_UPDATE_MAX) + max(sizes)
                           + sum(n for n in nnz_layers[1:] if n <= SPLIT_UPDATE_MAX)))
    evolution = EVOLUTION_BYTES_PER_WEIGHT * max(nnz_layers[:-1] or [0])
    tight = (activation_memory == "lean" or mb < batch
             or eval_batch_bytes(sizes, eval_batch) > EVAL_BLOCK_BYTES)
    block = max(1, min(eval_batch, mb) if tight else eval_batch)
    return MemoryEstimate(weights, gradients, evolution,
                          train_batch_bytes(sizes, mb, activation_memory == "lean"),
                          eval_batch_bytes(sizes, block), 4 * n_samples * sizes[0], nnz,
                          batch, mb, activation_memory, block)


def available_bytes() -> int:
    """Memory this process can still take (available RAM)."""
    return int(psutil.virtual_memory().available)


def _divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def _first_fit(sizes, epsilon, batch, eval_batch, n_samples, srelu, activation_memory,
               micro_batch, avail, already_loaded) -> tuple[MemoryEstimate | None,
                                                             MemoryEstimate]:
    """(the cheapest plan that fits or None, the last plan tried): :func:`plan`'s search."""
    budget = HEADROOM * avail
    modes = ["fast", "lean"] if activation_memory == "auto" else [activation_memory]
    micro = _divisors_desc(batch) if micro_batch is None else [min(micro_batch, batch)]
    last = None
    for mode in modes:
        for mb in micro:
            est = estimate(sizes, epsilon, batch, eval_batch, n_samples, srelu, mode, mb)
            last = est
            if est.total - (est.dataset if already_loaded else 0) <= budget:
                return est, est
            if micro_batch is None and mode != modes[-1]:
                break  # try the next (leaner) mode before cutting the batch
    return None, last


def plan(sizes: list[int], epsilon: float, batch: int, eval_batch: int = 1024,
         n_samples: int = 0, srelu: bool = False, activation_memory: str = "auto",
         micro_batch: int | None = None, available: int | None = None,
         already_loaded: bool = True) -> MemoryEstimate:
    """The cheapest way to train a batch that fits in memory.

    ``activation_memory`` 'auto' tries 'fast' then 'lean'; ``micro_batch``
    None tries the whole batch then ever smaller divisors of it.  Raises
    :class:`MemoryBudgetError` (with the largest batch that would fit) when
    nothing fits.  ``already_loaded``: the dataset is in memory already, so
    it is not counted against what is available."""
    avail = available_bytes() if available is None else available
    est, last = _first_fit(sizes, epsilon, batch, eval_batch, n_samples, srelu,
                           activation_memory, micro_batch, avail, already_loaded)
    if est is not None:
        return est
    need = last.total - (last.dataset if already_loaded else 0)
    fits = largest_batch(sizes, epsilon, eval_batch, n_samples, srelu, avail, already_loaded)
    advice = (f"--batch-size {fits} would fit (lean activations, no micro-batches)"
              if fits >= 1 else
              "even a batch of 1 does not fit: " + size_advice(
                  sizes, epsilon, batch, eval_batch, n_samples, srelu, avail, already_loaded))
    raise MemoryBudgetError(
        f"this model needs about {need / GiB:.2f} GiB but only {avail / GiB:.2f} GiB is "
        f"available:\n  " + "\n  ".join(last.lines()) + f"\n{advice}.")


def _hidden_text(hidden: list[int]) -> str:
    """--hidden as the user would type it (WxL when every width is W)."""
    if len(hidden) > 1 and len(set(hidden)) == 1:
        return f"{hidden[0]}x{len(hidden)}"
    return ",".join(str(h) for h in hidden)


def largest_networks(sizes: list[int], epsilon: float, batch: int = 1, eval_batch: int = 1024,
                     n_samples: int = 0, srelu: bool = False, available: int | None = None,
                     already_loaded: bool = True) -> dict[str, list[int] | None]:
    """The largest networks like ``sizes`` that :func:`plan` accepts at this
    batch (any activation memory, any micro-batch): 'depth', the same hidden
    width with fewer hidden layers (when every hidden layer has one width);
    'width', every hidden width scaled down by one factor, as many layers.
    None where none fits."""
    avail = available_bytes() if available is None else available
    n_in, hidden, n_out = sizes[0], list(sizes[1:-1]), sizes[-1]

    def fits(h: list[int]) -> bool:
        return _first_fit([n_in, *h, n_out], epsilon, batch, eval_batch, n_samples, srelu,
                          "auto", None, avail, already_loaded)[0] is not None

    out: dict[str, list[int] | None] = {"depth": None, "width": None}
    if len(hidden) > 1 and len(set(hidden)) == 1:
        lo, hi = 0, len(hidden) - 1  # the most layers that fit, by bisection
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(hidden[:mid]):
                lo = mid
            else:
                hi = mid - 1
        out["depth"] = hidden[:lo] if lo >= 1 else None
    lo_f, hi_f = 0.0, 1.0  # the largest scale of the widths that fits
    for _ in range(30):
        mid_f = (lo_f + hi_f) / 2
        if fits([max(1, int(h * mid_f)) for h in hidden]):
            lo_f = mid_f
        else:
            hi_f = mid_f
    width = [max(1, int(h * lo_f)) for h in hidden]
    out["width"] = width if lo_f > 0 and fits(width) else None
    return out


def size_advice(sizes: list[int], epsilon: float, batch: int = 1, eval_batch: int = 1024,
                n_samples: int = 0, srelu: bool = False, available: int | None = None,
                already_loaded: bool = True) -> str:
    """What the largest networks that would fit are, as a sentence."""
    best = largest_networks(sizes, epsilon, batch, eval_batch, n_samples, srelu, available,
                            already_loaded)
    options = []
    if best["depth"]:
        options.append(f"{len(best['depth'])} hidden layers instead of {len(sizes) - 2}: "
                       f"--hidden {_hidden_text(best['depth'])}")
    if best["width"]:
        options.append(f"narrower layers, as many: --hidden {_hidden_text(best['width'])}")
    if not options:
        return "no network of this shape fits: lower --epsilon or free memory"
    return "the largest that would fit: " + "; or ".join(options)


def largest_batch(sizes: list[int], epsilon: float, eval_batch: int = 1024,
                  n_samples: int = 0, srelu: bool = False, available: int | None = None,
                  already_loaded: bool = True, activation_memory: str = "lean") -> int:
    """The largest training batch (no micro-batches) that fits."""
    avail = available_bytes() if available is None else available
    lean = activation_memory == "lean"
    base = estimate(sizes, epsilon, 1, 1, n_samples, srelu, activation_memory)
    fixed = (base.weights + base.gradients + base.evolution
             + (0 if already_loaded else base.dataset))
    room = HEADROOM * avail - fixed
    per_sample = (max if lean else (lambda a, b: a + b))(
        train_batch_bytes(sizes, 1, lean), eval_batch_bytes(sizes, 1))
    return max(0, int(room // per_sample))


def check_fits(est: MemoryEstimate, sizes: list[int], batch: int,
               available: int | None = None, already_loaded: bool = True) -> None:
    """Raise MemoryBudgetError (with a suggested batch) when ``est`` does not
    fit in the available memory."""
    avail = available_bytes() if available is None else available
    need = est.total - (est.dataset if already_loaded else 0)
    if need <= HEADROOM * avail:
        return
    room = int(HEADROOM * avail) - (need - est.train_batch)
    per_sample = train_batch_bytes(sizes, 1, est.activation_memory == "lean")
    suggestion = max(0, room // per_sample) if room > 0 else 0
    advice = (f"a batch of at most {suggestion} would fit (--batch-size {suggestion})"
              if suggestion >= 1 else
              "even a batch of 1 does not fit: lower --epsilon or the layer widths (--hidden)")
    raise MemoryBudgetError(
        f"this model needs about {need / GiB:.2f} GiB but only {avail / GiB:.2f} GiB is "
        f"available (batch {batch}):\n  " + "\n  ".join(est.lines()) + f"\n{advice}.")
