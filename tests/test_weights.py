"""Sample and class weights (issue 18): inside the loss kernels, against
the NumPy twins, bit-identical with all-ones weights, the same for any
thread count; the estimators' sample_weight / class_weight and the CLI's
--class-weight balanced."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_classification

from sparse_mlp import SparseMLPClassifier, SparseMLPRegressor
from sparse_mlp import reference as ref
from sparse_mlp.config import TrainConfig
from sparse_mlp.kernels import activation as K
from sparse_mlp.model import SparseMLP
from sparse_mlp.training import RandomStreams, Trainer, class_weights


def _block(C=5, B=37, seed=0):
    rng = np.random.default_rng(seed)
    Z = (rng.standard_normal((C, B)) * 2).astype(np.float32)
    y = rng.integers(0, C, B).astype(np.int32)
    w = rng.uniform(0.0, 3.0, B).astype(np.float32)
    T = rng.standard_normal((B, C)).astype(np.float32)
    return Z, y, w, T


@pytest.mark.parametrize("kind", ["softmax", "sigmoid", "linear"])
def test_weighted_loss_kernels_match_numpy(kind):
    Z, y, w, T = _block()
    B = Z.shape[1]
    target = T if kind == "linear" else y
    kern = {"softmax": K.softmax_xent, "sigmoid": K.sigmoid_mse, "linear": K.linear_mse}[kind]
    twin = {"softmax": ref.softmax_xent, "sigmoid": ref.sigmoid_mse,
            "linear": ref.linear_mse}[kind]
    loss_ref, d_ref = twin(Z.T.astype(np.float64), target if kind != "linear"
                           else T.astype(np.float64), w.astype(np.float64))
    D = Z.copy()
    loss, _ = kern(D, target, True, w, n_threads=2)
    np.testing.assert_allclose(loss / B, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(D.T, d_ref, rtol=1e-4, atol=1e-6)
    # 1 and 2 threads: bit-identical deltas and loss
    D1 = Z.copy()
    loss1, c1 = kern(D1, target, True, w, n_threads=1)
    np.testing.assert_array_equal(D1, D)
    assert loss1 == loss
    # all-ones weights: bit-identical to no weights
    Dn, Do = Z.copy(), Z.copy()
    assert kern(Dn, target, True, None, n_threads=2) == kern(Do, target, True,
                                                             np.ones(B, np.float32), n_threads=2)
    np.testing.assert_array_equal(Dn, Do)
    with pytest.raises(ValueError, match="sample_weight"):
        kern(Z.copy(), target, True, w[:-1])


@pytest.mark.parametrize("output", ["softmax", "linear"])
def test_train_step_with_unit_weights_is_bit_identical(output):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 64)).astype(np.float32)
    y = (rng.standard_normal((64, 3)).astype(np.float32) if output == "linear"
         else rng.integers(0, 3, 64).astype(np.int32))

    def run(weights, micro):
        m = SparseMLP([16, 30, 20, 3], epsilon=5, activation="allrelu", alpha=0.5,
                      output=output, dropout=0.2, rng=np.random.default_rng(0), n_threads=2)
        for step in range(3):
            m.train_step(X, y, 0.01, 0.9, 2e-4, m.dropout_keys(7, step), micro_batch=micro,
                         sample_weight=weights)
        return [lay.data.copy() for lay in m.layers] + [lay.bias.copy() for lay in m.layers]

    for micro in (None, 16):
        for a, b in zip(run(None, micro), run(np.ones(64, np.float32), micro)):
            np.testing.assert_array_equal(a, b)
    # a weight of 0 removes a sample: same step as the batch without it would give
    # (times B'/B: the mean is over the batch size), and weights do change the step
    w = np.ones(64, np.float32)
    w[::2] = 0.0
    changed = run(w, None)
    assert not all(np.array_equal(a, b) for a, b in zip(changed, run(None, None)))


def test_estimator_unit_weights_and_scale_invariance():
    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]
    kw = dict(hidden_layer_sizes=(40,), max_iter=3, random_state=0)
    base = SparseMLPClassifier(**kw).fit(X, y).predict_proba(X)
    ones = SparseMLPClassifier(**kw).fit(X, y, sample_weight=np.ones(400)).predict_proba(X)
    np.testing.assert_array_equal(base, ones)
    twos = SparseMLPClassifier(**kw).fit(X, y, sample_weight=np.full(400, 2.0)).predict_proba(X)
    np.testing.assert_array_equal(base, twos)      # rescaled to mean 1: the same weights
    # class_weight dict == the same weights as sample_weight
    cw = {c: 1.0 + c / 10 for c in range(10)}
    a = SparseMLPClassifier(class_weight=cw, **kw).fit(X, y).predict_proba(X)
    b = SparseMLPClassifier(**kw).fit(X, y, sample_weight=[cw[c] for c in y]).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    Xr, yr = X[:, :20], X[:, 20] + X[:, 30]
    r0 = SparseMLPRegressor(**kw).fit(Xr, yr).predict(Xr)
    r1 = SparseMLPRegressor(**kw).fit(Xr, yr, sample_weight=np.ones(400)).predict(Xr)
    np.testing.assert_array_equal(r0, r1)
    with pytest.raises(ValueError, match="sums to 0|non-zero"):
        SparseMLPClassifier(**kw).fit(X, y, sample_weight=np.zeros(400))
    with pytest.raises(ValueError, match="non-negative"):
        SparseMLPClassifier(**kw).fit(X, y, sample_weight=-np.ones(400))


def test_balanced_class_weight_helps_the_minority_class():
    X, y = make_classification(3000, n_features=20, n_informative=5, weights=[0.93, 0.07],
                               class_sep=0.6, random_state=0)
    Xt, yt = X[2000:], y[2000:]
    kw = dict(hidden_layer_sizes=(64,), max_iter=15, random_state=0)
    plain = SparseMLPClassifier(**kw).fit(X[:2000], y[:2000])
    bal = SparseMLPClassifier(class_weight="balanced", **kw).fit(X[:2000], y[:2000])
    recall = [((m.predict(Xt) == 1) & (yt == 1)).sum() / (yt == 1).sum() for m in (plain, bal)]
    assert recall[1] > recall[0] + 0.1
    with pytest.raises(ValueError, match="balanced"):
        SparseMLPClassifier(class_weight="balanced").partial_fit(X[:50], y[:50], classes=[0, 1])


def test_cli_class_weight_balanced_in_the_trainer():
    """--class-weight balanced: sklearn's n / (k * count) per sample, mean 1,
    handed to every batch's loss kernel."""
    y = np.array([0, 0, 0, 1, 2, 2], np.int32)
    np.testing.assert_allclose(class_weights(y, "balanced", 3), [6 / 9, 6 / 3, 6 / 6])
    assert class_weights(y, None) is None
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 8)).astype(np.float32)
    yy = (rng.random(64) < 0.2).astype(np.int32)
    cfg = TrainConfig(hidden=[16], epochs=1, batch_size=16, class_weight="balanced", epsilon=4,
                      eval_every=1)
    cfg.validate()
    m = SparseMLP([8, 16, 2], epsilon=4, activation="allrelu", alpha=0.6,
                  rng=np.random.default_rng(0), n_threads=1)
    tr = Trainer(cfg, m, X, yy, X, yy, RandomStreams(0))
    assert tr.w_train.dtype == np.float32 and tr.w_train.mean() == pytest.approx(1.0)
    seen = []
    step = m.train_step
    m.train_step = lambda *a, **k: seen.append(k["sample_weight"]) or step(*a, **k)
    tr.run(progress=False)
    assert len(seen) == 4 and all(s is not None and s.shape == (16,) for s in seen)
    with pytest.raises(Exception, match="class-weight"):
        TrainConfig(class_weight="auto").validate()
