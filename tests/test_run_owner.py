"""The run owner (sparse_mlp/run.py): one owner per run folder, with real
processes and real files.  Each test is a way a run folder used to lose
work or give a wrong answer silently."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _processes import read_until

import run_experiment
import sparse_mlp
from sparse_mlp.checkpoint import list_checkpoints, load_checkpoint
from sparse_mlp.config import TrainConfig
from sparse_mlp.errors import ConfigError
from sparse_mlp.run import Run, check_supported

HELPER = Path(__file__).with_name("_fault_helper.py")
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--hidden", "16,16", "--epochs", "2", "--threads", "1",
        "--no-progress", "--quiet"]


def _main(capsys, *args: str) -> tuple[int, str]:
    code = run_experiment.main(list(args))
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def _spawn_slow(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "SLOW_STEP_S": "0.02"}
    return subprocess.Popen([sys.executable, str(HELPER), "slow-cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_new_run_never_reuses_another_runs_folder(tmp_path, capsys):
    out = tmp_path / "reuse"
    assert _main(capsys, *TINY, "--out", str(out))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()
              if p.is_file() and p.name != ".run.lock"}
    first_ckpt = list_checkpoints(out / "checkpoints")

    code, text = _main(capsys, *TINY, "--hidden", "20,16", "--out", str(out))
    assert code == 2
    assert "holds the results of another run" in text
    assert "--resume auto" in text and "--overwrite" in text
    # nothing of the first run was touched
    assert {p.name: p.read_bytes() for p in out.iterdir()
            if p.is_file() and p.name != ".run.lock"} == before
    assert list_checkpoints(out / "checkpoints") == first_ckpt

    # explicitly replaced: the folder holds the new run only, and load() returns it
    assert _main(capsys, *TINY, "--hidden", "20,16", "--out", str(out), "--overwrite")[0] == 0
    assert sparse_mlp.load(out).sizes == [64, 20, 16, 10]
    assert json.loads((out / "config.json").read_text())["hidden"] == [20, 16]
    assert len(list_checkpoints(out / "checkpoints")) == 1


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "shared"
    proc = _spawn_slow("--dataset", "digits", "--hidden", "16,16", "--epochs", "50",
                       "--threads", "1", "--no-progress", "--out", str(out))
    try:
        read_until(proc, "epoch 1/50")
        code, text = _main(capsys, *TINY, "--out", str(out))
        assert code == 2
        assert "is in use by another run" in text and f"pid {proc.pid}" in text
        code, text = _main(capsys, *TINY, "--out", str(out), "--resume", "auto")
        assert code == 2 and f"pid {proc.pid}" in text
    finally:
        proc.kill()
        proc.wait(timeout=10)
    # the first run's files are its own: one JSON document, one header
    json.loads((out / "config.json").read_text())
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and not any(ln.startswith("epoch,") for ln in lines[1:])
    assert "\x00" not in (out / "metrics.csv").read_text()
    # the lock died with its holder: the same command line continues the run (from its
    # checkpoint, or from the start when it was killed before writing one)
    code, text = _main(capsys, "--dataset", "digits", "--hidden", "16,16", "--epochs", "50",
                       "--threads", "1", "--no-progress", "--quiet", "--out", str(out),
                       "--resume", "auto")
    assert code == 0, text
    assert json.loads((out / "summary.json").read_text())["epochs"] == 50


def test_resume_auto_with_only_damaged_checkpoints_refuses_every_time(tmp_path, capsys):
    out = tmp_path / "damaged"
    assert _main(capsys, *TINY, "--out", str(out), "--checkpoint-every", "1")[0] == 0
    for p in list_checkpoints(out / "checkpoints"):
        p.write_bytes(b"not a checkpoint")
    config = (out / "config.json").read_bytes()
    metrics = (out / "metrics.csv").read_bytes()
    for _ in range(2):  # the first call renames them aside; the second must still refuse
        code, text = _main(capsys, "--resume", "auto", "--out", str(out), "--quiet")
        assert code == 2, text
        assert "damaged" in text and ".corrupt" in text
    assert (out / "config.json").read_bytes() == config
    assert (out / "metrics.csv").read_bytes() == metrics


def test_resume_from_a_file_writes_beside_it_never_where_the_file_says(tmp_path, capsys):
    run_dir = tmp_path / "original"
    assert _main(capsys, *TINY, "--out", str(run_dir))[0] == 0
    metrics = (run_dir / "metrics.csv").read_bytes()
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    ckpt = elsewhere / "model.h5"
    ckpt.write_bytes(list_checkpoints(run_dir / "checkpoints")[-1].read_bytes())
    assert load_checkpoint(ckpt).cfg.out == str(run_dir)  # what the file says

    code, text = _main(capsys, "--resume", str(ckpt), "--epochs", "3", "--threads", "1",
                       "--quiet", "--no-progress")
    assert code == 0, text
    assert (run_dir / "metrics.csv").read_bytes() == metrics  # untouched
    assert len((elsewhere / "metrics.csv").read_text().splitlines()) == 1 + 3
    assert json.loads((elsewhere / "config.json").read_text())["out"] == str(elsewhere)
    assert load_checkpoint(list_checkpoints(elsewhere / "checkpoints")[-1]).state.epoch == 3


def test_resume_into_another_runs_folder_is_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _main(capsys, *TINY, "--out", str(a))[0] == 0
    assert _main(capsys, *TINY, "--out", str(b), "--seed", "1")[0] == 0
    code, text = _main(capsys, "--resume", str(list_checkpoints(a / "checkpoints")[-1]),
                       "--out", str(b), "--epochs", "3", "--quiet")
    assert code == 2 and "holds the results of another run" in text


@pytest.mark.parametrize("args, flag", [
    (["--width-scale", "0.5"], "--width-scale"),
    (["--rows", "relu"], "--rows"),
    (["--only-seed", "1"], "--only-seed"),
    (["--synthetic-shape"], "--synthetic-shape"),
    (["--seeds", "3"], "--seeds"),
])
def test_reproduce_flags_without_reproduce_are_refused(args, flag, tmp_path, capsys):
    code, text = _main(capsys, *TINY, "--out", str(tmp_path / "x"), *args)
    assert code == 2
    assert flag in text and "--reproduce" in text
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("change, flag", [
    ({"phase1_epochs": 3}, "--phase1-epochs 3"),
    ({"mpi_wait": "spin"}, "--mpi-wait spin"),
    ({"warmup_epochs": 2.0}, "--warmup-epochs 2.0"),
])
def test_sequential_runs_refuse_parallel_settings(change, flag):
    with pytest.raises(ConfigError, match=f"a sequential run does not use {flag}"):
        check_supported(TrainConfig(epochs=10, **change), "sparse")


@pytest.mark.parametrize("change, flag", [
    ({"diagnostics": True}, "--diagnostics"), ({"train_eval": 100}, "--train-eval"),
    ({"save_topology": True}, "--save-topology"), ({"growth": "momentum"}, "--growth"),
    ({"lr_fan_in_cap": 10.0}, "--lr-fan-in-cap"),
])
def test_parallel_runs_refuse_what_they_do_not_compute(change, flag):
    with pytest.raises(ConfigError, match=f"--parallel wasap does not use {flag}"):
        check_supported(TrainConfig(parallel="wasap", **change), "parallel")


@pytest.mark.parametrize("change, flag", [
    ({"importance_pruning": True}, "--importance-pruning"), ({"post_prune": [5.0]},
                                                             "--post-prune"),
    ({"evolution": True}, "--evolution"), ({"save_topology": True}, "--save-topology"),
])
def test_dense_runs_refuse_topology_settings(change, flag):
    with pytest.raises(ConfigError, match=f"a dense run does not use {flag}"):
        check_supported(TrainConfig(evolution=False).replace(**change), "dense")


def test_cli_flags_the_parallel_pipeline_ignores_are_refused_before_mpi(tmp_path, capsys):
    """--diagnostics under --parallel used to write a diagnostics.json of nulls."""
    code, text = _main(capsys, *TINY, "--out", str(tmp_path / "p"), "--parallel", "wasap",
                       "--diagnostics")
    assert code == 2
    assert "--diagnostics" in text


def test_reproduce_writes_into_runs_unless_told(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = _main(capsys, "--reproduce", "table2", "--dataset", "madelon",
                       "--synthetic-shape", "--epochs", "1", "--seeds", "1", "--rows", "relu",
                       "--threads", "1", "--quiet", "--no-progress")
    assert code == 0, text
    assert (tmp_path / "runs" / "madelon_synthetic_table2" / "table2.md").is_file()
    assert not (tmp_path / "results").exists()


def test_the_folder_lock_is_released_however_the_run_ends(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "r"), epochs=1)
    with pytest.raises(RuntimeError):
        with Run(cfg, "sparse"):
            raise RuntimeError("the pipeline failed")
    with Run(cfg, "sparse") as run:  # free again
        assert (run.out / ".run.lock").read_text().startswith("host ")


def test_out_naming_a_file_or_an_unwritable_folder_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    code, text = _main(capsys, *TINY, "--out", str(target))
    assert code == 2 and "is an existing file" in text
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        code, text = _main(capsys, *TINY, "--out", str(ro / "run"))
        assert code == 2 and "run folder" in text


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGHUP, 129)],
                         ids=["SIGINT", "SIGHUP"])
def test_sigint_and_sighup_checkpoint_then_exit(sig, code, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dataset", "digits", "--hidden", "16,16", "--epochs", "4", "--threads", "1",
            "--no-progress", "--checkpoint-every", "10", "--out", str(out)]
    proc = _spawn_slow(*args)
    read_until(proc, "epoch 1/4")
    proc.send_signal(sig)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == code, rest
    assert f"received {signal.Signals(sig).name}" in rest and "saved checkpoint" in rest
    ckpts = list_checkpoints(out / "checkpoints")
    assert ckpts, rest  # --checkpoint-every 10: only the stop wrote one
    stopped = load_checkpoint(ckpts[-1]).state
    assert 1 <= stopped.epoch < 4
    # ... and the run continues exactly where it stopped
    assert _main(capsys, "--resume", "auto", "--out", str(out), "--threads", "1",
                 "--quiet", "--no-progress")[0] == 0
    straight = tmp_path / "straight"
    assert _main(capsys, *args[:-2], "--out", str(straight), "--quiet")[0] == 0
    a = load_checkpoint(list_checkpoints(out / "checkpoints")[-1]).model
    b = load_checkpoint(list_checkpoints(straight / "checkpoints")[-1]).model
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.data, lb.data)


def test_resume_notices_one_relabelled_training_sample(tmp_path):
    """The resume check hashes every byte of the data, not a sample of rows."""
    from sklearn.datasets import load_digits

    from sparse_mlp.datasets import Dataset
    from sparse_mlp.errors import ConfigError as CfgError
    from sparse_mlp.experiment import run

    X, y = load_digits(return_X_y=True)
    X = ((X - X.mean(0)) / (X.std(0) + 1)).astype(np.float32)
    y = y.astype(np.int32)
    data = Dataset("d", X[:1200], y[:1200], X[1200:], y[1200:], list(range(10)))
    cfg = TrainConfig(hidden=[16, 16], epsilon=4, epochs=3, batch_size=32, threads=1,
                      checkpoint_every=1, out=str(tmp_path / "r"))
    run(cfg.replace(epochs=2), data=data, progress=False)
    y2 = y[:1200].copy()
    y2[1] = (y2[1] + 1) % 10  # row 1: not among any evenly spaced sample of 256 rows
    other = Dataset("d", X[:1200], y2, X[1200:], y[1200:], list(range(10)))
    with pytest.raises(CfgError, match="the data differ"):
        run(cfg, data=other, progress=False, resume="auto", overrides={"epochs": 3})
    assert run(cfg, data=data, progress=False, resume="auto",
               overrides={"epochs": 3})["epochs"] == 3


@pytest.mark.parametrize("alias, name", [("cifar-10", "cifar10"), ("CIFAR", "cifar10"),
                                         ("fashion-mnist", "fashionmnist"),
                                         ("fmnist", "fashionmnist"), ("Madelon", "madelon")])
def test_dataset_aliases_get_the_papers_preset(alias, name, capsys):
    """--dataset cifar-10 used to load CIFAR10 with the user-file preset
    (3072-1000-1000-1000-10, 100 epochs) instead of the paper's."""
    args = run_experiment.build_parser().parse_args(["--dataset", alias])
    from sparse_mlp.datasets import canonical_name
    args.dataset = canonical_name(args.dataset)
    cfg = run_experiment.config_from_args(args)
    assert cfg.dataset == name and cfg.preset == name
    code, text = _main(capsys, "--dataset", alias, "--dry-run")
    assert code == 0 and ("3072-4000-1000-4000-10" in text if name == "cifar10" else True)


def test_a_misspelled_flag_gets_a_suggestion_not_a_page_of_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        run_experiment.main(["--epoch", "3"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "did you mean --epochs?" in err and len(err.splitlines()) <= 3


def test_dry_run_with_resume_is_refused(tmp_path, capsys):
    code, text = _main(capsys, "--dry-run", "--resume", "auto", "--out", str(tmp_path / "r"))
    assert code == 2 and "--dry-run plans a new run" in text


def test_fewer_epochs_than_phase1_names_what_the_user_gave(tmp_path):
    from types import SimpleNamespace

    from sparse_mlp.run import resumed_config
    from sparse_mlp.training import TrainState

    saved = TrainConfig(parallel="wasap", epochs=1500, phase1_epochs=1050)
    ckpt = SimpleNamespace(cfg=saved, path=tmp_path / "ckpt.h5", state=TrainState(epoch=20))
    with pytest.raises(ConfigError, match=r"--epochs 1000 is shorter than phase 1 .*1050 of "
                                          r"its 1500 epochs.*--epochs 1050 or more"):
        resumed_config(ckpt, {"epochs": 1000}, tmp_path)


def test_evaluate_in_a_read_only_folder_still_reports(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    assert _main(capsys, *TINY, "--out", str(out))[0] == 0

    def read_only(path, obj):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("sparse_mlp.experiment.write_json", read_only)
    code, text = _main(capsys, "--evaluate", str(out), "--quiet")
    assert code == 0, text
    assert "test accuracy" in text and "written:" not in text


def test_out_on_a_read_only_filesystem_is_a_clear_error(tmp_path):
    """A real read-only mount (a private mount namespace; skipped where that is not
    permitted): exit 2 and one line naming the folder, no traceback."""
    import shutil

    mnt = tmp_path / "ro"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a read-only tmpfs")
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            f"mount -t tmpfs -o size=1m,ro none {mnt}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {probe.stderr.decode().strip()}")
    cmd = (f"mount -t tmpfs -o size=1m,ro none {mnt} && exec {sys.executable} "
           f"run_experiment.py --epochs 1 --hidden 8 --threads 1 --out {mnt}/run --quiet")
    r = subprocess.run(["unshare", "-m", "sh", "-c", cmd], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Read-only file system" in r.stderr and "Traceback" not in r.stderr
