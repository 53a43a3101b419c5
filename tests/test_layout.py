"""Where things live: the configuration works without the compiled kernels,
and each job has one home (initial topology, growth, the end of an epoch)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter in which every compiled module of the package
# (sparse_mlp._spmm, _activation, _topology, _growth, _parallel, ...) fails to
# import, as on a tree where `make` has not run yet.
NO_KERNELS = textwrap.dedent("""
    import importlib.abc
    import sys

    class NoKernels(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            parts = name.split(".")
            if parts[0] == "sparse_mlp" and any(p.startswith("_") and not p.startswith("__")
                                                for p in parts[1:]):
                raise ImportError(f"{name}: compiled modules are blocked in this test")
            return None

    sys.meta_path.insert(0, NoKernels())
    try:
        import sparse_mlp.kernels  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the block let the compiled kernels through")
    sys.modules.pop("sparse_mlp.kernels", None)
""")


def run_without_kernels(body: str) -> None:
    code = NO_KERNELS + textwrap.dedent(body) + textwrap.dedent("""
        loaded = sorted(m for m in sys.modules if m.startswith("sparse_mlp."))
        compiled = [m for m in loaded if m.rsplit(".", 1)[1].startswith("_")]
        assert not compiled, compiled
        print("ok", loaded)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok"), proc.stdout


def test_config_without_kernels():
    run_without_kernels("""
        import json
        from sparse_mlp.config import TrainConfig
        from sparse_mlp.errors import ConfigError

        cfg = TrainConfig(hidden=[30, 20], activation="allrelu", alpha=0.5,
                          weight_init="xavier", output_init="zero", growth="momentum",
                          density_allocation="erk", importance_pruning=True)
        cfg.validate()
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
        assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
        try:
            TrainConfig(activation="swish", weight_init="zero").validate()
        except ConfigError as exc:
            assert "--activation" in str(exc) and "--output-init zero" in str(exc), exc
        else:
            raise AssertionError("an unknown activation was accepted")
        import sparse_mlp
        assert sparse_mlp.TrainConfig is TrainConfig
    """)


def test_presets_without_kernels():
    run_without_kernels("""
        from sparse_mlp.config import TrainConfig
        from sparse_mlp.presets import PAPER_DATASETS, PRESETS, preset_for

        assert set(PAPER_DATASETS) <= set(PRESETS)
        for name in [*PRESETS, "my_data.csv"]:
            preset, fields = preset_for(name)
            cfg = TrainConfig(dataset=name, preset=preset, **fields)
            cfg.validate()
            assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    """)


def test_one_home_per_job():
    from sparse_mlp import estimator, growth, initial_topology

    # the initial topology has its own module; growth.py is regrowth only
    for name in ("layer_densities", "initial_layers"):
        assert hasattr(initial_topology, name)
        assert not hasattr(growth, name), name
    # the estimator's end of epoch is epoch.py's: no schedule of its own
    for name in ("importance_prune", "set_step", "evolve_with_growth"):
        assert not hasattr(estimator, name), name
