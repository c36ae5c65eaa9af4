"""The serving pieces on their own: WAV header, byte-bounded LRU, chunk plan, batch forming."""
from __future__ import annotations

import asyncio
import io
import wave

import numpy as np
import pytest

from hifitrt.errors import HifitrtError
from hifitrt.serving.audio import UNKNOWN_SIZE, to_int16, wav_header
from hifitrt.serving.batcher import MicroBatcher
from hifitrt.serving.cache import ByteLRU
from hifitrt.serving.config import ServeOptions
from hifitrt.serving.metrics import ServiceMetrics
from hifitrt.serving.voices import chunk_plan, parse_voice_arg


def test_wav_header_is_read_by_the_standard_library():
    samples = to_int16(np.sin(np.arange(1000) / 10.0) * 0.5)
    body = wav_header(22050, len(samples)) + samples.tobytes()
    with wave.open(io.BytesIO(body)) as w:
        assert (w.getframerate(), w.getnframes(), w.getsampwidth()) == (22050, 1000, 2)
        assert np.array_equal(np.frombuffer(w.readframes(1000), "<i2"), samples)
    streaming = wav_header(16000, None)
    assert len(streaming) == 44 and streaming[4:8] == streaming[40:44] == UNKNOWN_SIZE.to_bytes(4, "little")


def test_int16_conversion_rounds_and_clips():
    assert to_int16(np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5 / 32767])).tolist() == [0, 32767, -32767, 32767, -32768, 0]


def test_byte_lru_evicts_oldest_by_bytes():
    cache = ByteLRU(10)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")
    assert cache.get("b") is None and cache.get("a") and cache.get("c") and cache.size == 8
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None and len(cache) == 2


def test_chunk_plan_covers_every_frame_once():
    assert chunk_plan(50, 32) == [(0, 50)]
    assert chunk_plan(65, 32) == [(0, 32), (32, 65)]
    assert chunk_plan(500, 32, whole=True) == chunk_plan(500, 0) == [(0, 500)]


def test_options_and_voice_args_are_checked():
    with pytest.raises(HifitrtError, match="max_batch"):
        ServeOptions(max_batch=0)
    with pytest.raises(HifitrtError, match="NAME=TARGET"):
        parse_voice_arg("novoice")
    with pytest.raises(HifitrtError, match="voice name"):
        parse_voice_arg("../x=dir")
    assert parse_voice_arg("zh=engines/zh").name == "zh"


def test_batcher_coalesces_keeps_order_and_limits_padding():
    calls: list[list[int]] = []

    def run_batch(mels):
        calls.append([m.shape[1] for m in mels])
        return [np.full(m.shape[1], m[0, 0]) for m in mels]

    async def scenario():
        options = ServeOptions(max_batch=4, max_wait_ms=50, max_padding=1.25)
        batcher = MicroBatcher("v", run_batch, options, ServiceMetrics())
        batcher.start()
        lengths = [100, 100, 100, 400, 100, 100, 90]
        futures = [batcher.submit(np.full((2, n), float(i), np.float32)) for i, n in enumerate(lengths)]
        futures[5].cancel()  # a client that went away: never run
        results = await asyncio.gather(*futures[:5], futures[6])
        await batcher.stop()
        return lengths, results

    lengths, results = asyncio.run(scenario())
    assert [int(r[0]) for r in results] == [0, 1, 2, 3, 4, 6]  # each future got its own answer
    assert calls[0] == [100, 100, 100, 100]  # the 400-frame mel would pad 4x: it waits
    assert sorted(n for call in calls for n in call) == sorted([100, 100, 100, 400, 100, 90])
    for call in calls:
        assert len(call) * max(call) <= 1.25 * sum(call) or len(call) == 1


def test_urgent_windows_go_first():
    order: list[float] = []

    def run_batch(mels):
        order.extend(float(m[0, 0]) for m in mels)
        return [m[0] for m in mels]

    async def scenario():
        batcher = MicroBatcher("v", run_batch, ServeOptions(max_batch=1, max_wait_ms=20), ServiceMetrics())
        batcher.start()
        futures = [batcher.submit(np.full((1, 10), float(i), np.float32)) for i in range(3)]
        futures.append(batcher.submit(np.full((1, 10), 9.0, np.float32), urgent=True))
        await asyncio.gather(*futures)
        await batcher.stop()

    asyncio.run(scenario())
    assert order == [9.0, 0.0, 1.0, 2.0]


def test_serve_cli_refuses_bad_targets_in_one_line(tmp_path, capsys):
    from hifitrt.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert main(["serve", "--voice", "no-equals-sign"]) == 2
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)


def test_short_mels_are_one_window_and_cpu_voices_run_one_window_per_call():
    from hifitrt.serving.config import batch_for_device

    assert chunk_plan(200, 32, min_split_frames=320) == [(0, 200)]  # the split's context would cost 16 %
    assert chunk_plan(320, 32, min_split_frames=320) == [(0, 32), (32, 320)]
    assert batch_for_device(ServeOptions(), on_accelerator=False) == 1
    assert batch_for_device(ServeOptions(), on_accelerator=True) == 8
    assert batch_for_device(ServeOptions(max_batch=4), on_accelerator=False) == 4
    with pytest.raises(HifitrtError, match="split_overhead"):
        ServeOptions(split_overhead=0)
