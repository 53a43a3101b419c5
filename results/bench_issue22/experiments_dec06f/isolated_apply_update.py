"""apply_update alone, N weights, with an index (a permutation: the gathered
update of the split layers) and without, on one thread (serial build) and
two: us a call, best of five rounds.   python isolated_apply_update.py 20000"""
import numpy as np, sys
sys.path.insert(0,'.')
from sparse_mlp import _spmm as S, _spmm_serial as SS
from bench.bench_layers import best_time
n=int(sys.argv[1]); rng=np.random.default_rng(0)
w=rng.standard_normal(n).astype(np.float32); v=np.zeros(n,np.float32); g=rng.standard_normal(n).astype(np.float32)*1e-3
idx=rng.permutation(n).astype(np.int32)
for name,mod,nt,ix in (("serial idx",SS,1,idx),("omp2 idx",S,2,idx),("serial plain",SS,1,None),("omp2 plain",S,2,None)):
    print(name, round(best_time(lambda: mod.apply_update(w,v,g,1e-3,0.9,1e-4,False,n_threads=nt,index=ix),5,2000)*1e6,2))
