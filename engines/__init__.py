"""Engine builders and their artifacts: shape profiles, backends (TensorRT, ONNX Runtime,
OpenVINO), manifests, engine cache and compatibility checks.

Imports point one way: ``engines`` may import ``export``, never ``runtime`` or ``validation``.
Public API (imported lazily, so ``import hifitrt.engines`` stays cheap)::

    from hifitrt.engines import build_engine, BuildOptions, verify_engine_dir, read_manifest
    from hifitrt.engines import layout            # artifact paths inside an engine directory
"""
from __future__ import annotations

from ..lazy import lazy_exports

_LAZY = {
    "build_engine": ".build", "BuildResult": ".build",
    "BuildOptions": ".backends", "Backend": ".backends", "backend_for": ".backends", "register": ".backends",
    "resolve_backend": ".backends",
    "Manifest": ".manifest", "read_manifest": ".manifest", "verify_engine_dir": ".manifest",
    "ShapeProfile": ".profiles", "parse_profile": ".profiles", "default_profiles": ".profiles",
    "inspect_engine_dir": ".describe",
    "Machine": ".machine", "current_machine": ".machine", "tensorrt_version": ".machine",
}
__all__ = sorted(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
