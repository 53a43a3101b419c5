# Prototype: one training step with the batch split between two threads (each thread
# runs the whole network on its half of the columns with the serial kernels and
# writes its own partial weight gradients; the partials are added and applied at
# the end), against the engine's row-split step on 2 threads and its 1-thread step.
import sys, copy, time, threading, json
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
from sparse_mlp.model import SparseMLP, _NO_SCRATCH
from sparse_mlp.kernels import aligned_empty
SHAPES = {"higgs": ([28, 1000, 1000, 1000, 2], 10), "fmnist": ([784, 1000, 1000, 1000, 10], 20),
          "cifar": ([3072, 4000, 1000, 4000, 10], 20)}
shape = sys.argv[1]; rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
sizes, eps = SHAPES[shape]; B = 128; H = B // 2
def make(nt):
    return SparseMLP(sizes, eps, "relu", None, "he_uniform", dropout=0.3,
                     rng=np.random.default_rng(0), n_threads=nt)
rng = np.random.default_rng(1)
X = aligned_empty((sizes[0], B)); X[...] = rng.standard_normal((sizes[0], B))
y = rng.integers(0, sizes[-1], B).astype(np.int32)
halves = []
for off in (0, H):
    xh = aligned_empty((sizes[0], H)); xh[...] = X[:, off:off + H]; halves.append((off, xh))

class Half:
    def __init__(self, m, off, xh):
        c = copy.copy(m); c._train_bufs = None; c._scratch = _NO_SCRATCH; c._grad_acc = None
        c._eval_bufs = None; c.n_threads = 1
        self.c, self.off, self.xh = c, off, xh
        self.g = [(np.empty(l.nnz, np.float32), np.empty(l.n_out, np.float32)) for l in m.layers]
    def run(self, keys):
        c, off = self.c, self.off
        logits = c.forward_train(self.xh, keys, b_offset=off)
        c.output_delta(logits, y[off:off + H])
        bufs = c._train_bufs
        for li in range(len(c.layers) - 1, -1, -1):
            layer, D = c.layers[li], bufs["Z"][li]
            if li == 0:
                layer.gradient(self.xh, D, *self.g[0], scale=1.0 / B, n_threads=1)
                continue
            h = li - 1
            Zin = bufs["Z"][h]
            layer.backward_update(c._layer_input(h, keys, off), D, Zin, 0.01, 0.9, 2e-4,
                                  Z_in=Zin, act_in=c.acts[h], dropout=c.dropout, key=keys[h],
                                  b_offset=off, scale=1.0 / B, grads=self.g[li], n_threads=1,
                                  bits=bufs["bits"][h] if bufs["bits_ok"][h] else None,
                                  grads_t=True)

class Split:
    def __init__(self, m):
        self.m = m
        self.h = [Half(m, off, xh) for off, xh in halves]
        self.go = threading.Event(); self.done = threading.Event(); self.keys = None
        threading.Thread(target=self.worker, daemon=True).start()
    def worker(self):
        while True:
            self.go.wait(); self.go.clear()
            self.h[1].run(self.keys)
            self.done.set()
    def step(self, keys):
        self.keys = keys; self.go.set()
        self.h[0].run(keys)
        self.done.wait(); self.done.clear()
        for li, layer in enumerate(self.m.layers):
            (g0, b0), (g1, b1) = self.h[0].g[li], self.h[1].g[li]
            np.add(g0, g1, out=g0); np.add(b0, b1, out=b0)
            layer.apply_gradient(g0, b0, 0.01, 0.9, 2e-4, n_threads=2, transposed=li > 0)

# sanity: one step from the same weights, split vs engine
m1, ms = make(1), make(2)
keys = m1.dropout_keys(0, 0)
m1.train_step(X, y, 0.01, 0.9, 2e-4, keys)
sp = Split(ms); sp.step(keys)
err = max(float(np.max(np.abs(a.data - b.data))) for a, b in zip(m1.layers, ms.layers))
print(shape, "max |w_split - w_engine| after one step:", err)
# timing
m2 = make(2); m1 = make(1); ms = make(2); sp = Split(ms)
def t_engine(m, n):
    t = time.perf_counter()
    for s in range(n):
        m.train_step(X, y, 0.01, 0.9, 2e-4, keys)
    return (time.perf_counter() - t) / n * 1e6
def t_split(n):
    t = time.perf_counter()
    for s in range(n):
        sp.step(keys)
    return (time.perf_counter() - t) / n * 1e6
n = {"higgs": 300, "fmnist": 200, "cifar": 60}[shape]
res = {"1T": [], "2T rows": [], "2T batch split": []}
for r in range(rounds):
    res["1T"].append(round(t_engine(m1, n), 1))
    res["2T rows"].append(round(t_engine(m2, n), 1))
    res["2T batch split"].append(round(t_split(n), 1))
print(shape, "us per step", json.dumps(res))
print(shape, "best", {k: min(v) for k, v in res.items()})
def t_half(n):
    t = time.perf_counter()
    for s in range(n):
        sp.h[0].run(keys)
    return (time.perf_counter() - t) / n * 1e6
def t_comb(n):
    t = time.perf_counter()
    for s in range(n):
        for li, layer in enumerate(sp.m.layers):
            (g0, b0), (g1, b1) = sp.h[0].g[li], sp.h[1].g[li]
            np.add(g0, g1, out=g0); np.add(b0, b1, out=b0)
            layer.apply_gradient(g0, b0, 0.01, 0.9, 2e-4, n_threads=2, transposed=li > 0)
    return (time.perf_counter() - t) / n * 1e6
for r in range(3):
    print("half alone", round(t_half(n), 1), "combine", round(t_comb(n), 1), "1T", round(t_engine(m1, n), 1))
