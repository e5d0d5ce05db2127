#!/bin/sh
# Build and run the emulation test of mbpo_cuda.cuh's non-cuBLAS kernels (see README.md).
#   ./run.sh            everything (about 25 min on 2 cores)
#   ./run.sh quick      the two plain builds only
set -e
cd "$(dirname "$0")"
python3 mkemu.py
CXX="g++ -std=c++17 -g -ffp-contract=off -Wall -Wno-unused-function"
LIBS="-lstb -lm -lpthread"
SAN="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
mkdir -p build logs
if [ "$1" != rest ]; then   # ./run.sh rest: skip the plain builds
$CXX -O2 -DMBPO_CUDA_FP32 -o build/t_fp32 emu_test.cpp $LIBS
$CXX -O2 -o build/t_bf16 emu_test.cpp $LIBS
EMU_BIGN=1 ./build/t_fp32 > logs/fp32.txt 2>&1 || true
EMU_BIGN=1 ./build/t_bf16 > logs/bf16.txt 2>&1 || true
tail -n 1 logs/fp32.txt; tail -n 1 logs/bf16.txt
if [ "$1" = quick ]; then exit 0; fi
fi
# grid-stride loops: at most 3 blocks per launch; the chunked x_upload/x_download (> 32 MiB)
$CXX -O2 -DMBPO_CUDA_FP32 -DEMU_BIG '-DMBPO__CUDA_MAX_BLOCKS=((int64_t)3)' -o build/t_fp32_gs emu_test.cpp $LIBS
$CXX -O2 -DEMU_BIG '-DMBPO__CUDA_MAX_BLOCKS=((int64_t)3)' -o build/t_bf16_gs emu_test.cpp $LIBS
./build/t_fp32_gs > logs/fp32_gridstride.txt 2>&1 || true
./build/t_bf16_gs > logs/bf16_gridstride.txt 2>&1 || true
# AddressSanitizer + UndefinedBehaviorSanitizer (device memory is exact-size malloc, shared arrays too)
$CXX $SAN -DMBPO_CUDA_FP32 -o build/t_fp32_asan emu_test.cpp $LIBS
$CXX $SAN -o build/t_bf16_asan emu_test.cpp $LIBS
./build/t_fp32_asan > logs/fp32_asan.txt 2>&1 || true
./build/t_bf16_asan > logs/bf16_asan.txt 2>&1 || true
# ThreadSanitizer: races between emulated CUDA threads (missing __syncthreads), small shapes
$CXX -O1 -fsanitize=thread -o build/t_bf16_tsan emu_test.cpp $LIBS
$CXX -O1 -fsanitize=thread -DMBPO_CUDA_FP32 -o build/t_fp32_tsan emu_test.cpp $LIBS
EMU_SMALL=1 ./build/t_bf16_tsan norm,embed,head,xcopy,sample > logs/bf16_tsan.txt 2>&1 || true
EMU_SMALL=1 ./build/t_fp32_tsan norm,embed,head > logs/fp32_tsan.txt 2>&1 || true
for f in logs/*.txt; do printf '%-28s %s\n' "$f" "$(tail -n 1 $f)"; grep -c "ERROR: AddressSanitizer\|runtime error\|WARNING: ThreadSanitizer" $f || true; done
