"""The split update's momentum pass alone (``_spmm.apply_update``), repeated
on the same arrays: with a gradient gathered through a random permutation
(``index``, as after a backward pass that wrote it in the transposed index's
order) and without one; one thread (the serial build), and the OpenMP build
on one and two threads; the gather done with AVX-512 gathers and, with the
SIMD level set to AVX2, with scalar loads.  Best of seven rounds of 200
calls, us a call.

    python results/bench_issue22/experiments_dec06g/apply_gather.py
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_layers import best_time  # noqa: E402

from sparse_mlp import _spmm, _spmm_serial  # noqa: E402


def best_us(mod, nt, w, v, g, index) -> float:
    return round(1e6 * best_time(lambda: mod.apply_update(w, v, g, 1e-4, 0.9, 0.0, False,
                                                          n_threads=nt, index=index),
                                 7, 200), 1)


rng = np.random.default_rng(0)
for level in ("avx512", "avx2"):
    _spmm.set_simd_level(level)
    for n in (20000, 40000, 400000):  # Higgs's, FashionMNIST's hidden layers; a large one
        w = rng.standard_normal(n).astype(np.float32)
        v = np.zeros(n, np.float32)
        g = rng.standard_normal(n).astype(np.float32) * 1e-3
        idx = rng.permutation(n).astype(np.int32)
        row = {"simd": level, "weights": n}
        for name, index in (("gathered", idx), ("in_order", None)):
            row[name] = {"serial_1T": best_us(_spmm_serial, 1, w, v, g, index),
                         "omp_1T": best_us(_spmm, 1, w, v, g, index),
                         "omp_2T": best_us(_spmm, 2, w, v, g, index)}
        print(json.dumps(row), flush=True)
_spmm.set_simd_level("best")
