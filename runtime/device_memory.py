"""Device memory and streams for the TensorRT runner, behind one small interface.

TensorRT reads and writes raw device pointers and runs on CUDA streams. The runner asks a
:class:`DeviceBackend` for buffers, addresses, streams and copies, so the same runner code runs
on a GPU (:class:`TorchCudaBackend`, torch is a hard dependency of hifitrt) and, in CI, on the
CPU test double (``tests/doubles/tensorrt_double.py`` provides a CPU backend).

Buffers are flat (1-D) and may be larger than needed: the runner reuses one input and one
output buffer per execution context and only grows them.
"""
from __future__ import annotations

import abc
from typing import Any, ContextManager

import numpy as np

from ..errors import EngineError


class DeviceBackend(abc.ABC):
    """Allocation, copies and streams on one device."""

    name: str = "device"

    @abc.abstractmethod
    def scope(self) -> ContextManager[Any]:
        """Make this device current in the calling thread (CUDA's current device is per thread)."""

    @abc.abstractmethod
    def stream(self) -> Any:
        """A new stream (each execution context gets its own)."""

    @abc.abstractmethod
    def stream_handle(self, stream: Any) -> int:
        """The integer handle TensorRT's ``*_async`` calls take (a ``cudaStream_t``)."""

    @abc.abstractmethod
    def synchronize(self, stream: Any) -> None:
        """Block until all work queued on ``stream`` is done."""

    @abc.abstractmethod
    def empty(self, numel: int, dtype: np.dtype, stream: Any) -> Any:
        """A flat uninitialised buffer of ``numel`` elements, for use on ``stream``."""

    @abc.abstractmethod
    def capacity(self, buffer: Any) -> int:
        """Number of elements ``buffer`` holds."""

    @abc.abstractmethod
    def address(self, buffer: Any) -> int:
        """Device address of the first element (what ``set_tensor_address`` takes)."""

    @abc.abstractmethod
    def copy_from_numpy(self, buffer: Any, array: np.ndarray, stream: Any) -> None:
        """Copy ``array`` (any shape, buffer's dtype) into the start of ``buffer`` on ``stream``."""

    @abc.abstractmethod
    def to_numpy(self, buffer: Any, shape: tuple[int, ...], stream: Any) -> np.ndarray:
        """Copy the first prod(shape) elements to a new host array of ``shape``, after the work
        queued on ``stream`` (returns when the data is on the host)."""


class TorchCudaBackend(DeviceBackend):
    """CUDA memory and streams through torch (``torch.empty(..., device='cuda')``)."""

    name = "cuda"

    def __init__(self, device: str = "cuda") -> None:
        import torch

        if not torch.cuda.is_available():
            raise EngineError(
                "CUDA is not available (no NVIDIA GPU, driver or CUDA build of torch): "
                "the TensorRT backend needs one; use --backend onnxruntime"
            )
        self._torch = torch
        dev = torch.device(device)
        if dev.type != "cuda":
            raise EngineError(f"device {device!r} is not a CUDA device; use 'cuda' or 'cuda:N'")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise EngineError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
        self.device = torch.device("cuda", index)
        self.name = str(self.device)

    def scope(self) -> ContextManager[Any]:
        return self._torch.cuda.device(self.device)

    def stream(self) -> Any:
        return self._torch.cuda.Stream(device=self.device)

    def stream_handle(self, stream: Any) -> int:
        return int(stream.cuda_stream)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def empty(self, numel: int, dtype: np.dtype, stream: Any) -> Any:
        torch_dtype = _TORCH_DTYPES.get(np.dtype(dtype).name)
        if torch_dtype is None:
            raise EngineError(f"engine tensor type {np.dtype(dtype)} is not supported by hifitrt's TensorRT runner")
        # Allocated while `stream` is current so the caching allocator ties the block to it.
        with self._torch.cuda.stream(stream):
            return self._torch.empty(int(numel), dtype=getattr(self._torch, torch_dtype), device=self.device)

    def capacity(self, buffer: Any) -> int:
        return int(buffer.numel())

    def address(self, buffer: Any) -> int:
        return int(buffer.data_ptr())

    def copy_from_numpy(self, buffer: Any, array: np.ndarray, stream: Any) -> None:
        source = self._torch.from_numpy(np.ascontiguousarray(array).reshape(-1))
        with self._torch.cuda.stream(stream):
            buffer[: source.numel()].copy_(source)

    def to_numpy(self, buffer: Any, shape: tuple[int, ...], stream: Any) -> np.ndarray:
        count = int(np.prod(shape))
        with self._torch.cuda.stream(stream):
            host = buffer[:count].to("cpu")  # ordered after the kernels queued on `stream`
        stream.synchronize()
        return host.numpy().reshape(shape)


_TORCH_DTYPES = {"float32": "float32", "float16": "float16"}
