"""Hidden activations and output losses.

Each hidden layer has an :class:`Activation`: a kernel code plus its
parameters.  The kernels apply it fused with the sparse products
(``pyx/rowkern.h``); this module only builds the specification, and holds
the SReLU parameters (the only trainable ones).

All-ReLU (paper eq. 3; docs/semantics.md, "All-ReLU"): for x > 0, f(x) = x; for x <= 0 the
slope alternates by hidden layer: -alpha on the 1st, 3rd, ... hidden layer,
+alpha on the 2nd, 4th, ...  It is the leaky kernel with slope -alpha or
+alpha, so it costs exactly what ReLU costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import HIDDEN_ACTIVATIONS, OUTPUTS  # noqa: F401 (OUTPUTS: model.py imports it here)
from .errors import ConfigError

# kernel codes (pyx/rowkern.h)
ACT_IDENTITY, ACT_RELU, ACT_LEAKY, ACT_TANH, ACT_SIGMOID, ACT_SRELU = range(6)

DEFAULT_LEAKY_SLOPE = 0.01


@dataclass
class Activation:
    """The activation of one hidden layer.

    Attributes
    ----------
    name : str
        One of :data:`HIDDEN_ACTIVATIONS`.
    kind : int
        Kernel code.
    slope : float
        Negative-side slope (leaky, All-ReLU).
    params : ndarray of float32, shape (n_neurons, 4), optional
        SReLU's (t_left, a_left, t_right, a_right) per neuron.
    velocity : ndarray, optional
        Momentum of ``params``.
    """

    name: str
    kind: int
    slope: float = 0.0
    params: np.ndarray | None = None
    velocity: np.ndarray | None = field(default=None, repr=False)

    @property
    def trainable(self) -> bool:
        return self.params is not None

    def kernel_args(self) -> dict:
        """Keyword arguments of the fused kernels."""
        return {"act": self.kind, "slope": float(self.slope), "srelu": self.params}


def srelu_initial(n: int, rng: np.random.Generator | None) -> np.ndarray:
    """SReLU start values, (n, 4) float32: t_left = 0, a_left = 0.2,
    t_right = 1, a_right = 1 (ReLU-like on [0, 1), leaky below 0).  With an
    ``rng`` the thresholds get a small jitter to break symmetry."""
    p = np.empty((n, 4), dtype=np.float32)
    p[:, 0] = 0.0
    p[:, 1] = 0.2
    p[:, 2] = 1.0
    p[:, 3] = 1.0
    if rng is not None and n:
        p[:, 2] += rng.uniform(0.0, 0.5, size=n).astype(np.float32)
    return p


def init_gain2(name: str, alpha: float | None) -> float:
    """The variance gain that keeps a signal's scale through a layer followed
    by activation ``name`` (``--weight-init kaiming_uniform_sparse``): with
    weights of variance g / fan-in, z = W x has variance g E[x^2] and
    E[f(z)^2] = E[x^2], so neither grows nor fades with depth.  ReLU: 2;
    leaky ReLU and All-ReLU with negative slope a: 2 / (1 + a^2); tanh:
    25/9; sigmoid: 1 (PyTorch's ``calculate_gain`` squared).  SReLU has no
    fixed gain (its shape is trained)."""
    if name == "relu":
        return 2.0
    if name in ("allrelu", "leaky"):
        a = DEFAULT_LEAKY_SLOPE if alpha is None else float(alpha)
        return 2.0 / (1.0 + a * a)
    if name == "tanh":
        return 25.0 / 9.0
    if name == "sigmoid":
        return 1.0
    raise ConfigError(f"--weight-init kaiming_uniform_sparse needs a fixed-shape activation "
                      f"(relu, allrelu, leaky, tanh, sigmoid), not {name!r}")


def make_activation(name: str, hidden_index: int, n_neurons: int, alpha: float | None,
                    rng: np.random.Generator | None = None) -> Activation:
    """Build the activation of hidden layer ``hidden_index`` (1 = first).

    Parameters
    ----------
    name : str
        One of :data:`HIDDEN_ACTIVATIONS`.
    hidden_index : int
        1-based position among the hidden layers (decides All-ReLU's sign).
    n_neurons : int
        Width of the layer (SReLU parameters).
    alpha : float or None
        All-ReLU slope (required for 'allrelu'); leaky slope for 'leaky'
        (default 0.01).
    """
    if name == "relu":
        return Activation(name, ACT_RELU)
    if name == "allrelu":
        if alpha is None:
            raise ConfigError("All-ReLU needs a slope: pass --alpha (the paper uses 0.05-0.75)")
        slope = -float(alpha) if hidden_index % 2 == 1 else float(alpha)
        return Activation(name, ACT_LEAKY, slope=slope)
    if name == "leaky":
        return Activation(name, ACT_LEAKY,
                          slope=DEFAULT_LEAKY_SLOPE if alpha is None else float(alpha))
    if name == "tanh":
        return Activation(name, ACT_TANH)
    if name == "sigmoid":
        return Activation(name, ACT_SIGMOID)
    if name == "srelu":
        params = srelu_initial(n_neurons, rng)
        return Activation(name, ACT_SRELU, params=params, velocity=np.zeros_like(params))
    raise ConfigError(
        f"unknown activation {name!r}; choose one of {', '.join(HIDDEN_ACTIVATIONS)}")
