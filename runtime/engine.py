"""``VocoderEngine``: validated, shape-safe vocoding on top of any runner.

What it adds to a bare runner:

* input checks with one-line :class:`InputError` messages (channels, NaN/Inf, empty, dtype);
* shapes outside the engine's profiles are never cut: long mels are vocoded in windows with
  ``spec.left/right_context_frames`` of context on each side (the streaming machinery), large
  batches are split;
* ``batch(mels)`` of different lengths: sorted, grouped by profile, padded with the mel's
  silence value (jik876/hifi-gan#50), trimmed to ``frames * hop`` per item;
* ``stream(mel, chunk_frames)``: chunks whose concatenation equals the whole output.

Why batched items need a tail fix-up on non-causal models: a short item padded with silence to
the group's length sees silence frames after its end, while alone it sees the convolutions'
zero padding (in feature space, not mel space). Those differ by far more than fp32 tolerance
(measured ~1e-2 on the last frames), so after the padded run the last ``right_context_frames``
of each padded item are recomputed from a window ending at the item's true end, batched
together; with that, batched output equals unbatched output to float rounding.

NSF models: the harmonic source integrates pitch (a cumulative phase) over the whole
utterance, so a window starting mid-utterance would restart the phase at 0. Windows therefore
carry the phase in: the frame just before the window is included with uv = 0 (no excitation)
and a pitch chosen so its samples advance the phase by exactly the phase accumulated before
the window (mod 1); the harmonic phases are all multiples of that one integral, so one frame
fixes every harmonic.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ..engines.manifest import Manifest, verify_engine_dir
from ..engines.profiles import ShapeProfile, profile_for_shape
from ..errors import EngineError, InputError
from ..export.mel_config import mel_config_for, silence_value
from ..export.reference import TorchRunner
from ..export.spec import VocoderSpec
from ..runner import Runner, check_mel
from .loading import runner_for_engine_dir

if TYPE_CHECKING:  # export.load defines the PyTorch generators; only the type is needed here
    from ..export.load import Vocoder

log = logging.getLogger(__name__)

__all__ = ["VocoderEngine"]


class VocoderEngine:
    """A vocoder you call with mels: ``engine(mel)``, ``engine.batch(mels)``, ``engine.stream(mel)``."""

    def __init__(self, runner: Runner, spec: VocoderSpec, manifest: Manifest | None = None,
                 profiles: Sequence[ShapeProfile] | None = None) -> None:
        self.runner = runner
        if runner.hop is None:  # lets Runner.infer check every output's length
            runner.hop = int(spec.hop)
        self.spec = spec
        self.manifest = manifest
        self.profiles = tuple(profiles if profiles is not None else getattr(runner, "profiles", ()) or ())
        self.strict_profiles = bool(getattr(runner, "strict_profiles", False))
        self.hop = int(spec.hop)
        self.in_channels = int(spec.in_channels)
        self.left = int(spec.left_context_frames)
        self.right = 0 if spec.causal else int(spec.right_context_frames)
        self.pad_column = self._pad_column()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def load(cls, engine_dir: str | os.PathLike[str], *, threads: int | None = None,
             **runner_kwargs: Any) -> "VocoderEngine":
        """Verify ``engine_dir`` for this machine (hashes, TensorRT version, GPU), then load it.

        ``threads``: intra-op threads for CPU backends (ONNX Runtime, OpenVINO; None: their
        default, one per core). ``runner_kwargs`` go to the backend's runner (TensorRT:
        ``trt_module``, ``device``, ``max_contexts``).
        """
        manifest = verify_engine_dir(engine_dir, for_this_machine=True, device=runner_kwargs.get("device"),
                                     trt_module=runner_kwargs.get("trt_module"))  # the GPU it will run on
        runner = runner_for_engine_dir(Path(engine_dir), manifest, threads=threads, **runner_kwargs)
        return cls(runner, manifest.spec, manifest=manifest)

    @classmethod
    def from_vocoder(cls, vocoder: Vocoder, profiles: Sequence[ShapeProfile] | None = None) -> "VocoderEngine":
        """PyTorch engine (same validation, batching and streaming code as a built engine).

        ``profiles`` bound the frames of one PyTorch call (longer mels are chunked with full
        context, so memory stays flat on any length); None: every mel in one call.
        """
        spec = vocoder.spec
        return cls(TorchRunner(vocoder.module, hop=spec.hop, in_channels=spec.in_channels), spec, profiles=profiles)

    def close(self) -> None:
        self._closed = True
        self.runner.close()

    def _require_open(self) -> None:
        if getattr(self, "_closed", False):
            raise EngineError("this VocoderEngine is closed; load the engine again (VocoderEngine.load)")

    def __enter__(self) -> "VocoderEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VocoderEngine({self.runner.name}, {self.spec.sample_rate} Hz, hop {self.hop}, {self.in_channels} ch)"

    @property
    def sample_rate(self) -> int:
        return int(self.spec.sample_rate)

    @property
    def max_frames(self) -> int | None:
        return max((p.frames_max for p in self.profiles), default=None)

    # -- public API --------------------------------------------------------------------------

    def __call__(self, mel: Any) -> np.ndarray:
        """mel [C, T] -> wav [T*hop]; [B, C, T] -> [B, T*hop] (float32)."""
        self._require_open()
        x, squeeze = self._validate(mel)
        wav = self._run(x)
        return wav[0] if squeeze else wav

    def batch(self, mels: Sequence[Any]) -> list[np.ndarray]:
        """One wav per mel ([C, T_i] each), each exactly ``T_i * hop`` samples."""
        self._require_open()
        items = []
        for i, mel in enumerate(mels):
            x, squeeze = self._validate(mel, what=f"mel {i}")
            if not squeeze and x.shape[0] != 1:
                raise InputError(f"mel {i} has shape {x.shape}: batch() takes [channels, frames] mels")
            items.append(x[0])
        out: list[np.ndarray | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: items[i].shape[1])
        for group in self._groups(order, [m.shape[1] for m in items]):
            if len(group) == 1 or self._too_long(items[group[-1]].shape[1]):
                for i in group:
                    out[i] = self._run(items[i][None])[0]
                continue
            longest = items[group[-1]].shape[1]
            stacked = np.stack([self._pad_to(items[i], longest) for i in group])
            wav = self._run(stacked)
            for row, i in enumerate(group):
                out[i] = wav[row, : items[i].shape[1] * self.hop].copy()
            if self.right > 0:
                self._fix_tails([i for i in group if items[i].shape[1] < longest], items, out)
        return out  # type: ignore[return-value]

    def stream(self, mel: Any, chunk_frames: int = 64) -> Iterator[np.ndarray]:
        """Yield wav chunks for frames [s, s+chunk_frames) whose concatenation equals ``self(mel)``."""
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)) or chunk_frames < 1:
            raise InputError(f"chunk_frames must be a whole number of frames >= 1, got {chunk_frames!r}")
        chunk_frames = int(chunk_frames)
        self._require_open()
        x, squeeze = self._validate(mel)
        if x.shape[0] != 1:
            raise InputError(f"stream() takes one mel [channels, frames], got batch {x.shape[0]}")
        total = x.shape[2]
        for s in range(0, total, chunk_frames):
            e = min(total, s + chunk_frames)
            yield self._context_run(x[0], s, e)

    # -- validation --------------------------------------------------------------------------

    def _validate(self, mel: Any, what: str = "mel") -> tuple[np.ndarray, bool]:
        """User-facing conversion (torch tensors, [C, T] mels), then the runner interface's one
        rule (:func:`hifitrt.runner.check_mel`) on the whole input, so errors name the user's
        frames and items rather than those of a chunk."""
        if hasattr(mel, "detach") and hasattr(mel, "cpu"):  # torch tensor
            if not mel.is_floating_point():
                raise InputError(f"{what} has dtype {mel.dtype}; pass float mel values (float32)")
            mel = mel.detach().cpu().float().numpy()
        arr = np.asarray(mel)
        squeeze = arr.ndim == 2
        if squeeze:
            arr = arr[None]
        elif arr.ndim != 3:
            raise InputError(f"{what} has shape {arr.shape}; expected [channels, frames] or [batch, channels, frames]")
        return check_mel(arr, self.in_channels, what=what, nsf=bool(getattr(self.spec, "nsf", False))), squeeze

    # -- planning ----------------------------------------------------------------------------

    def _pad_column(self) -> np.ndarray:
        col = np.full(self.in_channels, silence_value(mel_config_for(self.spec)), np.float32)
        if getattr(self.spec, "nsf", False):
            col[-2:] = 0.0  # pitch 0 Hz, unvoiced: no excitation, no phase advance
        return col

    def _pad_to(self, item: np.ndarray, frames: int) -> np.ndarray:
        extra = frames - item.shape[1]
        if extra <= 0:
            return item
        return np.concatenate([item, np.repeat(self.pad_column[:, None], extra, axis=1)], axis=1)

    def _too_long(self, frames: int) -> bool:
        limit = self.max_frames
        return limit is not None and frames > limit

    def _profile_index(self, frames: int) -> int:
        """The profile ``frames`` falls in by the one selection rule (:func:`profile_for_shape`);
        shorter than every profile: the one starting lowest (the mel is padded up to it); -1: none."""
        index = profile_for_shape(self.profiles, None, frames)
        if index is None and self.profiles and frames < min(p.frames_min for p in self.profiles):
            return min(range(len(self.profiles)), key=lambda i: self.profiles[i].frames_min)
        return -1 if index is None else index

    def _groups(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        groups: list[list[int]] = []
        key = None
        for i in order:
            k = ("long", i) if self._too_long(lengths[i]) else self._profile_index(lengths[i])
            if groups and k == key:
                groups[-1].append(i)
            else:
                groups.append([i])
                key = k
        return groups

    def _batch_limit(self, frames: int) -> int:
        if not self.profiles:
            return 1 << 30
        idx = self._profile_index(frames)
        fitting = [p.batch_max for p in self.profiles if p.frames_min <= frames <= p.frames_max]
        if fitting:
            return max(fitting)
        return self.profiles[idx].batch_max if idx >= 0 else 1

    def _run(self, x: np.ndarray, chunk: bool = True) -> np.ndarray:
        """[B, C, T] -> [B, T*hop] respecting profiles (split batches, chunk long mels).

        ``chunk=False`` runs a context window as it is: runners not bound to their profiles take
        a window of ``max_frames`` plus context in one call.
        """
        batch, _, frames = x.shape
        if chunk and self._too_long(frames):
            return np.stack([self._run_chunked(item) for item in x])
        limit = self._batch_limit(frames)
        if batch > limit:
            return np.concatenate([self._run(x[i:i + limit], chunk) for i in range(0, batch, limit)])
        need = self._min_frames(batch)
        if need > frames:
            padded = np.stack([self._pad_to(item, need) for item in x])
            return self._infer(padded)[:, : frames * self.hop]
        return self._infer(x)

    def _min_frames(self, batch: int) -> int:
        floor = int(getattr(self.spec, "min_frames", 1) or 1)
        if self.strict_profiles and self.profiles:
            floor = max(floor, min(p.frames_min for p in self.profiles if p.batch_max >= batch) if any(
                p.batch_max >= batch for p in self.profiles) else 1)
        return floor

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """One runner call; ``Runner.infer`` rejects wrong-length or NaN/Inf output (EngineError)."""
        return self.runner.infer(x).reshape(x.shape[0], -1)

    def _chunk_frames(self) -> int:
        """Output frames per chunk of a long mel.

        A runner bound to its profiles (TensorRT) gets windows of at most ``max_frames``, so a
        chunk is what is left after the context; others (ONNX Runtime, PyTorch) run any shape,
        so a chunk is ``max_frames`` and its window adds the full context. Either way every
        window carries the whole receptive field and chunked output equals whole output.
        """
        limit = self.max_frames
        extra = self.left + self.right + (1 if getattr(self.spec, "nsf", False) else 0)
        if limit is None:
            return 1 << 30
        if not self.strict_profiles:
            return max(limit, extra)  # at least as many new frames as context frames per window
        return max(1, limit - extra)

    def _run_chunked(self, item: np.ndarray) -> np.ndarray:
        total = item.shape[1]
        step = self._chunk_frames()
        return np.concatenate([self._context_run(item, s, min(total, s + step))
                               for s in range(0, total, step)])

    def _window(self, item: np.ndarray, s: int, e: int) -> tuple[np.ndarray, int]:
        """Input window for output frames [s, e) of ``item`` [C, T] and the offset of s in it."""
        total = item.shape[1]
        left, right = self._context_for(e - s)
        a, b = max(0, s - left), min(total, e + right)
        if getattr(self.spec, "nsf", False) and a > 0:
            a -= 1
            window = item[:, a:b].copy()
            # phase accumulated before frame a+1 in the whole utterance, in cycles (mod 1)
            pitch = item[-2, : a + 1].astype(np.float64)
            cycles = float(np.sum(pitch) * self.hop / self.spec.sample_rate) % 1.0
            window[-2, 0] = cycles * self.spec.sample_rate / self.hop
            window[-1, 0] = 0.0
            return window, s - a
        return item[:, a:b], s - a

    def _context_for(self, frames: int) -> tuple[int, int]:
        """(left, right) context for a window of ``frames`` output frames that fits the profiles.

        When the profiles are too short for the full receptive field (an engine built with tiny
        profiles), the context is shrunk to fit, with a warning: output stays complete but
        chunk seams are no longer exact.
        """
        limit = self.max_frames
        nsf = 1 if getattr(self.spec, "nsf", False) else 0
        if limit is None or not self.strict_profiles or frames + self.left + self.right + nsf <= limit:
            return self.left, self.right
        room = max(0, limit - frames - nsf)
        total = self.left + self.right
        left = min(self.left, room * self.left // total) if total else 0
        right = min(self.right, room - left)
        if not getattr(self, "_warned_short", False):  # once per engine, not once per chunk
            self._warned_short = True
            log.warning("profiles (max %d frames) cannot hold %d frames + %d frames of context: chunked "
                        "output is NOT exact; rebuild with longer profiles", limit, frames, total)
        return left, right

    def _context_run(self, item: np.ndarray, s: int, e: int) -> np.ndarray:
        window, offset = self._window(item, s, e)
        wav = self._run(window[None], chunk=self.strict_profiles)[0]
        return wav[offset * self.hop: (offset + e - s) * self.hop].copy()

    def _fix_tails(self, indices: list[int], items: list[np.ndarray], out: list[Any]) -> None:
        """Recompute the last right-context frames of padded items from windows at their true end."""
        by_len: dict[tuple[int, int], list[tuple[int, np.ndarray, int, int]]] = {}
        for i in indices:
            total = items[i].shape[1]
            s = max(0, total - self.right)
            window, offset = self._window(items[i], s, total)
            by_len.setdefault((window.shape[1], offset), []).append((i, window, s, total))
        for (_, offset), entries in by_len.items():
            wav = self._run(np.stack([w for _, w, _, _ in entries]), chunk=self.strict_profiles)
            for row, (i, _, s, total) in enumerate(entries):
                out[i][s * self.hop: total * self.hop] = wav[row, offset * self.hop: (offset + total - s) * self.hop]
