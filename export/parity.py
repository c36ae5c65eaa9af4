"""How close an engine's audio is to PyTorch's: the two core measures and the targets.

One implementation of each, used by export verification, FP16 planning, the parity report,
the FP16 table script and the benchmarks:

* :func:`snr_db` — waveform SNR in dB, 10 log10(sum ref^2 / sum (ref - test)^2), the same
  ratio Polygraphy's ``--compare-func snr`` computes (means instead of sums, equal lengths);
* :func:`log_mel_l1` — mean |ln mel(ref) - ln mel(test)| in the vocoder's own mel space.

The one NaN/Inf rule: audio containing NaN or Inf is the worst possible match, ``snr_db`` =
``-SNR_CAP_DB`` and ``log_mel_l1`` = +inf, so a plan or a check can never pass on it.
(The parity report also counts NaN/Inf samples separately and then scores the finite rest, so
one bad sample does not hide how the rest sounds; the counts fail the report on their own.)

The parity targets live here too, so the planner and the checker cannot drift apart.
"""
from __future__ import annotations

import numpy as np

from .mel import MelConfig, mel_magnitude

SNR_CAP_DB = 200.0
"""|SNR| is clamped to this so identical signals give a finite, JSON-serialisable number."""

# ---------------------------------------------------------------------------- parity targets
FP32_MAX_ABS_ERROR = 1e-4
"""FP32 engines (and the fp32 ONNX export) vs PyTorch FP32: max |error| per sample."""
FP16_MIN_SNR_DB = 40.0
"""FP16 engines must reach this waveform SNR in the parity report."""
FP16_MAX_LOG_MEL_L1 = 0.01
"""FP16 engines: log-mel L1 ceiling (in the report and as the planner's target)."""
FP16_PLAN_SNR_DB = 50.0
"""The FP16 precision planner aims higher than the report's floor (issue 3: >= 50 dB), so an
engine planned on a few calibration clips still clears ``FP16_MIN_SNR_DB`` on other speech."""
BF16_MIN_PESQ = 4.5
BF16_MAX_LOG_MEL_L1 = 0.02
"""BF16 (OpenVINO) engines: PESQ wideband floor and log-mel L1 ceiling (BF16 cannot reach
FP16's waveform SNR, so they are judged on perceptual measures)."""


def _finite(x: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(x)))


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """SNR of ``test`` against ``reference`` (equal shapes) in dB, within +-``SNR_CAP_DB``.

    Identical signals give +cap; a silent reference with any difference gives -cap; NaN/Inf
    in either gives -cap (the rule above).
    """
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if reference.shape != test.shape:
        raise ValueError(f"snr_db needs equal shapes, got {reference.shape} and {test.shape}")
    if not (_finite(reference) and _finite(test)):
        return -SNR_CAP_DB
    noise = float(np.sum((reference - test) ** 2))
    if noise == 0.0:
        return SNR_CAP_DB
    signal = float(np.sum(reference ** 2))
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(min(SNR_CAP_DB, max(-SNR_CAP_DB, 10.0 * np.log10(signal / noise))))


def log_mel_l1(ref_wav: np.ndarray, test_wav: np.ndarray, cfg: MelConfig) -> float:
    """Mean |ln max(c, M_ref) - ln max(c, M_test)| over mel bins and frames; +inf on NaN/Inf.

    M is :func:`~hifitrt.export.mel.mel_magnitude` under ``cfg`` (so cfg's log base and
    normalisation are ignored on purpose: the result is always in natural-log units, comparable
    across configs), c is ``cfg.clamp_min``. Frames are compared up to the shorter signal.
    0 means identical mel magnitudes; 0.1 is roughly a 10 % average magnitude error; a +6 dB
    gain alone gives ~0.69.
    """
    ref_wav = np.asarray(ref_wav, dtype=np.float32).ravel()
    test_wav = np.asarray(test_wav, dtype=np.float32).ravel()
    if not (_finite(ref_wav) and _finite(test_wav)):
        return float("inf")
    a = mel_magnitude(ref_wav, cfg)
    b = mel_magnitude(test_wav, cfg)
    t = min(a.shape[1], b.shape[1])
    c = np.float32(cfg.clamp_min)
    la = np.log(np.maximum(a[:, :t], c))
    lb = np.log(np.maximum(b[:, :t], c))
    return float(np.mean(np.abs(la - lb)))
