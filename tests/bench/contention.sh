#!/usr/bin/env bash
# The contention benchmark (make bench-contention; issue 17 item 3): mbpo-bench on one model,
# forward and forward + backward, alone, then while a competing CPU load runs in a second
# process, and the slowdown (with load / alone). The target: <= 2.5x with a 2-thread load on
# 2 cores (a fair share of the cores alone would give 2x).
#
#   tests/bench/contention.sh [MODEL_DIR]        (default build/bench_mid; made by bench_torch.py)
#
# mbpo runs alone before the loads and again after them; the slowdown is against the faster of
# the two (the machine's speed drifts; this gives the larger slowdown).
# Environment: THREADS (mbpo-bench's OpenMP threads, 2), LOADS (the competing loads, in turn;
# default "burn mbpo"), LOAD_THREADS (2), ITERS / WARMUP (forward, 10 / 2), BWD_ITERS /
# BWD_WARMUP (forward + backward, 3 / 1), BENCH (build/mbpo-bench), OUT (the result lines,
# build/bench_contention.txt), MAX_S (a competitor is stopped after this many seconds even if
# this script is killed outright, 600).
#   burn  mbpo-bench --burn: LOAD_THREADS threads of register-only FMA chains, never sleeping,
#         touching no memory: a steady compute-bound job.
#   mbpo  a second mbpo-bench, forward + backward on the same model in a loop: another 2-thread
#         training job, with its own OpenMP barriers and memory traffic.
# The competitor is killed when this script ends, fails or is interrupted (trap).
set -euo pipefail

MODEL=${1:-build/bench_mid}
THREADS=${THREADS:-2}
LOADS=${LOADS:-burn mbpo}
LOAD_THREADS=${LOAD_THREADS:-2}
ITERS=${ITERS:-10}
WARMUP=${WARMUP:-2}
BWD_ITERS=${BWD_ITERS:-3}
BWD_WARMUP=${BWD_WARMUP:-1}
BENCH=${BENCH:-build/mbpo-bench}
OUT=${OUT:-build/bench_contention.txt}
MAX_S=${MAX_S:-600}

fail() { echo "contention.sh: $*" >&2; exit 1; }
[ -x "$BENCH" ] || fail "$BENCH not built (make $BENCH)"
[ -f "$MODEL/bench_input.safetensors" ] || fail "$MODEL/bench_input.safetensors missing (tests/reference/bench_torch.py --config mid --model-out $MODEL --make-only)"

comp_pid=""
meas_pid=""
log=$(mktemp)
stop() {   # stop VAR: end the process whose pid VAR holds, if any
    local pid=${!1}
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        printf -v "$1" ''
    fi
}
# Both processes run in the background so that `wait` returns as soon as a signal comes
# (bash runs a trap only after a foreground command ends); background processes of a script
# ignore SIGINT, so a Ctrl-C reaches them only through this trap.
trap 'stop meas_pid; stop comp_pid; rm -f "$log"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# sets m_fwd and m_bwd: ms/iter of the forward and of forward + backward
measure() {
    OMP_NUM_THREADS=$THREADS "$BENCH" --model "$MODEL" --both --iters "$ITERS" --warmup "$WARMUP" \
        --bwd-iters "$BWD_ITERS" --bwd-warmup "$BWD_WARMUP" > "$log" 2>&1 &
    meas_pid=$!
    if ! wait "$meas_pid"; then meas_pid=""; cat "$log" >&2; fail "mbpo-bench failed"; fi
    meas_pid=""
    m_fwd=$(sed -n 's/^mbpo forward: .*, \([0-9.]*\) ms\/iter.*/\1/p' "$log")
    m_bwd=$(sed -n 's/^mbpo fwd+bwd: .*, \([0-9.]*\) ms\/iter.*/\1/p' "$log")
    [ -n "$m_fwd" ] && [ -n "$m_bwd" ] || { cat "$log" >&2; fail "no timing lines from mbpo-bench"; }
}

: > "$OUT"
echo "contention: $MODEL, mbpo-bench with $THREADS threads, OMP_WAIT_POLICY ${OMP_WAIT_POLICY:-unset}, $(nproc) CPUs" | tee -a "$OUT"
measure
alone_f=$m_fwd; alone_b=$m_bwd
echo "contention alone: forward $alone_f ms/iter, fwd+bwd $alone_b ms/iter" | tee -a "$OUT"
with_f=(); with_b=(); descs=()
for load in $LOADS; do
    case $load in
        burn) desc="mbpo-bench --burn, $LOAD_THREADS threads of FMA chains (compute only, never sleeps)"
              OMP_NUM_THREADS=$LOAD_THREADS timeout "$MAX_S" "$BENCH" --burn 0 2>/dev/null & ;;
        mbpo) desc="a second mbpo-bench, $LOAD_THREADS threads, forward + backward of $MODEL in a loop"
              OMP_NUM_THREADS=$LOAD_THREADS timeout "$MAX_S" "$BENCH" --model "$MODEL" --backward --iters 100000 --warmup 0 \
                  > /dev/null & ;;
        *) fail "LOADS: '$load' is neither burn nor mbpo" ;;
    esac
    comp_pid=$!
    sleep 2   # the competitor is up (the mbpo one has loaded its model) before the timing starts
    kill -0 "$comp_pid" 2>/dev/null || fail "the $load competitor did not start"
    measure
    with_f+=("$m_fwd"); with_b+=("$m_bwd"); descs+=("$desc")
    echo "contention with $load: forward $m_fwd ms/iter, fwd+bwd $m_bwd ms/iter" | tee -a "$OUT"
    kill -0 "$comp_pid" 2>/dev/null || fail "the $load competitor ended before the measurement did"
    stop comp_pid
done
# alone once more, after the loads: a shared VM's speed drifts, so the reference is the faster of
# the two alone runs (the larger, more conservative slowdown)
measure
echo "contention alone again: forward $m_fwd ms/iter, fwd+bwd $m_bwd ms/iter" | tee -a "$OUT"
alone_f=$(awk -v a="$alone_f" -v b="$m_fwd" 'BEGIN { print (b < a ? b : a) }')
alone_b=$(awk -v a="$alone_b" -v b="$m_bwd" 'BEGIN { print (b < a ? b : a) }')
i=0
for load in $LOADS; do
    echo "contention load $load: ${descs[$i]}" | tee -a "$OUT"
    for kind in forward fwd+bwd; do
        if [ "$kind" = forward ]; then a=$alone_f; w=${with_f[$i]}; else a=$alone_b; w=${with_b[$i]}; fi
        r=$(awk -v a="$a" -v w="$w" 'BEGIN { printf "%.2f", w / a }')
        verdict=$(awk -v r="$r" 'BEGIN { print (r <= 2.5 ? "within" : "over") }')
        echo "contention $load $kind: alone $a ms/iter, with load $w ms/iter, slowdown ${r}x ($verdict the 2.5x target)" \
            | tee -a "$OUT"
    done
    i=$((i + 1))
done
