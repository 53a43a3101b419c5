/* Reading a block the other core has just written, against reading one's
 * own: thread 0 writes the block, then thread 1 (or thread 0 again) reads it,
 * many times over; the time of the reads only.
 *   gcc -O2 -mavx512f -fopenmp cross_core_read.c -o xr && ./xr */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    const long kib[] = {128, 256, 512, 1024};
    for (int s = 0; s < 4; s++) {
        const long n = kib[s] * 1024 / 4;
        float *blk = aligned_alloc(64, n * 4);
        const int reps = 2000;
        double t_read[2] = {0.0, 0.0};
        float sink = 0.f;
        for (int reader = 1; reader >= 0; reader--) {
#pragma omp parallel num_threads(2) reduction(+ : sink)
            {
                const int me = omp_get_thread_num();
                for (int r = 0; r < reps; r++) {
                    if (me == 0)
                        for (long i = 0; i < n; i += 16)
                            _mm512_store_ps(blk + i, _mm512_set1_ps((float)r));
#pragma omp barrier
                    double t0 = omp_get_wtime();
                    if (me == reader) {
                        __m512 a = _mm512_setzero_ps(), b = a;
                        for (long i = 0; i < n; i += 32) {
                            a = _mm512_add_ps(a, _mm512_load_ps(blk + i));
                            b = _mm512_add_ps(b, _mm512_load_ps(blk + i + 16));
                        }
                        sink += _mm512_reduce_add_ps(_mm512_add_ps(a, b));
                        t_read[reader] += omp_get_wtime() - t0;
                    }
#pragma omp barrier
                }
            }
        }
        printf("%5ld KiB just written by core 0: read by the other core %5.1f GB/s, "
               "by the writer %5.1f GB/s\n", kib[s], (double)n * 4 * reps / t_read[1] / 1e9,
               (double)n * 4 * reps / t_read[0] / 1e9);
        free(blk);
        if (sink < 0) printf("!");
    }
    return 0;
}
