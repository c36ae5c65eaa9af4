"""``Manifest.profiles`` is typed in memory and the same JSON on disk.

A manifest read from an engine directory holds :class:`ShapeProfile` objects, and writing it back
gives the very same bytes and ``manifest_sha256`` seal, so engines built before the change keep
verifying, and a rewrite (``update_quick_parity``) does not change a byte that a Triton model
repository pinned by its sha256.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from hifitrt.engines.manifest import (
    INTEGRITY_FIELD,
    Manifest,
    manifest_body_digest,
    read_manifest,
    update_quick_parity,
    verify_engine_dir,
    write_manifest,
)
from hifitrt.engines.profiles import ShapeProfile
from hifitrt.errors import EngineError


def _copy(engine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "engine"
    shutil.copytree(engine, target)
    return target


def test_a_manifest_read_from_disk_holds_shape_profiles(tiny_fp32_engine: Path) -> None:
    manifest = read_manifest(tiny_fp32_engine)
    assert isinstance(manifest.profiles, tuple)
    assert len(manifest.profiles) == 2 and all(isinstance(p, ShapeProfile) for p in manifest.profiles)
    # On disk the profiles stay the JSON objects they always were, field for field.
    on_disk = json.loads((tiny_fp32_engine / "manifest.json").read_text())["profiles"]
    assert manifest.profiles == tuple(ShapeProfile(**entry) for entry in on_disk)
    assert on_disk == [p.to_dict() for p in manifest.profiles]
    assert all(list(entry) == ["batch_min", "batch_opt", "batch_max", "frames_min", "frames_opt", "frames_max",
                               "name"] for entry in on_disk)
    assert manifest.to_dict()["profiles"] == on_disk


def test_read_write_round_trip_keeps_the_sealed_json_byte_identical(tiny_fp32_engine: Path, tmp_path: Path) -> None:
    root = _copy(tiny_fp32_engine, tmp_path)
    path = root / "manifest.json"
    before = path.read_bytes()
    seal = json.loads(before)[INTEGRITY_FIELD]

    write_manifest(root, read_manifest(root))
    assert path.read_bytes() == before
    assert json.loads(path.read_bytes())[INTEGRITY_FIELD] == seal == manifest_body_digest(json.loads(before))

    # The public rewrite path (quick parity left as it was) is byte-identical too, so a
    # Triton repository that pinned the manifest's sha256 still matches.
    update_quick_parity(root, None)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(before).hexdigest()
    assert verify_engine_dir(root).profiles == read_manifest(tiny_fp32_engine).profiles


def test_json_profile_entries_passed_in_become_shape_profiles(tiny_fp32_engine: Path) -> None:
    data = read_manifest(tiny_fp32_engine).to_dict()
    rebuilt = Manifest.from_dict(data)
    assert rebuilt.profiles == read_manifest(tiny_fp32_engine).profiles
    assert rebuilt.to_dict() == data


@pytest.mark.parametrize(
    "profiles, expected",
    [
        ("short", "profiles is not a list"),
        ([{"batch_min": 1, "name": "x"}], "lacks batch_opt"),
        ([{"batch_min": 1, "batch_opt": 1, "batch_max": "2", "frames_min": 8, "frames_opt": 9, "frames_max": 10}],
         "batch_max='2' is not an integer"),
        ([7], "entry 7 is not an object"),
    ],
)
def test_a_damaged_profile_entry_is_one_clear_line(tiny_fp32_engine: Path, tmp_path: Path, profiles, expected) -> None:
    root = _copy(tiny_fp32_engine, tmp_path)
    data = json.loads((root / "manifest.json").read_text())
    data["profiles"] = profiles
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EngineError, match=expected) as info:
        read_manifest(root)
    assert "\n" not in str(info.value) and str(root / "manifest.json") in str(info.value)
