"""Finite-difference gradient check of whole 3-layer sparse networks.

The kernels compute float32 gradients; the finite differences are taken on
a float64 dense twin of the same network (same topology, same dropout
masks), so the check measures the kernels, not float32 round-off.
"""

from __future__ import annotations

import numpy as np
import pytest

from sparse_mlp import reference as ref
from sparse_mlp.activations import HIDDEN_ACTIVATIONS
from sparse_mlp.kernels import activation as K_act
from sparse_mlp.model import SparseMLP


def _twin(model):
    Ws = [ref.dense(lay) for lay in model.layers]
    bs = [lay.bias.astype(np.float64) for lay in model.layers]
    return Ws, bs


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradients_match_finite_differences(activation, output):
    rng = np.random.default_rng(3)
    sizes = [12, 10, 9, 4]
    model = SparseMLP(sizes, epsilon=3, activation=activation, alpha=0.6, init="he_uniform",
                      output=output, dropout=0.25, rng=rng, n_threads=1)
    for lay in model.layers:
        lay.bias[:] = rng.normal(0, 0.3, lay.n_out).astype(np.float32)
    if activation == "srelu":
        for a in model.acts:  # thresholds spread so every region is exercised
            a.params[:, 0] = rng.uniform(-0.6, -0.1, a.params.shape[0])
            a.params[:, 2] = rng.uniform(0.1, 0.6, a.params.shape[0])
    B = 16
    X = rng.standard_normal((B, sizes[0]))
    y = rng.integers(0, sizes[-1], B).astype(np.int32)
    keys = model.dropout_keys(seed=9, step=4)
    masks = [K_act.dropout_mask(n, B, 0.25, k).T.astype(np.float64)
             for n, k in zip(sizes[1:-1], keys)]

    loss32, grads, sgs = model.gradients(np.ascontiguousarray(X.T, np.float32), y, keys)
    Ws, bs = _twin(model)
    acts = model.acts

    def loss_fn():
        return ref.mlp_loss(Ws, bs, acts, X.astype(np.float32).astype(np.float64), y, output,
                            masks=masks, keep=0.75)

    assert loss32 == pytest.approx(loss_fn(), rel=1e-4)
    h = 1e-6
    for li, lay in enumerate(model.layers):
        g, bg = grads[li]
        rows = np.repeat(np.arange(lay.n_out), lay.row_lengths())
        pick = rng.choice(lay.nnz, size=min(12, lay.nnz), replace=False)
        for k in pick:
            i, j = lay.indices[k], rows[k]
            w0 = Ws[li][i, j]
            Ws[li][i, j] = w0 + h
            lp = loss_fn()
            Ws[li][i, j] = w0 - h
            lm = loss_fn()
            Ws[li][i, j] = w0
            fd = (lp - lm) / (2 * h)
            assert g[k] == pytest.approx(fd, rel=2e-3, abs=2e-6), (li, k)
        for j in range(lay.n_out):
            b0 = bs[li][j]
            bs[li][j] = b0 + h
            lp = loss_fn()
            bs[li][j] = b0 - h
            lm = loss_fn()
            bs[li][j] = b0
            assert bg[j] == pytest.approx((lp - lm) / (2 * h), rel=2e-3, abs=2e-6)
    if activation == "srelu":
        for h_i, act in enumerate(acts):
            params64 = act.params.astype(np.float64)
            saved = act.params
            act.params = params64
            for n in range(0, params64.shape[0], 3):
                for c in range(4):
                    p0 = params64[n, c]
                    params64[n, c] = p0 + h
                    lp = loss_fn()
                    params64[n, c] = p0 - h
                    lm = loss_fn()
                    params64[n, c] = p0
                    assert sgs[h_i][n, c] == pytest.approx((lp - lm) / (2 * h), rel=2e-3,
                                                           abs=2e-6)
            act.params = saved
