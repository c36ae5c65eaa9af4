"""Every TensorRT name hifitrt uses exists in both TensorRT 10.16 and 11.1.

No machine here has TensorRT, so the TensorRT code is checked statically: the builder, runner
and their shared helpers are parsed with ``ast`` and every attribute used on a TensorRT object
is looked up in the name lists of both releases (shared/reference/tensorrt-*-python-names.txt,
which list every method, property and enum value bound by TensorRT's Python module).

Which expressions are TensorRT objects is decided by a naming rule the TensorRT modules follow
(see their docstrings): the module is ``trt`` (or ``self._trt``); TensorRT objects live in
variables or attributes named as in ``TRT_OBJECT_NAMES``; calls on those return TensorRT
objects too (``parser.get_error(i).desc()``). Class names are not in the lists (they hold
members only), so ``TRT_CLASSES`` lists the classes used, each checked by hand in NVIDIA's
release/10.12, release/10.16 and release/11.1 ``python/src`` bindings. A coverage test makes
sure the checker really sees the calls (a renamed variable would otherwise escape it), and the
TensorRT test double's public surface is checked against the lists as well.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECKED_FILES = ("engines/tensorrt_builder.py", "engines/tensorrt_common.py", "runtime/tensorrt_runner.py")

TRT_MODULE_NAMES = {"trt"}
TRT_OBJECT_NAMES = {
    "builder", "network", "config", "parser", "parser_error", "trt_profile", "timing_cache",
    "disk_cache", "host_memory", "tensor", "runtime", "engine", "context",
}
# Verified in NVIDIA/TensorRT release/10.12, release/10.16 and release/11.1 python/src
# (py::class_ / py::enum_ registrations): present under these names in all three.
TRT_CLASSES = {
    "Logger", "ILogger", "Builder", "Runtime", "OnnxParser", "NetworkDefinitionCreationFlag",
    "BuilderFlag", "MemoryPoolType", "HardwareCompatibilityLevel", "TensorIOMode", "DataType",
}
TRT_MODULE_ATTRS = {"__version__"}  # set in tensorrt/__init__.py of both releases
# Never to be used, whatever the lists say: weak typing (gone in 11.x) and host code execution.
BANNED = {
    "engine_host_code_allowed": "lets a plan run host code; hifitrt never enables it",
    "FP16": "precision flags do not exist in TensorRT 11 (precision lives in the ONNX graph)",
    "BF16": "precision flags do not exist in TensorRT 11",
    "INT8": "precision flags do not exist in TensorRT 11",
    "FP8": "precision flags do not exist in TensorRT 11",
    "EXPLICIT_BATCH": "removed in TensorRT 11",
    "platform_has_fast_fp16": "removed in TensorRT 11",
    "OBEY_PRECISION_CONSTRAINTS": "removed in TensorRT 11",
    "PREFER_PRECISION_CONSTRAINTS": "removed in TensorRT 11",
}


def _reference_dir() -> Path | None:
    candidates = [
        os.environ.get("HIFITRT_TRT_NAMES_DIR", ""),
        str(REPO.parent / "shared" / "reference"),
        str(REPO / "tests" / "data" / "tensorrt"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "tensorrt-11.1-python-names.txt").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def names() -> dict[str, set[str]]:
    folder = _reference_dir()
    if folder is None:
        pytest.skip("TensorRT name lists not found (shared/reference/tensorrt-*-python-names.txt beside the repo)")
    return {
        version: {line.strip() for line in (folder / f"tensorrt-{version}-python-names.txt").read_text().splitlines() if line.strip()}
        for version in ("10.16", "11.1")
    }


@dataclass(frozen=True)
class Access:
    line: int
    name: str
    kind: str  # "class" (trt.X), "member" (attribute of a TensorRT object)


def _ident(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id.lstrip("_")
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_")
    return None


def _is_module(node: ast.AST) -> bool:
    return isinstance(node, (ast.Name, ast.Attribute)) and _ident(node) in TRT_MODULE_NAMES


def _is_trt_value(node: ast.AST) -> bool:
    """A TensorRT object (not the module): named by the rule, a trt.X class/enum, or a call on one."""
    if isinstance(node, (ast.Name, ast.Attribute)) and _ident(node) in TRT_OBJECT_NAMES:
        return True
    if isinstance(node, ast.Attribute):
        return _is_module(node.value) or _is_trt_value(node.value)
    if isinstance(node, ast.Call):
        return _is_trt_value(node.func)
    if isinstance(node, ast.Subscript):
        return _is_trt_value(node.value)
    return False


def trt_accesses(source: str) -> list[Access]:
    """Every attribute accessed on the TensorRT module or on TensorRT objects in ``source``."""
    found: list[Access] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            if _is_module(node.value):
                found.append(Access(node.lineno, node.attr, "class"))
            elif _is_trt_value(node.value):
                found.append(Access(node.lineno, node.attr, "member"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            target = node.args[0]
            if _is_module(target):
                found.append(Access(node.lineno, node.args[1].value, "class"))
            elif _is_trt_value(target):
                found.append(Access(node.lineno, node.args[1].value, "member"))
    return found


def problems(source: str, names: dict[str, set[str]]) -> list[str]:
    """Human-readable list of names that are banned or missing from a release."""
    result = []
    for access in trt_accesses(source):
        if access.name in BANNED:
            result.append(f"line {access.line}: {access.name}: {BANNED[access.name]}")
            continue
        if access.name.startswith("__") and access.name.endswith("__") and access.name not in TRT_MODULE_ATTRS:
            continue  # Python protocol (ILogger.__init__)
        if access.kind == "class" and (access.name in TRT_CLASSES or access.name in TRT_MODULE_ATTRS):
            continue
        missing = [version for version, known in names.items() if access.name not in known]
        if missing:
            result.append(f"line {access.line}: {access.name} is not in TensorRT {', '.join(missing)}")
    return result


@pytest.mark.parametrize("relative", CHECKED_FILES)
def test_tensorrt_code_uses_only_names_present_in_10_16_and_11_1(relative, names):
    source = (REPO / relative).read_text()
    assert problems(source, names) == []


def test_checker_sees_the_tensorrt_calls():
    seen = set()
    for relative in CHECKED_FILES:
        seen |= {access.name for access in trt_accesses((REPO / relative).read_text())}
    expected = {
        "Builder", "OnnxParser", "Runtime", "ILogger", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED",
        "create_network", "parse_from_file", "num_errors", "get_error", "node_name", "desc",
        "create_builder_config", "set_memory_pool_limit", "WORKSPACE", "clear_flag", "TF32",
        "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "AMPERE_PLUS", "hardware_compatibility_level",
        "create_optimization_profile", "set_shape", "add_optimization_profile",
        "create_timing_cache", "set_timing_cache", "get_timing_cache", "serialize", "combine",
        "build_serialized_network", "deserialize_cuda_engine", "num_io_tensors", "get_tensor_name",
        "get_tensor_mode", "get_tensor_dtype", "num_optimization_profiles", "get_tensor_profile_shape",
        "create_execution_context", "set_optimization_profile_async", "set_input_shape", "infer_shapes",
        "get_tensor_shape", "set_tensor_address", "execute_async_v3", "__version__",
    }
    assert expected - seen == set()


def test_no_tensorrt_file_mentions_host_code_permission_outside_text():
    """``engine_host_code_allowed`` must never be set: not even via a variable the rule misses."""
    for relative in CHECKED_FILES:
        tree = ast.parse((REPO / relative).read_text())
        attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert "engine_host_code_allowed" not in attributes, relative


BAD_SOURCE = '''
def build(trt, builder, config, runtime, parser):
    config.set_flag(trt.BuilderFlag.FP16)
    fast = builder.platform_has_fast_fp16
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    runtime.engine_host_code_allowed = True
    other = trt.NoSuchClass
    calibrator = getattr(config, "int8_calibrator")
    where = parser.get_error(0).no_such_accessor()
    size = self_engine = None
'''

GOOD_SOURCE = '''
def build(trt, builder, parser):
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    text = parser.get_error(0).desc()
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)
    shape_profile = object()
    shape_profile.frames_max  # not a TensorRT object: not checked
'''


def test_checker_catches_bad_names(names):
    found = problems(BAD_SOURCE, names)
    joined = "\n".join(found)
    for bad in ("FP16", "platform_has_fast_fp16", "EXPLICIT_BATCH", "engine_host_code_allowed", "NoSuchClass",
                "int8_calibrator", "no_such_accessor"):
        assert bad in joined, f"checker missed {bad}"
    assert "int8_calibrator is not in TensorRT 11.1" in joined  # present in 10.16 only
    assert problems(GOOD_SOURCE, names) == []


def test_name_lists_reflect_the_11_removals(names):
    """Sanity of the reference data the other tests trust."""
    assert {"FP16", "EXPLICIT_BATCH", "platform_has_fast_fp16"} <= names["10.16"]
    assert not {"FP16", "EXPLICIT_BATCH", "platform_has_fast_fp16"} & names["11.1"]


def test_test_double_surface_exists_in_both_releases(names):
    """The double raises for anything it lacks, so code that passes the double-based tests uses
    only the double's surface: every public name on it must exist in both releases."""
    from doubles import tensorrt_double as d

    classes = [
        d._Builder, d._Runtime, d.OnnxParser, d.IBuilderConfig, d.IOptimizationProfile, d.ITimingCache,
        d.INetworkDefinition, d.ITensor, d.ILayer, d.ParserError, d.ICudaEngine, d.IExecutionContext,
        d.IHostMemory, d.ILogger, d.Logger,
    ]
    both = names["10.16"] & names["11.1"]
    missing = []
    for cls in classes:
        for attr in vars(cls):
            if attr.startswith("_") or attr.startswith("double_") or attr in {"Severity"}:
                continue
            if isinstance(vars(cls)[attr], type) and issubclass(vars(cls)[attr], IntEnum):
                continue
            if attr not in both:
                missing.append(f"{cls.__name__}.{attr}")
    enums11 = [d.BuilderFlag11, d.NetworkDefinitionCreationFlag11, d.MemoryPoolType, d.HardwareCompatibilityLevel,
               d.TensorIOMode, d.DataType, d.ErrorCode, d.Severity]
    for enum in enums11:
        missing += [f"{enum.__name__}.{m}" for m in enum.__members__ if m not in names["11.1"]]
    for enum in (d.BuilderFlag10, d.NetworkDefinitionCreationFlag10):
        missing += [f"{enum.__name__}.{m}" for m in enum.__members__ if m not in names["10.16"]]
    assert missing == []
