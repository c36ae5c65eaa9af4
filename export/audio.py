"""Audio and mel file I/O: 16-bit PCM mono WAV (standard library) and mel ``.npy`` files.

Every malformed input file is an :class:`InputError` with one line; outputs go through
:func:`hifitrt.atomic.write_output` (atomic for regular files, written through for devices and
FIFOs, never replacing what the user did not name).
"""
from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np

from ..atomic import write_output
from ..errors import InputError


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate; stereo is averaged."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise InputError(f"{path}: not a readable PCM wav ({exc})") from None
    if width != 2:
        raise InputError(f"{path}: {8 * width}-bit wav; convert to 16-bit PCM (e.g. sox in.wav -b 16 out.wav)")
    if channels < 1 or rate < 1:
        raise InputError(f"{path}: header says {channels} channels at {rate} Hz; not a usable wav")
    whole = len(raw) - len(raw) % (width * channels)
    if whole != len(raw):
        # The data chunk ends mid-sample (a cut download or a killed writer): say so instead of
        # silently dropping bytes or failing inside numpy.
        raise InputError(f"{path}: truncated wav (the data ends in the middle of a sample); re-export it")
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio, rate


def read_mel(path: Path) -> np.ndarray:
    """A mel ``.npy`` as saved (dtype kept, so the vocoder's validation can name a wrong one).

    Pickled arrays are refused (loading them runs code); anything numpy cannot read is one line.
    """
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if magic != b"\x93NUMPY":
        raise InputError(f"{path}: not a readable .npy mel (no NumPy header); save the mel with np.save")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(f"{path}: refused, the .npy holds pickled Python objects; save a plain float array") from None
        raise InputError(f"{path}: not a readable .npy mel ({exc})") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy mel ({exc})") from None
    if not isinstance(data, np.ndarray):
        raise InputError(f"{path}: an .npz archive, not one mel array; save the mel with np.save")
    return data


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV bytes; samples are clipped to [-1, 1)."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 32767 / 32768) * 32768).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM mono to ``path`` (see :func:`hifitrt.atomic.write_output` for how)."""
    write_output(Path(path), wav_bytes(audio, sample_rate))
