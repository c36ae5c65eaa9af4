"""Open the runner an engine directory's manifest calls for (one factory per backend).

Kept apart from the runner classes so that :mod:`hifitrt.runtime.runners` imports no backend
module (no import cycle through the TensorRT or OpenVINO runners, which import the runner
interface). Each backend registered in :mod:`hifitrt.engines.backends` has a factory here,
``factory(engine_dir, manifest, *, threads, **backend_kwargs) -> Runner``; a plug-in backend
registers its own with :func:`register_runner` from its runner module, listed in
:data:`PLUGIN_MODULES` so it is imported on first use.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

from ..engines.backends import backend_for
from ..engines.manifest import Manifest
from ..engines.onnxruntime_engine import read_session_config
from ..errors import EngineError
from ..runner import Runner
from .runners import OnnxRuntimeRunner

RunnerFactory = Callable[..., Runner]

PLUGIN_MODULES: dict[str, str] = {}
"""Backend name -> runtime module that calls :func:`register_runner` when imported."""

_FACTORIES: dict[str, RunnerFactory] = {}


def register_runner(backend_name: str, factory: RunnerFactory) -> None:
    """Make ``factory`` the way engines of ``backend_name`` are opened."""
    _FACTORIES[backend_name] = factory


def runner_for_engine_dir(engine_dir: str | os.PathLike[str], manifest: Manifest, *, threads: int | None = None,
                          **backend_kwargs: Any) -> Runner:
    """The runner for a verified engine directory (``verify_engine_dir`` first: this trusts it).

    ``threads``: intra-op threads for CPU backends (ONNX Runtime, OpenVINO; None: their
    default). ``backend_kwargs`` go to the backend's runner (TensorRT: ``trt_module``,
    ``device``). The runner knows the vocoder's channels and hop, so :meth:`Runner.infer`
    checks both on every call.
    """
    root = Path(engine_dir)
    name = manifest.backend_name
    backend_for(name)  # EngineError naming the choices for an unknown backend
    if name not in _FACTORIES and name in PLUGIN_MODULES:
        importlib.import_module(PLUGIN_MODULES[name])
    factory = _FACTORIES.get(name)
    if factory is None:
        raise EngineError(f"{root}: no runner for engine backend {name!r} is installed; rebuild the engine "
                          "with --backend onnxruntime or install that backend")
    runner = factory(root, manifest, threads=threads, **backend_kwargs)
    spec = manifest.spec
    runner.hop = int(spec.hop)
    if runner.in_channels is None:
        runner.in_channels = int(spec.in_channels)
    return runner


def _tensorrt(root: Path, manifest: Manifest, *, threads: int | None = None, **kwargs: Any) -> Runner:
    from .tensorrt_runner import TensorRTRunner  # its module imports CUDA helpers; loaded on demand

    recorded = {"built_with": manifest.backend.get("version"),
                "version_compatible": bool((manifest.options or {}).get("version_compatible"))}
    return TensorRTRunner(root / manifest.engine_file, **{**recorded, **kwargs})


def _onnxruntime(root: Path, manifest: Manifest, *, threads: int | None = None, **_: Any) -> Runner:
    config = read_session_config(root)
    session = config.create_session(root, threads=threads)
    return OnnxRuntimeRunner(root / config.model, session=session, profiles=manifest.profiles)


def _openvino(root: Path, manifest: Manifest, *, threads: int | None = None, **_: Any) -> Runner:
    from .openvino_runner import OpenVinoRunner  # needs the optional openvino package

    return OpenVinoRunner(root, manifest.profiles, threads=threads)


register_runner("tensorrt", _tensorrt)
register_runner("onnxruntime", _onnxruntime)
register_runner("openvino", _openvino)
