"""Where every artifact lives inside an engine directory (the one place that names them).

An engine directory is a contract between the builder, the runtime, the parity report, the
server and Triton: they must agree on file names, so the names are declared here once and
everything else imports them. Paths are relative, POSIX, as the manifest records them::

    ENGINE_DIR/
      manifest.json             commit point, written last (engines.manifest)
      model.onnx                fp32 export (export.onnx_export)
      model.fp16.onnx           mixed-precision graph (export.precision), fp16 engines only
      precision_plan.json       which nodes stay fp32 and why, fp16 engines only
      tensorrt/engine.plan      TensorRT backend: the serialized plan
      tensorrt/timing-*.cache   TensorRT backend: tactic timings reused by the next build, one file
                                per TensorRT version and GPU (engines.tensorrt_builder.timing_cache_file)
      onnxruntime/session.json  ONNX Runtime backend: how to open the ONNX model
      onnxruntime/trt_ep_cache/ ONNX Runtime's TensorRT execution provider cache (opt-in)
      openvino/engine.json      OpenVINO backend: the parts to compile and their precision hints
      openvino/part_N.xml|.bin  OpenVINO backend: one IR per part (FP32 engines: one part)
      bf16_plan.json            OpenVINO --precision bf16|auto: the BF16 plan, or why it was refused
      report/report.json|html   parity report (validation), removed when the engine is rebuilt
      .build.lock               serialises concurrent builds of the directory
      .staging-*/               a build in progress (never read)
"""
from __future__ import annotations

import os
from pathlib import Path

MANIFEST = "manifest.json"
FP32_ONNX = "model.onnx"
FP16_ONNX = "model.fp16.onnx"
PRECISION_PLAN = "precision_plan.json"
TENSORRT_PLAN = "tensorrt/engine.plan"
TENSORRT_TIMING_CACHES = "tensorrt/timing-*.cache"  # a glob: named by TensorRT version and GPU
ORT_SESSION = "onnxruntime/session.json"
ORT_TRT_EP_CACHE = "onnxruntime/trt_ep_cache"
OPENVINO_DIR = "openvino"
OPENVINO_ENGINE = "openvino/engine.json"
BF16_PLAN = "bf16_plan.json"
REPORT_DIR = "report"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
BUILD_LOCK = ".build.lock"
STAGING_PREFIX = ".staging-"
OWNER_MARK = ".hifitrt-engine"  # written first: this folder is hifitrt's to overwrite (engines.build)


def onnx_for(precision: str) -> str:
    """The ONNX graph an engine of ``precision`` is built from (and ONNX Runtime runs)."""
    return FP16_ONNX if precision == "fp16" else FP32_ONNX


def report_dir(engine_dir: str | os.PathLike[str]) -> Path:
    """The engine's own parity report folder (``check`` and ``build`` write it)."""
    return Path(engine_dir) / REPORT_DIR
