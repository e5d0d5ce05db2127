#!/bin/sh
# Negative controls: plant one bug at a time in a copy of the generated file and check that
# the emulation test (or ThreadSanitizer) catches it. Run after mkemu.py.
#   ./mutate.sh                 every mutant
#   ./mutate.sh NAME...         only these (e.g. ./mutate.sh adamw_no_bias_correction1)
cd "$(dirname "$0")"
only="$*"
CXX="g++ -std=c++17 -O1 -g -ffp-contract=off -w"
LIBS="-lstb -lm -lpthread"
mkdir -p logs
mut() {   # name, python replace (old, new), build flags, test filter, env
    name=$1; old=$2; new=$3; flags=$4; filt=$5
    if [ -n "$only" ]; then case " $only " in *" $name "*) ;; *) return ;; esac; fi
    rm -rf build_mut; mkdir build_mut; cp build/mbpo.h build_mut/
    python3 -c "
import sys; s=open('build/mbpo_cuda.cuh').read(); o=sys.argv[1]; n=sys.argv[2]
assert s.count(o)==1, 'pattern count %d' % s.count(o)
open('build_mut/mbpo_cuda.cuh','w').write(s.replace(o,n).replace('../emu_gemm.h','../emu_gemm.h'))" "$old" "$new" || { echo "$name: pattern not found"; return; }
    $CXX $flags '-DEMU_MBPO_H="build_mut/mbpo.h"' -o build_mut/t emu_test.cpp $LIBS || { echo "$name: build failed"; return; }
    EMU_SMALL=1 ./build_mut/t $filt > logs/mut_$name.txt 2>&1
    rc=$?
    nf=$(grep -c "^FAIL" logs/mut_$name.txt); nt=$(grep -c "WARNING: ThreadSanitizer" logs/mut_$name.txt)
    echo "$name: rc=$rc, $nf FAIL lines, $nt TSan warnings -> $( [ $rc -ne 0 ] && echo caught || echo MISSED)"
}
mut ln_bwd_write_not_acc 'mbpo__st(dinp, row * C + i, mbpo__ld(dinp, row * C + i) + r * (' 'mbpo__st(dinp, row * C + i, 0.0f + r * (' -DMBPO_CUDA_FP32 norm
mut colsum_write_not_acc 'if (w) w[i] += sw;' 'if (w) w[i] = sw;' -DMBPO_CUDA_FP32 norm
mut rope_ignores_stride 'mbpo__cx *v = x + n * stride + h * HS;' 'mbpo__cx *v = x + n * nh * HS + h * HS;' -DMBPO_CUDA_FP32 rotary
mut dz_no_barrier '        __syncthreads();
        if (j < V) mbpo__st(dz, j, v);' '        if (j < V) mbpo__st(dz, j, v);' -fsanitize=thread head
mut embed_no_tile_barrier '        __syncthreads();                             /* the previous tile is consumed */' '' -fsanitize=thread embed
mut embed_shared_too_small 'int64_t *s_fr = mbpo__emu_shared<int64_t>(MBPO__CUDA_THREADS);' 'int64_t *s_fr = mbpo__emu_shared<int64_t>(MBPO__CUDA_THREADS / 2);' -fsanitize=address embed
mut gelu_bwd_missing_dout 'mbpo__st(dinp, i, mbpo__ld(dout, i) * (cdf + x * pdf));' 'mbpo__st(dinp, i, (cdf + x * pdf));' -DMBPO_CUDA_FP32 ew
mut adamw_no_bias_correction1 '(mi / k.bc1)' 'mi' -DMBPO_CUDA_FP32 optim
mut sumsq_drops_last_partial 'for (int64_t b = threadIdx.x; b < nb; b += MBPO__CUDA_THREADS)' 'for (int64_t b = threadIdx.x; b < nb - 1; b += MBPO__CUDA_THREADS)' '' optim
mut sample_ties_to_highest 'return v > w || (v == w && i < j);' 'return v > w || (v == w && i > j);' -DMBPO_CUDA_FP32 sample
mut sample_walk_le 'if (walk && target < acc) break;' 'if (walk && target <= acc) break;' '' sample
rm -rf build_mut
