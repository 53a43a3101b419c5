/*
 * rowkern.h -- the innermost loops of sparse_mlp, one row at a time.
 *
 * Activations are feature-major: a batch is a C-contiguous (n_neurons, B)
 * array, so every row kernel streams over the batch.  The .pyx modules own
 * the parallel loops (prange over rows) and call these functions; a row is
 * always computed by exactly one thread, in the same order, so results are
 * bit-identical for any thread count.
 *
 * Three sparse row products:
 *   spmm_row   out[b]  = init + sum_k w_k * X[idx_k, b]        (b < B)
 *              with w_k = w[k], or w[perm[k]] for the transposed index
 *   sddmm_row  g[k]    = scale * sum_b X[idx_k, b] * d[b]      (k < n)
 *   bwd_row    both at once along one INPUT row i: out = sum_k w_k D[j_k, :]
 *              and g[k] = scale * <A[i, :], D[j_k, :]>, each D row loaded once
 *
 * The fast versions keep a chunk of the output row (spmm, bwd) or of d
 * (sddmm) in vector registers for the whole row: 8 x 16 floats with
 * AVX-512, 8 x 8 floats with AVX2+FMA (4 x 8 for bwd); the batch is walked
 * in chunks of that width with a masked last vector.  The version is chosen
 * once at import time by CPU feature (smlp_dispatch_init), or forced with
 * SPARSE_MLP_SIMD=scalar|avx2|avx512 (used by the tests to check every path).
 *
 * Epilogues.  spmm_row and bwd_row finish the row IN REGISTERS when given an
 * smlp_epi_t for the identity / ReLU / leaky (All-ReLU) family:
 *   forward  (SMLP_EPI_FWD): out = Z row,  dst = dropout(f(Z))  (A row)
 *   backward (SMLP_EPI_BWD): dst = f'(z) * dropout(product)     (delta row;
 *            z is the input layer's pre-activation row, dst may be z)
 * so no freshly stored row is loaded back (store-to-load forwarding of wide
 * vectors is slow).  tanh, sigmoid and SReLU use the generic elementwise
 * epilogues at the end of this file instead.  Dropout masks are never
 * stored: keep sample b of a row iff mix32(row_key ^ (b * golden)) >= thresh.
 */
#ifndef SMLP_ROWKERN_H
#define SMLP_ROWKERN_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define SMLP_X86 1
#include <immintrin.h>
#else
#define SMLP_X86 0
#endif

#define SMLP_INLINE static inline __attribute__((always_inline))

#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ */
/* rows owned by threads (the row loops of forward and backward_update) */
/* ------------------------------------------------------------------ */
/* The rows lo..hi of a kernel call are cut into one contiguous block per
 * thread (block b: lo + (hi - lo) * b / nt onward), the same cut for every
 * call over the same number of rows.  Each thread takes its own block first,
 * `chunk` rows at a time, in order; a thread done with its own takes what is
 * left of the others', through the same counters.  So on a quiet machine the
 * thread that wrote a layer's rows in the forward pass is the one that
 * applies their derivative and writes their gradient in the backward pass
 * (the rows of the next layer's transposed index), and the lines stay in its
 * cache; a thread held up by another process is still helped out, as with a
 * dynamic schedule.  Which thread computes a row never changes its values. */
typedef struct {
    int64_t next;
    char pad[64 - sizeof(int64_t)];
} smlp_owned_t;

static inline int smlp_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* the team a parallel region would get (1 without OpenMP) */
static inline int smlp_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* counters for nt blocks of the rows lo..hi (64-byte aligned, one line
 * each; free() them); NULL when out of memory */
static inline smlp_owned_t *smlp_owned_new(int64_t lo, int64_t hi, int nt)
{
    if (nt < 1) nt = 1;
    smlp_owned_t *c = (smlp_owned_t *)aligned_alloc(64, (size_t)nt * sizeof(smlp_owned_t));
    if (c == NULL) return NULL;
    for (int b = 0; b < nt; b++) c[b].next = lo + (hi - lo) * b / nt;
    return c;
}

/* the next rows [*r0, *r1) for thread `tid`: from its own block, then from
 * the blocks after it; `*cur` (0 at the start) is the block being drained,
 * counted from the thread's own.  0 when every block is empty. */
static inline int smlp_owned_next(smlp_owned_t *c, int64_t lo, int64_t hi, int nt, int tid,
                                  int64_t chunk, int *cur, int64_t *r0, int64_t *r1)
{
    if (nt < 1) nt = 1;
    while (*cur < nt) {
        const int b = (tid + *cur) % nt;
        const int64_t end = lo + (hi - lo) * (b + 1) / nt;
        const int64_t s = __atomic_fetch_add(&c[b].next, chunk, __ATOMIC_RELAXED);
        if (s < end) {
            *r0 = s;
            *r1 = s + chunk < end ? s + chunk : end;
            return 1;
        }
        (*cur)++;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* call timeline (diagnostics: _spmm.timeline_start / timeline_take)   */
/* ------------------------------------------------------------------ */
/* Off unless started, and then a traced call costs one test of a pointer.
 * When on, each call of the traced kernels records its kind, its shape and
 * its team (after smlp_threads_for), and CLOCK_MONOTONIC nanoseconds on the
 * calling thread before its parallel region (t_call) and after it (t_done).
 * Inside the region each thread records three stamps: when it entered
 * (SMLP_TL_ENTER: fork), when it began its share of the rows after the
 * bias sums (SMLP_TL_ROWS) and when it finished them (SMLP_TL_END: from
 * there to t_done is the wait at the join).  Only the row loops of forward,
 * backward_update and weight_grad that take rows one at a time
 * (smlp_owned_next) stamp;
 * a region that is one prange (the other kernels, the four-row loops of
 * batches up to 32, the dense output rows) leaves the thread stamps 0.  In
 * a call that has both, the stamps cover the one-row loop only.  Records
 * past the capacity are counted, not stored.  Meant for one calling thread
 * (a training step), as the kernels' callers are; no result depends on it. */
enum { SMLP_TL_ENTER = 0, SMLP_TL_ROWS = 1, SMLP_TL_END = 2 };
typedef struct {
    int32_t kind;      /* an index into _spmm.TIMELINE_KINDS */
    int32_t threads;
    int64_t n_in, n_out;
    int64_t t_call, t_done;
} smlp_tl_call_t;
static smlp_tl_call_t *smlp_tl_calls = NULL;  /* NULL: not recording */
static int64_t *smlp_tl_stamps = NULL;        /* [capacity][smlp_tl_nt][3] */
static int64_t smlp_tl_cap = 0, smlp_tl_n = 0, smlp_tl_lost = 0;
static int smlp_tl_nt = 0;                    /* threads stamped per call */

static inline int64_t smlp_tl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* a call begins: its record's index, or -1 when not recording (or full) */
static inline int64_t smlp_tl_begin(int kind, int64_t n_in, int64_t n_out, int threads)
{
    if (smlp_tl_calls == NULL) return -1;
    if (smlp_tl_n >= smlp_tl_cap) {
        smlp_tl_lost++;
        return -1;
    }
    const int64_t i = smlp_tl_n++;
    smlp_tl_call_t *c = &smlp_tl_calls[i];
    c->kind = kind;
    c->threads = threads;
    c->n_in = n_in;
    c->n_out = n_out;
    c->t_done = 0;
    memset(smlp_tl_stamps + i * smlp_tl_nt * 3, 0, (size_t)smlp_tl_nt * 3 * sizeof(int64_t));
    c->t_call = smlp_tl_now();
    return i;
}

static inline void smlp_tl_thread(int64_t i, int tid, int what)
{
    if (i >= 0 && tid >= 0 && tid < smlp_tl_nt)
        smlp_tl_stamps[(i * smlp_tl_nt + tid) * 3 + what] = smlp_tl_now();
}

static inline void smlp_tl_end(int64_t i)
{
    if (i >= 0) smlp_tl_calls[i].t_done = smlp_tl_now();
}

/* start recording (any earlier record freed); 0, or -1 when out of memory */
static inline int smlp_tl_start(int64_t capacity, int nt)
{
    free(smlp_tl_calls);
    free(smlp_tl_stamps);
    smlp_tl_calls = NULL;
    smlp_tl_stamps = NULL;
    smlp_tl_n = smlp_tl_lost = 0;
    if (capacity < 1) capacity = 1;
    if (nt < 1) nt = 1;
    smlp_tl_stamps = (int64_t *)malloc((size_t)capacity * nt * 3 * sizeof(int64_t));
    smlp_tl_calls = (smlp_tl_call_t *)malloc((size_t)capacity * sizeof(smlp_tl_call_t));
    if (smlp_tl_calls == NULL || smlp_tl_stamps == NULL) {
        free(smlp_tl_calls);
        free(smlp_tl_stamps);
        smlp_tl_calls = NULL;
        smlp_tl_stamps = NULL;
        return -1;
    }
    smlp_tl_cap = capacity;
    smlp_tl_nt = nt;
    return 0;
}

/* stop recording: the buffers are handed to the caller (free() them) */
static inline void smlp_tl_stop(void)
{
    smlp_tl_calls = NULL;
    smlp_tl_stamps = NULL;
}

/* ------------------------------------------------------------------ */
/* counter-based random numbers (dropout, no state, no array to fill)  */
/* ------------------------------------------------------------------ */
/* splitmix64 finaliser: 64-bit key of one (seed, step, layer, neuron) */
static inline uint64_t smlp_mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* 32-bit avalanche hash (bijective), vectorisable */
static inline uint32_t smlp_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

static inline uint32_t smlp_row_key(uint64_t key, int64_t neuron)
{
    return (uint32_t)smlp_mix64(key ^ ((uint64_t)neuron * 0xD1B54A32D192ED03ULL));
}

#define SMLP_GOLDEN32 0x9E3779B1u
/* keep sample b of a row iff smlp_mix32(rk ^ (b * golden)) >= thresh */
#define SMLP_DROP_HASH(rk, b) smlp_mix32((rk) ^ ((uint32_t)(b) * SMLP_GOLDEN32))

/* bit pattern of a float (no aliasing games) */
static inline uint32_t smlp_float_bits(float w)
{
    uint32_t u;
    memcpy(&u, &w, sizeof u);
    return u;
}

/* ------------------------------------------------------------------ */
/* in-register epilogue of one row                                     */
/* ------------------------------------------------------------------ */
enum { SMLP_EPI_FWD = 1, SMLP_EPI_BWD = 2 };

typedef struct {
    int mode;        /* SMLP_EPI_FWD or SMLP_EPI_BWD */
    int kind;        /* SMLP_ACT_IDENTITY, _RELU or _LEAKY (others: generic path) */
    float slope;     /* leaky / All-ReLU slope */
    uint32_t thresh; /* dropout: keep iff hash >= thresh; 0 = no dropout */
    float scale;     /* 1 / (1 - rate) */
    uint32_t rk;     /* row key of this neuron */
    uint32_t b0;     /* batch position of column 0 */
    const float *z;  /* BWD: pre-activations of this input row */
    float *dst;      /* FWD: A row; BWD: delta row (may be z) */
    uint16_t *bits;  /* optional, AVX-512 only: per 16 columns, the dropout keep mask and
                        the sign mask of z that the backward epilogue needs (z > 0 for
                        ReLU, z < 0 for leaky): FWD writes them, BWD reads them instead
                        of hashing again and loading z.  NULL: not used */
    int write_z;     /* FWD: whether the Z row (`out`) is stored; 0 only with bits, whose
                        backward pass never reads Z (smlp_act_t.skip_z) */
} smlp_epi_t;

/* uint16 words of epilogue bits per row of B columns (smlp_epi_t.bits) */
#define SMLP_BITS_WORDS(B) (2 * (((B) + 15) / 16))

/* scalar epilogue on a finished row `out` (same arithmetic, same order as
 * the vector versions: dropout scaling first, then the derivative) */
static void epi_scalar(const smlp_epi_t *e, const float *out, int B)
{
    const float s = e->slope, sc = e->scale;
    for (int b = 0; b < B; b++) {
        float v = out[b];
        if (e->mode == SMLP_EPI_FWD) {
            if (e->kind == 1) v = v > 0.0f ? v : 0.0f;
            else if (e->kind == 2) v = v < 0.0f ? s * v : v;
            if (e->thresh) v = SMLP_DROP_HASH(e->rk, e->b0 + (uint32_t)b) >= e->thresh ? v * sc : 0.0f;
        } else {
            if (e->thresh) v = SMLP_DROP_HASH(e->rk, e->b0 + (uint32_t)b) >= e->thresh ? v * sc : 0.0f;
            const float z = e->z[b];
            if (e->kind == 1) v = z > 0.0f ? v : 0.0f;
            else if (e->kind == 2) v = z < 0.0f ? s * v : v;
        }
        e->dst[b] = v;
    }
}

/* ------------------------------------------------------------------ */
/* scalar reference versions (any CPU)                                 */
/* ------------------------------------------------------------------ */
/* out must be a private buffer when e is a BWD epilogue (z may alias dst) */
static void spmm_row_scalar(const int32_t *idx, const float *w, const int32_t *perm,
                            int64_t n, const float *X, int64_t ldx, int B,
                            float init, float *out, const smlp_epi_t *e)
{
    for (int b = 0; b < B; b++) out[b] = init;
    for (int64_t k = 0; k < n; k++) {
        const float wk = perm ? w[perm[k]] : w[k];
        const float *x = X + (int64_t)idx[k] * ldx;
        /* out[b] += w_k * X[i_k, b] */
        for (int b = 0; b < B; b++) out[b] += wk * x[b];
    }
    if (e) epi_scalar(e, out, B);
}

static void sddmm_row_scalar(const int32_t *idx, int64_t n, const float *X, int64_t ldx,
                             const float *d, int B, float scale, float *g)
{
    for (int64_t k = 0; k < n; k++) {
        const float *x = X + (int64_t)idx[k] * ldx;
        float s = 0.0f;
        /* g_k = scale * <X[i_k, :], d> */
        for (int b = 0; b < B; b++) s += x[b] * d[b];
        g[k] = s * scale;
    }
}

static void bwd_row_scalar(const int32_t *rows, const int32_t *perm, int64_t n, const float *w,
                           const float *D, int64_t ldd, const float *x, int B, float scale,
                           float *out, float *g, const smlp_epi_t *e)
{
    for (int b = 0; b < B; b++) out[b] = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        const float wk = perm ? w[perm[k]] : w[k];
        const float *d = D + (int64_t)rows[k] * ldd;
        float s = 0.0f;
        /* out[b] += w_k * D[j_k, b];  g_k = scale * <x, D[j_k, :]> */
        for (int b = 0; b < B; b++) {
            out[b] += wk * d[b];
            s += x[b] * d[b];
        }
        g[k] = s * scale;
    }
    if (e) epi_scalar(e, out, B);
}

/* Streaming (non-temporal) stores of finished rows.  A layer whose output
 * block is several times the L3 (32 MiB on the EPYC VM) is written once and
 * read back only by the next kernel, from DRAM anyway: a normal store first
 * reads each line it writes (read-for-ownership), a streaming store does
 * not, so the huge eps-1 layers of Table 4 (bandwidth-bound at micro-batch
 * 64) move a third less through memory in the forward pass.  Smaller blocks
 * stay in cache for the next kernel, where a streaming store would evict
 * them: off.  Set per kernel call (smlp_stream_stores) like smlp_pf_row;
 * every thread fences at the end of its part of a call (smlp_store_fence),
 * so the rows are visible to the next kernel.  Only the AVX-512 row store
 * streams, only whole aligned vectors; no result changes. */
static int64_t smlp_stream_min = 128LL << 20;  /* bytes; 0 = never (_spmm.stream_stores) */
static int smlp_nt_store = 0;
static inline void smlp_stream_stores(int64_t out_bytes)
{
    smlp_nt_store = smlp_stream_min > 0 && out_bytes >= smlp_stream_min;
}
static inline void smlp_store_fence(void)
{
#if SMLP_X86
    if (smlp_nt_store) _mm_sfence();
#endif
}

#if SMLP_X86
/* prefetch the row gathered SMLP_PF weights ahead: rows are picked at
 * random, so the hardware prefetcher cannot guess them (one line per 16
 * floats) */
#ifndef SMLP_PF
#define SMLP_PF 6
#endif
#ifndef SMLP_PF_STEP
#define SMLP_PF_STEP 1
#endif
/* gathered blocks smaller than this stay in a core's L2 (1 MiB on Zen 4
 * and 5), where prefetching only adds instructions: on the Higgs shape's
 * 28 x 1000 layer (a 14 KiB input block, ~10 weights a row) the cross-row
 * prefetch made the forward product and the weight gradient 1.6x slower,
 * and the in-row prefetch cost the forward and input-gradient products of
 * the 1000-wide layers ~10% */
#define SMLP_AHEAD_MIN_BYTES (1LL << 20)
/* whether the row kernels prefetch inside a row: set by each kernel call
 * (smlp_row_prefetch) for the block it gathers from.  A global: two Python
 * threads running kernels at once could only change each other's
 * prefetching, never a result */
static int smlp_pf_row = 1;
static inline void smlp_row_prefetch(int64_t gathered_bytes)
{
    smlp_pf_row = gathered_bytes >= SMLP_AHEAD_MIN_BYTES;
}
#define SMLP_PREFETCH_ROW(idx, k, n, X, ldx, nv)                                   \
    do {                                                                           \
        if (SMLP_PF > 0 && smlp_pf_row && (k) + SMLP_PF < (n)) {                   \
            const char *pf_ = (const char *)((X) + (int64_t)(idx)[(k) + SMLP_PF] * (ldx)); \
            for (int v_ = 0; v_ < (nv); v_ += SMLP_PF_STEP)                        \
                _mm_prefetch(pf_ + 64 * v_, _MM_HINT_T0);                          \
        }                                                                          \
    } while (0)

/* ------------------------------------------------------------------ */
/* AVX-512: chunks of up to 128 floats = 8 zmm registers                */
/* ------------------------------------------------------------------ */
#define SMLP_T512 __attribute__((target("avx512f")))

SMLP_INLINE SMLP_T512 __mmask16 keep512(const smlp_epi_t *e, int col)
{
    /* (b0 + col + i) * golden for lanes i = 0..15, as (b0 + col) * golden + i * golden:
     * the same value modulo 2^32, one vector multiply fewer */
    const uint32_t g = SMLP_GOLDEN32;
    const __m512i iota_g = _mm512_setr_epi32(0, (int)g, (int)(2 * g), (int)(3 * g), (int)(4 * g),
        (int)(5 * g), (int)(6 * g), (int)(7 * g), (int)(8 * g), (int)(9 * g), (int)(10 * g),
        (int)(11 * g), (int)(12 * g), (int)(13 * g), (int)(14 * g), (int)(15 * g));
    const __m512i bg = _mm512_add_epi32(_mm512_set1_epi32((int)((e->b0 + (uint32_t)col) * g)),
                                        iota_g);
    __m512i x = _mm512_xor_si512(_mm512_set1_epi32((int)e->rk), bg);
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7FEB352D));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846CA68Bu));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    return _mm512_cmp_epu32_mask(x, _mm512_set1_epi32((int)e->thresh), _MM_CMPINT_NLT);
}

/* finish vector v (columns col..col+15) of a row: store the product and/or
 * the epilogue's result; the last vector of a chunk is masked by `m` */
/* one vector of a finished row: streamed when smlp_nt_store is on and the
 * vector is whole and 64-byte aligned, else a (masked) normal store */
SMLP_INLINE SMLP_T512 void st512(float *p, __mmask16 m, __m512 v, const int nt)
{
    if (nt && m == 0xFFFF && ((uintptr_t)p & 63) == 0) _mm512_stream_ps(p, v);
    else _mm512_mask_storeu_ps(p, m, v);
}

/* `nt` (smlp_nt_store, read once per chunk) is a literal at every call site
 * (SMLP_STORE_CHUNK), so each of the two copies of a chunk's stores has no test */
SMLP_INLINE SMLP_T512 void store512(__m512 acc, float *out, const smlp_epi_t *e, int col,
                                    __mmask16 m, const int nt)
{
    if (!e) { st512(out + col, m, acc, nt); return; }
    const __m512 zero = _mm512_setzero_ps();
    if (e->mode == SMLP_EPI_FWD) {
        if (e->write_z) st512(out + col, m, acc, nt);
        __m512 a = acc;
        __mmask16 sign = 0, keep = 0xFFFF;
        if (e->kind == 1) {
            a = _mm512_max_ps(a, zero);
            if (e->bits) sign = _mm512_cmp_ps_mask(acc, zero, _CMP_GT_OQ);
        } else if (e->kind == 2) {
            sign = _mm512_cmp_ps_mask(a, zero, _CMP_LT_OQ);
            a = _mm512_mask_mul_ps(a, sign, a, _mm512_set1_ps(e->slope));
        }
        if (e->thresh) {
            keep = keep512(e, col);
            a = _mm512_maskz_mul_ps(keep, a, _mm512_set1_ps(e->scale));
        }
        if (e->bits) {
            e->bits[2 * (col / 16)] = keep;
            e->bits[2 * (col / 16) + 1] = sign;
        }
        st512(e->dst + col, m, a, nt);
    } else if (e->bits) {  /* the masks the forward pass kept: the same bits */
        __m512 g = acc;
        const __mmask16 keep = e->bits[2 * (col / 16)], sign = e->bits[2 * (col / 16) + 1];
        if (e->thresh) g = _mm512_maskz_mul_ps(keep, g, _mm512_set1_ps(e->scale));
        if (e->kind == 1) g = _mm512_maskz_mov_ps(sign, g);
        else if (e->kind == 2) g = _mm512_mask_mul_ps(g, sign, g, _mm512_set1_ps(e->slope));
        st512(e->dst + col, m, g, nt);
    } else {
        __m512 g = acc;
        if (e->thresh) g = _mm512_maskz_mul_ps(keep512(e, col), g, _mm512_set1_ps(e->scale));
        const __m512 z = _mm512_maskz_loadu_ps(m, e->z + col);
        if (e->kind == 1) g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(z, zero, _CMP_GT_OQ), g);
        else if (e->kind == 2)
            g = _mm512_mask_mul_ps(g, _mm512_cmp_ps_mask(z, zero, _CMP_LT_OQ), g,
                                   _mm512_set1_ps(e->slope));
        st512(e->dst + col, m, g, nt);
    }
}

/* Accumulators are named variables a0..a7 (an array of vectors is not
 * reliably kept in registers by gcc: it spilled all eight to the stack on
 * every weight).  SMLP_V8(M) expands M(0) .. M(7); each use is guarded by a
 * comparison with the literal nv, which the compiler folds away. */
#define SMLP_V8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

/* load vector v of a row: full, or masked when it is the chunk's last */
#define SMLP_LD512(ptr, v) ((v) == nv - 1 ? _mm512_maskz_loadu_ps(tail, (ptr) + 16 * (v)) \
                                          : _mm512_loadu_ps((ptr) + 16 * (v)))

/* the stores of a finished chunk (accumulators a0.., columns c.., last vector
 * masked by `tail`): two copies, streaming or not, so that smlp_nt_store is
 * read once per chunk and each copy of store512 has no test (nt literal) */
#define SMLP_ST_PLAIN(v) if ((v) < nv) store512(a##v, out, ep_, c + 16 * (v), (v) == nv - 1 ? tail : 0xFFFF, 0);
#define SMLP_ST_NT(v) if ((v) < nv) store512(a##v, out, ep_, c + 16 * (v), (v) == nv - 1 ? tail : 0xFFFF, 1);
#define SMLP_STORES(EP)                                                            \
    do {                                                                           \
        const smlp_epi_t *const ep_ = (EP);                                        \
        if (smlp_nt_store) { SMLP_V8(SMLP_ST_NT) } else { SMLP_V8(SMLP_ST_PLAIN) } \
    } while (0)
/* with an epilogue, its fields are read from a local const copy: through the
 * pointer, every store of the row could have changed them (the compiler must
 * assume so), and each vector reloaded them */
#define SMLP_STORE_CHUNK()                                                         \
    do {                                                                           \
        if (e) {                                                                   \
            const smlp_epi_t ec_ = *e;                                             \
            SMLP_STORES(&ec_);                                                     \
        } else {                                                                   \
            SMLP_STORES((const smlp_epi_t *)0);                                    \
        }                                                                          \
    } while (0)

/* one chunk of `nv` vectors (nv is a literal at every call site, so the
 * accumulators live in registers); the last vector is masked by `tail`. */
SMLP_INLINE SMLP_T512 void spmm512_chunk(const int32_t *idx, const float *w,
        const int32_t *perm, int64_t n, const float *X, int64_t ldx, float init,
        float *out, const smlp_epi_t *e, int c, const int nv, const __mmask16 tail)
{
    const float *Xc = X + c;
    const __m512 a_init = _mm512_set1_ps(init);
    __m512 a0 = a_init, a1 = a_init, a2 = a_init, a3 = a_init;
    __m512 a4 = a_init, a5 = a_init, a6 = a_init, a7 = a_init;
    for (int64_t k = 0; k < n; k++) {
        const float *x = Xc + (int64_t)idx[k] * ldx;
        SMLP_PREFETCH_ROW(idx, k, n, Xc, ldx, nv);
        const __m512 wk = _mm512_set1_ps(perm ? w[perm[k]] : w[k]);
#define SMLP_FMA(v) if ((v) < nv) a##v = _mm512_fmadd_ps(wk, SMLP_LD512(x, v), a##v);
        SMLP_V8(SMLP_FMA)
#undef SMLP_FMA
    }
    SMLP_STORE_CHUNK();
}

#define SMLP_SWITCH8(nv, CALL)                                                     \
    switch (nv) {                                                                  \
    case 8: CALL(8); break;                                                        \
    case 7: CALL(7); break;                                                        \
    case 6: CALL(6); break;                                                        \
    case 5: CALL(5); break;                                                        \
    case 4: CALL(4); break;                                                        \
    case 3: CALL(3); break;                                                        \
    case 2: CALL(2); break;                                                        \
    default: CALL(1); break;                                                       \
    }

/* A chunk whose last vector is whole is inlined with the literal mask
 * SMLP_WHOLE, which gcc turns into plain loads and stores.  On Zen 5 loads and
 * stores masked by a mask computed at run time (as `tail` is, per call) ran
 * 1.7-3x slower than plain ones over rows in memory, although every vector
 * was whole (bench/bench_masked_stream.c, results/bench_issue23/); with
 * micro-batches of 16 every load of a gathered row was such a last vector */
#define SMLP_WHOLE ((__mmask16)0xFFFF)
#define SMLP_SWITCH8_TAIL(nv, rem, CALL, CALL_WHOLE)                                \
    do {                                                                           \
        if ((rem) == 16) { SMLP_SWITCH8(nv, CALL_WHOLE) } else { SMLP_SWITCH8(nv, CALL) } \
    } while (0)

static SMLP_T512 void spmm_row_avx512(const int32_t *idx, const float *w, const int32_t *perm,
                                      int64_t n, const float *X, int64_t ldx, int B,
                                      float init, float *out, const smlp_epi_t *e)
{
    for (int c = 0; c < B; c += 128) {
        const int width = (B - c < 128) ? (B - c) : 128;
        const int nv = (width + 15) / 16;
        const int rem = width - 16 * (nv - 1);
        const __mmask16 tail = (__mmask16)((rem == 16) ? 0xFFFF : ((1u << rem) - 1u));
#define SMLP_CALL(NV) spmm512_chunk(idx, w, perm, n, X, ldx, init, out, e, c, NV, tail)
#define SMLP_CALL_FULL(NV) spmm512_chunk(idx, w, perm, n, X, ldx, init, out, e, c, NV, \
                                         SMLP_WHOLE)
        SMLP_SWITCH8_TAIL(nv, rem, SMLP_CALL, SMLP_CALL_FULL);
#undef SMLP_CALL
#undef SMLP_CALL_FULL
    }
}

/* the weights of four consecutive rows r0..r0+3 of an index: row r starts
 * at s<r> and has n<r> weights; the first m weights of every row are done in
 * lockstep (the four-row kernels below) */
#define SMLP_ROWS4_SPANS(ptr, r0)                                                  \
    const int64_t s0 = (ptr)[r0], s1 = (ptr)[(r0) + 1], s2 = (ptr)[(r0) + 2],     \
                  s3 = (ptr)[(r0) + 3], s4 = (ptr)[(r0) + 4];                      \
    const int64_t n0 = s1 - s0, n1 = s2 - s1, n2 = s3 - s2, n3 = s4 - s3;          \
    const int64_t m = smlp_min4(n0, n1, n2, n3)

static inline int64_t smlp_min4(int64_t a, int64_t b, int64_t c, int64_t d)
{
    const int64_t ab = a < b ? a : b, cd = c < d ? c : d;
    return ab < cd ? ab : cd;
}

/* Four rows j0..j0+3 of a narrow batch at once (B <= 32: one chunk of nv <= 2
 * vectors).  Row by row, a chunk's nv accumulators form nv dependent FMA
 * chains, so at B <= 32 the forward pass waits on FMA latency; four rows in
 * lockstep give 4 nv independent chains.  Each row still sums its weights in
 * its own order from its bias, so Z and A are spmm512_chunk's bit for bit.
 * Small blocks only (no cross-row or in-row prefetch, no streaming stores:
 * smlp_rows4_ok). */
#define SMLP_R4_W(r, kk)                                                           \
    do {                                                                           \
        const float *x_ = X + (int64_t)idx[s##r + (kk)] * ldx;                     \
        const __m512 w_ = _mm512_set1_ps(w[s##r + (kk)]);                          \
        a##r##0 = _mm512_fmadd_ps(w_, SMLP_LD512(x_, 0), a##r##0);                 \
        if (nv > 1) a##r##1 = _mm512_fmadd_ps(w_, SMLP_LD512(x_, 1), a##r##1);     \
    } while (0)
#define SMLP_R4_ST(r)                                                              \
    do {                                                                           \
        float *o_ = Z + (j0 + (r)) * ldz;                                          \
        if (e) {                                                                   \
            const smlp_epi_t ec_ = e[r]; /* (see SMLP_STORE_CHUNK) */             \
            store512(a##r##0, o_, &ec_, 0, nv == 1 ? tail : SMLP_WHOLE, 0);        \
            if (nv > 1) store512(a##r##1, o_, &ec_, 16, tail, 0);                  \
        } else {                                                                   \
            store512(a##r##0, o_, NULL, 0, nv == 1 ? tail : SMLP_WHOLE, 0);        \
            if (nv > 1) store512(a##r##1, o_, NULL, 16, tail, 0);                  \
        }                                                                          \
    } while (0)
SMLP_INLINE SMLP_T512 void spmm512_rows4(const int64_t *indptr, int64_t j0,
        const int32_t *idx, const float *w, const float *X, int64_t ldx, const float *bias,
        float *Z, int64_t ldz, const smlp_epi_t *e, const int nv, const __mmask16 tail)
{
    SMLP_ROWS4_SPANS(indptr, j0);
    __m512 a00 = _mm512_set1_ps(bias[j0]), a01 = a00;
    __m512 a10 = _mm512_set1_ps(bias[j0 + 1]), a11 = a10;
    __m512 a20 = _mm512_set1_ps(bias[j0 + 2]), a21 = a20;
    __m512 a30 = _mm512_set1_ps(bias[j0 + 3]), a31 = a30;
    for (int64_t k = 0; k < m; k++) {
        SMLP_R4_W(0, k); SMLP_R4_W(1, k); SMLP_R4_W(2, k); SMLP_R4_W(3, k);
    }
    for (int64_t k = m; k < n0; k++) SMLP_R4_W(0, k);
    for (int64_t k = m; k < n1; k++) SMLP_R4_W(1, k);
    for (int64_t k = m; k < n2; k++) SMLP_R4_W(2, k);
    for (int64_t k = m; k < n3; k++) SMLP_R4_W(3, k);
    SMLP_R4_ST(0); SMLP_R4_ST(1); SMLP_R4_ST(2); SMLP_R4_ST(3);
}
#undef SMLP_R4_W
#undef SMLP_R4_ST

static SMLP_T512 void spmm_rows4_avx512(const int64_t *indptr, int64_t j0, const int32_t *idx,
                                        const float *w, const float *X, int64_t ldx, int B,
                                        const float *bias, float *Z, const smlp_epi_t *e)
{
    const int nv = (B + 15) / 16;
    const int rem = B - 16 * (nv - 1);
    const __mmask16 tail = (__mmask16)((rem == 16) ? 0xFFFF : ((1u << rem) - 1u));
    if (nv == 2) {
        if (rem == 16) spmm512_rows4(indptr, j0, idx, w, X, ldx, bias, Z, B, e, 2, SMLP_WHOLE);
        else spmm512_rows4(indptr, j0, idx, w, X, ldx, bias, Z, B, e, 2, tail);
    } else {
        if (rem == 16) spmm512_rows4(indptr, j0, idx, w, X, ldx, bias, Z, B, e, 1, SMLP_WHOLE);
        else spmm512_rows4(indptr, j0, idx, w, X, ldx, bias, Z, B, e, 1, tail);
    }
}

SMLP_INLINE SMLP_T512 __m128 smlp_reduce4_512(__m512 p0, __m512 p1, __m512 p2, __m512 p3)
{
    /* per 128-bit lane: interleave, add, shuffle, add -> (s0, s1, s2, s3) partials */
    const __m512 a = _mm512_add_ps(_mm512_unpacklo_ps(p0, p1), _mm512_unpackhi_ps(p0, p1));
    const __m512 b = _mm512_add_ps(_mm512_unpacklo_ps(p2, p3), _mm512_unpackhi_ps(p2, p3));
    const __m512 e = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    /* add the four lanes */
    const __m256 f = _mm256_add_ps(_mm512_castps512_ps256(e),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
}

/* <x, d> as a vector of partial sums, d held in named registers d0..d7 */
#define SMLP_DOT512(x, out)                                                        \
    do {                                                                           \
        __m512 p_ = _mm512_mul_ps(SMLP_LD512(x, 0), d0);                           \
        if (1 < nv) p_ = _mm512_fmadd_ps(SMLP_LD512(x, 1), d1, p_);                \
        if (2 < nv) p_ = _mm512_fmadd_ps(SMLP_LD512(x, 2), d2, p_);                \
        if (3 < nv) p_ = _mm512_fmadd_ps(SMLP_LD512(x, 3), d3, p_);                \
        if (4 < nv) p_ = _mm512_fmadd_ps(SMLP_LD512(x, 4), d4, p_);                \
        if (5 < nv) p_ = _mm512_fmadd_ps(SMLP_LD512(x, 5), d5, p_);                \
        if (6 < nv) p_ = _mm512_fmadd_ps(SMLP_LD512(x, 6), d6, p_);                \
        if (7 < nv) p_ = _mm512_fmadd_ps(SMLP_LD512(x, 7), d7, p_);                \
        (out) = p_;                                                                \
    } while (0)

/* g[k] (+)= scale * <X[idx_k, chunk], d[chunk]>; `accumulate` for chunks after the first.
 * Four weights at a time: four independent FMA chains, then one combined
 * reduction of the four zmm partial sums into one xmm of four sums. */
SMLP_INLINE SMLP_T512 void sddmm512_chunk(const int32_t *idx, int64_t n, const float *X,
        int64_t ldx, const float *d, float scale, float *g, int accumulate,
        const int nv, const __mmask16 tail)
{
    const __m512 zero = _mm512_setzero_ps();
#define SMLP_DLOAD(v) const __m512 d##v = (v) < nv ? SMLP_LD512(d, v) : zero;
    SMLP_V8(SMLP_DLOAD)
#undef SMLP_DLOAD
    const __m128 sc = _mm_set1_ps(scale);
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        SMLP_PREFETCH_ROW(idx, k, n, X, ldx, nv);
        SMLP_PREFETCH_ROW(idx, k + 1, n, X, ldx, nv);
        SMLP_PREFETCH_ROW(idx, k + 2, n, X, ldx, nv);
        SMLP_PREFETCH_ROW(idx, k + 3, n, X, ldx, nv);
        __m512 p0, p1, p2, p3;
        SMLP_DOT512(X + (int64_t)idx[k] * ldx, p0);
        SMLP_DOT512(X + (int64_t)idx[k + 1] * ldx, p1);
        SMLP_DOT512(X + (int64_t)idx[k + 2] * ldx, p2);
        SMLP_DOT512(X + (int64_t)idx[k + 3] * ldx, p3);
        __m128 s4 = _mm_mul_ps(smlp_reduce4_512(p0, p1, p2, p3), sc);
        if (accumulate) s4 = _mm_add_ps(_mm_loadu_ps(g + k), s4);
        _mm_storeu_ps(g + k, s4);
    }
    for (; k < n; k++) {
        __m512 p;
        SMLP_DOT512(X + (int64_t)idx[k] * ldx, p);
        const float s = _mm512_reduce_add_ps(p) * scale;
        g[k] = accumulate ? g[k] + s : s;
    }
}

static SMLP_T512 void sddmm_row_avx512(const int32_t *idx, int64_t n, const float *X,
                                       int64_t ldx, const float *d, int B, float scale,
                                       float *g)
{
    for (int c = 0; c < B; c += 128) {
        const int width = (B - c < 128) ? (B - c) : 128;
        const int nv = (width + 15) / 16;
        const int rem = width - 16 * (nv - 1);
        const __mmask16 tail = (__mmask16)((rem == 16) ? 0xFFFF : ((1u << rem) - 1u));
        const int acc = c > 0;
#define SMLP_CALL(NV) sddmm512_chunk(idx, n, X + c, ldx, d + c, scale, g, acc, NV, tail)
#define SMLP_CALL_FULL(NV) sddmm512_chunk(idx, n, X + c, ldx, d + c, scale, g, acc, NV, \
                                          SMLP_WHOLE)
        SMLP_SWITCH8_TAIL(nv, rem, SMLP_CALL, SMLP_CALL_FULL);
#undef SMLP_CALL
#undef SMLP_CALL_FULL
    }
}

/* fused backward, one chunk of nv vectors; g accumulates over chunks.
 * Registers: a0..a7 accumulate the gradient to the inputs, x0..x7 hold the
 * input row A[i, chunk]; each D row is loaded once for both products. */
SMLP_INLINE SMLP_T512 void bwd512_chunk(const int32_t *rows, const int32_t *perm, int64_t n,
        const float *w, const float *D, int64_t ldd, const float *x, float scale,
        float *out, float *g, const smlp_epi_t *e, int c, int accumulate,
        const int nv, const __mmask16 tail)
{
    const float *Dc = D + c;
    const float *xc = x + c;
    const __m512 zero = _mm512_setzero_ps();
    __m512 a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero, a6 = zero,
           a7 = zero;
#define SMLP_XLOAD(v) const __m512 x##v = (v) < nv ? SMLP_LD512(xc, v) : zero;
    SMLP_V8(SMLP_XLOAD)
#undef SMLP_XLOAD
    /* one weight: a += w_k * D[j_k]; p = <x, D[j_k]> (vector of partial sums) */
#define SMLP_BWD_W(kk, p)                                                          \
    do {                                                                           \
        const float *d_ = Dc + (int64_t)rows[kk] * ldd;                           \
        const __m512 wk_ = _mm512_set1_ps(perm ? w[perm[kk]] : w[kk]);            \
        __m512 dv_ = SMLP_LD512(d_, 0);                                            \
        a0 = _mm512_fmadd_ps(wk_, dv_, a0);                                        \
        __m512 q_ = _mm512_mul_ps(x0, dv_);                                        \
        SMLP_BWD_V(1) SMLP_BWD_V(2) SMLP_BWD_V(3) SMLP_BWD_V(4)                    \
        SMLP_BWD_V(5) SMLP_BWD_V(6) SMLP_BWD_V(7)                                  \
        p = q_;                                                                    \
    } while (0)
#define SMLP_BWD_V(v)                                                              \
    if ((v) < nv) {                                                                \
        dv_ = SMLP_LD512(d_, v);                                                   \
        a##v = _mm512_fmadd_ps(wk_, dv_, a##v);                                    \
        q_ = _mm512_fmadd_ps(x##v, dv_, q_);                                       \
    }
    const __m128 sc = _mm_set1_ps(scale);
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        SMLP_PREFETCH_ROW(rows, k, n, Dc, ldd, nv);
        SMLP_PREFETCH_ROW(rows, k + 1, n, Dc, ldd, nv);
        SMLP_PREFETCH_ROW(rows, k + 2, n, Dc, ldd, nv);
        SMLP_PREFETCH_ROW(rows, k + 3, n, Dc, ldd, nv);
        __m512 p0, p1, p2, p3;
        SMLP_BWD_W(k, p0);
        SMLP_BWD_W(k + 1, p1);
        SMLP_BWD_W(k + 2, p2);
        SMLP_BWD_W(k + 3, p3);
        __m128 s4 = _mm_mul_ps(smlp_reduce4_512(p0, p1, p2, p3), sc);
        if (accumulate) s4 = _mm_add_ps(_mm_loadu_ps(g + k), s4);
        _mm_storeu_ps(g + k, s4);
    }
    for (; k < n; k++) {
        __m512 p;
        SMLP_BWD_W(k, p);
        const float s = _mm512_reduce_add_ps(p) * scale;
        g[k] = accumulate ? g[k] + s : s;
    }
#undef SMLP_BWD_W
#undef SMLP_BWD_V
    SMLP_STORE_CHUNK();
}

static SMLP_T512 void bwd_row_avx512(const int32_t *rows, const int32_t *perm, int64_t n,
                                     const float *w, const float *D, int64_t ldd,
                                     const float *x, int B, float scale, float *out, float *g,
                                     const smlp_epi_t *e)
{
    for (int c = 0; c < B; c += 128) {
        const int width = (B - c < 128) ? (B - c) : 128;
        const int nv = (width + 15) / 16;
        const int rem = width - 16 * (nv - 1);
        const __mmask16 tail = (__mmask16)((rem == 16) ? 0xFFFF : ((1u << rem) - 1u));
        const int a = c > 0;
        /* two inlined copies: with and without perm (w read in order), so
         * that the test of perm folds away in each */
#define SMLP_CALL(NV) bwd512_chunk(rows, perm, n, w, D, ldd, x, scale, out, g, e, c, a, NV, tail)
#define SMLP_CALL_NOPERM(NV) bwd512_chunk(rows, NULL, n, w, D, ldd, x, scale, out, g, e, c, a, NV, tail)
#define SMLP_CALL_FULL(NV) bwd512_chunk(rows, perm, n, w, D, ldd, x, scale, out, g, e, c, a, NV, \
                                        SMLP_WHOLE)
#define SMLP_CALL_NOPERM_FULL(NV) bwd512_chunk(rows, NULL, n, w, D, ldd, x, scale, out, g, e, c, \
                                               a, NV, SMLP_WHOLE)
        if (perm) {
            SMLP_SWITCH8_TAIL(nv, rem, SMLP_CALL, SMLP_CALL_FULL);
        } else {
            SMLP_SWITCH8_TAIL(nv, rem, SMLP_CALL_NOPERM, SMLP_CALL_NOPERM_FULL);
        }
#undef SMLP_CALL
#undef SMLP_CALL_NOPERM
#undef SMLP_CALL_FULL
#undef SMLP_CALL_NOPERM_FULL
    }
}

/* Four input rows i0..i0+3 of the fused backward at once for narrow batches
 * (B <= 32: nv <= 2 vectors, one chunk), as spmm512_rows4 does for the
 * forward: row by row the gradient to the inputs is nv dependent FMA chains.
 * Each row keeps its own order, and its gradients are reduced in the same
 * groups (four consecutive weights from the row's start through
 * smlp_reduce4_512, the rest one by one), so G and g are bwd512_chunk's bit
 * for bit.  `tw` (a literal): the weights are in the transposed index's
 * order (w + row start), else w[perm[k]].  Small blocks only (smlp_rows4_ok). */
#define SMLP_B4_W(r, kk, p)                                                        \
    do {                                                                           \
        const float *d_ = D + (int64_t)rows[s##r + (kk)] * ldd;                    \
        const __m512 wk_ = _mm512_set1_ps(tw ? w[s##r + (kk)] : w[perm[s##r + (kk)]]); \
        __m512 dv_ = SMLP_LD512(d_, 0);                                            \
        a##r##0 = _mm512_fmadd_ps(wk_, dv_, a##r##0);                              \
        __m512 q_ = _mm512_mul_ps(x##r##0, dv_);                                   \
        if (nv > 1) {                                                              \
            dv_ = SMLP_LD512(d_, 1);                                               \
            a##r##1 = _mm512_fmadd_ps(wk_, dv_, a##r##1);                          \
            q_ = _mm512_fmadd_ps(x##r##1, dv_, q_);                                \
        }                                                                          \
        p = q_;                                                                    \
    } while (0)
#define SMLP_B4_G(r, kk)                                                           \
    do {                                                                           \
        __m512 p0_, p1_, p2_, p3_;                                                 \
        SMLP_B4_W(r, kk, p0_);                                                     \
        SMLP_B4_W(r, (kk) + 1, p1_);                                               \
        SMLP_B4_W(r, (kk) + 2, p2_);                                               \
        SMLP_B4_W(r, (kk) + 3, p3_);                                               \
        _mm_storeu_ps(g##r + (kk), _mm_mul_ps(smlp_reduce4_512(p0_, p1_, p2_, p3_), sc)); \
    } while (0)
#define SMLP_B4_REST(r)                                                            \
    do {                                                                           \
        int64_t k_ = m4;                                                           \
        for (; k_ + 4 <= n##r; k_ += 4) SMLP_B4_G(r, k_);                          \
        for (; k_ < n##r; k_++) {                                                  \
            __m512 p_;                                                             \
            SMLP_B4_W(r, k_, p_);                                                  \
            g##r[k_] = _mm512_reduce_add_ps(p_) * scale;                           \
        }                                                                          \
    } while (0)
#define SMLP_B4_ST(r)                                                              \
    do {                                                                           \
        if (e) {                                                                   \
            const smlp_epi_t ec_ = e[r]; /* (see SMLP_STORE_CHUNK) */             \
            store512(a##r##0, out[r], &ec_, 0, nv == 1 ? tail : SMLP_WHOLE, 0);    \
            if (nv > 1) store512(a##r##1, out[r], &ec_, 16, tail, 0);              \
        } else {                                                                   \
            store512(a##r##0, out[r], NULL, 0, nv == 1 ? tail : SMLP_WHOLE, 0);    \
            if (nv > 1) store512(a##r##1, out[r], NULL, 16, tail, 0);              \
        }                                                                          \
    } while (0)
#define SMLP_B4_X(r)                                                               \
    const __m512 x##r##0 = SMLP_LD512(X + (i0 + (r)) * (int64_t)B, 0);             \
    const __m512 x##r##1 = nv > 1 ? SMLP_LD512(X + (i0 + (r)) * (int64_t)B, 1) : zero;
SMLP_INLINE SMLP_T512 void bwd512_rows4(const int64_t *t_indptr, int64_t i0,
        const int32_t *rows, const int32_t *perm, const float *w, const float *D, int64_t ldd,
        const float *X, int B, float scale, float *const *out, float *const *g,
        const smlp_epi_t *e, const int tw, const int nv, const __mmask16 tail)
{
    SMLP_ROWS4_SPANS(t_indptr, i0);
    const int64_t m4 = m - m % 4;
    float *g0 = g[0], *g1 = g[1], *g2 = g[2], *g3 = g[3];
    const __m512 zero = _mm512_setzero_ps();
    const __m128 sc = _mm_set1_ps(scale);
    SMLP_B4_X(0) SMLP_B4_X(1) SMLP_B4_X(2) SMLP_B4_X(3)
    __m512 a00 = zero, a01 = zero, a10 = zero, a11 = zero;
    __m512 a20 = zero, a21 = zero, a30 = zero, a31 = zero;
    for (int64_t k = 0; k < m4; k += 4) {
        SMLP_B4_G(0, k); SMLP_B4_G(1, k); SMLP_B4_G(2, k); SMLP_B4_G(3, k);
    }
    SMLP_B4_REST(0); SMLP_B4_REST(1); SMLP_B4_REST(2); SMLP_B4_REST(3);
    SMLP_B4_ST(0); SMLP_B4_ST(1); SMLP_B4_ST(2); SMLP_B4_ST(3);
}
#undef SMLP_B4_W
#undef SMLP_B4_G
#undef SMLP_B4_REST
#undef SMLP_B4_ST
#undef SMLP_B4_X

static SMLP_T512 void bwd_rows4_avx512(const int64_t *t_indptr, int64_t i0,
        const int32_t *rows, const int32_t *perm, const float *w, const float *D, int64_t ldd,
        const float *X, int B, float scale, float *const *out, float *const *g,
        const smlp_epi_t *e)
{
    const int nv = (B + 15) / 16;
    const int rem = B - 16 * (nv - 1);
    const __mmask16 tail = (__mmask16)((rem == 16) ? 0xFFFF : ((1u << rem) - 1u));
    const int tw = perm == NULL;
#define SMLP_CALL(TW, NV, T) bwd512_rows4(t_indptr, i0, rows, perm, w, D, ldd, X, B, scale, \
                                          out, g, e, TW, NV, T)
    if (tw) {
        if (nv == 2) { if (rem == 16) SMLP_CALL(1, 2, SMLP_WHOLE); else SMLP_CALL(1, 2, tail); }
        else { if (rem == 16) SMLP_CALL(1, 1, SMLP_WHOLE); else SMLP_CALL(1, 1, tail); }
    } else {
        if (nv == 2) { if (rem == 16) SMLP_CALL(0, 2, SMLP_WHOLE); else SMLP_CALL(0, 2, tail); }
        else { if (rem == 16) SMLP_CALL(0, 1, SMLP_WHOLE); else SMLP_CALL(0, 1, tail); }
    }
#undef SMLP_CALL
}

/* Whole-vector specialisations: one row function per chunk width NV = B / 16
 * (B a multiple of 16, at most 128: one chunk, no masked vector), chosen once
 * per kernel call (smlp_*_row_for) instead of per row.  The generic row
 * functions above decide the chunk width and mask per row through a 16-way
 * switch; called once per row (through the dispatch pointer) that cost 10-12
 * ns a row on Zen 5, 20% of the Higgs shape's 1000 x 1000 forward product at
 * batch 128 (bench/bench_row_overheads.c).  The same chunk code with the
 * same literals: the same operations in the same order, bit for bit. */
#define SMLP_SPEC512(NV)                                                           \
static SMLP_T512 void spmm_row512_w##NV(const int32_t *idx, const float *w,       \
        const int32_t *perm, int64_t n, const float *X, int64_t ldx, int B,       \
        float init, float *out, const smlp_epi_t *e)                               \
{                                                                                  \
    (void)B;                                                                       \
    if (perm) spmm512_chunk(idx, w, perm, n, X, ldx, init, out, e, 0, NV, SMLP_WHOLE); \
    else spmm512_chunk(idx, w, NULL, n, X, ldx, init, out, e, 0, NV, SMLP_WHOLE);  \
}                                                                                  \
static SMLP_T512 void sddmm_row512_w##NV(const int32_t *idx, int64_t n,           \
        const float *X, int64_t ldx, const float *d, int B, float scale, float *g) \
{                                                                                  \
    (void)B;                                                                       \
    sddmm512_chunk(idx, n, X, ldx, d, scale, g, 0, NV, SMLP_WHOLE);                \
}                                                                                  \
static SMLP_T512 void bwd_row512_w##NV(const int32_t *rows, const int32_t *perm,  \
        int64_t n, const float *w, const float *D, int64_t ldd, const float *x,   \
        int B, float scale, float *out, float *g, const smlp_epi_t *e)             \
{                                                                                  \
    (void)B;                                                                       \
    if (perm) bwd512_chunk(rows, perm, n, w, D, ldd, x, scale, out, g, e, 0, 0, NV, SMLP_WHOLE); \
    else bwd512_chunk(rows, NULL, n, w, D, ldd, x, scale, out, g, e, 0, 0, NV, SMLP_WHOLE); \
}
SMLP_SPEC512(1) SMLP_SPEC512(2) SMLP_SPEC512(3) SMLP_SPEC512(4)
SMLP_SPEC512(5) SMLP_SPEC512(6) SMLP_SPEC512(7) SMLP_SPEC512(8)
#undef SMLP_SPEC512

/* ------------------------------------------------------------------ */
/* AVX2 + FMA: chunks of up to 64 floats = 8 ymm registers              */
/* ------------------------------------------------------------------ */
#define SMLP_T256 __attribute__((target("avx2,fma")))

SMLP_INLINE SMLP_T256 __m256i smlp_mask256(int rem)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), lane);
}

SMLP_INLINE SMLP_T256 __m256 keep256(const smlp_epi_t *e, int col)
{
    /* (b0 + col + i) * golden as (b0 + col) * golden + i * golden (see keep512) */
    const uint32_t g = SMLP_GOLDEN32;
    const __m256i iota_g = _mm256_setr_epi32(0, (int)g, (int)(2 * g), (int)(3 * g), (int)(4 * g),
                                             (int)(5 * g), (int)(6 * g), (int)(7 * g));
    const __m256i bg = _mm256_add_epi32(_mm256_set1_epi32((int)((e->b0 + (uint32_t)col) * g)),
                                        iota_g);
    __m256i x = _mm256_xor_si256(_mm256_set1_epi32((int)e->rk), bg);
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7FEB352D));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846CA68Bu));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    /* unsigned x >= thresh  <=>  max_u(x, thresh) == x */
    const __m256i th = _mm256_set1_epi32((int)e->thresh);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_max_epu32(x, th), x));
}

SMLP_INLINE SMLP_T256 void store256(__m256 acc, float *out, const smlp_epi_t *e, int col,
                                    __m256i m)
{
    if (!e) { _mm256_maskstore_ps(out + col, m, acc); return; }
    const __m256 zero = _mm256_setzero_ps();
    if (e->mode == SMLP_EPI_FWD) {
        _mm256_maskstore_ps(out + col, m, acc);
        __m256 a = acc;
        if (e->kind == 1) a = _mm256_max_ps(a, zero);
        else if (e->kind == 2)
            a = _mm256_blendv_ps(a, _mm256_mul_ps(a, _mm256_set1_ps(e->slope)),
                                 _mm256_cmp_ps(a, zero, _CMP_LT_OQ));
        if (e->thresh) a = _mm256_and_ps(keep256(e, col), _mm256_mul_ps(a, _mm256_set1_ps(e->scale)));
        _mm256_maskstore_ps(e->dst + col, m, a);
    } else {
        __m256 g = acc;
        if (e->thresh) g = _mm256_and_ps(keep256(e, col), _mm256_mul_ps(g, _mm256_set1_ps(e->scale)));
        const __m256 z = _mm256_maskload_ps(e->z + col, m);
        if (e->kind == 1) g = _mm256_and_ps(_mm256_cmp_ps(z, zero, _CMP_GT_OQ), g);
        else if (e->kind == 2)
            g = _mm256_blendv_ps(g, _mm256_mul_ps(g, _mm256_set1_ps(e->slope)),
                                 _mm256_cmp_ps(z, zero, _CMP_LT_OQ));
        _mm256_maskstore_ps(e->dst + col, m, g);
    }
}

#define SMLP_LD256(ptr, v) ((v) == nv - 1 ? _mm256_maskload_ps((ptr) + 8 * (v), tail)    \
                                          : _mm256_loadu_ps((ptr) + 8 * (v)))

SMLP_INLINE SMLP_T256 void spmm256_chunk(const int32_t *idx, const float *w,
        const int32_t *perm, int64_t n, const float *X, int64_t ldx, float init,
        float *out, const smlp_epi_t *e, int c, const int nv, const __m256i tail)
{
    const float *Xc = X + c;
    const __m256 a_init = _mm256_set1_ps(init);
    __m256 a0 = a_init, a1 = a_init, a2 = a_init, a3 = a_init;
    __m256 a4 = a_init, a5 = a_init, a6 = a_init, a7 = a_init;
    for (int64_t k = 0; k < n; k++) {
        const float *x = Xc + (int64_t)idx[k] * ldx;
        const __m256 wk = _mm256_set1_ps(perm ? w[perm[k]] : w[k]);
#define SMLP_FMA(v) if ((v) < nv) a##v = _mm256_fmadd_ps(wk, SMLP_LD256(x, v), a##v);
        SMLP_V8(SMLP_FMA)
#undef SMLP_FMA
    }
    const __m256i all = _mm256_set1_epi32(-1);
#define SMLP_ST(v) if ((v) < nv) store256(a##v, out, ep_, c + 8 * (v), (v) == nv - 1 ? tail : all);
    if (e) {
        const smlp_epi_t ec_ = *e, *const ep_ = &ec_; /* (see SMLP_STORE_CHUNK) */
        SMLP_V8(SMLP_ST)
    } else {
        const smlp_epi_t *const ep_ = NULL;
        SMLP_V8(SMLP_ST)
    }
#undef SMLP_ST
}

static SMLP_T256 void spmm_row_avx2(const int32_t *idx, const float *w, const int32_t *perm,
                                    int64_t n, const float *X, int64_t ldx, int B,
                                    float init, float *out, const smlp_epi_t *e)
{
    for (int c = 0; c < B; c += 64) {
        const int width = (B - c < 64) ? (B - c) : 64;
        const int nv = (width + 7) / 8;
        const __m256i tail = smlp_mask256(width - 8 * (nv - 1));
#define SMLP_CALL(NV) spmm256_chunk(idx, w, perm, n, X, ldx, init, out, e, c, NV, tail)
        SMLP_SWITCH8(nv, SMLP_CALL)
#undef SMLP_CALL
    }
}

SMLP_INLINE SMLP_T256 float smlp_hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehdup_ps(lo);
    __m128 s = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

#define SMLP_DOT256(x, out)                                                        \
    do {                                                                           \
        __m256 p_ = _mm256_mul_ps(SMLP_LD256(x, 0), d0);                           \
        if (1 < nv) p_ = _mm256_fmadd_ps(SMLP_LD256(x, 1), d1, p_);                \
        if (2 < nv) p_ = _mm256_fmadd_ps(SMLP_LD256(x, 2), d2, p_);                \
        if (3 < nv) p_ = _mm256_fmadd_ps(SMLP_LD256(x, 3), d3, p_);                \
        if (4 < nv) p_ = _mm256_fmadd_ps(SMLP_LD256(x, 4), d4, p_);                \
        if (5 < nv) p_ = _mm256_fmadd_ps(SMLP_LD256(x, 5), d5, p_);                \
        if (6 < nv) p_ = _mm256_fmadd_ps(SMLP_LD256(x, 6), d6, p_);                \
        if (7 < nv) p_ = _mm256_fmadd_ps(SMLP_LD256(x, 7), d7, p_);                \
        (out) = p_;                                                                \
    } while (0)

SMLP_INLINE SMLP_T256 void sddmm256_chunk(const int32_t *idx, int64_t n, const float *X,
        int64_t ldx, const float *d, float scale, float *g, int accumulate,
        const int nv, const __m256i tail)
{
    const __m256 zero = _mm256_setzero_ps();
#define SMLP_DLOAD(v) const __m256 d##v = (v) < nv ? SMLP_LD256(d, v) : zero;
    SMLP_V8(SMLP_DLOAD)
#undef SMLP_DLOAD
    const __m128 sc = _mm_set1_ps(scale);
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        __m256 p0, p1, p2, p3;
        SMLP_DOT256(X + (int64_t)idx[k] * ldx, p0);
        SMLP_DOT256(X + (int64_t)idx[k + 1] * ldx, p1);
        SMLP_DOT256(X + (int64_t)idx[k + 2] * ldx, p2);
        SMLP_DOT256(X + (int64_t)idx[k + 3] * ldx, p3);
        const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(p0, p1), _mm256_hadd_ps(p2, p3));
        __m128 s4 = _mm_mul_ps(_mm_add_ps(_mm256_castps256_ps128(h),
                                          _mm256_extractf128_ps(h, 1)), sc);
        if (accumulate) s4 = _mm_add_ps(_mm_loadu_ps(g + k), s4);
        _mm_storeu_ps(g + k, s4);
    }
    for (; k < n; k++) {
        __m256 p;
        SMLP_DOT256(X + (int64_t)idx[k] * ldx, p);
        const float s = smlp_hsum256(p) * scale;
        g[k] = accumulate ? g[k] + s : s;
    }
}

static SMLP_T256 void sddmm_row_avx2(const int32_t *idx, int64_t n, const float *X,
                                     int64_t ldx, const float *d, int B, float scale,
                                     float *g)
{
    for (int c = 0; c < B; c += 64) {
        const int width = (B - c < 64) ? (B - c) : 64;
        const int nv = (width + 7) / 8;
        const __m256i tail = smlp_mask256(width - 8 * (nv - 1));
        const int acc = c > 0;
#define SMLP_CALL(NV) sddmm256_chunk(idx, n, X + c, ldx, d + c, scale, g, acc, NV, tail)
        SMLP_SWITCH8(nv, SMLP_CALL)
#undef SMLP_CALL
    }
}

/* fused backward with AVX2: chunks of 32 floats (4 ymm accumulators + 4 ymm of x) */
SMLP_INLINE SMLP_T256 void bwd256_chunk(const int32_t *rows, const int32_t *perm, int64_t n,
        const float *w, const float *D, int64_t ldd, const float *x, float scale,
        float *out, float *g, const smlp_epi_t *e, int c, int accumulate,
        const int nv, const __m256i tail)
{
    const float *Dc = D + c;
    const float *xc = x + c;
    const __m256 zero = _mm256_setzero_ps();
    __m256 a0 = zero, a1 = zero, a2 = zero, a3 = zero;
    const __m256 x0 = SMLP_LD256(xc, 0);
    const __m256 x1 = 1 < nv ? SMLP_LD256(xc, 1) : zero;
    const __m256 x2 = 2 < nv ? SMLP_LD256(xc, 2) : zero;
    const __m256 x3 = 3 < nv ? SMLP_LD256(xc, 3) : zero;
    for (int64_t k = 0; k < n; k++) {
        const float *d = Dc + (int64_t)rows[k] * ldd;
        const __m256 wk = _mm256_set1_ps(perm ? w[perm[k]] : w[k]);
        __m256 dv = SMLP_LD256(d, 0);
        a0 = _mm256_fmadd_ps(wk, dv, a0);
        __m256 p = _mm256_mul_ps(x0, dv);
#define SMLP_BWD_V(v)                                                              \
        if ((v) < nv) {                                                            \
            dv = SMLP_LD256(d, v);                                                 \
            a##v = _mm256_fmadd_ps(wk, dv, a##v);                                  \
            p = _mm256_fmadd_ps(x##v, dv, p);                                      \
        }
        SMLP_BWD_V(1) SMLP_BWD_V(2) SMLP_BWD_V(3)
#undef SMLP_BWD_V
        const float s = smlp_hsum256(p) * scale;
        g[k] = accumulate ? g[k] + s : s;
    }
    const __m256i all = _mm256_set1_epi32(-1);
#define SMLP_ST4(EP)                                                               \
    do {                                                                           \
        store256(a0, out, (EP), c, nv == 1 ? tail : all);                          \
        if (1 < nv) store256(a1, out, (EP), c + 8, nv == 2 ? tail : all);          \
        if (2 < nv) store256(a2, out, (EP), c + 16, nv == 3 ? tail : all);         \
        if (3 < nv) store256(a3, out, (EP), c + 24, tail);                         \
    } while (0)
    if (e) {
        const smlp_epi_t ec_ = *e; /* (see SMLP_STORE_CHUNK) */
        SMLP_ST4(&ec_);
    } else {
        SMLP_ST4((const smlp_epi_t *)NULL);
    }
#undef SMLP_ST4
}

static SMLP_T256 void bwd_row_avx2(const int32_t *rows, const int32_t *perm, int64_t n,
                                   const float *w, const float *D, int64_t ldd,
                                   const float *x, int B, float scale, float *out, float *g,
                                   const smlp_epi_t *e)
{
    for (int c = 0; c < B; c += 32) {
        const int width = (B - c < 32) ? (B - c) : 32;
        const int nv = (width + 7) / 8;
        const __m256i tail = smlp_mask256(width - 8 * (nv - 1));
        const int a = c > 0;
        if (perm) {  /* (two inlined copies, as in bwd_row_avx512) */
            switch (nv) {
            case 4: bwd256_chunk(rows, perm, n, w, D, ldd, x, scale, out, g, e, c, a, 4, tail); break;
            case 3: bwd256_chunk(rows, perm, n, w, D, ldd, x, scale, out, g, e, c, a, 3, tail); break;
            case 2: bwd256_chunk(rows, perm, n, w, D, ldd, x, scale, out, g, e, c, a, 2, tail); break;
            default: bwd256_chunk(rows, perm, n, w, D, ldd, x, scale, out, g, e, c, a, 1, tail); break;
            }
        } else {
            switch (nv) {
            case 4: bwd256_chunk(rows, NULL, n, w, D, ldd, x, scale, out, g, e, c, a, 4, tail); break;
            case 3: bwd256_chunk(rows, NULL, n, w, D, ldd, x, scale, out, g, e, c, a, 3, tail); break;
            case 2: bwd256_chunk(rows, NULL, n, w, D, ldd, x, scale, out, g, e, c, a, 2, tail); break;
            default: bwd256_chunk(rows, NULL, n, w, D, ldd, x, scale, out, g, e, c, a, 1, tail); break;
            }
        }
    }
}

/* The forward product of a layer whose rows are all full (row j holds every
 * input 0..n_in-1, in order: the output layers of the paper's networks, which
 * SET never evolves), R <= 4 rows at once over a block of 64 columns.  Each
 * row's sums are spmm512_chunk's (from the bias, the inputs in order, one FMA
 * chain per vector): the same bits.  But the rows advance together, so each
 * input row X[i] is read once per four rows instead of once per row: a
 * 1000 x 10 output layer read its 512 KiB input block ten times a batch.
 * `whole`: all four vectors full (a literal), else `width` < 64 columns. */
#define SMLP_D4(M, g) M(g, 0) M(g, 1) M(g, 2) M(g, 3)
#define SMLP_D16(M) SMLP_D4(M, 0) SMLP_D4(M, 1) SMLP_D4(M, 2) SMLP_D4(M, 3)
SMLP_INLINE SMLP_T512 void dense512_block(const float *w, int64_t n_in, const float *X,
        int64_t ldx, const float *bias, float *Z, int64_t ldz, int64_t j0, int c,
        const int R, const int whole, int width)
{
    __mmask16 m[4];
    for (int v = 0; v < 4; v++) {
        const int left = width - 16 * v;
        m[v] = whole ? (__mmask16)0xFFFF
                     : (__mmask16)(left >= 16 ? 0xFFFF : (left > 0 ? (1u << left) - 1u : 0u));
    }
    const float *wr[4];
    for (int g = 0; g < 4; g++) wr[g] = w + (j0 + (g < R ? g : 0)) * n_in;
#define SMLP_D_INIT(g, v) __m512 a##g##_##v = _mm512_set1_ps((g) < R ? bias[j0 + (g)] : 0.0f);
    SMLP_D16(SMLP_D_INIT)
#undef SMLP_D_INIT
    const float *Xc = X + c;
    for (int64_t i = 0; i < n_in; i++) {
        const float *x = Xc + i * ldx;
        const __m512 x0 = whole ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(m[0], x);
        const __m512 x1 = whole ? _mm512_loadu_ps(x + 16) : _mm512_maskz_loadu_ps(m[1], x + 16);
        const __m512 x2 = whole ? _mm512_loadu_ps(x + 32) : _mm512_maskz_loadu_ps(m[2], x + 32);
        const __m512 x3 = whole ? _mm512_loadu_ps(x + 48) : _mm512_maskz_loadu_ps(m[3], x + 48);
#define SMLP_D_W(g) const __m512 w##g = _mm512_set1_ps((g) < R ? wr[g][i] : 0.0f);
        SMLP_D_W(0) SMLP_D_W(1) SMLP_D_W(2) SMLP_D_W(3)
#undef SMLP_D_W
#define SMLP_D_FMA(g, v) if ((g) < R) a##g##_##v = _mm512_fmadd_ps(w##g, x##v, a##g##_##v);
        SMLP_D16(SMLP_D_FMA)
#undef SMLP_D_FMA
    }
#define SMLP_D_ST(g, v)                                                            \
    if ((g) < R) {                                                                 \
        float *z_ = Z + (j0 + (g)) * ldz + c + 16 * (v);                           \
        if (whole) _mm512_storeu_ps(z_, a##g##_##v);                               \
        else _mm512_mask_storeu_ps(z_, m[v], a##g##_##v);                          \
    }
    SMLP_D16(SMLP_D_ST)
#undef SMLP_D_ST
}
#undef SMLP_D4
#undef SMLP_D16

static SMLP_T512 void smlp_forward_dense_avx512(const float *w, int64_t n_in, int64_t n_out,
        const float *X, int64_t ldx, int B, const float *bias, float *Z, int64_t blk)
{
    const int64_t n_cb = (B + 63) / 64;
    const int64_t j0 = (blk / n_cb) * 4;
    const int c = (int)(blk % n_cb) * 64;
    const int R = n_out - j0 < 4 ? (int)(n_out - j0) : 4;
    const int width = B - c < 64 ? B - c : 64;
#define SMLP_D_CALL(RR)                                                            \
    do {                                                                           \
        if (width == 64) dense512_block(w, n_in, X, ldx, bias, Z, B, j0, c, RR, 1, 64); \
        else dense512_block(w, n_in, X, ldx, bias, Z, B, j0, c, RR, 0, width);     \
    } while (0)
    switch (R) {
    case 4: SMLP_D_CALL(4); break;
    case 3: SMLP_D_CALL(3); break;
    case 2: SMLP_D_CALL(2); break;
    default: SMLP_D_CALL(1); break;
    }
#undef SMLP_D_CALL
}
#endif /* SMLP_X86 */

#if !SMLP_X86
static void bwd_rows4_avx512(const int64_t *t_indptr, int64_t i0, const int32_t *rows,
                             const int32_t *perm, const float *w, const float *D, int64_t ldd,
                             const float *X, int B, float scale, float *const *out,
                             float *const *g, const smlp_epi_t *e)
{
    (void)t_indptr; (void)i0; (void)rows; (void)perm; (void)w; (void)D; (void)ldd; (void)X;
    (void)B; (void)scale; (void)out; (void)g; (void)e;  /* never called without AVX-512 */
}
static void spmm_rows4_avx512(const int64_t *indptr, int64_t j0, const int32_t *idx,
                              const float *w, const float *X, int64_t ldx, int B,
                              const float *bias, float *Z, const smlp_epi_t *e)
{
    (void)indptr; (void)j0; (void)idx; (void)w; (void)X; (void)ldx; (void)B; (void)bias;
    (void)Z; (void)e;  /* never called: smlp_rows4_ok is 0 without AVX-512 */
}
static void smlp_forward_dense_avx512(const float *w, int64_t n_in, int64_t n_out,
        const float *X, int64_t ldx, int B, const float *bias, float *Z, int64_t blk)
{
    (void)w; (void)n_in; (void)n_out; (void)X; (void)ldx; (void)B; (void)bias; (void)Z;
    (void)blk;  /* never called: smlp_dense_ok is 0 without AVX-512 */
}
#endif

/* ------------------------------------------------------------------ */
/* run-time dispatch                                                   */
/* ------------------------------------------------------------------ */
typedef void (*smlp_spmm_fn)(const int32_t *, const float *, const int32_t *, int64_t,
                             const float *, int64_t, int, float, float *, const smlp_epi_t *);
typedef void (*smlp_sddmm_fn)(const int32_t *, int64_t, const float *, int64_t,
                              const float *, int, float, float *);
typedef void (*smlp_bwd_fn)(const int32_t *, const int32_t *, int64_t, const float *,
                            const float *, int64_t, const float *, int, float, float *, float *,
                            const smlp_epi_t *);

static smlp_spmm_fn smlp_spmm_row = spmm_row_scalar;
static smlp_sddmm_fn smlp_sddmm_row = sddmm_row_scalar;
static smlp_bwd_fn smlp_bwd_row = bwd_row_scalar;
static int smlp_simd_level = 0;   /* 0 scalar, 1 avx2, 2 avx512 */
/* distance of the cross-row prefetch (smlp_prefetch_ahead) in weights;
 * 0 turns it off (set from Python: _spmm.prefetch_distance) */
static int smlp_pf_ahead = 24;

/* best level this CPU supports */
static int smlp_cpu_level(void)
{
#if SMLP_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

/* select a level (clamped to what the CPU supports); returns the level used.
 * requested < 0: the best available, unless SPARSE_MLP_SIMD says otherwise. */
static int smlp_dispatch_init(int requested)
{
    const int best = smlp_cpu_level();
    int level = best;
    if (requested < 0) {
        const char *env = getenv("SPARSE_MLP_SIMD");
        if (env && env[0]) {
            if (!strcmp(env, "scalar")) level = 0;
            else if (!strcmp(env, "avx2")) level = 1;
            else if (!strcmp(env, "avx512")) level = 2;
        }
    } else {
        level = requested;
    }
    if (level > best) level = best;
    smlp_spmm_row = spmm_row_scalar;
    smlp_sddmm_row = sddmm_row_scalar;
    smlp_bwd_row = bwd_row_scalar;
#if SMLP_X86
    if (level == 2) {
        smlp_spmm_row = spmm_row_avx512; smlp_sddmm_row = sddmm_row_avx512;
        smlp_bwd_row = bwd_row_avx512;
    } else if (level == 1) {
        smlp_spmm_row = spmm_row_avx2; smlp_sddmm_row = sddmm_row_avx2;
        smlp_bwd_row = bwd_row_avx2;
    }
#endif
    smlp_simd_level = level;
    return level;
}

/* The row function for a whole kernel call on a batch of B: the AVX-512
 * whole-vector specialisation when B is a multiple of 16 up to 128, else the
 * generic one of the selected level.  smlp_row_spec = 0 (_spmm.row_specialisation)
 * keeps the generic ones, for the tests that compare the two and for A/B timing. */
static int smlp_row_spec = 1;
static inline int smlp_spec_slot(int B)
{
    return (smlp_row_spec && smlp_simd_level == 2 && B >= 16 && B <= 128 && B % 16 == 0)
           ? B / 16 - 1 : -1;
}
#if SMLP_X86
static const smlp_spmm_fn smlp_spmm512_whole[8] = {
    spmm_row512_w1, spmm_row512_w2, spmm_row512_w3, spmm_row512_w4,
    spmm_row512_w5, spmm_row512_w6, spmm_row512_w7, spmm_row512_w8};
static const smlp_sddmm_fn smlp_sddmm512_whole[8] = {
    sddmm_row512_w1, sddmm_row512_w2, sddmm_row512_w3, sddmm_row512_w4,
    sddmm_row512_w5, sddmm_row512_w6, sddmm_row512_w7, sddmm_row512_w8};
static const smlp_bwd_fn smlp_bwd512_whole[8] = {
    bwd_row512_w1, bwd_row512_w2, bwd_row512_w3, bwd_row512_w4,
    bwd_row512_w5, bwd_row512_w6, bwd_row512_w7, bwd_row512_w8};
#define SMLP_ROW_FOR(KIND)                                                         \
static inline smlp_##KIND##_fn smlp_##KIND##_row_for(int B)                        \
{                                                                                  \
    const int s = smlp_spec_slot(B);                                               \
    return s >= 0 ? smlp_##KIND##512_whole[s] : smlp_##KIND##_row;                 \
}
#else
#define SMLP_ROW_FOR(KIND)                                                         \
static inline smlp_##KIND##_fn smlp_##KIND##_row_for(int B)                        \
{                                                                                  \
    (void)B;                                                                       \
    return smlp_##KIND##_row;                                                      \
}
#endif
SMLP_ROW_FOR(spmm) SMLP_ROW_FOR(sddmm) SMLP_ROW_FOR(bwd)
#undef SMLP_ROW_FOR

/* whether the forward pass may take four rows at once (spmm_rows4_avx512):
 * AVX-512, a narrow batch, and a block small enough that neither the in-row
 * prefetch nor streaming stores are on (set for this call before the test) */
static inline int smlp_rows4_ok(int B)
{
    return smlp_simd_level == 2 && B > 0 && B <= 32 && !smlp_pf_row && !smlp_nt_store;
}

/* whether the forward pass (without epilogue) may take a layer's rows four at
 * a time (smlp_forward_dense_avx512): AVX-512, at most SMLP_DENSE_MAX_ROWS
 * rows, every row full (nnz = n_in * n_out: the index structure, which the
 * kernels trust, then holds every input of every row in order), a batch of
 * at least 64 (one whole block of columns), and streaming stores off.  Its
 * work comes in smlp_dense_blocks(n_out, B) blocks of four rows (fewer in the
 * last) by 64 columns.  At batch 128 a 1000 x 10 output layer took 11.7
 * against 41.4 us, a 4000 x 10 one 77 against 196 us, a 1000 x 2 one 3.5
 * against 8.7 us (one thread); at batch 32 the gain was within 10% and two
 * threads lost on the 4000 x 10 layer (three blocks for two threads), hence
 * the 64 (python bench/bench_dense_rows.py). */
#define SMLP_DENSE_MAX_ROWS 16
static int smlp_dense_on = 1;  /* 0: the row path always (_spmm.dense_rows) */
static inline int smlp_dense_ok(int64_t n_in, int64_t n_out, int64_t nnz, int B)
{
    return smlp_dense_on && smlp_simd_level == 2 && n_out >= 1 && n_out <= SMLP_DENSE_MAX_ROWS && n_in >= 1
           && B >= 64 && nnz == n_in * n_out && !smlp_nt_store;
}
static inline int64_t smlp_dense_blocks(int64_t n_out, int B)
{
    return ((n_out + 3) / 4) * (int64_t)((B + 63) / 64);
}

/* ------------------------------------------------------------------ */
/* row sums (bias gradients)                                           */
/* ------------------------------------------------------------------ */
/* s[r] = sum over b of D[r, b] for the rows of block jb (of SMLP_BIAS_BLOCK
 * rows; the last one ends at n_rows) of a row-major block, each sum in the order of a plain loop: ((0 + D[r,0]) + D[r,1]) +
 * ...  One row alone is one chain of dependent additions that waits on the
 * adder's latency at every element (~85 us for 1000 rows of 128 on the
 * EPYC this was measured on, as long as the layer's forward product); eight
 * rows at a time keep eight independent chains in flight.  Every sum is the
 * same sequence of IEEE additions as before, so the results are the same
 * bit for bit (no reassociation: the build has no -ffast-math).  With AVX-512,
 * 32 rows at a time are summed a row per vector lane (smlp_row_sums32_avx512):
 * 18 us -> 6 us for 1000 rows of 128 on Zen 5 (bench/bench_row_overheads.c),
 * still in the plain order. */
#if SMLP_X86
/* 16 x 16 floats transposed in registers: r[i] is row i, on return c[k] is
 * column k (unpack pairs, then pairs of pairs, then 128-bit lanes twice) */
SMLP_INLINE SMLP_T512 void smlp_tr16_regs(const __m512 r[16], __m512 c[16])
{
    __m512 t[16], u[16], v[16];
    for (int i = 0; i < 16; i += 2) {  /* per 128-bit lane: (a0 b0 a1 b1), (a2 b2 a3 b3) */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int g = 0; g < 16; g += 4) {  /* u[g + c], lane l: rows g..g+3 of column 4l + c */
        const __m512d t0 = _mm512_castps_pd(t[g]), t1 = _mm512_castps_pd(t[g + 1]);
        const __m512d t2 = _mm512_castps_pd(t[g + 2]), t3 = _mm512_castps_pd(t[g + 3]);
        u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (int h = 0; h < 16; h += 8)  /* v[h + 2c]: columns c, c+8; v[h + 2c + 1]: c+4, c+12 */
        for (int k = 0; k < 4; k++) {
            v[h + 2 * k] = _mm512_shuffle_f32x4(u[h + k], u[h + 4 + k], 0x88);
            v[h + 2 * k + 1] = _mm512_shuffle_f32x4(u[h + k], u[h + 4 + k], 0xDD);
        }
    for (int k = 0; k < 4; k++) {
        c[k] = _mm512_shuffle_f32x4(v[2 * k], v[8 + 2 * k], 0x88);
        c[k + 8] = _mm512_shuffle_f32x4(v[2 * k], v[8 + 2 * k], 0xDD);
        c[k + 4] = _mm512_shuffle_f32x4(v[2 * k + 1], v[8 + 2 * k + 1], 0x88);
        c[k + 12] = _mm512_shuffle_f32x4(v[2 * k + 1], v[8 + 2 * k + 1], 0xDD);
    }
}

/* the plain-order sums of 32 rows (smlp_row_sums), a row per vector lane:
 * 16 x 16 tiles transposed in registers, so that lane i adds row i's
 * elements one after another, b = 0, 1, 2, ... as the scalar loop does (two
 * groups of 16 rows: two independent chains of additions) */
static SMLP_T512 void smlp_row_sums32_avx512(const float *D, int64_t ldd, int B, float *s)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int b = 0;
    for (; b + 16 <= B; b += 16) {
        __m512 r[16], c[16], r1[16], c1[16];
        for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(D + i * ldd + b);
        for (int i = 0; i < 16; i++) r1[i] = _mm512_loadu_ps(D + (16 + i) * ldd + b);
        smlp_tr16_regs(r, c);
        smlp_tr16_regs(r1, c1);
        for (int k = 0; k < 16; k++) {
            acc0 = _mm512_add_ps(acc0, c[k]);
            acc1 = _mm512_add_ps(acc1, c1[k]);
        }
    }
    _mm512_storeu_ps(s, acc0);
    _mm512_storeu_ps(s + 16, acc1);
    for (; b < B; b++)
        for (int i = 0; i < 32; i++) s[i] += D[i * ldd + b];
}
#endif

#define SMLP_BIAS_BLOCK 64  /* rows per call: block jb is rows [64 jb, 64 (jb + 1)) */
static void smlp_row_sums(const float *D, int64_t ldd, int64_t jb, int64_t n_rows, int B,
                          float *s)
{
    const int64_t r0 = jb * SMLP_BIAS_BLOCK;
    const int64_t r1 = r0 + SMLP_BIAS_BLOCK < n_rows ? r0 + SMLP_BIAS_BLOCK : n_rows;
    int64_t r = r0;
#if SMLP_X86
    if (smlp_simd_level == 2)
        for (; r + 32 <= r1; r += 32) smlp_row_sums32_avx512(D + r * ldd, ldd, B, s + r);
#endif
    for (; r + 8 <= r1; r += 8) {
        const float *d = D + r * ldd;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f, s4 = 0.f, s5 = 0.f, s6 = 0.f, s7 = 0.f;
        for (int b = 0; b < B; b++) {
            s0 += d[b];
            s1 += d[ldd + b];
            s2 += d[2 * ldd + b];
            s3 += d[3 * ldd + b];
            s4 += d[4 * ldd + b];
            s5 += d[5 * ldd + b];
            s6 += d[6 * ldd + b];
            s7 += d[7 * ldd + b];
        }
        s[r] = s0; s[r + 1] = s1; s[r + 2] = s2; s[r + 3] = s3;
        s[r + 4] = s4; s[r + 5] = s5; s[r + 6] = s6; s[r + 7] = s7;
    }
    for (; r < r1; r++) {
        const float *d = D + r * ldd;
        float t = 0.f;
        for (int b = 0; b < B; b++) t += d[b];
        s[r] = t;
    }
}

/* ------------------------------------------------------------------ */
/* cross-row prefetch for layers with short rows                        */
/* ------------------------------------------------------------------ */
/* prefetch `bytes` bytes from p (every line, and the last byte when p is not
 * line-aligned) into all cache levels */
static inline void smlp_prefetch_block(const void *p, int64_t bytes)
{
#if defined(__GNUC__)
    const char *r = (const char *)p;
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(r + o, 0, 3);
    __builtin_prefetch(r + bytes - 1, 0, 3);
#else
    (void)p; (void)bytes;
#endif
}

/* At eps ~1 a row holds about two weights, so the in-row prefetch of the
 * row kernels (SMLP_PF weights ahead inside one row) never fires and every
 * gathered row costs a full memory latency.  The parallel loops call this
 * at the start of a row whose weights sit at positions p0..p1 of the index:
 * it prefetches the rows X[idx[p]] (row_bytes each) that the kernels will
 * gather smlp_pf_ahead positions later; `pend` is the end of the index.
 * Only the gathered rows: prefetching the weights scattered through a
 * transposed index (w[perm[p]]) as well made the backward pass SLOWER on
 * the EPYC this was tuned on (0.78 s -> 1.06 s for a 5M x 5M eps-1 layer at
 * batch 64, one thread).  Prefetches change no result. */
static inline void smlp_prefetch_ahead(const int32_t *idx, int64_t p0, int64_t p1,
                                       int64_t pend, const float *X, int64_t ldx,
                                       int64_t row_bytes)
{
#if defined(__GNUC__)
    const int64_t dist = smlp_pf_ahead;
    int64_t b = p1 + dist;
    if (b > pend) b = pend;
    for (int64_t p = p0 + dist; p < b; p++)
        smlp_prefetch_block(X + (int64_t)idx[p] * ldx, row_bytes);
#else
    (void)idx; (void)p0; (void)p1; (void)pend; (void)X; (void)ldx; (void)row_bytes;
#endif
}

/* The input row a later row of the same loop reads (X[i + SMLP_PF_ROWS]).
 * Rows are read in order, but each row's work between two such reads is
 * long and irregular (the epilogue, the gradient's reductions) and the
 * hardware prefetcher fell behind: on a 5M-input eps-1 layer at batch 64 the
 * fused backward waited on the load of X[i] ~60% of its time. */
/* only for blocks past the L3 (32 MiB on the EPYC VM): smaller ones come
 * from the L3, where the extra instructions cost the CIFAR-10 layers
 * (1.5-2 MiB blocks) a few percent */
static int64_t smlp_row_pf_min = 64LL << 20;  /* bytes; 0 = never (_spmm.row_prefetch) */
static inline int smlp_row_prefetch_on(int64_t block_bytes)
{
    return smlp_row_pf_min > 0 && block_bytes >= smlp_row_pf_min;
}
#define SMLP_PF_ROWS 4           /* rows ahead, at least ... */
#define SMLP_PF_ROW_BYTES 2048    /* ... and at least this many bytes ahead */
static inline void smlp_prefetch_row(const float *X, int64_t ldx, int64_t i, int64_t n_rows,
                                     int64_t row_bytes)
{
#if defined(__GNUC__)
    int64_t d = row_bytes > 0 ? SMLP_PF_ROW_BYTES / row_bytes : SMLP_PF_ROWS;
    if (d < SMLP_PF_ROWS) d = SMLP_PF_ROWS;
    if (i + d < n_rows) smlp_prefetch_block(X + (i + d) * ldx, row_bytes);
#else
    (void)X; (void)ldx; (void)i; (void)n_rows; (void)row_bytes;
#endif
}

/* whether a layer's rows are short enough for the cross-row prefetch, and
 * the block its rows are gathered from (gathered_bytes) too large for L2 */
static inline int smlp_use_ahead(int64_t nnz, int64_t n_rows, int64_t gathered_bytes)
{
    return smlp_pf_ahead > 0 && n_rows > 0 && nnz < 16 * n_rows
           && gathered_bytes >= SMLP_AHEAD_MIN_BYTES;
}

/* ------------------------------------------------------------------ */
/* threads per call                                                     */
/* ------------------------------------------------------------------ */
/* A kernel call with less work than smlp_min_work (multiply-adds, nnz * B
 * for the products) runs on ONE thread.  Waking a team costs a scheduler
 * wake-up, and on a shared node a team member whose core another process
 * holds stalls the call until it is scheduled: ~0.1-0.15 ms a call on the
 * 2-core EPYC VM this was measured on, next to one busy process (and a time
 * slice, milliseconds, while threads spin for libgomp's default 300000
 * turns; kernels.py bounds that).  2^20 multiply-adds take ~60 us on one
 * core, so below it a second thread saves at most ~30 us but can lose 0.1
 * ms: Madelon's network at batch 128 (calls of 0.1-1.2 M) ran 2.5x slower
 * on 2 threads than on 1 next to a busy process with 2^19 here, 1.5x with
 * 2^20, 1.0x with 2^21; at batch 32 every call is below 2^19 and the whole
 * step is serial.  Results never depend on it (every output row is
 * computed by one thread in a fixed order either way).  Per module: set by
 * min_parallel_work() (sparse_mlp.kernels.min_parallel_work sets them all). */
static int64_t smlp_min_work = 1048576;

/* The backward passes (backward_update, backward_input) count, besides their
 * nnz * B multiply-adds, SMLP_G_ROW_WORK for each element of the n_in x B
 * block of their input rows, which they read (X) and write (G, with the
 * activation's derivative) whatever a row's weights.  Those rows were written
 * by the whole team in the forward pass, each thread its own (smlp_owned_next),
 * and read by the whole team in the next layer's product; one thread doing
 * every row reads the other cores' lines and takes the ones it writes from
 * their caches.  A narrow output layer is where it shows: Higgs's 1000 x 2 at
 * batch 128 (256 k multiply-adds, 128 k elements) took 41 us a batch on one
 * thread in a one-thread epoch and 59 us on one thread in a two-thread epoch;
 * split between the two threads, 11 of 12 alternating epochs were faster
 * (results/bench_issue22/experiments_dec06b/).  With 8 it counts 1.3 M and is
 * split; the hidden layers' passes were split already. */
#define SMLP_G_ROW_WORK 8

static inline int smlp_threads_for(int64_t work, int n_threads)
{
    if (n_threads < 1 || work < smlp_min_work) return 1;
    return n_threads;
}

/* the work of a backward pass (SMLP_G_ROW_WORK), for smlp_threads_for */
static inline int64_t smlp_backward_work(int64_t nnz, int64_t n_in, int64_t B)
{
    return (nnz + SMLP_G_ROW_WORK * n_in) * B;
}

/* ------------------------------------------------------------------ */
/* activations (generic elementwise epilogues)                          */
/* ------------------------------------------------------------------ */
enum {
    SMLP_ACT_IDENTITY = 0,
    SMLP_ACT_RELU = 1,
    SMLP_ACT_LEAKY = 2,     /* x>=0: x ; x<0: slope*x   (All-ReLU uses slope = -alpha or +alpha) */
    SMLP_ACT_TANH = 3,
    SMLP_ACT_SIGMOID = 4,
    SMLP_ACT_SRELU = 5      /* 4 parameters per neuron: t_left, a_left, t_right, a_right */
};

typedef struct {
    int kind;
    float slope;              /* LEAKY */
    const float *srelu;       /* SRELU: (n_neurons, 4) row-major */
    uint32_t drop_thresh;     /* dropout: keep iff hash >= drop_thresh; 0 = no dropout */
    float drop_scale;         /* 1 / (1 - rate) */
    uint64_t drop_key;        /* key of this (seed, step, layer) */
    int64_t b_offset;         /* position of sample 0 of this block inside the batch */
    int skip_z;               /* forward: leave Z unwritten where the epilogue keeps its
                                 bits (smlp_epi_t.write_z); 0 unless the caller sets it */
} smlp_act_t;

/* keep iff hash >= rate * 2^32, so P(keep) = 1 - rate; 0 means no dropout */
static inline uint32_t smlp_drop_threshold(double rate)
{
    const double t = rate * 4294967296.0;
    if (rate <= 0.0) return 0u;
    if (t >= 4294967295.0) return 4294967295u;
    return (uint32_t)(t + 0.5);
}

static inline void smlp_fill_act(smlp_act_t *p, int kind, float slope, const float *srelu,
                                 double drop_rate, uint64_t drop_key, int64_t b_offset)
{
    p->kind = kind;
    p->slope = slope;
    p->srelu = srelu;
    p->drop_thresh = smlp_drop_threshold(drop_rate);
    p->drop_scale = drop_rate > 0.0 ? (float)(1.0 / (1.0 - drop_rate)) : 1.0f;
    p->drop_key = drop_key;
    p->b_offset = b_offset;
    p->skip_z = 0;
}

/* the identity / ReLU / leaky family runs in registers (smlp_epi_t) */
static inline int smlp_act_fusable(const smlp_act_t *p)
{
    return p->kind == SMLP_ACT_IDENTITY || p->kind == SMLP_ACT_RELU || p->kind == SMLP_ACT_LEAKY;
}

/* the in-register epilogue of neuron j for a fusable activation (returned
 * by value, so that a prange body that assigns it keeps it thread-private) */
static inline smlp_epi_t smlp_epi_make(const smlp_act_t *p, int mode, int64_t j,
                                       const float *z, float *dst, uint16_t *bits)
{
    smlp_epi_t e;
    e.mode = mode;
    e.kind = p->kind;
    e.slope = p->slope;
    e.thresh = p->drop_thresh;
    e.scale = p->drop_scale;
    e.rk = p->drop_thresh ? smlp_row_key(p->drop_key, j) : 0u;
    e.b0 = (uint32_t)p->b_offset;
    e.z = z;
    e.dst = dst;
    e.bits = smlp_simd_level == 2 ? bits : NULL;  /* (only the AVX-512 epilogue keeps them) */
    e.write_z = !(p->skip_z && e.bits != NULL);
    return e;
}

#if SMLP_X86 && !defined(__clang__)
#define SMLP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SMLP_CLONES
#endif

/* a[b] = f(z[b]); a may alias z */
static SMLP_CLONES void smlp_act_forward_row(const smlp_act_t *p, int64_t j, const float *z,
                                             float *a, int B)
{
    switch (p->kind) {
    case SMLP_ACT_RELU:
        for (int b = 0; b < B; b++) a[b] = z[b] > 0.0f ? z[b] : 0.0f;
        break;
    case SMLP_ACT_LEAKY: {
        const float s = p->slope;
        for (int b = 0; b < B; b++) a[b] = z[b] < 0.0f ? s * z[b] : z[b];
        break;
    }
    case SMLP_ACT_TANH:
        for (int b = 0; b < B; b++) a[b] = tanhf(z[b]);
        break;
    case SMLP_ACT_SIGMOID:
        for (int b = 0; b < B; b++) a[b] = 1.0f / (1.0f + expf(-z[b]));
        break;
    case SMLP_ACT_SRELU: {
        const float tl = p->srelu[4 * j], al = p->srelu[4 * j + 1];
        const float tr = p->srelu[4 * j + 2], ar = p->srelu[4 * j + 3];
        for (int b = 0; b < B; b++) {
            const float x = z[b];
            a[b] = x >= tr ? tr + ar * (x - tr) : (x <= tl ? tl + al * (x - tl) : x);
        }
        break;
    }
    default:
        if (a != z) memcpy(a, z, (size_t)B * sizeof(float));
    }
}

/* a[b] *= mask(b) / (1 - rate) */
static SMLP_CLONES void smlp_dropout_row(const smlp_act_t *p, int64_t j, float *a, int B)
{
    const uint32_t rk = smlp_row_key(p->drop_key, j);
    const uint32_t th = p->drop_thresh;
    const float sc = p->drop_scale;
    const uint32_t b0 = (uint32_t)p->b_offset;
    for (int b = 0; b < B; b++) {
        const uint32_t h = SMLP_DROP_HASH(rk, b0 + (uint32_t)b);
        a[b] = h >= th ? a[b] * sc : 0.0f;
    }
}

/* forward epilogue: a = dropout(f(z)) */
static inline void smlp_forward_epilogue(const smlp_act_t *p, int64_t j, const float *z,
                                         float *a, int B)
{
    smlp_act_forward_row(p, j, z, a, B);
    if (p->drop_thresh) smlp_dropout_row(p, j, a, B);
}

/* the same row again from z and the masks that the fused forward kept
 * (smlp_epi_t.bits: keep and sign per 16 columns): store512's FWD arithmetic,
 * so the same a bit for bit, without hashing again (lean activation memory
 * recomputes A this way before each backward pass).  Fusable activations
 * only; the bits exist only where the CPU has AVX-512 (smlp_bits_usable). */
#if SMLP_X86
static SMLP_T512 void smlp_forward_bits_row(const smlp_act_t *p, const float *z, float *a,
                                            const uint16_t *bits, int B)
{
    const __m512 zero = _mm512_setzero_ps();
    const __m512 slope = _mm512_set1_ps(p->slope), sc = _mm512_set1_ps(p->drop_scale);
    for (int col = 0; col < B; col += 16) {
        const int rem = B - col;
        const __mmask16 m = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
        /* whole vectors unmasked: masked stores cost twice as much on Zen 5 */
        __m512 v = rem >= 16 ? _mm512_loadu_ps(z + col) : _mm512_maskz_loadu_ps(m, z + col);
        if (p->kind == SMLP_ACT_RELU) v = _mm512_max_ps(v, zero);
        else if (p->kind == SMLP_ACT_LEAKY)
            v = _mm512_mask_mul_ps(v, (__mmask16)bits[2 * (col / 16) + 1], v, slope);
        if (p->drop_thresh) v = _mm512_maskz_mul_ps((__mmask16)bits[2 * (col / 16)], v, sc);
        if (rem >= 16) _mm512_storeu_ps(a + col, v);
        else _mm512_mask_storeu_ps(a + col, m, v);
    }
}
#else
static void smlp_forward_bits_row(const smlp_act_t *p, const float *z, float *a,
                                  const uint16_t *bits, int B)
{
    (void)p; (void)z; (void)a; (void)bits; (void)B;  /* never called: no bits here */
}
#endif

/* whether kept bits can replace the hash for activation p on this CPU */
static inline int smlp_bits_usable(const smlp_act_t *p)
{
    return smlp_act_fusable(p) && smlp_cpu_level() == 2;
}

/* SReLU parameter gradients of neuron j, summed over the row:
 * gp[0..3] += sum_b g[b] * d f / d(t_l, a_l, t_r, a_r) at z[b] */
static void smlp_srelu_param_grad(const float *par, const float *z, const float *g, int B,
                                  float *gp)
{
    const float tl = par[0], al = par[1], tr = par[2], ar = par[3];
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    for (int b = 0; b < B; b++) {
        const float x = z[b];
        if (x >= tr) { s2 += g[b] * (1.0f - ar); s3 += g[b] * (x - tr); }
        else if (x <= tl) { s0 += g[b] * (1.0f - al); s1 += g[b] * (x - tl); }
    }
    gp[0] += s0; gp[1] += s1; gp[2] += s2; gp[3] += s3;
}

/* backward epilogue: g[b] = g[b] * mask(b)/(1-rate) * f'(z[b]).
 * For SReLU, srelu_grad (4 floats of this neuron) accumulates the
 * parameter gradient before the multiplication by f'. */
static SMLP_CLONES void smlp_backward_epilogue(const smlp_act_t *p, int64_t j, const float *z,
                                               float *g, int B, float *srelu_grad)
{
    if (p->drop_thresh) smlp_dropout_row(p, j, g, B);
    switch (p->kind) {
    case SMLP_ACT_RELU:
        for (int b = 0; b < B; b++) g[b] = z[b] > 0.0f ? g[b] : 0.0f;
        break;
    case SMLP_ACT_LEAKY: {
        const float s = p->slope;
        for (int b = 0; b < B; b++) g[b] = z[b] < 0.0f ? s * g[b] : g[b];
        break;
    }
    case SMLP_ACT_TANH:
        for (int b = 0; b < B; b++) { const float t = tanhf(z[b]); g[b] *= 1.0f - t * t; }
        break;
    case SMLP_ACT_SIGMOID:
        for (int b = 0; b < B; b++) {
            const float s = 1.0f / (1.0f + expf(-z[b]));
            g[b] *= s * (1.0f - s);
        }
        break;
    case SMLP_ACT_SRELU: {
        const float *par = p->srelu + 4 * j;
        if (srelu_grad) smlp_srelu_param_grad(par, z, g, B, srelu_grad);
        const float tl = par[0], al = par[1], tr = par[2], ar = par[3];
        for (int b = 0; b < B; b++) {
            const float x = z[b];
            g[b] *= x >= tr ? ar : (x <= tl ? al : 1.0f);
        }
        break;
    }
    default:
        break;
    }
}

/* rows j0..j0+3 of the forward pass (smlp_rows4_ok): Z, and with `fused` the
 * activation and dropout in registers into A (and the kept bits), as the
 * single-row path does it.  Z and A are (n_out, B) C-contiguous. */
static void smlp_forward_rows4(const smlp_act_t *p, int fused, const int64_t *indptr,
                               int64_t j0, const int32_t *idx, const float *w, const float *X,
                               int64_t ldx, int B, const float *bias, float *Z, float *A,
                               uint16_t *bits, int64_t ldb)
{
    smlp_epi_t e[4];
    if (fused)
        for (int r = 0; r < 4; r++)
            e[r] = smlp_epi_make(p, SMLP_EPI_FWD, j0 + r, NULL, A + (j0 + r) * (int64_t)B,
                                 bits ? bits + (j0 + r) * ldb : NULL);
    spmm_rows4_avx512(indptr, j0, idx, w, X, ldx, B, bias, Z, fused ? e : NULL);
}

/* input rows i0..i0+3 of the fused backward (smlp_rows4_ok), as the one-row
 * loop of backward_update runs them: `fused` applies the activation's
 * derivative and the dropout mask in registers into G (rows of Z and G may
 * be the same memory); otherwise each row's gradient to the inputs goes to
 * out_rows + r * B (G itself when there is no Z).  Row r's weight gradients
 * go to gbuf + r * max_row.  perm NULL: weights in transposed order. */
static void smlp_backward_rows4(const smlp_act_t *p, int fused, const int64_t *t_indptr,
                                int64_t i0, const int32_t *rows, const int32_t *perm,
                                const float *w, const float *D, int64_t ldd, const float *X,
                                int B, float scale, const float *Z, float *G, float *out_rows,
                                float *gbuf, int64_t max_row, uint16_t *bits, int64_t ldb)
{
    smlp_epi_t e[4];
    float *out[4], *g[4];
    for (int r = 0; r < 4; r++) {
        const int64_t i = i0 + r;
        g[r] = gbuf + r * max_row;
        out[r] = out_rows + r * (int64_t)B;
        if (fused)
            e[r] = smlp_epi_make(p, SMLP_EPI_BWD, i, Z + i * (int64_t)B, G + i * (int64_t)B,
                                 bits ? bits + i * ldb : NULL);
    }
    bwd_rows4_avx512(t_indptr, i0, rows, perm, w, D, ldd, X, B, scale, out, g,
                     fused ? e : NULL);
}

/* ------------------------------------------------------------------ */
/* the mini-batch gather: sample-major rows into a feature-major block   */
/* ------------------------------------------------------------------ */
#if SMLP_X86
/* out[(f0 + c) * ldo + b] = src[b][c] for c, b < 16: 16 rows of 16 floats
 * transposed in registers (unpack pairs, then pairs of pairs, then 128-bit
 * lanes twice), each output row one full store */
static SMLP_T512 void smlp_tr16_avx512(const float *const src[16], float *out, int64_t ldo)
{
    __m512 r[16], c[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src[i]);
    smlp_tr16_regs(r, c);
    for (int k = 0; k < 16; k++) _mm512_storeu_ps(out + k * ldo, c[k]);
}
#endif

/* samples b0..b1 of `rows` x features f0..f1 of the row-major X (row
 * stride ldx) into the feature-major out (row stride ldo): out[f, b] =
 * X[rows[b], f].  A copy: the same values on any path.  AVX-512: whole
 * 16 x 16 tiles transposed in registers (the scalar loop wrote each value to
 * its own cache line: 6 us for Madelon's batch of 32 x 500), the rest one
 * value at a time.  Called for groups of 16 samples and all their features
 * (gather_columns): each of the 16 rows is then read from start to end, 16
 * streams the hardware prefetcher follows, where blocks of 64 features for
 * all samples met a training set in DRAM with a miss per row and block; each
 * tile row stored is one whole cache line of `out` (B a multiple of 16). */
static void smlp_gather_block(const float *X, int64_t ldx, const int64_t *rows, int64_t b0,
                              int64_t b1, int64_t f0, int64_t f1, float *out, int64_t ldo)
{
    int64_t b = b0;
#if SMLP_X86
    if (smlp_simd_level == 2) {
        const float *src[16];
        for (; b + 16 <= b1; b += 16) {
            for (int i = 0; i < 16; i++) src[i] = X + rows[b + i] * ldx + f0;
            int64_t f = f0;
            for (; f + 16 <= f1; f += 16) {
                smlp_tr16_avx512(src, out + f * ldo + b, ldo);
                for (int i = 0; i < 16; i++) src[i] += 16;
            }
            for (int i = 0; i < 16; i++) {
                const float *x = X + rows[b + i] * ldx;
                for (int64_t g = f; g < f1; g++) out[g * ldo + b + i] = x[g];
            }
        }
    }
#endif
    for (; b < b1; b++) {
        const float *x = X + rows[b] * ldx;
        for (int64_t f = f0; f < f1; f++) out[f * ldo + b] = x[f];
    }
}

/* part `blk` of a gather of B samples x n_feat features (gather_columns):
 * the blk-th group of 16 samples with all their features (by_samples), or
 * the blk-th block of 64 features of all the samples */
static inline void smlp_gather_part(const float *X, const int64_t *rows, int64_t B,
                                    int64_t n_feat, int64_t blk, int by_samples, float *out)
{
    if (by_samples) {
        const int64_t b0 = 16 * blk, b1 = b0 + 16 < B ? b0 + 16 : B;
        smlp_gather_block(X, n_feat, rows, b0, b1, 0, n_feat, out, B);
    } else {
        const int64_t f0 = 64 * blk, f1 = f0 + 64 < n_feat ? f0 + 64 : n_feat;
        smlp_gather_block(X, n_feat, rows, 0, B, f0, f1, out, B);
    }
}

/* ------------------------------------------------------------------ */
/* a gradient taken through an index (apply_update's index)           */
/* ------------------------------------------------------------------ */
/* out[q] = g[idx[q]] for q < n: a gradient written in the transposed
 * index's order read back in the weights' (idx = the inverse of t_perm).
 * An index outside [0, limit) is never read: out[q] = 0 and the return is 1.
 * Only loads and stores, so every path gives the same values. */
#if SMLP_X86
static SMLP_T512 int smlp_take_avx512(const float *g, const int32_t *idx, int64_t n,
                                      uint32_t limit, float *out)
{
    const __m512i lim = _mm512_set1_epi32((int)limit);
    __mmask16 bad = 0;
    int64_t q = 0;
    for (; q + 16 <= n; q += 16) {
        const __m512i ix = _mm512_loadu_si512((const void *)(idx + q));
        const __mmask16 ok = _mm512_cmplt_epu32_mask(ix, lim);
        bad |= (__mmask16)~ok;
        _mm512_storeu_ps(out + q, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), ok, ix, g, 4));
    }
    if (q < n) {
        const __mmask16 m = (__mmask16)((1u << (n - q)) - 1u);
        const __m512i ix = _mm512_maskz_loadu_epi32(m, (const void *)(idx + q));
        const __mmask16 ok = _mm512_mask_cmplt_epu32_mask(m, ix, lim);
        bad |= (__mmask16)(m & ~ok);
        _mm512_mask_storeu_ps(out + q, m,
                              _mm512_mask_i32gather_ps(_mm512_setzero_ps(), ok, ix, g, 4));
    }
    return bad != 0;
}
#endif

static inline int smlp_take(const float *g, const int32_t *idx, int64_t n, uint32_t limit,
                            float *out)
{
#if SMLP_X86
    if (smlp_simd_level == 2)
        return smlp_take_avx512(g, idx, n, limit, out);
#endif
    int bad = 0;
    for (int64_t q = 0; q < n; q++) {
        const uint32_t ix = (uint32_t)idx[q];
        if (ix < limit) {
            out[q] = g[ix];
        } else {
            out[q] = 0.0f;
            bad = 1;
        }
    }
    return bad;
}

#endif /* SMLP_ROWKERN_H */
