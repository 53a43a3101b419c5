"""Subprocess side of tests/test_faults.py (not a test module).

    python tests/_fault_helper.py slow-cli ARGS...
        run_experiment.main(ARGS) with every mini-batch slowed down by
        $SLOW_STEP_S seconds, so that a signal sent from outside lands in
        the middle of training (results are unchanged: only time passes).

    python tests/_fault_helper.py kill-while-saving PATH
        save a checkpoint of a small model to PATH, print "saved", change the
        weights, and save to PATH again, printing "writing" and stalling
        once about half of the datasets are written: the test SIGKILLs the
        process there.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def slow_cli(argv: list[str]) -> int:
    import os

    import run_experiment
    from sparse_mlp.model import SparseMLP

    delay = float(os.environ.get("SLOW_STEP_S", "0.005"))
    train_step = SparseMLP.train_step

    def slow_step(self, *args, **kwargs):
        time.sleep(delay)
        return train_step(self, *args, **kwargs)

    SparseMLP.train_step = slow_step
    return run_experiment.main(argv)


def kill_while_saving(path: str) -> int:
    import h5py
    import numpy as np

    from sparse_mlp.checkpoint import save_checkpoint
    from sparse_mlp.config import TrainConfig
    from sparse_mlp.model import SparseMLP
    from sparse_mlp.training import RandomStreams, TrainState

    streams = RandomStreams(3)
    model = SparseMLP([30, 40, 40, 4], epsilon=6, activation="srelu", rng=streams.init,
                      n_threads=1)
    cfg = TrainConfig(hidden=[40, 40], epsilon=6, activation="srelu", alpha=None)
    save_checkpoint(path, cfg=cfg, model=model, state=TrainState(epoch=1, step=7),
                    streams=streams)
    print("saved", flush=True)

    for layer in model.layers:
        layer.data += np.float32(1.0)
    create_dataset = h5py.Group.create_dataset
    calls = []

    def stalling_create_dataset(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 12:
            print("writing", flush=True)
            time.sleep(60)
        return create_dataset(self, *args, **kwargs)

    h5py.Group.create_dataset = stalling_create_dataset
    save_checkpoint(path, cfg=cfg, model=model, state=TrainState(epoch=2, step=14),
                    streams=streams)
    print("finished (the test should have killed this process)", flush=True)
    return 1


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "slow-cli":
        sys.exit(slow_cli(rest))
    if mode == "kill-while-saving":
        sys.exit(kill_while_saving(rest[0]))
    sys.exit(f"unknown mode {mode!r}")
