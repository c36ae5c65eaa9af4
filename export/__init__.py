"""Torch side of hifitrt: vocoder architectures, source loaders, ONNX export, precision plans,
the PyTorch reference runner and the one speech-input set.

This package imports nothing from the other hifitrt packages (engines, runtime, validation).
Public API (imported lazily, so ``import hifitrt.errors`` stays cheap for the CLI's help)::

    from hifitrt.export import load_vocoder, Vocoder, VocoderSpec, export_onnx, export_vocoder
    from hifitrt.export import TorchRunner, plan_fp16, snr_db, log_mel_l1, mel_config_for
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from .load import Vocoder, load_vocoder
    from .spec import VocoderSpec

_LAZY = {
    "load_vocoder": ".load", "Vocoder": ".load",
    "VocoderSpec": ".spec",
    "export_onnx": ".onnx_export", "export_vocoder": ".onnx_export", "ExportResult": ".onnx_export",
    "plan_fp16": ".precision", "PrecisionPlan": ".precision",
    "TorchRunner": ".reference",
    "snr_db": ".parity", "log_mel_l1": ".parity",
    "MelConfig": ".mel", "mel_config_for": ".mel", "wav_to_mel": ".mel",
    "calibration_mels": ".speech_inputs", "fixture_speech": ".speech_inputs", "parity_batches": ".speech_inputs",
}
__all__ = sorted(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
