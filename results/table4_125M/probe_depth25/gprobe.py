import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout
import numpy as np
import sparse_mlp.layers as L
G = float(os.environ.get("GAIN_SCALE", "1"))
orig = L.init_values
def patched(init, n, n_in, n_out, rng, *args, **kwargs):
    v = orig(init, n, n_in, n_out, rng, *args, **kwargs)
    if init == "he_uniform_sparse" and G != 1.0:
        v *= np.float32(G)
    return v
L.init_values = patched
from sparse_mlp.cli import main
sys.exit(main(sys.argv[1:]))
