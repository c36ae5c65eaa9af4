"""Version-compatible TensorRT plans after a TensorRT upgrade, through the TensorRT TEST DOUBLE.

A plan built with VERSION_COMPATIBLE + EXCLUDE_LEAN_RUNTIME runs on a newer TensorRT only through
the lean runtime of the version that built it, loaded with ``Runtime.load_runtime`` (TensorRT's
NvInferRuntime.h). The double models exactly that (and refuses the plan otherwise), so these
tests show hifitrt loading such a plan through the lean runtime when it is installed, and
refusing with the pip command that installs it when it is not. The manifest check follows the
same rule, including NVIDIA's "TensorRT 10 version-compatible engines can run with a TensorRT 11
runtime".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from doubles.tensorrt_double import CpuDeviceBackend, make_tensorrt_double, write_lean_runtime_library
from hifitrt.engines.profiles import parse_profile
from hifitrt.engines.tensorrt_builder import build_tensorrt_engine
from hifitrt.engines.tensorrt_install import (
    LEAN_LIBRARY_ENV,
    find_lean_runtime,
    lean_wheel,
    version_compatible_runtime_ok,
)
from hifitrt.errors import EngineError
from hifitrt.runtime.tensorrt_runner import TensorRTRunner
from tiny_vocoder import CHANNELS, write_tiny_vocoder

PROFILES = (parse_profile("small=dynamic:1-4x4-16-32"),)
OLD, NEW = "10.16.1.11", "11.4.0.106"


@pytest.fixture(autouse=True)
def no_lean_runtime_from_the_environment(monkeypatch):
    monkeypatch.delenv(LEAN_LIBRARY_ENV, raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return write_tiny_vocoder(tmp_path_factory.mktemp("vc") / "model.onnx")


def build(onnx_path, folder: Path, version: str, version_compatible: bool) -> Path:
    plan = folder / f"{version}-{'vc' if version_compatible else 'plain'}.plan"
    build_tensorrt_engine(onnx_path, plan, PROFILES, version_compatible=version_compatible,
                          trt_module=make_tensorrt_double(version=version))
    return plan


@pytest.fixture(scope="module")
def old_vc_plan(onnx_path, tmp_path_factory):
    return build(onnx_path, tmp_path_factory.mktemp("vc_plans"), OLD, True)


def mel():
    return np.random.default_rng(7).standard_normal((2, CHANNELS, 20)).astype(np.float32)


def reference(onnx_path, x):
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"mel": x})[0]


def runner(plan, version=NEW, **kwargs):
    return TensorRTRunner(plan, trt_module=make_tensorrt_double(version=version), device=CpuDeviceBackend(), **kwargs)


def test_older_version_compatible_plan_runs_through_the_build_versions_lean_runtime(old_vc_plan, onnx_path, tmp_path, monkeypatch):
    library = write_lean_runtime_library(tmp_path / "libnvinfer_lean.so.10", OLD)
    monkeypatch.setenv(LEAN_LIBRARY_ENV, library)
    with runner(old_vc_plan, built_with=OLD, version_compatible=True) as trt_runner:
        assert trt_runner.lean_runtime_path == Path(library)
        x = mel()
        np.testing.assert_allclose(trt_runner.infer(x), reference(onnx_path, x), rtol=0, atol=1e-6)


def test_without_the_lean_runtime_the_runner_names_the_wheel_to_install(old_vc_plan):
    with pytest.raises(EngineError) as info:
        runner(old_vc_plan, built_with=OLD, version_compatible=True)
    text = str(info.value)
    assert f"pip install tensorrt-lean-cu12=={OLD}" in text and LEAN_LIBRARY_ENV in text and "\n" not in text


def test_a_lean_runtime_of_another_version_does_not_load_the_plan(old_vc_plan, tmp_path):
    wrong = write_lean_runtime_library(tmp_path / "libnvinfer_lean.so.10", "10.13.0.35")
    with pytest.raises(EngineError, match="cannot load .*Version tag does not match"):
        runner(old_vc_plan, built_with=OLD, version_compatible=True, lean_runtime=wrong)


def test_a_file_that_is_no_lean_runtime_is_refused(old_vc_plan, tmp_path):
    bogus = tmp_path / "libnvinfer_lean.so.10"
    bogus.write_bytes(b"\x7fELF something else")
    with pytest.raises(EngineError, match="could not load the TensorRT 10.16.1.11 lean runtime"):
        runner(old_vc_plan, built_with=OLD, version_compatible=True, lean_runtime=bogus)


def test_same_version_needs_no_lean_runtime(old_vc_plan, onnx_path):
    with runner(old_vc_plan, version=OLD, built_with=OLD, version_compatible=True) as trt_runner:
        assert trt_runner.lean_runtime_path is None
        x = mel()
        np.testing.assert_allclose(trt_runner.infer(x), reference(onnx_path, x), rtol=0, atol=1e-6)


def test_plain_plan_of_another_version_is_refused_by_tensorrt(onnx_path, tmp_path):
    plain = build(onnx_path, tmp_path, OLD, False)
    with pytest.raises(EngineError, match=r"cannot load .*built by TensorRT 10.16.1.11.*Version tag does not match.*rebuild"):
        runner(plain, built_with=OLD, version_compatible=False)


def test_plan_from_a_newer_tensorrt_is_refused_without_looking_for_a_runtime(onnx_path, tmp_path):
    newer = build(onnx_path, tmp_path, NEW, True)
    with pytest.raises(EngineError, match="which TensorRT 10.16.1.11 cannot run"):
        runner(newer, version=OLD, built_with=NEW, version_compatible=True)


def test_double_refuses_an_excluded_lean_plan_on_a_newer_runtime_without_load_runtime(old_vc_plan):
    """What hifitrt did before: deserialising with the newer runtime itself fails in TensorRT."""
    trt = make_tensorrt_double(version=NEW)
    runtime = trt.Runtime(trt.Logger())
    assert runtime.deserialize_cuda_engine(old_vc_plan.read_bytes()) is None


def test_double_embedded_lean_runtime_needs_host_code_permission(onnx_path):
    """A VERSION_COMPATIBLE plan that keeps its lean runtime carries host code: TensorRT loads it
    on a newer version only with engine_host_code_allowed (which hifitrt never sets)."""
    old = make_tensorrt_double(version=OLD)
    logger = old.Logger()
    builder = old.Builder(logger)
    network = builder.create_network(1 << int(old.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert old.OnnxParser(network, logger).parse_from_file(str(onnx_path))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("mel", (1, CHANNELS, 4), (1, CHANNELS, 16), (1, CHANNELS, 32))
    config.add_optimization_profile(profile)
    config.set_flag(old.BuilderFlag.VERSION_COMPATIBLE)
    plan = bytes(builder.build_serialized_network(network, config))
    new = make_tensorrt_double(version=NEW)
    runtime = new.Runtime(new.Logger())
    assert runtime.deserialize_cuda_engine(plan) is None
    runtime.engine_host_code_allowed = True
    assert runtime.deserialize_cuda_engine(plan) is not None


# -- where the lean runtime is looked for ---------------------------------------------------------


def fake_lean_wheel(site: Path, version: str, cuda: str = "12") -> Path:
    """An installed ``tensorrt-lean-cuNN-libs`` distribution as pip lays it out."""
    package = site / "tensorrt_lean_libs"
    package.mkdir(parents=True)
    library = package / "libnvinfer_lean.so.10"
    write_lean_runtime_library(library, version)
    info = site / f"tensorrt_lean_cu{cuda}_libs-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tensorrt_lean_cu{cuda}_libs\nVersion: {version}\n")
    (info / "RECORD").write_text(
        f"tensorrt_lean_libs/libnvinfer_lean.so.10,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n"
    )
    return library


def test_lean_runtime_is_found_in_the_pip_wheel_of_exactly_the_build_version(tmp_path):
    library = fake_lean_wheel(tmp_path / "site", OLD)
    assert find_lean_runtime(OLD, search_path=[str(tmp_path / "site")], library_dirs=[]) == library
    assert find_lean_runtime("10.16.1.12", search_path=[str(tmp_path / "site")], library_dirs=[]) is None


def test_lean_runtime_is_found_in_system_library_folders_by_full_version(tmp_path):
    (tmp_path / "libnvinfer_lean.so.10.16.0").write_bytes(b"other release")
    assert find_lean_runtime(OLD, search_path=[], library_dirs=[str(tmp_path)]) is None
    wanted = tmp_path / "libnvinfer_lean.so.10.16.1"
    wanted.write_bytes(b"x")
    assert find_lean_runtime(OLD, search_path=[], library_dirs=[str(tmp_path)]) == wanted


def test_explicit_path_and_environment_variable_win(tmp_path, monkeypatch):
    chosen = tmp_path / "lean.so"
    chosen.write_bytes(b"x")
    assert find_lean_runtime(OLD, explicit=chosen, search_path=[], library_dirs=[]) == chosen
    monkeypatch.setenv(LEAN_LIBRARY_ENV, str(chosen))
    assert find_lean_runtime(OLD, search_path=[], library_dirs=[]) == chosen
    monkeypatch.setenv(LEAN_LIBRARY_ENV, str(tmp_path / "missing.so"))
    assert find_lean_runtime(OLD, search_path=[], library_dirs=[]) is None


@pytest.mark.parametrize(
    "built, here, ok",
    [
        ("10.13.0.35", "10.16.1.11", True),   # newer release of the same major
        ("10.16.1.11", "10.13.0.35", False),  # older runtime
        ("10.16.1.11", "11.4.0.106", True),   # TensorRT 10 plans on TensorRT 11 (support matrix)
        ("11.1.0.106", "11.4.0.106", True),
        ("11.4.0.106", "12.0.0.1", False),    # no other cross-major pair is supported
        ("8.6.1.6", "11.4.0.106", False),
    ],
)
def test_which_runtimes_may_run_a_version_compatible_plan(built, here, ok):
    assert version_compatible_runtime_ok(built, here) is ok


def test_lean_wheel_names_the_cuda_major():
    assert lean_wheel(OLD, "13") == f"tensorrt-lean-cu13=={OLD}"
    assert lean_wheel(OLD, None) == f"tensorrt-lean-cu12=={OLD}"
