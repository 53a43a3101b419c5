import numpy as np, timeit
from sparse_mlp.layers import SparseLayer
from sparse_mlp.kernels import aligned_empty, spmm
from sparse_mlp.activations import make_activation
rng = np.random.default_rng(0)
lay = SparseLayer.erdos_renyi(1000, 1000, 10, "xavier", rng)
B = 128
X = aligned_empty((1000, B)); X[...] = np.maximum(rng.standard_normal((1000, B)), 0)
D = aligned_empty((1000, B)); D[...] = rng.standard_normal((1000, B)) * 1e-3
Zin = aligned_empty((1000, B)); Zin[...] = rng.standard_normal((1000, B))
G = aligned_empty((1000, B))
act = make_activation("relu", 1, 1000, None, rng)
bits = aligned_empty((1000, spmm.epilogue_bits_words(B)), np.uint16)
A = aligned_empty((1000, B))
ok = lay.forward(X, Zin.copy(), A, act, 0.3, 3, 0, 1, bits)
g = np.empty(lay.nnz, np.float32); bg = np.empty(1000, np.float32)
gt = np.empty(lay.nnz, np.float32); wt = np.empty(lay.nnz, np.float32)
def cur(t):
    def f():
        lay.backward_update(X, D, G, 0.0, 0.0, 0.0, Z_in=Zin, act_in=act, dropout=0.3, key=3, scale=1/B, grads=(g, bg), n_threads=t, bits=bits)
        lay.apply_gradient(g, bg, 1e-6, 0.9, 0.0, n_threads=t)
    return f
def trn(t):
    def f():
        lay.weights_transposed(wt, n_threads=t)
        lay.backward_update(X, D, G, 0.0, 0.0, 0.0, Z_in=Zin, act_in=act, dropout=0.3, key=3, scale=1/B, grads=(gt, bg), n_threads=t, bits=bits, weights_t=wt)
        lay.gradient_from_transposed(gt, g, n_threads=t)
        lay.apply_gradient(g, bg, 1e-6, 0.9, 0.0, n_threads=t)
    return f
def tm(f): return min(timeit.repeat(f, number=200, repeat=7))/200*1e6
for r in range(3):
    for t in (1, 2):
        print(t, "T current %.1f  transposed %.1f" % (tm(cur(t)), tm(trn(t))))
