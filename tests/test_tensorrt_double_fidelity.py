"""The TensorRT TEST DOUBLE agrees with TensorRT where hifitrt depends on it.

Reference values come from NVIDIA's headers (NVIDIA/TensorRT include/NvInfer.h,
NvInferRuntime.h, NvInferRuntimeBase.h, NvOnnxParser.h at release/10.16 and the 11.1 release),
and behaviour from the 11.4.0.106 bindings and user reports, as cited in the double. Names are
checked against the real bindings in test_tensorrt_api_names.py.
"""
from __future__ import annotations

import gc

import pytest

from doubles import tensorrt_double as d
from doubles.tensorrt_double import CpuDeviceBackend, make_tensorrt_double, repack_plan
from hifitrt.engines.profiles import parse_profile
from hifitrt.engines.tensorrt_builder import build_tensorrt_engine
from hifitrt.errors import EngineError
from hifitrt.runtime.tensorrt_runner import TensorRTRunner
from tiny_vocoder import write_tiny_vocoder

# enum class values, copied from the headers (NvInfer.h 11.1: BuilderFlag at 9958-10080,
# NetworkDefinitionCreationFlag at 11462-11471; NvInfer.h 10.16: BuilderFlag at 10468-10603,
# NetworkDefinitionCreationFlag at 12113; NvInferRuntime.h: ExecutionContextAllocationStrategy,
# TensorIOMode; NvInferRuntimeBase.h: DataType, ILogger::Severity; NvOnnxParser.h: ErrorCode).
HEADER_VALUES = {
    d.BuilderFlag11: {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
                      "SPARSE_WEIGHTS": 7, "VERSION_COMPATIBLE": 12, "EXCLUDE_LEAN_RUNTIME": 13,
                      "ERROR_ON_TIMING_CACHE_MISS": 15},
    d.BuilderFlag10: {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5,
                      "TF32": 6, "SPARSE_WEIGHTS": 7, "OBEY_PRECISION_CONSTRAINTS": 9,
                      "PREFER_PRECISION_CONSTRAINTS": 10, "VERSION_COMPATIBLE": 13, "EXCLUDE_LEAN_RUNTIME": 14,
                      "FP8": 15, "ERROR_ON_TIMING_CACHE_MISS": 16, "BF16": 17, "INT4": 22, "FP4": 26},
    d.NetworkDefinitionCreationFlag11: {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2},
    d.NetworkDefinitionCreationFlag10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2,
                                        "PREFER_AOT_PYTHON_PLUGINS": 3},
    d.ExecutionContextAllocationStrategy: {"STATIC": 0, "ON_PROFILE_CHANGE": 1, "USER_MANAGED": 2},
    d.DataType: {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "FP8": 6, "BF16": 7,
                 "INT64": 8, "INT4": 9, "FP4": 10},
    d.MemoryPoolType: {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3,
                       "TACTIC_DRAM": 4, "TACTIC_SHARED_MEMORY": 5},
    d.HardwareCompatibilityLevel: {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2},
    d.TensorIOMode: {"NONE": 0, "INPUT": 1, "OUTPUT": 2},
    d.Severity: {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4},
    d.ErrorCode: {"SUCCESS": 0, "INTERNAL_ERROR": 1, "MEM_ALLOC_FAILED": 2, "MODEL_DESERIALIZE_FAILED": 3,
                  "INVALID_VALUE": 4, "INVALID_GRAPH": 5, "INVALID_NODE": 6, "UNSUPPORTED_GRAPH": 7,
                  "UNSUPPORTED_NODE": 8},
}


@pytest.mark.parametrize("enum", list(HEADER_VALUES), ids=lambda e: e.__name__)
def test_enum_values_match_nvidia_headers(enum):
    assert {m.name: int(m) for m in enum} == HEADER_VALUES[enum]


def test_each_release_exposes_its_own_enum(tmp_path):
    assert make_tensorrt_double(version="10.16.1.11").BuilderFlag.VERSION_COMPATIBLE == 13
    assert make_tensorrt_double(version="11.4.0.106").BuilderFlag.VERSION_COMPATIBLE == 12


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    onnx_path = write_tiny_vocoder(root / "model.onnx")
    build_tensorrt_engine(onnx_path, root / "engine.plan", (parse_profile("p=dynamic:1-2x4-16-32"),),
                          trt_module=make_tensorrt_double(version="11.1.0.106"))
    return root / "engine.plan"


def engine_of(plan_bytes: bytes, version: str):
    trt = make_tensorrt_double(version=version)
    return trt, trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan_bytes)


def test_get_tensor_profile_shape_raises_on_bad_input_from_11_4(plan):
    data = plan.read_bytes()
    _, engine = engine_of(repack_plan(data, tensorrt_version="11.4.0.106"), "11.4.0.106")
    assert [tuple(x) for x in engine.get_tensor_profile_shape("mel", 0)][0] == (1, 8, 4)
    for name, index in (("wav", 0), ("nope", 0), ("mel", 5)):
        with pytest.raises(RuntimeError, match="Could not get profile shape for tensor"):
            engine.get_tensor_profile_shape(name, index)
    _, older = engine_of(data, "11.1.0.106")
    assert [len(dims) for dims in older.get_tensor_profile_shape("nope", 0)] == [0, 0, 0]  # Dims{-1}


@pytest.mark.parametrize("version", ["11.1.0.106", "11.4.0.106"])
def test_runner_turns_an_unreadable_profile_into_an_engine_error(plan, tmp_path, version):
    broken = tmp_path / "broken.plan"
    broken.write_bytes(repack_plan(plan.read_bytes(), tensorrt_version=version, profiles=[{"other": [[1], [1], [1]]}]))
    with pytest.raises(EngineError, match="cannot read optimization profile 0"):
        TensorRTRunner(broken, trt_module=make_tensorrt_double(version=version), device=CpuDeviceBackend())


def test_garbage_timing_cache_is_an_empty_cache_and_two_logged_errors():
    """TensorRT#3566 (8.6): "Error Code 1: Serialization (... Magic tag does not match)" then
    "4: The timing cache will not be used!", and the build carries on."""
    trt = make_tensorrt_double()
    messages: list[tuple[int, str]] = []

    class Capture(trt.ILogger):
        def log(self, severity, msg):
            messages.append((int(severity), msg))

    config = trt.Builder(Capture()).create_builder_config()
    cache = config.create_timing_cache(b"\x00garbage" * 10)
    assert cache is not None and bytes(cache.serialize()) == bytes(config.create_timing_cache(b"").serialize())
    assert [s for s, _ in messages] == [1, 1]
    assert "Magic tag does not match" in messages[0][1] and "will not be used" in messages[1][1]
    assert config.set_timing_cache(cache, ignore_mismatch=False) is True  # no API failure


def test_each_context_accounts_its_device_memory(plan):
    trt, engine = engine_of(plan.read_bytes(), "11.1.0.106")
    env = trt.double_env
    static = engine.create_execution_context()
    assert env.device_memory_in_use == engine.device_memory_size_v2 > 0
    lazy = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE)
    assert env.device_memory_in_use == engine.device_memory_size_v2 + engine.get_device_memory_size_for_profile_v2(0)
    del static, lazy
    gc.collect()
    assert env.device_memory_in_use == 0 and env.device_memory_peak > 0


def test_context_beyond_device_memory_is_none_with_a_logged_error(plan):
    trt = make_tensorrt_double(version="11.1.0.106", device_memory=1)
    messages = []

    class Capture(trt.ILogger):
        def log(self, severity, msg):
            messages.append(msg)

    engine = trt.Runtime(Capture()).deserialize_cuda_engine(plan.read_bytes())
    assert engine.create_execution_context() is None
    assert any("OutOfMemory" in m for m in messages)


def test_runtime_has_load_runtime_and_host_code_permission(plan, tmp_path):
    trt = make_tensorrt_double()
    runtime = trt.Runtime(trt.Logger())
    assert runtime.engine_host_code_allowed is False
    runtime.engine_host_code_allowed = True
    assert runtime.engine_host_code_allowed is True
    assert runtime.load_runtime(str(tmp_path / "missing.so")) is None
    lean = runtime.load_runtime(d.write_lean_runtime_library(tmp_path / "lean.so", "11.1.0.106"))
    assert lean is not None
    # a lean runtime runs only VERSION_COMPATIBLE + EXCLUDE_LEAN_RUNTIME plans of its own version
    assert lean.deserialize_cuda_engine(plan.read_bytes()) is None
    vc = repack_plan(plan.read_bytes(), version_compatible=True, exclude_lean_runtime=True)
    assert lean.deserialize_cuda_engine(vc) is not None
