"""Reproduction of the paper's tables: the dense twin, diagnostics, tables,
figures, resuming, the SLURM wiring."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from test_training import blobs, make_trainer, small_cfg

import run_experiment
import sparse_mlp.dense as dense_mod
from sparse_mlp import figures, reproduce
from sparse_mlp.checkpoint import list_checkpoints, load_checkpoint
from sparse_mlp.datasets import Dataset
from sparse_mlp.dense import (
    DenseMLP,
    check_dense_fits,
    dense_config,
    dense_weights,
)
from sparse_mlp.errors import ConfigError, MemoryBudgetError
from sparse_mlp.experiment import run_dense
from sparse_mlp.layers import SparseLayer
from sparse_mlp.model import SparseMLP
from sparse_mlp.reproduce import table2 as table2_mod
from sparse_mlp.reproduce import table3 as table3_mod
from sparse_mlp.training import PreemptedError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X, y = blobs(rng, 160)
    Xt, yt = blobs(rng, 60)
    return Dataset("blobs", X, y, Xt, yt, [0, 1, 2], {"source": "test"})


@pytest.fixture
def no_run_plots(monkeypatch):
    """The per-run learning-curve PNG costs most of a tiny run's time: off in
    every module that looks the plotting function up (the run owner,
    ``sparse_mlp.run``, where there is one; ``experiment`` before it)."""
    import importlib

    for name in ("sparse_mlp.experiment", "sparse_mlp.report", "sparse_mlp.run"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "plot_learning_curves"):
            monkeypatch.setattr(mod, "plot_learning_curves", lambda *a, **k: None)


def sparse_twin(d: DenseMLP) -> SparseMLP:
    """A fully connected SparseMLP holding the dense model's weights."""
    layers = []
    for lay in d.layers:
        s = SparseLayer.from_scipy(sp.csc_matrix(lay.W.T.copy()), init=lay.init,
                                   bias=lay.bias)
        layers.append(s)
    return SparseMLP(d.sizes, epsilon=1e9, activation=d.activation, alpha=d.alpha, init=d.init,
                     dropout=d.dropout, layers=layers, activations=copy.deepcopy(d.acts),
                     n_threads=1)


# ----------------------------------------------------------------------------- dense
@pytest.mark.parametrize("activation, alpha", [("relu", None), ("allrelu", 0.5),
                                               ("srelu", None), ("tanh", None)])
def test_dense_steps_match_a_fully_connected_sparse_model(activation, alpha, rng):
    """Same dropout bits, activations, loss and update: a dense model and a fully
    connected sparse one with the same weights take the same steps (up to
    float summation order)."""
    d = DenseMLP([12, 9, 7, 3], activation, alpha, "xavier", dropout=0.3,
                 rng=np.random.default_rng(1), n_threads=1)
    for lay in d.layers:
        lay.bias[:] = rng.standard_normal(lay.n_out)
    s = sparse_twin(d)
    X = rng.standard_normal((12, 16)).astype(np.float32)
    y = rng.integers(0, 3, 16).astype(np.int32)
    for step in range(6):
        keys = d.dropout_keys(3, step)
        ld, cd = d.train_step(X, y, 0.1, 0.9, 2e-4, keys)
        ls, cs = s.train_step(X, y, 0.1, 0.9, 2e-4, keys)
        assert ld == pytest.approx(ls, rel=1e-5) and cd == cs
    for dl, sl in zip(d.layers, s.layers):
        np.testing.assert_allclose(dl.W, sl.to_scipy().toarray().T, atol=2e-6)
        np.testing.assert_allclose(dl.velocity.reshape(dl.W.shape),
                                   sp.csc_matrix((sl.velocity, sl.indices, sl.indptr),
                                                 shape=sl.shape).toarray().T, atol=2e-6)
        np.testing.assert_allclose(dl.bias, sl.bias, atol=2e-6)
    Xe = rng.standard_normal((40, 12)).astype(np.float32)
    ye = rng.integers(0, 3, 40).astype(np.int32)
    for a, b in zip(d.evaluate(Xe, ye, 16), s.evaluate(Xe, ye, 16)):
        assert a == pytest.approx(b, rel=1e-5)


def test_dense_micro_batches_and_gradients(rng):
    d = DenseMLP([10, 8, 3], "allrelu", 0.6, "he_uniform", dropout=0.3, rng=rng, n_threads=1)
    X = rng.standard_normal((10, 12)).astype(np.float32)
    y = rng.integers(0, 3, 12).astype(np.int32)
    keys = d.dropout_keys(5, 7)
    W0 = [lay.W.copy() for lay in d.layers]
    loss, grads, _ = d.gradients(X, y, keys)
    loss_mb, grads_mb, _ = d.gradients(X, y, keys, micro_batch=4)
    assert all(np.array_equal(w, lay.W) for w, lay in zip(W0, d.layers))  # nothing updated
    assert loss == pytest.approx(loss_mb, rel=1e-6)
    for (g, bg), (g2, bg2) in zip(grads, grads_mb):
        np.testing.assert_allclose(g, g2, atol=1e-6)
        np.testing.assert_allclose(bg, bg2, atol=1e-6)
    # the gradient is the loss's: a finite-difference check (smooth tanh, no dropout)
    d = DenseMLP([10, 8, 3], "tanh", None, "he_uniform", dropout=0.0, rng=rng, n_threads=1)
    _, grads, _ = d.gradients(X, y, keys)
    for li, k in ((0, 13), (1, 5)):
        lay, h = d.layers[li], 1e-3
        base = lay.data[k]
        lay.data[k] = base + h
        up = d.evaluate(X.T, y, 12)[0]
        lay.data[k] = base - h
        down = d.evaluate(X.T, y, 12)[0]
        lay.data[k] = base
        assert grads[li][0][k] == pytest.approx((up - down) / (2 * h), rel=1e-2, abs=2e-4)


def test_dense_memory_is_estimated_and_refused():
    leukemia = [54_675, 27_500, 27_500, 18]
    # the paper's Table 2 count (2,260,362,518) is these weights plus the biases
    assert dense_weights(leukemia) + sum(leukemia[1:]) == 2_260_362_518
    with pytest.raises(MemoryBudgetError, match=r"memory error: the dense 54675-27500-27500-18 "
                                                r"MLP has 2,260,307,500 weights"):
        check_dense_fits(leukemia, 5, available=24 * 2**30)
    est = check_dense_fits([500, 400, 100, 400, 2], 32, available=24 * 2**30)
    assert 3e6 < est.total < 2e7  # 280,800 weights x 12 bytes + activations


def test_run_dense_resumes_exactly_after_preemption(tmp_path, data, monkeypatch, no_run_plots):
    """SIGTERM mid-epoch -> checkpoint -> PreemptedError; the resumed run ends
    bit-identical to one that was never stopped."""
    cfg = dense_config(small_cfg(epochs=3, diagnostics=True))
    straight = run_dense(cfg.replace(out=str(tmp_path / "a")), data=data, progress=False)

    import sparse_mlp.run as run_mod
    import sparse_mlp.training as training

    class StopAfter(training.StopRequest):
        polls = 0

        @property
        def requested(self):
            StopAfter.polls += 1
            return StopAfter.polls == 14  # mid-epoch 2 (10 batches + 1 poll per epoch)

    monkeypatch.setattr(run_mod, "StopRequest", StopAfter)  # (the run owner makes it)
    with pytest.raises(PreemptedError, match="--resume auto"):
        run_dense(cfg.replace(out=str(tmp_path / "b")), data=data, progress=False)
    monkeypatch.setattr(run_mod, "StopRequest", StopAfter.__mro__[1])
    resumed = run_dense(cfg.replace(out=str(tmp_path / "b")), data=data, progress=False,
                        resume="auto")
    assert resumed["sessions"] == 2 and resumed["resumed_from"]
    for k in ("best_test_acc", "final_test_loss", "final_train_loss"):
        assert resumed[k] == straight[k]
    a, b = (load_checkpoint(list_checkpoints(p / "checkpoints")[-1])
            for p in (tmp_path / "a", tmp_path / "b"))
    assert a.kind == b.kind == "dense"
    for la, lb in zip(a.model.layers, b.model.layers):
        assert np.array_equal(la.W, lb.W) and np.array_equal(la.velocity, lb.velocity)
    da, db = (json.loads((tmp_path / p / "diagnostics.json").read_text()) for p in "ab")
    assert da["grad_flow"] == db["grad_flow"] and da["in_degree"] == [None] * 3


# ----------------------------------------------------------------------------- diagnostics
def test_diagnostics_leave_training_unchanged_and_measure_the_gradient():
    runs = []
    for diag in (False, True):
        tr = make_trainer(small_cfg(epochs=4, diagnostics=diag, importance_pruning=True,
                                    ip_start=1, ip_every=2))
        st = tr.run(progress=False)
        runs.append((tr, st))
    (t0, s0), (t1, s1) = runs
    keys = ("train_loss", "test_acc", "nnz")
    assert [[r[k] for k in keys] for r in s0.history] == [[r[k] for k in keys]
                                                          for r in s1.history]
    for a, b in zip(t0.model.layers, t1.model.layers):
        assert np.array_equal(a.data, b.data) and np.array_equal(a.indices, b.indices)
    assert "grad_flow" not in s0.history[-1]
    last = s1.history[-1]
    assert sum(last["nnz_layers"]) == last["nnz"]
    assert sum(last["in_degree"]) == last["nnz_layers"][0]
    assert len(last["in_degree"]) == t1.model.sizes[0]
    # the same number, computed by hand: all gradients on the fixed batch, no dropout
    xg, yg = t1._gf_batch
    m = t1.model
    rate, m.dropout = m.dropout, 0.0
    _, grads, _ = m.gradients(xg, yg, m.dropout_keys(0, 0))
    m.dropout = rate
    by_hand = sum(float((g.astype(float) ** 2).sum() + (bg.astype(float) ** 2).sum())
                  for g, bg in grads)
    assert t1.gradient_flow()["grad_flow"] == pytest.approx(by_hand, rel=1e-4)
    assert by_hand > 0


# ----------------------------------------------------------------------------- Table 2
def test_table2_runs_dense_rows_reports_memory_errors_and_resumes(tmp_path, data, monkeypatch,
                                                                  no_run_plots):
    base = small_cfg(epochs=3, diagnostics=True)
    rows = (("allrelu_ip", "allrelu", True), *reproduce.DENSE_ROWS)
    # the dense rows do not fit: reported as a memory error, the sparse row runs
    available = dense_mod.available_bytes
    monkeypatch.setattr(dense_mod, "available_bytes", lambda: 1000)
    res = reproduce.run_rows(base.replace(ip_start=0, ip_every=1), rows, 2, tmp_path, data=data)
    assert res["dense_relu"][0]["failed"] == "memory error"
    assert not (tmp_path / "dense_relu" / "seed0" / "summary.json").exists()
    monkeypatch.setattr(dense_mod, "available_bytes", available)
    text = reproduce.write_table2("madelon", reproduce.table2_rows("madelon", res), tmp_path, 3)
    assert "| Dense MLP ReLU | memory error | 59.66 |" in text
    assert "| SET-MLP All-ReLU + IP |" in text and "extrapolated" in text
    # now with memory: the dense rows run, the finished sparse runs are reused
    stamp = (tmp_path / "allrelu_ip" / "seed0" / "summary.json").stat().st_mtime_ns
    res = reproduce.run_rows(base.replace(ip_start=0, ip_every=1), rows, 2, tmp_path, data=data)
    assert (tmp_path / "allrelu_ip" / "seed0" / "summary.json").stat().st_mtime_ns == stamp
    dense = res["dense_allrelu"][0]
    assert dense["model"] == "dense" and dense["nnz_start"] == 20 * 40 + 40 * 30 + 30 * 3
    assert dense["alpha"] == 0.5 and dense["best_test_acc"] > 0.5
    cfg = json.loads((tmp_path / "dense_allrelu" / "seed0" / "config.json").read_text())
    assert cfg["weight_init"] == reproduce.DENSE_INIT and cfg["evolution"] is False
    rows_ = reproduce.table2_rows("madelon", res)
    assert [r["row"] for r in rows_] == ["All-ReLU + IP", "ReLU", "All-ReLU"]
    assert rows_[0]["end_nnz"] < rows_[0]["start_nnz"]
    assert rows_[1]["start_nnz"] == rows_[1]["end_nnz"] == 2090
    # a finished run of another length is never mixed in
    with pytest.raises(ConfigError, match="finished 3-epoch run"):
        reproduce.run_rows(base.replace(epochs=4), rows[:1], 1, tmp_path, data=data)
    # nor one made with another --er-sampling (a table does not mix the two)
    with pytest.raises(ConfigError, match="--er-sampling exact, but this reproduction asks "
                                          "for --er-sampling paper"):
        reproduce.run_rows(base.replace(er_sampling="paper"), rows[:1], 1, tmp_path, data=data)


def test_table2_er_sampling_paper_reaches_the_sparse_rows_only(tmp_path, data, no_run_plots):
    base = small_cfg(epochs=1, er_sampling="paper")
    sparse = reproduce._row_config(base, "relu", False, 0, tmp_path / "s", "relu")
    dense = reproduce._row_config(base, "relu", False, 0, tmp_path / "d", "dense_relu")
    assert sparse.er_sampling == "paper" and dense.er_sampling == "exact"
    got = reproduce.run_rows(base, (("relu", "relu", False),), 1, tmp_path, data=data)
    cfg = json.loads((tmp_path / "relu" / "seed0" / "config.json").read_text())
    assert cfg["er_sampling"] == "paper" and got["relu"][0]["nnz_start"] > 0


def test_table2_continues_an_unfinished_run_from_its_checkpoint(tmp_path, data, no_run_plots):
    base = small_cfg(epochs=4, checkpoint_every=1)
    rows = (("relu", "relu", False),)
    first = reproduce.run_rows(base, rows, 1, tmp_path, data=data)["relu"][0]
    run_dir = tmp_path / "relu" / "seed0"
    # as if killed after epoch 3: no summary, no final checkpoint
    (run_dir / "summary.json").unlink()
    for f in (run_dir / "checkpoints").glob("ckpt_e000004_*.h5"):
        f.unlink()
    again = reproduce.run_rows(base, rows, 1, tmp_path, data=data)["relu"][0]
    assert again["sessions"] == 2 and again["resumed_from"][0].endswith(".h5")
    assert again["best_test_acc"] == first["best_test_acc"]
    assert again["final_test_loss"] == first["final_test_loss"]
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 5


def test_table2_partial_runs_write_the_table_from_finished_runs(tmp_path, data, monkeypatch,
                                                               no_run_plots):
    # reproduce_table2 looks table2_base up in its own module, sparse_mlp.reproduce.table2
    monkeypatch.setattr(table2_mod, "table2_base",
                        lambda *a, **k: small_cfg(epochs=2, preset="madelon"))
    text = reproduce.reproduce_table2("madelon", seeds=3, out=tmp_path, rows=["relu"],
                                      only_seed=1, data=data)
    assert (tmp_path / "relu" / "seed1" / "summary.json").exists()
    assert not (tmp_path / "relu" / "seed0").exists()
    assert "1 seeds" in text and "| SET-MLP ReLU |" in text and "All-ReLU" not in text
    assert not list(tmp_path.glob("fig_*.png"))  # figures only once every run is done
    with pytest.raises(ConfigError, match="unknown Table 2 rows"):
        reproduce.reproduce_table2("madelon", out=tmp_path, rows=["gelu"], data=data)


def test_table2_synthetic_shape_config():
    base = reproduce.table2_base("cifar10", epochs=2, synthetic=True)
    assert (base.dataset, base.n_features, base.n_classes, base.n_train, base.n_test) == (
        "synthetic", 3072, 10, 50_000, 10_000)
    assert base.hidden == [4000, 1000, 4000] and base.epsilon == 20 and base.epochs == 2
    cfg = reproduce._row_config(base, "allrelu", False, 0, Path("x"), "dense_allrelu")
    assert cfg.alpha == 0.25 and cfg.weight_init == "xavier"
    assert reproduce._row_config(base, "allrelu", False, 0, Path("x"), "allrelu").alpha == 0.75
    with pytest.raises(ConfigError, match="Table 2 covers"):
        reproduce.table2_base("digits")


def test_minutes_are_extrapolated_to_500_epochs():
    s = {"epochs": 5, "train_s": 50.0, "evolution_s": 4.0}
    assert reproduce._minutes_500(s) == pytest.approx((10 * 500 + 1 * 499) / 60)
    assert reproduce._minutes_500({**s, "epochs": 500}) == pytest.approx(54 / 60)


# ----------------------------------------------------------------------------- Table 6
def test_table6_prunes_the_final_models_without_retraining(tmp_path, data, no_run_plots):
    base = small_cfg(epochs=3)
    reproduce.run_rows(base, (("allrelu", "allrelu", False),), 2, tmp_path, data=data)
    metrics = tmp_path / "allrelu" / "seed0" / "metrics.csv"
    stamp = metrics.stat().st_mtime_ns
    summaries = reproduce.post_prune_rows(base, 2, tmp_path, (10, 50), data=data)
    assert metrics.stat().st_mtime_ns == stamp  # pruned from the checkpoint, not retrained
    for s in summaries:
        pp = s["post_pruning"]
        assert [r["percentile"] for r in pp] == [0, 10.0, 50.0]
        assert pp[0]["nnz"] == s["nnz_end"] > pp[1]["nnz"] > pp[2]["nnz"]
        saved = json.loads((Path(s["out"]) / "summary.json").read_text())
        assert saved["post_pruning"] == pp
    text = reproduce.write_table6("madelon", summaries, tmp_path, 3, (10, 50))
    assert "| 10th percentile |" in text and "| 50th percentile |" in text
    assert "72.00" in text  # the paper's 10th-percentile figure for Madelon
    # a finished run without its checkpoint cannot be pruned: said clearly
    for f in (tmp_path / "allrelu" / "seed1" / "checkpoints").glob("*.h5"):
        f.unlink()
    with pytest.raises(ConfigError, match="not its final checkpoint"):
        reproduce.post_prune_rows(base, 2, tmp_path, (5,), data=data)


# ----------------------------------------------------------------------------- Table 4
def test_table4_tiny_widths_run_in_process_and_report(tmp_path, no_run_plots):
    archs = ["65536-0.5M-0.5M-2", "65536-5Mx4-2"]
    text = reproduce.reproduce_table4(tmp_path, epochs=2, threads=1, width_scale=2e-5,
                                      n_features=24, n_samples=400, archs=archs, isolate=False)
    rows = list(__import__("csv").DictReader(open(tmp_path / "table4.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [r["architecture"] for r in rows] == ["24-10-10-2", "24-100-100-100-100-2"]
    assert float(rows[0]["train_min_epoch"]) > 0 and float(rows[0]["peak_rss_gib"]) > 0
    assert "NOT the paper's sizes" in text and "(26)" in text  # the paper's 5Mx4 minutes
    # the plan of the real sizes on this machine, without training
    plan = reproduce.reproduce_table4(tmp_path / "plan", dry_run=True, archs=archs[:1])
    assert "| 65536-0.5M-0.5M-2 | 10 | 16.7 M expected (20.6 M) |" in plan
    assert "memory plans only" in plan
    assert not (tmp_path / "plan" / archs[0]).exists()
    # a dry run in the folder of a measured table leaves that table alone
    measured = (tmp_path / "table4.md").read_text()
    reproduce.reproduce_table4(tmp_path, dry_run=True, archs=archs[:1])
    assert (tmp_path / "table4.md").read_text() == measured
    assert "memory plans only" in (tmp_path / "table4_plan.md").read_text()


def test_table4_reports_the_plan_the_run_used(tmp_path, no_run_plots):
    """The run plans again in its own process (the memory free there); the
    table shows that plan and its estimate, not the parent's."""
    import csv
    import json
    kw = dict(epochs=1, threads=1, width_scale=2e-5, n_features=24, n_samples=400,
              archs=["65536-0.5M-0.5M-2"], isolate=False)
    reproduce.reproduce_table4(tmp_path, **kw)
    row, = csv.DictReader(open(tmp_path / "table4.csv"))
    assert row["plan"] == "fast" and int(row["micro_batch"]) == 128
    cfg_path = next(tmp_path.glob("*/config.json"))
    used = json.loads(cfg_path.read_text())
    used.update(activation_memory="lean", micro_batch=16)  # as if the run had chosen these
    cfg_path.write_text(json.dumps(used))
    reproduce.reproduce_table4(tmp_path, **kw)  # finished: nothing trains again
    row2, = csv.DictReader(open(tmp_path / "table4.csv"))
    assert row2["plan"] == "lean" and int(row2["micro_batch"]) == 16
    assert float(row2["estimated_gib"]) < float(row["estimated_gib"])
    assert "lean, micro-batch 16" in (tmp_path / "table4.md").read_text()


def test_table4_training_options_get_their_own_folders(tmp_path, no_run_plots):
    (_, cfg, _), = reproduce.table4_configs(out=tmp_path, archs=["65536-0.5M-0.5M-2"],
                                            weight_init="he_uniform_sparse",
                                            output_init="zero", lr_fan_in_cap=100)
    assert Path(cfg.out).name == "65536-0.5M-0.5M-2_he_uniform_sparse_out-zero_cap100"
    assert (cfg.weight_init, cfg.output_init, cfg.lr_fan_in_cap) == (
        "he_uniform_sparse", "zero", 100.0)
    (_, paper, _), = reproduce.table4_configs(out=tmp_path, archs=["65536-0.5M-0.5M-2"])
    assert Path(paper.out).name == "65536-0.5M-0.5M-2" and paper.lr_fan_in_cap is None
    text = reproduce.reproduce_table4(tmp_path, epochs=1, threads=1, width_scale=2e-5,
                                      n_features=24, n_samples=300, isolate=False,
                                      archs=["65536-0.5M-0.5M-2"], output_init="zero",
                                      lr_fan_in_cap=3)
    assert "output layer zero, step lr x min(1, 3 / fan-in)" in text
    assert (tmp_path / "24-10-10-2_out-zero_cap3" / "summary.json").exists()
    # a zeta of its own is not the paper's either; --train-eval only measures (same folder)
    (_, z, _), = reproduce.table4_configs(out=tmp_path, archs=["65536-5Mx4-2"], zeta=0.1,
                                          train_eval=64)
    assert Path(z.out).name == "65536-5Mx4-2_zeta0.1" and (z.zeta, z.train_eval) == (0.1, 64)
    (_, same, _), = reproduce.table4_configs(out=tmp_path, archs=["65536-5Mx4-2"], zeta=0.3,
                                             train_eval=64)
    assert Path(same.out).name == "65536-5Mx4-2"
    (_, rz, _), = reproduce.table4_configs(out=tmp_path, archs=["65536-5Mx4-2"], zeta=0.1,
                                           regrow_init="zero")
    assert Path(rz.out).name == "65536-5Mx4-2_zeta0.1_regrow-zero" and rz.regrow_init == "zero"
    assert "SET regrows at zero" in reproduce._table4_recipe({"regrow_init": "zero"})
    text = reproduce.reproduce_table4(tmp_path / "z", epochs=2, threads=1, width_scale=2e-5,
                                      n_features=24, n_samples=300, isolate=False,
                                      archs=["65536-0.5M-0.5M-2"], zeta=0.1, train_eval=64)
    assert "SET zeta 0.1 (not the paper's)" in text
    row = next(line for line in text.splitlines() if line.startswith("| 24-10-10-2"))
    cells = [c.strip() for c in row.split("|")]
    # train loss, ... without dropout, test loss: two epochs each
    assert all(c.count("→") == 1 for c in cells[10:13]), cells
    assert cells[10] != cells[11]


@pytest.mark.slow  # a fresh interpreter importing everything: seconds
def test_table4_child_process_runs_one_architecture(tmp_path):
    (name, cfg, _), = reproduce.table4_configs(epochs=1, threads=1, width_scale=1e-5,
                                               n_features=8, n_samples=300, out=tmp_path,
                                               archs=["65536-0.5M-0.5M-2"])
    run_dir = Path(cfg.out)  # named by the scaled architecture, as reproduce_table4 does
    assert run_dir.name == "8-5-5-2"
    assert reproduce._run_child(cfg.replace(checkpoint_every=0), run_dir) == 0
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["architecture"] == "8-5-5-2" and s["peak_rss_bytes"] > 0
    assert "epoch 1/1" in (run_dir / "run.log").read_text()


# ----------------------------------------------------------------------------- figures
def fake_runs(root: Path, keys, seeds=2, epochs=6, n_in=12):
    rng = np.random.default_rng(0)
    for key in keys:
        for s in range(seeds):
            d = root / key / f"seed{s}"
            d.mkdir(parents=True)
            lines = ["epoch,train_loss,train_acc,test_loss,test_acc,nnz,train_s,test_s,"
                     "evolution_s"]
            lines += [f"{e},{1 / (e + 1)},{0.5 + e / 20},{1.1 / (e + 1)},{0.5 + e / 25},100,"
                      f"0.1,0.01,0.01" for e in range(epochs)]
            (d / "metrics.csv").write_text("\n".join(lines) + "\n")
            sparse = not key.startswith("dense")
            diag = {"epoch": list(range(epochs)),
                    "grad_flow": list(rng.uniform(0.1, 1, epochs)),
                    "nnz_layers": [[60 - e, 30, 10] for e in range(epochs)],
                    "in_degree": [list(rng.integers(0, 9, n_in)) if sparse else None
                                  for _ in range(epochs)]}
            (d / "diagnostics.json").write_text(json.dumps(diag, default=int))


def test_figures_of_a_table2_folder(tmp_path, monkeypatch):
    keys = ["relu", "allrelu", "dense_relu"]
    fake_runs(tmp_path, keys, n_in=12)
    (tmp_path / "relu_ip" / "seed0").mkdir(parents=True)  # an old run: no metrics, skipped
    drawn = []
    for name in ("plot_learning_curves", "plot_nnz_per_layer", "plot_gradient_flow",
                 "plot_input_connectivity"):
        monkeypatch.setattr(figures, name, lambda runs, path, *a, _n=name, **k:
                            drawn.append((_n, sorted(runs), a)) or path)
    written = figures.draw_table_figures(tmp_path, [*keys, "relu_ip"], 2, "test",
                                         image_shape=(3, 2, 2))
    assert [p.name for p in written] == ["fig_learning_curves.png", "fig_nnz_per_layer.png",
                                         "fig_gradient_flow.png",
                                         "fig_input_connectivity.png"]
    assert all(runs == ["allrelu", "dense_relu", "relu"] for _, runs, _ in drawn)
    assert drawn[-1][2] == ((3, 2, 2), "test")


@pytest.mark.parametrize("name", ["plot_learning_curves", "plot_nnz_per_layer",
                                  "plot_gradient_flow", "plot_input_connectivity"])
def test_each_figure_is_drawn(tmp_path, name, monkeypatch):
    monkeypatch.setattr(figures, "DPI", 40)  # the same drawing, fewer pixels: faster
    fake_runs(tmp_path, ["relu", "allrelu_ip", "dense_allrelu"], n_in=12)
    runs = figures.load_runs(tmp_path, ["relu", "allrelu_ip", "dense_allrelu"], 2)
    args = ((3, 2, 2),) if name == "plot_input_connectivity" else ()
    path = getattr(figures, name)(runs, tmp_path / "f.png", *args)
    assert path.stat().st_size > 2000


def test_connectivity_figure_without_image_shape_and_wrong_shape(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "DPI", 40)
    fake_runs(tmp_path, ["allrelu"], seeds=1, n_in=7)
    runs = figures.load_runs(tmp_path, ["allrelu"], 1)
    assert figures.plot_input_connectivity(runs, tmp_path / "c.png", None).exists()
    with pytest.raises(ValueError, match="not a 1x28x28 image"):
        figures.plot_input_connectivity(runs, tmp_path / "d.png", (1, 28, 28))


# ----------------------------------------------------------------------------- CLI
def test_cli_reproduce_refuses_flags_it_does_not_take(capsys):
    assert run_experiment.main(["--reproduce", "table2", "--dataset", "madelon",
                                "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--reproduce table2 uses the paper's settings" in err and "--lr" in err
    # the fidelity switches a reproduction may vary are accepted, the others refused
    assert run_experiment.main(["--reproduce", "table4", "--er-sampling", "paper"]) == 2
    assert "(got --er-sampling)" in capsys.readouterr().err
    assert run_experiment.main(["--reproduce", "table2", "--dataset", "madelon",
                                "--parallel-semantics", "text"]) == 2
    assert "(got --parallel-semantics)" in capsys.readouterr().err
    from sparse_mlp.cli import REPRODUCE_FLAGS
    assert "er_sampling" in REPRODUCE_FLAGS["table2"] and "er_sampling" in REPRODUCE_FLAGS["table6"]
    assert {"er_sampling", "parallel_semantics"} <= REPRODUCE_FLAGS["table3"]
    assert run_experiment.main(["--reproduce", "table4", "--lr", "0.1"]) == 2
    assert "--width-scale" in capsys.readouterr().err
    assert run_experiment.main(["--reproduce", "table4", "--rows", "relu", "--dry-run"]) != 0
    assert "unknown Table 4 architecture(s) relu" in capsys.readouterr().err


def test_cli_reproduce_table4_dry_run_prints_plans(tmp_path, capsys):
    rc = run_experiment.main(["--reproduce", "table4", "--dry-run", "--width-scale", "1e-4",
                              "--n-features", "64", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "memory plans only" in out and "| 64-50-50-2 | 10 |" in out
    assert (tmp_path / "table4_plan.md").exists() and not (tmp_path / "table4.md").exists()


def test_table4_runs_the_125M_row_only_when_named(tmp_path, capsys):
    """65536-5Mx25-2 (the paper's aim, beyond its table): not in the default
    rows; named, it plans (25 hidden layers of 5 M at full size) and runs
    beside the paper's rows with a dash for the paper's minutes."""
    names = [n for n, _, _ in reproduce.table4_configs(out=tmp_path)]
    assert "65536-5Mx25-2" not in names and len(names) == 5
    [(name, cfg, paper)] = reproduce.table4_configs(out=tmp_path, archs=["65536-5Mx25-2"])
    assert cfg.hidden == [5_000_000] * 25 and cfg.epsilon == 1 and paper["neurons"] == "125 M"
    rc = run_experiment.main(["--reproduce", "table4", "--rows", "65536-5Mx25-2",
                              "--width-scale", "2e-5", "--n-features", "24",
                              "--epochs", "1", "--threads", "1", "--out",
                              str(tmp_path / "t"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "| 24-" + "-".join(["100"] * 25) + "-2 | 1 |" in out
    assert "(the paper's aim, not reached)" in out and "(—)" in out


def test_cli_diagnostics_flag(tmp_path, no_run_plots):
    rc = run_experiment.main(["--epochs", "2", "--hidden", "32,32", "--diagnostics", "--out",
                              str(tmp_path / "d"), "--no-progress", "--quiet", "--threads", "1"])
    assert rc == 0
    d = json.loads((tmp_path / "d" / "diagnostics.json").read_text())
    assert len(d["grad_flow"]) == 2 and len(d["in_degree"][0]) == 64


# ----------------------------------------------------------------------------- SLURM
SLURM = ROOT / "scripts" / "slurm"


@pytest.mark.parametrize("script", sorted(p.name for p in [*SLURM.glob("*.sbatch"),
                                                             *SLURM.glob("*.sh")]))
def test_slurm_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(SLURM / script)]).returncode == 0


def test_slurm_array_task_maps_to_row_and_seed(tmp_path):
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "7", "DRY_RUN": "1", "DATASET": "madelon",
           "SEEDS": "5"}
    out = subprocess.run(["bash", str(SLURM / "table2_array.sbatch")], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "--reproduce table2 --dataset madelon" in out
    assert "--rows relu_ip --only-seed 2" in out and "--seeds 5" in out


def test_slurm_array_task_beyond_the_seeds_says_so(tmp_path):
    """SEEDS=3 with the header's 30-task array: tasks 18-29 have no (row, seed);
    they used to die with 'unbound variable'."""
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "25", "DRY_RUN": "1", "DATASET": "madelon",
           "SEEDS": "3"}
    r = subprocess.run(["bash", str(SLURM / "table2_array.sbatch")], env=env, cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "task 25 has no (row, seed) with SEEDS=3" in r.stderr and "--array=0-17" in r.stderr
    assert "unbound" not in r.stderr and "--reproduce" not in r.stdout


def test_slurm_wasap_uses_the_python_it_is_given(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mpiexec").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/launched\n")
    (fake / "mpiexec").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "LAUNCH": "mpiexec",
           "PYTHON": "/opt/site/python3.12"}
    env.pop("SLURM_JOB_ID", None)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_wasap.sh")], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    launched = (tmp_path / "launched").read_text()
    assert "/opt/site/python3.12 run_experiment.py --dataset higgs --parallel wasap" in launched


def test_slurm_preemption_signal_reaches_python_and_requeues(tmp_path):
    """USR1 to the batch shell (sbatch --signal=B:USR1@...) is forwarded to the
    training process; its exit status 75 makes the job requeue itself."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/requeued\n")
    trainer = tmp_path / "trainer.py"
    trainer.write_text(textwrap.dedent(f"""
        import os, signal, sys, time
        got = []
        signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
        os.kill(os.getppid(), signal.SIGUSR1)   # what SLURM does before the time limit
        t0 = time.time()
        while not got and time.time() - t0 < 5:
            time.sleep(0.01)
        open({str(tmp_path / 'signalled')!r}, 'w').write(str(got))
        sys.exit(75 if got else 1)
    """))
    (fake / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
           "TRAIN_CMD": f"{sys.executable} {trainer}"}
    r = subprocess.run(["bash", str(SLURM / "table2_array.sbatch")], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=20)
    assert (tmp_path / "signalled").read_text() == f"[{int(signal.SIGUSR1)}]"
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "42"]
    assert r.returncode == 0, r.stderr



# ----------------------------------------------------------------------------- Table 3
def test_table3_without_mpi_prints_the_mpiexec_command(tmp_path, monkeypatch):
    for var in reproduce.MPI_LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "torch_baseline_x.json").write_text(json.dumps({"runs": [
        {"dataset": "higgs", "mode": "mask", "threads": 1, "sec_per_epoch": [30.0, 36.0],
         "date": "d"},
        {"dataset": "higgs", "mode": "csr", "threads": 1, "sec_per_epoch": [8.0]}]}))
    original = reproduce.torch_cpu_reference
    monkeypatch.setattr(table3_mod, "torch_cpu_reference", lambda ds: original(ds, bench))
    text = reproduce.reproduce_table3("higgs", seeds=2, out=tmp_path / "t3",
                                      overrides={"threads": 1})
    assert ("mpiexec -n 6 python run_experiment.py --reproduce table3 --dataset higgs "
            "--seeds 2 --threads 1 --out " in text)
    assert "| WASAP-SGD | yes | 6 | not run | 74.88 |" in text
    assert "| PyTorch CPU, dense × mask (1 thread) | no | 1 | – | Keras: 74.28 | 275.0* " in text
    assert "| dense × mask on a GPU | no | 1 | missing |" in text
    assert not list((tmp_path / "t3").glob("was*"))  # nothing trained without MPI


def mpiexec() -> str | None:
    import shutil

    from sparse_mlp.parallel import mpi_available
    return shutil.which("mpiexec") if mpi_available() else None


@pytest.mark.slow  # 3 MPI ranks, 4 short parallel runs: seconds
@pytest.mark.mpi
@pytest.mark.skipif(mpiexec() is None, reason="needs mpiexec and mpi4py")
def test_table3_under_mpi_runs_the_parallel_rows_and_resumes(tmp_path):
    cmd = [mpiexec(), "-n", "3", sys.executable, str(ROOT / "tests" / "_table3_mpi_helper.py"),
           str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mpiexec -n" not in r.stdout  # under MPI: no command to print
    for key in ("wassp", "wassp_ip", "wasap", "wasap_ip"):
        s = json.loads((tmp_path / key / "seed0" / "summary.json").read_text())
        assert s["parallel"]["mode"] == key.split("_")[0] and s["parallel"]["workers"] == 2
    assert r.stdout.count("(1 seeds)") == 4 and "| WASAP-SGD | yes | 3 |" in r.stdout
    stamp = (tmp_path / "wasap" / "seed0" / "summary.json").stat().st_mtime_ns
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "wasap" / "seed0" / "summary.json").stat().st_mtime_ns == stamp


def test_cli_table4_takes_rows_and_training_options(monkeypatch, capsys):
    seen = {}

    def fake(out, **kw):
        seen.update(kw, out=out)
        return "table"

    monkeypatch.setattr(reproduce, "reproduce_table4", fake)  # the CLI calls rep.reproduce_table4
    assert run_experiment.main(["--reproduce", "table4", "--rows", "65536-5Mx4-2",
                                "--weight-init", "he_uniform_sparse", "--output-init", "zero",
                                "--lr-fan-in-cap", "5", "--dropout", "0", "--epochs", "3",
                                "--zeta", "0.1", "--train-eval", "1024"]) == 0
    assert seen["archs"] == ["65536-5Mx4-2"] and seen["lr_fan_in_cap"] == 5.0
    assert (seen["zeta"], seen["train_eval"]) == (0.1, 1024)
    assert (seen["output_init"], seen["dropout"], seen["epochs"]) == ("zero", 0.0, 3)
    with pytest.raises(ConfigError, match="unknown Table 4 architecture.*65536-5Mx10-2"):
        reproduce.table4_configs(archs=["65536-5Mx5-2"])


# ----------------------------------------------------------------------------- paper numbers
def test_paper_numbers_load_from_the_data_file():
    data = reproduce.load_paper_numbers()
    for n in (2, 3, 4, 6):
        table = data[f"table{n}"]
        assert table["source"].startswith(f"Table {n} of the paper") and table["columns"]
    cols = {n: set(data[f"table{n}"]["columns"]) for n in (2, 3, 4, 6)}
    assert all(set(r) == cols[2] for rows in data["table2"]["rows"].values()
               for r in rows.values())
    assert all(set(r) == cols[3] for rows in data["table3"]["rows"].values() for r in rows)
    assert all(set(r) == cols[4] for r in data["table4"]["rows"].values())
    assert all(set(r) == cols[6] for r in data["table6"]["rows"].values())
    assert data["table2"]["rows"]["madelon"]["allrelu_ip"]["accuracy"] == 77.00
    # in the shapes the writers index (the paper's column order)
    assert reproduce.PAPER_TABLE2["madelon"]["allrelu_ip"] == (77.00, 19000, 2737, 3.2)
    assert reproduce.PAPER_TABLE6["madelon"][:2] == (71.33, 19006)
    assert reproduce.PAPER_TABLE6["madelon"][2][10.0] == (72.00, 17661)
    assert ("WASAP-SGD", True, 12, False, 74.88, 108.33, 62, 2800) in reproduce.PAPER_TABLE3[
        "higgs"]
    assert [a[0] for a in reproduce.TABLE4_ARCHS] == list(data["table4"]["rows"])
    assert reproduce.TABLE4_ARCHS[3][3] == {"neurons": "20 M", "params": "40.3 M", "workers": 8,
                                            "init": 5, "train": 26, "test": 18, "evolution": 6}
    from sparse_mlp import presets
    assert not hasattr(presets, "PAPER_TABLE2")  # one home for the paper's numbers


def test_paper_numbers_are_package_data():
    from setuptools.config.pyprojecttoml import read_configuration

    tool = read_configuration(ROOT / "pyproject.toml")["tool"]["setuptools"]
    assert "sparse_mlp.reproduce" in tool["packages"]
    assert "paper_numbers.json" in tool["package-data"]["sparse_mlp.reproduce"]
    assert (ROOT / "sparse_mlp" / "reproduce" / "paper_numbers.json").is_file()


def _paper_cell(v, fmt: str, none: str = "n/a") -> str:
    return none if v is None else format(v, fmt)


def _table_line(text: str, start: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(start))
    return [c.strip() for c in line.split("|")[1:-1]]


@pytest.mark.parametrize("dataset", ["leukemia", "higgs", "madelon", "fashionmnist", "cifar10"])
def test_table_writers_print_the_paper_numbers_of_the_data_file(tmp_path, dataset):
    paper = reproduce.load_paper_numbers()
    prune = [{"percentile": p, "test_acc": 0.5, "nnz": 90} for p in (0.0, 5.0, 10.0, 15.0,
                                                                      20.0, 25.0)]
    run = {"best_test_acc": 0.5, "nnz_start": 100, "nnz_end": 90, "train_s": 60.0,
           "evolution_s": 6.0, "wall_s": 70.0, "test_s": 1.0, "peak_rss_bytes": 2**20,
           "epochs": 500, "dataset": dataset, "post_pruning": prune}
    # Table 2: accuracy, start and end nnz, minutes of every row
    results = {k: [run] for k, _, _ in reproduce.TABLE2_ALL_ROWS}
    text = reproduce.write_table2(dataset, reproduce.table2_rows(dataset, results), tmp_path, 500)
    for key, p in paper["table2"]["rows"][dataset].items():
        model = "Dense MLP" if key.startswith("dense_") else "SET-MLP"
        cells = _table_line(text, f"| {model} {reproduce.ROW_LABELS[key]} |")
        assert cells[2] == _paper_cell(p["accuracy"], ".2f")
        assert cells[3].endswith(f"({p['start_nnz']:,})") and cells[4].endswith(
            f"({p['end_nnz']:,})")
        assert cells[5].endswith(f"({_paper_cell(p['minutes'], 'g')})")
    if dataset == "madelon":
        assert _table_line(text, "| SET-MLP All-ReLU + IP |")[2] == "77.00"
    # Table 6: the model, then every pruning threshold
    p6 = paper["table6"]["rows"][dataset]
    text = reproduce.write_table6(dataset, [run], tmp_path, 500, reproduce.POST_PRUNE_PERCENTILES)
    assert f"(paper {p6['accuracy']:.2f})" in text and f"(paper {p6['params']:,})" in text
    for pct, p in p6["percentiles"].items():
        cells = _table_line(text, f"| {pct}th percentile |")
        assert (cells[2], cells[4]) == (f"{p['accuracy']:.2f}", f"{p['end_nnz']:,}")
    # Table 3 (three of the datasets): accuracy, minutes and memory of each row
    records = paper["table3"]["rows"].get(dataset, [])
    res3 = {k: [run] for k in ("wassp", "wassp_ip", "wasap", "wasap_ip", "allrelu",
                               "allrelu_ip")}
    text = reproduce.write_table3(dataset, res3, tmp_path, 500, 5, None, [])
    for p in records:
        if p["framework"].startswith("Keras"):
            continue
        cells = _table_line(text, f"| {p['framework']} | {'yes' if p['ip'] else 'no'} |")
        assert cells[4] == _paper_cell(p["accuracy"], ".2f")
        assert cells[5].endswith(f"({p['minutes']:g})")
        assert cells[6].endswith(f"({p['memory_mb']:g})")
    gpu = [p for p in records if p["gpu"]]
    assert (f"missing ({gpu[0]['minutes']:g})" if gpu else "missing (n/a)") in text


def test_table4_writer_prints_the_paper_numbers_of_the_data_file(tmp_path):
    paper = reproduce.load_paper_numbers()["table4"]["rows"]
    rows = []
    for name, cfg, p in reproduce.table4_configs(out=tmp_path):
        assert p == paper[name]
        rows.append({"name": name, "epsilon": cfg.epsilon, "status": "does not fit",
                     **{f"paper_{k}": v for k, v in p.items()}})
    text = reproduce.write_table4(rows, tmp_path, 2, 1.0, True, False)
    for name, p in paper.items():
        cells = _table_line(text, f"| {name} |")
        assert cells[4:8] == [f"({p[k]})" for k in ("init", "train", "test", "evolution")]


def test_no_default_output_folder_in_the_tracked_results():
    import inspect

    for name in ("reproduce_table2", "reproduce_table3", "reproduce_table4", "reproduce_table6"):
        out = inspect.signature(getattr(reproduce, name)).parameters["out"]
        assert out.default is inspect.Parameter.empty, name  # the caller says where
    for mod in (reproduce.common, reproduce.table2, reproduce.table3, reproduce.table4,
                reproduce.table6):
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            for p in inspect.signature(fn).parameters.values():
                assert not str(p.default).startswith("results"), f"{mod.__name__}.{name}"
