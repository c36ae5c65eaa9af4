"""Streaming first audio: the small first window, the first-audio lane and the per-device
engine-call defaults of `serve` (a real uvicorn server, a real httpx client, the session's tiny
ONNX Runtime engine; the batcher's scheduling with real threads)."""
from __future__ import annotations

import asyncio
import io
import os
import threading
import time

import httpx
import numpy as np
import pytest
from live_server import serving

from hifitrt.serving import ServeOptions, create_app
from hifitrt.serving.batcher import MicroBatcher
from hifitrt.serving.config import cpu_cores, lane_for_device, threads_for_device, workers_for_device
from hifitrt.serving.metrics import ServiceMetrics
from hifitrt.serving.voices import chunk_plan, split_cost


def _npy(mel: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, mel, allow_pickle=False)
    return buf.getvalue()


def _mel(channels: int, frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.standard_normal((channels, frames)), axis=1) * 0.1 - 4.0).astype(np.float32)


# ----------------------------------------------------------------------------------- planning

def test_a_first_window_within_the_left_context_costs_only_its_own_frames():
    assert split_cost(8, left=16, right=16) == 24  # the rest starts at frame 0: it is the whole mel
    assert split_cost(16, left=16, right=16) == 32
    assert split_cost(64, left=16, right=16) == 32  # past the left context: left + right, as before
    assert chunk_plan(17, 8) == [(0, 8), (8, 17)]
    assert chunk_plan(16, 8) == [(0, 16)]


def test_engine_calls_default_by_device():
    cores = cpu_cores()
    defaults = ServeOptions()
    assert workers_for_device(defaults, on_accelerator=False) == cores
    assert threads_for_device(defaults, on_accelerator=False) == 1
    assert lane_for_device(defaults, on_accelerator=False) == cores
    assert workers_for_device(defaults, on_accelerator=True) == 1
    assert threads_for_device(defaults, on_accelerator=True) is None
    assert lane_for_device(defaults, on_accelerator=True) == 0
    one = ServeOptions(workers=1, first_window_workers=0)
    assert threads_for_device(one, on_accelerator=False) == cores and lane_for_device(one, False) == 0
    assert threads_for_device(ServeOptions(engine_threads=3), on_accelerator=False) == 3
    with pytest.raises(Exception, match="first_window_workers"):
        ServeOptions(first_window_workers=-1)
    with pytest.raises(Exception, match="engine_threads"):
        ServeOptions(engine_threads=0)


# ------------------------------------------------------------------------------ the lane

class _Gate:
    """An engine stand-in for scheduling tests: a window of negative value v blocks until
    ``open(v)``; records when each window starts and ends (real threads, real blocking)."""

    def __init__(self) -> None:
        self.gates: dict[float, threading.Event] = {}
        self.events: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def open(self, value: float) -> None:
        with self.lock:
            self.gates.setdefault(value, threading.Event()).set()

    def __call__(self, mels):
        value = float(mels[0][0, 0])
        with self.lock:
            self.events.append(("start", value))
            gate = self.gates.setdefault(value, threading.Event()) if value < 0 else None
        if gate is not None:
            assert gate.wait(10), "test gate never opened"
        with self.lock:
            self.events.append(("end", value))
        return [m[0] for m in mels]

    def started(self, value: float) -> bool:
        with self.lock:
            return ("start", value) in self.events


def _window(value: float) -> np.ndarray:
    return np.full((1, 10), value, np.float32)


async def _until(condition) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the batcher"
        await asyncio.sleep(0.01)


def _lane_batcher(gate: _Gate) -> MicroBatcher:
    return MicroBatcher("v", gate, ServeOptions(max_batch=1, max_wait_ms=0), ServiceMetrics(),
                        workers=1, lane_workers=1)


def test_a_first_window_runs_on_the_lane_beside_a_long_window():
    gate = _Gate()

    async def scenario():
        batcher = _lane_batcher(gate)
        batcher.start()
        long = batcher.submit(_window(-1.0))  # takes the one worker and blocks
        await _until(lambda: gate.started(-1.0))
        queued = batcher.submit(_window(2.0))  # must wait for the worker
        first = batcher.submit(_window(3.0), urgent=True)
        await asyncio.wait_for(first, 5)  # answered while the long window still runs
        done_early = (long.done(), queued.done())
        gate.open(-1.0)
        await asyncio.gather(long, queued)
        await batcher.stop()
        return done_early

    assert asyncio.run(scenario()) == (False, False)
    events = gate.events
    assert events.index(("end", 3.0)) < events.index(("end", -1.0)) < events.index(("start", 2.0))


def test_with_a_lane_workers_keep_arrival_order_so_no_tail_starves():
    gate = _Gate()

    async def scenario():
        batcher = _lane_batcher(gate)
        batcher.start()
        tail_a = batcher.submit(_window(-1.0))  # a stream's tail, on the worker
        await _until(lambda: gate.started(-1.0))
        first_a = batcher.submit(_window(-10.0), urgent=True)  # a first window, on the lane
        await _until(lambda: gate.started(-10.0))
        tail_b = batcher.submit(_window(2.0))  # another tail, queued first ...
        later = [batcher.submit(_window(11.0 + i), urgent=True) for i in range(3)]  # ... then new streams
        gate.open(-1.0)  # the worker is free while the lane is still busy
        await asyncio.wait_for(tail_b, 5)
        gate.open(-10.0)
        await asyncio.gather(tail_a, first_a, *later)
        await batcher.stop()

    asyncio.run(scenario())
    starts = [v for kind, v in gate.events if kind == "start"]
    # the free worker took the older tail, not the newer first windows queued for the lane
    assert starts.index(2.0) < min(starts.index(11.0 + i) for i in range(3))
    assert sorted(v for v in starts if v >= 11) == [11.0, 12.0, 13.0]  # every first window ran

@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread nice needs Linux")
def test_worker_nice_lowers_only_the_workers_priority():
    seen: dict[float, int] = {}

    def run_batch(mels):
        seen[float(mels[0][0, 0])] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return [m[0] for m in mels]

    async def scenario():
        batcher = MicroBatcher("v", run_batch, ServeOptions(max_batch=1, max_wait_ms=0, worker_nice=5),
                               ServiceMetrics(), workers=1, lane_workers=1)
        batcher.start()
        await asyncio.gather(batcher.submit(_window(1.0)), batcher.submit(_window(2.0), urgent=True))
        await batcher.stop()

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    asyncio.run(scenario())
    assert seen == {1.0: min(19, base + 5), 2.0: base}


# ------------------------------------------------------------------------- over real HTTP

def test_small_first_window_keeps_streamed_equal_to_whole_byte_for_byte(tiny_fp32_engine):
    from hifitrt.runtime import VocoderEngine

    with VocoderEngine.load(tiny_fp32_engine) as engine:
        channels, hop = engine.in_channels, engine.hop
        left = int(engine.spec.left_context_frames)
    first = 8
    assert first <= left  # the case under test: the rest of the mel is vocoded whole
    app = create_app([tiny_fp32_engine], options=ServeOptions(first_chunk_frames=first, split_overhead=1.0))
    voice = next(iter(app.state.voices.values()))
    assert voice.lane_workers >= 1 and voice.max_batch == 1  # a CPU voice: one window per call, a lane
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        for frames in (12, 17, 40, 333):
            mel = _mel(channels, frames, frames)
            whole = client.post("/v1/vocode?format=pcm", content=_npy(mel))
            assert whole.status_code == 200, whole.text
            with client.stream("POST", "/v1/vocode?format=pcm&stream=true", content=_npy(mel)) as streamed:
                assert streamed.status_code == 200
                pieces = [p for p in streamed.iter_bytes() if p]
            assert b"".join(pieces) == whole.content
            assert len(whole.content) == 2 * frames * hop
            expected_plan = [(0, first), (first, frames)] if frames > 2 * first else [(0, frames)]
            assert voice.plan(frames) == expected_plan
