/* Whether the two vCPUs are two cores: 12 independent AVX-512 FMA chains per
 * thread, registers only (no memory), on 1 thread and then on 2.
 *   gcc -O2 -mavx512f -fopenmp two_cores_fma.c -o fma && ./fma */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

static double chains(long iters)
{
    __m512 a[12];
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < iters; k++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
    float s = 0.f, out[16];
    for (int i = 0; i < 12; i++) {
        _mm512_storeu_ps(out, a[i]);
        s += out[0];
    }
    return s;
}

int main(void)
{
    const long iters = 200000000L / 12;
    for (int round = 0; round < 3; round++)
        for (int t = 1; t <= 2; t++) {
            double sink = 0.0;
            const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(t) reduction(+ : sink)
            sink += chains(iters);
            const double dt = omp_get_wtime() - t0;
            /* 12 chains x 16 lanes x 2 flops per iteration per thread */
            printf("threads %d: %.3f s, %.1f GFLOP/s in all (%g)\n", t, dt,
                   t * 12.0 * 16 * 2 * iters / dt / 1e9, sink > 0 ? 0.0 : 1.0);
        }
    return 0;
}
