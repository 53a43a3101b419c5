"""The command: ``sparse-mlp`` / ``python -m sparse_mlp`` / ``run_experiment.py``
are one parser; subcommands are the flat flags; the default data directory
does not depend on where the command runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_mlp import cli
from sparse_mlp.datasets import default_data_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, flat", [
    (["train", "--epochs", "2"], ["--epochs", "2"]),
    (["predict", "new.csv", "--model", "runs/x"], ["--predict", "new.csv", "--model", "runs/x"]),
    (["evaluate", "a.h5", "--threads", "1"], ["--evaluate", "a.h5", "--threads", "1"]),
    (["reproduce", "table2", "--dataset", "madelon"],
     ["--reproduce", "table2", "--dataset", "madelon"]),
    (["--epochs", "2"], ["--epochs", "2"]),  # the flat form as it is
    ([], []),
])
def test_subcommands_are_the_flat_flags(argv, flat):
    assert cli.expand_subcommand(argv) == flat


def test_subcommand_without_its_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.expand_subcommand(["predict", "--model", "runs/x"])
    assert exc.value.code == 2
    assert "predict needs FILE first" in capsys.readouterr().err


def test_subcommand_and_flat_form_train_the_same(tmp_path):
    """A real run through each form: same flags, same best accuracy."""
    flags = ["--epochs", "2", "--hidden", "32", "--threads", "1", "--quiet", "--no-progress"]
    assert cli.main(["train", *flags, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*flags, "--out", str(tmp_path / "b")]) == 0
    import json
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["best_test_acc"] == b["best_test_acc"] and a["nnz_end"] == b["nnz_end"]


def test_python_dash_m_and_wrapper_share_the_parser(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSE_MLP_DATA_DIR", raising=False)  # (here and in the child)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "sparse_mlp", "--help"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m sparse_mlp")
    assert "--parallel-semantics" in out.stdout
    assert f"datasets in {default_data_dir()}" in out.stdout.replace("\n", " ")
    wrap = subprocess.run([sys.executable, str(ROOT / "run_experiment.py"), "--help"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert wrap.returncode == 0
    # the same flags, whatever the program's name
    def flags(text):
        return text.split("options:")[1].split("presets (")[0]

    assert flags(wrap.stdout) == flags(out.stdout) and "--epochs" in flags(out.stdout)
    bad = subprocess.run([sys.executable, "-m", "sparse_mlp", "reproduce"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "reproduce needs TABLE first" in bad.stderr


def test_default_data_dir_env_then_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_MLP_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("SPARSE_MLP_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    got = default_data_dir()
    # platformdirs and the XDG fallback agree on Linux: $XDG_CACHE_HOME/sparse_mlp
    if sys.platform.startswith("linux"):
        assert got == tmp_path / "xdg" / "sparse_mlp"
    import builtins
    real_import = builtins.__import__

    def no_platformdirs(name, *args, **kwargs):
        if name == "platformdirs":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_platformdirs)
    assert default_data_dir() == tmp_path / "xdg" / "sparse_mlp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == tmp_path / "home" / ".cache" / "sparse_mlp"
