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
mut() {   # name, python replace (old, new; several pairs: joined by a line @@), build flags, test filter, env
    name=$1; old=$2; new=$3; flags=$4; filt=$5; env=$6
    if [ -n "$only" ]; then case " $only " in *" $name "*) ;; *) return ;; esac; fi
    rm -rf build_mut; mkdir build_mut; cp build/mbpo.h build_mut/
    python3 -c "
import sys; s=open('build/mbpo_cuda.cuh').read()
for o, n in zip(sys.argv[1].split('\n@@\n'), sys.argv[2].split('\n@@\n')):
    assert s.count(o)==1, 'pattern count %d' % s.count(o)
    s = s.replace(o, n)
open('build_mut/mbpo_cuda.cuh','w').write(s)" "$old" "$new" || { echo "$name: pattern not found"; return; }
    $CXX $flags '-DEMU_MBPO_H="build_mut/mbpo.h"' -o build_mut/t emu_test.cpp $LIBS || { echo "$name: build failed"; return; }
    env EMU_SMALL=1 $env ./build_mut/t $filt > logs/mut_$name.txt 2>&1
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
# section 13's top-k / top-p and the generation ops (b0bd468's interfaces)
mut sample_topk_keeps_one_more 'keep = top_k > 0 && top_k < n ? top_k : n;' 'keep = top_k > 0 && top_k < n ? top_k + 1 : n;' -DMBPO_CUDA_FP32 sample
mut sample_nucleus_gt 'if (mss >= top_p * kept)' 'if (mss > top_p * kept)' -DMBPO_CUDA_FP32 sample
mut sample_key_ties_to_highest '(mbpo__u64)(0xFFFFFFFFu - (unsigned)i)
@@
return (int64_t)(0xFFFFFFFFu - (unsigned)key);' '(mbpo__u64)(unsigned)i
@@
return (int64_t)(unsigned)key;' -DMBPO_CUDA_FP32 sample
mut sample_sort_last_merge_skipped 'for (kk = 2; kk <= p2; kk <<= 1)' 'for (kk = 2; kk < p2; kk <<= 1)' '' sample
mut sample_gather_misses_kth 'if (key >= kM && key)' 'if (key > kM && key)' -DMBPO_CUDA_FP32 sample
mut sample_select_last_run_lost '        if (cc) { atomicAdd(&h_c[cb], cc); atomicAdd(&h_m[cb], cm); }
        __syncthreads();' '        __syncthreads();' -DMBPO_CUDA_FP32 sample
mut sample_nucleus_estimate_short 'ceil(top_p * 4611686018427387904.0)' 'ceil(0.5 * top_p * 4611686018427387904.0)' -DMBPO_CUDA_FP32 sample
mut sample_fixed_nucleus_by_count 'mbpo__sample_select(pf, V, kf, 1, (mbpo__u64)ceil(' 'mbpo__sample_select(pf, V, kf, 0, (mbpo__u64)ceil(' -DMBPO_CUDA_FP32 sample EMU_SAMPLE_MAXV=20000
mut gen_step_draws_ignored 'if (k.draws) st[MBPO__GS_NU] += live;' 'st[MBPO__GS_NU] += live;' -DMBPO_CUDA_FP32 gen_step
mut kv_append_writes_at_max_len 'if (t < 0 || t >= max_len) return;' 'if (t < 0 || t > max_len) return;' -DMBPO_CUDA_FP32 kv
rm -rf build_mut
