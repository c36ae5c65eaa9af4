"""Serving: the HTTP service (micro-batching, streaming, metrics, web page) and the Triton
Inference Server model repository.

Imports point one way: ``serving`` uses ``runtime``'s public API only.
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
