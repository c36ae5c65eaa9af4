"""What this machine offers an engine: its CUDA GPU (name, compute capability) and TensorRT.

A TensorRT plan runs only on the GPU architecture and TensorRT version it was built with, so the
manifest records both and :func:`hifitrt.engines.manifest.verify_engine_dir` compares them with
:func:`current_machine` before any plan is deserialised. Everything here is lazy and never
raises: a machine without torch CUDA or TensorRT simply reports ``None``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceInfo:
    """One CUDA GPU: marketing name and compute capability as text ("8.6")."""

    gpu_name: str
    compute_capability: str

    def describe(self) -> str:
        return f"{self.gpu_name} ({self.compute_capability})"

    def to_dict(self) -> dict[str, str]:
        return {"gpu_name": self.gpu_name, "compute_capability": self.compute_capability}

    @classmethod
    def from_dict(cls, data: Any) -> "DeviceInfo | None":
        if not data:
            return None
        return cls(str(data.get("gpu_name", "unknown GPU")), str(data.get("compute_capability", "?")))


@dataclass(frozen=True)
class Machine:
    """The facts an engine's compatibility depends on (tests may build one by hand)."""

    device: DeviceInfo | None
    tensorrt_version: str | None

    def describe(self) -> str:
        gpu = self.device.describe() if self.device else "no CUDA GPU"
        trt = f"TensorRT {self.tensorrt_version}" if self.tensorrt_version else "no TensorRT"
        return f"{gpu} with {trt}"


def current_device(index: int = 0) -> DeviceInfo | None:
    """The CUDA GPU ``index`` as torch sees it, or None without a usable CUDA device."""
    try:
        import torch

        if not torch.cuda.is_available() or torch.cuda.device_count() <= index:
            return None
        major, minor = torch.cuda.get_device_capability(index)
        return DeviceInfo(str(torch.cuda.get_device_name(index)), f"{major}.{minor}")
    except Exception as exc:  # a broken driver must not break CPU-only use
        _LOG.debug("no CUDA device: %s", exc)
        return None


def tensorrt_version(trt_module: Any = None) -> str | None:
    """Version of ``trt_module`` (or of an importable ``tensorrt``); None when absent.

    The one TensorRT version probe: the builder, the runner, the manifest check and backend
    selection all ask here, so "which TensorRT is this" has one answer.
    """
    if trt_module is None:
        try:
            import tensorrt as trt_module  # type: ignore[import-not-found, no-redef]
        except (ImportError, OSError):
            return None
    version = getattr(trt_module, "__version__", None)
    return str(version) if version else None


def current_machine(trt_module: Any = None, device_index: int | None = None) -> Machine:
    """This machine's GPU ``device_index`` (None: GPU 0) and TensorRT (``trt_module`` stands in
    for ``tensorrt`` in tests). The index must be the one the engine is built or run on."""
    return Machine(current_device(0 if device_index is None else device_index), tensorrt_version(trt_module))
