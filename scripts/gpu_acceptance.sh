#!/usr/bin/env bash
# GPU acceptance run: what a user with an NVIDIA GPU and TensorRT runs to verify hifitrt on
# their machine. Builds TensorRT FP16 and FP32 engines for the built-in default vocoder, runs
# the parity sweep and the benchmark, runs the GPU-marked tests, and collects one summary.
#
#   scripts/gpu_acceptance.sh [OUT_DIR] [SOURCE]      (defaults: out/gpu-acceptance, default)
#
# NOT YET RUN BY THE PROJECT: no machine of the project has a GPU. Please send the summary
# (OUT_DIR/summary.txt) back with your GPU model, driver, CUDA and TensorRT versions.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/gpu-acceptance}"
SOURCE="${2:-default}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT"
"$PY" - <<'PYEOF'
import sys
try:
    import torch
    assert torch.cuda.is_available(), "torch sees no CUDA GPU (install a CUDA build of torch)"
    import tensorrt
except Exception as exc:  # stop early with the reason, nothing half-built
    sys.exit(f"gpu_acceptance: not a GPU + TensorRT machine: {exc}")
print(f"GPU {torch.cuda.get_device_name(0)} (cc {'.'.join(map(str, torch.cuda.get_device_capability(0)))}), "
      f"TensorRT {tensorrt.__version__}, torch {torch.__version__}")
PYEOF
summary="$OUT/summary.txt"
: > "$summary"
for precision in fp16 fp32; do
    dir="$OUT/$precision"
    echo "== build $precision TensorRT engine ==" | tee -a "$summary"
    "$PY" -m hifitrt build "$SOURCE" --out "$dir" --backend tensorrt --precision "$precision" 2>&1 | tee -a "$summary"
    echo "== parity check $precision ==" | tee -a "$summary"
    "$PY" -m hifitrt check "$dir" --report "$dir/report" 2>&1 | tee -a "$summary" || echo "PARITY FAILED ($precision)" | tee -a "$summary"
    echo "== benchmark $precision ==" | tee -a "$summary"
    "$PY" -m hifitrt bench "$dir" --json "$dir/bench.json" 2>&1 | tee -a "$summary"
done
echo "== GPU tests ==" | tee -a "$summary"
"$PY" -m pytest -q -m gpu tests 2>&1 | tail -20 | tee -a "$summary"
echo "summary: $summary; reports: $OUT/*/report/report.html"
