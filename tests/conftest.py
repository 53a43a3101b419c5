"""Shared fixtures and helpers of the test suite."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from sparse_mlp.training import StopRequest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MADELON_DIR = Path(os.environ.get("SPARSE_MLP_MADELON_DIR", SHARED_DATA / "madelon"))


def madelon_available() -> bool:
    return (MADELON_DIR / "madelon_train.data").is_file()


needs_madelon = pytest.mark.skipif(
    not madelon_available(),
    reason=f"the UCI Madelon files are not in {MADELON_DIR} (CI has them in ../shared/data; "
           "set SPARSE_MLP_MADELON_DIR to run these tests elsewhere)")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def simd(request):
    """Run a test on each SIMD path this CPU supports (others are skipped)."""
    from sparse_mlp.kernels import spmm
    levels = ["scalar", "avx2", "avx512"]
    if levels.index(request.param) > levels.index(spmm.cpu_simd_level()):
        pytest.skip(f"this CPU has no {request.param}")
    spmm.set_simd_level(request.param)
    yield request.param
    spmm.set_simd_level("best")


@pytest.fixture
def every_call_split():
    """Kernel calls of any size use the threads asked for."""
    from sparse_mlp import kernels
    old = kernels.min_parallel_work()
    kernels.min_parallel_work(0)
    yield
    kernels.min_parallel_work(old)


def random_layer(rng, n_in, n_out, density, init="normal", empty_rows=(), empty_cols=()):
    """A SparseLayer with random structure; rows/cols listed are left empty."""
    from sparse_mlp.layers import SparseLayer
    m = rng.random((n_in, n_out)) < density
    m[:, list(empty_rows)] = False
    m[list(empty_cols), :] = False
    vals = rng.standard_normal((n_in, n_out)).astype(np.float32)
    import scipy.sparse as sp
    W = sp.csc_matrix(np.where(m, vals, 0.0).astype(np.float32))
    W.eliminate_zeros()
    layer = SparseLayer.from_scipy(W, init=init)
    layer.bias[:] = rng.standard_normal(n_out).astype(np.float32)
    layer.velocity[:] = rng.standard_normal(layer.nnz).astype(np.float32)
    return layer


def bias_paths(n_in: int, n_out: int, B: int, seed: int = 7):
    """A random layer, two deltas of different scale and the four kernel
    calls that compute or apply bias gradients, each as f(layer, D, threads)
    returning the biases' gradient or the updated biases: weight_grad,
    backward_update (gradients, update), weight_update.  For the bias-sum
    race test and results/bench_issue22/experiments_dec06e/bias_race.py."""
    r = np.random.default_rng(seed)
    base = random_layer(r, n_in, n_out, 0.05)
    X = r.standard_normal((n_in, B)).astype(np.float32)
    Ds = [r.standard_normal((n_out, B)).astype(np.float32) * s for s in (1.0, 100.0)]
    g = np.empty(base.nnz, np.float32)
    G = np.empty((n_in, B), np.float32)

    def weight_grad(lay, D, t):
        bg = np.empty(n_out, np.float32)
        lay.gradient(X, D, g, bg, scale=1.0, n_threads=t)
        return bg

    def backward_grads(lay, D, t):
        bg = np.empty(n_out, np.float32)
        lay.backward_update(X, D, G, 0.1, 0.9, 0.0, grads=(g, bg), scale=1.0, n_threads=t)
        return bg

    def backward_update(lay, D, t):
        lay.backward_update(X, D, G, 0.1, 0.9, 1e-3, n_threads=t)
        return lay.bias.copy()

    def weight_update(lay, D, t):
        lay.update(X, D, 0.1, 0.9, 1e-3, n_threads=t)
        return lay.bias.copy()

    return base, Ds, {"weight_grad": weight_grad, "backward_update (gradients)": backward_grads,
                      "backward_update": backward_update, "weight_update": weight_update}


def every_kernel(threads: int, B: int) -> list[np.ndarray]:
    """Every threaded kernel on a small layer: forward, gradient to the
    inputs, weight gradient, fused backward + update, update, gather,
    topology passes; their outputs."""
    from sparse_mlp.activations import ACT_RELU, Activation
    from sparse_mlp.kernels import spmm, topology
    r = np.random.default_rng(7)
    layer = random_layer(r, 120, 90, 0.05, empty_rows=[3], empty_cols=[5])
    X = r.standard_normal((120, B)).astype(np.float32)
    D = r.standard_normal((90, B)).astype(np.float32)
    act = Activation("relu", ACT_RELU)
    Z = np.empty((90, B), np.float32)
    A = np.empty_like(Z)
    layer.forward(X, Z, A, act=act, dropout=0.3, key=1, n_threads=threads)
    G = X.copy()
    layer.backward_input(D, G, G, act_in=act, dropout=0.3, key=2, n_threads=threads)
    g, bg = layer.gradient(X, D, n_threads=threads)
    G2 = X.copy()
    layer.backward_update(X, D, G2, 0.01, 0.9, 2e-4, Z_in=G2, act_in=act, dropout=0.3,
                          key=3, n_threads=threads)
    layer.update(X, D, 0.01, 0.9, 2e-4, n_threads=threads)
    Xs = r.standard_normal((50, 120)).astype(np.float32)
    xb = np.empty((120, B), np.float32)
    spmm.gather_columns(Xs, r.integers(0, 50, B), xb, n_threads=threads)
    imp = np.empty(90)
    topology.row_abs_sum(layer.indptr, layer.data, imp, n_threads=threads)
    return [Z, A, G, g, bg, G2, layer.data.copy(), layer.velocity.copy(), xb, imp]


class StopAfter(StopRequest):
    """A stop request raised after ``n`` polls (one poll per mini-batch, one
    per epoch end), as SIGUSR1 would."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    @property
    def requested(self) -> bool:
        self.left -= 1
        if self.left < 0:
            self.signum = signal.SIGUSR1
        return self.left < 0
