/* Wall time per OpenMP parallel region, by region (docs/results.md, "Speed on the CPU"): an
   LD_PRELOAD wrapper of libgomp's GOMP_parallel that times each call and, at exit, prints each
   region's total, calls and time per call, with the offset of its outlined function in the
   binary (name it with addr2line). For where a pass's time goes alone and beside another job.
   GCC's libgomp only: GCC 12 opens every region of mbpo.h through GOMP_parallel (a dynamic
   loop's chunks then come from GOMP_loop_*); clang's libomp, or another compiler's lowering
   of a region, is not seen.

     cc -O2 -shared -fPIC -o build/omp_regions.so tests/bench/omp_regions.c -ldl
     LD_PRELOAD=build/omp_regions.so OMP_NUM_THREADS=2 build/mbpo-bench --model build/bench_mid --iters 20
     addr2line -f -e build/mbpo-bench 0x...    (the printed offset: mbpo__gemm._omp_fn.0, ...) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <time.h>

#define MAX_REGIONS 128
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
static void *fn[MAX_REGIONS];
static double total[MAX_REGIONS];
static long calls[MAX_REGIONS];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* called by the program's master thread only (OpenMP regions opened from one thread) */
void GOMP_parallel(void (*f)(void *), void *data, unsigned n_threads, unsigned flags) {
    static gomp_parallel_fn real;
    double t;
    int i;
    if (!real) real = (gomp_parallel_fn)dlsym(RTLD_NEXT, "GOMP_parallel");
    t = now();
    real(f, data, n_threads, flags);
    t = now() - t;
    for (i = 0; i < MAX_REGIONS; i++)
        if (fn[i] == (void *)f || !fn[i]) { fn[i] = (void *)f; total[i] += t; calls[i]++; break; }
}

__attribute__((destructor)) static void report(void) {
    int i;
    for (i = 0; i < MAX_REGIONS && fn[i]; i++) {
        Dl_info d;
        void *off = dladdr(fn[i], &d) ? (void *)((char *)fn[i] - (char *)d.dli_fbase) : fn[i];
        fprintf(stderr, "omp_regions: %10.3f ms %7ld calls %9.1f us/call  %p\n", total[i] * 1e3, calls[i],
                total[i] * 1e6 / (double)calls[i], off);
    }
}
