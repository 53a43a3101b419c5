"""The sequential training loop (SET-MLP, REFERENCE.md), top to bottom.

Each epoch, in this order:
  1. shuffle the training set (the run's shuffle stream);
  2. mini-batches of exactly B samples (the tail is dropped, as the
     reference does): gather -> forward -> backward -> momentum update;
  3. finite check (a diverged run stops with a clear message);
  4. test-set evaluation (every ``eval_every`` epochs and the last);
  5. topology evolution, after every epoch except the last, on every weight
     matrix except the last: Importance Pruning first when the schedule
     says so (e % ip_every == 0 and e > ip_start), then the SET step;
  6. one metrics row: to the history, the CSV, the log / progress bar.

Training loss and accuracy are running means over the epoch's mini-batches
(with dropout, i.e. what is optimised); the reference code instead runs a
second, dropout-free pass over the training set.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .config import TrainConfig
from .errors import ConfigError, DivergenceError
from .evolution import importance_prune, set_step
from .kernels import spmm
from .model import SparseMLP

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "nnz",
                  "train_s", "test_s", "evolution_s")


class RandomStreams:
    """Independent random streams of a run, all from one seed.

    ``init`` (topology and values), ``evolution`` (SET regrowth),
    ``shuffle`` (epoch order); dropout masks are a counter-based hash of
    (``dropout_seed``, step, layer, neuron, sample).  None depends on the
    thread count.
    """

    NAMES = ("init", "evolution", "shuffle")

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        children = np.random.SeedSequence(self.seed).spawn(len(self.NAMES))
        for name, child in zip(self.NAMES, children):
            setattr(self, name, np.random.Generator(np.random.PCG64(child)))
        self.dropout_seed = self.seed

    def state(self) -> dict:
        return {name: getattr(self, name).bit_generator.state for name in self.NAMES}

    def set_state(self, state: dict) -> None:
        for name in self.NAMES:
            getattr(self, name).bit_generator.state = state[name]


@dataclass
class TrainState:
    """Where a run is: everything the loop needs to continue."""

    epoch: int = 0                      # next epoch to run (0-based)
    step: int = 0                       # mini-batches done since the start
    history: list[dict] = field(default_factory=list)
    best_test_acc: float = -1.0
    best_epoch: int = -1


def ip_due(cfg: TrainConfig, epoch: int) -> bool:
    """Importance Pruning at the end of ``epoch`` (reference schedule)."""
    return (cfg.importance_pruning and epoch > cfg.ip_start and epoch % cfg.ip_every == 0)


class Trainer:
    """Runs the epoch loop of one model on one dataset.

    Parameters
    ----------
    cfg : TrainConfig
    model : SparseMLP
    X_train, y_train, X_test, y_test : ndarray
        float32 sample-major features, int32 labels.
    streams : RandomStreams
    on_epoch : callable, optional
        Called with each metrics row (dict) after it is complete.
    """

    def __init__(self, cfg: TrainConfig, model: SparseMLP, X_train: np.ndarray,
                 y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 streams: RandomStreams, on_epoch: Callable[[dict], None] | None = None,
                 state: TrainState | None = None) -> None:
        if X_train.shape[0] < cfg.batch_size:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} is larger than the training set "
                f"({X_train.shape[0]} samples); use a batch of at most {X_train.shape[0]}")
        self.cfg = cfg
        self.model = model
        self.X_train = np.ascontiguousarray(X_train, dtype=np.float32)
        self.y_train = np.ascontiguousarray(y_train, dtype=np.int32)
        self.X_test = np.ascontiguousarray(X_test, dtype=np.float32)
        self.y_test = np.ascontiguousarray(y_test, dtype=np.int32)
        self.streams = streams
        self.on_epoch = on_epoch
        self.state = state or TrainState()
        self._xb = np.empty((model.sizes[0], cfg.batch_size), dtype=np.float32)

    @property
    def n_batches(self) -> int:
        return self.X_train.shape[0] // self.cfg.batch_size

    # ------------------------------------------------------------------ pieces
    def train_epoch(self) -> tuple[float, float, float]:
        """Steps 1-2: one pass over the shuffled training set.
        Returns (mean loss, accuracy, seconds)."""
        cfg, model = self.cfg, self.model
        B = cfg.batch_size
        t0 = time.perf_counter()
        order = self.streams.shuffle.permutation(self.X_train.shape[0])
        loss_sum = 0.0
        correct = 0
        xb = self._xb
        for b in range(self.n_batches):
            idx = order[b * B:(b + 1) * B]
            spmm.gather_columns(self.X_train, idx, xb, n_threads=model.n_threads)
            keys = model.dropout_keys(self.streams.dropout_seed, self.state.step)
            loss, c = model.train_step(xb, self.y_train[idx], cfg.lr, cfg.momentum, cfg.decay,
                                       keys, nesterov=cfg.nesterov)
            loss_sum += loss
            correct += c
            self.state.step += 1
        n = self.n_batches * B
        return loss_sum / n, correct / n, time.perf_counter() - t0

    def check_finite(self, epoch: int, loss: float) -> None:
        """Step 3: stop a diverged run with a message that says what to do."""
        bad = [i for i, lay in enumerate(self.model.layers)
               if not (np.isfinite(lay.data).all() and np.isfinite(lay.bias).all())]
        if math.isfinite(loss) and not bad:
            return
        where = (f"; non-finite weights in layer(s) {', '.join(str(i + 1) for i in bad)} "
                 f"(1 = input -> first hidden)") if bad else ""
        raise DivergenceError(
            f"training diverged in epoch {epoch}: the training loss is {loss}{where}. "
            f"Lower the learning rate (--lr, now {self.cfg.lr}) or the initial weight scale "
            f"(--weight-init), or check the input data for extreme values.")

    def evaluate(self) -> tuple[float, float, float]:
        """Step 4: (test loss, test accuracy, seconds)."""
        t0 = time.perf_counter()
        loss, acc = self.model.evaluate(self.X_test, self.y_test,
                                        batch_size=self.cfg.eval_batch_size)
        return loss, acc, time.perf_counter() - t0

    def evolve(self, epoch: int) -> float:
        """Step 5: Importance Pruning (when due) then SET on every weight
        matrix but the last.  Returns seconds."""
        cfg, model = self.cfg, self.model
        t0 = time.perf_counter()
        prune = ip_due(cfg, epoch)
        for layer in model.layers[:-1]:
            if prune:
                n_removed, dead = importance_prune(layer, cfg.ip_percentile,
                                                   n_threads=model.n_threads)
                log.debug("epoch %d: importance pruning removed %d weights (%d neurons)",
                          epoch, n_removed, int(dead.sum()))
            if cfg.evolution:
                set_step(layer, cfg.zeta, self.streams.evolution, n_threads=model.n_threads)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ loop
    def run(self, progress: bool | None = None) -> TrainState:
        """Train from ``state.epoch`` to ``cfg.epochs``."""
        cfg, st = self.cfg, self.state
        if progress is None:
            progress = sys.stderr.isatty()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.epochs, initial=st.epoch, unit="epoch", dynamic_ncols=True,
                       desc="training")
        try:
            for epoch in range(st.epoch, cfg.epochs):
                train_loss, train_acc, train_s = self.train_epoch()
                self.check_finite(epoch, train_loss)
                last = epoch == cfg.epochs - 1
                test_loss = test_acc = float("nan")
                test_s = 0.0
                if last or (epoch + 1) % cfg.eval_every == 0:
                    test_loss, test_acc, test_s = self.evaluate()
                    if test_acc > st.best_test_acc:
                        st.best_test_acc, st.best_epoch = test_acc, epoch
                evolution_s = 0.0 if last else self.evolve(epoch)
                row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                       "test_loss": test_loss, "test_acc": test_acc, "nnz": self.model.nnz,
                       "train_s": train_s, "test_s": test_s, "evolution_s": evolution_s}
                st.history.append(row)
                st.epoch = epoch + 1
                if self.on_epoch is not None:
                    self.on_epoch(row)
                msg = (f"epoch {epoch + 1}/{cfg.epochs} loss {train_loss:.4f} "
                       f"acc {100 * train_acc:.2f}% | test loss {test_loss:.4f} "
                       f"acc {100 * test_acc:.2f}% (best {100 * st.best_test_acc:.2f}%) | "
                       f"nnz {row['nnz']} | {train_s:.2f}s train {test_s:.2f}s test "
                       f"{evolution_s:.3f}s evolution")
                if bar is not None:
                    bar.set_postfix_str(f"test {100 * test_acc:.2f}% best "
                                        f"{100 * st.best_test_acc:.2f}% nnz {row['nnz']}",
                                        refresh=False)
                    bar.update(1)
                    log.debug(msg)
                else:
                    log.info(msg)
        finally:
            if bar is not None:
                bar.close()
        return st
