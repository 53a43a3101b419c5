"""--val-fraction (a validation split, the best epoch chosen on it,
checkpoints/best.h5) and --config (re-running a run from its config.json),
with real runs through run_experiment.main on digits."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import run_experiment
from sparse_mlp.checkpoint import CheckpointDir, load_checkpoint
from sparse_mlp.datasets import load_dataset
from sparse_mlp.errors import ConfigError

TINY = ["--hidden", "32,32", "--epsilon", "4", "--threads", "1", "--no-progress", "--quiet"]


def rows(folder, drop_timing: bool = True) -> list[dict]:
    with open(folder / "metrics.csv") as fh:
        return [{k: v for k, v in r.items() if not (drop_timing and k.endswith("_s"))}
                for r in csv.DictReader(fh)]


def summary(folder) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_split_is_stratified_seeded_and_standardised_without_it():
    plain = load_dataset("digits", seed=1)
    d = load_dataset("digits", seed=1, val_fraction=0.2)
    n = plain.n_train
    assert d.X_val.shape[0] == int(np.ceil(0.2 * n)) and d.n_train + d.X_val.shape[0] == n
    assert d.X_val.dtype == np.float32 and d.y_val.dtype == np.int32
    # stratified: every class in proportion (within one sample)
    share = np.bincount(d.y_val, minlength=10) / np.bincount(plain.y_train, minlength=10)
    assert np.all(np.abs(share - 0.2) < 0.05)
    # statistics from the remaining training part only: it is centred, the validation set not
    assert np.allclose(d.X_train.mean(axis=0), 0, atol=1e-5)
    assert not np.allclose(d.X_val.mean(axis=0), 0, atol=1e-3)
    # the test set is the same rows as without validation (only the statistics differ)
    assert np.array_equal(d.y_test, plain.y_test)
    again = load_dataset("digits", seed=1, val_fraction=0.2)
    assert np.array_equal(again.X_val, d.X_val)
    other = load_dataset("digits", seed=2, val_fraction=0.2)
    assert not np.array_equal(other.y_val, d.y_val)
    assert d.info["validation"]["n_val"] == d.X_val.shape[0]
    assert plain.X_val is None and "validation" not in plain.info


def test_best_epoch_is_chosen_on_validation(tmp_path):
    out = tmp_path / "run"
    assert run_experiment.main([*TINY, "--epochs", "5", "--val-fraction", "0.25",
                                "--out", str(out)]) == 0
    hist = rows(out)
    assert {"val_loss", "val_acc"} <= set(hist[0])
    s = summary(out)
    val = [float(r["val_acc"]) for r in hist]
    test = [float(r["test_acc"]) for r in hist]
    best = int(np.argmax(val))  # the first epoch of the best validation accuracy
    assert s["best_epoch"] == best
    assert s["val_acc_at_best_epoch"] == pytest.approx(val[best], abs=1e-6)
    assert s["test_acc_at_best_epoch"] == pytest.approx(test[best], abs=1e-6)
    assert s["best_test_acc"] == pytest.approx(max(test), abs=1e-6)
    assert s["best_test_acc_any_epoch_optimistic"] == s["best_test_acc"]
    assert s["selection"].startswith("validation")
    # best.h5: the model of that epoch, evaluated before its SET step, never pruned away
    best_file = out / "checkpoints" / "best.h5"
    assert s["best_checkpoint"] == str(best_file)
    ck = load_checkpoint(best_file)
    assert not ck.resumable and int(ck.extra["best"]["epoch"]) == best
    data = load_dataset("digits", seed=0, val_fraction=0.25)
    loss, acc = ck.model.evaluate(data.X_val, data.y_val, batch_size=1024)
    assert acc == pytest.approx(val[best], abs=1e-6)
    loss, acc = ck.model.evaluate(data.X_test, data.y_test, batch_size=1024)
    assert acc == pytest.approx(test[best], abs=1e-6)


def test_paper_protocol_is_unchanged(tmp_path):
    out = tmp_path / "paper"
    assert run_experiment.main([*TINY, "--epochs", "3", "--out", str(out)]) == 0
    hist = rows(out)
    assert "val_acc" not in hist[0]
    s = summary(out)
    test = [float(r["test_acc"]) for r in hist]
    assert s["best_epoch"] == int(np.argmax(test)) == s["best_test_epoch"]
    assert s["selection"].startswith("test (the paper's protocol")
    assert not (out / "checkpoints" / "best.h5").exists()


def test_best_h5_survives_keep_and_resume(tmp_path):
    """Never deleted by --keep-checkpoints; a run resumed from an earlier
    checkpoint retires a best.h5 written after it and ends like the
    uninterrupted run, with best.h5 holding the summary's best epoch."""
    flags = [*TINY, "--epochs", "6", "--val-fraction", "0.25", "--checkpoint-every", "1"]
    whole = tmp_path / "whole"
    assert run_experiment.main([*flags, "--keep-checkpoints", "1", "--out", str(whole)]) == 0
    names = sorted(p.name for p in (whole / "checkpoints").iterdir())
    assert len(names) == 2 and names[0] == "best.h5" and names[1].startswith("ckpt_e000006_")

    cut = tmp_path / "cut"
    assert run_experiment.main([*flags, "--keep-checkpoints", "10", "--out", str(cut)]) == 0
    # as if killed after epoch 2's checkpoint, with best.h5 of a later epoch left behind
    for p in (cut / "checkpoints").glob("ckpt_*.h5"):
        if not p.name.startswith(("ckpt_e000001", "ckpt_e000002")):
            p.unlink()
    (cut / "summary.json").unlink()
    assert run_experiment.main([*TINY, "--resume", "auto", "--out", str(cut)]) == 0
    assert rows(cut) == rows(whole)
    if summary(whole)["best_epoch"] > 1:  # best.h5 was newer than the checkpoint resumed
        assert (cut / "checkpoints" / "best.h5.superseded").exists()
    s = summary(cut)
    assert s["best_epoch"] == summary(whole)["best_epoch"]
    assert CheckpointDir(cut / "checkpoints").best_epoch() == s["best_epoch"]
    assert s["best_checkpoint"] == str(cut / "checkpoints" / "best.h5")


def test_data_fingerprint_includes_the_split(tmp_path):
    from sparse_mlp.run import data_fingerprint
    a = data_fingerprint(load_dataset("digits", val_fraction=0.2))
    b = data_fingerprint(load_dataset("digits", val_fraction=0.3))
    c = data_fingerprint(load_dataset("digits"))
    assert len({a, b, c}) == 3


def test_refused_where_not_supported():
    parse = run_experiment.build_parser().parse_args
    with pytest.raises(ConfigError, match="val-fraction"):
        run_experiment.config_from_args(parse(["--parallel", "wassp", "--val-fraction", "0.2"]))
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        run_experiment.config_from_args(parse(["--val-fraction", "1.5"]))


def test_config_reruns_a_run(tmp_path, capsys):
    """A run's config.json re-runs it: identical metrics (timings aside) in a
    new folder; flags given with --config override the file."""
    first = tmp_path / "first"
    assert run_experiment.main([*TINY, "--epochs", "3", "--val-fraction", "0.2",
                                "--lr-schedule", "cosine", "--seed", "3",
                                "--out", str(first)]) == 0
    s = summary(first)
    rerun = s["rerun"]
    assert rerun["command"][1:] == [*TINY, "--epochs", "3", "--val-fraction", "0.2",
                                    "--lr-schedule", "cosine", "--seed", "3", "--out",
                                    str(first)]
    assert rerun["host"] and rerun["sparse_mlp_version"]
    assert "git_commit" in rerun and "git_dirty" in rerun
    again = tmp_path / "again"
    cfg_file = str(first / "config.json")
    assert run_experiment.main(["--config", cfg_file, "--out", str(again), "--quiet",
                                "--no-progress"]) == 0
    assert rows(again) == rows(first)
    saved = json.loads((again / "config.json").read_text())
    assert saved["out"] == str(again) and saved["seed"] == 3
    # flags override the file's values
    other = tmp_path / "other"
    assert run_experiment.main(["--config", cfg_file, "--epochs", "2", "--out", str(other),
                                "--quiet", "--no-progress"]) == 0
    assert len(rows(other)) == 2
    # the file's out is not reused: a run into the first run's folder is refused
    capsys.readouterr()
    assert run_experiment.main(["--config", cfg_file, "--out", str(first), "--quiet"]) == 2
    assert "holds the results of another run" in capsys.readouterr().err
    assert run_experiment.main(["--config", cfg_file, "--resume", "auto", "--out",
                                str(first)]) == 2
