#!/usr/bin/env bash
# Install a real Triton Inference Server into a virtualenv, for the Triton tests and for
# `tts-build-engine triton-serve` on machines without the NGC container.
#
#   bash scripts/install_triton.sh .venv
#
# nvidia-pytriton 0.7.0 bundles the `tritonserver` binary (2.51) and its Python backend; we
# install it with --no-deps because its metadata pins numpy < 2 and we only need the bundled
# server, not pytriton's own Python API. tritonclient[http,grpc] gives the clients and Triton's
# model-config schema (tritonclient.grpc.model_config_pb2). Idempotent: a second run only checks.
set -euo pipefail
VENV="${1:?usage: install_triton.sh VENV_DIR}"
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install_triton: $PY not found (create the venv first)" >&2; exit 2; }

installed=$("$PY" -c "from importlib.metadata import version; print(version('nvidia-pytriton'))" 2>/dev/null || true)
if [ "$installed" = "0.7.0" ]; then
    echo "[triton] nvidia-pytriton 0.7.0 already installed"
else
    echo "[triton] installing nvidia-pytriton==0.7.0 (--no-deps: only its bundled tritonserver is used)"
    "$PY" -m pip install --quiet --no-deps "nvidia-pytriton==0.7.0"
fi
if "$PY" -c "import tritonclient.http, tritonclient.grpc.model_config_pb2" 2>/dev/null; then
    echo "[triton] tritonclient already installed"
else
    echo "[triton] installing tritonclient[http,grpc]"
    "$PY" -m pip install --quiet "tritonclient[http,grpc]>=2.40"
fi
"$PY" - <<'PY'
from hifitrt.serving.triton_server import find_tritonserver
print("[triton] tritonserver:", find_tritonserver())
PY
