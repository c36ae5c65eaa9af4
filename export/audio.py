"""WAV reading and writing with the standard library (16-bit PCM, mono), written atomically."""
from __future__ import annotations

import os
import tempfile
import wave
from pathlib import Path

import numpy as np

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
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio, rate


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM mono; clips to [-1, 1) and replaces the file atomically."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 32767 / 32768) * 32768).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)
    try:
        with wave.open(tmp, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            w.writeframes(pcm.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
