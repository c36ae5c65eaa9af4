"""User-facing errors.

Every error a user can cause (a bad path, a corrupt checkpoint, a mel with NaN, an engine built
for another GPU) is raised as a ``HifitrtError`` whose message is one readable line saying what
is wrong and what to do. The CLI prints that line and exits non-zero without a traceback, so
nothing else needs to be caught specially.
"""
from __future__ import annotations


class HifitrtError(Exception):
    """Base class of every error meant for the user (one-line message)."""

    exit_code = 2


class SourceError(HifitrtError):
    """The vocoder source cannot be found, read or understood."""


class SourceChangedError(HifitrtError):
    """The vocoder the manifest points at is not the one the engine was built from."""


class FixtureError(HifitrtError):
    """The speech fixture directory is missing or incomplete."""


class ExportError(HifitrtError):
    """ONNX export or precision planning failed."""


class ParityError(HifitrtError):
    """An artifact does not sound like the PyTorch reference (a measured check failed)."""

    exit_code = 1


class EngineError(HifitrtError):
    """An engine cannot be built, verified or loaded on this machine."""


class InputError(HifitrtError):
    """A mel spectrogram given for vocoding is malformed (channels, NaN/Inf, empty)."""


class ServingError(HifitrtError):
    """A model repository or server cannot be written, configured or started (HTTP service, Triton)."""


class OutputError(HifitrtError):
    """An output path cannot be written safely (a directory, read-only, not a regular file)."""


class ThresholdError(HifitrtError):
    """A ``--threshold NAME=VALUE`` option is malformed or names an unknown metric."""
