# cython: language_level=3
"""Sparse products of one layer: forward, gradient to the inputs, weight
gradient (optionally fused with the momentum update), and batch gathering.

A layer's weights are CSR grouped by OUTPUT neuron (``indptr`` int64 of
n_out+1, ``indices`` int32 input ids sorted per row, ``data`` float32), plus
a transposed index grouped by INPUT neuron (``t_indptr``, ``t_rows``,
``t_perm`` into ``data``).  Activations are feature-major, (neurons, B)
C-contiguous.

Parallelism: every ``prange`` splits OUTPUT ROWS of the array it writes
(output neurons for the forward pass and the weight gradient, input
neurons for the gradient to the inputs, features for the gather, image
rows for the augmented gather).  A row is
written by exactly one thread, accumulated in a fixed order, so results
are bit-identical for any thread count.  A call with less work than
``min_parallel_work()`` multiply-adds runs on one thread (rowkern.h,
"threads per call"), which therefore changes no result either.  The caller
(``layers.py``) owns every array; the kernels check each array's dtype,
layout and shape, and trust the index structure (indptr, indices and the
transposed index) the layer keeps consistent.  The products, the updates and
the gather take their arrays through ``arrayargs.pxd`` (a header
check, ~8 ns an array); permute and the augmented gather keep typed
memoryviews (~85 ns an array).
"""

import os

cimport numpy as cnp
from cython.parallel cimport parallel, prange
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from arrayargs cimport F32, I32, I64, U16, arr_t, take
from rowkern cimport (
    SMLP_EPI_BWD,
    SMLP_EPI_FWD,
    SMLP_TL_END,
    SMLP_TL_ENTER,
    SMLP_TL_ROWS,
    smlp_tl_begin,
    smlp_tl_call_t,
    smlp_tl_calls,
    smlp_tl_end,
    smlp_tl_lost,
    smlp_tl_n,
    smlp_tl_nt,
    smlp_tl_stamps,
    smlp_tl_start,
    smlp_tl_stop,
    smlp_tl_thread,
    smlp_max_threads,
    smlp_act_fusable,
    smlp_act_t,
    smlp_epi_make,
    smlp_epi_t,
    smlp_backward_epilogue,
    smlp_bwd_fn,
    smlp_bwd_row_for,
    smlp_fill_act,
    smlp_cpu_level,
    smlp_dispatch_init,
    smlp_forward_epilogue,
    smlp_backward_rows4,
    smlp_forward_dense_avx512,
    smlp_forward_rows4,
    smlp_dense_blocks,
    smlp_dense_ok,
    smlp_dense_on,
    smlp_gather_part,
    smlp_owned_new,
    smlp_owned_next,
    smlp_owned_t,
    smlp_take,
    smlp_thread_id,
    smlp_row_spec,
    smlp_sddmm_fn,
    smlp_sddmm_row_for,
    smlp_simd_level,
    smlp_spmm_fn,
    smlp_spmm_row_for,
    smlp_min_work,
    smlp_mix64,
    smlp_pf_ahead,
    smlp_prefetch_ahead,
    smlp_prefetch_row,
    smlp_row_pf_min,
    smlp_row_prefetch,
    smlp_rows4_ok,
    smlp_row_prefetch_on,
    smlp_store_fence,
    smlp_stream_min,
    smlp_stream_stores,
    smlp_row_sums,
    SMLP_BIAS_BLOCK,
    SMLP_BITS_WORDS,
    smlp_backward_work,
    smlp_threads_for,
    smlp_use_ahead,
)

cnp.import_array()
_LEVELS = ("scalar", "avx2", "avx512")
smlp_dispatch_init(-1)

cdef extern from *:
    """
    #ifndef SMLP_HAVE_OPENMP
    #define SMLP_HAVE_OPENMP 0
    #endif
    """
    int SMLP_HAVE_OPENMP

# weights handled per block by the fused update (gradient kept on the stack)
cdef enum:
    GBLOCK = 256
    GATHER_WORK = 16
# gather_columns reads whole rows, 16 samples at a time, from a training set of this
# many bytes up: FashionMNIST's batch of successive rows of a permutation took 28.5
# us against 47.6 us with blocks of 64 features, CIFAR10's 101 against 161; below
# (Madelon, 4 MB, in cache) blocks of features are faster, 2.5 against 2.8 us
# (python bench/bench_gather.py, results/bench_issue22/gather_stream_ab.jsonl)
cdef int64_t GATHER_STREAM_MIN = 16 << 20


# the serial build of this module (pyx/_spmm_serial.pyx), linked by
# sparse_mlp.kernels: every setter below sets it too, so that a call on one
# thread (which kernels.spmm_for hands to it) runs the same code path
_twin = None


def _link_twin(module):
    """Make the setters of this module set ``module``'s as well (its serial build)."""
    global _twin
    _twin = module


def _set_twin(setter, value):
    """The same setting in the serial build, when one is linked."""
    if _twin is not None:
        getattr(_twin, setter)(value)


def simd_level():
    """The row-kernel instruction set in use: 'scalar', 'avx2' or 'avx512'."""
    return _LEVELS[smlp_simd_level]


def cpu_simd_level():
    """The best instruction set this CPU supports."""
    return _LEVELS[smlp_cpu_level()]


def set_simd_level(level):
    """Force the row kernels to ``level`` ('scalar', 'avx2', 'avx512' or
    'best'); clamped to what the CPU supports.  Returns the level in use."""
    req = -1 if level == "best" else _LEVELS.index(level)
    _set_twin("set_simd_level", level)
    return _LEVELS[smlp_dispatch_init(2 if req < 0 else req)]


def _setting(value, what, hi=None):
    """A value for one of the C globals of rowkern.h set below (each changes
    speed only): an int >= 0, at most ``hi`` when given."""
    v = int(value)
    if v < 0 or (hi is not None and v > hi):
        raise ValueError(f"{what} must be " + (f"in 0..{hi}" if hi is not None else ">= 0"))
    return v


def prefetch_distance(distance=None):
    """The cross-row prefetch distance in weights (layers with short rows,
    see rowkern.h); with an argument, set it first (0 turns it off).  The
    environment variable SPARSE_MLP_PF_AHEAD sets it at import.  It changes
    speed only, never a result."""
    global smlp_pf_ahead
    if distance is not None:
        smlp_pf_ahead = _setting(distance, "prefetch distance", 256)  # no-cython-lint
        _set_twin("prefetch_distance", distance)
    return smlp_pf_ahead


def row_prefetch(min_bytes=None):
    """The block size (bytes) from which the parallel loops prefetch the
    rows they read in order a few rows ahead (rowkern.h, smlp_prefetch_row);
    0 = never.  Returns the current value; changes no result, only speed."""
    global smlp_row_pf_min
    if min_bytes is not None:
        smlp_row_pf_min = _setting(min_bytes, "row_prefetch min_bytes")  # no-cython-lint
        _set_twin("row_prefetch", min_bytes)
    return smlp_row_pf_min


def stream_stores(min_bytes=None):
    """The output block size (bytes) from which the row kernels write their
    rows with streaming stores (rowkern.h, smlp_stream_stores); 0 = never.
    Returns the current value; changes no result, only speed."""
    global smlp_stream_min
    if min_bytes is not None:
        smlp_stream_min = _setting(min_bytes, "stream_stores min_bytes")  # no-cython-lint
        _set_twin("stream_stores", min_bytes)
    return smlp_stream_min


def min_parallel_work(work=None):
    """Calls with less work than this (multiply-adds, nnz * B) run on one
    thread whatever ``n_threads`` says (see rowkern.h, "threads per call");
    with an argument, set it first (0: always use the threads given).  It
    changes speed only, never a result.  ``sparse_mlp.kernels`` sets it for
    every module from SPARSE_MLP_MIN_PARALLEL_WORK."""
    global smlp_min_work
    if work is not None:
        smlp_min_work = _setting(work, "min_parallel_work")  # no-cython-lint
        _set_twin("min_parallel_work", work)
    return smlp_min_work


def row_specialisation(on=None):
    """Whether this module's kernels use the AVX-512 row functions
    specialised for the batch width (B a multiple of 16 up to 128, chosen
    once per call, rowkern.h); with an argument, set it first.  Off: the
    generic row functions, per row.  The two give the same bits (the tests
    compare them); it changes speed only."""
    global smlp_row_spec
    if on is not None:
        smlp_row_spec = 1 if on else 0  # no-cython-lint
        _set_twin("row_specialisation", on)
    return bool(smlp_row_spec)


def dense_rows(on=None):
    """Whether the forward product without epilogue takes a layer whose rows
    are all full (an output layer of at most 16 neurons) four rows at a time
    on the AVX-512 path (rowkern.h, smlp_forward_dense_avx512); with an
    argument, set it first.  Off: row by row.  The same bits (the tests
    compare them); speed only."""
    global smlp_dense_on
    if on is not None:
        smlp_dense_on = 1 if on else 0  # no-cython-lint
        _set_twin("dense_rows", on)
    return bool(smlp_dense_on)


def _prefetch_from_environment():
    value = os.environ.get("SPARSE_MLP_PF_AHEAD", "").strip()
    if value:
        try:
            prefetch_distance(int(value))
        except ValueError:
            raise ValueError(f"SPARSE_MLP_PF_AHEAD={value!r}: the cross-row prefetch distance "
                             f"must be an integer in 0..256 (0 turns it off); unset it for "
                             f"the default {smlp_pf_ahead}") from None


_prefetch_from_environment()


# ------------------------------------------------------------------ call timeline
# what each kernel call's record says it was (rowkern.h, "call timeline")
TIMELINE_KINDS = ("forward", "backward_update", "backward_input", "weight_grad",
                  "weight_update", "apply_update", "gather_columns")
cdef enum:
    TL_FORWARD = 0
    TL_BACKWARD_UPDATE = 1
    TL_BACKWARD_INPUT = 2
    TL_WEIGHT_GRAD = 3
    TL_WEIGHT_UPDATE = 4
    TL_APPLY_UPDATE = 5
    TL_GATHER = 6


def timeline_start(int64_t capacity=100000, int threads=0):
    """Record the timeline of this module's kernel calls (diagnostics,
    rowkern.h "call timeline"): up to ``capacity`` calls, per-thread stamps
    for ``threads`` threads (0: OpenMP's maximum team, 1 without OpenMP).
    Any earlier record is dropped.  Changes no result; see
    :func:`timeline_take`.  ``bench/bench_timeline.py`` reads it."""
    if capacity < 1:
        raise ValueError("timeline_start: capacity must be >= 1")
    if threads < 0:
        raise ValueError("timeline_start: threads must be >= 0")
    if threads == 0:
        threads = smlp_max_threads()
    cdef object nbytes = capacity  # (a Python int: the product cannot wrap around)
    nbytes = nbytes * (threads * 3 * 8 + sizeof(smlp_tl_call_t))
    if nbytes > (1 << 40):
        raise ValueError(f"timeline_start: {capacity} calls of {threads} threads would take "
                         f"{nbytes / 2**30:.0f} GiB")
    if smlp_tl_start(capacity, threads) != 0:
        raise MemoryError(f"timeline_start: no memory for {capacity} calls "
                          f"({nbytes / 2**20:.0f} MiB)")


def timeline_take():
    """Stop recording and return the record (None if none was started): a
    dict of arrays, one entry per call in call order -- ``kind`` (index
    into TIMELINE_KINDS), ``threads``, ``n_in``, ``n_out``, ``t_call`` and
    ``t_done`` (ns, CLOCK_MONOTONIC, on the calling thread), ``stamps``
    (calls x threads x 3: entered, rows begun, rows done; 0 where a thread
    did not stamp) -- and ``lost``, the calls past the capacity."""
    import numpy as np
    cdef smlp_tl_call_t* calls = smlp_tl_calls
    cdef int64_t* stamps = smlp_tl_stamps
    cdef int64_t n = smlp_tl_n
    cdef int nt = smlp_tl_nt
    cdef int64_t i, k
    if calls == NULL:
        return None
    smlp_tl_stop()
    names = ("kind", "threads", "n_in", "n_out", "t_call", "t_done")
    out = {name: np.zeros(n, np.int64) for name in names}
    st = np.zeros((n, nt, 3), np.int64)
    cdef int64_t[::1] kind = out["kind"], thr = out["threads"], n_in = out["n_in"]
    cdef int64_t[::1] n_out = out["n_out"], t_call = out["t_call"], t_done = out["t_done"]
    cdef int64_t[::1] flat = st.reshape(-1)
    for i in range(n):
        kind[i] = calls[i].kind
        thr[i] = calls[i].threads
        n_in[i] = calls[i].n_in
        n_out[i] = calls[i].n_out
        t_call[i] = calls[i].t_call
        t_done[i] = calls[i].t_done
    for k in range(n * nt * 3):
        flat[k] = stamps[k]
    free(calls)
    free(stamps)
    out["stamps"] = st
    out["lost"] = smlp_tl_lost
    return out


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(SMLP_HAVE_OPENMP)


cdef uint16_t* _bits(const arr_t* bits, int64_t n_rows, int B, str kernel) except? NULL:
    """The epilogue bits' first word (NULL: none given, or no rows), checked
    to be (n_rows, epilogue_bits_words(B))."""
    if bits.p == NULL:
        return NULL
    if bits.n0 != n_rows or bits.n1 != SMLP_BITS_WORDS(B):
        raise ValueError(f"{kernel}: bits must be ({n_rows}, epilogue_bits_words({B}))")
    return <uint16_t*>bits.p if n_rows > 0 else NULL


cdef inline int _chunk(int64_t n_rows, int n_threads) noexcept nogil:
    # dynamic schedule: ~16 chunks per thread balances ragged rows
    cdef int64_t c = n_rows // (16 * n_threads)
    if c < 1:
        return 1
    if c > 256:
        return 256
    return <int>c


def forward(indptr, indices, data, bias, X, Z, A=None, int act=0, float slope=0.0,
            srelu=None, double drop_rate=0.0, uint64_t drop_key=0, int64_t b_offset=0,
            int n_threads=1, bits=None, bint keep_z=True):
    """Z[j, :] = bias[j] + sum_k data[k] * X[indices[k], :] over row j, and,
    when ``A`` is given, A = dropout(f(Z)) in the same pass (A may be Z).

    indptr int64, indices int32, data and bias float32 (arrayargs.pxd);
    X: (n_in, B), Z and A: (n_out, B), all float32 C-contiguous.
    ``bits`` (n_out, epilogue_bits_words(B)) uint16: where the fused AVX-512
    epilogue keeps each element's dropout and sign masks for the backward
    pass of the same step (:func:`backward_update`, ``bits=``).  Returns True
    when it wrote them (an AVX-512 build and run, a fusable activation),
    False otherwise: then pass no bits to the backward pass.

    ``keep_z=False`` (with ``A`` and ``bits``): where the bits are written
    (the call returns True), Z is not: the backward pass given those bits
    reads them, never Z, and only writes Z's buffer (its gradient to the
    inputs, ``backward_update``'s G).  One store of n_out x B floats less per
    call; Z's buffer is then left as it was.  Where the call returns False,
    Z is written as always.
    """
    cdef arr_t a_ptr, a_idx, a_w, a_b, a_x, a_z, a_a, a_s, a_bits
    take(indptr, I64, 1, False, False, &a_ptr, "forward", "indptr")
    take(indices, I32, 1, False, False, &a_idx, "forward", "indices")
    take(data, F32, 1, False, False, &a_w, "forward", "data")
    take(bias, F32, 1, False, False, &a_b, "forward", "bias")
    take(X, F32, 2, False, False, &a_x, "forward", "X")
    take(Z, F32, 2, True, False, &a_z, "forward", "Z")
    take(A, F32, 2, True, True, &a_a, "forward", "A")
    take(srelu, F32, 2, False, True, &a_s, "forward", "srelu")
    take(bits, U16, 2, True, True, &a_bits, "forward", "bits")
    cdef const int64_t* ptr = <const int64_t*>a_ptr.p
    cdef int64_t n_out = a_ptr.n0 - 1
    cdef int B = <int>a_x.n1
    cdef smlp_spmm_fn spmm_row = smlp_spmm_row_for(B)  # (once per call)
    cdef int64_t ldx = a_x.n1
    cdef int64_t nnz = a_idx.n0
    cdef int64_t j, k0
    cdef bint has_a = a_a.p != NULL
    cdef bint fused
    cdef bint ahead
    cdef smlp_act_t p
    cdef smlp_epi_t e
    cdef const float* xp = <const float*>a_x.p
    cdef const int32_t* ip = <const int32_t*>a_idx.p
    cdef const float* wp = <const float*>a_w.p
    cdef const float* bsp = <const float*>a_b.p
    cdef float* zp = <float*>a_z.p
    cdef float* ap = <float*>a_a.p
    cdef int chunk
    cdef int64_t ldb = SMLP_BITS_WORDS(B)
    if a_z.n0 != n_out or a_z.n1 != B or a_b.n0 != n_out:
        raise ValueError("forward: Z must be (n_out, B) and bias (n_out,)")
    cdef uint16_t* bp = _bits(&a_bits, n_out, B, "forward")
    if has_a and (a_a.n0 != n_out or a_a.n1 != B):
        raise ValueError("forward: A must have the shape of Z")
    smlp_fill_act(&p, act, slope, <const float*>a_s.p, drop_rate, drop_key, b_offset)
    p.skip_z = not keep_z  # (applies only where the epilogue writes bits: smlp_epi_make)
    if n_out == 0 or B == 0:
        return False
    fused = has_a and smlp_act_fusable(&p)
    if not (fused and smlp_simd_level == 2):
        bp = NULL  # (only the AVX-512 fused epilogue writes them)
    ahead = smlp_use_ahead(nnz, n_out, a_x.n0 * ldx * 4)
    smlp_row_prefetch(a_x.n0 * ldx * 4)
    # rows stored once, never read back here: streamed when huge (smlp_stream_stores)
    smlp_stream_stores(n_out * B * 4 if fused or not has_a else 0)
    n_threads = smlp_threads_for(nnz * <int64_t>B, n_threads)
    cdef int64_t tl = smlp_tl_begin(TL_FORWARD, a_x.n0, n_out, n_threads)
    cdef int64_t blk
    if not has_a and smlp_dense_ok(a_x.n0, n_out, nnz, B):
        # an output layer whose rows are all full: four rows at a time, so that each
        # input row is read once per four (smlp_forward_dense_avx512; the same bits)
        with nogil:
            for blk in prange(smlp_dense_blocks(n_out, B), schedule="static",
                              num_threads=n_threads):
                smlp_forward_dense_avx512(wp, a_x.n0, n_out, xp, ldx, B, bsp, zp, blk)
        smlp_tl_end(tl)
        return False
    # narrow batches of small blocks: four rows at a time (smlp_forward_rows4),
    # the rows past a multiple of four one by one below
    cdef int64_t n_quad = n_out // 4 if (not ahead and smlp_rows4_ok(B)) else 0
    cdef int64_t q
    if n_quad:
        chunk = _chunk(n_quad, n_threads)
        with nogil, parallel(num_threads=n_threads):
            for q in prange(n_quad, schedule="dynamic", chunksize=chunk):
                smlp_forward_rows4(&p, fused, ptr, 4 * q, ip, wp, xp, ldx, B, bsp,
                                   zp, ap if fused else NULL, bp, ldb)
                if has_a and not fused:
                    for j in range(4 * q, 4 * q + 4):
                        smlp_forward_epilogue(&p, j, zp + j * B, ap + j * B, B)
    if 4 * n_quad == n_out:
        smlp_tl_end(tl)
        return bp != NULL
    chunk = _chunk(n_out - 4 * n_quad, n_threads)
    # each thread its own block of rows first (smlp_owned_next): the rows the
    # backward pass of the next layer will read as its input rows, in that thread
    cdef smlp_owned_t* own = smlp_owned_new(4 * n_quad, n_out, n_threads)
    cdef int tid, cur
    cdef int64_t r0, r1
    if own == NULL:
        raise MemoryError("forward: could not allocate the row counters")
    # (set here too: Cython copies them into each thread, firstprivate)
    tid = cur = 0
    r0 = r1 = k0 = 0
    with nogil, parallel(num_threads=n_threads):
        tid = smlp_thread_id()
        smlp_tl_thread(tl, tid, SMLP_TL_ENTER)
        smlp_tl_thread(tl, tid, SMLP_TL_ROWS)
        cur = 0
        r0 = 0
        r1 = 0
        while smlp_owned_next(own, 4 * n_quad, n_out, n_threads, tid, chunk, &cur, &r0, &r1):
            for j in range(r0, r1):
                k0 = ptr[j]
                if ahead:
                    smlp_prefetch_ahead(ip, k0, ptr[j + 1], nnz, xp, ldx, B * 4)
                if fused:  # activation and dropout applied in registers
                    e = smlp_epi_make(&p, SMLP_EPI_FWD, j, NULL, ap + j * B,
                                      bp + j * ldb if bp != NULL else NULL)
                    spmm_row(ip + k0, wp + k0, NULL, ptr[j + 1] - k0,
                             xp, ldx, B, bsp[j], zp + j * B, &e)
                else:
                    spmm_row(ip + k0, wp + k0, NULL, ptr[j + 1] - k0,
                             xp, ldx, B, bsp[j], zp + j * B, NULL)
                    if has_a:
                        smlp_forward_epilogue(&p, j, zp + j * B, ap + j * B, B)
        smlp_tl_thread(tl, tid, SMLP_TL_END)
        smlp_store_fence()
    smlp_tl_end(tl)
    free(own)
    return bp != NULL


def owned_rows_trace(int64_t lo, int64_t hi, int nt, int64_t chunk, turns):
    """The row ranges that the threads of the row loops of ``forward`` and
    ``backward_update`` take (smlp_owned_next), with the threads taking turns
    as ``turns`` says (thread ids, one claim each, cycled until every thread
    has found nothing left): a list of (thread, r0, r1).  For the tests."""
    cdef smlp_owned_t* own = smlp_owned_new(lo, hi, nt)
    cdef int* cur = <int*>calloc(nt if nt > 0 else 1, sizeof(int))
    cdef int64_t r0 = 0, r1 = 0
    cdef int tid
    if own == NULL or cur == NULL:
        free(own)
        free(cur)
        raise MemoryError("owned_rows_trace: out of memory")
    out = []
    done = set()
    try:
        order = [int(t) for t in turns]
        if not order or any(t < 0 or t >= nt for t in order):
            raise ValueError("owned_rows_trace: turns must be thread ids in [0, nt)")
        while len(done) < len(set(order)):
            for t in order:
                if t in done:
                    continue
                tid = t
                if smlp_owned_next(own, lo, hi, nt, tid, chunk, &cur[tid], &r0, &r1):
                    out.append((t, r0, r1))
                else:
                    done.add(t)
    finally:
        free(own)
        free(cur)
    return out


def epilogue_bits_words(int B):
    """uint16 words per row of the epilogue bits of a batch of B (forward's
    ``bits``)."""
    return SMLP_BITS_WORDS(B)


def backward_input(t_indptr, t_rows, t_perm, data, D, G, Z=None, int act=0,
                   float slope=0.0, srelu=None, srelu_grad=None, double drop_rate=0.0,
                   uint64_t drop_key=0, int64_t b_offset=0, int n_threads=1, bits=None):
    """Gradient to the inputs through the transposed index:
    G[i, :] = sum_k data[t_perm[k]] * D[t_rows[k], :] over input row i;
    when ``Z`` (the inputs' pre-activations) is given, G is then multiplied
    by the dropout mask / (1 - rate) and f'(Z) of the previous layer.
    ``G`` may be the same array as ``Z`` (computed through a per-thread row).

    For SReLU, ``srelu_grad[i, :]`` receives the (unscaled, summed over the
    batch) gradient of the 4 parameters of input neuron i.
    """
    cdef arr_t a_ptr, a_rows, a_perm, a_w, a_d, a_g, a_z, a_s, a_sg, a_bits
    take(t_indptr, I64, 1, False, False, &a_ptr, "backward_input", "t_indptr")
    take(t_rows, I32, 1, False, False, &a_rows, "backward_input", "t_rows")
    take(t_perm, I32, 1, False, False, &a_perm, "backward_input", "t_perm")
    take(data, F32, 1, False, False, &a_w, "backward_input", "data")
    take(D, F32, 2, False, False, &a_d, "backward_input", "D")
    take(G, F32, 2, True, False, &a_g, "backward_input", "G")
    take(Z, F32, 2, False, True, &a_z, "backward_input", "Z")
    take(srelu, F32, 2, False, True, &a_s, "backward_input", "srelu")
    take(srelu_grad, F32, 2, True, True, &a_sg, "backward_input", "srelu_grad")
    take(bits, U16, 2, True, True, &a_bits, "backward_input", "bits")
    cdef const int64_t* tp = <const int64_t*>a_ptr.p
    cdef int64_t n_in = a_ptr.n0 - 1
    cdef int B = <int>a_d.n1
    cdef smlp_spmm_fn spmm_row = smlp_spmm_row_for(B)  # (once per call)
    cdef int64_t ldd = a_d.n1
    cdef int64_t nnz = a_rows.n0
    cdef int64_t i, k0
    cdef int64_t n
    cdef bint has_z = a_z.p != NULL
    cdef bint has_sg = a_sg.p != NULL
    cdef bint fused
    cdef bint ahead
    cdef smlp_act_t p
    cdef smlp_epi_t e
    cdef const float* dp = <const float*>a_d.p
    cdef const int32_t* ip = <const int32_t*>a_rows.p
    cdef const int32_t* pp = <const int32_t*>a_perm.p
    cdef const float* wp = <const float*>a_w.p
    cdef const float* zp = <const float*>a_z.p
    cdef float* gp = <float*>a_g.p
    cdef float* row
    cdef float* sg
    cdef int failed = 0
    cdef int* failp = &failed     # written through a pointer: shared, not thread-private
    cdef int chunk
    if a_g.n0 != n_in or a_g.n1 != B:
        raise ValueError("backward_input: G must be (n_in, B)")
    if has_z and (a_z.n0 != n_in or a_z.n1 != B):
        raise ValueError("backward_input: Z must be (n_in, B)")
    if has_sg and (a_sg.n0 != n_in or a_sg.n1 != 4):
        raise ValueError("backward_input: srelu_grad must be (n_in, 4)")
    cdef int64_t ldb = SMLP_BITS_WORDS(B)
    cdef uint16_t* bp = _bits(&a_bits, n_in, B, "backward_input")
    smlp_fill_act(&p, act, slope, <const float*>a_s.p, drop_rate, drop_key, b_offset)
    if n_in == 0 or B == 0:
        return
    fused = has_z and smlp_act_fusable(&p)
    ahead = smlp_use_ahead(nnz, n_in, a_d.n0 * ldd * 4)
    smlp_row_prefetch(a_d.n0 * ldd * 4)
    smlp_stream_stores(n_in * B * 4 if fused or not has_z else 0)  # (see forward)
    n_threads = smlp_threads_for(smlp_backward_work(nnz, n_in, B), n_threads)
    chunk = _chunk(n_in, n_threads)
    row = NULL
    cdef int64_t tl = smlp_tl_begin(TL_BACKWARD_INPUT, n_in, a_d.n0, n_threads)
    with nogil, parallel(num_threads=n_threads):
        row = <float*>malloc(B * sizeof(float))
        if row == NULL:
            failp[0] = 1
        else:
            for i in prange(n_in, schedule="dynamic", chunksize=chunk):
                k0 = tp[i]
                n = tp[i + 1] - k0
                if ahead:
                    smlp_prefetch_ahead(ip, k0, k0 + n, nnz, dp, ldd, B * 4)
                if not has_z:
                    spmm_row(ip + k0, wp, pp + k0, n, dp, ldd, B, 0.0, gp + i * B, NULL)
                elif fused:  # f'(Z) and the dropout mask applied in registers
                    e = smlp_epi_make(&p, SMLP_EPI_BWD, i, zp + i * B, gp + i * B,
                                      bp + i * ldb if bp != NULL else NULL)
                    spmm_row(ip + k0, wp, pp + k0, n, dp, ldd, B, 0.0, row, &e)
                else:
                    spmm_row(ip + k0, wp, pp + k0, n, dp, ldd, B, 0.0, row, NULL)
                    sg = NULL
                    if has_sg:
                        sg = <float*>a_sg.p + 4 * i
                        sg[0] = 0.0
                        sg[1] = 0.0
                        sg[2] = 0.0
                        sg[3] = 0.0
                    smlp_backward_epilogue(&p, i, zp + i * B, row, B, sg)
                    memcpy(gp + i * B, row, B * sizeof(float))
            free(row)
        smlp_store_fence()
    smlp_tl_end(tl)
    if failed:
        raise MemoryError("backward_input: could not allocate a row buffer")


def backward_update(t_indptr, t_rows, t_perm, D, X, G, data, velocity, bias,
                    bias_velocity, float scale, float lr, float mu, float decay,
                    float bias_decay, bint nesterov=False, int64_t max_row=-1, Z=None,
                    int act=0, float slope=0.0, srelu=None, srelu_grad=None,
                    double drop_rate=0.0, uint64_t drop_key=0, int64_t b_offset=0,
                    g_out=None, bias_g_out=None, bint accumulate=False, int n_threads=1,
                    bits=None, bint transposed=False, bint grad_t=False):
    """The whole backward step of a layer in one pass over the transposed index.

    For every INPUT row i (prange):
      G[i, :] = sum_k data[t_perm[k]] * D[t_rows[k], :]     (then * mask * f'(Z[i, :])
                                                             when Z is given, as backward_input)
      g_k     = scale * X[i, :] . D[t_rows[k], :]            (X = the layer's input A)
    and then, unless ``g_out`` is given, the momentum update of each of the
    row's weights: v = mu*v - lr*g; w = w + v - decay*w.  Each weight belongs
    to exactly one input row, so it is updated right after its old value was
    used, by one thread.  Biases: g_b = scale * sum_b D[j, b], same rule.
    With ``g_out`` / ``bias_g_out`` the gradients are written there instead
    (data and velocity untouched), or added to them with ``accumulate``
    (micro-batches: pass scale = 1 / full batch).  ``max_row``: the largest
    number of weights of one input row (the per-thread gradient buffer's
    length; the layer keeps it, ``SparseLayer.max_in_degree``); -1 counts it
    here (n_in steps).  A row longer than it is never written past the
    buffer: the call raises ValueError.  G may be Z, and, when Z is given, X
    (the delta then replaces the layer's input, row by row: each input row's
    products read only that row of X, and all of it before its row of G is
    stored).  Any other overlap of G with X, Z or D is refused.

    ``transposed`` (with ``g_out`` only): ``data`` holds the weights and
    ``g_out`` receives the gradients in the order of the transposed index
    (position k, not t_perm[k]), so both are read and written in sequence
    instead of at random; the caller gathers ``data[t_perm]`` once and
    scatters the gradient back once (micro-batches: once per batch, not once
    per block).  The same products in the same order: the same numbers.
    ``grad_t`` (with ``g_out`` only): ``g_out`` in that order, ``data`` in the
    layer's own (read through t_perm).  Each thread then writes a contiguous
    range of ``g_out``; written through t_perm, the weights of one output row
    come from input rows that different threads handle at the same time, and
    two threads writing the same cache lines ran no faster than one
    (``apply_update``'s ``index`` takes the gradient back, in the weights'
    order).
    """
    cdef str K = "backward_update"
    cdef arr_t a_ptr, a_rows, a_perm, a_d, a_x, a_g, a_w, a_v, a_b, a_bv, a_z, a_s, a_sg
    cdef arr_t a_go, a_bgo, a_bits
    take(t_indptr, I64, 1, False, False, &a_ptr, K, "t_indptr")
    take(t_rows, I32, 1, False, False, &a_rows, K, "t_rows")
    take(t_perm, I32, 1, False, False, &a_perm, K, "t_perm")
    take(D, F32, 2, False, False, &a_d, K, "D")
    take(X, F32, 2, False, False, &a_x, K, "X")
    take(G, F32, 2, True, False, &a_g, K, "G")
    # (updated in place unless g_out is given)
    take(data, F32, 1, g_out is None, False, &a_w, K, "data")
    take(velocity, F32, 1, g_out is None, False, &a_v, K, "velocity")
    take(bias, F32, 1, g_out is None, False, &a_b, K, "bias")
    take(bias_velocity, F32, 1, g_out is None, False, &a_bv, K, "bias_velocity")
    take(Z, F32, 2, False, True, &a_z, K, "Z")
    take(srelu, F32, 2, False, True, &a_s, K, "srelu")
    take(srelu_grad, F32, 2, True, True, &a_sg, K, "srelu_grad")
    take(g_out, F32, 1, True, True, &a_go, K, "g_out")
    take(bias_g_out, F32, 1, True, True, &a_bgo, K, "bias_g_out")
    take(bits, U16, 2, True, True, &a_bits, K, "bits")
    cdef const int64_t* tp = <const int64_t*>a_ptr.p
    cdef int64_t n_in = a_ptr.n0 - 1
    cdef int64_t n_out = a_d.n0
    cdef int B = <int>a_d.n1
    cdef smlp_bwd_fn bwd_row = smlp_bwd_row_for(B)  # (once per call)
    cdef int64_t ldd = a_d.n1
    cdef int64_t nnz = a_rows.n0
    cdef int64_t i, k0, q
    cdef bint has_z = a_z.p != NULL
    cdef bint has_sg = a_sg.p != NULL
    cdef bint grad_only = a_go.p != NULL
    cdef bint fused
    cdef bint ahead
    cdef smlp_act_t p
    cdef const float* dp = <const float*>a_d.p
    cdef const int32_t* ip = <const int32_t*>a_rows.p
    cdef const int32_t* pp = <const int32_t*>a_perm.p
    cdef float* wp = <float*>a_w.p
    cdef float* vp = <float*>a_v.p
    cdef float* bw = <float*>a_b.p
    cdef float* bv = <float*>a_bv.p
    cdef const float* xp = <const float*>a_x.p
    cdef const float* zp = <const float*>a_z.p
    cdef float* gp = <float*>a_g.p
    cdef float* sgp = <float*>a_sg.p
    cdef bint x_ahead
    cdef float* gop = <float*>a_go.p
    cdef float* bgo = <float*>a_bgo.p
    cdef float* row
    cdef float* gbuf
    cdef float* bsum
    cdef int64_t jb
    cdef int64_t n_bb = (n_out + SMLP_BIAS_BLOCK - 1) // SMLP_BIAS_BLOCK
    cdef int failed = 0
    cdef int* failp = &failed
    cdef int chunk
    if a_x.n0 != n_in or a_x.n1 != B or a_g.n0 != n_in or a_g.n1 != B:
        raise ValueError("backward_update: X and G must be (n_in, B)")
    if has_z and (a_z.n0 != n_in or a_z.n1 != B):
        raise ValueError("backward_update: Z must be (n_in, B)")
    if a_b.n0 != n_out or a_bv.n0 != n_out:
        raise ValueError("backward_update: bias arrays must be (n_out,)")
    if a_w.n0 != nnz or a_v.n0 != a_w.n0:
        raise ValueError("backward_update: data and velocity must be (nnz,)")
    if grad_only and (a_go.n0 != a_w.n0 or bgo == NULL or a_bgo.n0 != n_out):
        raise ValueError("backward_update: g_out must be (nnz,) and bias_g_out (n_out,)")
    if has_sg and (a_sg.n0 != n_in or a_sg.n1 != 4):
        raise ValueError("backward_update: srelu_grad must be (n_in, 4)")
    _check_g_overlaps(&a_g, &a_x, &a_z, &a_d, has_z)
    if (transposed or grad_t) and not grad_only:
        raise ValueError("backward_update: transposed and grad_t need g_out (they never "
                         "update in place)")
    cdef bint write_t = transposed or grad_t
    cdef int64_t ldb = SMLP_BITS_WORDS(B)
    cdef uint16_t* bp = _bits(&a_bits, n_in, B, "backward_update")
    smlp_fill_act(&p, act, slope, <const float*>a_s.p, drop_rate, drop_key, b_offset)
    if B == 0:
        return
    if max_row < 0:  # not given: count it
        max_row = 0
        for i in range(n_in):
            if tp[i + 1] - tp[i] > max_row:
                max_row = tp[i + 1] - tp[i]
    if max_row < 1:
        max_row = 1
    fused = has_z and smlp_act_fusable(&p)
    ahead = smlp_use_ahead(nnz, n_in, n_out * ldd * 4)
    smlp_row_prefetch(n_out * ldd * 4)
    smlp_stream_stores(n_in * B * 4 if fused or not has_z else 0)  # (see forward)
    x_ahead = smlp_row_prefetch_on(n_in * B * 4)  # (see smlp_prefetch_row)
    n_threads = smlp_threads_for(smlp_backward_work(nnz, n_in, B), n_threads)
    chunk = _chunk(n_in, n_threads)
    row = NULL
    gbuf = NULL
    bsum = <float*>malloc((n_out if n_out > 0 else 1) * sizeof(float))
    if bsum == NULL:
        raise MemoryError("backward_update: could not allocate the bias sums")
    # narrow batches of small blocks: four input rows at a time
    # (smlp_backward_rows4), the rows past a multiple of four one by one
    cdef int64_t n_quad = n_in // 4 if (not ahead and not x_ahead and smlp_rows4_ok(B)) else 0
    cdef int chunk4 = _chunk(n_quad, n_threads)
    cdef int r
    cdef int tid, cur
    cdef int64_t r0, r1, io, ko, no
    cdef float* wro
    cdef const int32_t* pro
    cdef smlp_epi_t eo
    cdef smlp_owned_t* own = smlp_owned_new(4 * n_quad, n_in, n_threads)
    if own == NULL:
        free(bsum)
        raise MemoryError("backward_update: could not allocate the row counters")
    # (set here too: Cython copies them into each thread, firstprivate)
    tid = cur = 0
    r0 = r1 = io = ko = no = 0
    wro = NULL
    pro = NULL
    cdef int64_t tl = smlp_tl_begin(TL_BACKWARD_UPDATE, n_in, n_out, n_threads)
    with nogil, parallel(num_threads=n_threads):
        tid = smlp_thread_id()
        smlp_tl_thread(tl, tid, SMLP_TL_ENTER)
        # four rows' worth: the four-row loop uses them all, the one-row loop the first
        row = <float*>malloc(4 * B * sizeof(float))
        gbuf = <float*>malloc(4 * max_row * sizeof(float))
        if row == NULL or gbuf == NULL:
            failp[0] = 1
        else:
            # biases: blocks of output rows, each row's sum in plain order, used by
            # the thread that summed it (_bias_block)
            for jb in prange(n_bb, schedule="static"):
                smlp_row_sums(dp, ldd, jb, n_out, B, bsum)
                _bias_block(jb, n_out, bsum, scale, bgo if grad_only else NULL, accumulate,
                            bw, bv, lr, mu, bias_decay, nesterov)
            # weights and the gradient to the inputs: four input rows each
            for q in prange(n_quad, schedule="dynamic", chunksize=chunk4):
                if _row_too_long(tp, 4 * q, 4, max_row, failp):
                    continue
                smlp_backward_rows4(&p, fused, tp, 4 * q, ip,
                                    <const int32_t*>NULL if transposed else pp, wp, dp, ldd,
                                    xp, B, scale,
                                    zp, gp,
                                    row if has_z else gp + 4 * q * B, gbuf, max_row, bp, ldb)
                for r in range(4):
                    i = 4 * q + r
                    k0 = tp[i]
                    _bwd_finish(i, k0, tp[i + 1] - k0, gbuf + r * max_row, row + r * B,
                                write_t, grad_only, accumulate, gop, pp, wp, vp, lr, mu,
                                decay, nesterov, has_z and not fused, &p,
                                zp + i * B if has_z else NULL, gp + i * B,
                                sgp + 4 * i if has_sg else NULL, B)
            # ... and one input row each, each thread its own block first (the rows
            # it wrote in the forward pass, smlp_owned_next)
            smlp_tl_thread(tl, tid, SMLP_TL_ROWS)
            cur = 0
            r0 = 0
            r1 = 0
            while smlp_owned_next(own, 4 * n_quad, n_in, n_threads, tid, chunk, &cur, &r0,
                                  &r1):
                for io in range(r0, r1):
                    if _row_too_long(tp, io, 1, max_row, failp):
                        continue
                    ko = tp[io]
                    no = tp[io + 1] - ko
                    if ahead:  # the rows of D (see smlp_prefetch_ahead)
                        smlp_prefetch_ahead(ip, ko, ko + no, nnz, dp, ldd, B * 4)
                    if x_ahead:
                        smlp_prefetch_row(xp, ldd, io, n_in, B * 4)
                    # transposed: the row's weights are wp[ko .. ko + no), read in order
                    if transposed:
                        wro = wp + ko
                        pro = NULL
                    else:
                        wro = wp
                        pro = pp + ko
                    if not has_z:
                        bwd_row(ip + ko, pro, no, wro, dp, ldd, xp + io * B, B, scale,
                                gp + io * B, gbuf, NULL)
                    elif fused:  # f'(Z) and the dropout mask applied in registers
                        eo = smlp_epi_make(&p, SMLP_EPI_BWD, io, zp + io * B, gp + io * B,
                                           bp + io * ldb if bp != NULL else NULL)
                        bwd_row(ip + ko, pro, no, wro, dp, ldd, xp + io * B, B, scale,
                                row, gbuf, &eo)
                    else:
                        bwd_row(ip + ko, pro, no, wro, dp, ldd, xp + io * B, B, scale,
                                row, gbuf, NULL)
                    _bwd_finish(io, ko, no, gbuf, row, write_t, grad_only, accumulate, gop, pp,
                                wp, vp, lr, mu, decay, nesterov, has_z and not fused, &p,
                                zp + io * B if has_z else NULL, gp + io * B,
                                sgp + 4 * io if has_sg else NULL, B)
        smlp_tl_thread(tl, tid, SMLP_TL_END)
        free(row)
        free(gbuf)
        smlp_store_fence()
    smlp_tl_end(tl)
    free(bsum)
    free(own)
    if failed == 2:
        raise ValueError(f"backward_update: an input row holds more than max_row = {max_row} "
                         f"weights (pass the layer's longest input row, or -1 to count it)")
    if failed:
        raise MemoryError("backward_update: could not allocate row buffers")


cdef inline bint _overlap(const arr_t* a, const arr_t* b) noexcept:
    """Whether the bytes of two taken float32 arrays overlap (None never does)."""
    if a.p == NULL or b.p == NULL:
        return False
    return a.p < b.p + b.n0 * b.n1 * 4 and b.p < a.p + a.n0 * a.n1 * 4


cdef int _check_g_overlaps(const arr_t* g, const arr_t* x, const arr_t* z, const arr_t* d,
                           bint has_z) except -1:
    """backward_update's G against its inputs: G may be Z, or X when Z is
    given (the same array: the rows of both line up); nothing else may share
    G's memory, since the row loops read X, Z and D while they store G."""
    if _overlap(g, d):
        raise ValueError("backward_update: G overlaps D (the delta it reads for every row)")
    if _overlap(g, x) and not (g.p == x.p and has_z):
        raise ValueError("backward_update: G may be X itself, and only when Z is given; "
                         "it overlaps X otherwise")
    if _overlap(g, z) and g.p != z.p:
        raise ValueError("backward_update: G overlaps Z without being Z")
    return 0


cdef inline bint _row_too_long(const int64_t* tp, int64_t i0, int n_rows, int64_t max_row,
                               int* failp) noexcept nogil:
    """backward_update: whether one of the input rows i0 .. i0 + n_rows - 1
    holds more weights than the gradient buffer takes (then failp[0] = 2 and
    the rows are skipped, never written past the buffer)."""
    cdef int r
    for r in range(n_rows):
        if tp[i0 + r + 1] - tp[i0 + r] > max_row:
            failp[0] = 2
            return True
    return False


cdef inline void _bwd_finish(int64_t i, int64_t k0, int64_t n, const float* gbuf, float* row,
                             bint transposed, bint grad_only, bint accumulate, float* gop,
                             const int32_t* pp, float* wp, float* vp, float lr, float mu,
                             float decay, bint nesterov, bint unfused, const smlp_act_t* p,
                             const float* z, float* g_row, float* sg, int B) noexcept nogil:
    """backward_update, input row i after its row kernel: the row's weight
    gradients ``gbuf`` into the weights (momentum update), or into ``gop``
    (in place, or in transposed order); for an unfused activation, its
    derivative on the row's gradient to the inputs (``row``) into ``g_row``
    (and SReLU's parameter gradients into ``sg``)."""
    cdef int64_t q, kk
    if transposed:
        if accumulate:
            for q in range(n):
                gop[k0 + q] = gop[k0 + q] + gbuf[q]
        else:
            memcpy(gop + k0, gbuf, n * sizeof(float))
    elif grad_only:
        if accumulate:
            for q in range(n):
                gop[pp[k0 + q]] = gop[pp[k0 + q]] + gbuf[q]
        else:
            for q in range(n):
                gop[pp[k0 + q]] = gbuf[q]
    else:
        for q in range(n):
            kk = pp[k0 + q]
            _update(wp + kk, vp + kk, gbuf[q], lr, mu, decay, nesterov)
    if unfused:
        if sg != NULL:
            sg[0] = 0.0
            sg[1] = 0.0
            sg[2] = 0.0
            sg[3] = 0.0
        smlp_backward_epilogue(p, i, z, row, B, sg)
        memcpy(g_row, row, B * sizeof(float))


def weight_grad(indptr, indices, X, D, g, bias_g, float scale, bint accumulate=False,
                int n_threads=1):
    """Gradient at existing weights only (no update):
    g[k] = scale * sum_b X[indices[k], b] * D[j, b] for k in row j, and
    bias_g[j] = scale * sum_b D[j, b].  scale is 1/B for a batch mean.
    With ``accumulate`` the gradients are added to g and bias_g (gradient
    accumulation over micro-batches), through a per-thread block buffer.
    """
    cdef arr_t a_ptr, a_idx, a_x, a_d, a_g, a_bg
    take(indptr, I64, 1, False, False, &a_ptr, "weight_grad", "indptr")
    take(indices, I32, 1, False, False, &a_idx, "weight_grad", "indices")
    take(X, F32, 2, False, False, &a_x, "weight_grad", "X")
    take(D, F32, 2, False, False, &a_d, "weight_grad", "D")
    take(g, F32, 1, True, False, &a_g, "weight_grad", "g")
    take(bias_g, F32, 1, True, False, &a_bg, "weight_grad", "bias_g")
    cdef const int64_t* ptr = <const int64_t*>a_ptr.p
    cdef int64_t n_out = a_ptr.n0 - 1
    cdef int B = <int>a_x.n1
    cdef smlp_sddmm_fn sddmm_row = smlp_sddmm_row_for(B)  # (once per call)
    cdef int64_t ldx = a_x.n1
    cdef int64_t nnz = a_idx.n0
    cdef int64_t j, k0, n, k, kb, nb
    cdef bint d_ahead
    cdef const float* xp = <const float*>a_x.p
    cdef const int32_t* ip = <const int32_t*>a_idx.p
    cdef float* gp = <float*>a_g.p
    cdef float* bgp = <float*>a_bg.p
    cdef float* gbuf
    cdef float* bsum
    cdef const float* dp = <const float*>a_d.p
    cdef int64_t jb
    cdef int64_t n_bb = (n_out + SMLP_BIAS_BLOCK - 1) // SMLP_BIAS_BLOCK
    cdef bint ahead
    cdef int failed = 0
    cdef int* failp = &failed
    cdef int chunk
    if a_d.n0 != n_out or a_d.n1 != B:
        raise ValueError("weight_grad: D must be (n_out, B)")
    if a_g.n0 != nnz or a_bg.n0 != n_out:
        raise ValueError("weight_grad: g must be (nnz,) and bias_g (n_out,)")
    if n_out == 0:
        return
    gbuf = NULL
    ahead = B > 0 and smlp_use_ahead(nnz, n_out, a_x.n0 * ldx * 4)
    smlp_row_prefetch(a_x.n0 * ldx * 4)
    n_threads = smlp_threads_for(nnz * <int64_t>B, n_threads)
    chunk = _chunk(n_out, n_threads)
    d_ahead = smlp_row_prefetch_on(n_out * B * 4)
    bsum = <float*>malloc(n_out * sizeof(float))
    if bsum == NULL:
        raise MemoryError("weight_grad: could not allocate the bias sums")
    # each thread its own block of rows first (smlp_owned_next): the rows of D
    # (the delta of this layer's outputs) that the backward pass of the layer
    # above wrote in that thread, over the same blocks
    cdef smlp_owned_t* own = smlp_owned_new(0, n_out, n_threads)
    cdef int tid, cur
    cdef int64_t r0, r1
    if own == NULL:
        free(bsum)
        raise MemoryError("weight_grad: could not allocate the row counters")
    # (set here too: Cython copies them into each thread, firstprivate)
    tid = cur = 0
    r0 = r1 = j = k0 = n = k = kb = nb = 0
    cdef int64_t tl = smlp_tl_begin(TL_WEIGHT_GRAD, a_x.n0, n_out, n_threads)
    with nogil, parallel(num_threads=n_threads):
        tid = smlp_thread_id()
        smlp_tl_thread(tl, tid, SMLP_TL_ENTER)
        gbuf = <float*>malloc(GBLOCK * sizeof(float))
        if gbuf == NULL:
            failp[0] = 1
        else:
            # the bias gradients first: blocks of rows, each row's sum in plain order,
            # used by the thread that summed it (_bias_block)
            for jb in prange(n_bb, schedule="static"):
                smlp_row_sums(dp, ldx, jb, n_out, B, bsum)
                _bias_block(jb, n_out, bsum, scale, bgp, accumulate, NULL, NULL, 0.0, 0.0,
                            0.0, False)
            smlp_tl_thread(tl, tid, SMLP_TL_ROWS)
            cur = 0
            r0 = 0
            r1 = 0
            while smlp_owned_next(own, 0, n_out, n_threads, tid, chunk, &cur, &r0, &r1):
                for j in range(r0, r1):
                    k0 = ptr[j]
                    n = ptr[j + 1] - k0
                    if ahead:
                        smlp_prefetch_ahead(ip, k0, k0 + n, nnz, xp, ldx, B * 4)
                    if d_ahead:  # (see smlp_prefetch_row)
                        smlp_prefetch_row(dp, ldx, j, n_out, B * 4)
                    if B == 0:
                        if not accumulate:
                            for k in range(k0, k0 + n):
                                gp[k] = 0.0
                    elif not accumulate:
                        sddmm_row(ip + k0, n, xp, ldx, dp + j * B, B, scale, gp + k0)
                    else:
                        kb = k0
                        while kb < k0 + n:
                            nb = k0 + n - kb
                            if nb > GBLOCK:
                                nb = GBLOCK
                            sddmm_row(ip + kb, nb, xp, ldx, dp + j * B, B, scale, gbuf)
                            for k in range(nb):
                                gp[kb + k] = gp[kb + k] + gbuf[k]
                            kb = kb + nb
        smlp_tl_thread(tl, tid, SMLP_TL_END)
        free(gbuf)
    smlp_tl_end(tl)
    free(bsum)
    free(own)
    if failed:
        raise MemoryError("weight_grad: could not allocate a gradient buffer")


cdef inline void _bias_block(int64_t jb, int64_t n_out, const float* bsum, float scale,
                             float* g_out, bint accumulate, float* bw, float* bv, float lr,
                             float mu, float decay, bint nesterov) noexcept nogil:
    """The rows of bias block jb (smlp_row_sums' blocks of SMLP_BIAS_BLOCK
    rows), by the thread that just summed them: the gradients scale * bsum
    into g_out (added to it with ``accumulate``), or, g_out NULL, the
    momentum update of the biases bw / bv.  The bias loops of backward_update,
    weight_grad and weight_update end without a barrier (a prange inside a
    parallel block), so no sum is read by a thread that did not store it."""
    cdef int64_t j
    cdef int64_t end = (jb + 1) * SMLP_BIAS_BLOCK
    if end > n_out:
        end = n_out
    for j in range(jb * SMLP_BIAS_BLOCK, end):
        if g_out == NULL:
            _update(bw + j, bv + j, bsum[j] * scale, lr, mu, decay, nesterov)
        elif accumulate:
            g_out[j] = g_out[j] + bsum[j] * scale
        else:
            g_out[j] = bsum[j] * scale


cdef inline void _update(float* w, float* v, float g, float lr, float mu, float decay,
                         bint nesterov) noexcept nogil:
    # v = mu*v - lr*g ; w = w + v - decay*w        (paper: decay = weight decay)
    # nesterov:         w = w + mu*v - lr*g - decay*w
    cdef float vn = mu * v[0] - lr * g
    v[0] = vn
    if nesterov:
        w[0] = w[0] + (mu * vn - lr * g) - decay * w[0]
    else:
        w[0] = w[0] + vn - decay * w[0]


def weight_update(indptr, indices, X, D, data, velocity, bias, bias_velocity, float scale,
                  float lr, float mu, float decay, float bias_decay, bint nesterov=False,
                  int n_threads=1):
    """Weight gradient at existing weights fused with the momentum update
    (reference semantics, docs/semantics.md, "Training step"):
        g = scale * X[i_k, :] . D[j, :];  v = mu*v - lr*g;  w = w + v - decay*w
    and the same for the biases with g_b = scale * sum_b D[j, b].
    The gradient never leaves the thread: it is computed GBLOCK weights at a
    time into a per-thread buffer and applied immediately.
    """
    cdef str K = "weight_update"
    cdef arr_t a_ptr, a_idx, a_x, a_d, a_w, a_v, a_b, a_bv
    take(indptr, I64, 1, False, False, &a_ptr, K, "indptr")
    take(indices, I32, 1, False, False, &a_idx, K, "indices")
    take(X, F32, 2, False, False, &a_x, K, "X")
    take(D, F32, 2, False, False, &a_d, K, "D")
    take(data, F32, 1, True, False, &a_w, K, "data")
    take(velocity, F32, 1, True, False, &a_v, K, "velocity")
    take(bias, F32, 1, True, False, &a_b, K, "bias")
    take(bias_velocity, F32, 1, True, False, &a_bv, K, "bias_velocity")
    cdef const int64_t* ptr = <const int64_t*>a_ptr.p
    cdef int64_t n_out = a_ptr.n0 - 1
    cdef int B = <int>a_x.n1
    cdef smlp_sddmm_fn sddmm_row = smlp_sddmm_row_for(B)  # (once per call)
    cdef int64_t ldx = a_x.n1
    cdef int64_t nnz = a_idx.n0
    cdef int64_t j, k0, k1, kb, nb, k
    cdef bint d_ahead
    cdef float* gbuf
    cdef float* bsum
    cdef const float* xp = <const float*>a_x.p
    cdef const float* dp = <const float*>a_d.p
    cdef const int32_t* ip = <const int32_t*>a_idx.p
    cdef float* wp = <float*>a_w.p
    cdef float* vp = <float*>a_v.p
    cdef float* bw = <float*>a_b.p
    cdef float* bv = <float*>a_bv.p
    cdef int64_t jb
    cdef int64_t n_bb = (n_out + SMLP_BIAS_BLOCK - 1) // SMLP_BIAS_BLOCK
    cdef bint ahead
    cdef int failed = 0
    cdef int* failp = &failed
    cdef int chunk
    if a_d.n0 != n_out or a_d.n1 != B:
        raise ValueError("weight_update: D must be (n_out, B)")
    if a_w.n0 != nnz or a_v.n0 != nnz:
        raise ValueError("weight_update: data and velocity must be (nnz,)")
    if a_b.n0 != n_out or a_bv.n0 != n_out:
        raise ValueError("weight_update: bias arrays must be (n_out,)")
    if n_out == 0 or B == 0:
        return
    gbuf = NULL
    ahead = smlp_use_ahead(nnz, n_out, a_x.n0 * ldx * 4)
    smlp_row_prefetch(a_x.n0 * ldx * 4)
    n_threads = smlp_threads_for(nnz * <int64_t>B, n_threads)
    chunk = _chunk(n_out, n_threads)
    d_ahead = smlp_row_prefetch_on(n_out * B * 4)
    bsum = <float*>malloc(n_out * sizeof(float))
    if bsum == NULL:
        raise MemoryError("weight_update: could not allocate the bias sums")
    cdef int64_t tl = smlp_tl_begin(TL_WEIGHT_UPDATE, a_x.n0, n_out, n_threads)
    with nogil, parallel(num_threads=n_threads):
        gbuf = <float*>malloc(GBLOCK * sizeof(float))
        if gbuf == NULL:
            failp[0] = 1
        else:
            # the biases first: blocks of rows, each row's sum in plain order, used
            # by the thread that summed it (_bias_block)
            for jb in prange(n_bb, schedule="static"):
                smlp_row_sums(dp, ldx, jb, n_out, B, bsum)
                _bias_block(jb, n_out, bsum, scale, NULL, False, bw, bv, lr, mu, bias_decay,
                            nesterov)
            for j in prange(n_out, schedule="dynamic", chunksize=chunk):
                k0 = ptr[j]
                k1 = ptr[j + 1]
                if ahead:
                    smlp_prefetch_ahead(ip, k0, k1, nnz, xp, ldx, B * 4)
                if d_ahead:  # (see smlp_prefetch_row)
                    smlp_prefetch_row(dp, ldx, j, n_out, B * 4)
                kb = k0
                while kb < k1:
                    nb = k1 - kb
                    if nb > GBLOCK:
                        nb = GBLOCK
                    sddmm_row(ip + kb, nb, xp, ldx, dp + j * B, B, scale, gbuf)
                    for k in range(nb):
                        _update(wp + kb + k, vp + kb + k, gbuf[k], lr, mu, decay,
                                nesterov)
                    kb = kb + nb
            free(gbuf)
    smlp_tl_end(tl)
    free(bsum)
    if failed:
        raise MemoryError("weight_update: could not allocate a gradient buffer")


cdef enum:
    TAKE_BLOCK = 512  # apply_update with an index: gradients gathered a block at a time
    # ... and each weight's work counted against min_parallel_work: after a backward
    # pass on several threads a gathered update took ~1.2 us per thousand weights (half
    # the gradient and the weights' lines come from the other core), the time of ~64
    # thousand multiply-adds of the products
    TAKE_WORK = 64
    # ... and without an index, each weight counted as this many: the update of
    # CIFAR10's first layer (142,119 weights) took 59-64 us a batch on one thread
    # and 33-37 on two, FashionMNIST's (36,013) 7.5-9.0 against 6.0-8.0
    # (results/bench_issue22/experiments_dec06d/apply_first_layer_ab.jsonl): from
    # ~33 k weights (a call of ~7 us) a second thread pays
    APPLY_WORK = 32

APPLY_INDEX_WORK = TAKE_WORK  # (for kernels.spmm_for: the work of apply_update with an index)
APPLY_PLAIN_WORK = APPLY_WORK  # (... and without one)


def backward_work(int64_t nnz, int64_t n_in, int64_t B):
    """The work that ``backward_update`` and ``backward_input`` count when
    deciding their threads: nnz * B multiply-adds and SMLP_G_ROW_WORK for each
    element of their n_in x B input rows (rowkern.h; for kernels.spmm_for)."""
    return smlp_backward_work(nnz, n_in, B)


def apply_update(w, v, g, float lr, float mu, float decay, bint nesterov=False,
                 int n_threads=1, index=None):
    """The momentum update of ``weight_update`` applied to a given gradient
    (gradient accumulation, parameter server): elementwise over w, v, g
    (float32, one dimension).  With ``index`` (int32, a permutation of
    0..n-1) weight k takes the gradient g[index[k]]: a gradient in the
    transposed index's order (``backward_update``'s ``grad_t``) with the
    inverse of t_perm.  Each thread updates a contiguous range of weights and
    only reads the gradient at random."""
    cdef arr_t a_w, a_v, a_g, a_i
    take(w, F32, 1, True, False, &a_w, "apply_update", "w")
    take(v, F32, 1, True, False, &a_v, "apply_update", "v")
    take(g, F32, 1, False, False, &a_g, "apply_update", "g")
    take(index, I32, 1, False, True, &a_i, "apply_update", "index")
    cdef int64_t n = a_w.n0
    cdef int64_t k
    cdef float* wp = <float*>a_w.p
    cdef float* vp = <float*>a_v.p
    cdef const float* gp = <const float*>a_g.p
    cdef const int32_t* xp = <const int32_t*>a_i.p
    if a_v.n0 != n or a_g.n0 != n:
        raise ValueError("apply_update: w, v and g must have the same length")
    cdef int64_t blk
    cdef int bad = 0
    if xp != NULL and a_i.n0 != n:
        raise ValueError("apply_update: index must have the length of w")
    if xp != NULL and n > 2147483647:
        raise ValueError("apply_update: an index takes at most 2**31 - 1 weights")
    # a gathered update costs about as much as TAKE_WORK multiply-adds of a product,
    # one in order APPLY_WORK
    n_threads = smlp_threads_for(n * (TAKE_WORK if xp != NULL else APPLY_WORK), n_threads)
    cdef int64_t tl = smlp_tl_begin(TL_APPLY_UPDATE, n, n, n_threads)
    with nogil:
        if xp != NULL:  # blocks of TAKE_BLOCK gradients gathered, then updated in order
            for blk in prange((n + TAKE_BLOCK - 1) // TAKE_BLOCK, schedule="static",
                              num_threads=n_threads):
                bad |= _apply_taken(wp, vp, gp, xp, blk * TAKE_BLOCK, n, lr, mu, decay,
                                    nesterov)
        else:
            for k in prange(n, schedule="static", num_threads=n_threads):
                _update(wp + k, vp + k, gp[k], lr, mu, decay, nesterov)
    smlp_tl_end(tl)
    if bad:
        raise ValueError(f"apply_update: index holds a position outside [0, {n}) (the "
                         f"weights whose index was valid were updated)")


cdef int _apply_taken(float* wp, float* vp, const float* gp, const int32_t* xp, int64_t k0,
                      int64_t n, float lr, float mu, float decay,
                      bint nesterov) noexcept nogil:
    """apply_update with an index, weights k0 .. k0 + TAKE_BLOCK (at most n):
    their gradients gathered into a stack block (smlp_take), then the update
    in order.  1 when an index was outside [0, n) (its weight untouched)."""
    cdef float taken[TAKE_BLOCK]
    cdef int64_t m = n - k0 if n - k0 < TAKE_BLOCK else TAKE_BLOCK
    cdef int64_t q
    cdef int bad = smlp_take(gp, xp + k0, m, <uint32_t>n, taken)
    if bad:
        for q in range(m):
            if <uint32_t>xp[k0 + q] < <uint64_t>n:
                _update(wp + k0 + q, vp + k0 + q, taken[q], lr, mu, decay, nesterov)
        return 1
    for q in range(m):
        _update(wp + k0 + q, vp + k0 + q, taken[q], lr, mu, decay, nesterov)
    return 0


def permute(const float[::1] src, const int32_t[::1] perm, float[::1] out,
            bint scatter=False, int n_threads=1):
    """out[k] = src[perm[k]] (gather), or out[perm[k]] = src[k] with ``scatter``:
    a layer's weights into the order of its transposed index and a gradient
    back (backward_update's ``transposed``).  ``perm`` must be a permutation
    of 0..n-1 (the transposed index's t_perm is)."""
    cdef int64_t n = perm.shape[0]
    cdef int64_t k
    if src.shape[0] != n or out.shape[0] != n:
        raise ValueError("permute: src, perm and out must have the same length")
    n_threads = smlp_threads_for(n, n_threads)
    with nogil:
        if scatter:
            for k in prange(n, schedule="static", num_threads=n_threads):
                out[perm[k]] = src[k]
        else:
            for k in prange(n, schedule="static", num_threads=n_threads):
                out[k] = src[perm[k]]


def gather_columns(X, rows, out, int n_threads=1):
    """out[f, b] = X[rows[b], f]: a mini-batch of sample-major data turned
    feature-major.  Blocks of 64 features for all samples, so that each
    block of ``out`` stays in L1; or, on the AVX-512 path when X is larger
    than GATHER_STREAM_MIN bytes (a training set in memory, not in cache),
    groups of 16 samples with all their features, so that each sample's row
    is read in order (rowkern.h, smlp_gather_part).  The same values."""
    cdef arr_t a_x, a_rows, a_out
    take(X, F32, 2, False, False, &a_x, "gather_columns", "X")
    take(rows, I64, 1, False, False, &a_rows, "gather_columns", "rows")
    take(out, F32, 2, True, False, &a_out, "gather_columns", "out")
    cdef int64_t n_feat = a_x.n1
    cdef int64_t B = a_rows.n0
    cdef bint by_samples = (smlp_simd_level == 2
                            and a_x.n0 * n_feat * 4 >= GATHER_STREAM_MIN)
    cdef int64_t n_blk = (B + 15) // 16 if by_samples else (n_feat + 63) // 64
    cdef int64_t blk
    if a_out.n0 != n_feat or a_out.n1 != B:
        raise ValueError("gather_columns: out must be (n_features, len(rows))")
    if B == 0 or n_feat == 0:
        return
    # the one-thread rule counts a gathered element as GATHER_WORK multiply-adds: it is a
    # read from a training set that lives in memory, not in cache (FashionMNIST's batch,
    # 100,000 elements: 64 us on one thread, 38 us on two)
    n_threads = smlp_threads_for(n_feat * B * GATHER_WORK, n_threads)
    cdef int64_t tl = smlp_tl_begin(TL_GATHER, n_feat, B, n_threads)
    with nogil:
        for blk in prange(n_blk, schedule="static", num_threads=n_threads):
            smlp_gather_part(<const float*>a_x.p, <const int64_t*>a_rows.p, B, n_feat, blk,
                             by_samples, <float*>a_out.p)
    smlp_tl_end(tl)


# --------------------------------------------------------------- augmented gather
# Image augmentation in the gather (--augment cifar): the batch buffer receives
# each image shifted and flipped, the training array is never copied.  The draw
# of sample position b of a step is a pure function of (key, b): a splitmix64
# hash, so no stream is read, threads and resume cannot change it.
cdef inline uint64_t _augment_hash(uint64_t key, int64_t b) noexcept nogil:
    return smlp_mix64(key ^ (<uint64_t>b * 0xD1B54A32D192ED03ULL))


cdef inline int _augment_shift(uint64_t h, int bit, int max_shift) noexcept nogil:
    # a shift uniform in [-max_shift, max_shift] from 20 bits of the hash
    return <int>(((h >> bit) & 0xFFFFFULL) % <uint64_t>(2 * max_shift + 1)) - max_shift


cdef inline int _augment_flip(uint64_t h) noexcept nogil:
    # flip with probability 1/2 (the top bit)
    return <int>((h >> 63) & 1ULL)


cdef inline int _clamp(int v, int hi) noexcept nogil:
    # fill mode 'nearest': a coordinate outside the image takes the edge pixel
    if v < 0:
        return 0
    if v > hi:
        return hi
    return v


def augment_key(uint64_t seed, int64_t step):
    """The 64-bit key of the augmentation draws of one (seed, step); its own
    domain, so it never equals a dropout key of the same (seed, step)."""
    cdef uint64_t counter = <uint64_t>step * 0x100000001B3ULL + 0xA5A5A5A5ULL
    return smlp_mix64(smlp_mix64(seed ^ 0x6A09E667F3BCC909ULL) ^ smlp_mix64(counter))


def augment_draws(uint64_t key, int max_shift, int32_t[::1] dy_out, int32_t[::1] dx_out,
                  int32_t[::1] flip_out):
    """The draws of sample positions 0..n-1 under ``key``: vertical and
    horizontal shifts in [-max_shift, max_shift] and the flip (0/1), exactly
    as ``gather_augment`` uses them (for tests and the NumPy twin)."""
    cdef int64_t n = dy_out.shape[0]
    cdef int64_t b
    cdef uint64_t h
    if dx_out.shape[0] != n or flip_out.shape[0] != n:
        raise ValueError("augment_draws: dy_out, dx_out and flip_out must have one length")
    if max_shift < 0:
        raise ValueError("augment_draws: max_shift must be >= 0")
    for b in range(n):
        h = _augment_hash(key, b)
        dy_out[b] = _augment_shift(h, 0, max_shift)
        dx_out[b] = _augment_shift(h, 20, max_shift)
        flip_out[b] = _augment_flip(h)


def gather_augment(const float[:, ::1] X, const int64_t[::1] rows, float[:, ::1] out,
                   uint64_t key, int channels, int height, int width, int max_shift,
                   int n_threads=1):
    """``gather_columns`` of channel-planar images (feature c*H*W + y*W + x),
    each sample shifted and flipped on the way into the feature-major batch:
        out[(c, y, x), b] = X[rows[b], (c, clamp(y + dy_b), clamp(x' + dx_b))],
        x' = W-1-x when flip_b else x
    (the shift of Keras' ImageDataGenerator with fill mode 'nearest', then the
    horizontal flip); (dy_b, dx_b, flip_b) = the hash of (key, b).
    ``prange`` splits the C*H image rows (each a block of W output rows)."""
    cdef int64_t n_feat = X.shape[1]
    cdef int64_t B = rows.shape[0]
    cdef int64_t n_img_rows = <int64_t>channels * height
    cdef int64_t r, b, c, y, f0, s0
    cdef int x, xs, sy, dy, dx, fl
    cdef uint64_t h
    cdef const float* src
    if channels < 1 or height < 1 or width < 1:
        raise ValueError("gather_augment: channels, height and width must be positive")
    if n_feat != n_img_rows * width:
        raise ValueError("gather_augment: X must have channels * height * width features")
    if out.shape[0] != n_feat or out.shape[1] != B:
        raise ValueError("gather_augment: out must be (n_features, len(rows))")
    if max_shift < 0:
        raise ValueError("gather_augment: max_shift must be >= 0")
    if B == 0:
        return
    n_threads = smlp_threads_for(n_feat * B * GATHER_WORK, n_threads)  # (as gather_columns)
    with nogil:
        for r in prange(n_img_rows, schedule="static", num_threads=n_threads):
            c = r // height
            y = r - c * height
            f0 = r * width
            for b in range(B):
                # (every variable assigned here is thread-private under prange)
                h = _augment_hash(key, b)
                dy = _augment_shift(h, 0, max_shift)
                dx = _augment_shift(h, 20, max_shift)
                fl = _augment_flip(h)
                # out[(c, y, x), b] = X[rows[b], (c, clamp(y + dy), clamp(x' + dx))]
                sy = _clamp(<int>y + dy, height - 1)
                s0 = (c * height + sy) * width
                src = &X[rows[b], 0]
                for x in range(width):
                    xs = width - 1 - x if fl else x
                    out[f0 + x, b] = src[s0 + _clamp(xs + dx, width - 1)]
