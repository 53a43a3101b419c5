"""The sequential training loop (SET-MLP), top to bottom.

Each epoch, in this order:
  1. shuffle the training set (the run's shuffle stream);
  2. mini-batches of exactly B samples (the tail is dropped, as the
     reference does): gather -> forward -> backward -> momentum update;
     a non-finite batch loss stops the run at once (divergence), and a
     stop request (SIGTERM / SIGUSR1 / SIGINT / SIGHUP, see :func:`stop_on_signals`) stops it
     after the current batch with a checkpoint;
  3-5. the end of the epoch shared with every other loop (``epoch.py``):
     finite check of every weight (a diverged run stops with a clear
     message); test-set evaluation (every ``eval_every`` epochs and the
     last); topology evolution, after every epoch except the last, on every
     weight matrix except the last: Importance Pruning first when the
     schedule says so (e % ip_every == 0 and e > ip_start), then the SET step;
  6. one metrics row: to the history, the CSV, the log / progress bar;
  7. a checkpoint when one is due (:meth:`Trainer.checkpoint_due`), or when
     a stop was requested during steps 3-6.

Training loss and accuracy are running means over the epoch's mini-batches
(with dropout, i.e. what is optimised); the reference code instead runs a
second, dropout-free pass over the training set.

Exact resume: everything the loop reads is in :class:`TrainState` (epoch,
step, batch within the epoch and the epoch's running sums, history, best),
in the model (weights, momentum, SReLU parameters) and in the random
streams.  A checkpoint taken in the middle of an epoch stores the shuffle
stream as it was *before* that epoch's permutation (:meth:`Trainer.streams_state`),
so the resumed run draws the same permutation and skips the batches done.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .augment import check_augment, gather_batch
from .config import TrainConfig
from .epoch import GrowthData, end_of_epoch, evolve_topology, ip_due, nonfinite_parts  # noqa: F401
from .errors import ConfigError, DivergenceError, SparseMLPError
from .kernels import aligned_empty, spmm
from .model import SparseMLP
from .schedule import decay_at, lr_at

log = logging.getLogger(__name__)

# a progress line at most this often inside an epoch (only long epochs show one)
PROGRESS_SECONDS = 60.0

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "nnz",
                  "train_s", "test_s", "evolution_s", "train_eval_loss", "train_eval_acc",
                  "train_eval_s")
TIMING_COLUMNS = ("train_s", "test_s", "evolution_s", "val_s")
# --task regression: the test metrics beside test_loss (test_acc and train_acc are
# empty); RMSE and MAE in the targets' original units; the best epoch by test_r2
REGRESSION_COLUMNS = ("test_r2", "test_rmse", "test_mae")
# --val-fraction: the validation set's loss, accuracy and seconds (the best epoch's choice)
VAL_COLUMNS = ("val_loss", "val_acc", "val_s")


def metric_columns(cfg) -> tuple[str, ...]:
    """The metrics.csv columns of a run: :data:`METRIC_COLUMNS`, plus
    :data:`REGRESSION_COLUMNS` for ``task == "regression"``."""
    cols = METRIC_COLUMNS
    if getattr(cfg, "task", "classification") == "regression":
        cols = cols + REGRESSION_COLUMNS
    if getattr(cfg, "val_fraction", None) is not None:  # --val-fraction: the validation set
        cols = cols + VAL_COLUMNS + (tuple("val_" + c[5:] for c in REGRESSION_COLUMNS)
                                     if getattr(cfg, "task", "") == "regression" else ())
    if getattr(cfg, "lr_schedule", "constant") != "constant":  # the epoch's learning rate
        cols = cols + ("lr",)
    return cols


def class_weights(y: np.ndarray, mode: str | None, n_classes: int | None = None
                  ) -> np.ndarray | None:
    """Per-class weights of ``class_weight`` = ``mode``: None, or 'balanced'
    (scikit-learn's: n_samples / (n_classes * count of the class), so the
    weights average 1 over the training set), float32 (n_classes,)."""
    if mode is None:
        return None
    if mode != "balanced":
        raise ConfigError(f"class_weight must be None or 'balanced', got {mode!r}")
    counts = np.bincount(np.asarray(y, dtype=np.int64),
                         minlength=n_classes or 0).astype(np.float64)
    k = int((counts > 0).sum())
    w = np.where(counts > 0, y.shape[0] / (k * np.maximum(counts, 1.0)), 0.0)
    return w.astype(np.float32)
# cfg.diagnostics: extra keys of every metrics row (Trainer.gradient_flow and
# Trainer.connectivity; drawn by figures.py)
DIAGNOSTIC_KEYS = ("grad_flow", "grad_flow_layers", "nnz_layers", "in_degree")
# ... the gradient flow is measured on this many training samples (a multiple of B)
GRAD_FLOW_SAMPLES = 256

# --checkpoint-every unset: a checkpoint at the end of the first epoch that
# finishes this many seconds after the previous one (and after the last epoch)
AUTO_CHECKPOINT_SECONDS = 600.0

# exit status of a run stopped by a signal after saving a checkpoint: SIGTERM /
# SIGUSR1 (what batch schedulers send before a time limit) give EX_TEMPFAIL of
# sysexits.h, "temporary failure, try again" (--resume auto); SIGINT (Ctrl-C)
# and SIGHUP (the terminal went away) give the shell's 128 + signal number
PREEMPTED_EXIT_CODE = 75
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT", "SIGHUP")
SIGNAL_EXIT_CODES = {"SIGINT": 130, "SIGHUP": 129}


def stop_exit_code(signum: int | None) -> int:
    """The exit status of a run stopped (with a checkpoint) by ``signum``."""
    try:
        name = signal.Signals(signum).name if signum is not None else ""
    except ValueError:
        name = ""
    return SIGNAL_EXIT_CODES.get(name, PREEMPTED_EXIT_CODE)


class PreemptedError(SparseMLPError):
    """The run stopped on a signal after saving a checkpoint.

    Attributes
    ----------
    checkpoint : pathlib.Path or None
        The checkpoint written before stopping.
    exit_code : int
        75 for SIGTERM / SIGUSR1, 130 for SIGINT, 129 for SIGHUP.
    """

    exit_code = PREEMPTED_EXIT_CODE

    def __init__(self, message: str, checkpoint: Path | None = None,
                 signum: int | None = None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.signum = signum
        self.exit_code = stop_exit_code(signum)

    def continued(self, advice: str) -> PreemptedError:
        """The same stop, with the advice on how to continue appended."""
        return PreemptedError(f"{self}. {advice}", self.checkpoint, self.signum)


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
        """Every stream's bit-generator state (plain dicts, JSON-serialisable)."""
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
    best_epoch: int = -1                # the selected epoch: best test (paper), or best
    #                                     validation score with --val-fraction
    best_test_epoch: int = -1           # the epoch of best_test_acc
    best_val_score: float = -1.0        # --val-fraction: the validation score at best_epoch
    # inside epoch ``epoch`` (non-zero only in a checkpoint taken mid-epoch)
    batch: int = 0                      # mini-batches of this epoch already done
    epoch_loss_sum: float = 0.0         # their summed loss ...
    epoch_correct: int = 0              # ... correct predictions ...
    epoch_train_s: float = 0.0          # ... and training seconds


class StopRequest:
    """A request to stop after the current mini-batch (and checkpoint).

    Set by the signal handlers of :func:`stop_on_signals`, or by hand
    (:meth:`request`).  The handler only records the signal: everything
    else (logging, saving) happens in the loop, between batches.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        if self.signum is None:
            return "none"
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    def request(self, signum: int = signal.SIGTERM) -> None:
        if self.signum is None:
            self.signum = int(signum)

    def _handler(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, without a checkpoint
        self.request(signum)


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest, names: tuple[str, ...] = STOP_SIGNALS
                    ) -> Iterator[StopRequest]:
    """Turn SIGTERM and SIGUSR1 (what SLURM sends before a time limit), SIGINT
    (Ctrl-C; a second one stops at once, without a checkpoint) and SIGHUP into
    a stop request for the duration of the block; the previous handlers come
    back afterwards.  Outside the main thread (where Python cannot install
    handlers) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {}
    for name in names:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, stop._handler)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def checkpoint_due(cfg: TrainConfig, epoch: int, last_checkpoint_time: float) -> bool:
    """The checkpoint schedule of every trainer (sequential and parallel):
    after the last epoch, every ``cfg.checkpoint_every`` epochs, or (unset)
    when :data:`AUTO_CHECKPOINT_SECONDS` have passed since
    ``last_checkpoint_time`` (``time.perf_counter``); never with 0."""
    every = cfg.checkpoint_every
    if every == 0:
        return False
    if epoch == cfg.epochs - 1:
        return True
    if every is None:
        return time.perf_counter() - last_checkpoint_time >= AUTO_CHECKPOINT_SECONDS
    return (epoch + 1) % every == 0


class Trainer:
    """Runs the epoch loop of one model on one dataset.

    Parameters
    ----------
    cfg : TrainConfig
    model : SparseMLP
    X_train, y_train, X_test, y_test : ndarray
        float32 sample-major features, int32 labels (``cfg.task ==
        "regression"``: float32 targets (n,) or (n, k), standardised).
    streams : RandomStreams
    on_epoch : callable, optional
        Called with each metrics row (dict) after it is complete.
    state : TrainState, optional
        Continue from this state (a checkpoint's) instead of the start.
    on_checkpoint : callable, optional
        ``on_checkpoint(trainer, reason) -> path or None`` writes a
        checkpoint of the trainer's current state; ``reason`` is
        "scheduled", "final" or "preempted".  Without it no checkpoint is
        written (and a stop request stops without one).
    stop : StopRequest, optional
        Polled after every mini-batch and at the end of every epoch.
    target_std : float or ndarray, optional
        Regression: the targets' standardisation scale, so that test RMSE and
        MAE are reported in the original units.
    X_val, y_val : ndarray, optional
        ``--val-fraction``: the validation set, evaluated with the test set;
        the best epoch is chosen on it (``epoch.end_of_epoch``).
    on_best : callable, optional
        ``on_best(trainer, epoch, columns)`` (the epoch's evaluation
        columns): called when ``epoch`` becomes the best
        epoch chosen on the validation set (``cfg.keep_best == "test"``
        without one: the best test epoch), after its evaluation and before
        its evolution step (the model that was evaluated): the run owner
        writes ``checkpoints/best.h5`` there.
    """

    def __init__(self, cfg: TrainConfig, model: SparseMLP, X_train: np.ndarray,
                 y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 streams: RandomStreams, on_epoch: Callable[[dict], None] | None = None,
                 state: TrainState | None = None,
                 on_checkpoint: Callable[[Trainer, str], Path | None] | None = None,
                 stop: StopRequest | None = None, target_std=None,
                 X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                 on_best: Callable[[Trainer, int, dict], Path | None] | None = None) -> None:
        if X_train.shape[0] < cfg.batch_size:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} is larger than the training set "
                f"({X_train.shape[0]} samples); use a batch of at most {X_train.shape[0]}")
        self.cfg = cfg
        self.model = model
        model.lr_fan_in_cap = cfg.lr_fan_in_cap  # (a loaded checkpoint's model too)
        self.X_train = np.ascontiguousarray(X_train, dtype=np.float32)
        self.regression = getattr(cfg, "task", "classification") == "regression"
        ydtype = np.float32 if self.regression else np.int32
        self.y_train = np.ascontiguousarray(y_train, dtype=ydtype)
        self.X_test = np.ascontiguousarray(X_test, dtype=np.float32)
        self.y_test = np.ascontiguousarray(y_test, dtype=ydtype)
        self.target_std = target_std
        self.X_val = None if X_val is None else np.ascontiguousarray(X_val, dtype=np.float32)
        self.y_val = None if y_val is None else np.ascontiguousarray(y_val, dtype=ydtype)
        self.on_best = on_best
        # --class-weight balanced: each training sample's weight, handed to the loss kernel
        cw = None if self.regression else class_weights(self.y_train, cfg.class_weight,
                                                          model.sizes[-1])
        self.w_train = None if cw is None else cw[self.y_train]
        self.streams = streams
        self.on_epoch = on_epoch
        self.on_checkpoint = on_checkpoint
        self.stop = stop
        self.state = state or TrainState()
        if self.state.batch > self.n_batches:
            raise ConfigError(
                f"the saved state is at batch {self.state.batch} of epoch "
                f"{self.state.epoch + 1}, but the training set has only {self.n_batches} "
                f"batches of {cfg.batch_size}: the data or --batch-size differ from the run's")
        check_augment(getattr(cfg, "augment", None), self.X_train.shape[1])
        self._xb = aligned_empty((model.sizes[0], cfg.batch_size))
        # the shuffle stream before the current epoch's permutation (mid-epoch checkpoints)
        self._epoch_shuffle_state = streams.shuffle.bit_generator.state
        self._last_checkpoint_time = time.perf_counter()

    @property
    def n_batches(self) -> int:
        return self.X_train.shape[0] // self.cfg.batch_size

    def streams_state(self) -> dict:
        """The random streams as a checkpoint must store them: mid-epoch, the
        shuffle stream as it was before this epoch's permutation."""
        state = self.streams.state()
        if self.state.batch > 0:
            state["shuffle"] = self._epoch_shuffle_state
        return {**state, "seed": self.streams.seed, "dropout_seed": self.streams.dropout_seed}

    # ------------------------------------------------------------------ pieces
    def train_epoch(self) -> tuple[float, float, float]:
        """Steps 1-2: one pass over the shuffled training set (or the rest of
        it, after a mid-epoch checkpoint).  Returns (mean loss, accuracy,
        seconds); raises :class:`PreemptedError` on a stop request and
        :class:`DivergenceError` on a non-finite batch loss."""
        cfg, model, st = self.cfg, self.model, self.state
        B = cfg.batch_size
        t0 = time.perf_counter()
        self._epoch_shuffle_state = self.streams.shuffle.bit_generator.state
        order = self.streams.shuffle.permutation(self.X_train.shape[0])
        xb = self._xb
        last_log, first = t0, st.batch
        lr = lr_at(cfg, st.epoch)  # --lr-schedule (schedule.py); constant: cfg.lr itself
        decay = decay_at(cfg, lr)
        for b in range(st.batch, self.n_batches):
            idx = order[b * B:(b + 1) * B]
            # --augment: shifted / flipped images, drawn from (seed, step, position)
            gather_batch(self.X_train, idx, xb, cfg.augment, self.streams.dropout_seed, st.step,
                         n_threads=model.n_threads)
            keys = model.dropout_keys(self.streams.dropout_seed, st.step)
            loss, c = model.train_step(xb, self.y_train[idx], lr, cfg.momentum, decay,
                                       keys, nesterov=cfg.nesterov, micro_batch=cfg.micro_batch,
                                       sample_weight=None if self.w_train is None
                                       else self.w_train[idx])
            st.epoch_loss_sum += loss
            st.epoch_correct += c
            st.step += 1
            st.batch = b + 1
            if not math.isfinite(loss):
                self.diverged(st.epoch, loss, xb, batch=b)
            if self.stop is not None and self.stop.requested:
                st.epoch_train_s += time.perf_counter() - t0
                self.preempt()
            now = time.perf_counter()
            if now - last_log >= PROGRESS_SECONDS and b + 1 < self.n_batches:
                last_log = now  # long epochs (large models): a line every minute
                per_batch = (now - t0) / (b + 1 - first)
                log.info("epoch %d: batch %d/%d, running loss %.4f, %.2fs per batch, "
                         "epoch ends in about %.0fs", st.epoch + 1, b + 1, self.n_batches,
                         st.epoch_loss_sum / ((b + 1) * B), per_batch,
                         per_batch * (self.n_batches - b - 1))
        n = self.n_batches * B
        seconds = st.epoch_train_s + time.perf_counter() - t0
        acc = math.nan if self.regression else st.epoch_correct / n
        return st.epoch_loss_sum / n, acc, seconds

    def check_finite(self, epoch: int, loss: float) -> None:
        """Step 3: stop a diverged run with a message that says what to do."""
        if math.isfinite(loss) and not nonfinite_parts(self.model):
            return
        self.diverged(epoch, loss)

    def diverged(self, epoch: int, loss: float, xb: np.ndarray | None = None,
                 batch: int | None = None) -> None:
        """Raise :class:`DivergenceError` naming the epoch (and batch), the
        layers whose weights (or, when those are finite, activations) hold
        NaN or inf, and what to change."""
        where = f"epoch {epoch + 1}" + (f", batch {batch + 1}/{self.n_batches}"
                                        if batch is not None else "")
        found = nonfinite_parts(self.model)
        if not found and xb is not None:
            found = nonfinite_activation(self.model, xb)
        what = f"; NaN or inf in {', '.join(found)}" if found else ""
        raise DivergenceError(
            f"training diverged in {where} (step {self.state.step}): the training loss is "
            f"{loss}{what}. Lower the learning rate (--lr, now {self.cfg.lr}) or the initial "
            f"weight scale (--weight-init), or check the input data for extreme values.")

    def evaluate(self, X=None, y=None) -> tuple[float, float, float]:
        """Step 4: (test loss, test accuracy, seconds); on ``X``, ``y`` if given."""
        t0 = time.perf_counter()
        tight = self.cfg.activation_memory == "lean"
        if tight:  # large models: training and evaluation blocks never coexist
            self.model.release_buffers()
        loss, acc = self.model.evaluate(self.X_test if X is None else X,
                                        self.y_test if y is None else y,
                                        batch_size=self.cfg.eval_batch_size)
        if tight:
            self.model.release_buffers()
        return loss, acc, time.perf_counter() - t0

    def test_metrics(self, X=None, y=None) -> tuple:
        """Step 4 as ``epoch.end_of_epoch`` takes it: (test loss, accuracy);
        for regression (test loss, NaN, {test_r2, test_rmse, test_mae}),
        RMSE and MAE in the targets' original units.  On ``X``, ``y`` (the
        validation set) if given."""
        if not self.regression:
            return self.evaluate(X, y)[:2]
        m = self.model.regression_metrics(self.X_test if X is None else X,
                                          self.y_test if y is None else y,
                                          self.cfg.eval_batch_size,
                                          target_std=self.target_std)
        return m["loss"], math.nan, {"test_r2": m["r2"], "test_rmse": m["rmse"],
                                     "test_mae": m["mae"]}

    def train_eval(self) -> tuple[float, float, float]:
        """With ``cfg.train_eval`` = N: (loss, accuracy, seconds) without
        dropout on the first N training samples (a view, never a copy of the
        data), with the weights the test set sees.  The running training loss
        is measured with dropout on weights that change during the epoch; this
        one is comparable from epoch to epoch.  It reads no random stream."""
        n = min(self.cfg.train_eval, self.X_train.shape[0])
        return self.evaluate(self.X_train[:n], self.y_train[:n])

    def growth_data(self) -> GrowthData | None:
        """What gradient / momentum growth probes (None for SET's random regrowth)."""
        if self.cfg.growth == "random":
            return None
        return GrowthData(self.X_train, self.y_train, self.streams.dropout_seed,
                          self.state.step)

    def evolve(self, epoch: int) -> float:
        """Step 5 alone (benchmarks, tests): Importance Pruning when due, then
        SET or growth, on every weight matrix but the last.  Returns seconds."""
        t0 = time.perf_counter()
        evolve_topology(self.cfg, self.model, epoch, self.streams.evolution, self.growth_data())
        return time.perf_counter() - t0

    def gradient_flow(self) -> dict:
        """Diagnostics: the gradient flow (paper Figure 5), the squared L2 norm
        of the loss gradient w.r.t. every weight and bias (and SReLU
        parameter), in total and per layer, on a fixed set of
        :data:`GRAD_FLOW_SAMPLES` training samples (evenly spaced rows),
        without dropout and without updating anything.  It reads no random
        stream and changes no weight, so training goes on exactly as without
        it; its time is in no timing column."""
        model, B = self.model, self.cfg.batch_size
        if getattr(self, "_gf_batch", None) is None:
            n = min(self.n_batches, max(1, GRAD_FLOW_SAMPLES // B)) * B
            rows = np.linspace(0, self.X_train.shape[0] - 1, n).round().astype(np.int64)
            xg = np.empty((model.sizes[0], n), dtype=np.float32)
            spmm.gather_columns(self.X_train, rows, xg, n_threads=model.n_threads)
            self._gf_batch = (xg, np.ascontiguousarray(self.y_train[rows]))
        xg, yg = self._gf_batch
        rate, model.dropout = model.dropout, 0.0
        try:
            _, grads, sgs = model.gradients(xg, yg, model.dropout_keys(0, 0), micro_batch=B)
        finally:
            model.dropout = rate
        per_layer = [float(np.dot(g, g)) + float(np.dot(bg, bg)) for g, bg in grads]
        extra = sum(float(np.dot(s.ravel(), s.ravel())) for s in sgs if s is not None)
        return {"grad_flow": float(sum(per_layer) + extra), "grad_flow_layers": per_layer}

    def connectivity(self) -> dict:
        """Diagnostics: nnz of every layer and, for a sparse model, the number
        of connections of every input neuron (the input layer's in-degree)."""
        first = self.model.layers[0]
        out = {"nnz_layers": self.model.nnz_per_layer()}
        if hasattr(first, "t_indptr"):
            out["in_degree"] = np.diff(first.t_indptr).astype(np.int64).tolist()
        return out

    def checkpoint_due(self, epoch: int) -> bool:
        """Step 7: a checkpoint at the end of ``epoch``?  After the last epoch,
        every ``checkpoint_every`` epochs, or (``checkpoint_every`` unset)
        when :data:`AUTO_CHECKPOINT_SECONDS` have passed since the last one;
        never with ``checkpoint_every`` = 0."""
        return checkpoint_due(self.cfg, epoch, self._last_checkpoint_time)

    def checkpoint(self, reason: str) -> Path | None:
        """Write a checkpoint of the current state through ``on_checkpoint``."""
        if self.on_checkpoint is None:
            return None
        path = self.on_checkpoint(self, reason)
        self._last_checkpoint_time = time.perf_counter()
        return path

    def preempt(self) -> None:
        """Checkpoint the current state and raise :class:`PreemptedError`."""
        st = self.state
        t0 = time.perf_counter()
        where = (f"after batch {st.batch}/{self.n_batches} of epoch {st.epoch + 1}"
                 if st.batch else f"at the end of epoch {st.epoch}")
        log.warning("received %s: stopping %s (step %d), saving a checkpoint",
                    self.stop.name, where, st.step)
        path = self.checkpoint("preempted")
        saved = (f"saved checkpoint {path} in {time.perf_counter() - t0:.2f}s"
                 if path is not None else "no checkpoint writer was given, nothing saved")
        raise PreemptedError(f"received {self.stop.name}: stopped {where} (step {st.step}); "
                             f"{saved}", checkpoint=path, signum=self.stop.signum)

    def end_epoch(self, epoch: int, train_loss: float) -> tuple:
        """Steps 3-5, shared with the parallel loops and the estimator
        (``epoch.py``), with this loop's own measurements between the
        evaluation and the evolution: the loss without dropout
        (``train_eval``) and the gradient flow of the trained weights
        (``diagnostics``).  Returns (EpochEnd, those extra metrics)."""
        cfg = self.cfg
        extra: dict = {}

        def measure(end) -> None:
            keep = self.X_val is not None or getattr(cfg, "keep_best", None) == "test"
            if end.improved and keep and self.on_best is not None:
                self.on_best(self, epoch, end.columns())  # best.h5: the model just evaluated
            if end.evaluated and cfg.train_eval:
                loss, acc, secs = self.train_eval()
                extra.update(train_eval_loss=loss, train_eval_acc=acc, train_eval_s=secs)
            if cfg.diagnostics:
                extra.update(self.gradient_flow())

        end = end_of_epoch(cfg, self.model, self.state, epoch, train_loss=train_loss,
                           on_diverged=lambda loss, _: self.diverged(epoch, loss),
                           evaluate=self.test_metrics, rng=self.streams.evolution,
                           growth=self.growth_data(), before_evolution=measure,
                           evaluate_val=None if self.X_val is None else
                           (lambda: self.test_metrics(self.X_val, self.y_val)))
        return end, extra

    # ------------------------------------------------------------------ loop
    def run(self, progress: bool | None = None) -> TrainState:
        """Train from ``state.epoch`` (and ``state.batch``) to ``cfg.epochs``."""
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
                last = epoch == cfg.epochs - 1
                end, extra = self.end_epoch(epoch, train_loss)
                clean = {k: v for k, v in extra.items() if k.startswith("train_eval")}
                test_loss, test_acc, test_s = end.test_loss, end.test_acc, end.test_s
                evolution_s = end.evolution_s
                row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                       **end.columns(), "nnz": self.model.nnz, "train_s": train_s, **extra}
                if cfg.diagnostics:  # ... and the connectivity after the evolution
                    row.update(self.connectivity())
                if cfg.lr_schedule != "constant":  # the rate this epoch trained with
                    row["lr"] = lr_at(cfg, epoch)
                st.history.append(row)
                st.epoch = epoch + 1
                st.batch, st.epoch_loss_sum, st.epoch_correct, st.epoch_train_s = 0, 0.0, 0, 0.0
                if self.on_epoch is not None:
                    self.on_epoch(row)
                score = (f"R^2 {row.get('test_r2', math.nan):.4f} RMSE "
                         f"{row.get('test_rmse', math.nan):.4g} (best R^2 "
                         f"{st.best_test_acc:.4f})" if self.regression else
                         f"acc {100 * test_acc:.2f}% (best {100 * st.best_test_acc:.2f}%)")
                msg = (f"epoch {epoch + 1}/{cfg.epochs} loss {train_loss:.4f} "
                       + ("" if self.regression else f"acc {100 * train_acc:.2f}% ")
                       + f"| test loss {test_loss:.4f} {score} | "
                       + (f"val loss {row['val_loss']:.4f} "
                          + (f"R^2 {row.get('val_r2', math.nan):.4f}" if self.regression
                             else f"acc {100 * row['val_acc']:.2f}%")
                          + f" (best epoch {st.best_epoch + 1}) | "
                          if self.X_val is not None else "")
                       + (f"train without dropout loss {clean['train_eval_loss']:.4f} acc "
                          f"{100 * clean['train_eval_acc']:.2f}% | " if clean else "") +
                       f"nnz {row['nnz']} | {train_s:.2f}s train {test_s:.2f}s test "
                       f"{evolution_s:.3f}s evolution")
                if bar is not None:
                    bar.set_postfix_str((f"test {score}" if self.regression else
                                         f"test {100 * test_acc:.2f}% best "
                                         f"{100 * st.best_test_acc:.2f}%") + f" nnz {row['nnz']}",
                                        refresh=False)
                    bar.update(1)
                    log.debug(msg)
                else:
                    log.info(msg)
                if self.stop is not None and self.stop.requested and not last:
                    self.preempt()
                if self.checkpoint_due(epoch):
                    self.checkpoint("final" if last else "scheduled")
        finally:
            if bar is not None:
                bar.close()
        return st


def nonfinite_activation(model: SparseMLP, xb: np.ndarray) -> list[str]:
    """Forward one feature-major batch (no dropout) and name the first layer
    whose outputs are NaN or inf (empty when none is)."""
    if not np.isfinite(xb).all():
        return ["the input batch (the data itself holds NaN or inf)"]
    prev = xb
    for li, layer in enumerate(model.layers):
        out = np.empty((layer.n_out, xb.shape[1]), dtype=np.float32)
        act = model.acts[li] if li < model.n_layers - 1 else None
        layer.forward(prev, out, out if act is not None else None, act=act,
                      n_threads=model.n_threads)
        if not np.isfinite(out).all():
            return [f"the outputs of layer {li + 1} ({layer.n_in} -> {layer.n_out} neurons: "
                    f"finite weights, but the activations overflow float32)"]
        prev = out
    return []
