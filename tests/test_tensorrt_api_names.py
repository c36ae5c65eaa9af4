"""Every TensorRT name hifitrt uses exists in TensorRT 10.16, 11.1 and 11.4.

No machine here has TensorRT, so the TensorRT code is checked statically against the complete
name lists made from the real bindings (shared/reference/tensorrt-{10.16,11.1,11.4}-python-
qualified-names.txt, see tensorrt.md there: every class, enum member, method and property of
``tensorrt``, qualified as ``Class.member``). Every file that imports TensorRT is parsed with
``ast`` and every attribute used on the TensorRT module or a TensorRT object is looked up in all
three lists, with no exemptions: ``trt.BuilderFlag.TF32`` must be listed as ``BuilderFlag.TF32``,
``engine.create_execution_context`` as ``ICudaEngine.create_execution_context``; where the class
of an object is not known (the result of an unlisted call) the bare name must be in all three.

Which expressions are TensorRT objects is decided by the naming rule the TensorRT modules follow
(see their docstrings): the module is ``trt``/``trt_module`` (or ``self._trt``); TensorRT
objects live in variables or attributes named as in ``OBJECT_CLASSES``; calls listed in
``RETURNS`` give objects of a known class. A coverage test makes sure the checker really sees
the calls (a renamed variable would otherwise escape it), another that every file importing
TensorRT is checked, and the TensorRT test double's public surface is checked as well.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VERSIONS = ("10.16", "11.1", "11.4")
CHECKED_FILES = (
    "engines/tensorrt_builder.py",
    "engines/tensorrt_common.py",
    "engines/tensorrt_install.py",
    "engines/machine.py",
    "runtime/tensorrt_runner.py",
)

MODULE_NAMES = {"trt", "trt_module"}
OBJECT_CLASSES = {
    "builder": "Builder", "network": "INetworkDefinition", "config": "IBuilderConfig", "parser": "OnnxParser",
    "parser_error": "ParserError", "trt_profile": "IOptimizationProfile", "timing_cache": "ITimingCache",
    "disk_cache": "ITimingCache", "host_memory": "IHostMemory", "tensor": "ITensor", "runtime": "Runtime",
    "lean_runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext",
}
RETURNS = {  # documented return classes of the calls hifitrt chains on
    "Builder.create_network": "INetworkDefinition", "Builder.create_builder_config": "IBuilderConfig",
    "Builder.create_optimization_profile": "IOptimizationProfile", "OnnxParser.get_error": "ParserError",
    "INetworkDefinition.get_input": "ITensor", "INetworkDefinition.get_output": "ITensor",
    "IBuilderConfig.create_timing_cache": "ITimingCache", "IBuilderConfig.get_timing_cache": "ITimingCache",
    "Runtime.load_runtime": "Runtime", "Runtime.deserialize_cuda_engine": "ICudaEngine",
    "ICudaEngine.create_execution_context": "IExecutionContext", "ParserError.code": "ErrorCode",
}
# Policy, not availability: names hifitrt must never use even where they exist.
BANNED = {
    "engine_host_code_allowed": "lets a plan run host code; hifitrt never enables it",
    "FP16": "precision lives in the ONNX graph (no precision flags; gone in TensorRT 11)",
    "BF16": "precision lives in the ONNX graph (no precision flags; gone in TensorRT 11)",
    "INT8": "precision lives in the ONNX graph (no precision flags; gone in TensorRT 11)",
    "FP8": "precision lives in the ONNX graph (no precision flags; gone in TensorRT 11)",
}


def _reference_dir() -> Path | None:
    candidates = [
        os.environ.get("HIFITRT_TRT_NAMES_DIR", ""),
        str(REPO.parent / "shared" / "reference"),
        str(REPO / "tests" / "data" / "tensorrt"),
    ]
    for candidate in candidates:
        if candidate and all((Path(candidate) / f"tensorrt-{v}-python-qualified-names.txt").is_file() for v in VERSIONS):
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def names() -> dict[str, set[str]]:
    """{version: qualified names plus the bare last component of each}."""
    folder = _reference_dir()
    if folder is None:
        pytest.skip("TensorRT name lists not found (shared/reference/tensorrt-*-python-qualified-names.txt beside the repo)")
    result = {}
    for version in VERSIONS:
        qualified = {line.strip() for line in (folder / f"tensorrt-{version}-python-qualified-names.txt").read_text().splitlines() if line.strip()}
        result[version] = qualified | {"*." + name.rsplit(".", 1)[-1] for name in qualified}
    return result


@dataclass(frozen=True)
class Access:
    line: int
    name: str  # "Class.member", "Module-level name", or "*.member" when the class is unknown

    @property
    def member(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def _ident(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id.lstrip("_")
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_")
    return None


def _is_module(node: ast.AST) -> bool:
    return isinstance(node, (ast.Name, ast.Attribute)) and _ident(node) in MODULE_NAMES


def _trt_type(node: ast.AST) -> str | None:
    """The TensorRT class of ``node`` ("BuilderFlag", "ICudaEngine", "?" when a TensorRT object of
    unknown class), or None when ``node`` is not a TensorRT object."""
    if isinstance(node, (ast.Name, ast.Attribute)) and _ident(node) in OBJECT_CLASSES:
        return OBJECT_CLASSES[_ident(node)]  # type: ignore[index]
    if isinstance(node, ast.Attribute):
        if _is_module(node.value):
            return node.attr  # trt.BuilderFlag -> the class/enum itself
        owner = _trt_type(node.value)
        if owner is not None:
            return owner if owner[0].isupper() and owner != "?" and _is_enum_access(node) else "?"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        owner = _trt_type(node.func.value)
        if owner is not None:
            return RETURNS.get(f"{owner}.{node.func.attr}", "?")
    if isinstance(node, ast.Subscript):
        return "?" if _trt_type(node.value) is not None else None
    return None


def _is_enum_access(node: ast.Attribute) -> bool:
    """``trt.BuilderFlag.TF32``: an enum member keeps its enum's type (for ``.name`` on it)."""
    return isinstance(node.value, ast.Attribute) and _is_module(node.value.value) and node.attr.isupper()


def _qualify(owner: str | None, attr: str) -> str:
    return f"{owner}.{attr}" if owner and owner != "?" else f"*.{attr}"


def trt_accesses(source: str) -> list[Access]:
    """Every attribute used on the TensorRT module or on a TensorRT object in ``source``."""
    found: list[Access] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            if _is_module(node.value):
                found.append(Access(node.lineno, node.attr))
            else:
                owner = _trt_type(node.value)
                if owner is not None:
                    found.append(Access(node.lineno, _qualify(owner, node.attr)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            target, attr = node.args[0], node.args[1].value
            if _is_module(target):
                found.append(Access(node.lineno, attr))
            elif _trt_type(target) is not None:
                found.append(Access(node.lineno, _qualify(_trt_type(target), attr)))
    return found


def problems(source: str, names: dict[str, set[str]]) -> list[str]:
    """Human-readable list of names that are banned or missing from a release."""
    result = []
    for access in trt_accesses(source):
        if access.member in BANNED:
            result.append(f"line {access.line}: {access.name}: {BANNED[access.member]}")
            continue
        missing = [version for version, known in names.items() if access.name not in known]
        if missing:
            result.append(f"line {access.line}: {access.name} is not in TensorRT {', '.join(missing)}")
    return result


@pytest.mark.parametrize("relative", CHECKED_FILES)
def test_tensorrt_code_uses_only_names_present_in_10_16_11_1_and_11_4(relative, names):
    source = (REPO / relative).read_text()
    assert problems(source, names) == []


def test_every_module_that_imports_tensorrt_is_checked():
    """A new module that touches TensorRT must join CHECKED_FILES (and follow the naming rule)."""
    touching = set()
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO).as_posix()
        if relative.split("/")[0] in {"tests", "build", ".venv", "scripts"} or "/." in f"/{relative}":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            imports = isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tensorrt" for a in node.names)
            imports |= isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tensorrt"
            if imports:
                touching.add(relative)
    assert touching <= set(CHECKED_FILES), touching - set(CHECKED_FILES)


def test_checker_sees_the_tensorrt_calls():
    seen = set()
    for relative in CHECKED_FILES:
        seen |= {access.name for access in trt_accesses((REPO / relative).read_text())}
    expected = {
        "Builder", "OnnxParser", "Runtime", "ILogger", "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
        "Builder.create_network", "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error",
        "ParserError.node_name", "ParserError.desc", "ParserError.code",
        "Builder.create_builder_config", "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE",
        "IBuilderConfig.clear_flag", "BuilderFlag.TF32", "BuilderFlag.VERSION_COMPATIBLE",
        "BuilderFlag.EXCLUDE_LEAN_RUNTIME", "HardwareCompatibilityLevel.AMPERE_PLUS",
        "IBuilderConfig.hardware_compatibility_level", "Builder.create_optimization_profile",
        "IOptimizationProfile.set_shape", "IBuilderConfig.add_optimization_profile",
        "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache",
        "ITimingCache.serialize", "ITimingCache.combine", "Builder.build_serialized_network",
        "Runtime.deserialize_cuda_engine", "Runtime.load_runtime", "ICudaEngine.num_io_tensors",
        "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_dtype",
        "ICudaEngine.num_optimization_profiles", "ICudaEngine.get_tensor_profile_shape",
        "ICudaEngine.create_execution_context", "ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE",
        "IExecutionContext.set_optimization_profile_async", "IExecutionContext.set_input_shape",
        "IExecutionContext.infer_shapes", "IExecutionContext.get_tensor_shape",
        "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3", "TensorIOMode.INPUT",
        "__version__",
    }
    assert expected - seen == set()


def test_no_tensorrt_file_mentions_host_code_permission():
    """``engine_host_code_allowed`` must never be set: not even via a variable the rule misses."""
    for relative in CHECKED_FILES:
        tree = ast.parse((REPO / relative).read_text())
        attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert "engine_host_code_allowed" not in attributes, relative


BAD_SOURCE = '''
def build(trt, builder, config, runtime, parser, engine):
    config.set_flag(trt.BuilderFlag.FP16)
    fast = builder.platform_has_fast_fp16
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    runtime.engine_host_code_allowed = True
    other = trt.NoSuchClass
    calibrator = getattr(config, "int8_calibrator")
    where = parser.get_error(0).no_such_accessor()
    size = engine.device_memory_size
    context = engine.create_execution_context_without_device_memory()
    weights = engine.load_weights()
    profile_stream = config.profile_stream.dla_workspace_allocation_strategy
'''

GOOD_SOURCE = '''
def build(trt, builder, parser, engine):
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    text = parser.get_error(0).desc()
    code = parser.get_error(0).code().name
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)
    size = engine.device_memory_size_v2
    shape_profile = object()
    shape_profile.frames_max  # not a TensorRT object: not checked
'''


def test_checker_catches_bad_names(names):
    found = problems(BAD_SOURCE, names)
    joined = "\n".join(found)
    for bad in ("FP16", "platform_has_fast_fp16", "EXPLICIT_BATCH", "engine_host_code_allowed", "NoSuchClass",
                "int8_calibrator", "no_such_accessor", "device_memory_size ", "without_device_memory",
                "load_weights", "dla_workspace_allocation_strategy"):
        assert bad.strip() in joined, f"checker missed {bad}"
    assert "IBuilderConfig.int8_calibrator is not in TensorRT 11.1, 11.4" in joined  # 10.16 only
    assert "ICudaEngine.load_weights is not in TensorRT 10.16, 11.1, 11.4" in joined  # documented, never bound
    # 11.4 added Runtime.dla_workspace_allocation_strategy, but not on IBuilderConfig: qualified names tell.
    assert "*.dla_workspace_allocation_strategy is not in TensorRT 10.16, 11.1" in joined
    assert problems(GOOD_SOURCE, names) == []


def test_name_lists_reflect_the_11_removals_and_the_11_4_additions(names):
    """Sanity of the reference data the other tests trust."""
    assert {"BuilderFlag.FP16", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "Builder.platform_has_fast_fp16"} <= names["10.16"]
    for version in ("11.1", "11.4"):
        assert not {"BuilderFlag.FP16", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"} & names[version]
    assert "Runtime.dla_workspace_allocation_strategy" in names["11.4"] - names["11.1"]
    assert {"Runtime.load_runtime", "Runtime.engine_host_code_allowed"} <= names["10.16"] & names["11.1"] & names["11.4"]


def test_test_double_surface_exists_in_all_three_releases(names):
    """The double raises for anything it lacks, so code that passes the double-based tests uses
    only the double's surface: every public name on it must exist, on the same class, in all
    three releases (its enums per major: BuilderFlag11 in 11.1 and 11.4, BuilderFlag10 in 10.16)."""
    from doubles import tensorrt_double as d

    classes = {
        d._Builder: "Builder", d._Runtime: "Runtime", d.OnnxParser: "OnnxParser", d.IBuilderConfig: "IBuilderConfig",
        d.IOptimizationProfile: "IOptimizationProfile", d.ITimingCache: "ITimingCache",
        d.INetworkDefinition: "INetworkDefinition", d.ITensor: "ITensor", d.ILayer: "ILayer",
        d.ParserError: "ParserError", d.ICudaEngine: "ICudaEngine", d.IExecutionContext: "IExecutionContext",
        d.IHostMemory: "IHostMemory", d.ILogger: "ILogger", d.Logger: "Logger",
    }
    everywhere = names["10.16"] & names["11.1"] & names["11.4"]
    missing = []
    for cls, real in classes.items():
        if real not in everywhere:
            missing.append(real)
        for attr in vars(cls):
            value = vars(cls)[attr]
            if attr.startswith("_") or attr.startswith("double_") or (isinstance(value, type) and issubclass(value, IntEnum)):
                continue
            if f"{real}.{attr}" not in everywhere:
                missing.append(f"{real}.{attr}")
    per_release = {
        ("11.1", "11.4"): [d.BuilderFlag11, d.NetworkDefinitionCreationFlag11],
        ("10.16",): [d.BuilderFlag10, d.NetworkDefinitionCreationFlag10],
        VERSIONS: [d.MemoryPoolType, d.HardwareCompatibilityLevel, d.TensorIOMode, d.DataType, d.ErrorCode,
                   d.ExecutionContextAllocationStrategy],
    }
    for versions, enums in per_release.items():
        for enum in enums:
            real = enum.__name__.rstrip("0123456789")
            for member in enum.__members__:
                missing += [f"{real}.{member} ({v})" for v in versions if f"{real}.{member}" not in names[v]]
    missing += [f"ILogger.{m}" for m in d.Severity.__members__ if f"ILogger.Severity.{m}" not in everywhere]
    assert missing == []
