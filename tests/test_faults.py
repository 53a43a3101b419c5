"""Faults on real subprocesses: SIGKILL while a checkpoint is written,
SIGTERM / SIGUSR1 during training then ``--resume auto``."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _processes import read_until

import run_experiment
from sparse_mlp.checkpoint import (
    LAYER_ARRAYS,
    CheckpointDir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from sparse_mlp.training import PREEMPTED_EXIT_CODE, TIMING_COLUMNS

HELPER = Path(__file__).with_name("_fault_helper.py")
ROOT = Path(__file__).resolve().parents[1]
# digits, a tiny network: 42 batches of 32 per epoch
RUN_ARGS = ["--dataset", "digits", "--hidden", "24,24", "--epochs", "5", "--threads", "1",
            "--no-progress", "--checkpoint-every", "2"]


def _spawn(*args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, str(HELPER), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _rows(path: Path) -> list[dict]:
    """metrics.csv without the timing columns."""
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}
                for r in csv.DictReader(fh)]


def _assert_same_model(a, b) -> None:
    for la, lb in zip(a.layers, b.layers):
        for name in LAYER_ARRAYS:
            assert np.array_equal(getattr(la, name), getattr(lb, name)), name


def test_sigkill_while_saving_keeps_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    target = folder / "ckpt_e000001_s0000000007.h5"
    proc = _spawn("kill-while-saving", str(target))
    read_until(proc, "saved")
    before = load_checkpoint(target)
    read_until(proc, "writing")  # the second save is half-way through its datasets
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    leftovers = [p for p in folder.iterdir() if ".tmp-" in p.name]
    assert len(leftovers) == 1  # the killed writer's partial file ...
    after = load_checkpoint(target)  # ... never replaced the good one
    assert after.state.step == 7
    _assert_same_model(before.model, after.model)
    assert latest_checkpoint(folder).path == target
    CheckpointDir(folder)  # a new writer removes the dead process's temporary file
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The same run, uninterrupted (in-process)."""
    out = tmp_path_factory.mktemp("straight")
    assert run_experiment.main([*RUN_ARGS, "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("sig, delay", [(signal.SIGTERM, 0.1), (signal.SIGUSR1, 0.0)],
                         ids=["SIGTERM-mid-epoch", "SIGUSR1-at-epoch-end"])
def test_signal_checkpoints_and_resume_auto_continues_exactly(sig, delay, straight_run,
                                                              tmp_path, capsys):
    """Batches take >= 10 ms, an epoch >= 0.42 s: a signal 0.1 s after the
    first epoch's log line lands inside the second epoch; one sent at once
    usually lands in the first epoch's end-of-epoch work.  Either way the
    resumed run must match the uninterrupted one exactly."""
    out = tmp_path / "run"
    proc = _spawn("slow-cli", *RUN_ARGS, "--out", str(out), env_extra={"SLOW_STEP_S": "0.01"})
    read_until(proc, "epoch 1/5")
    time.sleep(delay)
    proc.send_signal(sig)
    rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == PREEMPTED_EXIT_CODE, rest
    name = signal.Signals(sig).name
    assert f"preempted: received {name}: stopped" in rest
    assert "saved checkpoint" in rest and "--resume auto" in rest
    assert not (out / "summary.json").exists()  # the run is not finished
    stopped_at = load_checkpoint(list_checkpoints(out / "checkpoints")[-1]).state
    assert 1 <= stopped_at.epoch < 5
    if delay:
        assert stopped_at.batch > 0, rest  # a mid-epoch checkpoint

    assert run_experiment.main(["--resume", "auto", "--out", str(out), "--threads", "1",
                                "--no-progress", "--quiet"]) == 0
    capsys.readouterr()
    assert _rows(out / "metrics.csv") == _rows(straight_run / "metrics.csv")
    final = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    reference = load_checkpoint(list_checkpoints(straight_run / "checkpoints")[-1])
    _assert_same_model(final.model, reference.model)
    assert final.streams_state == reference.streams_state
    assert final.state.best_test_acc == reference.state.best_test_acc
