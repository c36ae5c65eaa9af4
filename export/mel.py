"""Mel spectrograms in a vocoder's own feature space.

A vocoder only sounds right when its input mel was computed exactly the way its training data
was: same STFT framing, filterbank, log base and normalisation. Getting any of those wrong does
not crash anything, it just makes the audio worse, so every choice lives in one frozen
``MelConfig`` and the named configs below record what each known vocoder expects (and how we
know: see docs/mel-config.md for the measurement behind ``DEFAULT_VOCODER_MEL``).

The filterbank is built here in numpy from the Slaney / HTK formulas (no librosa or torchaudio
dependency); the STFT is ``torch.stft``.

Framing (the same for every config, so lengths never surprise a caller):
``wav_to_mel`` returns exactly ``T = len(wav) // hop_length`` frames, and a vocoder turns them
into ``T * hop_length`` samples, i.e. the audio is the input truncated to whole hops.

- ``center=False`` (HiFi-GAN / jik876 style): the signal is padded by ``(n_fft - hop) // 2``
  on the left and ``n_fft - hop - that`` on the right, then framed without further padding.
  Frame ``t`` is centred on sample ``t * hop + hop / 2``, the middle of the block of samples
  the vocoder writes for it.
- ``center=True`` (librosa / KAN-TTS style): padded by ``n_fft // 2`` on each side, frame ``t``
  centred on sample ``t * hop``; librosa yields ``len // hop + 1`` frames and the last one is
  dropped here.

The pad is ``pad_mode`` ("reflect" like librosa 0.9 and jik876) and falls back to zeros for a
signal too short to reflect.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..errors import InputError
from .mel_config import (  # re-exported: ``hifitrt.export.mel`` stays the one import for mel users
    DEFAULT_VOCODER_MEL,
    HIFIGAN_JIK876_22K,
    KANTTS_8K,
    KANTTS_16K,
    KANTTS_24K,
    KANTTS_48K,
    KNOWN_CONFIGS,
    MelConfig,
    _log_and_normalise,
    mel_config_for,
    silence_value,
)

__all__ = [
    "MelConfig",
    "mel_filterbank",
    "mel_magnitude",
    "wav_to_mel",
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


def _hz_to_mel(f: np.ndarray, scale: str) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney (Auditory Toolbox): linear below 1 kHz (200/3 Hz per mel), log above.
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    lin = f / f_sp
    log = min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log, lin)


def _mel_to_hz(m: np.ndarray, scale: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    lin = f_sp * m
    log = min_log_hz * np.exp(logstep * (m - min_log_mel))
    return np.where(m >= min_log_mel, log, lin)


@functools.lru_cache(maxsize=64)
def _filterbank_cached(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float, scale: str,
    norm: Optional[str],
) -> np.ndarray:
    n_bins = n_fft // 2 + 1
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_bins)
    # n_mels + 2 edge frequencies equally spaced on the mel scale; filter i rises from
    # edge i to edge i+1 and falls to edge i+2 (triangles drawn in Hz).
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(fmin, scale), _hz_to_mel(fmax, scale), n_mels + 2), scale
    )
    widths = np.diff(edges)
    rise = (fft_hz[None, :] - edges[:-2, None]) / widths[:-1, None]
    fall = (edges[2:, None] - fft_hz[None, :]) / widths[1:, None]
    fb = np.maximum(0.0, np.minimum(rise, fall))
    if norm == "slaney":
        # Constant energy per channel: scale each triangle to unit area over its Hz support.
        fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    fb = fb.astype(np.float32)
    fb.setflags(write=False)
    return fb


def _fb_key(cfg: MelConfig) -> tuple:
    return (int(cfg.sample_rate), int(cfg.n_fft), int(cfg.n_mels), float(cfg.fmin), cfg.f_max,
            cfg.mel_scale, cfg.mel_norm)


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] float32 filterbank for ``cfg`` (read-only, cached)."""
    return _filterbank_cached(*_fb_key(cfg))


@functools.lru_cache(maxsize=64)
def _filterbank_torch(key: tuple) -> torch.Tensor:
    return torch.tensor(_filterbank_cached(*key))


# ---------------------------------------------------------------------------- analysis
def _as_float_wav(wav: np.ndarray, cfg: MelConfig) -> np.ndarray:
    arr = np.asarray(wav)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(f"expected a mono waveform (1-D array), got shape {arr.shape}")
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif not np.issubdtype(arr.dtype, np.floating):
        raise InputError(
            f"waveform dtype {arr.dtype} not supported; pass float samples in [-1, 1] or int16"
        )
    if arr.shape[0] < cfg.hop_length:
        raise InputError(
            f"waveform has {arr.shape[0]} samples, fewer than one hop ({cfg.hop_length});"
            " pass at least one frame of audio"
        )
    if not np.all(np.isfinite(arr)):
        raise InputError("waveform contains NaN or Inf samples; clean the audio first")
    return arr.astype(np.float32, copy=False)


def mel_magnitude(wav: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Linear mel magnitude [n_mels, len // hop] (before clamp/log), float32.

    Exposed separately because comparisons between configs must happen on this quantity
    (see :func:`hifitrt.export.parity.log_mel_l1`), not on values in each config's own log/normalised units.
    """
    x = torch.from_numpy(np.ascontiguousarray(_as_float_wav(wav, cfg)))
    n = x.shape[0]
    frames = n // cfg.hop_length
    if cfg.center:
        left = right = cfg.n_fft // 2
    else:
        left = (cfg.n_fft - cfg.hop_length) // 2
        right = cfg.n_fft - cfg.hop_length - left
    mode = cfg.pad_mode if (cfg.pad_mode == "constant" or max(left, right) < n) else "constant"
    xp = torch.nn.functional.pad(x[None, None, :], (left, right), mode=mode)[0, 0]
    window = torch.hann_window(cfg.win_length, periodic=True, dtype=torch.float32)
    spec = torch.stft(
        xp, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window=window, center=False, return_complex=True,
    )[:, :frames]
    mag = spec.abs()
    if cfg.power != 1.0:
        mag = mag.pow(cfg.power)
    fb = _filterbank_torch(_fb_key(cfg))
    return (fb @ mag).numpy()


def wav_to_mel(wav: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Mel features [n_mels, len(wav) // hop_length] float32 in ``cfg``'s feature space.

    ``wav``: mono float samples in [-1, 1] (int16 is accepted and scaled by 1/32768) at
    ``cfg.sample_rate`` (not checked: a raw array carries no rate). See the module docstring
    for the framing.
    """
    return _log_and_normalise(mel_magnitude(wav, cfg), cfg)
