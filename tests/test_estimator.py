"""SparseMLPClassifier and SparseMLPRegressor: scikit-learn's estimator
checks and the API around them (regression and weights have their own
files: test_regression.py, test_weights.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits, make_blobs
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparse_mlp import SparseMLPClassifier, SparseMLPRegressor
from sparse_mlp.errors import DivergenceError

# stochastic mini-batch SGD: fitting with integer weights cannot equal fitting on
# repeated rows (other batches); scikit-learn marks its SGD/MLP estimators the same way
SAMPLE_WEIGHT_EQUIVALENCE = {
    "check_sample_weight_equivalence_on_dense_data": "stochastic mini-batches",
    "check_sample_weight_equivalence_on_sparse_data": "stochastic mini-batches",
}


@parametrize_with_checks([SparseMLPClassifier(),
                          SparseMLPClassifier(hidden_layer_sizes=(20, 10), growth="momentum",
                                              allrelu_slope="auto", density_allocation="erk",
                                              max_iter=30),
                          SparseMLPClassifier(early_stopping=True,
                                              learning_rate="cosine", max_iter=30),
                          SparseMLPRegressor(),
                          SparseMLPRegressor(early_stopping=True, learning_rate="step",
                                             growth="gradient", max_iter=100)],
                         expected_failed_checks=lambda est: SAMPLE_WEIGHT_EQUIVALENCE)
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:900].astype(np.float32), y[:900], X[900:1300].astype(np.float32), y[900:1300]


def test_learns_digits(digits):
    X, y, Xt, yt = digits
    clf = SparseMLPClassifier(hidden_layer_sizes=(200,), epsilon=10, max_iter=25,
                              random_state=0).fit(X, y)
    assert clf.score(Xt, yt) > 0.9
    assert clf.n_iter_ == 25 and len(clf.loss_curve_) == 25
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert list(clf.classes_) == list(range(10))


def test_coefs_are_sparse_copies(digits):
    X, y, _, _ = digits
    clf = SparseMLPClassifier(hidden_layer_sizes=(50, 30), max_iter=3, random_state=0).fit(X, y)
    coefs = clf.coefs_
    assert [c.shape for c in coefs] == [(64, 50), (50, 30), (30, 10)]
    assert all(sp.issparse(c) for c in coefs)
    assert [c.nnz for c in coefs] == clf.model_.nnz_per_layer()
    assert coefs[0].nnz < 64 * 50
    coefs[0].data[:] = 0.0                         # a copy: the model is untouched
    assert np.abs(clf.model_.layers[0].data).sum() > 0
    assert [b.shape for b in clf.intercepts_] == [(50,), (30,), (10,)]


def test_sparse_input_matches_dense(digits):
    """Only each batch is densified: the same numbers train the same network."""
    X, y, Xt, _ = digits
    X = StandardScaler().fit_transform(X).astype(np.float32)
    X[np.abs(X) < 0.3] = 0.0
    kw = dict(hidden_layer_sizes=(40,), max_iter=4, random_state=3, standardize=False)
    dense = SparseMLPClassifier(**kw).fit(X, y)
    sparse = SparseMLPClassifier(**kw).fit(sp.csr_matrix(X), y)
    np.testing.assert_array_equal(dense.predict_proba(X), sparse.predict_proba(sp.csc_matrix(X)))
    # with standardisation (statistics from sparse sums): the same up to rounding
    a = SparseMLPClassifier(hidden_layer_sizes=(40,), max_iter=4, random_state=3).fit(X, y)
    b = SparseMLPClassifier(hidden_layer_sizes=(40,), max_iter=4, random_state=3).fit(
        sp.csr_matrix(X), y)
    np.testing.assert_allclose(a.mean_, b.mean_, atol=1e-6)
    np.testing.assert_allclose(a.predict_proba(Xt), b.predict_proba(sp.csr_matrix(Xt)),
                               atol=1e-3)


def test_pipeline_gridsearch_cross_val(digits):
    X, y, _, _ = digits
    pipe = make_pipeline(StandardScaler(), SparseMLPClassifier(max_iter=5, random_state=0))
    scores = cross_val_score(pipe, X[:400], y[:400], cv=3)
    assert scores.shape == (3,) and scores.min() > 0.5
    gs = GridSearchCV(SparseMLPClassifier(max_iter=5, random_state=0),
                      {"allrelu_slope": [0.1, "auto"], "growth": ["random", "gradient"]}, cv=2)
    gs.fit(X[:300], y[:300])
    assert set(gs.best_params_) == {"allrelu_slope", "growth"}
    assert gs.best_estimator_.n_iter_ == 5


def test_partial_fit(digits):
    X, y, Xt, yt = digits
    clf = SparseMLPClassifier(hidden_layer_sizes=(100,), random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X[:100], y[:100])
    nnz = None
    for i in range(24):                           # 3 passes over 8 chunks
        s = slice(100 * (i % 8), 100 * (i % 8 + 1))
        clf.partial_fit(X[s], y[s], classes=np.arange(10))
        nnz = nnz or clf.model_.nnz
        assert clf.model_.nnz == nnz              # SET keeps nnz between calls
    assert clf.n_iter_ == 24
    assert clf.score(Xt, yt) > 0.7
    with pytest.raises(ValueError, match="not in the classes"):
        clf.partial_fit(X[:10], np.full(10, 11))
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:10, :5], y[:10])


def test_allrelu_slope_auto_and_options(digits):
    X, y, _, _ = digits
    clf = SparseMLPClassifier(allrelu_slope="auto", max_iter=2, random_state=0).fit(X, y)
    from sparse_mlp.alpha import auto_alpha
    assert clf.allrelu_slope_ == auto_alpha(X)
    assert clf.model_.acts[0].slope == -clf.allrelu_slope_
    relu = SparseMLPClassifier(activation="relu", max_iter=1, random_state=0).fit(X, y)
    assert relu.allrelu_slope_ is None
    for kw in (dict(growth="gradient"), dict(growth="momentum", growth_init="init"),
               dict(density_allocation="erk", hidden_layer_sizes=(64, 10)),
               dict(importance_pruning=True, ip_start=0, ip_every=1),
               dict(regrow_init="zero")):
        c = SparseMLPClassifier(max_iter=3, random_state=0, **kw).fit(X, y)
        assert c.score(X, y) > 0.5, kw


def test_thread_count_and_pickle(digits):
    X, y, Xt, _ = digits
    kw = dict(hidden_layer_sizes=(60, 30), max_iter=2, random_state=1, growth="gradient",
              batch_size=128)
    a = SparseMLPClassifier(n_threads=1, **kw).fit(X, y)
    b = SparseMLPClassifier(n_threads=2, **kw).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.predict_proba(Xt), c.predict_proba(Xt))


def test_divergence_is_reported():
    X, y = make_blobs(200, random_state=0)
    clf = SparseMLPClassifier(learning_rate_init=50.0, standardize=False, max_iter=50,
                              random_state=0)
    with pytest.raises(DivergenceError, match="learning_rate_init"):
        clf.fit(X * 1e3, y)


def test_parameters_map_to_one_train_config(digits):
    X, y, _, _ = digits
    clf = SparseMLPClassifier(hidden_layer_sizes=(30, 20), learning_rate_init=0.02, max_iter=1,
                              weight_decay=1e-4, ip_start=3, regrow_init="zero",
                              random_state=5).fit(X, y)
    cfg = clf._config
    cfg.validate()
    assert (cfg.hidden, cfg.lr, cfg.epochs, cfg.decay) == ([30, 20], 0.02, 1, 1e-4)
    assert (cfg.ip_start, cfg.regrow_init, cfg.seed, cfg.alpha) == (3, "zero", 5,
                                                                     clf.allrelu_slope_)
    assert (cfg.task, cfg.output, cfg.lr_schedule) == ("classification", "softmax", "constant")


def test_end_of_epoch_is_epoch_py(digits, monkeypatch):
    """fit evolves with epoch.py after every epoch but the last, before the next."""
    import sparse_mlp.estimator as est
    calls = []

    def spy(cfg, model, epoch, rng, growth=None):
        calls.append((epoch, model.nnz))
        return evolve(cfg, model, epoch, rng, growth)

    evolve = est.evolve_topology
    monkeypatch.setattr(est, "evolve_topology", spy)
    X, y, _, _ = digits
    clf = SparseMLPClassifier(hidden_layer_sizes=(40, 20), max_iter=6, importance_pruning=True,
                              ip_start=1, ip_every=2, random_state=0).fit(X, y)
    assert [e for e, _ in calls] == [0, 1, 2, 3, 4]
    nnz = [n for _, n in calls] + [clf.model_.nnz]
    # Importance Pruning after epochs 2 and 4 only (e > 1 and e % 2 == 0); SET keeps nnz
    assert nnz[0] == nnz[1] == nnz[2] > nnz[3] == nnz[4] > nnz[5]


def test_partial_fit_takes_new_parameters(digits):
    X, y, _, _ = digits
    clf = SparseMLPClassifier(hidden_layer_sizes=(40,), random_state=0)
    clf.partial_fit(X, y, classes=np.arange(10))
    nnz = clf.model_.nnz
    clf.partial_fit(X, y)
    assert clf.model_.nnz == nnz
    clf.set_params(importance_pruning=True, ip_start=0, ip_every=1)
    clf.partial_fit(X, y)                     # pruned after epoch 1 (> 0), before epoch 2
    assert clf.model_.nnz < nnz and clf._config.importance_pruning


# ---------------------------------------------------------------------- names (issue 18)
@pytest.mark.parametrize("cls", [SparseMLPClassifier, SparseMLPRegressor])
def test_scikit_learn_meanings_are_refused(cls):
    """alpha (sklearn: L2), learning_rate as a float or sklearn's schedules:
    a ValueError naming the parameter to use, never a silent change."""
    with pytest.raises(ValueError, match="weight_decay.*allrelu_slope"):
        cls(alpha=1e-4)
    with pytest.raises(ValueError, match="weight_decay"):
        cls().set_params(alpha=1e-4)
    assert "alpha" not in cls().get_params() and not hasattr(cls(), "alpha")
    X, y = make_blobs(60, random_state=0)
    for bad, match in ((0.01, "learning_rate_init=0.01"), ("invscaling", "constant"),
                       ("adaptive", "'step'"), ("optimal", "must be one of")):
        with pytest.raises(ValueError, match=match):
            cls(learning_rate=bad, max_iter=1).fit(X, y)


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_learning_rate_schedule_is_schedule_py(digits, schedule, monkeypatch):
    """learning_rate names the schedule of sparse_mlp.schedule; each epoch
    trains at lr_at(config, epoch)."""
    import sparse_mlp.model as model_mod
    from sparse_mlp.schedule import lr_at
    seen = []
    step = model_mod.SparseMLP.train_step

    def spy(self, xb, yb, lr, *a, **k):
        seen.append(lr)
        return step(self, xb, yb, lr, *a, **k)

    monkeypatch.setattr(model_mod.SparseMLP, "train_step", spy)
    X, y, _, _ = digits
    clf = SparseMLPClassifier(hidden_layer_sizes=(30,), learning_rate=schedule,
                              learning_rate_init=0.02, max_iter=6, batch_size=300,
                              random_state=0).fit(X, y)
    per_epoch = seen[::3]
    assert per_epoch == [lr_at(clf._config, e) for e in range(6)]
    assert per_epoch[0] == 0.02 and per_epoch[-1] < 0.02


def test_early_stopping_restores_the_best_epoch(digits):
    X, y, Xt, yt = digits
    kw = dict(hidden_layer_sizes=(60,), max_iter=60, random_state=0, early_stopping=True,
              n_iter_no_change=3, tol=0.0, validation_fraction=0.2)
    clf = SparseMLPClassifier(**kw).fit(X, y)
    scores = clf.validation_scores_
    assert clf.n_iter_ == len(scores) < 60          # stopped early
    assert clf.best_validation_score_ == max(scores)
    best = int(np.argmax(scores))
    assert clf.n_iter_ - 1 - best >= 3              # n_iter_no_change epochs after the best
    # the restored weights are the best epoch's: their validation accuracy is the best score
    from sklearn.model_selection import train_test_split
    idx = np.arange(X.shape[0])
    tr, va = train_test_split(idx, test_size=0.2, random_state=0, stratify=y)
    assert clf.score(X[np.sort(va)], y[np.sort(va)]) == pytest.approx(clf.best_validation_score_)
    assert clf.score(Xt, yt) > 0.85
    plain = SparseMLPClassifier(**{**kw, "early_stopping": False}).fit(X, y)
    assert plain.n_iter_ == 60 and plain.validation_scores_ is None
    with pytest.raises(ValueError, match="validation_fraction"):
        SparseMLPClassifier(early_stopping=True, validation_fraction=1.0).fit(X, y)
