# cython: language_level=3
"""Elementwise activations, dropout and the output losses.

The hidden activations are normally fused into the sparse products
(``_spmm.forward`` / ``_spmm.backward_input``); the functions here run the
same C epilogues (``rowkern.h``) on their own, for the output layer, for
evaluation and for the tests.

Parallelism: ``prange`` over neurons (rows) for the activations, over
samples (columns) for the losses; each row or column is written by one
thread.  Per-sample losses are summed after the parallel loop, in NumPy's
order (``_sum_as_numpy``), so every result is bit-identical for any thread
count.

Sample weights (``sample_weight``, optional, float32 (B,)) scale each
sample's loss and its column of the delta in place, inside the same loop:
the batch gradient becomes (1/B) sum_b w_b g_b (SGDClassifier's semantics:
no renormalisation by the weights' sum).  Without weights nothing is
multiplied, so ``None`` and all-ones weights give bit-identical results
(x * 1.0f == x).
"""

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport exp, log
from libc.stdint cimport int32_t, int64_t, uint16_t, uint64_t
from libc.stdlib cimport free, malloc

from arrayargs cimport F32, I32, arr_t, take

from rowkern cimport (
    SMLP_BITS_WORDS,
    smlp_act_t,
    smlp_backward_epilogue,
    smlp_bits_usable,
    smlp_fill_act,
    smlp_dropout_row,
    smlp_forward_bits_row,
    smlp_forward_epilogue,
    smlp_mix64,
)

cnp.import_array()


cdef double _sum_as_numpy(const double* a, int64_t n) noexcept nogil:
    """The sum of a[0..n) in exactly NumPy's order for a contiguous float64
    array (``a.sum()``: its pairwise sum, 8 partial sums per block of at
    most 128), so the losses returned are the bits they were when NumPy
    summed them, without its ~1-2 us per call (tests compare; a sum of
    negative zeros may differ in sign between NumPy versions, and a loss is
    never -0.0)."""
    cdef int64_t i, n2
    cdef double r0, r1, r2, r3, r4, r5, r6, r7, res
    if n < 8:
        res = 0.0
        for i in range(n):
            res = res + a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
        r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
        i = 8
        while i < n - n % 8:
            r0 = r0 + a[i]
            r1 = r1 + a[i + 1]
            r2 = r2 + a[i + 2]
            r3 = r3 + a[i + 3]
            r4 = r4 + a[i + 4]
            r5 = r5 + a[i + 5]
            r6 = r6 + a[i + 6]
            r7 = r7 + a[i + 7]
            i = i + 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res = res + a[i]
            i = i + 1
        return res
    n2 = n // 2
    n2 = n2 - n2 % 8
    return _sum_as_numpy(a, n2) + _sum_as_numpy(a + n2, n - n2)


cdef int64_t _count(const signed char* c, int64_t n) noexcept nogil:
    cdef int64_t i, k = 0
    for i in range(n):
        k = k + c[i]
    return k


def loss_sum(const double[::1] a):
    """:func:`_sum_as_numpy` of a float64 array (for the tests)."""
    return _sum_as_numpy(&a[0], a.shape[0]) if a.shape[0] else 0.0


def dropout_key(uint64_t seed, int64_t step, int64_t layer):
    """The 64-bit key of the dropout masks of one (seed, step, layer): every
    mask bit is a pure function of (key, neuron, sample), so masks do not
    depend on the thread count and the backward pass regenerates them."""
    cdef uint64_t counter = <uint64_t>step * 0x100000001B3ULL + <uint64_t>layer
    return smlp_mix64(smlp_mix64(seed) ^ smlp_mix64(counter))


def activation_forward(const float[:, ::1] Z, float[:, ::1] A, int act=0, float slope=0.0,
                       const float[:, ::1] srelu=None, double drop_rate=0.0,
                       uint64_t drop_key=0, int64_t b_offset=0, int n_threads=1,
                       const uint16_t[:, ::1] bits=None):
    """A = dropout(f(Z)), row j of (n, B) being neuron j; A may be Z.
    ``bits``: the masks that the fused forward pass of this Z kept
    (``_spmm.forward(bits=)``, when it returned True): the same A from them
    without hashing the dropout mask again (ignored where they cannot be
    used: an activation that is not fused, a CPU without AVX-512)."""
    cdef int64_t n = Z.shape[0]
    cdef int B = <int>Z.shape[1]
    cdef int64_t j
    cdef smlp_act_t p
    cdef const float* sp = NULL
    cdef int words = SMLP_BITS_WORDS(B)
    cdef bint use_bits = False
    if A.shape[0] != n or A.shape[1] != B:
        raise ValueError("activation_forward: A must have the shape of Z")
    if srelu is not None:
        sp = &srelu[0, 0]
    smlp_fill_act(&p, act, slope, sp, drop_rate, drop_key, b_offset)
    if bits is not None:
        if bits.shape[0] != n or bits.shape[1] != words:
            raise ValueError(f"activation_forward: bits must be ({n}, {words}) (the forward "
                             f"pass's for this Z), got ({bits.shape[0]}, {bits.shape[1]})")
        use_bits = smlp_bits_usable(&p) != 0
    if n == 0 or B == 0:
        return
    with nogil:
        if use_bits:
            for j in prange(n, schedule="static", num_threads=n_threads):
                smlp_forward_bits_row(&p, &Z[j, 0], &A[j, 0], &bits[j, 0], B)
        else:
            for j in prange(n, schedule="static", num_threads=n_threads):
                smlp_forward_epilogue(&p, j, &Z[j, 0], &A[j, 0], B)


def activation_backward(const float[:, ::1] Z, float[:, ::1] G, int act=0, float slope=0.0,
                        const float[:, ::1] srelu=None, float[:, ::1] srelu_grad=None,
                        double drop_rate=0.0, uint64_t drop_key=0, int64_t b_offset=0,
                        int n_threads=1):
    """G = G * mask / (1 - rate) * f'(Z) in place; for SReLU also the summed
    parameter gradients into srelu_grad (n, 4)."""
    cdef int64_t n = Z.shape[0]
    cdef int B = <int>Z.shape[1]
    cdef int64_t j
    cdef smlp_act_t p
    cdef const float* sp = NULL
    cdef bint has_sg = srelu_grad is not None
    cdef float* sg
    if G.shape[0] != n or G.shape[1] != B:
        raise ValueError("activation_backward: G must have the shape of Z")
    if srelu is not None:
        sp = &srelu[0, 0]
    smlp_fill_act(&p, act, slope, sp, drop_rate, drop_key, b_offset)
    if n == 0 or B == 0:
        return
    with nogil:
        for j in prange(n, schedule="static", num_threads=n_threads):
            sg = NULL
            if has_sg:
                sg = &srelu_grad[j, 0]
                sg[0] = 0.0
                sg[1] = 0.0
                sg[2] = 0.0
                sg[3] = 0.0
            smlp_backward_epilogue(&p, j, &Z[j, 0], &G[j, 0], B, sg)


def dropout_mask(int64_t n, int B, double drop_rate, uint64_t drop_key, int64_t b_offset=0):
    """The (n, B) keep mask (uint8) of one dropout call, for tests and plots."""
    cdef smlp_act_t p
    out = np.ones((n, B), dtype=np.float32)
    cdef float[:, ::1] o = out
    cdef int64_t j
    smlp_fill_act(&p, 0, 0.0, NULL, drop_rate, drop_key, b_offset)
    if p.drop_thresh == 0 or B == 0:
        return out.astype(np.uint8)
    for j in range(n):
        smlp_dropout_row(&p, j, &o[j, 0], B)
    return (out != 0).astype(np.uint8)


def softmax_xent(Z, labels, bint write_delta=True, sample_weight=None, int n_threads=1):
    """Softmax + cross-entropy over a feature-major (C, B) float32 block of
    logits, int32 labels (B,).

    In place: Z becomes the delta P - Y (reference semantics: no 1/B; the
    weight gradient takes the batch mean) when ``write_delta``, else the
    probabilities P.  Returns (sum of -log p_y over the block, number of
    samples whose arg-max is the label).  With ``sample_weight`` (B,) each
    sample's loss and delta column are multiplied by its weight (the loss
    sum is then weighted; the count is not).
    """
    return _class_loss(Z, labels, write_delta, sample_weight, n_threads, False,
                       "softmax_xent")


def sigmoid_mse(Z, labels, bint write_delta=True, sample_weight=None, int n_threads=1):
    """Sigmoid outputs + mean squared error against one-hot targets, over a
    feature-major (C, B) float32 block, int32 labels (B,).  Per sample the
    loss is 0.5*sum_c (a_c-y_c)^2, so in place Z becomes the delta
    (a - y) * a * (1 - a) when ``write_delta``, else the outputs a.  Returns
    (loss sum, n correct).  ``sample_weight`` (B,): as :func:`softmax_xent`."""
    return _class_loss(Z, labels, write_delta, sample_weight, n_threads, True, "sigmoid_mse")


cdef object _class_loss(object Z, object labels, bint write_delta, object sample_weight,
                        int n_threads, bint sigmoid, str kernel):
    """softmax_xent or sigmoid_mse: the arrays checked, one column (sample)
    per iteration, each sample's loss and hit kept and summed after the loop."""
    cdef arr_t a_z, a_l, a_w
    take(Z, F32, 2, True, False, &a_z, kernel, "Z")
    take(labels, I32, 1, False, False, &a_l, kernel, "labels")
    take(sample_weight, F32, 1, False, True, &a_w, kernel, "sample_weight")
    cdef int64_t C = a_z.n0
    cdef int64_t B = a_z.n1
    cdef float* zp = <float*>a_z.p
    cdef const int32_t* lp = <const int32_t*>a_l.p
    cdef const float* wp = <const float*>a_w.p
    cdef int64_t b, c
    cdef float w
    if a_l.n0 != B:
        raise ValueError(f"{kernel}: labels must have one entry per column")
    if wp != NULL and a_w.n0 != B:
        raise ValueError(f"{kernel}: sample_weight must have one entry per column")
    if C == 0:
        raise ValueError(f"{kernel}: no classes")
    for b in range(B):  # (the loops below index Z with them)
        if lp[b] < 0 or lp[b] >= C:
            raise ValueError(f"{kernel}: label {lp[b]} of column {b} is not in [0, {C})")
    if B == 0:
        return 0.0, 0
    cdef double* lo = <double*>malloc(B * sizeof(double))
    cdef signed char* co = <signed char*>malloc(B)
    if lo == NULL or co == NULL:
        free(lo)
        free(co)
        raise MemoryError(f"{kernel}: out of memory")
    with nogil:
        for b in prange(B, schedule="static", num_threads=n_threads):
            if sigmoid:
                _sigmoid_column(zp + b, C, B, lp[b], write_delta, lo + b, co + b)
            else:
                _softmax_column(zp + b, C, B, lp[b], write_delta, lo + b, co + b)
            if wp != NULL:
                # weighted sample: w_b * loss_b, and its delta column w_b * (P - Y)
                w = wp[b]
                lo[b] = lo[b] * w
                if write_delta:
                    for c in range(C):
                        zp[c * B + b] = zp[c * B + b] * w
    result = _sum_as_numpy(lo, B), _count(co, B)
    free(lo)
    free(co)
    return result


cdef inline void _softmax_column(float* z, int64_t C, int64_t B, int32_t label,
                                 bint write_delta, double* loss,
                                 signed char* hit) noexcept nogil:
    """One sample of softmax_xent: its column z[0], z[B], ... of C logits."""
    cdef int64_t c, arg = 0
    cdef float m = z[0]
    cdef float zc
    cdef double s = 0.0
    cdef double lse
    for c in range(1, C):
        zc = z[c * B]
        if zc > m:
            m = zc
            arg = c
    for c in range(C):
        s = s + exp(z[c * B] - m)
    lse = m + log(s)
    # -log softmax(z)_y = logsumexp(z) - z_y
    loss[0] = lse - z[label * B]
    hit[0] = 1 if arg == label else 0
    for c in range(C):
        z[c * B] = <float>(exp(z[c * B] - lse))
    if write_delta:
        z[label * B] = z[label * B] - 1.0


cdef inline void _sigmoid_column(float* z, int64_t C, int64_t B, int32_t label,
                                 bint write_delta, double* loss,
                                 signed char* hit) noexcept nogil:
    """One sample of sigmoid_mse: its column z[0], z[B], ... of C outputs."""
    cdef int64_t c, arg = 0
    cdef float m = z[0]
    cdef float a, y
    cdef double s = 0.0
    for c in range(C):
        if z[c * B] > m:
            m = z[c * B]
            arg = c
        a = <float>(1.0 / (1.0 + exp(-z[c * B])))
        y = 1.0 if c == label else 0.0
        s = s + 0.5 * (a - y) * (a - y)
        z[c * B] = (a - y) * a * (1.0 - a) if write_delta else a
    loss[0] = s
    hit[0] = 1 if arg == label else 0


def linear_mse(Z, targets, bint write_delta=True, sample_weight=None, int n_threads=1):
    """Identity output + squared error (regression), over a feature-major
    (C, B) float32 block of outputs against sample-major float32 targets (B, C).

    Per sample the loss is 0.5 * sum_c (z_c - y_c)^2 (scikit-learn's
    squared_loss for one target), so in place Z becomes the delta z - y when
    ``write_delta`` (times w_b with ``sample_weight``), else it is left as
    the outputs.  Returns (loss sum over the block, 0): the second value
    keeps the (loss, correct) shape of the classification losses.
    """
    cdef arr_t a_z, a_t, a_w
    take(Z, F32, 2, True, False, &a_z, "linear_mse", "Z")
    take(targets, F32, 2, False, False, &a_t, "linear_mse", "targets")
    take(sample_weight, F32, 1, False, True, &a_w, "linear_mse", "sample_weight")
    cdef int64_t C = a_z.n0
    cdef int64_t B = a_z.n1
    cdef float* zp = <float*>a_z.p
    cdef const float* tp = <const float*>a_t.p
    cdef const float* wp = <const float*>a_w.p
    cdef int64_t b, c
    cdef float d, w
    cdef double s
    cdef bint weighted = wp != NULL
    if a_t.n0 != B or a_t.n1 != C:
        raise ValueError(f"linear_mse: targets must be (B, C) = ({B}, {C}), got "
                         f"({a_t.n0}, {a_t.n1})")
    if C == 0:
        raise ValueError("linear_mse: no outputs")
    if weighted and a_w.n0 != B:
        raise ValueError("linear_mse: sample_weight must have one entry per column")
    if B == 0:
        return 0.0, 0
    cdef double* lo = <double*>malloc(B * sizeof(double))
    if lo == NULL:
        raise MemoryError("linear_mse: out of memory")
    with nogil:
        for b in prange(B, schedule="static", num_threads=n_threads):
            s = 0.0
            w = wp[b] if weighted else 1.0
            for c in range(C):
                # delta = z - y; loss += 0.5 * (z - y)^2
                d = zp[c * B + b] - tp[b * C + c]
                s = s + 0.5 * (<double>d) * d
                if write_delta:
                    zp[c * B + b] = d * w if weighted else d
            lo[b] = s * w if weighted else s
    result = _sum_as_numpy(lo, B), 0
    free(lo)
    return result
