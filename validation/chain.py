"""``build_and_verify``: the whole chain behind ``tts-build-engine build``.

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

from .check import CheckResult, check_engine, load_source_for, summary_table

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
QUICK_FIXTURES = 2


@dataclass
class ChainResult:
    engine_dir: Path
    build: Any
    quick_parity: dict[str, Any]
    check: CheckResult | None
    seconds: dict[str, float] = field(default_factory=dict)
    reused_report: Path | None = None  # a reused engine keeps the report made when it was built


def quick_parity(engine_dir: Path, manifest: Any, vocoder: Any, n_fixtures: int = QUICK_FIXTURES) -> dict[str, Any]:
    """SNR and max abs error vs PyTorch at each profile's opt frames on ``n_fixtures`` utterances."""
    from ..runtime.runners import runner_for_engine_dir
    from .metrics import compare_audio
    from .sweep import fixture_speech

    speech = fixture_speech(vocoder.spec)
    import torch

    cases = []
    runner = runner_for_engine_dir(engine_dir, manifest)
    try:
        for p in manifest.shape_profiles:
            for j in range(min(n_fixtures, len(speech.utterances))):
                mel, name = speech.crop(p.frames_opt, index=j)
                with torch.no_grad():
                    ref = vocoder.module(torch.from_numpy(mel[None])).numpy()
                cand = runner.infer(mel[None])
                m = compare_audio(ref, cand, vocoder.spec.sample_rate, with_pesq=False,
                                  mel_cfg=_mel_cfg(vocoder.spec))
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


def _mel_cfg(spec: Any) -> Any:
    from ..export.mel import mel_config_for

    return mel_config_for(spec)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def build_and_verify(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    report: bool = True,
    progress: Progress | None = None,
    thresholds: Any = None,
    with_pesq: bool = True,
    **build_kwargs: Any,
) -> ChainResult:
    """build_engine + quick parity (into the manifest) + full check report (``report=True``)."""
    from ..engines.build import build_engine
    from ..engines.manifest import update_quick_parity

    say = progress or (lambda line: log.info("%s", line))
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    built = build_engine(source, out_dir, progress=say, **build_kwargs)
    seconds["build"] = round(time.perf_counter() - t0, 3)
    root = Path(built.engine_dir)

    recorded = getattr(built.manifest, "quick_parity", None)
    old_report = root / "report" / "report.json"
    if built.reused and recorded and thresholds is None and (not report or _passed(old_report)):
        # Same build key and verified artifacts: the engine is the one measured at build time,
        # so its recorded quick parity and report still hold (`check` re-measures on demand).
        say("quick parity and report: reusing what was measured when this engine was built")
        return ChainResult(root, built, dict(recorded), None, seconds,
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
        check = check_engine(root, report_dir=root / "report", thresholds=thresholds, progress=say,
                             vocoder=vocoder, with_pesq=with_pesq)
        seconds["report"] = round(time.perf_counter() - t0, 3)
    return ChainResult(root, built, quick, check, seconds)


def _passed(report_json: Path) -> bool:
    """True when a report exists and its verdict is pass (a failing one is measured again)."""
    try:
        return json.loads(report_json.read_text(encoding="utf-8")).get("verdict") == "pass"
    except (OSError, ValueError):
        return False


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def build_cli(args: Any) -> int:
    """``tts-build-engine build``: progress per step, then backend, reuse, parity and report."""
    profiles = list(getattr(args, "profile", None) or []) or None
    result = build_and_verify(
        args.source, args.out, voice=args.voice, backend=args.backend, precision=args.precision,
        profiles=profiles, workspace_bytes=int(args.workspace_mb) << 20,
        hardware_compatibility=args.hardware_compatibility, version_compatible=args.version_compatible,
        force=args.force, report=not args.no_report, progress=print,
    )
    b = result.build
    m = b.manifest
    q = result.quick_parity
    print()
    print(f"engine     {result.engine_dir}")
    print(f"backend    {m.backend_name} {m.backend.get('version', '')} ({b.backend_reason or 'as recorded'})")
    print(f"precision  {m.precision}; profiles: " + ", ".join(p["name"] for p in m.profiles))
    print(f"build      {'reused (same build key, artifacts verified)' if b.reused else 'built: ' + (b.rebuild_reason or 'new')}"
          f" in {b.seconds:.1f} s")
    print(f"quick      worst SNR {_fmt(q['worst_snr_db'], '.1f')} dB, worst max|err| {q['worst_max_abs_error']:.2e}, "
          f"NaN/Inf {q['nonfinite_count']}")
    if result.check is None:
        if result.reused_report is not None:
            print(f"report     {result.reused_report} (from the build; run `tts-build-engine check` to re-measure)")
        else:
            print("report     skipped (--no-report)")
        return 0
    c = result.check
    print(f"report     {c.report.html if c.report else '-'} ({'pass' if c.passed else 'FAIL'}, "
          f"{len(c.cases)} shapes)")
    if not c.passed:
        print("\n" + summary_table(c))
        print(f"\nFAIL: parity thresholds ({c.thresholds.preset}) violated:")
        for line in c.failure_lines():
            print(f"  {line}")
        return 1
    return 0


__all__ = ["ChainResult", "build_and_verify", "build_cli", "quick_parity"]
