"""``create_app``: the FastAPI application of ``tts-build-engine serve``.

Endpoints (errors: ``{"error": {"type", "message"}}``, one line, 4xx/5xx):

* ``POST /v1/vocode?voice=&format=wav|pcm&stream=false|true``: body one mel as ``.npy``;
  answers 16-bit audio with ``X-Sample-Rate`` and ``X-Frames``; streamed answers are the same
  bytes sent window by window (chunked transfer).
* ``POST /v1/audio/speech``: OpenAI's request shape, text -> speech through ModelScope's
  pipeline (``--model``) with batched vocoders.
* ``GET /v1/voices``, ``GET /healthz`` (always public), ``GET /readyz`` (engines loaded and
  warmed, not draining), ``GET /metrics`` (Prometheus text; names in ``serving.metrics``).
* The web page (``serving.webui``), when that module is present.

Overload follows Triton's queue policy: a voice holding ``max_queue`` requests answers 503 with
``Retry-After`` at once; a request not answered within ``timeout_s`` gets 504; a client that
goes away has its queued windows dropped. After SIGTERM (see ``serving.server``) requests get
503 while the accepted ones finish.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Sequence

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import HifitrtError
from .audio import MEDIA_TYPES, pcm_bytes, wav_header
from .cache import ByteLRU
from .config import ServeOptions, lane_for_device, threads_for_device, workers_for_device
from .errors import ApiError, bad_request, not_found, too_large
from .http import (STREAM_HEADERS, ClosingStream, ServiceMiddleware, api_key_dependency, cancel_all,
                   install_error_handlers, read_body, wait_for_results)
from .metrics import CONTENT_TYPE, ServiceMetrics
from .validation import check_mel, choose, parse_bool, parse_npy
from .voices import Overloaded, Voice, VoiceSpec, expects_accelerator, load_voice_engine

log = logging.getLogger(__name__)

FORMATS = ("wav", "pcm")


def create_app(
    targets: Sequence[str | VoiceSpec] = (),
    *,
    options: ServeOptions | None = None,
    backend: str | None = None,
    model: str | None = None,
    speech_model: Any = None,
) -> FastAPI:
    """Load every voice (first = default) and return the ASGI app.

    ``targets``: engine directories (or, with ``backend='torch'``, vocoder sources), as paths
    or :class:`VoiceSpec` with a name. ``model``: a ModelScope model id or directory for
    ``/v1/audio/speech``; ``speech_model``: an already built ModelScope pipeline or
    SambertHifigan model instead (tests, embedding).
    """
    options = options or ServeOptions()
    specs = [t if isinstance(t, VoiceSpec) else VoiceSpec(str(t)) for t in targets]
    if not specs:
        raise HifitrtError("serve needs at least one engine directory (or vocoder source with --backend torch)")
    metrics = ServiceMetrics()
    voices: dict[str, Voice] = {}
    for spec in specs:
        accelerated = expects_accelerator(spec, backend)
        calls = workers_for_device(options, accelerated) + lane_for_device(options, accelerated)
        engine, info = load_voice_engine(spec, backend, workers=calls, threads=threads_for_device(options, accelerated))
        if info.name in voices:
            raise HifitrtError(f"two voices are named {info.name!r}; name them with --voice NAME=TARGET")
        voices[info.name] = Voice(engine, info, options, metrics)
    default_voice = next(iter(voices))
    speech = _speech_service(model, speech_model, voices, options)
    cache = ByteLRU(options.cache_bytes) if options.cache_bytes else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        for voice in voices.values():
            voice.start()
        if speech is not None:
            speech.bind(loop)
        await asyncio.gather(*(_warm_up(v) for v in voices.values()))
        app.state.ready = True
        log.info("serving voices %s", ", ".join(voices))
        try:
            yield
        finally:
            app.state.ready = False
            for voice in voices.values():
                await voice.stop()
            if speech is not None:
                speech.close()

    app = FastAPI(title="hifitrt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ready = False
    app.state.draining = False
    app.state.voices = voices
    app.state.metrics = metrics
    app.add_middleware(ServiceMiddleware, metrics=metrics)
    install_error_handlers(app, metrics)
    auth = [Depends(api_key_dependency(options.api_key))]

    def voice_named(name: str | None) -> Voice:
        if name is None:
            return voices[default_voice]
        if name not in voices:
            raise not_found(f"unknown voice {name!r}; voices: {', '.join(voices)}")
        return voices[name]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", dependencies=auth)
    async def readyz() -> JSONResponse:
        if app.state.draining:
            raise ApiError(503, "draining", "the service is shutting down")
        if not app.state.ready:
            raise ApiError(503, "not_ready", "engines are still loading")
        return JSONResponse({"status": "ready", "voices": list(voices)})

    @app.get("/v1/voices", dependencies=auth)
    async def list_voices() -> dict[str, Any]:
        return {"default": default_voice, "voices": [v.info.public() for v in voices.values()],
                "speech": speech is not None, "speech_voices": speech.voices if speech else [],
                # model voice -> the served voice (engine) that vocodes it, for the web page
                "speech_engines": {n: speech.served_voice(n).name for n in speech.voices} if speech else {}}

    @app.get("/metrics", dependencies=auth)
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/vocode", dependencies=auth)
    async def vocode(request: Request, voice: str | None = None, format: str | None = None,
                     stream: str | None = None) -> Response:
        target = voice_named(voice)
        fmt = choose(format, FORMATS, "format")
        streamed = parse_bool(stream, "stream")
        body = await read_body(request, options.max_body_bytes)
        mel = check_mel(parse_npy(body), target.info.in_channels, options.max_frames)
        frames = mel.shape[1]
        samples = frames * target.hop
        headers = {"X-Sample-Rate": str(target.info.sample_rate), "X-Frames": str(frames)}
        header = wav_header(target.info.sample_rate, samples) if fmt == "wav" else b""
        release = _admit(target)
        parts = target.submit_windows(mel, streamed=streamed)
        futures = [f for f, _, _ in parts]
        if not streamed:
            try:
                wavs = await wait_for_results(request, futures, options.timeout_s)
            finally:
                cancel_all(futures)
                release()
            audio = np.concatenate([w[o:o + n] for w, (_, o, n) in zip(wavs, parts)])
            metrics.audio_seconds.labels(target.name).inc(samples / target.info.sample_rate)
            return Response(header + pcm_bytes(audio), media_type=MEDIA_TYPES[fmt], headers=headers)

        async def chunks() -> AsyncIterator[bytes]:
            deadline = time.monotonic() + options.timeout_s
            try:
                if header:
                    yield header
                for future, offset, count in parts:
                    wav = await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - time.monotonic()))
                    yield pcm_bytes(wav[offset:offset + count])
                metrics.audio_seconds.labels(target.name).inc(samples / target.info.sample_rate)
            except asyncio.TimeoutError:
                metrics.errors.labels("timeout").inc()
                log.warning("stream for voice %s timed out after %.1f s; closing it", target.name, options.timeout_s)
                raise
            finally:
                cancel_all(futures)

        def close() -> None:
            cancel_all(futures)
            release()

        headers.update(STREAM_HEADERS)
        return ClosingStream(chunks(), on_close=close, media_type=MEDIA_TYPES[fmt], headers=headers)

    @app.post("/v1/audio/speech", dependencies=auth)
    async def audio_speech(request: Request) -> Response:
        body = await read_body(request, options.max_body_bytes)
        req = _speech_request(body, options.max_text_chars)
        if speech is None:
            raise not_found("text to speech is not configured: start serve with --model MODEL_ID_OR_DIR")
        voice = req["voice"] or speech.default_voice
        if voice not in speech.voices:
            raise not_found(f"unknown voice {voice!r}; voices: {', '.join(speech.voices)}")
        served = speech.served_voice(voice)
        fmt = req["response_format"]
        key = (req["input"], voice, fmt, served.info.digest)
        body_bytes = cache.get(key) if cache is not None else None
        if cache is not None:
            (metrics.cache_hits if body_bytes is not None else metrics.cache_misses).inc()
        rate = served.info.sample_rate
        if body_bytes is None and req["stream"]:
            return _speech_stream(speech, req["input"], voice, served, fmt, options.timeout_s, metrics,
                                  lambda data: cache.put(key, data) if cache is not None else None)
        if body_bytes is None:
            release = _admit(served)
            try:
                samples, rate = await asyncio.wait_for(speech.synthesize(req["input"], voice), options.timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(504, "timeout", f"speech not ready within {options.timeout_s:g} s (--timeout-s)") from None
            finally:
                release()
            metrics.audio_seconds.labels(served.name).inc(len(samples) / rate)
            pcm = samples.astype("<i2").tobytes()
            body_bytes = (wav_header(rate, len(pcm) // 2) if fmt == "wav" else b"") + pcm
            if cache is not None:
                cache.put(key, body_bytes)
        headers = {"X-Sample-Rate": str(rate)}
        if not req["stream"]:
            return Response(body_bytes, media_type=MEDIA_TYPES[fmt], headers=headers)

        async def cached() -> AsyncIterator[bytes]:  # already rendered: sent in pieces, exact header
            step = 64 * 1024
            for start in range(0, len(body_bytes), step):
                yield body_bytes[start:start + step]

        headers.update(STREAM_HEADERS)
        return StreamingResponse(cached(), media_type=MEDIA_TYPES[fmt], headers=headers)

    _include_web_page(app, voices, auth)
    return app


# -------------------------------------------------------------------------------------- pieces


def _speech_service(model: str | None, speech_model: Any, voices: dict[str, Voice], options: ServeOptions) -> Any:
    if model is None and speech_model is None:
        return None
    from .speech import SpeechService, load_pipeline

    if speech_model is None:
        speech_model = load_pipeline(model, voices)  # type: ignore[arg-type]
    return SpeechService(speech_model, voices, options.speech_workers, options.timeout_s)


def _speech_stream(speech: Any, text: str, voice: str, served: Voice, fmt: str, timeout_s: float,
                   metrics: ServiceMetrics, keep: Callable[[bytes], None]) -> Response:
    """Speech sent sentence by sentence; the WAV header says 0xFFFFFFFF (length unknown yet).

    The complete answer is handed to ``keep`` (the cache) with an exact header.
    """
    release = _admit(served)
    rate = served.info.sample_rate

    async def sentences() -> AsyncIterator[bytes]:
        deadline = time.monotonic() + timeout_s
        pieces = []
        if fmt == "wav":
            yield wav_header(rate, None)
        sentence_stream = speech.stream(text, voice)
        try:
            while True:
                try:
                    samples = await asyncio.wait_for(sentence_stream.__anext__(), max(0.0, deadline - time.monotonic()))
                except StopAsyncIteration:
                    break
                pcm = samples.astype("<i2").tobytes()
                pieces.append(pcm)
                yield pcm
        except asyncio.TimeoutError:
            metrics.errors.labels("timeout").inc()
            log.warning("speech stream timed out after %.1f s; closing it", timeout_s)
            raise
        finally:
            await sentence_stream.aclose()
        pcm = b"".join(pieces)
        metrics.audio_seconds.labels(served.name).inc(len(pcm) / 2 / rate)
        keep((wav_header(rate, len(pcm) // 2) if fmt == "wav" else b"") + pcm)

    return ClosingStream(sentences(), on_close=release, media_type=MEDIA_TYPES[fmt],
                          headers={"X-Sample-Rate": str(rate), **STREAM_HEADERS})


def _speech_request(body: bytes, max_chars: int) -> dict[str, Any]:
    """OpenAI's ``/v1/audio/speech`` JSON, checked field by field (one-line 400s)."""
    import json

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request('body must be a JSON object: {"model", "input", "voice", "response_format", "stream"}')
    text = data.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad_request('"input" must be a non-empty string')
    if len(text) > max_chars:
        raise too_large(f'"input" has {len(text)} characters, the limit is {max_chars}')
    if not isinstance(data.get("model"), str):
        raise bad_request('"model" must be a string (any model name; the served model is used)')
    voice = data.get("voice")
    if voice is not None and not isinstance(voice, str):
        raise bad_request('"voice" must be a string')
    fmt = data.get("response_format", "wav")
    if not isinstance(fmt, str):
        raise bad_request('"response_format" must be a string')
    fmt = choose(fmt, FORMATS, "response_format")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request('"stream" must be true or false')
    speed = data.get("speed", 1.0)
    if speed not in (1, 1.0):
        raise bad_request('"speed" other than 1.0 is not supported')
    return {"input": text, "voice": voice, "response_format": fmt, "stream": stream}


def _admit(voice: Voice) -> Callable[[], None]:
    """Take a request place of ``voice`` (503 + Retry-After when full); returns its release."""
    try:
        voice.admit()
    except Overloaded as exc:
        raise ApiError(503, "overloaded", str(exc), {"Retry-After": str(voice.options.retry_after_s)}) from None
    return voice.release


async def _warm_up(voice: Voice) -> None:
    """One engine call per window shape of a typical stream (its first window on the lane, when
    the voice has one), so the first client is not slow."""
    mel = np.zeros((voice.info.in_channels, 4 * max(16, voice.options.first_chunk_frames)), np.float32)
    await asyncio.gather(*(f for f, _, _ in voice.submit_windows(mel, streamed=True)))


def _include_web_page(app: FastAPI, voices: dict[str, Voice], auth: list[Any]) -> None:
    try:
        from .webui import webui_router
    except ImportError:
        return
    engine_dirs = {name: v.info.engine_dir for name, v in voices.items() if v.info.engine_dir is not None}
    app.include_router(webui_router(engine_dirs, report_dependencies=auth))
