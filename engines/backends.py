"""Engine backends: one class each, in one registry, plus the options every build takes.

Why a registry: TensorRT, ONNX Runtime (and OpenVINO) differ in what goes into their build key,
how they build, which file is "the engine", which files must go when another backend takes a
directory over, and whether a built engine is bound to the machine. Each backend says that
once, in its class; ``build_engine``, ``verify_engine_dir``, ``inspect`` and the runtime ask
the registry instead of testing ``backend == "tensorrt"`` in many places.

Interface a backend implements (subclass :class:`Backend`)::

    name: str                      # recorded as manifest.backend["name"]; the --backend choice
    label: str                     # words for messages ("TensorRT")
    stale_files: tuple[str, ...]   # engines.layout paths that mark a directory as this backend's
                                   # engine; a build for another backend deletes them
    machine_bound: bool            # True: the engine runs only on the GPU/version it was built
                                   # for, so verify_engine_dir calls check_machine before loading
    takes_bf16_gate: bool          # True: --threshold NAME=VALUE (BuildOptions.bf16_gate) means
                                   # something to it (OpenVINO); others refuse it
    precisions: tuple[str, ...]    # what --precision may be for it (default fp16, fp32)
    runs_on_cpu() -> bool          # pick the CPU default profiles (small batches)
    requested(trt_module) -> str   # why it can run here when asked for explicitly; EngineError
                                   # saying what is missing otherwise
    machine(trt_module) -> Machine # facts recorded in the manifest and compared on reuse
    key_inputs(options, machine) -> dict   # the backend's part of the build key
    engine_file(precision) -> str          # what the runner loads (a layout path)
    build(BuildRequest) -> BackendBuild    # step 4 of build_engine, into the engine directory;
                                           # BackendBuild.precision: what it really built
    recorded_device(machine) -> dict|None  # the GPU written into manifest.device
    check_machine(manifest, machine, engine_dir)  # EngineError when it cannot run here

Adding a backend (e.g. OpenVINO): write the class in its own module
(``engines/openvino_engine.py``), call ``register(OpenVinoBackend())`` at its bottom, and add
its module path to :data:`PLUGIN_MODULES` below so the registry imports it on first use (the
import stays lazy: hifitrt imports without openvino installed). The matching runner factory is
registered in :mod:`hifitrt.runtime.loading` the same way.

``auto`` (:func:`resolve_backend`): with a CUDA GPU, TensorRT (or ONNX Runtime's CUDA provider
when TensorRT is missing). Without one, the CPU backends that can build the precision asked for
are weighed: only ONNX Runtime builds fp16 (the default), only OpenVINO bf16; for fp32 and
``auto`` precision :class:`~hifitrt.engines.cpu_selection.CpuAutoBackend` times ONNX Runtime and
OpenVINO on the build's own fp32 ONNX after export and builds the fastest that passes parity,
recording the measurement and its reason in the manifest (``backend.selection``).
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..errors import EngineError
from . import layout
from .machine import DeviceInfo, Machine, current_device, current_machine, tensorrt_version
from .onnxruntime_engine import build_onnxruntime_engine, choose_providers
from .profiles import ShapeProfile
from .tensorrt_builder import build_tensorrt_engine, timing_cache_file
from .tensorrt_common import device_index, import_tensorrt
from .tensorrt_install import LEAN_LIBRARY_ENV, find_lean_runtime, lean_wheel, tensorrt_cuda_major, version_compatible_runtime_ok

if TYPE_CHECKING:  # pragma: no cover
    from ..export.load import Vocoder
    from ..export.reference import TorchRunner
    from .manifest import Manifest

_LOG = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32", "bf16", "auto")
"""Every --precision choice; each backend accepts its own subset (``Backend.precisions``)."""
AUTO = "auto"
DEFAULT_OPSET = 17
DEFAULT_WORKSPACE_BYTES = 2 << 30

PLUGIN_MODULES: dict[str, str] = {"openvino": "hifitrt.engines.openvino_engine"}
"""Backends registered by modules imported on first use: backend name -> module."""


# ------------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class BuildOptions:
    """Everything that decides what ``build_engine`` produces, as one immutable value.

    ``profiles`` are ShapeProfile objects or ``--profile`` strings (empty: the default
    profiles for the backend, raised to the vocoder's ``min_frames``). ``verify_export``
    (the fp32 ONNX-vs-PyTorch check) and ``force`` change no artifact, so they are not part of
    the build key. TensorRT-only: ``workspace_bytes``, ``hardware_compatibility`` ("ampere_plus"
    or None), ``version_compatible``, ``device`` ("cuda:N": the GPU to build on and record, the
    one the engine will run on; not in the key, the GPU it names is). ONNX Runtime only:
    ``use_tensorrt_ep``. OpenVINO ``--precision bf16|auto`` only: ``bf16_gate``, ``NAME=VALUE``
    strings that tighten or loosen the BF16 plan's gate (``build --threshold``; names and
    defaults in :data:`hifitrt.engines.bf16_plan.GATE`), validated and stored canonically
    (sorted, one per name) because they are part of the build key.
    """

    backend: str = AUTO
    precision: str = "fp16"
    voice: str | None = None
    profiles: tuple[ShapeProfile | str, ...] = ()
    opset: int = DEFAULT_OPSET
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    hardware_compatibility: str | None = None
    version_compatible: bool = False
    device: str | None = None
    use_tensorrt_ep: bool = False
    verify_export: bool = True
    force: bool = False
    allow_short_profiles: bool = False  # accept profiles shorter than the receptive field (inexact chunking)
    bf16_gate: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "bf16_gate", _canonical_gate(self.bf16_gate, self.precision))
        object.__setattr__(self, "profiles", tuple(self.profiles or ()))
        hw = self.hardware_compatibility
        object.__setattr__(self, "hardware_compatibility",
                           None if hw is None or str(hw).lower() in ("", "none") else str(hw).lower())
        object.__setattr__(self, "workspace_bytes", int(self.workspace_bytes))
        object.__setattr__(self, "version_compatible", bool(self.version_compatible))
        object.__setattr__(self, "use_tensorrt_ep", bool(self.use_tensorrt_ep))

    def replace(self, **changes: Any) -> "BuildOptions":
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------------------ backend
@dataclass(frozen=True)
class BuildRequest:
    """What a backend's build step gets: the directory, the ONNX to compile and the options,
    plus the loaded vocoder and its (cached) PyTorch reference for backends that measure a
    plan of their own (OpenVINO's BF16)."""

    engine_dir: Path
    onnx_relpath: str
    profiles: tuple[ShapeProfile, ...]
    min_frames: int
    options: BuildOptions
    trt_module: Any = None
    vocoder: "Vocoder | None" = None
    reference: "TorchRunner | None" = None
    bf16_plan: Any = None
    """A BF16 plan already measured on this ONNX (by ``--backend auto``'s CPU selection), so the
    OpenVINO build uses it instead of planning again; None: the backend plans if it needs to."""


@dataclass(frozen=True)
class BackendBuild:
    """What a backend's build step produced: the engine file, the manifest's ``backend``
    section, and the artifact paths it wrote (hashed into the manifest)."""

    engine_file: str
    info: dict[str, Any]
    artifacts: tuple[str, ...] = field(default_factory=tuple)
    precision: str | None = None
    """The precision actually built when the backend decides it (``auto``, bf16 refused -> fp32,
    the CPU selection's choice); None: as asked."""


class Backend(abc.ABC):
    """One way to compile and run the exported graph (see the module docstring)."""

    name: ClassVar[str]
    label: ClassVar[str]
    stale_files: ClassVar[tuple[str, ...]] = ()
    precisions: ClassVar[tuple[str, ...]] = ("fp16", "fp32")
    machine_bound: ClassVar[bool] = False
    takes_bf16_gate: ClassVar[bool] = False

    def runs_on_cpu(self) -> bool:
        return current_device() is None

    @abc.abstractmethod
    def requested(self, trt_module: Any = None) -> str:
        """Why this backend can run here when asked for by name; EngineError when it cannot."""

    def machine(self, trt_module: Any = None, device: Any = None) -> Machine:
        """The facts recorded in the manifest and compared on reuse (``device``: "cuda:N")."""
        return Machine(current_device(), None)

    @abc.abstractmethod
    def key_inputs(self, options: BuildOptions, machine: Machine) -> dict[str, Any]:
        """The backend's part of the build key (always with the keys ``options``,
        ``tensorrt_version``, ``gpu`` and ``providers``, None where they do not apply)."""

    def engine_file(self, precision: str) -> str:
        return layout.onnx_for(precision)

    @abc.abstractmethod
    def build(self, request: BuildRequest) -> BackendBuild:
        """Compile ``request.onnx_relpath`` into the engine directory (step 4 of the build)."""

    def recorded_device(self, machine: Machine) -> dict[str, str] | None:
        """The GPU written into ``manifest.device`` (None: the engine is not GPU-specific)."""
        return None

    def check_machine(self, manifest: "Manifest", machine: Machine, engine_dir: Any = "ENGINE_DIR") -> None:
        """EngineError when an engine built as ``manifest`` says cannot run on ``machine``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class TensorRTBackend(Backend):
    """A strongly typed TensorRT plan per engine directory, bound to its GPU and version."""

    name = "tensorrt"
    label = "TensorRT"
    stale_files = (layout.TENSORRT_PLAN,)
    machine_bound = True

    def runs_on_cpu(self) -> bool:
        return False

    def requested(self, trt_module: Any = None) -> str:
        device = current_device()
        if trt_module is None and device is None:
            raise EngineError(
                "the TensorRT backend needs an NVIDIA GPU and this machine has none (torch sees no CUDA device): "
                "use --backend onnxruntime or auto"
            )
        trt = import_tensorrt(trt_module)  # clear EngineError when not installed or too old
        on = device.describe() if device else "the TensorRT test double"
        return f"TensorRT {tensorrt_version(trt)} as requested on {on}"

    def machine(self, trt_module: Any = None, device: Any = None) -> Machine:
        return current_machine(trt_module, device_index(device))

    def key_inputs(self, options: BuildOptions, machine: Machine) -> dict[str, Any]:
        return {
            "options": {"opset": options.opset, "workspace_bytes": options.workspace_bytes,
                        "hardware_compatibility": options.hardware_compatibility,
                        "version_compatible": options.version_compatible},
            "tensorrt_version": machine.tensorrt_version,
            "gpu": machine.device.to_dict() if machine.device else None,
            "providers": None,
        }

    def engine_file(self, precision: str) -> str:
        return layout.TENSORRT_PLAN

    def build(self, request: BuildRequest) -> BackendBuild:
        out, opts = request.engine_dir, request.options
        (out / layout.TENSORRT_PLAN).parent.mkdir(exist_ok=True)
        here = self.machine(request.trt_module, opts.device)  # names the timing cache (TensorRT + GPU)
        result = build_tensorrt_engine(
            out / request.onnx_relpath, out / layout.TENSORRT_PLAN, request.profiles,
            workspace_bytes=opts.workspace_bytes, timing_cache_path=timing_cache_file(
                (out / layout.TENSORRT_PLAN).parent, here.tensorrt_version, here.device),
            hardware_compatibility=opts.hardware_compatibility, version_compatible=opts.version_compatible,
            min_frames=request.min_frames, device_index=device_index(opts.device), trt_module=request.trt_module,
        )
        details = result.to_dict()
        for key in ("plan_path", "timing_cache_path", "profiles", "plan_sha256", "plan_bytes"):
            details.pop(key, None)
        info = {"name": self.name, "version": result.tensorrt_version, "providers": [], "build": details}
        return BackendBuild(layout.TENSORRT_PLAN, info, (layout.TENSORRT_PLAN,))

    def recorded_device(self, machine: Machine) -> dict[str, str] | None:
        return machine.device.to_dict() if machine.device else None

    def check_machine(self, manifest: "Manifest", machine: Machine, engine_dir: Any = "ENGINE_DIR") -> None:
        """Plans match the exact TensorRT version and the GPU they were built on. Two build
        options relax that, as TensorRT documents: ``version_compatible`` plans run on a TensorRT
        that may run them (the same or a newer release of the same major, or a 10.x plan on
        11.x) through the lean runtime of the build version, which must be installed here
        (engines/tensorrt_install.py); ``hardware_compatibility="ampere_plus"`` plans load on any
        GPU of compute capability 8.0 or newer."""
        options = manifest.options or {}
        built_version = str(manifest.backend.get("version") or "unknown")
        built_device = manifest.device_info
        version_compatible = bool(options.get("version_compatible"))
        problems = []
        if not _version_ok(built_version, machine.tensorrt_version, version_compatible):
            problems.append("TensorRT version")
        if not _device_ok(built_device, machine.device, options.get("hardware_compatibility")):
            problems.append("GPU")
        if not problems:
            if version_compatible and machine.tensorrt_version != built_version and find_lean_runtime(built_version) is None:
                raise EngineError(
                    f"engine in {engine_dir} was built version-compatible by TensorRT {built_version} and runs on "
                    f"TensorRT {machine.tensorrt_version} only through the {built_version} lean runtime: pip install "
                    f"{lean_wheel(built_version, tensorrt_cuda_major())} (or set {LEAN_LIBRARY_ENV} to its "
                    f"libnvinfer_lean.so), or rebuild it here with {manifest.rebuild_command(engine_dir)}"
                )
            return
        built_gpu = built_device.describe() if built_device else "no CUDA GPU"
        raise EngineError(
            f"engine in {engine_dir} was built for {built_gpu} with TensorRT {built_version}, this machine has "
            f"{machine.describe()} ({' and '.join(problems)} differ; TensorRT plans run only where they were "
            f"built): rebuild it here with {manifest.rebuild_command(engine_dir)}"
        )


class OnnxRuntimeBackend(Backend):
    """The precision-planned ONNX plus ``onnxruntime/session.json``; portable across machines."""

    name = "onnxruntime"
    label = "ONNX Runtime"
    stale_files = (layout.ORT_SESSION,)

    def requested(self, trt_module: Any = None) -> str:
        device = current_device()
        where = f"CUDA provider on {device.describe()}" if device else "CPU provider (no CUDA GPU)"
        return f"ONNX Runtime as requested ({where})"

    def key_inputs(self, options: BuildOptions, machine: Machine) -> dict[str, Any]:
        providers, _ = choose_providers(options.use_tensorrt_ep)
        return {
            "options": {"opset": options.opset, "use_tensorrt_ep": options.use_tensorrt_ep},
            "tensorrt_version": None,
            "gpu": None,
            "providers": list(providers),
        }

    def build(self, request: BuildRequest) -> BackendBuild:
        result = build_onnxruntime_engine(request.engine_dir, request.onnx_relpath,
                                          precision=request.options.precision,
                                          use_tensorrt_ep=request.options.use_tensorrt_ep)
        info = {"name": self.name, "version": result.config.onnxruntime_version,
                "providers": list(result.config.providers), "reason": result.reason}
        return BackendBuild(request.onnx_relpath, info, (result.session_file,))


# ------------------------------------------------------------------------------------ registry
_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add ``backend`` to the registry (a later registration of the same name replaces it)."""
    _REGISTRY[backend.name] = backend
    return backend


def backend_names() -> tuple[str, ...]:
    """Names of the built-in and plug-in backends (plug-ins are named even when not importable)."""
    return tuple(dict.fromkeys([*_REGISTRY, *PLUGIN_MODULES]))


def backend_for(name: str) -> Backend:
    """The backend called ``name``; EngineError naming the choices when there is none."""
    if name not in _REGISTRY and name in PLUGIN_MODULES:
        try:
            importlib.import_module(PLUGIN_MODULES[name])
        except ImportError as exc:
            raise EngineError(f"the {name} backend is not available here ({exc})") from exc
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EngineError(
            f"unknown backend {name!r}: use one of {', '.join((AUTO, *backend_names()))}"
        ) from None


def resolve_backend(requested: str, trt_module: Any = None, *,
                    options: BuildOptions | None = None) -> tuple[Backend, str]:
    """(backend, why) for the requested name on this machine and ``options`` (its precision
    and BF16 gate; default: ``BuildOptions()``).

    ``auto`` picks TensorRT only with a CUDA GPU *and* an importable TensorRT, else ONNX
    Runtime with the CUDA provider on a GPU. Without a CUDA GPU it weighs the CPU backends that
    can build the precision (:func:`hifitrt.engines.cpu_selection.resolve_cpu_auto`): ONNX
    Runtime for fp16, OpenVINO for bf16, and for fp32 or ``auto`` a :class:`CpuAutoBackend`
    that times ONNX Runtime and OpenVINO during the build and keeps the fastest that passes
    parity. A backend asked for by name that cannot run here is an error saying what is
    missing (``trt_module``, the test double, stands in for both a GPU and TensorRT), and so is
    a BF16 gate (``options.bf16_gate``) for a backend without one.
    """
    options = options or BuildOptions(backend=requested)
    backend, why = _resolve(requested, trt_module, options.precision)
    if options.bf16_gate and not backend.takes_bf16_gate:
        raise EngineError(f"--threshold {' '.join(options.bf16_gate)} sets the BF16 gate of OpenVINO builds, and "
                          f"this build is {backend.label} ({why}): drop --threshold or use --backend openvino")
    return backend, why


def _resolve(requested: str, trt_module: Any, precision: str) -> tuple[Backend, str]:
    if requested != AUTO:
        backend = backend_for(requested)
        return backend, backend.requested(trt_module)
    device = current_device()
    version = tensorrt_version(trt_module)
    if device is not None and version is not None:
        return backend_for("tensorrt"), f"auto: CUDA GPU {device.describe()} and TensorRT {version} found"
    if device is None:
        from .cpu_selection import resolve_cpu_auto  # imports this module: lazy, no cycle

        return resolve_cpu_auto(precision)
    return backend_for("onnxruntime"), (
        f"auto: CUDA GPU {device.describe()} but TensorRT is not importable, so ONNX Runtime with the CUDA "
        "provider (pip install 'hifitrt[gpu-cu12]' or 'hifitrt[gpu-cu13]' for TensorRT, see docs/TENSORRT.md)"
    )


# ------------------------------------------------------------------------------------ helpers
def _canonical_gate(items: Any, precision: str) -> tuple[str, ...]:
    """``bf16_gate`` validated (EngineError naming the bad item) as sorted ``name=value`` strings."""
    if isinstance(items, str):
        items = (items,)
    items = tuple(items or ())
    if not items:
        return ()
    if precision not in ("bf16", "auto"):
        raise EngineError(f"--threshold {' '.join(map(str, items))} sets the BF16 gate of OpenVINO builds "
                          f"(--precision bf16 or auto); a {precision} build has none: drop --threshold")
    from .bf16_plan import parse_gate_overrides  # lazy: the plan module pulls in OpenVINO's engine code

    return tuple(f"{name}={value!r}" for name, value in sorted(parse_gate_overrides(items).items()))


def _version_ok(built: str, here: str | None, version_compatible: bool) -> bool:
    if here is None:
        return False
    return here == built or (version_compatible and version_compatible_runtime_ok(built, here))


def _cc_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split("."))
    except ValueError:
        return ()


def _device_ok(built: DeviceInfo | None, here: DeviceInfo | None, hardware_compatibility: Any) -> bool:
    if built is None or here is None:
        return built is None and here is None  # only test-double builds record no GPU
    if hardware_compatibility and str(hardware_compatibility).lower() == "ampere_plus":
        return _cc_tuple(here.compute_capability) >= (8, 0)
    return built.compute_capability == here.compute_capability and built.gpu_name == here.gpu_name


def options_from(mapping: Mapping[str, Any] | None = None, **overrides: Any) -> BuildOptions:
    """BuildOptions from keyword arguments (unknown names are an EngineError, not a TypeError)."""
    values = {**(mapping or {}), **overrides}
    names = {f.name for f in dataclasses.fields(BuildOptions)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise EngineError(f"unknown build option(s) {', '.join(unknown)}: use {', '.join(sorted(names))}")
    return BuildOptions(**values)


register(TensorRTBackend())
register(OnnxRuntimeBackend())

__all__ = [
    "AUTO", "Backend", "BackendBuild", "BuildOptions", "BuildRequest", "OnnxRuntimeBackend", "PLUGIN_MODULES",
    "PRECISIONS", "TensorRTBackend", "backend_for", "backend_names", "options_from", "register", "resolve_backend",
]
