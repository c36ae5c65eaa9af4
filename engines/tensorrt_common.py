"""Pieces the TensorRT builder and the TensorRT runner share.

TensorRT is imported lazily (``import_tensorrt``) so that hifitrt imports, and its ONNX Runtime
backend runs, on machines without it. Every function takes the ``tensorrt`` module as an
argument, so tests can pass the CPU test double (tests/doubles/tensorrt_double.py) instead.

Only names present in the TensorRT 10.16, 11.1 and 11.4 Python bindings are used
(tests/test_tensorrt_api_names.py checks this).
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
from types import ModuleType
from typing import Any, ContextManager

from ..atomic import write_bytes as write_bytes_atomic  # noqa: F401  (re-exported for the builder)
from ..errors import EngineError
from .machine import tensorrt_version  # the one version probe (re-exported for the builder and runner)

INPUT_NAME = "mel"
OUTPUT_NAME = "wav"

MIN_TENSORRT = (10, 12)
"""Oldest TensorRT with the one code path used here: strongly typed networks, no precision flags
(weak typing is deprecated from 10.12 and removed in 11.0)."""

INSTALL_HINT = (
    "pip install 'hifitrt[gpu-cu12]' or 'hifitrt[gpu-cu13]' (the CUDA major of your torch build, see "
    "docs/TENSORRT.md) on a machine with an NVIDIA GPU, or use --backend onnxruntime"
)

_LOG = logging.getLogger("hifitrt.tensorrt")


def import_tensorrt(trt_module: ModuleType | Any | None = None) -> Any:
    """Return ``trt_module`` if given, else ``import tensorrt`` with a clear EngineError."""
    if trt_module is not None:
        trt = trt_module
    else:
        try:
            import tensorrt as trt  # type: ignore[import-not-found]
        except (ImportError, OSError) as exc:  # OSError: wheel present but libnvinfer missing
            raise EngineError(f"TensorRT is not installed ({exc}): {INSTALL_HINT}") from exc
    require_supported_version(trt)
    return trt


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.16.1.11' -> (10, 16, 1, 11); stops at the first non-numeric part."""
    parts: list[int] = []
    for piece in version.split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def require_supported_version(trt: Any) -> None:
    version = tensorrt_version(trt) or "unknown"
    numbers = version_tuple(version)
    if len(numbers) < 2 or numbers[:2] < MIN_TENSORRT:
        raise EngineError(
            f"TensorRT {version} is too old: hifitrt needs TensorRT >= "
            f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} (strongly typed networks); {INSTALL_HINT}"
        )


# ILogger::Severity values (NvInferRuntimeBase.h): kINTERNAL_ERROR=0, kERROR=1, kWARNING=2,
# kINFO=3, kVERBOSE=4. The Python enum is arithmetic, so int(severity) gives these numbers.
_SEVERITY_TO_LEVEL = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.DEBUG, 4: logging.DEBUG}
_WARNING = 2


def create_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards to Python logging and remembers recent warnings and errors.

    TensorRT reports why something failed (a plan for another GPU, an unsupported layer, a
    timing cache it will not use) only through its logger, while the API returns None/False or
    even carries on. Keeping the last warnings and errors lets :class:`EngineError` messages say
    what TensorRT said, and lets the builder tell whether TensorRT accepted a timing cache.
    TensorRT may log from its own worker threads, so the memory is guarded by a lock.

    The bindings call ``log`` through the GIL for every message, VERBOSE included; INFO and
    VERBOSE messages are dropped at once unless DEBUG logging is on (a build logs thousands).
    The caller must keep the returned object alive as long as any builder/runtime/engine
    created with it.
    """

    class HifitrtTrtLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self._messages: collections.deque[tuple[int, int, str]] = collections.deque(maxlen=32)
            self._count = 0
            self._lock = threading.Lock()

        def log(self, severity: Any, msg: str) -> None:  # called by TensorRT
            number = int(severity)
            if number > _WARNING and not _LOG.isEnabledFor(logging.DEBUG):
                return
            _LOG.log(_SEVERITY_TO_LEVEL.get(number, logging.INFO), "TensorRT: %s", msg)
            if number <= _WARNING:
                with self._lock:
                    self._count += 1
                    self._messages.append((self._count, number, " ".join(str(msg).split())))

        def mark(self) -> int:
            """A position: ``recent_errors(since=mark)`` then reports only later messages."""
            with self._lock:
                return self._count

        def recent_errors(self, limit: int = 3, since: int = 0) -> str:
            """The last ``limit`` errors logged after ``since``, on one line ('' when none)."""
            return " | ".join(self.messages_since(since, errors_only=True)[-limit:])

        def messages_since(self, since: int = 0, errors_only: bool = False) -> list[str]:
            """Warnings and errors (or errors only) logged after ``since``, oldest first."""
            with self._lock:
                return [text for number, severity, text in self._messages
                        if number > since and (severity < _WARNING or not errors_only)]

    return HifitrtTrtLogger()


def said(logger: Any, since: int = 0) -> str:
    """' (TensorRT said: ...)' or '' — suffix for error messages (errors logged after ``since``)."""
    text = logger.recent_errors(since=since) if logger is not None else ""
    return f" (TensorRT said: {text})" if text else ""


def dims_to_tuple(dims: Any) -> tuple[int, ...] | None:
    """``trt.Dims`` -> tuple of ints; None for the invalid Dims{-1} TensorRT returns on bad names.

    ``trt.Dims`` has ``__getitem__`` and ``__len__`` but no ``__iter__``: iterating stops at the
    IndexError past the last dimension, so an invalid Dims{-1} iterates as empty.
    """
    try:
        values = tuple(int(d) for d in dims)
    except (TypeError, ValueError, IndexError):
        return None
    return values or None


def dtype_name(dtype: Any) -> str:
    """'FLOAT', 'HALF', ... for a ``trt.DataType``."""
    return str(getattr(dtype, "name", dtype)).split(".")[-1]


def device_index(device: Any) -> int | None:
    """The CUDA device index of ``"cuda:N"``, ``N`` or a torch device; None for ``"cuda"``/None.

    The manifest check, the builder and the runner must look at the same GPU: the one the
    caller names (None means the current device, GPU 0 unless the caller changed it). A runtime
    DeviceBackend gives its CUDA device; one without (the test double's CPU backend) gives None.
    """
    if device is None:
        return None
    if not isinstance(device, (str, int)) and not hasattr(device, "type"):
        return device_index(getattr(device, "device", None))  # a DeviceBackend
    if isinstance(device, int) and not isinstance(device, bool):
        index: int | None = device
    elif hasattr(device, "type") and hasattr(device, "index"):  # torch.device
        if device.type != "cuda":
            raise EngineError(f"device {device!r} is not a CUDA device; use 'cuda' or 'cuda:N'")
        index = device.index
    else:
        kind, _, number = str(device).partition(":")
        if kind != "cuda" or (number and not number.isdigit()):
            raise EngineError(f"device {device!r} is not a CUDA device; use 'cuda' or 'cuda:N'")
        index = int(number) if number else None
    if index is not None and index < 0:
        raise EngineError(f"CUDA device index {index} must be >= 0")
    return index


def cuda_device_scope(index: int | None) -> ContextManager[Any]:
    """Make CUDA device ``index`` current (TensorRT builds and runs on the current device);
    nothing to do for None or on a machine without CUDA (the test double)."""
    if index is None:
        return contextlib.nullcontext()
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device(index)
    except ImportError:
        pass
    return contextlib.nullcontext()
