"""The runner interface: one way to run a vocoder graph, whatever the backend.

Parity checks, FP16 planning, benchmarks and :class:`~hifitrt.runtime.VocoderEngine` are
written once against :class:`Runner` (Polygraphy's base runner): ``infer(mel [B, C, T]
float32) -> wav [B, 1, T*hop] float32``. It is a template method: the public :meth:`infer`
checks the input once (:func:`check_mel`), times the call, and checks the output (shape, length,
no NaN/Inf; parity measurement asks for the raw output with ``measure=True``); subclasses
implement only ``_infer``. Runners do no chunking: :class:`~hifitrt.runtime.VocoderEngine` decides shapes.

It lives at the package root, below ``export``, because the PyTorch reference runner
(:class:`hifitrt.export.reference.TorchRunner`) is used by export verification and precision
planning as well as by the runtime (imports point one way).
"""
from __future__ import annotations

import abc
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import EngineError, InputError

if TYPE_CHECKING:  # engines sits above this module (imports point one way)
    from .engines.profiles import ShapeProfile


def check_mel(mel: Any, in_channels: int | None = None, *, what: str = "mel", nsf: bool = False) -> np.ndarray:
    """``mel`` as a contiguous float32 [B, C, T] array, or an :class:`InputError` in one line.

    The one mel validation rule: a floating-point array of 3 dimensions, ``in_channels``
    channels (when known), at least one item and one frame, every value finite. NaN/Inf are
    located by frame so the user can find them in the acoustic model's output.
    """
    arr = np.asarray(mel)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what} has dtype {arr.dtype}; pass float mel values (float32)")
    if arr.ndim != 3:
        raise InputError(f"{what} has shape {list(arr.shape)}; expected [batch, channels, frames]")
    if in_channels is not None and arr.shape[1] != in_channels:
        raise InputError(f"{what} has {arr.shape[1]} channels, this vocoder expects {in_channels}"
                         + (" (mels + pitch + uv)" if nsf else "")
                         + f" (expected [batch, {in_channels}, frames])")
    if arr.shape[0] == 0 or arr.shape[2] == 0:
        raise InputError(f"{what} is empty (shape {list(arr.shape)}); pass at least one frame")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        nan = np.isnan(arr)
        kind, mask = ("NaN", nan) if nan.any() else ("Inf", bad)
        frames = np.nonzero(mask.any(axis=(0, 1)))[0]
        where = f"frame {frames[0]}" if len(frames) == 1 else f"frames {frames[0]}..{frames[-1]}"
        raise InputError(f"{what} contains {int(mask.sum())} {kind} values at {where}; fix the acoustic model output")
    return arr


class Runner(abc.ABC):
    """Runs a vocoder graph on one backend.

    ``profiles`` lists the (batch, frames) ranges the backend was built for (empty: any
    shape); ``strict_profiles`` says whether shapes outside them fail (TensorRT) or merely
    were not tuned for (ONNX Runtime, OpenVINO, torch). ``in_channels`` and ``hop``, when
    known, let :meth:`infer` check the channel count and the output length.
    """

    name: str = "runner"
    profiles: Sequence[ShapeProfile] = ()
    strict_profiles: bool = False
    in_channels: int | None = None
    hop: int | None = None

    def __init__(self) -> None:
        self.last_inference_time = 0.0

    def infer(self, mel: Any, *, measure: bool = False) -> np.ndarray:
        """float32 [B, C, T] -> float32 [B, 1, T*hop]; validated in, checked out.

        Bad input is an :class:`InputError`. Output that is not [B, 1, samples] is an
        :class:`EngineError`; so is output of the wrong length or with NaN/Inf (an FP16
        overflow on extreme input, say) unless ``measure``: parity measurement wants the output
        as the engine produced it, to count NaN/Inf and length mismatches as results.
        """
        x = check_mel(mel, self.in_channels)
        started = time.perf_counter()
        out = self._infer(x)
        self.last_inference_time = time.perf_counter() - started
        return self._check_output(out, x, measure)

    @abc.abstractmethod
    def _infer(self, mel: np.ndarray) -> np.ndarray:
        """Run a validated contiguous float32 [B, C, T] mel; return [B, 1, samples]."""

    def _check_output(self, out: Any, mel: np.ndarray, measure: bool) -> np.ndarray:
        wav = np.asarray(out, dtype=np.float32)
        shape = mel.shape
        batch, _, frames = shape
        expected = frames * self.hop if self.hop else None
        want = f"[{batch}, 1, {expected}]" if expected else f"[{batch}, 1, {frames} x hop]"
        wrong = f"the {self.name} engine returned shape {list(wav.shape)} for a mel of shape {list(shape)}, " \
                f"expected {want}: the engine does not match its vocoder; rebuild it"
        if wav.ndim != 3 or wav.shape[0] != batch or wav.shape[1] != 1:
            raise EngineError(wrong)
        if measure:
            return wav
        samples = wav.shape[2]
        if samples == 0 or (expected is not None and samples != expected) or samples % frames:
            raise EngineError(wrong)
        bad = int(np.count_nonzero(~np.isfinite(wav)))
        if bad:
            raise EngineError(
                f"the {self.name} engine produced {bad} NaN/Inf samples for a mel of shape {list(shape)} "
                f"with values {float(mel.min()):.3g}..{float(mel.max()):.3g}: the input overflows this engine; "
                "check the mel's value range (log-mel values are usually -12..3) or use an fp32 engine"
            )
        return wav

    @property
    def max_frames(self) -> int | None:
        """Longest input any profile accepts (None: unbounded)."""
        return max((p.frames_max for p in self.profiles), default=None)

    @property
    def max_batch(self) -> int | None:
        return max((p.batch_max for p in self.profiles), default=None)

    def close(self) -> None:
        """Release backend resources (idempotent)."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
