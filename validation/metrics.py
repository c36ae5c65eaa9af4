"""Audio parity metrics: how far an engine's waveform is from the PyTorch FP32 reference.

Why audio metrics and not element-wise tolerances: an FP16 vocoder never matches FP32 to 1e-5
per sample, yet it can sound identical. What matters is how loud the error is relative to the
speech (waveform SNR), whether the spectrum the listener hears moved (log-mel L1 in the
vocoder's own mel space, multi-resolution STFT distance), and hard breakage (NaN/Inf, a
truncated output). FP32 engines are held to a tight max-abs bound instead, because there any
visible difference is a bug rather than rounding.

Everything here is a pure function of two waveforms; nothing imports engines or runtime code.

Conventions (documented in docs/report-schema.md as well):
- Inputs are float arrays shaped [S], [B, S] or [B, 1, S]. Batches are measured per item and
  aggregated worst-case (minimum SNR/PESQ, maximum errors, summed NaN/Inf counts).
- A candidate whose length differs from the reference is never trimmed silently: the
  difference is reported as ``length_mismatch`` (candidate minus reference samples) and the
  shorter signal is zero-padded for the other metrics, so missing audio counts as error.
- SNR is ``10*log10(sum ref^2 / sum (ref-cand)^2)`` clamped to +-``SNR_CAP_DB``: identical
  signals give +200 dB (also when both are all zeros); a silent reference with a non-silent
  candidate gives -200 dB.
- NaN/Inf samples in the candidate are counted (``nan_count``, ``inf_count``) and replaced by
  0 for every other metric, the same way missing samples are: one bad sample fails the
  ``nonfinite_count`` check by itself and does not hide how the rest of the clip sounds.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import InputError, ThresholdError
from ..export.mel import MelConfig, mel_config_for
from ..export.parity import (
    BF16_MAX_LOG_MEL_L1,
    BF16_MIN_PESQ,
    FP16_MAX_LOG_MEL_L1,
    FP16_MIN_SNR_DB,
    FP32_MAX_ABS_ERROR,
    SNR_CAP_DB,
    log_mel_l1,
    snr_db,
)

log = logging.getLogger(__name__)


PESQ_MIN_SECONDS = 0.25
"""PESQ's level alignment needs at least this much audio; shorter inputs get no PESQ score."""

# Parallel WaveGAN's multi-resolution STFT loss resolutions at 24 kHz (n_fft, hop, win).
# They are rescaled to the vocoder's sample rate so each resolution covers the same time span.
_PWG_RESOLUTIONS_24K: tuple[tuple[int, int, int], ...] = (
    (1024, 120, 600),
    (2048, 240, 1200),
    (512, 50, 240),
)


@dataclass(frozen=True)
class StftResolution:
    """One STFT analysis setting for the multi-resolution distance."""

    n_fft: int
    hop: int
    win: int


def stft_resolutions(sample_rate: int) -> tuple[StftResolution, ...]:
    """Parallel WaveGAN's three resolutions scaled from 24 kHz to ``sample_rate``.

    Hop and window scale linearly (same milliseconds); n_fft is the power of two nearest
    the scaled size but never smaller than the window.
    """
    ratio = sample_rate / 24000.0
    out = []
    for n_fft, hop, win in _PWG_RESOLUTIONS_24K:
        w = max(16, int(round(win * ratio)))
        h = max(4, int(round(hop * ratio)))
        f = 2 ** int(round(math.log2(n_fft * ratio)))
        while f < w:
            f *= 2
        out.append(StftResolution(n_fft=f, hop=h, win=w))
    return tuple(out)


@dataclass
class AudioMetrics:
    """Distance of one candidate waveform (or a batch, aggregated worst-case) from a reference.

    ``pesq`` is None with ``pesq_note`` saying why when PESQ does not apply; ``log_mel_l1`` is
    None when no mel configuration was available. Values are computed with non-finite
    candidate samples zeroed (see the module docstring).
    """

    snr_db: float
    max_abs_error: float
    mean_abs_error: float
    log_mel_l1: float | None
    stft_sc: float
    stft_logmag: float
    mrstft: float
    nan_count: int
    inf_count: int
    reference_samples: int
    candidate_samples: int
    length_mismatch: int
    reference_batch: int
    candidate_batch: int
    reference_shape: tuple[int, ...]
    candidate_shape: tuple[int, ...]
    pesq: float | None = None
    pesq_mode: str | None = None
    pesq_note: str | None = None
    worst_item: int = 0
    items: list[AudioMetrics] = field(default_factory=list)

    @property
    def batch_mismatch(self) -> bool:
        """The candidate has a different number of items than the reference."""
        return self.reference_batch != self.candidate_batch

    @property
    def nonfinite_count(self) -> int:
        """NaN plus Inf samples in the candidate."""
        return self.nan_count + self.inf_count

    def to_dict(self, *, include_items: bool = True) -> dict[str, Any]:
        """JSON-ready dict: non-finite floats become None, shapes become lists."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "items":
                continue
            d[f.name] = _json_value(getattr(self, f.name))
        d["nonfinite_count"] = self.nonfinite_count
        d["batch_mismatch"] = self.batch_mismatch
        if include_items and self.items:
            d["items"] = [it.to_dict(include_items=False) for it in self.items]
        return d


def _json_value(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    return v


# --------------------------------------------------------------------------------------------
# Shapes


def as_items(wav: Any, what: str) -> np.ndarray:
    """Return ``wav`` as float64 [B, S]; accepts [S], [B, S] and [B, 1, S] arrays or tensors.

    float64 so sums of squares over minutes of audio stay exact enough for a 200 dB range.
    """
    if hasattr(wav, "detach"):  # torch tensor without importing torch here
        wav = wav.detach().cpu().numpy()
    arr = np.asarray(wav)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what} waveform has dtype {arr.dtype}; pass a float array")
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim == 3 and arr.shape[1] == 1:
        arr = arr[:, 0, :]
    elif arr.ndim != 2:
        raise InputError(
            f"{what} waveform has shape {tuple(arr.shape)}; expected [samples], [batch, samples] "
            "or [batch, 1, samples]"
        )
    return arr.astype(np.float64, copy=False)


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[-1] >= n:
        return x
    return np.pad(x, (0, n - x.shape[-1]))


# --------------------------------------------------------------------------------------------
# Individual metrics


def multi_resolution_stft(
    reference: np.ndarray, candidate: np.ndarray, sample_rate: int
) -> tuple[float, float]:
    """(spectral convergence, log-magnitude L1), each averaged over ``stft_resolutions``.

    Spectral convergence ||S_ref - S_cand||_F / ||S_ref||_F says how much of the spectrum's
    energy moved; log-magnitude L1 weights quiet bins (breath, silence) that SNR ignores.
    Magnitudes are floored at sqrt(1e-7) as in Parallel WaveGAN so silence is finite. Frames are
    centred with zero padding so signals shorter than n_fft still work.
    """
    import torch

    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    cand = torch.from_numpy(np.ascontiguousarray(candidate, dtype=np.float32))
    scs, mags = [], []
    for res in stft_resolutions(sample_rate):
        window = torch.hann_window(res.win)

        def mag(x: torch.Tensor) -> torch.Tensor:
            spec = torch.stft(
                x, n_fft=res.n_fft, hop_length=res.hop, win_length=res.win, window=window,
                center=True, pad_mode="constant", return_complex=True,
            )
            return torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=1e-7))

        m_ref, m_cand = mag(ref), mag(cand)
        scs.append(float(torch.linalg.norm(m_ref - m_cand) / torch.linalg.norm(m_ref)))
        mags.append(float(torch.mean(torch.abs(torch.log(m_ref) - torch.log(m_cand)))))
    return float(np.mean(scs)), float(np.mean(mags))


def pesq_score(
    reference: np.ndarray, candidate: np.ndarray, sample_rate: int
) -> tuple[float | None, str | None, str | None]:
    """(score, mode, note): ITU-T P.862.2 wide-band PESQ at 16 kHz, narrow-band at 8 kHz.

    Returns (None, None, reason) whenever PESQ does not apply or the library refuses the input
    (other sample rates, under 0.25 s, silence, non-finite audio); it never raises, because a
    missing perceptual score must not abort a parity sweep.
    """
    if sample_rate == 16000:
        mode = "wb"
    elif sample_rate == 8000:
        mode = "nb"
    else:
        return None, None, f"PESQ needs 8 or 16 kHz audio; this vocoder runs at {sample_rate} Hz"
    seconds = reference.shape[-1] / sample_rate
    if seconds < PESQ_MIN_SECONDS:
        return None, None, f"audio is {seconds:.3f} s; PESQ needs at least {PESQ_MIN_SECONDS} s"
    if not np.all(np.isfinite(candidate)):
        return None, None, "candidate has NaN/Inf samples"
    if not np.any(reference) or not np.any(candidate):
        return None, None, "reference or candidate is digital silence"
    try:
        from pesq import pesq

        score = float(pesq(sample_rate, reference.astype(np.float32),
                           candidate.astype(np.float32), mode))
    except Exception as exc:  # the C library raises several unrelated types
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return None, None, f"PESQ failed: {type(exc).__name__}: {detail}".strip()
    if not math.isfinite(score):
        return None, None, "PESQ returned a non-finite score"
    return score, mode, None


def _log_mel_l1(reference: np.ndarray, candidate: np.ndarray, mel_cfg: MelConfig) -> float | None:
    hop = int(getattr(mel_cfg, "hop_length", 1))
    if reference.shape[-1] < hop:
        log.warning("log-mel L1 skipped: %d samples is less than one hop (%d)",
                    reference.shape[-1], hop)
        return None
    return float(log_mel_l1(reference.astype(np.float32), candidate.astype(np.float32), mel_cfg))


def default_mel_config(sample_rate: int, hop: int | None = None, n_mels: int = 80) -> Any:
    """The vocoder's mel configuration from hifitrt.export.mel (hop defaults to 10 ms)."""
    return mel_config_for(sample_rate, hop if hop is not None else sample_rate // 100, n_mels)


# --------------------------------------------------------------------------------------------
# compare_audio


def _compare_item(
    ref: np.ndarray,
    cand: np.ndarray,
    sample_rate: int,
    mel_cfg: MelConfig,
    with_pesq: bool,
    context: dict[str, Any],
) -> AudioMetrics:
    n_ref, n_cand = ref.shape[-1], cand.shape[-1]
    n = max(n_ref, n_cand)
    if n == 0:
        raise InputError("reference and candidate waveforms are empty; nothing to compare")
    nan_count = int(np.isnan(cand).sum())
    inf_count = int(np.isinf(cand).sum())
    if nan_count or inf_count:
        # Counted above (and failed by the nonfinite threshold); zeroed here so one bad sample
        # does not hide how the rest of the clip sounds.
        cand = np.where(np.isfinite(cand), cand, 0.0)
    r, c = _pad_to(ref, n), _pad_to(cand, n)

    err = np.abs(r - c)
    snr = snr_db(r, c)
    sc, logmag = multi_resolution_stft(r, c, sample_rate)
    mel_l1 = _log_mel_l1(r, c, mel_cfg) if mel_cfg is not None else None
    score, mode, note = pesq_score(r, c, sample_rate) if with_pesq else (None, None, "disabled")
    return AudioMetrics(
        snr_db=snr,
        max_abs_error=float(err.max()),
        mean_abs_error=float(err.mean()),
        log_mel_l1=mel_l1,
        stft_sc=sc,
        stft_logmag=logmag,
        mrstft=sc + logmag,
        nan_count=nan_count,
        inf_count=inf_count,
        reference_samples=n_ref,
        candidate_samples=n_cand,
        length_mismatch=n_cand - n_ref,
        pesq=score,
        pesq_mode=mode,
        pesq_note=note,
        **context,
    )


def _worst(values: Iterable[float], *, lowest: bool) -> float:
    vals = list(values)
    if any(math.isnan(v) for v in vals):
        return float("nan")
    return min(vals) if lowest else max(vals)


def _badness(m: AudioMetrics) -> tuple[float, float, float]:
    """Sort key of items, worst first: non-finite, length problems, then lowest SNR."""
    snr = -math.inf if math.isnan(m.snr_db) else m.snr_db
    return (-float(m.nonfinite_count), -float(abs(m.length_mismatch)), snr)


def compare_audio(
    reference: Any,
    candidate: Any,
    sample_rate: int,
    *,
    mel_cfg: MelConfig | None = None,
    hop: int | None = None,
    n_mels: int = 80,
    with_pesq: bool = True,
) -> AudioMetrics:
    """Measure ``candidate`` against ``reference`` (see the module docstring for conventions).

    ``mel_cfg`` is the vocoder's own mel configuration (``hifitrt.export.mel.MelConfig``);
    when None it is built with ``mel_config_for(sample_rate, hop, n_mels)``. Batched inputs
    return the worst-case aggregate with per-item metrics in ``items`` and the index of the
    worst item in ``worst_item``.
    """
    ref_shape = tuple(int(s) for s in np.shape(reference))
    cand_shape = tuple(int(s) for s in np.shape(candidate))
    ref = as_items(reference, "reference")
    cand = as_items(candidate, "candidate")
    if not np.all(np.isfinite(ref)):
        raise InputError(
            f"reference waveform has {int((~np.isfinite(ref)).sum())} NaN/Inf samples; the "
            "PyTorch reference itself is broken for this input - check the mel"
        )
    if mel_cfg is None:
        mel_cfg = default_mel_config(sample_rate, hop, n_mels)
    context = dict(reference_batch=int(ref.shape[0]), candidate_batch=int(cand.shape[0]),
                   reference_shape=ref_shape, candidate_shape=cand_shape)
    n_items = min(ref.shape[0], cand.shape[0])
    if n_items == 0:
        raise InputError(f"empty batch: reference {ref_shape}, candidate {cand_shape}")
    # Items missing from a short candidate batch are reported via batch_mismatch, not measured.
    items = [
        _compare_item(ref[i], cand[i], sample_rate, mel_cfg, with_pesq, context)
        for i in range(n_items)
    ]
    if len(items) == 1 and ref.shape[0] == cand.shape[0]:
        return items[0]

    worst_idx = min(range(len(items)), key=lambda i: _badness(items[i]))
    pesqs = [m.pesq for m in items if m.pesq is not None]
    mels = [m.log_mel_l1 for m in items if m.log_mel_l1 is not None]
    notes = sorted({m.pesq_note for m in items if m.pesq_note})
    return AudioMetrics(
        snr_db=_worst((m.snr_db for m in items), lowest=True),
        max_abs_error=_worst((m.max_abs_error for m in items), lowest=False),
        mean_abs_error=_worst((m.mean_abs_error for m in items), lowest=False),
        log_mel_l1=(_worst(mels, lowest=False) if mels else None),
        stft_sc=_worst((m.stft_sc for m in items), lowest=False),
        stft_logmag=_worst((m.stft_logmag for m in items), lowest=False),
        mrstft=_worst((m.mrstft for m in items), lowest=False),
        nan_count=sum(m.nan_count for m in items),
        inf_count=sum(m.inf_count for m in items),
        reference_samples=items[0].reference_samples,
        candidate_samples=items[0].candidate_samples,
        length_mismatch=items[0].length_mismatch,
        pesq=min(pesqs) if pesqs else None,
        pesq_mode=next((m.pesq_mode for m in items if m.pesq_mode), None),
        pesq_note="; ".join(notes) if notes else None,
        worst_item=worst_idx,
        items=items,
        **context,
    )


# --------------------------------------------------------------------------------------------
# Worst segments (where in time the error lives)


@dataclass(frozen=True)
class Segment:
    """A short window of the worst item and how much error it holds."""

    start_s: float
    end_s: float
    error_db: float  # window error energy / mean reference energy per window (inf: NaN/Inf)
    segment_snr_db: float  # reference vs error energy inside the window (clamped)
    max_abs_error: float
    nonfinite: int

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_value(v) for k, v in dataclasses.asdict(self).items()}


def worst_segments(
    reference: Any,
    candidate: Any,
    sample_rate: int,
    *,
    window_ms: float = 20.0,
    top: int = 10,
) -> list[Segment]:
    """The ``top`` non-overlapping ``window_ms`` windows with the largest error energy.

    Lets a reader jump straight to the audible problem (a click, a burst of FP16 overflow)
    instead of staring at a global SNR. Non-finite samples rank first. Operates on one item.
    """
    ref = as_items(reference, "reference")[0]
    cand = as_items(candidate, "candidate")[0]
    n = max(ref.shape[0], cand.shape[0])
    ref, cand = _pad_to(ref, n), _pad_to(cand, n)
    win = max(1, int(round(sample_rate * window_ms / 1000.0)))
    n_win = max(1, math.ceil(n / win))
    pad = n_win * win - n
    r = np.pad(ref, (0, pad)).reshape(n_win, win)
    c = np.pad(cand, (0, pad)).reshape(n_win, win)
    bad = ~np.isfinite(c)
    nonfinite = bad.sum(axis=1)
    diff = np.where(bad, 0.0, r - c)
    err_e = (diff ** 2).sum(axis=1)
    ref_e = (r ** 2).sum(axis=1)
    mean_ref_e = max(float(ref_e.mean()), 1e-20)
    # Only windows that hold any error at all; exact windows are not "worst" anything.
    candidates = [i for i in range(n_win) if nonfinite[i] > 0 or err_e[i] > 0.0]
    order = sorted(candidates, key=lambda i: (-int(nonfinite[i]), -float(err_e[i])))[:top]
    out = []
    for i in order:
        e, s = float(err_e[i]), float(ref_e[i])
        if nonfinite[i] > 0:
            err_db, seg_snr = math.inf, -SNR_CAP_DB
        else:
            err_db = 10.0 * math.log10(e / mean_ref_e)
            seg_snr = -SNR_CAP_DB if s == 0.0 else max(
                -SNR_CAP_DB, min(SNR_CAP_DB, 10.0 * math.log10(s / e)))
        out.append(Segment(
            start_s=i * win / sample_rate,
            end_s=min(n, (i + 1) * win) / sample_rate,
            error_db=err_db,
            segment_snr_db=seg_snr,
            max_abs_error=float(np.abs(diff[i]).max()),
            nonfinite=int(nonfinite[i]),
        ))
    return out


# --------------------------------------------------------------------------------------------
# Thresholds


@dataclass(frozen=True)
class _Limit:
    metric: str  # AudioMetrics attribute
    kind: str  # "min" (value must be >= limit) or "max" (value must be <= limit)
    unit: str


_LIMITS: dict[str, _Limit] = {
    "snr_db": _Limit("snr_db", "min", "dB"),
    "log_mel_l1": _Limit("log_mel_l1", "max", ""),
    "max_abs_error": _Limit("max_abs_error", "max", ""),
    "mean_abs_error": _Limit("mean_abs_error", "max", ""),
    "mrstft": _Limit("mrstft", "max", ""),
    "pesq": _Limit("pesq", "min", "MOS"),
    "nonfinite_count": _Limit("nonfinite_count", "max", "samples"),
    "length_mismatch": _Limit("length_mismatch", "max", "samples"),
}

_ALIASES = {
    "snr": "snr_db",
    "max_abs": "max_abs_error",
    "mean_abs": "mean_abs_error",
    "mel_l1": "log_mel_l1",
    "log_mel": "log_mel_l1",
    "nan": "nonfinite_count",
    "nonfinite": "nonfinite_count",
    "length": "length_mismatch",
    "mr_stft": "mrstft",
}

_OFF = {"off", "none", "disable", "disabled"}


@dataclass(frozen=True)
class Thresholds:
    """Pass/fail limits; None disables a check. Names equal AudioMetrics field names.

    ``snr_db`` and ``pesq`` are minimums, the rest maximums. ``length_mismatch`` bounds the
    absolute sample difference (and any batch/shape difference fails it). PESQ is skipped
    (not failed) when it does not apply to the sample rate or length.
    """

    snr_db: float | None = None
    log_mel_l1: float | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    mrstft: float | None = None
    pesq: float | None = None
    nonfinite_count: float | None = 0
    length_mismatch: float | None = 0
    preset: str = "custom"

    @classmethod
    def fp16(cls) -> Thresholds:
        """Mixed-precision engines: audibly identical, not bit-close."""
        return cls(snr_db=FP16_MIN_SNR_DB, log_mel_l1=FP16_MAX_LOG_MEL_L1, preset="fp16")

    @classmethod
    def fp32(cls) -> Thresholds:
        """FP32 engines: any difference beyond accumulation-order noise is a bug."""
        return cls(max_abs_error=FP32_MAX_ABS_ERROR, preset="fp32")

    @classmethod
    def bf16(cls) -> Thresholds:
        """BF16 CPU engines (OpenVINO): a perceptual gate, since BF16's 8-bit mantissa cannot
        reach FP16's waveform SNR: PESQ wb >= 4.5, log-mel L1 <= 0.02, no NaN/Inf (issue 14)."""
        return cls(pesq=BF16_MIN_PESQ, log_mel_l1=BF16_MAX_LOG_MEL_L1, preset="bf16")

    @classmethod
    def for_precision(cls, precision: str) -> Thresholds:
        p = precision.lower()
        if p == "bf16":
            return cls.bf16()
        if p in ("fp16", "mixed", "half"):
            return cls.fp16()
        if p in ("fp32", "float", "full"):
            return cls.fp32()
        raise ThresholdError(f"unknown precision {precision!r}; use fp16 or fp32")

    def with_overrides(self, overrides: Iterable[str] | Mapping[str, float | None]) -> Thresholds:
        """Copy with ``NAME=VALUE`` strings (CLI ``--threshold``) or a name->value mapping."""
        pairs: list[tuple[str, float | None]]
        if isinstance(overrides, Mapping):
            pairs = [(_canonical(k), v) for k, v in overrides.items()]
        else:
            pairs = [parse_threshold(s) for s in overrides]
        if not pairs:
            return self
        return dataclasses.replace(self, **dict(pairs))

    def to_dict(self) -> dict[str, Any]:
        """{"preset": ..., name: {"min"|"max": value}} for enabled checks only."""
        d: dict[str, Any] = {"preset": self.preset}
        for name, lim in _LIMITS.items():
            v = getattr(self, name)
            if v is not None:
                d[name] = {lim.kind: _json_value(float(v))}
        return d


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _LIMITS:
        raise ThresholdError(
            f"unknown threshold {name!r}; known: {', '.join(_LIMITS)} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
        )
    return key


def parse_threshold(text: str) -> tuple[str, float | None]:
    """Parse ``NAME=VALUE`` (e.g. ``snr_db=45``, ``max_abs=1e-3``, ``pesq=off``)."""
    if "=" not in text:
        raise ThresholdError(f"threshold {text!r} is not NAME=VALUE (e.g. snr_db=45)")
    name, _, raw = text.partition("=")
    key = _canonical(name)
    raw = raw.strip()
    if raw.lower() in _OFF:
        return key, None
    try:
        value = float(raw)
    except ValueError:
        raise ThresholdError(
            f"threshold {text!r} has a non-numeric value; use a number or 'off'"
        ) from None
    if not math.isfinite(value):
        raise ThresholdError(f"threshold {text!r} must be finite; use 'off' to disable a check")
    return key, value


@dataclass(frozen=True)
class Failure:
    """One violated threshold: which metric, its value, the limit and which way it failed."""

    metric: str
    value: float | int | None
    limit: float
    kind: str  # "min" or "max"
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_value(v) for k, v in dataclasses.asdict(self).items()}

    def __str__(self) -> str:
        return self.message


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def evaluate(metrics: AudioMetrics, thresholds: Thresholds) -> list[Failure]:
    """Every threshold ``metrics`` violates (empty list = pass). Non-finite values always fail."""
    failures: list[Failure] = []
    for name, lim in _LIMITS.items():
        limit = getattr(thresholds, name)
        if limit is None:
            continue
        limit = float(limit)
        if name == "length_mismatch":
            value = metrics.length_mismatch
            if metrics.batch_mismatch:
                what = (f"candidate batch {metrics.candidate_batch} != reference batch "
                        f"{metrics.reference_batch}")
            elif abs(value) > limit and value < 0:
                what = f"candidate is {-value} samples shorter than the reference (truncated)"
            elif abs(value) > limit:
                what = f"candidate is {value} samples longer than the reference"
            else:
                continue
            failures.append(Failure(name, value, limit, "max",
                                    f"length_mismatch: {what}; allowed {int(limit)} samples"))
            continue
        value = getattr(metrics, lim.metric)
        if value is None:  # not applicable (PESQ at 24 kHz, log-mel without a config)
            continue
        unit = f" {lim.unit}" if lim.unit and lim.unit != "samples" else ""
        op = ">=" if lim.kind == "min" else "<="
        required = f"required {op} {_fmt(limit)}{unit}"
        if isinstance(value, float) and math.isnan(value):
            failures.append(Failure(name, None, limit, lim.kind,
                                    f"{name}: not computable (NaN), {required}"))
            continue
        if value < limit if lim.kind == "min" else value > limit:
            failures.append(Failure(name, value, limit, lim.kind,
                                    f"{name} = {_fmt(value)}{unit}, {required}"))
    return failures


__all__ = [
    "AudioMetrics",
    "Failure",
    "SNR_CAP_DB",
    "Segment",
    "StftResolution",
    "ThresholdError",
    "Thresholds",
    "compare_audio",
    "evaluate",
    "multi_resolution_stft",
    "parse_threshold",
    "pesq_score",
    "snr_db",
    "stft_resolutions",
    "worst_segments",
]
