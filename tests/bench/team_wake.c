/* How long an idle OpenMP team keeps spinning, and what waking it costs (docs/DESIGN.md 9,
   "Small ops alone"): the calling thread works alone for a gap of G microseconds, then opens an
   empty parallel region; the region's time is the cost of reaching the team after that gap.
   Short gaps: the team is still spinning (a few us). Past the spin (GOMP_SPINCOUNT): a futex
   wake, on a VM the vCPU's wake-up too.

     cc -O2 -fopenmp -o build/team_wake tests/bench/team_wake.c
     GOMP_SPINCOUNT=10000 OMP_NUM_THREADS=2 build/team_wake        (mbpo's own setting) */
#define _POSIX_C_SOURCE 199309L
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(void) {
    static const double gaps_us[] = { 0, 10, 20, 40, 80, 160, 240, 320, 640, 1280 };
    static volatile int seen[256];
    static double t[200];
    int g, r, reps = 200;
#pragma omp parallel
    seen[omp_get_thread_num() & 255] = 1;                 /* the team exists before the first timing */
    for (g = 0; g < (int)(sizeof gaps_us / sizeof gaps_us[0]); g++) {
        double total = 0;
        for (r = 0; r < reps; r++) {
            double t0 = now(), t1;
            while (now() - t0 < gaps_us[g] * 1e-6) {}   /* alone, busy, as a small op would be */
            t1 = now();
#pragma omp parallel
            seen[omp_get_thread_num() & 255] = 1;   /* each thread its own slot */
            t1 = now() - t1;
            total += t1;
            t[r] = t1;
        }
        qsort(t, (size_t)reps, sizeof t[0], cmp);
        printf("gap %6.0f us alone: reaching the team takes %7.1f us (median), %7.1f us on average (%d threads)\n",
               gaps_us[g], t[reps / 2] * 1e6, total / reps * 1e6, omp_get_max_threads());
    }
    return seen[0] != 1;
}
