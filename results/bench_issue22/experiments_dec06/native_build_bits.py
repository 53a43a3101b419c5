import sys, hashlib, numpy as np
sys.path.insert(0, sys.argv[1])
import sparse_mlp, sparse_mlp.model as mm
print(sparse_mlp.__file__)
from sparse_mlp.model import SparseMLP
for act, alpha in (("relu", None), ("allrelu", 0.5)):
  for nt in (1, 2):
    m = SparseMLP([50, 300, 200, 10], epsilon=10, activation=act, alpha=alpha, init="normal", dropout=0.3, rng=np.random.default_rng(0), n_threads=nt)
    rng = np.random.default_rng(1)
    for s in range(30):
        X = np.ascontiguousarray(rng.standard_normal((50, 128), dtype=np.float32)); y = rng.integers(0, 10, 128).astype(np.int32)
        m.train_step(X, y, 0.01, 0.9, 2e-4, m.dropout_keys(0, s))
    h = hashlib.sha1(b"".join(L.data.tobytes() for L in m.layers)).hexdigest()[:16]
    print(act, nt, h)
