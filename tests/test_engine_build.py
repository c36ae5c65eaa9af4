"""build_engine end to end: files and manifest, reuse, rebuild on change or damage, the TensorRT
path through the test double, concurrent builds of one directory.

A tiny random KAN-TTS vocoder (hifigan_v1_8k config shrunk to 16 channels) keeps each build
to seconds; the built-in default vocoder is covered by one slow test (HIFITRT_RUN_SLOW=1).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from hifitrt.engines.build import build_engine
from hifitrt.engines.machine import DeviceInfo, Machine
from hifitrt.engines.describe import inspect_engine_dir
from hifitrt.engines.manifest import read_manifest, verify_engine_dir
from hifitrt.engines.onnxruntime_engine import read_session_config
from hifitrt.engines.profiles import ShapeProfile
from hifitrt.export import kantts_random as synthetic
from hifitrt.errors import EngineError

FAST = {"backend": "onnxruntime", "precision": "fp32", "profiles": ["fixed:1x64"], "verify_export": False}


def _tiny_config(root: Path) -> Path:
    data = yaml.safe_load((synthetic.kantts_configs_dir() / "hifigan_v1_8k.yaml").read_text())
    data["Model"]["Generator"]["params"].update(
        channels=16, upsample_scales=[10, 10], upsample_kernal_sizes=[20, 20],
        resblock_kernel_sizes=[3], resblock_dilations=[[1, 3]],
    )
    path = root / "tiny_8k.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _save_checkpoint(config: Path, stage: Path, seed: int) -> Path:
    module = synthetic.random_weight_norm_generator(synthetic.generator_params(config), seed=seed)
    return synthetic.save_kantts_checkpoint(module, config, stage)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_config(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_checkpoint(tiny_config, tmp_path_factory.mktemp("voc"), seed=0)


@pytest.fixture(scope="module")
def fp16_build(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    lines: list[str] = []
    out = tmp_path_factory.mktemp("fp16") / "engine"
    started = time.perf_counter()
    result = build_engine(tiny_ckpt, out, backend="onnxruntime", precision="fp16",
                          profiles=["short=dynamic:1-2x8-32-64"], progress=lines.append)
    return result, time.perf_counter() - started, lines


@pytest.fixture(scope="module")
def fp32_engine(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fp32") / "engine"
    build_engine(tiny_ckpt, out, **FAST)
    return out


def test_onnxruntime_fp16_build_writes_the_engine_directory(fp16_build) -> None:
    result, _, lines = fp16_build
    out = result.engine_dir
    assert not result.reused
    for rel in ("manifest.json", "model.onnx", "model.fp16.onnx", "precision_plan.json", "onnxruntime/session.json"):
        assert (out / rel).is_file(), rel
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")], "staging dir left behind"
    manifest = verify_engine_dir(out)
    assert manifest == result.manifest
    assert manifest.backend["name"] == "onnxruntime" and manifest.backend["providers"][-1] == "CPUExecutionProvider"
    assert manifest.precision == "fp16" and manifest.engine_file == "model.fp16.onnx"
    assert manifest.device is None and manifest.quick_parity is None
    assert manifest.source["spec"]["sample_rate"] == 8000 and manifest.source["spec"]["hop"] == 100
    assert manifest.profiles == (ShapeProfile(1, 1, 2, 8, 32, 64, "short"),)
    assert manifest.onnx_digest == manifest.artifacts["model.onnx"]["sha256"]
    assert manifest.precision_plan_digest == manifest.artifacts["precision_plan.json"]["sha256"]
    assert len(manifest.build_key) == 64 and manifest.build_seconds > 0
    session = read_session_config(out)
    assert session.model == "model.fp16.onnx" and session.providers == manifest.backend["providers"]
    assert session.graph_optimization_level == "ORT_ENABLE_ALL" and session.use_tensorrt_ep is False
    assert [l[:5] for l in lines if l.startswith("[")] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert all(l.rstrip(")").endswith(" s") for l in lines if l.startswith("["))
    assert set(result.steps) == {"load", "export", "precision", "engine", "manifest"}
    assert oct((out / "manifest.json").stat().st_mode & 0o777) == oct(0o644)
    # The ONNX Runtime engine opens with the recorded session options and runs.
    import numpy as np

    sess = session.create_session(out)
    wav = sess.run(["wav"], {"mel": np.zeros((1, 80, 20), np.float32) - 5})[0]
    assert wav.shape == (1, 1, 2000) and np.isfinite(wav).all()


def test_second_build_reuses_quickly(fp16_build, tiny_ckpt: Path) -> None:
    first, first_seconds, _ = fp16_build
    lines: list[str] = []
    started = time.perf_counter()
    again = build_engine(tiny_ckpt, first.engine_dir, backend="onnxruntime", precision="fp16",
                         profiles=["short=dynamic:1-2x8-32-64"], progress=lines.append)
    seconds = time.perf_counter() - started
    assert again.reused and again.manifest.build_key == first.manifest.build_key
    assert seconds < first_seconds / 3, (seconds, first_seconds)
    assert any("reusing engine" in l and "artifacts verified" in l for l in lines)
    # Another precision is another engine: not reused.
    assert not build_engine(tiny_ckpt, first.engine_dir, **FAST).reused


def test_changed_weights_trigger_a_rebuild(tiny_config: Path, tmp_path: Path) -> None:
    stage = tmp_path / "voc"
    ckpt = _save_checkpoint(tiny_config, stage, seed=0)
    out = tmp_path / "engine"
    first = build_engine(ckpt, out, **FAST)
    _save_checkpoint(tiny_config, stage, seed=1)  # same path, new weights
    second = build_engine(ckpt, out, **FAST)
    assert not second.reused
    assert "vocoder weights" in second.rebuild_reason
    assert second.manifest.source["spec"]["digest"] != first.manifest.source["spec"]["digest"]
    assert second.manifest.onnx_digest != first.manifest.onnx_digest
    verify_engine_dir(out)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_artifact_is_named_then_rebuilt(fp32_engine: Path, tiny_ckpt: Path, tmp_path: Path,
                                                damage: str) -> None:
    out = tmp_path / "engine"
    shutil.copytree(fp32_engine, out)
    model = out / "model.onnx"
    data = bytearray(model.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) - 10]
    model.write_bytes(bytes(data))
    expected = "damaged (sha256 mismatch)" if damage == "flip" else "truncated"
    with pytest.raises(EngineError, match=re.escape(f"engine file model.onnx is {expected}")):
        verify_engine_dir(out)
    with pytest.raises(EngineError, match="model.onnx"):
        inspect_engine_dir(out)
    rebuilt = build_engine(tiny_ckpt, out, **FAST)
    assert not rebuilt.reused and "failed verification" in rebuilt.rebuild_reason
    assert "all 2 artifacts verified" in inspect_engine_dir(out)  # fp32: model.onnx + session.json


def test_force_rebuilds(fp32_engine: Path, tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "engine"
    shutil.copytree(fp32_engine, out)
    assert build_engine(tiny_ckpt, out, **FAST).reused
    (out / ".staging-killed").mkdir()  # left by a build that was killed
    assert not build_engine(tiny_ckpt, out, force=True, **FAST).reused
    assert not (out / ".staging-killed").exists()


def test_bad_request_leaves_the_engine_intact(fp32_engine: Path, tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "engine"
    shutil.copytree(fp32_engine, out)
    with pytest.raises(EngineError, match="frames min/opt/max"):
        build_engine(tiny_ckpt, out, **{**FAST, "profiles": ["dynamic:1-2x64-32-128"]})
    with pytest.raises(EngineError, match="unknown precision"):
        build_engine(tiny_ckpt, out, **{**FAST, "precision": "int8"})
    verify_engine_dir(out)


def test_tensorrt_path_through_the_double(tiny_ckpt: Path, tmp_path: Path) -> None:
    from doubles.tensorrt_double import make_tensorrt_double

    trt = make_tensorrt_double(version="11.1.0.0", compute_capability=(8, 9))
    here = Machine(DeviceInfo("NVIDIA L4", "8.9"), "11.1.0.0")
    out = tmp_path / "trt"
    options = dict(backend="tensorrt", precision="fp32", profiles=["fixed:1x32", "dynamic:1-2x33-48-64"],
                   verify_export=False, trt_module=trt, machine=here)
    result = build_engine(tiny_ckpt, out, **options)
    assert not result.reused
    manifest = verify_engine_dir(out, machine=here)
    assert manifest.engine_file == "tensorrt/engine.plan"
    # one timing cache per TensorRT version and GPU (the double's build machine has no CUDA GPU)
    assert [p.name for p in (out / "tensorrt").glob("timing-*.cache")] == ["timing-11.1.0.0-no-gpu.cache"]
    assert manifest.backend["name"] == "tensorrt" and manifest.backend["version"] == "11.1.0.0"
    assert manifest.device == {"gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    assert manifest.backend["build"]["strongly_typed"] is True and manifest.backend["build"]["tf32"] is False
    assert not (out / "onnxruntime" / "session.json").exists()
    assert build_engine(tiny_ckpt, out, **options).reused

    # The manifest now claims another GPU and TensorRT: refused, naming both, before any load...
    data = json.loads((out / "manifest.json").read_text())
    data["device"] = {"gpu_name": "NVIDIA A10G", "compute_capability": "8.6"}
    data["backend"]["version"] = "10.13.0"
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EngineError) as info:
        verify_engine_dir(out, machine=here)
    message = str(info.value)
    assert "built for NVIDIA A10G (8.6) with TensorRT 10.13.0" in message
    assert "this machine has NVIDIA L4 (8.9) with TensorRT 11.1.0.0" in message
    # ... and a build rebuilds it for this machine instead of crashing inside TensorRT.
    rebuilt = build_engine(tiny_ckpt, out, **options)
    assert not rebuilt.reused and "failed verification" in rebuilt.rebuild_reason
    assert read_manifest(out).device == {"gpu_name": "NVIDIA L4", "compute_capability": "8.9"}


def test_tensorrt_backend_needs_a_gpu_or_tensorrt(tiny_ckpt: Path, tmp_path: Path) -> None:
    from hifitrt.engines.machine import current_device

    if current_device() is not None:
        pytest.skip("this machine has a GPU")
    with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
        build_engine(tiny_ckpt, tmp_path / "x", backend="tensorrt")
    result = build_engine(tiny_ckpt, tmp_path / "auto", backend="auto", precision="fp32",
                          profiles=["fixed:1x64"], verify_export=False)
    # without a GPU, auto times the CPU backends for fp32 and builds the faster (tests/test_cpu_auto.py)
    assert result.manifest.backend["name"] in ("onnxruntime", "openvino") and "no CUDA GPU" in result.backend_reason


def test_concurrent_builds_of_one_directory(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "engine"
    results: list = []
    errors: list = []

    def build() -> None:
        try:
            results.append(build_engine(tiny_ckpt, out, **FAST))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert sorted(r.reused for r in results) == [False, True]
    assert results[0].manifest.build_key == results[1].manifest.build_key
    verify_engine_dir(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HIFITRT_RUN_SLOW") != "1", reason="slow (minutes on 2 cores): HIFITRT_RUN_SLOW=1")
def test_default_vocoder_fp16_onnxruntime(default_vocoder, tmp_path: Path) -> None:
    out = tmp_path / "default"
    started = time.perf_counter()
    first = build_engine("default", out, backend="onnxruntime", precision="fp16")
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    again = build_engine("default", out, backend="onnxruntime", precision="fp16")
    assert not first.reused and again.reused
    assert time.perf_counter() - started < first_seconds / 5
    assert [p.name for p in again.manifest.profiles] == ["short", "medium", "long"]
    assert again.manifest.options["calibration"].endswith("speech fixtures in the vocoder's feature space")


def test_export_fp16_plans_on_the_same_mels_as_build(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    """`export --precision fp16` and `build` calibrate on the same speech, so they keep the same
    nodes FP32 for the same source (the FP16 table describes the plans engines really have)."""
    import json

    from hifitrt.cli import main

    assert main(["export", str(tiny_ckpt), "-o", str(tmp_path / "m.onnx"), "--precision", "fp16"]) == 0
    out = capsys.readouterr().out
    exported = json.loads((tmp_path / "m.plan.json").read_text())
    engine = build_engine(tiny_ckpt, tmp_path / "engine", backend="onnxruntime", precision="fp16",
                          profiles=["fixed:1x32"], verify_export=False).engine_dir  # its own: others rebuild theirs
    built = json.loads((engine / "precision_plan.json").read_text())
    assert exported["fp32_nodes"] == built["fp32_nodes"]
    assert {k: v["reason"] for k, v in exported["reasons"].items()} == {k: v["reason"] for k, v in built["reasons"].items()}
    assert exported["calibration"] == built["calibration"]
    assert "speech fixtures" in out and (tmp_path / "m.fp32.onnx").is_file()
