/* mbpo_cuda.cuh - the CUDA unit of mbpo.h.

   STATUS: interface only. No kernel is implemented yet; nothing here has run on a GPU.
   A build of mbpo.h with MBPO_CUDA stops at the #error below, on purpose, rather than
   silently running the CPU ops. What nvcc builds today is mbpo.h itself (as CUDA C++, host
   code) and this interface (`make check-nvcc`).

   THE CONTRACT. When mbpo.h is compiled by nvcc with MBPO_CUDA, the CPU ops of its layer 3
   are left out and this file must define the same functions, with the same names, argument
   order and meaning, on device pointers (bf16 storage and cuBLASLt matmuls with fp32
   accumulation in the default build; an fp32 build for parity against the CPU path):

     mbpo__gemm(out, A, a_t, B, b_t, bias, M, K, N, accumulate)     out (M,N) (+)= A . B^T (+ bias)
     mbpo__matmul_forward(out, inp, w, bias, N, C, OC)               out (N,OC) = inp (N,C) w^T + b
     mbpo__matmul_backward(dinp, dw, dbias, dout, inp, w, N, C, OC)  dinp, dw, dbias +=
     mbpo__layernorm_forward / _backward                             LayerNorm, eps given
     mbpo__rmsnorm_forward / _backward                               RMSNorm (x * rstd) * w
     mbpo__quick_gelu_forward / _backward, mbpo__gelu_forward / _backward,
     mbpo__swiglu_forward / _backward                                elementwise
     mbpo__rope_apply(x, cos, sin, N, nh, HS, stride, sign)          rotate-half, in place
     mbpo__attention_forward / _backward                             one segment, causal or not,
                                                                     GQA; lse saved (flash style)
     mbpo__logsoftmax_gather_forward / _backward                     fused head epilogue
     mbpo__dot(a, b, n)                                              (host helper of attention)

   Every CUDA call and kernel launch goes through MBPO_CUDA_CHECK, which sets the failure
   reason (file, line, CUDA error string) instead of exiting, like the rest of the library.
   CUDA vs CPU tolerances will be fp32: 1e-5 relative per op; bf16: 2e-2 relative. */
#ifndef MBPO_CUDA_CUH
#define MBPO_CUDA_CUH

#include <cuda_runtime.h>
#include <stdio.h>

/* Evaluate a CUDA runtime call; on error, record where and why and return 0 from the
   enclosing function (which must return int). */
#define MBPO_CUDA_CHECK(call)                                                                   \
    do {                                                                                        \
        cudaError_t mbpo_cuda_err_ = (call);                                                    \
        if (mbpo_cuda_err_ != cudaSuccess) {                                                    \
            snprintf(mbpo_cuda_last_error, sizeof mbpo_cuda_last_error, "%s:%d: %s: %s",       \
                     __FILE__, __LINE__, #call, cudaGetErrorString(mbpo_cuda_err_));            \
            return 0;                                                                           \
        }                                                                                       \
    } while (0)

static char mbpo_cuda_last_error[512];

/* Device properties the backend will size its launches by; the one piece of host code
   that exists today, so the interface compiles and links against the CUDA runtime. */
static int mbpo_cuda_device_info(int device, char *name, size_t name_size, size_t *global_mem) {
    cudaDeviceProp prop;
    MBPO_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    snprintf(name, name_size, "%s", prop.name);
    *global_mem = prop.totalGlobalMem;
    return 1;
}

#if defined(MBPO_IMPLEMENTATION) && defined(MBPO_CUDA)
#error "MBPO_CUDA: the CUDA kernels are not written yet (mbpo_cuda.cuh is interface only); build without MBPO_CUDA to use the CPU path"
#endif

#endif /* MBPO_CUDA_CUH */
