#!/usr/bin/env bash
# GPU acceptance run: what a user with an NVIDIA GPU and TensorRT runs to verify hifitrt on
# their machine. Builds TensorRT FP16 and FP32 engines for the vocoder, inspects them, runs the
# parity check and the benchmark, then the GPU tests, and writes one summary.
#
#   scripts/gpu_acceptance.sh [OUT_DIR] [SOURCE]      (defaults: out/gpu-acceptance, default)
#
# Every step runs and is reported, whatever failed before it (a bench is skipped only when its
# engine failed to build). OUT_DIR/summary.txt: PASS/FAIL/SKIP per step with its time, and all
# versions; OUT_DIR/logs/<step>.log: each step's full output. Step time limits (seconds) can be
# changed with BUILD_LIMIT, CHECK_LIMIT, BENCH_LIMIT, TESTS_LIMIT; the defaults keep the default
# vocoder within 10 minutes on one GPU.
#
# HIFITRT_ACCEPTANCE_DOUBLE=1 rehearses the run WITHOUT a GPU: the TensorRT TEST DOUBLE stands in
# for TensorRT and the GPU (tests/doubles/run_with_tensorrt_double.py), and the double-based
# tests run instead of the GPU tests. Such a summary says so; none of its numbers are TensorRT's.
#
# NOT YET RUN BY THE PROJECT ON A GPU: please send OUT_DIR/summary.txt back.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/gpu-acceptance}"
SOURCE="${2:-default}"
PY="${PYTHON:-.venv/bin/python}"
BUILD_LIMIT="${BUILD_LIMIT:-180}"
CHECK_LIMIT="${CHECK_LIMIT:-60}"
BENCH_LIMIT="${BENCH_LIMIT:-45}"
TESTS_LIMIT="${TESTS_LIMIT:-120}"
DOUBLE="${HIFITRT_ACCEPTANCE_DOUBLE:-0}"

mkdir -p "$OUT/logs"
SUMMARY="$OUT/summary.txt"
if [ "$DOUBLE" = "1" ]; then
    MODE="TEST DOUBLE rehearsal: no GPU and no TensorRT were used; engines ran ONNX Runtime on the CPU"
    HIFITRT=("$PY" tests/doubles/run_with_tensorrt_double.py)
else
    MODE="real GPU + TensorRT"
    HIFITRT=("$PY" -m hifitrt)
fi
passed=0; failed=0; skipped=0
declare -A STATUS

{
    echo "hifitrt GPU acceptance, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "mode: $MODE"
    echo "source: $SOURCE; hifitrt commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$SUMMARY"

record() {  # record NAME STATUS SECONDS DETAIL
    STATUS[$1]="$2"
    case "$2" in PASS) passed=$((passed + 1));; SKIP) skipped=$((skipped + 1));; *) failed=$((failed + 1));; esac
    printf '%-5s %-13s %5ss  %s\n' "${2%% *}" "$1" "$3" "$4" | tee -a "$SUMMARY"
}

step() {  # step NAME LIMIT_S COMMAND...: run it with a time limit, log it, record the outcome
    local name="$1" limit="$2"; shift 2
    local log="$OUT/logs/$name.log" start rc detail
    start=$(date +%s)
    timeout --kill-after=15 "$limit" "$@" > "$log" 2>&1
    rc=$?
    detail="logs/$name.log"
    if [ "$rc" -eq 0 ]; then
        record "$name" PASS "$(( $(date +%s) - start ))" "$detail"
        return 0
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        detail="timed out after ${limit}s; $detail"
    elif [ "$rc" -gt 128 ]; then
        detail="killed by signal $((rc - 128)) (crash); $detail"
    else
        detail="exit $rc: $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-160); $detail"
    fi
    record "$name" "FAIL" "$(( $(date +%s) - start ))" "$detail"
    return 1
}

skip() { record "$1" SKIP 0 "$2"; }

echo "== versions" | tee -a "$SUMMARY"
"${HIFITRT[@]}" versions 2>/dev/null | tee -a "$SUMMARY" "$OUT/logs/versions.log"
"$PY" - >> "$SUMMARY" 2>/dev/null <<'PYEOF'
import platform, sys
print(f"python {platform.python_version()} on {platform.platform()}")
try:
    import torch
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cc = ".".join(map(str, torch.cuda.get_device_capability(i)))
            print(f"cuda:{i} {torch.cuda.get_device_name(i)} (compute capability {cc})")
    else:
        print("torch sees no CUDA GPU")
except Exception as exc:
    print(f"torch: {exc}")
PYEOF

echo "== steps (status, step, seconds, detail)" | tee -a "$SUMMARY"
if [ "$DOUBLE" = "1" ]; then
    step environment 120 "${HIFITRT[@]}" versions
else
    step environment 60 "$PY" -c "
import sys, torch
if not torch.cuda.is_available():
    sys.exit('torch sees no CUDA GPU: install a CUDA build of torch')
import tensorrt
print('TensorRT', tensorrt.__version__, 'on', torch.cuda.get_device_name(0))
"
fi

for precision in fp16 fp32; do
    dir="$OUT/$precision"
    if [ "${STATUS[environment]}" != PASS ]; then
        for s in build inspect check bench; do skip "$s-$precision" "no GPU + TensorRT (see environment)"; done
        continue
    fi
    if step "build-$precision" "$BUILD_LIMIT" "${HIFITRT[@]}" build "$SOURCE" --out "$dir" --backend tensorrt \
            --precision "$precision" --force --no-report; then
        step "inspect-$precision" 120 "${HIFITRT[@]}" inspect "$dir"
        step "check-$precision" "$CHECK_LIMIT" "${HIFITRT[@]}" check "$dir" --report "$dir/report"
        step "bench-$precision" "$BENCH_LIMIT" "${HIFITRT[@]}" bench "$dir" --json "$dir/bench.json"
    else
        for s in inspect check bench; do skip "$s-$precision" "build-$precision failed"; done
    fi
done

if [ "$DOUBLE" = "1" ]; then
    step tests-double "$TESTS_LIMIT" "$PY" -m pytest -q -p no:cacheprovider tests/test_tensorrt_double.py \
        tests/test_tensorrt_pool.py tests/test_tensorrt_version_compat.py tests/test_tensorrt_double_fidelity.py \
        tests/test_tensorrt_api_names.py
else
    step tests-gpu "$TESTS_LIMIT" "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu tests/test_tensorrt_gpu.py
fi
tests_log=$(ls "$OUT"/logs/tests-*.log 2>/dev/null | head -1)
[ -n "$tests_log" ] && grep -E "passed|failed|skipped|error" "$tests_log" | tail -1 | sed 's/^/      tests: /' | tee -a "$SUMMARY"

echo "== result: $passed passed, $failed failed, $skipped skipped ($MODE)" | tee -a "$SUMMARY"
echo "summary: $SUMMARY; logs: $OUT/logs/; parity reports: $OUT/*/report/"
[ "$failed" -eq 0 ]
