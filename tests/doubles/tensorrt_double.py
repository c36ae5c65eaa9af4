"""TEST DOUBLE of the TensorRT Python API — not TensorRT, not an implementation of it.

CI machines have no GPU and TensorRT cannot be installed there, yet hifitrt's TensorRT builder
(engines/tensorrt_builder.py) and runner (runtime/tensorrt_runner.py) must be exercised. This
module imitates the *subset of the TensorRT 11.x Python API those two files use*, with the
semantics TensorRT documents, and raises ``AttributeError`` (or a clear error) for anything
else. Numerics are not TensorRT's: "engines" run the stored ONNX graph with ONNX Runtime on
the CPU, and "device memory" is host memory handed out by :class:`CpuDeviceBackend`.

Sources for the modelled behaviour (cited next to each rule as [src]):
  [NvInfer.h] / [NvInferRuntime.h] / [NvInferRuntimeBase.h]
                                    NVIDIA/TensorRT release/11.1 include/ (API docs in comments)
  [pyCore.cpp] / [pyOnnx.cpp] / [pyGraph.cpp] / [pyFoundationalTypes.cpp]
                                    NVIDIA/TensorRT release/11.1 python/src (Python bindings)
  [tensorrt.md]                     shared/reference/tensorrt.md (the project's TensorRT facts)
  [migration]                       NVIDIA's TensorRT 10.x -> 11.x migration guide
  [userlog]                         messages TensorRT users report (GitHub issues)
Where the double is deliberately STRICTER than TensorRT, the comment says so: it refuses
patterns hifitrt must never use (weak typing, shared contexts) instead of tolerating them.

Use ``make_tensorrt_double(version=..., compute_capability=...)`` to get a module-like object to
pass as ``trt_module=``; two doubles with different version/compute capability model a plan
moved to another TensorRT release or GPU. The default models TensorRT 11.4 (where
``get_tensor_profile_shape`` raises on a bad name or index);
``make_tensorrt_double(version="10.16.1.11")`` models the 10.x API (where ``BuilderFlag.FP16``
still exists and must fail with strong typing). Enum values are those of NVIDIA's headers for
the modelled major. What else is modelled because hifitrt depends on it:

* version compatibility: plans of another version load only when built VERSION_COMPATIBLE, via
  an embedded lean runtime (``engine_host_code_allowed``) or, with EXCLUDE_LEAN_RUNTIME, via
  ``Runtime.load_runtime(path)`` of the build version's lean library (here: a file written by
  :func:`write_lean_runtime_library`);
* device memory: every execution context holds activation memory (STATIC: the largest
  profile's; ON_PROFILE_CHANGE: its current profile's), accounted in ``double_env`` and freed
  with the context; a context that does not fit in ``device_memory`` is refused;
* timing caches: bytes TensorRT cannot use give an empty cache and two logged errors ("The
  timing cache will not be used!"), never an API failure.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import threading
import types
import weakref
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Iterator, Sequence

import numpy as np

from hifitrt.runtime.device_memory import DeviceBackend

_LOG = logging.getLogger("tensorrt_double")

DEFAULT_VERSION = "11.4.0.106"
DEFAULT_COMPUTE_CAPABILITY = (8, 9)

# A plan made by the double starts with this tag: it is obviously not a real TensorRT plan.
PLAN_MAGIC = b"HIFITRT-TENSORRT-TEST-DOUBLE-PLAN\x00"
CACHE_MAGIC = b"HIFITRT-TENSORRT-TEST-DOUBLE-TIMING-CACHE\x00"
# A "lean runtime library" of the double: this tag, then the TensorRT version it runs.
LEAN_MAGIC = b"HIFITRT-TENSORRT-TEST-DOUBLE-LEAN-RUNTIME\x00"
DEFAULT_DEVICE_MEMORY = 24 << 30  # an L4's 24 GiB
ACTIVATION_BYTES_PER_INPUT_ELEMENT = 256  # the double's model of a context's activation memory
DEVICE_ALIGNMENT = 256  # [NvInferRuntime.h] setTensorAddress: "at least 256-byte alignment"


# ----------------------------------------------------------------------------------------------
# Enums. Values follow the C++ enums of the modelled release; names absent from 11.x are absent.
# ----------------------------------------------------------------------------------------------


class Severity(IntEnum):
    # [NvInferRuntimeBase.h] ILogger::Severity; [pyCore.cpp] arithmetic enum exported into ILogger.
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class DataType(IntEnum):
    # [NvInferRuntimeBase.h] DataType values (E8M0 = 11 is not modelled).
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10


class TensorIOMode(IntEnum):
    # [NvInferRuntime.h] getTensorIOMode: kINPUT, kOUTPUT, or kNONE for other names.
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(IntEnum):
    # [NvInfer.h] MemoryPoolType.
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class HardwareCompatibilityLevel(IntEnum):
    # [NvInfer.h] kNONE = 0, kAMPERE_PLUS = 1, kSAME_COMPUTE_CAPABILITY = 2.
    NONE = 0
    AMPERE_PLUS = 1
    SAME_COMPUTE_CAPABILITY = 2


class ErrorCode(IntEnum):
    # [NvOnnxParser.h] nvonnxparser::ErrorCode (subset; kUNSUPPORTED_NODE_ATTR = 9 ... not modelled).
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


class NetworkDefinitionCreationFlag11(IntEnum):
    # [NvInfer.h 11.1] kSTRONGLY_TYPED = 0 ("deprecated in 11.0, always enabled, ignored").
    # kEXPLICIT_BATCH is gone in 11.x [migration].
    STRONGLY_TYPED = 0
    PREFER_JIT_PYTHON_PLUGINS = 1
    PREFER_AOT_PYTHON_PLUGINS = 2


class NetworkDefinitionCreationFlag10(IntEnum):
    # [NvInfer.h 10.16] kEXPLICIT_BATCH = 0 (deprecated, ignored), kSTRONGLY_TYPED = 1.
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1
    PREFER_JIT_PYTHON_PLUGINS = 2
    PREFER_AOT_PYTHON_PLUGINS = 3


class BuilderFlag11(IntEnum):
    # [NvInfer.h 11.1] enum class BuilderFlag (values as in the header; subset). FP16/BF16/INT8/
    # FP8/INT4/FP4 and the precision-constraint flags do not exist in 11.x [migration]:
    # BuilderFlag.FP16 -> AttributeError.
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 4
    DISABLE_TIMING_CACHE = 5
    TF32 = 6
    SPARSE_WEIGHTS = 7
    VERSION_COMPATIBLE = 12
    EXCLUDE_LEAN_RUNTIME = 13
    ERROR_ON_TIMING_CACHE_MISS = 15


class BuilderFlag10(IntEnum):
    # [NvInfer.h 10.16] enum class BuilderFlag (values as in the header; subset), with the
    # weak-typing precision flags (deprecated since 10.12).
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 4
    DISABLE_TIMING_CACHE = 5
    TF32 = 6
    SPARSE_WEIGHTS = 7
    OBEY_PRECISION_CONSTRAINTS = 9
    PREFER_PRECISION_CONSTRAINTS = 10
    VERSION_COMPATIBLE = 13
    EXCLUDE_LEAN_RUNTIME = 14
    FP8 = 15
    ERROR_ON_TIMING_CACHE_MISS = 16
    BF16 = 17
    INT4 = 22
    FP4 = 26


class ExecutionContextAllocationStrategy(IntEnum):
    # [NvInferRuntime.h] kSTATIC = 0 ("Default static allocation with the maximum size across
    # all profiles"), kON_PROFILE_CHANGE = 1 ("Reallocate for a profile when it's selected"),
    # kUSER_MANAGED = 2 (the double does not model user-managed memory).
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


_PRECISION_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4")

_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 9: "BOOL", 2: "UINT8", 16: "BF16", 7: "INT64"}
_TRT_TO_NUMPY = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT64": np.int64,
}


class Dims(tuple):
    """Stand-in for ``trt.Dims``: a sequence of ints (-1 = dynamic). Empty = TensorRT's Dims{-1}."""


# ----------------------------------------------------------------------------------------------
# Common machinery
# ----------------------------------------------------------------------------------------------


class _Strict:
    """Refuse setting attributes TensorRT does not have (plain Python objects would accept them)."""

    _SETTABLE: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in self._SETTABLE:
            object.__setattr__(self, name, value)
            return
        raise AttributeError(
            f"TensorRT test double: {type(self).__name__} has no settable attribute {name!r} "
            "(not part of the modelled TensorRT API)"
        )


class ILogger:
    """[pyCore.cpp] ``trt.ILogger``: subclass it, call ``ILogger.__init__(self)``, override log()."""

    Severity = Severity
    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        pass

    def log(self, severity: Severity, msg: str) -> None:  # pure virtual in TensorRT
        raise NotImplementedError("ILogger.log must be overridden")


class Logger(ILogger):
    """[pyCore.cpp] ``trt.Logger(min_severity=WARNING)``: prints messages at or above min_severity."""

    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = Severity(min_severity)

    def log(self, severity: Severity, msg: str) -> None:
        if int(severity) <= int(self.min_severity):
            _LOG.warning("[TRT double] [%s] %s", Severity(severity).name, msg)


def _emit(logger: ILogger, severity: Severity, msg: str) -> None:
    # [pyCore.cpp] PyLogger::log catches exceptions raised by Python log() and prints them.
    try:
        logger.log(severity, msg)
    except Exception as exc:  # pragma: no cover
        _LOG.error("exception in log(): %s", exc)


def _require_logger(logger: Any) -> ILogger:
    if not isinstance(logger, ILogger):
        raise TypeError("TensorRT test double: expected a tensorrt.ILogger instance")
    return logger


@dataclass
class _Env:
    """The modelled installation: TensorRT version and GPU compute capability."""

    version: str
    compute_capability: tuple[int, int]
    device_name: str
    major: int
    flags_enum: type[IntEnum]
    network_flags_enum: type[IntEnum]
    last_build_stats: dict[str, int] = field(default_factory=dict)
    builds: int = 0
    device_memory: int = DEFAULT_DEVICE_MEMORY
    device_memory_in_use: int = 0  # bytes held by live execution contexts
    device_memory_peak: int = 0
    memory_lock: threading.Lock = field(default_factory=threading.Lock)

    def reserve(self, nbytes: int) -> bool:
        """Take ``nbytes`` of the modelled device memory (False when it does not fit)."""
        with self.memory_lock:
            if self.device_memory_in_use + nbytes > self.device_memory:
                return False
            self.device_memory_in_use += nbytes
            self.device_memory_peak = max(self.device_memory_peak, self.device_memory_in_use)
            return True

    def release(self, nbytes: int) -> None:
        with self.memory_lock:
            self.device_memory_in_use -= nbytes


class IHostMemory(_Strict):
    """[pyFoundationalTypes.cpp] bytes owned by TensorRT; exposes ``nbytes`` and the buffer
    protocol. A pure-Python double cannot offer the buffer protocol on Python < 3.12, so it
    offers ``bytes(obj)`` (which is what ``bytes()`` of a real IHostMemory returns)."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    @property
    def nbytes(self) -> int:
        return len(self._data)

    def __bytes__(self) -> bytes:
        return self._data


def _as_bytes(buffer: Any) -> bytes:
    if isinstance(buffer, IHostMemory):
        return bytes(buffer)
    if isinstance(buffer, (bytes, bytearray, memoryview)):
        return bytes(buffer)
    raise TypeError(f"TensorRT test double: expected a buffer (bytes), got {type(buffer).__name__}")


# ----------------------------------------------------------------------------------------------
# Network definition and ONNX parser
# ----------------------------------------------------------------------------------------------


class ITensor(_Strict):
    """[pyGraph.cpp] ITensor: ``name``, ``shape`` (Dims, -1 = dynamic), ``dtype``."""

    def __init__(self, name: str, shape: Sequence[int], dtype: DataType) -> None:
        self._name = name
        self._shape = Dims(int(d) for d in shape)
        self._dtype = dtype

    @property
    def name(self) -> str:
        return self._name

    @property
    def shape(self) -> Dims:
        return self._shape

    @property
    def dtype(self) -> DataType:
        return self._dtype


class ILayer(_Strict):
    """One layer per ONNX node in the double (TensorRT fuses/splits; the double does not)."""

    def __init__(self, name: str, op_type: str, outputs: list[ITensor]) -> None:
        self._name = name
        self._op_type = op_type
        self._outputs = outputs

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]


class INetworkDefinition(_Strict):
    """[NvInfer.h] A strongly typed network: every tensor type comes from the ONNX graph
    ("type inference rules and the inputs/operator annotations"); there is no API in the double
    to change a layer's precision (ILayer.precision/set_output_type are gone in 11.x [migration])."""

    def __init__(self, env: _Env, flags: int) -> None:
        self._env = env
        self._flags = flags
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._layers: list[ILayer] = []
        self._onnx: bytes | None = None

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, index: int) -> ILayer:
        return self._layers[index]


class ParserError(_Strict):
    """[pyOnnx.cpp] ``ParserError``: code(), desc(), file(), line(), func(), node(), node_name(),
    node_operator(), local_function_stack() — all methods, not properties."""

    def __init__(self, code: ErrorCode, desc: str, node: int = -1, node_name: str = "", node_operator: str = "") -> None:
        self._code = code
        self._desc = desc
        self._node = node
        self._node_name = node_name
        self._node_operator = node_operator

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def file(self) -> str:
        return "tensorrt_double.py"

    def line(self) -> int:
        return 0

    def func(self) -> str:
        return "parseGraph"

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._node_name

    def node_operator(self) -> str:
        return self._node_operator

    def local_function_stack(self) -> list[str]:
        return []

    def __str__(self) -> str:
        return f"In node {self._node} ({self.func()}): {self._code.name}: {self._desc}"


class OnnxParser(_Strict):
    """[pyOnnx.cpp] ``OnnxParser(network, logger)``: parse(model, path=None), parse_from_file(model),
    num_errors, get_error(index), clear_errors(). parse* return False and record errors."""

    _MAX_OPSET = 24  # [tensorrt.md] ONNX opset supported by TensorRT 11.4: up to 24

    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        if not isinstance(network, INetworkDefinition):
            raise TypeError("TensorRT test double: OnnxParser needs an INetworkDefinition")
        self._network = network
        self._logger = _require_logger(logger)
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse_from_file(self, model: str) -> bool:
        try:
            with open(model, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED, f"Failed to open file {model}: {exc}")
        return self.parse(data, path=model)

    def parse(self, model: Any, path: str | None = None) -> bool:
        import onnx
        from google.protobuf.message import DecodeError

        data = _as_bytes(model)
        if self._network._onnx is not None:
            return self._fail(ErrorCode.INVALID_GRAPH, "a model was already parsed into this network")
        try:
            proto = onnx.load_model_from_string(data)
        except (DecodeError, ValueError) as exc:
            return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED, f"Failed to parse the ONNX model: {exc}")
        if path is not None:
            from onnx.external_data_helper import load_external_data_for_model, uses_external_data

            if any(uses_external_data(t) for t in proto.graph.initializer):
                load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
        graph = proto.graph
        if not graph.node or not graph.output:
            return self._fail(ErrorCode.INVALID_GRAPH, "the ONNX graph has no nodes or no outputs")
        opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset > self._MAX_OPSET:
            return self._fail(ErrorCode.UNSUPPORTED_GRAPH, f"opset {opset} is newer than this parser supports")
        ok = True
        for index, node in enumerate(graph.node):
            if node.domain not in ("", "ai.onnx") or not onnx.defs.has(node.op_type):
                # [userlog] "No importer registered for op: X. Attempting to import as plugin."
                self._errors.append(
                    ParserError(
                        ErrorCode.UNSUPPORTED_NODE,
                        f"No importer registered for op: {node.op_type}. Attempting to import as plugin. "
                        "Plugin not found, are the plugin name, version, and namespace correct?",
                        node=index,
                        node_name=node.name,
                        node_operator=node.op_type,
                    )
                )
                ok = False
        if not ok:
            for error in self._errors:
                _emit(self._logger, Severity.ERROR, str(error))
            return False
        return self._populate(proto)

    def _populate(self, proto: Any) -> bool:
        import onnx

        graph = proto.graph
        initializers = {t.name for t in graph.initializer}
        network = self._network
        for value in graph.input:
            if value.name in initializers:
                continue
            tensor = self._tensor_from_value_info(value)
            if tensor is None:
                return False
            network._inputs.append(tensor)
        for value in graph.output:
            tensor = self._tensor_from_value_info(value)
            if tensor is None:
                return False
            network._outputs.append(tensor)
        # Strong typing: layer output types are whatever ONNX type inference says.
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
        types_by_name = {}
        for value in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
            elem = value.type.tensor_type.elem_type
            if elem in _ONNX_TO_TRT:
                types_by_name[value.name] = DataType[_ONNX_TO_TRT[elem]]
        for index, node in enumerate(graph.node):
            outputs = [ITensor(name, (), types_by_name[name]) for name in node.output if name in types_by_name]
            network._layers.append(ILayer(node.name or f"node_{index}", node.op_type, outputs))
        network._onnx = proto.SerializeToString()
        return True

    def _tensor_from_value_info(self, value: Any) -> ITensor | None:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type not in _ONNX_TO_TRT:
            self._fail(ErrorCode.UNSUPPORTED_GRAPH, f"tensor {value.name} has an ONNX type TensorRT does not support")
            return None
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        return ITensor(value.name, dims, DataType[_ONNX_TO_TRT[tensor_type.elem_type]])

    def _fail(self, code: ErrorCode, desc: str) -> bool:
        error = ParserError(code, desc)
        self._errors.append(error)
        _emit(self._logger, Severity.ERROR, str(error))
        return False


# ----------------------------------------------------------------------------------------------
# Builder, config, profiles, timing cache
# ----------------------------------------------------------------------------------------------


class IOptimizationProfile(_Strict):
    """[pyCore.cpp] set_shape(input, min, opt, max) raises RuntimeError "Shape provided for min is
    inconsistent with other shapes." when [NvInferRuntime.h] setDimensions' rules fail:
    equal ranks and 0 <= min <= opt <= max per dimension."""

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:  # noqa: A002
        shapes = [Dims(int(d) for d in s) for s in (min, opt, max)]
        labels = ("min", "opt", "max")
        for label, shape in zip(labels, shapes):
            if len(shape) != len(shapes[0]) or any(d < 0 for d in shape):
                raise RuntimeError(f"Shape provided for {label} is inconsistent with other shapes.")
        for lo, mid, hi in zip(*shapes):
            if not lo <= mid <= hi:
                raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
        self._shapes[str(input)] = (shapes[0], shapes[1], shapes[2])

    def get_shape(self, input: str) -> list[Dims]:  # noqa: A002
        return list(self._shapes.get(input, ()))


class ITimingCache(_Strict):
    """[NvInfer.h] ITimingCache: serialize(); combine(input_cache, ignore_mismatch) -> bool
    ("must be generated by a TensorRT build of exact same version, otherwise combine will be
    skipped and return false; ignoreMismatch must be true if ... created from a different
    device"); reset()."""

    def __init__(self, version: str, compute_capability: tuple[int, int], entries: dict[str, float] | None = None) -> None:
        self._version = version
        self._cc = tuple(compute_capability)
        self._entries: dict[str, float] = dict(entries or {})

    def serialize(self) -> IHostMemory:
        body = json.dumps({"version": self._version, "cc": list(self._cc), "entries": self._entries}, sort_keys=True)
        return IHostMemory(CACHE_MAGIC + body.encode())

    def combine(self, input_cache: "ITimingCache", ignore_mismatch: bool) -> bool:
        if not isinstance(input_cache, ITimingCache) or input_cache._version != self._version:
            return False
        if input_cache._cc != self._cc and not ignore_mismatch:
            return False
        for key, value in input_cache._entries.items():
            self._entries.setdefault(key, value)  # "Conflicting entries will be skipped"
        return True

    def reset(self) -> bool:
        self._entries.clear()
        return True

    @staticmethod
    def _from_bytes(data: bytes) -> "ITimingCache | None":
        if not data.startswith(CACHE_MAGIC):
            return None
        try:
            body = json.loads(data[len(CACHE_MAGIC) :].decode())
            return ITimingCache(str(body["version"]), tuple(body["cc"]), {str(k): float(v) for k, v in body["entries"].items()})
        except (ValueError, KeyError, TypeError):
            return None


class IBuilderConfig(_Strict):
    """[NvInfer.h] IBuilderConfig subset. TF32 is "Enabled by default"; the builder optimization
    level defaults to 3 (valid 0-5); hardware_compatibility_level defaults to NONE."""

    _SETTABLE = frozenset({"hardware_compatibility_level", "builder_optimization_level"})

    def __init__(self, env: _Env, logger: ILogger) -> None:
        self._env = env
        self._logger = logger
        self._flags = {env.flags_enum["TF32"]}
        self._pools: dict[MemoryPoolType, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._hw = HardwareCompatibilityLevel.NONE
        self._opt_level = 3
        self._timing_cache: ITimingCache | None = None

    def _check_flag(self, flag: Any) -> IntEnum:
        if not isinstance(flag, self._env.flags_enum):
            raise TypeError(f"TensorRT test double: expected tensorrt.BuilderFlag, got {flag!r}")
        return flag

    def set_flag(self, flag: Any) -> None:
        self._flags.add(self._check_flag(flag))

    def clear_flag(self, flag: Any) -> None:
        self._flags.discard(self._check_flag(flag))

    def get_flag(self, flag: Any) -> bool:
        return self._check_flag(flag) in self._flags

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        if not isinstance(pool, MemoryPoolType):
            raise TypeError("TensorRT test double: expected tensorrt.MemoryPoolType")
        if int(pool_size) < 0:
            raise ValueError("pool_size must be >= 0")
        self._pools[pool] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self._pools.get(pool, 1 << 40)  # default: the device's global memory

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        # [NvInfer.h] "index of the optimization profile (starting from 0) if the input is valid,
        # or -1 if the input is not valid"
        if not isinstance(profile, IOptimizationProfile) or not profile._shapes:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    @property
    def hardware_compatibility_level(self) -> HardwareCompatibilityLevel:
        return self._hw

    @hardware_compatibility_level.setter
    def hardware_compatibility_level(self, value: HardwareCompatibilityLevel) -> None:
        if not isinstance(value, HardwareCompatibilityLevel):
            raise TypeError("TensorRT test double: expected tensorrt.HardwareCompatibilityLevel")
        self._hw = value

    @property
    def builder_optimization_level(self) -> int:
        return self._opt_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
            raise ValueError("TensorRT test double: builder_optimization_level must be 0-5")
        self._opt_level = value

    def create_timing_cache(self, serialized_timing_cache: Any) -> ITimingCache:
        # [NvInfer.h] "Size 0 means create a new cache from scratch". Bytes TensorRT cannot use
        # are not an API failure: TensorRT logs why and carries on with an empty cache [userlog,
        # TensorRT#3566: "Error Code 1: Serialization (Serialization assertion magicTagRead ==
        # kMAGIC_TAG failed.Magic tag does not match)" then "Error Code 4: The timing cache will
        # not be used!"]. The double does the same for garbage and for a cache written by another
        # TensorRT version ("must be generated by a TensorRT build of exact same version").
        data = _as_bytes(serialized_timing_cache)
        empty = ITimingCache(self._env.version, self._env.compute_capability)
        if not data:
            return empty
        cache = ITimingCache._from_bytes(data)
        if cache is None:
            problem = "Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match"
        elif cache._version != self._env.version:
            problem = (f"Serialization assertion version tag failed. Timing cache version {cache._version}, "
                       f"current version {self._env.version}")
        else:
            return cache
        _emit(self._logger, Severity.ERROR, f"1: [stdArchiveReader.cpp] Error Code 1: Serialization ({problem})")
        _emit(self._logger, Severity.ERROR, "4: The timing cache will not be used!")
        return empty

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        # [NvInfer.h] "A failure will be reported if the CUDA device property in the provided
        # cache is different from current environment. ignoreMismatch = true skips strict
        # verification".
        if not isinstance(cache, ITimingCache):
            raise TypeError("TensorRT test double: expected tensorrt.ITimingCache")
        if cache._cc != tuple(self._env.compute_capability) and not ignore_mismatch:
            _emit(self._logger, Severity.ERROR, "Timing cache verification failed: device property mismatch")
            return False
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._timing_cache


class _Builder(_Strict):
    """[NvInfer.h] IBuilder subset: create_network(flags), create_builder_config(),
    create_optimization_profile(), build_serialized_network(network, config) -> IHostMemory|None."""

    _env: _Env  # bound per double module

    def __init__(self, logger: ILogger) -> None:
        self._logger = _require_logger(logger)

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        enum = self._env.network_flags_enum
        flags = int(flags)
        known = 0
        for member in enum:
            known |= 1 << int(member)
        if flags & ~known:
            raise ValueError(f"TensorRT test double: unknown network creation flags {flags:#x}")
        strongly = bool(flags & (1 << int(enum["STRONGLY_TYPED"])))
        if not strongly:
            # STRICTER than 11.x (where every network is strongly typed and the flag is ignored):
            # on 10.x omitting it creates a deprecated weakly typed network, so hifitrt's single
            # code path must always pass it.
            raise ValueError(
                "TensorRT test double: refusing a weakly typed network; pass "
                "1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)"
            )
        return INetworkDefinition(self._env, flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self._env, self._logger)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        """Validate like the builder does, then emit a double plan; None + logged error on failure."""
        env = self._env
        error = self._build_error(network, config)
        if error is not None:
            _emit(self._logger, Severity.ERROR, f"IBuilder::buildSerializedNetwork: {error}")
            return None
        session_error = _check_runs(network._onnx, config._profiles, network._inputs)
        if session_error is not None:
            _emit(self._logger, Severity.ERROR, f"IBuilder::buildSerializedNetwork: Error Code 10: Internal Error ({session_error})")
            return None
        self._update_timing_cache(network, config)
        flags = env.flags_enum
        header = {
            "format": 1,
            "tensorrt_version": env.version,
            "compute_capability": list(env.compute_capability),
            "device_name": env.device_name,
            "hardware_compatibility_level": config._hw.name,
            "version_compatible": flags["VERSION_COMPATIBLE"] in config._flags,
            "exclude_lean_runtime": flags["EXCLUDE_LEAN_RUNTIME"] in config._flags,
            "tf32": flags["TF32"] in config._flags,
            "flags": sorted(f.name for f in config._flags),
            "strongly_typed": True,
            "builder_optimization_level": config._opt_level,
            "workspace_bytes": config._pools.get(MemoryPoolType.WORKSPACE),
            "io": [_io_entry(t, "INPUT") for t in network._inputs] + [_io_entry(t, "OUTPUT") for t in network._outputs],
            "profiles": [
                {name: [list(d) for d in shapes] for name, shapes in profile._shapes.items()} for profile in config._profiles
            ],
            "layer_dtypes": {layer.name: [t.dtype.name for t in layer._outputs] for layer in network._layers},
        }
        env.builds += 1
        return IHostMemory(_pack_plan(header, network._onnx))

    def _build_error(self, network: INetworkDefinition, config: IBuilderConfig) -> str | None:
        env = self._env
        if network._onnx is None:
            return "Error Code 4: API Usage Error (network is empty: nothing was parsed into it)"
        for name in _PRECISION_FLAGS:
            member = env.flags_enum.__members__.get(name)
            if member is not None and member in config._flags:
                # [userlog] 10.x: "Error Code 3: API Usage Error (Parameter check failed,
                # condition: !config.getFlag(BuilderFlag::kFP16). )" for strongly typed networks.
                return f"Error Code 3: API Usage Error (Parameter check failed, condition: !config.getFlag(BuilderFlag::k{name}). )"
        if config._hw == HardwareCompatibilityLevel.AMPERE_PLUS and tuple(env.compute_capability) < (8, 0):
            return "Error Code 3: API Usage Error (hardware compatibility AMPERE_PLUS requires an Ampere or newer GPU)"
        dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
        if dynamic and not config._profiles:
            # [NvInfer.h] addOptimizationProfile "must be called at least once if the network has
            # dynamic or shape input tensors".
            return "Error Code 4: API Usage Error (Network has dynamic or shape inputs, but no optimization profile has been defined.)"
        inputs = {t.name: t for t in network._inputs}
        for index, profile in enumerate(config._profiles):
            for name in profile._shapes:
                if name not in inputs:
                    return f"Error Code 4: API Usage Error (optimization profile {index} names {name}, which is not a network input)"
            for tensor in dynamic:
                if tensor.name not in profile._shapes:
                    return f"Error Code 4: API Usage Error (optimization profile {index} is missing values for input {tensor.name})"
            for name, shapes in profile._shapes.items():
                network_dims = inputs[name].shape
                for shape in shapes:
                    # [NvInferRuntime.h] setDimensions rules (1) equal ranks and (3) fixed
                    # network dimensions must equal min = opt = max.
                    if len(shape) != len(network_dims):
                        return f"Error Code 4: API Usage Error (profile {index} gives {name} rank {len(shape)}, network rank {len(network_dims)})"
                    for dim, network_dim in zip(shape, network_dims):
                        if network_dim >= 0 and dim != network_dim:
                            return f"Error Code 4: API Usage Error (profile {index} dimension {dim} of {name} does not match network dimension {network_dim})"
        return None

    def _update_timing_cache(self, network: INetworkDefinition, config: IBuilderConfig) -> None:
        """Per layer and profile one "tactic timing" entry: hits when the attached cache has it."""
        hits = misses = 0
        cache = config._timing_cache
        for index, profile in enumerate(config._profiles):
            shapes = json.dumps({k: [list(d) for d in v] for k, v in profile._shapes.items()}, sort_keys=True)
            for layer in network._layers:
                key = hashlib.sha256(f"{layer._op_type}|{layer.name}|{shapes}".encode()).hexdigest()
                if cache is not None and key in cache._entries:
                    hits += 1
                else:
                    misses += 1
                    if cache is not None:
                        cache._entries[key] = 0.001 * (1 + len(cache._entries) % 7)
        self._env.last_build_stats = {"timing_cache_hits": hits, "timing_cache_misses": misses}


def _io_entry(tensor: ITensor, mode: str) -> dict[str, Any]:
    return {"name": tensor.name, "mode": mode, "dtype": tensor.dtype.name, "shape": list(tensor.shape)}


def _check_runs(onnx_bytes: bytes | None, profiles: list[IOptimizationProfile], inputs: list[ITensor]) -> str | None:
    """Like TensorRT timing kernels at profile shapes: the graph must load and run at each min shape."""
    try:
        session = _ort_session(onnx_bytes or b"")
        for profile in profiles:
            feeds = {}
            for tensor in inputs:
                shape = profile._shapes[tensor.name][0] if tensor.name in profile._shapes else tuple(tensor.shape)
                feeds[tensor.name] = np.zeros(shape, dtype=_TRT_TO_NUMPY[tensor.dtype.name])
            session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        return " ".join(str(exc).split())[:300]
    return None


def _ort_session(onnx_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------
# Plans: serialization with magic, version, device tag and checksum
# ----------------------------------------------------------------------------------------------


def _pack_plan(header: dict[str, Any], onnx_bytes: bytes | None) -> bytes:
    head = json.dumps(header, sort_keys=True).encode()
    body = PLAN_MAGIC + struct.pack("<I", len(head)) + head + struct.pack("<Q", len(onnx_bytes or b"")) + (onnx_bytes or b"")
    return body + hashlib.sha256(body).digest()


def _unpack_plan(data: bytes) -> tuple[dict[str, Any], bytes] | str:
    """(header, onnx) or the error TensorRT would log."""
    if not data.startswith(PLAN_MAGIC):
        # [userlog] "Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match"
        return "Error Code 1: Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)"
    offset = len(PLAN_MAGIC)
    truncated = "Error Code 1: Serialization (Serialization assertion sizeRead >= size failed.Plan file is truncated)"
    if len(data) < offset + 4:
        return truncated
    (head_len,) = struct.unpack_from("<I", data, offset)
    offset += 4
    if len(data) < offset + head_len + 8:
        return truncated
    head = data[offset : offset + head_len]
    offset += head_len
    (onnx_len,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    if len(data) != offset + onnx_len + 32:
        return truncated
    # STRICTER than TensorRT, which may crash or misbehave on corrupted plans: the double checks a
    # checksum so that tampered bytes reliably give None.
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        return "Error Code 1: Serialization (Serialization assertion checksum failed.Engine data is corrupted)"
    try:
        header = json.loads(head.decode())
    except ValueError:
        return "Error Code 1: Serialization (Serialization assertion header failed.Engine header is corrupted)"
    return header, data[offset : offset + onnx_len]


def inspect_plan(data: bytes) -> dict[str, Any]:
    """Test helper (not TensorRT API): the build settings recorded in a double plan."""
    unpacked = _unpack_plan(bytes(data))
    if isinstance(unpacked, str):
        raise ValueError(unpacked)
    return unpacked[0]


def repack_plan(data: bytes, **changes: Any) -> bytes:
    """Test helper: a valid double plan with header fields changed (e.g. another version tag)."""
    unpacked = _unpack_plan(bytes(data))
    if isinstance(unpacked, str):
        raise ValueError(unpacked)
    header, onnx_bytes = unpacked
    header.update(changes)
    return _pack_plan(header, onnx_bytes)


def write_lean_runtime_library(path: str | os.PathLike[str], version: str) -> str:
    """Test helper (not TensorRT API): a file the double's ``load_runtime`` accepts as the lean
    runtime library of TensorRT ``version`` (real TensorRT would dlopen libnvinfer_lean.so)."""
    with open(path, "wb") as handle:
        handle.write(LEAN_MAGIC + version.encode())
    return os.fspath(path)


def _version_numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _newer_runtime_may_run(built: str, here: str) -> bool:
    # [support matrix] a version-compatible plan runs on the same or a newer release of its
    # major, and TensorRT 10 plans on TensorRT 11; nothing else across majors.
    b, h = _version_numbers(built), _version_numbers(here)
    return bool(b) and bool(h) and h >= b and (h[0] == b[0] or (b[0], h[0]) in {(8, 10), (10, 11)})


class _Runtime(_Strict):
    """[NvInferRuntime.h] IRuntime: deserialize_cuda_engine(bytes) -> ICudaEngine, or None "if it
    could not be deserialized" (the reason goes to the logger).

    Version compatibility as documented: a plan of another version loads only when it was built
    VERSION_COMPATIBLE for a runtime that may run it, and then only through the build version's
    lean runtime: embedded in the plan (needs ``engine_host_code_allowed``, "The default value
    is false"), or, for EXCLUDE_LEAN_RUNTIME plans, loaded by ``load_runtime(path)`` ("can then
    be used to execute a plan file built with kVERSION_COMPATIBLE and kEXCLUDE_LEAN_RUNTIME both
    set and built with the same version of TensorRT as the loaded runtime library").
    """

    _env: _Env
    _SETTABLE = frozenset({"engine_host_code_allowed"})

    def __init__(self, logger: ILogger) -> None:
        self._logger = _require_logger(logger)
        self._host_code_allowed = False
        self._lean_version: str | None = None  # set on runtimes returned by load_runtime

    @property
    def engine_host_code_allowed(self) -> bool:
        return self._host_code_allowed

    @engine_host_code_allowed.setter
    def engine_host_code_allowed(self, allowed: bool) -> None:
        self._host_code_allowed = bool(allowed)

    def load_runtime(self, path: str) -> "_Runtime | None":
        """[pyCoreDoc.h] "Load IRuntime from the file ... :returns: The IRuntime, or None if it
        could not be loaded." The double's library files come from write_lean_runtime_library."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(4096)
        except OSError as exc:
            _emit(self._logger, Severity.ERROR, f"IRuntime::loadRuntime: Error Code 6: Unable to load library: {path}: {exc}")
            return None
        if not data.startswith(LEAN_MAGIC):
            _emit(self._logger, Severity.ERROR, f"IRuntime::loadRuntime: Error Code 6: {path} is not a TensorRT lean runtime library")
            return None
        lean = type(self)(self._logger)
        lean._lean_version = data[len(LEAN_MAGIC):].decode(errors="replace")
        return lean

    def deserialize_cuda_engine(self, serialized_engine: Any) -> "ICudaEngine | None":
        unpacked = _unpack_plan(_as_bytes(serialized_engine))
        if isinstance(unpacked, str):
            _emit(self._logger, Severity.ERROR, f"IRuntime::deserializeCudaEngine: {unpacked}")
            return None
        header, onnx_bytes = unpacked
        error = self._compatibility_error(header)
        if error is not None:
            _emit(self._logger, Severity.ERROR, f"IRuntime::deserializeCudaEngine: {error}")
            return None
        return ICudaEngine(self._env, header, onnx_bytes, self._logger)

    def _compatibility_error(self, header: dict[str, Any]) -> str | None:
        return self._version_error(header) or self._device_error(header)

    def _version_error(self, header: dict[str, Any]) -> str | None:
        env = self._env
        built = str(header.get("tensorrt_version"))
        mismatch = (
            "Error Code 1: Serialization (Serialization assertion stdVersionRead == kSERIALIZATION_VERSION "
            f"failed.Version tag does not match. Note: Current Version: {self._lean_version or env.version}, "
            f"Serialized Engine Version: {built})"
        )
        vc, excluded = bool(header.get("version_compatible")), bool(header.get("exclude_lean_runtime"))
        if self._lean_version is not None:  # a runtime from load_runtime
            if not (vc and excluded) or built != self._lean_version:
                return mismatch
            return None
        if built == env.version:
            return None
        if not vc or not _newer_runtime_may_run(built, env.version):
            return mismatch
        if excluded:
            return (f"{mismatch[:-1]}. The plan was built with kEXCLUDE_LEAN_RUNTIME: load the lean runtime of "
                    f"TensorRT {built} with IRuntime::loadRuntime)")
        if not self._host_code_allowed:
            return ("Error Code 1: Serialization (the engine contains host executable code (an embedded lean "
                    "runtime); call IRuntime::setEngineHostCodeAllowed(true) to deserialize it)")
        return None

    def _device_error(self, header: dict[str, Any]) -> str | None:
        built = tuple(header.get("compute_capability", ()))
        here = tuple(self._env.compute_capability)
        level = header.get("hardware_compatibility_level", "NONE")
        if level == "AMPERE_PLUS":
            if here < (8, 0):
                return "Error Code 1: Serialization (hardware-compatible engine needs an Ampere or newer GPU)"
        elif built != here:
            # [userlog] "...expecting compute 8.6 got compute 8.9, please rebuild."
            return (
                f"Error Code 1: Serialization (Serialization assertion plan compatibility failed: "
                f"expecting compute {built[0] if built else '?'}.{built[1] if len(built) > 1 else '?'} "
                f"got compute {here[0]}.{here[1]}, please rebuild.)"
            )
        return None


# ----------------------------------------------------------------------------------------------
# Engine and execution context
# ----------------------------------------------------------------------------------------------


class ICudaEngine(_Strict):
    """[NvInferRuntime.h] ICudaEngine subset. ``num_optimization_profiles`` "is always at least 1";
    get_tensor_profile_shape(name, i) -> [min, opt, max]; for a bad name or index TensorRT before
    11.4 returns Dims{-1} (iterates as empty here) and 11.4 raises ("Could not get profile shape
    for tensor ... Is the tensor name an input and the profile index valid?", a new throw path
    in the 11.4.0 bindings); get_tensor_shape has -1 for dynamic dimensions.

    Device memory: each execution context holds activation memory, modelled as
    ACTIVATION_BYTES_PER_INPUT_ELEMENT per element of the profile's largest input;
    ``device_memory_size_v2`` is the largest over profiles (what a STATIC context takes) and
    ``get_device_memory_size_for_profile_v2(i)`` one profile's (what an ON_PROFILE_CHANGE context
    holds while profile i is selected). The modelled GPU's memory is ``double_env.device_memory``:
    a context that does not fit is refused (None, error logged), as TensorRT does on OOM."""

    def __init__(self, env: _Env, header: dict[str, Any], onnx_bytes: bytes, logger: ILogger) -> None:
        self._env = env
        self._header = header
        self._onnx = onnx_bytes
        self._logger = logger
        self._io = {entry["name"]: entry for entry in header["io"]}
        self._names = [entry["name"] for entry in header["io"]]
        self._profiles = header["profiles"] or [{}]
        self._session: Any = None
        self._lock = threading.Lock()
        self._shape_cache: dict[tuple[Any, ...], dict[str, tuple[int, ...]]] = {}
        self.double_contexts_created = 0  # test introspection, not TensorRT API

    _SETTABLE = frozenset({"double_contexts_created"})

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        entry = self._io.get(name)
        return TensorIOMode[entry["mode"]] if entry else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._io[name]["dtype"]]

    def get_tensor_shape(self, name: str) -> Dims:
        entry = self._io.get(name)
        return Dims(entry["shape"]) if entry else Dims()

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if not 0 <= profile_index < len(self._profiles) or name not in self._profiles[profile_index]:
            if _version_numbers(self._env.version)[:2] >= (11, 4):
                raise RuntimeError(
                    f"Could not get profile shape for tensor '{name}'. Is the tensor name an input and the profile "
                    "index valid?"
                )
            return [Dims(), Dims(), Dims()]
        return [Dims(d) for d in self._profiles[profile_index][name]]

    def get_device_memory_size_for_profile_v2(self, profile_index: int) -> int:
        shapes = self._profiles[profile_index] if 0 <= profile_index < len(self._profiles) else {}
        largest = max((int(np.prod(dims[2])) for dims in shapes.values()), default=1)
        return largest * ACTIVATION_BYTES_PER_INPUT_ELEMENT

    @property
    def device_memory_size_v2(self) -> int:
        return max(self.get_device_memory_size_for_profile_v2(i) for i in range(len(self._profiles)))

    def create_execution_context(
        self, strategy: ExecutionContextAllocationStrategy = ExecutionContextAllocationStrategy.STATIC
    ) -> "IExecutionContext | None":
        # [NvInferRuntime.h] "The newly created execution context will be assigned optimization
        # profile 0." Creating contexts from one engine is thread-safe. STATIC: "the maximum size
        # across all profiles"; ON_PROFILE_CHANGE: memory of the selected profile.
        strategy = ExecutionContextAllocationStrategy(strategy)
        if strategy == ExecutionContextAllocationStrategy.USER_MANAGED:
            raise NotImplementedError("TensorRT test double: USER_MANAGED contexts are not modelled")
        nbytes = (self.device_memory_size_v2 if strategy == ExecutionContextAllocationStrategy.STATIC
                  else self.get_device_memory_size_for_profile_v2(0))
        if not self._env.reserve(nbytes):
            _emit(self._logger, Severity.ERROR, "IExecutionContext creation failed: Error Code 2: OutOfMemory "
                  f"(Requested size was {nbytes} bytes.)")
            return None
        with self._lock:
            self.double_contexts_created += 1
        return IExecutionContext(self, strategy, nbytes)

    # -- double internals --

    def _inputs(self) -> list[str]:
        return [n for n in self._names if self._io[n]["mode"] == "INPUT"]

    def _outputs(self) -> list[str]:
        return [n for n in self._names if self._io[n]["mode"] == "OUTPUT"]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._session is None:
                self._session = _ort_session(self._onnx)
        outputs = self._outputs()
        return dict(zip(outputs, self._session.run(outputs, feeds)))  # InferenceSession.run is thread-safe

    def _output_shapes(self, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        key = tuple(sorted(input_shapes.items()))
        with self._lock:
            cached = self._shape_cache.get(key)
        if cached is not None:
            return cached
        shapes = _infer_output_shapes(self._onnx, input_shapes, self._outputs())
        if shapes is None:  # shape inference could not decide: run once on zeros
            feeds = {
                n: np.zeros(s, dtype=_TRT_TO_NUMPY[self._io[n]["dtype"]]) for n, s in input_shapes.items()
            }
            shapes = {n: tuple(int(d) for d in a.shape) for n, a in self._run(feeds).items()}
        with self._lock:
            self._shape_cache[key] = shapes
        return shapes


def _infer_output_shapes(onnx_bytes: bytes, input_shapes: dict[str, tuple[int, ...]], outputs: list[str]) -> dict[str, tuple[int, ...]] | None:
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    for value in model.graph.input:
        if value.name in input_shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, input_shapes[value.name]):
                dim.Clear()
                dim.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return None
    result = {}
    for value in inferred.graph.output:
        dims = value.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") for d in dims):
            return None
        result[value.name] = tuple(int(d.dim_value) for d in dims)
    return result if set(result) == set(outputs) else None


class IExecutionContext(_Strict):
    """[NvInferRuntime.h] IExecutionContext subset, enqueueV3 style.

    * set_optimization_profile_async(i, stream): [pyCore.cpp] raises RuntimeError "Error in set
      optimization profile async." for a bad index; must precede set_input_shape, so switching
      forgets the input shapes set before.
    * set_input_shape(name, shape) -> False for a non-input name, wrong rank, a fixed dimension
      changed, or dimensions outside the active profile's [min, max].
    * infer_shapes() -> names of inputs whose dynamic dimensions are not yet specified.
    * get_tensor_shape(name): -1 in dynamic dimensions until all input shapes are set.
    * set_tensor_address(name, ptr) -> False for unknown names; execute_async_v3(stream) -> False
      when an input shape or any address is missing ("each input must have a non-null address
      and each output must have a non-null address").
    * STRICTER than TensorRT, which leaves concurrent use of one context undefined: every call
      holds the context, and a second thread calling in meanwhile gets RuntimeError.
    """

    def __init__(self, engine: ICudaEngine, strategy: ExecutionContextAllocationStrategy, nbytes: int) -> None:
        self._engine = engine
        self._strategy = strategy
        self._memory = [nbytes]  # shared with the finalizer: what this context holds now
        env = engine._env
        weakref.finalize(self, lambda held=self._memory: env.release(held[0]))
        self._profile = 0
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        if not self._guard.acquire(blocking=False):
            raise RuntimeError(
                f"TensorRT test double: IExecutionContext.{what} called while another thread is using this "
                "context; contexts are not thread-safe, use one context per thread at a time"
            )
        try:
            yield
        finally:
            self._guard.release()

    def _log_error(self, msg: str) -> None:
        _emit(self._engine._logger, Severity.ERROR, msg)

    @property
    def active_optimization_profile(self) -> int:
        return self._profile

    @property
    def engine(self) -> ICudaEngine:
        return self._engine

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        with self._exclusive("set_optimization_profile_async"):
            if not isinstance(stream_handle, int) or isinstance(stream_handle, bool) or stream_handle < 0:
                raise TypeError("TensorRT test double: stream_handle must be an integer cudaStream_t")
            if not isinstance(profile_index, int) or not 0 <= profile_index < self._engine.num_optimization_profiles:
                raise RuntimeError("Error in set optimization profile async.")
            if profile_index != self._profile:
                self._shapes.clear()
                if self._strategy == ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE:
                    wanted = self._engine.get_device_memory_size_for_profile_v2(profile_index)
                    env = self._engine._env
                    env.release(self._memory[0])
                    if not env.reserve(wanted):
                        env.reserve(self._memory[0])
                        raise RuntimeError("Error in set optimization profile async.")  # OOM on reallocation
                    self._memory[0] = wanted
            self._profile = profile_index
            return True

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        with self._exclusive("set_input_shape"):
            engine = self._engine
            if engine.get_tensor_mode(name) != TensorIOMode.INPUT:
                self._log_error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error ({name} is not an input tensor)")
                return False
            dims = tuple(int(d) for d in shape)
            network_dims = tuple(engine._io[name]["shape"])
            if len(dims) != len(network_dims) or any(n >= 0 and d != n for d, n in zip(dims, network_dims)):
                self._log_error(
                    f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (shape {list(dims)} does not "
                    f"match network dimensions {list(network_dims)} of {name})"
                )
                return False
            bounds = engine._profiles[self._profile].get(name)
            if bounds is not None:
                lo, _, hi = bounds
                if any(not a <= d <= b for d, a, b in zip(dims, lo, hi)):
                    self._log_error(
                        "IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check failed, "
                        f"condition: satisfyProfile. Set dimension {list(dims)} for tensor {name} does not satisfy any "
                        f"optimization profiles. Valid range for profile {self._profile}: {lo}..{hi}.)"
                    )
                    return False
            self._shapes[name] = dims
            return True

    def _unspecified_inputs(self) -> list[str]:
        engine = self._engine
        return [
            name
            for name in engine._inputs()
            if any(d < 0 for d in engine._io[name]["shape"]) and name not in self._shapes
        ]

    def infer_shapes(self) -> list[str]:
        with self._exclusive("infer_shapes"):
            return self._unspecified_inputs()

    def get_tensor_shape(self, name: str) -> Dims:
        with self._exclusive("get_tensor_shape"):
            return self._tensor_shape(name)

    def _tensor_shape(self, name: str) -> Dims:
        engine = self._engine
        mode = engine.get_tensor_mode(name)
        if mode == TensorIOMode.NONE:
            return Dims()
        if mode == TensorIOMode.INPUT:
            return Dims(self._shapes.get(name, engine._io[name]["shape"]))
        if self._unspecified_inputs():
            return Dims(engine._io[name]["shape"])
        input_shapes = {n: self._shapes.get(n, tuple(engine._io[n]["shape"])) for n in engine._inputs()}
        return Dims(engine._output_shapes(input_shapes)[name])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        with self._exclusive("set_tensor_address"):
            if self._engine.get_tensor_mode(name) == TensorIOMode.NONE:
                self._log_error(f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error ({name} is not an I/O tensor)")
                return False
            self._addresses[name] = int(memory)
            return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        with self._exclusive("execute_async_v3"):
            if not isinstance(stream_handle, int) or isinstance(stream_handle, bool):
                raise TypeError("TensorRT test double: stream_handle must be an integer cudaStream_t")
            if stream_handle == 0:
                # [NvInferRuntime.h] "Using default stream may lead to performance issues"
                _emit(self._engine._logger, Severity.WARNING, "Using default stream in enqueueV3() may lead to performance issues")
            return self._execute()

    def _execute(self) -> bool:
        engine = self._engine
        missing = self._unspecified_inputs()
        if missing:
            self._log_error(f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (input shapes not specified: {missing})")
            return False
        buffers: dict[str, np.ndarray] = {}
        for name in engine._names:
            shape = tuple(self._tensor_shape(name))
            dtype = np.dtype(_TRT_TO_NUMPY[engine._io[name]["dtype"]])
            view = _device_view(self._addresses.get(name, 0), shape, dtype)
            if isinstance(view, str):
                self._log_error(f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (tensor {name}: {view})")
                return False
            buffers[name] = view
        outputs = engine._run({n: buffers[n].copy() for n in engine._inputs()})
        for name, value in outputs.items():
            if value.shape != buffers[name].shape or value.dtype != buffers[name].dtype:
                self._log_error(f"IExecutionContext::enqueueV3: Error Code 2: Internal Error (output {name} mismatch)")
                return False
            buffers[name][...] = value
        return True


# ----------------------------------------------------------------------------------------------
# "Device" memory: host buffers registered by address, and the CPU DeviceBackend
# ----------------------------------------------------------------------------------------------

_DEVICE_MEMORY: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()
_DEVICE_LOCK = threading.Lock()


def _device_alloc(numel: int, dtype: np.dtype) -> np.ndarray:
    """A 256-byte aligned flat array, registered under its address (while it is alive)."""
    nbytes = int(numel) * dtype.itemsize
    raw = np.empty(nbytes + DEVICE_ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % DEVICE_ALIGNMENT
    block = raw[offset : offset + nbytes].view(dtype)
    with _DEVICE_LOCK:
        _DEVICE_MEMORY[block.ctypes.data] = block
    return block


def _device_view(address: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | str:
    """The registered block at ``address`` viewed as ``shape``/``dtype``, or why not."""
    if not address:
        # [NvInferRuntime.h] "Neither address or allocator is set for output tensor..." [userlog]
        return "Neither address or allocator is set; call setTensorAddress before enqueueV3"
    if address % DEVICE_ALIGNMENT:
        return f"address {address:#x} is not {DEVICE_ALIGNMENT}-byte aligned"
    with _DEVICE_LOCK:
        block = _DEVICE_MEMORY.get(address)
    if block is None:
        return f"address {address:#x} is not device memory (illegal memory access)"
    needed = int(np.prod(shape)) * dtype.itemsize
    if block.nbytes < needed:
        return f"buffer at {address:#x} holds {block.nbytes} bytes, the tensor needs {needed} (out-of-bounds access)"
    return block.view(np.uint8)[:needed].view(dtype).reshape(shape)


class _CpuStream:
    _next = 1
    _lock = threading.Lock()

    def __init__(self) -> None:
        with _CpuStream._lock:
            self.handle = _CpuStream._next
            _CpuStream._next += 1


class CpuDeviceBackend(DeviceBackend):
    """DeviceBackend over the double's registered host memory: buffers are 256-byte aligned numpy
    arrays whose ``arr.ctypes.data`` the double's execution contexts resolve back to the array.
    The double executes synchronously, which is a valid schedule for async work."""

    name = "cpu (TensorRT test double)"

    def __init__(self) -> None:
        self.allocations = 0  # test introspection

    def scope(self) -> Any:
        return contextlib.nullcontext()

    def stream(self) -> _CpuStream:
        return _CpuStream()

    def stream_handle(self, stream: _CpuStream) -> int:
        return stream.handle

    def synchronize(self, stream: _CpuStream) -> None:
        return None

    def empty(self, numel: int, dtype: np.dtype, stream: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        self.allocations += 1
        return _device_alloc(int(numel), dtype)

    def capacity(self, buffer: np.ndarray) -> int:
        return int(buffer.size)

    def address(self, buffer: np.ndarray) -> int:
        return int(buffer.ctypes.data)

    def copy_from_numpy(self, buffer: np.ndarray, array: np.ndarray, stream: Any) -> None:
        flat = np.ascontiguousarray(array, dtype=buffer.dtype).reshape(-1)
        buffer[: flat.size] = flat

    def to_numpy(self, buffer: np.ndarray, shape: tuple[int, ...], stream: Any) -> np.ndarray:
        count = int(np.prod(shape))
        return buffer[:count].reshape(shape).copy()


# ----------------------------------------------------------------------------------------------
# The module-like object
# ----------------------------------------------------------------------------------------------


def make_tensorrt_double(
    version: str = DEFAULT_VERSION,
    compute_capability: tuple[int, int] = DEFAULT_COMPUTE_CAPABILITY,
    device_name: str = "NVIDIA L4 (TensorRT test double)",
    device_memory: int = DEFAULT_DEVICE_MEMORY,
) -> types.ModuleType:
    """A module-like TEST DOUBLE of ``tensorrt`` for one TensorRT version and GPU.

    Pass it as ``trt_module=``. ``double_env`` (not TensorRT API) exposes build statistics and
    the modelled device memory (``device_memory``, ``device_memory_in_use``, ``device_memory_peak``).
    """
    major = int(version.split(".")[0])
    env = _Env(
        version=version,
        compute_capability=tuple(compute_capability),  # type: ignore[arg-type]
        device_name=device_name,
        major=major,
        flags_enum=BuilderFlag11 if major >= 11 else BuilderFlag10,
        network_flags_enum=NetworkDefinitionCreationFlag11 if major >= 11 else NetworkDefinitionCreationFlag10,
        device_memory=device_memory,
    )
    module = types.ModuleType("tensorrt_test_double")
    module.__doc__ = f"TEST DOUBLE of the TensorRT {version} Python API (subset used by hifitrt)"
    members: dict[str, Any] = {
        "__version__": version,
        "ILogger": ILogger,
        "Logger": Logger,
        "Builder": type("Builder", (_Builder,), {"_env": env}),
        "Runtime": type("Runtime", (_Runtime,), {"_env": env}),
        "OnnxParser": OnnxParser,
        "NetworkDefinitionCreationFlag": env.network_flags_enum,
        "BuilderFlag": env.flags_enum,
        "MemoryPoolType": MemoryPoolType,
        "HardwareCompatibilityLevel": HardwareCompatibilityLevel,
        "ExecutionContextAllocationStrategy": ExecutionContextAllocationStrategy,
        "TensorIOMode": TensorIOMode,
        "DataType": DataType,
        "ErrorCode": ErrorCode,
        "Dims": Dims,
        "double_env": env,
    }
    for name, value in members.items():
        setattr(module, name, value)
    return module
