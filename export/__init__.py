"""Torch side of hifitrt: vocoder architectures, source loaders, ONNX export, precision plans.

This package imports nothing from the other hifitrt packages (engines, runtime, validation).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["load_vocoder", "Vocoder", "VocoderSpec", "export_onnx"]

if TYPE_CHECKING:  # pragma: no cover
    from .load import Vocoder, load_vocoder
    from .spec import VocoderSpec


def __getattr__(name: str) -> Any:
    # Lazy so `import hifitrt.errors` stays cheap (no torch import) for the CLI's help.
    if name in ("load_vocoder", "Vocoder"):
        from . import load

        return getattr(load, name)
    if name == "VocoderSpec":
        from .spec import VocoderSpec

        return VocoderSpec
    if name == "export_onnx":
        from .onnx_export import export_onnx

        return export_onnx
    raise AttributeError(name)
