import os, sys
sys.path.insert(0, '/work/main')
import numpy as np
import sparse_mlp.layers as L
G = float(os.environ.get("GAIN_SCALE", "1"))
orig = L.init_values
def patched(init, n, n_in, n_out, rng, density=1.0):
    v = orig(init, n, n_in, n_out, rng, density)
    if init == "he_uniform_sparse" and G != 1.0:
        v *= np.float32(G)
    return v
L.init_values = patched
from sparse_mlp.cli import main
sys.exit(main(sys.argv[1:]))
