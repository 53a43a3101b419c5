"""One layer's backward pass and update on one thread, two ways: the fused
pass updating weight and momentum through the transposed index's
permutation (``backward_update`` in place), against the split one (the
gradient written through the permutation, then ``apply_gradient`` in the
weights' own order).  Why model.py splits on one thread only from
SPLIT_UPDATE_MIN_1T weights.  Then the first layer (no gradient to the
inputs), on 1 and 2 threads: its fused gradient and update
(``SparseLayer.update``) against the gradient pass (``gradient``) plus the
update pass (``apply_gradient``), on the first layers of Madelon, Higgs,
FashionMNIST and CIFAR10.  Microseconds per call, best of 9 rounds of 500
calls (the first layers: 5 rounds of 300).

With ``--threads``: the split pass of the hidden layers of the epoch
benchmark's shapes on 1 and 2 threads, its gradient written through the
permutation (the weights' own order) against written in the transposed
index's order and read back through its inverse (``grads_t`` and
``apply_gradient(transposed=True)``, what model.py does,
model.TRANSPOSED_GRADIENT).  The four variants take turns,
round after round (the machine's noise hits them alike); best of 15 rounds
of 100 calls, microseconds per backward pass and update.

    python bench/bench_split_update.py [--threads]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_layers import best_time  # noqa: E402
from sparse_mlp.kernels import aligned_empty  # noqa: E402
from sparse_mlp.layers import SparseLayer  # noqa: E402

SHAPES = [(400, 100, 10, 32), (100, 400, 10, 32), (400, 400, 10, 32), (1000, 1000, 10, 32),
          (300, 300, 10, 128), (500, 500, 10, 128), (1000, 1000, 10, 128)]


def _layer_and_blocks(rng, n_in, n_out, eps, B, init, d_scale=1.0):
    """A random layer, its input block X and delta D (64-byte aligned rows, as
    the Trainer's), and gradient arrays for it."""
    layer = SparseLayer.erdos_renyi(n_in, n_out, eps, init, rng)
    X = aligned_empty((n_in, B))
    X[...] = rng.standard_normal((n_in, B))
    D = aligned_empty((n_out, B))
    D[...] = rng.standard_normal((n_out, B)) * d_scale
    return layer, X, D, np.empty(layer.nnz, np.float32), np.empty(n_out, np.float32)


def main() -> None:
    rng = np.random.default_rng(0)
    print("n_in n_out B nnz: us per call, one thread: fused (update in place) | split "
          "(gradient through the permutation + apply) = its two calls | gradient in "
          "transposed order (no permutation, no update)")
    for n_in, n_out, eps, B in SHAPES:
        layer, X, D, g, bg = _layer_and_blocks(rng, n_in, n_out, eps, B, "normal")
        G = aligned_empty((n_in, B))
        wt = layer.weights_transposed(np.empty(layer.nnz, np.float32))

        def fused(layer=layer, X=X, D=D, G=G):
            layer.backward_update(X, D, G, 1e-6, 0.9, 0.0, n_threads=1)

        def grads(layer=layer, X=X, D=D, G=G, g=g, bg=bg):
            layer.backward_update(X, D, G, 1e-6, 0.9, 0.0, grads=(g, bg), n_threads=1)

        def apply(layer=layer, g=g, bg=bg):
            layer.apply_gradient(g, bg, 1e-6, 0.9, 0.0, n_threads=1)

        def split():
            grads()
            apply()

        def in_order(layer=layer, X=X, D=D, G=G, g=g, bg=bg, wt=wt):
            layer.backward_update(X, D, G, 1e-6, 0.9, 0.0, grads=(g, bg), weights_t=wt,
                                  n_threads=1)

        t = {name: best_time(fn, 9, 500) * 1e6 for name, fn in
             (("fused", fused), ("split", split), ("grads", grads), ("apply", apply),
              ("in_order", in_order))}
        print(f"{n_in} {n_out} {B} {layer.nnz}: fused {t['fused']:.1f} | split "
              f"{t['split']:.1f} = {t['grads']:.1f} + {t['apply']:.1f} | in order "
              f"{t['in_order']:.1f}", flush=True)

    print("first layers, n_in n_out eps B nnz: us per call, fused update | gradient pass "
          "+ update pass")
    for n_in, n_out, eps, B in FIRST_LAYERS:
        layer, X, D, g, bg = _layer_and_blocks(rng, n_in, n_out, eps, B, "he_uniform", 0.01)
        for t in (1, 2):
            def update(layer=layer, X=X, D=D, t=t):
                layer.update(X, D, 1e-4, 0.9, 2e-4, n_threads=t)

            def two_passes(layer=layer, X=X, D=D, g=g, bg=bg, t=t):
                layer.gradient(X, D, g, bg, n_threads=t)
                layer.apply_gradient(g, bg, 1e-4, 0.9, 2e-4, n_threads=t)
            fused_us = best_time(update, 5, 300) * 1e6
            split_us = best_time(two_passes, 5, 300) * 1e6
            print(f"{n_in} {n_out} {eps} {B} {layer.nnz}, {t} thread(s): fused {fused_us:.1f} | "
                  f"split {split_us:.1f}", flush=True)


FIRST_LAYERS = [(500, 400, 10, 32), (28, 1000, 10, 128), (784, 1000, 20, 128),
                (3072, 4000, 20, 128)]
# the hidden layers past the first of bench_epoch.py's shapes, batch 128
HIDDEN_LAYERS = [(1000, 1000, 10, 128), (1000, 1000, 20, 128), (4000, 1000, 20, 128),
                 (1000, 4000, 20, 128)]


def thread_orders(rounds: int = 15, inner: int = 100) -> None:
    """The split pass on 1 and 2 threads, gradient in the weights' order or
    in the transposed index's (see the module's docstring)."""
    rng = np.random.default_rng(0)
    print("n_in n_out eps B nnz: us per backward pass + update, best of "
          f"{rounds} interleaved rounds of {inner}: own order 1T / 2T (2T/1T speed-up) | "
          "transposed order 1T / 2T (speed-up)")
    for n_in, n_out, eps, B in HIDDEN_LAYERS:
        layer, X, D, g, bg = _layer_and_blocks(rng, n_in, n_out, eps, B, "normal")
        G = aligned_empty((n_in, B))
        layer.t_inverse()  # (built once per topology, as in training)

        def split(t, grads_t, layer=layer, X=X, D=D, G=G, g=g, bg=bg):
            layer.backward_update(X, D, G, 1e-6, 0.9, 0.0, grads=(g, bg), grads_t=grads_t,
                                  n_threads=t)
            layer.apply_gradient(g, bg, 1e-6, 0.9, 0.0, n_threads=t, transposed=grads_t)

        variants = [(t, order) for order in (False, True) for t in (1, 2)]
        best = dict.fromkeys(variants, float("inf"))
        for v in variants:
            split(*v)
        for _ in range(rounds):
            for v in variants:
                best[v] = min(best[v], best_time(lambda v=v: split(*v), 1, inner))
        us = {v: best[v] * 1e6 for v in variants}
        print(f"{n_in} {n_out} {eps} {B} {layer.nnz}: own order {us[(1, False)]:.1f} / "
              f"{us[(2, False)]:.1f} ({us[(1, False)] / us[(2, False)]:.2f}x) | transposed "
              f"order {us[(1, True)]:.1f} / {us[(2, True)]:.1f} "
              f"({us[(1, True)] / us[(2, True)]:.2f}x)", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--threads"]:
        thread_orders()
    elif sys.argv[1:]:
        sys.exit("usage: python bench/bench_split_update.py [--threads]")
    else:
        main()
