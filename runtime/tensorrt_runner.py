"""Run a TensorRT plan: the TensorRT implementation of hifitrt's runner interface.

``TensorRTRunner(plan).infer(mel [B, C, T] float32) -> wav [B, 1, T*hop] float32``.

TensorRT facts this follows (TensorRT 10.12+/11.x Python API, names in both 10.16 and 11.1):

* ``Runtime.deserialize_cuda_engine`` returns None for a plan of another TensorRT version or
  GPU, or damaged bytes; the reason is only logged, so the logger's last error is quoted.
* An execution context must not be used by two threads at once, while several contexts of one
  engine may run concurrently on separate streams. So each calling thread gets its own context
  and CUDA stream (plus its own reusable input/output buffers).
* Per call: ``set_optimization_profile_async`` (only when the profile changes: switching costs
  an update on the next enqueue), then ``set_input_shape`` (False outside the profile),
  ``infer_shapes`` (names of inputs still unspecified; empty = ready), output shape from
  ``get_tensor_shape``, ``set_tensor_address`` for both tensors, ``execute_async_v3(stream)``.
* The plan is never given permission to run host code (``engine_host_code_allowed`` stays off).

Shapes outside every profile raise :class:`EngineError`: splitting long input into chunks with
context is the job of the higher-level runtime. Naming rule for tests/test_tensorrt_api_names.py:
TensorRT objects live in variables/attributes named ``trt``, ``runtime``, ``engine``,
``context``; every attribute used on them exists in TensorRT 10.16 and 11.1.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engines.profiles import ShapeProfile, describe_profiles, profile_for_shape
from ..engines.tensorrt_common import (
    INPUT_NAME,
    OUTPUT_NAME,
    create_logger,
    dims_to_tuple,
    dtype_name,
    import_tensorrt,
    said,
    tensorrt_version,
)
from ..errors import EngineError, InputError
from .device import DeviceBackend, TorchCudaBackend
from .runners import Runner

_LOG = logging.getLogger(__name__)

# TensorRT DataType name -> numpy dtype of the I/O buffers hifitrt supports.
_NUMPY_DTYPES = {"FLOAT": np.dtype(np.float32), "HALF": np.dtype(np.float16)}


@dataclass
class _Slot:
    """One thread's execution context, stream and reusable buffers."""

    context: Any
    stream: Any
    stream_handle: int
    profile_index: int | None = None  # None: not selected explicitly yet
    input_buffer: Any = None
    output_buffer: Any = None


class TensorRTRunner(Runner):
    """Runner over a serialized TensorRT plan (see module doc).

    ``device`` is ``"cuda"``/``"cuda:N"`` (torch CUDA memory and streams) or a
    :class:`DeviceBackend` (tests pass the CPU backend of the TensorRT test double together
    with ``trt_module=`` the double).
    """

    name = "tensorrt"
    strict_profiles = True  # shapes outside every profile fail (the caller chunks them)

    def __init__(self, plan_path: str | Path, *, trt_module: Any = None, device: str | DeviceBackend = "cuda") -> None:
        super().__init__()
        self.plan_path = Path(plan_path)
        self._trt = import_tensorrt(trt_module)
        self._backend = device if isinstance(device, DeviceBackend) else TorchCudaBackend(device)
        if not self.plan_path.is_file():
            raise EngineError(f"TensorRT plan {self.plan_path} does not exist: build it with `tts-build-engine build`")
        self._logger = create_logger(self._trt)
        self._local = threading.local()
        self._slots: list[_Slot] = []
        self._slots_lock = threading.Lock()
        self._closed = False
        with self._backend.scope():
            self._runtime, self._engine = self._deserialize(self.plan_path.read_bytes())
        self._input_dtype, self._output_dtype, self.in_channels = self._check_io()
        self.profiles = self._read_profiles()

    # -- loading ---------------------------------------------------------------------------

    def _deserialize(self, plan: bytes) -> tuple[Any, Any]:
        runtime = self._trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(
                f"TensorRT {tensorrt_version(self._trt)} cannot load {self.plan_path}{said(self._logger)}: "
                "plans only load with the TensorRT version and GPU model they were built for; rebuild the engine "
                "on this machine (tts-build-engine build)"
            )
        return runtime, engine

    def _check_io(self) -> tuple[np.dtype, np.dtype, int]:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        modes = {name: engine.get_tensor_mode(name) for name in names}
        trt = self._trt
        if modes.get(INPUT_NAME) != trt.TensorIOMode.INPUT or modes.get(OUTPUT_NAME) != trt.TensorIOMode.OUTPUT:
            raise EngineError(
                f"{self.plan_path} has tensors {names}, expected input '{INPUT_NAME}' and output "
                f"'{OUTPUT_NAME}': it was not built by hifitrt; rebuild it"
            )
        dtypes = []
        for name in (INPUT_NAME, OUTPUT_NAME):
            type_name = dtype_name(engine.get_tensor_dtype(name))
            if type_name not in _NUMPY_DTYPES:
                raise EngineError(f"tensor '{name}' of {self.plan_path} is {type_name}; hifitrt supports FLOAT or HALF I/O")
            dtypes.append(_NUMPY_DTYPES[type_name])
        shape = dims_to_tuple(engine.get_tensor_shape(INPUT_NAME))
        if shape is None or len(shape) != 3 or shape[1] < 1:
            raise EngineError(f"input '{INPUT_NAME}' of {self.plan_path} has shape {shape}, expected [batch, channels, frames]")
        return dtypes[0], dtypes[1], int(shape[1])

    def _read_profiles(self) -> tuple[ShapeProfile, ...]:
        """The engine's optimization profiles for ``mel``, in engine order (index = position)."""
        engine = self._engine
        profiles = []
        for index in range(engine.num_optimization_profiles):
            shapes = [dims_to_tuple(dims) for dims in engine.get_tensor_profile_shape(INPUT_NAME, index)]
            if len(shapes) != 3 or any(s is None for s in shapes):
                raise EngineError(f"{self.plan_path}: cannot read optimization profile {index}; rebuild the engine")
            profiles.append(ShapeProfile.from_shapes(shapes[0], shapes[1], shapes[2], name=f"profile{index}"))
        return tuple(profiles)

    # -- per-thread execution contexts -----------------------------------------------------

    def _slot(self) -> _Slot:
        slot = getattr(self._local, "slot", None)
        if slot is not None:
            return slot
        # Creating contexts from one engine is thread-safe in TensorRT; the list is ours.
        context = self._engine.create_execution_context()
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.plan_path}{said(self._logger)}")
        stream = self._backend.stream()
        slot = _Slot(context=context, stream=stream, stream_handle=self._backend.stream_handle(stream))
        with self._slots_lock:
            if self._closed:
                raise EngineError("this TensorRT runner is closed; create a new one")
            self._slots.append(slot)
        self._local.slot = slot
        return slot

    def _buffer(self, slot: _Slot, which: str, numel: int, reserve: int, dtype: np.dtype) -> Any:
        """Reuse the slot's buffer when it holds ``numel``, else replace it by one of
        max(numel, reserve) elements (buffers never shrink)."""
        attr = f"{which}_buffer"
        current = getattr(slot, attr)
        if current is None or self._backend.capacity(current) < numel:
            setattr(slot, attr, None)  # free the old one before allocating the larger
            current = self._backend.empty(max(numel, reserve), dtype, slot.stream)
            setattr(slot, attr, current)
        return current

    # -- inference ---------------------------------------------------------------------------

    def infer(self, mel: np.ndarray) -> np.ndarray:
        """Vocode ``mel`` [B, C, T] -> wav [B, 1, T*hop] float32. Thread-safe (one context per thread)."""
        if self._closed:
            raise EngineError("this TensorRT runner is closed; create a new one")
        mel = self._check_input(mel)
        batch, _, frames = mel.shape
        index = profile_for_shape(self.profiles, batch, frames)
        if index is None:
            raise EngineError(
                f"mel of shape {list(mel.shape)} is outside every optimization profile of {self.plan_path} "
                f"({describe_profiles(self.profiles)}): split long input into chunks (VocoderEngine does) or "
                "rebuild with a profile that covers it"
            )
        started = time.perf_counter()
        with self._backend.scope():
            slot = self._slot()
            wav = self._run(slot, index, mel)
        self.last_inference_time = time.perf_counter() - started
        return wav.astype(np.float32, copy=False)

    def _check_input(self, mel: Any) -> np.ndarray:
        if not isinstance(mel, np.ndarray):
            raise InputError(f"mel must be a numpy array, got {type(mel).__name__}")
        if mel.ndim != 3 or mel.shape[1] != self.in_channels:
            raise InputError(
                f"mel has shape {list(mel.shape)}, expected [batch, {self.in_channels}, frames] for this engine"
            )
        if mel.shape[0] < 1 or mel.shape[2] < 1:
            raise InputError(f"mel of shape {list(mel.shape)} is empty")
        if not np.issubdtype(mel.dtype, np.floating):
            raise InputError(f"mel has dtype {mel.dtype}, expected float32")
        if not np.isfinite(mel).all():
            raise InputError("mel contains NaN or Inf values: check the acoustic model's output")
        return np.ascontiguousarray(mel, dtype=self._input_dtype)

    def _run(self, slot: _Slot, index: int, mel: np.ndarray) -> np.ndarray:
        context = slot.context
        mark = self._logger.mark()  # quote only what TensorRT logs during this call
        if slot.profile_index != index:
            # The Python binding raises RuntimeError on failure (the C++ API returns false).
            try:
                accepted = context.set_optimization_profile_async(index, slot.stream_handle)
            except RuntimeError as exc:
                raise EngineError(f"TensorRT refused optimization profile {index}: {exc}{said(self._logger, mark)}") from exc
            if accepted is False:
                raise EngineError(f"TensorRT refused optimization profile {index}{said(self._logger, mark)}")
            slot.profile_index = index
        shape = tuple(int(d) for d in mel.shape)
        if not context.set_input_shape(INPUT_NAME, shape):
            raise EngineError(
                f"TensorRT refused input shape {list(shape)} for profile {index} of {self.plan_path} "
                f"({describe_profiles(self.profiles)}){said(self._logger, mark)}"
            )
        try:
            missing = list(context.infer_shapes())  # raises RuntimeError on a negative error code
        except RuntimeError as exc:
            raise EngineError(f"TensorRT shape inference failed for input {list(shape)}: {exc}{said(self._logger, mark)}") from exc
        if missing:
            raise EngineError(f"TensorRT still needs shapes for inputs {missing}; the plan was not built by hifitrt")
        out_shape = dims_to_tuple(context.get_tensor_shape(OUTPUT_NAME))
        if out_shape is None or any(d < 0 for d in out_shape):
            raise EngineError(f"TensorRT could not infer the output shape for input {list(shape)}{said(self._logger, mark)}")

        # Size new buffers for the profile's largest shape (output scales with batch x frames), so
        # a context allocates at most once per profile instead of at every longer input.
        profile = self.profiles[index]
        scale = (profile.batch_max * profile.frames_max) / (shape[0] * shape[2])
        out_numel = int(np.prod(out_shape))
        input_buffer = self._buffer(slot, "input", mel.size, int(mel.size * scale), self._input_dtype)
        output_buffer = self._buffer(slot, "output", out_numel, int(np.ceil(out_numel * scale)), self._output_dtype)
        self._backend.copy_from_numpy(input_buffer, mel, slot.stream)
        if not context.set_tensor_address(INPUT_NAME, self._backend.address(input_buffer)):
            raise EngineError(f"TensorRT refused the input buffer address{said(self._logger, mark)}")
        if not context.set_tensor_address(OUTPUT_NAME, self._backend.address(output_buffer)):
            raise EngineError(f"TensorRT refused the output buffer address{said(self._logger, mark)}")
        if not context.execute_async_v3(slot.stream_handle):
            raise EngineError(f"TensorRT inference failed for input {list(shape)}{said(self._logger, mark)}")
        return self._backend.to_numpy(output_buffer, out_shape, slot.stream)

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release contexts, buffers, engine and runtime (in that order). Idempotent."""
        with self._slots_lock:
            if self._closed:
                return
            self._closed = True
            slots, self._slots = self._slots, []
        for slot in slots:
            try:
                self._backend.synchronize(slot.stream)
            except Exception:  # pragma: no cover - best effort on shutdown
                _LOG.debug("stream synchronize failed during close", exc_info=True)
        slots.clear()
        self._local = threading.local()
        self._engine = None
        self._runtime = None

    def __enter__(self) -> "TensorRTRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorRTRunner({str(self.plan_path)!r}, profiles={len(self.profiles)}, device={self._backend.name!r})"
