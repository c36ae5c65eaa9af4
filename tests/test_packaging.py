"""The wheel `pip install .` builds holds every subpackage and the speech fixtures.

FP16 calibration and parity need real speech mels; a non-editable install that lacked them
would silently calibrate on synthetic mels. This builds the wheel for real (pip, the
pyproject backend) and checks its file list against tests/fixtures/fixtures.json.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from hifitrt.export.fixtures import fixture_dir, fixture_index

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_packages_and_speech_fixtures(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("hifitrt-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("", "cli/", "export/", "engines/", "runtime/", "validation/", "serving/"):
        assert f"hifitrt/{package}__init__.py" in names
    assert "hifitrt/cli/__init__.py" in names
    fixtures = fixture_index()["fixtures"]
    assert len(fixtures) == 6
    expected = {"hifitrt/tests/fixtures/fixtures.json"}
    for f in fixtures:
        expected |= {f"hifitrt/tests/fixtures/speech/{f['name']}.wav",
                     f"hifitrt/tests/fixtures/mels/{f['name']}.npy"}
    assert expected <= names, sorted(expected - names)
    assert all((fixture_dir() / n.removeprefix("hifitrt/tests/fixtures/")).is_file() for n in expected)
