"""The paper's configurations (REFERENCE.md, Tables 2 and 7) and the demo.

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
    # the FashionMNIST recipe on a smaller network, about a minute here
    "digits": {**_PAPER_COMMON, "hidden": [1000, 1000, 1000], "epsilon": 20, "lr": 0.01,
               "batch_size": 32, "weight_init": "he_uniform", "alpha": 0.6, "epochs": 100},
}

# what the user's own files get: the FashionMNIST recipe, 100 epochs
USER_DATA_PRESET: dict[str, Any] = {**PRESETS["fashionmnist"], "epochs": 100}

PAPER_DATASETS = ("leukemia", "higgs", "madelon", "fashionmnist", "cifar10")

# Table 2 (sequential, 1 core): per row (best test accuracy %, start nnz, end nnz,
# training minutes for 500 epochs on one laptop core); dense rows on 12 cores (Keras)
PAPER_TABLE2: dict[str, dict[str, tuple]] = {
    "leukemia": {"relu": (85.98, 1684944, 1684944, 375), "relu_ip": (85.40, 1582214, 312900,
                 266.5), "allrelu": (86.42, 1582518, 1582518, 375),
                 "allrelu_ip": (85.69, 1582581, 313047, 266.5),
                 "dense_relu": (None, 2260362518, 2260362518, None),
                 "dense_allrelu": (None, 2260362518, 2260362518, None)},
    "higgs": {"relu": (73.59, 50224, 50244, 216.67), "relu_ip": (73.50, 50246, 10065, 182.3),
              "allrelu": (73.67, 50165, 50165, 216.67),
              "allrelu_ip": (73.76, 50165, 9992, 140.3),
              "dense_relu": (70.59, 2033002, 2033002, 182.3),
              "dense_allrelu": (70.10, 2033002, 2033002, 140.13)},
    "madelon": {"relu": (68.50, 19000, 19000, 3.6), "relu_ip": (75.00, 19000, 2739, 3.2),
                "allrelu": (71.33, 19011, 19011, 3.6), "allrelu_ip": (77.00, 19000, 2737, 3.2),
                "dense_relu": (59.66, 281702, 281702, 3.62),
                "dense_allrelu": (62.00, 281702, 281702, 3.62)},
    "fashionmnist": {"relu": (90.48, 126302, 126302, 137.5),
                     "relu_ip": (89.43, 126302, 26111, 96.25),
                     "allrelu": (91.38, 126302, 126302, 137.5),
                     "allrelu_ip": (90.12, 126302, 25759, 96.25),
                     "dense_relu": (90.85, 2797010, 2797010, 95.05),
                     "dense_allrelu": (90.73, 2797010, 2797010, 95.05)},
    "cifar10": {"relu": (67.05, 381758, 381758, 590), "relu_ip": (65.21, 381758, 238114, 530),
                "allrelu": (69.83, 381425, 381425, 590),
                "allrelu_ip": (68.55, 380318, 221323, 530),
                "dense_relu": (64.94, 20337010, 20337010, 530.7),
                "dense_allrelu": (67.96, 20337010, 20337010, 530.7)},
}


def preset_for(dataset: str) -> tuple[str, dict[str, Any]]:
    """(preset name, fields) for a dataset name or a user's file."""
    key = dataset.lower()
    if key in PRESETS:
        return key, dict(PRESETS[key])
    return "user-data", dict(USER_DATA_PRESET)
