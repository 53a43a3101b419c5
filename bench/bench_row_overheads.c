/* What a kernel call costs beyond its row products, in the engine's own
 * row kernels (pyx/rowkern.h), one thread, on one Erdos-Renyi layer:
 *
 *   rows       the three row products (forward, weight gradient, fused
 *              backward) called once per row through a function pointer, as
 *              the .pyx loops call them: the generic row function (chunk width
 *              and mask decided per row) against the whole-vector
 *              specialisation chosen once per call (smlp_*_row_for)
 *   row_sums   the bias gradient's plain-order row sums: the scalar loop
 *              (eight rows at a time) against AVX-512 (a row per lane)
 *
 * Each pair is timed interleaved (A, B, A, B, ...), best of the rounds, and
 * checked to give the same bits.  One JSON line per measurement.
 *
 *   gcc -O3 -std=gnu11 -fno-math-errno -Wno-unused-function -Ipyx \
 *       bench/bench_row_overheads.c -o /tmp/row_overheads -lm
 *   /tmp/row_overheads [N_IN N_OUT EPS B]        (default 1000 1000 10 128)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rowkern.h"

static uint64_t seed = 0x2545F4914F6CDD1Dull;
static double urand(void)
{
    seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
    return (seed >> 11) * (1.0 / 9007199254740992.0);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void *zalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64)) { fprintf(stderr, "out of memory\n"); exit(1); }
    memset(p, 0, n ? n : 64);
    return p;
}

typedef struct {
    int n_in, n_out, B;
    int64_t *ptr;
    int32_t *idx;
    float *w, *X, *Y, *D, *g, *G, *s;
} layer_t;

/* one pass of a kernel over every row; `spec`: the per-call specialisation */
static void run(const layer_t *L, int kernel, int spec)
{
    smlp_row_spec = spec;
    const int B = L->B;
    if (kernel == 0) {
        const smlp_spmm_fn f = smlp_spmm_row_for(B);
        for (int j = 0; j < L->n_out; j++)
            f(L->idx + L->ptr[j], L->w + L->ptr[j], NULL, L->ptr[j + 1] - L->ptr[j], L->X, B, B,
              0.f, L->Y + (size_t)j * B, NULL);
    } else if (kernel == 1) {
        const smlp_sddmm_fn f = smlp_sddmm_row_for(B);
        for (int j = 0; j < L->n_out; j++)
            f(L->idx + L->ptr[j], L->ptr[j + 1] - L->ptr[j], L->X, B, L->D + (size_t)j * B, B,
              1.f / B, L->g + L->ptr[j]);
    } else if (kernel == 2) {
        /* the fused backward along the rows of this index (as if it were a
         * transposed one): the same work per weight */
        const smlp_bwd_fn f = smlp_bwd_row_for(B);
        for (int j = 0; j < L->n_out; j++)
            f(L->idx + L->ptr[j], NULL, L->ptr[j + 1] - L->ptr[j], L->w + L->ptr[j], L->X, B,
              L->D + (size_t)j * B, B, 1.f / B, L->G + (size_t)j * B, L->g + L->ptr[j], NULL);
    } else {
        const int64_t nb = (L->n_out + SMLP_BIAS_BLOCK - 1) / SMLP_BIAS_BLOCK;
        smlp_dispatch_init(spec ? 2 : 0);
        for (int64_t jb = 0; jb < nb; jb++) smlp_row_sums(L->D, B, jb, L->n_out, B, L->s);
        smlp_dispatch_init(2);
    }
}

static double best_of(const layer_t *L, int kernel, int spec, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now();
        run(L, kernel, spec);
        const double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv)
{
    layer_t L;
    L.n_in = argc > 1 ? atoi(argv[1]) : 1000;
    L.n_out = argc > 2 ? atoi(argv[2]) : 1000;
    const double eps = argc > 3 ? atof(argv[3]) : 10;
    L.B = argc > 4 ? atoi(argv[4]) : 128;
    if (smlp_dispatch_init(2) != 2) { fprintf(stderr, "this CPU has no AVX-512\n"); return 2; }
    double p = eps * (L.n_in + L.n_out) / ((double)L.n_in * L.n_out);
    if (p > 1) p = 1;
    L.ptr = zalloc((L.n_out + 1) * sizeof(int64_t));
    L.idx = zalloc(((size_t)(p * L.n_in * L.n_out * 1.3) + 1024) * sizeof(int32_t));
    int64_t nnz = 0;
    for (int j = 0; j < L.n_out; j++) {
        L.ptr[j] = nnz;
        for (int i = 0; i < L.n_in; i++)
            if (urand() < p) L.idx[nnz++] = i;
    }
    L.ptr[L.n_out] = nnz;
    const size_t xin = (size_t)L.n_in * L.B, xout = (size_t)L.n_out * L.B;
    L.w = zalloc(nnz * 4); L.g = zalloc(nnz * 4); L.s = zalloc(L.n_out * 4);
    L.X = zalloc(xin * 4); L.Y = zalloc(xout * 4); L.D = zalloc(xout * 4);
    L.G = zalloc(xout * 4);
    for (int64_t k = 0; k < nnz; k++) L.w[k] = (float)(urand() * 0.2 - 0.1);
    for (size_t q = 0; q < xin; q++) L.X[q] = (float)(urand() - 0.5);
    for (size_t q = 0; q < xout; q++) L.D[q] = (float)((urand() - 0.5) * (1 << (int)(urand() * 12)));

    const char *names[4] = {"forward_rows", "weight_grad_rows", "fused_backward_rows", "row_sums"};
    const char *a_name[4] = {"generic", "generic", "generic", "scalar"};
    const char *b_name[4] = {"specialised", "specialised", "specialised", "avx512"};
    for (int kernel = 0; kernel < 4; kernel++) {
        double ta = 1e30, tb = 1e30;
        for (int round = 0; round < 10; round++) {
            const double a = best_of(&L, kernel, 0, 30), b = best_of(&L, kernel, 1, 30);
            if (a < ta) ta = a;
            if (b < tb) tb = b;
        }
        /* same bits: the outputs of one pass each way */
        float *out = kernel == 0 ? L.Y : kernel == 3 ? L.s : L.g;
        const size_t n = kernel == 0 ? xout : kernel == 3 ? (size_t)L.n_out : (size_t)nnz;
        float *keep = zalloc(n * 4), *keep_g = zalloc(xout * 4);
        run(&L, kernel, 0);
        memcpy(keep, out, n * 4);
        memcpy(keep_g, L.G, xout * 4);
        run(&L, kernel, 1);
        const int same = !memcmp(keep, out, n * 4) && (kernel != 2 || !memcmp(keep_g, L.G, xout * 4));
        free(keep); free(keep_g);
        printf("{\"bench\": \"row_overheads\", \"kernel\": \"%s\", \"n_in\": %d, \"n_out\": %d, "
               "\"eps\": %g, \"nnz\": %lld, \"B\": %d, \"%s_us\": %.2f, \"%s_us\": %.2f, "
               "\"ratio\": %.2f, \"same_bits\": %s}\n",
               names[kernel], L.n_in, L.n_out, eps, (long long)nnz, L.B, a_name[kernel],
               ta * 1e6, b_name[kernel], tb * 1e6, ta / tb, same ? "true" : "false");
    }
    return 0;
}
