import timeit, numpy as np
from sparse_mlp.kernels import spmm_for
k = spmm_for(1)
a = np.zeros(16, np.float32); b=a.copy(); c=a.copy()
n=200000
for name, f in [("apply_update 3 bufs kw", lambda: k.apply_update(a, b, c, 0.1, 0.9, 0.0, False, n_threads=1)),
                ("apply_update pos", lambda: k.apply_update(a, b, c, 0.1, 0.9, 0.0, False, 1)),
                ("lambda noop", lambda: None)]:
    t = min(timeit.repeat(f, number=n, repeat=5))/n*1e6
    print(name, round(t,3), "us")
