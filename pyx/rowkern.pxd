# Declarations of the C row kernels in rowkern.h (see that file).
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t

cdef extern from "rowkern.h" nogil:
    int SMLP_EPI_FWD
    int SMLP_EPI_BWD

    ctypedef struct smlp_epi_t:
        int mode
        int kind
        float slope
        uint32_t thresh
        float scale
        uint32_t rk
        uint32_t b0
        const float* z
        float* dst
        uint16_t* bits
        int write_z

    ctypedef void (*smlp_spmm_fn)(const int32_t*, const float*, const int32_t*, int64_t,
                                  const float*, int64_t, int, float, float*,
                                  const smlp_epi_t*) noexcept nogil
    ctypedef void (*smlp_sddmm_fn)(const int32_t*, int64_t, const float*, int64_t,
                                   const float*, int, float, float*) noexcept nogil
    ctypedef void (*smlp_bwd_fn)(const int32_t*, const int32_t*, int64_t, const float*,
                                 const float*, int64_t, const float*, int, float, float*,
                                 float*, const smlp_epi_t*) noexcept nogil
    smlp_bwd_fn smlp_bwd_row
    smlp_spmm_fn smlp_spmm_row
    smlp_sddmm_fn smlp_sddmm_row
    int smlp_row_spec
    smlp_spmm_fn smlp_spmm_row_for(int B)
    smlp_sddmm_fn smlp_sddmm_row_for(int B)
    smlp_bwd_fn smlp_bwd_row_for(int B)
    int smlp_simd_level
    int smlp_cpu_level()
    int smlp_dispatch_init(int requested)
    int smlp_pf_ahead
    void smlp_prefetch_ahead(const int32_t* idx, int64_t p0, int64_t p1, int64_t pend,
                             const float* X, int64_t ldx, int64_t row_bytes)
    int smlp_use_ahead(int64_t nnz, int64_t n_rows, int64_t gathered_bytes)
    void smlp_row_prefetch(int64_t gathered_bytes)
    void smlp_prefetch_row(const float* X, int64_t ldx, int64_t i, int64_t n_rows,
                           int64_t row_bytes)
    void smlp_stream_stores(int64_t out_bytes)
    int64_t smlp_stream_min
    void smlp_store_fence()
    int SMLP_BIAS_BLOCK
    int64_t smlp_row_pf_min
    int smlp_row_prefetch_on(int64_t block_bytes)
    void smlp_row_sums(const float* D, int64_t ldd, int64_t jb, int64_t n_rows, int B,
                       float* s)
    int64_t smlp_min_work
    int64_t smlp_backward_work(int64_t nnz, int64_t n_in, int64_t B)
    int smlp_threads_for(int64_t work, int n_threads)

    int SMLP_TL_ENTER
    int SMLP_TL_ROWS
    int SMLP_TL_END
    ctypedef struct smlp_tl_call_t:
        int32_t kind
        int32_t threads
        int64_t n_in
        int64_t n_out
        int64_t t_call
        int64_t t_done
    smlp_tl_call_t* smlp_tl_calls
    int64_t* smlp_tl_stamps
    int64_t smlp_tl_n
    int64_t smlp_tl_lost
    int smlp_tl_nt
    int64_t smlp_tl_begin(int kind, int64_t n_in, int64_t n_out, int threads)
    void smlp_tl_thread(int64_t i, int tid, int what)
    void smlp_tl_end(int64_t i)
    int smlp_tl_start(int64_t capacity, int nt)
    int smlp_max_threads()
    void smlp_tl_stop()

    int SMLP_ACT_IDENTITY
    int SMLP_ACT_RELU
    int SMLP_ACT_LEAKY
    int SMLP_ACT_TANH
    int SMLP_ACT_SIGMOID
    int SMLP_ACT_SRELU

    ctypedef struct smlp_act_t:
        int kind
        float slope
        const float* srelu
        uint32_t drop_thresh
        float drop_scale
        uint64_t drop_key
        int64_t b_offset
        int skip_z

    void smlp_fill_act(smlp_act_t* p, int kind, float slope, const float* srelu,
                       double drop_rate, uint64_t drop_key, int64_t b_offset)
    int smlp_act_fusable(const smlp_act_t* p)
    smlp_epi_t smlp_epi_make(const smlp_act_t* p, int mode, int64_t j, const float* z,
                             float* dst, uint16_t* bits)
    int SMLP_BITS_WORDS(int B)
    void smlp_forward_epilogue(const smlp_act_t* p, int64_t j, const float* z, float* a, int B)
    int smlp_rows4_ok(int B)
    void smlp_backward_rows4(const smlp_act_t* p, int fused, const int64_t* t_indptr,
                             int64_t i0, const int32_t* rows, const int32_t* perm,
                             const float* w, const float* D, int64_t ldd, const float* X,
                             int B, float scale, const float* Z, float* G, float* out_rows,
                             float* gbuf, int64_t max_row, uint16_t* bits, int64_t ldb)
    void smlp_forward_rows4(const smlp_act_t* p, int fused, const int64_t* indptr, int64_t j0,
                            const int32_t* idx, const float* w, const float* X, int64_t ldx,
                            int B, const float* bias, float* Z, float* A, uint16_t* bits,
                            int64_t ldb)
    int smlp_dense_on
    int smlp_dense_ok(int64_t n_in, int64_t n_out, int64_t nnz, int B)
    int64_t smlp_dense_blocks(int64_t n_out, int B)
    void smlp_forward_dense_avx512(const float* w, int64_t n_in, int64_t n_out, const float* X,
                                   int64_t ldx, int B, const float* bias, float* Z, int64_t blk)
    void smlp_forward_bits_row(const smlp_act_t* p, const float* z, float* a,
                               const uint16_t* bits, int B)
    int smlp_bits_usable(const smlp_act_t* p)
    void smlp_act_forward_row(const smlp_act_t* p, int64_t j, const float* z, float* a, int B)
    void smlp_dropout_row(const smlp_act_t* p, int64_t j, float* a, int B)
    void smlp_backward_epilogue(const smlp_act_t* p, int64_t j, const float* z, float* g,
                                int B, float* srelu_grad)
    uint32_t smlp_float_bits(float w)
    uint64_t smlp_mix64(uint64_t z)
    uint32_t smlp_row_key(uint64_t key, int64_t neuron)
    void smlp_gather_part(const float* X, const int64_t* rows, int64_t B, int64_t n_feat,
                          int64_t blk, int by_samples, float* out)
    int smlp_take(const float* g, const int32_t* idx, int64_t n, uint32_t limit, float* out)
    ctypedef struct smlp_owned_t:
        int64_t next
    int smlp_thread_id()
    smlp_owned_t* smlp_owned_new(int64_t lo, int64_t hi, int nt)
    int smlp_owned_next(smlp_owned_t* c, int64_t lo, int64_t hi, int nt, int tid,
                        int64_t chunk, int* cur, int64_t* r0, int64_t* r1)
