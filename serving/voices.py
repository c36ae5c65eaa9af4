"""A served voice: one loaded engine, its micro-batcher, its admission limit, and how a mel is
cut into the windows the batcher runs.

Why every answer is vocoded in the same windows (``chunk_plan``): a streamed answer must start
early, so the first ``first_chunk_frames`` frames of a mel are vocoded as their own small
window; the rest follows as one more window, as large as possible (the engine itself chunks
anything longer than its profiles). A non-streamed answer uses the very same windows, so
streamed and non-streamed audio are the same computation and hence the same bytes. Each
window carries the vocoder's receptive field (``spec.left/right_context_frames``) on each
side, so the joined windows equal vocoding the whole mel to float rounding (at most 1 LSB in
int16). The price is the frames vocoded twice (``split_cost``): the first window's right
context, plus the rest's left context, which a first window no longer than the left context
avoids (the rest then starts at frame 0: it is the whole mel). With the default first window
of 8 frames and HiFi-GAN's 16 + 16 context that is 24 frames (0.24 s of audio at 100 frames/s)
per mel; a mel is split only when that is at most ``split_overhead`` of it (50 %: 48 frames
and more). Why small: time to first audio is the first engine call, and under load a small
first window (or a short mel, one window) keeps the first-audio lane (see ``batcher``) free;
a long first window would make new streams queue behind each other there.
``first_chunk_frames=0`` never splits. NSF voices are vocoded as one window: their harmonic
source integrates pitch from the utterance's start, which a mid-utterance window cannot know.

Batching by device (``config.batch_for_device``, unless ``--max-batch`` is given): on a GPU
windows of concurrent requests share engine calls (up to 8), which is where a GPU's
throughput comes from. On a CPU the engine is compute-bound: a batch costs what its windows
cost one after another plus the padding of mixed lengths, and while it runs a new stream's
first window waits for all of it. So a CPU voice runs one window per call: no padding, and a
first window (urgent) runs on the first-audio lane beside the windows already running,
while the workers keep arrival order. A CPU voice also runs one engine call per core, each on
one thread (``config.workers_for_device``: more throughput than one call on all cores when
the cores are busy, 7 % less on idle ones).

Streamed and non-streamed bytes are identical when the two are vocoded alike; under
concurrent load on a GPU a window may share an engine call with windows of other lengths
(padding), which can move a sample by 1 LSB, as any batched call can.
"""
from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import HifitrtError
from .batcher import MicroBatcher
from .config import ServeOptions, batch_for_device, lane_for_device, workers_for_device
from .metrics import ServiceMetrics

if TYPE_CHECKING:  # the runtime imports torch; serving loads it only when a voice is opened
    from ..runtime import VocoderEngine

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The voice already holds ``max_queue`` requests: answer 503 at once."""


@dataclass(frozen=True)
class VoiceInfo:
    """What ``GET /v1/voices`` shows about a voice."""

    name: str
    sample_rate: int
    hop: int
    in_channels: int
    backend: str
    precision: str
    digest: str
    engine_dir: Path | None

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "sample_rate": self.sample_rate, "hop": self.hop,
                "in_channels": self.in_channels, "backend": self.backend, "precision": self.precision,
                "digest": self.digest}


@dataclass(frozen=True)
class VoiceSpec:
    """A voice to load: its name (None: the engine's source name) and what to load."""

    target: str
    name: str | None = None


def load_voice_engine(spec: VoiceSpec, backend: str | None = None, workers: int = 1,
                      threads: int | None = None) -> tuple[VocoderEngine, VoiceInfo]:
    """(engine, info) for an engine directory, or with ``backend='torch'`` any vocoder source.

    ``workers``: engine calls in flight for this voice. A TensorRT engine gets exactly that many
    execution contexts (each reserves activation memory on the GPU), never one per thread.
    ``threads``: intra-op threads of one call on a CPU backend (ONNX Runtime, OpenVINO; None:
    the backend's default); PyTorch keeps its process-wide setting.
    """
    from ..engines.manifest import read_manifest
    from ..runtime import VocoderEngine

    if backend == "torch":
        from ..export.load import load_vocoder

        vocoder = load_vocoder(spec.target)
        device = "cpu"
        try:
            import torch

            if torch.cuda.is_available():
                vocoder.module.to("cuda")
                device = "cuda"
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        engine = VocoderEngine.from_vocoder(vocoder)
        name = spec.name or _source_name(spec.target)
        info = VoiceInfo(name, engine.sample_rate, int(engine.spec.hop), int(engine.spec.in_channels),
                         f"torch ({device})", "fp32", str(engine.spec.digest), None)
        return engine, info
    if backend not in (None, "engine"):
        raise HifitrtError(f"unknown backend {backend!r}: leave it out (engine directories) or use 'torch'")
    path = Path(spec.target)
    if not (path / "manifest.json").is_file():
        raise HifitrtError(f"{spec.target} is not an engine directory (no manifest.json); build one with "
                           f"`tts-build-engine build SOURCE --out DIR`, or serve a vocoder source with --backend torch")
    runner_kwargs = {"max_contexts": max(1, workers)} if read_manifest(path).backend_name == "tensorrt" else {}
    engine = VocoderEngine.load(path, threads=threads, **runner_kwargs)
    manifest = engine.manifest
    assert manifest is not None  # VocoderEngine.load always keeps the verified manifest
    source = manifest.source
    digest = (manifest.artifacts.get(manifest.engine_file) or {}).get("sha256") or manifest.onnx_digest or ""
    name = spec.name or source.get("voice") or _source_name(str(source.get("location") or path.name))
    info = VoiceInfo(name, engine.sample_rate, int(engine.spec.hop), int(engine.spec.in_channels),
                     manifest.backend_name, manifest.precision, str(digest), path.resolve())
    return engine, info


def expects_accelerator(spec: VoiceSpec, backend: str | None) -> bool:
    """Whether ``spec`` will run on a GPU, known before it is loaded (its thread and context
    counts are load-time settings); a broken target is left for ``load_voice_engine`` to name."""
    from ..engines.machine import current_device

    if backend == "torch":
        return current_device() is not None
    path = Path(spec.target)
    try:
        from ..engines.manifest import read_manifest

        backend_name = read_manifest(path).backend_name
        if backend_name == "tensorrt":
            return True
        if backend_name != "onnxruntime" or current_device() is None:
            return False
        from ..engines.onnxruntime_engine import read_session_config

        providers = read_session_config(path).providers_here(path)
    except Exception:  # noqa: BLE001 - load_voice_engine reports what is wrong with the target
        return False
    return any((p if isinstance(p, str) else p[0]) != "CPUExecutionProvider" for p in providers)


def on_accelerator(engine: VocoderEngine, info: VoiceInfo) -> bool:
    """Whether the engine runs on a GPU (TensorRT, PyTorch on CUDA, ONNX Runtime's CUDA providers)."""
    if info.backend == "tensorrt" or "cuda" in info.backend:
        return True
    providers = getattr(getattr(engine, "runner", None), "providers", None) or ()
    return any(str(p).split("ExecutionProvider")[0] in ("CUDA", "Tensorrt", "ROCM") for p in providers)


def _source_name(location: str) -> str:
    if location in ("default", ""):
        return location or "default"
    return Path(location.rstrip("/")).name.split(".")[0] or "voice"


def split_cost(first_chunk_frames: int, left: int, right: int) -> int:
    """Frames vocoded twice when a mel gets a first window of ``first_chunk_frames``.

    The first window carries ``right`` frames of context; the rest starts ``left`` frames
    before its first output frame, but never before the mel's start, so a first window no
    longer than ``left`` makes the rest the whole mel and costs only its own frames.
    """
    return right + min(first_chunk_frames, left)


def chunk_plan(frames: int, first_chunk_frames: int, whole: bool = False,
               min_split_frames: int = 0) -> list[tuple[int, int]]:
    """Output frame ranges [s, e) a mel of ``frames`` is vocoded in (see the module docstring).

    Mels shorter than ``min_split_frames`` (or than two first windows) are one window.
    """
    if whole or first_chunk_frames == 0 or frames <= 2 * first_chunk_frames or frames < min_split_frames:
        return [(0, frames)]
    return [(0, first_chunk_frames), (first_chunk_frames, frames)]


class Voice:
    """One configured voice of the service."""

    def __init__(self, engine: VocoderEngine, info: VoiceInfo, options: ServeOptions, metrics: ServiceMetrics) -> None:
        self.engine = engine
        self.info = info
        self.options = options
        self.metrics = metrics
        spec = engine.spec
        self.hop = int(spec.hop)
        self.left = int(spec.left_context_frames)
        self.right = 0 if spec.causal else int(spec.right_context_frames)
        self.whole = bool(getattr(spec, "nsf", False))
        # split only where the added context is at most split_overhead of the mel
        cost = split_cost(options.first_chunk_frames, self.left, self.right)
        self.min_split_frames = math.ceil(cost / options.split_overhead)
        accelerated = on_accelerator(engine, info)
        self.max_batch = batch_for_device(options, accelerated)
        self.workers = workers_for_device(options, accelerated)
        self.lane_workers = lane_for_device(options, accelerated)
        self.batcher: MicroBatcher | None = None
        self.pending = 0  # requests admitted and not yet answered

    @property
    def name(self) -> str:
        return self.info.name

    def start(self) -> None:
        self.batcher = MicroBatcher(self.name, self.engine.batch, self.options, self.metrics, max_batch=self.max_batch,
                                    workers=self.workers, lane_workers=self.lane_workers)
        self.batcher.start()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()

    def admit(self) -> None:
        """Take one of the voice's ``max_queue`` request places, or raise Overloaded at once.

        Every successful ``admit`` is paired with one ``release`` when the answer is done.
        """
        if self.pending >= self.options.max_queue:
            raise Overloaded(f"voice {self.name!r} has {self.pending} requests waiting (--max-queue "
                             f"{self.options.max_queue}); retry shortly")
        self.pending += 1

    def release(self) -> None:
        self.pending -= 1

    def plan(self, frames: int) -> list[tuple[int, int]]:
        return chunk_plan(frames, self.options.first_chunk_frames, whole=self.whole,
                          min_split_frames=self.min_split_frames)

    def submit_windows(self, mel: np.ndarray, streamed: bool = False) -> list[tuple[asyncio.Future, int, int]]:
        """Queue every window of ``mel`` [C, T] at once; (future, first sample, sample count) each.

        A stream's first window (its only one, for a short mel) is urgent: it is the listener's
        first audio. Everything else queues in arrival order.
        """
        if self.batcher is None:
            raise RuntimeError("voice not started")
        total = mel.shape[1]
        plan = self.plan(total)
        out = []
        for index, (s, e) in enumerate(plan):
            a, b = max(0, s - self.left), min(total, e + self.right)
            window = np.ascontiguousarray(mel[:, a:b])
            future = self.batcher.submit(window, urgent=streamed and index == 0)
            out.append((future, (s - a) * self.hop, (e - s) * self.hop))
        return out

    def vocode_blocking(self, mel: np.ndarray, loop: asyncio.AbstractEventLoop, timeout: float) -> np.ndarray:
        """From a worker thread (ModelScope's pipeline): the batched samples of ``mel``."""
        async def whole() -> np.ndarray:
            parts = self.submit_windows(mel)
            try:
                wavs = await asyncio.gather(*(f for f, _, _ in parts))
            finally:
                for f, _, _ in parts:
                    f.cancel()
            return np.concatenate([w[o:o + n] for w, (_, o, n) in zip(wavs, parts)])

        future = asyncio.run_coroutine_threadsafe(whole(), loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()  # a timed-out synthesis must not leave its windows queued
            raise


def parse_voice_arg(text: str) -> VoiceSpec:
    """``NAME=TARGET`` (``--voice``) -> VoiceSpec; a bad name is a one-line error."""
    name, sep, target = text.partition("=")
    if not sep or not name or not target:
        raise HifitrtError(f"--voice {text!r}: expected NAME=TARGET, e.g. --voice zhitian=engines/zhitian")
    return VoiceSpec(target=target, name=validate_voice_name(name))


def validate_voice_name(name: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise HifitrtError(f"voice name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return name
