/* Read bandwidth by block size: each thread sums its own array again and
 * again with AVX-512 loads, on 1 thread and on 2.
 *   gcc -O2 -mavx512f -fopenmp read_bandwidth.c -o bw && ./bw */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static float sum_block(const float *p, long n, int reps)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int r = 0; r < reps; r++)
        for (long i = 0; i < n; i += 64) {
            s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
            s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
            s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
            s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
        }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

int main(void)
{
    const long kib[] = {256, 1024, 4096, 16384, 131072};
    for (int s = 0; s < 5; s++) {
        const long n = kib[s] * 1024 / 4;
        const int reps = (int)(4L * 1024 * 1024 * 1024 / (n * 4)); /* 4 GiB read per thread */
        printf("%7ld KiB per thread", kib[s]);
        for (int t = 1; t <= 2; t++) {
            double sink = 0.0, best = 1e9;
            float *blk[2];
            for (int i = 0; i < t; i++) {
                blk[i] = aligned_alloc(64, n * 4);
                for (long k = 0; k < n; k++) blk[i][k] = 1.0f;
            }
            for (int round = 0; round < 2; round++) {
                const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(t) reduction(+ : sink)
                sink += sum_block(blk[omp_get_thread_num()], n, reps);
                const double dt = omp_get_wtime() - t0;
                if (dt < best) best = dt;
            }
            printf(",  %d threads: %6.1f GB/s in all", t, t * (double)n * 4 * reps / best / 1e9);
            for (int i = 0; i < t; i++) free(blk[i]);
            if (sink < 0) printf("!");
        }
        printf("\n");
    }
    return 0;
}
