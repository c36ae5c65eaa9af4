"""Serving: the HTTP service (micro-batching, streaming, metrics, web page) and the Triton
Inference Server model repository.

Imports point one way: ``serving`` uses ``runtime``'s public API only.
"""
from __future__ import annotations
