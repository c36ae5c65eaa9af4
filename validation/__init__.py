"""Parity validation: audio metrics between a reference and an engine waveform, and reports.

``metrics`` holds pure functions of two waveforms (no engine or runtime imports), ``report``
turns per-shape results into report.json, ``html_report``/``plots`` render the human report.
"""
from __future__ import annotations
