"""Engine builders and their artifacts: shape profiles, TensorRT (strongly typed) and ONNX
Runtime builds, manifests, engine cache and compatibility checks.

Imports point one way: ``engines`` may import ``export``, never ``runtime`` or ``validation``.
"""
from __future__ import annotations
