"""Epochs of the Trainer (bench_epoch.make_trainer, a quarter epoch) with
spmm.dense_rows off and on, interleaved in one process: us per batch.
    PYTHONPATH=. python results/bench_issue22/experiments_dec05/dense_rows_epoch_ab.py"""
import json
import sys

sys.path.insert(0, "bench")
import bench_epoch  # noqa: E402

from sparse_mlp.kernels import spmm  # noqa: E402

for shape in ("higgs", "fmnist", "cifar"):
    for threads in (1, 2):
        tr = bench_epoch.make_trainer(shape, threads, 0.25)
        res = {False: [], True: []}
        for rnd in range(4):
            for dense in (False, True):
                spmm.dense_rows(dense)
                bench_epoch.fresh_epoch(tr)
                _, _, s = tr.train_epoch()
                if rnd:  # the first round warms up
                    res[dense].append(round(s / tr.n_batches * 1e6, 1))
        spmm.dense_rows(True)
        print(json.dumps({"shape": shape, "threads": threads, "rows_us": res[False],
                          "dense_us": res[True]}))
