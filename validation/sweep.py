"""The parity sweep: every shape profile at min, opt, max and odd lengths, batch 1 and batch max.

Why these points: an engine is compiled per profile, and its kernels are tuned for the opt
shape; bugs hide at the edges (min, max), at lengths that are not a multiple of anything
(min+1, a prime between opt and max: padding and tiling mistakes) and at batch > 1 (a wrong
batch stride passes every batch-1 test). Each point runs the engine's own runner directly, so
the shape really reaches the compiled profile instead of being chunked by the runtime.

Inputs are real speech, never noise: the repo's speech fixtures (mels for the default vocoder;
for any other vocoder the fixture WAVs resampled and re-analysed with that vocoder's own mel
configuration, plus a pitch/uv track for NSF models), or the user's WAV / mel ``.npy`` files.
Utterances are concatenated and cut to the needed length; a batch stacks crops of the same
length from different places in the speech.

The reference is the PyTorch FP32 module on the very same mel.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..engines.profiles import ShapeProfile
from ..errors import InputError
from ..export.audio import read_wav
from ..export.mel import mel_config_for
from ..export.speech_inputs import SpeechSource, analyse_wav, fixture_speech
from ..export.spec import VocoderSpec
from ..runner import Runner
from .metrics import Thresholds
from .report import CaseCollector, CaseResult, measure_case

log = logging.getLogger(__name__)


Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------ points
@dataclass(frozen=True)
class SweepPoint:
    """One measured shape: ``label`` says why this length (min, opt, max, min+1, prime)."""

    profile: str
    label: str
    batch: int
    frames: int

    @property
    def key(self) -> str:
        """Stable name of the point (golden baselines key on it)."""
        return f"{self.profile}/{self.label}/b{self.batch}"


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for d in range(2, int(math.isqrt(n)) + 1):
        if n % d == 0:
            return False
    return True


def odd_prime_between(lo: int, hi: int) -> int | None:
    """The prime nearest the middle of the open interval (lo, hi), or None if there is none."""
    if hi - lo < 2:
        return None
    mid = (lo + hi) // 2
    for delta in range(0, hi - lo):
        for n in (mid + delta, mid - delta):
            if lo < n < hi and _is_prime(n):
                return n
    return None


def sweep_points(profiles: Sequence[ShapeProfile]) -> list[SweepPoint]:
    """Points of every profile: min, min+1, opt, a prime in (opt, max), max x batch 1 and max.

    Duplicate (batch, frames) pairs inside a profile are measured once (fixed profiles collapse
    to a single point per batch).
    """
    points: list[SweepPoint] = []
    for p in profiles:
        lengths: list[tuple[str, int]] = [("min", p.frames_min)]
        if p.frames_min + 1 <= p.frames_max:
            lengths.append(("min+1", p.frames_min + 1))
        lengths.append(("opt", p.frames_opt))
        prime = odd_prime_between(p.frames_opt, p.frames_max)
        if prime is not None:
            lengths.append(("prime", prime))
        lengths.append(("max", p.frames_max))
        batches = sorted({1, int(p.batch_max)}) if p.batch_min <= 1 else sorted({int(p.batch_min), int(p.batch_max)})
        seen: set[tuple[int, int]] = set()
        for batch in batches:
            for label, frames in lengths:
                if (batch, frames) in seen:
                    continue
                seen.add((batch, frames))
                points.append(SweepPoint(p.name, label, batch, int(frames)))
    return points


# ------------------------------------------------------------------------------------ speech
def user_speech(paths: Iterable[str | os.PathLike[str]], spec: VocoderSpec) -> SpeechSource:
    """User inputs: ``.wav`` files (re-analysed) or mel ``.npy`` [C, T] in the vocoder's space."""
    utt: dict[str, np.ndarray] = {}
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise InputError(f"input {path} does not exist; pass wav files or mel .npy files")
        if path.suffix.lower() == ".npy":
            mel = np.load(path, allow_pickle=False)
            if mel.ndim == 3 and mel.shape[0] == 1:
                mel = mel[0]
            if mel.ndim != 2 or mel.shape[0] != spec.in_channels:
                raise InputError(
                    f"{path}: mel shape {tuple(mel.shape)}, this vocoder needs [{spec.in_channels}, frames]"
                )
            if not np.all(np.isfinite(mel)):
                raise InputError(f"{path}: mel holds NaN/Inf values; regenerate it")
            mel = np.asarray(mel, dtype=np.float32)
        elif path.suffix.lower() == ".wav":
            wav, rate = read_wav(path)
            mel = analyse_wav(wav, rate, spec)
        else:
            raise InputError(f"{path}: unsupported input type {path.suffix!r}; pass .wav or mel .npy files")
        if mel.shape[1] == 0:
            raise InputError(f"{path} is empty; pass at least one frame of speech")
        utt[path.stem if path.stem not in utt else str(path)] = mel
    if not utt:
        raise InputError("no inputs given")
    return SpeechSource(utt, f"{len(utt)} user input(s)")


def speech_for(spec: VocoderSpec, inputs: Sequence[str | os.PathLike[str]] = ()) -> SpeechSource:
    return user_speech(inputs, spec) if inputs else fixture_speech(spec)


# ------------------------------------------------------------------------------------ sweep
@dataclass
class SweepResult:
    """All measured cases, with each point's candidate output kept only as a fingerprint input."""

    cases: list[CaseResult]
    points: list[SweepPoint]
    speech_origin: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # point key -> item-0 candidate

    @property
    def failed(self) -> list[tuple[SweepPoint, CaseResult]]:
        return [(p, c) for p, c in zip(self.points, self.cases) if not c.passed]


def run_sweep(
    runner: Runner,
    reference: Callable[[np.ndarray], np.ndarray],
    spec: VocoderSpec,
    profiles: Sequence[ShapeProfile],
    thresholds: Thresholds,
    *,
    speech: SpeechSource | None = None,
    keep_outputs: bool = False,
    with_pesq: bool = True,
    keep_waveforms: int = 1,
    progress: Progress | None = None,
) -> SweepResult:
    """Measure ``runner`` against ``reference`` at every :func:`sweep_points` point.

    ``runner.infer`` and ``reference`` both map float32 [B, C, T] -> [B, 1, T*hop]. A runner
    that raises at a shape (a profile it does not really hold) fails that point with the
    exception recorded as a length/batch mismatch rather than aborting the sweep.
    """
    speech = speech or fixture_speech(spec)
    mel_cfg = mel_config_for(spec)
    collector = CaseCollector(keep=keep_waveforms)
    points = sweep_points(profiles)
    outputs: dict[str, np.ndarray] = {}
    for i, pt in enumerate(points):
        crops = [speech.crop(pt.frames, index=j) for j in range(pt.batch)]
        mel = np.stack([c for c, _ in crops])
        ref = reference(mel)
        try:
            cand = runner.infer(mel, measure=True)  # NaN/Inf are measured, not raised
        except Exception as exc:  # noqa: BLE001 - a failing shape is a result, not a crash
            log.warning("%s at batch %d x %d frames raised %s: %s", getattr(runner, "name", "runner"),
                        pt.batch, pt.frames, type(exc).__name__, exc)
            cand = np.zeros((pt.batch, 1, 0), dtype=np.float32)
        name = crops[0][1] if pt.batch == 1 else "+".join(sorted({c[1].rstrip("+") for c in crops}))
        case = measure_case(ref, cand, sample_rate=spec.sample_rate, thresholds=thresholds,
                            profile=f"{pt.profile}:{pt.label}", input_name=name, frames=pt.frames,
                            mel_cfg=mel_cfg, with_pesq=with_pesq)
        collector.add(case)
        if keep_outputs and pt.batch == 1:
            outputs[pt.key] = np.asarray(cand, dtype=np.float32).reshape(-1)
        if progress is not None:
            m = case.metrics
            mel_l1 = "n/a" if m.log_mel_l1 is None else f"{m.log_mel_l1:.4f}"
            progress(f"  [{i + 1}/{len(points)}] {pt.profile}:{pt.label} batch {pt.batch} x {pt.frames} frames: "
                     f"SNR {m.snr_db:.1f} dB, log-mel L1 {mel_l1}, max|err| {m.max_abs_error:.2e}"
                     + ("" if case.passed else "  FAIL " + "; ".join(f.message for f in case.failures)))
    return SweepResult(collector.cases, points, speech.origin, outputs)


def summary_rows(result: SweepResult) -> list[Mapping[str, Any]]:
    """One row per point for the CLI table and golden files."""
    rows = []
    for pt, case in zip(result.points, result.cases):
        m = case.metrics
        rows.append({
            "key": pt.key, "profile": pt.profile, "label": pt.label, "batch": pt.batch, "frames": pt.frames,
            "snr_db": m.snr_db, "log_mel_l1": m.log_mel_l1, "max_abs_error": m.max_abs_error,
            "nonfinite_count": m.nonfinite_count, "length_mismatch": m.length_mismatch,
            "pesq": m.pesq, "passed": case.passed,
        })
    return rows


__all__ = [
    "SpeechSource", "SweepPoint", "SweepResult", "analyse_wav", "fixture_speech", "odd_prime_between",
    "run_sweep", "speech_for", "summary_rows", "sweep_points", "user_speech",
]
