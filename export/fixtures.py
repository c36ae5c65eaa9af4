"""The repo's speech fixtures: real Mandarin speech and its mels for the default vocoder.

Parity, calibration and benchmarks must run on speech-like mels (voicing, pauses, silence),
never on random tensors, so every package can ask for the same small set here. The files are
made by scripts/make_fixtures.py and described in data/fixtures.json (the package's ``data``
folder: library data, not test data, so it ships in every install).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict

import numpy as np

from ..errors import FixtureError

__all__ = ["fixture_dir", "fixture_index", "fixture_mels", "fixture_wavs", "FixtureError"]

ENV_VAR = "HIFITRT_FIXTURES"


def fixture_dir() -> Path:
    """Directory holding fixtures.json, speech/ and mels/.

    ``$HIFITRT_FIXTURES`` wins (another fixture set); otherwise the package's ``data`` folder:
    repo/export/fixtures.py -> repo/data in a checkout or editable install,
    site-packages/hifitrt/data in a wheel (setup.cfg ships it as package data).
    """
    env = os.environ.get(ENV_VAR)
    if env:
        d = Path(env).expanduser()
    else:
        d = Path(__file__).resolve().parent.parent / "data"
    if not (d / "fixtures.json").is_file():
        raise FixtureError(
            f"no speech fixtures at {d} (fixtures.json missing); set {ENV_VAR} to the "
            "data directory of a hifitrt checkout or run scripts/make_fixtures.py"
        )
    return d


def fixture_index() -> dict:
    """Parsed fixtures.json (sample_rate, mel_config, fixtures: [{name, text, ...}])."""
    return json.loads((fixture_dir() / "fixtures.json").read_text(encoding="utf-8"))


def _entries() -> list:
    # Sorted by length so callers can take "the shortest" / "the longest" by position.
    return sorted(fixture_index()["fixtures"], key=lambda e: (e["samples"], e["name"]))


def fixture_mels() -> Dict[str, np.ndarray]:
    """{name: float32 [80, T] mel for the default vocoder}, shortest first."""
    d = fixture_dir()
    out: Dict[str, np.ndarray] = {}
    for e in _entries():
        mel = np.load(d / e["mel"], allow_pickle=False)
        out[e["name"]] = np.ascontiguousarray(mel, dtype=np.float32)
    return out


def fixture_wavs() -> Dict[str, np.ndarray]:
    """{name: float32 mono waveform in [-1, 1] at 16 kHz}, shortest first.

    Each has exactly ``frames * 160`` samples, so it lines up with the vocoder's output for
    the matching mel.
    """
    from scipy.io import wavfile  # local: only this function needs scipy

    d = fixture_dir()
    out: Dict[str, np.ndarray] = {}
    for e in _entries():
        _, x = wavfile.read(d / e["wav"])
        if x.dtype != np.int16:
            raise FixtureError(f"{d / e['wav']} is {x.dtype}, expected int16; regenerate it")
        out[e["name"]] = x.astype(np.float32) / 32768.0
    return out
