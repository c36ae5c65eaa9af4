"""`tts-build-engine serve` end to end: real uvicorn servers on loopback ports, a real HTTP
client (httpx), a real ONNX Runtime engine, ModelScope's real Voice/SambertHifigan code
(kantts stand-in: tests/modelscope_harness.py), and a real subprocess for SIGTERM."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import modelscope_harness as harness
from live_server import free_port, serving
from hifitrt.engines.profiles import ShapeProfile
from hifitrt.export import kantts_random as synthetic
from hifitrt.runtime import VocoderEngine
from hifitrt.serving import ServeOptions, create_app
from hifitrt.serving.audio import to_int16

REPO = Path(__file__).resolve().parent.parent
VOICE = "voice_a"
CHANNELS = 80


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A ModelScope model directory whose one voice has a small (32-channel) KAN-TTS vocoder."""
    root = tmp_path_factory.mktemp("serving")
    config = yaml.safe_load((synthetic.kantts_configs_dir() / "hifigan_v1_16k.yaml").read_text())
    config["Model"]["Generator"]["params"]["channels"] = 32
    small = root / "small_16k.yaml"
    small.write_text(yaml.safe_dump(config))
    return synthetic.make_modelscope_model_dir(root / "model", [(VOICE, small, 1)], scale=0.5)


@pytest.fixture(scope="module")
def engine_dir(model_dir, tmp_path_factory):
    from hifitrt.engines.build import build_engine

    out = tmp_path_factory.mktemp("serving_engine") / "engine"
    build_engine(model_dir, out, voice=VOICE, backend="onnxruntime", precision="fp32",
                 profiles=[ShapeProfile(1, 1, 16, 4, 64, 512, "p")], verify_export=False)
    return out


@pytest.fixture(scope="module")
def engine(engine_dir):
    with VocoderEngine.load(engine_dir) as eng:
        yield eng


def _mel(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.standard_normal((CHANNELS, frames)), axis=1) * 0.1 - 4.0).astype(np.float32)


def _npy(arr, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _metric(base: str, name: str, headers=None) -> dict[tuple, float]:
    """Samples of metric ``name`` from /metrics: {label values: value}."""
    text = httpx.get(f"{base}/metrics", headers=headers).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _samples(body: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(body)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int32)


async def _post_all(base: str, bodies: list[bytes], path: str = "/v1/vocode", **kwargs) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return await asyncio.gather(*(client.post(path, content=b, **kwargs) for b in bodies))


# --------------------------------------------------------------------------------------- tests

def test_concurrent_mixed_lengths_equal_serial_engine_calls_and_batch(engine_dir, engine):
    lengths = [23, 410, 64, 97, 150, 12, 300, 71, 256, 33, 180, 5, 120, 90, 45, 222]
    mels = [_mel(n, i) for i, n in enumerate(lengths)]
    app = create_app([engine_dir], options=ServeOptions(max_wait_ms=100, max_padding=2.0, max_batch=16))
    with serving(app) as base:
        answers = asyncio.run(_post_all(base, [_npy(m) for m in mels]))
        for mel, answer in zip(mels, answers):
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "audio/wav"
            assert answer.headers["x-sample-rate"] == "16000" and answer.headers["x-frames"] == str(mel.shape[1])
            got = _samples(answer.content)
            expected = to_int16(engine(mel)).astype(np.int32)  # a serial, unbatched engine call
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() <= 1
        sizes = _metric(base, "hifitrt_batch_size_sum")
        calls = _metric(base, "hifitrt_batch_size_count")
        key = (("voice", VOICE),)
        assert sizes[key] / calls[key] > 1.0  # windows were coalesced across requests
        assert max(_metric(base, "hifitrt_batch_size_bucket").items(),
                   key=lambda kv: kv[1])  # histogram present
        audio = _metric(base, "hifitrt_audio_seconds_total")[key]
        assert audio == pytest.approx(sum(lengths) * 200 / 16000)
        voices = httpx.get(f"{base}/v1/voices").json()
        assert voices["default"] == VOICE and voices["voices"][0]["backend"] == "onnxruntime"
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"


def test_streamed_equals_whole_byte_for_byte(engine_dir):
    app = create_app([engine_dir], options=ServeOptions(first_chunk_frames=16))
    mel = _mel(333, 7)
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        for fmt in ("wav", "pcm"):
            whole = client.post(f"/v1/vocode?format={fmt}", content=_npy(mel))
            assert whole.status_code == 200
            pieces = []
            with client.stream("POST", f"/v1/vocode?format={fmt}&stream=true", content=_npy(mel)) as streamed:
                assert streamed.status_code == 200
                assert streamed.headers["content-type"] == f"audio/{fmt}"
                assert streamed.headers.get("transfer-encoding") == "chunked"
                pieces = list(streamed.iter_raw())
            assert len(pieces) >= 3  # header, first window, the rest: sent as vocoded
            assert b"".join(pieces) == whole.content
        wav = client.post("/v1/vocode?stream=true", content=_npy(mel)).content
        assert len(_samples(wav)) == 333 * 200  # the streamed WAV header is a real, exact one


def test_overload_answers_503_at_once_and_accepted_requests_stay_correct(engine_dir, engine):
    # the first request waits 1 s (max_wait_ms) for company; with room for 2, the rest are refused
    app = create_app([engine_dir], options=ServeOptions(max_batch=8, max_queue=2, max_wait_ms=1000))
    mels = [_mel(60 + 10 * i, 100 + i) for i in range(10)]
    with serving(app) as base:
        async def timed():
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                async def one(m):
                    start = time.monotonic()
                    r = await client.post("/v1/vocode", content=_npy(m))
                    return r, time.monotonic() - start
                return await asyncio.gather(*(one(m) for m in mels))

        results = asyncio.run(timed())
        ok = [(m, r) for m, (r, _) in zip(mels, results) if r.status_code == 200]
        refused = [(r, dt) for r, dt in results if r.status_code == 503]
        assert len(ok) == 2 and len(refused) == 8
        accepted_after = min(dt for r, dt in results if r.status_code == 200)
        assert accepted_after >= 1.0  # the accepted ones waited for company (max_wait_ms)
        for r, dt in refused:
            assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "overloaded"
            assert dt < accepted_after  # refused at once, never held in the queue
        for mel, r in ok:
            assert np.abs(_samples(r.content) - to_int16(engine(mel)).astype(np.int32)).max() <= 1
        assert _metric(base, "hifitrt_errors_total")[(("kind", "overloaded"),)] == 8


def test_timeout_is_504_and_a_vanished_client_has_its_work_dropped(engine_dir):
    app = create_app([engine_dir], options=ServeOptions(max_batch=8, max_wait_ms=600, timeout_s=0.2))
    with serving(app) as base:
        r = httpx.post(f"{base}/v1/vocode", content=_npy(_mel(50, 1)), timeout=30)
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
    app = create_app([engine_dir], options=ServeOptions(max_batch=8, max_wait_ms=600))
    with serving(app) as base:
        before = _metric(base, "hifitrt_batch_size_count")[(("voice", VOICE),)]
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/vocode", content=_npy(_mel(50, 2)), timeout=0.2)
        time.sleep(1.0)  # past the batching wait: the dropped window must not have run
        assert _metric(base, "hifitrt_batch_size_count")[(("voice", VOICE),)] == before
        assert _metric(base, "hifitrt_errors_total")[(("kind", "client_gone"),)] == 1
        assert _metric(base, "hifitrt_queue_depth")[(("voice", VOICE),)] == 0


def test_bad_requests_get_a_one_line_4xx_and_the_server_stays_up(engine_dir):
    key = "s3cret-key"
    app = create_app([engine_dir], options=ServeOptions(api_key=key, max_frames=600, max_body_bytes=300_000))
    auth = {"Authorization": f"Bearer {key}"}
    good = _npy(_mel(40, 3))
    cases = {
        "not npy": ("/v1/vocode", b"RIFF....WAVEfmt not a mel", auth, 400),
        "pickled npy": ("/v1/vocode", _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), auth, 400),
        "wrong channels": ("/v1/vocode", _npy(np.zeros((81, 20), np.float32)), auth, 400),
        "NaN": ("/v1/vocode", _npy(np.where(np.arange(20) == 7, np.nan, _mel(20, 4)).astype(np.float32)), auth, 400),
        "zero frames": ("/v1/vocode", _npy(np.zeros((CHANNELS, 0), np.float32)), auth, 400),
        "too many frames": ("/v1/vocode", _npy(np.zeros((CHANNELS, 700), np.float32)), auth, 413),
        "oversized body": ("/v1/vocode", b"\x93NUMPY" + bytes(400_000), auth, 413),
        "unknown voice": ("/v1/vocode?voice=nobody", good, auth, 404),
        "path as voice": ("/v1/vocode?voice=../../etc/passwd", good, auth, 404),
        "bad format": ("/v1/vocode?format=mp3", good, auth, 400),
        "bad stream flag": ("/v1/vocode?stream=maybe", good, auth, 400),
        "integer mel": ("/v1/vocode", _npy(np.zeros((CHANNELS, 20), np.int32)), auth, 400),
        "3-D mel": ("/v1/vocode", _npy(np.zeros((1, CHANNELS, 20), np.float32)), auth, 400),
        "missing API key": ("/v1/vocode", good, {}, 401),
        "wrong API key": ("/v1/vocode", good, {"Authorization": "Bearer nope"}, 401),
        "speech without --model": ("/v1/audio/speech", b'{"model": "m", "input": "hi"}', auth, 404),
        "speech bad JSON": ("/v1/audio/speech", b"{nope", auth, 400),
        "unknown route": ("/v1/nothing", good, auth, 404),
    }
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        for what, (path, body, headers, status) in cases.items():
            r = client.post(path, content=body, headers=headers)
            assert r.status_code == status, (what, r.status_code, r.text)
            assert "\n" not in r.text and "Traceback" not in r.text, what
            error = r.json()["error"]
            assert set(error) == {"type", "message"} and error["message"], what
        assert client.get("/v1/voices").status_code == 401
        assert client.get("/metrics", headers=auth).status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}  # public, and still up
        ok = client.post("/v1/vocode", content=good, headers=auth)
        assert ok.status_code == 200 and len(_samples(ok.content)) == 40 * 200


def test_speech_goes_through_real_modelscope_code_and_the_batcher(model_dir, engine_dir):
    mels = {f"s{i}": _mel(n, 50 + i) for i, n in enumerate((45, 130, 77, 160))}

    def model():
        voice = harness.make_voice(VOICE, model_dir / "voices" / VOICE, mels)
        return harness.make_model({VOICE: voice}, 16000)

    plain = model()  # ModelScope with its own torch vocoder, for reference
    app = create_app([engine_dir], speech_model=model(),
                     options=ServeOptions(max_wait_ms=100, cache_bytes=1 << 20, speech_workers=4))
    texts = ["s0|s1", "s2", "s3|s0", "s1|s2|s3"]
    with serving(app) as base:
        listed = httpx.get(f"{base}/v1/voices").json()
        assert listed["speech_voices"] == [VOICE] and listed["speech_engines"] == {VOICE: VOICE}
        requests = [json.dumps({"model": "sambert-hifigan", "input": t, "voice": VOICE}).encode() for t in texts]
        answers = asyncio.run(_post_all(base, requests, path="/v1/audio/speech"))
        for text, answer in zip(texts, answers):
            assert answer.status_code == 200, answer.text
            expected = _samples(plain.forward(text))
            got = _samples(answer.content)
            assert got.shape == expected.shape and np.abs(got - expected).max() <= 4
        key = (("voice", VOICE),)
        assert _metric(base, "hifitrt_batch_size_count")[key] >= 1
        assert _metric(base, "hifitrt_batch_size_sum")[key] > _metric(base, "hifitrt_batch_size_count")[key] - 1
        with httpx.Client(base_url=base, timeout=60) as client:
            pcm = client.post("/v1/audio/speech", json={"model": "m", "input": "s2", "response_format": "pcm"})
            assert pcm.status_code == 200 and pcm.headers["content-type"] == "audio/pcm"
            pcm_samples = np.frombuffer(pcm.content, "<i2").astype(np.int32)  # a cache miss: vocoded again
            assert np.abs(pcm_samples - _samples(answers[1].content)).max() <= 1  # alone vs. batched: rounding
            again = client.post("/v1/audio/speech", json={"model": "m", "input": "s2", "voice": VOICE})
            assert again.content == answers[1].content
            assert _metric(base, "hifitrt_cache_hits_total")[()] == 1
            streamed = client.post("/v1/audio/speech", json={"model": "m", "input": "s2", "stream": True})
            assert streamed.content == answers[1].content  # a cached answer streams as it is
            pieces = []
            with client.stream("POST", "/v1/audio/speech", json={"model": "m", "input": "s3|s1", "stream": True}) as r:
                assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
                pieces = list(r.iter_raw())
            body = b"".join(pieces)
            assert body[4:8] == body[40:44] == b"\xff\xff\xff\xff"  # length unknown when the header went out
            assert len(pieces) >= 3  # header, then sentence by sentence
            expected = _samples(plain.forward("s3|s1"))
            got = np.frombuffer(body[44:], "<i2").astype(np.int32)
            assert got.shape == expected.shape and np.abs(got - expected).max() <= 4
            whole = client.post("/v1/audio/speech", json={"model": "m", "input": "s3|s1"})
            assert whole.content[44:] == body[44:] and _samples(whole.content).shape == expected.shape
            assert _metric(base, "hifitrt_cache_hits_total")[()] == 3  # the stream filled the cache
            for body, status in (({"model": "m", "input": "s0", "voice": "other"}, 404),
                                 ({"model": "m", "input": ""}, 400),
                                 ({"model": "m", "input": "s0", "response_format": "mp3"}, 400),
                                 ({"model": "m", "input": "s0", "speed": 2.0}, 400),
                                 ({"input": "s0"}, 400)):
                r = client.post("/v1/audio/speech", json=body)
                assert r.status_code == status and "\n" not in r.text, (body, r.text)


def test_torch_backend_serves_a_vocoder_source(model_dir, engine):
    app = create_app([str(model_dir)], backend="torch")
    mel = _mel(90, 9)
    with serving(app) as base:
        voice = httpx.get(f"{base}/v1/voices").json()["voices"][0]
        assert voice["backend"].startswith("torch") and voice["name"] == model_dir.name
        r = httpx.post(f"{base}/v1/vocode?format=pcm", content=_npy(mel), timeout=60)
        got = np.frombuffer(r.content, dtype="<i2").astype(np.int32)
        assert np.abs(got - to_int16(engine(mel)).astype(np.int32)).max() <= 2


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_then_exits(engine_dir, engine):
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hifitrt", "serve", str(engine_dir), "--port", str(port), "--max-wait-ms", "3000",
         "--max-batch", "8"],
        cwd=REPO.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        mels = [_mel(n, 200 + n) for n in (40, 80, 120)]
        results: dict[int, httpx.Response] = {}

        def send(i: int) -> None:
            results[i] = httpx.post(f"{base}/v1/vocode", content=_npy(mels[i]), timeout=30)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(mels))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while _metric(base, "hifitrt_requests_in_flight")[()] < len(mels) + 1:  # + this /metrics request
            assert time.monotonic() < deadline, "requests did not reach the server"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # all three wait in the batcher (3 s) now
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no new connections while draining
            httpx.get(f"{base}/healthz", timeout=2)
        for t in threads:
            t.join(30)
        for i, mel in enumerate(mels):
            assert results[i].status_code == 200, results[i].text
            assert np.abs(_samples(results[i].content) - to_int16(engine(mel)).astype(np.int32)).max() <= 1
        # uvicorn re-raises the signal after its graceful shutdown, as supervisors expect
        assert proc.wait(30) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
