/* emu_gemm.h - EMULATION ONLY: stands in for the cuBLASLt matmul of mbpo__cuda_gemm.
   Included by the generated build/mbpo_cuda.cuh in place of the plan code (mkemu.py).
   out (M, N) (+)= A . B^T (+ bias (N)) with the layouts of mbpo__cuda_gemm's comment:
     A (M, K) at row stride lda, or stored (K, M) at row stride lda when a_t;
     B (N, K) row-major (stride K), or stored (K, N) (stride N) when b_t;
     out float (c_fp32) or mbpo__cx (rounded once, after bias), row stride N.
   Sum order: start from out (accumulate) or 0, add k = 0..K-1, then the bias: the CPU
   mbpo__gemm's order, so the fp32 build can match it bit for bit. cuBLASLt's order (and its
   split-K) differs: nothing here says anything about cuBLASLt's numerics or its layouts;
   what is tested is that the kernels around the GEMMs give it the right pointers/strides. */
static void mbpo__emu_gemm(void *out, int c_fp32, const mbpo__cx *A, int a_t, int64_t lda, const mbpo__cx *B, int b_t,
                           const mbpo__cx *bias, int64_t M, int64_t K, int64_t N, int accumulate) {
    int64_t m, n, k;
    for (m = 0; m < M; m++)
        for (n = 0; n < N; n++) {
            float s;
            if (c_fp32) s = accumulate ? ((float *)out)[m * N + n] : 0.0f;
            else s = accumulate ? mbpo__ld((const mbpo__cx *)out, m * N + n) : 0.0f;
            for (k = 0; k < K; k++) {
                float a = mbpo__ld(A, a_t ? k * lda + m : m * lda + k);
                float b = mbpo__ld(B, b_t ? k * N + n : n * K + k);
                s += a * b;
            }
            if (bias) s += mbpo__ld(bias, n);
            if (c_fp32) ((float *)out)[m * N + n] = s;
            else mbpo__st((mbpo__cx *)out, m * N + n, s);
        }
}
