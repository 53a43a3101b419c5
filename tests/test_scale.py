"""Memory-lean training: 'lean' activations, micro-batches, memory planning."""

from __future__ import annotations

import numpy as np
import pytest

from sparse_mlp.activations import HIDDEN_ACTIVATIONS
from sparse_mlp.model import SparseMLP


def _model(activation, memory, seed=0):
    rng = np.random.default_rng(seed)
    return SparseMLP([30, 50, 40, 20, 4], epsilon=4, activation=activation, alpha=0.5,
                     init="he_uniform", dropout=0.3, rng=rng, n_threads=1,
                     activation_memory=memory)


def _batches(n=5, B=32, d=30, c=4):
    rng = np.random.default_rng(1)
    return [(np.ascontiguousarray(rng.standard_normal((d, B)), dtype=np.float32),
             rng.integers(0, c, B).astype(np.int32)) for _ in range(n)]


def _train(model, batches, micro_batch=None):
    losses = []
    for step, (X, y) in enumerate(batches):
        keys = model.dropout_keys(7, step)
        losses.append(model.train_step(X, y, 0.05, 0.9, 2e-4, keys, micro_batch=micro_batch)[0])
    return losses


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_lean_activations_are_bit_identical_to_fast(activation):
    fast, lean = _model(activation, "fast"), _model(activation, "lean")
    batches = _batches()
    assert _train(fast, batches) == _train(lean, batches)
    for a, b in zip(fast.layers, lean.layers):
        assert np.array_equal(a.data, b.data) and np.array_equal(a.velocity, b.velocity)
        assert np.array_equal(a.bias, b.bias)
    for a, b in zip(fast.acts, lean.acts):
        if a.params is not None:
            assert np.array_equal(a.params, b.params)


@pytest.mark.parametrize("memory", ["fast", "lean"])
@pytest.mark.parametrize("activation", ["allrelu", "srelu"])
def test_micro_batches_equal_one_full_batch(activation, memory):
    full, micro = _model(activation, "fast"), _model(activation, memory)
    batches = _batches()
    l_full = _train(full, batches)
    l_micro = _train(micro, batches, micro_batch=8)
    np.testing.assert_allclose(l_micro, l_full, rtol=1e-5)
    for a, b in zip(full.layers, micro.layers):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b.velocity, a.velocity, rtol=1e-3, atol=1e-6)
    for a, b in zip(full.acts, micro.acts):
        if a.params is not None:
            np.testing.assert_allclose(b.params, a.params, rtol=1e-4, atol=1e-6)


def test_micro_batch_rounds_to_a_divisor():
    m = _model("relu", "lean")
    X = np.zeros((30, 12), np.float32)
    assert m._micro_batches(X, 5) == [(0, 4), (4, 4), (8, 4)]
    assert m._micro_batches(X, None) == [(0, 12)]
    assert m._micro_batches(X, 100) == [(0, 12)]


def test_gradients_with_micro_batches_match(rng):
    model = _model("allrelu", "lean")
    X, y = _batches(1)[0]
    keys = model.dropout_keys(3, 0)
    l1, g1, _ = model.gradients(X, y, keys)
    l2, g2, _ = model.gradients(X, y, keys, micro_batch=4)
    assert l1 == pytest.approx(l2, rel=1e-6)
    for (a, ab), (b, bb) in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(ab, bb, rtol=1e-4, atol=1e-7)


def test_plan_prefers_fast_then_lean_then_micro_batches():
    from sparse_mlp.memory import estimate, plan
    sizes = [1000, 200_000, 200_000, 200_000, 200_000, 2]  # lean saves with >= 3 hidden
    full_fast = estimate(sizes, 5, 128, activation_memory="fast").total
    full_lean = estimate(sizes, 5, 128, activation_memory="lean").total
    assert full_lean < full_fast
    assert plan(sizes, 5, 128, available=int(2 * full_fast)).activation_memory == "fast"
    p = plan(sizes, 5, 128, available=int((full_lean + full_fast) / 2 / 0.9))
    assert (p.activation_memory, p.micro_batch) == ("lean", 128)
    p = plan(sizes, 5, 128, available=int(0.6 * full_lean))
    assert p.activation_memory == "lean" and p.micro_batch < 128 and 128 % p.micro_batch == 0
    assert p.total <= 0.9 * 0.6 * full_lean


def test_plan_refuses_with_the_largest_batch_that_fits():
    from sparse_mlp.errors import MemoryBudgetError
    from sparse_mlp.memory import estimate, largest_batch, plan
    sizes = [1000, 100_000, 100_000, 2]
    one = estimate(sizes, 5, 1)
    avail = one.weights * 2 + one.gradients  # (gradients: the split update's scratch)
    with pytest.raises(MemoryBudgetError, match="--batch-size") as e:
        plan(sizes, 5, 4096, micro_batch=4096, available=avail)
    assert "GiB" in str(e.value)
    fits = largest_batch(sizes, 5, available=avail)
    assert fits >= 1
    plan(sizes, 5, fits, micro_batch=fits, available=avail, activation_memory="lean")
    with pytest.raises(MemoryBudgetError):
        plan(sizes, 5, fits + 64, micro_batch=fits + 64, available=avail,
             activation_memory="lean")


def test_estimate_matches_what_a_model_allocates():
    """The estimate of weights and activations is close to the real arrays."""
    from sparse_mlp.memory import estimate
    sizes = [300, 2000, 2000, 10]
    m = SparseMLP(sizes, epsilon=10, activation="relu", rng=np.random.default_rng(0),
                  n_threads=1)
    est = estimate(sizes, 10, 64)
    assert abs(m.nbytes - est.weights) / est.weights < 0.05
    m.forward_train(np.zeros((300, 64), np.float32), m.dropout_keys(0, 0))
    real = sum(a.nbytes for a in m._train_bufs["Z"] + m._train_bufs["A"]) + 300 * 64 * 4
    assert abs(real - est.train_batch) / est.train_batch < 0.01


def test_cli_dry_run_prints_the_plan_without_allocating(capsys):
    import run_experiment
    rc = run_experiment.main(["--dataset", "synthetic", "--hidden",
                              ",".join(["5000000"] * 10), "--epsilon", "1", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "65536-5000000" in out and "largest batch that fits" in out
    assert "weights + optimiser state (100,0" in out


def test_run_with_micro_batches_and_lean_memory(tmp_path):
    """A whole run with forced lean activations and micro-batches learns."""
    import json

    import run_experiment
    rc = run_experiment.main(["--hidden", "64,64,64", "--epochs", "3", "--threads", "1",
                              "--activation-memory", "lean", "--micro-batch", "8",
                              "--out", str(tmp_path / "r"), "--no-progress", "--quiet"])
    assert rc == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["activation_memory"] == "lean" and cfg["micro_batch"] == 8
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["best_test_acc"] > 0.5


# ---------------------------------------------------------------------------
# Table 4 training options (not the paper's): a zero output layer and a
# step size capped by fan-in


def _wide_output_model(cap=None, memory="fast"):
    """Hidden layer with ~10 inputs per neuron, output layer with 60 per class."""
    rng = np.random.default_rng(3)
    return SparseMLP([30, 60, 3], epsilon=4, activation="allrelu", alpha=0.5,
                     init="he_uniform_sparse", dropout=0.0, rng=rng, n_threads=1,
                     activation_memory=memory, lr_fan_in_cap=cap)


def test_lr_scale_is_the_fan_in_cap():
    m = _wide_output_model(cap=20.0)
    hid, out = m.layers
    assert out.nnz == 60 * 3  # capped ER probability: dense output layer
    assert m.lr_scale(1) == pytest.approx(20.0 / 60.0)
    assert m.lr_scale(0) == min(1.0, 20.0 * hid.n_out / hid.nnz) == 1.0  # fan-in ~10
    m.lr_fan_in_cap = None
    assert m.lr_scale(0) == m.lr_scale(1) == 1.0


@pytest.mark.parametrize("micro_batch", [None, 4])
def test_capped_step_scales_only_the_wide_layer(micro_batch):
    """First step (velocity 0, no decay): dw = -lr * scale * g.  The capped
    output layer moves by exactly 20/60 of the uncapped step; the hidden
    layer (below its cap) and the loss are unchanged."""
    plain, capped = _wide_output_model(), _wide_output_model(cap=20.0)
    before = [lay.data.copy() for lay in plain.layers]
    rng = np.random.default_rng(4)
    X = np.ascontiguousarray(rng.standard_normal((30, 16)), dtype=np.float32)
    y = rng.integers(0, 3, 16).astype(np.int32)
    keys = plain.dropout_keys(0, 0)
    lp = plain.train_step(X, y, 0.1, 0.9, 0.0, keys, micro_batch=micro_batch)
    lc = capped.train_step(X, y, 0.1, 0.9, 0.0, keys, micro_batch=micro_batch)
    assert lp == lc
    d_plain = plain.layers[1].data - before[1]
    d_capped = capped.layers[1].data - before[1]
    assert np.abs(d_plain).max() > 1e-3
    np.testing.assert_allclose(d_capped, d_plain * (20.0 / 60.0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(capped.layers[1].bias, plain.layers[1].bias * (20.0 / 60.0),
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(capped.layers[0].data, plain.layers[0].data)


def test_zero_output_layer_starts_and_regrows_at_zero():
    from sparse_mlp.evolution import set_step

    m = SparseMLP([30, 60, 3], epsilon=4, activation="allrelu", alpha=0.5,
                  init="he_uniform_sparse", rng=np.random.default_rng(0), n_threads=1,
                  output_init="zero")
    hid, out = m.layers
    assert out.init == "zero" and not out.data.any() and out.nnz == 180
    assert hid.init == "he_uniform_sparse" and np.abs(hid.data).min() > 0
    assert m.copy().layers[1].init == "zero"  # the layer's init travels with it
    sparse = SparseMLP([30, 60, 40], epsilon=4, init="he_uniform_sparse",
                       rng=np.random.default_rng(0), n_threads=1, output_init="zero")
    lay = sparse.layers[1]
    assert lay.nnz < 60 * 40  # sparse, so SET moves weights to new positions
    lay.data[:] = 1.0 + np.random.default_rng(2).random(lay.nnz, dtype=np.float32)
    set_step(lay, 0.3, np.random.default_rng(5))
    assert lay.nnz > 0 and (lay.data == 0).sum() > 0.25 * lay.nnz  # regrown at 0


def test_zero_is_refused_for_hidden_layers():
    from sparse_mlp.config import TrainConfig
    from sparse_mlp.errors import ConfigError

    with pytest.raises(ConfigError, match="output layer only"):
        SparseMLP([30, 20, 3], init="zero")
    with pytest.raises(ConfigError, match="--output-init zero"):
        TrainConfig(weight_init="zero").validate()
    with pytest.raises(ConfigError, match="lr-fan-in-cap must be positive"):
        TrainConfig(lr_fan_in_cap=0.0).validate()
    with pytest.raises(ConfigError, match="sequential training only"):
        TrainConfig(lr_fan_in_cap=100.0, parallel="wasap").validate()


def test_cli_takes_the_table4_options():
    import run_experiment

    cfg = run_experiment.config_from_args(run_experiment.build_parser().parse_args(
        ["--dataset", "synthetic", "--output-init", "zero", "--lr-fan-in-cap", "100",
         "--weight-init", "he_uniform_sparse"]))
    assert (cfg.output_init, cfg.lr_fan_in_cap, cfg.weight_init) == (
        "zero", 100.0, "he_uniform_sparse")


def test_planner_refuses_with_the_largest_network_that_fits():
    """Table 4's 125 M-neuron shape at 1/100 scale (655-50000x25-2, eps 1) in a
    budget where 20 such layers fit and 25 do not: the refusal names the
    largest depth and the largest width that fit, each of which the planner
    then accepts, and one more layer (or 1% more width) that it refuses."""
    from sparse_mlp.errors import MemoryBudgetError
    from sparse_mlp.memory import estimate, largest_networks, plan

    sizes = [655] + [50_000] * 25 + [2]
    avail = int(estimate([655] + [50_000] * 20 + [2], 1, 1, 1).weights * 1.25)
    with pytest.raises(MemoryBudgetError, match="even a batch of 1 does not fit") as e:
        plan(sizes, 1, 128, available=avail)
    best = largest_networks(sizes, 1, 128, available=avail)
    depth, width = best["depth"], best["width"]
    assert depth is not None and width is not None and len(width) == 25
    assert f"--hidden 50000x{len(depth)}" in str(e.value)
    assert f"--hidden {width[0]}x25" in str(e.value)
    assert 15 <= len(depth) < 25 and width[0] < 50_000
    plan([655, *depth, 2], 1, 128, available=avail)   # each suggestion is accepted
    plan([655, *width, 2], 1, 128, available=avail)
    with pytest.raises(MemoryBudgetError):
        plan([655, *depth, 50_000, 2], 1, 128, available=avail)
    with pytest.raises(MemoryBudgetError):
        plan([655] + [int(width[0] * 1.01)] * 25 + [2], 1, 128, available=avail)


def test_hidden_flag_takes_w_x_n():
    import run_experiment
    parse = run_experiment.build_parser().parse_args
    assert parse(["--hidden", "5000000x3"]).hidden == [5_000_000] * 3
    assert parse(["--hidden", "1000x2,10"]).hidden == [1000, 1000, 10]
    with pytest.raises(SystemExit):
        parse(["--hidden", "100x0"])
