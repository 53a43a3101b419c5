"""Layer construction, transposed index, SET evolution, Importance Pruning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_layer

from sparse_mlp import reference as ref
from sparse_mlp.errors import ConfigError
from sparse_mlp.evolution import (
    importance_prune,
    magnitude_prune_to,
    remove_neurons,
    set_step,
)
from sparse_mlp.kernels import topology
from sparse_mlp.layers import SparseLayer, er_probability, init_values, sample_positions


def check_invariants(layer: SparseLayer) -> None:
    """Sorted unique indices per row, consistent transposed index."""
    assert topology.check_csr(layer.indptr, layer.indices, layer.n_in) == ""
    assert layer.data.shape == layer.velocity.shape == layer.indices.shape
    # transposed index: same (row, col, value) triples
    rows = np.repeat(np.arange(layer.n_out), layer.row_lengths())
    t_cols = np.repeat(np.arange(layer.n_in), np.diff(layer.t_indptr))
    assert np.array_equal(layer.indices[layer.t_perm], t_cols)
    assert np.array_equal(rows[layer.t_perm], layer.t_rows)
    assert np.array_equal(np.sort(layer.t_perm), np.arange(layer.nnz))
    for i in range(min(layer.n_in, 50)):
        seg = layer.t_rows[layer.t_indptr[i]:layer.t_indptr[i + 1]]
        assert np.all(np.diff(seg) > 0)


def test_er_density_and_structure(rng):
    layer = SparseLayer.erdos_renyi(400, 300, 10, "normal", rng)
    p = er_probability(400, 300, 10)
    expected = p * 400 * 300
    assert abs(layer.nnz - expected) < 5 * math.sqrt(expected)
    check_invariants(layer)
    # connections spread over rows and columns, no structure
    assert layer.row_lengths().std() < 3 * math.sqrt(expected / 300)
    assert abs(layer.data.std() - 0.1) < 0.01


def test_er_dense_layer_is_full(rng):
    layer = SparseLayer.erdos_renyi(20, 2, 10, "xavier", rng)  # p capped at 1
    assert layer.nnz == 40
    check_invariants(layer)
    half = SparseLayer.erdos_renyi(40, 30, 10, "xavier", rng)  # p = 0.58: complement path
    assert abs(half.nnz - 0.5833 * 1200) < 5 * math.sqrt(1200 * 0.25)
    check_invariants(half)


def test_init_distributions(rng):
    n_in, n_out = 300, 200
    x = init_values("xavier", 20000, n_in, n_out, rng)
    lim = math.sqrt(6 / (n_in + n_out))
    assert x.dtype == np.float32 and np.abs(x).max() <= lim and np.abs(x).max() > 0.99 * lim
    h = init_values("he_uniform", 20000, n_in, n_out, rng)
    lim = math.sqrt(6 / n_in)
    assert np.abs(h).max() <= lim and abs(h.mean()) < 0.02 * lim
    with pytest.raises(ConfigError, match="unknown weight init"):
        init_values("orthogonal", 3, 2, 2, rng)


def test_sample_positions_uniform_and_distinct(rng):
    counts = np.zeros(30)
    for _ in range(3000):
        s = sample_positions(30, 10, rng)
        assert s.size == 10 and np.all(np.diff(s) > 0)
        counts[s] += 1
    assert np.allclose(counts / 3000, 1 / 3, atol=0.04)


def test_scipy_round_trip(rng):
    W = sp.random(60, 40, density=0.1, format="coo", random_state=1, dtype=np.float32)
    layer = SparseLayer.from_scipy(W, init="he_uniform")
    check_invariants(layer)
    assert abs(layer.to_scipy() - W.tocsc()).max() == 0
    assert layer.to_scipy().shape == (60, 40)
    with pytest.raises(ConfigError):
        SparseLayer.from_scipy(np.zeros((3, 3)))


def test_bad_structure_is_refused():
    indptr = np.array([0, 2, 3], np.int64)
    with pytest.raises(ConfigError, match="unsorted or duplicate"):
        SparseLayer(5, 2, indptr, np.array([3, 1, 0], np.int32), np.ones(3, np.float32))
    with pytest.raises(ConfigError, match="outside"):
        SparseLayer(5, 2, indptr, np.array([1, 7, 0], np.int32), np.ones(3, np.float32))
    with pytest.raises(ConfigError, match="at least one"):
        SparseLayer(0, 2, indptr, np.zeros(3, np.int32), np.ones(3, np.float32))


@pytest.mark.parametrize("zeta", [0.0, 0.1, 0.3, 0.5])
def test_magnitude_thresholds_match_sorting(rng, zeta):
    data = rng.standard_normal(5001).astype(np.float32)
    data[:50] = data[50]          # ties
    data[60:70] = 0.0             # zeros count with the positives
    data[70:75] = -0.0            # negative zeros with the negatives
    kn, kp, nn, npos, _, _ = topology.magnitude_thresholds(data, zeta)
    assert nn + npos == data.size
    got = topology.removal_mask(data, kn, kp).astype(bool)
    assert np.array_equal(got, ref.set_removed(data, zeta))


def test_magnitude_thresholds_one_sign_and_empty():
    pos = np.linspace(0.1, 1, 10, dtype=np.float32)
    kn, kp, nn, npos, k_neg, k_pos = topology.magnitude_thresholds(pos, 0.3)
    assert (nn, npos, k_neg, k_pos) == (0, 10, 0, 3) and kn == -1
    assert topology.removal_mask(pos, kn, kp).sum() == 3
    assert topology.magnitude_thresholds(np.zeros(0, np.float32), 0.3)[:2] == (-1, -1)



@pytest.mark.parametrize("kind", ["normal", "equal", "wide", "subnormal"])
def test_magnitude_threshold_keys_are_the_kth_smallest_magnitudes(rng, kind):
    """The radix selection's key is exactly the bit pattern of each sign
    class's k-th smallest |w|: values spread over one binade, all equal (the
    whole class set aside after the first digit), spread over 60 decades,
    subnormal."""
    n = 3001
    if kind == "normal":
        data = rng.standard_normal(n) * 0.05
    elif kind == "equal":
        data = np.where(rng.random(n) < 0.4, -0.25, 0.25)
    elif kind == "wide":
        data = rng.standard_normal(n) * 10.0 ** rng.uniform(-30, 30, n)
    else:
        data = rng.standard_normal(n) * 1e-40
    data = data.astype(np.float32)
    bits = data.view(np.uint32)
    neg = (bits >> 31) == 1
    for zeta in (0.01, 0.3, 0.99):
        kn, kp, nn, npos, k_neg, k_pos = topology.magnitude_thresholds(data, zeta)
        assert (nn, npos) == (int(neg.sum()), int((~neg).sum()))
        for key, sel, k in ((kn, neg, k_neg), (kp, ~neg, k_pos)):
            mags = np.sort(bits[sel] & 0x7FFFFFFF).astype(np.int64)
            assert k == mags.size - int((1.0 - zeta) * mags.size)
            assert key == (mags[k - 1] if k > 0 else -1)

@pytest.mark.parametrize("density", [0.05, 0.7])
def test_set_step_invariants(rng, density):
    layer = random_layer(rng, 60, 50, density, init="xavier")
    before = layer.to_scipy().tocoo()
    old = {(int(r), int(c)): (float(v), float(m)) for r, c, v, m in
           zip(before.row, before.col, before.data,
               layer.velocity)}  # csc coo order == data order
    removed = ref.set_removed(layer.data, 0.3)
    nnz = layer.nnz
    stats = set_step(layer, 0.3, rng)
    assert layer.nnz == nnz
    assert stats.removed == stats.regrown == int(removed.sum())
    check_invariants(layer)
    after = layer.to_scipy().tocoo()
    now = {(int(r), int(c)): (float(v), float(m)) for r, c, v, m in
           zip(after.row, after.col, after.data, layer.velocity)}
    kept_keys = {k for k, rm in zip(old, removed) if not rm}
    # every survivor kept its value and momentum
    for k in kept_keys:
        assert now[k] == old[k]
    new_keys = set(now) - kept_keys
    assert len(new_keys) == stats.regrown
    lim = math.sqrt(6 / (60 + 50))
    for k in new_keys:
        v, m = now[k]
        assert m == 0.0 and abs(v) <= lim


def test_set_step_regrowth_is_uniform(rng):
    """New connections land on every free position with equal probability."""
    hits = np.zeros((20, 10))
    for _ in range(400):
        layer = random_layer(rng, 20, 10, 0.2)
        before = ref.mask(layer)
        set_step(layer, 0.3, rng)
        after = ref.mask(layer)
        hits += after & ~before
    assert hits.min() > 0
    # occupied-before positions are rarer (only as removed-then-redrawn), so
    # compare columns/rows: no input or output neuron is favoured
    col = hits.sum(axis=0)
    assert col.std() / col.mean() < 0.15


def test_set_step_bit_identical_across_threads():
    out = []
    for threads in (1, 2):
        r = np.random.default_rng(5)
        layer = SparseLayer.erdos_renyi(500, 400, 20, "he_uniform", r)
        layer.velocity[:] = r.standard_normal(layer.nnz)
        for _ in range(3):
            set_step(layer, 0.3, r, n_threads=threads)
        out.append((layer.indptr.copy(), layer.indices.copy(), layer.data.copy(),
                    layer.velocity.copy(), layer.t_perm.copy()))
    for a, b in zip(*out):
        assert np.array_equal(a, b)


def test_set_step_regrowing_at_zero(rng):
    """--regrow-init zero: the same removal, new weights 0 (and momentum 0),
    survivors untouched, the next step prunes zeros first, and the result
    is the same with 1 and 2 threads."""
    layer = random_layer(rng, 60, 50, 0.2, init="he_uniform")
    layer.velocity[:] = rng.standard_normal(layer.nnz)
    removed = ref.set_removed(layer.data, 0.3)
    old = layer.to_scipy().tocoo()
    old_vals = {(int(r), int(c)): float(v) for r, c, v in zip(old.row, old.col, old.data)}
    kept = {k for k, rm in zip(old_vals, removed) if not rm}
    ms_before = float(np.mean(layer.data.astype(np.float64) ** 2))
    stats = set_step(layer, 0.3, rng, regrow_init="zero")
    check_invariants(layer)
    assert stats.regrown == int(removed.sum()) > 0 and layer.nnz == old.nnz
    after = layer.to_scipy().tocoo()
    now = {(int(r), int(c)): (float(v), float(m)) for r, c, v, m in
           zip(after.row, after.col, after.data, layer.velocity)}
    for k in kept:
        assert now[k][0] == old_vals[k]
    new = set(now) - kept
    assert len(new) == stats.regrown
    assert all(now[k] == (0.0, 0.0) for k in new)
    # the mean squared weight goes down (from the initialiser it goes up)
    assert float(np.mean(layer.data.astype(np.float64) ** 2)) < ms_before
    # at the next step the zeros are the smallest non-negative weights, so
    # they go first: every positive weight survives it
    positive = {k for k in now if now[k][0] > 0.0}
    set_step(layer, 0.1, rng, regrow_init="zero")
    after2 = layer.to_scipy().tocoo()
    vals2 = {(int(r), int(c)): float(v) for r, c, v in zip(after2.row, after2.col, after2.data)}
    assert all(vals2.get(k) == now[k][0] for k in positive)
    # threads: bit-identical
    out = []
    for threads in (1, 2):
        r = np.random.default_rng(7)
        lay = SparseLayer.erdos_renyi(500, 400, 20, "he_uniform", r)
        for _ in range(3):
            set_step(lay, 0.3, r, n_threads=threads, regrow_init="zero")
        out.append((lay.indptr.copy(), lay.indices.copy(), lay.data.copy(), lay.t_perm.copy()))
    for a_, b_ in zip(*out):
        assert np.array_equal(a_, b_)
    with pytest.raises(ConfigError, match="regrow_init"):
        set_step(lay, 0.3, r, regrow_init="ones")


def test_set_step_empty_layer(rng):
    layer = random_layer(rng, 5, 4, 0.0)
    stats = set_step(layer, 0.3, rng)
    assert stats.removed == 0 and layer.nnz == 0


def test_importance_and_pruning(rng):
    layer = random_layer(rng, 40, 30, 0.3, empty_rows=[2, 7])
    imp = layer.importance()
    np.testing.assert_allclose(imp, np.abs(ref.dense(layer)).sum(axis=0), rtol=1e-6)
    t = np.percentile(imp, 20)  # dead neurons (importance 0) count in the percentile
    expect_dead = imp <= t
    nnz = layer.nnz
    n_removed, dead = importance_prune(layer, 20)
    assert np.array_equal(dead, expect_dead)
    assert layer.nnz == nnz - n_removed
    assert np.all(layer.row_lengths()[dead] == 0)
    check_invariants(layer)
    # pruned neurons stay out of nnz: a SET step after only replaces its own removals
    nnz2 = layer.nnz
    set_step(layer, 0.3, rng)
    assert layer.nnz == nnz2


def test_remove_neurons_keeps_the_rest(rng):
    layer = random_layer(rng, 20, 10, 0.5)
    W = ref.dense(layer)
    dead = np.zeros(10, bool)
    dead[[1, 4]] = True
    remove_neurons(layer, dead)
    W[:, dead] = 0
    assert np.array_equal(ref.dense(layer), W)
    check_invariants(layer)


def test_magnitude_prune_to(rng):
    layer = random_layer(rng, 30, 20, 0.5)
    mags = np.sort(np.abs(layer.data))[::-1]
    magnitude_prune_to(layer, 50)
    assert layer.nnz == 50
    assert np.allclose(np.sort(np.abs(layer.data))[::-1], mags[:50])
    check_invariants(layer)


def test_huge_layer_initialises_in_seconds(rng):
    """65536 x 5,000,000 at epsilon 1: ~5M weights, never a dense array."""
    import time
    t = time.perf_counter()
    layer = SparseLayer.erdos_renyi(65536, 5_000_000, 1, "normal", rng)
    assert time.perf_counter() - t < 30  # ~1 s here; generous for slow CI machines
    assert abs(layer.nnz - 5_065_536) < 10_000


def test_sparse_aware_init_scales_with_the_expected_fan_in(rng):
    """he_uniform_sparse: limit sqrt(6 / (density * n_in)); the paper's inits
    keep the dense fan-in."""
    layer = SparseLayer.erdos_renyi(20000, 2000, 10, "he_uniform_sparse", rng)
    expected_fan_in = layer.density * 20000
    lim = math.sqrt(6 / expected_fan_in)
    assert np.abs(layer.data).max() <= lim and np.abs(layer.data).max() > 0.98 * lim
    dense = SparseLayer.erdos_renyi(20000, 2000, 10, "he_uniform", rng)
    assert np.abs(dense.data).max() <= math.sqrt(6 / 20000)
    # SET regrowth draws from the same (sparse-aware) distribution
    layer.data[:] = 0.0
    set_step(layer, 0.3, rng)
    assert np.abs(layer.data).max() > 0.5 * lim


def _hidden_second_moment(model, X):
    """E[a^2] of the last hidden layer, computed in float64 with scipy (the
    activation is All-ReLU: slope +-alpha on the negative side)."""
    a = X.astype(np.float64)
    for lay, act in zip(model.layers[:-1], model.acts):
        z = np.asarray(a @ lay.to_scipy().astype(np.float64)) + lay.bias
        a = np.where(z > 0, z, act.slope * z)
    return float(np.mean(a * a))


def test_kaiming_init_keeps_a_deep_allrelu_signal_at_scale(rng):
    """kaiming_uniform_sparse: limit sqrt(3 g / fan-in) with g = 2 / (1 +
    alpha^2) for All-ReLU's hidden layers and 1 for the output layer, so a
    20-layer eps-1 stack keeps its input's second moment, where He's gain of
    2 grows it by about (1 + alpha^2)^20 (~470 at alpha 0.6); SET regrowth
    draws from the same distribution, from the gain the model set."""
    from sparse_mlp.model import SparseMLP
    alpha, depth, width = 0.6, 20, 4000
    X = rng.standard_normal((64, 256)).astype(np.float32)
    ratio = {}
    for init in ("kaiming_uniform_sparse", "he_uniform_sparse"):
        m = SparseMLP([256] + [width] * depth + [2], epsilon=1.0, activation="allrelu",
                      alpha=alpha, init=init, rng=np.random.default_rng(3), n_threads=1)
        ratio[init] = _hidden_second_moment(m, X) / float(np.mean(X.astype(np.float64) ** 2))
        assert [lay.gain2 for lay in m.layers] == [2 / (1 + alpha ** 2)] * depth + [1.0]
    assert 0.25 < ratio["kaiming_uniform_sparse"] < 4.0, ratio
    assert ratio["he_uniform_sparse"] > 50.0, ratio
    # the limits, hidden and output
    m = SparseMLP([3000, 2000, 10], epsilon=20.0, activation="allrelu", alpha=alpha,
                  init="kaiming_uniform_sparse", rng=rng, n_threads=1)
    hid, out = m.layers
    lim_h = math.sqrt(3 * (2 / (1 + alpha ** 2)) / (hid.density * 3000))
    lim_o = math.sqrt(3 * 1.0 / (out.density * 2000))
    assert lim_h * 0.98 < np.abs(hid.data).max() <= lim_h
    assert lim_o * 0.98 < np.abs(out.data).max() <= lim_o
    # regrowth after a copy (a model rebuilt from its layers) keeps the gain
    c = m.copy()
    c.layers[0].data[:] = 0.0
    set_step(c.layers[0], 0.3, rng)
    assert lim_h * 0.95 < np.abs(c.layers[0].data).max() <= lim_h
    # relu: He's gain; SReLU has none, so it is refused
    r = SparseMLP([300, 200, 2], epsilon=5.0, activation="relu",
                  init="kaiming_uniform_sparse", rng=rng, n_threads=1)
    assert r.layers[0].gain2 == 2.0
    with pytest.raises(ConfigError, match="fixed-shape activation"):
        SparseMLP([300, 200, 2], epsilon=5.0, activation="srelu",
                  init="kaiming_uniform_sparse", rng=rng, n_threads=1)
