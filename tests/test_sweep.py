"""Sweep planning and speech inputs (no engine needed: fast)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hifitrt.engines.profiles import ShapeProfile
from hifitrt.errors import InputError
from hifitrt.validation.sweep import fixture_speech, odd_prime_between, sweep_points, user_speech


def test_points_cover_min_opt_max_odd_and_both_batches() -> None:
    pts = sweep_points([ShapeProfile(1, 1, 4, 8, 64, 128, "short")])
    by_batch = {b: [(p.label, p.frames) for p in pts if p.batch == b] for b in (1, 4)}
    expected = [("min", 8), ("min+1", 9), ("opt", 64), ("prime", 97), ("max", 128)]
    assert by_batch[1] == expected and by_batch[4] == expected
    assert len({p.key for p in pts}) == len(pts)


def test_fixed_profile_collapses_and_prime_helper() -> None:
    pts = sweep_points([ShapeProfile(2, 2, 2, 50, 50, 50, "fixed")])
    assert [(p.batch, p.frames) for p in pts] == [(2, 50)]
    assert odd_prime_between(64, 128) == 97
    assert odd_prime_between(10, 11) is None


def _spec(**kw):
    base = dict(sample_rate=16000, hop=160, n_mels=80, in_channels=80, nsf=False)
    base.update(kw)
    return SimpleNamespace(**base)


def test_fixture_speech_is_real_speech_in_the_vocoder_space() -> None:
    default = fixture_speech(_spec())
    assert "mels" in default.origin
    kantts = fixture_speech(_spec(sample_rate=24000, hop=240, nsf=True, in_channels=82))
    mel = next(iter(kantts.utterances.values()))
    assert mel.shape[0] == 82  # 80 mels + pitch + uv
    # 16 kHz fixtures resampled to 24 kHz and framed at hop 240 keep the duration (10 ms frames)
    first = next(iter(default.utterances.values()))
    assert abs(mel.shape[1] - first.shape[1]) <= 1
    a, _ = default.crop(300, index=0)
    b, _ = default.crop(300, index=1)
    assert a.shape == (80, 300) and not np.array_equal(a, b)
    assert np.array_equal(a, default.crop(300, index=0)[0])


def test_user_mel_with_wrong_channels_is_refused(tmp_path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((79, 20), np.float32))
    with pytest.raises(InputError, match=r"needs \[80, frames\]"):
        user_speech([path], _spec())
