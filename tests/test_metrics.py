"""Audio parity metrics on real (fixture) speech: known error levels give known numbers."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hifitrt.errors import HifitrtError, InputError
from hifitrt.export.mel import mel_config_for
from hifitrt.validation.metrics import (
    SNR_CAP_DB,
    ThresholdError,
    Thresholds,
    compare_audio,
    evaluate,
    multi_resolution_stft,
    parse_threshold,
    snr_db,
    stft_resolutions,
    worst_segments,
)
from hifitrt.validation.synthetic_audio import engine_like, speech_like

SPEECH_DIR = Path(__file__).resolve().parent.parent / "data" / "speech"
SR = 16000


def _speech(name: str = "cmn_tianqi") -> np.ndarray:
    """A real 16 kHz speech fixture as float32 in [-1, 1]; synthetic speech if absent."""
    from scipy.io import wavfile

    path = SPEECH_DIR / f"{name}.wav"
    if not path.exists():
        candidates = sorted(SPEECH_DIR.glob("*.wav"))
        path = candidates[0] if candidates else None  # type: ignore[assignment]
    if path is None:
        return speech_like(SR, 2.0, seed=3)
    sr, data = wavfile.read(path)
    assert sr == SR, f"{path} is {sr} Hz, expected {SR}"
    return data.astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return _speech()


def _white_noise_at(x: np.ndarray, rel_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(x.shape)
    n *= np.sqrt(np.sum(x.astype(np.float64) ** 2) / np.sum(n ** 2) * 10 ** (rel_db / 10))
    return (x + n).astype(np.float32)


def test_snr_of_white_noise_at_minus_40_db_is_40_db(speech):
    m = compare_audio(speech, _white_noise_at(speech, -40.0), SR, with_pesq=False)
    assert m.snr_db == pytest.approx(40.0, abs=0.05)
    assert m.nonfinite_count == 0 and m.length_mismatch == 0


def test_snr_matches_the_definition_and_polygraphy(speech):
    from polygraphy.comparator import IterationResult, SnrCompareFunc
    from polygraphy.logger import G_LOGGER

    cand = engine_like(speech, 33.0, seed=5)
    ref64, cand64 = speech.astype(np.float64), cand.astype(np.float64)
    expected = 10 * math.log10(np.sum(ref64 ** 2) / np.sum((ref64 - cand64) ** 2))
    assert snr_db(ref64, cand64) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(33.0, abs=0.01)
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):  # `polygraphy run --compare-func snr` agrees
        result = SnrCompareFunc(snr_threshold=-math.inf)(
            IterationResult({"wav": ref64}, runner_name="ref"), IterationResult({"wav": cand64}, runner_name="cand"))
    assert snr_db(ref64, cand64) == pytest.approx(float(result["wav"].snr), abs=1e-6)


def test_one_nan_rule_for_snr_and_log_mel_l1(speech):
    from hifitrt.export.mel import mel_config_for
    from hifitrt.export.parity import log_mel_l1

    bad = speech.copy()
    bad[100] = np.nan
    assert snr_db(speech, bad) == -SNR_CAP_DB
    assert log_mel_l1(speech, bad, mel_config_for(SR, SR // 100, 80)) == math.inf
    m = compare_audio(speech, bad, SR, with_pesq=False)  # the report counts NaN, scores the rest
    assert m.nan_count == 1 and m.snr_db > 40


def test_identical_signals_pass_fp16_and_fp32(speech):
    m = compare_audio(speech, speech.copy(), SR)
    assert m.snr_db == SNR_CAP_DB
    assert m.max_abs_error == 0.0 and m.mean_abs_error == 0.0
    assert m.log_mel_l1 == 0.0
    assert m.mrstft == pytest.approx(0.0, abs=1e-6)
    assert m.pesq is not None and m.pesq > 4.5  # P.862.2 maximum is ~4.64
    assert evaluate(m, Thresholds.fp16()) == []
    assert evaluate(m, Thresholds.fp32()) == []


def test_silent_reference_definitions():
    zeros = np.zeros(SR // 2, np.float32)
    assert compare_audio(zeros, zeros, SR).snr_db == SNR_CAP_DB
    m = compare_audio(zeros, zeros + 1e-3, SR)
    assert m.snr_db == -SNR_CAP_DB
    assert m.pesq is None and "silence" in (m.pesq_note or "")
    assert [f.metric for f in evaluate(m, Thresholds.fp16())][0] == "snr_db"


def test_fp16_grade_error_fails_fp32_on_max_abs_only(speech):
    m = compare_audio(speech, engine_like(speech, 60.0), SR, with_pesq=False)
    assert evaluate(m, Thresholds.fp16()) == []
    failures = evaluate(m, Thresholds.fp32())
    assert [f.metric for f in failures] == ["max_abs_error"]
    f = failures[0]
    assert f.value == pytest.approx(m.max_abs_error) and f.limit == 1e-4 and f.kind == "max"
    assert "max_abs_error" in f.message and "<= 0.0001" in f.message


def test_low_snr_fails_on_snr_with_value_and_limit(speech):
    m = compare_audio(speech, engine_like(speech, 30.0), SR, with_pesq=False)
    failures = {f.metric: f for f in evaluate(m, Thresholds.fp16())}
    assert "snr_db" in failures
    assert failures["snr_db"].value == pytest.approx(30.0, abs=0.01)
    assert failures["snr_db"].limit == 40.0 and failures["snr_db"].kind == "min"


def test_hiss_in_silence_passes_snr_but_fails_log_mel(speech):
    # Broadband noise 45 dB down is fine by SNR but fills the quiet mel bins: log-mel catches it.
    m = compare_audio(speech, _white_noise_at(speech, -45.0), SR, with_pesq=False)
    assert m.snr_db > 44.9
    assert [f.metric for f in evaluate(m, Thresholds.fp16())] == ["log_mel_l1"]


def test_log_mel_uses_the_vocoders_mel_config(speech):
    cand = (speech * 1.01).astype(np.float32)  # +1 % gain = ln(1.01) in every loud mel bin
    own = compare_audio(speech, cand, SR, mel_cfg=mel_config_for(SR, 160, 80), with_pesq=False)
    default = compare_audio(speech, cand, SR, with_pesq=False)
    assert own.log_mel_l1 == default.log_mel_l1
    assert 0.5 * math.log(1.01) < own.log_mel_l1 <= math.log(1.01) + 1e-4


def test_nan_and_inf_are_counted_and_fail(speech):
    cand = speech.copy()
    cand[1000] = np.nan
    cand[2000:2003] = np.inf
    m = compare_audio(speech, cand, SR, with_pesq=False)
    assert (m.nan_count, m.inf_count, m.nonfinite_count) == (1, 3, 4)
    # The rest stays measurable: bad samples count as zeros.
    assert math.isfinite(m.snr_db) and m.snr_db < SNR_CAP_DB
    failures = evaluate(m, Thresholds.fp16())
    assert "nonfinite_count" in [f.metric for f in failures]
    assert evaluate(m, Thresholds.fp32())[-1].metric in ("nonfinite_count", "max_abs_error")
    assert m.to_dict()["nonfinite_count"] == 4


def _ends_in_speech(x: np.ndarray, tail: int = 160) -> np.ndarray:
    """``x`` cut right after its loudest ``tail`` samples, so a truncation removes speech."""
    energy = np.convolve(x.astype(np.float64) ** 2, np.ones(tail), mode="valid")
    return x[: int(np.argmax(energy)) + tail].copy()


def test_truncated_candidate_is_a_length_mismatch_not_trimmed(speech):
    speech = _ends_in_speech(speech)
    good = engine_like(speech, 50.0)
    full = compare_audio(speech, good, SR, with_pesq=False)
    cut = compare_audio(speech, good[:-160], SR, with_pesq=False)
    assert cut.length_mismatch == -160
    assert cut.candidate_samples == len(speech) - 160
    # Missing samples count as error: the SNR must drop, not stay at the untruncated value.
    assert cut.snr_db < full.snr_db
    failures = {f.metric: f for f in evaluate(cut, Thresholds.fp16())}
    assert "length_mismatch" in failures and "truncated" in failures["length_mismatch"].message
    assert failures["length_mismatch"].value == -160
    assert {f.metric for f in evaluate(cut, Thresholds.fp32())} >= {"length_mismatch"}
    longer = compare_audio(speech, np.concatenate([good, good[:10]]), SR, with_pesq=False)
    assert longer.length_mismatch == 10
    assert "longer" in evaluate(longer, Thresholds.fp16())[-1].message


def test_batch_is_measured_per_item_and_aggregated_worst_case(speech):
    x = speech[: SR]
    ref = np.stack([x, x, x])[:, None, :]
    cand = np.stack([engine_like(x, 55.0, seed=1), engine_like(x, 35.0, seed=2),
                     engine_like(x, 50.0, seed=3)])[:, None, :]
    m = compare_audio(ref, cand, SR, with_pesq=False)
    assert len(m.items) == 3 and m.worst_item == 1
    assert m.snr_db == pytest.approx(min(i.snr_db for i in m.items))
    assert m.snr_db == pytest.approx(35.0, abs=0.01)
    assert m.max_abs_error == max(i.max_abs_error for i in m.items)
    assert m.reference_shape == (3, 1, SR)
    short_batch = compare_audio(ref, cand[:2], SR, with_pesq=False)
    assert short_batch.batch_mismatch
    msg = [f.message for f in evaluate(short_batch, Thresholds.fp16())
           if f.metric == "length_mismatch"]
    assert msg and "batch 2 != reference batch 3" in msg[0]


def test_pesq_on_16k_speech(speech):
    clean = compare_audio(speech, speech, SR)
    noisy = compare_audio(speech, _white_noise_at(speech, -20.0), SR)
    assert clean.pesq_mode == "wb" and noisy.pesq is not None
    assert 1.0 < noisy.pesq < clean.pesq


def test_pesq_not_applicable_is_none_with_a_reason(speech):
    at24k = compare_audio(speech, speech, 24000, with_pesq=True)
    assert at24k.pesq is None and "24000" in at24k.pesq_note
    short = compare_audio(speech[:1600], speech[:1600], SR)
    assert short.pesq is None and "0.25" in short.pesq_note
    # A PESQ that cannot be computed never fails the check, even when a minimum is set.
    assert evaluate(at24k, Thresholds.fp16().with_overrides(["pesq=3.5"])) == []


def test_mrstft_resolutions_and_monotonic_in_error(speech):
    res24 = stft_resolutions(24000)
    assert [(r.n_fft, r.hop, r.win) for r in res24] == [(1024, 120, 600), (2048, 240, 1200),
                                                         (512, 50, 240)]
    assert all(r.n_fft >= r.win for r in stft_resolutions(16000) + stft_resolutions(44100))
    x = speech.astype(np.float64)
    small = sum(multi_resolution_stft(x, engine_like(speech, 50.0).astype(np.float64), SR))
    large = sum(multi_resolution_stft(x, engine_like(speech, 25.0).astype(np.float64), SR))
    assert 0 < small < large
    voiced = _ends_in_speech(speech)[-100:].astype(np.float64)
    tiny = multi_resolution_stft(voiced, voiced * 0.5, SR)  # shorter than every n_fft
    assert all(math.isfinite(v) and v > 0 for v in tiny)


def test_worst_segments_find_an_injected_click(speech):
    cand = engine_like(speech, 50.0)
    at = int(1.234 * SR)
    cand[at:at + 40] += 0.3
    segs = worst_segments(speech, cand, SR, window_ms=20.0, top=5)
    assert segs[0].start_s <= 1.234 < segs[0].end_s + 0.0025
    assert segs[0].max_abs_error > 0.25
    assert all(a.error_db >= b.error_db for a, b in zip(segs, segs[1:]))


def test_reference_with_nan_is_an_input_error(speech):
    ref = speech.copy()
    ref[5] = np.nan
    with pytest.raises(InputError, match="reference waveform"):
        compare_audio(ref, speech, SR)


def test_parse_threshold():
    assert parse_threshold("snr_db=45") == ("snr_db", 45.0)
    assert parse_threshold("max_abs=1e-3") == ("max_abs_error", 1e-3)
    assert parse_threshold("PESQ=off") == ("pesq", None)
    t = Thresholds.fp16().with_overrides(["snr=45", "log_mel_l1=off"])
    assert t.snr_db == 45.0 and t.log_mel_l1 is None and t.nonfinite_count == 0
    assert t.to_dict()["snr_db"] == {"min": 45.0} and "log_mel_l1" not in t.to_dict()
    for bad in ("snr_db", "snr_db=abc", "loudness=3", "snr_db=inf"):
        with pytest.raises(ThresholdError) as exc:
            parse_threshold(bad)
        assert isinstance(exc.value, HifitrtError) and "\n" not in str(exc.value)
    assert Thresholds.for_precision("fp32").max_abs_error == 1e-4
