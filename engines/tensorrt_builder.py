"""Build a TensorRT plan from hifitrt's ONNX graph: one code path for TensorRT 10.12+ and 11.x.

Precision lives in the ONNX graph. The network is created strongly typed
(``1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED``: required on 10.x, always on and ignored
on 11.x) and no precision builder flag is ever set (``BuilderFlag.FP16``/``INT8``... do not
exist on 11.x, and FP16 together with a strongly typed network is an error on 10.12+). An FP16
engine therefore comes only from ``model.fp16.onnx``, the same graph ONNX Runtime validates.
``BuilderFlag.TF32`` is on by default in TensorRT; it is cleared (``fp32_disable_tf32``) so the
fp32 layers match the fp32 ONNX reference.

Each step is a small function in build order (Polygraphy's loaders inspired the shape, but the
plain TensorRT API is used: Polygraphy's ``CreateConfig`` is not needed for a strongly typed
build). Naming rule, checked by tests/test_tensorrt_api_names.py: variables holding TensorRT
objects are named ``trt``, ``builder``, ``network``, ``config``, ``parser``, ``parser_error``,
``trt_profile``, ``timing_cache``, ``disk_cache``, ``host_memory`` or ``tensor``, and every
attribute used on them must exist in both TensorRT 10.16 and 11.1.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import EngineError
from .profiles import ShapeProfile, validate_profiles
from .tensorrt_common import (
    INPUT_NAME,
    OUTPUT_NAME,
    create_logger,
    dims_to_tuple,
    dtype_name,
    import_tensorrt,
    said,
    tensorrt_version,
    write_bytes_atomic,
)

_LOG = logging.getLogger(__name__)

HARDWARE_COMPATIBILITY_CHOICES = ("ampere_plus",)


@dataclass(frozen=True)
class TensorRTBuildResult:
    """What a build produced and how; stored in the engine manifest."""

    plan_path: str
    plan_bytes: int
    plan_sha256: str
    build_seconds: float
    tensorrt_version: str
    num_profiles: int
    profiles: tuple[ShapeProfile, ...]
    in_channels: int
    input_dtype: str
    output_dtype: str
    workspace_bytes: int
    tf32: bool
    strongly_typed: bool = True
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_compatibility: str | None = None
    builder_optimization_level: int | None = None
    timing_cache_path: str | None = None
    timing_cache_loaded: bool = False
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_path": self.plan_path,
            "plan_bytes": self.plan_bytes,
            "plan_sha256": self.plan_sha256,
            "build_seconds": round(self.build_seconds, 3),
            "tensorrt_version": self.tensorrt_version,
            "num_profiles": self.num_profiles,
            "profiles": [p.to_dict() for p in self.profiles],
            "in_channels": self.in_channels,
            "input_dtype": self.input_dtype,
            "output_dtype": self.output_dtype,
            "workspace_bytes": self.workspace_bytes,
            "tf32": self.tf32,
            "strongly_typed": self.strongly_typed,
            "version_compatible": self.version_compatible,
            "exclude_lean_runtime": self.exclude_lean_runtime,
            "hardware_compatibility": self.hardware_compatibility,
            "builder_optimization_level": self.builder_optimization_level,
            "timing_cache_path": self.timing_cache_path,
            "timing_cache_loaded": self.timing_cache_loaded,
            "warnings": list(self.warnings),
        }


def build_tensorrt_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    profiles: Sequence[ShapeProfile],
    *,
    workspace_bytes: int = 1 << 30,
    timing_cache_path: str | Path | None = None,
    hardware_compatibility: str | None = None,
    version_compatible: bool = False,
    builder_optimization_level: int | None = None,
    fp32_disable_tf32: bool = True,
    min_frames: int = 1,
    trt_module: Any = None,
) -> TensorRTBuildResult:
    """Compile ``onnx_path`` into a TensorRT plan at ``plan_path`` (written atomically).

    ``profiles`` become one optimization profile each on input ``mel``. ``timing_cache_path``
    (optional) is loaded if present and saved after the build, so rebuilds are fast; a cache
    from another GPU or TensorRT version is ignored with a warning. ``hardware_compatibility``
    ``"ampere_plus"`` makes a plan that runs on any Ampere-or-newer GPU (slower; build on
    Ampere+). ``version_compatible`` sets VERSION_COMPATIBLE + EXCLUDE_LEAN_RUNTIME: the plan
    then carries no host code (hifitrt never enables ``engine_host_code_allowed``).
    ``trt_module`` replaces ``import tensorrt`` (tests pass the CPU test double).
    Raises :class:`EngineError` with one readable line on any failure.
    """
    trt = import_tensorrt(trt_module)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX model {onnx_path} does not exist: run `tts-build-engine export` first")
    _check_options(workspace_bytes, hardware_compatibility, builder_optimization_level)
    warnings: list[str] = []

    logger = create_logger(trt)
    builder = trt.Builder(logger)
    network = _create_network(trt, builder)
    parser = _parse_onnx(trt, network, logger, onnx_path)  # keep alive: it owns the weights
    in_channels, input_dtype, output_dtype = _network_io(network, onnx_path)
    validate_profiles(profiles, min_frames=min_frames, input_names=_input_names(network))

    config = _create_config(
        trt,
        builder,
        workspace_bytes=workspace_bytes,
        disable_tf32=fp32_disable_tf32,
        hardware_compatibility=hardware_compatibility,
        version_compatible=version_compatible,
        builder_optimization_level=builder_optimization_level,
    )
    _add_profiles(builder, config, profiles, in_channels, logger)
    timing_cache, cache_loaded = _attach_timing_cache(config, timing_cache_path, warnings)

    mark = logger.mark()  # quote only what the build itself logs
    started = time.perf_counter()
    host_memory = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - started
    if host_memory is None:
        raise EngineError(
            f"TensorRT {tensorrt_version(trt)} could not build an engine from {onnx_path}{said(logger, mark)}: "
            "check the log above; try a larger workspace (--workspace) or build with --backend onnxruntime"
        )
    plan = bytes(host_memory)
    del parser, timing_cache

    if timing_cache_path is not None:
        _save_timing_cache(config, Path(timing_cache_path), warnings)
    write_bytes_atomic(plan_path, plan)
    _LOG.info("built TensorRT plan %s (%d bytes) in %.1f s", plan_path, len(plan), build_seconds)

    return TensorRTBuildResult(
        plan_path=str(plan_path),
        plan_bytes=len(plan),
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        build_seconds=build_seconds,
        tensorrt_version=tensorrt_version(trt),
        num_profiles=len(profiles),
        profiles=tuple(profiles),
        in_channels=in_channels,
        input_dtype=input_dtype,
        output_dtype=output_dtype,
        workspace_bytes=workspace_bytes,
        tf32=not fp32_disable_tf32,
        version_compatible=version_compatible,
        exclude_lean_runtime=version_compatible,
        hardware_compatibility=hardware_compatibility.lower() if hardware_compatibility else None,
        builder_optimization_level=builder_optimization_level,
        timing_cache_path=str(timing_cache_path) if timing_cache_path is not None else None,
        timing_cache_loaded=cache_loaded,
        warnings=tuple(warnings),
    )


def _check_options(workspace_bytes: int, hardware_compatibility: str | None, opt_level: int | None) -> None:
    if isinstance(workspace_bytes, bool) or not isinstance(workspace_bytes, int) or workspace_bytes <= 0:
        raise EngineError(f"workspace size {workspace_bytes!r} must be a positive number of bytes")
    if hardware_compatibility is not None and hardware_compatibility.lower() not in HARDWARE_COMPATIBILITY_CHOICES:
        raise EngineError(
            f"unknown hardware compatibility {hardware_compatibility!r}: use 'ampere_plus' or leave it unset"
        )
    if opt_level is not None and (isinstance(opt_level, bool) or not isinstance(opt_level, int) or not 0 <= opt_level <= 5):
        raise EngineError(f"builder optimization level {opt_level!r} must be an integer from 0 to 5 (default 3)")


def _create_network(trt: Any, builder: Any) -> Any:
    """A strongly typed network: tensor types come from the ONNX graph, never from flags."""
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def _parse_onnx(trt: Any, network: Any, logger: Any, onnx_path: Path) -> Any:
    """Parse the ONNX file into ``network``; on failure list the parser's errors with node names.

    ``parse_from_file`` (rather than ``parse(bytes)``) lets the parser find external weight
    files next to the model.
    """
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return parser
    problems = [_describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
    detail = "; ".join(problems) if problems else f"no parser error recorded{said(logger)}"
    raise EngineError(
        f"TensorRT {tensorrt_version(trt)} cannot parse {onnx_path}: {detail}. Re-export with hifitrt "
        "(opset 17-20); if an operator is unsupported, use --backend onnxruntime"
    )


def _describe_parser_error(parser_error: Any) -> str:
    """'node 3 'conv_post' (Conv): UNSUPPORTED_NODE: <description>' from a ParserError.

    Uses only ``code/desc/node/node_name/node_operator`` (present in 10.16 and 11.1).
    """
    code = parser_error.code()
    code_text = str(getattr(code, "name", code))
    index = parser_error.node()
    name = parser_error.node_name()
    operator = parser_error.node_operator()
    desc = " ".join(str(parser_error.desc()).split())
    if index is not None and int(index) >= 0:
        where = f"node {int(index)} '{name}'" + (f" ({operator})" if operator else "")
    else:
        where = "model"
    return f"{where}: {code_text}: {desc}"


def _input_names(network: Any) -> list[str]:
    return [network.get_input(i).name for i in range(network.num_inputs)]


def _output_names(network: Any) -> list[str]:
    return [network.get_output(i).name for i in range(network.num_outputs)]


def _network_io(network: Any, onnx_path: Path) -> tuple[int, str, str]:
    """(channels, input dtype, output dtype) of ``mel``/``wav``, checking the graph contract."""
    inputs = _input_names(network)
    outputs = _output_names(network)
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise EngineError(
            f"{onnx_path} has inputs {inputs} and outputs {outputs}, expected '{INPUT_NAME}' -> "
            f"'{OUTPUT_NAME}': export the vocoder with hifitrt (tts-build-engine export)"
        )
    tensor = network.get_input(inputs.index(INPUT_NAME))
    shape = dims_to_tuple(tensor.shape)
    if shape is None or len(shape) != 3 or shape[1] < 1:
        raise EngineError(
            f"input '{INPUT_NAME}' of {onnx_path} has shape {shape}, expected [batch, channels, frames] with a "
            "fixed channel count: export the vocoder with hifitrt"
        )
    input_dtype = dtype_name(tensor.dtype)
    tensor = network.get_output(outputs.index(OUTPUT_NAME))
    return int(shape[1]), input_dtype, dtype_name(tensor.dtype)


def _create_config(
    trt: Any,
    builder: Any,
    *,
    workspace_bytes: int,
    disable_tf32: bool,
    hardware_compatibility: str | None,
    version_compatible: bool,
    builder_optimization_level: int | None,
) -> Any:
    """Builder config: workspace limit, TF32 off, optional compatibility; no precision flags."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if disable_tf32:
        # TF32 is enabled by default and would round fp32 matmul/conv inputs to 10-bit mantissas.
        config.clear_flag(trt.BuilderFlag.TF32)
    if hardware_compatibility is not None and hardware_compatibility.lower() == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if version_compatible:
        # Without the lean runtime the plan carries no executable host code, so loading it never
        # needs engine_host_code_allowed.
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    if builder_optimization_level is not None:
        config.builder_optimization_level = builder_optimization_level
    return config


def _add_profiles(builder: Any, config: Any, profiles: Sequence[ShapeProfile], channels: int, logger: Any) -> None:
    """One optimization profile per ShapeProfile on input ``mel``, in order (index = position)."""
    for expected_index, shape_profile in enumerate(profiles):
        trt_profile = builder.create_optimization_profile()
        min_shape, opt_shape, max_shape = shape_profile.shapes(channels)
        try:
            trt_profile.set_shape(INPUT_NAME, min_shape, opt_shape, max_shape)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise EngineError(f"TensorRT rejected profile {shape_profile.name!r}: {exc}{said(logger)}") from exc
        index = config.add_optimization_profile(trt_profile)
        if index != expected_index:
            raise EngineError(
                f"TensorRT rejected profile {shape_profile.name!r} (min {min_shape}, opt {opt_shape}, "
                f"max {max_shape}){said(logger)}"
            )


def _attach_timing_cache(config: Any, cache_path: str | Path | None, warnings: list[str]) -> tuple[Any, bool]:
    """Attach a timing cache (loaded from ``cache_path`` when it exists and fits this GPU).

    A cache records kernel timings for one GPU and TensorRT version. ``ignore_mismatch=False``
    makes TensorRT refuse one from another device; it is then replaced by an empty cache with a
    warning, because a stale cache may only slow the build, never fail it.
    Returns (cache, loaded) — the cache must stay alive until the build is done.
    """
    data = b""
    if cache_path is not None and Path(cache_path).is_file():
        data = Path(cache_path).read_bytes()
    timing_cache = _timing_cache_from_bytes(config, data) if data else None
    loaded = timing_cache is not None and bool(config.set_timing_cache(timing_cache, ignore_mismatch=False))
    if data and not loaded:
        message = f"timing cache {cache_path} does not fit this GPU/TensorRT version; starting a new one"
        _LOG.warning(message)
        warnings.append(message)
    if not loaded:
        timing_cache = config.create_timing_cache(b"")
        if timing_cache is None or not config.set_timing_cache(timing_cache, ignore_mismatch=False):
            raise EngineError("TensorRT could not create an empty timing cache; rebuild without --timing-cache")
    return timing_cache, loaded


def _save_timing_cache(config: Any, cache_path: Path, warnings: list[str]) -> None:
    """Save the config's timing cache, merged into whatever is on disk now (another build may
    have written it meanwhile); a cache that cannot be merged is simply replaced."""
    timing_cache = config.get_timing_cache()
    if timing_cache is None:
        warnings.append("TensorRT returned no timing cache; none saved")
        return
    if cache_path.is_file():
        disk_cache = _timing_cache_from_bytes(config, cache_path.read_bytes())
        if disk_cache is not None and disk_cache.combine(timing_cache, ignore_mismatch=False):
            timing_cache = disk_cache
    host_memory = timing_cache.serialize()
    write_bytes_atomic(cache_path, bytes(host_memory))


def _timing_cache_from_bytes(config: Any, data: bytes) -> Any:
    """``create_timing_cache`` returning None (not raising) for bytes TensorRT cannot read."""
    try:
        return config.create_timing_cache(data)
    except (RuntimeError, ValueError, TypeError) as exc:
        _LOG.warning("TensorRT could not read a timing cache: %s", exc)
        return None
