"""Run by tests/test_reproduce.py under mpiexec: Table 3's parallel rows on a
tiny network and tiny synthetic data (every rank calls the same code)."""

import sys

from sparse_mlp import reproduce
from sparse_mlp.config import TrainConfig


def tiny_base(*args, **kwargs):
    return TrainConfig(dataset="synthetic", n_features=12, n_classes=2, n_train=240, n_test=60,
                       hidden=[16, 16], epsilon=4, activation="allrelu", alpha=0.5,
                       weight_init="he_uniform", epochs=3, batch_size=16, lr=0.05, dropout=0.1,
                       importance_pruning=False, ip_start=0, ip_every=1, threads=1,
                       preset="higgs", phase1_epochs=2)


reproduce.table3.table2_base = tiny_base
text = reproduce.reproduce_table3("higgs", seeds=1, out=sys.argv[1])
if text:
    print(text)
