#!/usr/bin/env bash
# Create ./.venv and install hifitrt with its test extras, CPU build of PyTorch.
# Idempotent: a second run only re-installs hifitrt itself (seconds).
# GPU machines: see README "GPU install" (CUDA torch, tensorrt) instead of this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[bootstrap] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip
if ! "$VPY" -c "import torch" 2>/dev/null; then
    echo "[bootstrap] installing torch==2.13.0 (CPU build)"
    "$VPY" -m pip install --quiet torch==2.13.0
fi
if "$VPY" -m pip show onnxruntime >/dev/null 2>&1; then
    echo "[bootstrap] removing the onnxruntime CPU wheel (it conflicts with onnxruntime-gpu)"
    "$VPY" -m pip uninstall --quiet -y onnxruntime
fi
echo "[bootstrap] installing hifitrt (editable) with test extras"
"$VPY" -m pip install --quiet -e ".[test]"
"$VPY" -c "import hifitrt, onnxruntime; print('[bootstrap] hifitrt', hifitrt.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
