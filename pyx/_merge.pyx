# cython: language_level=3
"""Merges of sorted sparse rows, for the parallel trainer
(``sparse_mlp/parallel/ops.py``, WASAP-SGD / WASSP-SGD).

Both work on the CSR-by-output-neuron arrays of a layer (``indptr`` int64,
``indices`` int32 sorted within each row) and merge two sorted rows at a
time, so every call is O(nnz) and nothing is ever n_in x n_out:

``retain_valid``  the parameter server's "retain valid updates": a
                  gradient computed on an older topology is mapped onto the
                  current one (entries whose connection no longer exists are
                  dropped, connections the old topology lacked get 0).
``union_count`` / ``union_add``
                  the union of two topologies with values summed (absent =
                  0): the averaging of the K workers' models, two at a time.

Parallelism: ``prange`` over output rows (dynamic chunks: rows are ragged).
Row j reads rows j of the inputs and writes only its own output slice
(``out_indptr[j]:out_indptr[j+1]``), so no two threads write the same cell
and the result does not depend on the thread count.  The caller (Python)
allocates every output.
"""

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t


def retain_valid(const int64_t[::1] old_indptr, const int32_t[::1] old_indices,
                 const float[::1] g_old, const int64_t[::1] new_indptr,
                 const int32_t[::1] new_indices, float[::1] g_out, int n_threads=1):
    """g_out[k] = the gradient of the old topology at new weight k's
    position, 0 where the old topology had no weight there.  Returns the
    number of old entries kept (the others fall on removed connections)."""
    cdef int64_t n_out = new_indptr.shape[0] - 1
    cdef int64_t j, a, a_end, b, b_end
    cdef int64_t kept = 0
    if old_indptr.shape[0] != n_out + 1:
        raise ValueError("retain_valid: the old and new topologies have different n_out")
    if g_old.shape[0] != old_indices.shape[0] or g_out.shape[0] != new_indices.shape[0]:
        raise ValueError("retain_valid: one gradient entry per weight expected")
    if old_indptr[n_out] != old_indices.shape[0] or new_indptr[n_out] != new_indices.shape[0]:
        raise ValueError("retain_valid: indptr does not span the indices")
    with nogil:
        for j in prange(n_out, schedule="dynamic", chunksize=64, num_threads=n_threads):
            # merge of two sorted rows: copy on equal input neurons, 0 elsewhere
            a = old_indptr[j]
            a_end = old_indptr[j + 1]
            b_end = new_indptr[j + 1]
            for b in range(new_indptr[j], b_end):
                while a < a_end and old_indices[a] < new_indices[b]:
                    a = a + 1
                if a < a_end and old_indices[a] == new_indices[b]:
                    g_out[b] = g_old[a]
                    kept += 1
                    a = a + 1
                else:
                    g_out[b] = 0.0
    return kept


def union_count(const int64_t[::1] a_indptr, const int32_t[::1] a_indices,
                const int64_t[::1] b_indptr, const int32_t[::1] b_indices,
                int64_t[::1] counts_out, int n_threads=1):
    """counts_out[j] = |row j of A  union  row j of B| (distinct input neurons)."""
    cdef int64_t n_out = a_indptr.shape[0] - 1
    cdef int64_t j, a, a_end, b, b_end, c
    if b_indptr.shape[0] != n_out + 1 or counts_out.shape[0] != n_out:
        raise ValueError("union_count: A, B and counts_out disagree on n_out")
    with nogil:
        for j in prange(n_out, schedule="dynamic", chunksize=64, num_threads=n_threads):
            # |A_j u B_j| = |A_j| + |B_j| - |A_j n B_j|, by one merge
            a = a_indptr[j]
            a_end = a_indptr[j + 1]
            b = b_indptr[j]
            b_end = b_indptr[j + 1]
            c = 0
            while a < a_end and b < b_end:
                if a_indices[a] == b_indices[b]:
                    a = a + 1
                    b = b + 1
                elif a_indices[a] < b_indices[b]:
                    a = a + 1
                else:
                    b = b + 1
                c = c + 1
            counts_out[j] = c + (a_end - a) + (b_end - b)


def union_add(const int64_t[::1] a_indptr, const int32_t[::1] a_indices,
              const float[::1] a_data, const float[::1] a_velocity,
              const int64_t[::1] b_indptr, const int32_t[::1] b_indices,
              const float[::1] b_data, const float[::1] b_velocity,
              const int64_t[::1] out_indptr, int32_t[::1] out_indices,
              float[::1] out_data, float[::1] out_velocity, int n_threads=1):
    """The union of two topologies, values and momenta summed (absent = 0):
    row j of the output (at ``out_indptr[j]``, from :func:`union_count`) is
    the sorted merge of rows j of A and B."""
    cdef int64_t n_out = a_indptr.shape[0] - 1
    cdef int64_t j, a, a_end, b, b_end, o
    if b_indptr.shape[0] != n_out + 1 or out_indptr.shape[0] != n_out + 1:
        raise ValueError("union_add: A, B and the output disagree on n_out")
    if (a_data.shape[0] != a_indices.shape[0] or a_velocity.shape[0] != a_indices.shape[0]
            or b_data.shape[0] != b_indices.shape[0]
            or b_velocity.shape[0] != b_indices.shape[0]):
        raise ValueError("union_add: one value and one momentum per weight expected")
    if (out_indices.shape[0] != out_indptr[n_out] or out_data.shape[0] != out_indptr[n_out]
            or out_velocity.shape[0] != out_indptr[n_out]):
        raise ValueError("union_add: the outputs must hold out_indptr[-1] weights")
    with nogil:
        for j in prange(n_out, schedule="dynamic", chunksize=64, num_threads=n_threads):
            # sorted merge; equal input neurons are summed into one weight
            a = a_indptr[j]
            a_end = a_indptr[j + 1]
            b = b_indptr[j]
            b_end = b_indptr[j + 1]
            o = out_indptr[j]
            while a < a_end or b < b_end:
                if b >= b_end or (a < a_end and a_indices[a] < b_indices[b]):
                    out_indices[o] = a_indices[a]
                    out_data[o] = a_data[a]
                    out_velocity[o] = a_velocity[a]
                    a = a + 1
                elif a >= a_end or b_indices[b] < a_indices[a]:
                    out_indices[o] = b_indices[b]
                    out_data[o] = b_data[b]
                    out_velocity[o] = b_velocity[b]
                    b = b + 1
                else:
                    out_indices[o] = a_indices[a]
                    out_data[o] = a_data[a] + b_data[b]
                    out_velocity[o] = a_velocity[a] + b_velocity[b]
                    a = a + 1
                    b = b + 1
                o = o + 1
