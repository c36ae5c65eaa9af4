"""``build_and_verify``: build an engine and prove it matches PyTorch (``tts-build-engine build``).

build_engine (load, export, precision plan, engine, manifest) -> quick parity (a couple of
speech fixtures at each profile's opt frames, batch 1: SNR and max abs vs PyTorch, recorded in
the manifest so ``inspect`` shows it without rerunning anything) -> the full parity report in
``OUT/report`` (skippable). It lives in validation because engines may not import runtime or
validation (imports point one way).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..engines import layout
from ..engines.backends import BuildOptions
from ..engines.build import BuildResult, build_engine, build_lock
from ..engines.manifest import Manifest, update_quick_parity
from ..export.load import Vocoder
from ..export.mel import mel_config_for
from ..export.reference import TorchRunner
from ..export.speech_inputs import fixture_speech
from ..runtime.loading import runner_for_engine_dir
from .check import CheckResult, check_engine, load_source_for
from .metrics import Thresholds, compare_audio

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
QUICK_FIXTURES = 2


@dataclass
class VerifiedBuild:
    """What ``build_and_verify`` did: the build, its quick parity, and the report (or None)."""

    engine_dir: Path
    build: BuildResult
    quick_parity: dict[str, Any]
    check: CheckResult | None
    seconds: dict[str, float] = field(default_factory=dict)
    reused_report: Path | None = None  # a reused engine keeps the report made when it was built


def quick_parity(engine_dir: Path, manifest: Manifest, vocoder: Vocoder,
                 n_fixtures: int = QUICK_FIXTURES) -> dict[str, Any]:
    """SNR and max abs error vs PyTorch at each profile's opt frames on ``n_fixtures`` utterances."""
    speech = fixture_speech(vocoder.spec)
    reference = TorchRunner(vocoder.module)
    mel_cfg = mel_config_for(vocoder.spec)
    cases = []
    runner = runner_for_engine_dir(engine_dir, manifest)
    try:
        for p in manifest.profiles:
            for j in range(min(n_fixtures, len(speech.utterances))):
                mel, name = speech.crop(p.frames_opt, index=j)
                ref = reference(mel[None])
                cand = runner.infer(mel[None], measure=True)  # NaN/Inf are counted, not raised
                m = compare_audio(ref, cand, vocoder.spec.sample_rate, with_pesq=False, mel_cfg=mel_cfg)
                cases.append({"profile": p.name, "input": name, "batch": 1, "frames": p.frames_opt,
                              "snr_db": _finite(m.snr_db), "max_abs_error": _finite(m.max_abs_error),
                              "nonfinite_count": m.nonfinite_count})
    finally:
        runner.close()
    snrs = [c["snr_db"] for c in cases]
    return {
        "cases": cases,
        "worst_snr_db": None if any(s is None for s in snrs) else min(snrs),
        "worst_max_abs_error": max((c["max_abs_error"] or math.inf) for c in cases),
        "nonfinite_count": sum(c["nonfinite_count"] for c in cases),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def build_and_verify(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: BuildOptions | None = None,
    *,
    report: bool = True,
    progress: Progress | None = None,
    thresholds: Thresholds | None = None,
    with_pesq: bool = True,
    **build_kwargs: Any,
) -> VerifiedBuild:
    """build_engine + quick parity (into the manifest) + full check report (``report=True``).

    ``options`` and ``build_kwargs`` are passed to :func:`~hifitrt.engines.build.build_engine`.
    The directory's build lock is held for the whole chain: another build of the same
    directory cannot replace the engine while this one measures and reports on it.
    """
    say = progress or (lambda line: log.info("%s", line))
    with build_lock(out_dir, say):
        return _build_and_verify_locked(source, out_dir, options, report=report, say=say, thresholds=thresholds,
                                        with_pesq=with_pesq, **build_kwargs)


def _build_and_verify_locked(source: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                             options: BuildOptions | None, *, report: bool, say: Progress,
                             thresholds: Thresholds | None, with_pesq: bool, **build_kwargs: Any) -> VerifiedBuild:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    built = build_engine(source, out_dir, options, progress=say, **build_kwargs)
    seconds["build"] = round(time.perf_counter() - t0, 3)
    root = Path(built.engine_dir)

    recorded = getattr(built.manifest, "quick_parity", None)
    old_report = layout.report_dir(root) / layout.REPORT_JSON
    if built.reused and recorded and thresholds is None and (not report or _passed(old_report)):
        # Same build key and verified artifacts: the engine is the one measured at build time,
        # so its recorded quick parity and report still hold (`check` re-measures on demand).
        say("quick parity and report: reusing what was measured when this engine was built")
        return VerifiedBuild(root, built, dict(recorded), None, seconds,
                           reused_report=old_report.with_suffix(".html") if report else None)

    t0 = time.perf_counter()
    say("quick parity: SNR and max abs error vs PyTorch at each profile's opt shape")
    vocoder = load_source_for(built.manifest, root)
    quick = quick_parity(root, built.manifest, vocoder)
    update_quick_parity(root, quick)
    seconds["quick_parity"] = round(time.perf_counter() - t0, 3)
    say(f"quick parity: worst SNR {_fmt(quick['worst_snr_db'], '.1f')} dB, worst max|err| "
        f"{quick['worst_max_abs_error']:.2e}, NaN/Inf {quick['nonfinite_count']}")

    check = None
    if report:
        t0 = time.perf_counter()
        say("parity report: sweeping every profile (min, opt, max, odd lengths; batch 1 and max)")
        check = check_engine(root, report_dir=layout.report_dir(root), thresholds=thresholds, progress=say,
                             vocoder=vocoder, with_pesq=with_pesq)
        seconds["report"] = round(time.perf_counter() - t0, 3)
    return VerifiedBuild(root, built, quick, check, seconds)


def _passed(report_json: Path) -> bool:
    """True when a report exists and its verdict is pass (a failing one is measured again)."""
    try:
        return json.loads(report_json.read_text(encoding="utf-8")).get("verdict") == "pass"
    except (OSError, ValueError):
        return False


__all__ = ["VerifiedBuild", "build_and_verify", "quick_parity"]
