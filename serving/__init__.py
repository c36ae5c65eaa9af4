"""Serving: the HTTP service (micro-batching, streaming, metrics, web page) and the Triton
Inference Server model repository.

Imports point one way: ``serving`` uses ``runtime``'s public API only.

The HTTP service: ``create_app`` (``app``), ``tts-build-engine serve`` (``cli/serve.py``).
Its Prometheus metric names are listed in ``serving.metrics``; ``GET /v1/voices`` answers
``{default, voices: [{name, sample_rate, hop, in_channels, backend, precision, digest}],
speech, speech_voices, speech_engines: {model voice: served voice}}``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServeOptions"]


def __getattr__(name: str) -> Any:
    """Lazy exports: ``import hifitrt.serving`` stays cheap (no FastAPI, no engines)."""
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServeOptions":
        from .config import ServeOptions

        return ServeOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
