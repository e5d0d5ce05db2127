#!/usr/bin/env bash
# tests/mpi/run.sh - data parallelism over OpenMPI on the CPU (make test-mpi; .ci/run). On the
# shipped tiny model (demo/tiny-sft) and a small shapes world, mbpo-train --mode mbpo (offline
# pairs and online rollouts, the reference, 4 micro-batches of one prompt per step):
#   1. the same bits at every world size: 2, 3 (uneven: rounds of 3 and 1 micro-batches) and 4
#      ranks against one process with --exact-accum: every file of every checkpoint (weights,
#      moments, state) byte for byte, and metrics.jsonl without its timings;
#   2. resume at another world size: 2 ranks to step 4, then 4 ranks to step 8 = the reference;
#   3. a rank SIGKILLed after checkpoint-4: the job ends (mpirun notices at once and names the
#      rank), no checkpoint is left half-written, and the same command resumes to the reference;
#   4. a rank stopped (SIGSTOP, a hang): the others give up after --comm-timeout 5 s, naming
#      that rank, and the job ends;
#   5. mbpo-mine split over 2 and 3 ranks: every output file (iig.jsonl, offline.jsonl,
#      skipped.jsonl, online.jsonl, the adversarial PNGs, the exports, run.json) byte-identical
#      to one process's.
# # One OpenMP thread per rank everywhere (the CPU ops give the same bits for the same thread
# count). Variables: MPI (build/mpi), CPU (build), WORK (/tmp/mbpo-mpi), NP_FLAGS (mpirun's).
set -u
MPI=${MPI:-build/mpi}; CPU=${CPU:-build}; WORK=${WORK:-/tmp/mbpo-mpi}; M=demo/tiny-sft
# as root (CI) OpenMPI wants --allow-run-as-root; 4 ranks on 2 cores need --oversubscribe
NP_FLAGS=${NP_FLAGS:---allow-run-as-root --oversubscribe --mca btl self,vader}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
FAILED=0
rm -rf "$WORK"; mkdir -p "$WORK"
fail() { echo "FAIL $*"; FAILED=1; }
ok() { echo "ok   $*"; }
run_np() { local np=$1; shift; mpirun -np "$np" $NP_FLAGS -x OMP_NUM_THREADS -x OMP_WAIT_POLICY "$@"; }

"$CPU/mbpo-synth" --out "$WORK/world" --train 10 --test 2 --seed 5 > /dev/null || { fail "synth"; exit 1; }
IMG="$WORK/world/images"
"$CPU/mbpo-mine" --model $M --data "$WORK/world/train.jsonl" --image-root "$IMG" --out "$WORK/mined" --top-k 6 \
    --pgd-iters 3 --max-new-tokens 12 --quiet || { fail "mine"; exit 1; }
TRAIN="--model $M --offline $WORK/mined/offline.jsonl --online $WORK/mined/online.jsonl --image-root $IMG --mode mbpo \
  --batch 1 --grad-accum 4 --G 3 --max-new-tokens 10 --lr 1e-4 --iig-every 2 --save-every 2 --quiet"

same_run() {   # same_run A B: every checkpoint file the same bytes, the metrics the same but for timings
    local f r=0
    for f in $(cd "$1" && find . -path './checkpoint-*' -type f | sort); do
        cmp -s "$1/$f" "$2/$f" || { echo "   $f differs"; r=1; }
    done
    [ -n "$(cd "$1" && find . -path './checkpoint-*' -type f)" ] || { echo "   $1 has no checkpoint"; r=1; }
    diff <(sed 's/, "tokens_per_s": [0-9.e+-]*//; s/, "time_[a-z_]*": [0-9.e+-]*//g' "$1/metrics.jsonl") \
         <(sed 's/, "tokens_per_s": [0-9.e+-]*//; s/, "time_[a-z_]*": [0-9.e+-]*//g' "$2/metrics.jsonl") > /dev/null ||
        { echo "   metrics.jsonl differs"; r=1; }
    return $r
}

# 1. the same bits at every world size
"$MPI/mbpo-train" $TRAIN --steps 8 --exact-accum --out "$WORK/ref" 2> "$WORK/ref.log" || { fail "reference run"; cat "$WORK/ref.log"; exit 1; }
for np in 2 3 4; do
    if ! run_np $np "$MPI/mbpo-train" $TRAIN --steps 8 --out "$WORK/np$np" > "$WORK/np$np.log" 2>&1; then
        fail "$np ranks: the run failed"; tail -5 "$WORK/np$np.log"
    elif same_run "$WORK/ref" "$WORK/np$np"; then ok "$np ranks = one process with --exact-accum: 8 steps, 4 checkpoints, bit for bit"
    else fail "$np ranks differ from one process"; fi
done
# fewer micro-batches than ranks: rank 1 owns a shard but collects nothing
TRAIN1=$(echo "$TRAIN" | sed 's/--grad-accum 4/--grad-accum 1/')
"$MPI/mbpo-train" $TRAIN1 --steps 4 --exact-accum --out "$WORK/ref1" 2> /dev/null
if run_np 2 "$MPI/mbpo-train" $TRAIN1 --steps 4 --out "$WORK/np2a1" > "$WORK/np2a1.log" 2>&1 && same_run "$WORK/ref1" "$WORK/np2a1"; then
    ok "2 ranks, 1 micro-batch a step (rank 1 owns a shard, collects nothing) = one process"
else fail "2 ranks with 1 micro-batch a step"; tail -3 "$WORK/np2a1.log"; fi
"$MPI/mbpo-train" $TRAIN --steps 8 --out "$WORK/plain" 2> /dev/null
if cmp -s "$WORK/ref/checkpoint-8/model.safetensors" "$WORK/plain/checkpoint-8/model.safetensors"; then
    echo "     (one process without --exact-accum gives the same weights here)"
else
    echo "     (one process without --exact-accum: other weights, as documented - the micro-batches summed inside the backward)"
fi

# 2. resume at another world size
run_np 2 "$MPI/mbpo-train" $TRAIN --steps 4 --out "$WORK/grow" > "$WORK/grow.log" 2>&1 &&
    run_np 4 "$MPI/mbpo-train" $TRAIN --steps 8 --out "$WORK/grow" >> "$WORK/grow.log" 2>&1
if same_run "$WORK/ref" "$WORK/grow"; then ok "2 ranks to step 4, then 4 ranks to step 8 = the reference"
else fail "resume at another world size"; tail -5 "$WORK/grow.log"; fi

# ranks that see different files (out_dir not shared): rank 1 finds a checkpoint rank 0 does not
mkdir -p "$WORK/split0" && cp -r "$WORK/ref" "$WORK/split1" && rm -rf "$WORK"/split1/checkpoint-[68] "$WORK/split1/checkpoint-4"
if run_np 2 sh -c 'exec "$0" "$@" --out "'"$WORK"'/split$OMPI_COMM_WORLD_RANK"' "$MPI/mbpo-train" $TRAIN --steps 8 --exact-accum \
        > "$WORK/split.log" 2>&1; then fail "ranks with different out_dirs were not refused"
elif grep -q "rank 1 sees another checkpoint" "$WORK/split.log"; then ok "ranks that see different checkpoints: refused, naming rank 1"
else fail "ranks with different out_dirs: not the expected message"; tail -3 "$WORK/split.log"; fi

rank_pid() {   # rank_pid OUT R: the pid of rank R of the run writing OUT
    local p
    for p in $(pgrep -f "mbpo-train .*--out $1"); do
        [ "$(tr '\0' '\n' < /proc/$p/environ 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')" = "$2" ] && { echo $p; return; }
    done
}
wait_for() {   # wait_for FILE SECONDS
    local i
    for i in $(seq 1 $((10 * $2))); do [ -e "$1" ] && return 0; sleep 0.1; done
    return 1
}

# 3. a rank killed
run_np 2 "$MPI/mbpo-train" $TRAIN --steps 40 --out "$WORK/kill" > "$WORK/kill.log" 2>&1 &
JOB=$!
if wait_for "$WORK/kill/checkpoint-4/mbpo_state.json" 60; then
    P=$(rank_pid "$WORK/kill" 1); T0=$(date +%s.%N)
    [ -n "$P" ] && kill -9 "$P"
    wait $JOB; RC=$?; DT=$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.1f", a - b }')
    if [ $RC -ne 0 ] && grep -q "rank 1" "$WORK/kill.log"; then
        ok "rank 1 SIGKILLed: the job ended with rc $RC after $DT s, mpirun names rank 1"
    else fail "killed rank: rc $RC"; tail -5 "$WORK/kill.log"; fi
    if ls -d "$WORK"/kill/checkpoint-*.tmp* > /dev/null 2>&1; then echo "     (a temporary checkpoint directory was left; the resume removes it)"; fi
    run_np 2 "$MPI/mbpo-train" $TRAIN --steps 12 --out "$WORK/kill" >> "$WORK/kill.log" 2>&1 || true
    # (--steps may change on a resume; the schedule is constant, so checkpoint-8 is the reference's)
    if [ -e "$WORK/kill/checkpoint-8/model.safetensors" ] &&
       cmp -s "$WORK/ref/checkpoint-8/model.safetensors" "$WORK/kill/checkpoint-8/model.safetensors" &&
       cmp -s "$WORK/ref/checkpoint-8/optimizer.safetensors" "$WORK/kill/checkpoint-8/optimizer.safetensors"; then
        ok "resumed after the kill: checkpoint-8 = the reference's"
    else fail "resume after the kill"; tail -5 "$WORK/kill.log"; fi
else fail "killed rank: no checkpoint-4 within 60 s"; kill $JOB 2> /dev/null; wait $JOB 2> /dev/null; tail -5 "$WORK/kill.log"; fi

# 4. a rank hung
run_np 2 "$MPI/mbpo-train" $TRAIN --steps 40 --comm-timeout 5 --out "$WORK/hang" > "$WORK/hang.log" 2>&1 &
JOB=$!
if wait_for "$WORK/hang/checkpoint-2/mbpo_state.json" 60; then
    P=$(rank_pid "$WORK/hang" 1); T0=$(date +%s.%N)
    [ -n "$P" ] && kill -STOP "$P"
    ( sleep 60; kill -9 "$P" 2> /dev/null ) & GUARD=$!
    wait $JOB; RC=$?; DT=$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.1f", a - b }')
    kill -9 "$P" 2> /dev/null; kill $GUARD 2> /dev/null
    if [ $RC -ne 0 ] && grep -q "waited 5 s for rank 1" "$WORK/hang.log" && awk -v d="$DT" 'BEGIN { exit !(d < 30) }'; then
        ok "rank 1 stopped: rank 0 gave up after the 5 s timeout naming rank 1; the job ended in $DT s (rc $RC)"
    else fail "hung rank: rc $RC after $DT s"; tail -5 "$WORK/hang.log"; fi
else fail "hung rank: no checkpoint-2 within 60 s"; kill $JOB 2> /dev/null; wait $JOB 2> /dev/null; fi

# 5. mining split over ranks
MINE="--model $M --data $WORK/world/train.jsonl --image-root $IMG --top-k 6 --pgd-iters 3 --max-new-tokens 12 --quiet"
for np in 2 3; do
    if ! run_np $np "$MPI/mbpo-mine" $MINE --out "$WORK/mine$np" > "$WORK/mine$np.log" 2>&1; then
        fail "mining on $np ranks failed"; tail -5 "$WORK/mine$np.log"
    elif diff -r "$WORK/mined" "$WORK/mine$np" > /dev/null; then
        ok "mining on $np ranks = one process: $(cd "$WORK/mined" && find . -type f | wc -l) files byte-identical ($(wc -l < "$WORK/mined/offline.jsonl") pairs)"
    else fail "mining on $np ranks differs"; diff -rq "$WORK/mined" "$WORK/mine$np" | head -5; fi
done

[ $FAILED = 0 ] && echo "test-mpi: all passed" || echo "test-mpi: FAILED"
exit $FAILED
