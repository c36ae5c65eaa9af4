"""hifitrt: compile TTS vocoders into fast, verified inference engines.

Subpackages: ``export`` (torch side: load, ONNX, precision), ``engines`` (TensorRT and ONNX
Runtime builds, manifests), ``runtime`` (VocoderEngine, ModelScope drop-in) and
``validation`` (parity metrics, reports, regression baselines).
"""
from __future__ import annotations

__version__ = "0.1.0"
