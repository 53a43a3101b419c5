/* Masked against plain AVX-512 loads and stores, every vector whole, so the
 * two differ only in the instruction.  Why the row kernels load and store a
 * chunk's whole last vector unmasked (pyx/rowkern.h, SMLP_WHOLE).
 *
 *   gcc -O2 -o /tmp/masked_stream bench/bench_masked_stream.c && /tmp/masked_stream
 *
 * Two shapes of the same work (A = max(Z, 0) over 2 M rows of B floats):
 *   rows    one call per row that computes its mask from B, as the row
 *           kernels do (a chunk's last vector: `tail`)
 *   stream  one loop over the whole array with one mask held throughout
 * Both functions take the choice masked/plain as an argument and are not
 * static: with `static`, gcc specialises each for a constant argument and
 * then masked and plain ran at the same speed here (2026-12-05), so what is
 * slow is a mask computed at run time (kmovw from a cmov) in front of the
 * memory operations, which is what the row kernels had.
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

__attribute__((target("avx512f"), noinline))
void relu_row(const float *z, float *a, int B, int masked)
{
    for (int col = 0; col < B; col += 16) {
        const int rem = B - col;
        const __mmask16 m = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
        __m512 v = masked ? _mm512_maskz_loadu_ps(m, z + col) : _mm512_loadu_ps(z + col);
        v = _mm512_max_ps(v, _mm512_setzero_ps());
        if (masked) _mm512_mask_storeu_ps(a + col, m, v);
        else _mm512_storeu_ps(a + col, v);
    }
}

__attribute__((target("avx512f"), noinline))
void relu_stream(const float *z, float *a, long n, __mmask16 m, int masked)
{
    for (long i = 0; i < n; i += 16) {
        __m512 v = masked ? _mm512_maskz_loadu_ps(m, z + i) : _mm512_loadu_ps(z + i);
        v = _mm512_max_ps(v, _mm512_setzero_ps());
        if (masked) _mm512_mask_storeu_ps(a + i, m, v);
        else _mm512_storeu_ps(a + i, v);
    }
}

int main(int argc, char **argv)
{
    const long rows = 2000000;
    /* the mask comes from the command line so the compiler cannot fold it */
    const __mmask16 m = (__mmask16)(argc > 1 ? atoi(argv[1]) : 65535);
    for (int B = 16; B <= 32; B += 16) {
        const long n = rows * B;
        float *z = aligned_alloc(64, n * 4), *a = aligned_alloc(64, n * 4);
        if (!z || !a) return 1;
        memset(z, 0, n * 4);
        memset(a, 0, n * 4);
        double best[2][2] = {{1e9, 1e9}, {1e9, 1e9}};  /* [shape][masked] */
        for (int rep = 0; rep < 5; rep++)
            for (int masked = 0; masked < 2; masked++) {
                double t = now();
                for (long j = 0; j < rows; j++) relu_row(z + j * B, a + j * B, B, masked);
                double dt = now() - t;
                if (dt < best[0][masked]) best[0][masked] = dt;
                t = now();
                relu_stream(z, a, n, m, masked);
                dt = now() - t;
                if (dt < best[1][masked]) best[1][masked] = dt;
            }
        printf("B %d  rows:   plain %.1f ms, masked %.1f ms\n", B, best[0][0] * 1e3,
               best[0][1] * 1e3);
        printf("B %d  stream: plain %.1f ms, masked %.1f ms\n", B, best[1][0] * 1e3,
               best[1][1] * 1e3);
        free(z);
        free(a);
    }
    return 0;
}
