"""Gradient / momentum regrowth kernels and steps, ER/ERK allocation (initial_topology.py),
--alpha auto."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats
from conftest import random_layer
from test_topology import check_invariants

import run_experiment
from sparse_mlp import _growth as kern
from sparse_mlp import alpha as alpha_mod
from sparse_mlp import growth, initial_topology
from sparse_mlp import reference as ref
from sparse_mlp.config import TrainConfig
from sparse_mlp.errors import ConfigError
from sparse_mlp.experiment import build_model
from sparse_mlp.layers import SparseLayer, er_probability
from sparse_mlp.model import SparseMLP
from sparse_mlp.training import RandomStreams, Trainer

LEVELS = ["scalar", "avx2", "avx512"]


@pytest.fixture(params=LEVELS)
def gsimd(request):
    """Run on each SIMD path of the growth module this CPU supports."""
    from sparse_mlp.kernels import spmm
    if LEVELS.index(request.param) > LEVELS.index(spmm.cpu_simd_level()):
        pytest.skip(f"this CPU has no {request.param}")
    kern.set_simd_level(request.param)
    yield request.param
    kern.set_simd_level("best")


# ---------------------------------------------------------------------- references
def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (rowkern.h smlp_mix64) on uint64 arrays."""
    z = z.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def ref_order(pos: np.ndarray, score: np.ndarray, seed: int) -> np.ndarray:
    """Indices of (pos, score) best first: larger score, then smaller
    hash(seed ^ pos), then smaller pos (the kernels' total order)."""
    h = mix64(np.uint64(seed) ^ pos.astype(np.uint64))
    return np.lexsort((pos, h, -score))


def ref_topk(M: np.ndarray, A: np.ndarray, D: np.ndarray, scale: float, k: int, seed: int):
    """Dense float64 twin of empty_grad_topk: M (n_in, n_out) bool connectivity."""
    g = np.abs(A.astype(np.float64) @ D.T.astype(np.float64)) * scale  # (n_in, n_out)
    n_in = M.shape[0]
    i, j = np.nonzero(~M)
    pos = j.astype(np.int64) * n_in + i
    sc = g[i, j]
    o = ref_order(pos, sc, seed)[:k]
    return pos[o], sc[o]


def csr_of(M: np.ndarray):
    """CSR by output row (indptr int64, indices int32) of a (n_in, n_out) mask."""
    m = sp.csc_matrix(M.astype(np.float32))
    m.sort_indices()
    return m.indptr.astype(np.int64), m.indices.astype(np.int32)


def int_case(rng, n_in, n_out, B, density, zero_rows=()):
    """Integer-valued A, D: float32 dot products are exact, so ties are exact."""
    M = rng.random((n_in, n_out)) < density
    A = rng.integers(-3, 4, (n_in, B)).astype(np.float32)
    D = rng.integers(-3, 4, (n_out, B)).astype(np.float32)
    D[list(zero_rows)] = 0.0
    return M, A, D


# ---------------------------------------------------------------------- kernels
@pytest.mark.parametrize("n_in,n_out,B,density,k", [
    (37, 29, 19, 0.3, 50),       # B not a multiple of any vector width
    (300, 7, 130, 0.05, 400),    # > 256 empty columns per row (several blocks), B > 128
    (5, 40, 3, 0.5, 1000),       # k larger than the empty positions
    (64, 64, 16, 0.0, 64),       # no weights at all
])
def test_empty_grad_topk_matches_dense_reference(gsimd, n_in, n_out, B, density, k):
    rng = np.random.default_rng(n_in * 1000 + n_out)
    M, A, D = int_case(rng, n_in, n_out, B, density, zero_rows=(1, 3))
    M[:, 2] = True  # a full row: nothing to grow there
    indptr, indices = csr_of(M)
    pos = np.empty(k, np.int64)
    sc = np.empty(k, np.float32)
    # scale 1: every partial sum is an exact integer, so ties are exact on every SIMD path
    n = kern.empty_grad_topk(indptr, indices, A, D, pos, sc, 1.0, 99, n_threads=1)
    rpos, rsc = ref_topk(M, A, D, 1.0, k, 99)
    assert n == min(k, int((~M).sum()))
    assert np.array_equal(pos[:n], rpos)          # exact: same set, same order (ties by hash)
    np.testing.assert_allclose(sc[:n], rsc, rtol=1e-6)


def test_empty_grad_topk_threads_and_bound_skips():
    """Rows of very different delta norms make the Cauchy-Schwarz skips fire;
    the result must still be the exact top-k, bit-identical for 1 and 2 threads."""
    rng = np.random.default_rng(3)
    n_in, n_out, B, k = 200, 120, 33, 150
    M = rng.random((n_in, n_out)) < 0.1
    A = rng.standard_normal((n_in, B)).astype(np.float32)
    A[::7] *= 1e-3
    D = (rng.standard_normal((n_out, B)) * 10.0 ** rng.uniform(-4, 0, (n_out, 1))
         ).astype(np.float32)
    indptr, indices = csr_of(M)
    out = []
    for th in (1, 2):
        pos = np.empty(k, np.int64)
        sc = np.empty(k, np.float32)
        assert kern.empty_grad_topk(indptr, indices, A, D, pos, sc, 1.0 / B, 5, th) == k
        out.append((pos, sc))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
    rpos, rsc = ref_topk(M, A, D, 1.0 / B, k, 5)
    np.testing.assert_allclose(out[0][1], rsc, rtol=1e-4)
    # float32 vs float64 may swap near-ties only
    assert len(set(out[0][0]) ^ set(rpos)) <= 4


def test_zero_gradient_ties_are_spread_not_lowest_positions():
    """A dead layer (all deltas 0): the k picks are a hash-random subset, not
    the first k positions."""
    n_in, n_out, B, k = 50, 40, 8, 100
    A = np.ones((n_in, B), np.float32)
    D = np.zeros((n_out, B), np.float32)
    indptr, indices = csr_of(np.zeros((n_in, n_out), bool))
    pos = np.empty(k, np.int64)
    sc = np.empty(k, np.float32)
    kern.empty_grad_topk(indptr, indices, A, D, pos, sc, 1.0, 1234)
    assert np.all(sc == 0)
    assert len(np.unique(pos // n_in)) > 20   # spread over many output rows
    pos2 = np.empty(k, np.int64)
    kern.empty_grad_topk(indptr, indices, A, D, pos2, sc, 1.0, 4321)
    assert not np.array_equal(np.sort(pos), np.sort(pos2))


def test_nan_scores_rank_last():
    pos = np.arange(6, dtype=np.int64)
    sc = np.array([1.0, np.nan, -3.0, 0.5, np.nan, 2.0], np.float32)
    out = np.empty(4, np.int64)
    osc = np.empty(4, np.float32)
    assert kern.select_topk(pos, sc, out, osc, 0) == 4
    assert list(out) == [2, 5, 0, 3]
    np.testing.assert_array_equal(osc, [3.0, 2.0, 1.0, 0.5])


def test_candidate_grad_and_select_topk(gsimd, rng):
    n_in, n_out, B = 60, 45, 21
    A = rng.standard_normal((n_in, B)).astype(np.float32)
    D = rng.standard_normal((n_out, B)).astype(np.float32)
    cand = np.sort(rng.choice(n_in * n_out, 500, replace=False)).astype(np.int64)
    rows = cand // n_in
    cols = (cand % n_in).astype(np.int32)
    cptr = np.zeros(n_out + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_out), out=cptr[1:])
    g = np.empty(cand.size, np.float32)
    kern.candidate_grad(cptr, cols, A, D, g, 0.5, n_threads=2)
    ref_g = 0.5 * np.einsum("kb,kb->k", A[cols].astype(np.float64), D[rows].astype(np.float64))
    np.testing.assert_allclose(g, ref_g, rtol=1e-5, atol=1e-5)
    k = 37
    out = np.empty(k, np.int64)
    osc = np.empty(k, np.float32)
    kern.select_topk(cand, g, out, osc, 77)
    expect = cand[ref_order(cand, np.abs(g).astype(np.float64), 77)[:k]]
    assert np.array_equal(out, expect)


def test_kernel_argument_checks():
    A = np.zeros((4, 3), np.float32)
    D = np.zeros((5, 2), np.float32)
    indptr, indices = csr_of(np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="D must be"):
        kern.empty_grad_topk(indptr, indices, A, D, np.empty(2, np.int64),
                             np.empty(2, np.float32), 1.0)
    with pytest.raises(ValueError, match="same length"):
        kern.empty_grad_topk(indptr, indices, A, np.zeros((5, 3), np.float32),
                             np.empty(2, np.int64), np.empty(3, np.float32), 1.0)


def test_grow_positions_sampled_mode(rng):
    n_in, n_out, B, k = 400, 300, 12, 60
    M = rng.random((n_in, n_out)) < 0.02
    A = rng.standard_normal((n_in, B)).astype(np.float32)
    D = rng.standard_normal((n_out, B)).astype(np.float32)
    indptr, indices = csr_of(M)
    pos = growth.grow_positions(indptr, indices, n_in, A, D, 1.0 / B, k, 1, candidates=20,
                                rng=np.random.default_rng(0))
    assert pos.size == k and np.all(np.diff(pos) > 0)
    assert not M[pos % n_in, pos // n_in].any()
    g = np.abs(A.astype(np.float64) @ D.T.astype(np.float64)) / B
    # the sampled picks beat a typical empty position by far (top 60 of 1200 candidates)
    assert np.median(g[pos % n_in, pos // n_in]) > np.quantile(g[~M], 0.9)
    exhaustive = growth.grow_positions(indptr, indices, n_in, A, D, 1.0 / B, k, 1)
    huge = growth.grow_positions(indptr, indices, n_in, A, D, 1.0 / B, k, 1,
                                 candidates=1e9, rng=np.random.default_rng(0))
    assert np.array_equal(exhaustive, huge)  # more candidates than room: exhaustive
    with pytest.raises(ValueError, match="rng"):
        growth.grow_positions(indptr, indices, n_in, A, D, 1.0, k, 1, candidates=2)


# ---------------------------------------------------------------------- steps
def small_model(rng, hidden=(30, 20), n_in=12, n_out=3, dropout=0.2, threads=1):
    return SparseMLP([n_in, *hidden, n_out], epsilon=4, activation="allrelu", alpha=0.5,
                     init="he_uniform", dropout=dropout, rng=rng, n_threads=threads)


def test_probe_gradient_equals_model_gradient_at_existing_weights(rng):
    """A probe of one batch gives, at existing positions, exactly the
    gradient SparseMLP.gradients computes (same batch, same dropout masks)."""
    model = small_model(rng)
    X = rng.standard_normal((50, 12)).astype(np.float32)
    y = rng.integers(0, 3, 50).astype(np.int32)
    seen = []
    base = growth.batch_getter(X, y)

    def get(rows):
        seen.append(rows.copy())
        return base(rows)

    probe = growth.collect_probe(model, get, 50, 16, 1, np.random.default_rng(1), 7, 3,
                                 n_layers=2)
    xb, yb = base(seen[0])
    keys = model.dropout_keys(7 ^ growth.PROBE_SALT, 3)
    _, grads, _ = model.gradients(xb, yb, keys)
    for li in range(2):
        lay = model.layers[li]
        rows = np.repeat(np.arange(lay.n_out), lay.row_lengths())
        g = probe.scale * np.einsum("kb,kb->k", probe.A[li][lay.indices].astype(np.float64),
                                    probe.D[li][rows].astype(np.float64))
        np.testing.assert_allclose(g, grads[li][0], rtol=1e-4, atol=1e-6)


def test_probe_momentum_weights(rng):
    model = small_model(rng, dropout=0.0)
    X = rng.standard_normal((64, 12)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    args = (model, growth.batch_getter(X, y), 64, 16, 3)
    plain = growth.collect_probe(*args, np.random.default_rng(2), 0, 0, 2)
    mom = growth.collect_probe(*args, np.random.default_rng(2), 0, 0, 2, decay=0.5)
    assert plain.n_samples == mom.n_samples == 48
    np.testing.assert_array_equal(plain.A[1], mom.A[1])
    for t, w in enumerate([0.25, 0.5, 1.0]):
        c = slice(16 * t, 16 * (t + 1))
        np.testing.assert_allclose(mom.D[0][:, c], w * plain.D[0][:, c], rtol=1e-6)
    assert mom.scale == pytest.approx(1 / (16 * 1.75))


def fake_probe(layers, rng, B=9):
    A = [rng.standard_normal((lay.n_in, B)).astype(np.float32) for lay in layers]
    D = [rng.standard_normal((lay.n_out, B)).astype(np.float32) for lay in layers]
    return growth.GradientProbe(A, D, 1.0 / B, B, 0.0)


@pytest.mark.parametrize("growth_init", ["zero", "init"])
def test_gradient_evolution_step(rng, growth_init):
    layers = [random_layer(rng, 40, 30, 0.2), random_layer(rng, 30, 20, 0.3)]
    before = [(ref.dense(lay), lay.velocity.copy(), lay.nnz) for lay in layers]
    probe = fake_probe(layers, rng)
    stats = growth.gradient_evolution(layers, probe, 0.3, np.random.default_rng(0),
                                      growth="gradient", growth_init=growth_init)
    for lay, (W0, _, nnz0), st, A, D in zip(layers, before, stats, probe.A, probe.D):
        check_invariants(lay)
        assert lay.nnz == nnz0 and st.regrown == st.removed > 0
        W1 = ref.dense(lay)
        M1 = ref.mask(lay)
        M0 = W0 != 0
        kept = M0 & M1 & (W1 == W0)
        new = M1 & ~kept
        assert new.sum() == st.regrown
        # SET removal: the survivors are exactly what magnitude_thresholds keeps
        assert kept.sum() == nnz0 - st.removed
        if growth_init == "zero":
            assert np.all(W1[new] == 0)
        # momentum: kept weights keep theirs, new ones start at 0
        vel = sp.csc_matrix((lay.velocity, lay.indices, lay.indptr), shape=lay.shape).toarray()
        assert np.all(vel[new] == 0)
        # the new positions are the top |gradient| among the positions not kept
        g = np.abs(A.astype(np.float64) @ D.T.astype(np.float64)) / A.shape[1]
        thresh = np.sort(g[~kept])[::-1][st.regrown - 1]
        assert g[new].min() >= thresh * (1 - 1e-5)


def test_momentum_evolution_redistributes_and_keeps_total(rng):
    layers = [random_layer(rng, 40, 30, 0.2), random_layer(rng, 30, 20, 0.3)]
    layers[0].velocity *= 100.0   # layer 0's weights "move" much more
    total = sum(lay.nnz for lay in layers)
    nnz0 = [lay.nnz for lay in layers]
    stats = growth.gradient_evolution(layers, fake_probe(layers, rng), 0.3,
                                      np.random.default_rng(0), growth="momentum")
    for lay in layers:
        check_invariants(lay)
    assert sum(lay.nnz for lay in layers) == total
    assert layers[0].nnz > nnz0[0] and layers[1].nnz < nnz0[1]
    assert sum(s.regrown for s in stats) == sum(s.removed for s in stats)


def test_gradient_evolution_is_thread_independent():
    res = []
    for th in (1, 2):
        rng = np.random.default_rng(8)
        layers = [random_layer(rng, 60, 50, 0.15), random_layer(rng, 50, 40, 0.2)]
        growth.gradient_evolution(layers, fake_probe(layers, rng), 0.3,
                                  np.random.default_rng(1), growth="momentum",
                                  growth_init="init", n_threads=th)
        res.append([(lay.indptr, lay.indices, lay.data, lay.velocity) for lay in layers])
    for a, b in zip(res[0], res[1]):
        for x, z in zip(a, b):
            assert np.array_equal(x, z)


def test_gradient_evolution_rejects_bad_settings(rng):
    layers = [random_layer(rng, 10, 8, 0.3)]
    probe = fake_probe(layers, rng)
    with pytest.raises(ConfigError):
        growth.gradient_evolution(layers, probe, 0.3, rng, growth="random")
    with pytest.raises(ConfigError):
        growth.gradient_evolution(layers, probe, 0.3, rng, growth_init="ones")
    with pytest.raises(ConfigError):
        growth.gradient_evolution(layers, probe, 1.0, rng)


def test_redistribute():
    out = growth.redistribute(100, [1.0, 3.0], [1000, 1000])
    assert list(out) == [25, 75]
    out = growth.redistribute(100, [1.0, 3.0], [1000, 40])      # capped layer, rest moves
    assert list(out) == [60, 40]
    out = growth.redistribute(10, [1.0, 1.0, 1.0], [5, 5, 5])   # largest remainder, stable
    assert list(out) == [4, 3, 3] and out.sum() == 10
    out = growth.redistribute(7, [0.0, np.nan], [10, 10])      # no signal: equal split
    assert out.sum() == 7 and abs(int(out[0]) - int(out[1])) == 1
    assert growth.redistribute(50, [1.0, 1.0], [10, 0]).tolist() == [10, 0]


# ---------------------------------------------------------------------- ERK
def test_er_densities_match_layers():
    sizes = [500, 400, 100, 400, 2]
    d = initial_topology.layer_densities(sizes, 10, "er")
    assert d == [er_probability(a, b, 10) for a, b in zip(sizes[:-1], sizes[1:])]
    assert d[-1] == 1.0


def test_erk_spends_the_whole_budget():
    sizes = [500, 400, 100, 400, 2]
    eps = 10
    d = initial_topology.layer_densities(sizes, eps, "erk")
    shapes = list(zip(sizes[:-1], sizes[1:]))
    budget = eps * sum(a + b for a, b in shapes)
    assert sum(x * a * b for x, (a, b) in zip(d, shapes)) == pytest.approx(budget)
    assert d[-1] == 1.0
    er = initial_topology.layer_densities(sizes, eps, "er")
    ratios = [x / y for x, y in zip(d[:-1], er[:-1])]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] > 1.1  # ER's shape, scaled up
    # no capped layer: ERK (power 1) is exactly ER
    assert initial_topology.layer_densities([784, 1000, 1000, 100], 20, "erk") == pytest.approx(
        initial_topology.layer_densities([784, 1000, 1000, 100], 20, "er"))
    # power 0: uniform density over the layers that are not dense
    u = initial_topology.layer_densities([300, 200, 100], 5, "erk", power=0.0)
    assert u[0] == pytest.approx(u[1])
    assert initial_topology.layer_densities([4, 3, 2], 50, "erk") == [1.0, 1.0]
    with pytest.raises(ConfigError):
        initial_topology.layer_densities([4, 3], 1, "uniform")


def test_initial_layers_erk(rng):
    assert initial_topology.initial_layers([20, 10, 3], 2, "normal", rng) is None
    layers = initial_topology.initial_layers([500, 400, 100, 400, 2], 10, "normal", rng, "erk")
    d = initial_topology.layer_densities([500, 400, 100, 400, 2], 10, "erk")
    for lay, x in zip(layers, d):
        check_invariants(lay)
        exp = x * lay.n_in * lay.n_out
        assert abs(lay.nnz - exp) <= 5 * math.sqrt(exp) + 1e-9
    assert layers[-1].nnz == 800


# ---------------------------------------------------------------------- alpha auto
def test_feature_skewness_dense_and_sparse(rng):
    X = np.column_stack([rng.standard_normal(3000), rng.exponential(size=3000),
                         -rng.exponential(size=3000), np.full(3000, 2.0)])
    g = alpha_mod.feature_skewness(X)
    assert g.size == 3  # the constant column is ignored
    np.testing.assert_allclose(g, scipy.stats.skew(X[:, :3]), rtol=1e-9, atol=1e-12)
    Xs = X.copy()
    Xs[np.abs(Xs) < 0.5] = 0.0
    np.testing.assert_allclose(alpha_mod.feature_skewness(sp.csr_matrix(Xs)),
                               alpha_mod.feature_skewness(Xs), rtol=1e-8, atol=1e-10)
    # row subsampling by a fixed stride
    np.testing.assert_allclose(alpha_mod.feature_skewness(X, max_rows=1000),
                               scipy.stats.skew(X[::3, :3]), rtol=1e-9, atol=1e-12)


def test_auto_alpha_rule(rng):
    sym = rng.standard_normal((4000, 20))
    right = rng.exponential(size=(4000, 20))      # skewness 2
    left = -rng.gamma(4.0, size=(4000, 20))       # skewness -1
    a_sym, a_right, a_left = (alpha_mod.auto_alpha(x) for x in (sym, right, left))
    assert a_sym == pytest.approx(0.5, abs=0.03)
    assert a_right == pytest.approx(0.5 * math.exp(-2.0), rel=0.15) and a_right < a_sym
    assert a_left == pytest.approx(0.75)           # 0.5 * e^1 clipped to the paper's max
    assert alpha_mod.alpha_from_skewness(10.0) == 0.05
    assert alpha_mod.auto_alpha(np.ones((10, 3))) == 0.5   # no information: the middle
    # the median ignores a few extreme, almost-constant features
    spiky = np.column_stack([sym, np.eye(4000)[:, :5]])
    assert alpha_mod.auto_alpha(spiky) == pytest.approx(a_sym, abs=0.02)


def test_resolve_alpha():
    cfg = TrainConfig(alpha=0.6)
    assert alpha_mod.resolve_alpha(cfg, np.zeros((3, 2))) is cfg
    X = np.random.default_rng(0).exponential(size=(500, 4))
    got = alpha_mod.resolve_alpha(cfg.replace(alpha_auto=True), X)
    assert got.alpha == alpha_mod.auto_alpha(X) and got.alpha_auto


# ---------------------------------------------------------------------- training, CLI
def blobs(rng, n, d=12, c=3):
    centers = np.random.default_rng(5).standard_normal((c, d))
    y = rng.integers(0, c, n).astype(np.int32)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


def train(cfg, n=240):
    X, y = blobs(np.random.default_rng(0), n)
    Xt, yt = blobs(np.random.default_rng(1), 100)
    streams = RandomStreams(cfg.seed)
    model = build_model(cfg, X.shape[1], 3, streams)
    tr = Trainer(cfg, model, X, y, Xt, yt, streams)
    return tr, tr.run(progress=False)


def small_cfg(**kw):
    base = dict(hidden=[40, 30], epsilon=5, activation="allrelu", alpha=0.5,
                weight_init="he_uniform", epochs=5, batch_size=16, lr=0.05, dropout=0.1,
                seed=1, threads=1, checkpoint_every=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("mode", ["gradient", "momentum"])
def test_trainer_growth_learns_deterministically(mode):
    runs = []
    for th in (1, 2):
        tr, st = train(small_cfg(growth=mode, threads=th, batch_size=24, lr=0.08))
        runs.append(([r["train_loss"] for r in st.history],
                     [lay.indices.copy() for lay in tr.model.layers],
                     [lay.data.copy() for lay in tr.model.layers]))
        for lay in tr.model.layers:
            check_invariants(lay)
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1] + runs[0][2], runs[1][1] + runs[1][2]):
        assert np.array_equal(a, b)
    assert runs[0][0][-1] < runs[0][0][0]
    assert st.best_test_acc > 0.8
    if mode == "gradient":
        nnz = [r["nnz"] for r in st.history]
        assert len(set(nnz)) == 1


def test_trainer_random_growth_is_the_default_path():
    a = train(small_cfg())[1].history
    b = train(small_cfg(growth="random", growth_batches=4))[1].history
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_build_model_erk():
    cfg = small_cfg(hidden=[40, 30], epsilon=8, density_allocation="erk")
    m = build_model(cfg, 12, 3, RandomStreams(0))
    er = build_model(cfg.replace(density_allocation="er"), 12, 3, RandomStreams(0))
    assert m.layers[-1].nnz == er.layers[-1].nnz == 90  # 30 x 3 is dense under both
    assert m.nnz > er.nnz                               # ERK hands the excess to the rest


def test_cli_flags():
    args = run_experiment.build_parser().parse_args(
        ["--dataset", "madelon", "--growth", "momentum", "--growth-batches", "4",
         "--density-allocation", "erk", "--alpha", "auto", "--growth-init", "init"])
    cfg = run_experiment.config_from_args(args)
    assert (cfg.growth, cfg.growth_batches, cfg.density_allocation, cfg.growth_init) == (
        "momentum", 4, "erk", "init")
    assert cfg.alpha_auto and cfg.alpha == 0.5   # the preset's, replaced at run start
    plain = run_experiment.config_from_args(
        run_experiment.build_parser().parse_args(["--dataset", "madelon"]))
    assert (plain.growth, plain.density_allocation, plain.alpha_auto) == ("random", "er", False)
    with pytest.raises(ConfigError, match="alpha"):
        run_experiment.config_from_args(run_experiment.build_parser().parse_args(
            ["--dataset", "madelon", "--activation", "leaky", "--alpha", "auto"]))
    with pytest.raises(SystemExit):
        run_experiment.build_parser().parse_args(["--alpha", "steep"])
    with pytest.raises(ConfigError, match="growth-batches"):
        small_cfg(growth_batches=0).validate()
    # SET's regrowth at zero: a flag of its own (--growth-init is gradient/momentum's)
    cfg = run_experiment.config_from_args(run_experiment.build_parser().parse_args(
        ["--dataset", "madelon", "--regrow-init", "zero"]))
    assert (cfg.regrow_init, cfg.growth_init, plain.regrow_init) == ("zero", "zero", "init")
    with pytest.raises(ConfigError, match="regrow-init applies to SET"):
        small_cfg(regrow_init="zero", growth="gradient").validate()
    with pytest.raises(ConfigError, match="regrow-init must be"):
        small_cfg(regrow_init="ones").validate()


def test_layer_from_growth_is_a_valid_sparse_layer(rng):
    # positions returned by grow_positions build a valid layer
    M = rng.random((30, 20)) < 0.2
    indptr, indices = csr_of(M)
    A = rng.standard_normal((30, 5)).astype(np.float32)
    D = rng.standard_normal((20, 5)).astype(np.float32)
    pos = growth.grow_positions(indptr, indices, 30, A, D, 0.2, 25, 0)
    lay = SparseLayer.from_positions(30, 20, pos, np.ones(pos.size, np.float32))
    check_invariants(lay)
