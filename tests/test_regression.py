"""Regression (issue 18): the linear + squared-error output kernel against
NumPy and finite differences, regression data, the CLI's --task regression
(metrics, best epoch by R^2, resume, refusals) and SparseMLPRegressor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparse_mlp import SparseMLPRegressor
from sparse_mlp import reference as ref
from sparse_mlp.config import TrainConfig
from sparse_mlp.datasets import load_dataset
from sparse_mlp.errors import ConfigError, DatasetError
from sparse_mlp.kernels import activation as K
from sparse_mlp.model import SparseMLP, regression_scores


def test_linear_mse_matches_numpy_and_threads():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((3, 41)).astype(np.float32)
    T = rng.standard_normal((41, 3)).astype(np.float32)
    loss_ref, d_ref = ref.linear_mse(Z.T.astype(np.float64), T.astype(np.float64))
    D1, D2 = Z.copy(), Z.copy()
    l1, c = K.linear_mse(D1, T, True, n_threads=1)
    l2, _ = K.linear_mse(D2, T, True, n_threads=2)
    assert c == 0 and l1 == l2 and l1 / 41 == pytest.approx(loss_ref, rel=1e-6)
    np.testing.assert_array_equal(D1, D2)
    np.testing.assert_allclose(D1.T, d_ref, atol=1e-6)
    P = Z.copy()
    K.linear_mse(P, T, False)
    np.testing.assert_array_equal(P, Z)                   # outputs left as they are
    with pytest.raises(ValueError, match="targets"):
        K.linear_mse(Z.copy(), np.ascontiguousarray(T[:, :2]), True)


def test_linear_output_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    sizes = [12, 10, 9, 2]
    model = SparseMLP(sizes, epsilon=3, activation="allrelu", alpha=0.6, output="linear",
                      dropout=0.0, rng=rng, n_threads=1)
    B = 16
    X = rng.standard_normal((B, sizes[0]))
    Y = rng.standard_normal((B, 2)).astype(np.float32)
    loss32, grads, _ = model.gradients(np.ascontiguousarray(X.T, np.float32), Y,
                                       model.dropout_keys(0, 0))
    Ws = [ref.dense(lay) for lay in model.layers]
    bs = [lay.bias.astype(np.float64) for lay in model.layers]
    Xd = X.astype(np.float32).astype(np.float64)

    def loss_fn():
        return ref.mlp_loss(Ws, bs, model.acts, Xd, Y.astype(np.float64), "linear")

    assert loss32 == pytest.approx(loss_fn(), rel=1e-5)
    h = 1e-6
    for li, lay in enumerate(model.layers):
        g, _ = grads[li]
        rows = np.repeat(np.arange(lay.n_out), lay.row_lengths())
        for k in rng.choice(lay.nnz, size=min(8, lay.nnz), replace=False):
            i, j = lay.indices[k], rows[k]
            Ws[li][i, j] += h
            up = loss_fn()
            Ws[li][i, j] -= 2 * h
            down = loss_fn()
            Ws[li][i, j] += h
            assert g[k] == pytest.approx((up - down) / (2 * h), rel=2e-3, abs=1e-5)


def test_regression_scores_are_sklearns():
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
    rng = np.random.default_rng(0)
    Y, P = rng.standard_normal((50, 2)), rng.standard_normal((50, 2))
    s = regression_scores(Y, P)
    assert s["r2"] == pytest.approx(r2_score(Y, P))
    assert s["rmse"] == pytest.approx(root_mean_squared_error(Y, P))
    assert s["mae"] == pytest.approx(mean_absolute_error(Y, P))
    assert regression_scores(Y, P, target_std=3.0)["mae"] == pytest.approx(3 * s["mae"])


@pytest.fixture
def csv_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6))
    y = 50 + 10 * (np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * X[:, 3])
    path = tmp_path / "reg.csv"
    np.savetxt(path, np.c_[X, y], delimiter=",", comments="",
               header=",".join([f"f{i}" for i in range(6)] + ["price"]))
    return path


def test_regression_data(csv_file, tmp_path):
    d = load_dataset(str(csv_file), task="regression", seed=3)
    assert d.task == "regression" and d.n_targets == 1 == d.n_classes and d.classes == []
    assert d.y_train.dtype == np.float32 and d.y_train.ndim == 1
    assert abs(d.y_train.mean()) < 1e-5 and d.y_train.std() == pytest.approx(1.0, abs=1e-5)
    assert d.target_mean[0] == pytest.approx(50, abs=2) and "shuffle split" in d.info["split"]
    assert d.preprocessing.target_std[0] == d.target_std[0]
    again = load_dataset(str(csv_file), task="regression", seed=3)
    np.testing.assert_array_equal(d.y_test, again.y_test)     # seeded
    other = load_dataset(str(csv_file), task="regression", seed=4)
    assert not np.array_equal(d.y_test, other.y_test)
    rng = np.random.default_rng(1)
    npz = tmp_path / "multi.npz"
    np.savez(npz, X=rng.standard_normal((40, 3)), y=rng.standard_normal((40, 2)))
    m = load_dataset(str(npz), task="regression")
    assert m.n_targets == 2 and m.y_train.shape[1] == 2
    text = tmp_path / "text.csv"
    text.write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n")
    with pytest.raises(DatasetError, match="numeric label column"):
        load_dataset(str(text), task="regression")
    with pytest.raises(ConfigError, match="classification dataset"):
        load_dataset("digits", task="regression")


def _cli(args, tmp_path):
    import run_experiment
    return run_experiment.main([*map(str, args), "--no-progress", "--quiet"])


def test_cli_task_regression(csv_file, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--dataset", csv_file, "--task", "regression", "--hidden", "64,32", "--epsilon",
            "8", "--batch-size", "16", "--lr", "0.005", "--dropout", "0.0", "--activation",
            "relu", "--threads", "1", "--out", out, "--importance-pruning", "--ip-start", "2",
            "--ip-every", "2"]
    assert _cli([*base, "--epochs", "6"], tmp_path) == 0
    import csv as csvmod
    rows = list(csvmod.DictReader(open(out / "metrics.csv")))
    assert {"test_r2", "test_rmse", "test_mae"} <= set(rows[0])
    assert rows[0]["test_acc"] == "" and rows[0]["train_acc"] == ""
    r2 = [float(r["test_r2"]) for r in rows]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "regression" and summary["best_epoch"] == int(np.argmax(r2))
    assert summary["best_test_r2"] == pytest.approx(max(r2), abs=1e-5) and max(r2) > 0.1
    assert summary["nnz_end"] < summary["nnz_start"]          # Importance Pruning works
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == "regression" and cfg["output"] == "linear"
    assert cfg["data"]["target_std"][0] > 1
    # RMSE is in the target's units: R^2 = 1 - RMSE^2 / var(y_test)
    d = load_dataset(str(csv_file), task="regression")
    var = float((d.y_test.astype(np.float64) * d.target_std[0]).var())
    last = rows[-1]
    assert float(last["test_r2"]) == pytest.approx(1 - float(last["test_rmse"]) ** 2 / var,
                                                   abs=1e-3)
    # exact resume
    assert _cli([*base, "--epochs", "8", "--resume", "auto"], tmp_path) == 0
    assert len(list(csvmod.DictReader(open(out / "metrics.csv")))) == 8
    capsys.readouterr()
    # refusals: a paper preset, the dense and parallel pipelines, class weights
    assert _cli(["--dataset", "digits", "--task", "regression", "--epochs", "1"], tmp_path) == 2
    assert "classification dataset" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="drop --output softmax"):
        TrainConfig(task="regression").validate()
    with pytest.raises(ConfigError, match="--class-weight"):
        TrainConfig(task="regression", output="linear", class_weight="balanced").validate()
    from sparse_mlp.run import check_supported
    for pipeline in ("dense", "parallel"):
        with pytest.raises(ConfigError, match="--task regression"):
            check_supported(TrainConfig(task="regression", output="linear",
                                        parallel="wasap" if pipeline == "parallel" else None),
                            pipeline)


def test_regressor_learns_and_is_deterministic():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((800, 5))
    y = 100 + 20 * (np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - X[:, 2])
    kw = dict(hidden_layer_sizes=(128, 64), max_iter=40, random_state=0, dropout=0.0,
              learning_rate_init=0.003)
    a = SparseMLPRegressor(n_threads=1, **kw).fit(X[:600], y[:600])
    assert a.score(X[600:], y[600:]) > 0.7
    assert abs(a.predict(X[600:]).mean() - y[600:].mean()) < 5     # mapped back to y's units
    b = SparseMLPRegressor(n_threads=2, **kw).fit(X[:600], y[:600])
    np.testing.assert_array_equal(a.predict(X[600:]), b.predict(X[600:]))
    multi = SparseMLPRegressor(max_iter=2, random_state=0).fit(X, np.c_[y, -y])
    assert multi.predict(X[:7]).shape == (7, 2) and multi.n_outputs_ == 2
    ip = SparseMLPRegressor(max_iter=5, random_state=0, importance_pruning=True, ip_start=0,
                            ip_every=1).fit(X, y)
    assert ip.model_.nnz < SparseMLPRegressor(max_iter=5, random_state=0).fit(X, y).model_.nnz
    es = SparseMLPRegressor(max_iter=200, early_stopping=True, n_iter_no_change=5,
                            random_state=0, **{k: v for k, v in kw.items()
                                               if k not in ("max_iter", "random_state")})
    es.fit(X[:600], y[:600])
    assert es.n_iter_ < 200 and es.best_validation_score_ == max(es.validation_scores_)
