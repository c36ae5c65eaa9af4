"""Parity validation: audio metrics between a reference and an engine waveform, sweeps,
reports, benchmarks and golden regression baselines.

``metrics`` holds pure functions of two waveforms (no engine or runtime imports), ``report``
turns per-shape results into report.json, ``html_report``/``plots`` render the human report.
Public API (imported lazily)::

    from hifitrt.validation import build_and_verify, check_engine, bench_engine, compare_audio
"""
from __future__ import annotations

from ..lazy import lazy_exports

_LAZY = {
    "build_and_verify": ".verified_build", "VerifiedBuild": ".verified_build", "quick_parity": ".verified_build",
    "check_engine": ".check", "CheckResult": ".check", "summary_table": ".check",
    "bench_engine": ".bench", "BenchResult": ".bench",
    "compare_audio": ".metrics", "Thresholds": ".metrics", "AudioMetrics": ".metrics",
    "write_report": ".report",
}
__all__ = sorted(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
