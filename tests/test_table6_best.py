"""--keep-best test and Table 6 from the best model: the 0% row of the
best-epoch model equals the run's best test accuracy (the paper's protocol);
the final model's rows are reported beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_training import blobs, small_cfg

from sparse_mlp import reproduce
from sparse_mlp.checkpoint import load_checkpoint
from sparse_mlp.datasets import Dataset
from sparse_mlp.errors import ConfigError
from sparse_mlp.experiment import run
from sparse_mlp.run import check_supported


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X, y = blobs(rng, 160)
    Xt, yt = blobs(rng, 60)
    return Dataset("blobs", X, y, Xt, yt, [0, 1, 2], {"source": "test"})


def _metrics_best(run_dir: Path) -> tuple[float, int]:
    import csv
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    accs = [float(r["test_acc"]) for r in rows]
    return max(accs), int(np.argmax(accs))


def test_keep_best_test_writes_the_best_epoch_model(tmp_path, data):
    cfg = small_cfg(epochs=6, lr=0.05).replace(out=str(tmp_path / "r"), keep_best="test")
    summary = run(cfg, data=data, progress=False)
    best = tmp_path / "r" / "checkpoints" / "best.h5"
    assert summary["best_checkpoint"] == str(best)
    ck = load_checkpoint(best)
    acc, epoch = _metrics_best(tmp_path / "r")
    assert ck.extra["best"]["epoch"] == summary["best_test_epoch"] == epoch
    got = ck.model.evaluate(data.X_test, data.y_test, cfg.eval_batch_size)[1]
    assert got == summary["best_test_acc"] == pytest.approx(acc, abs=1e-6)
    # never the default, and refused where nothing writes it
    plain = run(small_cfg(epochs=2).replace(out=str(tmp_path / "p")), data=data, progress=False)
    assert "best_checkpoint" not in plain and not (tmp_path / "p/checkpoints/best.h5").exists()
    with pytest.raises(ConfigError, match="keep-best"):
        check_supported(cfg.replace(parallel="wasap"), "parallel")
    with pytest.raises(ConfigError, match="keep-best"):
        cfg.replace(val_fraction=0.2).validate()


def test_table6_zero_row_is_the_best_test_accuracy(tmp_path, data, monkeypatch):
    import sparse_mlp.run as run_mod
    monkeypatch.setattr(run_mod, "plot_learning_curves", lambda *a, **k: None, raising=False)
    base = small_cfg(epochs=8, lr=0.05).replace(keep_best="test")
    summaries = reproduce.post_prune_rows(base, 2, tmp_path, (10, 50), data=data)
    for s in summaries:
        best_rows, final_rows = s["post_pruning_best"], s["post_pruning"]
        assert best_rows[0]["test_acc"] == s["best_test_acc"]  # the paper's 0% row
        assert final_rows[0]["test_acc"] == s["final_test_acc"]
        assert [r["percentile"] for r in best_rows] == [0, 10.0, 50.0]
        saved = json.loads((Path(s["out"]) / "summary.json").read_text())
        assert saved["post_pruning_best"] == best_rows
    text = reproduce.write_table6("madelon", summaries, tmp_path, 8, (10, 50))
    assert "## The best-epoch model" in text and "## The final model" in text
    mean_best = 100 * np.mean([s["best_test_acc"] for s in summaries])
    assert f"Unpruned: {mean_best:.2f}" in text
    # finished runs are reused: nothing retrained, the rows come back as they were
    again = reproduce.post_prune_rows(base, 2, tmp_path, (10, 50), data=data)
    assert [s["post_pruning_best"] for s in again] == [s["post_pruning_best"]
                                                        for s in summaries]


def test_table6_of_runs_without_a_best_model_reports_the_final_ones(tmp_path, data):
    base = small_cfg(epochs=3)  # keep_best None: no best.h5
    reproduce.run_rows(base, (("allrelu", "allrelu", False),), 1, tmp_path, data=data)
    summaries = reproduce.post_prune_rows(base, 1, tmp_path, (10,), data=data)
    assert summaries[0]["post_pruning_best"] is None
    text = reproduce.write_table6("madelon", summaries, tmp_path, 3, (10,))
    assert "hold no best-epoch model" in text and "## The final model" in text
