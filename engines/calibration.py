"""Mels to decide the FP16 precision plan with: real speech whenever possible.

The precision planner runs the fp32 and fp16 graphs on these mels to find layers that overflow
or lose accuracy, so they must look like what the vocoder will see in service (voicing,
pauses, silence), never like uniform noise. In order of preference:

1. the repo's fixture mels, when the vocoder lives in their feature space (80 mels, 16 kHz);
2. the fixture *speech* resampled to the vocoder's rate and analysed with its own mel config
   (``export.mel.mel_config_for``), plus a pitch/voicing track for NSF vocoders;
3. smooth synthetic mels of the right channel count, when no fixtures are installed.
"""
from __future__ import annotations

import logging
from math import gcd
from typing import Any

import numpy as np

_LOG = logging.getLogger(__name__)

FIXTURE_RATE = 16000
FIXTURE_MELS = 80


def calibration_mels(spec: Any, max_items: int = 4, max_frames: int = 400) -> tuple[list[np.ndarray], str]:
    """(list of float32 [in_channels, T] mels, a few words on where they came from)."""
    from ..export.fixtures import FixtureError

    try:
        if spec.sample_rate == FIXTURE_RATE and spec.n_mels == FIXTURE_MELS and spec.in_channels == FIXTURE_MELS \
                and spec.arch == "hifigan" and not spec.nsf:
            from ..export.fixtures import fixture_mels

            mels = _pick(list(fixture_mels().values()), max_items, max_frames)
            return mels, f"{len(mels)} speech fixture mels"
        mels = _resynthesised(spec, max_items, max_frames)
        return mels, f"{len(mels)} fixture recordings analysed at {spec.sample_rate} Hz"
    except (FixtureError, OSError, ValueError) as exc:
        _LOG.warning("speech fixtures unavailable (%s); calibrating FP16 on synthetic mels", exc)
    mels = synthetic_mels(spec.in_channels, nsf=bool(spec.nsf), count=max_items)
    return mels, f"{len(mels)} synthetic mels"


def _pick(mels: list[np.ndarray], max_items: int, max_frames: int) -> list[np.ndarray]:
    """Spread ``max_items`` picks over the (length-sorted) list; cap each at ``max_frames``."""
    if len(mels) > max_items:
        idx = np.linspace(0, len(mels) - 1, max_items).round().astype(int)
        mels = [mels[i] for i in sorted(set(idx.tolist()))]
    return [np.ascontiguousarray(m[:, :max_frames], dtype=np.float32) for m in mels]


def _resynthesised(spec: Any, max_items: int, max_frames: int) -> list[np.ndarray]:
    from scipy.signal import resample_poly

    from ..export.fixtures import fixture_wavs
    from ..export.mel import mel_config_for, wav_to_mel

    cfg = mel_config_for(spec)
    g = gcd(spec.sample_rate, FIXTURE_RATE)
    result = []
    for wav in _pick_wavs(list(fixture_wavs().values()), max_items):
        if spec.sample_rate != FIXTURE_RATE:
            wav = resample_poly(wav, spec.sample_rate // g, FIXTURE_RATE // g).astype(np.float32)
        mel = wav_to_mel(wav, cfg).astype(np.float32)
        if spec.nsf:
            mel = np.concatenate([mel, _pitch_track(mel)], axis=0)
        if mel.shape[0] != spec.in_channels:
            raise ValueError(f"analysed mel has {mel.shape[0]} channels, the vocoder takes {spec.in_channels}")
        result.append(mel)
    return _pick(result, max_items, max_frames)


def _pick_wavs(wavs: list[np.ndarray], max_items: int) -> list[np.ndarray]:
    if len(wavs) > max_items:
        idx = np.linspace(0, len(wavs) - 1, max_items).round().astype(int)
        wavs = [wavs[i] for i in sorted(set(idx.tolist()))]
    return wavs


def _pitch_track(mel: np.ndarray) -> np.ndarray:
    """[2, T]: pitch (Hz) and voiced flag rows, as the export's parity inputs make them."""
    from ..export.speech_inputs import pitch_track

    pitch, uv = pitch_track(mel)
    return np.stack([pitch, uv]).astype(np.float32)


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
            mel = np.concatenate([mel, _pitch_track(mel)], axis=0)
        result.append(np.ascontiguousarray(mel))
    return result
