"""The one place an ONNX Runtime ``InferenceSession`` is created.

Export verification, FP16 planning, the ONNX Runtime engine (build check and runner) and the
benchmark all open sessions here, so providers, threads, optimisation level and log level are
decided once. Full graph optimisation is the default: ORT's fusions are numerically safe for
FP32, and parity is measured with them on, as users will run.

Which providers an *engine* asks for (CUDA only with a real GPU, the TensorRT EP on request) is
engine policy and lives in :func:`hifitrt.engines.onnxruntime_engine.choose_providers`; callers
here name their providers explicitly (CPU by default: export and planning always run on CPU).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"


def make_session(
    model: str | os.PathLike[str] | bytes,
    *,
    providers: Sequence[Any] = (CPU,),
    threads: int | None = None,
    inter_op_threads: int | None = None,
    optimization_level: str = "ORT_ENABLE_ALL",
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a path or serialized bytes).

    ``providers``: names or ``(name, options)`` pairs in priority order. ``threads`` sets the
    intra-op pool (None or 0: ORT's default, one per core); ``inter_op_threads`` the inter-op
    pool (only used by parallel execution mode; benchmarks pin it to 1). ``optimization_level``
    is a ``GraphOptimizationLevel`` member name. ORT's own exceptions propagate: callers turn
    them into the one-line error their context needs (export: ExportError, engine: EngineError).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization_level)
    options.log_severity_level = 3  # fallbacks are reported by hifitrt itself
    if threads:
        options.intra_op_num_threads = int(threads)
    if inter_op_threads:
        options.inter_op_num_threads = int(inter_op_threads)
    chosen = list(providers) if providers else [CPU]
    target = model if isinstance(model, bytes) else os.fspath(model)
    log.debug("onnxruntime session on %s", chosen)
    return ort.InferenceSession(target, sess_options=options, providers=chosen)
