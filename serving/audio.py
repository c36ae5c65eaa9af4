"""Audio bytes on the wire: 16-bit PCM samples and the WAV header.

Why one header function for streamed and whole answers: ``/v1/vocode`` knows its length before
the first sample is vocoded (``frames * hop``), so a streamed WAV can carry the exact RIFF and
data sizes, and the streamed bytes equal the non-streamed bytes, header included, with a
header every decoder reads (strict ones such as Python's ``wave`` or Android's WebView reject
the 0xFFFFFFFF placeholder). Only when the length is unknown as the header goes out does the
header carry ``UNKNOWN_SIZE`` (0xFFFFFFFF), as OpenAI's streamed WAV does.
"""
from __future__ import annotations

import struct

import numpy as np

UNKNOWN_SIZE = 0xFFFFFFFF
WAV_HEADER_BYTES = 44
MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm"}


def to_int16(wav: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> int16 (rounded, clipped): what every answer carries."""
    return np.clip(np.rint(np.asarray(wav, dtype=np.float32) * 32767.0), -32768, 32767).astype("<i2")


def pcm_bytes(wav: np.ndarray) -> bytes:
    """Raw little-endian s16 bytes of float samples (``audio/pcm``)."""
    return to_int16(wav).tobytes()


def wav_header(sample_rate: int, samples: int | None) -> bytes:
    """44-byte RIFF/WAVE header for mono s16 audio; ``samples=None``: length unknown."""
    if samples is None:
        data_size = riff_size = UNKNOWN_SIZE
    else:
        data_size = samples * 2
        riff_size = min(UNKNOWN_SIZE, 36 + data_size)
    byte_rate = sample_rate * 2
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, byte_rate, 2, 16)
            + b"data" + struct.pack("<I", min(UNKNOWN_SIZE, data_size)))


def wav_samples(wav_bytes: bytes) -> tuple[np.ndarray, int]:
    """(int16 samples, sample rate) of a mono 16-bit PCM WAV (ModelScope's pipeline output)."""
    import io
    import wave

    with wave.open(io.BytesIO(wav_bytes)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"expected mono 16-bit WAV, got {w.getnchannels()} channels x {8 * w.getsampwidth()} bits")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()
