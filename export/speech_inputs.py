"""Real-speech inputs of the right shape for any vocoder, and a cached PyTorch reference.

Parity, FP16 calibration, sweeps and benchmarks must run on speech (voicing, pauses,
silence), not noise. The repo ships real Mandarin speech (:mod:`hifitrt.export.fixtures`):
16 kHz WAVs and their mels in the default vocoder's feature space. Any other vocoder gets the
WAVs resampled to its rate and analysed with its own mel configuration
(:func:`hifitrt.export.mel.mel_config_for`); NSF models get two extra rows, a smooth pitch
contour in Hz (continuous through unvoiced frames, as KAN-TTS interpolates F0) and a 0/1
voicing flag from frame energy. This module is the one place that makes such inputs.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from .fixtures import fixture_mels, fixture_wavs
from .spec import VocoderSpec

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


def with_pitch(mel: np.ndarray, spec: Any) -> np.ndarray:
    """NSF vocoders take pitch (Hz) and uv as two extra rows; others take the mel as it is."""
    mel = np.asarray(mel, dtype=np.float32)
    if not spec.nsf:
        return mel
    pitch, uv = pitch_track(mel)
    return np.ascontiguousarray(np.concatenate([mel, pitch[None], uv[None]], axis=0), dtype=np.float32)


def analyse_wav(wav: np.ndarray, rate: int, spec: Any) -> np.ndarray:
    """A WAV as this vocoder's input: resampled, mel in its own config, pitch/uv for NSF."""
    from .mel import mel_config_for, wav_to_mel

    mel = wav_to_mel(_resample(wav, rate, spec.sample_rate), mel_config_for(spec))
    return with_pitch(mel, spec)


def uses_shipped_mels(spec: Any) -> bool:
    """True when the vocoder shares the shipped mels' feature space (the default vocoder's)."""
    return (int(spec.sample_rate), int(spec.hop), int(spec.n_mels), bool(spec.nsf), int(spec.in_channels)) \
        == (FIXTURE_RATE, FIXTURE_HOP, FIXTURE_MELS, False, FIXTURE_MELS)


def speech_mels(spec: Any) -> Dict[str, np.ndarray]:
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


def _key(item: np.ndarray) -> str:
    h = hashlib.sha1(np.ascontiguousarray(item).tobytes())
    h.update(str(item.shape).encode())
    return h.hexdigest()


@dataclass
class TorchReference:
    """PyTorch FP32 outputs of one module, computed once per distinct input item.

    Export verification, FP16 planning and parity all compare against the same PyTorch
    output; on a 2-core CPU the reference forward is the slowest step, so items (one [C, T]
    mel each) are cached by content. Items of one call run together as one batch.
    """

    module: torch.nn.Module

    def __post_init__(self) -> None:
        self._cache: Dict[str, np.ndarray] = {}

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 [B, C, T] -> float32 [B, 1, T*hop]."""
        keys = [_key(item) for item in batch]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            x = torch.from_numpy(np.ascontiguousarray(batch[missing], dtype=np.float32))
            y = self.module(x).numpy()
            for j, i in enumerate(missing):
                self._cache[keys[i]] = y[j]
        return np.stack([self._cache[k] for k in keys])


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2); inf when equal, -inf on NaN/Inf in ``test``."""
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if not np.all(np.isfinite(test)):
        return float("-inf")
    noise = float(np.sum((reference - test) ** 2))
    signal = float(np.sum(reference ** 2))
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-30) / noise))


def as_batch(items: List[np.ndarray]) -> List[np.ndarray]:
    """Each [C, T] item as its own [1, C, T] batch (utterances differ in length)."""
    return [np.ascontiguousarray(m[None], dtype=np.float32) for m in items]
