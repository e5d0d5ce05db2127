/* emu_cuda.h - a CPU stand-in for the CUDA runtime (and the few cuBLASLt names the backend
   state mentions), enough to run the non-GEMM kernels of mbpo_cuda.cuh on the host.
   Test scaffolding only (issue 13, core emulation test).

   Model of execution:
   - one launch = a pool of blockDim.x*y*z host threads (pthreads, reused across launches);
     every pool thread plays one CUDA thread and walks the blocks of the grid in order
     (blocks run one after another; inside a block all threads run truly concurrently).
   - __syncthreads: a barrier over the threads of the block that have not returned yet;
     reaching it after some threads returned is recorded (divergent barrier) as an error.
   - __shfl_xor_sync: a warp-level exchange through a per-warp buffer and two warp barriers;
     a shuffle with a non-full mask, a partial warp or a warp with exited lanes is an error.
   - static __shared__ arrays (rewritten by mkemu.py into mbpo__emu_shared<T>(n)): one
     malloc per array per block (so ASan sees out-of-bounds), poisoned before the block:
     floats with NaN, integers with 0x5A bytes (a huge index: ASan catches its use).
   - launch configuration is checked as the hardware would: grid.x <= 2^31-1, grid.y/z <=
     65535, block x/y <= 1024, z <= 64, x*y*z in [1, 1024], static+dynamic shared <= 48 KiB;
     a bad one sets the error cudaGetLastError() returns and is logged.
   - device memory is host malloc (exact sizes, ASan-visible); memcpy/memset are
     synchronous; streams are dummies. No FMA contraction, host libm for expf/cosf/...: the
     numerics are those of the host, not of the GPU (see the README). */
#ifndef MBPO_EMU_CUDA_H
#define MBPO_EMU_CUDA_H
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <type_traits>
#include <functional>
#include <vector>
#include <string>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)

/* ---- runtime types and calls */
typedef void *cudaStream_t;
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidConfiguration = 9, cudaErrorMemoryAllocation = 2, cudaErrorLaunchFailure = 719 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
enum { cudaStreamNonBlocking = 1, cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct cudaDeviceProp { char name[256]; size_t totalGlobalMem; int multiProcessorCount; };
static int emu_error = 0;
static std::vector<std::string> emu_log;   /* launch-configuration and barrier errors */
static const char *cudaGetErrorString(cudaError_t e) {
    return e == 0 ? "no error" : e == cudaErrorInvalidConfiguration ? "invalid configuration argument (emulated)"
                                                                    : "emulated error";
}
static cudaError_t cudaGetLastError(void) { int e = emu_error; emu_error = 0; return e; }
static cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return 0; }
static cudaError_t cudaSetDevice(int) { return 0; }
static cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
    memset(p, 0, sizeof *p); snprintf(p->name, sizeof p->name, "emulated"); p->totalGlobalMem = (size_t)1 << 34;
    p->multiProcessorCount = 132; return 0;
}
static cudaError_t cudaMemGetInfo(size_t *f, size_t *t) { *f = *t = (size_t)1 << 34; return 0; }
static cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { static int dummy; *s = &dummy; return 0; }
static cudaError_t cudaStreamDestroy(cudaStream_t) { return 0; }
static cudaError_t cudaStreamSynchronize(cudaStream_t) { return 0; }
static size_t emu_bytes_allocated = 0;
template <typename T> static cudaError_t cudaMalloc(T **p, size_t bytes) {
    *p = (T *)malloc(bytes); emu_bytes_allocated += bytes; return *p ? 0 : cudaErrorMemoryAllocation;
}
static cudaError_t cudaFree(void *p) { free(p); return 0; }
static cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t) {
    if (n) memmove(d, s, n);
    return 0;
}
static cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) { if (n) memset(d, v, n); return 0; }
template <typename F> static cudaError_t cudaFuncSetAttribute(F, int, int v) { return v > 227 * 1024 ? 1 : 0; }
/* graphs (section 15): not emulated; a capture fails to begin, so a caller runs the ops one by one */
typedef void *cudaGraph_t;
typedef void *cudaGraphExec_t;
enum { cudaStreamCaptureModeThreadLocal = 1 };
static cudaError_t cudaStreamBeginCapture(cudaStream_t, int) { return cudaErrorLaunchFailure; }
static cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) { *g = NULL; return cudaErrorLaunchFailure; }
static cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t, unsigned long long) { *x = NULL; return cudaErrorLaunchFailure; }
static cudaError_t cudaGraphDestroy(cudaGraph_t) { return 0; }
static cudaError_t cudaGraphLaunch(cudaGraphExec_t, cudaStream_t) { return cudaErrorLaunchFailure; }
static cudaError_t cudaGraphExecDestroy(cudaGraphExec_t) { return 0; }

/* ---- cuBLASLt: only the names the (kept) backend state and destroy use */
typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
typedef int cudaDataType_t;
enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
typedef void *cublasLtHandle_t;
typedef void *cublasLtMatmulDesc_t;
typedef void *cublasLtMatrixLayout_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
static const char *cublasLtGetStatusString(cublasStatus_t) { return "emulated"; }
static cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { static int dummy; *h = &dummy; return 0; }
static cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return 0; }
static cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t) { return 0; }
static cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t) { return 0; }

/* ---- bf16, round to nearest even as the device's __float2bfloat16 */
struct __nv_bfloat16 { uint16_t x; };
/* the round-to-nearest intrinsics: one IEEE operation each (the emulator builds with
   -ffp-contract=off, so nothing is fused) */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __bfloat162float(__nv_bfloat16 b) { uint32_t u = (uint32_t)b.x << 16; float f; memcpy(&f, &u, 4); return f; }
static inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u; __nv_bfloat16 b; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) { b.x = 0x7fff; return b; }
    u += 0x7fffu + ((u >> 16) & 1u); b.x = (uint16_t)(u >> 16); return b;
}

/* ---- bit casts and the integer atomics of section 13 (shared-memory histograms, counters):
   real atomics between the emulated threads */
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned atomicAdd(unsigned *a, unsigned v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
static inline unsigned long long atomicAdd(unsigned long long *a, unsigned long long v) {
    return __atomic_fetch_add(a, v, __ATOMIC_RELAXED);
}

/* ---- execution */
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static thread_local int emu_tid = -1;        /* linear thread index in the block */
static thread_local int emu_shared_k = 0;    /* next static shared array of this thread */

/* a barrier over `live` participants that shrinks when one returns */
struct emu_bar {
    pthread_mutex_t m; pthread_cond_t cv; int count, live, gen;
    void init(int n) { pthread_mutex_init(&m, NULL); pthread_cond_init(&cv, NULL); count = 0; live = n; gen = 0; }
    void destroy() { pthread_mutex_destroy(&m); pthread_cond_destroy(&cv); }
    void release_locked() { count = 0; gen++; pthread_cond_broadcast(&cv); }
    /* returns the number of participants still live when released */
    int arrive() {
        pthread_mutex_lock(&m);
        int g = gen, l = live;
        if (++count == live) release_locked();
        else while (g == gen) pthread_cond_wait(&cv, &m);
        pthread_mutex_unlock(&m);
        return l;
    }
    void leave() {
        pthread_mutex_lock(&m);
        live--;
        if (count > 0 && count == live) release_locked();
        pthread_mutex_unlock(&m);
    }
};
static pthread_mutex_t emu_log_m = PTHREAD_MUTEX_INITIALIZER;
static void emu_report(const char *what) {
    pthread_mutex_lock(&emu_log_m);
    if (emu_log.size() < 100) emu_log.push_back(what);
    pthread_mutex_unlock(&emu_log_m);
}
static int emu_nt;                            /* threads per block of the running launch */
static emu_bar emu_block_bar, emu_pool_bar, emu_warp_bar[32];
static float emu_warp_buf[2][32][32];      /* double-buffered: one warp barrier per shuffle */
static thread_local int emu_shfl_parity = 0;
static int emu_warp_partial;                  /* the block has a partial warp */
static const char *emu_kernel_name = "";

static void __syncthreads(void) {
    int l = emu_block_bar.arrive();
    if (l != emu_nt) {
        char b[256]; snprintf(b, sizeof b, "%s: __syncthreads reached with %d of %d threads (others returned)", emu_kernel_name, l, emu_nt);
        emu_report(b);
    }
}
static float __shfl_xor_sync(unsigned mask, float v, int o) {
    int w = emu_tid >> 5, lane = emu_tid & 31;
    if (mask != 0xffffffffu || emu_warp_partial) emu_report("__shfl_xor_sync with a partial warp or mask");
    int par = emu_shfl_parity;
    emu_shfl_parity ^= 1;
    /* lane writes buffer par, meets the warp, reads its partner. A lane writes buffer par
       again only two shuffles later, after the next barrier, which every lane reaches only
       once it has read this one: no second barrier needed. */
    emu_warp_buf[par][w][lane] = v;
    if (emu_warp_bar[w].arrive() != 32) {
        char b[256]; snprintf(b, sizeof b, "%s: __shfl_xor_sync in a warp with exited lanes", emu_kernel_name); emu_report(b);
    }
    return emu_warp_buf[par][w][(lane ^ o) & 31];
}

/* static shared memory of the running block */
struct emu_shared_arr { void *p; size_t bytes; };
static std::vector<emu_shared_arr> emu_shared;
static size_t emu_shared_bytes, emu_dyn_smem;
static pthread_mutex_t emu_shared_m = PTHREAD_MUTEX_INITIALIZER;
template <typename T> static T *mbpo__emu_shared(size_t n) {
    size_t bytes = n * sizeof(T);
    T *p;
    pthread_mutex_lock(&emu_shared_m);
    if ((size_t)emu_shared_k >= emu_shared.size()) {
        void *q = malloc(bytes);
        if (std::is_floating_point<T>::value) { for (size_t i = 0; i < n; i++) ((T *)q)[i] = (T)NAN; }
        else memset(q, 0x5A, bytes);
        emu_shared.push_back({q, bytes});
        emu_shared_bytes += bytes;
        if (emu_shared_bytes + emu_dyn_smem > 48 * 1024) emu_report("static + dynamic shared memory over 48 KiB");
    }
    if (emu_shared[emu_shared_k].bytes != bytes) emu_report("shared arrays declared in a different order by two threads");
    p = (T *)emu_shared[emu_shared_k++].p;
    pthread_mutex_unlock(&emu_shared_m);
    return p;
}
static void emu_shared_reset(void) {
    for (auto &a : emu_shared) free(a.p);
    emu_shared.clear(); emu_shared_bytes = 0;
}

/* the worker pool */
/* never destroyed: the detached workers still wait on emu_go while the process exits */
static std::function<void()> &emu_body = *new std::function<void()>;
static std::vector<pthread_t> &emu_workers = *new std::vector<pthread_t>;
static sem_t *emu_go[1024];   /* fixed: workers read their slot while the pool grows */
static sem_t emu_done;
static void *emu_worker(void *arg) {
    int t = (int)(intptr_t)arg;
    for (;;) {
        sem_wait(emu_go[t]);
        emu_tid = t;
        threadIdx = dim3(t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y));
        for (unsigned bz = 0; bz < gridDim.z; bz++)
            for (unsigned by = 0; by < gridDim.y; by++)
                for (unsigned bx = 0; bx < gridDim.x; bx++) {
                    emu_pool_bar.arrive();          /* every thread is done with the previous block */
                    if (t == 0) {
                        int w;
                        emu_shared_reset();
                        emu_block_bar.destroy(); emu_block_bar.init(emu_nt);
                        for (w = 0; w < 32; w++) { emu_warp_bar[w].destroy(); emu_warp_bar[w].init(32); }
                        for (w = 0; w < 64; w++) for (int l = 0; l < 32; l++) emu_warp_buf[w / 32][w % 32][l] = NAN;
                    }
                    emu_pool_bar.arrive();
                    blockIdx = dim3(bx, by, bz);
                    emu_shared_k = 0;
                    emu_shfl_parity = 0;
                    emu_body();
                    emu_block_bar.leave();
                    emu_warp_bar[t >> 5].leave();
                }
        sem_post(&emu_done);
    }
    return NULL;
}
static void emu_pool_grow(int nt) {
    static int inited = 0;
    if (!inited) {
        sem_init(&emu_done, 0, 0); emu_pool_bar.init(1); emu_block_bar.init(1);
        for (int w = 0; w < 32; w++) emu_warp_bar[w].init(32);
        inited = 1;
    }
    while ((int)emu_workers.size() < nt) {
        pthread_t th;
        pthread_attr_t at;
        sem_t *s = (sem_t *)malloc(sizeof(sem_t));
        sem_init(s, 0, 0);
        emu_go[emu_workers.size()] = s;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 1 << 20);
        pthread_create(&th, &at, emu_worker, (void *)(intptr_t)emu_workers.size());
        pthread_attr_destroy(&at);
        pthread_detach(th);
        emu_workers.push_back(th);
    }
}

/* launch records: name and configuration, for the report */
struct emu_launch_rec { std::string name; dim3 g, b; size_t smem; };
static std::vector<emu_launch_rec> emu_launches;
static long emu_launch_count = 0;

struct mbpo__emu_launch {
    const char *name; dim3 g, b; size_t smem;
    mbpo__emu_launch(const char *nm, dim3 g_, dim3 b_, size_t s = 0, cudaStream_t = 0) : name(nm), g(g_), b(b_), smem(s) {}
    template <typename... P, typename... A> void run(void (*k)(P...), A... a) {
        unsigned long long nt = (unsigned long long)b.x * b.y * b.z;
        char msg[256];
        int bad = 0;
        if (g.x < 1 || g.x > 2147483647u || g.y < 1 || g.y > 65535 || g.z < 1 || g.z > 65535) bad = 1;
        if (b.x < 1 || b.x > 1024 || b.y < 1 || b.y > 1024 || b.z < 1 || b.z > 64 || nt > 1024) bad = 1;
        if (smem > 48 * 1024) bad = 1;
        emu_launch_count++;
        {
            int seen = 0;
            for (auto &r : emu_launches)
                if (r.name == name && r.g.x == g.x && r.g.y == g.y && r.b.x == b.x) { seen = 1; break; }
            if (!seen && emu_launches.size() < 100000) emu_launches.push_back({name, g, b, smem});
        }
        if (bad) {
            snprintf(msg, sizeof msg, "%s: invalid launch grid (%u,%u,%u) block (%u,%u,%u) smem %zu", name, g.x, g.y, g.z,
                     b.x, b.y, b.z, smem);
            emu_report(msg);
            emu_error = cudaErrorInvalidConfiguration;
            return;
        }
        emu_pool_grow((int)nt);
        blockDim = b; gridDim = g; emu_nt = (int)nt; emu_dyn_smem = smem; emu_kernel_name = name;
        emu_warp_partial = nt % 32 != 0;
        emu_pool_bar.destroy(); emu_pool_bar.init((int)nt);
        emu_body = [=]() { k(a...); };
        for (int t = 0; t < (int)nt; t++) sem_post(emu_go[t]);
        for (int t = 0; t < (int)nt; t++) sem_wait(&emu_done);
        emu_shared_reset();
    }
};
#endif
