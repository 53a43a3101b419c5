"""Learning-rate schedules: the step size of an epoch, a pure function of it.

``--lr-schedule`` (TrainConfig ``lr_schedule``), with ``lr`` the base rate,
``e`` the epoch (0-based) and ``E`` the run's ``epochs``:

  constant  lr                                       (the paper's, the default)
  step      lr * gamma ** (e // every)               (--lr-step-every, --lr-step-gamma)
  cosine    lr_min + (lr - lr_min) * (1 + cos(pi * e / E)) / 2   (--lr-min, default 0)

The rate is constant within an epoch.  Because it depends on the epoch only
(no state), a resumed run computes the same rates as an uninterrupted one,
and every loop -- the sequential Trainer, the scikit-learn estimator -- can
call :func:`lr_at` for the epoch it is in.  Cosine reaches ``lr_min`` one
epoch after the last (as PyTorch's ``CosineAnnealingLR`` with ``T_max =
E``), so no epoch is spent at a zero rate.

With ``--decay-mode decoupled`` the per-step decay is ``lr * wd`` with the
epoch's rate (:func:`decay_at`); the paper's decay ``wd`` does not depend
on the rate.
"""

from __future__ import annotations

import math

__all__ = ["LR_SCHEDULES", "decay_at", "lr_at", "scheduled_lr"]

LR_SCHEDULES = ("constant", "step", "cosine")


def scheduled_lr(schedule: str, lr: float, epoch: int, *, epochs: int,
                 step_every: int | None = None, gamma: float = 0.1,
                 lr_min: float = 0.0) -> float:
    """The learning rate of ``epoch`` (0-based) under ``schedule``.

    Parameters
    ----------
    schedule : {"constant", "step", "cosine"}
    lr : float
        The base rate (epoch 0's).
    epoch : int
        0-based.
    epochs : int
        The run's number of epochs (cosine's period).
    step_every, gamma : int, float
        step: the rate is multiplied by ``gamma`` every ``step_every`` epochs.
    lr_min : float
        cosine: the floor.

    Returns
    -------
    float
        ``lr`` itself (the same float object's value) for "constant".
    """
    if schedule == "constant":
        return lr
    if schedule == "step":
        if not step_every or step_every < 1:
            raise ValueError("the step schedule needs step_every >= 1 (--lr-step-every)")
        return lr * gamma ** (epoch // step_every)
    if schedule == "cosine":
        if epochs < 1:
            raise ValueError(f"the cosine schedule needs epochs >= 1, got {epochs}")
        return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; one of "
                     f"{', '.join(LR_SCHEDULES)}")


def lr_at(cfg, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based) of a run configured by ``cfg``
    (a :class:`~sparse_mlp.config.TrainConfig`, or anything with its fields
    ``lr``, ``epochs``, ``lr_schedule``, ``lr_step_every``, ``lr_step_gamma``,
    ``lr_min``)."""
    return scheduled_lr(getattr(cfg, "lr_schedule", "constant"), cfg.lr, epoch,
                        epochs=cfg.epochs, step_every=getattr(cfg, "lr_step_every", None),
                        gamma=getattr(cfg, "lr_step_gamma", 0.1),
                        lr_min=getattr(cfg, "lr_min", 0.0))


def decay_at(cfg, lr: float) -> float:
    """The per-step weight decay with the epoch's rate ``lr``: ``weight_decay``
    (the paper's mode, independent of the rate) or ``lr * weight_decay``
    (decoupled).  Equal to ``cfg.decay`` when ``lr == cfg.lr``."""
    return cfg.weight_decay if cfg.decay_mode == "paper" else lr * cfg.weight_decay
