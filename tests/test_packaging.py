"""The wheel `pip install .` builds holds every subpackage and the speech data.

FP16 calibration and parity need real speech mels; a non-editable install that lacked them
would silently calibrate on synthetic mels. This builds the wheel for real (pip, the
pyproject backend) and checks its file list against data/fixtures.json. A folder with an
``__init__.py`` that setup.cfg does not list would be missing from every install, so that is
checked from the source tree too.
"""
from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

from hifitrt.export.fixtures import fixture_dir, fixture_index

REPO = Path(__file__).resolve().parent.parent
NOT_SHIPPED = {"tests", "scripts", "docs", "build", "dist"}  # checkout-only folders


def _listed_packages() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return {line.strip() for line in cfg["options"]["packages"].splitlines() if line.strip()}


def _packages_in_tree() -> set[str]:
    found = {"hifitrt"}
    for init in REPO.rglob("__init__.py"):
        rel = init.parent.relative_to(REPO)
        if not rel.parts or rel.parts[0] in NOT_SHIPPED or any(p.startswith(".") for p in rel.parts):
            continue
        found.add(".".join(("hifitrt", *rel.parts)))
    return found


def test_every_folder_with_an_init_is_a_listed_package() -> None:
    missing = _packages_in_tree() - _listed_packages()
    assert not missing, f"add to setup.cfg [options] packages (and package_dir): {sorted(missing)}"


def test_wheel_ships_packages_and_speech_data(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("hifitrt-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in sorted(_listed_packages()):
        folder = package.removeprefix("hifitrt").lstrip(".").replace(".", "/")
        assert f"hifitrt/{folder + '/' if folder else ''}__init__.py" in names, package
    fixtures = fixture_index()["fixtures"]
    assert len(fixtures) == 6
    expected = {"hifitrt/data/fixtures.json"}
    for f in fixtures:
        expected |= {f"hifitrt/data/speech/{f['name']}.wav", f"hifitrt/data/mels/{f['name']}.npy"}
    assert expected <= names, sorted(expected - names)
    assert all((fixture_dir() / n.removeprefix("hifitrt/data/")).is_file() for n in expected)
