"""The output layer's fused backward of each benchmark network, repeated on its
epoch's own buffers, row by row and two rows at a time: us a call (best of 5
rounds of 300 calls), 1 and 2 threads."""
import sys, time, json
import numpy as np
sys.path.insert(0, 'bench')
import bench_epoch
from sparse_mlp import kernels
for shape in sys.argv[1].split(","):
    tr = bench_epoch.make_trainer(shape, 2, 0.02)
    m = tr.model
    bench_epoch.fresh_epoch(tr); tr.train_epoch()
    bufs = m._train_bufs; L = m.layers[-1]; act = m.acts[-1]; h = len(m.acts) - 1
    A = bufs["A"][h]; G = bufs["Z"][h]; bits = bufs["bits"][h]; D = np.ascontiguousarray(bufs["Z"][-1])
    res = {}
    for rnd in range(2):
        for t in (1, 2):
            for pairs in (False, True):
                kernels.spmm.row_pairs(pairs)
                best = 1e9
                for _ in range(5):
                    t0 = time.perf_counter()
                    for _ in range(300):
                        L.backward_update(A, D, G, 1e-9, 0.9, 0.0, Z_in=G, act_in=act, n_threads=t, bits=bits)
                    best = min(best, (time.perf_counter() - t0) / 300 * 1e6)
                res.setdefault(f"{t}T {'pairs' if pairs else 'rows'}", []).append(round(best, 1))
    kernels.spmm.row_pairs(True)
    print(json.dumps({"shape": shape, "layer": f"{L.n_in}x{L.n_out}", "us_per_call": res}))
