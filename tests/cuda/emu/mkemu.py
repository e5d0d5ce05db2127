#!/usr/bin/env python3
"""Generate build/mbpo.h (a verbatim copy of mbpo.h) and build/mbpo_cuda.cuh (a
host-C++ rewrite of mbpo_cuda.cuh for emu_cuda.h), so that
    #include "build/mbpo.h"   with MBPO_CUDA and MBPO_IMPLEMENTATION
gives the CPU table and the emulated CUDA table in one translation unit.

Rewrites (each must match exactly the expected number of times, or this script fails):
  1. the three CUDA includes -> nothing (emu_cuda.h is included first by the test);
  2. MBPO__CUDA_MAX_BLOCKS wrapped in #ifndef, so a build can shrink it (grid-stride test);
  3. kernel<<<cfg>>>(args) -> mbpo__emu_launch("kernel", cfg).run(kernel, args);
  4. static `__shared__ T name[n];` -> `T *name = mbpo__emu_shared<T>(n);`;
  5. cuBLASLt planning (mbpo__cuda_align .. mbpo__cuda_plan_get) removed, and the matmul call
     in mbpo__cuda_gemm replaced by mbpo__emu_gemm (emu_gemm.h, a plain host GEMM);
  6. section 11 (attention; tested by the attention unit's own emulation (not kept)) replaced by stubs that fail;
     sections 12 (optimizer: sumsq, adamw), 13 (sampling, gen_step), 14 (PGD), 15 (graphs: emu_cuda.h's
     capture always fails) and the table after them are kept."""
import re, sys, os, shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..', '..'))   # the repository
SRC = os.path.join(ROOT, 'mbpo_cuda.cuh')
OUT = os.path.join(HERE, 'build')
os.makedirs(OUT, exist_ok=True)
src = open(SRC).read()


def sub(pat, rep, s, count_expected=None, flags=0, what=''):
    s2, n = re.subn(pat, rep, s, flags=flags)
    if count_expected is not None and n != count_expected:
        sys.exit('mkemu: %s matched %d times, expected %d' % (what or pat, n, count_expected))
    sys.stderr.write('mkemu: %-28s %d\n' % (what, n))
    return s2


src = sub(r'#include <(cuda_runtime|cuda_bf16|cublasLt)\.h>\n', '', src, 3, what='cuda includes')
src = sub(r'(#define MBPO__CUDA_MAX_BLOCKS [^\n]*\n)', r'#ifndef MBPO__CUDA_MAX_BLOCKS\n\1#endif\n', src, 1,
          what='MAX_BLOCKS guard')

# 6. section 11 out (before the launch rewrite: its launches are templates), up to section 12
m1 = src.index('/* ------------------------------------------------------------------ 11. attention')
m2 = src.index('/* ------------------------------------------------------------------ 12. optimizer')
stubs = '''/* 11. attention: not emulated here (see the attention unit's own emulation (not kept)) */
static int mbpo__cuda_attention_forward(mbpo_backend *, mbpo_x *, float *, const mbpo_x *, const mbpo_x *,
        const mbpo_x *, const int64_t *, const int64_t *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int) {
    return mbpo__fail("attention: not emulated"); }
static int mbpo__cuda_attention_backward(mbpo_backend *, mbpo_x *, mbpo_x *, mbpo_x *, const mbpo_x *, const mbpo_x *,
        const float *, const mbpo_x *, const mbpo_x *, const mbpo_x *, const int64_t *, const int64_t *, int64_t, int64_t,
        int64_t, int64_t, int64_t, int64_t, int64_t, int) { return mbpo__fail("attention: not emulated"); }
static int mbpo__cuda_attention_decode(mbpo_backend *, mbpo_x *, const mbpo_x *, const mbpo_x *, const mbpo_x *,
        int64_t, const int64_t *, int64_t, int64_t, int64_t, int64_t) { return mbpo__fail("attention: not emulated"); }

'''
src = src[:m1] + stubs + src[m2:]

# 5. cuBLASLt planning out, GEMM replaced
a1 = src.index('static unsigned mbpo__cuda_align(const void *p) {')
a2 = src.index('/* out (M, N) = bias or 0, for K == 0')
src = src[:a1] + '#include "../emu_gemm.h"   /* replaces cuBLASLt planning and matmul */\n' + src[a2:]
src = sub(r'    p = mbpo__cuda_plan_get\(c, M, K, N, lda, a_t, b_t, bias != NULL, c_fp32, A, B, out\);.*?'
          r'c->workspace, c->workspace_size, c->stream\)\);\n',
          '    (void)p; (void)alpha; (void)beta;\n'
          '    mbpo__emu_gemm(out, c_fp32, A, a_t, lda, B, b_t, bias, M, K, N, accumulate);   /* EMULATION: host GEMM */\n',
          src, 1, flags=re.S, what='gemm call')

# 3. launches. In the MBPO__EW_LAUNCH macro the kernel is the macro parameter `kernel`.
def launch(m):
    k, cfg = m.group(1), m.group(2)
    name = '#kernel' if k == 'kernel' else '"%s"' % k
    return 'mbpo__emu_launch(%s, %s).run(%s, ' % (name, cfg, k)
# 25: sections 2-10 (21), the two sumsq passes (adamw launches through MBPO__EW_LAUNCH), sample, gen_step
src = sub(r'(\w+(?:<\w+>)?)<<<(.*?)>>>\(', launch, src, 25, flags=re.S, what='launches')
if '<<<' in src:
    sys.exit('mkemu: a launch was not rewritten')

# 4. static shared arrays
# 14: the embedding's staged metadata (2), the head's block reductions (1), the two sumsq trees (2),
# sample's trees, starts, histograms, selection state and sort keys (9)
src = sub(r'__shared__ (\w+) (\w+)\[([^\]]+)\];', r'\1 *\2 = mbpo__emu_shared<\1>(\3);', src, 14, what='static shared')
# 1: gen_step's scalar (a reference to a one-element array)
src = sub(r'__shared__ (\w+) (\w+);', r'\1 &\2 = *mbpo__emu_shared<\1>(1);', src, 1, what='static shared scalars')
if '__shared__' in src:
    sys.exit('mkemu: a __shared__ declaration was not rewritten (dynamic shared memory is not supported here)')
if 'cublasLtMatmul(' in src or 'cublasLtMatmulDescSetAttribute' in src:
    sys.exit('mkemu: cuBLASLt calls remain')

open(os.path.join(OUT, 'mbpo_cuda.cuh'), 'w').write(
    '/* generated by tests/cuda/emu/mkemu.py from mbpo_cuda.cuh: do not edit */\n' + src)
shutil.copyfile(os.path.join(ROOT, 'mbpo.h'), os.path.join(OUT, 'mbpo.h'))
