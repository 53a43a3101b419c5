"""DenseMLP: the fully connected twin of SparseMLP, for Table 2's dense rows.

The paper compares every SET-MLP with a dense MLP of the same shape (run in
Keras there).  Here the dense rows run in this engine, so every row of a
table comes from one tool on one machine: the products are BLAS calls
through NumPy/SciPy (``W @ X``, ``W.T @ D``, ``D @ X.T``), everything else
is the sparse engine's own code:

  layout      feature-major batches (neurons, B) float32, as SparseMLP
  activations the same C epilogues (``_activation.activation_forward`` /
              ``activation_backward``): ReLU, All-ReLU, leaky, tanh,
              sigmoid, SReLU
  dropout     the same counter-based hash of (seed, step, layer, neuron,
              sample), inverted scaling: with the same keys a dense layer
              drops exactly the neurons a sparse one does
  loss        ``softmax_xent`` / ``sigmoid_mse`` (delta = y_pred - y_true)
  optimiser   ``_spmm.apply_update``: v = mu*v - lr*g; w = w + v - decay*w,
              for weights and biases (reference semantics)

so the :class:`~sparse_mlp.training.Trainer` trains a DenseMLP unchanged
(with ``evolution`` and ``importance_pruning`` off), and a fully connected
SparseMLP with the same weights computes the same steps up to float
summation order (``tests/test_reproduce.py``).

Memory: per weight 4 bytes each for the value, its momentum and its
gradient.  :func:`dense_estimate` counts that (plus activations and data)
before anything is allocated and :func:`check_dense_fits` refuses a model
that would not fit with :class:`~sparse_mlp.errors.MemoryBudgetError` --
Leukemia's dense 54675-27500-27500-18 MLP (2.26e9 weights, ~25 GiB) is a
"memory error" here as it was in the paper.

The dense pipeline is :func:`sparse_mlp.experiment.run_dense`, the twin of
the sparse one in a run folder owned by :class:`sparse_mlp.run.Run`, with
the package's HDF5 checkpoints (``/model`` attrs kind="dense").
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np

from .activations import Activation
from .config import TrainConfig
from .errors import ConfigError, MemoryBudgetError
from .kernels import activation as act_kernels
from .kernels import aligned_empty, default_threads, spmm
from .layers import init_values, layer_gains
from .memory import HEADROOM, GiB, available_bytes
from .model import LayerStack

log = logging.getLogger(__name__)

BYTES_PER_DENSE_WEIGHT = 12  # value 4 + momentum 4 + gradient 4


# --------------------------------------------------------------------------- threads
@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit the BLAS library's threads to ``n`` inside the block (threadpoolctl,
    installed with scikit-learn); without threadpoolctl the BLAS default applies."""
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        log.warning("threadpoolctl is missing: BLAS uses its default thread count, not %d", n)
        yield
        return
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


# --------------------------------------------------------------------------- memory
@dataclass
class DenseEstimate:
    """Bytes a dense run needs (see :func:`dense_estimate`)."""

    n_weights: int
    weights: int
    train_batch: int
    eval_batch: int
    dataset: int

    @property
    def total(self) -> int:
        return self.weights + self.train_batch + self.eval_batch + self.dataset

    def lines(self) -> list[str]:
        def f(b: int) -> str:
            return f"{b / GiB:9.3f} GiB"
        return [f"weights, momentum, gradient ({self.n_weights:,} weights) : {f(self.weights)}",
                f"training activations                           : {f(self.train_batch)}",
                f"evaluation activations                         : {f(self.eval_batch)}",
                f"dataset                                        : {f(self.dataset)}",
                f"total                                          : {f(self.total)}"]


def dense_weights(sizes: list[int]) -> int:
    """Number of weights of a fully connected MLP, biases not counted (the
    paper's dense counts include them: Madelon 280,800 + 902 = 281,702)."""
    return int(sum(int(a) * int(b) for a, b in zip(sizes[:-1], sizes[1:])))


def dense_estimate(sizes: list[int], batch: int, eval_batch: int = 1024,
                   n_samples: int = 0, micro_batch: int | None = None) -> DenseEstimate:
    """Estimate the bytes of a dense run: per weight value, momentum and
    gradient (plus a second gradient block with micro-batches); per neuron
    bias, momentum, gradient; per training sample Z, A and the delta of
    every hidden layer, the input and the logits; per evaluation sample two
    blocks of the widest layer and the input; the dataset (train + test)."""
    sizes = [int(s) for s in sizes]
    n_w = dense_weights(sizes)
    per_weight = BYTES_PER_DENSE_WEIGHT + (4 if micro_batch and micro_batch < batch else 0)
    weights = per_weight * n_w + 12 * sum(sizes[1:])
    mb = batch if not micro_batch or micro_batch >= batch else micro_batch
    train = 4 * mb * (sizes[0] + sizes[-1] + 3 * sum(sizes[1:-1]))
    block = max(1, eval_batch)
    evals = 4 * block * (2 * max(sizes[1:]) + sizes[0])
    return DenseEstimate(n_w, weights, train, evals, 4 * n_samples * sizes[0])


def check_dense_fits(sizes: list[int], batch: int, eval_batch: int = 1024,
                     n_samples: int = 0, available: int | None = None,
                     already_loaded: bool = True) -> DenseEstimate:
    """Refuse a dense model that would not fit in memory, before allocating
    it; returns the estimate when it fits."""
    est = dense_estimate(sizes, batch, eval_batch, n_samples)
    avail = available_bytes() if available is None else int(available)
    need = est.total - (est.dataset if already_loaded else 0)
    if need > HEADROOM * avail:
        arch = "-".join(map(str, sizes))
        raise MemoryBudgetError(
            f"memory error: the dense {arch} MLP has {est.n_weights:,} weights and needs about "
            f"{need / GiB:.2f} GiB (value, momentum and gradient of every weight: "
            f"{BYTES_PER_DENSE_WEIGHT} bytes each), but only {avail / GiB:.2f} GiB is "
            f"available; it is not trained (the paper's dense run of this shape failed with a "
            f"memory error too):\n  " + "\n  ".join(est.lines()))
    return est


# --------------------------------------------------------------------------- layer
class DenseLayer:
    """One fully connected weight matrix, stored as W^T: ``W`` (n_out, n_in)
    float32 C-contiguous (row j: the incoming weights of output neuron j, the
    order of a sparse layer's CSR-by-output rows); ``data`` and ``velocity``
    are its flat (n_out * n_in,) views, ``bias`` and ``bias_velocity`` (n_out,).
    """

    def __init__(self, n_in: int, n_out: int, W: np.ndarray, init: str = "xavier",
                 bias: np.ndarray | None = None, velocity: np.ndarray | None = None,
                 bias_velocity: np.ndarray | None = None) -> None:
        self.n_in, self.n_out, self.init = int(n_in), int(n_out), init
        W = np.ascontiguousarray(W, dtype=np.float32)
        if W.shape != (self.n_out, self.n_in):
            raise ConfigError(f"W must have shape (n_out, n_in) = ({n_out}, {n_in}), "
                              f"got {W.shape}")
        self.W = W
        self.data = W.reshape(-1)
        self.velocity = (np.zeros_like(self.data) if velocity is None else
                         np.ascontiguousarray(velocity, dtype=np.float32).reshape(-1))
        self.bias = (np.zeros(self.n_out, np.float32) if bias is None else
                     np.ascontiguousarray(bias, dtype=np.float32).copy())
        self.bias_velocity = (np.zeros(self.n_out, np.float32) if bias_velocity is None else
                              np.ascontiguousarray(bias_velocity, dtype=np.float32).copy())
        if self.velocity.shape != self.data.shape or self.bias.shape != (self.n_out,) \
                or self.bias_velocity.shape != (self.n_out,):
            raise ConfigError("velocity, bias and bias_velocity must match W")

    @classmethod
    def random(cls, n_in: int, n_out: int, init: str, rng: np.random.Generator,
               gain2: float = 2.0) -> DenseLayer:
        """Every connection present, values from ``init`` (layers.init_values)."""
        W = init_values(init, int(n_in) * int(n_out), n_in, n_out, rng,
                        gain2=gain2).reshape(n_out, n_in)
        return cls(n_in, n_out, W, init)

    @property
    def nnz(self) -> int:
        return self.n_in * self.n_out

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.velocity.nbytes + 2 * self.bias.nbytes)

    def forward(self, X: np.ndarray, Z: np.ndarray, A: np.ndarray | None = None,
                act: Activation | None = None, dropout: float = 0.0, key: int = 0,
                b_offset: int = 0, n_threads: int = 1) -> None:
        """Z = W^T X + b (feature-major: X (n_in, B), Z (n_out, B)); when A is
        given, A = dropout(f(Z)) (A may be Z), the sparse layer's contract."""
        np.matmul(self.W, X, out=Z)
        Z += self.bias[:, None]
        if A is not None:
            kw = act.kernel_args() if act is not None else {}
            act_kernels.activation_forward(Z, A, drop_rate=dropout, drop_key=key,
                                           b_offset=b_offset, n_threads=n_threads, **kw)

    def __repr__(self) -> str:
        return f"DenseLayer({self.n_in} x {self.n_out}, init={self.init!r})"


# --------------------------------------------------------------------------- model
class DenseMLP(LayerStack):
    """A fully connected MLP with SparseMLP's interface (what the Trainer,
    evaluation and metrics use).

    Parameters
    ----------
    sizes : list of int
        ``[n_0 (inputs), n_1, ..., n_L (classes)]``.
    activation, alpha, output, dropout, init :
        As :class:`~sparse_mlp.model.SparseMLP`.
    rng : numpy.random.Generator
        Draws the initial values.
    n_threads : int, optional
        Threads of the activation and update kernels (BLAS threads: see
        :func:`blas_threads`).
    layers, activations : optional
        Use these instead of drawing new ones (loading a checkpoint).
    """

    def __init__(self, sizes: list[int], activation: str = "relu", alpha: float | None = None,
                 init: str = "xavier", output: str = "softmax", dropout: float = 0.0,
                 rng: np.random.Generator | None = None, n_threads: int | None = None,
                 layers: list[DenseLayer] | None = None,
                 activations: list[Activation] | None = None) -> None:
        sizes = self.check_settings(sizes, activation, output, init, dropout)
        self.sizes, self.activation, self.alpha = sizes, activation, alpha
        self.init, self.output, self.dropout = init, output, float(dropout)
        self.n_threads = int(n_threads or default_threads())
        self.lean = False  # the sparse model's activation-memory switch; dense keeps all
        rng = rng if rng is not None else np.random.default_rng()
        if layers is None:
            gains = layer_gains(len(sizes) - 1, activation, alpha)
            layers = [DenseLayer.random(a, b, init, rng, g)
                      for a, b, g in zip(sizes[:-1], sizes[1:], gains)]
        self.attach(sizes, layers, activations, activation, alpha, rng)
        self._bufs: dict | None = None
        self._grads: list | None = None

    # ------------------------------------------------------------------ facts
    @property
    def nbytes(self) -> int:
        return sum(lay.nbytes for lay in self.layers)

    def __repr__(self) -> str:
        return (f"DenseMLP({'-'.join(map(str, self.sizes))}, activation={self.activation!r}, "
                f"weights={self.nnz})")

    def dropout_keys(self, seed: int, step: int) -> list[int]:
        """The dropout key of every hidden layer for one step (as SparseMLP)."""
        return [act_kernels.dropout_key(seed, step, h) for h in range(len(self.acts))]

    # ------------------------------------------------------------------ training
    def _buffers(self, B: int) -> dict:
        """Per hidden layer Z, A and the delta G (n, B); the logits."""
        bufs = self._bufs
        if bufs is None or bufs["B"] != B:
            self._bufs = None
            hidden = self.sizes[1:-1]
            bufs = {"B": B,
                    "Z": [aligned_empty((n, B)) for n in self.sizes[1:]],
                    "A": [aligned_empty((n, B)) for n in hidden],
                    "G": [aligned_empty((n, B)) for n in hidden],
                    "sg": [np.empty((n, 4), np.float32) if a.params is not None else None
                           for n, a in zip(hidden, self.acts)]}
            self._bufs = bufs
        return bufs

    def _grad_buffers(self) -> list:
        if self._grads is None:
            self._grads = [(np.empty_like(lay.W), np.empty(lay.n_out, np.float32))
                           for lay in self.layers]
        return self._grads

    def _forward_backward(self, Xb: np.ndarray, yb: np.ndarray, keys: list[int],
                          b_offset: int, scale: float, accumulate: bool,
                          sg_acc: list) -> tuple[float, int]:
        """One block: forward with dropout, output delta, backward; writes
        (or adds, with ``accumulate``) scale * gradient into the gradient
        buffers; every delta uses the weights of the forward pass."""
        B = Xb.shape[1]
        bufs = self._buffers(B)
        prev = Xb
        L = self.n_layers
        for li, layer in enumerate(self.layers):
            if li < L - 1:
                layer.forward(prev, bufs["Z"][li], bufs["A"][li], act=self.acts[li],
                              dropout=self.dropout, key=keys[li], b_offset=b_offset,
                              n_threads=self.n_threads)
                prev = bufs["A"][li]
            else:
                layer.forward(prev, bufs["Z"][li], n_threads=self.n_threads)
        fn = act_kernels.softmax_xent if self.output == "softmax" else act_kernels.sigmoid_mse
        loss, correct = fn(bufs["Z"][-1], yb, True, n_threads=1)  # logits -> delta
        grads = self._grad_buffers()
        D = bufs["Z"][-1]
        for li in range(L - 1, -1, -1):
            layer = self.layers[li]
            X_in = Xb if li == 0 else bufs["A"][li - 1]
            g, bg = grads[li]
            if li > 0:  # delta of the layer below, with this layer's forward weights
                h = li - 1
                G = bufs["G"][h]
                np.matmul(layer.W.T, D, out=G)
                act, sg = self.acts[h], bufs["sg"][h]
                act_kernels.activation_backward(
                    bufs["Z"][h], G, srelu_grad=sg, drop_rate=self.dropout, drop_key=keys[h],
                    b_offset=b_offset, n_threads=self.n_threads, **act.kernel_args())
                if sg is not None:
                    sg_acc[h] += sg * np.float32(scale)
            # g (+)= scale * D X^T, bg (+)= scale * sum_b D
            if accumulate:
                g += np.float32(scale) * (D @ X_in.T)
                bg += np.float32(scale) * D.sum(axis=1, dtype=np.float32)
            else:
                np.matmul(D, X_in.T, out=g)
                g *= np.float32(scale)
                np.multiply(D.sum(axis=1, dtype=np.float32), np.float32(scale), out=bg)
            if li > 0:
                D = bufs["G"][li - 1]
        return float(loss), int(correct)

    def _accumulate(self, Xb: np.ndarray, yb: np.ndarray, keys: list[int],
                    micro_batch: int | None) -> tuple[float, int, list]:
        """Loss, correct predictions and batch-mean gradients of one batch,
        micro-batch by micro-batch (blocks of a divisor of B); nothing updated."""
        B = Xb.shape[1]
        mb = B if not micro_batch or micro_batch >= B else int(micro_batch)
        while B % mb:
            mb -= 1
        sg_acc = [None if a.params is None else np.zeros_like(a.params) for a in self.acts]
        loss, correct = 0.0, 0
        for off in range(0, B, mb):
            xs = Xb if mb == B else np.ascontiguousarray(Xb[:, off:off + mb])
            lo, c = self._forward_backward(xs, yb[off:off + mb], keys, off, 1.0 / B,
                                           accumulate=off > 0, sg_acc=sg_acc)
            loss += lo
            correct += c
        return loss, correct, sg_acc

    def train_step(self, Xb: np.ndarray, yb: np.ndarray, lr: float, momentum: float,
                   decay: float, keys: list[int], nesterov: bool = False,
                   micro_batch: int | None = None, sample_weight: np.ndarray | None = None
                   ) -> tuple[float, int]:
        """One mini-batch of momentum SGD (reference semantics, as
        :meth:`SparseMLP.train_step`): returns (summed loss, correct).
        Weighted samples are the sparse model's (the dense pipeline refuses
        --class-weight)."""
        if sample_weight is not None:
            raise ValueError("DenseMLP trains unweighted samples only")
        yb = np.ascontiguousarray(yb, dtype=np.int32)
        loss, correct, sg_acc = self._accumulate(Xb, yb, keys, micro_batch)
        for layer, (g, bg) in zip(self.layers, self._grad_buffers()):
            spmm.apply_update(layer.data, layer.velocity, g.reshape(-1), lr, momentum, decay,
                              nesterov, n_threads=self.n_threads)
            spmm.apply_update(layer.bias, layer.bias_velocity, bg, lr, momentum, decay,
                              nesterov, n_threads=1)
        self.update_activation_params(sg_acc, lr, momentum, nesterov)
        return loss, correct

    def gradients(self, Xb: np.ndarray, yb: np.ndarray, keys: list[int],
                  micro_batch: int | None = None
                  ) -> tuple[float, list[tuple[np.ndarray, np.ndarray]], list]:
        """Loss (batch mean) and batch-mean gradients [(g (n_out*n_in,), bias_g
        (n_out,)), ...] and SReLU parameter gradients, without updating (copies)."""
        yb = np.ascontiguousarray(yb, dtype=np.int32)
        loss, _, sg_acc = self._accumulate(Xb, yb, keys, micro_batch)
        grads = [(g.reshape(-1).copy(), bg.copy()) for g, bg in self._grad_buffers()]
        return loss / Xb.shape[1], grads, sg_acc

    def release_buffers(self) -> None:
        self._bufs = None
        self._grads = None

    # ------------------------------------------------------------------ inference
    def _blocks(self, X: np.ndarray, batch_size: int):
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ConfigError(f"expected data of shape (n_samples, {self.sizes[0]}), "
                              f"got {X.shape}")
        width = max(self.sizes[1:])
        for s in range(0, X.shape[0], batch_size):
            Xf = np.ascontiguousarray(X[s:s + batch_size].T, dtype=np.float32)
            m = Xf.shape[1]
            ping = np.empty((width, m), np.float32)
            pong = np.empty((width, m), np.float32)
            prev = Xf
            for li, layer in enumerate(self.layers):
                out = (ping if li % 2 == 0 else pong)[: layer.n_out]
                act = self.acts[li] if li < self.n_layers - 1 else None
                layer.forward(prev, out, out if act is not None else None, act=act,
                              n_threads=self.n_threads)
                prev = out
            yield s, m, prev

    def evaluate(self, X: np.ndarray, y: np.ndarray, batch_size: int = 1024
                 ) -> tuple[float, float]:
        """(mean loss, accuracy) over a dataset, in blocks (no dropout)."""
        y = np.ascontiguousarray(y, dtype=np.int32)
        if y.shape != (np.asarray(X).shape[0],):
            raise ConfigError("evaluate: y must have one label per row of X")
        fn = act_kernels.softmax_xent if self.output == "softmax" else act_kernels.sigmoid_mse
        loss, correct = 0.0, 0
        for s, m, logits in self._blocks(X, batch_size):
            lo, c = fn(logits, y[s:s + m], False, n_threads=1)
            loss += lo
            correct += c
        n = max(1, y.size)
        return loss / n, correct / n

    def predict(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted class ids (int64)."""
        out = np.empty(np.asarray(X).shape[0], dtype=np.int64)
        for s, m, logits in self._blocks(X, batch_size):
            out[s:s + m] = np.argmax(logits, axis=0)
        return out


# Dense checkpoints are the package's HDF5 checkpoints (sparse_mlp.checkpoint:
# /model attrs kind="dense", /model/layers/<l>/W ...): save_checkpoint,
# load_checkpoint, CheckpointDir and load() take and return a DenseMLP.


# --------------------------------------------------------------------------- run
def dense_config(cfg: TrainConfig) -> TrainConfig:
    """The dense twin of a sparse configuration (Table 2's dense rows): the
    same data, widths, activation and optimiser, without SET, Importance
    Pruning and post-training pruning (:func:`run_dense` refuses every
    setting of a sparse topology)."""
    return cfg.replace(evolution=False, importance_pruning=False, post_prune=[],
                       er_sampling="exact")
