"""The TensorRT builder and runner on a real GPU with real TensorRT (10.12+ or 11.x).

Marked ``gpu``; skipped, with the reason, where TensorRT or a CUDA GPU is missing (run
``pytest -rs`` to see it). The same tiny vocoder graph as the double-based tests is built and
run, so a difference between the TensorRT test double and TensorRT shows up here. A damaged plan
can crash the process inside TensorRT, so that case runs in a subprocess: a crash is reported as
a failure of that test, and the rest of the run still happens.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hifitrt.engines.profiles import parse_profile
from hifitrt.engines.machine import current_machine
from hifitrt.engines.tensorrt_builder import build_tensorrt_engine, timing_cache_file
from hifitrt.errors import EngineError
from hifitrt.runtime.tensorrt_runner import TensorRTRunner
from tiny_vocoder import CHANNELS, HOP, bad_operator_model, write_tiny_vocoder

pytestmark = pytest.mark.gpu

PROFILES = (parse_profile("small=dynamic:1-4x4-16-32"), parse_profile("large=dynamic:1-2x32-64-128"))
SHAPES = [(1, 4), (3, 17), (4, 32), (1, 33), (2, 128), (2, 77), (1, 16)]


def _missing_gpu_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or OSError when libnvinfer is missing
        return f"TensorRT is not installed ({type(exc).__name__}: {exc})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch (torch.cuda.is_available() is False)"
    return None


@pytest.fixture(scope="module")
def gpu() -> None:
    reason = _missing_gpu_reason()
    if reason is not None:
        print(f"\nskipping TensorRT GPU tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def onnx_paths(gpu, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_gpu")
    return {
        "fp32": write_tiny_vocoder(root / "model.onnx"),
        "fp16": write_tiny_vocoder(root / "model.fp16.onnx", fp16=True),
    }


@pytest.fixture(scope="module")
def fp32_plan(onnx_paths, tmp_path_factory):
    root = tmp_path_factory.mktemp("plan_gpu")
    here = current_machine()
    result = build_tensorrt_engine(
        onnx_paths["fp32"], root / "engine.plan", PROFILES, workspace_bytes=1 << 28,
        timing_cache_path=timing_cache_file(root, here.tensorrt_version, here.device),
    )
    return result


def reference(onnx_path, mel):
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"mel": mel})[0]


def random_mel(batch, frames):
    return np.random.default_rng(1000 * batch + frames).standard_normal((batch, CHANNELS, frames)).astype(np.float32)


def test_fp32_engine_matches_onnxruntime_in_every_profile(fp32_plan, onnx_paths):
    assert fp32_plan.tf32 is False and fp32_plan.num_profiles == 2
    with TensorRTRunner(fp32_plan.plan_path) as runner:
        assert [(p.frames_min, p.frames_opt, p.frames_max) for p in runner.profiles] == [(4, 16, 32), (32, 64, 128)]
        for batch, frames in SHAPES:
            mel = random_mel(batch, frames)
            wav = runner.infer(mel)
            assert wav.shape == (batch, 1, frames * HOP)
            np.testing.assert_allclose(wav, reference(onnx_paths["fp32"], mel), rtol=0, atol=1e-4)


def test_rebuild_loads_the_timing_cache(fp32_plan, onnx_paths, tmp_path):
    result = build_tensorrt_engine(
        onnx_paths["fp32"], tmp_path / "again.plan", PROFILES, timing_cache_path=fp32_plan.timing_cache_path
    )
    assert result.timing_cache_loaded and result.warnings == ()


def test_fp16_engine_matches_the_fp16_graph(onnx_paths, tmp_path):
    result = build_tensorrt_engine(onnx_paths["fp16"], tmp_path / "fp16.plan", PROFILES)
    assert (result.input_dtype, result.output_dtype) == ("FLOAT", "FLOAT")
    with TensorRTRunner(result.plan_path) as runner:
        for batch, frames in SHAPES:
            mel = random_mel(batch, frames)
            wav = runner.infer(mel)
            assert np.isfinite(wav).all()
            np.testing.assert_allclose(wav, reference(onnx_paths["fp16"], mel), rtol=0, atol=1e-2)


@pytest.mark.parametrize("context_memory", ["static", "on_profile_change"])
def test_32_threads_share_a_bounded_pool_of_contexts(fp32_plan, onnx_paths, context_memory):
    expected = {shape: reference(onnx_paths["fp32"], random_mel(*shape)) for shape in SHAPES}
    failures: list[str] = []
    with TensorRTRunner(fp32_plan.plan_path, max_contexts=4, context_memory=context_memory) as runner:

        def work(offset: int) -> None:
            for i in range(2):
                shape = SHAPES[(offset + i) % len(SHAPES)]
                try:
                    if not np.allclose(runner.infer(random_mel(*shape)), expected[shape], rtol=0, atol=1e-4):
                        failures.append(f"wrong result for {shape}")
                except Exception as exc:  # collected and asserted below
                    failures.append(repr(exc))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert runner.context_count <= 4
    assert failures == []


def test_shape_outside_profiles_raises(fp32_plan):
    with TensorRTRunner(fp32_plan.plan_path) as runner:
        with pytest.raises(EngineError, match="outside every optimization profile"):
            runner.infer(random_mel(1, 129))


LOAD_IN_CHILD = """
import sys
from hifitrt.errors import EngineError
from hifitrt.runtime.tensorrt_runner import TensorRTRunner
try:
    TensorRTRunner(sys.argv[1])
except EngineError as exc:
    print("ENGINE_ERROR", exc)
    sys.exit(3)
print("LOADED")
"""


@pytest.mark.parametrize("damage", ["foreign", "truncated"])
def test_foreign_and_truncated_plans_are_refused_without_crashing(fp32_plan, tmp_path, damage):
    """Run in a child process: if TensorRT crashes on the damaged plan, this test fails with the
    signal instead of killing the whole GPU test run."""
    plan = Path(fp32_plan.plan_path).read_bytes()
    data = {"foreign": b"not a TensorRT plan" * 100, "truncated": plan[: len(plan) // 2]}[damage]
    path = tmp_path / f"{damage}.plan"
    path.write_bytes(data)
    child = subprocess.run([sys.executable, "-c", LOAD_IN_CHILD, str(path)], capture_output=True, text=True, timeout=300)
    output = (child.stdout + child.stderr)[-2000:]
    assert child.returncode >= 0, f"TensorRT crashed (signal {-child.returncode}) on a {damage} plan: {output}"
    assert child.returncode == 3 and "cannot load" in child.stdout, output


def test_unsupported_operator_names_the_node(gpu, tmp_path):
    path = tmp_path / "bad.onnx"
    onnx.save(bad_operator_model(), str(path))
    with pytest.raises(EngineError, match="bad_node"):
        build_tensorrt_engine(path, tmp_path / "bad.plan", PROFILES)


def test_version_compatible_plan_loads_without_host_code(onnx_paths, tmp_path, fp32_plan):
    """VERSION_COMPATIBLE + EXCLUDE_LEAN_RUNTIME: the same TensorRT must load it while
    engine_host_code_allowed stays off (hifitrt never turns it on). Review item C1: if this fails,
    --version-compatible is unusable without host code."""
    result = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "vc.plan", PROFILES, version_compatible=True)
    mel = random_mel(1, 20)
    with TensorRTRunner(result.plan_path, built_with=result.tensorrt_version, version_compatible=True) as runner:
        assert runner.lean_runtime_path is None
        np.testing.assert_allclose(runner.infer(mel), reference(onnx_paths["fp32"], mel), rtol=0, atol=1e-4)


def test_hardware_compatible_plan_on_ampere_or_newer(onnx_paths, tmp_path):
    import torch

    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("hardware compatibility (ampere_plus) needs an Ampere or newer GPU")
    result = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "hw.plan", PROFILES, hardware_compatibility="ampere_plus")
    mel = random_mel(2, 40)
    with TensorRTRunner(result.plan_path) as runner:
        np.testing.assert_allclose(runner.infer(mel), reference(onnx_paths["fp32"], mel), rtol=0, atol=1e-4)


def test_build_and_run_on_the_last_gpu(onnx_paths, tmp_path):
    """The builder and runner use the GPU named "cuda:N" (the last one here), and the manifest
    check looks at that GPU."""
    import torch

    last = torch.cuda.device_count() - 1
    if last == 0:
        pytest.skip("one GPU: cuda:N with N > 0 needs a multi-GPU machine")
    result = build_tensorrt_engine(onnx_paths["fp32"], tmp_path / "last.plan", PROFILES, device_index=last)
    assert result.device_index == last
    mel = random_mel(1, 20)
    with TensorRTRunner(result.plan_path, device=f"cuda:{last}") as runner:
        np.testing.assert_allclose(runner.infer(mel), reference(onnx_paths["fp32"], mel), rtol=0, atol=1e-4)
