import sys, time, numpy as np
sys.path.insert(0, '/work/main')
from sparse_mlp.layers import SparseLayer
from sparse_mlp.kernels import spmm, aligned_empty
from sparse_mlp.activations import Activation, ACT_LEAKY
n=5000000; n_out=2; B=64
rng=np.random.default_rng(0)
L=SparseLayer.erdos_renyi(n,n_out,1.0,"he_uniform",rng)
X=aligned_empty((n,B)); X[...]=1
D=aligned_empty((n_out,B)); D[...]=0.5
Zin=aligned_empty((n,B)); Zin[...]=0.3
act=Activation("allrelu", ACT_LEAKY, slope=-0.6)
g=np.zeros(L.nnz,np.float32); bg=np.zeros(n_out,np.float32); wt=L.data[L.t_perm]
bits=aligned_empty((n, spmm.epilogue_bits_words(B)), np.uint16); bits[...]=0x5555
for r in range(40):
    L.backward_update(X,D,Zin,0,0,0,Z_in=Zin,act_in=act,dropout=0.4,key=3,scale=1/128,grads=(g,bg),accumulate=True,n_threads=1,weights_t=wt,bits=bits)
