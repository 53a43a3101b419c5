"""The compiled whole-batch step (spmm.StepPlan, SparseMLP._step_plan)
against the layer-by-layer path it replaces: the same kernels with the same
arguments, so the same weights, momenta, biases and losses bit for bit; and
the plan rebuilt, never reused, when what it bound has changed."""

from __future__ import annotations

import numpy as np
import pytest

import sparse_mlp.model as model_mod
from sparse_mlp import kernels
from sparse_mlp.evolution import set_step
from sparse_mlp.kernels import spmm
from sparse_mlp.model import SparseMLP

PARAMS = ("data", "velocity", "bias", "bias_velocity", "indices", "indptr")


@pytest.fixture
def every_call_split():
    """Kernel calls of any size use the threads asked for."""
    old = kernels.min_parallel_work()
    kernels.min_parallel_work(0)
    yield
    kernels.min_parallel_work(old)


def _net(activation="allrelu", threads=1, output="softmax", dropout=0.3, cap=None,
         sizes=(40, 60, 50, 3), seed=11):
    return SparseMLP(list(sizes), 4.0, activation,
                     0.3 if activation in ("allrelu", "leaky") else None, "he_uniform",
                     output=output, dropout=dropout, rng=np.random.default_rng(seed),
                     n_threads=threads, lr_fan_in_cap=cap)


def _data(n_in=40, B=32, n_classes=3, seed=3):
    r = np.random.default_rng(seed)
    X = r.standard_normal((n_in, B)).astype(np.float32)
    y = r.integers(0, n_classes, B).astype(np.int32)
    return X, y


def _train(m, X, y, steps, plan, monkeypatch, nesterov=False, sample_weight=None):
    monkeypatch.setattr(model_mod, "STEP_PLAN", plan)
    losses = []
    for step in range(steps):
        losses.append(m.train_step(X, y, 0.05, 0.9, 2e-4, m.dropout_keys(5, step),
                                   nesterov=nesterov, sample_weight=sample_weight))
    assert (m._plan is not None) == plan
    return losses


def _same(a, b):
    for la, lb in zip(a.layers, b.layers):
        for name in PARAMS:
            assert np.array_equal(getattr(la, name), getattr(lb, name)), name


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("activation, output, nesterov, cap", [
    ("allrelu", "softmax", False, None),
    ("relu", "softmax", True, None),
    ("tanh", "sigmoid", False, 2.0),
    ("sigmoid", "softmax", False, None),
    ("leaky", "softmax", True, 3.0),
])
def test_plan_step_is_the_layer_path_bit_for_bit(every_call_split, monkeypatch, threads,
                                                 activation, output, nesterov, cap):
    X, y = _data()
    a = _net(activation, threads, output, cap=cap)
    b = a.copy()
    la = _train(a, X, y, 4, True, monkeypatch, nesterov)
    lb = _train(b, X, y, 4, False, monkeypatch, nesterov)
    assert la == lb
    _same(a, b)


def test_plan_with_sample_weights_and_no_dropout(monkeypatch):
    X, y = _data()
    w = np.random.default_rng(0).uniform(0.5, 2.0, X.shape[1]).astype(np.float32)
    a = _net(dropout=0.0)
    b = a.copy()
    assert _train(a, X, y, 3, True, monkeypatch, sample_weight=w) == \
        _train(b, X, y, 3, False, monkeypatch, sample_weight=w)
    _same(a, b)


def test_two_threads_plan_runs_the_split_update_like_the_layer_path(every_call_split,
                                                                   monkeypatch):
    """Two threads: layers up to SPLIT_UPDATE_MAX take the split update; with
    the bound at 0 the fused single pass; both as the layer path, and the
    same numbers as one thread."""
    X, y = _data()
    nets = {}
    for split_max in (model_mod.SPLIT_UPDATE_MAX, 0):
        monkeypatch.setattr(model_mod, "SPLIT_UPDATE_MAX", split_max)
        for plan in (True, False):
            m = _net(threads=2)
            _train(m, X, y, 3, plan, monkeypatch)
            nets[split_max, plan] = m
    one = _net(threads=1)
    _train(one, X, y, 3, True, monkeypatch)
    for m in nets.values():
        _same(m, one)


def test_plan_is_rebuilt_after_set_and_when_arrays_or_settings_change(monkeypatch):
    """SET replaces a layer's arrays; a checkpoint load or a user may assign
    new ones; the thread count, the fan-in cap and the batch size may change:
    each time the next step builds a new plan, and the results stay those of
    the layer path."""
    X, y = _data()
    X16, y16 = np.ascontiguousarray(X[:, :16]), y[:16]
    a = _net()
    b = a.copy()
    for plan, m in ((True, a), (False, b)):
        monkeypatch.setattr(model_mod, "STEP_PLAN", plan)
        rng = np.random.default_rng(8)
        seen = []
        m.train_step(X, y, 0.05, 0.9, 0.0, m.dropout_keys(1, 0))
        seen.append(m._plan)
        for layer in m.layers[:-1]:  # SET: new arrays in the hidden layers
            set_step(layer, 0.3, rng)
        m.train_step(X, y, 0.05, 0.9, 0.0, m.dropout_keys(1, 1))
        seen.append(m._plan)
        m.layers[1].data = m.layers[1].data.copy()
        m.layers[1].velocity = m.layers[1].velocity.copy()
        m.train_step(X, y, 0.05, 0.9, 0.0, m.dropout_keys(1, 2))
        seen.append(m._plan)
        m.lr_fan_in_cap = 2.0
        m.train_step(X, y, 0.05, 0.9, 0.0, m.dropout_keys(1, 3))
        seen.append(m._plan)
        m.train_step(X16, y16, 0.05, 0.9, 0.0, m.dropout_keys(1, 4))
        seen.append(m._plan)
        m.n_threads = 2
        m.train_step(X16, y16, 0.05, 0.9, 0.0, m.dropout_keys(1, 5))
        seen.append(m._plan)
        m.train_step(X16, y16, 0.05, 0.9, 0.0, m.dropout_keys(1, 6))
        seen.append(m._plan)
        if plan:
            assert all(p is not None for p in seen)
            assert len({id(p) for p in seen[:-1]}) == len(seen) - 1  # a new plan each time
            assert seen[-1] is seen[-2]  # ... and kept while nothing changed
    _same(a, b)


def test_plan_is_not_used_where_the_layer_path_is_needed(monkeypatch):
    """Lean activations, SReLU and micro-batches take the layer path."""
    X, y = _data()
    monkeypatch.setattr(model_mod, "STEP_PLAN", True)
    lean = SparseMLP([40, 60, 50, 3], 4.0, "allrelu", 0.3, "he_uniform", dropout=0.3,
                     rng=np.random.default_rng(1), activation_memory="lean")
    srelu = _net("srelu")
    for m in (lean, srelu):
        m.train_step(X, y, 0.05, 0.9, 0.0, m.dropout_keys(1, 0))
        assert m._plan is None
    fast = _net()
    fast.train_step(X, y, 0.05, 0.9, 0.0, fast.dropout_keys(1, 0), micro_batch=8)
    assert fast._plan is None
    fast.train_step(X, y, 0.05, 0.9, 0.0, fast.dropout_keys(1, 1))
    assert fast._plan is not None
    fast.release_buffers()
    assert fast._plan is None


def test_step_plan_checks_its_buffers():
    m = _net()
    bufs = m._train_buffers(32)
    lr = [1.0] * m.n_layers
    split = [False] * m.n_layers
    bad = dict(bufs, Z=[bufs["Z"][0], np.zeros((50, 16), np.float32), bufs["Z"][2]])
    with pytest.raises(ValueError, match="Z"):
        spmm.StepPlan(m.layers, m.acts, bad, lr, split, None, 0)
    with pytest.raises(ValueError, match="one Z per layer"):
        spmm.StepPlan(m.layers, m.acts[:1], bufs, lr, split, None, 0)
    plan = spmm.StepPlan(m.layers, m.acts, bufs, lr, split, None, 0)
    with pytest.raises(ValueError, match="X must be"):
        plan.forward(np.zeros((40, 16), np.float32), m.dropout_keys(1, 0), 0.0, 1)
    with pytest.raises(ValueError, match="scratch"):
        spmm.StepPlan(m.layers, m.acts, bufs, lr, [False, True, True],
                      (np.zeros(3, np.float32), np.zeros(3, np.float32)), 0)
