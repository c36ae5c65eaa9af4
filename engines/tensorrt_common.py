"""Pieces the TensorRT builder and the TensorRT runner share.

TensorRT is imported lazily (``import_tensorrt``) so that hifitrt imports, and its ONNX Runtime
backend runs, on machines without it. Every function takes the ``tensorrt`` module as an
argument, so tests can pass the CPU test double (tests/doubles/tensorrt_double.py) instead.

Only names present in both TensorRT 10.16 and 11.1 Python bindings are used
(tests/test_tensorrt_api_names.py checks this).
"""
from __future__ import annotations

import collections
import logging
import threading
from types import ModuleType
from typing import Any

from ..atomic import write_bytes as write_bytes_atomic  # noqa: F401  (re-exported for the builder)
from ..errors import EngineError

INPUT_NAME = "mel"
OUTPUT_NAME = "wav"

MIN_TENSORRT = (10, 12)
"""Oldest TensorRT with the one code path used here: strongly typed networks, no precision flags
(weak typing is deprecated from 10.12 and removed in 11.0)."""

INSTALL_HINT = (
    "pip install 'hifitrt[gpu]' (TensorRT >= 10.12 wheels from NVIDIA) on a machine with an NVIDIA GPU, "
    "or use --backend onnxruntime"
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


def tensorrt_version(trt: Any) -> str:
    return str(getattr(trt, "__version__", "unknown"))


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
    version = tensorrt_version(trt)
    numbers = version_tuple(version)
    if len(numbers) < 2 or numbers[:2] < MIN_TENSORRT:
        raise EngineError(
            f"TensorRT {version} is too old: hifitrt needs TensorRT >= "
            f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} (strongly typed networks); {INSTALL_HINT}"
        )


# ILogger::Severity values (NvInferRuntimeBase.h): kINTERNAL_ERROR=0, kERROR=1, kWARNING=2,
# kINFO=3, kVERBOSE=4. The Python enum is arithmetic, so int(severity) gives these numbers.
_SEVERITY_TO_LEVEL = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.DEBUG, 4: logging.DEBUG}


def create_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards to Python logging and remembers recent errors.

    TensorRT reports why something failed (a plan for another GPU, an unsupported layer) only
    through its logger, while the API returns None/False. Keeping the last errors lets
    :class:`EngineError` messages say what TensorRT said. TensorRT may log from its own worker
    threads, so the memory is guarded by a lock. The caller must keep the returned object alive
    as long as any builder/runtime/engine created with it.
    """

    class HifitrtTrtLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self._errors: collections.deque[tuple[int, str]] = collections.deque(maxlen=16)
            self._count = 0
            self._lock = threading.Lock()

        def log(self, severity: Any, msg: str) -> None:  # called by TensorRT
            level = _SEVERITY_TO_LEVEL.get(int(severity), logging.INFO)
            _LOG.log(level, "TensorRT: %s", msg)
            if level >= logging.ERROR:
                with self._lock:
                    self._count += 1
                    self._errors.append((self._count, " ".join(str(msg).split())))

        def mark(self) -> int:
            """A position: ``recent_errors(since=mark)`` then reports only later errors."""
            with self._lock:
                return self._count

        def recent_errors(self, limit: int = 3, since: int = 0) -> str:
            """The last ``limit`` errors logged after ``since``, on one line ('' when none)."""
            with self._lock:
                items = [text for number, text in self._errors if number > since][-limit:]
            return " | ".join(items)

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
