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
attribute used on them must exist in TensorRT 10.16, 11.1 and 11.4.

Timing cache: kernel timings are valid for one TensorRT version and one GPU, so the cache file
is named after both (:func:`timing_cache_file`) and a foreign cache is never offered. TensorRT
does not fail on a cache it cannot use: it logs (e.g. "Magic tag does not match" then "The
timing cache will not be used!") and builds without it. So a cache counts as loaded only when
TensorRT logged no error and no such notice while it was created and attached; an unusable
file is replaced by a fresh cache, never merged into the next save.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import EngineError
from .machine import DeviceInfo
from .profiles import ShapeProfile, validate_profiles
from .tensorrt_common import (
    INPUT_NAME,
    OUTPUT_NAME,
    create_logger,
    cuda_device_scope,
    dims_to_tuple,
    dtype_name,
    import_tensorrt,
    said,
    tensorrt_version,
    write_bytes_atomic,
)
from .tensorrt_install import tensorrt_cuda_major

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
    device_index: int | None = None
    tensorrt_cuda: str | None = None
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
            "device_index": self.device_index,
            "tensorrt_cuda": self.tensorrt_cuda,
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
    device_index: int | None = None,
    trt_module: Any = None,
) -> TensorRTBuildResult:
    """Compile ``onnx_path`` into a TensorRT plan at ``plan_path`` (written atomically).

    ``profiles`` become one optimization profile each on input ``mel``. ``timing_cache_path``
    (optional; name it with :func:`timing_cache_file`) is loaded if present and saved after the
    build, so rebuilds are fast; a cache TensorRT will not use is replaced with a warning.
    ``hardware_compatibility`` ``"ampere_plus"`` makes a plan that runs on any Ampere-or-newer
    GPU (slower; build on Ampere+). ``version_compatible`` sets VERSION_COMPATIBLE +
    EXCLUDE_LEAN_RUNTIME: the plan carries no runtime and no host code (hifitrt never enables
    ``engine_host_code_allowed``); a newer TensorRT runs it through the lean runtime of this
    build's version (see runtime/tensorrt_runner.py). ``device_index`` is the CUDA device to
    build on (the one the engine will run on; None: the current device).
    ``trt_module`` replaces ``import tensorrt`` (tests pass the CPU test double).
    Raises :class:`EngineError` with one readable line on any failure.
    """
    trt = import_tensorrt(trt_module)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX model {onnx_path} does not exist: run `tts-build-engine export` first")
    _check_options(workspace_bytes, hardware_compatibility, builder_optimization_level)
    warnings: list[str] = []

    with cuda_device_scope(device_index):  # TensorRT builds for the current CUDA device
        return _build(
            trt, onnx_path, Path(plan_path), profiles, workspace_bytes=workspace_bytes,
            timing_cache_path=Path(timing_cache_path) if timing_cache_path is not None else None,
            hardware_compatibility=hardware_compatibility, version_compatible=version_compatible,
            builder_optimization_level=builder_optimization_level, fp32_disable_tf32=fp32_disable_tf32,
            min_frames=min_frames, device_index=device_index, warnings=warnings,
        )


def _build(
    trt: Any, onnx_path: Path, plan_path: Path, profiles: Sequence[ShapeProfile], *, workspace_bytes: int,
    timing_cache_path: Path | None, hardware_compatibility: str | None, version_compatible: bool,
    builder_optimization_level: int | None, fp32_disable_tf32: bool, min_frames: int, device_index: int | None,
    warnings: list[str],
) -> TensorRTBuildResult:
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
    timing_cache, cache_loaded = _attach_timing_cache(config, logger, timing_cache_path, warnings)

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
        _save_timing_cache(config, logger, timing_cache_path, warnings)
    write_bytes_atomic(plan_path, plan)
    _LOG.info("built TensorRT plan %s (%d bytes) in %.1f s", plan_path, len(plan), build_seconds)

    return TensorRTBuildResult(
        plan_path=str(plan_path),
        plan_bytes=len(plan),
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        build_seconds=build_seconds,
        tensorrt_version=tensorrt_version(trt) or "unknown",
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
        device_index=device_index,
        tensorrt_cuda=tensorrt_cuda_major(),
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
        # needs engine_host_code_allowed; a newer TensorRT loads this version's lean runtime.
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


def timing_cache_file(folder: str | Path, trt_version: str | None, device: DeviceInfo | None) -> Path:
    """``folder/timing-<TensorRT version>-<gpu>-sm<cc>.cache``: one cache per TensorRT and GPU.

    TensorRT refuses (or silently ignores) timings from another version or device, so a cache
    shared between them would only ever be replaced; naming it after both keeps each valid.
    """
    if device is None:
        gpu = "no-gpu"
    else:
        name = re.sub(r"[^a-z0-9]+", "-", device.gpu_name.lower()).strip("-") or "gpu"
        gpu = f"{name}-sm{device.compute_capability.replace('.', '')}"
    version = re.sub(r"[^A-Za-z0-9.]+", "-", trt_version or "unknown")
    return Path(folder) / f"timing-{version}-{gpu}.cache"


def _cache_rejected(logger: Any, mark: int) -> str:
    """What TensorRT logged against a timing cache since ``mark`` ('' when nothing)."""
    errors = logger.messages_since(mark, errors_only=True)
    notices = [m for m in logger.messages_since(mark)
               if "timing cache" in m.lower() and ("not be used" in m.lower() or "invalid" in m.lower())]
    return " | ".join(errors + [m for m in notices if m not in errors])


def _read_timing_cache(config: Any, logger: Any, data: bytes) -> tuple[Any, str]:
    """(cache, '') when TensorRT reads ``data`` without complaint, else (None, what it said)."""
    mark = logger.mark()
    try:
        timing_cache = config.create_timing_cache(data)
    except (RuntimeError, ValueError, TypeError) as exc:
        return None, str(exc)
    rejected = _cache_rejected(logger, mark)
    if timing_cache is None or rejected:
        return None, rejected or "TensorRT returned no cache"
    return timing_cache, ""


def _attach_timing_cache(config: Any, logger: Any, cache_path: Path | None, warnings: list[str]) -> tuple[Any, bool]:
    """Attach a timing cache: the one at ``cache_path`` when TensorRT accepts it, else a new one.

    ``ignore_mismatch=False`` makes TensorRT refuse a cache from another device. A stale or
    corrupt cache may only slow the build, never fail it, so it is replaced with a warning.
    Returns (cache, loaded) — the cache must stay alive until the build is done.
    """
    data = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    if data:
        timing_cache, problem = _read_timing_cache(config, logger, data)
        if timing_cache is not None:
            mark = logger.mark()
            attached = bool(config.set_timing_cache(timing_cache, ignore_mismatch=False))
            problem = _cache_rejected(logger, mark) or ("" if attached else "TensorRT refused it")
            if not problem:
                return timing_cache, True
        message = f"timing cache {cache_path} is not usable with this GPU/TensorRT ({problem}); starting a new one"
        _LOG.warning(message)
        warnings.append(message)
    timing_cache = config.create_timing_cache(b"")
    if timing_cache is None or not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        raise EngineError("TensorRT could not create an empty timing cache; rebuild without --timing-cache")
    return timing_cache, False


def _save_timing_cache(config: Any, logger: Any, cache_path: Path, warnings: list[str]) -> None:
    """Save the config's timing cache, merged into what is on disk now when TensorRT reads that
    without complaint (another build may have written it meanwhile); an unreadable file is
    replaced, so a corrupt cache is never carried forward."""
    timing_cache = config.get_timing_cache()
    if timing_cache is None:
        warnings.append("TensorRT returned no timing cache; none saved")
        return
    if cache_path.is_file():
        disk_cache, _ = _read_timing_cache(config, logger, cache_path.read_bytes())
        if disk_cache is not None and disk_cache.combine(timing_cache, ignore_mismatch=False):
            timing_cache = disk_cache
    host_memory = timing_cache.serialize()
    write_bytes_atomic(cache_path, bytes(host_memory))
