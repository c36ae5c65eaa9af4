"""Shape profiles: parsing, validation, selection and (de)serialization."""
from __future__ import annotations

import json

import pytest

from hifitrt.engines.profiles import (
    DEFAULT_PROFILES,
    ShapeProfile,
    default_profiles,
    parse_profile,
    profile_for_shape,
    profiles_from_list,
    profiles_to_list,
    validate_profiles,
)
from hifitrt.errors import EngineError


def test_parse_fixed_profile():
    p = parse_profile("fixed:2x256")
    assert (p.batch_min, p.batch_opt, p.batch_max, p.frames_min, p.frames_opt, p.frames_max) == (2, 2, 2, 256, 256, 256)
    assert p.is_fixed and p.name == "b2-2-2_f256-256-256"


def test_parse_dynamic_profile_uses_min_batch_as_opt():
    p = parse_profile("short=dynamic:1-8x8-64-128")
    assert (p.batch_min, p.batch_opt, p.batch_max) == (1, 1, 8)
    assert (p.frames_min, p.frames_opt, p.frames_max) == (8, 64, 128)
    assert p.name == "short"
    assert parse_profile(" DYNAMIC: 1-4-8 x 8-64-128 ").batch_opt == 4


@pytest.mark.parametrize("profile", list(DEFAULT_PROFILES) + [parse_profile("fixed:1x100"), parse_profile("dynamic:2-3-5x9-9-10")])
def test_text_round_trip(profile):
    assert parse_profile(profile.to_text()) == profile


@pytest.mark.parametrize("text", ["", "fixed:1", "fixed:1x2x3", "dynamic:1-8x8-128", "static:1x2", "dynamic:a-bx1-2-3", "bad name=fixed:1x2"])
def test_unreadable_profile_text(text):
    with pytest.raises(EngineError):
        parse_profile(text)


def test_defaults_are_valid_contiguous_and_cover_25_seconds():
    validate_profiles(DEFAULT_PROFILES, min_frames=8)
    assert [p.name for p in DEFAULT_PROFILES] == ["short", "medium", "long"]
    for a, b in zip(DEFAULT_PROFILES, DEFAULT_PROFILES[1:]):
        assert a.frames_max == b.frames_min  # no frame count falls between profiles
    assert DEFAULT_PROFILES[-1].frames_max * 300 / 24000 >= 25  # 24 kHz, hop 300


def test_default_profiles_respect_a_vocoder_minimum():
    raised = default_profiles(min_frames=20)
    validate_profiles(raised, min_frames=20)
    assert raised[0].frames_min == 20 and raised[1:] == DEFAULT_PROFILES[1:]


@pytest.mark.parametrize(
    "profiles, min_frames, inputs, message",
    [
        ([], 1, ["mel"], "no shape profiles"),
        ([ShapeProfile(1, 1, 8, 64, 8, 128)], 1, ["mel"], "min <= opt <= max"),
        ([ShapeProfile(2, 1, 8, 8, 64, 128)], 1, ["mel"], "min <= opt <= max"),
        ([ShapeProfile(0, 1, 8, 8, 64, 128)], 1, ["mel"], "positive integer"),
        ([ShapeProfile(1, 1, 8, 8, 64, 128.0)], 1, ["mel"], "positive integer"),
        ([ShapeProfile(1, 1, 8, 8, 64, 128)], 16, ["mel"], "at least 16"),
        ([ShapeProfile(1, 1, 8, 8, 64, 128)], 1, ["spec"], "input named 'mel'"),
        ([ShapeProfile(1, 1, 1, 8, 8, 8, "x"), ShapeProfile(1, 1, 1, 9, 9, 9, "x")], 1, ["mel"], "two shape profiles"),
    ],
)
def test_validation_errors(profiles, min_frames, inputs, message):
    with pytest.raises(EngineError, match=message):
        validate_profiles(profiles, min_frames, inputs)


def test_tightest_profile_is_chosen():
    profiles = DEFAULT_PROFILES
    assert profile_for_shape(profiles, 1, 8) == 0
    assert profile_for_shape(profiles, 1, 128) == 0  # shared boundary goes to the shorter profile
    assert profile_for_shape(profiles, 1, 129) == 1
    assert profile_for_shape(profiles, 4, 768) == 1
    assert profile_for_shape(profiles, 4, 769) == 2
    assert profile_for_shape(profiles, 8, 1000) is None  # long allows batch 4 only
    assert profile_for_shape(profiles, 1, 2049) is None
    assert profile_for_shape(profiles, 1, 7) is None
    overlapping = [ShapeProfile(1, 1, 8, 1, 100, 1000, "wide"), ShapeProfile(1, 1, 1, 1, 50, 100, "narrow")]
    assert profile_for_shape(overlapping, 1, 60) == 1 and profile_for_shape(overlapping, 2, 60) == 0


def test_dict_round_trip_through_json():
    data = json.loads(json.dumps(profiles_to_list(DEFAULT_PROFILES)))
    assert profiles_from_list(data) == DEFAULT_PROFILES
    with pytest.raises(EngineError, match="lacks frames_max"):
        ShapeProfile.from_dict({"batch_min": 1, "batch_opt": 1, "batch_max": 1, "frames_min": 1, "frames_opt": 1})
    with pytest.raises(EngineError, match="not an integer"):
        ShapeProfile.from_dict({**DEFAULT_PROFILES[0].to_dict(), "frames_max": "128"})


def test_shapes_and_from_shapes_are_inverse():
    p = DEFAULT_PROFILES[1]
    assert p.shapes(80) == ((1, 80, 128), (1, 80, 384), (8, 80, 768))
    assert ShapeProfile.from_shapes(*p.shapes(80), name="medium") == p
