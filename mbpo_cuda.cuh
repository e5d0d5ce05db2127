/* mbpo_cuda.cuh - the CUDA unit of mbpo.h: the op table `mbpo__cuda_ops` on one GPU.

   Included by mbpo.h inside its implementation, after the CPU table, when nvcc compiles it
   with MBPO_CUDA; not a stand-alone header. It uses from mbpo.h only mbpo__fail,
   mbpo__calloc, mbpo_free, mbpo__inv_freq, struct mbpo__ops, mbpo_x and mbpo_backend.
   Every op has the semantics of the CPU entry of the same name in mbpo.h (the CPU table is
   the specification; tests/test_cuda.cu compares the two).

   Storage: mbpo__cx is __nv_bfloat16 (default) or float (MBPO_CUDA_FP32, the parity build).
   All arithmetic is fp32 (the optimizer's is double, as the CPU op's); every value is
   rounded to mbpo__cx once, when stored. Parameter gradients, norm statistics,
   log-sum-exps, rotary tables, logits, log-probs and the optimizer state are float.

   Determinism: every op gives the same bits run to run. No atomics on floats; every
   reduction has a fixed order that depends only on the shape (warp butterflies, fixed-size
   block trees, row-block partial sums reduced in block order). cuBLASLt picks one algorithm
   per shape (cached), and all its split-K schemes reduce in a fixed sequence.

   Memory: everything an op needs beyond its arguments is allocated in create: a 32 MiB
   workspace shared, in stream order, by cuBLASLt, the column-sum partials of the norms and
   of dbias (at most 2 x 128 x C floats: C <= 32768), the fp32 staging of x_upload /
   x_download, the per-block partial sums of sumsq (1025 doubles) and sample's row
   probabilities at T > 0 (V floats per block, section 13). Ops allocate nothing (the NCCL
   collectives of section 17 keep their own staging buffer); a new GEMM shape costs one
   host-side heuristic query.

   Sections: 1 common, 2 memory, 3 matmul, 4 norms, 5 elementwise, 6 rotary, 7 embedding,
   8 KV cache, 9 head, 10 logits, 11 attention (from the attention unit), 12 optimizer
   (sumsq, adamw), 13 sampling, 14 PGD (pixel rows, their adjoint, the sign step), 15 graphs,
   16 the table, 17 collectives over NCCL (MBPO_NCCL: data parallelism on GPUs).

   STATUS: compiles with nvcc 13 -arch=sm_90 (bf16 and MBPO_CUDA_FP32), zero warnings.
   It has not run on a GPU yet: test_cuda.cu is what makes it trusted. */
#ifndef MBPO_CUDA_CUH
#define MBPO_CUDA_CUH

/* ------------------------------------------------------------------ 1. common */

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#ifdef MBPO_NCCL
#include <nccl.h>
#endif

#ifdef MBPO_CUDA_FP32
typedef float mbpo__cx;
#define MBPO__CX_TYPE CUDA_R_32F
#else
typedef __nv_bfloat16 mbpo__cx;
#define MBPO__CX_TYPE CUDA_R_16BF
#endif

/* mbpo_x is incomplete in the model layer; here it is an array of mbpo__cx */
#define MBPO__CUDA_X(p) ((mbpo__cx *)(void *)(p))
#define MBPO__CUDA_CX(p) ((const mbpo__cx *)(const void *)(p))

static __device__ __forceinline__ float mbpo__ld(const mbpo__cx *p, int64_t i) {
#ifdef MBPO_CUDA_FP32
    return p[i];
#else
    return __bfloat162float(p[i]);
#endif
}
static __device__ __forceinline__ void mbpo__st(mbpo__cx *p, int64_t i, float v) {
#ifdef MBPO_CUDA_FP32
    p[i] = v;
#else
    p[i] = __float2bfloat16(v);   /* round to nearest even, as torch's .to(bfloat16) */
#endif
}
/* v rounded to the storage type and back: where the reference rounds mid-formula */
static __device__ __forceinline__ float mbpo__round(float v) {
#ifdef MBPO_CUDA_FP32
    return v;
#else
    return __bfloat162float(__float2bfloat16(v));
#endif
}

/* Evaluate a CUDA runtime / cuBLASLt call; on error set the reason (where, the call, the
   error string) and return 0 from the enclosing int function. */
#define MBPO__CU(call)                                                                          \
    do {                                                                                        \
        cudaError_t mbpo_cu_err_ = (call);                                                      \
        if (mbpo_cu_err_ != cudaSuccess)                                                        \
            return mbpo__fail("%s:%d: %s: %s", __FILE__, __LINE__, #call,                       \
                              cudaGetErrorString(mbpo_cu_err_));                                \
    } while (0)
#define MBPO__LT(call)                                                                          \
    do {                                                                                        \
        cublasStatus_t mbpo_lt_st_ = (call);                                                    \
        if (mbpo_lt_st_ != CUBLAS_STATUS_SUCCESS)                                               \
            return mbpo__fail("%s:%d: %s: %s", __FILE__, __LINE__, #call,                       \
                              cublasLtGetStatusString(mbpo_lt_st_));                            \
    } while (0)
/* after every kernel launch: a bad configuration shows here, not three ops later */
#define MBPO__LAUNCHED(kernel, n)                                                               \
    do {                                                                                        \
        cudaError_t mbpo_cu_err_ = cudaGetLastError();                                          \
        if (mbpo_cu_err_ != cudaSuccess)                                                        \
            return mbpo__fail("%s:%d: launch of %s over %lld values: %s", __FILE__, __LINE__,   \
                              kernel, (long long)(n), cudaGetErrorString(mbpo_cu_err_));        \
    } while (0)

#define MBPO__CUDA_WORKSPACE ((size_t)32 << 20)   /* cuBLASLt on Hopper wants 32 MiB */
#define MBPO__CUDA_PLANS 128                      /* cached GEMM plans (round-robin reuse) */
#define MBPO__CUDA_THREADS 256                    /* threads of the elementwise kernels */
#define MBPO__CUDA_MAX_BLOCKS ((int64_t)1 << 20)  /* grid-stride loops beyond this */

/* One planned cuBLASLt matmul: the key (our row-major view of the product, see section 3)
   and what the heuristic chose for it. */
typedef struct {
    int used;
    int64_t M, K, N, lda;
    int a_t, b_t, bias, c_fp32;                 /* c_fp32: C/D are float, else mbpo__cx */
    unsigned align_a, align_b, align_c;         /* byte alignment of the pointers planned for */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;          /* cuBLAS's A (our B), B (our A), C = D */
    cublasLtMatmulAlgo_t algo;
} mbpo__cuda_plan;

/* The backend state behind mbpo_backend *. Everything runs on `stream`, in order, so the
   workspace can be shared by consecutive ops. attn_state is the attention unit's (freed
   with cudaFree by destroy when set). */
struct mbpo__backend_cuda {
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace;
    size_t workspace_size;
    mbpo__cuda_plan plans[MBPO__CUDA_PLANS];
    int next_plan;
    int64_t max_seg;
    void *attn_state;
};
#define MBPO__CUDA(be) ((struct mbpo__backend_cuda *)(void *)(be))
/* for the attention unit: the stream, and the workspace as scratch between its own kernels
   (NULL when bytes exceed it) */
static cudaStream_t mbpo__cuda_stream(mbpo_backend *be) { return MBPO__CUDA(be)->stream; }
static float *mbpo__cuda_scratch(mbpo_backend *be, size_t bytes) {
    return bytes <= MBPO__CUDA(be)->workspace_size ? (float *)MBPO__CUDA(be)->workspace : NULL;
}

/* blocks for a grid-stride loop over n values */
static unsigned int mbpo__cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned int)(b < 1 ? 1 : b > MBPO__CUDA_MAX_BLOCKS ? MBPO__CUDA_MAX_BLOCKS : b);
}
#define MBPO__FOR(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* butterfly sums: every lane ends with the same bits (each step adds the same two values) */
static __device__ __forceinline__ float mbpo__warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float mbpo__warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* block reductions over blockDim.x (a multiple of 32, at most 1024) threads, fixed order;
   every thread gets the result. sh: 32 floats of shared memory. */
static __device__ float mbpo__block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = mbpo__warp_sum(v);
    __syncthreads();                     /* sh may still be read by a previous reduction */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    return mbpo__warp_sum(lane < nw ? sh[lane] : 0.0f);
}
static __device__ float mbpo__block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = mbpo__warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    return mbpo__warp_max(lane < nw ? sh[lane] : -INFINITY);
}

static void mbpo__cuda_plan_free(mbpo__cuda_plan *p) {
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    memset(p, 0, sizeof *p);
}

/* The GPU of this process: 0, or the rank's local index under data parallelism (one rank per
   GPU: mbpo_comm_world sets it before any backend is made). */
static int mbpo__cuda_device_index;
/* 1 if a CUDA device is usable (this process's is selected), else 0 with the reason */
static int mbpo__cuda_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return mbpo__fail("--device cuda: no usable GPU (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
    }
    if (n <= 0) return mbpo__fail("--device cuda: no usable GPU (cudaGetDeviceCount found no device)");
    if (mbpo__cuda_device_index >= n)
        return mbpo__fail("--device cuda: local rank %d but %d GPU%s: one rank per GPU", mbpo__cuda_device_index, n, n == 1 ? "" : "s");
    e = cudaSetDevice(mbpo__cuda_device_index);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return mbpo__fail("--device cuda: no usable GPU (cudaSetDevice(%d): %s)", mbpo__cuda_device_index, cudaGetErrorString(e));
    }
    return 1;
}

/* name (size bytes), global memory and SM count of device 0 */
static int mbpo__cuda_device_info(char *name, size_t size, size_t *global_mem, int *sm_count) {
    cudaDeviceProp prop;
    MBPO__CU(cudaGetDeviceProperties(&prop, mbpo__cuda_device_index));
    if (name && size) snprintf(name, size, "%s", prop.name);
    if (global_mem) *global_mem = prop.totalGlobalMem;
    if (sm_count) *sm_count = prop.multiProcessorCount;
    return 1;
}

static void mbpo__cuda_destroy(mbpo_backend *be) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    int i;
    if (!c) return;
    if (c->stream) (void)cudaStreamSynchronize(c->stream);
    for (i = 0; i < MBPO__CUDA_PLANS; i++) mbpo__cuda_plan_free(&c->plans[i]);
    if (c->attn_state) (void)cudaFree(c->attn_state);
    if (c->workspace) (void)cudaFree(c->workspace);
    if (c->lt) (void)cublasLtDestroy(c->lt);
    if (c->stream) (void)cudaStreamDestroy(c->stream);
    mbpo_free(c);
}
static int mbpo__cuda_create_parts(struct mbpo__backend_cuda *c) {
    cudaError_t e;
    MBPO__CU(cudaSetDevice(mbpo__cuda_device_index));
    MBPO__CU(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    MBPO__LT(cublasLtCreate(&c->lt));
    c->workspace_size = MBPO__CUDA_WORKSPACE;
    e = cudaMalloc(&c->workspace, c->workspace_size);
    if (e != cudaSuccess) {
        c->workspace = NULL;
        (void)cudaGetLastError();
        return mbpo__fail("cudaMalloc of %.1f MB for the cuBLASLt workspace: %s", (double)c->workspace_size / 1e6,
                          cudaGetErrorString(e));
    }
    return 1;
}
/* max_seg: the longest attention segment, kept for the attention unit */
static int mbpo__cuda_create(mbpo_backend **be, int64_t max_seg) {
    struct mbpo__backend_cuda *c = (struct mbpo__backend_cuda *)mbpo__calloc(1, sizeof *c);
    if (!c) return mbpo__fail("out of memory for the CUDA backend state");
    c->max_seg = max_seg > 0 ? max_seg : 1;
    if (!mbpo__cuda_create_parts(c)) { mbpo__cuda_destroy((mbpo_backend *)(void *)c); return 0; }
    *be = (mbpo_backend *)(void *)c;
    return 1;
}

/* ------------------------------------------------------------------ 2. memory */

/* bytes of device memory, zeroed (as the CPU table's calloc) */
static int mbpo__cuda_alloc(mbpo_backend *be, void **p, size_t bytes, const char *what) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        *p = NULL;
        (void)cudaGetLastError();           /* not sticky: keep it out of the next check */
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) { (void)cudaGetLastError(); free_b = total_b = 0; }
        return mbpo__fail("cudaMalloc of %.1f MB for %s: %s%s (GPU memory: %.1f MB free of %.1f MB)",
                          (double)bytes / 1e6, what ? what : "?", cudaGetErrorString(e),
                          e == cudaErrorMemoryAllocation ? ", out of GPU memory" : "",
                          (double)free_b / 1e6, (double)total_b / 1e6);
    }
    if (bytes) MBPO__CU(cudaMemsetAsync(*p, 0, bytes, c->stream));
    return 1;
}
/* the GPU's memory in bytes, for the memory plan (0 when the driver cannot tell) */
static double mbpo__cuda_total_bytes(void) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) { (void)cudaGetLastError(); return 0; }
    return (double)total_b;
}
static void mbpo__cuda_release(mbpo_backend *be, void *p) {
    if (!p) return;
    if (be) (void)cudaStreamSynchronize(MBPO__CUDA(be)->stream);   /* no queued op still reads p */
    (void)cudaFree(p);   /* (synchronises the device itself: a borrower whose owner's backend is gone) */
}
/* host -> device; synchronous, so the host buffer may be reused at once (pinned or not) */
static int mbpo__cuda_upload(mbpo_backend *be, void *dst, const void *src_host, size_t bytes) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    if (!bytes) return 1;
    MBPO__CU(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, c->stream));
    MBPO__CU(cudaStreamSynchronize(c->stream));
    return 1;
}
static int mbpo__cuda_download(mbpo_backend *be, void *dst_host, const void *src, size_t bytes) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    if (!bytes) return 1;
    MBPO__CU(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    MBPO__CU(cudaStreamSynchronize(c->stream));
    return 1;
}
static int mbpo__cuda_zero(mbpo_backend *be, void *p, size_t bytes) {
    if (bytes) MBPO__CU(cudaMemsetAsync(p, 0, bytes, MBPO__CUDA(be)->stream));
    return 1;
}
static int mbpo__cuda_copy(mbpo_backend *be, void *dst, const void *src, size_t bytes) {
    if (dst != src && bytes) MBPO__CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, MBPO__CUDA(be)->stream));
    return 1;
}
#ifndef MBPO_CUDA_FP32
static __global__ void mbpo__k_f32_to_cx(mbpo__cx *dst, const float *src, int64_t n) {
    MBPO__FOR(i, n) mbpo__st(dst, i, src[i]);
}
static __global__ void mbpo__k_cx_to_f32(float *dst, const mbpo__cx *src, int64_t n) {
    MBPO__FOR(i, n) dst[i] = mbpo__ld(src, i);
}
#endif
/* dst (n) mbpo__cx on the device = src_host (n) fp32, through fp32 staging in the workspace */
static int mbpo__cuda_x_upload(mbpo_backend *be, mbpo_x *dst, const float *src_host, int64_t n) {
#ifdef MBPO_CUDA_FP32
    return mbpo__cuda_upload(be, dst, src_host, (size_t)n * sizeof(float));
#else
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    int64_t step = (int64_t)(c->workspace_size / sizeof(float)), o;
    float *stage = (float *)c->workspace;
    for (o = 0; o < n; o += step) {
        int64_t m = n - o < step ? n - o : step;
        MBPO__CU(cudaMemcpyAsync(stage, src_host + o, (size_t)m * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        mbpo__k_f32_to_cx<<<mbpo__cuda_blocks(m, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, c->stream>>>(MBPO__CUDA_X(dst) + o, stage, m);
        MBPO__LAUNCHED("mbpo__k_f32_to_cx", m);
    }
    MBPO__CU(cudaStreamSynchronize(c->stream));
    return 1;
#endif
}
/* dst_host (n) fp32 = src (n) mbpo__cx on the device */
static int mbpo__cuda_x_download(mbpo_backend *be, float *dst_host, const mbpo_x *src, int64_t n) {
#ifdef MBPO_CUDA_FP32
    return mbpo__cuda_download(be, dst_host, src, (size_t)n * sizeof(float));
#else
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    int64_t step = (int64_t)(c->workspace_size / sizeof(float)), o;
    float *stage = (float *)c->workspace;
    for (o = 0; o < n; o += step) {
        int64_t m = n - o < step ? n - o : step;
        mbpo__k_cx_to_f32<<<mbpo__cuda_blocks(m, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, c->stream>>>(stage, MBPO__CUDA_CX(src) + o, m);
        MBPO__LAUNCHED("mbpo__k_cx_to_f32", m);
        MBPO__CU(cudaMemcpyAsync(dst_host + o, stage, (size_t)m * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
        MBPO__CU(cudaStreamSynchronize(c->stream));
    }
    return 1;
#endif
}

/* ------------------------------------------------------------------ 3. matmul

   The one product, as the CPU's mbpo__gemm:  out (M, N) (+)= A . B^T (+ bias (N)), where
   A is (M, K) row-major with row stride lda, or stored transposed as (K, M) when a_t
   (row stride lda >= M); B is (N, K) row-major, or stored as (K, N) when b_t.

   Mapping to cuBLAS (column-major): a row-major (r, c) matrix with row stride ld is the
   column-major (c, r) matrix with leading dimension ld, its transpose. So row-major out
   (M, N) is column-major out^T (N, M), ld N, and
       out^T = (A B^T)^T = B A^T,
   i.e. cuBLAS computes D (m = N, n = M, k = K) = op(cuA) op(cuB) with cuA = our B, cuB =
   our A:
       our B (N, K) row-major  = col-major (K, N) ld K  -> op T     (b_t = 0)
       our B (K, N) row-major  = col-major (N, K) ld N  -> op N     (b_t = 1)
       our A (M, K) row-major  = col-major (K, M) ld lda -> op N    (a_t = 0)
       our A (K, M) row-major  = col-major (M, K) ld lda -> op T    (a_t = 1)
       C = D: col-major (N, M) ld N; the bias epilogue adds bias[row of D] = bias[our column].
   Compute CUBLAS_COMPUTE_32F (fp32 accumulate; in the fp32 build that is true fp32, not
   TF32), scale type fp32, alpha 1 and beta 0 (write) or 1 (accumulate). */

static unsigned mbpo__cuda_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    unsigned al = 256;
    while (al > 1 && a % al) al >>= 1;
    return al;
}
static int mbpo__cuda_plan_make(struct mbpo__backend_cuda *c, mbpo__cuda_plan *p) {
    cudaDataType_t ct = p->c_fp32 ? CUDA_R_32F : MBPO__CX_TYPE;
    cublasOperation_t op_a = p->b_t ? CUBLAS_OP_N : CUBLAS_OP_T, op_b = p->a_t ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epi = p->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    size_t ws = c->workspace_size;
    uint32_t al_a = p->align_b, al_b = p->align_a, al_c = p->align_c;   /* cuBLAS's A is our B */
    cublasStatus_t st;
    MBPO__LT(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    MBPO__LT(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    MBPO__LT(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    MBPO__LT(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    MBPO__LT(cublasLtMatrixLayoutCreate(&p->la, MBPO__CX_TYPE, (uint64_t)(p->b_t ? p->N : p->K),
                                        (uint64_t)(p->b_t ? p->K : p->N), p->b_t ? p->N : p->K));
    MBPO__LT(cublasLtMatrixLayoutCreate(&p->lb, MBPO__CX_TYPE, (uint64_t)(p->a_t ? p->M : p->K),
                                        (uint64_t)(p->a_t ? p->K : p->M), p->lda));
    MBPO__LT(cublasLtMatrixLayoutCreate(&p->lc, ct, (uint64_t)p->N, (uint64_t)p->M, p->N));
    MBPO__LT(cublasLtMatmulPreferenceCreate(&pref));
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED)
        return mbpo__fail("cuBLASLt heuristic for M=%lld N=%lld K=%lld: %s", (long long)p->M, (long long)p->N,
                          (long long)p->K, cublasLtGetStatusString(st));
    if (st == CUBLAS_STATUS_NOT_SUPPORTED || found < 1 || res.state != CUBLAS_STATUS_SUCCESS)
        return mbpo__fail("cuBLASLt: no matmul algorithm for M=%lld N=%lld K=%lld (a_t %d, b_t %d, lda %lld, bias %d, "
                          "%s output, alignment A %u B %u C %u bytes)", (long long)p->M, (long long)p->N, (long long)p->K,
                          p->a_t, p->b_t, (long long)p->lda, p->bias, p->c_fp32 ? "fp32" : "storage-type",
                          p->align_a, p->align_b, p->align_c);
    p->algo = res.algo;
    p->used = 1;
    return 1;
}
/* the cached plan for this product, planned on first use */
static mbpo__cuda_plan *mbpo__cuda_plan_get(struct mbpo__backend_cuda *c, int64_t M, int64_t K, int64_t N, int64_t lda,
                                            int a_t, int b_t, int bias, int c_fp32, const void *A, const void *B,
                                            const void *out) {
    unsigned al_a = mbpo__cuda_align(A), al_b = mbpo__cuda_align(B), al_c = mbpo__cuda_align(out);
    mbpo__cuda_plan *p;
    int i;
    for (i = 0; i < MBPO__CUDA_PLANS; i++) {
        p = &c->plans[i];
        if (p->used && p->M == M && p->K == K && p->N == N && p->lda == lda && p->a_t == a_t && p->b_t == b_t &&
            p->bias == bias && p->c_fp32 == c_fp32 && p->align_a == al_a && p->align_b == al_b && p->align_c == al_c)
            return p;
    }
    p = &c->plans[c->next_plan];
    c->next_plan = (c->next_plan + 1) % MBPO__CUDA_PLANS;
    mbpo__cuda_plan_free(p);
    p->M = M; p->K = K; p->N = N; p->lda = lda; p->a_t = a_t; p->b_t = b_t; p->bias = bias; p->c_fp32 = c_fp32;
    p->align_a = al_a; p->align_b = al_b; p->align_c = al_c;
    if (!mbpo__cuda_plan_make(c, p)) { mbpo__cuda_plan_free(p); return NULL; }
    return p;
}
/* out (M, N) = bias or 0, for K == 0 (cuBLAS wants k >= 1) */
static __global__ void mbpo__k_fill_bias(mbpo__cx *out, const mbpo__cx *bias, int64_t M, int64_t N) {
    MBPO__FOR(i, M * N) mbpo__st(out, i, bias ? mbpo__ld(bias, i % N) : 0.0f);
}
/* out (M, N) (+)= A . B^T (+ bias): A, B mbpo__cx; out float (c_fp32) or mbpo__cx; bias only
   with an mbpo__cx output (the epilogue's bias has the output's type) */
static int mbpo__cuda_gemm(struct mbpo__backend_cuda *c, void *out, int c_fp32, const mbpo__cx *A, int a_t, int64_t lda,
                           const mbpo__cx *B, int b_t, const mbpo__cx *bias, int64_t M, int64_t K, int64_t N,
                           int accumulate) {
    mbpo__cuda_plan *p;
    float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (M == 0 || N == 0) return 1;
    if (K == 0) {
        if (accumulate) return 1;
        if (c_fp32) MBPO__CU(cudaMemsetAsync(out, 0, (size_t)(M * N) * sizeof(float), c->stream));
        else {
            mbpo__k_fill_bias<<<mbpo__cuda_blocks(M * N, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, c->stream>>>(
                (mbpo__cx *)out, bias, M, N);
            MBPO__LAUNCHED("mbpo__k_fill_bias", M * N);
        }
        return 1;
    }
    if (bias && c_fp32) return mbpo__fail("mbpo__cuda_gemm: a bias needs a storage-type output (M=%lld N=%lld K=%lld)",
                                          (long long)M, (long long)N, (long long)K);
    p = mbpo__cuda_plan_get(c, M, K, N, lda, a_t, b_t, bias != NULL, c_fp32, A, B, out);
    if (!p) return 0;
    if (bias) MBPO__LT(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    MBPO__LT(cublasLtMatmul(c->lt, p->desc, &alpha, B, p->la, A, p->lb, &beta, out, p->lc, out, p->lc, &p->algo,
                            c->workspace, c->workspace_size, c->stream));
    return 1;
}

/* Deterministic column sums over N rows of (N, C), with the norms' weight terms:
     mode 0: b[i] += sum_n dout[n][i]                                (dbias)
     mode 1: w[i] += sum_n dout * (x - mean[n]) * rstd[n], b[i] += sum_n dout   (LayerNorm)
     mode 2: w[i] += sum_n dout * x * rstd[n]                        (RMSNorm)
   Pass 1: row-block rb (R rows) sums each column in row order into partials in the
   workspace; pass 2: one thread per column adds the partials in block order. The blocking
   depends only on N, so the bits do too. */
#define MBPO__COLSUM_BLOCKS 128   /* at most: 2 x 128 x C floats of workspace */
#define MBPO__COLSUM_ROWS 32      /* at least this many rows per block */
static __global__ void mbpo__k_colsum_partial(float *part, int64_t nb, int64_t R, const mbpo__cx *dout,
                                              const mbpo__cx *inp, const float *mean, const float *rstd,
                                              int64_t N, int64_t C, int mode) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, rb = blockIdx.y, n0 = rb * R, n1 = n0 + R, n;
    float sw = 0.0f, sb = 0.0f;
    if (i >= C) return;
    if (n1 > N) n1 = N;
    for (n = n0; n < n1; n++) {
        float dy = mbpo__ld(dout, n * C + i);
        if (mode == 1) { sw += dy * (mbpo__ld(inp, n * C + i) - mean[n]) * rstd[n]; sb += dy; }
        else if (mode == 2) sw += dy * mbpo__ld(inp, n * C + i) * rstd[n];
        else sb += dy;
    }
    part[rb * C + i] = sw;
    part[(nb + rb) * C + i] = sb;
}
static __global__ void mbpo__k_colsum_finish(float *w, float *b, const float *part, int64_t nb, int64_t C) {
    MBPO__FOR(i, C) {
        float sw = 0.0f, sb = 0.0f;
        int64_t rb;
        for (rb = 0; rb < nb; rb++) { sw += part[rb * C + i]; sb += part[(nb + rb) * C + i]; }
        if (w) w[i] += sw;
        if (b) b[i] += sb;
    }
}
static int mbpo__cuda_colsum(struct mbpo__backend_cuda *c, float *w, float *b, const mbpo__cx *dout, const mbpo__cx *inp,
                             const float *mean, const float *rstd, int64_t N, int64_t C, int mode) {
    int64_t nb = (N + MBPO__COLSUM_ROWS - 1) / MBPO__COLSUM_ROWS, R;
    dim3 grid;
    if (N == 0 || C == 0 || (!w && !b)) return 1;
    if (nb > MBPO__COLSUM_BLOCKS) nb = MBPO__COLSUM_BLOCKS;
    R = (N + nb - 1) / nb;
    nb = (N + R - 1) / R;
    if ((size_t)(2 * nb * C) * sizeof(float) > c->workspace_size)
        return mbpo__fail("column sums of (%lld, %lld): %lld partial sums exceed the %.1f MB workspace (C <= %lld)",
                          (long long)N, (long long)C, (long long)(2 * nb * C), (double)c->workspace_size / 1e6,
                          (long long)(c->workspace_size / sizeof(float) / (2 * MBPO__COLSUM_BLOCKS)));
    grid.x = (unsigned)((C + MBPO__CUDA_THREADS - 1) / MBPO__CUDA_THREADS); grid.y = (unsigned)nb; grid.z = 1;
    mbpo__k_colsum_partial<<<grid, MBPO__CUDA_THREADS, 0, c->stream>>>((float *)c->workspace, nb, R, dout, inp, mean,
                                                                      rstd, N, C, mode);
    MBPO__LAUNCHED("mbpo__k_colsum_partial", N * C);
    mbpo__k_colsum_finish<<<mbpo__cuda_blocks(C, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, c->stream>>>(
        w, b, (const float *)c->workspace, nb, C);
    MBPO__LAUNCHED("mbpo__k_colsum_finish", C);
    return 1;
}

/* out (N,OC) = inp (N,C) w (OC,C)^T + bias (OC); bias may be NULL */
static int mbpo__cuda_matmul_forward(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, const mbpo_x *w, const mbpo_x *bias,
                                     int64_t N, int64_t C, int64_t OC) {
    return mbpo__cuda_gemm(MBPO__CUDA(be), out, 0, MBPO__CUDA_CX(inp), 0, C, MBPO__CUDA_CX(w), 0, MBPO__CUDA_CX(bias), N, C, OC, 0);
}
/* dinp (N,C) += dout (N,OC) w (OC,C)   [A = dout, B^T = w: B stored (K,N), b_t]
   dw (OC,C) += dout^T inp, fp32         [A = dout stored (K,M), a_t; B^T = inp stored (K,N), b_t]
   dbias (OC) += column sums of dout     [deterministic kernel]; any of the three may be NULL */
static int mbpo__cuda_matmul_backward(mbpo_backend *be, mbpo_x *dinp, float *dw, float *dbias, const mbpo_x *dout,
                                      const mbpo_x *inp, const mbpo_x *w, int64_t N, int64_t C, int64_t OC) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    if (dinp && !mbpo__cuda_gemm(c, dinp, 0, MBPO__CUDA_CX(dout), 0, OC, MBPO__CUDA_CX(w), 1, NULL, N, OC, C, 1)) return 0;
    if (dw && !mbpo__cuda_gemm(c, dw, 1, MBPO__CUDA_CX(dout), 1, OC, MBPO__CUDA_CX(inp), 1, NULL, OC, N, C, 1)) return 0;
    if (dbias && !mbpo__cuda_colsum(c, NULL, dbias, MBPO__CUDA_CX(dout), NULL, NULL, NULL, N, OC, 0)) return 0;
    return 1;
}

/* ------------------------------------------------------------------ 4. norms

   One warp per row (8 rows per block): sums strided over the lanes, then a butterfly.
   The order differs from the CPU's (sequential) but is fixed. */
#define MBPO__ROWS_PER_BLOCK 8

/* LayerNorm: out (N,C) = (x - mean) * rstd * w + b; mean, rstd (N) saved */
static __global__ void mbpo__k_layernorm_forward(mbpo__cx *out, float *mean, float *rstd, const mbpo__cx *inp,
                                                 const mbpo__cx *w, const mbpo__cx *b, int64_t N, int64_t C, float eps) {
    int64_t row = (int64_t)blockIdx.x * MBPO__ROWS_PER_BLOCK + (threadIdx.x >> 5), i;
    int lane = threadIdx.x & 31;
    const mbpo__cx *x;
    float m = 0.0f, v = 0.0f, r;
    if (row >= N) return;
    x = inp + row * C;
    for (i = lane; i < C; i += 32) m += mbpo__ld(x, i);
    m = mbpo__warp_sum(m) / (float)C;
    for (i = lane; i < C; i += 32) { float d = mbpo__ld(x, i) - m; v += d * d; }
    v = mbpo__warp_sum(v) / (float)C;        /* biased variance, as torch */
    r = 1.0f / sqrtf(v + eps);
    for (i = lane; i < C; i += 32) mbpo__st(out, row * C + i, (mbpo__ld(x, i) - m) * r * mbpo__ld(w, i) + mbpo__ld(b, i));
    if (lane == 0) { mean[row] = m; rstd[row] = r; }
}
static int mbpo__cuda_layernorm_forward(mbpo_backend *be, mbpo_x *out, float *mean, float *rstd, const mbpo_x *inp,
                                        const mbpo_x *w, const mbpo_x *b, int64_t N, int64_t C, float eps) {
    if (N == 0) return 1;
    mbpo__k_layernorm_forward<<<(unsigned)((N + MBPO__ROWS_PER_BLOCK - 1) / MBPO__ROWS_PER_BLOCK), 32 * MBPO__ROWS_PER_BLOCK, 0,
                                MBPO__CUDA(be)->stream>>>(MBPO__CUDA_X(out), mean, rstd, MBPO__CUDA_CX(inp), MBPO__CUDA_CX(w), MBPO__CUDA_CX(b), N, C, eps);
    MBPO__LAUNCHED("mbpo__k_layernorm_forward", N * C);
    return 1;
}
/* dinp (N,C) += rstd (g - mean(g) - xhat mean(g xhat)), g = dout w */
static __global__ void mbpo__k_layernorm_backward(mbpo__cx *dinp, const mbpo__cx *dout, const mbpo__cx *inp,
                                                  const mbpo__cx *w, const float *mean, const float *rstd,
                                                  int64_t N, int64_t C) {
    int64_t row = (int64_t)blockIdx.x * MBPO__ROWS_PER_BLOCK + (threadIdx.x >> 5), i;
    int lane = threadIdx.x & 31;
    const mbpo__cx *dy, *x;
    float m, r, mg = 0.0f, mgx = 0.0f;
    if (row >= N) return;
    dy = dout + row * C; x = inp + row * C; m = mean[row]; r = rstd[row];
    for (i = lane; i < C; i += 32) {
        float xh = (mbpo__ld(x, i) - m) * r, g = mbpo__ld(dy, i) * mbpo__ld(w, i);
        mg += g; mgx += g * xh;
    }
    mg = mbpo__warp_sum(mg) / (float)C;
    mgx = mbpo__warp_sum(mgx) / (float)C;
    for (i = lane; i < C; i += 32) {
        float xh = (mbpo__ld(x, i) - m) * r;
        mbpo__st(dinp, row * C + i, mbpo__ld(dinp, row * C + i) + r * (mbpo__ld(dy, i) * mbpo__ld(w, i) - mg - xh * mgx));
    }
}
/* dinp (N,C) +=; dw, db (C) += (both or neither NULL) */
static int mbpo__cuda_layernorm_backward(mbpo_backend *be, mbpo_x *dinp, float *dw, float *db, const mbpo_x *dout,
                                         const mbpo_x *inp, const mbpo_x *w, const float *mean, const float *rstd,
                                         int64_t N, int64_t C) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    if (N == 0) return 1;
    mbpo__k_layernorm_backward<<<(unsigned)((N + MBPO__ROWS_PER_BLOCK - 1) / MBPO__ROWS_PER_BLOCK), 32 * MBPO__ROWS_PER_BLOCK, 0,
                                 c->stream>>>(MBPO__CUDA_X(dinp), MBPO__CUDA_CX(dout), MBPO__CUDA_CX(inp), MBPO__CUDA_CX(w), mean, rstd, N, C);
    MBPO__LAUNCHED("mbpo__k_layernorm_backward", N * C);
    if (!dw && !db) return 1;
    return mbpo__cuda_colsum(c, dw, db, MBPO__CUDA_CX(dout), MBPO__CUDA_CX(inp), mean, rstd, N, C, 1);
}
/* RMSNorm: out (N,C) = w * (x * rstd), rstd (N) saved. x * rstd is rounded to the storage type
   before the weight, as transformers does (hidden.to(input_dtype) then weight * hidden). */
static __global__ void mbpo__k_rmsnorm_forward(mbpo__cx *out, float *rstd, const mbpo__cx *inp, const mbpo__cx *w,
                                               int64_t N, int64_t C, float eps) {
    int64_t row = (int64_t)blockIdx.x * MBPO__ROWS_PER_BLOCK + (threadIdx.x >> 5), i;
    int lane = threadIdx.x & 31;
    const mbpo__cx *x;
    float ss = 0.0f, r;
    if (row >= N) return;
    x = inp + row * C;
    for (i = lane; i < C; i += 32) { float v = mbpo__ld(x, i); ss += v * v; }
    ss = mbpo__warp_sum(ss);
    r = 1.0f / sqrtf(ss / (float)C + eps);
    for (i = lane; i < C; i += 32) mbpo__st(out, row * C + i, mbpo__ld(w, i) * mbpo__round(mbpo__ld(x, i) * r));
    if (lane == 0) rstd[row] = r;
}
static int mbpo__cuda_rmsnorm_forward(mbpo_backend *be, mbpo_x *out, float *rstd, const mbpo_x *inp, const mbpo_x *w,
                                      int64_t N, int64_t C, float eps) {
    if (N == 0) return 1;
    mbpo__k_rmsnorm_forward<<<(unsigned)((N + MBPO__ROWS_PER_BLOCK - 1) / MBPO__ROWS_PER_BLOCK), 32 * MBPO__ROWS_PER_BLOCK, 0,
                              MBPO__CUDA(be)->stream>>>(MBPO__CUDA_X(out), rstd, MBPO__CUDA_CX(inp), MBPO__CUDA_CX(w), N, C, eps);
    MBPO__LAUNCHED("mbpo__k_rmsnorm_forward", N * C);
    return 1;
}
/* dinp (N,C) += r g - x r^3 (sum g x) / C, g = dout w */
static __global__ void mbpo__k_rmsnorm_backward(mbpo__cx *dinp, const mbpo__cx *dout, const mbpo__cx *inp, const mbpo__cx *w,
                                                const float *rstd, int64_t N, int64_t C) {
    int64_t row = (int64_t)blockIdx.x * MBPO__ROWS_PER_BLOCK + (threadIdx.x >> 5), i;
    int lane = threadIdx.x & 31;
    const mbpo__cx *dy, *x;
    float r, s = 0.0f;
    if (row >= N) return;
    dy = dout + row * C; x = inp + row * C; r = rstd[row];
    for (i = lane; i < C; i += 32) s += mbpo__ld(dy, i) * mbpo__ld(w, i) * mbpo__ld(x, i);
    s = mbpo__warp_sum(s) * (r * r * r / (float)C);
    for (i = lane; i < C; i += 32)
        mbpo__st(dinp, row * C + i, mbpo__ld(dinp, row * C + i) + r * mbpo__ld(dy, i) * mbpo__ld(w, i) - mbpo__ld(x, i) * s);
}
/* dinp (N,C) +=; dw (C) += sum_n dout x rstd (dw may be NULL) */
static int mbpo__cuda_rmsnorm_backward(mbpo_backend *be, mbpo_x *dinp, float *dw, const mbpo_x *dout, const mbpo_x *inp,
                                       const mbpo_x *w, const float *rstd, int64_t N, int64_t C) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    if (N == 0) return 1;
    mbpo__k_rmsnorm_backward<<<(unsigned)((N + MBPO__ROWS_PER_BLOCK - 1) / MBPO__ROWS_PER_BLOCK), 32 * MBPO__ROWS_PER_BLOCK, 0,
                               c->stream>>>(MBPO__CUDA_X(dinp), MBPO__CUDA_CX(dout), MBPO__CUDA_CX(inp), MBPO__CUDA_CX(w), rstd, N, C);
    MBPO__LAUNCHED("mbpo__k_rmsnorm_backward", N * C);
    if (!dw) return 1;
    return mbpo__cuda_colsum(c, dw, NULL, MBPO__CUDA_CX(dout), MBPO__CUDA_CX(inp), NULL, rstd, N, C, 2);
}

/* ------------------------------------------------------------------ 5. elementwise (n values) */

static __device__ __forceinline__ float mbpo__dsigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* QuickGELU: out = x sigmoid(1.702 x) */
static __global__ void mbpo__k_quick_gelu_forward(mbpo__cx *out, const mbpo__cx *inp, int64_t n) {
    MBPO__FOR(i, n) { float x = mbpo__ld(inp, i); mbpo__st(out, i, x * mbpo__dsigmoid(1.702f * x)); }
}
static __global__ void mbpo__k_quick_gelu_backward(mbpo__cx *dinp, const mbpo__cx *dout, const mbpo__cx *inp, int64_t n) {
    MBPO__FOR(i, n) {
        float x = mbpo__ld(inp, i), s = mbpo__dsigmoid(1.702f * x);
        mbpo__st(dinp, i, mbpo__ld(dout, i) * (s + 1.702f * x * s * (1.0f - s)));
    }
}
/* exact GELU: out = 0.5 x (1 + erf(x / sqrt 2)) */
static __global__ void mbpo__k_gelu_forward(mbpo__cx *out, const mbpo__cx *inp, int64_t n) {
    MBPO__FOR(i, n) { float x = mbpo__ld(inp, i); mbpo__st(out, i, 0.5f * x * (1.0f + erff(x * 0.70710678118654752f))); }
}
static __global__ void mbpo__k_gelu_backward(mbpo__cx *dinp, const mbpo__cx *dout, const mbpo__cx *inp, int64_t n) {
    MBPO__FOR(i, n) {
        float x = mbpo__ld(inp, i), cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
        mbpo__st(dinp, i, mbpo__ld(dout, i) * (cdf + x * pdf));
    }
}
/* SwiGLU: out = silu(gate) up */
static __global__ void mbpo__k_swiglu_forward(mbpo__cx *out, const mbpo__cx *gate, const mbpo__cx *up, int64_t n) {
    MBPO__FOR(i, n) { float g = mbpo__ld(gate, i); mbpo__st(out, i, g * mbpo__dsigmoid(g) * mbpo__ld(up, i)); }
}
static __global__ void mbpo__k_swiglu_backward(mbpo__cx *dgate, mbpo__cx *dup, const mbpo__cx *dout, const mbpo__cx *gate,
                                               const mbpo__cx *up, int64_t n) {
    MBPO__FOR(i, n) {
        float g = mbpo__ld(gate, i), u = mbpo__ld(up, i), d = mbpo__ld(dout, i), s = mbpo__dsigmoid(g);
        mbpo__st(dgate, i, d * u * s * (1.0f + g * (1.0f - s)));
        mbpo__st(dup, i, d * g * s);
    }
}
/* out = a + b; out may be a */
static __global__ void mbpo__k_add(mbpo__cx *out, const mbpo__cx *a, const mbpo__cx *b, int64_t n) {
    MBPO__FOR(i, n) mbpo__st(out, i, mbpo__ld(a, i) + mbpo__ld(b, i));
}

/* launch an elementwise kernel over n values on the stream of `be` (in scope), n last */
#define MBPO__EW_LAUNCH(kernel, n, ...)                                                                       \
    do {                                                                                                      \
        if ((n) > 0) {                                                                                        \
            kernel<<<mbpo__cuda_blocks(n, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, MBPO__CUDA(be)->stream>>>( \
                __VA_ARGS__, n);                                                                              \
            MBPO__LAUNCHED(#kernel, n);                                                                       \
        }                                                                                                     \
    } while (0)
/* out, inp (n) */
static int mbpo__cuda_quick_gelu_forward(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, int64_t n) {
    MBPO__EW_LAUNCH(mbpo__k_quick_gelu_forward, n, MBPO__CUDA_X(out), MBPO__CUDA_CX(inp));
    return 1;
}
/* dinp = dout QuickGELU'(inp), all (n) */
static int mbpo__cuda_quick_gelu_backward(mbpo_backend *be, mbpo_x *dinp, const mbpo_x *dout, const mbpo_x *inp, int64_t n) {
    MBPO__EW_LAUNCH(mbpo__k_quick_gelu_backward, n, MBPO__CUDA_X(dinp), MBPO__CUDA_CX(dout), MBPO__CUDA_CX(inp));
    return 1;
}
/* out, inp (n) */
static int mbpo__cuda_gelu_forward(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, int64_t n) {
    MBPO__EW_LAUNCH(mbpo__k_gelu_forward, n, MBPO__CUDA_X(out), MBPO__CUDA_CX(inp));
    return 1;
}
/* dinp = dout GELU'(inp), all (n) */
static int mbpo__cuda_gelu_backward(mbpo_backend *be, mbpo_x *dinp, const mbpo_x *dout, const mbpo_x *inp, int64_t n) {
    MBPO__EW_LAUNCH(mbpo__k_gelu_backward, n, MBPO__CUDA_X(dinp), MBPO__CUDA_CX(dout), MBPO__CUDA_CX(inp));
    return 1;
}
/* out, gate, up (n) */
static int mbpo__cuda_swiglu_forward(mbpo_backend *be, mbpo_x *out, const mbpo_x *gate, const mbpo_x *up, int64_t n) {
    MBPO__EW_LAUNCH(mbpo__k_swiglu_forward, n, MBPO__CUDA_X(out), MBPO__CUDA_CX(gate), MBPO__CUDA_CX(up));
    return 1;
}
/* dgate, dup written (n) */
static int mbpo__cuda_swiglu_backward(mbpo_backend *be, mbpo_x *dgate, mbpo_x *dup, const mbpo_x *dout, const mbpo_x *gate,
                                      const mbpo_x *up, int64_t n) {
    MBPO__EW_LAUNCH(mbpo__k_swiglu_backward, n, MBPO__CUDA_X(dgate), MBPO__CUDA_X(dup), MBPO__CUDA_CX(dout), MBPO__CUDA_CX(gate), MBPO__CUDA_CX(up));
    return 1;
}
/* out, a, b (n) */
static int mbpo__cuda_add(mbpo_backend *be, mbpo_x *out, const mbpo_x *a, const mbpo_x *b, int64_t n) {
    MBPO__EW_LAUNCH(mbpo__k_add, n, MBPO__CUDA_X(out), MBPO__CUDA_CX(a), MBPO__CUDA_CX(b));
    return 1;
}
/* out (R, W) row r = inp row rows[r]: a copy of stored values, no rounding (also the head's
   gather of target rows) */
static __global__ void mbpo__k_gather_rows(mbpo__cx *out, const mbpo__cx *inp, const int64_t *rows, int64_t R, int64_t W) {
    MBPO__FOR(idx, R * W) out[idx] = inp[rows[idx / W] * W + idx % W];
}
/* CPU: mbpo__cpu_gather_rows */
static int mbpo__cuda_gather_rows(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, const int64_t *idx, int64_t R, int64_t W) {
    if (R * W > 0) {
        mbpo__k_gather_rows<<<mbpo__cuda_blocks(R * W, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, MBPO__CUDA(be)->stream>>>(
            MBPO__CUDA_X(out), MBPO__CUDA_CX(inp), idx, R, W);
        MBPO__LAUNCHED("mbpo__k_gather_rows", R * W);
    }
    return 1;
}

/* ------------------------------------------------------------------ 6. rotary

   The inverse frequencies are computed on the host by mbpo__inv_freq, the CPU's own function,
   so both tables start from the same bits; they travel as a kernel argument (a struct by
   value), which needs no allocation. Angles and cos/sin are fp32 on the device. */
#define MBPO__ROPE_MAX_HALF 256   /* HS <= 512 */
typedef struct { float inv[MBPO__ROPE_MAX_HALF]; } mbpo__rope_freqs;

/* cosv, sinv (N, HS/2); slot j reads position row comp(j) of pos (3, N) by mrope_section */
static __global__ void mbpo__k_mrope_tables(float *cosv, float *sinv, const int64_t *pos, mbpo__rope_freqs f, int64_t N,
                                            int64_t half, int sec0, int sec1) {
    MBPO__FOR(idx, N * half) {
        int64_t t = idx / half, j = idx % half;
        int comp = j < sec0 ? 0 : j < sec0 + sec1 ? 1 : 2;
        float ang = (float)pos[comp * N + t] * f.inv[j];
        cosv[idx] = cosf(ang);
        sinv[idx] = sinf(ang);
    }
}
static int mbpo__cuda_mrope_tables(mbpo_backend *be, float *cosv, float *sinv, const int64_t *pos, int64_t N, int64_t HS,
                                   double theta, int sec0, int sec1) {
    mbpo__rope_freqs f;
    int64_t j, half = HS / 2;
    if (N == 0 || half == 0) return 1;
    if (half > MBPO__ROPE_MAX_HALF) return mbpo__fail("mrope_tables: head size %lld exceeds %d", (long long)HS, 2 * MBPO__ROPE_MAX_HALF);
    memset(&f, 0, sizeof f);
    for (j = 0; j < half; j++) f.inv[j] = mbpo__inv_freq(theta, j, HS);
    mbpo__k_mrope_tables<<<mbpo__cuda_blocks(N * half, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, MBPO__CUDA(be)->stream>>>(
        cosv, sinv, pos, f, N, half, sec0, sec1);
    MBPO__LAUNCHED("mbpo__k_mrope_tables", N * half);
    return 1;
}
/* cosv, sinv (N, HS/2): slots [0, HS/4) by the patch row hw[0][r], [HS/4, HS/2) by the column hw[1][r] */
static __global__ void mbpo__k_vrope_tables(float *cosv, float *sinv, const int64_t *hw, mbpo__rope_freqs f, int64_t N,
                                            int64_t half, int64_t quarter) {
    MBPO__FOR(idx, N * quarter) {
        int64_t r = idx / quarter, j = idx % quarter;
        float ah = (float)hw[r] * f.inv[j], aw = (float)hw[N + r] * f.inv[j];
        cosv[r * half + j] = cosf(ah); sinv[r * half + j] = sinf(ah);
        cosv[r * half + quarter + j] = cosf(aw); sinv[r * half + quarter + j] = sinf(aw);
    }
}
static int mbpo__cuda_vrope_tables(mbpo_backend *be, float *cosv, float *sinv, const int64_t *hw, int64_t N, int64_t HS,
                                   double theta) {
    mbpo__rope_freqs f;
    int64_t j, half = HS / 2, quarter = HS / 4;
    if (N == 0 || quarter == 0) return 1;
    if (quarter > MBPO__ROPE_MAX_HALF) return mbpo__fail("vrope_tables: head size %lld exceeds %d", (long long)HS, 4 * MBPO__ROPE_MAX_HALF);
    memset(&f, 0, sizeof f);
    for (j = 0; j < quarter; j++) f.inv[j] = mbpo__inv_freq(theta, j, half);
    mbpo__k_vrope_tables<<<mbpo__cuda_blocks(N * quarter, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, MBPO__CUDA(be)->stream>>>(
        cosv, sinv, hw, f, N, half, quarter);
    MBPO__LAUNCHED("mbpo__k_vrope_tables", N * quarter);
    return 1;
}
/* x (N, nh, HS) at row stride `stride`, in place: pair (i, i + HS/2) turns by angle i times sign */
static __global__ void mbpo__k_rope_apply(mbpo__cx *x, const float *cosv, const float *sinv, int64_t N, int64_t nh,
                                          int64_t HS, int64_t stride, float sign) {
    int64_t half = HS / 2;
    MBPO__FOR(idx, N * nh * half) {
        int64_t n = idx / (nh * half), h = (idx / half) % nh, i = idx % half;
        mbpo__cx *v = x + n * stride + h * HS;
        float c = cosv[n * half + i], s = sign * sinv[n * half + i], a = mbpo__ld(v, i), b = mbpo__ld(v, i + half);
        mbpo__st(v, i, a * c - b * s);
        mbpo__st(v, i + half, b * c + a * s);
    }
}
static int mbpo__cuda_rope_apply(mbpo_backend *be, mbpo_x *x, const float *cosv, const float *sinv, int64_t N, int64_t nh,
                                 int64_t HS, int64_t stride, float sign) {
    int64_t n = N * nh * (HS / 2);
    if (n == 0) return 1;
    mbpo__k_rope_apply<<<mbpo__cuda_blocks(n, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, MBPO__CUDA(be)->stream>>>(
        MBPO__CUDA_X(x), cosv, sinv, N, nh, HS, stride, sign);
    MBPO__LAUNCHED("mbpo__k_rope_apply", n);
    return 1;
}

/* ------------------------------------------------------------------ 7. embedding */

/* h (T, H): row t = feat[feat_row[t]] if feat_row (may be NULL) says >= 0, else embed[ids[t]] */
static __global__ void mbpo__k_embed_forward(mbpo__cx *h, const mbpo__cx *embed, const mbpo__cx *feat, const int32_t *ids,
                                             const int64_t *feat_row, int64_t T, int64_t H) {
    MBPO__FOR(idx, T * H) {
        int64_t t = idx / H, j = idx % H, fr = feat_row ? feat_row[t] : -1;
        h[idx] = fr >= 0 ? feat[fr * H + j] : embed[(int64_t)ids[t] * H + j];
    }
}
static int mbpo__cuda_embed_forward(mbpo_backend *be, mbpo_x *h, const mbpo_x *embed, const mbpo_x *feat, const int32_t *ids,
                                    const int64_t *feat_row, int64_t T, int64_t H) {
    if (T * H == 0) return 1;
    mbpo__k_embed_forward<<<mbpo__cuda_blocks(T * H, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, MBPO__CUDA(be)->stream>>>(
        MBPO__CUDA_X(h), MBPO__CUDA_CX(embed), MBPO__CUDA_CX(feat), ids, feat_row, T, H);
    MBPO__LAUNCHED("mbpo__k_embed_forward", T * H);
    return 1;
}
/* dfeat[feat_row[t]] += dh[t], else dembed[ids[t]] += dh[t] unless ids[t] == pad or dembed is
   NULL. One thread per column walks t in increasing order, so repeated tokens sum in the
   CPU's order; the block stages the row metadata in shared memory, MBPO__CUDA_THREADS rows
   at a time. */
static __global__ void mbpo__k_embed_backward(float *dembed, mbpo__cx *dfeat, const mbpo__cx *dh, const int32_t *ids,
                                              const int64_t *feat_row, int64_t pad_id, int64_t T, int64_t H) {
    __shared__ int64_t s_fr[MBPO__CUDA_THREADS];
    __shared__ int32_t s_id[MBPO__CUDA_THREADS];
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, t0, t;
    for (t0 = 0; t0 < T; t0 += MBPO__CUDA_THREADS) {
        int64_t nt = T - t0 < MBPO__CUDA_THREADS ? T - t0 : MBPO__CUDA_THREADS;
        __syncthreads();                             /* the previous tile is consumed */
        if (threadIdx.x < nt) {
            s_fr[threadIdx.x] = feat_row ? feat_row[t0 + threadIdx.x] : -1;
            s_id[threadIdx.x] = ids[t0 + threadIdx.x];
        }
        __syncthreads();
        if (j >= H) continue;
        for (t = 0; t < nt; t++) {
            int64_t fr = s_fr[t];
            float g = mbpo__ld(dh, (t0 + t) * H + j);
            if (fr >= 0) { if (dfeat) mbpo__st(dfeat, fr * H + j, mbpo__ld(dfeat, fr * H + j) + g); }
            else if (dembed && (int64_t)s_id[t] != pad_id) dembed[(int64_t)s_id[t] * H + j] += g;
        }
    }
}
static int mbpo__cuda_embed_backward(mbpo_backend *be, float *dembed, mbpo_x *dfeat, const mbpo_x *dh, const int32_t *ids,
                                     const int64_t *feat_row, int64_t pad_id, int64_t T, int64_t H) {
    if (T * H == 0) return 1;
    mbpo__k_embed_backward<<<(unsigned)((H + MBPO__CUDA_THREADS - 1) / MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0,
                             MBPO__CUDA(be)->stream>>>(dembed, MBPO__CUDA_X(dfeat), MBPO__CUDA_CX(dh), ids, feat_row, pad_id, T, H);
    MBPO__LAUNCHED("mbpo__k_embed_backward", T * H);
    return 1;
}

/* ------------------------------------------------------------------ 8. KV cache */

/* kc[g][t] = kn[g], vc[g][t] = vn[g] at t = *tp: kc, vc (G, max_len, KD); kn, vn (G, KD). The
   position is read here, on the device (a replayed graph finds the step's own); outside the
   cache nothing is written (the host keeps it inside: mbpo_kv_decode, mbpo_generate) */
static __global__ void mbpo__k_kv_append(mbpo__cx *kc, mbpo__cx *vc, const mbpo__cx *kn, const mbpo__cx *vn, int64_t G,
                                         const int64_t *tp, int64_t max_len, int64_t KD) {
    const int64_t t = *tp;
    if (t < 0 || t >= max_len) return;
    MBPO__FOR(idx, G * KD) {
        int64_t g = idx / KD, d = idx % KD, dst = (g * max_len + t) * KD + d;
        kc[dst] = kn[idx];
        vc[dst] = vn[idx];
    }
}
static int mbpo__cuda_kv_append(mbpo_backend *be, mbpo_x *kc, mbpo_x *vc, const mbpo_x *kn, const mbpo_x *vn, int64_t G,
                                const int64_t *tp, int64_t max_len, int64_t KD) {
    if (G * KD == 0) return 1;
    if (G < 0 || KD < 0 || max_len < 1) return mbpo__fail("kv_append: G %lld, KD %lld, a cache of %lld", (long long)G, (long long)KD, (long long)max_len);
    mbpo__k_kv_append<<<mbpo__cuda_blocks(G * KD, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, MBPO__CUDA(be)->stream>>>(
        MBPO__CUDA_X(kc), MBPO__CUDA_X(vc), MBPO__CUDA_CX(kn), MBPO__CUDA_CX(vn), G, tp, max_len, KD);
    MBPO__LAUNCHED("mbpo__k_kv_append", G * KD);
    return 1;
}

/* ------------------------------------------------------------------ 9. head

   The fused head, `chunk` target rows at a time, all on the device:
     gather xf[rows[n]] into chunk_x (cn, H); z (cn, V) fp32 = chunk_x lm_head^T (cuBLASLt);
     one block per row: max, sum exp (fixed-order block trees), lse, logp = z[y] - lse.
   Backward recomputes z, then turns it in place into dz = dlogp (onehot - exp(z - lse)).
   The GEMMs that read dz take mbpo__cx inputs (cuBLASLt has no fp32 A x bf16 B), so dz is
   stored as mbpo__cx IN PLACE in chunk_z: row r at the start of fp32 row r, i.e. a
   (cn, V) mbpo__cx matrix with row stride V * 4 / sizeof(mbpo__cx) elements (2V in bf16, V
   in fp32). No extra scratch; in the bf16 build dz is rounded to bf16 like every other
   backward GEMM input (dout of a Linear is bf16 too). Then
     chunk_dx (cn, H) = dz lm_head,   dlm_head (V, H) += dz^T chunk_x (fp32),
     dxf[rows[n]] += chunk_dx[n]      (distinct rows: no two threads meet). */
#define MBPO__ROW_THREADS 512

/* dxf[rows[r]] += chunk_dx[r], (cn, H) */
static __global__ void mbpo__k_scatter_add_rows(mbpo__cx *dxf, const mbpo__cx *chunk_dx, const int64_t *rows, int64_t cn,
                                                int64_t H) {
    MBPO__FOR(idx, cn * H) {
        int64_t dst = rows[idx / H] * H + idx % H;
        mbpo__st(dxf, dst, mbpo__ld(dxf, dst) + mbpo__ld(chunk_dx, idx));
    }
}
/* per row r of z (cn, V): lse[r] = log sum exp z, logp[r] = z[y[r]] - lse[r] (NaN for a label
   outside [0, V), which the model never passes) */
static __global__ void mbpo__k_logsoftmax_gather_forward(float *logp, float *lse, const float *z, const int32_t *y, int64_t V) {
    __shared__ float sh[32];
    const float *zr = z + (int64_t)blockIdx.x * V;
    float mx = -INFINITY, sum = 0.0f, l;
    int64_t j;
    for (j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, zr[j]);
    mx = mbpo__block_max(mx, sh);
    for (j = threadIdx.x; j < V; j += blockDim.x) sum += expf(zr[j] - mx);
    sum = mbpo__block_sum(sum, sh);
    l = mx + logf(sum);
    if (threadIdx.x == 0) {
        int32_t yr = y[blockIdx.x];
        lse[blockIdx.x] = l;
        logp[blockIdx.x] = yr >= 0 && yr < V ? zr[yr] - l : NAN;
    }
}
/* in place, row r of z (cn, V): dz = -dlogp exp(z - lse) (+ dlogp at y), stored as mbpo__cx at
   the start of the row (see the section comment). With a narrower mbpo__cx, the stores of
   tile k land on fp32 values of tiles <= k; the barrier between each tile's loads and stores
   keeps every value read before it is overwritten. */
static __global__ void mbpo__k_logsoftmax_gather_backward(float *z, const float *dlogp, const float *lse, const int32_t *y,
                                                          int64_t V) {
    float *zr = z + (int64_t)blockIdx.x * V;
    mbpo__cx *dz = (mbpo__cx *)(void *)zr;
    float d = dlogp[blockIdx.x], l = lse[blockIdx.x];
    int32_t yr = y[blockIdx.x];
    int64_t base;
    for (base = 0; base < V; base += blockDim.x) {
        int64_t j = base + threadIdx.x;
        float v = 0.0f;
        if (j < V) { v = -d * expf(zr[j] - l); if (j == yr) v += d; }
        __syncthreads();
        if (j < V) mbpo__st(dz, j, v);
    }
}
static int mbpo__cuda_head_chunk_logits(struct mbpo__backend_cuda *c, const mbpo__cx *xf, const mbpo__cx *lm_head,
                                        const int64_t *rows, int64_t cn, int64_t H, int64_t V, mbpo__cx *chunk_x,
                                        float *chunk_z) {
    mbpo__k_gather_rows<<<mbpo__cuda_blocks(cn * H, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, c->stream>>>(chunk_x, xf, rows, cn, H);
    MBPO__LAUNCHED("mbpo__k_gather_rows", cn * H);
    return mbpo__cuda_gemm(c, chunk_z, 1, chunk_x, 0, H, lm_head, 0, NULL, cn, H, V, 0);
}
/* logp, lse (N); xf (T, H) with target rows rows (N); lm_head (V, H); labels (N);
   scratch chunk_x (chunk, H), chunk_z (chunk, V) */
static int mbpo__cuda_head_forward(mbpo_backend *be, float *logp, float *lse, const mbpo_x *xf, const mbpo_x *lm_head,
                                   const int64_t *rows, const int32_t *labels, int64_t N, int64_t H, int64_t V, int64_t chunk,
                                   mbpo_x *chunk_x, float *chunk_z) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    int64_t n0;
    if (N == 0) return 1;
    if (chunk < 1 || V < 1 || chunk > 2147483647) return mbpo__fail("head_forward: chunk %lld, V %lld", (long long)chunk, (long long)V);
    for (n0 = 0; n0 < N; n0 += chunk) {
        int64_t cn = N - n0 < chunk ? N - n0 : chunk;
        if (!mbpo__cuda_head_chunk_logits(c, MBPO__CUDA_CX(xf), MBPO__CUDA_CX(lm_head), rows + n0, cn, H, V, MBPO__CUDA_X(chunk_x), chunk_z))
            return 0;
        mbpo__k_logsoftmax_gather_forward<<<(unsigned)cn, MBPO__ROW_THREADS, 0, c->stream>>>(logp + n0, lse + n0, chunk_z,
                                                                                          labels + n0, V);
        MBPO__LAUNCHED("mbpo__k_logsoftmax_gather_forward", cn * V);
    }
    return 1;
}
/* dxf (T, H) += at target rows; dlm_head (V, H) += (NULL: skip); dlogp, lse (N);
   scratch chunk_x, chunk_dx (chunk, H), chunk_z (chunk, V) */
static int mbpo__cuda_head_backward(mbpo_backend *be, mbpo_x *dxf, float *dlm_head, const float *dlogp, const float *lse,
                                    const mbpo_x *xf, const mbpo_x *lm_head, const int64_t *rows, const int32_t *labels,
                                    int64_t N, int64_t H, int64_t V, int64_t chunk, mbpo_x *chunk_x, float *chunk_z,
                                    mbpo_x *chunk_dx) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    const mbpo__cx *dz = (const mbpo__cx *)(const void *)chunk_z;
    int64_t n0, ldz = V * (int64_t)(sizeof(float) / sizeof(mbpo__cx));
    if (N == 0) return 1;
    if (chunk < 1 || V < 1 || chunk > 2147483647) return mbpo__fail("head_backward: chunk %lld, V %lld", (long long)chunk, (long long)V);
    for (n0 = 0; n0 < N; n0 += chunk) {
        int64_t cn = N - n0 < chunk ? N - n0 : chunk;
        if (!mbpo__cuda_head_chunk_logits(c, MBPO__CUDA_CX(xf), MBPO__CUDA_CX(lm_head), rows + n0, cn, H, V, MBPO__CUDA_X(chunk_x), chunk_z))
            return 0;
        mbpo__k_logsoftmax_gather_backward<<<(unsigned)cn, MBPO__ROW_THREADS, 0, c->stream>>>(chunk_z, dlogp + n0, lse + n0,
                                                                                           labels + n0, V);
        MBPO__LAUNCHED("mbpo__k_logsoftmax_gather_backward", cn * V);
        /* chunk_dx (cn, H) = dz (cn, V) lm_head (V, H): B^T = lm_head, stored (K, N) */
        if (!mbpo__cuda_gemm(c, chunk_dx, 0, dz, 0, ldz, MBPO__CUDA_CX(lm_head), 1, NULL, cn, V, H, 0)) return 0;
        /* dlm_head (V, H) += dz^T chunk_x: A = dz stored (K, M), B^T = chunk_x stored (K, N) */
        if (dlm_head && !mbpo__cuda_gemm(c, dlm_head, 1, dz, 1, ldz, MBPO__CUDA_CX(chunk_x), 1, NULL, V, cn, H, 1)) return 0;
        mbpo__k_scatter_add_rows<<<mbpo__cuda_blocks(cn * H, MBPO__CUDA_THREADS), MBPO__CUDA_THREADS, 0, c->stream>>>(
            MBPO__CUDA_X(dxf), MBPO__CUDA_CX(chunk_dx), rows + n0, cn, H);
        MBPO__LAUNCHED("mbpo__k_scatter_add_rows", cn * H);
    }
    return 1;
}

/* ------------------------------------------------------------------ 10. logits */

/* z (n, V) fp32 = x (n, H) lm_head (V, H)^T */
static int mbpo__cuda_logits(mbpo_backend *be, float *z, const mbpo_x *x, const mbpo_x *lm_head, int64_t n, int64_t H, int64_t V) {
    return mbpo__cuda_gemm(MBPO__CUDA(be), z, 1, MBPO__CUDA_CX(x), 0, H, MBPO__CUDA_CX(lm_head), 0, NULL, n, H, V, 0);
}

/* ------------------------------------------------------------------ 11. attention

   Flash-style attention over packed segments, its backward and the decode variant. It uses
   only mbpo__cuda_stream(be) and mbpo__cuda_scratch(be, bytes) (the workspace, between its own
   kernels) from the sections above. */
static int mbpo__cuda_attention_forward(mbpo_backend *be, mbpo_x *out, float *lse, const mbpo_x *q, const mbpo_x *k,
                                        const mbpo_x *v, const int64_t *cu, const int64_t *cu_host, int64_t n_seg,
                                        int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs, int64_t os, int causal);
static int mbpo__cuda_attention_backward(mbpo_backend *be, mbpo_x *dq, mbpo_x *dk, mbpo_x *dv, const mbpo_x *dout,
                                         const mbpo_x *out, const float *lse, const mbpo_x *q, const mbpo_x *k, const mbpo_x *v,
                                         const int64_t *cu, const int64_t *cu_host, int64_t n_seg, int64_t NH, int64_t NKV,
                                         int64_t HS, int64_t qs, int64_t kvs, int64_t os, int causal);
static int mbpo__cuda_attention_decode(mbpo_backend *be, mbpo_x *out, const mbpo_x *q, const mbpo_x *kc, const mbpo_x *vc,
                                       int64_t G, const int64_t *tp, int64_t max_len, int64_t NH, int64_t NKV, int64_t HS);

/* ---- attention: flash-style forward, backward and decoding (SIMT, fp32 math)

   Reference: the CPU ops mbpo__attention_forward / _backward (mbpo.h, one segment at a time)
   and mbpo__cpu_attention_decode; these kernels compute the same thing over all segments at
   once. Never materialises an L x L score matrix: keys go through shared memory a tile at
   a time, the softmax is online (running max m and sum l per query row, fp32) and only the
   log-sum-exp lse = m + log l is saved for the backward, which rebuilds P = exp(s - lse).

   Tiling. One block of 128 threads owns a tile of rows; every product of two tiles in
   shared memory (Q K^T, P V, dS K, P^T dO, dS^T Q) is split as a 16 x 8 grid of threads, each
   accumulating a micro-tile of rows ty + 16 r and columns tx + 8 c in registers (strided
   columns: the 8 threads of a row group read 8 consecutive words, no bank conflicts;
   the +1 row pitch keeps the row reads of a column group on distinct banks too).
   Shared tiles are fp32 (converted once on load), zero past the segment and past HS, so
   the head dimension is a compile-time bucket D (32, 64, 80, 128) and any HS <= D works.

   Grids: x = tile of rows within the segment (from the longest segment, computed from
   cu_host), y = segment (offsets read from the device copy cu), z = head; blocks past
   their segment's end exit at once. Backward is deterministic without atomics: one kernel
   owns a block of keys and loops over the query heads of its group and all query tiles in
   a fixed order (dK, dV), another owns a block of queries and loops over key tiles (dQ);
   D = rowsum(dO * O) is precomputed into the backend's scratch. */

#define MBPO__ATTN_NT 128           /* threads per block, as a 16 x 8 grid in the products */
#define MBPO__ATTN_FWD_BM 64        /* forward: query rows per block */
#define MBPO__ATTN_FWD_BN 64        /* forward: keys per tile */
#define MBPO__ATTN_DKV_BN 64        /* backward dK dV: keys per block */
#define MBPO__ATTN_DKV_BM 32        /* backward dK dV: query rows per tile */
#define MBPO__ATTN_DQ_BM 64         /* backward dQ: query rows per block */
#define MBPO__ATTN_DQ_BN 32         /* backward dQ: keys per tile */
#define MBPO__ATTN_DEC_BN 32        /* decode: cache rows per tile */

static __device__ __forceinline__ float mbpo__attn_ld(const float *p) { return *p; }
static __device__ __forceinline__ float mbpo__attn_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ void mbpo__attn_st(float *p, float x) { *p = x; }
static __device__ __forceinline__ void mbpo__attn_st(__nv_bfloat16 *p, float x) { *p = __float2bfloat16(x); }

/* Shared tile dst (N, D + 1) fp32 from rows row0 .. row0 + N - 1 of src (stride floats per
   row, src already at the head's first element); zero for rows >= L and columns >= HS. */
template <int N, int D>
static __device__ __forceinline__ void mbpo__attn_load(float *dst, const mbpo__cx *src, int64_t stride, int row0,
                                                       int L, int HS) {
    int idx;
    for (idx = (int)threadIdx.x; idx < N * D; idx += MBPO__ATTN_NT) {
        int r = idx / D, d = idx - r * D;
        float x = 0.0f;
        if (row0 + r < L && d < HS) x = mbpo__attn_ld(src + (int64_t)(row0 + r) * stride + d);
        dst[r * (D + 1) + d] = x;
    }
}

/* Forward. out (T, os) rows, lse (NH, total), q (T, qs), k v (T, kvs); this block: query
   rows i0 .. i0 + BM - 1 of segment blockIdx.y, head blockIdx.z. */
template <int D>
__global__ void __launch_bounds__(MBPO__ATTN_NT)
mbpo__attn_forward_kernel(mbpo__cx *__restrict__ out, float *__restrict__ lse, const mbpo__cx *__restrict__ q,
                          const mbpo__cx *__restrict__ k, const mbpo__cx *__restrict__ v,
                          const int64_t *__restrict__ cu, int HS, int group, int64_t qs, int64_t kvs, int64_t os,
                          int64_t total, float scale, int causal) {
    enum { BM = MBPO__ATTN_FWD_BM, BN = MBPO__ATTN_FWD_BN, DP = D + 1, SP = BN + 1,
           MR = BM / 16, MC = BN / 8, OC = D / 8 };
    extern __shared__ float mbpo__attn_smem[];
    float *sq = mbpo__attn_smem;       /* (BM, DP) queries */
    float *skv = sq + BM * DP;         /* (BN, DP) keys of the tile, then its values */
    float *sp = skv + BN * DP;         /* (BM, SP) scores, then probabilities */
    float *srow = sp + BM * SP;        /* (BM) rescale factor per row, at the end the sum */
    const int tid = (int)threadIdx.x, ty = tid / 8, tx = tid % 8, h = (int)blockIdx.z;
    const int64_t o = cu[blockIdx.y];
    const int L = (int)(cu[blockIdx.y + 1] - o), i0 = (int)blockIdx.x * BM;
    const int64_t kvo = (int64_t)(h / group) * HS;
    float acc[MR][OC], m_i = -INFINITY, l_i = 0.0f;
    int r, c, d, j, j0, jend;
    if (i0 >= L) return;
    jend = causal ? (L < i0 + BM ? L : i0 + BM) : L;   /* causal: later keys are masked for every row here */
    for (r = 0; r < MR; r++)
        for (c = 0; c < OC; c++) acc[r][c] = 0.0f;
    mbpo__attn_load<BM, D>(sq, q + o * qs + (int64_t)h * HS, qs, i0, L, HS);
    for (j0 = 0; j0 < jend; j0 += BN) {
        float sacc[MR][MC];
        int nj = jend - j0 < BN ? jend - j0 : BN;
        __syncthreads();                                   /* Q loaded; previous P V done with skv */
        mbpo__attn_load<BN, D>(skv, k + o * kvs + kvo, kvs, j0, L, HS);
        __syncthreads();
        /* S = Q K^T (BM, BN), scaled, masked to -inf */
        for (r = 0; r < MR; r++)
            for (c = 0; c < MC; c++) sacc[r][c] = 0.0f;
#pragma unroll 4
        for (d = 0; d < D; d++) {
            float a[MR], b[MC];
#pragma unroll
            for (r = 0; r < MR; r++) a[r] = sq[(ty + 16 * r) * DP + d];
#pragma unroll
            for (c = 0; c < MC; c++) b[c] = skv[(tx + 8 * c) * DP + d];
#pragma unroll
            for (r = 0; r < MR; r++)
#pragma unroll
                for (c = 0; c < MC; c++) sacc[r][c] = fmaf(a[r], b[c], sacc[r][c]);
        }
#pragma unroll
        for (r = 0; r < MR; r++)
#pragma unroll
            for (c = 0; c < MC; c++) {
                int i = i0 + ty + 16 * r, jj = j0 + tx + 8 * c;
                int ok = jj < L && (!causal || jj <= i);
                sp[(ty + 16 * r) * SP + tx + 8 * c] = ok ? sacc[r][c] * scale : -INFINITY;
            }
        __syncthreads();
        mbpo__attn_load<BN, D>(skv, v + o * kvs + kvo, kvs, j0, L, HS);
        if (tid < BM) {
            /* online softmax of row tid: new max, rescale of what was summed so far. A row
               with nothing unmasked yet keeps m = -inf; subtract 0 then, so no inf - inf. */
            float *pr = sp + tid * SP, mx = m_i, mu, sum = 0.0f;
            for (j = 0; j < BN; j++) mx = fmaxf(mx, pr[j]);
            mu = mx == -INFINITY ? 0.0f : mx;
            for (j = 0; j < BN; j++) { float p = expf(pr[j] - mu); pr[j] = p; sum += p; }
            srow[tid] = expf(m_i - mu);
            l_i = l_i * srow[tid] + sum;
            m_i = mx;
        }
        __syncthreads();
        /* O = alpha O + P V (BM, D) */
#pragma unroll
        for (r = 0; r < MR; r++) {
            float al = srow[ty + 16 * r];
#pragma unroll
            for (c = 0; c < OC; c++) acc[r][c] *= al;
        }
        for (j = 0; j < nj; j++) {
            float p[MR], b[OC];
#pragma unroll
            for (r = 0; r < MR; r++) p[r] = sp[(ty + 16 * r) * SP + j];
#pragma unroll
            for (c = 0; c < OC; c++) b[c] = skv[j * DP + tx + 8 * c];
#pragma unroll
            for (r = 0; r < MR; r++)
#pragma unroll
                for (c = 0; c < OC; c++) acc[r][c] = fmaf(p[r], b[c], acc[r][c]);
        }
    }
    __syncthreads();
    if (tid < BM) {
        srow[tid] = l_i;
        if (i0 + tid < L) lse[(int64_t)h * total + o + i0 + tid] = m_i + logf(l_i);
    }
    __syncthreads();
    for (r = 0; r < MR; r++) {
        int row = ty + 16 * r;
        if (i0 + row < L) {
            mbpo__cx *orow = out + (o + i0 + row) * os + (int64_t)h * HS;
            float inv = 1.0f / srow[row];
            for (c = 0; c < OC; c++)
                if (tx + 8 * c < HS) mbpo__attn_st(orow + tx + 8 * c, acc[r][c] * inv);
        }
    }
}

/* Backward, step 1: dd (NH, total) = rowsum(dO * O) per row and head, one thread each. */
__global__ void __launch_bounds__(256)
mbpo__attn_rowdot_kernel(float *__restrict__ dd, const mbpo__cx *__restrict__ dout, const mbpo__cx *__restrict__ out,
                         int64_t total, int NH, int HS, int64_t os) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, i = idx / NH;
    int h = (int)(idx - i * NH), d;
    const mbpo__cx *a, *b;
    float s = 0.0f;
    if (i >= total) return;
    a = dout + i * os + (int64_t)h * HS;
    b = out + i * os + (int64_t)h * HS;
    for (d = 0; d < HS; d++) s = fmaf(mbpo__attn_ld(a + d), mbpo__attn_ld(b + d), s);
    dd[(int64_t)h * total + i] = s;
}

/* Backward, step 2: dK, dV (written) for keys j0 .. j0 + BN - 1 of segment blockIdx.y, kv
   head blockIdx.z, summed over the group's query heads and every query row in fixed order:
   dV = P^T dO, dK = scale dS^T Q, with P = exp(s - lse), dS = P (dO V^T - dd). */
template <int D>
__global__ void __launch_bounds__(MBPO__ATTN_NT)
mbpo__attn_dkv_kernel(mbpo__cx *__restrict__ dk, mbpo__cx *__restrict__ dv, const mbpo__cx *__restrict__ dout,
                      const float *__restrict__ lse, const float *__restrict__ dd, const mbpo__cx *__restrict__ q,
                      const mbpo__cx *__restrict__ k, const mbpo__cx *__restrict__ v,
                      const int64_t *__restrict__ cu, int HS, int group, int64_t qs, int64_t kvs, int64_t os,
                      int64_t total, float scale, int causal) {
    enum { BN = MBPO__ATTN_DKV_BN, BM = MBPO__ATTN_DKV_BM, DP = D + 1, SP = BN + 1,
           MR = BM / 16, MC = BN / 8, KR = BN / 16, OC = D / 8 };
    extern __shared__ float mbpo__attn_smem[];
    float *sk = mbpo__attn_smem;       /* (BN, DP) keys of the block */
    float *sv = sk + BN * DP;          /* (BN, DP) their values */
    float *sq = sv + BN * DP;          /* (BM, DP) queries of the tile */
    float *sdo = sq + BM * DP;         /* (BM, DP) their output gradients */
    float *sp = sdo + BM * DP;         /* (BM, SP) probabilities */
    float *sds = sp + BM * SP;         /* (BM, SP) score gradients */
    float *slse = sds + BM * SP;       /* (BM) */
    float *sdd = slse + BM;            /* (BM) */
    const int tid = (int)threadIdx.x, ty = tid / 8, tx = tid % 8, kvh = (int)blockIdx.z;
    const int64_t o = cu[blockIdx.y];
    const int L = (int)(cu[blockIdx.y + 1] - o), j0 = (int)blockIdx.x * BN;
    float dka[KR][OC], dva[KR][OC];
    int r, c, d, hh, i0;
    if (j0 >= L) return;
    for (r = 0; r < KR; r++)
        for (c = 0; c < OC; c++) { dka[r][c] = 0.0f; dva[r][c] = 0.0f; }
    mbpo__attn_load<BN, D>(sk, k + o * kvs + (int64_t)kvh * HS, kvs, j0, L, HS);
    mbpo__attn_load<BN, D>(sv, v + o * kvs + (int64_t)kvh * HS, kvs, j0, L, HS);
    for (hh = 0; hh < group; hh++) {
        const int h = kvh * group + hh;
        /* causal: query rows before j0 see none of these keys */
        for (i0 = causal ? j0 / BM * BM : 0; i0 < L; i0 += BM) {
            float sacc[MR][MC], pacc[MR][MC];
            int ni = L - i0 < BM ? L - i0 : BM, qr;
            __syncthreads();                               /* previous tile's products done */
            mbpo__attn_load<BM, D>(sq, q + o * qs + (int64_t)h * HS, qs, i0, L, HS);
            mbpo__attn_load<BM, D>(sdo, dout + o * os + (int64_t)h * HS, os, i0, L, HS);
            if (tid < BM) {
                int64_t at = (int64_t)h * total + o + i0 + tid;
                slse[tid] = i0 + tid < L ? lse[at] : 0.0f;
                sdd[tid] = i0 + tid < L ? dd[at] : 0.0f;
            }
            __syncthreads();
            /* S = Q K^T and dP = dO V^T (BM, BN) */
            for (r = 0; r < MR; r++)
                for (c = 0; c < MC; c++) { sacc[r][c] = 0.0f; pacc[r][c] = 0.0f; }
#pragma unroll 2
            for (d = 0; d < D; d++) {
                float a[MR], g[MR], b[MC], w[MC];
#pragma unroll
                for (r = 0; r < MR; r++) { a[r] = sq[(ty + 16 * r) * DP + d]; g[r] = sdo[(ty + 16 * r) * DP + d]; }
#pragma unroll
                for (c = 0; c < MC; c++) { b[c] = sk[(tx + 8 * c) * DP + d]; w[c] = sv[(tx + 8 * c) * DP + d]; }
#pragma unroll
                for (r = 0; r < MR; r++)
#pragma unroll
                    for (c = 0; c < MC; c++) {
                        sacc[r][c] = fmaf(a[r], b[c], sacc[r][c]);
                        pacc[r][c] = fmaf(g[r], w[c], pacc[r][c]);
                    }
            }
#pragma unroll
            for (r = 0; r < MR; r++)
#pragma unroll
                for (c = 0; c < MC; c++) {
                    int row = ty + 16 * r, col = tx + 8 * c, i = i0 + row, jj = j0 + col;
                    int ok = i < L && jj < L && (!causal || jj <= i);
                    float p = ok ? expf(sacc[r][c] * scale - slse[row]) : 0.0f;
                    sp[row * SP + col] = p;
                    sds[row * SP + col] = p * (pacc[r][c] - sdd[row]);
                }
            __syncthreads();
            /* dV += P^T dO, dK += dS^T Q (BN, D) */
            for (qr = 0; qr < ni; qr++) {
                float pk[KR], sk2[KR], g[OC], a[OC];
#pragma unroll
                for (r = 0; r < KR; r++) { pk[r] = sp[qr * SP + ty + 16 * r]; sk2[r] = sds[qr * SP + ty + 16 * r]; }
#pragma unroll
                for (c = 0; c < OC; c++) { g[c] = sdo[qr * DP + tx + 8 * c]; a[c] = sq[qr * DP + tx + 8 * c]; }
#pragma unroll
                for (r = 0; r < KR; r++)
#pragma unroll
                    for (c = 0; c < OC; c++) {
                        dva[r][c] = fmaf(pk[r], g[c], dva[r][c]);
                        dka[r][c] = fmaf(sk2[r], a[c], dka[r][c]);
                    }
            }
        }
    }
    for (r = 0; r < KR; r++) {
        int row = ty + 16 * r;
        if (j0 + row < L) {
            mbpo__cx *dkr = dk + (o + j0 + row) * kvs + (int64_t)kvh * HS;
            mbpo__cx *dvr = dv + (o + j0 + row) * kvs + (int64_t)kvh * HS;
            for (c = 0; c < OC; c++)
                if (tx + 8 * c < HS) {
                    mbpo__attn_st(dkr + tx + 8 * c, dka[r][c] * scale);
                    mbpo__attn_st(dvr + tx + 8 * c, dva[r][c]);
                }
        }
    }
}

/* Backward, step 3: dQ (written) = scale dS K for query rows i0 .. i0 + BM - 1 of segment
   blockIdx.y, head blockIdx.z, over the key tiles in order. */
template <int D>
__global__ void __launch_bounds__(MBPO__ATTN_NT)
mbpo__attn_dq_kernel(mbpo__cx *__restrict__ dq, const mbpo__cx *__restrict__ dout, const float *__restrict__ lse,
                     const float *__restrict__ dd, const mbpo__cx *__restrict__ q, const mbpo__cx *__restrict__ k,
                     const mbpo__cx *__restrict__ v, const int64_t *__restrict__ cu, int HS, int group, int64_t qs,
                     int64_t kvs, int64_t os, int64_t total, float scale, int causal) {
    enum { BM = MBPO__ATTN_DQ_BM, BN = MBPO__ATTN_DQ_BN, DP = D + 1, SP = BN + 1,
           MR = BM / 16, MC = BN / 8, OC = D / 8 };
    extern __shared__ float mbpo__attn_smem[];
    float *sq = mbpo__attn_smem;       /* (BM, DP) queries of the block */
    float *sdo = sq + BM * DP;         /* (BM, DP) their output gradients */
    float *sk = sdo + BM * DP;         /* (BN, DP) keys of the tile */
    float *sv = sk + BN * DP;          /* (BN, DP) their values */
    float *sds = sv + BN * DP;         /* (BM, SP) score gradients */
    float *slse = sds + BM * SP;       /* (BM) */
    float *sdd = slse + BM;            /* (BM) */
    const int tid = (int)threadIdx.x, ty = tid / 8, tx = tid % 8, h = (int)blockIdx.z;
    const int64_t o = cu[blockIdx.y];
    const int L = (int)(cu[blockIdx.y + 1] - o), i0 = (int)blockIdx.x * BM;
    const int64_t kvo = (int64_t)(h / group) * HS;
    float dqa[MR][OC];
    int r, c, d, j, j0, jend;
    if (i0 >= L) return;
    jend = causal ? (L < i0 + BM ? L : i0 + BM) : L;
    for (r = 0; r < MR; r++)
        for (c = 0; c < OC; c++) dqa[r][c] = 0.0f;
    mbpo__attn_load<BM, D>(sq, q + o * qs + (int64_t)h * HS, qs, i0, L, HS);
    mbpo__attn_load<BM, D>(sdo, dout + o * os + (int64_t)h * HS, os, i0, L, HS);
    if (tid < BM) {
        int64_t at = (int64_t)h * total + o + i0 + tid;
        slse[tid] = i0 + tid < L ? lse[at] : 0.0f;
        sdd[tid] = i0 + tid < L ? dd[at] : 0.0f;
    }
    for (j0 = 0; j0 < jend; j0 += BN) {
        float sacc[MR][MC], pacc[MR][MC];
        int nj = jend - j0 < BN ? jend - j0 : BN;
        __syncthreads();                                   /* Q, dO loaded; previous dS K done */
        mbpo__attn_load<BN, D>(sk, k + o * kvs + kvo, kvs, j0, L, HS);
        mbpo__attn_load<BN, D>(sv, v + o * kvs + kvo, kvs, j0, L, HS);
        __syncthreads();
        for (r = 0; r < MR; r++)
            for (c = 0; c < MC; c++) { sacc[r][c] = 0.0f; pacc[r][c] = 0.0f; }
#pragma unroll 2
        for (d = 0; d < D; d++) {
            float a[MR], g[MR], b[MC], w[MC];
#pragma unroll
            for (r = 0; r < MR; r++) { a[r] = sq[(ty + 16 * r) * DP + d]; g[r] = sdo[(ty + 16 * r) * DP + d]; }
#pragma unroll
            for (c = 0; c < MC; c++) { b[c] = sk[(tx + 8 * c) * DP + d]; w[c] = sv[(tx + 8 * c) * DP + d]; }
#pragma unroll
            for (r = 0; r < MR; r++)
#pragma unroll
                for (c = 0; c < MC; c++) {
                    sacc[r][c] = fmaf(a[r], b[c], sacc[r][c]);
                    pacc[r][c] = fmaf(g[r], w[c], pacc[r][c]);
                }
        }
#pragma unroll
        for (r = 0; r < MR; r++)
#pragma unroll
            for (c = 0; c < MC; c++) {
                int row = ty + 16 * r, col = tx + 8 * c, i = i0 + row, jj = j0 + col;
                int ok = i < L && jj < L && (!causal || jj <= i);
                float p = ok ? expf(sacc[r][c] * scale - slse[row]) : 0.0f;
                sds[row * SP + col] = p * (pacc[r][c] - sdd[row]);
            }
        __syncthreads();
        /* dQ += dS K (BM, D) */
        for (j = 0; j < nj; j++) {
            float s2[MR], b[OC];
#pragma unroll
            for (r = 0; r < MR; r++) s2[r] = sds[(ty + 16 * r) * SP + j];
#pragma unroll
            for (c = 0; c < OC; c++) b[c] = sk[j * DP + tx + 8 * c];
#pragma unroll
            for (r = 0; r < MR; r++)
#pragma unroll
                for (c = 0; c < OC; c++) dqa[r][c] = fmaf(s2[r], b[c], dqa[r][c]);
        }
    }
    for (r = 0; r < MR; r++) {
        int row = ty + 16 * r;
        if (i0 + row < L) {
            mbpo__cx *dqr = dq + (o + i0 + row) * qs + (int64_t)h * HS;
            for (c = 0; c < OC; c++)
                if (tx + 8 * c < HS) mbpo__attn_st(dqr + tx + 8 * c, dqa[r][c] * scale);
        }
    }
}

/* Decode: out (G, NH*HS) row g, head blockIdx.x, from q (G, NH*HS) over cache rows
   0 .. len-1 of kc, vc (G, max_len, KD), len = *tp + 1 read on the device (so a replayed
   graph attends as far as its step; clamped to the cache), blockIdx.y = g. Cache rows go through shared
   memory BN at a time; each warp dots a quarter of the head dim for all BN rows; thread
   d < D owns output column d. */
template <int D>
__global__ void __launch_bounds__(MBPO__ATTN_NT)
mbpo__attn_decode_kernel(mbpo__cx *__restrict__ out, const mbpo__cx *__restrict__ q, const mbpo__cx *__restrict__ kc,
                         const mbpo__cx *__restrict__ vc, const int64_t *__restrict__ tp, int64_t max_len, int NH,
                         int HS, int group, int64_t KD, float scale) {
    enum { BN = MBPO__ATTN_DEC_BN, DP = D + 1, DQ = D / 4 };
    extern __shared__ float mbpo__attn_smem[];
    float *sq = mbpo__attn_smem;       /* (D) the query */
    float *sk = sq + D;                /* (BN, DP) cache keys of the tile */
    float *sv = sk + BN * DP;          /* (BN, DP) their values */
    float *spart = sv + BN * DP;       /* (4, BN) partial dots */
    float *ss = spart + 4 * BN;        /* (BN) scores */
    float *sp = ss + BN;               /* (BN) probabilities */
    const int tid = (int)threadIdx.x, h = (int)blockIdx.x, g = (int)blockIdx.y;
    const int part = tid / 32, jj = tid % 32;
    const mbpo__cx *kb = kc + (int64_t)g * max_len * KD + (int64_t)(h / group) * HS;
    const mbpo__cx *vb = vc + (int64_t)g * max_len * KD + (int64_t)(h / group) * HS;
    const int len = (int)(*tp < 0 ? 0 : *tp >= max_len ? max_len : *tp + 1);
    float acc = 0.0f, m = -INFINITY, l = 0.0f;
    int j, j0, d;
    if (tid < D) sq[tid] = tid < HS ? mbpo__attn_ld(q + ((int64_t)g * NH + h) * HS + tid) : 0.0f;
    for (j0 = 0; j0 < len; j0 += BN) {
        float part_sum = 0.0f, mx, mu, alpha, sum = 0.0f;
        __syncthreads();                                   /* q loaded; previous tile done */
        mbpo__attn_load<BN, D>(sk, kb, KD, j0, len, HS);
        mbpo__attn_load<BN, D>(sv, vb, KD, j0, len, HS);
        __syncthreads();
        for (d = part * DQ; d < (part + 1) * DQ; d++) part_sum = fmaf(sq[d], sk[jj * DP + d], part_sum);
        spart[part * BN + jj] = part_sum;
        __syncthreads();
        if (tid < BN) {
            float s = ((spart[tid] + spart[BN + tid]) + (spart[2 * BN + tid] + spart[3 * BN + tid])) * scale;
            ss[tid] = j0 + tid < len ? s : -INFINITY;
        }
        __syncthreads();
        mx = m;
        for (j = 0; j < BN; j++) mx = fmaxf(mx, ss[j]);
        mu = mx == -INFINITY ? 0.0f : mx;
        alpha = expf(m - mu);
        if (tid < BN) sp[tid] = expf(ss[tid] - mu);
        __syncthreads();
        for (j = 0; j < BN; j++) sum += sp[j];        /* every thread, same order: same l */
        l = l * alpha + sum;
        m = mx;
        if (tid < D) {
            float a = acc * alpha;
            for (j = 0; j < BN; j++) a = fmaf(sp[j], sv[j * DP + tid], a);
            acc = a;
        }
    }
    /* len 0 attends to nothing: write 0 (the CPU op would divide 0 by 0) */
    if (tid < HS) mbpo__attn_st(out + ((int64_t)g * NH + h) * HS + tid, l > 0.0f ? acc / l : 0.0f);
}

/* ---- host side */

/* The head-dim bucket a kernel is compiled for: the smallest of 32, 64, 80, 128 >= HS. */
static int mbpo__attn_bucket(int64_t HS) { return HS <= 32 ? 32 : HS <= 64 ? 64 : HS <= 80 ? 80 : 128; }

static size_t mbpo__attn_fwd_smem(int D) {
    return sizeof(float) * ((size_t)(MBPO__ATTN_FWD_BM + MBPO__ATTN_FWD_BN) * (D + 1) +
                            (size_t)MBPO__ATTN_FWD_BM * (MBPO__ATTN_FWD_BN + 1) + MBPO__ATTN_FWD_BM);
}
static size_t mbpo__attn_dkv_smem(int D) {
    return sizeof(float) * ((size_t)(2 * MBPO__ATTN_DKV_BN + 2 * MBPO__ATTN_DKV_BM) * (D + 1) +
                            (size_t)2 * MBPO__ATTN_DKV_BM * (MBPO__ATTN_DKV_BN + 1) + 2 * MBPO__ATTN_DKV_BM);
}
static size_t mbpo__attn_dq_smem(int D) {
    return sizeof(float) * ((size_t)(2 * MBPO__ATTN_DQ_BM + 2 * MBPO__ATTN_DQ_BN) * (D + 1) +
                            (size_t)MBPO__ATTN_DQ_BM * (MBPO__ATTN_DQ_BN + 1) + 2 * MBPO__ATTN_DQ_BM);
}
static size_t mbpo__attn_dec_smem(int D) {
    return sizeof(float) * ((size_t)D + (size_t)2 * MBPO__ATTN_DEC_BN * (D + 1) + 6 * MBPO__ATTN_DEC_BN);
}

/* Shapes every attention op needs; on failure the reason names the op. Sets the longest
   segment (rows). */
static int mbpo__attn_check(const char *op, const int64_t *cu_host, int64_t n_seg, int64_t NH, int64_t NKV,
                            int64_t HS, int64_t *max_len) {
    int64_t s;
    if (NH < 1 || NKV < 1 || NH % NKV != 0 || NH > 65535)
        return mbpo__fail("%s: %lld heads over %lld kv heads (need NKV | NH, NH <= 65535)", op, (long long)NH,
                          (long long)NKV);
    if (HS < 1 || HS > 128) return mbpo__fail("%s: head size %lld not in 1..128", op, (long long)HS);
    if (n_seg < 0 || n_seg > 65535) return mbpo__fail("%s: %lld segments (at most 65535)", op, (long long)n_seg);
    *max_len = 0;
    for (s = 0; s < n_seg; s++) {
        int64_t L = cu_host[s + 1] - cu_host[s];
        if (L < 0 || L > ((int64_t)1 << 30))
            return mbpo__fail("%s: segment %lld has %lld rows", op, (long long)s, (long long)L);
        if (L > *max_len) *max_len = L;
    }
    return 1;
}

template <int D>
static cudaError_t mbpo__attn_forward_launch(dim3 grid, cudaStream_t st, mbpo__cx *out, float *lse, const mbpo__cx *q,
                                             const mbpo__cx *k, const mbpo__cx *v, const int64_t *cu, int HS,
                                             int group, int64_t qs, int64_t kvs, int64_t os, int64_t total,
                                             float scale, int causal) {
    size_t smem = mbpo__attn_fwd_smem(D);
    cudaError_t e = cudaFuncSetAttribute(mbpo__attn_forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess) return e;
    mbpo__attn_forward_kernel<D><<<grid, MBPO__ATTN_NT, smem, st>>>(out, lse, q, k, v, cu, HS, group, qs, kvs, os,
                                                                    total, scale, causal);
    return cudaGetLastError();
}

/* out (T, os), lse (NH, total) = attention of q over k, v per segment; see the CPU op */
static int mbpo__cuda_attention_forward(mbpo_backend *be, mbpo_x *out, float *lse, const mbpo_x *q, const mbpo_x *k,
                                        const mbpo_x *v, const int64_t *cu, const int64_t *cu_host, int64_t n_seg,
                                        int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs, int64_t os,
                                        int causal) {
    int64_t max_len = 0, total = 0;
    int D, group;
    float scale = 1.0f / sqrtf((float)HS);
    cudaError_t e;
    dim3 grid;
    if (!mbpo__attn_check("attention_forward", cu_host, n_seg, NH, NKV, HS, &max_len)) return 0;
    if (max_len == 0) return 1;
    total = cu_host[n_seg]; D = mbpo__attn_bucket(HS); group = (int)(NH / NKV);
    grid = dim3((unsigned)((max_len + MBPO__ATTN_FWD_BM - 1) / MBPO__ATTN_FWD_BM), (unsigned)n_seg, (unsigned)NH);
    {
        mbpo__cx *o_ = (mbpo__cx *)out;
        const mbpo__cx *q_ = (const mbpo__cx *)q, *k_ = (const mbpo__cx *)k, *v_ = (const mbpo__cx *)v;
        int hs = (int)HS;
        e = D == 32 ? mbpo__attn_forward_launch<32>(grid, mbpo__cuda_stream(be), o_, lse, q_, k_, v_, cu, hs, group, qs, kvs, os, total, scale, causal)
          : D == 64 ? mbpo__attn_forward_launch<64>(grid, mbpo__cuda_stream(be), o_, lse, q_, k_, v_, cu, hs, group, qs, kvs, os, total, scale, causal)
          : D == 80 ? mbpo__attn_forward_launch<80>(grid, mbpo__cuda_stream(be), o_, lse, q_, k_, v_, cu, hs, group, qs, kvs, os, total, scale, causal)
                    : mbpo__attn_forward_launch<128>(grid, mbpo__cuda_stream(be), o_, lse, q_, k_, v_, cu, hs, group, qs, kvs, os, total, scale, causal);
    }
    if (e != cudaSuccess)
        return mbpo__fail("attention_forward: %s (NH %lld, NKV %lld, HS %lld, rows %lld, longest segment %lld, %zu bytes shared)",
                          cudaGetErrorString(e), (long long)NH, (long long)NKV, (long long)HS, (long long)total,
                          (long long)max_len, mbpo__attn_fwd_smem(D));
    return 1;
}

template <int D>
static cudaError_t mbpo__attn_backward_launch(int64_t max_len, int64_t n_seg, int64_t NH, int64_t NKV, cudaStream_t st,
                                              mbpo__cx *dq, mbpo__cx *dk, mbpo__cx *dv, const mbpo__cx *dout,
                                              const float *lse, const float *dd, const mbpo__cx *q, const mbpo__cx *k,
                                              const mbpo__cx *v, const int64_t *cu, int HS, int group, int64_t qs,
                                              int64_t kvs, int64_t os, int64_t total, float scale, int causal) {
    size_t smem_kv = mbpo__attn_dkv_smem(D), smem_q = mbpo__attn_dq_smem(D);
    dim3 grid_kv((unsigned)((max_len + MBPO__ATTN_DKV_BN - 1) / MBPO__ATTN_DKV_BN), (unsigned)n_seg, (unsigned)NKV);
    dim3 grid_q((unsigned)((max_len + MBPO__ATTN_DQ_BM - 1) / MBPO__ATTN_DQ_BM), (unsigned)n_seg, (unsigned)NH);
    cudaError_t e = cudaFuncSetAttribute(mbpo__attn_dkv_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem_kv);
    if (e != cudaSuccess) return e;
    e = cudaFuncSetAttribute(mbpo__attn_dq_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_q);
    if (e != cudaSuccess) return e;
    mbpo__attn_dkv_kernel<D><<<grid_kv, MBPO__ATTN_NT, smem_kv, st>>>(dk, dv, dout, lse, dd, q, k, v, cu, HS, group,
                                                                      qs, kvs, os, total, scale, causal);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    mbpo__attn_dq_kernel<D><<<grid_q, MBPO__ATTN_NT, smem_q, st>>>(dq, dout, lse, dd, q, k, v, cu, HS, group, qs, kvs,
                                                                   os, total, scale, causal);
    return cudaGetLastError();
}

/* dq (T, qs), dk, dv (T, kvs) written from dout, out (T, os) and the saved lse; see the CPU op */
static int mbpo__cuda_attention_backward(mbpo_backend *be, mbpo_x *dq, mbpo_x *dk, mbpo_x *dv, const mbpo_x *dout,
                                         const mbpo_x *out, const float *lse, const mbpo_x *q, const mbpo_x *k,
                                         const mbpo_x *v, const int64_t *cu, const int64_t *cu_host, int64_t n_seg,
                                         int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs, int64_t os,
                                         int causal) {
    int64_t max_len = 0, total = 0;
    int D, group;
    float scale = 1.0f / sqrtf((float)HS), *dd;
    size_t dd_bytes;
    cudaError_t e;
    cudaStream_t st = mbpo__cuda_stream(be);
    if (!mbpo__attn_check("attention_backward", cu_host, n_seg, NH, NKV, HS, &max_len)) return 0;
    if (max_len == 0) return 1;
    total = cu_host[n_seg]; D = mbpo__attn_bucket(HS); group = (int)(NH / NKV);
    dd_bytes = (size_t)NH * (size_t)total * sizeof(float);
    dd = mbpo__cuda_scratch(be, dd_bytes);
    if (!dd)
        return mbpo__fail("attention_backward: the backend scratch is smaller than the %zu bytes of rowsum(dO*O) "
                          "(NH %lld, rows %lld)", dd_bytes, (long long)NH, (long long)total);
    {
        int64_t n = NH * total;
        mbpo__attn_rowdot_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(dd, (const mbpo__cx *)dout,
                                                                               (const mbpo__cx *)out, total, (int)NH,
                                                                               (int)HS, os);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) {
        mbpo__cx *dq_ = (mbpo__cx *)dq, *dk_ = (mbpo__cx *)dk, *dv_ = (mbpo__cx *)dv;
        const mbpo__cx *do_ = (const mbpo__cx *)dout, *q_ = (const mbpo__cx *)q, *k_ = (const mbpo__cx *)k;
        const mbpo__cx *v_ = (const mbpo__cx *)v;
        int hs = (int)HS;
        e = D == 32 ? mbpo__attn_backward_launch<32>(max_len, n_seg, NH, NKV, st, dq_, dk_, dv_, do_, lse, dd, q_, k_, v_, cu, hs, group,
                                                       qs, kvs, os, total, scale, causal)
          : D == 64 ? mbpo__attn_backward_launch<64>(max_len, n_seg, NH, NKV, st, dq_, dk_, dv_, do_, lse, dd, q_, k_, v_, cu, hs, group,
                                                       qs, kvs, os, total, scale, causal)
          : D == 80 ? mbpo__attn_backward_launch<80>(max_len, n_seg, NH, NKV, st, dq_, dk_, dv_, do_, lse, dd, q_, k_, v_, cu, hs, group,
                                                       qs, kvs, os, total, scale, causal)
                    : mbpo__attn_backward_launch<128>(max_len, n_seg, NH, NKV, st, dq_, dk_, dv_, do_, lse, dd, q_, k_, v_, cu, hs, group,
                                                       qs, kvs, os, total, scale, causal);
    }
    if (e != cudaSuccess)
        return mbpo__fail("attention_backward: %s (NH %lld, NKV %lld, HS %lld, rows %lld, longest segment %lld, "
                          "%zu + %zu bytes shared)", cudaGetErrorString(e), (long long)NH, (long long)NKV,
                          (long long)HS, (long long)total, (long long)max_len, mbpo__attn_dkv_smem(D),
                          mbpo__attn_dq_smem(D));
    return 1;
}

template <int D>
static cudaError_t mbpo__attn_decode_launch(dim3 grid, cudaStream_t st, mbpo__cx *out, const mbpo__cx *q,
                                            const mbpo__cx *kc, const mbpo__cx *vc, const int64_t *tp, int64_t max_len,
                                            int NH, int HS, int group, int64_t KD, float scale) {
    size_t smem = mbpo__attn_dec_smem(D);
    cudaError_t e = cudaFuncSetAttribute(mbpo__attn_decode_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess) return e;
    mbpo__attn_decode_kernel<D><<<grid, MBPO__ATTN_NT, smem, st>>>(out, q, kc, vc, tp, max_len, NH, HS, group, KD,
                                                                   scale);
    return cudaGetLastError();
}

/* out (G, NH*HS) from q (G, NH*HS) over rows 0..*tp of kc, vc (G, max_len, NKV*HS) */
static int mbpo__cuda_attention_decode(mbpo_backend *be, mbpo_x *out, const mbpo_x *q, const mbpo_x *kc,
                                       const mbpo_x *vc, int64_t G, const int64_t *tp, int64_t max_len, int64_t NH,
                                       int64_t NKV, int64_t HS) {
    int D, group;
    float scale = 1.0f / sqrtf((float)HS);
    cudaError_t e;
    dim3 grid;
    if (NH < 1 || NKV < 1 || NH % NKV != 0 || NH > 65535 || HS < 1 || HS > 128 || G < 0 || G > 65535 || max_len < 1 ||
        max_len > ((int64_t)1 << 30))
        return mbpo__fail("attention_decode: unsupported shape (G %lld, a cache of %lld, NH %lld, NKV %lld, HS %lld)",
                          (long long)G, (long long)max_len, (long long)NH, (long long)NKV, (long long)HS);
    if (G == 0) return 1;
    D = mbpo__attn_bucket(HS); group = (int)(NH / NKV);
    grid = dim3((unsigned)NH, (unsigned)G, 1);
    {
        mbpo__cx *o_ = (mbpo__cx *)out;
        const mbpo__cx *q_ = (const mbpo__cx *)q, *k_ = (const mbpo__cx *)kc, *v_ = (const mbpo__cx *)vc;
        int nh = (int)NH, hs = (int)HS;
        int64_t KD = NKV * HS;
        e = D == 32 ? mbpo__attn_decode_launch<32>(grid, mbpo__cuda_stream(be), o_, q_, k_, v_, tp, max_len, nh, hs, group, KD, scale)
          : D == 64 ? mbpo__attn_decode_launch<64>(grid, mbpo__cuda_stream(be), o_, q_, k_, v_, tp, max_len, nh, hs, group, KD, scale)
          : D == 80 ? mbpo__attn_decode_launch<80>(grid, mbpo__cuda_stream(be), o_, q_, k_, v_, tp, max_len, nh, hs, group, KD, scale)
                    : mbpo__attn_decode_launch<128>(grid, mbpo__cuda_stream(be), o_, q_, k_, v_, tp, max_len, nh, hs, group, KD, scale);
    }
    if (e != cudaSuccess)
        return mbpo__fail("attention_decode: %s (G %lld, a cache of %lld, NH %lld, NKV %lld, HS %lld)", cudaGetErrorString(e),
                          (long long)G, (long long)max_len, (long long)NH, (long long)NKV, (long long)HS);
    return 1;
}


/* ------------------------------------------------------------------ 12. optimizer

   sumsq: the sum of g[i]^2 in double, in an order fixed by n alone: the grid is
   nb = min(mbpo__cuda_blocks(n), MBPO__SUMSQ_BLOCKS) blocks of MBPO__CUDA_THREADS, a
   function of n and compile-time constants, never of the device (SM count, occupancy).
   Pass 1: thread t of block b adds its grid-stride values in index order, then the block
   adds its threads in a fixed shared-memory tree into partial b (doubles, in the workspace);
   pass 2: one block, thread t adds partials t, t + 256, ..., then the same tree; the sum is
   downloaded. Each (double)g * g is exact (24 x 24 bits <= 53), so an FMA contraction of
   s += g * g rounds as the separate add does. About 8 KiB of workspace.
   adamw: one grid-stride kernel, mbpo__cpu_adamw's formula in double per value; then px =
   master stored as mbpo__cx by mbpo__st (the rounding of x_upload; a copy in the fp32
   build, where px may be master itself: each thread reads its master[i] before it writes). */
#define MBPO__SUMSQ_BLOCKS 1024

/* sum of the MBPO__CUDA_THREADS values v of the block in a fixed tree over sh
   (MBPO__CUDA_THREADS doubles); thread 0 gets the result */
static __device__ double mbpo__block_sum_fixed(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned o = MBPO__CUDA_THREADS / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    return sh[0];
}
static __global__ void mbpo__k_sumsq_partial(double *part, const float *g, int64_t n) {
    __shared__ double sh[MBPO__CUDA_THREADS];
    double s = 0.0;
    MBPO__FOR(i, n) s += (double)g[i] * g[i];
    s = mbpo__block_sum_fixed(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}
static __global__ void mbpo__k_sumsq_finish(double *sum, const double *part, int64_t nb) {
    __shared__ double sh[MBPO__CUDA_THREADS];
    double s = 0.0;
    for (int64_t b = threadIdx.x; b < nb; b += MBPO__CUDA_THREADS) s += part[b];
    s = mbpo__block_sum_fixed(s, sh);
    if (threadIdx.x == 0) *sum = s;
}
/* *out_host = sum of g[i]^2 over g (n) fp32 on the device (tested against mbpo__cpu_sumsq) */
static int mbpo__cuda_sumsq(mbpo_backend *be, double *out_host, const float *g, int64_t n) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    double *part = (double *)c->workspace;   /* nb partials, then the sum */
    unsigned nb = mbpo__cuda_blocks(n, MBPO__CUDA_THREADS);
    cudaError_t e;
    if (n < 0) return mbpo__fail("sumsq: %lld values", (long long)n);
    if (n == 0) { *out_host = 0.0; return 1; }
    if (nb > MBPO__SUMSQ_BLOCKS) nb = MBPO__SUMSQ_BLOCKS;
    if ((size_t)(nb + 1) * sizeof(double) > c->workspace_size)
        return mbpo__fail("sumsq over %lld values: %u partial sums exceed the %.1f MB workspace", (long long)n, nb,
                          (double)c->workspace_size / 1e6);
    mbpo__k_sumsq_partial<<<nb, MBPO__CUDA_THREADS, 0, c->stream>>>(part, g, n);
    MBPO__LAUNCHED("mbpo__k_sumsq_partial", n);
    mbpo__k_sumsq_finish<<<1, MBPO__CUDA_THREADS, 0, c->stream>>>(part + nb, part, (int64_t)nb);
    MBPO__LAUNCHED("mbpo__k_sumsq_finish", nb);
    /* a fault in either kernel surfaces here: name the op and its size */
    e = cudaMemcpyAsync(out_host, part + nb, sizeof(double), cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
        return mbpo__fail("sumsq over %lld values (%u blocks): download of the sum: %s", (long long)n, nb,
                          cudaGetErrorString(e));
    return 1;
}

/* one AdamW update of master, m, v (n) fp32 from g (n), px (n) = master as mbpo__cx; k by value */
static __global__ void mbpo__k_adamw(float *master, mbpo__cx *px, float *m, float *v, const float *g, mbpo__adamw_k k,
                                     int64_t n) {
    MBPO__FOR(i, n) {
        double gi = g[i] * k.scale;
        double mi = k.beta1 * m[i] + (1 - k.beta1) * gi;
        double vi = k.beta2 * v[i] + (1 - k.beta2) * gi * gi;
        float p = (float)(master[i] - k.lr * (k.weight_decay * master[i] + (mi / k.bc1) / (sqrt(vi / k.bc2) + k.eps)));
        m[i] = (float)mi; v[i] = (float)vi;
        master[i] = p;
        mbpo__st(px, i, p);
    }
}
/* master, m, v (n) updated, px (n) written; g (n); k on the host (tested against mbpo__cpu_adamw) */
static int mbpo__cuda_adamw(mbpo_backend *be, float *master, mbpo_x *px, float *m, float *v, const float *g, int64_t n,
                            const mbpo__adamw_k *k) {
    if (n < 0) return mbpo__fail("adamw: %lld values", (long long)n);
    MBPO__EW_LAUNCH(mbpo__k_adamw, n, master, MBPO__CUDA_X(px), m, v, g, *k);
    return 1;
}

/* ------------------------------------------------------------------ 13. sampling

   sample: mbpo__cpu_sample's arithmetic (mbpo__sample_u, mbpo__argmax, mbpo__logp_of), all in
   device memory: no transfer, no synchronisation, no allocation, so a CUDA graph holds it.
   One block of MBPO__CUDA_THREADS (NT) per row, blocks striding over the rows when the scratch
   (below) holds fewer rows than G. A row with done[g] != 0 is skipped by the whole block (z,
   tok, logp untouched). A live row g:
     its draw is u[st[MBPO__GS_NU] + r], r = the rows before g with done == 0 (st only read);
     thread 0 writes -inf at the valid ban ids; a barrier, and the block reads them back;
     argmax: each thread's best (value, id) over ids t, t + NT, ... then a shared-memory tree;
       a pair wins on the larger value, on equal values the lower id, and NaN never wins. That
       selection is exact and does not depend on the order, so greedy (T <= 0) is
       mbpo__argmax bit for bit (z[0] NaN: id 0, where its sequential scan stays);
     logp[g] = z[tok] - (mx + log(sum exp(z - mx))) at temperature 1 (mbpo__logp_of), the sum in
       double, strided partials then mbpo__block_sum_fixed;
     T > 0: mx = z[best]; sum = sum of e_i = exp((z_i - mx) / T) in double (the same order);
       one pass writes the row's probabilities to the scratch, pf_i = (float)(e_i / sum) for the
       candidates (e_i / sum >= cut and > 0 in double, cut = (1 - top_p) / V with top-p, else
       0: the CPU's test) and -1 for the others, and counts the n candidates (exact).
       keep = top_k if 0 < top_k < n, else n.
     Neither top-k (keep == n) nor top-p: the CPU does not sort, it walks the candidates in id
       order. Thread t owns the contiguous ids [t c, t c + c), c = ceil(V / NT): m_t = sum of
       (double)pf_i over its candidates in id order, and its last candidate; thread 0 scans
       m_0 .. m_{NT-1} in thread order into the starts s_t and S = the total; target = u S;
       every thread walks its ids from acc = s_t exactly as the CPU walks (acc += pf_i;
       target < acc: pick i, strictly); the token is the lowest pick; no pick (rounding at the
       end): the last candidate; no candidate at all (non-finite logits): best.
     Top-k and/or top-p: the CPU's order is (float p descending, id ascending), which is the
       order of the 64-bit key (bits of pf) << 32 | (2^32 - 1 - id), unique per candidate
       (non-candidates: key 0). The selections below are radix selections on that key, 8 bits
       a digit from the top, each digit one pass over the row's pf with a 256-bin histogram in
       shared memory holding a count and a mass (integer atomics: the same sums in any order);
       a selection stops early at the digit where the chosen bin holds one candidate (one more
       pass finds it). Masses are fixed point, mass_i = floor(pf_i 2^62) (exact for pf_i >=
       2^-39, the rest short by < 2^-62 each), so a histogram is an exact integer sum.
       M, the length of the sorted prefix that decides the token:
         top-p without top-k (keep == n): the nucleus estimated in fixed point, L' = the first
         position whose running mass reaches top_p 2^62 (a mass selection), M = min(n, L' + 8);
         otherwise M = keep (the nucleus is inside the first keep).
       M <= MBPO__SAMPLE_CAP (4096): exact. A count selection finds the M-th key; the M
       candidates with a key >= it are gathered into shared memory and sorted (bitonic); thread 0
       then runs mbpo__sample_u's loops on them as written: kept (the first keep, when keep < n,
       in which case M == keep), the nucleus (the first i + 1 whose double mass >= top_p kept),
       the sum, target = u sum and the walk (target < acc), else the last kept. Bit for bit the
       CPU's token for the same pf (the 8 of slack cover the fixed point's error of the nucleus,
       < V 2^-62 (2^-45 at V = 152k), against the CPU's sequential double sum's ~V 2^-53: the
       CPU's nucleus would have to end 8 candidates after the estimate, each >= cut; if it ever
       did, the token comes from the first M, which test_cuda.cu would count as a mismatch).
       M > CAP (top-k above 4096, or a nucleus of thousands of ids: top_p near 1 on a flat row):
       fixed point throughout. keep < n: a count selection gives the keep-th key and the kept
       mass; top-p: a mass selection over those for top_p kept (kept = 1 when keep == n, as on
       the CPU); then the token is the first candidate of the final set whose running mass
       exceeds floor(u S) (S the set's fixed-point mass; a mass selection), else the set's last.
       These sums are exact integers where the CPU rounds a sequential double sum (relative
       error <= ~V 2^-53 ~ 1.7e-11 at V = 152k, typically ~sqrt(V) 2^-53 ~ 4e-14), so the nucleus
       end or the token differs only when top_p kept or u S falls within that of a boundary of
       the running sum: for a boundary candidate of mass p about 1e-13 / p per draw (p >= cut;
       N(0, 9) logits at top-p 0.95, V = 152k: a nucleus of ~13k ids, p ~ 4e-6 at its end, ~3e-8
       per draw), counted by the tests (0 expected).
   Every sum's order depends on V, G and NT only, never on the device or the launch (integer
   atomics only). Where a temperature token can differ from the CPU's (greedy cannot): the
   CPU's sum of e_i is one running sum over V terms, here strided partials and a tree: they
   differ by ~sqrt(V) ulp of double (N(0, 9) logits at V = 152k, numpy model of both orders:
   mean 9e-15, max 2.7e-14 relative over 80 rows); the device's double exp is within 1 ulp of
   glibc's; and in the id-order walk acc restarts at s_t in every range (regrouped: a few ulp
   of double). So e_i / sum differs by ~1e-14 relative, which moves a pf_i, by one float ulp
   (<= 1.2e-7 pf_i), only when it lies that close to a float rounding midpoint (~1e-7 of the
   values: a few rows in a hundred at V = 152k; 0 in those 80 rows); the boundaries of the
   cumulative sum after it, and S, move by that ulp, the others by a few ulp of double. A token
   differs only when target = u S falls between the two sides' value of a boundary: for a
   uniform u, about 1e-7 x 1.2e-7 x sum p_i ~ 1e-14 per draw (a moved pf_i can also move the
   top-k set's edge or reorder a near tie, as rarely). test_cuda.cu counts mismatches over
   seeded draws: 0 expected; 0 in the emulation, tests/cuda/emu, where only the sums' order
   differs.
   Cost of a row at V = 152k on one SM of an H100-class GPU (estimates, not measured): the
   argmax pass and the three double-exp passes (sum at T = 1, sum at T, pf; ~40 FP64
   instructions an id) ~50-100 us each; a selection pass reads pf (600 KB, from L2) at
   ~5-10 us, 2 to 9 passes a selection, at most three selections (top-p alone: two); the gather
   and sort of <= 4096 keys (78 bitonic stages) ~15 us; thread 0's loops over <= 4096 sorted
   values ~30 us: ~250-450 us, about half of it the exp passes the plain temperature path has.
   Scratch (T > 0): V floats per block (pf) in c->workspace, blocks = min(G, workspace / 4V)
   (at V = 152k: 55 rows at once; greedy: G blocks, no scratch); fails only when one row does
   not fit (V > 8 Mi). */

#define MBPO__SAMPLE_CAP 4096   /* the sorted prefix handled exactly in shared memory */
#define MBPO__SAMPLE_SLACK 8    /* candidates gathered past the fixed-point nucleus estimate */
typedef unsigned long long mbpo__u64;
typedef char mbpo__sample_bins[MBPO__CUDA_THREADS == 256 ? 1 : -1];   /* one histogram bin per thread */

/* (v, i) beats (w, j): the larger value, the lower id on equal values; NaN never beats */
static __device__ __forceinline__ bool mbpo__arg_beats(float v, int64_t i, float w, int64_t j) {
    return v > w || (v == w && i < j);
}
/* the sort key of candidate i (pf >= 0): float p descending, then id ascending; 0: none */
static __device__ __forceinline__ mbpo__u64 mbpo__sample_key(float pf, int64_t i) {
    return pf >= 0.0f ? ((mbpo__u64)__float_as_uint(pf) << 32) | (mbpo__u64)(0xFFFFFFFFu - (unsigned)i) : 0ull;
}
static __device__ __forceinline__ float mbpo__key_p(mbpo__u64 key) { return __uint_as_float((unsigned)(key >> 32)); }
static __device__ __forceinline__ int64_t mbpo__key_id(mbpo__u64 key) { return (int64_t)(0xFFFFFFFFu - (unsigned)key); }
static __device__ __forceinline__ mbpo__u64 mbpo__sample_fx(float pf) {   /* floor(pf 2^62), pf in [0, 1] */
    return (mbpo__u64)((double)pf * 4611686018427387904.0);
}
/* a pass over thread t's contiguous ids [lo, hi) of pf: the candidates' (double)pf in id
   order; walk: from acc = start, the first id with target < acc (V if none); else the mass
   and the last candidate (-1 if none) */
static __device__ __forceinline__ void mbpo__sample_range(const float *pf, int64_t lo, int64_t hi, int walk, double start,
                                                          double target, double *mass, int64_t *id) {
    double acc = start;
    int64_t i, last = -1;
    for (i = lo; i < hi; i++) {
        const float p = pf[i];
        if (!(p >= 0.0f)) continue;
        acc += p;
        last = i;
        if (walk && target < acc) break;
    }
    *mass = acc;
    *id = walk ? (i < hi ? i : INT64_MAX) : last;
}
/* Radix selection over the keys >= klo (klo >= 1: candidates only) of a row's pf (V): the
   first key, in descending order, at which the running weight (mass: fixed-point masses, else
   counts) reaches thr and whose own count is not 0. Returns 1 and its key, and the count and
   mass of the keys >= it, in every thread; 0 when the total stays below thr. h_c, h_m: NT
   bins; s_q: 8 values, written by thread 0 between barriers. */
static __device__ int mbpo__sample_select(const float *pf, int64_t V, mbpo__u64 klo, int mass, mbpo__u64 thr,
                                          unsigned *h_c, mbpo__u64 *h_m, mbpo__u64 *s_q, mbpo__u64 *key,
                                          mbpo__u64 *cnt_ge, mbpo__u64 *mass_ge) {
    const int t = (int)threadIdx.x;
    mbpo__u64 prefix = 0, state = 0, ac = 0, am = 0;   /* ac, am: thread 0's weight above the prefix */
    int shift;
    for (shift = 56; shift >= 0; shift -= 8) {
        const mbpo__u64 hi = shift == 56 ? 0ull : ~0ull << (shift + 8);
        unsigned cc = 0;
        mbpo__u64 cm = 0;
        int cb = -1;
        int64_t i;
        h_c[t] = 0; h_m[t] = 0;
        __syncthreads();
        /* runs of one bin are added at once: a flat row (one bin) costs NT atomics, not V */
        for (i = t; i < V; i += MBPO__CUDA_THREADS) {
            const float p = pf[i];
            const mbpo__u64 k = mbpo__sample_key(p, i);
            int b;
            if (k < klo || (k & hi) != prefix) continue;
            b = (int)(k >> shift) & 255;
            if (b != cb) {
                if (cc) { atomicAdd(&h_c[cb], cc); atomicAdd(&h_m[cb], cm); }
                cb = b; cc = 0; cm = 0;
            }
            cc++; cm += mbpo__sample_fx(p);
        }
        if (cc) { atomicAdd(&h_c[cb], cc); atomicAdd(&h_m[cb], cm); }
        __syncthreads();
        if (t == 0) {   /* the bins from the top: the weight above, then the bin that reaches thr */
            mbpo__u64 c = ac, m = am;
            int b;
            for (b = 255; b >= 0; b--) {
                if (h_c[b] && (mass ? m + h_m[b] >= thr : c + h_c[b] >= thr)) break;
                c += h_c[b]; m += h_m[b];
            }
            if (b < 0) s_q[3] = 2;   /* none */
            else {
                s_q[0] = prefix | (mbpo__u64)b << shift;
                if (h_c[b] == 1) { s_q[1] = c + 1; s_q[2] = m + h_m[b]; s_q[3] = 1; }   /* one candidate: found */
                else { ac = c; am = m; s_q[3] = 0; }
            }
        }
        __syncthreads();
        prefix = s_q[0]; state = s_q[3];
        if (state) break;   /* uniform */
    }
    if (state == 2) return 0;
    *cnt_ge = s_q[1]; *mass_ge = s_q[2];
    if (shift > 0) {   /* the one candidate of the bin: its low digits (s_q[4]: the others are still read) */
        const mbpo__u64 m = ~0ull << shift;
        int64_t i;
        for (i = t; i < V; i += MBPO__CUDA_THREADS) {
            const mbpo__u64 k = mbpo__sample_key(pf[i], i);
            if (k >= klo && (k & m) == prefix) s_q[4] = k;
        }
        __syncthreads();
        *key = s_q[4];
    } else *key = prefix;
    /* every thread has read s_q before thread 0 writes it again: after the next call's first
       barrier */
    return 1;
}
static __global__ void __launch_bounds__(MBPO__CUDA_THREADS)
mbpo__k_sample(int32_t *tok, float *logp, float *z, const double *u, const int64_t *st, const unsigned char *done, int64_t G,
               int64_t V, mbpo__sample_k k, float *scratch) {
    __shared__ float s_v[MBPO__CUDA_THREADS];
    __shared__ int64_t s_i[MBPO__CUDA_THREADS];
    __shared__ int64_t s_j[MBPO__CUDA_THREADS];
    __shared__ double s_d[MBPO__CUDA_THREADS];
    __shared__ double s_m[MBPO__CUDA_THREADS + 1];
    __shared__ unsigned h_c[MBPO__CUDA_THREADS];
    __shared__ mbpo__u64 h_m[MBPO__CUDA_THREADS];
    __shared__ mbpo__u64 s_q[8];
    __shared__ mbpo__u64 s_key[MBPO__SAMPLE_CAP];
    const int64_t t = threadIdx.x, c = (V + MBPO__CUDA_THREADS - 1) / MBPO__CUDA_THREADS;
    const int64_t lo = t * c < V ? t * c : V, hi = lo + c < V ? lo + c : V;
    const double top_p = k.top_p > 0 && k.top_p < 1 ? k.top_p : 1.0, cut = top_p < 1 ? (1 - top_p) / (double)V : 0;
    const int top_k = (int)k.top_k;   /* mbpo_gen_opts.top_k is an int */
    float *pf = scratch + (int64_t)blockIdx.x * V;
    int64_t g;
    for (g = blockIdx.x; g < G; g += gridDim.x) {
        float *zr = z + g * V;
        float bv = -INFINITY;
        int64_t bi = INT64_MAX, i, best, pick, last, r = 0, n, keep, M;
        double mx, sum, sum1, mass, target, ur;
        unsigned cnt = 0;
        mbpo__u64 kq = 0, cq = 0, mq = 0;
        int b, nucleus = 0;
        unsigned o;
        if (done[g]) continue;   /* the whole block */
        for (i = 0; i < g; i++) r += !done[i];   /* this row's draw: the live rows before it */
        if (t == 0)
            for (b = 0; b < k.n_ban; b++) if (k.ban[b] >= 0 && k.ban[b] < V) zr[k.ban[b]] = -INFINITY;
        __syncthreads();
        /* argmax: ids in increasing order per thread, so a tie keeps the first */
        for (i = t; i < V; i += MBPO__CUDA_THREADS)
            if (mbpo__arg_beats(zr[i], i, bv, bi)) { bv = zr[i]; bi = i; }
        s_v[t] = bv; s_i[t] = bi;
        if (t == 0) s_q[5] = 0;   /* the candidate count (the previous row read it before the barrier above) */
        __syncthreads();
        for (o = MBPO__CUDA_THREADS / 2; o > 0; o >>= 1) {
            if (t < o && mbpo__arg_beats(s_v[t + o], s_i[t + o], s_v[t], s_i[t])) { s_v[t] = s_v[t + o]; s_i[t] = s_i[t + o]; }
            __syncthreads();
        }
        best = isnan(zr[0]) || s_i[0] == INT64_MAX ? 0 : s_i[0];
        mx = zr[best];
        /* logp: the row's log-sum-exp at temperature 1 (mbpo__logp_of), in double */
        sum1 = 0.0;
        for (i = t; i < V; i += MBPO__CUDA_THREADS) sum1 += exp((double)zr[i] - mx);
        sum1 = mbpo__block_sum_fixed(sum1, s_d);
        if (k.temperature <= 0) {
            if (t == 0) { tok[g] = (int32_t)best; logp[g] = (float)((double)zr[best] - (mx + log(sum1))); }
            continue;   /* the whole block (its next barrier follows thread 0's last reads) */
        }
        __syncthreads();   /* every thread has read s_d[0] before the next sum writes it */
        sum = 0.0;
        for (i = t; i < V; i += MBPO__CUDA_THREADS) sum += exp(((double)zr[i] - mx) / k.temperature);
        sum = mbpo__block_sum_fixed(sum, s_d);
        /* the probabilities of the candidates (mbpo__sample_u's test), -1 for the others */
        for (i = t; i < V; i += MBPO__CUDA_THREADS) {
            const double p = exp(((double)zr[i] - mx) / k.temperature) / sum;
            const bool cand = p >= cut && p > 0;
            pf[i] = cand ? (float)p : -1.0f;
            cnt += cand;
        }
        atomicAdd(&s_q[5], (mbpo__u64)cnt);   /* integer: any order */
        __syncthreads();
        n = (int64_t)s_q[5];
        ur = u[st[MBPO__GS_NU] + r];
        keep = top_k > 0 && top_k < n ? top_k : n;
        if (n == 0 || (keep == n && top_p >= 1)) {
            /* the CPU's id-order walk: the candidates' mass per range, then the starts (exclusive
               scan in thread order) */
            mbpo__sample_range(pf, lo, hi, 0, 0.0, 0.0, &mass, &last);
            s_m[t] = mass;
            __syncthreads();
            if (t == 0) {
                double a = 0.0, m;
                for (i = 0; i < MBPO__CUDA_THREADS; i++) { m = s_m[i]; s_m[i] = a; a += m; }
                s_m[MBPO__CUDA_THREADS] = a;
            }
            __syncthreads();
            target = ur * s_m[MBPO__CUDA_THREADS];
            mbpo__sample_range(pf, lo, hi, 1, s_m[t], target, &mass, &pick);
            /* the lowest pick, the last candidate (s_i is free: its last reads were before the sum's barriers) */
            s_i[t] = pick; s_j[t] = last;
            __syncthreads();
            for (o = MBPO__CUDA_THREADS / 2; o > 0; o >>= 1) {
                if (t < o) {
                    if (s_i[t + o] < s_i[t]) s_i[t] = s_i[t + o];
                    if (s_j[t + o] > s_j[t]) s_j[t] = s_j[t + o];
                }
                __syncthreads();
            }
            if (t == 0) {
                int64_t id = s_i[0] != INT64_MAX ? s_i[0] : s_j[0] >= 0 ? s_j[0] : best;
                tok[g] = (int32_t)id;
                logp[g] = (float)((double)zr[id] - (mx + log(sum1)));
            }
            __syncthreads();   /* s_i, s_m read before the next row writes them */
            continue;
        }
        /* sorted: M, the prefix that decides the token */
        M = keep;
        if (keep == n && top_p < 1) {   /* the fixed-point nucleus (kept = 1, as on the CPU) */
            nucleus = mbpo__sample_select(pf, V, 1, 1, (mbpo__u64)ceil(top_p * 4611686018427387904.0), h_c, h_m, s_q, &kq,
                                          &cq, &mq);
            if (nucleus) M = (int64_t)cq + MBPO__SAMPLE_SLACK < n ? (int64_t)cq + MBPO__SAMPLE_SLACK : n;
        }
        if (M <= MBPO__SAMPLE_CAP) {
            /* exact: the first M keys into shared memory, sorted, then the CPU's loops */
            mbpo__u64 kM = 1, p2 = 1, kk, j;
            if (M < n) (void)mbpo__sample_select(pf, V, 1, 0, (mbpo__u64)M, h_c, h_m, s_q, &kM, &cq, &mq);   /* found: n >= M */
            while ((int64_t)p2 < M) p2 <<= 1;
            if (t == 0) s_q[6] = 0;
            for (i = M + t; i < (int64_t)p2; i += MBPO__CUDA_THREADS) s_key[i] = 0;   /* padding sorts last */
            __syncthreads();
            for (i = t; i < V; i += MBPO__CUDA_THREADS) {
                const mbpo__u64 key = mbpo__sample_key(pf[i], i);
                if (key >= kM && key) s_key[atomicAdd(&s_q[6], 1ull)] = key;   /* slots in any order */
            }
            __syncthreads();
            for (kk = 2; kk <= p2; kk <<= 1)   /* bitonic, descending */
                for (j = kk >> 1; j > 0; j >>= 1) {
                    for (i = t; i < (int64_t)p2; i += MBPO__CUDA_THREADS) {
                        const mbpo__u64 l = (mbpo__u64)i ^ j;
                        if (l > (mbpo__u64)i) {
                            const mbpo__u64 x = s_key[i], y = s_key[l];
                            if (((mbpo__u64)i & kk) == 0 ? x < y : x > y) { s_key[i] = y; s_key[l] = x; }
                        }
                    }
                    __syncthreads();
                }
            if (t == 0) {   /* mbpo__sample_u's loops over cand[0 .. M) */
                int64_t kp = keep, id;
                double acc = 0.0;
                if (top_p < 1) {
                    double kept = 0, mss = 0;
                    const int64_t lim = kp < M ? kp : M;
                    int hit = 0;
                    if (keep < n) for (i = 0; i < keep; i++) kept += mbpo__key_p(s_key[i]);   /* keep < n: M == keep */
                    else kept = 1.0;
                    for (i = 0; i < lim; i++) {
                        mss += mbpo__key_p(s_key[i]);
                        if (mss >= top_p * kept) { kp = i + 1; hit = 1; break; }
                    }
                    if (!hit && M < kp) kp = M;   /* the CPU's nucleus is longer (see above): the first M */
                }
                for (i = 0, sum = 0; i < kp; i++) sum += mbpo__key_p(s_key[i]);
                target = ur * sum;
                id = mbpo__key_id(s_key[kp - 1]);
                for (i = 0; i < kp; i++) {
                    acc += mbpo__key_p(s_key[i]);
                    if (target < acc) { id = mbpo__key_id(s_key[i]); break; }
                }
                tok[g] = (int32_t)id;
                logp[g] = (float)((double)zr[id] - (mx + log(sum1)));
            }
            __syncthreads();   /* s_key, s_q read before the next row */
            continue;
        }
        {   /* a long prefix: fixed point throughout */
            mbpo__u64 kf = 1, mf = 0, cf = 0, kt, ct, mt;
            if (keep < n) {
                (void)mbpo__sample_select(pf, V, 1, 0, (mbpo__u64)keep, h_c, h_m, s_q, &kf, &cf, &mf);
                if (top_p < 1) {
                    const double kept = (double)mf / 4611686018427387904.0;
                    if (mbpo__sample_select(pf, V, kf, 1, (mbpo__u64)ceil(top_p * kept * 4611686018427387904.0), h_c, h_m,
                                            s_q, &kt, &ct, &mt)) { kf = kt; cf = ct; mf = mt; }
                }
            } else if (nucleus) { kf = kq; cf = cq; mf = mq; }
            else {   /* top-p reaches past every candidate's fixed-point mass: all n, the last one is the n-th */
                (void)mbpo__sample_select(pf, V, 1, 0, (mbpo__u64)n, h_c, h_m, s_q, &kf, &cf, &mf);
            }
            if (!mbpo__sample_select(pf, V, kf, 1, (mbpo__u64)floor(ur * (double)mf) + 1, h_c, h_m, s_q, &kt, &ct, &mt))
                kt = kf;   /* rounding at the end: the last kept */
            if (t == 0) {
                const int64_t id = mbpo__key_id(kt);
                tok[g] = (int32_t)id;
                logp[g] = (float)((double)zr[id] - (mx + log(sum1)));
            }
            __syncthreads();
        }
    }
}
/* tok, logp (G) for the live rows of z (G, V) fp32, all on the device: mbpo__k_sample; no
   transfer and no synchronisation, so a graph can hold it (tested against mbpo__cpu_sample) */
static int mbpo__cuda_sample(mbpo_backend *be, int32_t *tok, float *logp, float *z, const double *u, const int64_t *st,
                             const unsigned char *done, int64_t G, int64_t V, const mbpo__sample_k *k) {
    struct mbpo__backend_cuda *c = MBPO__CUDA(be);
    int64_t blocks = G;
    if (G < 0 || G > 65535 || V < 1 || V > 2147483647 || k->n_ban < 0 || k->n_ban > 4)
        return mbpo__fail("sample: %lld rows of %lld logits, %d ban ids (want 0 <= G < 2^16, 1 <= V < 2^31, at most 4 bans)",
                          (long long)G, (long long)V, k->n_ban);
    if (G == 0) return 1;
    if (k->temperature > 0) {   /* V floats of scratch per block */
        const int64_t fit = (int64_t)(c->workspace_size / ((size_t)V * sizeof(float)));
        if (fit < 1)
            return mbpo__fail("sample: a row of %lld logits needs %lld bytes of scratch, more than the %lld-byte workspace",
                              (long long)V, (long long)V * (long long)sizeof(float), (long long)c->workspace_size);
        if (blocks > fit) blocks = fit;
    }
    mbpo__k_sample<<<(unsigned)blocks, MBPO__CUDA_THREADS, 0, c->stream>>>(tok, logp, z, u, st, done, G, V, *k,
                                                                          (float *)c->workspace);
    MBPO__LAUNCHED("mbpo__k_sample", G * V);
    return 1;
}

/* gen_step: mbpo__cpu_gen_step's bookkeeping, one thread for the G rows (a handful), then the
   block writes pos; no transfer, so a graph can hold it */
static __global__ void mbpo__k_gen_step(int32_t *out, float *out_logp, int32_t *len, unsigned char *done, int64_t *st,
                                        int64_t *pos, const int32_t *tok, const float *logp, int64_t G, int64_t stride,
                                        mbpo__step_k k) {
    __shared__ int64_t s_p;
    int64_t g, live = 0;
    int s;
    if (threadIdx.x == 0) {
        st[MBPO__GS_T] += st[MBPO__GS_GO];
        for (g = 0; g < G; g++) live += !done[g];
        if (k.draws) st[MBPO__GS_NU] += live;
        for (g = 0; g < G; g++) {
            if (done[g]) continue;
            if (len[g] >= stride) { done[g] = 1; continue; }
            out[g * stride + len[g]] = tok[g];
            if (out_logp) out_logp[g * stride + len[g]] = logp[g];
            len[g]++;
            for (s = 0; s < k.n_stop; s++) if (tok[g] == k.stop[s]) { done[g] = 1; break; }
        }
        for (g = 0, live = 0; g < G; g++) live += !done[g];
        st[MBPO__GS_LIVE] = live; st[MBPO__GS_GO] = live > 0;
        s_p = st[MBPO__GS_T] + st[MBPO__GS_DELTA];
    }
    __syncthreads();
    for (g = threadIdx.x; g < 3 * G; g += blockDim.x) pos[g] = s_p;
}
static int mbpo__cuda_gen_step(mbpo_backend *be, int32_t *out, float *out_logp, int32_t *len, unsigned char *done, int64_t *st,
                               int64_t *pos, const int32_t *tok, const float *logp, int64_t G, int64_t stride,
                               const mbpo__step_k *k) {
    if (G < 0 || G > 65535 || stride < 1 || k->n_stop < 0 || k->n_stop > MBPO__MAX_STOP)
        return mbpo__fail("gen_step: %lld rows of %lld, %d stop ids", (long long)G, (long long)stride, k->n_stop);
    mbpo__k_gen_step<<<1, MBPO__CUDA_THREADS, 0, MBPO__CUDA(be)->stream>>>(out, out_logp, len, done, st, pos, tok, logp, G,
                                                                           stride, *k);
    MBPO__LAUNCHED("mbpo__k_gen_step", G);
    return 1;
}

/* ------------------------------------------------------------------ 14. PGD on the device

   mbpo_pgd's iterations stay on the GPU: the image x (H, W, 3) fp32 to the pixel rows, the
   adjoint back to x, the sign step. Each is an index map or an elementwise pass, so the order
   of operations is the CPU op's: __fmul_rn keeps the product x * k (fast processor) rounded on
   its own, as mbpo__mul_rounded does, and the divisions are IEEE (no fast math), so the fp32
   build gives the CPU's bits. The norm constants kms (k, m[3], s[3]) are passed by value. */
struct mbpo__kms { float k, m[3], s[3]; };
static __global__ void mbpo__k_pixels(mbpo__cx *pv, const float *x, const int64_t *map, mbpo__kms c, int64_t n) {
    MBPO__FOR(j, n) {
        int64_t at = map[j], ch = at % 3;
        float v = x[at];
        if (c.k != 1.0f) v = __fmul_rn(v, c.k);
        mbpo__st(pv, j, __fdiv_rn(__fsub_rn(v, c.m[ch]), c.s[ch]));
    }
}
static __global__ void mbpo__k_pixels_backward(float *dx, const mbpo__cx *dpv, const int64_t *inv, int64_t T, mbpo__kms c,
                                               int64_t n) {
    MBPO__FOR(i, n) {
        float sum = 0.0f;
        for (int64_t tau = 0; tau < T; tau++) sum = __fadd_rn(sum, mbpo__ld(dpv, inv[i * T + tau]));
        dx[i] = __fdiv_rn(c.k != 1.0f ? __fmul_rn(sum, c.k) : sum, c.s[i % 3]);
    }
}
static __global__ void mbpo__k_pgd_step(float *x, const float *x0, const float *dx, float step, float eps, int64_t n) {
    MBPO__FOR(i, n) {
        float v = __fsub_rn(x[i], __fmul_rn(step, (float)((dx[i] > 0) - (dx[i] < 0))));
        if (eps >= 0) {
            float lo = __fsub_rn(x0[i], eps), hi = __fadd_rn(x0[i], eps);
            v = v < lo ? lo : v > hi ? hi : v;
        }
        x[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
}
static mbpo__kms mbpo__kms_of(const float *kms) {
    mbpo__kms c;
    c.k = kms[0];
    for (int i = 0; i < 3; i++) { c.m[i] = kms[1 + i]; c.s[i] = kms[4 + i]; }
    return c;
}
/* pv (n_pv) = the rows of x through map: tested against mbpo__cpu_pixels */
static int mbpo__cuda_pixels(mbpo_backend *be, mbpo_x *pv, const float *x, const int64_t *map, int64_t n_pv, const float *kms) {
    MBPO__EW_LAUNCH(mbpo__k_pixels, n_pv, MBPO__CUDA_X(pv), x, map, mbpo__kms_of(kms));
    return 1;
}
/* dx (n) = the adjoint through inv (n, T): tested against mbpo__cpu_pixels_backward */
static int mbpo__cuda_pixels_backward(mbpo_backend *be, float *dx, const mbpo_x *dpv, const int64_t *inv, int64_t n, int64_t T,
                                      const float *kms) {
    MBPO__EW_LAUNCH(mbpo__k_pixels_backward, n, dx, MBPO__CUDA_CX(dpv), inv, T, mbpo__kms_of(kms));
    return 1;
}
/* x (n) one signed step, the ball (eps >= 0) and [0, 1]: tested against mbpo__cpu_pgd_step */
static int mbpo__cuda_pgd_step(mbpo_backend *be, float *x, const float *x0, const float *dx, int64_t n, float step, float eps) {
    MBPO__EW_LAUNCH(mbpo__k_pgd_step, n, x, x0, dx, step, eps);
    return 1;
}

/* ------------------------------------------------------------------ 15. graphs

   mbpo_generate's decode step (about 15 launches per layer, ~400 at 28 layers) is captured
   once into a CUDA graph and replayed: one launch per step instead of hundreds, so the host
   never limits a step that takes a few milliseconds. Every op of the step reads its inputs
   from device memory (tokens, positions, the cache row t, the draws' counter), so the same
   graph serves every step; the weights are updated in place, so it outlives an update. The
   capture is thread-local: an unsafe call inside it (a synchronisation, an allocation) makes
   the capture fail, cudaStreamEndCapture always ends it, and the caller runs the ops one by
   one instead. */
static int mbpo__cuda_graph_begin(mbpo_backend *be) {
    cudaError_t e = cudaStreamBeginCapture(MBPO__CUDA(be)->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return mbpo__fail("graph capture: cudaStreamBeginCapture: %s", cudaGetErrorString(e));
    }
    return 1;
}
static int mbpo__cuda_graph_end(mbpo_backend *be, void **graph) {
    cudaGraph_t g = NULL;
    cudaGraphExec_t x = NULL;
    cudaError_t e = cudaStreamEndCapture(MBPO__CUDA(be)->stream, &g);
    *graph = NULL;
    if (e == cudaSuccess) e = cudaGraphInstantiate(&x, g, 0);
    if (g) (void)cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return mbpo__fail("graph capture: %s", cudaGetErrorString(e));
    }
    *graph = (void *)x;
    return 1;
}
static int mbpo__cuda_graph_launch(mbpo_backend *be, void *graph) {
    MBPO__CU(cudaGraphLaunch((cudaGraphExec_t)graph, MBPO__CUDA(be)->stream));
    return 1;
}
static void mbpo__cuda_graph_free(void *graph) {
    if (graph) (void)cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ------------------------------------------------------------------ 16. the table
   (every entry of struct mbpo__ops, in declaration order) */

static const mbpo_ops mbpo__cuda_ops = {
    "cuda", sizeof(mbpo__cx), mbpo__cuda_create, mbpo__cuda_destroy,
    mbpo__cuda_alloc, mbpo__cuda_release, mbpo__cuda_upload, mbpo__cuda_download, mbpo__cuda_zero, mbpo__cuda_copy,
    mbpo__cuda_x_upload, mbpo__cuda_x_download,
    mbpo__cuda_matmul_forward, mbpo__cuda_matmul_backward,
    mbpo__cuda_layernorm_forward, mbpo__cuda_layernorm_backward, mbpo__cuda_rmsnorm_forward, mbpo__cuda_rmsnorm_backward,
    mbpo__cuda_quick_gelu_forward, mbpo__cuda_quick_gelu_backward, mbpo__cuda_gelu_forward, mbpo__cuda_gelu_backward,
    mbpo__cuda_swiglu_forward, mbpo__cuda_swiglu_backward, mbpo__cuda_add, mbpo__cuda_gather_rows,
    mbpo__cuda_mrope_tables, mbpo__cuda_vrope_tables, mbpo__cuda_rope_apply,
    mbpo__cuda_attention_forward, mbpo__cuda_attention_backward, mbpo__cuda_attention_decode, mbpo__cuda_kv_append,
    mbpo__cuda_embed_forward, mbpo__cuda_embed_backward, mbpo__cuda_head_forward, mbpo__cuda_head_backward, mbpo__cuda_logits,
    mbpo__cuda_sumsq,   /* tested against mbpo__cpu_sumsq (test_cuda.cu: test_optimizer) */
    mbpo__cuda_sample,  /* tested against mbpo__cpu_sample (test_cuda.cu: test_sample) */
    mbpo__cuda_gen_step,   /* against mbpo__cpu_gen_step (test_sample) */
    mbpo__cuda_adamw,   /* tested against mbpo__cpu_adamw (test_cuda.cu: test_optimizer) */
    mbpo__cuda_pixels,  /* tested against mbpo__cpu_pixels (test_cuda.cu: test_pgd_ops) */
    mbpo__cuda_pixels_backward,   /* against mbpo__cpu_pixels_backward (test_pgd_ops) */
    mbpo__cuda_pgd_step,   /* against mbpo__cpu_pgd_step (test_pgd_ops) */
    mbpo__cuda_graph_begin, mbpo__cuda_graph_end, mbpo__cuda_graph_launch, mbpo__cuda_graph_free
                        /* a generation with graphs against one without (test_cuda.cu: test_generate) */
};

/* ------------------------------------------------------------------ 17. collectives over NCCL

   mbpo_comm on GPUs (MBPO_NCCL): one NCCL communicator over the ranks, its own stream. The
   model's work is queued on the backends' streams, so a collective first waits for the device
   (cudaDeviceSynchronize: compute does not hang), then queues its NCCL calls and polls: done,
   an asynchronous NCCL error, or the deadline, after which the communicator is aborted and the
   call fails (NCCL does not say which peer is missing: the message says so). Buffers may be
   device or host memory: host buffers go through a device staging buffer (the small things:
   metrics, block sums, mining lines). Uneven pieces (a shard per rank) are grouped
   broadcasts (all_gather) and reductions (reduce), one per owner, in place. The order of
   NCCL's additions is its own: the same for a fixed world size and topology, not across
   world sizes (docs/DESIGN.md 8). STATUS: compiles; not run (no GPU has been lent). */
#ifdef MBPO_NCCL
struct mbpo__nccl { ncclComm_t comm; cudaStream_t st; void *stage; size_t stage_bytes; int aborted; };
#ifdef MBPO_MPI
static int mbpo__mpi_missing(mbpo_comm *c, char *who, size_t size);   /* (mbpo.h: the ranks that do not answer over MPI) */
#endif
#define MBPO__NCCL(c) ((struct mbpo__nccl *)(c)->impl)
#define MBPO__NC(call, what)                                                                    \
    do {                                                                                        \
        ncclResult_t mbpo_nc_err_ = (call);                                                     \
        if (mbpo_nc_err_ != ncclSuccess)                                                        \
            return mbpo__fail("%s: %s: %s", what, #call, ncclGetErrorString(mbpo_nc_err_));     \
    } while (0)

static int mbpo__nccl_unique_id(void *id128) {
    ncclUniqueId id;
    MBPO__NC(ncclGetUniqueId(&id), "NCCL bootstrap");
    memcpy(id128, &id, sizeof id < 128 ? sizeof id : 128);
    return 1;
}
static int mbpo__nccl_init(mbpo_comm *c, const void *id128) {
    struct mbpo__nccl *n = (struct mbpo__nccl *)mbpo__calloc(1, sizeof *n);
    ncclUniqueId id;
    if (!n) return 0;
    memcpy(&id, id128, sizeof id < 128 ? sizeof id : 128);
    mbpo__cuda_device_index = c->local_rank;
    if (!mbpo__cuda_available()) { mbpo_free(n); return 0; }
    if (cudaStreamCreateWithFlags(&n->st, cudaStreamNonBlocking) != cudaSuccess) {
        (void)cudaGetLastError(); mbpo_free(n);
        return mbpo__fail("rank %d: cannot create the NCCL stream", c->rank);
    }
    if (ncclCommInitRank(&n->comm, c->world, id, c->rank) != ncclSuccess) {
        (void)cudaStreamDestroy(n->st); mbpo_free(n);
        return mbpo__fail("rank %d of %d: ncclCommInitRank failed on GPU %d", c->rank, c->world, c->local_rank);
    }
    c->impl = n; c->backend = "nccl"; c->device = 1;
    return 1;
}
/* Wait for what the NCCL stream holds, at most c->timeout_s. */
static int mbpo__nccl_wait(mbpo_comm *c, const char *what) {
    struct mbpo__nccl *n = MBPO__NCCL(c);
    double t0 = mbpo_now();
    long us = 20;
    for (;;) {
        cudaError_t e = cudaStreamQuery(n->st);
        ncclResult_t ae = ncclSuccess;
        if (e == cudaSuccess) return 1;
        if (e != cudaErrorNotReady) { (void)cudaGetLastError(); return mbpo__fail("%s: rank %d: %s", what, c->rank, cudaGetErrorString(e)); }
        if (ncclCommGetAsyncError(n->comm, &ae) != ncclSuccess || ae != ncclSuccess) {
            (void)ncclCommAbort(n->comm); n->aborted = 1;
            return mbpo__fail("%s: rank %d: NCCL: %s (a rank died?)", what, c->rank, ncclGetErrorString(ae));
        }
        if (mbpo_now() - t0 > c->timeout_s) {
            char who[256];
            snprintf(who, sizeof who, "the other ranks (NCCL does not say which)");
#ifdef MBPO_MPI
            (void)mbpo__mpi_missing(c, who, sizeof who);   /* the ranks still waiting meet over MPI; the missing do not */
#endif
            (void)ncclCommAbort(n->comm); n->aborted = 1;
            return mbpo__fail("%s: rank %d waited %.0f s for %s (dead, hung, or that far behind; --comm-timeout sets the wait)",
                              what, c->rank, c->timeout_s, who);
        }
        {
            struct timespec ts;
            ts.tv_sec = 0; ts.tv_nsec = us * 1000;
            nanosleep(&ts, NULL);
        }
        if (us < 2000) us *= 2;
    }
}
static int mbpo__nccl_is_device(const void *p) {
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) { (void)cudaGetLastError(); return 0; }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}
static int mbpo__nccl_stage(mbpo_comm *c, size_t bytes) {
    struct mbpo__nccl *n = MBPO__NCCL(c);
    if (n->stage_bytes >= bytes) return 1;
    if (n->stage) (void)cudaFree(n->stage);
    n->stage = NULL; n->stage_bytes = 0;
    if (cudaMalloc(&n->stage, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError();
        return mbpo__fail("rank %d: cannot allocate %.1f MB for the NCCL staging buffer", c->rank, (double)bytes / 1e6);
    }
    n->stage_bytes = bytes;
    return 1;
}
/* In place: rank r's bytes [off[r], off[r+1]) of buf to every rank (grouped broadcasts). */
static int mbpo__nccl_all_gather(mbpo_comm *c, void *buf, const size_t *off) {
    struct mbpo__nccl *n = MBPO__NCCL(c);
    int dev = mbpo__nccl_is_device(buf), r;
    char *d = (char *)buf;
    if (n->aborted) return mbpo__fail("all_gather: the communicator was aborted");
    if (cudaDeviceSynchronize() != cudaSuccess) { (void)cudaGetLastError(); return mbpo__fail("all_gather: the device failed"); }
    if (!dev) {
        if (!mbpo__nccl_stage(c, off[c->world])) return 0;
        d = (char *)n->stage;
        MBPO__CU(cudaMemcpy(d + off[c->rank], (char *)buf + off[c->rank], off[c->rank + 1] - off[c->rank], cudaMemcpyHostToDevice));
    }
    MBPO__NC(ncclGroupStart(), "all_gather");
    for (r = 0; r < c->world; r++)
        MBPO__NC(ncclBroadcast(d + off[r], d + off[r], off[r + 1] - off[r], ncclChar, r, n->comm, n->st), "all_gather");
    MBPO__NC(ncclGroupEnd(), "all_gather");
    if (!mbpo__nccl_wait(c, "all_gather")) return 0;
    if (!dev) MBPO__CU(cudaMemcpy(buf, d, off[c->world], cudaMemcpyDeviceToHost));
    return 1;
}
static int mbpo__nccl_broadcast(mbpo_comm *c, void *buf, size_t bytes, int root) {
    struct mbpo__nccl *n = MBPO__NCCL(c);
    int dev = mbpo__nccl_is_device(buf);
    void *d = buf;
    if (n->aborted) return mbpo__fail("broadcast: the communicator was aborted");
    if (cudaDeviceSynchronize() != cudaSuccess) { (void)cudaGetLastError(); return mbpo__fail("broadcast: the device failed"); }
    if (!dev) {
        if (!mbpo__nccl_stage(c, bytes)) return 0;
        d = n->stage;
        if (c->rank == root) MBPO__CU(cudaMemcpy(d, buf, bytes, cudaMemcpyHostToDevice));
    }
    MBPO__NC(ncclBroadcast(d, d, bytes, ncclChar, root, n->comm, n->st), "broadcast");
    if (!mbpo__nccl_wait(c, "broadcast")) return 0;
    if (!dev && c->rank != root) MBPO__CU(cudaMemcpy(buf, d, bytes, cudaMemcpyDeviceToHost));
    return 1;
}
/* In place, device floats: each owner's range [off[r], off[r+1]) of full becomes the sum over
   the ranks of theirs (grouped reductions, one per owner); the other ranges keep what they had. */
static int mbpo__nccl_reduce(mbpo_comm *c, float *full, const int64_t *off) {
    struct mbpo__nccl *n = MBPO__NCCL(c);
    int r;
    if (n->aborted) return mbpo__fail("reduce: the communicator was aborted");
    if (!mbpo__nccl_is_device(full)) return mbpo__fail("reduce: NCCL reduces device memory");
    if (cudaDeviceSynchronize() != cudaSuccess) { (void)cudaGetLastError(); return mbpo__fail("reduce: the device failed"); }
    MBPO__NC(ncclGroupStart(), "reduce");
    for (r = 0; r < c->world; r++)
        MBPO__NC(ncclReduce(full + off[r], full + off[r], (size_t)(off[r + 1] - off[r]), ncclFloat, ncclSum, r, n->comm, n->st),
                 "reduce");
    MBPO__NC(ncclGroupEnd(), "reduce");
    return mbpo__nccl_wait(c, "reduce");
}
/* The same reduce over the part [lo, hi) of the owners' ranges, queued on the NCCL stream after
   the work queued so far on be's stream (an event), not waited for: the backward goes on while
   it runs (mbpo__nccl_finish waits). Every rank queues the same parts in the same order. */
static int mbpo__nccl_reduce_part(mbpo_comm *c, float *full, const int64_t *off, int64_t lo, int64_t hi, mbpo_backend *be) {
    struct mbpo__nccl *n = MBPO__NCCL(c);
    cudaEvent_t ev;
    int r;
    if (n->aborted) return mbpo__fail("reduce: the communicator was aborted");
    MBPO__CU(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    if (cudaEventRecord(ev, mbpo__cuda_stream(be)) != cudaSuccess || cudaStreamWaitEvent(n->st, ev, 0) != cudaSuccess) {
        (void)cudaEventDestroy(ev); (void)cudaGetLastError();
        return mbpo__fail("reduce: cannot order the NCCL stream after the backward's");
    }
    (void)cudaEventDestroy(ev);   /* (released once recorded) */
    MBPO__NC(ncclGroupStart(), "reduce");
    for (r = 0; r < c->world; r++) {
        int64_t a = off[r] > lo ? off[r] : lo, b = off[r + 1] < hi ? off[r + 1] : hi;
        if (a < b) MBPO__NC(ncclReduce(full + a, full + a, (size_t)(b - a), ncclFloat, ncclSum, r, n->comm, n->st), "reduce");
    }
    MBPO__NC(ncclGroupEnd(), "reduce");
    return 1;
}
static int mbpo__nccl_finish(mbpo_comm *c) { return mbpo__nccl_wait(c, "reduce"); }
static void mbpo__nccl_abort(mbpo_comm *c) {
    struct mbpo__nccl *n = c->impl ? MBPO__NCCL(c) : NULL;
    if (n && !n->aborted) { (void)ncclCommAbort(n->comm); n->aborted = 1; }
}
#undef MBPO__NC
#undef MBPO__NCCL
#endif /* MBPO_NCCL */

/* the file's own statement macros; the MBPO__CUDA_* constants stay */
#undef MBPO__CUDA_X
#undef MBPO__CUDA_CX
#undef MBPO__CUDA
#undef MBPO__CU
#undef MBPO__LT
#undef MBPO__LAUNCHED
#undef MBPO__FOR
#undef MBPO__EW_LAUNCH

#endif /* MBPO_CUDA_CUH */
