"""Speech-like test signals and engine-like errors, for demos and tests without a vocoder.

Why not plain sines or white noise: parity metrics behave very differently on signals with
silence, formants and a moving pitch (log-mel L1 and PESQ weight quiet regions heavily), and
an engine's error tends to scale with the signal rather than sit at a constant noise floor.
These give reports and tests numbers of the kind a real engine produces, without one.
"""
from __future__ import annotations

import numpy as np


def speech_like(sample_rate: int = 16000, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Voiced syllables: gliding f0 (70-210 Hz), formant-shaped harmonics, pauses; float32."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    f0 = (140 + 50 * np.sin(2 * np.pi * 0.9 * t + rng.uniform(0, 6))
          + 20 * np.sin(2 * np.pi * 3.1 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = np.array([rng.uniform(500, 800), rng.uniform(1100, 1800), rng.uniform(2300, 3000)])
    x = np.zeros(n)
    for k in range(1, int(sample_rate / 2 / 240)):
        fk = k * f0
        gain = sum(np.exp(-0.5 * ((fk - f) / 150.0) ** 2) for f in formants) + 0.05 / k
        x += gain * np.sin(k * phase)
    # Syllable envelope: 2 syllables/s with gaps of real silence between them.
    syll = np.clip(np.sin(2 * np.pi * 2.0 * t + rng.uniform(0, 6)), 0, None) ** 1.5
    x *= syll
    x += 0.003 * rng.standard_normal(n) * syll  # a little breath noise
    x *= 0.5 / max(1e-9, np.abs(x).max())
    return x.astype(np.float32)


def engine_like(reference: np.ndarray, snr_db: float = 50.0, seed: int = 1,
                smooth_ms: float = 10.0, sample_rate: int = 16000) -> np.ndarray:
    """``reference`` with a slowly varying relative gain error, scaled to exactly ``snr_db``.

    An approximation of reduced-precision error that follows the signal's spectrum: a gain
    wobble smoothed over ``smooth_ms`` perturbs what is already there (white noise would
    instead fill silent bands and dominate log-mel L1).
    """
    rng = np.random.default_rng(seed)
    ref = np.asarray(reference, dtype=np.float64)
    k = max(1, int(sample_rate * smooth_ms / 1000.0))
    wobble = np.convolve(rng.standard_normal(ref.shape[-1] + k), np.hanning(k + 2)[1:-1],
                         mode="same")[: ref.shape[-1]]
    noise = ref * wobble
    scale = np.sqrt(np.sum(ref ** 2) / max(1e-30, np.sum(noise ** 2)) * 10 ** (-snr_db / 10))
    return (ref + scale * noise).astype(np.float32)
