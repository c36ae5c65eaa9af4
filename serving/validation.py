"""Checking what clients send before it reaches a batch.

Why here and not only in the engine: one bad mel in a coalesced batch would fail every request
batched with it, so each request is checked on its own first: ``.npy`` only (never pickle),
float32/float16, [channels, frames], finite, within the frame limit.
"""
from __future__ import annotations

import io

import numpy as np

from .errors import bad_request, too_large


def parse_npy(body: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes, read with ``allow_pickle=False``; 400 for anything else."""
    if not body:
        raise bad_request("empty body: send one mel as .npy bytes (numpy.save), float32 [channels, frames]")
    if not body.startswith(b"\x93NUMPY"):
        raise bad_request("body is not a .npy file (numpy.save format): send one mel, float32 [channels, frames]")
    try:
        return np.lib.format.read_array(io.BytesIO(body), allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise bad_request("the .npy holds Python objects (pickle), which are never loaded; "
                              "send a float32 array") from exc
        raise bad_request(f"cannot read the .npy body: {exc}") from exc
    except Exception as exc:  # truncated or corrupt header/data
        raise bad_request(f"cannot read the .npy body: {exc}") from exc


def check_mel(arr: np.ndarray, channels: int, max_frames: int | None) -> np.ndarray:
    """float32 C-contiguous [channels, frames] mel, or an ApiError naming what is wrong."""
    if arr.dtype not in (np.float32, np.float16):
        raise bad_request(f"mel dtype is {arr.dtype}; send float32 (or float16)")
    if arr.ndim != 2:
        raise bad_request(f"mel has shape {list(arr.shape)}; send one mel [channels, frames]")
    if arr.shape[0] != channels:
        raise bad_request(f"mel has {arr.shape[0]} channels, this voice expects {channels}")
    frames = arr.shape[1]
    if frames == 0:
        raise bad_request("mel has 0 frames; send at least one frame")
    if max_frames is not None and frames > max_frames:
        raise too_large(f"mel has {frames} frames, the limit is {max_frames} (--max-frames); split it")
    mel = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(mel)
    if not finite.all():
        bad_frames = np.nonzero(~finite.all(axis=0))[0]
        kind = "NaN" if np.isnan(mel).any() else "Inf"
        raise bad_request(f"mel contains {kind} values in {len(bad_frames)} frame(s), first at frame {bad_frames[0]}")
    return mel


def choose(value: str | None, allowed: tuple[str, ...], what: str) -> str:
    """A query/JSON choice, default the first allowed value; 400 naming the choices otherwise."""
    if value is None:
        return allowed[0]
    if value not in allowed:
        raise bad_request(f"{what}={value!r} is not supported; use one of {', '.join(allowed)}")
    return value


def parse_bool(value: str | None, what: str) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad_request(f"{what}={value!r}: use true or false")


__all__ = ["parse_npy", "check_mel", "choose", "parse_bool"]
