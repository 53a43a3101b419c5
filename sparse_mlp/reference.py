"""Slow, dense NumPy twins of the kernels, for tests only.

Everything here materialises dense n_in x n_out matrices and runs in
float64, so use it on small cases only.  Sample-major (B, n) arrays, as a
textbook would write them.
"""

from __future__ import annotations

import numpy as np

from .activations import ACT_IDENTITY, ACT_LEAKY, ACT_RELU, ACT_SIGMOID, ACT_SRELU, ACT_TANH


def dense(layer) -> np.ndarray:
    """W (n_in, n_out) of a SparseLayer as a dense float64 array."""
    return layer.to_scipy().toarray().astype(np.float64)


def mask(layer) -> np.ndarray:
    """Boolean (n_in, n_out) connectivity of a layer."""
    m = np.zeros((layer.n_in, layer.n_out), dtype=bool)
    rows = np.repeat(np.arange(layer.n_out), np.diff(layer.indptr))
    m[layer.indices, rows] = True
    return m


def act_forward(kind: int, z: np.ndarray, slope: float = 0.0,
                srelu: np.ndarray | None = None) -> np.ndarray:
    """f(z) for (..., n) arrays; srelu params (n, 4)."""
    if kind == ACT_RELU:
        return np.where(z > 0, z, 0.0)
    if kind == ACT_LEAKY:
        return np.where(z < 0, slope * z, z)
    if kind == ACT_TANH:
        return np.tanh(z)
    if kind == ACT_SIGMOID:
        return 1.0 / (1.0 + np.exp(-z))
    if kind == ACT_SRELU:
        tl, al, tr, ar = (srelu[:, c].astype(np.float64) for c in range(4))
        return np.where(z >= tr, tr + ar * (z - tr), np.where(z <= tl, tl + al * (z - tl), z))
    assert kind == ACT_IDENTITY
    return z.copy()


def act_derivative(kind: int, z: np.ndarray, slope: float = 0.0,
                   srelu: np.ndarray | None = None) -> np.ndarray:
    """f'(z), with the reference code's conventions at 0."""
    if kind == ACT_RELU:
        return (z > 0).astype(np.float64)
    if kind == ACT_LEAKY:
        return np.where(z < 0, slope, 1.0)
    if kind == ACT_TANH:
        return 1.0 - np.tanh(z) ** 2
    if kind == ACT_SIGMOID:
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    if kind == ACT_SRELU:
        tl, al, tr, ar = (srelu[:, c].astype(np.float64) for c in range(4))
        return np.where(z >= tr, ar, np.where(z <= tl, al, 1.0))
    return np.ones_like(z)


def srelu_param_grad(z: np.ndarray, g: np.ndarray, srelu: np.ndarray) -> np.ndarray:
    """Summed over the batch: d/d(t_l, a_l, t_r, a_r) of sum g * f(z), (n, 4)."""
    tl, al, tr, ar = (srelu[:, c].astype(np.float64) for c in range(4))
    right = z >= tr
    left = (z <= tl) & ~right
    out = np.empty((z.shape[-1], 4))
    out[:, 0] = (g * left * (1.0 - al)).sum(0)
    out[:, 1] = (g * left * (z - tl)).sum(0)
    out[:, 2] = (g * right * (1.0 - ar)).sum(0)
    out[:, 3] = (g * right * (z - tr)).sum(0)
    return out


def _weighted(per_sample: np.ndarray, delta: np.ndarray, w: np.ndarray | None
              ) -> tuple[float, np.ndarray]:
    """Mean over the batch of w_b * loss_b (not divided by the weights' sum)
    and the delta rows times w_b (w None: unweighted)."""
    if w is None:
        return float(per_sample.mean()), delta
    w = np.asarray(w, dtype=np.float64)
    return float((w * per_sample).mean()), delta * w[:, None]


def softmax_xent(logits: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
                 ) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and delta P - Y for (B, C) logits; with sample
    weights ``w`` (B,) the mean of w_b * loss_b and the delta rows times w_b."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    B = logits.shape[0]
    d = p.copy()
    d[np.arange(B), y] -= 1.0
    return _weighted(-np.log(p[np.arange(B), y]), d, w)


def sigmoid_mse(logits: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
                ) -> tuple[float, np.ndarray]:
    """Mean over samples of 0.5*sum_c (a - onehot)^2, and the delta (``w``:
    as :func:`softmax_xent`)."""
    a = 1.0 / (1.0 + np.exp(-logits))
    t = np.zeros_like(a)
    t[np.arange(a.shape[0]), y] = 1.0
    return _weighted(0.5 * ((a - t) ** 2).sum(axis=1), (a - t) * a * (1.0 - a), w)


def linear_mse(outputs: np.ndarray, targets: np.ndarray, w: np.ndarray | None = None
               ) -> tuple[float, np.ndarray]:
    """Regression: mean over samples of 0.5*sum_c (z - y)^2 for (B, C)
    outputs and targets, and the delta z - y (``w``: as :func:`softmax_xent`)."""
    d = outputs - targets.reshape(outputs.shape)
    return _weighted(0.5 * (d ** 2).sum(axis=1), d, w)


def mlp_loss(Ws, bs, acts, X, y, output="softmax", masks=None, keep=1.0) -> float:
    """Mean loss of a dense float64 MLP.  ``acts`` are Activation objects;
    ``masks`` the per-hidden-layer (B, n) dropout keep masks."""
    a = X
    for li, (W, b) in enumerate(zip(Ws, bs)):
        z = a @ W + b
        if li < len(Ws) - 1:
            act = acts[li]
            a = act_forward(act.kind, z, act.slope, act.params)
            if masks is not None:
                a = a * masks[li] / keep
        else:
            a = z
    fn = {"softmax": softmax_xent, "sigmoid": sigmoid_mse, "linear": linear_mse}[output]
    return fn(a, y)[0]


def set_removed(data: np.ndarray, zeta: float) -> np.ndarray:
    """Which weights SET removes, by sorting (independent of the radix
    selection): per sign-bit class of n weights, every weight whose |w| is
    <= the k-th smallest |w|, k = n - floor((1 - zeta) n)."""
    removed = np.zeros(data.size, dtype=bool)
    neg = np.signbit(data)
    mag = np.abs(data.astype(np.float64))
    for cls in (neg, ~neg):
        n = int(cls.sum())
        k = n - int((1.0 - zeta) * n)
        if k <= 0:
            continue
        t = np.sort(mag[cls])[k - 1]
        removed |= cls & (mag <= t)
    return removed
