#!/usr/bin/env bash
# Build the default vocoder's ONNX Runtime engines (FP16 and FP32) and benchmark each against
# PyTorch FP32 eager on the speech fixtures.
#
# Usage: scripts/bench_default.sh [OUT_DIR] [-- extra bench args]
#   OUT_DIR  default: ./out   (engines in OUT_DIR/default-fp16, OUT_DIR/default-fp32;
#            results in OUT_DIR/bench-default-fp16.json, OUT_DIR/bench-default-fp32.json
#            and the printed tables in OUT_DIR/bench-default-*.txt)
# Env: PYTHON (default: python), MAX_BATCH (default 4), REPEATS (default 5).
#
# Builds are cached by content hash: a second run reuses both engines in seconds. Run it on
# an otherwise idle machine; the JSON records the 1-minute load average so a busy run shows.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

out=${1:-out}
[[ $# -gt 0 ]] && shift
[[ "${1:-}" == "--" ]] && shift
python=${PYTHON:-python}
max_batch=${MAX_BATCH:-4}
repeats=${REPEATS:-5}
mkdir -p "$out"

for precision in fp16 fp32; do
    engine="$out/default-$precision"
    echo "== building $engine (onnxruntime, $precision)" >&2
    "$python" - "$engine" "$precision" <<'EOF'
import logging, sys
from hifitrt.engines.build import build_engine

logging.basicConfig(level=logging.INFO, format="%(message)s")
result = build_engine("default", sys.argv[1], backend="onnxruntime", precision=sys.argv[2])
print(f"{'reused' if result.reused else 'built'} {sys.argv[1]} in {result.seconds:.1f} s", file=sys.stderr)
EOF
done

for precision in fp16 fp32; do
    echo "== benchmarking $out/default-$precision vs PyTorch FP32" >&2
    "$python" -m hifitrt bench "$out/default-$precision" --json "$out/bench-default-$precision.json" \
        --max-batch "$max_batch" --repeats "$repeats" "$@" | tee "$out/bench-default-$precision.txt"
done
