"""The end of an epoch: one function for every training loop.

The sequential :class:`~sparse_mlp.training.Trainer`, the WASAP/WASSP
parameter server and workers (``sparse_mlp/parallel``) and the
scikit-learn estimator (``estimator.py``) all end an epoch with
:func:`end_of_epoch`, in this fixed order:

  1. finite check: the epoch's training loss and every weight, bias and
     momentum must be finite; otherwise the caller's ``on_diverged``
     raises (each loop words it for its own situation);
  2. evaluation, when due (every ``eval_every`` epochs and after the last),
     and the best selection score so far in the loop's :class:`TrainState`
     (:func:`selection_metric`: test accuracy, or R^2 with ``--task
     regression``; kept in ``best_test_acc`` / ``best_epoch``);
  3. topology evolution, after every epoch except the last, on every
     weight matrix except the last (:func:`evolve_topology`): Importance
     Pruning first when its schedule says so (:func:`ip_due`), then SET
     (random regrowth) or, beyond the paper, gradient / momentum growth.

Each step can be left out by the caller where its loop does it elsewhere
(a phase-2 worker evaluates nothing: the parameter server evaluates the
average; the server in phase 2 evolves nothing: the workers do).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .evolution import importance_prune, set_step

__all__ = ["EpochEnd", "GrowthData", "end_of_epoch", "eval_due", "evolve_topology", "ip_due",
           "nonfinite_parts", "selection_metric"]


def selection_metric(cfg) -> str:
    """The metrics column that picks the best epoch (higher is better):
    ``test_acc``, or ``test_r2`` for ``task == "regression"``."""
    return "test_r2" if getattr(cfg, "task", "classification") == "regression" else "test_acc"


def ip_due(cfg, epoch: int) -> bool:
    """Importance Pruning at the end of ``epoch`` (0-based), the authors'
    schedule: ``epoch > ip_start`` and ``epoch % ip_every == 0``."""
    return bool(cfg.importance_pruning and epoch > cfg.ip_start and epoch % cfg.ip_every == 0)


def eval_due(cfg, epoch: int) -> bool:
    """A test evaluation at the end of ``epoch``: every ``eval_every`` epochs
    and after the last one."""
    return epoch == cfg.epochs - 1 or (epoch + 1) % cfg.eval_every == 0


@dataclass
class GrowthData:
    """What gradient / momentum growth probes: training samples and where
    the run's dropout stream is (``--growth gradient|momentum``)."""

    X: Any                                  # sample-major float32 (or scipy.sparse)
    y: np.ndarray                           # int32 class ids
    dropout_seed: int = 0
    step: int = 0
    get_batch: Callable | None = None       # rows -> (feature-major batch, labels)


def evolve_topology(cfg, model, epoch: int, rng: np.random.Generator,
                    growth: GrowthData | None = None) -> bool:
    """Importance Pruning when due (:func:`ip_due`), then SET or growth, on
    every weight matrix but the last.  Returns whether the topology may
    have changed (the parameter server versions its topology by it)."""
    prune = ip_due(cfg, epoch)
    evolved = model.layers[:-1]
    random_growth = cfg.evolution and cfg.growth == "random"
    for layer in evolved:
        if prune:
            importance_prune(layer, cfg.ip_percentile, n_threads=model.n_threads)
        if random_growth:
            set_step(layer, cfg.zeta, rng, n_threads=model.n_threads,
                     regrow_init=cfg.regrow_init)
    if cfg.evolution and cfg.growth != "random" and evolved:
        if growth is None:
            raise ValueError(f"--growth {cfg.growth} needs training data to probe")
        # beyond the paper: SET's removal, then regrowth where |gradient| (or its
        # momentum) is largest, probed on a few extra mini-batches (growth.py)
        from .growth import evolve_with_growth
        evolve_with_growth(model, growth.X, growth.y, rng, zeta=cfg.zeta, growth=cfg.growth,
                           batch_size=cfg.batch_size, growth_batches=cfg.growth_batches,
                           growth_init=cfg.growth_init, candidates=cfg.growth_candidates,
                           dropout_seed=growth.dropout_seed, step=growth.step,
                           momentum=cfg.momentum, get_batch=growth.get_batch)
    return bool(prune or cfg.evolution)


@dataclass
class EpochEnd:
    """What :func:`end_of_epoch` did: the metrics row's evaluation and
    evolution columns, and whether the topology changed."""

    test_loss: float = math.nan
    test_acc: float = math.nan
    test_s: float = 0.0
    evolution_s: float = 0.0
    evaluated: bool = False
    topology_changed: bool = False
    extra: dict = field(default_factory=dict)   # more test columns (regression: test_r2 ...)
    val: dict = field(default_factory=dict)     # --val-fraction: val_loss, val_acc (, val_r2
    #                                             ...), val_s; NaN when no evaluation was due
    improved: bool = False                      # this epoch became the best epoch

    def columns(self) -> dict[str, float]:
        return {"test_loss": self.test_loss, "test_acc": self.test_acc,
                "test_s": self.test_s, "evolution_s": self.evolution_s, **self.extra,
                **self.val}


def nonfinite_parts(model) -> list[str]:
    """The parts of the model that hold NaN or inf, described for the user
    (empty when everything is finite); layers numbered from 1 = input ->
    first hidden."""
    names = {"data": "weights", "bias": "biases", "velocity": "weight momentum",
             "bias_velocity": "bias momentum"}
    found = []
    for i, lay in enumerate(model.layers):
        bad = [what for name, what in names.items()
               if not np.isfinite(getattr(lay, name)).all()]
        if bad:
            found.append(f"the {' and '.join(bad)} of layer {i + 1} "
                         f"({lay.n_in} -> {lay.n_out} neurons)")
    for h, act in enumerate(model.acts):
        if any(a is not None and not np.isfinite(a).all() for a in (act.params, act.velocity)):
            found.append(f"the SReLU parameters of hidden layer {h + 1}")
    return found


def end_of_epoch(cfg, model, state, epoch: int, *, train_loss: float,
                 on_diverged: Callable[[float, list[str]], None] | None,
                 evaluate: Callable[[], tuple[float, float]] | None,
                 rng: np.random.Generator | None,
                 growth: GrowthData | None = None,
                 before_evolution: Callable[[EpochEnd], None] | None = None,
                 evaluate_val: Callable[[], tuple] | None = None) -> EpochEnd:
    """Steps 1-3 of the module docs after ``epoch`` (0-based) of ``cfg.epochs``.

    Parameters
    ----------
    cfg : TrainConfig
        Schedules (eval_every, Importance Pruning, evolution settings).
    model : SparseMLP or DenseMLP
    state : TrainState
        Its ``best_test_acc`` / ``best_epoch`` follow the evaluation.
    train_loss : float
        The epoch's training loss (finite check).
    on_diverged : callable or None
        ``on_diverged(train_loss, parts)`` must raise; None skips step 1.
    evaluate : callable or None
        ``evaluate() -> (loss, accuracy)`` on the test set, or ``(loss,
        accuracy, {column: value})`` with more test columns (a regression
        run: accuracy NaN, ``test_r2``, ``test_rmse``, ``test_mae``); the
        best epoch follows :func:`selection_metric`.  None skips step 2.
    rng : Generator or None
        The evolution stream; None skips step 3.
    growth : GrowthData, optional
        Training data for gradient / momentum growth.
    before_evolution : callable, optional
        Called with the result so far between steps 2 and 3 (the trainer's
        diagnostics measure the trained weights there; ``end.improved``
        says whether this epoch became the best one).
    evaluate_val : callable, optional
        ``--val-fraction``: the same as ``evaluate`` on the validation set,
        run with it; its columns are named ``val_*``, and the best epoch
        (``state.best_epoch``, ``state.best_val_score``) is chosen on it,
        while ``state.best_test_acc`` / ``best_test_epoch`` still follow the
        test set (the paper's number, an optimistic estimate).  None: the
        paper's protocol, the best epoch is the best test epoch.
    """
    end = EpochEnd()
    if evaluate_val is not None:
        end.val = {"val_loss": math.nan, "val_acc": math.nan, "val_s": 0.0}
    if on_diverged is not None:
        bad = nonfinite_parts(model)
        if bad or not math.isfinite(train_loss):
            on_diverged(train_loss, bad)
    if evaluate is not None and eval_due(cfg, epoch):
        t0 = time.perf_counter()
        result = evaluate()
        end.test_loss, end.test_acc = result[0], result[1]
        end.extra = dict(result[2]) if len(result) > 2 else {}
        end.test_s = time.perf_counter() - t0
        end.evaluated = True
        if evaluate_val is not None:
            t0 = time.perf_counter()
            result = evaluate_val()
            end.val = {"val_loss": result[0], "val_acc": result[1],
                       **{k.replace("test_", "val_", 1): v
                          for k, v in (dict(result[2]) if len(result) > 2 else {}).items()},
                       "val_s": time.perf_counter() - t0}
        metric = selection_metric(cfg)
        score = end.columns().get(metric, math.nan)
        first = (state.best_epoch if evaluate_val is None else state.best_test_epoch) < 0
        if score > state.best_test_acc or (first and math.isfinite(score)):
            state.best_test_acc, state.best_test_epoch = score, epoch  # (R^2 may be below -1)
            if evaluate_val is None:  # the paper's protocol: the best test epoch is the best
                state.best_epoch, end.improved = epoch, True
        if evaluate_val is not None:  # the best epoch is chosen on the validation set
            vscore = end.val.get(metric.replace("test_", "val_", 1), math.nan)
            if vscore > state.best_val_score or (state.best_epoch < 0 and math.isfinite(vscore)):
                state.best_val_score, state.best_epoch, end.improved = vscore, epoch, True
    if before_evolution is not None:
        before_evolution(end)
    if rng is not None and epoch != cfg.epochs - 1:
        t0 = time.perf_counter()
        end.topology_changed = evolve_topology(cfg, model, epoch, rng, growth)
        end.evolution_s = time.perf_counter() - t0
    return end
