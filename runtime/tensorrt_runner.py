"""Run a TensorRT plan: the TensorRT implementation of hifitrt's runner interface.

``TensorRTRunner(plan).infer(mel [B, C, T] float32) -> wav [B, 1, T*hop] float32``.

TensorRT facts this follows (TensorRT 10.12+/11.x Python API, names in 10.16, 11.1 and 11.4):

* ``Runtime.deserialize_cuda_engine`` returns None for a plan of another TensorRT version or
  GPU, or damaged bytes; the reason is only logged, so the logger's last error is quoted.
* Version-compatible plans (built with ``VERSION_COMPATIBLE`` + ``EXCLUDE_LEAN_RUNTIME``) run on
  a newer TensorRT only through the lean runtime of the version that built them: when the
  caller says which version built the plan (``built_with``, from the manifest) and it differs,
  that version's ``libnvinfer_lean`` is found (engines/tensorrt_install.py says where) and
  loaded with ``Runtime.load_runtime``; without it the runner refuses with the pip command
  that installs it. Host code is never allowed (``engine_host_code_allowed`` stays off).
* An execution context must not be used by two threads at once, while several contexts of one
  engine may run concurrently on separate streams. Each context reserves device memory for
  its activations (with the default STATIC strategy: enough for the largest profile). So the
  runner keeps a bounded pool of at most ``max_contexts`` contexts, each with its own CUDA
  stream and reusable buffers; a call checks one out and returns it, and callers beyond the
  pool wait. Memory is bounded by the pool, not by how many threads ever called ``infer``.
  ``context_memory="on_profile_change"`` creates contexts with
  ``ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE``: each then holds memory for its
  current profile only (reallocated when it switches), and the pool prefers a context already
  on the profile a call needs.
* Per call: ``set_optimization_profile_async`` (only when the profile changes: switching costs
  an update on the next enqueue), then ``set_input_shape`` (False outside the profile),
  ``infer_shapes`` (names of inputs still unspecified; empty = ready), output shape from
  ``get_tensor_shape``, ``set_tensor_address`` for both tensors, ``execute_async_v3(stream)``.

Shapes outside every profile raise :class:`EngineError`: splitting long input into chunks with
context is the job of the higher-level runtime. Naming rule for tests/test_tensorrt_api_names.py:
TensorRT objects live in variables/attributes named ``trt``, ``runtime``, ``lean_runtime``,
``engine``, ``context``; every attribute used on them exists in TensorRT 10.16, 11.1 and 11.4.
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
from ..engines.tensorrt_install import (
    LEAN_LIBRARY_ENV,
    find_lean_runtime,
    lean_wheel,
    tensorrt_cuda_major,
    version_compatible_runtime_ok,
)
from ..errors import EngineError
from .device_memory import DeviceBackend, TorchCudaBackend
from .runners import Runner

_LOG = logging.getLogger(__name__)

# TensorRT DataType name -> numpy dtype of the I/O buffers hifitrt supports.
_NUMPY_DTYPES = {"FLOAT": np.dtype(np.float32), "HALF": np.dtype(np.float16)}

DEFAULT_MAX_CONTEXTS = 2
"""Two contexts let one call copy while another computes; servers pass their worker count."""
CONTEXT_MEMORY_CHOICES = ("static", "on_profile_change")


@dataclass
class _Slot:
    """One execution context with its stream and reusable buffers (used by one call at a time)."""

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
    with ``trt_module=`` the double). ``max_contexts`` bounds the execution contexts (and so
    the device memory) however many threads call :meth:`infer`; ``context_memory`` is
    ``"static"`` (TensorRT's default) or ``"on_profile_change"``. ``built_with`` and
    ``version_compatible`` describe the plan (the manifest records both); ``lean_runtime``
    names the build version's ``libnvinfer_lean`` explicitly (default: looked up).
    """

    name = "tensorrt"
    strict_profiles = True  # shapes outside every profile fail (the caller chunks them)

    def __init__(
        self,
        plan_path: str | Path,
        *,
        trt_module: Any = None,
        device: str | DeviceBackend = "cuda",
        max_contexts: int = DEFAULT_MAX_CONTEXTS,
        context_memory: str = "static",
        built_with: str | None = None,
        version_compatible: bool = False,
        lean_runtime: str | Path | None = None,
    ) -> None:
        super().__init__()
        if isinstance(max_contexts, bool) or not isinstance(max_contexts, int) or max_contexts < 1:
            raise EngineError(f"max_contexts {max_contexts!r} must be a whole number >= 1")
        if context_memory not in CONTEXT_MEMORY_CHOICES:
            raise EngineError(f"context_memory {context_memory!r} must be one of {', '.join(CONTEXT_MEMORY_CHOICES)}")
        self.plan_path = Path(plan_path)
        self.max_contexts = max_contexts
        self.context_memory = context_memory
        self._trt = import_tensorrt(trt_module)
        self._backend = device if isinstance(device, DeviceBackend) else TorchCudaBackend(device)
        if not self.plan_path.is_file():
            raise EngineError(f"TensorRT plan {self.plan_path} does not exist: build it with `tts-build-engine build`")
        self._logger = create_logger(self._trt)
        self._pool = threading.Condition()
        self._idle: list[_Slot] = []
        self._contexts = 0  # contexts alive: idle + checked out
        self._in_use = 0
        self._closed = False
        self.lean_runtime_path: Path | None = None
        with self._backend.scope():
            self._runtime, self._lean_runtime, self._engine = self._deserialize(
                self.plan_path.read_bytes(), built_with, version_compatible, lean_runtime
            )
        self._input_dtype, self._output_dtype, self.in_channels = self._check_io()
        self.profiles = self._read_profiles()

    # -- loading ---------------------------------------------------------------------------

    def _deserialize(
        self, plan: bytes, built_with: str | None, version_compatible: bool, lean_path: str | Path | None
    ) -> tuple[Any, Any, Any]:
        """(runtime, lean runtime or None, engine): the lean runtime of ``built_with`` runs a
        version-compatible plan from another TensorRT version (see module doc)."""
        here = tensorrt_version(self._trt) or "unknown"
        runtime = self._trt.Runtime(self._logger)
        lean_runtime = None
        if built_with and built_with != here and version_compatible:
            lean_runtime = self._load_lean_runtime(runtime, built_with, here, lean_path)
        if lean_runtime is not None:
            engine = lean_runtime.deserialize_cuda_engine(plan)
        else:
            engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            built = f" (built by TensorRT {built_with})" if built_with and built_with != here else ""
            raise EngineError(
                f"TensorRT {here} cannot load {self.plan_path}{built}{said(self._logger)}: plans only load with the "
                "TensorRT version and GPU model they were built for; rebuild the engine on this machine "
                "(tts-build-engine build)"
            )
        return runtime, lean_runtime, engine

    def _load_lean_runtime(self, runtime: Any, built_with: str, here: str, lean_path: str | Path | None) -> Any:
        if not version_compatible_runtime_ok(built_with, here):
            raise EngineError(
                f"{self.plan_path} was built version-compatible by TensorRT {built_with}, which TensorRT {here} cannot "
                "run (only the same or a newer release of the same major, or 10.x plans on 11.x): rebuild the engine here"
            )
        path = find_lean_runtime(built_with, explicit=lean_path)
        if path is None:
            raise EngineError(
                f"{self.plan_path} was built version-compatible by TensorRT {built_with} and runs on TensorRT {here} only "
                f"through the {built_with} lean runtime: pip install {lean_wheel(built_with, tensorrt_cuda_major())} "
                f"(or set {LEAN_LIBRARY_ENV} to its libnvinfer_lean.so), or rebuild the engine here"
            )
        lean_runtime = runtime.load_runtime(str(path))
        if lean_runtime is None:
            raise EngineError(
                f"TensorRT {here} could not load the TensorRT {built_with} lean runtime {path}{said(self._logger)}: "
                f"install {lean_wheel(built_with, tensorrt_cuda_major())} or rebuild the engine here"
            )
        self.lean_runtime_path = path
        _LOG.info("running %s (TensorRT %s) through the lean runtime %s", self.plan_path, built_with, path)
        return lean_runtime

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
        """The engine's optimization profiles for ``mel``, in engine order (index = position).

        TensorRT before 11.4 returns invalid Dims for a bad name/index; 11.4 raises. Both become
        an EngineError here.
        """
        engine = self._engine
        profiles = []
        for index in range(engine.num_optimization_profiles):
            try:
                shapes = [dims_to_tuple(dims) for dims in engine.get_tensor_profile_shape(INPUT_NAME, index)]
            except (RuntimeError, ValueError, IndexError) as exc:
                raise EngineError(f"{self.plan_path}: cannot read optimization profile {index} ({exc}); rebuild the engine") from exc
            if len(shapes) != 3 or any(s is None for s in shapes):
                raise EngineError(f"{self.plan_path}: cannot read optimization profile {index}; rebuild the engine")
            profiles.append(ShapeProfile.from_shapes(shapes[0], shapes[1], shapes[2], name=f"profile{index}"))
        return tuple(profiles)

    # -- the bounded pool of execution contexts ---------------------------------------------

    @property
    def context_count(self) -> int:
        """Execution contexts alive now (never more than ``max_contexts``)."""
        with self._pool:
            return self._contexts

    def _checkout(self, profile_index: int) -> _Slot:
        """An idle context (preferably one already on ``profile_index``), a new one while the
        pool is below ``max_contexts``, or wait for one to come back."""
        with self._pool:
            while True:
                if self._closed:
                    raise EngineError("this TensorRT runner is closed; create a new one")
                if self._idle:
                    same = [i for i, slot in enumerate(self._idle) if slot.profile_index == profile_index]
                    slot = self._idle.pop(same[-1] if same else -1)
                    self._in_use += 1
                    return slot
                if self._contexts < self.max_contexts:
                    self._contexts += 1
                    self._in_use += 1
                    break
                self._pool.wait()
        try:  # outside the lock: a new context allocates device memory
            return self._new_slot()
        except BaseException:
            with self._pool:
                self._contexts -= 1
                self._in_use -= 1
                self._pool.notify_all()
            raise

    def _checkin(self, slot: _Slot) -> None:
        with self._pool:
            self._in_use -= 1
            self._idle.append(slot)
            self._pool.notify_all()

    def _new_slot(self) -> _Slot:
        # Creating contexts from one engine is thread-safe in TensorRT.
        engine = self._engine
        if self.context_memory == "on_profile_change":
            context = engine.create_execution_context(self._trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE)
        else:
            context = engine.create_execution_context()
        if context is None:
            raise EngineError(
                f"TensorRT could not create an execution context for {self.plan_path}{said(self._logger)}: "
                "the GPU is probably out of memory; lower max_contexts or use smaller profiles"
            )
        stream = self._backend.stream()
        return _Slot(context=context, stream=stream, stream_handle=self._backend.stream_handle(stream))

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

    def _infer(self, mel: np.ndarray) -> np.ndarray:
        """Vocode ``mel`` [B, C, T] -> wav [B, 1, T*hop] float32 (validated by ``Runner.infer``,
        which also checks the output). Thread-safe: each call uses one context of the pool;
        callers beyond ``max_contexts`` wait for one."""
        if self._closed:
            raise EngineError("this TensorRT runner is closed; create a new one")
        mel = np.ascontiguousarray(mel, dtype=self._input_dtype)
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
            slot = self._checkout(index)
            try:
                wav = self._run(slot, index, mel)
            finally:
                self._checkin(slot)
        self.last_inference_time = time.perf_counter() - started
        return wav.astype(np.float32, copy=False)

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
        """Refuse new calls, wait for the calls in flight, then release contexts, buffers,
        engine and runtimes (in that order). Idempotent; safe while other threads call infer."""
        with self._pool:
            if self._closed:
                return
            self._closed = True
            self._pool.notify_all()  # callers waiting for a context now get EngineError
            while self._in_use:
                self._pool.wait()
            slots, self._idle = self._idle, []
            self._contexts = 0
        for slot in slots:
            try:
                self._backend.synchronize(slot.stream)
            except Exception:  # pragma: no cover - best effort on shutdown
                _LOG.debug("stream synchronize failed during close", exc_info=True)
        slots.clear()
        self._engine = None
        self._lean_runtime = None
        self._runtime = None

    def __enter__(self) -> "TensorRTRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TensorRTRunner({str(self.plan_path)!r}, profiles={len(self.profiles)}, "
                f"max_contexts={self.max_contexts}, device={self._backend.name!r})")
