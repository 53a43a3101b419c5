"""SparseMLPClassifier and SparseMLPRegressor: the engine as scikit-learn estimators.

    from sparse_mlp import SparseMLPClassifier, SparseMLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), SparseMLPClassifier(hidden_layer_sizes=(400, 100),
                                                              max_iter=100, random_state=0))
    clf.fit(X_train, y_train).score(X_test, y_test)
    reg = SparseMLPRegressor(hidden_layer_sizes=(256, 256), early_stopping=True).fit(X, y)

A thin wrapper: the network is a :class:`~sparse_mlp.model.SparseMLP`, every
step runs the same kernels as ``run_experiment.py`` (momentum SGD with the
paper's update rule, dropout, SET or gradient/momentum regrowth after every
epoch but the last, optional Importance Pruning), with its own epoch loop
because a scikit-learn fit has no test set.  The estimator's parameters
become one :class:`~sparse_mlp.config.TrainConfig` (``_train_config``), and
the end of an epoch is ``epoch.py``'s, as in every other training loop: its
finite check after each epoch, and its :func:`~sparse_mlp.epoch.evolve_topology`
(the Importance Pruning schedule, then SET or growth) before the next one.
The learning-rate schedule is :mod:`sparse_mlp.schedule`'s.

* Names follow scikit-learn's MLP where the meaning is the same
  (``hidden_layer_sizes``, ``batch_size``, ``max_iter``, ``learning_rate``
  = the schedule, ``learning_rate_init`` = the step size, ``momentum``,
  ``early_stopping``, ``validation_fraction``, ``n_iter_no_change``,
  ``tol``, ``class_weight``, ``sample_weight``).  Where scikit-learn's name
  means something else here, the parameter has its own name and the
  scikit-learn one raises a ValueError naming it: the All-ReLU slope is
  ``allrelu_slope`` (``alpha=`` is refused: scikit-learn's alpha is the L2
  penalty, ``weight_decay`` here), and ``learning_rate`` takes
  'constant' | 'step' | 'cosine' (not 'invscaling' / 'adaptive', not a float).
* Inputs: dense arrays (float32 internally) or any scipy.sparse matrix
  (kept CSR; each mini-batch and each prediction block is densified on its
  own, the whole matrix never is).  ``standardize=True`` (default) scales
  the features with the training set's mean and std, as the paper does,
  batch by batch, so sparse inputs stay sparse in memory (statistics from
  the first ``fit`` / ``partial_fit`` call).  The regressor also
  standardises its targets (``standardize_target=True``): it trains on
  (y - mean) / std and maps its predictions back.
* Weights: ``sample_weight`` (fit) times the classifier's ``class_weight``
  are rescaled once to average 1 over the training data, then multiply
  each sample's loss and output delta inside the loss kernel: a batch's
  gradient is (1/B) sum_b w_b grad_b.  So relative weights act exactly as
  in a weighted loss (LogisticRegression's sum_i w_i loss_i, up to the
  constant), across batches too (not renormalised per batch, as
  scikit-learn's MLP does), while the step size does not depend on the
  weights' scale (scaling all weights by c changes nothing; 'balanced'
  weights already average 1).  All weights 1 trains bit for bit as no
  weights.  ``partial_fit`` rescales each call's weights on their own.
* Early stopping (``early_stopping=True``): ``validation_fraction`` of the
  training data (stratified for the classifier) is held out; after each
  epoch the validation score (accuracy, or R^2) is measured; training stops
  when it has not improved by more than ``tol`` for ``n_iter_no_change``
  epochs, and the weights of the best epoch are restored.  Without it every
  fit trains ``max_iter`` epochs (unlike scikit-learn's MLP, the training
  loss, measured with dropout and across SET steps, stops nothing).
* Layers: ``coefs_[l]`` is weight matrix l as a scipy.sparse CSC matrix of
  shape (n_in, n_out) (a copy), ``intercepts_[l]`` its biases; ``model_``
  is the underlying SparseMLP.
* ``partial_fit``: each call is one epoch over the given data; from the
  second call on, the topology evolves first (so the model is never left
  right after an evolution step, as ``fit`` never is either).  No early
  stopping there.
* Deterministic for an integer ``random_state``, for any ``n_threads``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import _check_partial_fit_first_call, check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .alpha import auto_alpha
from .config import TrainConfig
from .epoch import GrowthData, evolve_topology, nonfinite_parts
from .errors import DivergenceError
from .growth import batch_getter
from .initial_topology import initial_layers
from .model import SparseMLP, regression_scores
from .training import RandomStreams

#: ``learning_rate`` values (sparse_mlp/schedule.py)
LEARNING_RATES = ("constant", "step", "cosine")
# scikit-learn MLP schedules this estimator does not have
_SKLEARN_ONLY_SCHEDULES = ("invscaling", "adaptive")

_COMMON_DOC = """
    hidden_layer_sizes : tuple of int, default=(100,)
        Hidden layer widths.
    epsilon : float, default=10
        Erdos-Renyi density: about epsilon * (n_in + n_out) weights per layer.
    activation : {'allrelu', 'relu', 'leaky', 'srelu', 'tanh', 'sigmoid'}, default='allrelu'
    allrelu_slope : float or 'auto', default=0.5
        All-ReLU slope (leaky: negative slope); 'auto' picks it from the
        input skewness (:mod:`sparse_mlp.alpha`).  (scikit-learn's ``alpha``
        is an L2 penalty: here that is ``weight_decay``.)
    weight_init : {'he_uniform', 'xavier', 'normal'}, default='he_uniform'
    learning_rate : {'constant', 'step', 'cosine'}, default='constant'
        The step-size schedule over epochs (:mod:`sparse_mlp.schedule`):
        constant; 'step' multiplies it by 0.1 every ``max(1, max_iter // 3)``
        epochs; 'cosine' anneals it to 0 over ``max_iter`` epochs.
    learning_rate_init : float, default=0.01
        The (initial) step size.
    momentum : float, default=0.9
    weight_decay : float, default=2e-4
        Paper rule: w = w + v - weight_decay * w every step.
    dropout : float, default=0.3
    batch_size : int, default=32
        Clipped to the number of samples; the tail of each epoch is dropped.
    max_iter : int, default=100
        Epochs of ``fit`` (at most, with early stopping).
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
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when the
        validation score has not improved by more than ``tol`` for
        ``n_iter_no_change`` epochs, and keep the best epoch's weights.
    validation_fraction : float, default=0.1
        With ``early_stopping``: the held-out fraction (stratified for the
        classifier), in (0, 1).
    n_iter_no_change : int, default=10
        With ``early_stopping``: epochs without improvement before stopping.
    tol : float, default=1e-4
        With ``early_stopping``: the improvement that counts.
    n_threads : int, default=1
        Kernel threads (results do not depend on it).
    random_state : int, RandomState or None, default=None
    verbose : bool, default=False
        Print one line per epoch.

    ``alpha`` is not a parameter: ``alpha=`` (in the constructor or
    ``set_params``) raises a ValueError naming ``weight_decay``
    (scikit-learn's L2 alpha) and ``allrelu_slope`` (what ``alpha`` meant
    here before).  It is refused outside the signature, so that no
    attribute ``alpha`` exists for tools that set scikit-learn's meaning."""

_COMMON_ATTRS = """
    n_features_in_ : int
    model_ : SparseMLP
    allrelu_slope_ : float or None
        The All-ReLU slope used (the chosen one for allrelu_slope='auto').
    mean_, scale_ : ndarray float32 (n_features,) or None
        Standardisation: x -> (x - mean_) * scale_ (None with standardize=False).
    n_iter_ : int
        Epochs trained.
    loss_curve_ : list of float
        Mean training loss (with dropout; weighted with weights) of every epoch.
    validation_scores_ : list of float or None
        With ``early_stopping``: the validation score after every epoch.
    best_validation_score_ : float or None
        With ``early_stopping``: the best of them (its weights are the model's).
    coefs_, intercepts_ : list
        Per layer: scipy.sparse CSC (n_in, n_out) weights and float32 biases."""


class _SparseMLPBase(BaseEstimator):
    """What the classifier and the regressor share (parameters, training loop)."""

    _output = "softmax"
    _task = "classification"

    def __new__(cls, *args, **kwargs):
        if "alpha" in kwargs:  # scikit-learn's meaning, or this estimator's old name
            _refuse_alpha(cls, kwargs["alpha"])
        return super().__new__(cls)

    def set_params(self, **params):
        if "alpha" in params:
            _refuse_alpha(type(self), params["alpha"])
        return super().set_params(**params)

    def _keep(self, params: dict) -> None:
        """scikit-learn's rule for ``__init__``: store every parameter as given,
        nothing else (each estimator's ``__init__`` passes its ``locals()``)."""
        for name, value in params.items():
            if name != "self":
                setattr(self, name, value)

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

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        """Clear errors for scikit-learn's meanings of the names this
        estimator uses differently (see the module docs)."""
        lr = self.learning_rate
        if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
            raise ValueError(f"learning_rate={lr!r}: learning_rate is the schedule "
                             f"({', '.join(map(repr, LEARNING_RATES))}); the step size is "
                             f"learning_rate_init={lr!r}")
        if lr in _SKLEARN_ONLY_SCHEDULES:
            raise ValueError(f"learning_rate={lr!r} is a scikit-learn MLP schedule this "
                             f"estimator does not have; choose one of "
                             f"{', '.join(map(repr, LEARNING_RATES))} (sparse_mlp.schedule)")
        if lr not in LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {', '.join(map(repr, LEARNING_RATES))}"
                             f", got {lr!r}")
        if not (isinstance(self.learning_rate_init, numbers.Real)
                and self.learning_rate_init > 0):
            raise ValueError(f"learning_rate_init must be a positive number, got "
                             f"{self.learning_rate_init!r}")
        if self.early_stopping:
            if not 0.0 < float(self.validation_fraction) < 1.0:
                raise ValueError(f"validation_fraction must be in (0, 1), got "
                                 f"{self.validation_fraction!r}")
            if int(self.n_iter_no_change) < 1:
                raise ValueError(f"n_iter_no_change must be at least 1, got "
                                 f"{self.n_iter_no_change!r}")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter!r}")

    # ------------------------------------------------------------------ fitting
    def _fit(self, X, t, w, stratify=None):
        """Train from a new network: ``t`` the training targets (class ids,
        or float32 standardised targets), ``w`` float32 weights or None."""
        self._check_params()
        seed = self._seed()
        X_val = t_val = w_val = None
        self.validation_scores_ = None
        self.best_validation_score_ = None
        if self.early_stopping:
            idx = np.arange(X.shape[0])
            strat = stratify if stratify is not None and np.unique(stratify).size > 1 else None
            try:
                tr, va = train_test_split(idx, test_size=float(self.validation_fraction),
                                          random_state=seed, stratify=strat)
            except ValueError:  # a class too small to stratify: a plain split
                tr, va = train_test_split(idx, test_size=float(self.validation_fraction),
                                          random_state=seed)
            tr, va = np.sort(tr), np.sort(va)
            X, X_val = X[tr], X[va]
            t, t_val = t[tr], t[va]
            if w is not None:
                w, w_val = w[tr], w[va]
            self.validation_scores_ = []
        self._setup(X, seed)
        best = None
        no_improvement = 0
        for epoch in range(int(self.max_iter)):
            if epoch > 0:
                self._evolve(X, t, epoch - 1)
            self._epoch(X, t, w)
            if X_val is None:
                continue
            score = self._validation_score(X_val, t_val, w_val)
            self.validation_scores_.append(score)
            if best is None or score > self.best_validation_score_ + float(self.tol):
                no_improvement = 0
            else:
                no_improvement += 1
            if best is None or score > self.best_validation_score_:
                self.best_validation_score_ = score
                best = self.model_.copy()  # the evaluated weights, before the next evolution
            if no_improvement >= int(self.n_iter_no_change):
                if self.verbose:
                    print(f"validation score did not improve by more than tol={self.tol} for "
                          f"{self.n_iter_no_change} epochs: stopping")
                break
        if best is not None:
            self.model_ = best
        self.model_.release_buffers()
        return self

    def _partial_fit_epoch(self, X, t, w, first: bool) -> None:
        self._check_params()
        if first:
            self._setup(X, self._seed())
            self.validation_scores_ = None
            self.best_validation_score_ = None
        else:
            # parameters changed with set_params between calls take effect now
            self._config = self._train_config(self._config.hidden, self._config.seed)
            self._evolve(X, t, self.n_iter_ - 1)
        self._epoch(X, t, w)
        self.model_.release_buffers()

    # ------------------------------------------------------------------ internals
    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def _outputs(self) -> int:
        raise NotImplementedError

    def _setup(self, X, seed: int) -> None:
        """A new network for X (its width out of ``_outputs``)."""
        hidden = ([int(self.hidden_layer_sizes)] if np.isscalar(self.hidden_layer_sizes)
                  else [int(h) for h in self.hidden_layer_sizes])
        self._streams = RandomStreams(seed)
        self.mean_ = self.scale_ = None
        if self.standardize:
            self.mean_, self.scale_ = _feature_scaling(X)
        if self.allrelu_slope == "auto":
            self.allrelu_slope_ = auto_alpha(X)
        else:
            self.allrelu_slope_ = None if self.allrelu_slope is None else float(
                self.allrelu_slope)
        if self.activation not in ("allrelu", "leaky"):
            self.allrelu_slope_ = None
        cfg = self._config = self._train_config(hidden, seed)
        sizes = [X.shape[1], *cfg.hidden, self._outputs()]
        layers = initial_layers(sizes, cfg.epsilon, cfg.weight_init, self._streams.init,
                                cfg.density_allocation, cfg.erk_power)
        self.model_ = SparseMLP(sizes, epsilon=cfg.epsilon, activation=cfg.activation,
                                alpha=cfg.alpha, init=cfg.weight_init, output=cfg.output,
                                dropout=cfg.dropout, rng=self._streams.init,
                                n_threads=cfg.threads, layers=layers)
        self._step = 0
        self.n_iter_ = 0
        self.loss_curve_ = []

    def _train_config(self, hidden: list[int], seed: int) -> TrainConfig:
        """The run as a TrainConfig: every estimator parameter maps to its
        field here and nowhere else (``allrelu_slope_`` is the slope already
        resolved).  Sample and class weights are the estimator's own (they
        reach the loss kernel per batch): TrainConfig.class_weight stays None."""
        schedule = self.learning_rate
        return TrainConfig(
            dataset=f"{type(self).__name__}.fit", task=self._task, output=self._output,
            hidden=hidden, epsilon=self.epsilon, activation=self.activation,
            alpha=self.allrelu_slope_, alpha_auto=self.allrelu_slope == "auto",
            weight_init=self.weight_init, epochs=int(self.max_iter),
            batch_size=self.batch_size, lr=self.learning_rate_init,
            lr_schedule=schedule,
            lr_step_every=max(1, int(self.max_iter) // 3) if schedule == "step" else None,
            momentum=self.momentum, weight_decay=self.weight_decay, decay_mode="paper",
            dropout=self.dropout, evolution=self.evolution, zeta=self.zeta,
            importance_pruning=self.importance_pruning, ip_start=self.ip_start,
            ip_every=self.ip_every, ip_percentile=self.ip_percentile, growth=self.growth,
            growth_batches=self.growth_batches, growth_init=self.growth_init,
            regrow_init=self.regrow_init, density_allocation=self.density_allocation,
            seed=seed, threads=self.n_threads)

    def _epoch(self, X, t, w) -> None:
        """One shuffled pass of mini-batches (tail dropped), momentum SGD at
        the schedule's rate, then epoch.py's finite check."""
        from .schedule import decay_at, lr_at
        model, st, cfg = self.model_, self._streams, self._config
        n = X.shape[0]
        B = min(int(cfg.batch_size), n)
        get = self._getter(X, t)
        lr = lr_at(cfg, self.n_iter_)
        decay = decay_at(cfg, lr)
        order = st.shuffle.permutation(n)
        loss = 0.0
        for b in range(n // B):
            rows = order[b * B:(b + 1) * B]
            xb, yb = get(rows)
            keys = model.dropout_keys(st.dropout_seed, self._step)
            ls, _ = model.train_step(xb, yb, lr, cfg.momentum, decay, keys,
                                     sample_weight=None if w is None else w[rows])
            loss += ls
            self._step += 1
        loss /= (n // B) * B
        bad = nonfinite_parts(model)
        if bad or not math.isfinite(loss):
            where = f"; NaN or inf in {'; '.join(bad)}" if bad else ""
            raise DivergenceError(f"training diverged in epoch {self.n_iter_ + 1} (loss "
                                  f"{loss}{where}): lower learning_rate_init (now "
                                  f"{self.learning_rate_init}) or scale the inputs "
                                  "(StandardScaler)")
        self.n_iter_ += 1
        self.loss_curve_.append(loss)
        if self.verbose:
            print(f"epoch {self.n_iter_}: loss {loss:.4f}, nnz {model.nnz}")

    def _evolve(self, X, t, epoch: int) -> None:
        """The topology step of the end of ``epoch`` (0-based), taken just
        before the next epoch (so a fit never ends right after one):
        epoch.py's Importance Pruning when due, then SET or growth."""
        growth = GrowthData(X, t, dropout_seed=self._streams.dropout_seed,
                            step=self._step, get_batch=self._getter(X, t))
        evolve_topology(self._config, self.model_, epoch, self._streams.evolution, growth)

    def _getter(self, X, t: np.ndarray):
        """rows -> (standardised feature-major batch, targets)."""
        get = batch_getter(X, t, self.n_threads)
        if self.mean_ is None:
            return get
        mean, scale = self.mean_[:, None], self.scale_[:, None]

        def get_scaled(rows):
            xb, yb = get(rows)
            xb -= mean
            xb *= scale
            return xb, yb
        return get_scaled

    def _raw_outputs(self, X) -> np.ndarray:
        """The network's output layer for validated X, (n, n_L) float32:
        probabilities (classifier) or outputs (regressor), in blocks."""
        n = X.shape[0]
        model = self.model_
        out = np.empty((n, model.sizes[-1]), dtype=np.float32)
        block = 1024
        for s in range(0, n, block):
            Xb = X[s:s + block]
            if sp.issparse(Xb):
                Xb = np.ascontiguousarray(Xb.toarray(), dtype=np.float32)
            if self.mean_ is not None:
                Xb = (Xb - self.mean_) * self.scale_
            out[s:s + block] = (model.predict(Xb, batch_size=block) if model.output == "linear"
                                else model.predict_proba(Xb, batch_size=block))
        return out


class SparseMLPClassifier(ClassifierMixin, _SparseMLPBase):
    __doc__ = f"""Truly sparse MLP classifier (SET / All-ReLU / Importance Pruning).

    Parameters
    ----------{_COMMON_DOC}
    class_weight : None, 'balanced' or dict, default=None
        Weights of the classes in the loss (scikit-learn's meaning:
        'balanced' is n_samples / (n_classes * count of the class)),
        multiplied with ``sample_weight``.

    Attributes
    ----------
    classes_ : ndarray (n_classes,){_COMMON_ATTRS}
    """

    _output = "softmax"
    _task = "classification"

    def __init__(self, hidden_layer_sizes=(100,), epsilon=10.0, activation="allrelu",
                 allrelu_slope=0.5, weight_init="he_uniform", learning_rate="constant",
                 learning_rate_init=0.01, momentum=0.9, weight_decay=2e-4, dropout=0.3,
                 batch_size=32, max_iter=100, zeta=0.3, evolution=True, growth="random",
                 growth_batches=None, growth_init="zero", regrow_init="init",
                 density_allocation="er", importance_pruning=False, ip_start=200, ip_every=10,
                 ip_percentile=20.0, standardize=True, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, class_weight=None,
                 n_threads=1, random_state=None, verbose=False):
        self._keep(locals())

    def fit(self, X, y, sample_weight=None):
        """Train ``max_iter`` epochs (fewer with early stopping) from a new
        random network.

        X : array-like or scipy.sparse (n_samples, n_features); y : (n_samples,);
        sample_weight : array-like (n_samples,), optional."""
        X, y = self._validate(X, y, reset=True)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; "
                             f"got 1 class ({self.classes_[0]!r})")
        y_enc = y_enc.astype(np.int32)
        w = self._weights(X, y_enc, sample_weight)
        return self._fit(X, y_enc, w, stratify=y_enc)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), preceded by a topology evolution step from
        the second call on.  ``classes`` (all labels) is required on the first
        call.  ``class_weight='balanced'`` is not available here (the class
        counts of one call are not the data's); a dict is."""
        first = _check_partial_fit_first_call(self, classes)
        X, y = self._validate(X, y, reset=first)
        if first and self.classes_.size < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes; got "
                             f"{self.classes_.tolist()}")
        if self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' needs the whole training set: use fit, "
                             "or give partial_fit a dict of class weights")
        y_enc = np.searchsorted(self.classes_, y)
        bad = (y_enc >= self.classes_.size) | (self.classes_[np.minimum(
            y_enc, self.classes_.size - 1)] != y)
        if bad.any():
            raise ValueError(f"partial_fit: labels {np.unique(y[bad])} are not in the classes "
                             f"given on the first call {self.classes_}")
        y_enc = y_enc.astype(np.int32)
        self._partial_fit_epoch(X, y_enc, self._weights(X, y_enc, sample_weight), first)
        return self

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), float64."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float32,
                          order="C")
        out = self._raw_outputs(X).astype(np.float64)
        out /= out.sum(axis=1, keepdims=True)
        return out

    def predict(self, X):
        """Predicted class labels (n_samples,)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    # ------------------------------------------------------------------ internals
    def _outputs(self) -> int:
        return int(self.classes_.size)

    def _validate(self, X, y, reset: bool):
        X, y = validate_data(self, X, y, reset=reset, accept_sparse="csr", dtype=np.float32,
                             order="C")
        check_classification_targets(y)
        if sp.issparse(X):
            X.sort_indices()
        return X, y

    def _weights(self, X, y_enc: np.ndarray, sample_weight) -> np.ndarray | None:
        """float32 per-sample weights: sample_weight times class_weight[y]
        (None when neither is given: the unweighted kernels)."""
        if sample_weight is None and self.class_weight is None:
            return None
        w = np.ones(X.shape[0], dtype=np.float64)
        if sample_weight is not None:
            w = _check_sample_weight(sample_weight, X, dtype=np.float64)
            if (w < 0).any():
                raise ValueError("sample_weight must be non-negative")
        if self.class_weight is not None:
            present = np.unique(y_enc)
            cw = np.ones(self.classes_.size)
            if isinstance(self.class_weight, dict) or self.class_weight == "balanced":
                cw[present] = compute_class_weight(self.class_weight,
                                                   classes=self.classes_[present],
                                                   y=self.classes_[y_enc])
            else:
                raise ValueError(f"class_weight must be None, 'balanced' or a dict, got "
                                 f"{self.class_weight!r}")
            w = w * cw[y_enc]
        return _unit_mean(w)

    def _validation_score(self, X_val, t_val, w_val) -> float:
        """Accuracy on the validation split (weighted with sample weights)."""
        pred = np.argmax(self._raw_outputs(X_val), axis=1)
        hit = (pred == t_val).astype(np.float64)
        return float(np.average(hit, weights=w_val) if w_val is not None and w_val.sum() > 0
                     else hit.mean())


class SparseMLPRegressor(RegressorMixin, _SparseMLPBase):
    __doc__ = f"""Truly sparse MLP regressor: linear output, squared error
    (0.5 * (prediction - y)^2 per target, scikit-learn's squared_loss),
    the SET / All-ReLU / Importance Pruning engine.

    Parameters
    ----------{_COMMON_DOC}
    (``learning_rate_init`` defaults to 0.001 here, not 0.01: the squared
    error's delta is unbounded, unlike softmax's, and 0.01 with momentum 0.9
    diverged on small problems, e.g. scikit-learn's estimator checks.  And
    ``weight_decay`` defaults to 2e-5, not 2e-4: the paper's decay is not
    scaled by the step size, so its L2 strength is about weight_decay /
    learning_rate_init, which these two defaults keep at the classifier's 0.02.)
    standardize_target : bool, default=True
        Train on (y - mean) / std of the training targets and map predictions
        back (``target_mean_``, ``target_std_``): the step size then does not
        depend on the targets' scale.

    Attributes
    ----------
    target_mean_, target_std_ : ndarray float64 (n_outputs,)
        The targets' standardisation (0 and 1 with standardize_target=False).
    n_outputs_ : int{_COMMON_ATTRS}
    """

    _output = "linear"
    _task = "regression"

    def __init__(self, hidden_layer_sizes=(100,), epsilon=10.0, activation="allrelu",
                 allrelu_slope=0.5, weight_init="he_uniform", learning_rate="constant",
                 learning_rate_init=0.001, momentum=0.9, weight_decay=2e-5, dropout=0.3,
                 batch_size=32, max_iter=100, zeta=0.3, evolution=True, growth="random",
                 growth_batches=None, growth_init="zero", regrow_init="init",
                 density_allocation="er", importance_pruning=False, ip_start=200, ip_every=10,
                 ip_percentile=20.0, standardize=True, standardize_target=True,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4,
                 n_threads=1, random_state=None, verbose=False):
        self._keep(locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def fit(self, X, y, sample_weight=None):
        """Train ``max_iter`` epochs (fewer with early stopping) from a new
        random network.

        X : array-like or scipy.sparse (n_samples, n_features);
        y : (n_samples,) or (n_samples, n_outputs) floats;
        sample_weight : array-like (n_samples,), optional."""
        X, Y = self._validate(X, y, reset=True)
        self._target_scaling(Y)
        return self._fit(X, self._scaled(Y), self._weights(X, sample_weight))

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), preceded by a topology evolution step from
        the second call on (target and feature statistics from the first call)."""
        first = not hasattr(self, "model_")
        X, Y = self._validate(X, y, reset=first)
        if first:
            self._target_scaling(Y)
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"partial_fit: y has {Y.shape[1]} outputs, the model "
                             f"{self.n_outputs_}")
        self._partial_fit_epoch(X, self._scaled(Y), self._weights(X, sample_weight), first)
        return self

    def predict(self, X):
        """Predictions (n_samples,) for a single target, else (n_samples, n_outputs),
        float64, in the targets' units."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float32,
                          order="C")
        out = self._raw_outputs(X).astype(np.float64) * self.target_std_ + self.target_mean_
        return out[:, 0] if self._y_1d else out

    # ------------------------------------------------------------------ internals
    def _outputs(self) -> int:
        return int(self.n_outputs_)

    def _validate(self, X, y, reset: bool):
        X, y = validate_data(self, X, y, reset=reset, accept_sparse="csr", dtype=np.float32,
                             order="C", multi_output=True, y_numeric=True)
        if sp.issparse(X):
            X.sort_indices()
        Y = np.asarray(y, dtype=np.float64)
        if reset:
            self._y_1d = Y.ndim == 1
        return X, Y.reshape(Y.shape[0], -1)

    def _target_scaling(self, Y: np.ndarray) -> None:
        self.n_outputs_ = int(Y.shape[1])
        if self.standardize_target:
            self.target_mean_ = Y.mean(axis=0)
            std = Y.std(axis=0)
            self.target_std_ = np.where(std > 0, std, 1.0)
        else:
            self.target_mean_ = np.zeros(Y.shape[1])
            self.target_std_ = np.ones(Y.shape[1])

    def _scaled(self, Y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((Y - self.target_mean_) / self.target_std_,
                                    dtype=np.float32)

    def _weights(self, X, sample_weight) -> np.ndarray | None:
        if sample_weight is None:
            return None
        w = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if (w < 0).any():
            raise ValueError("sample_weight must be non-negative")
        return _unit_mean(w)

    def _validation_score(self, X_val, t_val, w_val) -> float:
        """R^2 on the validation split (uniform over outputs; the
        standardisation of the targets does not change it)."""
        pred = self._raw_outputs(X_val).astype(np.float64)
        Y = t_val.astype(np.float64).reshape(pred.shape)
        if w_val is not None:
            from sklearn.metrics import r2_score
            return float(r2_score(Y, pred, sample_weight=w_val))
        return regression_scores(Y, pred)["r2"]


def _unit_mean(w: np.ndarray) -> np.ndarray:
    """float32 weights rescaled once to average 1 over the data given (all
    ones stay exactly ones): relative weights are kept across batches, and
    the step size does not depend on the weights' overall scale."""
    total = float(w.sum())
    if not total > 0:
        raise ValueError("sample_weight (times class_weight) sums to 0: at least one sample "
                         "needs a positive weight")
    return np.ascontiguousarray(w * (w.size / total), dtype=np.float32)


def _refuse_alpha(cls, value) -> None:
    raise ValueError(
        f"alpha={value!r}: {cls.__name__} has no 'alpha'. scikit-learn's MLP alpha is an L2 "
        f"penalty: use weight_decay (the paper's per-step decay, default 2e-4); the All-ReLU "
        f"slope is allrelu_slope")


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
