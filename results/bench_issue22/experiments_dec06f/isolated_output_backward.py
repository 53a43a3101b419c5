"""The output layer's backward pass alone (a dense n_in x n_out layer, batch 128,
ReLU input with Z, the update fused), one thread (the serial build, and the
OpenMP build on a team of one) and two: us a call, best of five rounds.
    python isolated_output_backward.py 1000 2"""
import numpy as np, time, sys
sys.path.insert(0,'.')
from sparse_mlp.layers import SparseLayer
from sparse_mlp.kernels import aligned_empty
from sparse_mlp.activations import make_activation
import sparse_mlp._spmm as S, sparse_mlp._spmm_serial as SS
import sparse_mlp.layers as LM
import scipy.sparse as sp
from bench.bench_layers import best_time
rng=np.random.default_rng(0)
n_in=int(sys.argv[1]); n_out=int(sys.argv[2])
L=SparseLayer.from_scipy(sp.csr_matrix(rng.standard_normal((n_in,n_out)).astype(np.float32)))
B=128
X=aligned_empty((n_in,B)); X[...]=np.abs(rng.standard_normal((n_in,B)))
Z=aligned_empty((n_in,B)); Z[...]=rng.standard_normal((n_in,B))
D=aligned_empty((n_out,B)); D[...]=rng.standard_normal((n_out,B))*1e-3
act=make_activation("relu",0,n_in,None)
orig=LM.spmm_for
for name,mod,nt in (("serial",SS,1),("omp1",S,1),("omp2",S,2),("serial",SS,1),("omp1",S,1),("omp2",S,2)):
    LM.spmm_for=lambda n,w=0,mod=mod: mod
    t=best_time(lambda: L.backward_update(X,D,Z,1e-6,0.9,0.0,Z_in=Z,act_in=act,n_threads=nt),5,1000)
    print(name, round(t*1e6,2))
