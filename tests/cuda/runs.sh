#!/usr/bin/env bash
# tests/cuda/runs.sh - the programs on the GPU against themselves and the CPU (make test-cuda;
# tests/cuda/device.sh). On the shipped tiny model (demo/tiny-sft) and a small shapes world:
#   1. resume: mbpo-train --device cuda (mode mbpo: rollouts, reference, AdamW on the device),
#      checkpoints every 4 steps, is (a) stopped after step 8 (--steps 8) and rerun with
#      --steps 16, and (b) SIGKILLed after checkpoint-8 appears and rerun; in both the final
#      checkpoint (weights, moments, state) is byte-identical to an uninterrupted run's.
#   2. scoring: mbpo-score --device cuda of the fp32 build gives the CPU's greedy answers on
#      every sample, and its IIG within 1e-3 per token; the bf16 build's IIG is reported
#      (|d iig_mean| per sample, max and mean).
#   3. training: 20 steps of mbpo-train (mode mbpo) on the fp32 build track the CPU's loss
#      and KL: |d loss| <= 1e-3 + 1e-3 |loss| and |d kl| <= 1e-4 + 1e-2 kl at every step (the
#      rollouts are sampled on the host from the same seeds, so fp32 logits draw the same
#      tokens); the bf16 build's are reported.
# Variables: BIN (build/cuda: the bf16 drivers), FP32 (build/cuda-fp32), CPU (build), DEVICE
# (cuda; DEVICE=cpu BIN=build FP32=build runs the mechanics on the CPU), WORK (/tmp/mbpo-runs).
set -u
BIN=${BIN:-build/cuda}; FP32=${FP32:-build/cuda-fp32}; CPU=${CPU:-build}; DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/mbpo-runs}; M=demo/tiny-sft
FAILED=0
rm -rf "$WORK"; mkdir -p "$WORK"
say() { echo "$@"; }
fail() { echo "FAIL $*"; FAILED=1; }
ok() { echo "ok   $*"; }

"$CPU/mbpo-synth" --out "$WORK/world" --train 12 --test 4 --seed 3 > /dev/null || { fail "synth"; exit 1; }
IMG="$WORK/world/images"
"$CPU/mbpo-mine" --model $M --data "$WORK/world/train.jsonl" --image-root "$IMG" --out "$WORK/mined" --top-k 8 \
    --pgd-iters 4 --max-new-tokens 16 --quiet || { fail "mine"; exit 1; }
TRAIN="--model $M --offline $WORK/mined/offline.jsonl --online $WORK/mined/online.jsonl --image-root $IMG --mode mbpo \
  --batch 2 --G 4 --max-new-tokens 16 --lr 1e-4 --iig-every 0 --quiet"

# 1. resume on the device
same_ckpt() {   # same_ckpt A B STEP: the checkpoint's weights, moments and state are the same bytes
    local f r=0
    for f in model.safetensors optimizer.safetensors mbpo_state.json; do
        cmp -s "$1/checkpoint-$3/$f" "$2/checkpoint-$3/$f" || { echo "   checkpoint-$3/$f differs"; r=1; }
    done
    return $r
}
"$BIN/mbpo-train" $TRAIN --device $DEVICE --out "$WORK/full" --steps 16 --save-every 4 || fail "uninterrupted run"
"$BIN/mbpo-train" $TRAIN --device $DEVICE --out "$WORK/stop" --steps 8 --save-every 4 &&
"$BIN/mbpo-train" $TRAIN --device $DEVICE --out "$WORK/stop" --steps 16 --save-every 4 || fail "stop and resume: a run failed"
same_ckpt "$WORK/full" "$WORK/stop" 16 && ok "resume ($DEVICE): stopped at step 8, resumed to 16: checkpoint-16 byte-identical" \
    || fail "resume ($DEVICE): stopped at step 8 and resumed: checkpoint-16 differs from the uninterrupted run's"
"$BIN/mbpo-train" $TRAIN --device $DEVICE --out "$WORK/kill" --steps 16 --save-every 4 & pid=$!
for _ in $(seq 1 3000); do [ -d "$WORK/kill/checkpoint-8" ] && break; kill -0 $pid 2> /dev/null || break; sleep 0.01; done
if kill -9 $pid 2> /dev/null; then
    wait $pid 2> /dev/null
    killed_at=$(ls -d "$WORK"/kill/checkpoint-* 2> /dev/null | sed 's/.*-//' | sort -n | tail -1)
    "$BIN/mbpo-train" $TRAIN --device $DEVICE --out "$WORK/kill" --steps 16 --save-every 4 || fail "resume after SIGKILL failed"
    same_ckpt "$WORK/full" "$WORK/kill" 16 && ok "resume ($DEVICE): SIGKILL with checkpoint-${killed_at:-none} the newest, resumed: checkpoint-16 byte-identical" \
        || fail "resume ($DEVICE) after SIGKILL: checkpoint-16 differs"
else
    wait $pid; fail "resume ($DEVICE): the run ended before it could be killed (make it longer)"
fi

# 2. scoring: greedy answers and IIG against the CPU
for split in test_prior test_counter; do
    "$CPU/mbpo-score" --model $M --data "$WORK/world/$split.jsonl" --image-root "$IMG" --out "$WORK/score-cpu-$split.jsonl" --quiet &&
    "$FP32/mbpo-score" --model $M --data "$WORK/world/$split.jsonl" --image-root "$IMG" --out "$WORK/score-fp32-$split.jsonl" --device $DEVICE --quiet &&
    "$BIN/mbpo-score" --model $M --data "$WORK/world/$split.jsonl" --image-root "$IMG" --out "$WORK/score-bf16-$split.jsonl" --device $DEVICE --quiet \
        || fail "mbpo-score on $split"
done
python3 - "$WORK" <<'PY' || FAILED=1
import json, sys
w = sys.argv[1]
def rows(p):
    return [j for j in (json.loads(l) for l in open(p)) if not j.get("summary")]
bad = 0
for split in ("test_prior", "test_counter"):
    c, f, b = (rows(f"{w}/score-{k}-{split}.jsonl") for k in ("cpu", "fp32", "bf16"))
    same = sum(x["response"] == y["response"] for x, y in zip(c, f))
    di = [abs(x["iig_mean"] - y["iig_mean"]) for x, y in zip(c, f) if x.get("iig_mean") is not None]
    db = [abs(x["iig_mean"] - y["iig_mean"]) for x, y in zip(c, b) if x.get("iig_mean") is not None]
    sb = sum(x["response"] == y["response"] for x, y in zip(c, b))
    good = len(c) == len(f) and same == len(c) and max(di, default=0) <= 1e-3
    bad |= not good
    print(f"{'ok  ' if good else 'FAIL'} score {split}: fp32 greedy answers {same}/{len(c)} equal to the CPU's, "
          f"|d iig_mean| max {max(di, default=0):.2e}; bf16: answers {sb}/{len(c)} equal, |d iig_mean| max "
          f"{max(db, default=0):.3e} mean {sum(db) / max(len(db), 1):.3e}")
sys.exit(bad)
PY

# 3. 20 training steps against the CPU
"$CPU/mbpo-train" $TRAIN --out "$WORK/t-cpu" --steps 20 || fail "train on the CPU"
"$FP32/mbpo-train" $TRAIN --out "$WORK/t-fp32" --steps 20 --device $DEVICE || fail "train, fp32 build"
"$BIN/mbpo-train" $TRAIN --out "$WORK/t-bf16" --steps 20 --device $DEVICE || fail "train, bf16 build"
python3 - "$WORK" <<'PY' || FAILED=1
import json, sys
w = sys.argv[1]
def m(k):
    return [json.loads(l) for l in open(f"{w}/t-{k}/metrics.jsonl")]
c, f, b = m("cpu"), m("fp32"), m("bf16")
def worst(a, key):
    return max((abs((x[key] or 0) - (y[key] or 0)) for x, y in zip(c, a)), default=float("nan"))
good = len(c) == len(f) == 20 and all(abs(x["loss"] - y["loss"]) <= 1e-3 + 1e-3 * abs(x["loss"]) and
                                      abs(x["kl"] - y["kl"]) <= 1e-4 + 1e-2 * x["kl"] for x, y in zip(c, f))
print(f"{'ok  ' if good else 'FAIL'} train 20 steps: fp32 build vs CPU: max |d loss| {worst(f, 'loss'):.2e}, max |d kl| "
      f"{worst(f, 'kl'):.2e}; bf16 build: max |d loss| {worst(b, 'loss'):.3e}, max |d kl| {worst(b, 'kl'):.3e}; "
      f"CPU loss {c[0]['loss']:.4f} -> {c[-1]['loss']:.4f}, kl -> {c[-1]['kl']:.4f}")
sys.exit(0 if good else 1)
PY
[ $FAILED = 0 ] && echo "runs.sh: all passed" || echo "runs.sh: SOME FAILED"
exit $FAILED
