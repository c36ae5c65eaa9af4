"""Real-speech inputs of the right shape for any vocoder, and a cached PyTorch reference.

Parity, FP16 calibration, sweeps and benchmarks must run on speech (voicing, pauses,
silence), not noise. The repo ships real Mandarin speech (:mod:`hifitrt.export.fixtures`):
16 kHz WAVs and their mels in the default vocoder's feature space. Any other vocoder gets the
WAVs resampled to its rate and analysed with its own mel configuration
(:func:`hifitrt.export.mel.mel_config_for`); NSF models get two extra rows, a smooth pitch
contour in Hz (continuous through unvoiced frames, as KAN-TTS interpolates F0) and a 0/1
voicing flag from frame energy. This module is the one place that makes such inputs:

* :func:`speech_mels` / :func:`fixture_inputs` — the utterances;
* :class:`SpeechSource` (:func:`fixture_speech`) — crops of any length for parity sweeps;
* :func:`calibration_mels` — the FP16 calibration set: ``export --precision fp16``, ``build``
  and ``scripts/fp16_parity_table.py`` all plan on exactly these mels, so they produce the
  same precision plan for the same source;
* :func:`parity_batches` — batches of two utterances per length for export verification.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, Sequence

import numpy as np

from ..errors import FixtureError
from .fixtures import fixture_mels, fixture_wavs
from .mel import mel_config_for, wav_to_mel
from .spec import VocoderSpec

_LOG = logging.getLogger(__name__)

SHORT_FRAMES = 32
LENGTHS = ("short", "medium", "long")
# "long" parity means over 1000 frames (issue 3) for every hop, including 48 kHz's 600.
LONG_MIN_FRAMES = 1024


FIXTURE_RATE = 16000
FIXTURE_HOP = 160
FIXTURE_MELS = 80

_SPEECH_CACHE: Dict[tuple, Dict[str, np.ndarray]] = {}


def _resample(wav: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return np.asarray(wav, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(src), int(dst))
    return resample_poly(np.asarray(wav, dtype=np.float64), dst // g, src // g).astype(np.float32)


def with_pitch(mel: np.ndarray, spec: VocoderSpec) -> np.ndarray:
    """NSF vocoders take pitch (Hz) and uv as two extra rows; others take the mel as it is."""
    mel = np.asarray(mel, dtype=np.float32)
    if not spec.nsf:
        return mel
    pitch, uv = pitch_track(mel)
    return np.ascontiguousarray(np.concatenate([mel, pitch[None], uv[None]], axis=0), dtype=np.float32)


def analyse_wav(wav: np.ndarray, rate: int, spec: VocoderSpec) -> np.ndarray:
    """A WAV as this vocoder's input: resampled, mel in its own config, pitch/uv for NSF."""
    mel = wav_to_mel(_resample(wav, rate, spec.sample_rate), mel_config_for(spec))
    return with_pitch(mel, spec)


def uses_shipped_mels(spec: VocoderSpec) -> bool:
    """True when the vocoder shares the shipped mels' feature space (the default vocoder's)."""
    return (int(spec.sample_rate), int(spec.hop), int(spec.n_mels), bool(spec.nsf), int(spec.in_channels)) \
        == (FIXTURE_RATE, FIXTURE_HOP, FIXTURE_MELS, False, FIXTURE_MELS)


def speech_mels(spec: VocoderSpec) -> Dict[str, np.ndarray]:
    """{fixture name: float32 [in_channels, T]} the speech fixtures in ``spec``'s input space.

    The shipped mels are used as they are when the vocoder shares their feature space (16 kHz,
    hop 160, 80 mels, no NSF: the default vocoder); otherwise the WAVs are re-analysed.
    Sorted shortest first; cached per feature space.
    """
    key = (int(spec.sample_rate), int(spec.hop), int(spec.n_mels), bool(spec.nsf), int(spec.in_channels))
    if key not in _SPEECH_CACHE:
        if uses_shipped_mels(spec):
            mels = {k: np.asarray(v, dtype=np.float32) for k, v in fixture_mels().items()}
        else:
            mels = {k: analyse_wav(w, FIXTURE_RATE, spec) for k, w in fixture_wavs().items()}
        for name, mel in mels.items():
            if mel.shape[0] != spec.in_channels:
                raise ValueError(f"fixture {name} analysed to {mel.shape[0]} channels, the vocoder "
                                 f"takes {spec.in_channels}")
        _SPEECH_CACHE[key] = dict(sorted(mels.items(), key=lambda kv: kv[1].shape[1]))
    return dict(_SPEECH_CACHE[key])


def pitch_track(mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A plausible (pitch Hz, uv) pair for a mel: voiced where frame energy is high."""
    energy = mel.mean(axis=0)
    lo, hi = np.percentile(energy, 10), np.percentile(energy, 90)
    level = np.clip((energy - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    uv = (level > 0.45).astype(np.float32)
    t = np.arange(mel.shape[1], dtype=np.float32)
    pitch = 140.0 + 60.0 * level + 25.0 * np.sin(2 * np.pi * t / 80.0)
    return pitch.astype(np.float32), uv


def _speech_of_length(mels: Sequence[np.ndarray], frames: int, start: int = 0) -> np.ndarray:
    """``frames`` frames of real speech: the fixtures concatenated (rotated by ``start``)."""
    order = list(mels[start:]) + list(mels[:start])
    joined = np.concatenate(order * (1 + frames // sum(m.shape[1] for m in order)), axis=1)
    return joined[:, :frames]


def parity_batches(spec: VocoderSpec, lengths: Sequence[str] = LENGTHS) -> Dict[str, np.ndarray]:
    """{length name: float32 [2, C, T]} batches of two different real-speech utterances.

    short = 32 frames cut from voiced speech, medium = a 2 s sentence, long = the longest
    fixture, continued with the others up to ``LONG_MIN_FRAMES`` where it is shorter (its
    11.1 s are 1108 frames at hop 160 but only 886 at 48 kHz / hop 600). Batch-1 parity uses
    item 0 of each batch.
    """
    fixtures = list(speech_mels(spec).values())  # shortest first
    medium = min(fixtures, key=lambda m: abs(m.shape[1] - 216))
    longest = fixtures[-1]
    out: Dict[str, np.ndarray] = {}
    for name in lengths:
        if name == "short":
            a = medium[:, 40:40 + SHORT_FRAMES]
            b = _speech_of_length(fixtures, SHORT_FRAMES + 20, start=2)[:, 20:]
        elif name == "medium":
            a = medium
            b = _speech_of_length(fixtures, medium.shape[1], start=3)
        elif name == "long":
            frames = max(longest.shape[1], LONG_MIN_FRAMES)
            a = _speech_of_length(fixtures, frames, start=len(fixtures) - 1)  # longest first
            b = _speech_of_length(fixtures[:-1], frames, start=1)
        else:
            raise ValueError(f"unknown parity length {name!r} (short, medium, long)")
        out[name] = np.stack([a, b]).astype(np.float32)
    return out


def fixture_inputs(spec: VocoderSpec, names: Sequence[str] | None = None) -> Dict[str, np.ndarray]:
    """{fixture name: [C, T]} every speech fixture (or the named ones) in ``spec``'s input space."""
    return {k: v for k, v in speech_mels(spec).items() if names is None or k in names}


# ------------------------------------------------------------------------------------ crops
@dataclass
class SpeechSource:
    """Real-speech mels in one vocoder's input space ([C, T] each) and how they were made."""

    utterances: Dict[str, np.ndarray]
    origin: str

    def crop(self, frames: int, index: int = 0) -> tuple[np.ndarray, str]:
        """``frames`` frames of speech (utterances concatenated, rotated by ``index``).

        Different ``index`` values start at different utterances and offsets, so the items of
        a batch are different speech of the same length.
        """
        names = list(self.utterances)
        n = len(names)
        order = names[index % n:] + names[:index % n]
        total = sum(self.utterances[k].shape[1] for k in order)
        offset = (index // n) * 37 % max(1, total)  # a deterministic shift for index >= n
        reps = 1 + (frames + offset) // max(1, total)
        joined = np.concatenate([self.utterances[k] for k in order] * (reps + 1), axis=1)
        crop = joined[:, offset:offset + frames]
        label = order[0] if frames + offset <= self.utterances[order[0]].shape[1] else f"{order[0]}+"
        return np.ascontiguousarray(crop, dtype=np.float32), label


def fixture_speech(spec: VocoderSpec) -> SpeechSource:
    """The repo's speech fixtures in ``spec``'s input space, as a :class:`SpeechSource`."""
    origin = ("speech fixtures (mels)" if uses_shipped_mels(spec)
              else f"speech fixtures re-analysed at {spec.sample_rate} Hz, hop {spec.hop}")
    return SpeechSource(speech_mels(spec), origin)


# ------------------------------------------------------------------------------------ calibration
CALIBRATION_ITEMS = 4
CALIBRATION_MAX_FRAMES = 400


def calibration_mels(spec: VocoderSpec, max_items: int = CALIBRATION_ITEMS,
                     max_frames: int = CALIBRATION_MAX_FRAMES) -> tuple[list[np.ndarray], str]:
    """(float32 [in_channels, T] mels, a few words on where they came from) to plan precision on.

    The planner runs the fp32 and fp16 graphs on these to find layers that overflow or lose
    accuracy, so they must look like what the vocoder will see in service (voicing, pauses,
    silence). Preferred: ``max_items`` speech fixtures spread over the length range, each cut to
    ``max_frames``; smooth synthetic mels of the right channel count only when no fixtures are
    installed (with a warning).
    """
    try:
        mels = _spread(list(speech_mels(spec).values()), max_items, max_frames)
        return mels, f"{len(mels)} speech fixtures in the vocoder's feature space"
    except (FixtureError, OSError, ValueError) as exc:
        _LOG.warning("speech fixtures unavailable (%s); calibrating FP16 on synthetic mels", exc)
    mels = synthetic_mels(spec.in_channels, nsf=bool(spec.nsf), count=max_items)
    return mels, f"{len(mels)} synthetic mels"


def _spread(mels: list[np.ndarray], max_items: int, max_frames: int) -> list[np.ndarray]:
    """Spread ``max_items`` picks over the (length-sorted) list; cap each at ``max_frames``."""
    if len(mels) > max_items:
        idx = np.linspace(0, len(mels) - 1, max_items).round().astype(int)
        mels = [mels[i] for i in sorted(set(idx.tolist()))]
    return [np.ascontiguousarray(m[:, :max_frames], dtype=np.float32) for m in mels]


def synthetic_mels(channels: int, *, nsf: bool = False, count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Smooth log-mel-like arrays (values around -11..2, slow in time and frequency)."""
    rng = np.random.default_rng(seed)
    mel_channels = channels - 2 if nsf else channels
    result = []
    for i in range(count):
        frames = 64 + 96 * i
        base = rng.normal(size=(mel_channels, frames)).astype(np.float32)
        kernel = np.ones(5, dtype=np.float32) / 5
        base = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, base)
        base = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, base)
        tilt = np.linspace(0.0, -4.0, mel_channels, dtype=np.float32)[:, None]
        envelope = np.sin(np.linspace(0, np.pi * (2 + i), frames, dtype=np.float32))[None, :] ** 2
        mel = (-6.0 + tilt + 5.0 * envelope + 1.5 * base).clip(-11.5, 2.5).astype(np.float32)
        if nsf:
            pitch, uv = pitch_track(mel)
            mel = np.concatenate([mel, pitch[None], uv[None]], axis=0)
        result.append(np.ascontiguousarray(mel, dtype=np.float32))
    return result
