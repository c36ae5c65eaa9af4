"""TensorRTRunner's bounded pool of execution contexts, through the TensorRT TEST DOUBLE.

Each TensorRT execution context holds device memory for its activations, so the runner keeps at
most ``max_contexts`` of them however many threads call ``infer``. The double accounts every
context's device memory (``double_env.device_memory_in_use``/``_peak``), so these tests see the
memory a real GPU would lose, not just a context count.
"""
from __future__ import annotations

import gc
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

from doubles.tensorrt_double import CpuDeviceBackend, make_tensorrt_double
from hifitrt.engines.profiles import parse_profile
from hifitrt.engines.tensorrt_builder import build_tensorrt_engine
from hifitrt.errors import EngineError
from hifitrt.runtime.tensorrt_runner import TensorRTRunner
from tiny_vocoder import CHANNELS, write_tiny_vocoder

PROFILES = (parse_profile("small=dynamic:1-4x4-16-32"), parse_profile("large=dynamic:1-2x32-64-128"))
SHAPES = [(1, 4), (3, 17), (4, 32), (1, 33), (2, 128), (2, 77), (1, 16)]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return write_tiny_vocoder(tmp_path_factory.mktemp("pool") / "model.onnx")


@pytest.fixture(scope="module")
def plan(onnx_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("pool_plan") / "engine.plan"
    build_tensorrt_engine(onnx_path, path, PROFILES, trt_module=make_tensorrt_double())
    return path


@pytest.fixture(scope="module")
def expected(onnx_path):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return {shape: session.run(None, {"mel": mel(*shape)})[0] for shape in SHAPES}


def mel(batch, frames):
    return np.random.default_rng(1000 * batch + frames).standard_normal((batch, CHANNELS, frames)).astype(np.float32)


def hammer(runner, expected, threads=32, calls=3):
    """``threads`` threads, each calling infer ``calls`` times on rotating shapes; failures listed."""
    failures: list[str] = []
    start = threading.Barrier(threads)

    def work(offset: int) -> None:
        start.wait()
        for i in range(calls):
            shape = SHAPES[(offset + i) % len(SHAPES)]
            try:
                if not np.allclose(runner.infer(mel(*shape)), expected[shape], rtol=0, atol=1e-6):
                    failures.append(f"wrong result for {shape}")
            except Exception as exc:  # collected and asserted by the caller
                failures.append(repr(exc))

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    return failures


def released(env) -> int:
    gc.collect()  # contexts are freed when the last reference goes
    return env.device_memory_in_use


def test_32_threads_keep_at_most_the_pool_size_of_contexts_and_memory(plan, expected):
    trt = make_tensorrt_double()
    runner = TensorRTRunner(plan, trt_module=trt, device=CpuDeviceBackend(), max_contexts=4)
    per_context = runner._engine.device_memory_size_v2
    try:
        assert hammer(runner, expected) == []
        assert runner._engine.double_contexts_created <= 4 and runner.context_count <= 4
        assert runner._engine.double_contexts_created >= 2  # the threads really overlapped
        assert 0 < trt.double_env.device_memory_peak <= 4 * per_context
    finally:
        runner.close()
    assert released(trt.double_env) == 0


def test_the_unbounded_per_thread_design_would_have_held_32_contexts(plan, expected):
    """The same load with a pool as large as the thread count: memory grows with the threads,
    which is exactly what the bounded pool prevents (and why serving passes its worker count)."""
    trt = make_tensorrt_double()
    runner = TensorRTRunner(plan, trt_module=trt, device=CpuDeviceBackend(), max_contexts=32)
    try:
        assert hammer(runner, expected, calls=2) == []
        assert trt.double_env.device_memory_peak > 4 * runner._engine.device_memory_size_v2
    finally:
        runner.close()


def test_on_profile_change_contexts_hold_only_their_profiles_memory(plan, expected):
    trt = make_tensorrt_double()
    with TensorRTRunner(plan, trt_module=trt, device=CpuDeviceBackend(), max_contexts=1,
                        context_memory="on_profile_change") as runner:
        engine = runner._engine
        small, large = engine.get_device_memory_size_for_profile_v2(0), engine.get_device_memory_size_for_profile_v2(1)
        assert small < large == engine.device_memory_size_v2
        runner.infer(mel(1, 16))
        assert trt.double_env.device_memory_in_use == small
        np.testing.assert_allclose(runner.infer(mel(2, 77)), expected[(2, 77)], rtol=0, atol=1e-6)
        assert trt.double_env.device_memory_in_use == large  # reallocated on the profile switch
    assert released(trt.double_env) == 0


def test_static_contexts_hold_the_largest_profile(plan):
    trt = make_tensorrt_double()
    with TensorRTRunner(plan, trt_module=trt, device=CpuDeviceBackend(), max_contexts=1) as runner:
        runner.infer(mel(1, 16))
        assert trt.double_env.device_memory_in_use == runner._engine.device_memory_size_v2


def test_pool_prefers_a_context_already_on_the_needed_profile(plan):
    trt = make_tensorrt_double()
    with TensorRTRunner(plan, trt_module=trt, device=CpuDeviceBackend(), max_contexts=2) as runner:
        first, second = runner._checkout(0), runner._checkout(1)
        runner._run(first, 0, mel(1, 16))
        runner._run(second, 1, mel(1, 64))
        runner._checkin(first)
        runner._checkin(second)
        again_first, again_second = runner._checkout(0), runner._checkout(1)
        runner._checkin(again_first)
        runner._checkin(again_second)
        assert again_first is first and again_second is second


def test_close_is_safe_while_threads_call_infer(plan, expected):
    trt = make_tensorrt_double()
    runner = TensorRTRunner(plan, trt_module=trt, device=CpuDeviceBackend(), max_contexts=3)
    outcomes: list[str] = []

    def loop() -> None:
        for _ in range(100_000):  # until close() refuses the next call
            try:
                wav = runner.infer(mel(2, 77))
                outcomes.append("ok" if np.allclose(wav, expected[(2, 77)], rtol=0, atol=1e-6) else "wrong")
            except EngineError as exc:
                outcomes.append("closed" if "closed" in str(exc) else f"error: {exc}")
                return
            except Exception as exc:  # anything else is the race the pool must prevent
                outcomes.append(f"crash: {exc!r}")
                return

    workers = [threading.Thread(target=loop) for _ in range(8)]
    for t in workers:
        t.start()
    deadline = time.monotonic() + 10
    while outcomes.count("ok") < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.close()
    for t in workers:
        t.join(30)
    assert not any(t.is_alive() for t in workers)
    assert outcomes.count("ok") >= 8
    assert set(outcomes) <= {"ok", "closed"}, [o for o in outcomes if o not in ("ok", "closed")]
    assert outcomes.count("closed") == 8  # every thread was told, none crashed
    assert runner.context_count == 0 and released(trt.double_env) == 0


def test_context_that_does_not_fit_in_device_memory_is_an_engine_error(plan):
    trt = make_tensorrt_double(device_memory=1000)  # less than one context needs
    with TensorRTRunner(plan, trt_module=trt, device=CpuDeviceBackend()) as runner:
        with pytest.raises(EngineError, match="out of memory.*lower max_contexts"):
            runner.infer(mel(1, 16))
        assert runner.context_count == 0  # the failed slot was given back


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_pool_size_must_be_a_positive_whole_number(plan, bad):
    with pytest.raises(EngineError, match="max_contexts"):
        TensorRTRunner(plan, trt_module=make_tensorrt_double(), device=CpuDeviceBackend(), max_contexts=bad)


def test_unknown_context_memory_strategy_is_refused(plan):
    with pytest.raises(EngineError, match="context_memory"):
        TensorRTRunner(plan, trt_module=make_tensorrt_double(), device=CpuDeviceBackend(), context_memory="lazy")
