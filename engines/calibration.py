"""Mels to decide the FP16 precision plan with: real speech whenever possible.

The precision planner runs the fp32 and fp16 graphs on these mels to find layers that overflow
or lose accuracy, so they must look like what the vocoder will see in service (voicing,
pauses, silence), never like uniform noise. In order of preference:

1. the repo's speech fixtures in the vocoder's own feature space
   (:func:`hifitrt.export.speech_inputs.speech_mels`: the shipped mels, or the speech
   re-analysed at the vocoder's rate with its mel config, plus pitch/uv rows for NSF);
2. smooth synthetic mels of the right channel count, when no fixtures are installed.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

_LOG = logging.getLogger(__name__)


def calibration_mels(spec: Any, max_items: int = 4, max_frames: int = 400) -> tuple[list[np.ndarray], str]:
    """(list of float32 [in_channels, T] mels, a few words on where they came from)."""
    from ..export.fixtures import FixtureError

    try:
        from ..export.speech_inputs import speech_mels

        mels = _pick(list(speech_mels(spec).values()), max_items, max_frames)
        return mels, f"{len(mels)} speech fixtures in the vocoder's feature space"
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


def synthetic_mels(channels: int, *, nsf: bool = False, count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Smooth log-mel-like arrays (values around -11..2, slow in time and frequency)."""
    from ..export.speech_inputs import pitch_track

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
