"""Direct guards for mistakes the rest of the suite let through (found by
mutation testing): the paper's weight decay (config and kernels), the
paper's Importance Pruning defaults and tie rule, All-ReLU's alternating
sign through the model's kernels, and a fresh shuffle every epoch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_layer
from test_training import make_trainer, small_cfg

import run_experiment
from sparse_mlp import augment
from sparse_mlp import model as model_module
from sparse_mlp import reference as ref
from sparse_mlp.config import TrainConfig
from sparse_mlp.evolution import importance_prune
from sparse_mlp.kernels import spmm
from sparse_mlp.layers import SparseLayer
from sparse_mlp.model import SparseMLP
from sparse_mlp.training import RandomStreams


def _paper_decay(mode: str, lr: float, wd: float) -> float:
    """docs/semantics.md, "Training step": paper w = w + v - wd*w; decoupled w -= lr*wd*w."""
    return wd if mode == "paper" else lr * wd


# ---------------------------------------------------------------- weight decay
@pytest.mark.parametrize("lr", [0.5, 0.05, 0.003])
def test_config_decay_is_wd_in_paper_mode_and_lr_wd_decoupled(lr):
    wd = 0.02
    assert TrainConfig(lr=lr, weight_decay=wd).decay == wd  # paper is the default mode
    assert TrainConfig(lr=lr, weight_decay=wd, decay_mode="paper").decay == wd
    assert TrainConfig(lr=lr, weight_decay=wd, decay_mode="decoupled").decay == \
        pytest.approx(lr * wd, rel=1e-12)


@pytest.mark.parametrize("mode", ["paper", "decoupled"])
def test_one_trainer_step_decays_weights_by_the_papers_rule(mode):
    """One mini-batch of the Trainer, with and without weight decay, from the
    same start: the gradient and momentum are identical (velocity starts at
    0 and the gradient uses the forward pass's weights), so the weights
    differ by exactly -decay * w_start."""
    lr, wd = 0.05, 0.01
    runs = []
    for w in (wd, 0.0):
        cfg = small_cfg(lr=lr, weight_decay=w, decay_mode=mode, dropout=0.0, batch_size=16)
        tr = make_trainer(cfg, n=16)
        assert tr.n_batches == 1
        w0 = [lay.data.astype(np.float64) for lay in tr.model.layers]
        assert all(not lay.velocity.any() for lay in tr.model.layers)
        tr.train_epoch()
        assert tr.state.step == 1
        runs.append((w0, [lay.data.astype(np.float64) for lay in tr.model.layers],
                     [lay.velocity.copy() for lay in tr.model.layers]))
    (w0, w_decay, v_decay), (w0_plain, w_plain, v_plain) = runs
    d = _paper_decay(mode, lr, wd)
    for li in range(len(w0)):
        assert np.array_equal(w0[li], w0_plain[li])
        assert np.array_equal(v_decay[li], v_plain[li])
        assert np.abs(v_decay[li]).max() > 0  # the step did move the weights
        np.testing.assert_allclose(w_decay[li] - w_plain[li], -d * w0[li], rtol=1e-3,
                                   atol=1e-7, err_msg=f"layer {li}, {mode} decay")


# -------------------------------------------------------------- kernel update
@pytest.mark.parametrize("mode", ["paper", "decoupled"])
@pytest.mark.parametrize("lr", [0.5, 0.05, 0.003])
@pytest.mark.parametrize("nesterov", [False, True])
def test_apply_update_matches_float64_reference(rng, mode, lr, nesterov):
    wd, mu, n = 0.05, 0.9, 513
    decay = TrainConfig(lr=lr, weight_decay=wd, decay_mode=mode).decay
    w = rng.standard_normal(n).astype(np.float32)
    v = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    w1, v1 = w.copy(), v.copy()
    spmm.apply_update(w1, v1, g, lr, mu, decay, nesterov, n_threads=2)
    w64, v64, g64 = w.astype(np.float64), v.astype(np.float64), g.astype(np.float64)
    vn = mu * v64 - lr * g64
    step = mu * vn - lr * g64 if nesterov else vn
    d = _paper_decay(mode, lr, wd)
    np.testing.assert_allclose(v1, vn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w1, w64 + step - d * w64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["paper", "decoupled"])
@pytest.mark.parametrize("lr", [0.5, 0.05, 0.003])
@pytest.mark.parametrize("fused", ["update", "backward_update", "apply_gradient"])
def test_layer_updates_match_float64_reference(rng, mode, lr, fused):
    """The fused weight-gradient + update kernels of a SparseLayer (and the
    update of a given gradient) against v = mu*v - lr*g; w = w + v - d*w in
    float64, for weights and biases."""
    wd, mu, B = 0.05, 0.9, 19
    decay = TrainConfig(lr=lr, weight_decay=wd, decay_mode=mode).decay
    layer = random_layer(rng, 30, 25, 0.3)
    X = rng.standard_normal((30, B)).astype(np.float32)
    D = rng.standard_normal((25, B)).astype(np.float32)
    w0, v0 = layer.data.astype(np.float64), layer.velocity.astype(np.float64)
    b0, bv0 = layer.bias.astype(np.float64), layer.bias_velocity.astype(np.float64)
    W0 = ref.dense(layer)
    rows = np.repeat(np.arange(layer.n_out), layer.row_lengths())
    g = ((X.astype(np.float64) @ D.astype(np.float64).T) / B)[layer.indices, rows]
    bg = D.astype(np.float64).mean(axis=1)
    if fused == "update":
        layer.update(X, D, lr, mu, decay, n_threads=2)
    elif fused == "backward_update":
        G = np.full((30, B), np.nan, np.float32)
        layer.backward_update(X, D, G, lr, mu, decay, n_threads=2)
        np.testing.assert_allclose(G, W0 @ D, rtol=1e-5, atol=1e-5)  # old weights
    else:
        layer.apply_gradient(g.astype(np.float32), bg.astype(np.float32), lr, mu, decay,
                             n_threads=2)
    d = _paper_decay(mode, lr, wd)
    v = mu * v0 - lr * g
    np.testing.assert_allclose(layer.velocity, v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.data, w0 + v - d * w0, rtol=1e-5, atol=1e-6)
    bv = mu * bv0 - lr * bg
    np.testing.assert_allclose(layer.bias_velocity, bv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias, b0 + bv - d * b0, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ paper defaults
PAPER_DEFAULTS = dict(momentum=0.9, weight_decay=2e-4, decay_mode="paper", nesterov=False,
                      dropout=0.3, zeta=0.3, evolution=True, importance_pruning=False,
                      ip_start=200, ip_every=10, ip_percentile=20.0, epochs=500,
                      activation="allrelu", output="softmax")


def test_train_config_defaults_are_the_papers():
    cfg = TrainConfig()
    for name, value in PAPER_DEFAULTS.items():
        assert getattr(cfg, name) == value, name
    assert cfg.decay == 2e-4


@pytest.mark.parametrize("dataset", ["my_data.csv", "madelon", "higgs"])
def test_cli_importance_pruning_gets_the_papers_schedule(dataset):
    """--importance-pruning without --ip-* flags: the 20th percentile from
    epoch 200 every 10 epochs, for a user's file and a paper dataset."""
    args = run_experiment.build_parser().parse_args(["--dataset", dataset,
                                                     "--importance-pruning"])
    assert args.ip_percentile is None and args.ip_start is None and args.ip_every is None
    cfg = run_experiment.config_from_args(args)
    assert cfg.importance_pruning is True
    assert (cfg.ip_percentile, cfg.ip_start, cfg.ip_every) == (20.0, 200, 10)
    assert (cfg.momentum, cfg.weight_decay, cfg.decay_mode, cfg.zeta) == \
        (0.9, 2e-4, "paper", 0.3)
    if dataset.endswith(".csv"):
        assert cfg.preset == "user-data"
    # the flag still overrides
    args = run_experiment.build_parser().parse_args(["--dataset", dataset,
                                                     "--importance-pruning",
                                                     "--ip-percentile", "10"])
    assert run_experiment.config_from_args(args).ip_percentile == 10.0


def test_estimator_defaults_are_the_papers():
    from sparse_mlp.estimator import SparseMLPClassifier  # (imports scikit-learn)

    p = SparseMLPClassifier().get_params()
    assert (p["ip_percentile"], p["ip_start"], p["ip_every"]) == (20.0, 200, 10)
    assert (p["momentum"], p["weight_decay"], p["zeta"], p["dropout"]) == (0.9, 2e-4, 0.3, 0.3)
    assert p["importance_pruning"] is False


def test_default_percentile_prunes_the_weakest_fifth():
    """Effect of the default: a trainer whose config leaves ip_percentile at
    its default prunes the neurons at or below the 20th percentile."""
    cfg = small_cfg(importance_pruning=True, evolution=False, ip_start=0, ip_every=1)
    tr = make_trainer(cfg, n=64)
    evolved = tr.model.layers[:-1]
    imps = [lay.importance() for lay in evolved]
    tr.evolve(2)
    for lay, imp in zip(evolved, imps):
        expect = imp <= np.percentile(imp, 20.0)
        assert expect.sum() != (imp <= np.percentile(imp, 80.0)).sum()
        np.testing.assert_array_equal(lay.row_lengths() == 0, expect)


# ------------------------------------------------------ Importance Pruning ties
def _layer_with_importances(columns: list[list[float]], n_in: int = 8) -> SparseLayer:
    """A layer whose output neuron j has the incoming weights columns[j]
    (on inputs 0, 1, ...): dyadic values, so sums of |w| are exact."""
    W = np.zeros((n_in, len(columns)), np.float32)
    for j, col in enumerate(columns):
        W[:len(col), j] = col
    layer = SparseLayer.from_scipy(sp.csc_matrix(W))
    layer.velocity[:] = np.arange(1, layer.nnz + 1, dtype=np.float32)
    return layer


def _check_prune_against_reference(layer: SparseLayer, percentile: float) -> np.ndarray:
    """Prune and compare with the rule in NumPy: importance (sum of |w| over
    incoming weights, all neurons) <= the percentile loses every incoming
    weight; the others keep weights and momentum.  Returns the dead mask."""
    W = ref.dense(layer)
    V = sp.csc_matrix((layer.velocity.copy(), layer.indices.copy(), layer.indptr.copy()),
                      shape=layer.shape).toarray()
    imp = np.abs(W).sum(axis=0)
    dead_ref = imp <= np.percentile(imp, percentile)
    removed, dead = importance_prune(layer, percentile)
    np.testing.assert_array_equal(dead, dead_ref)
    assert removed == int((W[:, dead_ref] != 0).sum())
    W[:, dead_ref] = 0.0
    V[:, dead_ref] = 0.0
    np.testing.assert_array_equal(ref.dense(layer), W)
    V_after = sp.csc_matrix((layer.velocity, layer.indices, layer.indptr),
                            shape=layer.shape).toarray()
    np.testing.assert_array_equal(V_after, V)
    return dead_ref


def test_importance_prune_removes_neurons_tied_with_the_threshold():
    # importances 1,1,1,1,1,2,3,4,5,6: the 20th percentile is exactly 1.0
    cols = [[0.5, -0.5], [1.0], [-0.25, 0.75], [0.5, 0.25, -0.25], [-1.0],
            [2.0], [-1.5, 1.5], [4.0], [2.5, -2.5], [1.0, 2.0, -3.0]]
    layer = _layer_with_importances(cols)
    np.testing.assert_array_equal(layer.importance(), [1, 1, 1, 1, 1, 2, 3, 4, 5, 6])
    dead = _check_prune_against_reference(layer, 20.0)
    np.testing.assert_array_equal(np.flatnonzero(dead), [0, 1, 2, 3, 4])
    assert layer.nnz == 1 + 2 + 1 + 2 + 3


def test_importance_prune_ties_in_the_middle_and_dead_neurons():
    # 30 neurons: 5 at 0.5, 8 at 1.0, the rest larger; the 20th percentile
    # (position 5.8) is 1.0, so 13 neurons go, not 5
    cols = [[0.5]] * 5 + [[0.5, -0.5]] * 8 + [[float(k)] for k in range(2, 19)]
    layer = _layer_with_importances(cols)
    dead = _check_prune_against_reference(layer, 20.0)
    assert dead.sum() == 13 and dead[:13].all()
    # already-dead neurons (importance 0) count and are "at" a 0 threshold
    cols = [[], [], []] + [[1.0]] * 4 + [[3.0], [4.0], [5.0]]
    layer = _layer_with_importances(cols)
    dead = _check_prune_against_reference(layer, 20.0)
    np.testing.assert_array_equal(np.flatnonzero(dead), [0, 1, 2])
    assert layer.nnz == 7


def test_importance_prune_random_ties_match_reference(rng):
    # integer-valued |w|: many exact ties at every percentile
    W = rng.integers(-3, 4, size=(12, 40)).astype(np.float32)
    W[:, :4] = 0.0
    layer = SparseLayer.from_scipy(sp.csc_matrix(W))
    for p in (10.0, 20.0, 35.0, 50.0):
        _check_prune_against_reference(layer, p)


# ------------------------------------------------------------------- All-ReLU
def _allrelu(z: np.ndarray, hidden_index: int, alpha: float) -> np.ndarray:
    """Paper eq. 3 (docs/semantics.md, "All-ReLU"): x > 0: x; x <= 0: -alpha*x on the 1st,
    3rd, ... hidden layer, +alpha*x on the 2nd, 4th, ..."""
    slope = -alpha if hidden_index % 2 == 1 else alpha
    return np.where(z > 0, z, slope * z)


def _allrelu_model(alpha: float) -> SparseMLP:
    return SparseMLP([12, 16, 16, 16, 3], epsilon=4, activation="allrelu", alpha=alpha,
                     init="he_uniform", dropout=0.0, rng=np.random.default_rng(3), n_threads=1)


@pytest.mark.parametrize("alpha", [0.6, 0.05])
def test_allrelu_signs_through_the_training_forward(rng, alpha, monkeypatch):
    # (this test reads Z, which the training forward otherwise leaves unwritten where
    # it keeps the masks for the backward pass)
    monkeypatch.setattr(model_module, "SKIP_Z_WITH_BITS", False)
    model = _allrelu_model(alpha)
    for lay in model.layers:
        lay.bias[:] = rng.standard_normal(lay.n_out).astype(np.float32) * 0.1
    X = rng.standard_normal((12, 33)).astype(np.float32)
    X[:, :8] = -np.abs(X[:, :8])
    model.forward_train(X, model.dropout_keys(0, 0))
    bufs = model._train_bufs
    prev = X.astype(np.float64)
    for h in range(3):
        lay = model.layers[h]
        z = ref.dense(lay).T @ prev + lay.bias[:, None]
        np.testing.assert_allclose(bufs["Z"][h], z, rtol=1e-5, atol=1e-5)
        Z = bufs["Z"][h].astype(np.float64)
        A = bufs["A"][h].astype(np.float64)
        neg = Z < 0
        assert neg.sum() >= 20 and (~neg).sum() >= 20  # both sides exercised
        # the documented values and, spelled out, the sign on the negative side
        np.testing.assert_allclose(A, _allrelu(Z, h + 1, alpha), rtol=1e-6, atol=1e-7)
        if h % 2 == 0:  # 1st and 3rd hidden layers: negative inputs come out positive
            assert (A[neg] > 0).all()
        else:
            assert (A[neg] < 0).all()
        np.testing.assert_allclose(A[neg], (-1) ** (h + 1) * alpha * Z[neg], rtol=1e-6)
        prev = A


def test_allrelu_signs_through_the_inference_path():
    """predict_proba (the eval kernels) of a chain of one-to-one layers fed
    negative inputs against the formula: layer weights -1 between hidden
    layers 1 and 2 keep every hidden layer's input negative."""
    alpha, n = 0.5, 6
    eye = sp.identity(n, format="csc", dtype=np.float32)
    weights = [eye, -eye, eye, sp.csc_matrix(np.ones((n, 3), np.float32) *
                                             np.array([1.0, -1.0, 0.5], np.float32))]
    layers = [SparseLayer.from_scipy(w) for w in weights]
    model = SparseMLP([n, n, n, n, 3], activation="allrelu", alpha=alpha, dropout=0.0,
                      layers=layers, n_threads=1)
    x = -np.linspace(0.5, 3.0, n)
    z1 = x                                   # 1st hidden: -alpha*x  > 0
    a1 = _allrelu(z1, 1, alpha)
    z2 = -a1                                 # 2nd hidden: +alpha*x  < 0
    a2 = _allrelu(z2, 2, alpha)
    z3 = a2                                  # 3rd hidden: -alpha*x  > 0
    a3 = _allrelu(z3, 3, alpha)
    assert (z1 < 0).all() and (z2 < 0).all() and (z3 < 0).all()
    np.testing.assert_allclose(a1, alpha * np.linspace(0.5, 3.0, n))
    np.testing.assert_allclose(a3, alpha ** 3 * np.linspace(0.5, 3.0, n))
    logits = np.asarray(weights[3].toarray(), np.float64).T @ a3
    p = np.exp(logits - logits.max())
    p /= p.sum()
    out = model.predict_proba(x[None, :].astype(np.float32))
    np.testing.assert_allclose(out[0], p, rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------------- shuffle
class _GatherRecorder:
    """Stands in for the kernels module inside augment.py: records the rows
    of every mini-batch the trainer gathers."""

    def __init__(self, real) -> None:
        self._real = real
        self.rows: list[np.ndarray] = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def gather_columns(self, X, rows, out, n_threads=1):
        self.rows.append(np.array(rows, copy=True))
        return self._real.gather_columns(X, rows, out, n_threads=n_threads)


def _epoch_orders(monkeypatch, seed: int, epochs: int = 3, n: int = 64, B: int = 16):
    rec = _GatherRecorder(spmm)
    # (the Trainer gathers through augment.py, with the build that spmm_for picks)
    real_spmm_for = augment.spmm_for
    monkeypatch.setattr(augment, "spmm_for", lambda n_threads, work=None: rec)
    tr = make_trainer(small_cfg(epochs=epochs, batch_size=B, seed=seed), n=n)
    tr.run(progress=False)
    monkeypatch.setattr(augment, "spmm_for", real_spmm_for)
    per_epoch = n // B
    assert len(rec.rows) == epochs * per_epoch
    assert all(r.size == B for r in rec.rows)
    return [np.concatenate(rec.rows[e * per_epoch:(e + 1) * per_epoch]) for e in range(epochs)]


def test_each_epoch_draws_a_new_permutation_from_the_shuffle_stream(monkeypatch):
    n, epochs = 64, 3
    orders = _epoch_orders(monkeypatch, seed=5, epochs=epochs, n=n)
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))  # a permutation
    # epoch e's order is the e-th permutation of the seed's shuffle stream
    shuffle = RandomStreams(5).shuffle
    for e in range(epochs):
        np.testing.assert_array_equal(orders[e], shuffle.permutation(n), err_msg=f"epoch {e}")
    # no two epochs see the same batch sequence
    for a in range(epochs):
        for b in range(a + 1, epochs):
            assert not np.array_equal(orders[a], orders[b]), (a, b)
    # reproducible from the seed; another seed shuffles differently
    again = _epoch_orders(monkeypatch, seed=5, epochs=epochs, n=n)
    for x, y in zip(orders, again):
        np.testing.assert_array_equal(x, y)
    other = _epoch_orders(monkeypatch, seed=6, epochs=epochs, n=n)
    assert not np.array_equal(orders[0], other[0])


def test_importance_pruning_never_empties_a_layer(caplog):
    """--ip-percentile 100 used to prune every hidden layer to nothing and train on
    silently; the floor keeps the most important neurons and says so."""
    import logging

    from sparse_mlp.evolution import importance_prune, ip_floor

    layer = random_layer(np.random.default_rng(5), 60, 200, 0.2)
    imp = np.abs(layer.to_scipy().toarray()).sum(axis=0)
    with caplog.at_level(logging.WARNING):
        _, dead = importance_prune(layer, 100.0)
    floor = ip_floor(200)
    assert floor == 10 and int((~dead).sum()) == floor
    assert np.array_equal(np.sort(np.flatnonzero(~dead)),
                          np.sort(np.argsort(-imp, kind="stable")[:floor]))
    assert int((layer.row_lengths() > 0).sum()) == floor
    assert "stops at the floor of 10" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # pruning again at the floor changes nothing
        removed, _ = importance_prune(layer, 100.0)
    assert removed == 0 and int((layer.row_lengths() > 0).sum()) == floor


@pytest.mark.parametrize("flag, value", [
    ("--epsilon", "nan"), ("--lr", "nan"), ("--lr", "inf"), ("--alpha", "nan"),
    ("--alpha", "inf"), ("--momentum", "nan"), ("--dropout", "nan"), ("--zeta", "nan"),
    ("--weight-decay=-inf", None), ("--growth-candidates", "nan"), ("--ip-percentile", "nan"),
    ("--post-prune", "5,nan"), ("--test-fraction", "inf"), ("--erk-power", "nan"),
])
def test_every_float_flag_must_be_finite(flag, value, tmp_path, capsys):
    """NaN / inf in a float flag is a configuration error (exit 2) naming the flag,
    never a dense network or a 'training diverged' later."""
    extra = ["--importance-pruning"] if flag == "--ip-percentile" else []
    extra += ["--growth", "gradient"] if flag == "--growth-candidates" else []
    given = [flag] if value is None else [flag, value]
    code = run_experiment.main(["--epochs", "1", "--hidden", "8", "--out", str(tmp_path / "r"),
                                "--quiet", *extra, *given])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{flag.split('=')[0]} must be a finite number" in err
    assert not (tmp_path / "r").exists()
