#!/usr/bin/env bash
# tests/cuda/device.sh - the one GPU check, run from the repository root on the GPU machine:
#     bash tests/cuda/device.sh
# Builds the CUDA drivers and tests (nvcc, sm_90), runs test_cuda in the fp32 and the bf16
# build, makes Qwen2-VL-2B with random weights in transformers and checks mbpo's logits
# against it, the programs on the GPU (tests/cuda/runs.sh: kill-and-resume, mbpo-score and
# mbpo-train against the CPU), the MBPO step benchmark against transformers
# (tests/cuda/mbpo_bench.sh, on the same 2B), then the model benchmark (mbpo-bench --gpu-bench)
# and its transformers side (bench_hf.py). Every step is bounded by `timeout` inside one overall
# budget (BUDGET seconds, default 840: 14 minutes on an H200); a failing step does not stop the
# rest, but the script exits non-zero. SKIP="name ..." leaves steps out (e.g. SKIP="bench_mbpo
# bench_hf" to fit a smaller budget). Logs: $OUT/*.log (OUT defaults to /tmp/mbpo-device). The summary
# table is printed last. FULL3B=1 adds Qwen2.5-VL-3B at full size (step 5; raise BUDGET by 240).
#
# libstb: the build links -lstb and needs <stb/stb_image.h>. When the machine has neither and
# the repository carries Debian packages in .stb/ (apt-get download libstb0 libstb-dev, on a
# machine with apt), they are unpacked to /tmp/stbroot and copied under /usr/local.
set -u
OUT=${OUT:-/tmp/mbpo-device}
BUDGET=${BUDGET:-840}
SKIP=${SKIP:-}
JOBS=${JOBS:-16}
THREADS=${THREADS:-16}
CONFIG=tests/reference/configs/qwen2vl_2b.json
Q2B=${Q2B:-/tmp/mbpo-q2b}
mkdir -p "$OUT"
START=$(date +%s)
FAILED=0
STEPS=()
export PYTHONUNBUFFERED=1

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# step NAME MAX_SECONDS COMMAND...: run with timeout min(MAX, time left - 5), log to $OUT/NAME.log
step() {
    local name=$1 max=$2; shift 2
    case " $SKIP " in *" $name "*) echo "== $name: skipped (SKIP)"; STEPS+=("$name skip 0"); return 0;; esac
    local l; l=$(left); l=$(( l - 5 ))
    local lim=$(( max < l ? max : l ))
    if [ "$lim" -lt 10 ]; then
        echo "== $name: SKIPPED (budget spent)"; STEPS+=("$name skipped 0"); FAILED=1; return 1
    fi
    echo "== $name (timeout ${lim}s): $*"
    local t0; t0=$(date +%s)
    timeout -k 5 "$lim" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local dt=$(( $(date +%s) - t0 ))
    tail -n 4 "$OUT/$name.log" | sed 's/^/   | /'
    if [ $rc -ne 0 ]; then
        FAILED=1
        [ $rc -eq 124 ] && echo "   $name: TIMED OUT after ${lim}s" || echo "   $name: FAILED (rc $rc)"
    fi
    STEPS+=("$name $rc $dt")
    return $rc
}

# 0. the machine
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || { echo "nvidia-smi failed"; FAILED=1; }
head -n 15 "$OUT/nvidia-smi.txt"
{ nvcc --version; python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'; } \
    > "$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt"

# libstb, when the image lacks it
if [ ! -e /usr/include/stb/stb_image.h ] && [ ! -e /usr/local/include/stb/stb_image.h ]; then
    if ls .stb/*.deb > /dev/null 2>&1; then
        rm -rf /tmp/stbroot && mkdir -p /tmp/stbroot
        for f in .stb/*.deb; do dpkg -x "$f" /tmp/stbroot; done
        mkdir -p /usr/local/include /usr/local/lib
        cp -r /tmp/stbroot/usr/include/stb /usr/local/include/ 2>/dev/null
        find /tmp/stbroot -name 'libstb*' -exec cp -P {} /usr/local/lib/ \;
        ldconfig 2>/dev/null
        echo "libstb: unpacked from .stb/ into /usr/local"
    else
        echo "libstb: NOT FOUND (no <stb/stb_image.h>; carry .stb/*.deb: apt-get download libstb0 libstb-dev) - the build will fail"
    fi
fi

# 1. build: the drivers (make cuda) and test_cuda in bf16 and fp32
step build 240 make -j"$JOBS" cuda build/cuda/test_cuda build/cuda/test_cuda_fp32 build/cuda/test_fullsize_fp32 \
    build/cuda-fp32/mbpo-train build/cuda-fp32/mbpo-score build/mbpo-train build/mbpo-score build/mbpo-synth build/mbpo-mine

# 2. every op, the fixtures, mid-size, decode, determinism: fp32 first (tight), then bf16
#    (the binaries that make test-cuda runs, run one by one so both always run)
if [ -x build/cuda/test_cuda_fp32 ]; then
    step test_cuda_fp32 150 env OMP_NUM_THREADS="$THREADS" build/cuda/test_cuda_fp32
else echo "== test_cuda_fp32: not built"; STEPS+=("test_cuda_fp32 notbuilt 0"); FAILED=1; fi
if [ -x build/cuda/test_cuda ]; then
    step test_cuda_bf16 150 env OMP_NUM_THREADS="$THREADS" build/cuda/test_cuda
else echo "== test_cuda_bf16: not built"; STEPS+=("test_cuda_bf16 notbuilt 0"); FAILED=1; fi

# 2b. the programs on the GPU: resume bitwise after a stop and a SIGKILL, scoring and training vs the CPU
step runs 180 env OMP_NUM_THREADS="$THREADS" WORK=/tmp/mbpo-runs bash tests/cuda/runs.sh
# 2c. data parallelism's NCCL plumbing with one rank = the build without NCCL (tests/cuda/nccl1.sh)
step nccl1 90 env OMP_NUM_THREADS="$THREADS" bash -c 'make -j'"$JOBS"' build/nccl/mbpo-train > /dev/null && bash tests/cuda/nccl1.sh'

# 3. Qwen2-VL-2B: transformers makes the weights and its logits, then mbpo (bf16) on them
step ref_2b 150 python3 tests/reference/qwen2vl_2b_random.py --config "$CONFIG" --out "$Q2B"
if [ -x build/cuda/test_cuda ] && [ -e "$Q2B/parity_input.safetensors" ]; then
    step parity_2b 120 env OMP_NUM_THREADS="$THREADS" build/cuda/test_cuda 2b --2b "$Q2B"
else echo "== parity_2b: skipped (no test_cuda or no $Q2B)"; STEPS+=("parity_2b skipped 0"); FAILED=1; fi
# 3b. the MBPO step benchmark on the same 2B: mbpo-train / mbpo-mine vs tests/reference/mbpo_hf.py
if [ -e "$Q2B/config.json" ]; then
    step mbpo_bench 420 env WORK="$OUT/mbpo-bench" MODEL="$Q2B" BUDGET=400 THREADS="$THREADS" JOBS="$JOBS" bash tests/cuda/mbpo_bench.sh
else echo "== mbpo_bench: skipped (no $Q2B)"; STEPS+=("mbpo_bench skipped 0"); FAILED=1; fi
rm -rf "$Q2B"   # 4.4 GB

# 4. the model benchmark: mbpo, then transformers
if [ -x build/cuda/mbpo-bench ]; then
    step bench_mbpo 150 env OMP_NUM_THREADS="$THREADS" build/cuda/mbpo-bench --gpu-bench --device cuda --config "$CONFIG" \
        --seqs 8 --grid 32 --text-tokens 200 --iters 3 --warmup 1 --G 8 --decode-steps 20
else echo "== bench_mbpo: not built"; STEPS+=("bench_mbpo notbuilt 0"); FAILED=1; fi
step bench_hf 150 python3 tests/reference/bench_hf.py --config "$CONFIG" --seqs 8 --grid 32 --text-tokens 200 \
    --iters 3 --warmup 1 --G 8 --decode-steps 20

# 5. (FULL3B=1) Qwen2.5-VL-3B at full size with random bf16 weights: transformers fp32 on the CPU
#    (tests/reference/fullsize_random.py, ~2.5 min on 16 cores), then mbpo's fp32 build on the GPU
#    against it with make fullsize's tolerances. Off by default: it needs ~4 min of the budget.
if [ "${FULL3B:-0}" = 1 ]; then
    Q3B=${Q3B:-/tmp/mbpo-q3b}
    step ref_3b 240 python3 tests/reference/fullsize_random.py --config tests/configs/Qwen2.5-VL-3B-Instruct/config.json \
        --out "$Q3B" --threads "$THREADS"
    if [ -x build/cuda/test_fullsize_fp32 ] && [ -e "$Q3B/reference.safetensors" ]; then
        step parity_3b 150 env OMP_NUM_THREADS="$THREADS" build/cuda/test_fullsize_fp32 "$Q3B" --device cuda
    else echo "== parity_3b: skipped (no test_fullsize_fp32 or no $Q3B)"; STEPS+=("parity_3b skipped 0"); FAILED=1; fi
    rm -rf "$Q3B"   # 7.5 GB
fi

# 6. the table, last
python3 - "$OUT" "$FAILED" "$(( $(date +%s) - START ))" "${STEPS[@]}" <<'PY'
import os, re, sys
out, failed, total, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def log(name):
    p = os.path.join(out, name + ".log")
    return open(p, errors="replace").read() if os.path.exists(p) else ""
def vals(text, who):
    d = {}
    for line in text.splitlines():
        m = re.match(r"^%s (\S+) (\S+)" % who, line)
        if m:
            try: d[m.group(1)] = float(m.group(2))
            except ValueError: d[m.group(1)] = m.group(2)
    return d
mb, hf = vals(log("bench_mbpo"), "mbpo"), vals(log("bench_hf"), "hf")
dev = "?"
smi = os.path.join(out, "nvidia-smi.txt")
if os.path.exists(smi):
    m = re.search(r"NVIDIA [A-Z]\w+[^|]*", open(smi, errors="replace").read())
    dev = m.group(0).strip() if m else dev
print()
print("=" * 100)
print(f"mbpo on the GPU: {dev} (bench saw {mb.get('device', '?')}); total {total} s")
print("-" * 100)
for s in steps:
    name, rc, dt = s.split()
    summ = ""
    t = log(name)
    m = re.findall(r"^(\d+) passed, (\d+) failed", t, re.M)
    if name in ("runs", "mbpo_bench"):
        summ = "; ".join(l.strip()[:100] for l in t.splitlines() if l.startswith(("ok ", "FAIL", "runs.sh", "mbpo_bench:")))[:300]
    if m: summ = f"{m[-1][0]} passed, {m[-1][1]} failed"
    for pat in (r"^\s*(ok|!!)\s+2b logits.*$", r"^SKIP.*$", r"^qwen2vl_2b_random:.*$", r"^\s*(ok|!!)\s+logits: max.*$",
                r"^test_fullsize: (passed|FAILED).*$"):
        mm = re.search(pat, t, re.M)
        if mm: summ += ("; " if summ else "") + mm.group(0).strip()[:110]
    status = "ok" if rc == "0" else ("TIMEOUT" if rc == "124" else rc.upper() if not rc.lstrip('-').isdigit() else f"FAIL rc {rc}")
    print(f"  {name:<16} {status:<10} {dt:>4} s  {summ}")
fails = []
for name in ("test_cuda_fp32", "test_cuda_bf16", "parity_2b", "parity_3b"):
    fails += [l for l in log(name).splitlines() if l.startswith("FAIL")][:8]
if fails:
    print("  first FAIL lines:")
    for l in fails[:16]: print("    " + l[:150])
print("-" * 100)
def g(d, k):
    v = d.get(k)
    return v if isinstance(v, float) else None
def f(v, fmt="%.1f"):
    return "-" if v is None else fmt % v
def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b
print(f"  {'':<26}{'mbpo':>12}{'transformers':>14}{'mbpo/hf':>10}   target")
print(f"  {'GEMM ceiling TFLOP/s':<26}{f(g(mb,'gemm_tflops')):>12}{'':>14}{'':>10}   (measured: bf16 8192^3 matmul_forward)")
print(f"  {'copy GB/s':<26}{f(g(mb,'copy_gbs'), '%.0f'):>12}{'':>14}{'':>10}   (measured: 1 GiB copy, read+write)")
rows = [
    ("forward tok/s", g(mb, "forward_tok_s"), g(hf, "forward_tok_s"), None),
    ("fwd+bwd tok/s", g(mb, "fwd_bwd_tok_s"), g(hf, "fwd_bwd_tok_s"), (">= 1.5x HF", lambda r, a: r is not None and r >= 1.5)),
    ("fwd+bwd MFU %", g(mb, "fwd_bwd_mfu"), None, (">= 45%", lambda r, a: a is not None and a >= 45)),
    ("forward MFU %", g(mb, "forward_mfu"), None, None),
    ("PGD iteration ms", g(mb, "pgd_ms"), g(hf, "pgd_ms"), (">= 2x faster than HF", lambda r, a: r is not None and r <= 0.5)),
    ("decode step ms (G=8)", g(mb, "decode_step_ms"), g(hf, "decode_step_ms"), None),
    ("  weight-streaming bound", g(mb, "decode_bound_ms"), None, None),
    ("  decode / bound", g(mb, "decode_vs_bound"), None, ("<= 1.5x bound", lambda r, a: a is not None and a <= 1.5)),
    ("generate step ms (graph)", g(mb, "generate_step_ms"), g(hf, "decode_step_ms"), None),
    ("  op by op", g(mb, "generate_step_ms_ops"), None, None),
    ("  generate / bound", g(mb, "generate_vs_bound"), None, ("<= 1.5x bound", lambda r, a: a is not None and a <= 1.5)),
    ("peak mem fwd+bwd GiB", g(mb, "peak_mem_fwd_bwd"), g(hf, "peak_mem_fwd_bwd"), ("<= HF", lambda r, a: r is not None and r <= 1.0)),
    ("peak mem PGD GiB", g(mb, "peak_mem_pgd"), g(hf, "peak_mem_pgd"), None),
    ("peak mem decode GiB", g(mb, "peak_mem_decode"), g(hf, "peak_mem_decode"), None),
]
for name, a, b, tgt in rows:
    r = ratio(a, b)
    t = ""
    if tgt:
        t = f"{tgt[0]}: " + ("MET" if tgt[1](r, a) else ("not met" if a is not None else "no number"))
    print(f"  {name:<26}{f(a, '%.2f'):>12}{f(b, '%.2f'):>14}{f(r, '%.2f'):>10}   {t}")
print(f"  tokens {f(g(mb,'tokens'), '%.0f')} (hf {f(g(hf,'tokens'), '%.0f')}), patches {f(g(mb,'patches'), '%.0f')}; "
      f"mbpo fwd {f(g(mb,'forward_ms'), '%.1f')} ms, fwd+bwd {f(g(mb,'fwd_bwd_ms'), '%.1f')} ms; "
      f"hf fwd {f(g(hf,'forward_ms'), '%.1f')} ms, fwd+bwd {f(g(hf,'fwd_bwd_ms'), '%.1f')} ms")
print("=" * 100)
mbt = log("mbpo_bench")
if "MBPO step benchmark" in mbt:   # its own table, as mbpo_bench.sh printed it
    print(mbt[mbt.index("MBPO step benchmark"):].rstrip())
print("device.sh: " + ("SOME STEP FAILED" if failed != "0" else "all steps ok") + f" (logs in {out})")
PY
exit $FAILED
