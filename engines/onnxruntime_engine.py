"""The ONNX Runtime engine: the precision-planned ONNX plus the session options to run it with.

Same directory contract as the TensorRT engine: the manifest's ``engine_file`` is what the
runner loads (``model.fp16.onnx`` for fp16, ``model.onnx`` for fp32) and
``onnxruntime/session.json`` says how::

    {"schema": "hifitrt.ort-session", "schema_version": 1, "model": "model.fp16.onnx",
     "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
     "provider_options": {"TensorrtExecutionProvider": {...}},
     "graph_optimization_level": "ORT_ENABLE_ALL", "intra_op_num_threads": 0,
     "use_tensorrt_ep": false, "onnxruntime_version": "1.31.1"}

Providers: CUDA only when a CUDA GPU is present (``onnxruntime-gpu`` lists the CUDA provider
even on machines without one, then logs an error and falls back), the TensorRT execution
provider only when asked for and available, CPU always last. ``onnxruntime`` is imported lazily
and only the ``onnxruntime-gpu`` wheel is assumed (never the CPU wheel: both own the same module).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..jsonfile import read_json, write_json
from ..errors import EngineError
from ..export.ort import CPU, CUDA, TENSORRT_EP, make_session
from . import layout
from .machine import DeviceInfo, current_device

_LOG = logging.getLogger(__name__)

SESSION_SCHEMA = "hifitrt.ort-session"
SESSION_SCHEMA_VERSION = 1
SESSION_RELPATH = layout.ORT_SESSION
TRT_EP_CACHE_RELDIR = layout.ORT_TRT_EP_CACHE
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
INSTALL_HINT = "pip install onnxruntime-gpu (it also runs on CPU); do not install the 'onnxruntime' CPU wheel beside it"


def import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort  # type: ignore[import-not-found]
    except (ImportError, OSError) as exc:
        raise EngineError(f"ONNX Runtime is not installed ({exc}): {INSTALL_HINT}") from exc
    return ort


def available_providers() -> list[str]:
    return list(import_onnxruntime().get_available_providers())


def choose_providers(
    use_tensorrt_ep: bool = False,
    *,
    device: DeviceInfo | None | str = "detect",
    available: Sequence[str] | None = None,
) -> tuple[list[str], str]:
    """(providers in priority order, the reason in words) for this machine."""
    gpu = current_device() if device == "detect" else device
    have = list(available) if available is not None else available_providers()
    providers: list[str] = []
    reasons: list[str] = []
    if gpu is None:
        reasons.append("no CUDA GPU, so the CPU provider")
        if use_tensorrt_ep:
            reasons.append("the TensorRT EP was asked for but needs a GPU")
    else:
        if use_tensorrt_ep:
            if TENSORRT_EP in have:
                providers.append(TENSORRT_EP)
                reasons.append("TensorRT EP as asked")
            else:
                reasons.append("the TensorRT EP was asked for but this onnxruntime build lacks it")
        if CUDA in have:
            providers.append(CUDA)
            reasons.append(f"CUDA provider on {gpu.describe()}")
        else:
            reasons.append(f"GPU {gpu.describe()} present but onnxruntime has no CUDA provider ({INSTALL_HINT})")
    providers.append(CPU)
    return providers, "; ".join(reasons)


@dataclass
class SessionConfig:
    """How to open the engine's ONNX model in ONNX Runtime (``onnxruntime/session.json``)."""

    model: str
    providers: list[str]
    graph_optimization_level: str = "ORT_ENABLE_ALL"
    intra_op_num_threads: int = 0
    use_tensorrt_ep: bool = False
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    onnxruntime_version: str = ""
    schema: str = SESSION_SCHEMA
    schema_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SessionConfig":
        if not isinstance(data, Mapping) or data.get("schema") != SESSION_SCHEMA:
            raise EngineError(f"{SESSION_RELPATH} is not a hifitrt session file; rebuild the engine with --force")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise EngineError(f"{SESSION_RELPATH} is incomplete ({exc}); rebuild the engine with --force") from exc

    def providers_here(self, engine_dir: str | os.PathLike[str]) -> list[Any]:
        """The recorded providers that this machine can use, with their options, CPU last.

        An ORT engine is portable: a directory built on a GPU box still runs on CPU elsewhere,
        so missing providers are dropped with a warning instead of failing.
        """
        wanted, _ = choose_providers(self.use_tensorrt_ep)
        result: list[Any] = []
        for name in self.providers:
            if name not in wanted:
                _LOG.warning("engine asks for %s, not usable on this machine; using %s", name, ", ".join(wanted))
                continue
            opts = dict(self.provider_options.get(name, {}))
            if name == TENSORRT_EP and "trt_engine_cache_path" in opts:
                opts["trt_engine_cache_path"] = str(Path(engine_dir) / opts["trt_engine_cache_path"])
            result.append((name, opts) if opts else name)
        if CPU not in [p if isinstance(p, str) else p[0] for p in result]:
            result.append(CPU)
        return result

    def create_session(self, engine_dir: str | os.PathLike[str], providers: Sequence[Any] | None = None,
                       threads: int | None = None) -> Any:
        """An ``InferenceSession`` on the engine's model (the runtime's ORT runner uses this).

        ``threads`` overrides the recorded intra-op thread count (and pins inter-op to 1), so
        a benchmark can give ONNX Runtime the same threads as PyTorch.
        """
        if self.graph_optimization_level not in OPTIMIZATION_LEVELS.values():
            raise EngineError(f"unknown graph optimization level {self.graph_optimization_level!r} in {SESSION_RELPATH}")
        import_onnxruntime()  # a clear EngineError when it is not installed
        path = Path(engine_dir) / self.model
        try:
            return make_session(
                path, providers=list(providers) if providers is not None else self.providers_here(engine_dir),
                threads=threads if threads else int(self.intra_op_num_threads),
                inter_op_threads=1 if threads else None,
                optimization_level=self.graph_optimization_level,
            )
        except Exception as exc:  # ORT raises its own exception types
            raise EngineError(
                f"ONNX Runtime cannot open {path} ({' '.join(str(exc).split())[:300]}); rebuild the engine with --force"
            ) from exc


def read_session_config(engine_dir: str | os.PathLike[str]) -> SessionConfig:
    doc = read_json(Path(engine_dir) / SESSION_RELPATH, schema=SESSION_SCHEMA, version=SESSION_SCHEMA_VERSION,
                    error=EngineError, fix="rebuild the engine with --force")
    return SessionConfig.from_dict(doc)


@dataclass(frozen=True)
class OrtBuildResult:
    session_file: str
    config: SessionConfig
    reason: str
    seconds: float


def build_onnxruntime_engine(
    engine_dir: str | os.PathLike[str],
    model_relpath: str,
    *,
    precision: str = "fp16",
    use_tensorrt_ep: bool = False,
    intra_op_num_threads: int = 0,
    graph_optimization_level: str = "all",
    check_load: bool = True,
) -> OrtBuildResult:
    """Write ``onnxruntime/session.json`` for ``engine_dir/model_relpath`` (atomically).

    ``check_load`` opens the model once (without the TensorRT EP, which would compile) so a
    model ONNX Runtime cannot run fails at build time, not at the first request.
    """
    started = time.perf_counter()
    root = Path(engine_dir)
    if not (root / model_relpath).is_file():
        raise EngineError(f"{root / model_relpath} does not exist: export the model before building the engine")
    level = OPTIMIZATION_LEVELS.get(graph_optimization_level, graph_optimization_level)
    if level not in OPTIMIZATION_LEVELS.values():
        raise EngineError(
            f"graph optimization level {graph_optimization_level!r}: use one of {', '.join(OPTIMIZATION_LEVELS)}"
        )
    if isinstance(intra_op_num_threads, bool) or not isinstance(intra_op_num_threads, int) or intra_op_num_threads < 0:
        raise EngineError(f"intra-op threads {intra_op_num_threads!r} must be 0 (ONNX Runtime decides) or more")
    ort = import_onnxruntime()
    providers, reason = choose_providers(use_tensorrt_ep)
    provider_options: dict[str, dict[str, Any]] = {}
    if TENSORRT_EP in providers:
        provider_options[TENSORRT_EP] = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": TRT_EP_CACHE_RELDIR,
            "trt_timing_cache_enable": True,
            "trt_fp16_enable": precision == "fp16",
        }
    config = SessionConfig(
        model=model_relpath,
        providers=providers,
        graph_optimization_level=level,
        intra_op_num_threads=intra_op_num_threads,
        use_tensorrt_ep=use_tensorrt_ep,
        provider_options=provider_options,
        onnxruntime_version=str(getattr(ort, "__version__", "")),
    )
    if check_load:
        load_with = [p for p in config.providers_here(root) if (p if isinstance(p, str) else p[0]) != TENSORRT_EP]
        config.create_session(root, providers=load_with)
    write_json(root / SESSION_RELPATH, config.to_dict(), schema=SESSION_SCHEMA, version=SESSION_SCHEMA_VERSION,
               strict=False)
    seconds = time.perf_counter() - started
    _LOG.info("ONNX Runtime engine: %s with %s (%s)", model_relpath, ", ".join(providers), reason)
    return OrtBuildResult(SESSION_RELPATH, config, reason, seconds)
