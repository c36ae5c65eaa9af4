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

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import HifitrtError
from .metrics import Thresholds
from .report import CaseResult, ReportPaths, write_report
from .sweep import SweepResult, run_sweep, speech_for

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class SourceChangedError(HifitrtError):
    """The vocoder the manifest points at is not the one the engine was built from."""


@dataclass
class CheckResult:
    """Outcome of one check: verdict, every case, where the report went."""

    engine_dir: Path
    passed: bool
    thresholds: Thresholds
    sweep: SweepResult
    report: ReportPaths | None
    manifest: Any

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


def engine_summary(manifest: Any, engine_dir: Path) -> dict[str, Any]:
    """The report's ``engine`` block: what was checked, from the manifest."""
    spec = manifest.source.get("spec", {})
    return {
        "name": engine_dir.name,
        "dir": str(engine_dir),
        "source": manifest.source.get("location"),
        "voice": manifest.source.get("voice"),
        "arch": spec.get("arch"),
        "sample_rate": spec.get("sample_rate"),
        "hop": spec.get("hop"),
        "source_digest": spec.get("digest"),
        "backend": manifest.backend.get("name"),
        "backend_version": manifest.backend.get("version"),
        "providers": manifest.backend.get("providers"),
        "precision": manifest.precision,
        "engine_file": manifest.engine_file,
        "onnx_digest": manifest.onnx_digest,
        "profiles": [f"{p['name']}: batch {p['batch_min']}-{p['batch_max']}, frames "
                     f"{p['frames_min']}-{p['frames_opt']}-{p['frames_max']}" for p in manifest.profiles],
        "device": manifest.device,
        "hifitrt_version": manifest.hifitrt_version,
    }


def load_source_for(manifest: Any, engine_dir: Path, vocoder: Any = None) -> Any:
    """The manifest's source vocoder, refusing one whose weights differ from the build's."""
    from ..export.load import load_vocoder

    location = manifest.source.get("location")
    voice = manifest.source.get("voice")
    if vocoder is None:
        try:
            vocoder = load_vocoder(location, voice=voice)
        except HifitrtError as exc:
            raise type(exc)(
                f"cannot load the source recorded in {engine_dir}/manifest.json ({location}): {exc}"
            ) from exc
    expected = manifest.source.get("spec", {}).get("digest")
    if vocoder.spec.digest != expected:
        raise SourceChangedError(
            f"the vocoder at {location} changed since {engine_dir} was built (weight digest "
            f"{vocoder.spec.digest[:12]} != {str(expected)[:12]} in the manifest): the engine no longer "
            f"matches its source; rebuild it with {manifest.rebuild_command(engine_dir)}"
        )
    return vocoder


def thresholds_for(manifest: Any, thresholds: Thresholds | Mapping[str, Any] | Iterable[str] | None) -> Thresholds:
    """Precision preset, or the given Thresholds, or the preset with NAME=VALUE overrides."""
    if isinstance(thresholds, Thresholds):
        return thresholds
    base = Thresholds.for_precision(manifest.precision)
    return base if not thresholds else base.with_overrides(thresholds)  # type: ignore[arg-type]


def check_engine(
    engine_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]] = (),
    report_dir: str | os.PathLike[str] | None = None,
    thresholds: Thresholds | Mapping[str, Any] | Iterable[str] | None = None,
    *,
    progress: Progress | None = None,
    vocoder: Any = None,
    with_pesq: bool = True,
    write: bool = True,
    keep_outputs: bool = False,
) -> CheckResult:
    """Verify, sweep and report ``engine_dir`` (see the module docstring).

    ``report_dir`` defaults to ``ENGINE_DIR/report``; ``write=False`` skips the files (golden
    comparisons). ``vocoder`` lets a caller that already loaded the source skip a second load;
    its digest is still checked against the manifest.
    """
    from ..engines.manifest import verify_engine_dir
    from ..export.speech_inputs import TorchReference
    from ..runtime.runners import runner_for_engine_dir

    root = Path(engine_dir)
    manifest = verify_engine_dir(root)
    vocoder = load_source_for(manifest, root, vocoder)
    limits = thresholds_for(manifest, thresholds)
    spec = vocoder.spec
    speech = speech_for(spec, inputs)
    if progress:
        progress(f"checking {root} ({manifest.backend_name} {manifest.precision}) on {speech.origin}")
    reference = TorchReference(vocoder.module)
    runner = runner_for_engine_dir(root, manifest)
    try:
        sweep = run_sweep(runner, reference, spec, manifest.shape_profiles, limits, speech=speech,
                          with_pesq=with_pesq, progress=progress, keep_outputs=keep_outputs)
    finally:
        runner.close()
    paths = None
    if write:
        out = Path(report_dir) if report_dir is not None else root / "report"
        paths = write_report(out, sweep.cases, engine=engine_summary(manifest, root), thresholds=limits,
                             sample_rate=spec.sample_rate)
    passed = bool(sweep.cases) and not sweep.failed
    return CheckResult(root, passed, limits, sweep, paths, manifest)


# ------------------------------------------------------------------------------------ CLI
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


def check_cli(args: Any) -> int:
    """``tts-build-engine check ENGINE_DIR``: 1 when a threshold fails (naming metric and shape)."""
    result = check_engine(args.engine_dir, inputs=list(args.inputs or ()), report_dir=args.report,
                          thresholds=list(args.threshold or ()))
    print(summary_table(result))
    where = result.report.html if result.report and result.report.html else (result.report.json if result.report else None)
    n = len(result.cases)
    if not result.passed:
        print(f"\nFAIL: {len(result.sweep.failed)} of {n} shapes violate the {result.thresholds.preset} thresholds:")
        for line in result.failure_lines():
            print(f"  {line}")
        print(f"report: {where}")
        return 1
    worst_snr = min(c.metrics.snr_db for c in result.cases)
    print(f"\npass: {n} shapes within the {result.thresholds.preset} thresholds "
          f"(worst SNR {worst_snr:.1f} dB); report: {where}")
    return 0


__all__ = ["CheckResult", "SourceChangedError", "check_cli", "check_engine", "engine_summary",
           "load_source_for", "summary_table", "thresholds_for"]
