"""The parity report's data types, in a leaf module (Polygraphy's comparator/struct.py idea).

The sweep produces these, ``report`` turns them into report.json and ``html_report`` renders
them; keeping them apart from both means the HTML renderer never imports the report writer
back (no import cycle).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .metrics import AudioMetrics, Failure


@dataclass
class CaseWaveforms:
    """The worst item of a case (1-D float32), kept for the plots of the worst case."""

    reference: np.ndarray
    candidate: np.ndarray
    item: int = 0


@dataclass
class CaseResult:
    """One parity measurement: one profile point, one input, one engine output."""

    profile: str
    input: str
    batch: int
    frames: int
    metrics: AudioMetrics
    failures: list[Failure] = field(default_factory=list)
    waveforms: CaseWaveforms | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def badness(self) -> tuple[float, ...]:
        """Sort key, larger = worse: failing, NaN/Inf, length problems, then lowest SNR."""
        m = self.metrics
        snr = m.snr_db if not math.isnan(m.snr_db) else -math.inf
        return (
            float(bool(self.failures)),
            float(m.nonfinite_count),
            float(abs(m.length_mismatch) + (1 if m.batch_mismatch else 0)),
            -snr,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": {"batch": int(self.batch), "frames": int(self.frames)},
            "profile": self.profile,
            "input": self.input,
            "verdict": "pass" if self.passed else "fail",
            "metrics": self.metrics.to_dict(),
            "failures": [f.to_dict() for f in self.failures],
        }


class CaseCollector:
    """Accumulates cases in order, keeping waveforms only for the ``keep`` worst ones."""

    def __init__(self, keep: int = 1) -> None:
        self.keep = max(0, int(keep))
        self.cases: list[CaseResult] = []

    def add(self, case: CaseResult) -> None:
        self.cases.append(case)
        with_wf = [c for c in self.cases if c.waveforms is not None]
        if len(with_wf) > self.keep:
            with_wf.sort(key=lambda c: c.badness(), reverse=True)
            for c in with_wf[self.keep:]:
                c.waveforms = None


def worst_case_index(cases: Sequence[CaseResult]) -> int | None:
    """Index of the worst case (see ``CaseResult.badness``); None for no cases."""
    if not cases:
        return None
    return max(range(len(cases)), key=lambda i: (cases[i].badness(), -i))


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    html: Path | None
