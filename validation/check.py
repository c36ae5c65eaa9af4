"""``check_engine``: prove an engine directory still sounds like its PyTorch source.

The reference is recomputed from the source the manifest records (``load_vocoder(location,
voice)``), never from numbers stored at build time: a check must catch an engine that drifted
from its source, and a source that drifted from the engine. The latter is caught first, by the
weight digest, with a clear error (the comparison would otherwise blame the engine).

The engine is verified (every artifact hash) before anything is deserialised, then swept
(:mod:`hifitrt.validation.sweep`) with its own runner, and report.json + report.html are
written. Default thresholds follow the manifest's precision (fp16: SNR >= 40 dB, log-mel L1
<= 0.01, no NaN/Inf; fp32: max abs error <= 1e-4), overridable per metric.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..engines.manifest import Manifest, verify_engine_dir
from ..engines.profiles import ShapeProfile
from ..errors import HifitrtError, OutputError, SourceChangedError, ThresholdError
from ..export.load import Vocoder, load_vocoder
from ..export.mel import mel_config_for
from ..export.reference import TorchRunner
from ..export.speech_inputs import SpeechSource
from ..export.spec import VocoderSpec
from ..runtime.engine import VocoderEngine
from ..runtime.loading import runner_for_engine_dir
from ..runner import Runner
from .metrics import Thresholds
from .report import CaseResult, ReportPaths, measure_case, write_report
from .sweep import SweepPoint, SweepResult, run_sweep, speech_for

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class CheckResult:
    """Outcome of one check: verdict, every case, where the report went."""

    engine_dir: Path
    passed: bool
    thresholds: Thresholds
    sweep: SweepResult
    report: ReportPaths | None
    manifest: Manifest

    @property
    def cases(self) -> list[CaseResult]:
        return self.sweep.cases

    def failure_lines(self) -> list[str]:
        """One line per failed case: shape and every violated metric."""
        lines = []
        for pt, case in self.sweep.failed:
            msgs = "; ".join(f.message for f in case.failures)
            lines.append(f"{pt.profile}:{pt.label} batch {pt.batch} x {pt.frames} frames ({case.input}): {msgs}")
        return lines

    def failed_metrics(self) -> set[str]:
        return {f.metric for _, c in self.sweep.failed for f in c.failures}


def engine_summary(manifest: Manifest, engine_dir: Path) -> dict[str, Any]:
    """The report's ``engine`` block: what was checked, from the manifest."""
    spec = manifest.spec
    return {
        "name": engine_dir.name,
        "dir": str(engine_dir),
        "source": manifest.source.get("location"),
        "voice": manifest.source.get("voice"),
        "arch": spec.arch,
        "sample_rate": spec.sample_rate,
        "hop": spec.hop,
        "source_digest": spec.digest,
        "backend": manifest.backend_name,
        "backend_version": manifest.backend.get("version"),
        "providers": manifest.backend.get("providers"),
        "precision": manifest.precision,
        "engine_file": manifest.engine_file,
        "onnx_digest": manifest.onnx_digest,
        "profiles": [f"{p.name}: batch {p.batch_min}-{p.batch_max}, frames "
                     f"{p.frames_min}-{p.frames_opt}-{p.frames_max}" for p in manifest.profiles],
        "device": manifest.device,
        "hifitrt_version": manifest.hifitrt_version,
    }


def load_source_for(manifest: Manifest, engine_dir: Path, vocoder: Vocoder | None = None) -> Vocoder:
    """The manifest's source vocoder, refusing one whose weights differ from the build's."""
    location = manifest.source.get("location")
    voice = manifest.source.get("voice")
    if vocoder is None:
        try:
            vocoder = load_vocoder(location, voice=voice)
        except HifitrtError as exc:
            raise type(exc)(
                f"cannot load the source recorded in {engine_dir}/manifest.json ({location}): {exc}"
            ) from exc
    expected = manifest.spec.digest
    if vocoder.spec.digest != expected:
        raise SourceChangedError(
            f"the vocoder at {location} changed since {engine_dir} was built (weight digest "
            f"{vocoder.spec.digest[:12]} != {str(expected)[:12]} in the manifest): the engine no longer "
            f"matches its source; rebuild it with {manifest.rebuild_command(engine_dir)}"
        )
    return vocoder


def thresholds_for(manifest: Manifest, thresholds: Thresholds | Mapping[str, Any] | Iterable[str] | None) -> Thresholds:
    """Precision preset, or the given Thresholds, or the preset with NAME=VALUE overrides."""
    if isinstance(thresholds, Thresholds):
        return thresholds
    base = Thresholds.for_precision(manifest.precision)
    if not thresholds:
        return base
    changed = base.with_overrides(thresholds)  # type: ignore[arg-type]
    for name, value in dataclasses.asdict(changed).items():
        if name != "preset" and value is not None and (not math.isfinite(float(value)) or float(value) < 0):
            raise ThresholdError(f"threshold {name}={value}: must be a finite number >= 0 (or 'off')")
    overridden = sorted(k for k, v in dataclasses.asdict(changed).items() if getattr(base, k) != v)
    # The report must not call an overridden set the fp16/fp32 thresholds.
    return dataclasses.replace(changed, preset=f"{base.preset} with {', '.join(overridden)} overridden") \
        if overridden else changed


def check_engine(
    engine_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]] = (),
    report_dir: str | os.PathLike[str] | None = None,
    thresholds: Thresholds | Mapping[str, Any] | Iterable[str] | None = None,
    *,
    progress: Progress | None = None,
    vocoder: Vocoder | None = None,
    with_pesq: bool = True,
    write: bool = True,
    keep_outputs: bool = False,
) -> CheckResult:
    """Verify, sweep and report ``engine_dir`` (see the module docstring).

    ``report_dir`` defaults to ``ENGINE_DIR/report``; ``write=False`` skips the files (golden
    comparisons). ``vocoder`` lets a caller that already loaded the source skip a second load;
    its digest is still checked against the manifest.
    """
    root = Path(engine_dir)
    manifest = verify_engine_dir(root)
    vocoder = load_source_for(manifest, root, vocoder)
    limits = thresholds_for(manifest, thresholds)
    if write:  # fail before the sweep, not after minutes of measuring
        target = Path(report_dir) if report_dir is not None else root / "report"
        if target.exists() and not target.is_dir():
            raise OutputError(f"report directory {target} is an existing file: name a directory for the report")
    spec = vocoder.spec
    speech = speech_for(spec, inputs)
    if progress:
        progress(f"checking {root} ({manifest.backend_name} {manifest.precision}) on {speech.origin}")
    reference = TorchRunner(vocoder.module, cache=True)
    runner = runner_for_engine_dir(root, manifest)
    try:
        sweep = run_sweep(runner, reference, spec, manifest.profiles, limits, speech=speech,
                          with_pesq=with_pesq, progress=progress, keep_outputs=keep_outputs)
        point, case = long_speech_case(runner, reference, spec, manifest.profiles, limits, speech,
                                       with_pesq=with_pesq)
        sweep.points.append(point)
        sweep.cases.append(case)
        if progress:
            m = case.metrics
            progress(f"  [chunked] {point.frames} frames of speech through the runtime's chunking: SNR "
                     f"{m.snr_db:.1f} dB, max|err| {m.max_abs_error:.2e}" + ("" if case.passed else "  FAIL"))
    finally:
        runner.close()
    paths = None
    if write:
        out = Path(report_dir) if report_dir is not None else root / "report"
        paths = write_report(out, sweep.cases, engine=engine_summary(manifest, root), thresholds=limits,
                             sample_rate=spec.sample_rate)
    passed = bool(sweep.cases) and not sweep.failed
    return CheckResult(root, passed, limits, sweep, paths, manifest)


def long_speech_case(runner: Runner, reference: Callable[[np.ndarray], np.ndarray], spec: VocoderSpec,
                     profiles: Sequence[ShapeProfile], limits: Thresholds, speech: SpeechSource, *,
                     with_pesq: bool = True) -> tuple[SweepPoint, CaseResult]:
    """Speech longer than every profile, vocoded as users get it: chunked by VocoderEngine.

    The sweep runs each profile's shapes directly, so an engine whose profiles cannot hold the
    receptive field passes every point and still turns long speech into noise at the chunk
    seams. This case (longest profile + context + 7 frames: at least one seam) is compared
    with PyTorch on the whole mel, so such an engine fails its check.
    """
    longest = max(p.frames_max for p in profiles)
    context = spec.left_context_frames + (0 if spec.causal else spec.right_context_frames) + int(spec.nsf)
    frames = longest + context + 7
    mel, name = speech.crop(frames, index=0)
    ref = reference(mel[None])
    engine = VocoderEngine(runner, spec, profiles=profiles)
    try:
        cand = engine(mel).reshape(1, 1, -1)
    except Exception as exc:  # noqa: BLE001 - a failing engine is a result, not a crash
        log.warning("chunked vocoding of %d frames raised %s: %s", frames, type(exc).__name__, exc)
        cand = np.zeros((1, 1, 0), dtype=np.float32)
    point = SweepPoint("chunked", "long", 1, frames)
    case = measure_case(ref, cand, sample_rate=spec.sample_rate, thresholds=limits, profile="chunked:long",
                        input_name=name, frames=frames, mel_cfg=mel_config_for(spec), with_pesq=with_pesq)
    return point, case


# ------------------------------------------------------------------------------------ summary
def _num(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan"
    return format(v, fmt)


def summary_table(result: CheckResult) -> str:
    """A short fixed-width table: one line per swept shape."""
    head = f"{'profile:point':<20} {'batch':>5} {'frames':>6} {'SNR dB':>8} {'log-mel L1':>10} {'max|err|':>9}  verdict"
    lines = [head, "-" * len(head)]
    for pt, case in zip(result.sweep.points, result.sweep.cases):
        m = case.metrics
        lines.append(f"{pt.profile + ':' + pt.label:<20} {pt.batch:>5} {pt.frames:>6} {_num(m.snr_db, '8.2f')} "
                     f"{_num(m.log_mel_l1, '10.5f')} {_num(m.max_abs_error, '9.2e')}  "
                     f"{'pass' if case.passed else 'FAIL'}")
    return "\n".join(lines)


__all__ = ["CheckResult", "SourceChangedError", "check_engine", "engine_summary",
           "load_source_for", "summary_table", "thresholds_for"]
