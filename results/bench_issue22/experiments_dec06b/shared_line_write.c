/* Storing into lines that the other core holds too, against lines only this core holds:
 * both threads read a block (or only thread 0 does), then thread 0 overwrites it; the time
 * of the overwrite only, many times over.
 *   gcc -O2 -mavx512f -fopenmp [-DPFW=16] shared_line_write.c -o sw && ./sw */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#ifndef PFW
#define PFW 0 /* lines ahead for PREFETCHW before each store; 0 = none (-DPFW=16) */
#endif

int main(void)
{
    const long kib[] = {128, 256, 512};
    for (int s = 0; s < 3; s++) {
        const long n = kib[s] * 1024 / 4;
        float *blk = aligned_alloc(64, n * 4);
        for (long i = 0; i < n; i++) blk[i] = 1.0f;
        const int reps = 2000;
        double t_write[2] = {0.0, 0.0};
        float sink = 0.f;
        for (int both = 0; both < 2; both++) {
#pragma omp parallel num_threads(2) reduction(+ : sink)
            {
                const int me = omp_get_thread_num();
                for (int r = 0; r < reps; r++) {
                    if (me == 0 || both) {
                        __m512 a = _mm512_setzero_ps();
                        for (long i = 0; i < n; i += 16) a = _mm512_add_ps(a, _mm512_load_ps(blk + i));
                        sink += _mm512_reduce_add_ps(a);
                    }
#pragma omp barrier
                    if (me == 0) {
                        const double t0 = omp_get_wtime();
                        for (long i = 0; i < n; i += 16) {
                            if (PFW && i + 16 * PFW < n)  /* write prefetch PFW lines ahead */
                                __asm__ volatile("prefetchw %0" : : "m"(blk[i + 16 * PFW]));
                            _mm512_store_ps(blk + i, _mm512_set1_ps((float)r));
                        }
                        t_write[both] += omp_get_wtime() - t0;
                    }
#pragma omp barrier
                }
            }
        }
        printf("%4ld KiB overwritten by core 0: read last by core 0 only %6.1f GB/s, "
               "by both cores %6.1f GB/s\n", kib[s], (double)n * 4 * reps / t_write[0] / 1e9,
               (double)n * 4 * reps / t_write[1] / 1e9);
        free(blk);
        if (sink < 0) printf("!");
    }
    return 0;
}
