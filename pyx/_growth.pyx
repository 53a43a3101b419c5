# cython: language_level=3
"""Gradient-based regrowth kernels: the gradient of the loss at EMPTY
positions of a layer and the top-k of its magnitude, without ever holding a
dense n_in x n_out gradient (or mask).

The gradient of W[i, j] over a batch (feature-major activations ``A``
(n_in, B) entering the layer and deltas ``D`` (n_out, B) of its
pre-activations) is  g[i, j] = scale * A[i, :] . D[j, :]  (scale = 1/B for a
batch mean); it is computed only where a caller asks:

* ``empty_grad_topk``: every empty position of the layer, output row by
  output row, in blocks of ``GBLOCK`` empty columns (the SDDMM row kernel of
  ``rowkern.h`` with the block's column list), each score offered to a
  bounded per-thread buffer of the best: a score below the buffer's
  threshold is dropped at once; when the buffer (2k, at least k + 256
  entries) is full, a quickselect keeps its k best and raises the
  threshold to the k-th, so each offer costs O(1) amortised.  Memory: the
  buffers and one block per thread, O(nnz + block); work
  O(n_in * n_out * B), skipped per row and per block when the
  Cauchy-Schwarz bound scale * max ||A_i|| * ||D_j|| cannot reach the
  threshold.
* ``candidate_grad``: the gradient at a given list of candidate positions
  (CSR grouped by output row), O(candidates * B) -- the sampled mode.
* ``select_topk``: the k best of given (position, score) pairs.

Order: one strict total order decides every selection -- larger |g| first;
equal |g| by a hash of (seed, position) (so ties, e.g. the zero gradients of
a dead neuron, are broken uniformly at random and not towards low
positions); then by position.  NaN scores rank below everything.

Parallelism: ``prange`` splits OUTPUT ROWS; each thread owns one buffer
(its slot of a scratch area) and fills it with the rows it processes.  A
row's scores do not depend on the thread that computes it (its blocks are
always the same columns), and the union of the per-thread top-k
contains the global top-k of a strict total order, so the merged result is
identical for any thread count.  The threshold and the bound skips only
discard entries that are not in the thread's top-k, so they change nothing
either.
"""

import numpy as np

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport fabsf, sqrt
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc

from rowkern cimport (smlp_dispatch_init, smlp_mix64, smlp_sddmm_fn, smlp_sddmm_row_for,
                      smlp_simd_level)

_LEVELS = ("scalar", "avx2", "avx512")
smlp_dispatch_init(-1)


def simd_level():
    """The row-kernel instruction set this module uses (each compiled module
    holds its own dispatch, chosen at import like ``_spmm``'s)."""
    return _LEVELS[smlp_simd_level]


def set_simd_level(level):
    """Force this module's row kernels to ``level`` ('scalar', 'avx2',
    'avx512' or 'best'), clamped to the CPU; returns the level in use."""
    req = -1 if level == "best" else _LEVELS.index(level)
    return _LEVELS[smlp_dispatch_init(2 if req < 0 else req)]


# empty columns handled per SDDMM call (column list and scores, per thread)
cdef enum:
    GBLOCK = 256


cdef inline float _clean(float s) noexcept nogil:
    # |g|, with NaN ranked below every real score
    if s < 0:
        s = -s
    if not (s >= 0):
        return -1.0
    return s


cdef inline bint _better(float sa, int64_t pa, float sb, int64_t pb, uint64_t seed) noexcept nogil:
    # strict total order: larger score; then smaller hash(seed, pos); then smaller pos
    cdef uint64_t ha, hb
    if sa != sb:
        return sa > sb
    ha = smlp_mix64(seed ^ <uint64_t>pa)
    hb = smlp_mix64(seed ^ <uint64_t>pb)
    if ha != hb:
        return ha < hb
    return pa < pb


cdef inline void _swap(float* s, int64_t* p, int64_t a, int64_t b) noexcept nogil:
    cdef float ts = s[a]
    cdef int64_t tp = p[a]
    s[a] = s[b]
    p[a] = p[b]
    s[b] = ts
    p[b] = tp


cdef void _sift_down(float* s, int64_t* p, int64_t n, int64_t i, uint64_t seed) noexcept nogil:
    # heap with the WORST entry at the root: no child is worse than its parent
    cdef int64_t c, r
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        r = c + 1
        if r < n and _better(s[c], p[c], s[r], p[r], seed):
            c = r                      # the worse child
        if _better(s[c], p[c], s[i], p[i], seed):
            return
        _swap(s, p, i, c)
        i = c


cdef int64_t _select(float* s, int64_t* p, int64_t n, int64_t k, uint64_t seed) noexcept nogil:
    # quickselect: move the k best of n (total order) to [0, k), the k-th at k-1; returns min(n, k)
    cdef int64_t lo = 0, hi = n - 1, i, j, mid
    cdef float ps
    cdef int64_t pp
    if k >= n:
        return n
    if k <= 0:
        return 0
    while lo < hi:
        mid = lo + ((hi - lo) >> 1)      # median of three as the pivot
        if _better(s[mid], p[mid], s[lo], p[lo], seed):
            _swap(s, p, mid, lo)
        if _better(s[hi], p[hi], s[lo], p[lo], seed):
            _swap(s, p, hi, lo)
        if _better(s[hi], p[hi], s[mid], p[mid], seed):
            _swap(s, p, hi, mid)
        ps = s[mid]
        pp = p[mid]
        i = lo
        j = hi
        while i <= j:                    # better than the pivot to the left
            while _better(s[i], p[i], ps, pp, seed):
                i += 1
            while _better(ps, pp, s[j], p[j], seed):
                j -= 1
            if i <= j:
                _swap(s, p, i, j)
                i += 1
                j -= 1
        if k - 1 <= j:
            hi = j
        elif k - 1 >= i:
            lo = i
        else:
            break
    return k


cdef void _sort_best_first(float* s, int64_t* p, int64_t n, uint64_t seed) noexcept nogil:
    # heap sort with the worst at the root: repeatedly move the worst to the end
    cdef int64_t i = n // 2 - 1
    while i >= 0:
        _sift_down(s, p, n, i, seed)
        i -= 1
    while n > 1:
        _swap(s, p, 0, n - 1)
        n -= 1
        _sift_down(s, p, n, 0, seed)


cdef inline void _push(float* s, int64_t* p, int64_t* cnt, int64_t cap, int64_t k,
                       float* thr, float score, int64_t pos, uint64_t seed) noexcept nogil:
    # append to a buffer of capacity cap (> k); when full keep its k best, raise thr
    cdef int64_t n = cnt[0]
    s[n] = score
    p[n] = pos
    n += 1
    if n == cap:
        n = _select(s, p, n, k, seed)
        thr[0] = s[k - 1]
    cnt[0] = n


cdef inline double _fill_run(int32_t* out, const double* an, int64_t a, int64_t e) noexcept nogil:
    # out[:] = a .. e-1 (one run of empty columns); returns max(an[a:e])
    cdef double m = 0.0
    cdef int64_t c
    for c in range(a, e):
        out[c - a] = <int32_t>c
        if an[c] > m:
            m = an[c]
    return m


cdef inline int _chunk(int64_t n_rows, int n_threads) noexcept nogil:
    cdef int64_t c = n_rows // (16 * n_threads)
    if c < 1:
        return 1
    if c > 64:
        return 64
    return <int>c


def empty_grad_topk(const int64_t[::1] indptr, const int32_t[::1] indices,
                    const float[:, ::1] A, const float[:, ::1] D,
                    int64_t[::1] pos_out, float[::1] score_out, float scale,
                    uint64_t seed=0, int n_threads=1):
    """The k = len(pos_out) empty positions of largest |gradient|.

    Parameters
    ----------
    indptr, indices : the layer's CSR grouped by output row (int64 n_out+1,
        int32 sorted per row); every position (j, i) not listed is a candidate.
    A : float32 (n_in, B)    activations entering the layer (feature-major)
    D : float32 (n_out, B)   deltas of the layer's pre-activations
    pos_out : int64 (k,)     out: positions j * n_in + i, best first
    score_out : float32 (k,) out: their |g| = |scale * A[i, :] . D[j, :]|
    scale : float            1 / (samples) for a mean

    Returns the number of positions written (< k only when the layer has
    fewer than k empty positions).
    """
    cdef int64_t n_out = indptr.shape[0] - 1
    cdef int64_t n_in = A.shape[0]
    cdef int B = <int>A.shape[1]
    cdef smlp_sddmm_fn sddmm_row = smlp_sddmm_row_for(B)  # (once per call)
    cdef int64_t lda = A.shape[1]
    cdef int64_t k = pos_out.shape[0]
    cdef int64_t cap = 2 * k if k > GBLOCK else k + GBLOCK
    cdef int64_t i, j, k0, k1, col, nb, q, b, stop, total = 0
    cdef int slot = 0
    cdef int n_slots = n_threads if n_threads > 0 else 1
    cdef double acc, dn, amax_all = 0.0, amax_blk, run_max, margin
    cdef float sc, t
    cdef float fscale = scale if scale >= 0 else -scale
    cdef int failed = 0
    cdef int* failp = &failed
    cdef float* hs = NULL
    cdef int64_t* hp = NULL
    cdef int64_t* hc = NULL
    cdef float* tp = NULL
    cdef int32_t* idx = NULL
    cdef float* gb = NULL
    cdef const float* ap
    cdef const float* dp = NULL
    cdef int chunk = _chunk(n_out, n_slots)
    if D.shape[0] != n_out or D.shape[1] != B:
        raise ValueError("empty_grad_topk: D must be (n_out, B) with the B of A")
    if indices.shape[0] != indptr[n_out]:
        raise ValueError("empty_grad_topk: indices must have indptr[-1] entries")
    if score_out.shape[0] != k:
        raise ValueError("empty_grad_topk: pos_out and score_out must have the same length")
    if k == 0 or n_out == 0 or n_in == 0:
        return 0
    anorm = np.zeros(n_in, dtype=np.float64)
    cdef double[::1] an = anorm
    slot_s = np.empty(n_slots * cap, dtype=np.float32)
    slot_p = np.empty(n_slots * cap, dtype=np.int64)
    counts = np.zeros(n_slots, dtype=np.int64)
    thresholds = np.full(n_slots, -3.0, dtype=np.float32)   # below every clean score
    cdef float[::1] ss = slot_s
    cdef int64_t[::1] sp = slot_p
    cdef int64_t[::1] cn = counts
    cdef float[::1] th = thresholds
    ap = &A[0, 0] if B > 0 else NULL
    # rounding margin of a float32 dot product of length B against its exact bound
    margin = 1.0 + 2.5e-7 * B + 1e-5
    with nogil:
        # ||A_i||, the column factor of the Cauchy-Schwarz bound
        for i in prange(n_in, schedule="static", num_threads=n_slots):
            acc = 0.0
            for b in range(B):
                acc = acc + <double>A[i, b] * A[i, b]
            an[i] = sqrt(acc)
        for i in range(n_in):
            if an[i] > amax_all:
                amax_all = an[i]
        with parallel(num_threads=n_slots):
            slot = threadid()
            hs = &ss[0] + slot * cap
            hp = &sp[0] + slot * cap
            hc = &cn[0] + slot
            tp = &th[0] + slot
            idx = <int32_t*>malloc(GBLOCK * sizeof(int32_t))
            gb = <float*>malloc(GBLOCK * sizeof(float))
            if idx == NULL or gb == NULL:
                failp[0] = 1
            else:
                for j in prange(n_out, schedule="dynamic", chunksize=chunk):
                    k0 = indptr[j]
                    k1 = indptr[j + 1]
                    if k1 - k0 >= n_in:
                        continue
                    dp = &D[j, 0] if B > 0 else NULL
                    acc = 0.0
                    for b in range(B):
                        acc = acc + <double>D[j, b] * D[j, b]
                    dn = sqrt(acc) * fscale * margin
                    if dn * amax_all < tp[0]:    # no score of this row can reach the threshold
                        continue
                    col = 0
                    while col < n_in:
                        # next block of up to GBLOCK empty columns (fixed by the row alone):
                        # the runs between the row's sorted existing columns
                        nb = 0
                        amax_blk = 0.0
                        while col < n_in and nb < GBLOCK:
                            stop = indices[k0] if k0 < k1 else n_in
                            if stop == col:          # an existing weight
                                col = col + 1
                                k0 = k0 + 1
                                continue
                            if stop > col + GBLOCK - nb:
                                stop = col + GBLOCK - nb
                            run_max = _fill_run(idx + nb, &an[0], col, stop)
                            if run_max > amax_blk:
                                amax_blk = run_max
                            nb = nb + (stop - col)
                            col = stop
                        if nb == 0:
                            break
                        if dn * amax_blk < tp[0]:
                            continue
                        if B > 0:
                            sddmm_row(idx, nb, ap, lda, dp, B, scale, gb)
                        else:
                            for q in range(nb):
                                gb[q] = 0.0
                        t = tp[0]
                        for q in range(nb):
                            sc = fabsf(gb[q])        # branch-free; NaN falls through to _clean
                            if sc < t:               # cannot be in this thread's top k
                                continue
                            _push(hs, hp, hc, cap, k, tp, _clean(sc), j * n_in + idx[q], seed)
                            t = tp[0]
                hc[0] = _select(hs, hp, hc[0], k, seed)
            free(idx)
            free(gb)
    if failed:
        raise MemoryError("empty_grad_topk: could not allocate a block buffer")
    with nogil:
        # the union of the per-thread top k, packed to the front; its k best, sorted
        for slot in range(n_slots):
            for q in range(cn[slot]):
                ss[total + q] = ss[slot * cap + q]
                sp[total + q] = sp[slot * cap + q]
            total += cn[slot]
        total = _select(&ss[0], &sp[0], total, k, seed)
        _sort_best_first(&ss[0], &sp[0], total, seed)
        for q in range(total):
            score_out[q] = ss[q]
            pos_out[q] = sp[q]
    return total


def candidate_grad(const int64_t[::1] cand_indptr, const int32_t[::1] cand_indices,
                   const float[:, ::1] A, const float[:, ::1] D, float[::1] g_out,
                   float scale, int n_threads=1):
    """Gradient at candidate positions (CSR by output row):
    g_out[q] = scale * A[cand_indices[q], :] . D[j, :] for q in row j."""
    cdef int64_t n_out = cand_indptr.shape[0] - 1
    cdef int B = <int>A.shape[1]
    cdef smlp_sddmm_fn sddmm_row = smlp_sddmm_row_for(B)  # (once per call)
    cdef int64_t lda = A.shape[1]
    cdef int64_t j, k0, q
    cdef const float* ap
    cdef int chunk = _chunk(n_out, n_threads if n_threads > 0 else 1)
    if D.shape[0] != n_out or D.shape[1] != B:
        raise ValueError("candidate_grad: D must be (n_out, B) with the B of A")
    if g_out.shape[0] != cand_indices.shape[0] or cand_indptr[n_out] != g_out.shape[0]:
        raise ValueError("candidate_grad: g_out must have one entry per candidate")
    if g_out.shape[0] == 0:
        return
    ap = &A[0, 0] if B > 0 and A.shape[0] > 0 else NULL
    with nogil, parallel(num_threads=n_threads):
        for j in prange(n_out, schedule="dynamic", chunksize=chunk):
            k0 = cand_indptr[j]
            if B > 0:
                sddmm_row(&cand_indices[0] + k0, cand_indptr[j + 1] - k0, ap, lda,
                          &D[j, 0], B, scale, &g_out[0] + k0)
            else:
                for q in range(k0, cand_indptr[j + 1]):
                    g_out[q] = 0.0


def select_topk(const int64_t[::1] positions, const float[::1] scores, int64_t[::1] pos_out,
                float[::1] score_out, uint64_t seed=0):
    """The k = len(pos_out) entries of largest |score| (the order of the
    module docstring), best first; returns how many were written."""
    cdef int64_t n = positions.shape[0]
    cdef int64_t k = pos_out.shape[0]
    cdef int64_t q, m
    if scores.shape[0] != n or score_out.shape[0] != k:
        raise ValueError("select_topk: positions/scores and pos_out/score_out must match")
    if k == 0 or n == 0:
        return 0
    s = np.empty(n, dtype=np.float32)
    p = np.array(positions, dtype=np.int64, copy=True)
    cdef float[::1] sv = s
    cdef int64_t[::1] pv = p
    with nogil:
        for q in range(n):
            sv[q] = _clean(scores[q])
        m = _select(&sv[0], &pv[0], n, k, seed)
        _sort_best_first(&sv[0], &pv[0], m, seed)
        for q in range(m):
            score_out[q] = sv[q]
            pos_out[q] = pv[q]
    return m
