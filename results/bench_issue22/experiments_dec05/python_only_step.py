import timeit, types, numpy as np
import sparse_mlp.layers as L, sparse_mlp.model as M
from sparse_mlp.model import SparseMLP
from sparse_mlp.kernels import aligned_empty
rng = np.random.default_rng(0)
m = SparseMLP([500, 400, 100, 400, 2], epsilon=10, activation="allrelu", alpha=0.5, dropout=0.3, rng=rng, n_threads=1, init="normal")
xb = aligned_empty((500, 32)); xb[...] = rng.standard_normal((500,32)); y = rng.integers(0,2,32).astype(np.int32)
keys = m.dropout_keys(7,5)
for _ in range(100): m.train_step(xb, y, 0.01, 0.9, 2e-4, keys)
def tm(f, n=20000): return min(timeit.repeat(f, number=n, repeat=5))/n*1e6
print("real step", tm(lambda: m.train_step(xb, y, 0.01, 0.9, 2e-4, keys), 5000))
noop = lambda *a, **k: False
dummy = types.SimpleNamespace(forward=noop, backward_update=noop, weight_grad=noop, apply_update=noop, softmax_xent=lambda *a, **k: (0.0, 0))
L.spmm_for = lambda *a, **k: dummy
M.spmm_for = lambda *a, **k: dummy
M.activation_for = lambda *a, **k: dummy
print("python only step", tm(lambda: m.train_step(xb, y, 0.01, 0.9, 2e-4, keys)))
logits = m.forward_train(xb, keys)
print("fwd_train", tm(lambda: m.forward_train(xb, keys)))
print("output_delta", tm(lambda: m.output_delta(logits, y)))
print("backprop", tm(lambda: m._backprop(xb, keys, 0, 1/32, opt=(0.01, 0.9, 2e-4, False))))
lay = m.layers[1]; bufs = m._train_bufs
A0 = bufs["A"][0]; D = bufs["Z"][1]; Zin = bufs["Z"][0]
print("layer.backward_update kw", tm(lambda: lay.backward_update(A0, D, Zin, 0.01, 0.9, 2e-4, nesterov=False, Z_in=Zin, act_in=m.acts[0], srelu_grad=None, dropout=0.3, key=keys[0], b_offset=0, scale=1/32, grads=None, accumulate=False, n_threads=1, bits=bufs["bits"][0], weights_t=None)))
print("layer.forward", tm(lambda: lay.forward(A0, D, D, m.acts[1], 0.3, keys[1], 0, 1, bufs["bits"][1])))
print("lr_scale", tm(lambda: m.lr_scale(1)))
print("spmm_for", tm(lambda: M.spmm_for(1, 5000)))
