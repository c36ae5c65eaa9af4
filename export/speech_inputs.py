"""Real-speech inputs of the right shape for any vocoder, and a cached PyTorch reference.

Parity and FP16 calibration must run on speech (voicing, pauses, silence), not noise. The repo
ships 80-bin mels of real Mandarin speech (:mod:`hifitrt.export.fixtures`); other vocoders get
them adapted: the mel axis is resampled by linear interpolation to ``n_mels`` (e.g. 128 for
KAN-TTS 48 kHz) and NSF models get two extra rows, a smooth pitch contour in Hz (continuous
through unvoiced frames, as KAN-TTS interpolates F0) and a 0/1 voicing flag from frame energy.
For random-weight test vocoders the feature space does not matter; for trained ones the
default vocoder's fixtures are its own features.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch

from .fixtures import fixture_mels
from .spec import VocoderSpec

SHORT_FRAMES = 32
LENGTHS = ("short", "medium", "long")


def adapt_mel(mel: np.ndarray, spec: VocoderSpec) -> np.ndarray:
    """[80, T] fixture mel -> [spec.in_channels, T] float32 input for ``spec``'s vocoder."""
    mel = np.asarray(mel, dtype=np.float32)
    if spec.n_mels != mel.shape[0]:
        src = np.linspace(0.0, 1.0, mel.shape[0])
        dst = np.linspace(0.0, 1.0, spec.n_mels)
        mel = np.stack([np.interp(dst, src, mel[:, t]) for t in range(mel.shape[1])], axis=1)
    rows = [mel.astype(np.float32)]
    if spec.nsf:
        pitch, uv = pitch_track(mel)
        rows += [pitch[None], uv[None]]
    return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)


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
    fixture (> 1000 frames). Batch-1 parity uses item 0 of each batch.
    """
    fixtures = list(fixture_mels().values())  # shortest first
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
            a = longest
            b = _speech_of_length(fixtures[:-1], longest.shape[1], start=1)
        else:
            raise ValueError(f"unknown parity length {name!r} (short, medium, long)")
        out[name] = np.stack([adapt_mel(a, spec), adapt_mel(b, spec)])
    return out


def fixture_inputs(spec: VocoderSpec, names: Sequence[str] | None = None) -> Dict[str, np.ndarray]:
    """{fixture name: [C, T]} every speech fixture (or the named ones) adapted to ``spec``."""
    mels = fixture_mels()
    return {k: adapt_mel(v, spec) for k, v in mels.items() if names is None or k in names}


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
