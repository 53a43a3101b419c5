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
from .config import kaiming_refusal
from .errors import ConfigError
from .kernels import activation as act_kernels
from .kernels import (
    activation_for,
    activation_serial,
    aligned_empty,
    default_threads,
    spmm,
    spmm_for,
)
from .layers import INITS, WEIGHT_INITS, SparseLayer, layer_gains, layer_inits

# With several threads the fused backward pass (gradient to the inputs and
# weight update in one pass over the transposed index) updates weights that
# lie scattered through the layer's arrays: the weights of one output row sit
# side by side and come from input rows that different threads handle at the
# same time, so two threads keep writing to the same cache lines.  Called
# that way on 2 threads it took 1.6x (1000 x 1000, eps 20) to 1.7x (CIFAR's
# 4000 x 1000) the time of 1 thread.  Up to this many weights (a 256 MiB
# scratch) the pass writes the gradient into a scratch array instead and a
# second pass updates the weights in their own order (contiguous ranges per
# thread); only larger layers keep the single pass.  On one thread the split
# is faster too: the single pass reads and writes weight and momentum at
# scattered positions, the split writes only the gradient there and then
# updates in order (the Higgs shape's 1000 x 1000 layer at batch 128: 130 us
# against 114 + 5 us, BENCHMARKS.md §2), from SPLIT_UPDATE_MIN_1T weights: in
# smaller layers the scattered accesses stay in L1 and the second call costs
# more than it saves (bench/bench_split_update.py).  The first layer (no
# gradient to the inputs) splits at any size up to SPLIT_UPDATE_MAX, on any
# thread count: its fused gradient-and-update (``SparseLayer.update``) was the
# slower of the two, or as fast, everywhere measured: 10.7 against 9.9 us on
# Madelon's first layer at batch 32, 28.3 against 26.3 us on Higgs's, 585 against
# 565 us on CIFAR10's at batch 128 on one thread (bench/bench_split_update.py,
# results/bench_issue22/split_update_first_layer.txt).
#
# The split pass itself wrote the gradient through the same permutation, so
# on several threads it kept the shared cache lines: the backward pass of a
# 1000 x 1000 layer (eps 20, batch 128) took as long on 2 threads as on 1.
# It now writes the gradient in the transposed index's order (each thread a
# contiguous range of its own) and the update pass reads it back through the
# inverse permutation (SparseLayer.t_inverse, 4 bytes per weight): the pass
# then ran 1.4x to 1.7x faster on 2 threads than on 1 (1.0x to 1.3x before;
# bench/bench_split_update.py --threads,
# results/bench_issue22/split_update_transposed_order.txt), and on one thread
# as fast or up to 18% faster (sequential writes instead of scattered ones).
# TRANSPOSED_GRADIENT = False restores the permutation (for A/B benchmarks:
# bench/bench_model_switch.py).
SPLIT_UPDATE_MAX = 1 << 26
TRANSPOSED_GRADIENT = True
SPLIT_UPDATE_MIN_1T = 1 << 14

# Below SPLIT_UPDATE_MIN_1T weights, a layer whose rows are all full (nnz =
# n_in * n_out: an output layer of a few classes) keeps the fused pass on
# several threads too.  Its fused pass writes the weights of input row i at
# j * n_in + i for each output row j, so a thread's block of input rows writes
# one run per output row, and the threads share only the lines where their
# runs meet; the split's second pass gathers the whole gradient through the
# inverse permutation, half of it from the other core.  The output layer's
# calls on two threads, split -> fused (us a batch, the quietest of 6 and of 8
# alternating epochs, results/bench_issue22/experiments_dec06c/
# fuse_full_rows_calls.txt): Higgs's 1000 x 2 35.9-37.3 -> 33.0-33.6,
# FashionMNIST's 1000 x 10 55.4-59.2 -> 49.2-51.7; whole two-thread epochs
# faster in 7 and 10 of 12 pairs (fuse_full_rows_2t.jsonl).  Not above the
# bound: CIFAR10's 4000 x 10 (40,000 weights) went 229.0 -> 262.4.  False: split
# as the other layers (for A/B benchmarks: bench/bench_model_switch.py).
FUSE_FULL_ROWS = True

# The training forward pass stores each hidden layer's Z only where the backward
# pass will read it: where the fused AVX-512 epilogue keeps its dropout and sign
# masks (the bits), the backward pass reads those instead, so in 'fast' mode Z's
# buffer is left for the backward pass to write its gradient into ('lean' mode
# recomputes A from Z: it keeps Z).  The same results; one store of n x B floats
# less per hidden layer and step.  False stores Z always (for A/B benchmarks:
# bench/bench_model_switch.py --switch SKIP_Z_WITH_BITS).
SKIP_Z_WITH_BITS = True

# The loss kernel (one sample a column, the samples' losses summed afterwards in
# a fixed order: the same bits on any thread count) counts each logit as this
# many multiply-adds when it decides its threads (kernels.activation_for, the
# rule of min_parallel_work): a logit costs a few double exps and a log, and
# 1024 logits (10 classes at batch 128) take ~14 us on one thread.  On one
# thread the loss left the other thread idle long enough to fall asleep (the
# loss and the Python around it: ~50 us in a CIFAR10 step), and the output
# layer's backward pass then waited 32-37 us for it; on two threads the wait was
# 0.8-0.9 us in 5 of 8 epochs (8-17 in the others) and the gap 36-53 us instead
# of 43-58 (FashionMNIST's gap 21-22 -> 15-17 us;
# results/bench_issue22/experiments_dec06d/loss_threads_ab.jsonl, measured as a
# bound of 1024 logits, the same split).  Higgs's 2 x 128 logits gained nothing
# (4.6 us either way) and stay on one thread, as do Madelon's 2 x 32.
LOSS_WORK = 1024

# The backward pass writes the delta of hidden layer h (its gradient to the
# inputs) over that layer's activations A, row by row right after the row's
# last read (each input row's weight gradients read only that row of A, and
# the kernels read all of a row before they store its delta;
# spmm.backward_update refuses any other overlap), instead of over Z.  Where
# the forward pass kept its bits, Z was not written this step (SKIP_Z_WITH_BITS):
# its lines had to be fetched from L3 or memory before each store, A's rows are
# in the core's cache.  One thread, two runs of 12 alternating epoch pairs (the
# ratio of the medians): CIFAR10 0.94 / 0.93 of the time (its backward passes
# 10-14% faster, the first layer's weight gradient 7%), Higgs 0.98 / 0.96,
# FashionMNIST 0.99 / 0.93.  On several threads the next
# layer's backward pass reads the delta's rows on every core, so the next
# forward pass's stores into A then wait for the other cores to give up those
# lines: Higgs's two-thread epochs were 2% slower (2 of 16 pairs faster).  So
# on several threads only where A's block is at least
# DELTA_OVER_INPUT_MIN_BYTES, larger than a core's L2, whose lines have left the
# other cores by then (CIFAR10's 4000-wide layers: two-thread batches 4601 ->
# 4252 us, medians of 12; results/bench_issue22/experiments_dec06e/).  The same
# bits either way.  False: always over Z (for A/B benchmarks:
# bench/bench_model_switch.py --switch DELTA_OVER_INPUT).
DELTA_OVER_INPUT = True
DELTA_OVER_INPUT_MIN_BYTES = 1 << 20
_NO_SCRATCH = (np.empty(0, np.float32), np.empty(0, np.float32))


class LayerStack:
    """What every MLP of this package shares (SparseMLP, dense.DenseMLP): the
    checks of its settings, its layers with their activations, and its sizes."""

    layers: list
    acts: list

    @staticmethod
    def check_settings(sizes, activation: str, output: str, init: str,
                       dropout: float) -> list[int]:
        """The layer widths as ints; a clear error for any impossible setting."""
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(f"sizes must list at least 2 positive layer widths, got {sizes}")
        if activation not in HIDDEN_ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of "
                              f"{', '.join(HIDDEN_ACTIVATIONS)}")
        if output not in OUTPUTS:
            raise ConfigError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
        if init not in WEIGHT_INITS:
            what = ("is for the output layer only (output_init)" if init == "zero"
                    else "is unknown")
            raise ConfigError(f"weight init {init!r} {what}; choose one of "
                              f"{', '.join(WEIGHT_INITS)}")
        refusal = kaiming_refusal(init, activation)
        if refusal:
            raise ConfigError(refusal)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        return sizes

    def attach(self, sizes: list[int], layers: list, activations: list | None,
               activation: str, alpha: float | None, rng: np.random.Generator) -> None:
        """Hold ``layers`` (checked against ``sizes``) and the hidden layers'
        activations (new ones unless given)."""
        if [(lay.n_in, lay.n_out) for lay in layers] != list(zip(sizes[:-1], sizes[1:])):
            raise ConfigError("the layers do not match the sizes")
        # the gain each layer regrows weights with (kaiming_uniform_sparse),
        # set here for layers drawn, loaded, copied or received alike
        for lay, g in zip(layers, layer_gains(len(layers), activation, alpha)):
            lay.gain2 = g
        self.layers = layers
        if activations is None:
            activations = [make_activation(activation, h + 1, sizes[h + 1], alpha, rng)
                           for h in range(len(sizes) - 2)]
        self.acts = activations

    def update_activation_params(self, grads: list, lr: float, momentum: float,
                                 nesterov: bool) -> None:
        """SReLU parameters: the weights' momentum update, no weight decay
        (``grads`` holds None for activations without parameters)."""
        for act, g in zip(self.acts, grads):
            if g is not None:
                spmm_for(1).apply_update(act.params.reshape(-1), act.velocity.reshape(-1),
                                         g.reshape(-1), lr, momentum, 0.0, nesterov,
                                         n_threads=1)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def nnz(self) -> int:
        return sum(lay.nnz for lay in self.layers)

    def nnz_per_layer(self) -> list[int]:
        return [lay.nnz for lay in self.layers]


class SparseMLP(LayerStack):
    """A multilayer perceptron whose every weight matrix is truly sparse.

    Parameters
    ----------
    sizes : list of int
        Layer widths ``[n_0 (inputs), n_1, ..., n_L (classes)]``.
    epsilon : float
        Erdos-Renyi density parameter (a layer has about eps*(n_in+n_out) weights).
    activation : str
        Hidden activation, one of :data:`HIDDEN_ACTIVATIONS`.
    activation_memory : str
        'fast' keeps Z and A of every hidden layer during a training step;
        'lean' keeps Z only (half the activation memory) and recomputes A
        when the backward pass needs it.
    alpha : float, optional
        All-ReLU slope (required for 'allrelu'), leaky slope for 'leaky'.
    init : str
        'normal', 'xavier' or 'he_uniform'.
    output : str
        'softmax' (+ cross-entropy), 'sigmoid' (+ MSE) or 'linear' (identity +
        squared error: regression, float32 targets (B,) or (B, n_L)).
    dropout : float
        Dropout rate on hidden activations during training.
    rng : numpy.random.Generator
        Generator for the initial topology and values.
    n_threads : int, optional
        Kernel threads (default: the cores available).
    layers : list of SparseLayer, optional
        Use these layers instead of drawing new ones (loading a model).
    output_init : str, optional
        Values of the output layer when drawn here (default: ``init``);
        'zero' starts it at zero (the layer keeps 'zero' as its init, so any
        weight regrown in it would start at zero too).
    lr_fan_in_cap : float, optional
        Not the paper's: each layer's step size is lr * min(1, cap / its mean
        fan-in) (:meth:`lr_scale`), so that no unit's pre-activation moves by
        more than ~cap inputs' worth per step.  Also settable later as an
        attribute (it holds no state).
    """

    def __init__(self, sizes: list[int], epsilon: float = 20.0, activation: str = "relu",
                 alpha: float | None = None, init: str = "he_uniform",
                 output: str = "softmax", dropout: float = 0.0,
                 rng: np.random.Generator | None = None, n_threads: int | None = None,
                 layers: list[SparseLayer] | None = None,
                 activations: list[Activation] | None = None,
                 activation_memory: str = "fast", output_init: str | None = None,
                 lr_fan_in_cap: float | None = None) -> None:
        sizes = self.check_settings(sizes, activation, output, init, dropout)
        if output_init is not None and output_init not in INITS:
            raise ConfigError(f"unknown output init {output_init!r}; choose one of "
                              f"{', '.join(INITS)}")
        if lr_fan_in_cap is not None and not lr_fan_in_cap > 0:
            raise ConfigError(f"lr_fan_in_cap must be positive, got {lr_fan_in_cap}")
        if activation_memory not in ("fast", "lean"):
            raise ConfigError("activation_memory must be 'fast' or 'lean'")
        self.sizes = sizes
        # 'fast': keep every hidden layer's Z and A during a step; 'lean': keep
        # Z only and recompute A when the backward pass needs it
        self.lean = activation_memory == "lean"
        self.epsilon = float(epsilon)
        self.activation = activation
        self.alpha = alpha
        self.init = init
        self.output = output
        self.dropout = float(dropout)
        self.n_threads = int(n_threads or default_threads())
        rng = rng if rng is not None else np.random.default_rng()
        if layers is None:
            inits = layer_inits(len(sizes) - 1, init, output_init)
            gains = layer_gains(len(sizes) - 1, activation, alpha)
            layers = [SparseLayer.erdos_renyi(sizes[i], sizes[i + 1], epsilon, inits[i], rng,
                                              gain2=gains[i])
                      for i in range(len(sizes) - 1)]
        self.attach(sizes, layers, activations, activation, alpha, rng)
        self._train_bufs: dict | None = None
        self._eval_bufs: dict | None = None
        self._grad_acc: dict | None = None
        self._scratch = _NO_SCRATCH  # (gradient, bias gradient) of the split update
        self.lr_fan_in_cap = lr_fan_in_cap

    # ------------------------------------------------------------------ facts
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
                         activations=acts, activation_memory="lean" if self.lean else "fast",
                         lr_fan_in_cap=self.lr_fan_in_cap)

    def lr_scale(self, li: int) -> float:
        """Layer ``li``'s step size relative to lr: 1, or min(1, cap / mean
        fan-in) under ``lr_fan_in_cap`` (from the current nnz, so it follows
        Importance Pruning)."""
        cap = self.lr_fan_in_cap
        if not cap:
            return 1.0
        lay = self.layers[li]
        return min(1.0, float(cap) * lay.n_out / max(1, lay.nnz))

    def __repr__(self) -> str:
        return (f"SparseMLP({'-'.join(map(str, self.sizes))}, activation={self.activation!r}, "
                f"nnz={self.nnz})")

    # ------------------------------------------------------------------ buffers
    def _train_buffers(self, B: int) -> dict:
        """Per-batch arrays: Z of every layer; A of every hidden layer
        ('fast') or two scratch blocks of the widest hidden layer ('lean')."""
        bufs = self._train_bufs
        if bufs is None or bufs["B"] != B or bufs["lean"] != self.lean:
            self._train_bufs = None  # free the old arrays before allocating new ones
            L = self.n_layers
            hidden = self.sizes[1:L]
            bufs = {"B": B, "lean": self.lean,
                    "Z": [aligned_empty((n, B)) for n in self.sizes[1:]],
                    "sg": [np.empty((n, 4), dtype=np.float32) if a.params is not None else None
                           for n, a in zip(hidden, self.acts)]}
            if self.lean:
                width = max(hidden, default=0)
                bufs["T"] = [aligned_empty((width, B)) for _ in range(2)]
            else:
                bufs["A"] = [aligned_empty((n, B)) for n in hidden]
            # each hidden layer's dropout and sign masks, kept by the forward pass for
            # the backward pass of the same step (1/16 of the layer's activations)
            words = spmm.epilogue_bits_words(B)
            bufs["bits"] = [aligned_empty((n, words), np.uint16) for n in hidden]
            bufs["bits_ok"] = [False] * len(hidden)
            self._train_bufs = bufs
        return bufs

    def keeps_z(self) -> bool:
        """Whether the training forward pass stores every hidden layer's Z
        ('lean' mode, or SKIP_Z_WITH_BITS off); otherwise only where the
        backward pass will read it (no kept bits, see SKIP_Z_WITH_BITS)."""
        return self.lean or not SKIP_Z_WITH_BITS

    def _activation_buffer(self, h: int) -> np.ndarray:
        """Where hidden layer h's activations A go in the training step."""
        bufs = self._train_bufs
        if self.lean:
            return bufs["T"][h % 2][: self.sizes[h + 1]]
        return bufs["A"][h]

    def _eval_buffers(self, B: int) -> dict:
        bufs = self._eval_bufs
        if bufs is None or bufs["B"] != B:
            width = max(self.sizes[1:])
            bufs = {"B": B, "ping": aligned_empty((width, B)),
                    "pong": aligned_empty((width, B)),
                    "X": aligned_empty((self.sizes[0], B))}
            self._eval_bufs = bufs
        return bufs

    def release_buffers(self) -> None:
        """Free the per-batch activation arrays (they are re-created on demand)."""
        self._train_bufs = None
        self._eval_bufs = None
        self._grad_acc = None
        self._scratch = _NO_SCRATCH

    # ------------------------------------------------------------------ training
    def dropout_keys(self, seed: int, step: int) -> list[int]:
        """The dropout key of every hidden layer for one training step."""
        return [act_kernels.dropout_key(seed, step, h) for h in range(len(self.acts))]

    def forward_train(self, Xb: np.ndarray, keys: list[int], b_offset: int = 0) -> np.ndarray:
        """Training forward pass of a feature-major batch (n_0, B); returns
        the output layer's logits (n_L, B) (a view of an internal buffer).
        ``b_offset``: position of this block's first sample in its batch
        (micro-batches draw the dropout bits of the full batch)."""
        B = Xb.shape[1]
        bufs = self._train_buffers(B)
        Zs, bits, bits_ok, t = bufs["Z"], bufs["bits"], bufs["bits_ok"], self.n_threads
        prev = Xb
        *hidden, last = self.layers
        keep_z = self.keeps_z()
        for li, layer in enumerate(hidden):
            A = self._activation_buffer(li)
            bits_ok[li] = layer.forward(prev, Zs[li], A, self.acts[li], self.dropout, keys[li],
                                        b_offset, t, bits[li], keep_z)
            prev = A
        last.forward(prev, Zs[-1], n_threads=t)
        return Zs[-1]

    def output_delta(self, logits: np.ndarray, yb: np.ndarray,
                     sample_weight: np.ndarray | None = None) -> tuple[float, int]:
        """Turn the logits into the output delta in place; returns
        (loss summed over the batch, correct predictions; 0 for 'linear').
        ``sample_weight`` (B,) float32 scales each sample's loss and delta
        inside the loss kernel (None: unweighted)."""
        return self._loss(logits, yb, True, sample_weight)

    def _loss(self, logits: np.ndarray, yb: np.ndarray, write_delta: bool,
              sample_weight: np.ndarray | None = None) -> tuple[float, int]:
        """The output layer's loss kernel on a (n_L, B) block of logits; on
        the model's threads where its work (LOSS_WORK a logit) reaches
        min_parallel_work (the same bits)."""
        kern = activation_for(self.n_threads, logits.size * LOSS_WORK)
        nt = 1 if kern is activation_serial else self.n_threads
        if self.output == "linear":
            t = yb.reshape(yb.shape[0], -1)
            if t.dtype != np.float32 or not t.flags.c_contiguous:
                t = np.ascontiguousarray(t, dtype=np.float32)
            return kern.linear_mse(logits, t, write_delta, sample_weight, n_threads=nt)
        fn = kern.softmax_xent if self.output == "softmax" else kern.sigmoid_mse
        return fn(logits, yb, write_delta, sample_weight, n_threads=nt)

    def _layer_input(self, h: int, keys: list[int], b_offset: int) -> np.ndarray:
        """Hidden layer h's activations for the backward pass.  'lean' mode
        recomputes them from Z (bit-identical: same kernel arithmetic, the
        dropout and sign masks the forward pass kept, or else the dropout
        mask regenerated from its key)."""
        bufs = self._train_bufs
        if not self.lean:
            return bufs["A"][h]
        A = self._activation_buffer(h)
        act = self.acts[h]
        kern = activation_for(self.n_threads)
        kern.activation_forward(bufs["Z"][h], A, drop_rate=self.dropout, drop_key=keys[h],
                                b_offset=b_offset, n_threads=self.n_threads,
                                bits=bufs["bits"][h] if bufs["bits_ok"][h] else None,
                                **act.kernel_args())
        return A

    def _backprop(self, Xs: np.ndarray, keys: list[int], b_offset: int, scale: float,
                  opt: tuple | None = None, acc: dict | None = None) -> None:
        """Backpropagate the output delta left by :meth:`output_delta`, last
        layer to first; each hidden layer's delta is written over its
        activations A (over its Z with DELTA_OVER_INPUT off, and on several
        threads where A's block is under DELTA_OVER_INPUT_MIN_BYTES).

        ``opt = (lr, momentum, decay, nesterov)``: update the weights in place
        (the delta below a layer is computed with its old weights, in the
        same pass).  ``acc``: add the gradients (times ``scale``) to the
        accumulators of :meth:`_accumulators` instead."""
        bufs = self._train_bufs
        lr, mu, decay, nesterov = opt if opt is not None else (0.0, 0.0, 0.0, False)
        D = bufs["Z"][-1]  # the output delta; below, where the layer above wrote it
        for li in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[li]
            lr_li = lr * self.lr_scale(li)
            grads = acc["grads"][li] if acc is not None else None
            # a layer of at most SPLIT_UPDATE_MAX weights (a hidden one on one thread,
            # at least SPLIT_UPDATE_MIN_1T): the gradient pass writes the gradient and a
            # second, contiguous pass updates (see SPLIT_UPDATE_MAX); the same
            # arithmetic, so the same weights bit for bit
            nnz = layer.indices.size
            # (below SPLIT_UPDATE_MIN_1T, a layer whose rows are all full stays fused
            # on several threads too: see FUSE_FULL_ROWS)
            split = (acc is None and nnz <= SPLIT_UPDATE_MAX
                     and (li == 0 or nnz >= SPLIT_UPDATE_MIN_1T
                          or (self.n_threads > 1
                              and not (FUSE_FULL_ROWS and layer.density == 1.0))))
            # ... written in the transposed index's order and read back through its
            # inverse (see TRANSPOSED_GRADIENT)
            grads_t = split and li > 0 and TRANSPOSED_GRADIENT
            if split:
                grads = self._update_scratch(layer)
            if li == 0:  # no gradient to the inputs
                if grads is None:
                    layer.update(Xs, D, lr_li, mu, decay, nesterov=nesterov, scale=scale,
                                 n_threads=self.n_threads)
                else:
                    layer.gradient(Xs, D, *grads, scale=scale, accumulate=acc is not None,
                                   n_threads=self.n_threads)
                    if split:
                        layer.apply_gradient(*grads, lr_li, mu, decay, nesterov=nesterov,
                                             n_threads=self.n_threads)
                continue
            h = li - 1
            Zin, sg, act = bufs["Z"][h], bufs["sg"][h], self.acts[h]
            A_in = self._layer_input(h, keys, b_offset)
            wt = None
            if acc is not None:  # see _accumulators: the weights in transposed order
                wt = layer.weights_transposed(self._update_scratch(layer)[0],
                                              n_threads=self.n_threads)
            # the delta of the layer below (written over its activations A_in: see
            # DELTA_OVER_INPUT) and this layer's gradient, in one pass over its
            # transposed index
            G = (A_in if DELTA_OVER_INPUT and (self.n_threads == 1
                                               or A_in.nbytes >= DELTA_OVER_INPUT_MIN_BYTES)
                 else Zin)
            layer.backward_update(A_in, D, G, lr_li, mu, decay, nesterov=nesterov, Z_in=Zin,
                                  act_in=act, srelu_grad=sg, dropout=self.dropout,
                                  key=keys[h], b_offset=b_offset, scale=scale, grads=grads,
                                  accumulate=acc is not None, n_threads=self.n_threads,
                                  bits=bufs["bits"][h] if bufs["bits_ok"][h] else None,
                                  weights_t=wt, grads_t=grads_t)
            if split:
                layer.apply_gradient(*grads, lr_li, mu, decay, nesterov=nesterov,
                                     n_threads=self.n_threads, transposed=grads_t)
            D = G  # the delta of layer h, for the next layer down
            if sg is not None:  # SReLU parameters: same optimiser, no weight decay
                g = sg.reshape(-1) * np.float32(scale)
                if acc is None:
                    spmm_for(1).apply_update(act.params.reshape(-1), act.velocity.reshape(-1),
                                             g, lr, mu, 0.0, nesterov, n_threads=1)
                else:
                    acc["sg"][h] += g.reshape(sg.shape)

    def _update_scratch(self, layer) -> tuple[np.ndarray, np.ndarray]:
        """(gradient, bias gradient) views of one scratch pair, reused by
        every layer: the split update's (at most SPLIT_UPDATE_MAX weights)
        and, with micro-batches, a layer's weights or gradient in transposed
        order (any size)."""
        g, bg = self._scratch
        if g.size < layer.nnz or bg.size < layer.n_out:  # grown to the largest layer's
            g = np.empty(max(layer.nnz, g.size), np.float32)
            bg = np.empty(max(layer.n_out, bg.size), np.float32)
            self._scratch = (g, bg)
        return g[:layer.nnz], bg[:layer.n_out]

    def _accumulators(self) -> dict:
        """Zeroed gradient accumulators (kept between calls).  Every layer
        but the first accumulates its weight gradient in the order of its
        transposed index, and :meth:`_backprop` gathers its weights into that
        order (in the scratch of :meth:`_update_scratch`, one layer at a time)
        before its backward pass: the pass then reads and writes both in
        sequence, not at random (BENCHMARKS.md §6: the fused backward of a
        10 M-weight eps-1 layer at micro-batch 16 went from 359 to 101 ms).
        :meth:`_accumulate` turns the gradients back into the layers' order at
        the end of the batch."""
        acc = getattr(self, "_grad_acc", None)
        if acc is None or [g.size for g, _ in acc["grads"]] != self.nnz_per_layer():
            acc = {"grads": [(np.zeros(lay.nnz, np.float32), np.zeros(lay.n_out, np.float32))
                             for lay in self.layers],
                   "sg": [None if a.params is None else np.zeros_like(a.params)
                          for a in self.acts]}
            self._grad_acc = acc
        else:
            for g, bg in acc["grads"]:
                g.fill(0.0)
                bg.fill(0.0)
            for s in acc["sg"]:
                if s is not None:
                    s.fill(0.0)
        return acc

    def _micro_batches(self, Xb: np.ndarray, micro_batch: int | None):
        """(offset, size) of the micro-batches of a batch: equal blocks, the
        micro-batch rounded down to a divisor of the batch size."""
        B = Xb.shape[1]
        mb = B if not micro_batch or micro_batch >= B else int(micro_batch)
        while B % mb:
            mb -= 1
        return [(off, mb) for off in range(0, B, mb)]

    def _accumulate(self, Xb: np.ndarray, yb: np.ndarray, keys: list[int],
                    micro_batch: int | None, sample_weight: np.ndarray | None = None
                    ) -> tuple[float, int, dict]:
        """Loss, correct predictions and accumulated batch-mean gradients of
        one batch, micro-batch by micro-batch; nothing is updated."""
        B = Xb.shape[1]
        acc = self._accumulators()
        loss = 0.0
        correct = 0
        blocks = self._micro_batches(Xb, micro_batch)
        for off, m in blocks:
            xs = Xb if m == B else np.ascontiguousarray(Xb[:, off:off + m])
            logits = self.forward_train(xs, keys, b_offset=off)
            lo, c = self.output_delta(logits, yb[off:off + m],
                                      None if sample_weight is None
                                      else sample_weight[off:off + m])
            loss += lo
            correct += c
            self._backprop(xs, keys, off, 1.0 / B, acc=acc)
        # the gradients back into each layer's order (through the scratch)
        for layer, (g_t, _) in zip(self.layers[1:], acc["grads"][1:]):
            g = layer.gradient_from_transposed(g_t, self._update_scratch(layer)[0],
                                               n_threads=self.n_threads)
            np.copyto(g_t, g)
        return loss, correct, acc

    def train_step(self, Xb: np.ndarray, yb: np.ndarray, lr: float, momentum: float,
                   decay: float, keys: list[int], nesterov: bool = False,
                   micro_batch: int | None = None,
                   sample_weight: np.ndarray | None = None) -> tuple[float, int]:
        """One mini-batch of momentum SGD (reference semantics).

        Parameters
        ----------
        Xb : ndarray float32 (n_0, B)
            Feature-major batch.
        yb : ndarray int32 (B,)
            Class ids; for output 'linear' float32 targets (B,) or (B, n_L).
        lr, momentum, decay : float
            v = momentum*v - lr*g;  w = w + v - decay*w.
        keys : list of int
            Dropout keys of this step (:meth:`dropout_keys`).
        micro_batch : int, optional
            Process the batch in blocks of this many samples (rounded down to
            a divisor of B), accumulating the batch-mean gradient, then update
            once: the same step as one block of B (up to float summation
            order, dropout included) with activations of one block only.
        sample_weight : ndarray float32 (B,), optional
            Per-sample weights: the step follows (1/B) sum_b w_b grad_b and
            the loss returned is sum_b w_b loss_b (no renormalisation by the
            weights' sum; all-ones weights give the unweighted step bit for bit).

        Returns
        -------
        (loss summed over the batch, number of correct predictions)
        """
        B = Xb.shape[1]
        if sample_weight is not None:
            sample_weight = np.ascontiguousarray(sample_weight, dtype=np.float32)
            if sample_weight.shape != (B,):
                raise ConfigError(f"train_step: sample_weight must have shape ({B},), got "
                                  f"{sample_weight.shape}")
        if not micro_batch or micro_batch >= B:
            logits = self.forward_train(Xb, keys)
            loss, correct = self.output_delta(logits, yb, sample_weight)
            self._backprop(Xb, keys, 0, 1.0 / B, opt=(lr, momentum, decay, nesterov))
            return loss, correct
        loss, correct, acc = self._accumulate(Xb, yb, keys, micro_batch, sample_weight)
        for li, (layer, (g, bg)) in enumerate(zip(self.layers, acc["grads"])):
            layer.apply_gradient(g, bg, lr * self.lr_scale(li), momentum, decay, nesterov=nesterov,
                                 n_threads=self.n_threads)
        self.update_activation_params(acc["sg"], lr, momentum, nesterov)
        return loss, correct

    def gradients(self, Xb: np.ndarray, yb: np.ndarray, keys: list[int],
                  micro_batch: int | None = None
                  ) -> tuple[float, list[tuple[np.ndarray, np.ndarray]], list]:
        """Loss (batch mean) and gradients (batch mean) of every layer without
        updating anything: [(g (nnz,), bias_g (n_out,)), ...] and the SReLU
        parameter gradients per hidden layer (or None).  Copies."""
        loss, _, acc = self._accumulate(Xb, yb, keys, micro_batch)
        grads = [(g.copy(), bg.copy()) for g, bg in acc["grads"]]
        sgs = [None if s is None else s.copy() for s in acc["sg"]]
        return loss / Xb.shape[1], grads, sgs

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
            spmm_for(self.n_threads).gather_columns(X, rows, Xf, n_threads=self.n_threads)
            yield s, rows.size, self._forward_eval(Xf)

    def predict_proba(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), computed in blocks of
        ``batch_size`` samples (one block of activations per layer at most)."""
        if self.output == "linear":
            raise ConfigError("predict_proba: a regression model (output 'linear') has no "
                              "class probabilities; use predict")
        out = np.empty((_n_rows(X), self.sizes[-1]), dtype=np.float32)
        labels = None
        for s, m, logits in self._iter_blocks(X, batch_size):
            if labels is None or labels.size != m:
                labels = np.zeros(m, dtype=np.int32)
            if self.output == "softmax":
                activation_for(1).softmax_xent(logits, labels, False, n_threads=1)
            else:
                activation_for(1).sigmoid_mse(logits, labels, False, n_threads=1)
            out[s:s + m] = logits.T
        return out

    def predict(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted class ids (int64); for output 'linear' the outputs,
        float32 (n_samples, n_L), in the units the model was trained on."""
        if self.output == "linear":
            out = np.empty((_n_rows(X), self.sizes[-1]), dtype=np.float32)
            for s, m, logits in self._iter_blocks(X, batch_size):
                out[s:s + m] = logits.T
            return out
        out = np.empty(_n_rows(X), dtype=np.int64)
        for s, m, logits in self._iter_blocks(X, batch_size):
            out[s:s + m] = np.argmax(logits, axis=0)
        return out

    def evaluate(self, X: np.ndarray, y: np.ndarray, batch_size: int = 1024
                 ) -> tuple[float, float]:
        """(mean loss, accuracy) over a dataset, in blocks; for output
        'linear' (mean loss, R^2) (:meth:`regression_metrics`)."""
        if self.output == "linear":
            m = self.regression_metrics(X, y, batch_size)
            return m["loss"], m["r2"]
        y = np.ascontiguousarray(y, dtype=np.int32)
        if y.shape != (_n_rows(X),):
            raise ConfigError("evaluate: y must have one label per row of X")
        if y.size and (y.min() < 0 or y.max() >= self.sizes[-1]):
            raise ConfigError(f"evaluate: labels must be in [0, {self.sizes[-1]})")
        loss = 0.0
        correct = 0
        for s, m, logits in self._iter_blocks(X, batch_size):
            ls, c = self._loss(logits, y[s:s + m], False)
            loss += ls
            correct += c
        n = max(1, y.size)
        return loss / n, correct / n

    def regression_metrics(self, X: np.ndarray, y: np.ndarray, batch_size: int = 1024,
                           target_std: np.ndarray | float | None = None) -> dict[str, float]:
        """Regression metrics of an output-'linear' model, in blocks.

        Parameters
        ----------
        X : ndarray (n_samples, n_0)
        y : ndarray float (n_samples,) or (n_samples, n_L)
            Targets in the units the model was trained on (standardised
            targets for a run with ``--task regression``).
        target_std : float or ndarray (n_L,), optional
            The targets' standardisation scale: RMSE and MAE are multiplied
            by it, so they come out in the original units (R^2 does not
            change under the affine map).

        Returns
        -------
        dict
            ``loss`` (mean of 0.5 * sum_c (pred - y)^2, training units),
            ``r2`` (scikit-learn's r2_score, outputs averaged uniformly),
            ``rmse`` and ``mae`` (averaged over the outputs).
        """
        if self.output != "linear":
            raise ConfigError("regression_metrics needs a regression model (output 'linear')")
        n_out = self.sizes[-1]
        Y = np.asarray(y, dtype=np.float64).reshape(_n_rows(X), -1)
        if Y.shape[1] != n_out:
            raise ConfigError(f"regression_metrics: y must have {n_out} target(s) per row")
        pred = self.predict(X, batch_size).astype(np.float64)
        return regression_scores(Y, pred, target_std) | {
            "loss": float(0.5 * ((pred - Y) ** 2).sum(axis=1).mean()) if Y.size else 0.0}


def regression_scores(Y: np.ndarray, pred: np.ndarray,
                      target_std: np.ndarray | float | None = None) -> dict[str, float]:
    """R^2, RMSE and MAE of predictions ``pred`` against ``Y`` (both (n, k)
    float64), averaged uniformly over the k outputs as scikit-learn's
    ``r2_score`` / ``root_mean_squared_error`` / ``mean_absolute_error`` do;
    RMSE and MAE are scaled by ``target_std`` when given.  A constant target
    gets R^2 1 for an exact fit, else 0 (scikit-learn's convention)."""
    err = pred - Y
    scale = np.ones(Y.shape[1]) if target_std is None else \
        np.broadcast_to(np.asarray(target_std, dtype=np.float64).ravel(), (Y.shape[1],))
    ss_res = (err ** 2).sum(axis=0)
    ss_tot = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                      np.where(ss_res == 0, 1.0, 0.0))
    return {"r2": float(r2.mean()),
            "rmse": float((np.sqrt((err ** 2).mean(axis=0)) * scale).mean()),
            "mae": float((np.abs(err).mean(axis=0) * scale).mean())}


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
