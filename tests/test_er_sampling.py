"""--er-sampling paper: the authors' 'normal' path (eps*(n_in+n_out) draws
with replacement, duplicates merged): expectation, the paper's totals, the
layer invariants."""

from __future__ import annotations

import numpy as np
import pytest

from sparse_mlp.config import TrainConfig
from sparse_mlp.errors import ConfigError
from sparse_mlp.initial_topology import initial_layers
from sparse_mlp.kernels import topology
from sparse_mlp.layers import SparseLayer, er_positions_paper, expected_nnz_paper


def test_nnz_is_draws_minus_expected_duplicates():
    # 40 x 30 at eps 10: k = 700 draws over N = 1200 positions
    N, k = 1200, 700
    want = N * (1 - (1 - 1 / N) ** k)
    assert expected_nnz_paper(40, 30, 10) == pytest.approx(want, rel=1e-12)
    got = [er_positions_paper(40, 30, 10, np.random.default_rng(s)).size for s in range(200)]
    # the count's sd is < sqrt(k); the mean of 200 within 4 standard errors
    assert abs(np.mean(got) - want) < 4 * np.sqrt(k) / np.sqrt(200)
    assert max(got) <= k and min(got) < k


@pytest.mark.parametrize("sizes, paper, tol", [
    ([500, 400, 100, 400, 2], 19_000, 150),         # Madelon, Table 2: 19,000 / 19,011
    ([28, 1000, 1000, 1000, 2], 50_205, 200),      # Higgs: 50,165 ... 50,246
])
def test_paper_totals_of_table2(sizes, paper, tol):
    layers = initial_layers(sizes, 10, "normal", np.random.default_rng(0), sampling="paper")
    total = sum(layer.nnz for layer in layers)
    expect = sum(expected_nnz_paper(a, b, 10) for a, b in zip(sizes[:-1], sizes[1:]))
    assert abs(total - paper) < tol and abs(expect - paper) < tol
    exact = initial_layers(sizes, 10, "normal", np.random.default_rng(0), sampling="exact")
    assert exact is None  # (SparseMLP draws the exact ER itself, as always)


def test_layer_invariants_and_values():
    rng = np.random.default_rng(3)
    layer = SparseLayer.erdos_renyi(400, 2, 10, "normal", rng, sampling="paper")  # k > N/2
    assert topology.check_csr(layer.indptr, layer.indices, layer.n_in) in ("", None)
    for j in range(layer.n_out):
        row = layer.indices[layer.indptr[j]:layer.indptr[j + 1]]
        assert np.all(np.diff(row) > 0)  # sorted, unique
    assert 780 < layer.nnz <= 800 and np.isfinite(layer.data).all()
    assert abs(float(layer.data.std()) - 0.1) < 0.01  # the 'normal' values, N(0, 1) / 10
    xl = SparseLayer.erdos_renyi(28, 1000, 10, "xavier", rng, sampling="paper")
    assert np.abs(xl.data).max() <= np.sqrt(6 / 1028)
    with pytest.raises(ConfigError, match="ER sampling"):
        SparseLayer.erdos_renyi(4, 4, 1, "normal", rng, sampling="bernoulli")


def test_config_and_the_models_built_with_it():
    from sparse_mlp.experiment import build_model
    from sparse_mlp.training import RandomStreams

    with pytest.raises(ConfigError, match="er-sampling"):
        TrainConfig(er_sampling="with-replacement").validate()
    cfg = TrainConfig(hidden=[400, 100, 400], epsilon=10, weight_init="normal",
                      er_sampling="paper", activation_memory="fast")
    model = build_model(cfg, 500, 2, RandomStreams(0))
    assert abs(model.nnz - 19_000) < 150
    again = build_model(cfg, 500, 2, RandomStreams(0))
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(model.layers, again.layers))
    default = build_model(cfg.replace(er_sampling="exact"), 500, 2, RandomStreams(0))
    assert default.nnz > 19_600  # the exact Binomial draw: ~19,800
