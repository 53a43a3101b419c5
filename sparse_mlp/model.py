"""SparseMLP: sparse layers chained with activations; forward, backward,
update, prediction.

A batch travels feature-major: (neurons, B) float32 C-contiguous arrays.
Per hidden layer l the training step keeps two arrays, Z_l (pre-activation)
and A_l (after activation and dropout, the next layer's input); the output
layer keeps its logits.  Backpropagation writes each layer's delta over its
own Z (the gradient to the inputs is fused with f' and the dropout mask, and
reads Z before writing it), so no further per-layer buffer exists.  Dropout
masks are never stored: they are a hash of (seed, step, layer, neuron,
sample) and the backward pass regenerates them.

Update order is the reference code's: every layer's delta is computed with
the weights of the forward pass.  The backward step of a layer is one pass
over its transposed index that computes the gradient to its inputs (fused
with f' and the dropout mask of the layer below) and, from the same rows of
the delta, the gradient of each weight, which it applies right after that
weight's old value was used (``SparseLayer.backward_update``).
"""

from __future__ import annotations

import numpy as np

from .activations import HIDDEN_ACTIVATIONS, OUTPUTS, Activation, make_activation
from .errors import ConfigError
from .kernels import activation as act_kernels
from .kernels import default_threads, spmm
from .layers import INITS, SparseLayer


class SparseMLP:
    """A multilayer perceptron whose every weight matrix is truly sparse.

    Parameters
    ----------
    sizes : list of int
        Layer widths ``[n_0 (inputs), n_1, ..., n_L (classes)]``.
    epsilon : float
        Erdos-Renyi density parameter (a layer has about eps*(n_in+n_out) weights).
    activation : str
        Hidden activation, one of :data:`HIDDEN_ACTIVATIONS`.
    alpha : float, optional
        All-ReLU slope (required for 'allrelu'), leaky slope for 'leaky'.
    init : str
        'normal', 'xavier' or 'he_uniform'.
    output : str
        'softmax' (+ cross-entropy) or 'sigmoid' (+ MSE).
    dropout : float
        Dropout rate on hidden activations during training.
    rng : numpy.random.Generator
        Generator for the initial topology and values.
    n_threads : int, optional
        Kernel threads (default: the cores available).
    layers : list of SparseLayer, optional
        Use these layers instead of drawing new ones (loading a model).
    """

    def __init__(self, sizes: list[int], epsilon: float = 20.0, activation: str = "relu",
                 alpha: float | None = None, init: str = "he_uniform",
                 output: str = "softmax", dropout: float = 0.0,
                 rng: np.random.Generator | None = None, n_threads: int | None = None,
                 layers: list[SparseLayer] | None = None,
                 activations: list[Activation] | None = None) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(f"sizes must list at least 2 positive layer widths, got {sizes}")
        if activation not in HIDDEN_ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of "
                              f"{', '.join(HIDDEN_ACTIVATIONS)}")
        if output not in OUTPUTS:
            raise ConfigError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
        if init not in INITS:
            raise ConfigError(f"unknown weight init {init!r}; choose one of {', '.join(INITS)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.sizes = sizes
        self.epsilon = float(epsilon)
        self.activation = activation
        self.alpha = alpha
        self.init = init
        self.output = output
        self.dropout = float(dropout)
        self.n_threads = int(n_threads or default_threads())
        rng = rng if rng is not None else np.random.default_rng()
        if layers is None:
            layers = [SparseLayer.erdos_renyi(sizes[i], sizes[i + 1], epsilon, init, rng)
                      for i in range(len(sizes) - 1)]
        if [(lay.n_in, lay.n_out) for lay in layers] != list(zip(sizes[:-1], sizes[1:])):
            raise ConfigError("the layers do not match the sizes")
        self.layers = layers
        if activations is None:
            activations = [make_activation(activation, h + 1, sizes[h + 1], alpha, rng)
                           for h in range(len(sizes) - 2)]
        self.acts = activations
        self._train_bufs: dict | None = None
        self._eval_bufs: dict | None = None

    # ------------------------------------------------------------------ facts
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def nnz(self) -> int:
        return sum(lay.nnz for lay in self.layers)

    def nnz_per_layer(self) -> list[int]:
        return [lay.nnz for lay in self.layers]

    @property
    def n_neurons(self) -> int:
        return sum(self.sizes)

    @property
    def nbytes(self) -> int:
        """Bytes held by the parameters and optimiser state."""
        n = sum(lay.nbytes for lay in self.layers)
        n += sum(a.params.nbytes * 2 for a in self.acts if a.params is not None)
        return n

    def copy(self) -> SparseMLP:
        """An independent copy (weights, momentum, activations' parameters)."""
        layers = []
        for lay in self.layers:
            c = SparseLayer(lay.n_in, lay.n_out, lay.indptr.copy(), lay.indices.copy(),
                            lay.data.copy(), init=lay.init, bias=lay.bias,
                            velocity=lay.velocity.copy(), bias_velocity=lay.bias_velocity,
                            check=False)
            layers.append(c)
        acts = [Activation(a.name, a.kind, a.slope,
                           None if a.params is None else a.params.copy(),
                           None if a.velocity is None else a.velocity.copy())
                for a in self.acts]
        return SparseMLP(self.sizes, self.epsilon, self.activation, self.alpha, self.init,
                         self.output, self.dropout, n_threads=self.n_threads, layers=layers,
                         activations=acts)

    def __repr__(self) -> str:
        return (f"SparseMLP({'-'.join(map(str, self.sizes))}, activation={self.activation!r}, "
                f"nnz={self.nnz})")

    # ------------------------------------------------------------------ buffers
    def _train_buffers(self, B: int) -> dict:
        bufs = self._train_bufs
        if bufs is None or bufs["B"] != B:
            L = self.n_layers
            bufs = {"B": B,
                    "Z": [np.empty((n, B), dtype=np.float32) for n in self.sizes[1:]],
                    "A": [np.empty((n, B), dtype=np.float32) for n in self.sizes[1:L]],
                    "sg": [np.empty((n, 4), dtype=np.float32) if a.params is not None else None
                           for n, a in zip(self.sizes[1:L], self.acts)]}
            self._train_bufs = bufs
        return bufs

    def _eval_buffers(self, B: int) -> dict:
        bufs = self._eval_bufs
        if bufs is None or bufs["B"] != B:
            width = max(self.sizes[1:])
            bufs = {"B": B, "ping": np.empty((width, B), dtype=np.float32),
                    "pong": np.empty((width, B), dtype=np.float32),
                    "X": np.empty((self.sizes[0], B), dtype=np.float32)}
            self._eval_bufs = bufs
        return bufs

    def release_buffers(self) -> None:
        """Free the per-batch activation arrays (they are re-created on demand)."""
        self._train_bufs = None
        self._eval_bufs = None

    # ------------------------------------------------------------------ training
    def dropout_keys(self, seed: int, step: int) -> list[int]:
        """The dropout key of every hidden layer for one training step."""
        return [act_kernels.dropout_key(seed, step, h) for h in range(len(self.acts))]

    def forward_train(self, Xb: np.ndarray, keys: list[int]) -> np.ndarray:
        """Training forward pass of a feature-major batch (n_0, B); returns
        the output layer's logits (n_L, B) (a view of an internal buffer)."""
        B = Xb.shape[1]
        bufs = self._train_buffers(B)
        prev = Xb
        for li, layer in enumerate(self.layers):
            Z = bufs["Z"][li]
            if li < self.n_layers - 1:
                A = bufs["A"][li]
                layer.forward(prev, Z, A, act=self.acts[li], dropout=self.dropout,
                              key=keys[li], n_threads=self.n_threads)
                prev = A
            else:
                layer.forward(prev, Z, n_threads=self.n_threads)
        return bufs["Z"][-1]

    def output_delta(self, logits: np.ndarray, yb: np.ndarray) -> tuple[float, int]:
        """Turn the logits into the output delta in place; returns
        (loss summed over the batch, correct predictions)."""
        if self.output == "softmax":
            return act_kernels.softmax_xent(logits, yb, True, n_threads=1)
        return act_kernels.sigmoid_mse(logits, yb, True, n_threads=1)

    def train_step(self, Xb: np.ndarray, yb: np.ndarray, lr: float, momentum: float,
                   decay: float, keys: list[int], nesterov: bool = False
                   ) -> tuple[float, int]:
        """One mini-batch of momentum SGD (reference semantics).

        Parameters
        ----------
        Xb : ndarray float32 (n_0, B)
            Feature-major batch.
        yb : ndarray int32 (B,)
            Class ids.
        lr, momentum, decay : float
            v = momentum*v - lr*g;  w = w + v - decay*w.
        keys : list of int
            Dropout keys of this step (:meth:`dropout_keys`).

        Returns
        -------
        (loss summed over the batch, number of correct predictions)
        """
        B = Xb.shape[1]
        logits = self.forward_train(Xb, keys)
        loss, correct = self.output_delta(logits, yb)
        bufs = self._train_bufs
        # last layer to first: each layer's delta D sits in its own Z buffer
        for li in range(self.n_layers - 1, -1, -1):
            layer, D = self.layers[li], bufs["Z"][li]
            if li == 0:  # no gradient to the inputs
                layer.update(Xb, D, lr, momentum, decay, nesterov=nesterov,
                             n_threads=self.n_threads)
                continue
            # delta of the layer below, written over its pre-activations, and
            # this layer's update, in one pass (old weights used for the delta)
            Zin, sg, act = bufs["Z"][li - 1], bufs["sg"][li - 1], self.acts[li - 1]
            layer.backward_update(bufs["A"][li - 1], D, Zin, lr, momentum, decay,
                                  nesterov=nesterov, Z_in=Zin, act_in=act, srelu_grad=sg,
                                  dropout=self.dropout, key=keys[li - 1],
                                  n_threads=self.n_threads)
            if sg is not None:  # SReLU parameters: same optimiser, no weight decay
                g = sg.reshape(-1) * np.float32(1.0 / B)
                spmm.apply_update(act.params.reshape(-1), act.velocity.reshape(-1), g, lr,
                                  momentum, 0.0, nesterov, n_threads=1)
        return loss, correct

    def gradients(self, Xb: np.ndarray, yb: np.ndarray, keys: list[int]
                  ) -> tuple[float, list[tuple[np.ndarray, np.ndarray]], list]:
        """Loss (batch mean) and gradients (batch mean) of every layer without
        updating anything: [(g (nnz,), bias_g (n_out,)), ...] and the SReLU
        parameter gradients per hidden layer (or None)."""
        B = Xb.shape[1]
        logits = self.forward_train(Xb, keys)
        loss, _ = self.output_delta(logits, yb)
        bufs = self._train_bufs
        grads: list = [None] * self.n_layers
        sgs: list = [None] * (self.n_layers - 1)
        for li in range(self.n_layers - 1, -1, -1):
            layer, D = self.layers[li], bufs["Z"][li]
            if li == 0:
                grads[0] = layer.gradient(Xb, D, n_threads=self.n_threads)
                continue
            Zin, sg = bufs["Z"][li - 1], bufs["sg"][li - 1]
            g = (np.empty(layer.nnz, np.float32), np.empty(layer.n_out, np.float32))
            layer.backward_update(bufs["A"][li - 1], D, Zin, 0.0, 0.0, 0.0, Z_in=Zin,
                                  act_in=self.acts[li - 1], srelu_grad=sg,
                                  dropout=self.dropout, key=keys[li - 1], grads=g,
                                  n_threads=self.n_threads)
            grads[li] = g
            if sg is not None:
                sgs[li - 1] = sg / np.float32(B)
        return loss / B, grads, sgs

    # ------------------------------------------------------------------ inference
    def _forward_eval(self, Xf: np.ndarray) -> np.ndarray:
        """Inference on a feature-major block; returns the logits (n_L, B)."""
        B = Xf.shape[1]
        bufs = self._eval_buffers(B)
        prev = Xf
        cur_name = "ping"
        for li, layer in enumerate(self.layers):
            out = bufs[cur_name][: layer.n_out]
            if li < self.n_layers - 1:
                layer.forward(prev, out, out, act=self.acts[li], n_threads=self.n_threads)
            else:
                layer.forward(prev, out, n_threads=self.n_threads)
            prev = out
            cur_name = "pong" if cur_name == "ping" else "ping"
        return prev

    def _iter_blocks(self, X: np.ndarray, batch_size: int):
        X = _as_samples(X, self.sizes[0])
        n = X.shape[0]
        rows_all = np.arange(n, dtype=np.int64)
        for s in range(0, n, batch_size):
            rows = rows_all[s:s + batch_size]
            bufs = self._eval_buffers(rows.size) if rows.size == batch_size else None
            Xf = bufs["X"] if bufs is not None else np.empty((X.shape[1], rows.size), np.float32)
            spmm.gather_columns(X, rows, Xf, n_threads=self.n_threads)
            yield s, rows.size, self._forward_eval(Xf)

    def predict_proba(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), computed in blocks of
        ``batch_size`` samples (one block of activations per layer at most)."""
        out = np.empty((_n_rows(X), self.sizes[-1]), dtype=np.float32)
        labels = None
        for s, m, logits in self._iter_blocks(X, batch_size):
            if labels is None or labels.size != m:
                labels = np.zeros(m, dtype=np.int32)
            if self.output == "softmax":
                act_kernels.softmax_xent(logits, labels, False, n_threads=1)
            else:
                act_kernels.sigmoid_mse(logits, labels, False, n_threads=1)
            out[s:s + m] = logits.T
        return out

    def predict(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted class ids (int64)."""
        out = np.empty(_n_rows(X), dtype=np.int64)
        for s, m, logits in self._iter_blocks(X, batch_size):
            out[s:s + m] = np.argmax(logits, axis=0)
        return out

    def evaluate(self, X: np.ndarray, y: np.ndarray, batch_size: int = 1024
                 ) -> tuple[float, float]:
        """(mean loss, accuracy) over a dataset, in blocks."""
        y = np.ascontiguousarray(y, dtype=np.int32)
        if y.shape != (_n_rows(X),):
            raise ConfigError("evaluate: y must have one label per row of X")
        if y.size and (y.min() < 0 or y.max() >= self.sizes[-1]):
            raise ConfigError(f"evaluate: labels must be in [0, {self.sizes[-1]})")
        loss = 0.0
        correct = 0
        fn = act_kernels.softmax_xent if self.output == "softmax" else act_kernels.sigmoid_mse
        for s, m, logits in self._iter_blocks(X, batch_size):
            ls, c = fn(logits, y[s:s + m], False, n_threads=1)
            loss += ls
            correct += c
        n = max(1, y.size)
        return loss / n, correct / n


def _n_rows(X) -> int:
    return int(X.shape[0])


def _as_samples(X: np.ndarray, n_features: int) -> np.ndarray:
    """Sample-major float32 C-contiguous view or copy of X, checked."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ConfigError(f"expected data of shape (n_samples, {n_features}), got {X.shape}")
    if X.dtype != np.float32 or not X.flags.c_contiguous:
        X = np.ascontiguousarray(X, dtype=np.float32)
    return X
