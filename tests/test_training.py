"""Model, trainer, experiment runner and CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import MADELON_DIR, needs_madelon

import run_experiment
from sparse_mlp.config import TrainConfig
from sparse_mlp.errors import ConfigError, DivergenceError, MemoryBudgetError
from sparse_mlp.experiment import build_model, run
from sparse_mlp.memory import check_fits, estimate
from sparse_mlp.model import SparseMLP
from sparse_mlp.training import RandomStreams, Trainer, ip_due

CENTERS = np.random.default_rng(77).standard_normal((3, 20)) * 0.6


def blobs(rng, n, centers=CENTERS):
    """Gaussian clusters around fixed centres (train and test share them)."""
    c, d = centers.shape
    y = rng.integers(0, c, n).astype(np.int32)
    X = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def small_cfg(**kw):
    base = dict(hidden=[40, 30], epsilon=5, activation="allrelu", alpha=0.5,
                weight_init="he_uniform", epochs=6, batch_size=16, lr=0.05, dropout=0.1,
                seed=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def make_trainer(cfg, rng=None, n=400):
    rng = rng or np.random.default_rng(0)
    X, y = blobs(rng, n)
    Xt, yt = blobs(np.random.default_rng(1), 200)
    streams = RandomStreams(cfg.seed)
    model = build_model(cfg, X.shape[1], 3, streams)
    return Trainer(cfg, model, X, y, Xt, yt, streams)


def test_training_learns_and_keeps_nnz():
    tr = make_trainer(small_cfg(epochs=8))
    nnz0 = tr.model.nnz
    st = tr.run(progress=False)
    h = st.history
    assert len(h) == 8
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert st.best_test_acc > 0.8
    assert all(r["nnz"] == nnz0 for r in h)  # SET alone keeps nnz
    assert h[-1]["evolution_s"] == 0.0        # no evolution after the last epoch


def test_importance_pruning_schedule():
    cfg = small_cfg(epochs=12, importance_pruning=True, ip_start=3, ip_every=2)
    assert [e for e in range(12) if ip_due(cfg, e)] == [4, 6, 8, 10]
    tr = make_trainer(cfg)
    nnz = [r["nnz"] for r in tr.run(progress=False).history]
    drops = [e for e in range(1, 12) if nnz[e] < nnz[e - 1]]
    assert drops == [4, 6, 8, 10]
    assert nnz[3] == nnz[0]


def test_training_is_deterministic_and_thread_independent():
    results = []
    for threads in (1, 2, 1):
        tr = make_trainer(small_cfg(threads=threads))
        st = tr.run(progress=False)
        results.append(([r["train_loss"] for r in st.history],
                        [lay.data.copy() for lay in tr.model.layers],
                        [lay.indices.copy() for lay in tr.model.layers]))
    for other in results[1:]:
        assert other[0] == results[0][0]
        for a, b in zip(other[1] + other[2], results[0][1] + results[0][2]):
            assert np.array_equal(a, b)


def test_srelu_trains_its_parameters():
    tr = make_trainer(small_cfg(activation="srelu", alpha=None, epochs=3))
    before = [a.params.copy() for a in tr.model.acts]
    tr.run(progress=False)
    assert any(not np.array_equal(b, a.params) for b, a in zip(before, tr.model.acts))


def test_divergence_is_reported():
    tr = make_trainer(small_cfg(lr=1e6, activation="relu", alpha=None, epochs=5))
    with pytest.raises(DivergenceError, match="Lower the learning rate"):
        tr.run(progress=False)


def test_batch_larger_than_dataset_is_refused():
    with pytest.raises(ConfigError, match="larger than the training set"):
        make_trainer(small_cfg(batch_size=1000), n=100)


def test_evaluate_predict_in_blocks(rng):
    m = SparseMLP([20, 30, 3], epsilon=5, activation="relu", rng=rng, n_threads=1)
    X, y = blobs(rng, 257)
    p_small = m.predict_proba(X, batch_size=50)
    p_big = m.predict_proba(X, batch_size=1024)
    np.testing.assert_allclose(p_small, p_big, rtol=1e-6)
    np.testing.assert_allclose(p_small.sum(1), 1, rtol=1e-5)
    assert np.array_equal(m.predict(X, batch_size=64), p_big.argmax(1))
    loss, acc = m.evaluate(X, y, batch_size=100)
    assert acc == pytest.approx((p_big.argmax(1) == y).mean())
    assert loss == pytest.approx(-np.log(p_big[np.arange(257), y]).mean(), rel=1e-5)
    with pytest.raises(ConfigError, match="expected data of shape"):
        m.predict(X[:, :5])


def test_train_eval_measures_without_dropout_and_changes_nothing():
    """--train-eval N: the loss and accuracy of the first N training samples
    without dropout, with the weights the test set sees; training itself
    (weights, topology, running losses) is bit-identical to a run without it."""
    cfg = small_cfg(epochs=3, dropout=0.3)
    plain = make_trainer(cfg)
    h0 = plain.run(progress=False).history
    tr = make_trainer(small_cfg(epochs=3, dropout=0.3, train_eval=150))
    h = tr.run(progress=False).history
    assert [r["train_loss"] for r in h] == [r["train_loss"] for r in h0]
    for a, b in zip(tr.model.layers, plain.model.layers):
        assert np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data)
    assert all("train_eval_loss" not in r for r in h0)
    # the last epoch is not followed by evolution: its figure is today's model's
    loss, acc = tr.model.evaluate(tr.X_train[:150], tr.y_train[:150])
    assert h[-1]["train_eval_loss"] == loss and h[-1]["train_eval_acc"] == acc
    assert h[-1]["train_eval_loss"] != h[-1]["train_loss"]  # no dropout, other samples
    # every epoch evaluated (eval_every 1) has one; with eval_every 2 only those evaluated
    tr2 = make_trainer(small_cfg(epochs=3, train_eval=10_000, eval_every=2))
    h2 = tr2.run(progress=False).history
    assert ["train_eval_loss" in r for r in h2] == [False, True, True]
    assert h2[-1]["train_eval_loss"] == tr2.model.evaluate(tr2.X_train, tr2.y_train)[0]
    with pytest.raises(ConfigError, match="--train-eval"):
        small_cfg(train_eval=-1).validate()


def test_evolution_regrows_at_zero_when_asked():
    """--regrow-init zero reaches SET in the trainer: the regrown weights of
    every hidden layer are 0; the output layer (never evolved) is untouched."""
    for regrow in ("init", "zero"):
        tr = make_trainer(small_cfg(regrow_init=regrow))
        before = [layer.data.copy() for layer in tr.model.layers]
        tr.evolve(0)
        for i, layer in enumerate(tr.model.layers[:-1]):
            n_zero = int((layer.data == 0).sum())
            assert (n_zero > 0.2 * layer.nnz) == (regrow == "zero"), (regrow, i, n_zero)
            assert n_zero == int((before[i] == 0).sum()) or regrow == "zero"
        assert np.array_equal(tr.model.layers[-1].data, before[-1])


def test_metrics_csv_continues_under_an_older_header(tmp_path):
    """A run resumed from before a column existed appends rows of the file's
    own shape (not rows one field longer than its header)."""
    from sparse_mlp.report import MetricsCSV
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss\n0,0.5\n")
    w = MetricsCSV(path, ["epoch", "train_loss", "train_eval_loss"], append=True)
    w({"epoch": 1, "train_loss": 0.25, "train_eval_loss": 0.125})
    w.close()
    assert list(csv.DictReader(open(path))) == [{"epoch": "0", "train_loss": "0.5"},
                                                 {"epoch": "1", "train_loss": "0.25"}]
    fresh = MetricsCSV(tmp_path / "new.csv", ["epoch", "train_eval_loss"], append=True)
    fresh({"epoch": 0, "train_eval_loss": 0.125})
    fresh.close()
    assert (tmp_path / "new.csv").read_text().splitlines() == ["epoch,train_eval_loss",
                                                               "0,0.125"]


def test_memory_estimate_refuses_with_a_batch_suggestion():
    sizes = [1000, 100_000, 100_000, 2]
    est = estimate(sizes, 10, 4096, n_samples=0)
    with pytest.raises(MemoryBudgetError, match=r"--batch-size \d+"):
        check_fits(est, sizes, 4096, available=est.total - est.train_batch // 2)
    check_fits(est, sizes, 4096, available=2 * est.total)


def test_config_validation_lists_every_problem():
    with pytest.raises(ConfigError) as e:
        TrainConfig(epochs=0, dropout=1.5, hidden=[]).validate()
    msg = str(e.value)
    assert "--epochs" in msg and "--dropout" in msg and "--hidden" in msg


def test_run_writes_every_result(tmp_path):
    from sparse_mlp.datasets import Dataset
    rng = np.random.default_rng(0)
    X, y = blobs(rng, 300)
    Xt, yt = blobs(rng, 100)
    data = Dataset("blobs", X, y, Xt, yt, [0, 1, 2], {"source": "test"})
    cfg = small_cfg(epochs=3, out=str(tmp_path / "r"), post_prune=[10, 50])
    s = run(cfg, data=data, progress=False)
    out = tmp_path / "r"
    cfg_saved = json.loads((out / "config.json").read_text())
    assert cfg_saved["hidden"] == [40, 30] and cfg_saved["threads"] == 1
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 3 and set(rows[0]) == {
        "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "nnz", "train_s",
        "test_s", "evolution_s", "train_eval_loss", "train_eval_acc", "train_eval_s"}
    assert rows[0]["train_eval_loss"] == ""  # --train-eval off: the columns stay blank
    summ = json.loads((out / "summary.json").read_text())
    for key in ("best_test_acc", "best_epoch", "final_test_acc", "nnz_start", "nnz_end",
                "train_s", "test_s", "evolution_s", "peak_rss_bytes", "versions", "threads"):
        assert key in summ
    assert (out / "learning_curves.png").stat().st_size > 1000
    pp = s["post_pruning"]
    assert [r["percentile"] for r in pp] == [0, 10, 50]
    assert pp[0]["nnz"] > pp[1]["nnz"] > pp[2]["nnz"]
    assert (out / "post_pruning.csv").exists()


def test_cli_demo_dataset_runs(tmp_path, capsys):
    rc = run_experiment.main(["--epochs", "2", "--hidden", "64,64", "--out",
                              str(tmp_path / "demo"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "best test accuracy" in out and str(tmp_path / "demo") in out
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--activation", "relu", "--alpha", "0.3"], "--alpha has no effect"),
    (["--ip-start", "10"], "need --importance-pruning"),
    (["--no-evolution", "--zeta", "0.2"], "--zeta has no effect"),
    (["--n-features", "10"], "only apply to --dataset synthetic"),
    (["--dropout", "1.2"], "--dropout must be in"),
    (["--epsilon", "-1"], "--epsilon must be positive"),
])
def test_cli_contradictions_fail_clearly(argv, message, capsys):
    assert run_experiment.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_unknown_flag(capsys):
    with pytest.raises(SystemExit) as e:
        run_experiment.main(["--learning-rate", "0.1"])
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_cli_help_documents_defaults(capsys):
    with pytest.raises(SystemExit):
        run_experiment.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--hidden", "--epsilon", "--lr", "--batch-size", "--epochs", "--activation",
                 "--alpha", "--importance-pruning", "--ip-start", "--ip-every",
                 "--ip-percentile", "--dropout", "--zeta", "--weight-decay", "--momentum",
                 "--weight-init", "--seed", "--threads", "--out", "--data-dir"):
        assert flag in text
    assert "madelon" in text and "default" in text


@needs_madelon
def test_madelon_preset_learns(tmp_path):
    """60 epochs of the paper's Madelon preset clear chance (50%) by a wide margin."""
    rc = run_experiment.main(["--dataset", "madelon", "--data-dir", str(MADELON_DIR),
                              "--epochs", "60", "--out", str(tmp_path / "m"),
                              "--no-progress", "--quiet"])
    assert rc == 0
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert s["architecture"] == "500-400-100-400-2"
    assert s["best_test_acc"] > 0.6


def test_reproduce_table2_runs_rows_and_resumes(tmp_path):
    from sparse_mlp.datasets import Dataset
    from sparse_mlp.reproduce import TABLE2_ROWS, run_rows, table2_rows, write_table2
    rng = np.random.default_rng(0)
    X, y = blobs(rng, 200)
    Xt, yt = blobs(rng, 60)
    data = Dataset("blobs", X, y, Xt, yt, [0, 1, 2], {})
    base = small_cfg(epochs=4, importance_pruning=False, ip_start=1, ip_every=1)
    res = run_rows(base, TABLE2_ROWS, 2, tmp_path, data=data)
    assert [len(v) for v in res.values()] == [2, 2, 2, 2]
    ip_row = res["allrelu_ip"][0]
    assert ip_row["nnz_end"] < ip_row["nnz_start"]            # pruning happened
    assert res["allrelu"][0]["nnz_end"] == res["allrelu"][0]["nnz_start"]
    assert res["relu"][0]["alpha"] is None
    text = write_table2("madelon", table2_rows("madelon", res), tmp_path, 4)
    assert "| SET-MLP All-ReLU + IP |" in text and "77.00" in text
    # a second call reuses every finished run (nothing retrained)
    stamp = (tmp_path / "relu" / "seed0" / "summary.json").stat().st_mtime_ns
    run_rows(base, TABLE2_ROWS, 2, tmp_path, data=data)
    assert (tmp_path / "relu" / "seed0" / "summary.json").stat().st_mtime_ns == stamp
