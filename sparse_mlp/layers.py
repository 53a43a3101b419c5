"""SparseLayer: the arrays of one truly sparse weight matrix.

W (n_in x n_out) is stored CSR grouped by OUTPUT neuron, i.e. exactly the
CSC arrays of W::

    indptr    int64   (n_out + 1)   row j's weights are indptr[j]:indptr[j+1]
    indices   int32   (nnz,)        input neuron of each weight, sorted per row
    data      float32 (nnz,)        weight values
    velocity  float32 (nnz,)        momentum of each weight
    bias, bias_velocity  float32 (n_out,)

plus the transposed index used by the gradient to the inputs::

    t_indptr  int64 (n_in + 1), t_rows int32 (nnz,), t_perm int32 (nnz,)

About 20 bytes per weight in all.  Nothing is ever n_in x n_out: the
Erdos-Renyi initialisation samples positions directly in O(nnz).

The layer owns its arrays and is the only caller of the sparse-product
kernels; topology changes (``evolution.py``) go through
:meth:`SparseLayer.set_topology`, which rebuilds the transposed index.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .activations import Activation, init_gain2
from .config import INITS, WEIGHT_INITS  # noqa: F401 (WEIGHT_INITS: model.py imports it here)
from .errors import ConfigError
from .kernels import spmm, spmm_for, topology


def layer_inits(n_layers: int, init: str, output_init: str | None = None) -> list[str]:
    """The init of each of ``n_layers`` weight matrices: ``init``, and
    ``output_init`` (when given) for the last."""
    return [init] * (n_layers - 1) + [output_init or init]


def layer_gains(n_layers: int, activation: str, alpha: float | None) -> list[float]:
    """The variance gain of each of ``n_layers`` weight matrices, which only
    ``kaiming_uniform_sparse`` uses: :func:`~sparse_mlp.activations.init_gain2`
    of the hidden activation (2 for SReLU, which that init refuses), and 1
    for the output layer, which no activation follows."""
    hidden = 2.0 if activation == "srelu" else init_gain2(activation, alpha)
    return [hidden] * (n_layers - 1) + [1.0]


BYTES_PER_WEIGHT = 20  # indices 4 + data 4 + velocity 4 + t_rows 4 + t_perm 4
MAX_NNZ = 2**31 - 1  # int32 indices and t_perm


def er_probability(n_in: int, n_out: int, epsilon: float) -> float:
    """Erdos-Renyi connection probability eps*(n_in+n_out)/(n_in*n_out), capped at 1."""
    return min(1.0, float(epsilon) * (n_in + n_out) / (float(n_in) * float(n_out)))


def expected_nnz(n_in: int, n_out: int, epsilon: float) -> int:
    """Expected number of weights of an Erdos-Renyi layer."""
    return int(round(er_probability(n_in, n_out, epsilon) * n_in * n_out))


def init_values(init: str, n: int, n_in: int, n_out: int,
                rng: np.random.Generator, density: float = 1.0,
                gain2: float = 2.0) -> np.ndarray:
    """Draw ``n`` float32 weight values from a layer's init distribution.

    normal: N(0, 1) / 10;  xavier: U(+-sqrt(6 / (n_in + n_out)));
    he_uniform: U(+-sqrt(6 / n_in))  (the paper's; fan-in and fan-out of the
    dense matrix).  xavier_sparse / he_uniform_sparse (not the paper's): the
    same with the expected fan-in and fan-out of the sparse layer,
    ``density * n_in`` and ``density * n_out``, so the signal keeps its scale
    through very wide, very sparse layers.  kaiming_uniform_sparse (not the
    paper's): U(+-sqrt(3 * gain2 / fan-in)) with the sparse fan-in and the
    variance gain of the activation that follows (:func:`layer_gains`): He's
    2 assumes ReLU, so under All-ReLU (gain 2 / (1 + alpha^2)) it grows a
    signal's second moment by (1 + alpha^2) per layer, 2,200x over the 25
    layers of Table 4's 125 M-neuron network at alpha 0.6.  zero: zeros (an
    output layer's).
    """
    if init == "zero":
        return np.zeros(n, dtype=np.float32)
    if init == "normal":
        v = rng.standard_normal(n, dtype=np.float32)
        v *= np.float32(0.1)
        return v
    fan_in, fan_out = float(n_in), float(n_out)
    if init.endswith("_sparse"):
        fan_in, fan_out = max(1.0, density * n_in), max(1.0, density * n_out)
    if init in ("xavier", "xavier_sparse"):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
    elif init in ("he_uniform", "he_uniform_sparse"):
        limit = math.sqrt(6.0 / fan_in)
    elif init == "kaiming_uniform_sparse":
        limit = math.sqrt(3.0 * gain2 / fan_in)
    else:
        raise ConfigError(f"unknown weight init {init!r}; choose one of {', '.join(INITS)}")
    v = rng.random(n, dtype=np.float32)
    v *= np.float32(2.0 * limit)
    v -= np.float32(limit)
    return v


def sample_positions(n_total: int, k: int, rng: np.random.Generator,
                     occupied=None) -> np.ndarray:
    """``k`` distinct positions drawn uniformly from [0, n_total), sorted
    (int64), avoiding positions for which ``occupied(cands)`` is True.

    Rejection sampling: each round draws a few percent more candidates than
    still needed (the expected losses to duplicates and occupied positions),
    keeps the distinct free ones, and if that overshoots drops a uniformly
    random surplus -- a uniform subset of a uniform subset is uniform.
    O(k log k) expected while the free space is at least about twice ``k``
    (callers enumerate the free positions exactly beyond that)."""
    got = np.empty(0, dtype=np.int64)
    reject = 0.0  # observed fraction of candidates lost
    while got.size < k:
        need = k - got.size
        n_draw = need + int(need * min(1.0, 1.5 * reject + (k / n_total))) + 16
        cand = rng.integers(0, n_total, size=n_draw, dtype=np.int64)
        if occupied is not None:
            cand = cand[~occupied(cand)]
        if got.size:
            cand = np.concatenate((got, cand))
        cand.sort()
        first = np.empty(cand.size, dtype=bool)
        first[:1] = True
        np.not_equal(cand[1:], cand[:-1], out=first[1:])
        new_got = cand[first]
        reject = 1.0 - (new_got.size - got.size) / n_draw
        got = new_got
    if got.size > k:
        drop = rng.choice(got.size, size=got.size - k, replace=False)
        keep = np.ones(got.size, dtype=bool)
        keep[drop] = False
        got = got[keep]
    return got


def er_positions(n_in: int, n_out: int, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions j*n_in + i of an Erdos-Renyi layer: every connection
    exists independently with probability p, so the count is
    Binomial(n_in*n_out, p) and the set is a uniform subset of that size.
    Dense layers (p > 1/2) sample the complement instead."""
    n_total = int(n_in) * int(n_out)
    p = er_probability(n_in, n_out, epsilon)
    k = int(rng.binomial(n_total, p)) if p < 1.0 else n_total
    if k > MAX_NNZ:
        raise ConfigError(
            f"a {n_in} x {n_out} layer at epsilon {epsilon} would have {k} weights, more than "
            f"the {MAX_NNZ} one layer can index; lower --epsilon or split the layer")
    if 2 * k <= n_total:
        return sample_positions(n_total, k, rng)
    excluded = sample_positions(n_total, n_total - k, rng)
    out = np.empty(k, dtype=np.int64)
    topology.complement_sorted(excluded, n_total, out)
    return out


def er_positions_paper(n_in: int, n_out: int, epsilon: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Sorted unique positions j*n_in + i as the authors' ``normal`` path drew
    them (``--er-sampling paper``): round(eps * (n_in + n_out)) positions
    uniform WITH replacement, duplicates merged.  Of k draws over N = n_in *
    n_out positions, N * (1 - (1 - 1/N)**k) are distinct on average (Madelon's
    500-400-100-400-2 at eps 10: ~18,995, the paper's ~19,000, against ~19,800
    for :func:`er_positions`).  O(k) memory: the draws, then their sort."""
    n_total = int(n_in) * int(n_out)
    k = int(round(float(epsilon) * (int(n_in) + int(n_out))))
    if k > MAX_NNZ:
        raise ConfigError(
            f"a {n_in} x {n_out} layer at epsilon {epsilon} would draw {k} positions, more "
            f"than the {MAX_NNZ} one layer can index; lower --epsilon or split the layer")
    return np.unique(rng.integers(0, n_total, size=k, dtype=np.int64))


def expected_nnz_paper(n_in: int, n_out: int, epsilon: float) -> float:
    """Expected number of weights of :func:`er_positions_paper`: the k draws
    minus the expected duplicates, N * (1 - (1 - 1/N)**k)."""
    n_total = float(n_in) * float(n_out)
    k = round(float(epsilon) * (int(n_in) + int(n_out)))
    return n_total * -math.expm1(k * math.log1p(-1.0 / n_total)) if n_total > 1 else min(k, 1)


ER_SAMPLERS = {"exact": er_positions, "paper": er_positions_paper}


class SparseLayer:
    """One sparse weight matrix W (n_in x n_out) with its bias and momentum.

    Parameters
    ----------
    n_in, n_out : int
        Number of input and output neurons.
    indptr : ndarray of int64, shape (n_out + 1,)
    indices : ndarray of int32, shape (nnz,)
        Input neuron of each weight; strictly increasing within each row.
    data : ndarray of float32, shape (nnz,)
    init : str
        The value distribution of new weights (SET regrowth).
    bias, velocity, bias_velocity : ndarray, optional
        Default to zeros.
    check : bool
        Validate the structure (O(nnz)); on by default for user input.
    """

    def __init__(self, n_in: int, n_out: int, indptr: np.ndarray, indices: np.ndarray,
                 data: np.ndarray, init: str = "normal", bias: np.ndarray | None = None,
                 velocity: np.ndarray | None = None, bias_velocity: np.ndarray | None = None,
                 check: bool = True) -> None:
        if n_in <= 0 or n_out <= 0:
            raise ConfigError(f"a layer needs at least one input and one output neuron, "
                              f"got {n_in} x {n_out}")
        if init not in INITS:
            raise ConfigError(f"unknown weight init {init!r}; choose one of {', '.join(INITS)}")
        self.n_in = int(n_in)
        self.n_out = int(n_out)
        self.init = init
        self.gain2 = 2.0  # kaiming_uniform_sparse's gain: set by erdos_renyi and the model
        self.bias = _vec(bias, n_out, "bias")
        self.bias_velocity = _vec(bias_velocity, n_out, "bias_velocity")
        self.set_topology(indptr, indices, data, velocity, check=check)

    # ------------------------------------------------------------------ build
    @classmethod
    def erdos_renyi(cls, n_in: int, n_out: int, epsilon: float, init: str,
                    rng: np.random.Generator, sampling: str = "exact",
                    gain2: float = 2.0) -> SparseLayer:
        """A layer whose connections exist independently with probability
        eps*(n_in+n_out)/(n_in*n_out) (capped at 1), values from ``init``,
        built in O(nnz) time and memory.  ``sampling="paper"``: the
        positions of :func:`er_positions_paper` instead (draws with
        replacement, duplicates merged; ``--er-sampling paper``)."""
        if epsilon <= 0:
            raise ConfigError(f"epsilon must be positive, got {epsilon}")
        if sampling not in ER_SAMPLERS:
            raise ConfigError(f"unknown ER sampling {sampling!r}; choose one of "
                              f"{', '.join(ER_SAMPLERS)}")
        pos = ER_SAMPLERS[sampling](n_in, n_out, epsilon, rng)
        values = init_values(init, pos.size, n_in, n_out, rng,
                             density=pos.size / (float(n_in) * n_out), gain2=gain2)
        layer = cls.from_positions(n_in, n_out, pos, values, init)
        layer.gain2 = float(gain2)
        return layer

    @classmethod
    def from_positions(cls, n_in: int, n_out: int, positions: np.ndarray, values: np.ndarray,
                       init: str = "normal") -> SparseLayer:
        """Build from sorted unique positions j*n_in + i and their values."""
        rows = positions // n_in
        indices = (positions - rows * n_in).astype(np.int32)
        indptr = np.zeros(n_out + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_out), out=indptr[1:])
        return cls(n_in, n_out, indptr, indices, values, init=init, check=False)

    @classmethod
    def from_scipy(cls, matrix, init: str = "normal", bias: np.ndarray | None = None
                   ) -> SparseLayer:
        """From any scipy.sparse matrix W of shape (n_in, n_out).  Duplicate
        entries are summed; stored zeros stay connections."""
        if not sp.issparse(matrix):
            raise ConfigError("from_scipy expects a scipy.sparse matrix of shape (n_in, n_out)")
        m = sp.csc_matrix(matrix, dtype=np.float32, copy=True)
        m.sum_duplicates()
        m.sort_indices()
        n_in, n_out = m.shape
        return cls(n_in, n_out, m.indptr.astype(np.int64), m.indices.astype(np.int32),
                   m.data.astype(np.float32), init=init, bias=bias)

    def to_scipy(self, copy: bool = True) -> sp.csc_matrix:
        """W as a (n_in, n_out) scipy.sparse.csc_matrix (the same arrays)."""
        m = sp.csc_matrix((self.data, self.indices, self.indptr),
                          shape=(self.n_in, self.n_out), copy=copy)
        m.has_sorted_indices = True
        return m

    def set_topology(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                     velocity: np.ndarray | None = None, check: bool = True) -> None:
        """Replace the connectivity (and values, momentum) and rebuild the
        transposed index."""
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        indices = np.ascontiguousarray(indices, dtype=np.int32)
        data = np.ascontiguousarray(data, dtype=np.float32)
        if indptr.shape != (self.n_out + 1,):
            raise ConfigError(f"indptr must have n_out + 1 = {self.n_out + 1} entries, "
                              f"got {indptr.shape}")
        if indices.ndim != 1 or data.shape != indices.shape:
            raise ConfigError("indices and data must be 1-D arrays of the same length")
        if indices.size > MAX_NNZ:
            raise ConfigError(f"a layer can hold at most {MAX_NNZ} weights, got {indices.size}")
        if check:
            problem = topology.check_csr(indptr, indices, self.n_in)
            if problem:
                raise ConfigError(f"invalid sparse layer structure: {problem}")
        if velocity is None:
            velocity = np.zeros_like(data)
        velocity = np.ascontiguousarray(velocity, dtype=np.float32)
        if velocity.shape != data.shape:
            raise ConfigError("velocity must have one entry per weight")
        self.indptr, self.indices, self.data, self.velocity = indptr, indices, data, velocity
        self.rebuild_transpose()

    def rebuild_transpose(self) -> None:
        """Rebuild the input-grouped index (O(nnz)); after any topology change."""
        nnz = self.indices.size
        self.t_indptr = np.empty(self.n_in + 1, dtype=np.int64)
        self.t_rows = np.empty(nnz, dtype=np.int32)
        self.t_perm = np.empty(nnz, dtype=np.int32)
        topology.transpose_index(self.indptr, self.indices, self.t_indptr, self.t_rows,
                                 self.t_perm)
        # the longest input row: backward_update's per-thread gradient buffer
        self.max_in_degree = int(np.diff(self.t_indptr).max()) if self.n_in else 0
        self._t_inverse = None  # (t_inverse(): built on first use)

    def t_inverse(self) -> np.ndarray:
        """The inverse of ``t_perm`` (int32 (nnz,)): weight k sits at position
        t_inverse()[k] of the transposed index.  Built on first use after each
        topology change and kept (4 bytes per weight): :meth:`apply_gradient`
        reads a gradient written in transposed order through it."""
        if self._t_inverse is None:
            inv = np.empty(self.indices.size, dtype=np.int32)
            inv[self.t_perm] = np.arange(self.indices.size, dtype=np.int32)
            self._t_inverse = inv
        return self._t_inverse

    # ------------------------------------------------------------------ facts
    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_in, self.n_out)

    @property
    def density(self) -> float:
        return self.nnz / (self.n_in * self.n_out)

    @property
    def nbytes(self) -> int:
        arrays = (self.indptr, self.indices, self.data, self.velocity, self.bias,
                  self.bias_velocity, self.t_indptr, self.t_rows, self.t_perm)
        return int(sum(a.nbytes for a in arrays))

    def row_lengths(self) -> np.ndarray:
        """Number of incoming weights of each output neuron."""
        return np.diff(self.indptr)

    def __repr__(self) -> str:
        return (f"SparseLayer({self.n_in} x {self.n_out}, nnz={self.nnz}, "
                f"density={self.density:.4%}, init={self.init!r})")

    # ------------------------------------------------------------------ kernels
    def forward(self, X: np.ndarray, Z: np.ndarray, A: np.ndarray | None = None,
                act: Activation | None = None, dropout: float = 0.0, key: int = 0,
                b_offset: int = 0, n_threads: int = 1, bits: np.ndarray | None = None,
                keep_z: bool = True) -> bool:
        """Z = W^T X + b (feature-major: X (n_in, B), Z (n_out, B)); when A
        is given, A = dropout(f(Z)) fused in the same pass (A may be Z).
        ``bits``: where to keep the epilogue's masks for this step's backward
        pass (``spmm.forward``); returns True when they were written, and then,
        with ``keep_z=False``, Z was not (the backward pass reads the bits)."""
        # (positional: this runs once per layer and step, and keywords cost a Cython
        # call ~0.3 us more)
        # (the serial build on one thread; indices.size: the nnz property costs more)
        kern = spmm_for(n_threads, self.indices.size * X.shape[1])
        if act is None:
            return bool(kern.forward(self.indptr, self.indices, self.data, self.bias, X, Z, A,
                                     0, 0.0, None, dropout, key, b_offset, n_threads, bits,
                                     keep_z))
        return bool(kern.forward(self.indptr, self.indices, self.data, self.bias, X, Z, A,
                                 act.kind, act.slope, act.params, dropout, key, b_offset,
                                 n_threads, bits, keep_z))

    def backward_input(self, D: np.ndarray, G: np.ndarray, Z_in: np.ndarray | None = None,
                       act_in: Activation | None = None,
                       srelu_grad: np.ndarray | None = None, dropout: float = 0.0,
                       key: int = 0, b_offset: int = 0, n_threads: int = 1) -> None:
        """G = W D (gradient to the inputs, (n_in, B)); when ``Z_in`` (the
        inputs' pre-activations) is given, times the input layer's dropout
        mask and f'(Z_in), fused.  G may be Z_in (in place)."""
        kw = act_in.kernel_args() if act_in is not None else {}
        kern = spmm_for(n_threads, spmm.backward_work(self.indices.size, self.n_in, D.shape[1]))
        kern.backward_input(self.t_indptr, self.t_rows, self.t_perm, self.data, D, G, Z_in,
                            srelu_grad=srelu_grad, drop_rate=dropout, drop_key=key,
                            b_offset=b_offset, n_threads=n_threads, **kw)

    def update(self, X: np.ndarray, D: np.ndarray, lr: float, momentum: float, decay: float,
               bias_decay: float | None = None, nesterov: bool = False,
               scale: float | None = None, n_threads: int = 1) -> None:
        """Weight gradient (batch mean) at existing weights fused with the
        momentum update v = mu*v - lr*g; w = w + v - decay*w, and the same
        for the biases."""
        B = X.shape[1]
        kern = spmm_for(n_threads, self.indices.size * B)
        kern.weight_update(self.indptr, self.indices, X, D, self.data, self.velocity,
                           self.bias, self.bias_velocity,
                           1.0 / B if scale is None else scale, lr, momentum, decay,
                           decay if bias_decay is None else bias_decay, nesterov,
                           n_threads=n_threads)

    def backward_update(self, X: np.ndarray, D: np.ndarray, G: np.ndarray, lr: float,
                        momentum: float, decay: float, bias_decay: float | None = None,
                        nesterov: bool = False, Z_in: np.ndarray | None = None,
                        act_in: Activation | None = None,
                        srelu_grad: np.ndarray | None = None, dropout: float = 0.0,
                        key: int = 0, b_offset: int = 0, scale: float | None = None,
                        grads: tuple[np.ndarray, np.ndarray] | None = None,
                        accumulate: bool = False, n_threads: int = 1,
                        bits: np.ndarray | None = None,
                        weights_t: np.ndarray | None = None, grads_t: bool = False) -> None:
        """:meth:`backward_input` and :meth:`update` in one pass over the
        transposed index (each D row is read once for both): G = W D (times
        f'(Z_in) and the dropout mask when Z_in is given; G may be Z_in), and
        the weights and biases updated with the batch-mean gradient.  With
        ``grads=(g, bias_g)`` the gradients are written there instead (added
        to them with ``accumulate``) and nothing is updated.  ``bits``: the
        masks the forward pass of this step kept for the input layer
        (:meth:`forward` returned True), read instead of recomputed.
        ``weights_t`` (with ``grads``): this layer's weights in the order of
        its transposed index (:meth:`weights_transposed`); the weight
        gradient is then written in that order too (:meth:`gradient_from_transposed`
        turns it back), so that neither is read or written at random.
        ``grads_t`` (with ``grads``): the weight gradient in that order, the
        weights read in their own (:meth:`apply_gradient` with ``transposed``
        applies it), so that each thread writes a range of its own."""
        g_out, bias_g_out = grads if grads is not None else (None, None)
        kind, slope, srelu = ((act_in.kind, act_in.slope, act_in.params) if act_in is not None
                              else (0, 0.0, None))
        kern = spmm_for(n_threads, spmm.backward_work(self.indices.size, self.n_in, X.shape[1]))
        kern.backward_update(self.t_indptr, self.t_rows, self.t_perm, D, X, G,
                             self.data if weights_t is None else weights_t,
                             self.velocity, self.bias, self.bias_velocity,
                             1.0 / X.shape[1] if scale is None else scale, lr, momentum,
                             decay, decay if bias_decay is None else bias_decay, nesterov,
                             self.max_in_degree, Z_in, kind, slope, srelu, srelu_grad,
                             dropout, key, b_offset, g_out, bias_g_out, accumulate,
                             n_threads, bits, weights_t is not None, grads_t)

    def weights_transposed(self, out: np.ndarray, n_threads: int = 1) -> np.ndarray:
        """The weights in the order of the transposed index (out[k] =
        data[t_perm[k]]), for :meth:`backward_update`'s ``weights_t``."""
        kern = spmm_for(n_threads, self.indices.size)
        kern.permute(self.data, self.t_perm, out, False, n_threads)
        return out

    def gradient_from_transposed(self, g_t: np.ndarray, out: np.ndarray,
                                 n_threads: int = 1) -> np.ndarray:
        """A weight gradient in transposed-index order back into the
        layer's own order (out[t_perm[k]] = g_t[k])."""
        kern = spmm_for(n_threads, self.indices.size)
        kern.permute(g_t, self.t_perm, out, True, n_threads)
        return out

    def gradient(self, X: np.ndarray, D: np.ndarray, g: np.ndarray | None = None,
                 bias_g: np.ndarray | None = None, scale: float | None = None,
                 accumulate: bool = False, n_threads: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Gradient at existing weights only (batch mean), without updating;
        with ``accumulate`` added to the given ``g`` and ``bias_g``."""
        if g is None:
            g = np.empty(self.nnz, dtype=np.float32)
        if bias_g is None:
            bias_g = np.empty(self.n_out, dtype=np.float32)
        kern = spmm_for(n_threads, self.indices.size * X.shape[1])
        kern.weight_grad(self.indptr, self.indices, X, D, g, bias_g,
                         1.0 / X.shape[1] if scale is None else scale, accumulate,
                         n_threads=n_threads)
        return g, bias_g

    def apply_gradient(self, g: np.ndarray, bias_g: np.ndarray, lr: float, momentum: float,
                       decay: float, bias_decay: float | None = None, nesterov: bool = False,
                       n_threads: int = 1, transposed: bool = False) -> None:
        """The momentum update of :meth:`update` for a given gradient; with
        ``transposed``, a weight gradient in the order of the transposed index
        (:meth:`backward_update`'s ``grads_t``), read through :meth:`t_inverse`."""
        kern = spmm_for(n_threads, self.indices.size * (spmm.APPLY_INDEX_WORK if transposed
                                                        else spmm.APPLY_PLAIN_WORK))
        kern.apply_update(self.data, self.velocity, g, lr, momentum, decay, nesterov,
                          n_threads=n_threads,
                          index=self.t_inverse() if transposed else None)
        spmm_for(1).apply_update(self.bias, self.bias_velocity, bias_g, lr, momentum,
                                 decay if bias_decay is None else bias_decay, nesterov,
                                 n_threads=1)

    def importance(self, n_threads: int = 1) -> np.ndarray:
        """Neuron importance (paper eq. 4): sum of |w| over the incoming
        weights of each output neuron, float64 (n_out,)."""
        out = np.empty(self.n_out, dtype=np.float64)
        topology.row_abs_sum(self.indptr, self.data, out, n_threads=n_threads)
        return out


def _vec(v: np.ndarray | None, n: int, name: str) -> np.ndarray:
    if v is None:
        return np.zeros(n, dtype=np.float32)
    v = np.ascontiguousarray(v, dtype=np.float32).copy()
    if v.shape != (n,):
        raise ConfigError(f"{name} must have shape ({n},), got {v.shape}")
    return v
