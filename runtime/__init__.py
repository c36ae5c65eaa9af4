"""Loading and running engines: runners with one interface, batching, streaming and the
ModelScope drop-in.

Imports point one way: ``runtime`` may import ``engines`` and ``export``.
"""
from __future__ import annotations

from typing import Any

_LAZY = {
    "VocoderEngine": (".engine", "VocoderEngine"),
    "accelerate": (".modelscope", "accelerate"),
    "pipeline": (".modelscope", "pipeline"),
    "Runner": (".runners", "Runner"),
    "TorchRunner": (".runners", "TorchRunner"),
    "OnnxRuntimeRunner": (".runners", "OnnxRuntimeRunner"),
    "runner_for_engine_dir": (".loading", "runner_for_engine_dir"),
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Lazy exports: ``import hifitrt.runtime`` stays cheap (no onnxruntime/torch/modelscope)."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
