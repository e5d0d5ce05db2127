#!/usr/bin/env bash
# tests/cuda/mbpo_bench.sh - the MBPO benchmark (issue 15, item 8): mbpo's programs against the
# transformers implementation of the same work (tests/reference/mbpo_hf.py), on one GPU. From the
# repository root:
#     bash tests/cuda/mbpo_bench.sh                 # GPU: Qwen2-VL-2B, random weights, 448x448, 128 tokens
#     DEVICE=cpu bash tests/cuda/mbpo_bench.sh      # smoke test: build/mbpo-*, a tiny model, 112x112, 16 tokens
#
# 1. the model folder: qwen2vl_2b_random.py --out (transformers' random 2B, seed 7001) plus the Qwen2
#    tokenizer, chat template and a preprocessor config; or MODEL=DIR (e.g. the folder device.sh's
#    ref_2b step made: linked, not copied); DEVICE=cpu: mbpo-synth --model-out (hidden 64, 2 layers)
# 2. the inputs: mbpo_hf.py --make-data (the ones mbpo_hf.py makes in memory): offline.jsonl (2 pairs,
#    responses of NEW tokens with <|im_end|>), online.jsonl (2 yes/no prompts), mine.jsonl (8 open-ended
#    samples), SIZE x SIZE PNG images
# 3. mbpo: mbpo-train --mode mbpo --batch 4 --G 8 (every batch is the whole pool: 2 pairs + 2 prompts)
#    for STEPS steps (the first is not timed), mbpo-mine --pgd-iters 20 --top-k PAIRS (IIG of the 8
#    samples, then PGD + one rejected response each); nvidia-smi samples memory.used meanwhile
# 4. transformers: mbpo_hf.py on the same model folder (config, tokenizer; the same random weights)
# 5. the table: mbpo_hf.py --report (lines `mbpo <name> <value>` too)
# Every step is bounded by `timeout` within BUDGET seconds (default 420 on the GPU, 300 on the CPU); a
# failing step does not stop the rest, the script then exits non-zero. Logs in WORK (/tmp/mbpo-bench).
set -u
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/mbpo-bench}
PY=${PYTHON:-python3}
JOBS=${JOBS:-16}
THREADS=${THREADS:-$(nproc)}
CONFIG=${CONFIG:-tests/reference/configs/qwen2vl_2b.json}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
PEAK_GBS=${PEAK_GBS:-4800}
MODEL=${MODEL:-}
if [ "$DEVICE" = cuda ]; then
    BIN=build/cuda; BUDGET=${BUDGET:-420}; SIZE=${SIZE:-448}; NEW=${NEW:-128}; STEPS=${STEPS:-4}; PAIRS=${PAIRS:-2}
    HF_ITERS=${HF_ITERS:-3}
else
    BIN=build; BUDGET=${BUDGET:-300}; SIZE=${SIZE:-112}; NEW=${NEW:-16}; STEPS=${STEPS:-3}; PAIRS=${PAIRS:-2}
    HF_ITERS=${HF_ITERS:-2}
fi
START=$(date +%s)
FAILED=0
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS="$THREADS"
rm -rf "$WORK/train" "$WORK/mine" "$WORK/data" "$WORK"/*.log "$WORK"/mem_*.txt
mkdir -p "$WORK"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# step NAME MAX_SECONDS COMMAND...: timeout min(MAX, time left - 5), output to $WORK/NAME.log;
# on the GPU nvidia-smi writes memory.used (MiB) every 100 ms to $WORK/mem_NAME.txt meanwhile
step() {
    local name=$1 max=$2; shift 2
    local l; l=$(( $(left) - 5 ))
    local lim=$(( max < l ? max : l ))
    if [ "$lim" -lt 10 ]; then echo "== $name: SKIPPED (budget spent)"; FAILED=1; return 1; fi
    echo "== $name (timeout ${lim}s): $*"
    local mon=""
    if [ "$DEVICE" = cuda ] && command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 > "$WORK/mem_$name.txt" 2>/dev/null &
        mon=$!
        sleep 0.3   # the first sample: memory.used before the program
    fi
    local t0; t0=$(date +%s)
    timeout -k 5 "$lim" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    [ -n "$mon" ] && kill "$mon" 2> /dev/null && wait "$mon" 2> /dev/null
    tail -n 3 "$WORK/$name.log" | sed 's/^/   | /'
    if [ $rc -ne 0 ]; then
        FAILED=1
        [ $rc -eq 124 ] && echo "   $name: TIMED OUT after ${lim}s" || echo "   $name: FAILED (rc $rc)"
    fi
    echo "   $name: $(( $(date +%s) - t0 )) s"
    return $rc
}

# 0. the programs
if [ ! -x "$BIN/mbpo-train" ] || [ ! -x "$BIN/mbpo-mine" ] || [ ! -x "$BIN/mbpo-synth" ]; then
    if [ "$DEVICE" = cuda ]; then step build 300 make -j"$JOBS" cuda
    else step build 300 make -j"$JOBS" build/mbpo-train build/mbpo-mine build/mbpo-synth; fi
fi

# 1. the model folder
M=$WORK/model
MADE_MODEL=0
rm -rf "$M"
if [ -n "$MODEL" ]; then   # link its files, so nothing is copied or changed there
    mkdir -p "$M"
    for f in "$MODEL"/*; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$M/"; done
elif [ "$DEVICE" = cuda ]; then
    step model 150 "$PY" tests/reference/qwen2vl_2b_random.py --config "$CONFIG" --out "$M" && MADE_MODEL=1
else
    step model 60 "$BIN/mbpo-synth" --model-out "$M" --hidden 64 --layers 2 --seed 1
fi
if [ -e "$M/config.json" ] && [ ! -e "$M/tokenizer.json" ]; then   # the Qwen2 tokenizer of Qwen2-VL-2B-Instruct
    cp tests/fixtures/tokenizer/tokenizer.json tests/fixtures/tokenizer/tokenizer_config.json \
       tests/fixtures/tokenizer/chat_template.json "$M/"
fi
if [ -e "$M/config.json" ] && [ ! -e "$M/preprocessor_config.json" ]; then   # Qwen2-VL-2B-Instruct's values
    cp tests/configs/Qwen2-VL-2B-Instruct/preprocessor_config.json "$M/"
fi

# 2. the inputs
D=$WORK/data
step data 90 "$PY" tests/reference/mbpo_hf.py --make-data "$D" --model "$M" --image-size "$SIZE" --new-tokens "$NEW" \
    --offline 2 --online 2 --mine-samples 8

# 3. mbpo
if [ -e "$D/offline.jsonl" ]; then
    step train 200 "$BIN/mbpo-train" --model "$M" --offline "$D/offline.jsonl" --online "$D/online.jsonl" \
        --image-root "$D/images" --out "$WORK/train" --mode mbpo --batch 4 --G 8 --temperature 1 \
        --max-new-tokens "$NEW" --steps "$STEPS" --iig-every 0 --final-weights-only --save-dtype bf16 --device "$DEVICE"
    rm -rf "$WORK"/train/checkpoint-*   # 4.4 GB at 2B
    step mine 150 "$BIN/mbpo-mine" --model "$M" --data "$D/mine.jsonl" --image-root "$D/images" --out "$WORK/mine" \
        --top-k "$PAIRS" --pgd-iters 20 --max-new-tokens "$NEW" --max-tries 1 --device "$DEVICE"
else
    echo "== train, mine: skipped (no data)"; FAILED=1
fi

# 4. transformers
if [ "$DEVICE" = cuda ]; then HF_DEV=(--device cuda); else HF_DEV=(--device cpu --threads "$THREADS"); fi
step hf 300 "$PY" tests/reference/mbpo_hf.py "${HF_DEV[@]}" --model "$M" --image-size "$SIZE" --new-tokens "$NEW" \
    --G 8 --offline 2 --online 2 --iters "$HF_ITERS" --warmup 1 --pgd-iters 20 --pgd-samples 2 --iig-batch 8 \
    --peak-tflops "$PEAK_TFLOPS" --load-weights

# 5. the table
[ "$MADE_MODEL" = 1 ] && [ "${KEEP_MODEL:-0}" != 1 ] && rm -f "$M"/*.safetensors   # 4.4 GB; config and tokenizer stay
"$PY" tests/reference/mbpo_hf.py --report "$WORK" --G 8 --peak-tflops "$PEAK_TFLOPS" --peak-gbs "$PEAK_GBS" \
    | tee "$WORK/report.txt"
echo "mbpo_bench: $( [ $FAILED = 0 ] && echo "all steps ok" || echo "SOME STEP FAILED" ), $(( $(date +%s) - START )) s (logs in $WORK)"
exit $FAILED
