"""ONNX Runtime sessions on the best execution providers this machine really has.

``onnxruntime-gpu`` lists CUDA/TensorRT providers even on machines without a GPU; asking for
them there logs errors and falls back, so CUDA is requested only when torch also sees a GPU.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def gpu_present() -> bool:
    """True only when torch sees a CUDA device (torch is the cheap, reliable probe here)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install must not stop CPU work
        return False


def default_providers() -> list[str]:
    """CUDA first when a GPU is present and ORT was built with CUDA, always CPU last."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = []
    if gpu_present() and CUDA in available:
        providers.append(CUDA)
    providers.append(CPU)
    return providers


def make_session(path: str | os.PathLike[str], providers: Sequence[str] | None = None,
                 threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path``.

    ``providers`` None picks :func:`default_providers`; ``threads`` sets the intra-op pool
    (None: ORT's default, one per core). Full graph optimisation is on: ORT's fusions are
    numerically safe for FP32 (parity is measured with them on, as users will run).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    chosen = list(providers) if providers else default_providers()
    log.debug("onnxruntime session for %s on %s", Path(path).name, chosen)
    return ort.InferenceSession(str(path), options, providers=chosen)
