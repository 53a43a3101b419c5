# cython: language_level=3
"""Topology kernels: the transposed index, SET's magnitude selection and
row merge, regrowth helpers, neuron importance.

All work is O(nnz) (plus O(n_in + n_out)); nothing is ever n_in x n_out.

SET removal rule (docs/semantics.md, "SET"; ``evolution.py``): weights are split
by their sign bit; within each class the k weights of smallest magnitude
are removed, k = n - floor((1 - zeta) * n).  The k-th smallest magnitude is
found by a two-pass radix selection on the float bit patterns (|w| as
uint32 is monotonic), and every weight whose magnitude is <= that threshold
is removed, so ties at the threshold all go (as in the reference code).

Parallelism: ``prange`` over output rows (or over candidates); each writes
its own slice.  The radix selection and the transposed index are sequential
O(nnz) passes (deterministic by construction).  A call touching fewer than
``min_parallel_work()`` weights runs on one thread (rowkern.h, "threads per
call"): same results, no team to wake for a small layer.
"""

import numpy as np

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from rowkern cimport smlp_float_bits as _key
from rowkern cimport smlp_min_work, smlp_threads_for


def min_parallel_work(work=None):
    """Calls touching fewer weights than this run on one thread; with an
    argument, set it first (0: always use the threads given).  Speed only,
    never a result (see ``sparse_mlp.kernels.min_parallel_work``)."""
    global smlp_min_work
    if work is not None:
        w = int(work)
        if w < 0:
            raise ValueError("min_parallel_work must be >= 0")
        smlp_min_work = w  # no-cython-lint (the C global of rowkern.h)
    return smlp_min_work


cdef inline bint _removed(float w, int64_t key_neg, int64_t key_pos) noexcept nogil:
    # key_* < 0: nothing removed in that sign class
    cdef uint32_t bits = _key(w)
    cdef int64_t mag = bits & 0x7FFFFFFF
    if bits >> 31:
        return key_neg >= 0 and mag <= key_neg
    return key_pos >= 0 and mag <= key_pos


def transpose_index(const int64_t[::1] indptr, const int32_t[::1] indices,
                    int64_t[::1] t_indptr, int32_t[::1] t_rows, int32_t[::1] t_perm):
    """Group the weights by INPUT neuron: for input i, t_rows[t_indptr[i]:
    t_indptr[i+1]] are its output neurons (ascending) and t_perm the
    positions of those weights in ``data``.  Counting sort, O(nnz + n_in)."""
    cdef int64_t n_out = indptr.shape[0] - 1
    cdef int64_t n_in = t_indptr.shape[0] - 1
    cdef int64_t nnz = indices.shape[0]
    cdef int64_t j, k, i, pos
    cdef int64_t* fill
    if t_rows.shape[0] != nnz or t_perm.shape[0] != nnz:
        raise ValueError("transpose_index: t_rows and t_perm must be (nnz,)")
    fill = <int64_t*>calloc(n_in + 1, sizeof(int64_t))
    if fill == NULL:
        raise MemoryError("transpose_index: out of memory")
    with nogil:
        for i in range(n_in + 1):
            t_indptr[i] = 0
        for k in range(nnz):
            t_indptr[indices[k] + 1] += 1
        for i in range(n_in):
            t_indptr[i + 1] += t_indptr[i]
        memcpy(fill, &t_indptr[0], n_in * sizeof(int64_t))
        for j in range(n_out):
            for k in range(indptr[j], indptr[j + 1]):
                i = indices[k]
                pos = fill[i]
                fill[i] = pos + 1
                t_rows[pos] = <int32_t>j
                t_perm[pos] = <int32_t>k
    free(fill)


def magnitude_thresholds(const float[::1] data, double zeta):
    """Thresholds of SET's removal: returns (key_neg, key_pos, n_neg, n_pos,
    k_neg, k_pos).  key_* is the bit pattern of the k-th smallest |w| of the
    class (-1 when k = 0); a weight is removed when its |w| bits are <= key.

    A radix selection over the 31 magnitude bits in the digits 30..20, 19..10
    and 9..0: a first pass counts the weights of each class by top digit and
    the rank picks the top digit of the k-th; a second pass copies the
    magnitudes with that top digit aside (a few percent of the weights for
    any spread of values, all of them at worst), where the two lower digits
    are picked the same way.  Histograms of 4096 counts on the stack: the
    former two-pass version's 1.5 MiB of zeroed histograms and scans of 2^15
    and 2^16 buckets took ~55 us a call whatever the layer (Madelon's layers
    hold 1-9 thousand weights; bench/bench_thresholds.py).
    """
    cdef int64_t nnz = data.shape[0]
    cdef int64_t k, b, m, n0 = 0, n1 = 0
    cdef uint32_t bits, mag, t, t_neg, t_pos
    cdef int cls, level, shift
    cdef int64_t n_cls[2]
    cdef int64_t k_cls[2]
    cdef int64_t rank[2]      # rank of the wanted weight among those matching prefix
    cdef int64_t prefix[2]    # the digits picked so far
    cdef int64_t n_cand[2]
    cdef uint32_t* cand[2]    # the magnitudes whose top digit is prefix
    cdef uint32_t* c0
    cdef uint32_t* c1
    # by sign and top digit (bits >> 20): positives 0..2047, negatives 2048..4095
    cdef int64_t hist[4096]
    cdef int64_t* h
    memset(&hist[0], 0, sizeof(hist))
    with nogil:  # pass 1: counts by sign and top digit
        for k in range(nnz):
            hist[_key(data[k]) >> 20] += 1
    for cls in range(2):  # class 0: the negatives
        h = &hist[2048 if cls == 0 else 0]
        n_cls[cls] = 0
        for b in range(2048):
            n_cls[cls] += h[b]
        k_cls[cls] = n_cls[cls] - <int64_t>((1.0 - zeta) * <double>n_cls[cls])
        if k_cls[cls] < 0:
            k_cls[cls] = 0
        if k_cls[cls] > n_cls[cls]:
            k_cls[cls] = n_cls[cls]
        rank[cls] = k_cls[cls]
        prefix[cls] = _pick_digit(h, 2048, &rank[cls]) if rank[cls] > 0 else -1
        n_cand[cls] = h[prefix[cls]] if rank[cls] > 0 else 0
        cand[cls] = <uint32_t*>malloc((n_cand[cls] if n_cand[cls] > 0 else 1) * sizeof(uint32_t))
    if cand[0] == NULL or cand[1] == NULL:
        free(cand[0])
        free(cand[1])
        raise MemoryError("magnitude_thresholds: out of memory")
    # (a sign and top digit no weight has, for a class with nothing removed)
    t_neg = <uint32_t>(2048 + prefix[0]) if rank[0] > 0 else 0xFFFFFFFF
    t_pos = <uint32_t>prefix[1] if rank[1] > 0 else 0xFFFFFFFF
    c0 = cand[0]
    c1 = cand[1]
    with nogil:
        # pass 2: the magnitudes with the picked sign and top digit, aside
        for k in range(nnz):
            bits = _key(data[k])
            t = bits >> 20
            if t == t_neg:
                c0[n0] = bits & 0x7FFFFFFF
                n0 += 1
            elif t == t_pos:
                c1[n1] = bits
                n1 += 1
        n_cand[0] = n0
        n_cand[1] = n1
        # the two lower digits, among those
        for cls in range(2):
            if rank[cls] == 0:
                continue
            for level in range(1, 3):
                shift = 10 if level == 1 else 0
                memset(&hist[0], 0, 1024 * sizeof(int64_t))
                for m in range(n_cand[cls]):
                    mag = cand[cls][m]
                    if <int64_t>(mag >> (shift + 10)) == prefix[cls]:
                        hist[(mag >> shift) & 1023] += 1
                prefix[cls] = (prefix[cls] << 10) | _pick_digit(hist, 1024, &rank[cls])
    free(cand[0])
    free(cand[1])
    return (prefix[0] if k_cls[0] > 0 else -1, prefix[1] if k_cls[1] > 0 else -1,
            n_cls[0], n_cls[1], k_cls[0], k_cls[1])


cdef inline int64_t _pick_digit(const int64_t* hist, int64_t n_b, int64_t* rank) noexcept nogil:
    """The bucket holding the rank-th smallest (1-based) of the counted
    values; rank becomes its rank inside that bucket."""
    cdef int64_t b, cum = 0
    for b in range(n_b):
        if cum + hist[b] >= rank[0]:
            rank[0] -= cum
            return b
        cum += hist[b]
    return n_b - 1  # (not reached: the counts add up to at least rank)


def removal_mask(const float[::1] data, int64_t key_neg, int64_t key_pos):
    """uint8 (nnz,) flags of the weights SET removes (for tests and stats)."""
    cdef int64_t n = data.shape[0]
    out = np.empty(n, dtype=np.uint8)
    cdef unsigned char[::1] o = out
    cdef int64_t k
    with nogil:
        for k in range(n):
            o[k] = _removed(data[k], key_neg, key_pos)
    return out


def keep_counts(const int64_t[::1] indptr, const float[::1] data, int64_t key_neg,
                int64_t key_pos, int64_t[::1] counts, int n_threads=1):
    """counts[j] = number of surviving weights of row j."""
    cdef int64_t n_out = indptr.shape[0] - 1
    cdef int64_t j, k, c
    if counts.shape[0] != n_out:
        raise ValueError("keep_counts: counts must be (n_out,)")
    n_threads = smlp_threads_for(data.shape[0], n_threads)
    with nogil:
        for j in prange(n_out, schedule="static", num_threads=n_threads):
            c = 0
            for k in range(indptr[j], indptr[j + 1]):
                if not _removed(data[k], key_neg, key_pos):
                    c = c + 1
            counts[j] = c


cdef inline int64_t _find(const int32_t[::1] indices, int64_t lo, int64_t hi,
                          int32_t col) noexcept nogil:
    # position of col in the sorted slice [lo, hi), or -1
    cdef int64_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < col:
            lo = mid + 1
        else:
            hi = mid
    if lo < indices.shape[0] and lo >= 0 and indices[lo] == col:
        return lo
    return -1


def occupied(const int64_t[::1] indptr, const int32_t[::1] indices, const float[::1] data,
             int64_t key_neg, int64_t key_pos, const int64_t[::1] positions, int64_t n_in,
             unsigned char[::1] out, int n_threads=1):
    """out[c] = 1 when position (row j, col i) = divmod(positions[c], n_in)
    holds a weight that survives the removal (binary search in row j)."""
    cdef int64_t n = positions.shape[0]
    cdef int64_t c, j, k
    cdef int32_t i
    if out.shape[0] != n:
        raise ValueError("occupied: out must be (len(positions),)")
    n_threads = smlp_threads_for(n, n_threads)
    with nogil:
        for c in prange(n, schedule="static", num_threads=n_threads):
            j = positions[c] // n_in
            i = <int32_t>(positions[c] - j * n_in)
            k = _find(indices, indptr[j], indptr[j + 1], i)
            out[c] = 1 if (k >= 0 and not _removed(data[k], key_neg, key_pos)) else 0


def empty_positions(const int64_t[::1] indptr, const int32_t[::1] indices,
                    const float[::1] data, int64_t key_neg, int64_t key_pos, int64_t n_in,
                    int64_t[::1] out):
    """All positions j*n_in + i not holding a surviving weight, ascending.
    O(n_in * n_out): only called for layers so dense that this is O(nnz).
    Returns the number written."""
    cdef int64_t n_out = indptr.shape[0] - 1
    cdef int64_t j, k, i, w = 0, k1
    with nogil:
        for j in range(n_out):
            k = indptr[j]
            k1 = indptr[j + 1]
            for i in range(n_in):
                while k < k1 and indices[k] < i:
                    k = k + 1
                if k < k1 and indices[k] == i and not _removed(data[k], key_neg, key_pos):
                    continue
                out[w] = j * n_in + i
                w = w + 1
    return w


def complement_sorted(const int64_t[::1] excluded, int64_t n, int64_t[::1] out):
    """out = the integers of [0, n) not in the sorted unique ``excluded``."""
    cdef int64_t m = excluded.shape[0]
    cdef int64_t x, e = 0, w = 0
    if out.shape[0] != n - m:
        raise ValueError("complement_sorted: out must have n - len(excluded) entries")
    with nogil:
        for x in range(n):
            if e < m and excluded[e] == x:
                e = e + 1
            else:
                out[w] = x
                w = w + 1


def merge_rows(const int64_t[::1] indptr, const int32_t[::1] indices, const float[::1] data,
               const float[::1] velocity, int64_t key_neg, int64_t key_pos,
               const int64_t[::1] new_ptr, const int32_t[::1] new_cols,
               const float[::1] new_vals, const int64_t[::1] out_indptr,
               int32_t[::1] out_indices, float[::1] out_data, float[::1] out_velocity,
               int n_threads=1):
    """One SET step's new rows: the surviving weights of row j (with their
    momentum) merged in column order with the new connections
    new_cols[new_ptr[j]:new_ptr[j+1]] (sorted, disjoint from the survivors;
    values new_vals, momentum 0).  out_indptr holds the prefix sums of
    (survivors + new) per row."""
    cdef int64_t n_out = indptr.shape[0] - 1
    cdef int64_t j, k, k1, q, q1, w
    n_threads = smlp_threads_for(data.shape[0] + new_cols.shape[0], n_threads)
    with nogil:
        for j in prange(n_out, schedule="static", num_threads=n_threads):
            k = indptr[j]
            k1 = indptr[j + 1]
            q = new_ptr[j]
            q1 = new_ptr[j + 1]
            w = out_indptr[j]
            while k < k1 or q < q1:
                if k < k1 and _removed(data[k], key_neg, key_pos):
                    k = k + 1
                elif k < k1 and (q >= q1 or indices[k] < new_cols[q]):
                    out_indices[w] = indices[k]
                    out_data[w] = data[k]
                    out_velocity[w] = velocity[k]
                    w = w + 1
                    k = k + 1
                else:
                    out_indices[w] = new_cols[q]
                    out_data[w] = new_vals[q]
                    out_velocity[w] = 0.0
                    w = w + 1
                    q = q + 1


def row_abs_sum(const int64_t[::1] indptr, const float[::1] data, double[::1] out,
                int n_threads=1):
    """Neuron importance: out[j] = sum of |w| over the incoming weights of
    output neuron j (accumulated in float64)."""
    cdef int64_t n_out = indptr.shape[0] - 1
    cdef int64_t j, k
    cdef double s
    if out.shape[0] != n_out:
        raise ValueError("row_abs_sum: out must be (n_out,)")
    n_threads = smlp_threads_for(data.shape[0], n_threads)
    with nogil:
        for j in prange(n_out, schedule="static", num_threads=n_threads):
            s = 0.0
            for k in range(indptr[j], indptr[j + 1]):
                s = s + (data[k] if data[k] >= 0 else -data[k])
            out[j] = s


def check_csr(const int64_t[::1] indptr, const int32_t[::1] indices, int64_t n_in):
    """Validate a CSR structure: returns '' when indptr is monotonic from 0
    to nnz and every row's indices are strictly increasing in [0, n_in),
    else a description of the first problem."""
    cdef int64_t n_out = indptr.shape[0] - 1
    cdef int64_t nnz = indices.shape[0]
    cdef int64_t j, k
    cdef int64_t bad_row = -1, bad_kind = 0
    if n_out < 0:
        return "indptr is empty"
    if indptr[0] != 0 or indptr[n_out] != nnz:
        return f"indptr must start at 0 and end at nnz={nnz}"
    with nogil:
        for j in range(n_out):
            if indptr[j + 1] < indptr[j]:
                bad_row = j
                bad_kind = 1
                break
            for k in range(indptr[j], indptr[j + 1]):
                if indices[k] < 0 or indices[k] >= n_in:
                    bad_row = j
                    bad_kind = 2
                    break
                if k > indptr[j] and indices[k] <= indices[k - 1]:
                    bad_row = j
                    bad_kind = 3
                    break
            if bad_row >= 0:
                break
    if bad_kind == 1:
        return f"indptr decreases at row {bad_row}"
    if bad_kind == 2:
        return f"row {bad_row} has an index outside [0, {n_in})"
    if bad_kind == 3:
        return f"row {bad_row} has unsorted or duplicate indices"
    return ""
