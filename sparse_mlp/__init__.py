"""sparse_mlp: truly sparse MLPs trained with SET on CPUs.

No dense weight matrix and no binary mask exist at any point: every weight
matrix is held as compressed sparse arrays and every hot loop is a compiled
kernel (``pyx/``) that touches existing connections only.

Heavy submodules are imported lazily so that ``import sparse_mlp`` stays
cheap and the pure-Python parts (datasets, configuration) work even before
the kernels are compiled.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "SparseLayer": "sparse_mlp.layers",
    "SparseMLP": "sparse_mlp.model",
    "TrainConfig": "sparse_mlp.config",
    "load_dataset": "sparse_mlp.datasets",
    "load": "sparse_mlp.checkpoint",
    "TrainedModel": "sparse_mlp.trained",
    "Preprocessing": "sparse_mlp.preprocessing",
    "SparseMLPClassifier": "sparse_mlp.estimator",
    "SparseMLPRegressor": "sparse_mlp.estimator",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparse_mlp' has no attribute {name!r}")


__all__ = list(_LAZY) + ["__version__"]
