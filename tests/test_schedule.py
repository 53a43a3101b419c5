"""--lr-schedule: the learning rate as a pure function of the epoch
(sparse_mlp/schedule.py), used by the sequential Trainer; constant is the
paper's and passes the very same floats as before the schedules existed."""

from __future__ import annotations

import csv
import math

import pytest

import run_experiment
from sparse_mlp.config import TrainConfig
from sparse_mlp.errors import ConfigError
from sparse_mlp.schedule import decay_at, lr_at, scheduled_lr

TINY = ["--hidden", "32,32", "--epsilon", "4", "--threads", "1", "--no-progress", "--quiet",
        "--checkpoint-every", "1"]


def test_constant_is_the_base_rate_itself():
    cfg = TrainConfig(lr=0.0123, epochs=7)
    assert all(lr_at(cfg, e) is cfg.lr for e in range(7))
    assert decay_at(cfg, cfg.lr) == cfg.decay
    dec = cfg.replace(decay_mode="decoupled")
    assert decay_at(dec, dec.lr) == dec.decay


def test_step_against_hand_computed_values():
    cfg = TrainConfig(lr=0.1, epochs=10, lr_schedule="step", lr_step_every=3, lr_step_gamma=0.5)
    # epochs 0-2: 0.1, 3-5: 0.05, 6-8: 0.025, 9: 0.0125
    want = [0.1] * 3 + [0.05] * 3 + [0.025] * 3 + [0.0125]
    assert [lr_at(cfg, e) for e in range(10)] == pytest.approx(want, rel=1e-15)


def test_cosine_against_hand_computed_values():
    cfg = TrainConfig(lr=0.1, epochs=4, lr_schedule="cosine")
    # lr/2 * (1 + cos(pi e / 4)): 0.1, 0.0853553, 0.05, 0.0146447
    want = [0.1, 0.05 * (1 + math.sqrt(0.5)), 0.05, 0.05 * (1 - math.sqrt(0.5))]
    assert [lr_at(cfg, e) for e in range(4)] == pytest.approx(want, rel=1e-12)
    floor = cfg.replace(lr_min=0.02)
    assert lr_at(floor, 2) == pytest.approx(0.06)          # (0.1 + 0.02) / 2
    assert lr_at(floor, 4) == pytest.approx(0.02)          # the floor, one epoch after the last
    assert scheduled_lr("cosine", 1.0, 0, epochs=1) == 1.0
    assert decay_at(cfg.replace(decay_mode="decoupled"), 0.05) == pytest.approx(0.05 * 2e-4)


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="--lr-step-every"):
        TrainConfig(lr_schedule="step").validate()
    with pytest.raises(ConfigError, match="--lr-step-every belongs"):
        TrainConfig(lr_step_every=3).validate()
    with pytest.raises(ConfigError, match="--lr-min"):
        TrainConfig(lr_schedule="cosine", lr=0.01, lr_min=0.02).validate()
    with pytest.raises(ConfigError, match="constant, step or cosine"):
        TrainConfig(lr_schedule="linear").validate()
    parse = run_experiment.build_parser().parse_args
    with pytest.raises(ConfigError, match="--lr-min needs --lr-schedule cosine"):
        run_experiment.config_from_args(parse(["--lr-min", "0.001"]))
    with pytest.raises(ConfigError, match="--lr-step-gamma needs"):
        run_experiment.config_from_args(parse(["--lr-schedule", "cosine",
                                               "--lr-step-gamma", "0.5"]))
    # the parallel trainer has one step size: refused through the run owner's table
    with pytest.raises(ConfigError, match="lr-schedule"):
        run_experiment.config_from_args(parse(["--parallel", "wasap", "--lr-schedule",
                                               "cosine"]))


def test_the_trainer_passes_the_scheduled_rate(monkeypatch, tmp_path):
    """Every train step of epoch e gets lr_at(cfg, e) and its decay; constant
    passes cfg.lr and cfg.decay themselves (bit-identical to before)."""
    from sparse_mlp.model import SparseMLP

    seen = []
    real = SparseMLP.train_step

    def spy(self, xb, y, lr, momentum, decay, *a, **k):
        seen.append((lr, decay))
        return real(self, xb, y, lr, momentum, decay, *a, **k)

    monkeypatch.setattr(SparseMLP, "train_step", spy)
    assert run_experiment.main([*TINY, "--epochs", "2", "--out", str(tmp_path / "c")]) == 0
    cfg = TrainConfig()  # the digits preset's lr and decay
    assert {s for s in seen} == {(0.01, cfg.decay)}
    per_epoch = len(seen) // 2
    seen.clear()
    assert run_experiment.main([*TINY, "--epochs", "3", "--lr-schedule", "step",
                                "--lr-step-every", "1", "--lr-step-gamma", "0.5",
                                "--decay-mode", "decoupled", "--out", str(tmp_path / "s")]) == 0
    want = [0.01, 0.005, 0.0025]
    assert [lr for lr, _ in seen[::per_epoch]] == pytest.approx(want, rel=1e-15)
    assert [d for _, d in seen[::per_epoch]] == pytest.approx([w * 2e-4 for w in want])
    with open(tmp_path / "s" / "metrics.csv") as fh:
        assert [float(r["lr"]) for r in csv.DictReader(fh)] == pytest.approx(want)
    with open(tmp_path / "c" / "metrics.csv") as fh:
        assert "lr" not in next(csv.reader(fh))  # the paper's runs keep their columns


def test_resume_is_exact_with_a_schedule(tmp_path):
    """The rate is a function of the epoch: a run resumed from its second
    checkpoint ends with the same metrics as the uninterrupted one."""
    flags = [*TINY, "--epochs", "4", "--lr-schedule", "cosine", "--lr-min", "0.001",
             "--keep-checkpoints", "10"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_experiment.main([*flags, "--out", str(whole)]) == 0
    second = sorted((whole / "checkpoints").glob("ckpt_e000002_*.h5"))[0]
    assert run_experiment.main([*TINY, "--resume", str(second), "--out", str(cut)]) == 0

    def rows(folder):
        with open(folder / "metrics.csv") as fh:
            return [{k: v for k, v in r.items() if not k.endswith("_s")}
                    for r in csv.DictReader(fh)]

    assert rows(whole) == rows(cut)
