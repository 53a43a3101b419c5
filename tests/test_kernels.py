"""Sparse-product, activation and loss kernels against dense NumPy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import random_layer

from sparse_mlp import reference as ref
from sparse_mlp.activations import (
    ACT_IDENTITY,
    ACT_LEAKY,
    ACT_RELU,
    ACT_SIGMOID,
    ACT_SRELU,
    ACT_TANH,
    Activation,
    srelu_initial,
)
from sparse_mlp.kernels import activation as K_act
from sparse_mlp.kernels import aligned_empty, min_parallel_work, spmm


@pytest.fixture(autouse=True)
def split_every_call():
    """Small test layers would run on one thread (kernels.min_parallel_work):
    split every call, so the 1-vs-2-thread identity tests test threading."""
    before = min_parallel_work()
    min_parallel_work(0)
    yield
    min_parallel_work(before)

BATCHES = [1, 7, 16, 33, 64, 100, 128, 130, 257]
ACTS = [
    Activation("identity", ACT_IDENTITY),
    Activation("relu", ACT_RELU),
    Activation("allrelu", ACT_LEAKY, slope=-0.6),
    Activation("leaky", ACT_LEAKY, slope=0.25),
    Activation("tanh", ACT_TANH),
    Activation("sigmoid", ACT_SIGMOID),
]


def _srelu_act(rng, n):
    p = srelu_initial(n, rng)
    p[:, 0] = rng.uniform(-1, 0, n)
    return Activation("srelu", ACT_SRELU, params=p, velocity=np.zeros_like(p))


def _layer_cases(rng):
    yield random_layer(rng, 50, 40, 0.2)
    # empty output rows (neurons with no incoming weight) and empty input columns
    yield random_layer(rng, 30, 20, 0.3, empty_rows=[0, 5, 19], empty_cols=[3, 29])
    # a layer with no weights at all
    yield random_layer(rng, 8, 6, 0.0)


@pytest.mark.parametrize("B", BATCHES)
def test_products_match_dense(simd, rng, B):
    for layer in _layer_cases(rng):
        W = ref.dense(layer)
        X = rng.standard_normal((layer.n_in, B)).astype(np.float32)
        D = rng.standard_normal((layer.n_out, B)).astype(np.float32)
        Z = np.full((layer.n_out, B), np.nan, np.float32)
        layer.forward(X, Z)
        np.testing.assert_allclose(Z, W.T @ X + layer.bias[:, None], rtol=1e-5, atol=1e-5)
        G = np.full((layer.n_in, B), np.nan, np.float32)
        layer.backward_input(D, G)
        np.testing.assert_allclose(G, W @ D, rtol=1e-5, atol=1e-5)
        g, bg = layer.gradient(X, D)
        gd = (X.astype(np.float64) @ D.T) / B
        rows = np.repeat(np.arange(layer.n_out), layer.row_lengths())
        np.testing.assert_allclose(g, gd[layer.indices, rows], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bg, D.mean(axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("B", [1, 19, 128, 131])
def test_fused_update_matches_formula(simd, rng, B):
    layer = random_layer(rng, 40, 30, 0.25)
    X = rng.standard_normal((40, B)).astype(np.float32)
    D = rng.standard_normal((30, B)).astype(np.float32)
    w0, v0 = layer.data.astype(np.float64), layer.velocity.astype(np.float64)
    b0, bv0 = layer.bias.astype(np.float64), layer.bias_velocity.astype(np.float64)
    g, bg = layer.gradient(X, D)
    lr, mu, wd = 0.05, 0.9, 2e-4
    layer.update(X, D, lr, mu, wd)
    v = mu * v0 - lr * g
    np.testing.assert_allclose(layer.velocity, v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.data, w0 + v - wd * w0, rtol=1e-5, atol=1e-6)
    bv = mu * bv0 - lr * bg
    np.testing.assert_allclose(layer.bias, b0 + bv - wd * b0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_update_is_the_float32_formula_bit_for_bit(simd, rng, nesterov):
    """weight_update == weight_grad, then v = mu*v - lr*g; w = (w + v) - decay*w
    with every product and sum rounded to float32 on its own (NumPy float32,
    no fused multiply-add), exactly, on every SIMD path: the update runs 16
    weights at a time on AVX-512 (rows of 1-300 weights: blocks and tails)."""
    layer = random_layer(rng, 300, 40, 0.6)
    B = 32
    X = rng.standard_normal((300, B)).astype(np.float32)
    D = rng.standard_normal((40, B)).astype(np.float32)
    layer.velocity[:] = rng.standard_normal(layer.nnz).astype(np.float32)
    w0, v0 = layer.data.copy(), layer.velocity.copy()
    g, _ = layer.gradient(X, D)
    lr, mu, wd = np.float32(0.05), np.float32(0.9), np.float32(2e-4)
    layer.update(X, D, float(lr), float(mu), float(wd), nesterov=nesterov)
    vn = mu * v0 - lr * g
    step = (mu * vn - lr * g) if nesterov else vn
    assert np.array_equal(layer.velocity, vn)
    assert np.array_equal(layer.data, (w0 + step) - wd * w0)


def test_nesterov_and_apply_update(rng):
    n = 1000
    w = rng.standard_normal(n).astype(np.float32)
    v = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    w1, v1 = w.copy(), v.copy()
    spmm.apply_update(w1, v1, g, 0.1, 0.9, 0.01, True, n_threads=2)
    vn = 0.9 * v - 0.1 * g
    np.testing.assert_allclose(v1, vn, rtol=1e-6)
    np.testing.assert_allclose(w1, w + (0.9 * vn - 0.1 * g) - 0.01 * w, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("B", [1, 13, 128])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_fused_forward_activation_and_dropout(rng, B, rate):
    layer = random_layer(rng, 30, 25, 0.3)
    X = rng.standard_normal((30, B)).astype(np.float32)
    key = K_act.dropout_key(7, 3, 1)
    mask = K_act.dropout_mask(25, B, rate, key).astype(np.float64)
    for act in ACTS + [_srelu_act(rng, 25)]:
        Z = np.empty((25, B), np.float32)
        A = np.empty((25, B), np.float32)
        layer.forward(X, Z, A, act=act, dropout=rate, key=key)
        zref = ref.dense(layer).T @ X + layer.bias[:, None]
        np.testing.assert_allclose(Z, zref, rtol=1e-5, atol=1e-5)
        params = act.params
        aref = ref.act_forward(act.kind, Z.T.astype(np.float64), act.slope, params).T
        np.testing.assert_allclose(A, aref * mask / (1 - rate), rtol=2e-5, atol=1e-5,
                                   err_msg=act.name)


@pytest.mark.parametrize("B", [1, 13, 128])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_fused_backward_derivative_and_dropout(rng, B, rate):
    layer = random_layer(rng, 30, 25, 0.3)
    D = rng.standard_normal((25, B)).astype(np.float32)
    key = K_act.dropout_key(1, 2, 0)
    mask = K_act.dropout_mask(30, B, rate, key).astype(np.float64)
    for act in ACTS + [_srelu_act(rng, 30)]:
        Zin = rng.standard_normal((30, B)).astype(np.float32) * 2
        Zin[0, 0] = 0.0  # the derivative convention at exactly 0
        sg = np.empty((30, 4), np.float32) if act.params is not None else None
        G = Zin.copy()  # in place over the pre-activations, as the model does
        layer.backward_input(D, G, G, act_in=act, srelu_grad=sg, dropout=rate, key=key)
        upstream = (ref.dense(layer) @ D) * mask / (1 - rate)
        z64 = Zin.T.astype(np.float64)
        dref = upstream * ref.act_derivative(act.kind, z64, act.slope, act.params).T
        np.testing.assert_allclose(G, dref, rtol=2e-5, atol=2e-5, err_msg=act.name)
        if sg is not None:
            np.testing.assert_allclose(sg, ref.srelu_param_grad(z64, upstream.T, act.params),
                                       rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("B", [1, 13, 32, 128, 150])
def test_backward_update_may_write_the_delta_over_its_input(rng, simd, every_call_split, B):
    """backward_update with G = X (the model's delta over the layer's input
    activations, model.DELTA_OVER_INPUT) gives the G, gradients and updated
    weights of a separate G bit for bit: on every SIMD path, for narrow
    batches (four rows at a time), whole vectors, a tail, more than one
    128-column chunk, with every activation, dropout, and on 1 and 2 threads."""
    layer0 = random_layer(rng, 30, 25, 0.3)
    D = rng.standard_normal((25, B)).astype(np.float32)
    X = rng.standard_normal((30, B)).astype(np.float32)
    key = K_act.dropout_key(1, 2, 0)
    for act in ACTS + [_srelu_act(rng, 30)]:
        Zin = rng.standard_normal((30, B)).astype(np.float32) * 2
        for threads in (1, 2):
            for grads in (False, True):
                out = []
                for alias in (False, True):
                    lay = copy.deepcopy(layer0)
                    A = X.copy()
                    G = A if alias else np.full((30, B), np.nan, np.float32)
                    sg = np.empty((30, 4), np.float32) if act.params is not None else None
                    gr = ((np.empty(lay.nnz, np.float32), np.empty(25, np.float32))
                          if grads else None)
                    lay.backward_update(A, D, G, 0.1, 0.9, 1e-3, Z_in=Zin, act_in=act,
                                        srelu_grad=sg, dropout=0.3, key=key, grads=gr,
                                        n_threads=threads)
                    out.append([G.copy(), lay.data, lay.velocity, lay.bias]
                               + (list(gr) if grads else []) + ([sg] if sg is not None else []))
                for a, b in zip(*out):
                    assert np.array_equal(a, b), (act.name, threads, grads)


def test_backward_update_refuses_other_overlaps_of_its_delta(rng):
    """G may be Z, or X with Z given; a G that overlaps D, X without Z, or a
    shifted view of X or Z is refused before anything is written."""
    layer = random_layer(rng, 30, 25, 0.3)
    B = 16
    D = rng.standard_normal((25, B)).astype(np.float32)
    X = rng.standard_normal((30, B)).astype(np.float32)
    Z = rng.standard_normal((30, B)).astype(np.float32)
    act = ACTS[1]
    before = layer.data.copy()
    big = np.zeros((31, B), np.float32)
    cases = [
        (X, D, X, None, "only when Z is given"),
        (big[:30], D, big[1:], Z, "overlaps X"),
        (X, D, big[1:], big[:30], "overlaps Z"),
    ]
    for Xa, Da, G, Za, msg in cases:
        with pytest.raises(ValueError, match=msg):
            layer.backward_update(Xa, Da, G, 0.1, 0.9, 0.0, Z_in=Za,
                                  act_in=act if Za is not None else None)
    big_d = np.zeros((55, B), np.float32)
    Dv = big_d[:25]
    with pytest.raises(ValueError, match="overlaps D"):
        layer.backward_update(X, Dv, big_d[20:50], 0.1, 0.9, 0.0, Z_in=Z, act_in=act)
    assert np.array_equal(layer.data, before)
    # the two aliases the model uses are taken
    layer.backward_update(X.copy(), D, Z.copy(), 0.1, 0.9, 0.0, Z_in=Z.copy(), act_in=act)
    A = X.copy()
    layer.backward_update(A, D, A, 0.1, 0.9, 0.0, Z_in=Z, act_in=act)
    Zc = Z.copy()
    layer.backward_update(X, D, Zc, 0.1, 0.9, 0.0, Z_in=Zc, act_in=act)
    assert not np.array_equal(layer.data, before)


def test_standalone_activation_kernels_match_fused(rng):
    Z = rng.standard_normal((20, 50)).astype(np.float32)
    for act in ACTS:
        A = np.empty_like(Z)
        K_act.activation_forward(Z, A, drop_key=5, drop_rate=0.2, **act.kernel_args())
        mask = K_act.dropout_mask(20, 50, 0.2, 5)
        aref = ref.act_forward(act.kind, Z.astype(np.float64), act.slope) * mask / 0.8
        np.testing.assert_allclose(A, aref, rtol=2e-5, atol=1e-6)
        G = np.ones_like(Z)
        K_act.activation_backward(Z, G, drop_rate=0.2, drop_key=5, **act.kernel_args())
        np.testing.assert_allclose(
            G, ref.act_derivative(act.kind, Z.astype(np.float64), act.slope) * mask / 0.8,
            rtol=2e-5, atol=1e-6)


def test_dropout_mask_statistics_and_determinism():
    key = K_act.dropout_key(2024, 10, 2)
    m = K_act.dropout_mask(400, 128, 0.3, key)
    assert abs(m.mean() - 0.7) < 0.01
    # rows and columns are not correlated: per-row keep rates scatter binomially
    assert m.mean(axis=1).std() < 0.06
    assert np.array_equal(m, K_act.dropout_mask(400, 128, 0.3, key))
    other = K_act.dropout_mask(400, 128, 0.3, K_act.dropout_key(2024, 11, 2))
    assert 0.5 < (m == other).mean() < 0.65  # independent masks agree ~0.7^2 + 0.3^2
    # a block of the batch (micro-batch) sees the same bits as the whole batch
    part = K_act.dropout_mask(400, 28, 0.3, key, b_offset=100)
    assert np.array_equal(part, m[:, 100:128])
    assert K_act.dropout_mask(3, 4, 0.0, key).all()


@pytest.mark.parametrize("B", [1, 9, 128])
def test_softmax_xent(rng, B):
    C = 5
    Z = (rng.standard_normal((C, B)) * 3).astype(np.float32)
    y = rng.integers(0, C, B).astype(np.int32)
    loss_ref, dref = ref.softmax_xent(Z.T.astype(np.float64), y)
    D = Z.copy()
    loss, correct = K_act.softmax_xent(D, y, True, n_threads=2)
    assert loss / B == pytest.approx(loss_ref, rel=1e-5)
    assert correct == int((Z.argmax(0) == y).sum())
    np.testing.assert_allclose(D, dref.T, atol=1e-6)
    P = Z.copy()
    K_act.softmax_xent(P, y, False)
    np.testing.assert_allclose(P.sum(0), 1.0, rtol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100, 127, 128, 129, 255, 256, 257, 1000, 1031])
def test_loss_sums_are_numpys_sums(rng, n):
    """The losses' sum over a block is taken in C in NumPy's order: the bits
    of ``a.sum()`` (its pairwise blocks, any size, magnitudes far apart)."""
    a = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)
    assert K_act.loss_sum(a) == a.sum()


@pytest.mark.parametrize("kind", ["softmax", "sigmoid", "linear"])
@pytest.mark.parametrize("B", [1, 9, 130, 300])
def test_block_loss_is_the_numpy_sum_of_its_samples(rng, kind, B):
    """A block's loss is NumPy's sum of its samples' losses (each sample's
    from a block of one), and its count of correct samples theirs."""
    C = 3
    Z = rng.standard_normal((C, B)).astype(np.float32) * 3
    y = rng.integers(0, C, B).astype(np.int32)
    t = rng.standard_normal((B, C)).astype(np.float32)

    def run(Zb, b0, b1):
        Zb = np.array(Zb, order="C")  # (a copy: the kernels write the delta over it)
        if kind == "linear":
            return K_act.linear_mse(Zb, np.ascontiguousarray(t[b0:b1]))
        fn = K_act.softmax_xent if kind == "softmax" else K_act.sigmoid_mse
        return fn(Zb, np.ascontiguousarray(y[b0:b1]), True)

    per = [run(Z[:, b:b + 1], b, b + 1) for b in range(B)]
    loss, correct = run(Z, 0, B)
    assert loss == np.array([p[0] for p in per]).sum()
    assert correct == sum(p[1] for p in per)


def test_softmax_xent_extreme_logits():
    Z = np.array([[1000.0, -1000.0], [0.0, 0.0]], dtype=np.float32)
    loss, _ = K_act.softmax_xent(Z.copy(), np.array([1, 0], np.int32), True)
    assert np.isfinite(loss) and loss == pytest.approx(1000.0 + 1000.0, rel=1e-6)


@pytest.mark.parametrize("B", [1, 9, 64])
def test_sigmoid_mse(rng, B):
    C = 3
    Z = rng.standard_normal((C, B)).astype(np.float32)
    y = rng.integers(0, C, B).astype(np.int32)
    loss_ref, dref = ref.sigmoid_mse(Z.T.astype(np.float64), y)
    D = Z.copy()
    loss, correct = K_act.sigmoid_mse(D, y, True)
    assert loss / B == pytest.approx(loss_ref, rel=1e-5)
    np.testing.assert_allclose(D, dref.T, atol=1e-6)
    assert correct == int((Z.argmax(0) == y).sum())


@pytest.mark.parametrize("n_feat, B", [(130, 77), (500, 32), (64, 16), (15, 40), (3, 5)])
def test_gather_columns(simd, rng, n_feat, B):
    """out = X[rows].T on every SIMD path: AVX-512's 16 x 16 tiles transposed
    in registers and their edges (features and samples past a multiple of
    16), the others one value at a time; on 1 and 2 threads."""
    X = rng.standard_normal((500, n_feat)).astype(np.float32)
    rows = rng.integers(0, 500, B).astype(np.int64)
    for threads in (1, 2):
        out = np.full((n_feat, B), np.nan, np.float32)
        spmm.gather_columns(X, rows, out, n_threads=threads)
        assert np.array_equal(out, X[rows].T)


@pytest.mark.parametrize("B", [16, 37, 128])
def test_gather_columns_from_a_training_set_in_memory(simd, rng, B):
    """A training set of GATHER_STREAM_MIN (16 MiB) or more is gathered 16
    samples at a time with all their features on the AVX-512 path: the same
    out = X[rows].T, sample groups past a multiple of 16 and features past a
    multiple of 16 included, on 1 and 2 threads."""
    X = rng.standard_normal((4100, 1030)).astype(np.float32)  # 16.9 MB
    assert X.nbytes >= 16 << 20
    rows = rng.integers(0, X.shape[0], B).astype(np.int64)
    for threads in (1, 2):
        out = np.full((X.shape[1], B), np.nan, np.float32)
        spmm.gather_columns(X, rows, out, n_threads=threads)
        assert np.array_equal(out, X[rows].T)


def test_kernel_shape_checks(rng):
    layer = random_layer(rng, 10, 8, 0.5)
    X = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="Z must be"):
        layer.forward(X, np.zeros((7, 4), np.float32))
    with pytest.raises(ValueError, match="G must be"):
        layer.backward_input(np.zeros((8, 4), np.float32), np.zeros((9, 4), np.float32))


def _step_kernel_calls(rng):
    """Each per-step kernel (they take their arrays through arrayargs.pxd,
    not memoryviews) with valid arguments: (name, kernel, args, kwargs)."""
    layer = random_layer(rng, 10, 8, 0.5)
    B = 4
    X = np.zeros((10, B), np.float32)
    Z = np.zeros((8, B), np.float32)
    D = np.zeros((8, B), np.float32)
    G = np.zeros((10, B), np.float32)
    w, v, g = (np.zeros(layer.nnz, np.float32) for _ in range(3))
    b, bv = np.zeros(8, np.float32), np.zeros(8, np.float32)
    fwd = (layer.indptr, layer.indices, layer.data.copy(), b, X, Z)
    bwd = (layer.t_indptr, layer.t_rows, layer.t_perm, D, X, G, w, v, b, bv,
           0.25, 0.1, 0.9, 0.0, 0.0)
    return [
        ("forward", spmm.forward, fwd, {"A": Z.copy()}),
        ("backward_input", spmm.backward_input, (layer.t_indptr, layer.t_rows, layer.t_perm,
                                                 layer.data, D, G), {"Z": G.copy()}),
        ("backward_update", spmm.backward_update, bwd, {}),
        ("weight_grad", spmm.weight_grad, (layer.indptr, layer.indices, X, D, g, b.copy(),
                                           0.25), {}),
        ("weight_update", spmm.weight_update, (layer.indptr, layer.indices, X, D, w, v,
                                               b.copy(), bv.copy(), 0.25, 0.1, 0.9, 0.0,
                                               0.0), {}),
        ("apply_update", spmm.apply_update, (w, v, g, 0.1, 0.9, 0.0), {}),
        ("gather_columns", spmm.gather_columns,
         (np.zeros((3, 10), np.float32), np.array([2, 0, 1, 1], np.int64), G), {}),
        ("softmax_xent", K_act.softmax_xent, (Z.copy(), np.zeros(B, np.int32)), {}),
        ("sigmoid_mse", K_act.sigmoid_mse, (Z.copy(), np.ones(B, np.int32)), {}),
        ("linear_mse", K_act.linear_mse, (Z.copy(), np.zeros((B, 8), np.float32)), {}),
    ]


def test_step_kernels_refuse_what_a_memoryview_refused(rng):
    """The per-step kernels read their arrays' headers instead of taking
    typed memoryviews (call cost, pyx/arrayargs.pxd), and refuse the same
    arrays, naming the kernel and the argument: another dtype, byte order or
    number of dimensions, a non-contiguous or misaligned array, a read-only
    one where the kernel writes, None or a list where an array is needed."""
    for name, kernel, args, kw in _step_kernel_calls(rng):
        kernel(*args, **kw)  # the valid call runs
        for pos, a in enumerate(args):
            if not isinstance(a, np.ndarray):
                continue
            bad = [a.astype(np.float64 if a.dtype != np.float64 else np.float32),
                   a.astype(a.dtype.newbyteorder()),
                   a.reshape(-1) if a.ndim == 2 else a.reshape(1, -1),
                   np.asfortranarray(np.repeat(a.reshape(a.shape[0], -1), 2, axis=1))[:, ::2]]
            raw = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
            if a.size:
                bad.append(raw)  # misaligned by one byte
            for x in bad:
                with pytest.raises(ValueError, match=f"{name}: "):
                    kernel(*args[:pos], x, *args[pos + 1:], **kw)
            for x in (None, a.tolist()):
                with pytest.raises(TypeError, match=f"{name}: "):
                    kernel(*args[:pos], x, *args[pos + 1:], **kw)
        # the arrays the kernel writes: refused read-only, with what went wrong
        written = {"forward": [5], "backward_input": [5], "backward_update": [5, 6, 7, 8, 9],
                   "weight_grad": [4, 5], "weight_update": [4, 5, 6, 7],
                   "apply_update": [0, 1], "gather_columns": [2],
                   "softmax_xent": [0], "sigmoid_mse": [0], "linear_mse": [0]}[name]
        for pos in written:
            ro = args[pos].copy()
            ro.flags.writeable = False
            with pytest.raises(ValueError, match=f"{name}: .* is read-only"):
                kernel(*args[:pos], ro, *args[pos + 1:], **kw)



def test_backward_update_refuses_a_gradient_buffer_shorter_than_a_row(rng):
    """max_row sizes backward_update's per-thread gradient buffer: too small a
    value raises (no row is written past the buffer), -1 counts it, and the
    layer's own value gives the same result as the count."""
    layer = random_layer(rng, 10, 8, 0.5)
    assert layer.max_in_degree > 1
    B = 4
    X = rng.standard_normal((10, B)).astype(np.float32)
    D = rng.standard_normal((8, B)).astype(np.float32)
    outs = []
    for max_row in (1, -1, layer.max_in_degree):
        g, bg = np.zeros(layer.nnz, np.float32), np.zeros(8, np.float32)
        G = np.zeros((10, B), np.float32)
        args = (layer.t_indptr, layer.t_rows, layer.t_perm, D, X, G, layer.data,
                layer.velocity, layer.bias, layer.bias_velocity, 0.25, 0.1, 0.9, 0.0, 0.0,
                False, max_row)
        if max_row == 1:
            with pytest.raises(ValueError, match="more than max_row = 1"):
                spmm.backward_update(*args, g_out=g, bias_g_out=bg)
            continue
        spmm.backward_update(*args, g_out=g, bias_g_out=bg)
        outs.append((G, g, bg))
    for a, b in zip(*outs):
        assert np.array_equal(a, b)

def test_losses_refuse_labels_outside_the_classes():
    Z = np.zeros((3, 4), np.float32)
    for kernel in (K_act.softmax_xent, K_act.sigmoid_mse):
        for lab in ([0, 1, 3, 2], [0, -1, 1, 2]):
            with pytest.raises(ValueError, match="is not in \\[0, 3\\)"):
                kernel(Z.copy(), np.array(lab, np.int32))


@pytest.mark.parametrize("act_i", range(len(ACTS)))
def test_bit_identical_across_threads(rng, act_i):
    act = ACTS[act_i]
    results = []
    for threads in (1, 2):
        r = np.random.default_rng(99)
        layer = random_layer(r, 300, 200, 0.1)
        X = r.standard_normal((300, 128)).astype(np.float32)
        D = r.standard_normal((200, 128)).astype(np.float32)
        Z = np.empty((200, 128), np.float32)
        A = np.empty_like(Z)
        layer.forward(X, Z, A, act=act, dropout=0.3, key=11, n_threads=threads)
        G = X.copy()
        layer.backward_input(D, G, G, act_in=act, dropout=0.3, key=12, n_threads=threads)
        g, bg = layer.gradient(X, D, n_threads=threads)
        layer.update(X, D, 0.01, 0.9, 2e-4, n_threads=threads)
        results.append((Z, A, G, g, bg, layer.data.copy(), layer.velocity.copy(),
                        layer.bias.copy()))
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("B", [1, 7, 32, 33, 100, 128, 129, 300])
def test_fused_backward_update_matches_separate_kernels(simd, rng, B):
    """backward_update == backward_input + weight_grad + update, on every SIMD path."""
    for base in _layer_cases(rng):
        act = Activation("allrelu", ACT_LEAKY, slope=-0.5)
        X = rng.standard_normal((base.n_in, B)).astype(np.float32)
        D = rng.standard_normal((base.n_out, B)).astype(np.float32)
        Zin = rng.standard_normal((base.n_in, B)).astype(np.float32)
        a = base
        b = type(base)(base.n_in, base.n_out, base.indptr, base.indices, base.data.copy(),
                       bias=base.bias, velocity=base.velocity.copy(),
                       bias_velocity=base.bias_velocity)
        # separate kernels on `a`
        G_ref = Zin.copy()
        a.backward_input(D, G_ref, G_ref, act_in=act, dropout=0.2, key=3)
        g_ref, bg_ref = a.gradient(X, D)
        a.update(X, D, 0.1, 0.9, 1e-3)
        # fused, gradient only
        g = np.empty_like(g_ref)
        bg = np.empty_like(bg_ref)
        G = Zin.copy()
        b.backward_update(X, D, G, 0.1, 0.9, 1e-3, Z_in=G, act_in=act, dropout=0.2, key=3,
                          grads=(g, bg))
        np.testing.assert_allclose(G, G_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bg, bg_ref, rtol=1e-6, atol=1e-6)
        # fused with the update
        G2 = Zin.copy()
        b.backward_update(X, D, G2, 0.1, 0.9, 1e-3, Z_in=G2, act_in=act, dropout=0.2, key=3)
        np.testing.assert_allclose(G2, G_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b.data, a.data, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.velocity, a.velocity, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.bias, a.bias, rtol=1e-6, atol=1e-7)


def test_fused_backward_update_bit_identical_across_threads():
    out = []
    for threads in (1, 2):
        r = np.random.default_rng(4)
        layer = random_layer(r, 300, 200, 0.1)
        X = r.standard_normal((300, 128)).astype(np.float32)
        D = r.standard_normal((200, 128)).astype(np.float32)
        G = r.standard_normal((300, 128)).astype(np.float32)
        layer.backward_update(X, D, G, 0.01, 0.9, 2e-4, Z_in=G,
                              act_in=Activation("relu", ACT_RELU), dropout=0.3, key=5,
                              n_threads=threads)
        out.append((G, layer.data.copy(), layer.velocity.copy(), layer.bias.copy()))
    for a, b in zip(*out):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("B", [7, 128])
def test_gradient_accumulation_over_micro_batches(simd, rng, B):
    """Two micro-batches accumulated with scale 1/B == one batch of B."""
    layer = random_layer(rng, 60, 40, 0.2)
    X = rng.standard_normal((60, 2 * B)).astype(np.float32)
    D = rng.standard_normal((40, 2 * B)).astype(np.float32)
    G = np.empty((60, 2 * B), np.float32)
    g_full, bg_full = layer.gradient(X, D)
    halves = [np.ascontiguousarray(a) for a in (X[:, :B], X[:, B:], D[:, :B], D[:, B:])]
    for fused in (False, True):
        g = np.zeros(layer.nnz, np.float32)
        bg = np.zeros(layer.n_out, np.float32)
        for Xh, Dh in ((halves[0], halves[2]), (halves[1], halves[3])):
            if fused:
                layer.backward_update(Xh, Dh, G[:, :B].copy(), 0, 0, 0, scale=1 / (2 * B),
                                      grads=(g, bg), accumulate=True)
            else:
                layer.gradient(Xh, Dh, g, bg, scale=1 / (2 * B), accumulate=True)
        np.testing.assert_allclose(g, g_full, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bg, bg_full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("B", [7, 16, 128])
def test_transposed_order_accumulation_is_the_same_gradient(simd, rng, B):
    """backward_update with the weights and the gradient in the transposed
    index's order (the micro-batch path) gives the same G bit for bit, and
    g_t[k] == g[t_perm[k]] bit for bit, over two accumulated blocks, on 1 and
    2 threads; turned back with gradient_from_transposed it is g itself."""
    for layer in _layer_cases(rng):
        act = Activation("allrelu", ACT_LEAKY, slope=-0.5)
        blocks = [(rng.standard_normal((layer.n_in, B)).astype(np.float32),
                   rng.standard_normal((layer.n_out, B)).astype(np.float32),
                   rng.standard_normal((layer.n_in, B)).astype(np.float32)) for _ in range(2)]
        wt = layer.weights_transposed(np.empty(layer.nnz, np.float32))
        assert np.array_equal(wt, layer.data[layer.t_perm])
        for threads in (1, 2):
            g, bg = np.zeros(layer.nnz, np.float32), np.zeros(layer.n_out, np.float32)
            g_t, bg_t = np.zeros(layer.nnz, np.float32), np.zeros(layer.n_out, np.float32)
            for X, D, Zin in blocks:
                G, G_t = Zin.copy(), Zin.copy()
                layer.backward_update(X, D, G, 0, 0, 0, Z_in=G, act_in=act, dropout=0.2,
                                      key=3, scale=1 / (2 * B), grads=(g, bg), accumulate=True,
                                      n_threads=threads)
                layer.backward_update(X, D, G_t, 0, 0, 0, Z_in=G_t, act_in=act, dropout=0.2,
                                      key=3, scale=1 / (2 * B), grads=(g_t, bg_t),
                                      accumulate=True, n_threads=threads, weights_t=wt)
                assert np.array_equal(G, G_t)
            assert np.array_equal(g_t, g[layer.t_perm])
            assert np.array_equal(bg_t, bg)
            back = layer.gradient_from_transposed(g_t, np.full(layer.nnz, np.nan, np.float32))
            assert np.array_equal(back, g)


@pytest.mark.parametrize("B", [7, 16, 128])
def test_gradient_in_transposed_order_updates_the_weights_the_same(simd, rng, B):
    """backward_update with ``grads_t`` (the gradient written in the
    transposed index's order, the weights read in their own: the split update
    on several threads, model.py) gives the same G and g_t[k] == g[t_perm[k]]
    bit for bit, on 1 and 2 threads; apply_gradient with ``transposed`` (the
    gradient read back through t_inverse) then leaves the same weights,
    momenta and biases as the update in the weights' own order."""
    act = Activation("allrelu", ACT_LEAKY, slope=-0.5)
    for layer in _layer_cases(rng):
        X = rng.standard_normal((layer.n_in, B)).astype(np.float32)
        D = rng.standard_normal((layer.n_out, B)).astype(np.float32)
        Zin = rng.standard_normal((layer.n_in, B)).astype(np.float32)
        inv = layer.t_inverse()
        assert np.array_equal(inv[layer.t_perm], np.arange(layer.nnz))
        outs = []
        for threads in (1, 2):
            for grads_t in (False, True):
                lay = copy.deepcopy(layer)
                g = np.full(lay.nnz, np.nan, np.float32)
                bg = np.full(lay.n_out, np.nan, np.float32)
                G = Zin.copy()
                lay.backward_update(X, D, G, 0, 0, 0, Z_in=G, act_in=act, dropout=0.2, key=3,
                                    grads=(g, bg), n_threads=threads, grads_t=grads_t)
                g_own = g[inv] if grads_t else g
                lay.apply_gradient(g, bg, 0.05, 0.9, 1e-3, n_threads=threads,
                                   transposed=grads_t)
                outs.append((G, g_own, bg, lay.data, lay.velocity, lay.bias))
        for out in outs[1:]:
            for a, b in zip(outs[0], out):
                assert np.array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_update_through_an_index_is_the_update_of_the_gathered_gradient(simd, rng, threads):
    """apply_update with ``index``: weight k takes g[index[k]], bit for bit
    the update of the gradient gathered by NumPy, on every SIMD path (the
    AVX-512 gather and the scalar loop), sizes around the gather block
    (rowkern.h smlp_take, 16 lanes) and the kernel's block (TAKE_BLOCK).  A
    position outside [0, n) is refused after the call, its weight untouched
    and the others updated; an index of another length is refused before."""
    from sparse_mlp.kernels import spmm_serial

    for n in (0, 1, 15, 16, 17, 511, 512, 513, 1500):
        w0 = rng.standard_normal(n).astype(np.float32)
        v0 = rng.standard_normal(n).astype(np.float32)
        g = rng.standard_normal(n).astype(np.float32)
        idx = rng.permutation(n).astype(np.int32)
        for kern in (spmm, spmm_serial):
            for nesterov in (False, True):
                w, v = w0.copy(), v0.copy()
                kern.apply_update(w, v, g, 0.05, 0.9, 1e-3, nesterov, n_threads=threads,
                                  index=idx)
                w_ref, v_ref = w0.copy(), v0.copy()
                spmm_serial.apply_update(w_ref, v_ref, g[idx], 0.05, 0.9, 1e-3, nesterov)
                assert np.array_equal(w, w_ref) and np.array_equal(v, v_ref)
        if n < 17:
            continue
        bad = idx.copy()
        bad[[3, n - 1]] = [n, -1]
        w, v = w0.copy(), v0.copy()
        with pytest.raises(ValueError, match=f"index holds a position outside \\[0, {n}\\)"):
            spmm.apply_update(w, v, g, 0.05, 0.9, 1e-3, n_threads=threads, index=bad)
        ok = np.ones(n, bool)
        ok[[3, n - 1]] = False
        w_ref, v_ref = w0.copy(), v0.copy()
        spmm_serial.apply_update(w_ref, v_ref, g[np.where(ok, bad, 0)], 0.05, 0.9, 1e-3)
        assert np.array_equal(w[ok], w_ref[ok]) and np.array_equal(v[ok], v_ref[ok])
        assert np.array_equal(w[~ok], w0[~ok]) and np.array_equal(v[~ok], v0[~ok])
        with pytest.raises(ValueError, match="index must have the length of w"):
            spmm.apply_update(w, v, g, 0.05, 0.9, 1e-3, index=idx[:-1])
        with pytest.raises(ValueError, match="apply_update: index"):
            spmm.apply_update(w, v, g, 0.05, 0.9, 1e-3, index=idx.astype(np.int64))


def test_t_inverse_follows_the_topology(rng):
    """SparseLayer.t_inverse is built on first use and rebuilt after a
    topology change (never the inverse of an old permutation)."""
    layer = random_layer(rng, 30, 20, 0.3)
    first = layer.t_inverse()
    assert layer.t_inverse() is first
    assert np.array_equal(first[layer.t_perm], np.arange(layer.nnz))
    keep = np.sort(rng.choice(layer.nnz, layer.nnz // 2, replace=False))
    rows = np.repeat(np.arange(layer.n_out), np.diff(layer.indptr))[keep]
    indptr = np.zeros(layer.n_out + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    layer.set_topology(np.cumsum(indptr), layer.indices[keep].copy(), layer.data[keep].copy(),
                       layer.velocity[keep].copy())
    again = layer.t_inverse()
    assert again.size == layer.nnz
    assert np.array_equal(again[layer.t_perm], np.arange(layer.nnz))


@pytest.mark.parametrize("lo, hi, nt, chunk", [(0, 1000, 2, 31), (4, 83, 3, 1), (0, 7, 4, 2),
                                               (0, 0, 2, 1), (10, 11, 2, 5), (0, 999, 16, 3)])
def test_owned_rows_are_each_taken_once_by_their_owner_first(lo, hi, nt, chunk):
    """The row loops of forward and backward_update (rowkern.h,
    smlp_owned_next): whatever the order in which threads come for rows,
    every row of lo..hi is taken exactly once, and each thread takes its own
    contiguous block first, in order, before any of the others' (the same cut
    for any call over the same rows, so a thread reads back the rows it
    wrote); with blocks of one size and even turns, nothing but its own."""
    blocks = [(lo + (hi - lo) * b // nt, lo + (hi - lo) * (b + 1) // nt) for b in range(nt)]
    rng = np.random.default_rng(hi * 7 + nt)
    orders = [list(range(nt)), list(rng.integers(0, nt, 50)), [nt - 1]]
    for order in orders:
        trace = spmm.owned_rows_trace(lo, hi, nt, chunk, order)
        rows = sorted(r for _, r0, r1 in trace for r in range(r0, r1))
        assert rows == list(range(lo, hi))
        assert all(0 < r1 - r0 <= chunk for _, r0, r1 in trace)
        for t in set(order):  # its own block first, in order, then the others'
            inside = [blocks[t][0] <= r0 < blocks[t][1] for u, r0, _ in trace if u == t]
            assert inside == sorted(inside, reverse=True)
            starts = [r0 for u, r0, _ in trace if u == t][: sum(inside)]
            assert starts == sorted(starts)
    if (hi - lo) % nt == 0:  # blocks of one size, even turns: each thread its own block
        for t, r0, r1 in spmm.owned_rows_trace(lo, hi, nt, chunk, list(range(nt))):
            assert blocks[t][0] <= r0 and r1 <= blocks[t][1]
    alone = [r0 for _, r0, _ in spmm.owned_rows_trace(lo, hi, nt, chunk, [nt - 1])]
    own = list(range(blocks[nt - 1][0], blocks[nt - 1][1], chunk))
    assert alone[: len(own)] == own
    with pytest.raises(ValueError, match="thread ids"):
        spmm.owned_rows_trace(lo, hi, nt, chunk, [nt])


def test_transposed_order_needs_a_gradient_output(rng):
    layer = random_layer(rng, 20, 10, 0.3)
    X = np.zeros((20, 4), np.float32)
    D = np.zeros((10, 4), np.float32)
    for flag in ("transposed", "grad_t"):
        with pytest.raises(ValueError, match="transposed and grad_t need g_out"):
            spmm.backward_update(layer.t_indptr, layer.t_rows, layer.t_perm, D, X, X.copy(),
                                 layer.data, layer.velocity, layer.bias, layer.bias_velocity,
                                 1.0, 0.1, 0.9, 0.0, 0.0, **{flag: True})


@pytest.mark.parametrize("threads", [1, 2])
def test_permute_gathers_and_scatters(rng, threads):
    n = 1000
    perm = rng.permutation(n).astype(np.int32)
    src = rng.standard_normal(n).astype(np.float32)
    out = np.empty(n, np.float32)
    spmm.permute(src, perm, out, False, threads)
    assert np.array_equal(out, src[perm])
    back = np.empty(n, np.float32)
    spmm.permute(out, perm, back, True, threads)
    assert np.array_equal(back, src)
    with pytest.raises(ValueError, match="same length"):
        spmm.permute(src[:10], perm, out)


def _short_row_results(distance, threads, B):
    """Every product of a layer with about two weights per row (the case
    the cross-row prefetch is for), at one prefetch distance."""
    old = spmm.prefetch_distance()
    try:
        spmm.prefetch_distance(distance)
        r = np.random.default_rng(11)
        layer = random_layer(r, 400, 300, 0.006, empty_rows=[0, 299], empty_cols=[7])
        X = r.standard_normal((400, B)).astype(np.float32)
        D = r.standard_normal((300, B)).astype(np.float32)
        Z = np.empty((300, B), np.float32)
        layer.forward(X, Z, n_threads=threads)
        G = np.empty((400, B), np.float32)
        layer.backward_input(D, G, n_threads=threads)
        g, bg = layer.gradient(X, D, n_threads=threads)
        G2 = r.standard_normal((400, B)).astype(np.float32)
        layer.backward_update(X, D, G2, 0.01, 0.9, 2e-4, Z_in=G2,
                              act_in=Activation("relu", ACT_RELU), dropout=0.3, key=5,
                              n_threads=threads)
        layer.update(X, D, 0.01, 0.9, 2e-4, n_threads=threads)
        return layer, [Z, G, g, bg, G2, layer.data.copy(), layer.velocity.copy()]
    finally:
        spmm.prefetch_distance(old)


@pytest.mark.parametrize("B", [1, 64, 130])
def test_cross_row_prefetch_changes_no_result(B):
    """The cross-row prefetch (short rows, eps ~1) reaches past the current
    row and, near the end, past the index: any distance, including one
    longer than the whole index, gives bit-identical results on 1 and 2
    threads, and those results match dense NumPy."""
    layer0, base = _short_row_results(0, 1, B)
    assert layer0.nnz < 16 * 300  # short rows: the prefetch path is taken
    for distance in (1, 24, 256):
        for threads in (1, 2):
            _, out = _short_row_results(distance, threads, B)
            for a, b in zip(base, out):
                assert np.array_equal(a, b)
    r = np.random.default_rng(11)
    fresh = random_layer(r, 400, 300, 0.006, empty_rows=[0, 299], empty_cols=[7])
    X = r.standard_normal((400, B)).astype(np.float32)
    np.testing.assert_allclose(base[0], ref.dense(fresh).T @ X + fresh.bias[:, None],
                               rtol=1e-5, atol=1e-5)


def _huge_block_results(stream_min, threads):
    """Every product of a layer whose blocks pass the kernels' size switches
    (>= 1 MiB: the cross-row and sequential-row prefetches; >= stream_min:
    streaming stores), about two weights per row, 64-byte aligned blocks as
    the model's, micro-batch accumulation in transposed order included."""
    old = spmm.stream_stores(), spmm.row_prefetch()
    try:
        spmm.stream_stores(stream_min)
        spmm.row_prefetch(stream_min)  # (same switch: on for every block, or never)
        r = np.random.default_rng(12)
        n, B = 2200, 128  # 2200 x 128 floats = 1.07 MiB
        layer = random_layer(r, n, n, 0.001, empty_rows=[0, n - 1], empty_cols=[9])
        X, D, G, Z, A, Zin = (aligned_empty((n, B)) for _ in range(6))
        for arr in (X, D, Zin):
            arr[...] = r.standard_normal((n, B), dtype=np.float32)
        act = Activation("allrelu", ACT_LEAKY, slope=-0.6)
        layer.forward(X, Z, A, act=act, dropout=0.3, key=5, n_threads=threads)
        layer.backward_input(D, G, n_threads=threads)
        g, bg = layer.gradient(X, D, n_threads=threads)
        wt = layer.weights_transposed(np.empty(layer.nnz, np.float32))
        g_t, bg_t = np.zeros(layer.nnz, np.float32), np.zeros(n, np.float32)
        layer.backward_update(X, D, Zin, 0, 0, 0, Z_in=Zin, act_in=act, dropout=0.3, key=5,
                              grads=(g_t, bg_t), accumulate=True, n_threads=threads,
                              weights_t=wt)
        layer.update(X, D, 0.01, 0.9, 2e-4, n_threads=threads)
        return layer, [Z.copy(), A.copy(), G.copy(), g, bg, Zin.copy(), g_t, bg_t,
                       layer.data.copy(), layer.velocity.copy()]
    finally:
        spmm.stream_stores(old[0])
        spmm.row_prefetch(old[1])


def test_streaming_stores_and_row_prefetch_change_no_result():
    """Streaming stores and the sequential-row prefetch (every call, threshold
    1 byte) against neither, on 1 and 2 threads, with blocks large enough for
    the cross-row prefetch: bit for bit the same; the forward product matches
    dense NumPy."""
    layer, base = _huge_block_results(0, 1)
    assert layer.nnz < 16 * layer.n_out  # short rows: the cross-row prefetch path
    for stream_min in (0, 1):
        for threads in (1, 2):
            _, out = _huge_block_results(stream_min, threads)
            for a, b in zip(base, out):
                assert np.array_equal(a, b)
    r = np.random.default_rng(12)
    fresh = random_layer(r, 2200, 2200, 0.001, empty_rows=[0, 2199], empty_cols=[9])
    X = r.standard_normal((2200, 128), dtype=np.float32)
    np.testing.assert_allclose(base[0], ref.dense(fresh).T @ X + fresh.bias[:, None],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=">= 0"):
        spmm.stream_stores(-1)
    with pytest.raises(ValueError, match=">= 0"):
        spmm.row_prefetch(-1)


@pytest.mark.parametrize("B", [5, 16, 17, 32])
def test_four_row_forward_equals_the_row_path(B):
    """Narrow batches (B <= 32) of small blocks run the forward product four
    rows at a time (rowkern.h, smlp_forward_rows4): Z, A and the kept bits
    equal the one-row path's (forced here by the sequential-row prefetch, on
    for every block) bit for bit, on 1 and 2 threads, for ragged and empty
    rows, a row count that is no multiple of four, fused and unfused
    activations and none; Z matches dense NumPy."""
    r = np.random.default_rng(B)
    layer = random_layer(r, 70, 103, 0.15, empty_rows=[0, 5, 102])
    X = r.standard_normal((70, B), dtype=np.float32)
    words = spmm.epilogue_bits_words(B)
    cases = [(ACT_RELU, 0.0, 0.3), (ACT_LEAKY, -0.6, 0.2), (ACT_TANH, 0.0, 0.1), (None, 0.0, 0)]
    old = spmm.row_prefetch()
    try:
        for act, slope, rate in cases:
            outs = []
            for one_row in (False, True):
                spmm.row_prefetch(1 if one_row else old)
                for threads in (1, 2):
                    Z = np.full((103, B), np.nan, np.float32)
                    A = None if act is None else np.full_like(Z, np.nan)
                    bits = np.zeros((103, words), np.uint16)
                    kept = spmm.forward(layer.indptr, layer.indices, layer.data, layer.bias, X,
                                        Z, A, act or 0, slope, None, rate, 7, 3, threads, bits)
                    outs.append((Z, A, bits if kept else None))
            for Z, A, bits in outs[1:]:
                assert np.array_equal(Z, outs[0][0])
                assert A is None or np.array_equal(A, outs[0][1])
                assert bits is None or np.array_equal(bits, outs[0][2])
            np.testing.assert_allclose(outs[0][0], ref.dense(layer).T @ X + layer.bias[:, None],
                                       rtol=1e-5, atol=1e-5)
    finally:
        spmm.row_prefetch(old)


@pytest.mark.parametrize("B", [5, 16, 17, 32])
def test_four_row_backward_equals_the_row_path(B):
    """The fused backward of narrow batches runs four input rows at a time
    (rowkern.h, smlp_backward_rows4): the gradient to the inputs, the
    updated weights and momenta, or the gradients (in place, transposed,
    accumulated, in transposed order only) equal the one-row path's (forced by the sequential-row
    prefetch) bit for bit, on 1 and 2 threads, for a fused activation with
    the kept bits and without, an unfused one (SReLU, with its parameter
    gradients) and none, ragged and empty input rows."""
    from sparse_mlp.activations import Activation

    r = np.random.default_rng(100 + B)
    n_in, n_out = 83, 60  # 83 input rows: no multiple of four
    below = random_layer(r, 40, n_in, 0.2)
    X0 = r.standard_normal((40, B), dtype=np.float32)
    D = r.standard_normal((n_out, B), dtype=np.float32)
    words = spmm.epilogue_bits_words(B)
    srelu = Activation("srelu", ACT_SRELU, params=srelu_initial(n_in, r))
    cases = [(Activation("a", ACT_LEAKY, slope=-0.6), 0.3, True),
             (Activation("a", ACT_RELU), 0.0, False), (srelu, 0.2, False), (None, 0.0, False)]
    old = spmm.row_prefetch()
    try:
        for act, rate, use_bits in cases:
            Zin = np.empty((n_in, B), np.float32)
            Ain = np.empty_like(Zin)
            bits = np.zeros((n_in, words), np.uint16)
            kept = below.forward(X0, Zin, Ain, act=act if act is not None else None,
                                 dropout=rate, key=4, b_offset=2, bits=bits)
            for mode in ("update", "grads", "accumulate", "transposed", "grads_t"):
                outs = []
                for one_row in (False, True):
                    spmm.row_prefetch(1 if one_row else old)
                    for threads in (1, 2):
                        lay = random_layer(np.random.default_rng(5), n_in, n_out, 0.15,
                                           empty_cols=[0, 41])
                        G = Zin.copy()
                        sg = np.zeros((n_in, 4), np.float32) if act is srelu else None
                        g = np.ones(lay.nnz, np.float32)
                        bg = np.ones(n_out, np.float32)
                        kw = {}
                        if mode != "update":
                            kw = dict(grads=(g, bg), accumulate=mode == "accumulate")
                        if mode == "transposed":
                            kw["weights_t"] = lay.weights_transposed(
                                np.empty(lay.nnz, np.float32))
                        kw["grads_t"] = mode == "grads_t"
                        lay.backward_update(Ain, D, G, 0.05, 0.9, 1e-3,
                                            Z_in=G if act is not None else None, act_in=act,
                                            srelu_grad=sg, dropout=rate, key=4, b_offset=2,
                                            n_threads=threads,
                                            bits=bits if (kept and use_bits) else None, **kw)
                        outs.append((G, lay.data.copy(), lay.velocity.copy(), g, bg, sg))
                for out in outs[1:]:
                    for a, b in zip(outs[0], out):
                        assert a is None or np.array_equal(a, b), mode
    finally:
        spmm.row_prefetch(old)



@pytest.mark.parametrize("B", [16, 48, 128])
def test_specialised_row_kernels_equal_the_generic_ones(B):
    """With AVX-512 and B a multiple of 16 up to 128, every kernel call picks
    a row function specialised for the batch width once (rowkern.h,
    smlp_*_row_for) instead of the generic one per row: forward (fused and
    plain, with the kept bits), gradient to the inputs, fused backward and
    update, weight gradient and update give the same bits both ways, on 1 and
    2 threads, with empty rows and columns.  (The one-row path is forced for
    B = 16 as in the four-row tests.)"""
    if spmm.cpu_simd_level() != "avx512":
        pytest.skip("the specialisations are AVX-512 only")
    r = np.random.default_rng(B)
    n_in, n_out = 70, 91
    X = r.standard_normal((n_in, B), dtype=np.float32)
    D = r.standard_normal((n_out, B), dtype=np.float32)
    Zin = r.standard_normal((n_in, B), dtype=np.float32)
    words = spmm.epilogue_bits_words(B)
    act = Activation("allrelu", ACT_LEAKY, slope=-0.6)
    old = spmm.row_prefetch()
    outs = []
    try:
        spmm.row_prefetch(1)
        for spec in (False, True):
            spmm.row_specialisation(spec)
            for threads in (1, 2):
                lay = random_layer(np.random.default_rng(3), n_in, n_out, 0.2,
                                   empty_rows=[0, 44], empty_cols=[5])
                Z = np.empty((n_out, B), np.float32)
                A = np.empty_like(Z)
                bits = np.zeros((n_out, words), np.uint16)
                lay.forward(X, Z, A, act=act, dropout=0.3, key=9, bits=bits)
                Zp = np.empty_like(Z)
                lay.forward(X, Zp, n_threads=threads)
                G = np.empty((n_in, B), np.float32)
                lay.backward_input(D, G, Zin, act_in=act, dropout=0.2, key=4, n_threads=threads)
                g, bg = lay.gradient(X, D, n_threads=threads)
                G2 = Zin.copy()
                lay.backward_update(X, D, G2, 0.05, 0.9, 1e-3, Z_in=G2, act_in=act,
                                    dropout=0.2, key=4, n_threads=threads)
                lay.update(X, D, 0.05, 0.9, 1e-3, n_threads=threads)
                outs.append((Z, A, bits, Zp, G, g, bg, G2, lay.data, lay.velocity, lay.bias))
    finally:
        spmm.row_specialisation(True)
        spmm.row_prefetch(old)
    assert spmm.row_specialisation() is True
    for out in outs[1:]:
        for a, b in zip(outs[0], out):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("n_out", [1, 2, 3, 4, 5, 10, 16])
def test_full_output_layers_four_rows_at_once_give_the_row_paths_bits(n_out):
    """A forward product without epilogue on a layer whose rows are all full
    (an output layer) runs four rows at a time over 64 columns on the AVX-512
    path (spmm.dense_rows): the same bits as row by row, for batch widths with
    and without a partial last block, on 1 and 2 threads, with the row
    function specialisation on and off; a layer with one weight missing takes
    the row path (and still agrees with NumPy)."""
    r = np.random.default_rng(n_out)
    n_in = 37
    layer = random_layer(r, n_in, n_out, 1.0)
    assert layer.nnz == n_in * n_out
    old = spmm.dense_rows(), spmm.min_parallel_work()
    try:
        spmm.min_parallel_work(0)
        for B in (1, 15, 63, 64, 65, 128, 130, 300):
            X = r.standard_normal((n_in, B), dtype=np.float32)
            ref_z = (layer.to_scipy().T @ X.astype(np.float64)) + layer.bias[:, None]
            outs = []
            for dense in (False, True):
                spmm.dense_rows(dense)
                for spec in (False, True):
                    spmm.row_specialisation(spec)
                    for threads in (1, 2):
                        Z = np.full((n_out, B), np.nan, np.float32)
                        assert layer.forward(X, Z, n_threads=threads) is False
                        outs.append(Z)
            for Z in outs[1:]:
                assert np.array_equal(Z, outs[0])
            np.testing.assert_allclose(outs[0], ref_z, rtol=1e-4, atol=1e-4)
        # one weight fewer: not full, the row path
        spmm.dense_rows(True)
        sparse = random_layer(r, n_in, n_out, 1.0, empty_cols=[n_in - 1] if n_out == 1 else [])
        if n_out > 1:
            sparse = random_layer(r, n_in, n_out, 0.97)
        X = r.standard_normal((n_in, 64), dtype=np.float32)
        Z = np.empty((sparse.n_out, 64), np.float32)
        sparse.forward(X, Z)
        np.testing.assert_allclose(Z, sparse.to_scipy().T @ X + sparse.bias[:, None],
                                   rtol=1e-4, atol=1e-4)
    finally:
        spmm.dense_rows(old[0])
        spmm.row_specialisation(True)
        spmm.min_parallel_work(old[1])
    assert spmm.dense_rows() is True

def test_prefetch_distance_is_checked():
    with pytest.raises(ValueError, match="0..256"):
        spmm.prefetch_distance(-1)
    with pytest.raises(ValueError, match="0..256"):
        spmm.prefetch_distance(257)


@pytest.mark.parametrize("value, expect", [("8", "8"), ("abc", "SPARSE_MLP_PF_AHEAD='abc'")])
def test_prefetch_distance_from_environment(value, expect):
    import os
    import subprocess
    import sys
    env = dict(os.environ, SPARSE_MLP_PF_AHEAD=value)
    res = subprocess.run([sys.executable, "-c", "from sparse_mlp.kernels import spmm; "
                          "spmm.set_simd_level('scalar'); print(spmm.prefetch_distance())"],
                         env=env, capture_output=True, text=True)
    assert expect in (res.stdout + res.stderr)
    assert (res.returncode == 0) == value.isdigit()


@pytest.mark.parametrize("n_out, B", [(77, 37), (8, 128), (130, 32), (1, 5), (200, 130),
                                      (96, 16), (45, 7)])
def test_bias_gradient_is_the_plain_order_sum(simd, n_out, B):
    """The bias gradient of every kernel that computes one (weight_grad,
    weight_update, backward_update) is each row's sum in the order of a plain
    loop, bit for bit, whatever the number of rows in a block of the row-sum
    helper (smlp_row_sums: with AVX-512 32 rows at a time, a row per lane,
    then eight at a time, then the rest), and for batches that are and are
    not a multiple of 16."""
    rng = np.random.default_rng(n_out * 1000 + B)
    layer = random_layer(rng, 23, n_out, 0.3)
    X = rng.standard_normal((23, B)).astype(np.float32)
    D = (rng.standard_normal((n_out, B)) * 10.0 ** rng.integers(-3, 4, (n_out, B))
         ).astype(np.float32)
    scale = np.float32(1.0 / B)
    plain = np.cumsum(D, axis=1, dtype=np.float32)[:, -1]  # sequential, in float32
    _, bg = layer.gradient(X, D, scale=float(scale), n_threads=2)
    assert np.array_equal(bg, plain * scale)
    # the update kernels: v = mu v - lr g, from v = 0 and w = 0 with no decay -> w = -lr g
    lr = np.float32(0.5)
    for fused in (False, True):
        lay = random_layer(np.random.default_rng(7), 23, n_out, 0.3)
        lay.bias[:] = 0.0
        lay.bias_velocity[:] = 0.0
        if fused:
            G = np.empty((23, B), np.float32)
            lay.backward_update(X, D, G, float(lr), 0.0, 0.0, scale=float(scale), n_threads=2)
        else:
            lay.update(X, D, float(lr), 0.0, 0.0, scale=float(scale), n_threads=2)
        assert np.array_equal(lay.bias, np.float32(0.0) + (np.float32(0.0) - lr * (plain * scale)))


def test_activation_blocks_are_cache_line_aligned():
    """kernels.aligned_empty: 64-byte aligned, C-contiguous, the shape and
    dtype asked; the model's training and evaluation blocks use it."""
    from sparse_mlp.kernels import aligned_empty
    from sparse_mlp.model import SparseMLP

    for shape in [(7, 33), (1000, 128), 5]:
        a = aligned_empty(shape)
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.dtype == np.float32
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
    assert aligned_empty((0, 4)).shape == (0, 4)
    assert aligned_empty((3, 3), np.int64).dtype == np.int64
    m = SparseMLP([20, 30, 40, 3], 2.0, rng=np.random.default_rng(0))
    bufs = m._train_buffers(32)
    for arr in bufs["Z"] + bufs["A"] + list(m._eval_buffers(16).values())[1:]:
        assert arr.ctypes.data % 64 == 0


@pytest.mark.parametrize("kind, slope, rate", [(ACT_RELU, 0.0, 0.3), (ACT_LEAKY, 0.6, 0.3),
                                               (ACT_LEAKY, 0.6, 0.0), (ACT_IDENTITY, 0.0, 0.2)])
def test_kept_epilogue_bits_give_the_same_backward_bits(kind, slope, rate):
    """The dropout and sign masks the forward pass keeps (``bits=``) replace
    the backward epilogue's own hashing and z comparison: the gradient to the
    inputs, the weights and the momenta come out the same bit for bit, also
    for a block that starts inside its batch (b_offset) and a ragged width."""
    from sparse_mlp.activations import Activation

    r = np.random.default_rng(kind * 10 + int(rate * 10))
    B, b_offset = 37, 5
    below = random_layer(r, 30, 50, 0.2)  # produces Z_in (50, B) with the kept bits
    layer = random_layer(r, 50, 20, 0.3)
    X0 = r.standard_normal((30, B)).astype(np.float32)
    Zin = np.empty((50, B), np.float32)
    Ain = np.empty_like(Zin)
    bits = np.empty((50, spmm.epilogue_bits_words(B)), np.uint16)
    act = Activation("a", kind, slope=slope)
    kept = below.forward(X0, Zin, Ain, act=act, dropout=rate, key=9, b_offset=b_offset,
                         bits=bits)
    assert kept == (spmm.simd_level() == "avx512")
    # lean activation memory recomputes A from Z: from the kept bits or by
    # hashing again, on 1 and 2 threads, the forward pass's A bit for bit
    for threads in (1, 2):
        for use in (None, bits if kept else None):
            A2 = np.full_like(Zin, np.nan)
            K_act.activation_forward(Zin, A2, kind, slope, None, rate, 9, b_offset,
                                           threads, use)
            assert np.array_equal(A2, Ain)
    with pytest.raises(ValueError, match="activation_forward: bits must be"):
        K_act.activation_forward(Zin, Ain.copy(), kind, slope, None, rate, 9, b_offset,
                                       1, np.zeros((50, 1), np.uint16))
    D = r.standard_normal((20, B)).astype(np.float32)
    outs = []
    # (and with the delta written over the input activations, as the model does)
    for use, over_input in ((None, False), (bits if kept else None, False),
                            (bits if kept else None, True)):
        lay = random_layer(np.random.default_rng(1), 50, 20, 0.3)
        Z_in = Zin.copy()
        A_in = Ain.copy()
        G = A_in if over_input else Z_in
        lay.backward_update(A_in, D, G, 0.05, 0.9, 1e-3, Z_in=Z_in, act_in=act, dropout=rate,
                            key=9, b_offset=b_offset, bits=use)
        outs.append((G, lay.data.copy(), lay.velocity.copy()))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="bits must be"):
        below.forward(X0, Zin, Ain, act=act, dropout=rate, key=9, bits=bits[:10])
    with pytest.raises(ValueError, match="backward_update: bits must be"):
        layer.backward_update(Ain, D, Zin.copy(), 0.05, 0.9, 0.0, Z_in=Zin.copy(),
                              act_in=act, dropout=rate, key=9,
                              bits=np.zeros((50, 1), np.uint16))


@pytest.mark.parametrize("B", [7, 16, 37, 128, 300])
def test_forward_without_z_keeps_the_rest_and_the_backward_pass(simd, rng, B):
    """forward with ``keep_z=False``: where it keeps the epilogue bits
    (returns True, the AVX-512 path) Z's buffer is left as it was, and A, the
    bits and the backward pass that reads them (gradient to the inputs
    written into that buffer, weights, momenta) are bit for bit those of a
    forward that wrote Z; elsewhere Z is written as always.  1 and 2 threads,
    narrow batches (four rows at a time) and wide ones (chunks of 128)."""
    from sparse_mlp.activations import Activation

    below = random_layer(rng, 30, 50, 0.2)
    layer = random_layer(rng, 50, 20, 0.3, empty_rows=(3,), empty_cols=(4,))
    X0 = rng.standard_normal((30, B)).astype(np.float32)
    D = rng.standard_normal((20, B)).astype(np.float32)
    words = spmm.epilogue_bits_words(B)
    for act in (Activation("relu", ACT_RELU), Activation("allrelu", ACT_LEAKY, slope=-0.6)):
        for threads in (1, 2):
            outs = []
            for keep_z in (True, False):
                Z = np.full((50, B), np.nan, np.float32)
                A = np.empty_like(Z)
                bits = np.zeros((50, words), np.uint16)
                kept = below.forward(X0, Z, A, act=act, dropout=0.3, key=4, b_offset=2,
                                     n_threads=threads, bits=bits, keep_z=keep_z)
                assert kept == (simd == "avx512")
                assert np.isnan(Z).all() == (kept and not keep_z)
                lay = copy.deepcopy(layer)
                lay.backward_update(A, D, Z, 0.05, 0.9, 1e-3, Z_in=Z, act_in=act, dropout=0.3,
                                    key=4, b_offset=2, n_threads=threads,
                                    bits=bits if kept else None)
                outs.append((A, bits, Z, lay.data, lay.velocity, lay.bias))
            for a, b in zip(*outs):
                assert np.array_equal(a, b)  # (Z: the gradient to the inputs by now)
            assert not np.isnan(outs[1][2]).any()  # every row written, the empty one too
