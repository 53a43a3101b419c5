"""The four bias paths (tests/conftest.py bias_paths: weight_grad,
backward_update with gradients and with the update, weight_update) on two
threads against one, call after call, the delta alternating between two
arrays (a bias sum read before another thread stored it is the previous
call's, of the other array): how many calls of N gave other biases.
python bias_race.py N B N_IN N_OUT  (the kernels of the sparse_mlp on the
path: run it from the tree to test, or with PYTHONPATH=that tree)"""
import copy, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from conftest import bias_paths  # noqa: E402
from sparse_mlp import kernels  # noqa: E402
kernels.min_parallel_work(0)
n, B, n_in, n_out = (int(a) for a in sys.argv[1:5])
base, Ds, paths = bias_paths(n_in, n_out, B)
for name, f in paths.items():
    one, two = copy.deepcopy(base), copy.deepcopy(base)
    bad = sum(not np.array_equal(f(one, Ds[i % 2], 1), f(two, Ds[i % 2], 2)) for i in range(n))
    print(f"{name} B={B} {n_in}x{n_out}: other biases on 2 threads in {bad} of {n} calls")
