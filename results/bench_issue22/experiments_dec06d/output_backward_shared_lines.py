"""The Higgs output layer's fused backward on two threads, repeated, with and
without a two-thread read of its G rows (as the layer below's backward reads
them as its delta) between calls; write_prefetch 0 / 2 / 4 / 8."""
import sys, time, numpy as np
sys.path.insert(0, 'bench')
import bench_epoch
from sparse_mlp import kernels
tr = bench_epoch.make_trainer('higgs', 2, 0.05)
m = tr.model
bench_epoch.fresh_epoch(tr); tr.train_epoch()
L = m.layers[-1]; act = m.acts[-1]; H = m.layers[2]
B = 128
bufs = m._train_bufs
A = bufs["A"][2]; G = bufs["Z"][2]; bits = bufs["bits"][2]
D = np.ascontiguousarray(bufs["Z"][3])
out = np.empty((1000, B), np.float32)
H2 = m.layers[1]
def call():
    L.backward_update(A, D, G, 1e-9, 0.9, 0.0, Z_in=G, act_in=act, dropout=0.0, key=1,
                      n_threads=2, bits=bits)
from sparse_mlp.layers import SparseLayer
rows = [np.arange(j % 32, 1000, 32, dtype=np.int32) for j in range(64)]
indptr = np.zeros(65, np.int64); indptr[1:] = np.cumsum([r.size for r in rows])
R = SparseLayer(1000, 64, indptr, np.concatenate(rows), np.full(int(indptr[-1]), 0.01, np.float32), init="normal")
small = np.empty((64, B), np.float32)
def poison():  # both threads read every row of G, writing 32 KB only
    if mode == "read":  # ("evict": any other argument)
        R.forward(G, small, n_threads=2)
    else:
        H2.forward(G, out, n_threads=2)
mode = sys.argv[1]
def run(with_poison, n=300):
    ts = []
    for _ in range(n):
        if with_poison: poison()
        kernels.spmm.timeline_start(16, 2)
        call()
        rec = kernels.spmm.timeline_take()
        ts.append((rec["t_done"][0] - rec["t_call"][0]) / 1e3)
    return np.median(ts)
for rnd in range(3):
    for pf in (0, 2, 4, 8):
        kernels.spmm.write_prefetch(pf)
        print(rnd, "pf", pf, "plain %.1f  after poison %.1f" % (run(False), run(True)))
