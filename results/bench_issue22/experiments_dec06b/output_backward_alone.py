# The Higgs output layer's backward pass alone, repeated on the same inputs, 1 and 2 threads
import sys, time, numpy as np
sys.path.insert(0,'bench'); sys.path.insert(0,'.')
import bench_epoch
from sparse_mlp import kernels
tr = bench_epoch.make_trainer('higgs', 2, 0.05)
m = tr.model
L = m.layers[-1]; act = m.acts[-1]
B=128
rng=np.random.default_rng(0)
A=np.maximum(rng.standard_normal((1000,B)).astype(np.float32),0)
D=rng.standard_normal((2,B)).astype(np.float32)
Zin=rng.standard_normal((1000,B)).astype(np.float32)
g=np.empty(L.nnz,np.float32); bg=np.empty(2,np.float32)
def t(f, n=500):
    best=1e9
    for r in range(5):
        t0=time.perf_counter()
        for _ in range(n): f()
        best=min(best,(time.perf_counter()-t0)/n*1e6)
    return best
for nt in (1,2,1,2):
    G=Zin.copy()
    f=lambda: L.backward_update(A, D, G, 0.0, 0.0, 0.0, Z_in=G, act_in=act, dropout=0.0, key=1, grads=(g,bg), n_threads=nt, grads_t=True)
    print(nt, "%.1f us"%t(f))
