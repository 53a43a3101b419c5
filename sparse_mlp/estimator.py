"""SparseMLPClassifier: the engine as a scikit-learn estimator.

    from sparse_mlp import SparseMLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), SparseMLPClassifier(hidden_layer_sizes=(400, 100),
                                                              max_iter=100, random_state=0))
    clf.fit(X_train, y_train).score(X_test, y_test)

A thin wrapper: the network is a :class:`~sparse_mlp.model.SparseMLP`, every
step runs the same kernels as ``run_experiment.py`` (momentum SGD with the
paper's update rule, dropout, SET or gradient/momentum regrowth after every
epoch but the last, optional Importance Pruning), with its own epoch loop
because a scikit-learn fit has no test set.  The estimator's parameters
become one :class:`~sparse_mlp.config.TrainConfig` (``_train_config``), and
the end of an epoch is ``epoch.py``'s, as in every other training loop: its
finite check after each epoch, and its :func:`~sparse_mlp.epoch.evolve_topology`
(the Importance Pruning schedule, then SET or growth) before the next one.

* Inputs: dense arrays (float32 internally) or any scipy.sparse matrix
  (kept CSR; each mini-batch and each prediction block is densified on its
  own, the whole matrix never is).  ``standardize=True`` (default) scales
  the features with the training set's mean and std, as the paper does,
  batch by batch, so sparse inputs stay sparse in memory (statistics from
  the first ``fit`` / ``partial_fit`` call).
* Layers: ``coefs_[l]`` is weight matrix l as a scipy.sparse CSC matrix of
  shape (n_in, n_out) (a copy), ``intercepts_[l]`` its biases; ``model_``
  is the underlying SparseMLP.
* ``partial_fit``: each call is one epoch over the given data; from the
  second call on, the topology evolves first (so the model is never left
  right after an evolution step, as ``fit`` never is either).
* Deterministic for an integer ``random_state``, for any ``n_threads``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import _check_partial_fit_first_call, check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .alpha import auto_alpha
from .config import TrainConfig
from .epoch import GrowthData, evolve_topology, nonfinite_parts
from .errors import DivergenceError
from .growth import batch_getter
from .initial_topology import initial_layers
from .model import SparseMLP
from .training import RandomStreams


class SparseMLPClassifier(ClassifierMixin, BaseEstimator):
    """Truly sparse MLP classifier (SET / All-ReLU / Importance Pruning).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(100,)
        Hidden layer widths.
    epsilon : float, default=10
        Erdos-Renyi density: about epsilon * (n_in + n_out) weights per layer.
    activation : {'allrelu', 'relu', 'leaky', 'srelu', 'tanh', 'sigmoid'}, default='allrelu'
    alpha : float or 'auto', default=0.5
        All-ReLU slope (leaky: negative slope); 'auto' picks it from the
        input skewness (:mod:`sparse_mlp.alpha`).
    weight_init : {'he_uniform', 'xavier', 'normal'}, default='he_uniform'
    learning_rate : float, default=0.01
    momentum : float, default=0.9
    weight_decay : float, default=2e-4
        Paper rule: w = w + v - weight_decay * w every step.
    dropout : float, default=0.3
    batch_size : int, default=32
        Clipped to the number of samples; the tail of each epoch is dropped.
    max_iter : int, default=100
        Epochs of ``fit``.
    zeta : float, default=0.3
        Fraction of the positive and of the negative weights replaced per epoch.
    evolution : bool, default=True
        False: static sparse topology.
    growth : {'random', 'gradient', 'momentum'}, default='random'
        Regrowth after SET's removal (:mod:`sparse_mlp.growth`).
    growth_batches : int or None, default=None
        Probe mini-batches for gradient/momentum growth (None: 1 / 10).
    growth_init : {'zero', 'init'}, default='zero'
        Values of the weights gradient/momentum growth adds.
    regrow_init : {'init', 'zero'}, default='init'
        Values of the weights SET's random regrowth adds: drawn from
        ``weight_init`` (the paper's) or 0 (``--regrow-init``).
    density_allocation : {'er', 'erk'}, default='er'
        Initial density of each layer (:mod:`sparse_mlp.initial_topology`).
    importance_pruning : bool, default=False
    ip_start, ip_every : int, default=200, 10
        Prune after epoch e when e > ip_start and e % ip_every == 0.
    ip_percentile : float, default=20
    standardize : bool, default=True
        Scale features to zero mean and unit variance (training-set
        statistics; constant features are only centred), batch by batch.
    n_threads : int, default=1
        Kernel threads (results do not depend on it).
    random_state : int, RandomState or None, default=None
    verbose : bool, default=False
        Print one line per epoch.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    n_features_in_ : int
    model_ : SparseMLP
    alpha_ : float or None
        The All-ReLU slope used (the chosen one for alpha='auto').
    mean_, scale_ : ndarray float32 (n_features,) or None
        Standardisation: x -> (x - mean_) * scale_ (None with standardize=False).
    n_iter_ : int
        Epochs trained.
    loss_curve_ : list of float
        Mean training loss (with dropout) of every epoch.
    coefs_, intercepts_ : list
        Per layer: scipy.sparse CSC (n_in, n_out) weights and float32 biases.
    """

    def __init__(self, hidden_layer_sizes=(100,), epsilon=10.0, activation="allrelu",
                 alpha=0.5, weight_init="he_uniform", learning_rate=0.01, momentum=0.9,
                 weight_decay=2e-4, dropout=0.3, batch_size=32, max_iter=100, zeta=0.3,
                 evolution=True, growth="random", growth_batches=None, growth_init="zero",
                 regrow_init="init", density_allocation="er", importance_pruning=False,
                 ip_start=200, ip_every=10, ip_percentile=20.0, standardize=True, n_threads=1,
                 random_state=None, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.epsilon = epsilon
        self.activation = activation
        self.alpha = alpha
        self.weight_init = weight_init
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.zeta = zeta
        self.evolution = evolution
        self.growth = growth
        self.growth_batches = growth_batches
        self.growth_init = growth_init
        self.regrow_init = regrow_init
        self.density_allocation = density_allocation
        self.importance_pruning = importance_pruning
        self.ip_start = ip_start
        self.ip_every = ip_every
        self.ip_percentile = ip_percentile
        self.standardize = standardize
        self.n_threads = n_threads
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @property
    def coefs_(self) -> list:
        """Each weight matrix as a scipy.sparse CSC (n_in, n_out) copy."""
        check_is_fitted(self)
        return [lay.to_scipy(copy=True) for lay in self.model_.layers]

    @property
    def intercepts_(self) -> list:
        """Each layer's biases, float32 (n_out,) copies."""
        check_is_fitted(self)
        return [lay.bias.copy() for lay in self.model_.layers]

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y):
        """Train ``max_iter`` epochs from a new random network.

        X : array-like or scipy.sparse (n_samples, n_features); y : (n_samples,)."""
        X, y = self._validate(X, y, reset=True)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        self._setup(X, y_enc)
        for epoch in range(self.max_iter):
            if epoch > 0:
                self._evolve(X, y_enc, epoch - 1)
            self._epoch(X, y_enc)
        self.model_.release_buffers()
        return self

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), preceded by a topology evolution step from
        the second call on.  ``classes`` (all labels) is required on the first call."""
        first = _check_partial_fit_first_call(self, classes)
        X, y = self._validate(X, y, reset=first)
        y_enc = np.searchsorted(self.classes_, y)
        bad = (y_enc >= self.classes_.size) | (self.classes_[np.minimum(
            y_enc, self.classes_.size - 1)] != y)
        if bad.any():
            raise ValueError(f"partial_fit: labels {np.unique(y[bad])} are not in the classes "
                             f"given on the first call {self.classes_}")
        if first:
            self._setup(X, y_enc)
        else:
            # parameters changed with set_params between calls take effect now
            self._config = self._train_config(self._config.hidden, self._config.seed)
            self._evolve(X, y_enc, self.n_iter_ - 1)
        self._epoch(X, y_enc)
        self.model_.release_buffers()
        return self

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), float64."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float32,
                          order="C")
        n = X.shape[0]
        out = np.empty((n, self.classes_.size), dtype=np.float64)
        block = 1024
        for s in range(0, n, block):
            Xb = X[s:s + block]
            if sp.issparse(Xb):
                Xb = np.ascontiguousarray(Xb.toarray(), dtype=np.float32)
            if self.mean_ is not None:
                Xb = (Xb - self.mean_) * self.scale_
            out[s:s + block] = self.model_.predict_proba(Xb, batch_size=block)
        out /= out.sum(axis=1, keepdims=True)
        return out

    def predict(self, X):
        """Predicted class labels (n_samples,)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    # ------------------------------------------------------------------ internals
    def _validate(self, X, y, reset: bool):
        X, y = validate_data(self, X, y, reset=reset, accept_sparse="csr", dtype=np.float32,
                             order="C")
        check_classification_targets(y)
        if sp.issparse(X):
            X.sort_indices()
        return X, y

    def _setup(self, X, y_enc: np.ndarray) -> None:
        """A new network for (X, y_enc) (y_enc: class ids)."""
        n_classes = self.classes_.size
        if n_classes < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; "
                             f"got 1 class ({self.classes_[0]!r})")
        hidden = ([int(self.hidden_layer_sizes)] if np.isscalar(self.hidden_layer_sizes)
                  else [int(h) for h in self.hidden_layer_sizes])
        if isinstance(self.random_state, (int, np.integer)):
            seed = int(self.random_state)
        else:
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        self._streams = RandomStreams(seed)
        self.mean_ = self.scale_ = None
        if self.standardize:
            self.mean_, self.scale_ = _feature_scaling(X)
        if self.alpha == "auto":
            self.alpha_ = auto_alpha(X)
        else:
            self.alpha_ = None if self.alpha is None else float(self.alpha)
        if self.activation not in ("allrelu", "leaky"):
            self.alpha_ = None
        cfg = self._config = self._train_config(hidden, seed)
        sizes = [X.shape[1], *cfg.hidden, n_classes]
        layers = initial_layers(sizes, cfg.epsilon, cfg.weight_init, self._streams.init,
                                cfg.density_allocation, cfg.erk_power)
        self.model_ = SparseMLP(sizes, epsilon=cfg.epsilon, activation=cfg.activation,
                                alpha=cfg.alpha, init=cfg.weight_init, dropout=cfg.dropout,
                                rng=self._streams.init, n_threads=cfg.threads, layers=layers)
        self._step = 0
        self.n_iter_ = 0
        self.loss_curve_ = []

    def _train_config(self, hidden: list[int], seed: int) -> TrainConfig:
        """The run as a TrainConfig: every estimator parameter maps to its
        field here and nowhere else (``alpha_`` is the slope already resolved)."""
        return TrainConfig(
            dataset="SparseMLPClassifier.fit", hidden=hidden, epsilon=self.epsilon,
            activation=self.activation, alpha=self.alpha_, alpha_auto=self.alpha == "auto",
            weight_init=self.weight_init, epochs=self.max_iter, batch_size=self.batch_size,
            lr=self.learning_rate, momentum=self.momentum, weight_decay=self.weight_decay,
            decay_mode="paper", dropout=self.dropout, evolution=self.evolution,
            zeta=self.zeta, importance_pruning=self.importance_pruning,
            ip_start=self.ip_start, ip_every=self.ip_every, ip_percentile=self.ip_percentile,
            growth=self.growth, growth_batches=self.growth_batches,
            growth_init=self.growth_init, regrow_init=self.regrow_init,
            density_allocation=self.density_allocation, seed=seed, threads=self.n_threads)

    def _epoch(self, X, y_enc: np.ndarray) -> None:
        """One shuffled pass of mini-batches (tail dropped), momentum SGD,
        then epoch.py's finite check."""
        model, st, cfg = self.model_, self._streams, self._config
        n = X.shape[0]
        B = min(int(cfg.batch_size), n)
        get = self._getter(X, y_enc)
        order = st.shuffle.permutation(n)
        loss = 0.0
        for b in range(n // B):
            xb, yb = get(order[b * B:(b + 1) * B])
            keys = model.dropout_keys(st.dropout_seed, self._step)
            ls, _ = model.train_step(xb, yb, cfg.lr, cfg.momentum, cfg.decay, keys)
            loss += ls
            self._step += 1
        loss /= (n // B) * B
        bad = nonfinite_parts(model)
        if bad or not math.isfinite(loss):
            where = f"; NaN or inf in {'; '.join(bad)}" if bad else ""
            raise DivergenceError(f"training diverged in epoch {self.n_iter_ + 1} (loss "
                                  f"{loss}{where}): lower learning_rate (now "
                                  f"{self.learning_rate}) or scale the inputs "
                                  "(StandardScaler)")
        self.n_iter_ += 1
        self.loss_curve_.append(loss)
        if self.verbose:
            print(f"epoch {self.n_iter_}: loss {loss:.4f}, nnz {model.nnz}")

    def _evolve(self, X, y_enc: np.ndarray, epoch: int) -> None:
        """The topology step of the end of ``epoch`` (0-based), taken just
        before the next epoch (so a fit never ends right after one):
        epoch.py's Importance Pruning when due, then SET or growth."""
        growth = GrowthData(X, y_enc.astype(np.int32), dropout_seed=self._streams.dropout_seed,
                            step=self._step, get_batch=self._getter(X, y_enc))
        evolve_topology(self._config, self.model_, epoch, self._streams.evolution, growth)

    def _getter(self, X, y_enc: np.ndarray):
        """rows -> (standardised feature-major batch, int32 labels)."""
        get = batch_getter(X, y_enc.astype(np.int32), self.n_threads)
        if self.mean_ is None:
            return get
        mean, scale = self.mean_[:, None], self.scale_[:, None]

        def get_scaled(rows):
            xb, yb = get(rows)
            xb -= mean
            xb *= scale
            return xb, yb
        return get_scaled


def _feature_scaling(X) -> tuple[np.ndarray, np.ndarray]:
    """(mean, 1/std) float32 per feature of X (dense or sparse), float64
    accumulation; constant features get scale 1."""
    n = X.shape[0]
    if sp.issparse(X):
        mean = np.asarray(X.sum(axis=0), dtype=np.float64).ravel() / n
        sq = np.asarray(X.multiply(X).sum(axis=0), dtype=np.float64).ravel() / n
        var = np.maximum(sq - mean * mean, 0.0)
    else:
        mean = X.mean(axis=0, dtype=np.float64)
        var = X.var(axis=0, dtype=np.float64)
    std = np.sqrt(var)
    tiny = std <= 1e-7 * np.maximum(np.abs(mean), 1.0)
    scale = np.where(tiny, 1.0, 1.0 / np.where(tiny, 1.0, std))
    return mean.astype(np.float32), scale.astype(np.float32)
