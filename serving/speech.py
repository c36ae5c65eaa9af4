"""Text to speech for ``/v1/audio/speech``: ModelScope's Sambert-HifiGan pipeline with every
voice's vocoder call routed through the service's micro-batcher.

How: ``hifitrt.runtime.accelerate`` swaps a voice's vocoder for any ``VocoderEngine``; here that
engine is a :class:`BatchedEngine`, whose call hands the mel to the voice's batcher and waits.
ModelScope runs its acoustic model under a per-voice lock but calls the vocoder outside it,
so syntheses running on the speech worker threads reach the batcher together and their
vocoder work is coalesced with each other and with ``/v1/vocode`` requests. The acoustic
model itself runs on those threads, unbatched (it is ModelScope's code).

Voice mapping: with one served engine, every voice of the model uses it; with several, each
model voice uses the served voice of the same name (else the first one), and ``accelerate``
refuses engines that do not fit a voice (channels, hop, NSF, sample rate).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Mapping

import numpy as np

from ..errors import HifitrtError
from ..runtime import VocoderEngine
from .audio import wav_samples
from .validation import check_mel
from .voices import Voice

log = logging.getLogger(__name__)


class BatchedEngine(VocoderEngine):
    """A ``VocoderEngine`` whose ``engine(mel)`` goes through a served voice's batcher.

    Called from a speech worker thread (never from the event loop, which it would block).
    """

    def __init__(self, voice: Voice, timeout_s: float) -> None:
        engine = voice.engine
        super().__init__(engine.runner, engine.spec, manifest=engine.manifest, profiles=engine.profiles)
        self.voice = voice
        self.timeout_s = timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, mel: Any) -> np.ndarray:
        if self.loop is None:
            raise RuntimeError("BatchedEngine used before the service started")
        arr = np.asarray(mel)
        if arr.ndim != 2:
            raise HifitrtError(f"the speech pipeline passed a mel of shape {arr.shape}; expected [channels, frames]")
        checked = check_mel(arr, self.voice.info.in_channels, max_frames=None)
        return self.voice.vocode_blocking(checked, self.loop, self.timeout_s)


class SpeechService:
    """ModelScope Sambert-HifiGan model + batched vocoders + the threads synthesis runs on."""

    def __init__(self, model: Any, voices: Mapping[str, Voice], workers: int, timeout_s: float) -> None:
        from ..runtime import accelerate

        inner = getattr(model, "model", None)  # a ModelScope pipeline holds the SambertHifigan model
        self.model = inner if inner is not None and _model_voices(inner) else model
        ms_voices = _model_voices(self.model)
        if not ms_voices:
            raise HifitrtError(f"{type(model).__name__} is not a ModelScope Sambert-HifiGan model (no voices)")
        served = list(voices.values())
        self.engines: dict[str, BatchedEngine] = {}
        for name in ms_voices:
            voice = voices.get(name, served[0]) if len(served) > 1 else served[0]
            self.engines[name] = BatchedEngine(voice, timeout_s)
        accelerate(self.model, dict(self.engines))
        self.default_voice = str(getattr(self.model, "default_voice_name", None) or next(iter(ms_voices)))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="speech")

    @property
    def voices(self) -> list[str]:
        return list(self.engines)

    def served_voice(self, name: str) -> Voice:
        return self.engines[name].voice

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        for engine in self.engines.values():
            engine.loop = loop

    async def synthesize(self, text: str, voice: str) -> tuple[np.ndarray, int]:
        """int16 samples and sample rate of ``text`` spoken by ModelScope voice ``voice``."""
        loop = asyncio.get_running_loop()
        wav_bytes = await loop.run_in_executor(self._executor, self.model.forward, text, voice)
        return wav_samples(wav_bytes)

    async def stream(self, text: str, voice: str) -> AsyncIterator[np.ndarray]:
        """int16 samples sentence by sentence, as soon as each is synthesized.

        Mirrors ``SambertHifigan.forward`` (frontend -> one ``synthesis_one_sentences`` per
        line -> ``(32768 * audio).astype(int16)``) so the samples are ModelScope's own; a model
        without those methods is synthesized whole and sent as one piece.
        """
        loop = asyncio.get_running_loop()
        frontend = getattr(self.model, "frontend", None)
        one_sentence = getattr(self.model, "synthesis_one_sentences", None)
        if frontend is None or one_sentence is None:
            samples, _ = await self.synthesize(text, voice)
            yield samples
            return
        symbols = await loop.run_in_executor(self._executor, frontend.gen_tacotron_symbols, text)
        for line in (s for s in symbols.splitlines() if s != ""):
            fields = line.strip().split("\t")
            audio = await loop.run_in_executor(self._executor, one_sentence, voice, fields[1])
            yield (32768.0 * audio).astype("int16")

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def load_pipeline(model_id_or_dir: str, voices: Mapping[str, Voice]) -> Any:
    """ModelScope's TTS pipeline for ``--model`` (its vocoders are replaced by SpeechService)."""
    from ..runtime import pipeline

    first = next(iter(voices.values()))
    return pipeline(model_id_or_dir, engine=first.engine)


def _model_voices(model: Any) -> dict[str, Any]:
    for attr in ("voices", "_SambertHifigan__voices"):
        found = getattr(model, attr, None)
        if isinstance(found, Mapping) and found:
            return dict(found)
    return {}
