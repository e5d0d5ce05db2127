#!/usr/bin/env bash
# tests/cuda/nccl1.sh - data parallelism's plumbing on one GPU (tests/cuda/device.sh; issue 16
# item 6): mbpo-train --device cuda through NCCL with one rank (MBPO_COMM=nccl: the shards,
# the in-place reduce, the norm's all-reduce, the gather of the weights and of the checkpoint's
# state all go through NCCL) against the build without NCCL: 8 steps of mode mbpo on the tiny
# model, every file of every checkpoint byte for byte (one rank through NCCL sums, updates and
# gathers the same values in the same order). Variables: NCCL (build/nccl), BIN (build/cuda),
# CPU (build), WORK (/tmp/mbpo-nccl1).
set -u
NCCL=${NCCL:-build/nccl}; BIN=${BIN:-build/cuda}; CPU=${CPU:-build}; WORK=${WORK:-/tmp/mbpo-nccl1}; M=demo/tiny-sft
rm -rf "$WORK"; mkdir -p "$WORK"
"$CPU/mbpo-synth" --out "$WORK/world" --train 8 --test 2 --seed 4 > /dev/null || { echo "FAIL synth"; exit 1; }
IMG="$WORK/world/images"
"$CPU/mbpo-mine" --model $M --data "$WORK/world/train.jsonl" --image-root "$IMG" --out "$WORK/mined" --top-k 4 \
    --pgd-iters 2 --max-new-tokens 12 --quiet || { echo "FAIL mine"; exit 1; }
TRAIN="--model $M --offline $WORK/mined/offline.jsonl --online $WORK/mined/online.jsonl --image-root $IMG --mode mbpo \
  --batch 1 --grad-accum 2 --G 4 --max-new-tokens 12 --lr 1e-4 --iig-every 2 --steps 8 --save-every 4 --quiet --device cuda"
"$BIN/mbpo-train" $TRAIN --out "$WORK/plain" || { echo "FAIL the build without NCCL"; exit 1; }
MBPO_COMM=nccl "$NCCL/mbpo-train" $TRAIN --out "$WORK/nccl" || { echo "FAIL one rank through NCCL"; exit 1; }
r=0
for f in $(cd "$WORK/plain" && find . -path './checkpoint-*' -type f | sort); do
    cmp -s "$WORK/plain/$f" "$WORK/nccl/$f" || { echo "   $f differs"; r=1; }
done
if [ $r = 0 ]; then echo "ok   one rank through NCCL = the build without it: 8 steps, 2 checkpoints, bit for bit"
else echo "FAIL one rank through NCCL differs from the build without it"; fi
exit $r
