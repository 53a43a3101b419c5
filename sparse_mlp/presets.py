"""The paper's configurations (docs/semantics.md, "Paper hyper-parameters") and the demo.

A preset is a dict of :class:`~sparse_mlp.config.TrainConfig` fields; the
command line starts from the preset of ``--dataset`` and applies the user's
flags on top.  All paper presets: momentum 0.9, weight decay 2e-4 (not
scaled by lr), dropout 0.3, zeta 0.3, 500 epochs, Importance Pruning (when
switched on) from epoch 200 every 10 epochs at the 20th percentile.
"""

from __future__ import annotations

from typing import Any

_PAPER_COMMON: dict[str, Any] = {
    "momentum": 0.9, "weight_decay": 2e-4, "decay_mode": "paper", "nesterov": False,
    "dropout": 0.3, "zeta": 0.3, "epochs": 500, "output": "softmax",
    "activation": "allrelu", "ip_start": 200, "ip_every": 10, "ip_percentile": 20.0,
    "evolution": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Table 7 / Table 2
    "leukemia": {**_PAPER_COMMON, "hidden": [27500, 27500], "epsilon": 10, "lr": 0.005,
                 "batch_size": 5, "weight_init": "normal", "alpha": 0.75},
    "higgs": {**_PAPER_COMMON, "hidden": [1000, 1000, 1000], "epsilon": 10, "lr": 0.01,
              "batch_size": 128, "weight_init": "xavier", "alpha": 0.05},
    "madelon": {**_PAPER_COMMON, "hidden": [400, 100, 400], "epsilon": 10, "lr": 0.01,
                "batch_size": 32, "weight_init": "normal", "alpha": 0.5},
    "fashionmnist": {**_PAPER_COMMON, "hidden": [1000, 1000, 1000], "epsilon": 20,
                     "lr": 0.01, "batch_size": 128, "weight_init": "he_uniform", "alpha": 0.6},
    "cifar10": {**_PAPER_COMMON, "hidden": [4000, 1000, 4000], "epsilon": 20, "lr": 0.01,
                "batch_size": 128, "weight_init": "he_uniform", "alpha": 0.75},
    # Table 4's training settings (batch 128, lr 0.01, dropout 0.4) on a
    # Higgs-sized network by default; pick Table 4's widths with --hidden
    "synthetic": {**_PAPER_COMMON, "hidden": [1000, 1000, 1000], "epsilon": 10, "lr": 0.01,
                  "batch_size": 128, "weight_init": "he_uniform", "alpha": 0.6,
                  "dropout": 0.4},
    # the zero-argument demo: scikit-learn's bundled digits (always offline),
    # the FashionMNIST recipe on a smaller network, about 15 s here (2 cores)
    "digits": {**_PAPER_COMMON, "hidden": [1000, 1000, 1000], "epsilon": 20, "lr": 0.01,
               "batch_size": 32, "weight_init": "he_uniform", "alpha": 0.6, "epochs": 100},
}

# Table 3 (parallel training): what the authors' parallel script adds to a preset --
# CIFAR10's training images are augmented by default (random shifts and flips)
TABLE3_EXTRA: dict[str, dict[str, Any]] = {"cifar10": {"augment": "cifar"}}

# what the user's own files get: the FashionMNIST recipe, 100 epochs
USER_DATA_PRESET: dict[str, Any] = {**PRESETS["fashionmnist"], "epochs": 100}

PAPER_DATASETS = ("leukemia", "higgs", "madelon", "fashionmnist", "cifar10")


def preset_for(dataset: str) -> tuple[str, dict[str, Any]]:
    """(preset name, fields) for a dataset name or a user's file."""
    key = dataset.lower()
    if key in PRESETS:
        return key, dict(PRESETS[key])
    return "user-data", dict(USER_DATA_PRESET)
