"""TensorRT builder and runner, exercised on the CPU through the TensorRT TEST DOUBLE.

The double (tests/doubles/tensorrt_double.py) models the documented TensorRT 11.x API; the
engine it "builds" runs the ONNX graph with ONNX Runtime, so these tests check hifitrt's own
plumbing: strongly typed build settings, profiles, timing cache, plan checks, buffers, shapes
and profile switching. The context pool: test_tensorrt_pool.py; version-compatible plans and
lean runtimes: test_tensorrt_version_compat.py; the double itself against NVIDIA's headers:
test_tensorrt_double_fidelity.py. Real-GPU tests: test_tensorrt_gpu.py.
"""
from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from doubles.tensorrt_double import CpuDeviceBackend, inspect_plan, make_tensorrt_double, repack_plan
from hifitrt.engines.profiles import ShapeProfile, parse_profile, profile_for_shape
from hifitrt.engines.machine import DeviceInfo
from hifitrt.engines.tensorrt_builder import build_tensorrt_engine, timing_cache_file
from hifitrt.errors import EngineError, InputError
from hifitrt.runtime.runners import Runner
from hifitrt.runtime.tensorrt_runner import TensorRTRunner
from tiny_vocoder import CHANNELS, HOP, bad_operator_model, write_tiny_vocoder

PROFILES = (parse_profile("small=dynamic:1-4x4-16-32"), parse_profile("large=dynamic:1-2x32-64-128"))

# (batch, frames) covering min, opt, max and odd lengths of both profiles.
SHAPES = [(1, 4), (3, 17), (4, 32), (1, 33), (2, 128), (2, 77), (1, 16)]


@pytest.fixture(scope="module")
def onnx_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        "fp32": write_tiny_vocoder(root / "model.onnx"),
        "fp16": write_tiny_vocoder(root / "model.fp16.onnx", fp16=True),
    }


@pytest.fixture(scope="module")
def trt():
    return make_tensorrt_double()


@pytest.fixture(scope="module")
def built(onnx_paths, trt, tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    result = build_tensorrt_engine(
        onnx_paths["fp32"], root / "engine.plan", PROFILES, workspace_bytes=1 << 28,
        timing_cache_path=root / "timing.cache", trt_module=trt,
    )
    return result


def reference(onnx_path, mel):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"mel": mel})[0]


def random_mel(batch, frames, seed=0):
    return np.random.default_rng(seed + 1000 * batch + frames).standard_normal((batch, CHANNELS, frames)).astype(np.float32)


# -- build ---------------------------------------------------------------------------------------


def test_build_is_strongly_typed_with_tf32_cleared_and_no_precision_flags(built):
    plan = Path(built.plan_path).read_bytes()
    header = inspect_plan(plan)
    assert header["strongly_typed"] is True
    assert header["tf32"] is False and built.tf32 is False
    assert header["flags"] == []  # TF32 cleared, nothing set: no FP16/INT8 on any version
    assert header["workspace_bytes"] == 1 << 28
    assert header["profiles"] == [
        {"mel": [[1, CHANNELS, 4], [1, CHANNELS, 16], [4, CHANNELS, 32]]},
        {"mel": [[1, CHANNELS, 32], [1, CHANNELS, 64], [2, CHANNELS, 128]]},
    ]
    assert (built.num_profiles, built.in_channels, built.input_dtype, built.output_dtype) == (2, CHANNELS, "FLOAT", "FLOAT")
    assert built.plan_bytes == len(plan) and built.plan_sha256 == hashlib.sha256(plan).hexdigest()
    assert built.to_dict()["profiles"][1]["name"] == "large"


def test_plan_and_cache_written_without_leftover_temp_files(built):
    folder = Path(built.plan_path).parent
    assert sorted(p.name for p in folder.iterdir()) == ["engine.plan", "timing.cache"]


def test_timing_cache_is_saved_then_reused(onnx_paths, tmp_path):
    trt = make_tensorrt_double()
    cache = tmp_path / "timing.cache"
    first = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "a.plan", PROFILES, timing_cache_path=cache, trt_module=trt)
    stats_first = dict(trt.double_env.last_build_stats)
    assert cache.is_file() and not first.timing_cache_loaded
    assert stats_first["timing_cache_hits"] == 0 and stats_first["timing_cache_misses"] > 0

    second = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "b.plan", PROFILES, timing_cache_path=cache, trt_module=trt)
    stats_second = trt.double_env.last_build_stats
    assert second.timing_cache_loaded and second.warnings == ()
    assert stats_second == {"timing_cache_hits": stats_first["timing_cache_misses"], "timing_cache_misses": 0}


def test_timing_cache_from_another_gpu_is_replaced_with_a_warning(onnx_paths, tmp_path):
    cache = tmp_path / "timing.cache"
    other_gpu = make_tensorrt_double(compute_capability=(8, 6))
    build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "a.plan", PROFILES, timing_cache_path=cache, trt_module=other_gpu)

    this_gpu = make_tensorrt_double(compute_capability=(8, 9))
    result = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "b.plan", PROFILES, timing_cache_path=cache, trt_module=this_gpu)
    assert not result.timing_cache_loaded
    assert any("is not usable with this GPU/TensorRT" in w and "device property mismatch" in w for w in result.warnings)
    again = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "c.plan", PROFILES, timing_cache_path=cache, trt_module=this_gpu)
    assert again.timing_cache_loaded  # the saved cache now belongs to this GPU


def test_corrupt_timing_cache_is_not_loaded_and_not_saved_back(onnx_paths, tmp_path):
    """TensorRT returns a usable (empty) cache for garbage and only logs "The timing cache will
    not be used!"; that must not count as loaded, and the garbage must not survive the save."""
    trt = make_tensorrt_double()
    cache = tmp_path / "timing.cache"
    garbage = b"\x00garbage" * 10
    cache.write_bytes(garbage)
    result = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "a.plan", PROFILES, timing_cache_path=cache, trt_module=trt)
    assert not result.timing_cache_loaded
    assert any("Magic tag does not match" in w and "will not be used" in w for w in result.warnings)
    assert trt.double_env.last_build_stats["timing_cache_hits"] == 0
    saved = cache.read_bytes()
    assert saved != garbage and garbage not in saved
    again = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "b.plan", PROFILES, timing_cache_path=cache, trt_module=trt)
    assert again.timing_cache_loaded and again.warnings == ()
    assert trt.double_env.last_build_stats["timing_cache_misses"] == 0


def test_timing_cache_of_another_tensorrt_version_is_not_counted_as_loaded(onnx_paths, tmp_path):
    cache = tmp_path / "timing.cache"
    build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "a.plan", PROFILES, timing_cache_path=cache,
                          trt_module=make_tensorrt_double(version="11.1.0.106"))
    newer = make_tensorrt_double(version="11.4.0.106")
    result = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "b.plan", PROFILES, timing_cache_path=cache, trt_module=newer)
    assert not result.timing_cache_loaded and any("will not be used" in w for w in result.warnings)
    assert newer.double_env.last_build_stats["timing_cache_hits"] == 0


def test_timing_cache_file_is_named_by_tensorrt_version_and_gpu(tmp_path):
    l4 = timing_cache_file(tmp_path, "10.16.1.11", DeviceInfo("NVIDIA L4", "8.9"))
    assert l4 == tmp_path / "timing-10.16.1.11-nvidia-l4-sm89.cache"
    others = {
        timing_cache_file(tmp_path, "11.4.0.106", DeviceInfo("NVIDIA L4", "8.9")),
        timing_cache_file(tmp_path, "10.16.1.11", DeviceInfo("NVIDIA A10G", "8.6")),
        timing_cache_file(tmp_path, "10.16.1.11", DeviceInfo("NVIDIA A40", "8.6")),
        timing_cache_file(tmp_path, "10.16.1.11", None),
    }
    assert l4 not in others and len(others) == 4


def test_version_compatible_sets_lean_runtime_exclusion(onnx_paths, tmp_path):
    result = build_tensorrt_engine(
        onnx_paths["fp32"], tmp_path / "vc.plan", PROFILES, version_compatible=True,
        hardware_compatibility="ampere_plus", builder_optimization_level=5, trt_module=make_tensorrt_double(),
    )
    header = inspect_plan((tmp_path / "vc.plan").read_bytes())
    assert header["flags"] == ["EXCLUDE_LEAN_RUNTIME", "VERSION_COMPATIBLE"]
    assert header["hardware_compatibility_level"] == "AMPERE_PLUS" and header["builder_optimization_level"] == 5
    assert result.version_compatible and result.exclude_lean_runtime and result.hardware_compatibility == "ampere_plus"


def test_hardware_compatible_plan_loads_on_another_ampere_gpu_only(onnx_paths, tmp_path):
    plan = tmp_path / "hw.plan"
    build_tensorrt_engine(onnx_paths["fp32"], plan, PROFILES, hardware_compatibility="ampere_plus", trt_module=make_tensorrt_double())
    mel = random_mel(1, 20)
    with TensorRTRunner(plan, trt_module=make_tensorrt_double(compute_capability=(8, 6)), device=CpuDeviceBackend()) as runner:
        np.testing.assert_allclose(runner.infer(mel), reference(onnx_paths["fp32"], mel), rtol=0, atol=1e-6)
    with pytest.raises(EngineError, match="Ampere"):
        TensorRTRunner(plan, trt_module=make_tensorrt_double(compute_capability=(7, 5)), device=CpuDeviceBackend())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"workspace_bytes": 0}, "workspace"),
        ({"hardware_compatibility": "turing_plus"}, "hardware compatibility"),
        ({"builder_optimization_level": 9}, "optimization level"),
        ({"min_frames": 8}, "needs at least 8"),
    ],
)
def test_bad_build_options_are_refused(onnx_paths, tmp_path, options, message):
    with pytest.raises(EngineError, match=message):
        build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "x.plan", PROFILES, trt_module=make_tensorrt_double(), **options)
    assert not (tmp_path / "x.plan").exists()


# -- ONNX parsing and typing ---------------------------------------------------------------------


def test_invalid_onnx_names_the_failing_node(tmp_path):
    path = tmp_path / "bad.onnx"
    onnx.save(bad_operator_model(), str(path))
    with pytest.raises(EngineError) as info:
        build_tensorrt_engine(path, tmp_path / "bad.plan", PROFILES, trt_module=make_tensorrt_double())
    text = str(info.value)
    assert "node 1 'bad_node' (NotARealOp): UNSUPPORTED_NODE" in text and "\n" not in text
    assert not (tmp_path / "bad.plan").exists()


def test_unreadable_onnx_is_reported(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\xff\xfe not protobuf at all" * 5)
    with pytest.raises(EngineError, match="MODEL_DESERIALIZE_FAILED"):
        build_tensorrt_engine(path, tmp_path / "g.plan", PROFILES, trt_module=make_tensorrt_double())


def test_onnx_without_mel_input_is_refused(tmp_path):
    model = onnx.load(str(write_tiny_vocoder(tmp_path / "m.onnx")))
    for node in model.graph.node:
        node.input[:] = ["spec" if name == "mel" else name for name in node.input]
    model.graph.input[0].name = "spec"
    onnx.save(model, str(tmp_path / "spec.onnx"))
    with pytest.raises(EngineError, match="expected 'mel' -> 'wav'"):
        build_tensorrt_engine(tmp_path / "spec.onnx", tmp_path / "s.plan", PROFILES, trt_module=make_tensorrt_double())


def test_fp16_onnx_keeps_fp16_types_in_the_strongly_typed_network(onnx_paths, trt):
    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_paths["fp16"]))
    assert network.get_input(0).dtype == trt.DataType.FLOAT  # IO kept fp32 by the converter
    assert network.get_output(0).dtype == trt.DataType.FLOAT
    layer_types = {network.get_layer(i).name: network.get_layer(i).get_output(0).dtype for i in range(network.num_layers)}
    assert layer_types["conv_pre"] == trt.DataType.HALF and layer_types["up"] == trt.DataType.HALF


def test_fp16_engine_builds_and_runs_like_onnxruntime(onnx_paths, tmp_path, trt):
    plan = tmp_path / "fp16.plan"
    build_tensorrt_engine(onnx_paths["fp16"], plan, PROFILES, trt_module=trt)
    assert "HALF" in inspect_plan(plan.read_bytes())["layer_dtypes"]["conv_post"]
    mel = random_mel(2, 50)
    with TensorRTRunner(plan, trt_module=trt, device=CpuDeviceBackend()) as runner:
        np.testing.assert_allclose(runner.infer(mel), reference(onnx_paths["fp16"], mel), rtol=0, atol=1e-6)


def test_tensorrt_11_has_no_precision_flags(trt):
    for name in ("FP16", "INT8", "BF16"):
        with pytest.raises(AttributeError):
            getattr(trt.BuilderFlag, name)
    with pytest.raises(AttributeError):
        trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH  # noqa: B018


def test_double_refuses_weakly_typed_networks(trt):
    builder = trt.Builder(trt.Logger())
    with pytest.raises(ValueError, match="weakly typed"):
        builder.create_network(0)


def test_tensorrt_10_double_rejects_fp16_flag_with_strong_typing(onnx_paths, tmp_path):
    trt10 = make_tensorrt_double(version="10.16.1.11")
    messages = []

    class Capture(trt10.ILogger):
        def __init__(self):
            trt10.ILogger.__init__(self)

        def log(self, severity, msg):
            messages.append(msg)

    logger = Capture()
    builder = trt10.Builder(logger)
    network = builder.create_network(1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt10.OnnxParser(network, logger).parse_from_file(str(onnx_paths["fp32"]))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("mel", (1, CHANNELS, 4), (1, CHANNELS, 16), (1, CHANNELS, 32))
    config.add_optimization_profile(profile)
    config.set_flag(trt10.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    assert any("!config.getFlag(BuilderFlag::kFP16)" in m for m in messages)

    # hifitrt's own build uses the 10.x enum values (STRONGLY_TYPED = 1) and succeeds.
    result = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "t10.plan", PROFILES, trt_module=trt10)
    assert result.tensorrt_version == "10.16.1.11" and inspect_plan((tmp_path / "t10.plan").read_bytes())["flags"] == []


def test_profile_set_shape_requires_min_opt_max_order(trt):
    profile = trt.Builder(trt.Logger()).create_optimization_profile()
    with pytest.raises(RuntimeError):
        profile.set_shape("mel", (1, CHANNELS, 64), (1, CHANNELS, 16), (1, CHANNELS, 128))
    with pytest.raises(RuntimeError):
        profile.set_shape("mel", (1, CHANNELS, 4), (1, 16), (1, CHANNELS, 128))


def test_missing_or_old_tensorrt_gives_a_clear_error(onnx_paths, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError
    with pytest.raises(EngineError, match=r"TensorRT is not installed.*hifitrt\[gpu-cu12\].*hifitrt\[gpu-cu13\].*--backend onnxruntime"):
        build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "x.plan", PROFILES)
    with pytest.raises(EngineError, match="too old"):
        build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "x.plan", PROFILES, trt_module=make_tensorrt_double("10.11.0.33"))


# -- running -------------------------------------------------------------------------------------


def test_runner_reads_profiles_back_from_the_engine(built, trt):
    with TensorRTRunner(built.plan_path, trt_module=trt, device=CpuDeviceBackend()) as runner:
        assert [(p.batch_min, p.batch_opt, p.batch_max, p.frames_min, p.frames_opt, p.frames_max) for p in runner.profiles] == [
            (1, 1, 4, 4, 16, 32),
            (1, 1, 2, 32, 64, 128),
        ]
        assert runner.in_channels == CHANNELS and runner.name == "tensorrt"
        assert isinstance(runner, Runner) and runner.strict_profiles
        assert (runner.max_batch, runner.max_frames) == (4, 128)


def test_runner_matches_onnxruntime_in_every_profile(built, trt, onnx_paths):
    backend = CpuDeviceBackend()
    with TensorRTRunner(built.plan_path, trt_module=trt, device=backend) as runner:
        for batch, frames in SHAPES:
            mel = random_mel(batch, frames)
            wav = runner.infer(mel)
            assert wav.shape == (batch, 1, frames * HOP) and wav.dtype == np.float32
            np.testing.assert_allclose(wav, reference(onnx_paths["fp32"], mel), rtol=0, atol=1e-6)
            (slot,) = runner._idle  # one caller: one context, back in the pool after the call
            assert slot.context.active_optimization_profile == profile_for_shape(runner.profiles, batch, frames)
            assert runner.last_inference_time > 0
        # Buffers are sized for a profile's max shape: one input + one output per profile used.
        assert backend.allocations == 4
        allocations = backend.allocations
        runner.infer(random_mel(1, 5))
        assert backend.allocations == allocations  # a smaller shape reuses the buffers


def test_shapes_outside_every_profile_raise(built, trt):
    with TensorRTRunner(built.plan_path, trt_module=trt, device=CpuDeviceBackend()) as runner:
        for batch, frames in [(1, 129), (5, 10), (3, 64), (1, 3)]:
            with pytest.raises(EngineError, match="outside every optimization profile"):
                runner.infer(random_mel(batch, frames))


def test_bad_mels_raise_input_errors(built, trt):
    with TensorRTRunner(built.plan_path, trt_module=trt, device=CpuDeviceBackend()) as runner:
        with pytest.raises(InputError, match="expected \\[batch, 8, frames\\]"):
            runner.infer(np.zeros((1, CHANNELS + 1, 20), np.float32))
        nan = random_mel(1, 20)
        nan[0, 0, 3] = np.nan
        with pytest.raises(InputError, match="NaN"):
            runner.infer(nan)
        with pytest.raises(InputError):
            runner.infer(np.zeros((CHANNELS, 20), np.float32))


def _plan_variants(plan: bytes):
    middle = len(plan) // 2
    tampered = plan[:middle] + bytes([plan[middle] ^ 0xFF]) + plan[middle + 1 :]
    return {
        "truncated": (plan[:-100], make_tensorrt_double(), "truncated"),
        "foreign": (b"\x7fELF not an engine" * 64, make_tensorrt_double(), "Magic tag does not match"),
        "tampered": (tampered, make_tensorrt_double(), "corrupted"),
        "other_version_runtime": (plan, make_tensorrt_double(version="11.2.0.1"), "Version tag does not match"),
        "other_version_tag": (repack_plan(plan, tensorrt_version="10.16.1.11"), make_tensorrt_double(), "Version tag does not match"),
        "other_gpu": (plan, make_tensorrt_double(compute_capability=(8, 6)), "expecting compute 8.9 got compute 8.6"),
    }


@pytest.mark.parametrize("variant", ["truncated", "foreign", "tampered", "other_version_runtime", "other_version_tag", "other_gpu"])
def test_unloadable_plans_raise_engine_error_quoting_tensorrt(built, tmp_path, variant):
    data, runtime_double, said = _plan_variants(Path(built.plan_path).read_bytes())[variant]
    path = tmp_path / "engine.plan"
    path.write_bytes(data)
    with pytest.raises(EngineError) as info:
        TensorRTRunner(path, trt_module=runtime_double, device=CpuDeviceBackend())
    assert said in str(info.value) and "rebuild" in str(info.value)


def test_double_detects_a_context_shared_between_threads(built, trt):
    runtime = trt.Runtime(trt.Logger())
    engine = runtime.deserialize_cuda_engine(Path(built.plan_path).read_bytes())
    context = engine.create_execution_context()
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread in the middle of a call on the same context
        with context._exclusive("execute_async_v3"):
            busy.set()
            release.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    busy.wait(10)
    try:
        with pytest.raises(RuntimeError, match="one context per thread"):
            context.set_input_shape("mel", (1, CHANNELS, 16))
    finally:
        release.set()
        other.join()
    assert context.set_input_shape("mel", (1, CHANNELS, 16)) is True


def test_double_context_semantics(built, trt):
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(Path(built.plan_path).read_bytes())
    context = engine.create_execution_context()
    assert context.infer_shapes() == ["mel"]
    assert tuple(context.get_tensor_shape("wav")) == (-1, 1, -1)
    assert context.set_input_shape("mel", (1, CHANNELS, 64)) is False  # profile 0 max is 32 frames
    assert context.set_input_shape("mel", (1, CHANNELS + 1, 16)) is False
    assert context.set_input_shape("mel", (2, CHANNELS, 16)) is True
    assert context.infer_shapes() == [] and tuple(context.get_tensor_shape("wav")) == (2, 1, 16 * HOP)
    assert context.execute_async_v3(1) is False  # no addresses set
    context.set_optimization_profile_async(1, 1)
    assert context.infer_shapes() == ["mel"]  # switching profile forgets the shapes
    with pytest.raises(RuntimeError):
        context.set_optimization_profile_async(2, 1)
    assert trt.Runtime(trt.Logger()).engine_host_code_allowed is False  # TensorRT's default


def test_closed_runner_refuses_work(built, trt):
    runner = TensorRTRunner(built.plan_path, trt_module=trt, device=CpuDeviceBackend())
    runner.infer(random_mel(1, 8))
    runner.close()
    runner.close()
    with pytest.raises(EngineError, match="closed"):
        runner.infer(random_mel(1, 8))


def test_missing_plan_file(trt, tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        TensorRTRunner(tmp_path / "nope.plan", trt_module=trt, device=CpuDeviceBackend())


def test_engine_profiles_compare_equal_to_built_ranges(built, trt):
    with TensorRTRunner(built.plan_path, trt_module=trt, device=CpuDeviceBackend()) as runner:
        for built_profile, engine_profile in zip(built.profiles, runner.profiles):
            assert isinstance(engine_profile, ShapeProfile)
            assert built_profile.shapes(CHANNELS) == engine_profile.shapes(CHANNELS)
