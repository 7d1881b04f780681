/* cache_bandwidth: read bandwidth of one core from buffers of 16 KB to 8 MB, the bound of a
 * batch-1 recurrent step, which reads all of W_hh once per step (LSTM H=128: 256 KB; H=256: 1 MB).
 *   cc -O2 -mavx512f bench/cache_bandwidth.c -o /tmp/cache_bandwidth && /tmp/cache_bandwidth */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef float vf __attribute__((vector_size(64)));

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    for (size_t kb = 16; kb <= 8192; kb *= 2) {
        const size_t n = kb * 1024 / sizeof(vf);
        vf *a = aligned_alloc(64, n * sizeof(vf));
        if (!a) return 1;
        for (size_t i = 0; i < n; i++) a[i] = (vf){0} + (float)(i % 7);
        vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
        const int reps = (int)(400000000 / (n * sizeof(vf))) + 1;
        double best = 1e30;
        for (int trial = 0; trial < 5; trial++) {
            double t = seconds();
            for (int r = 0; r < reps; r++)
                for (size_t i = 0; i < n; i += 8) {
                    s0 += a[i], s1 += a[i + 1], s2 += a[i + 2], s3 += a[i + 3];
                    s4 += a[i + 4], s5 += a[i + 5], s6 += a[i + 6], s7 += a[i + 7];
                }
            t = seconds() - t;
            if (t < best) best = t;
        }
        const vf sum = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
        const float check = sum[0];
        printf("%6zu KB: %6.1f GB/s%s\n", kb, (double)n * sizeof(vf) * reps / best / 1e9,
               check < 0 ? " (impossible)" : "");
        free(a);
    }
    return 0;
}
