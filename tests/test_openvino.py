"""OpenVINO CPU engines: build from a KAN-TTS checkpoint, check, batch/stream/threads, tamper,
the split-graph island mechanism, the BF16 plan and its refusal on CPUs without BF16 units.

A tiny random KAN-TTS vocoder (hifigan_v1_8k shrunk to 16 channels) keeps each build to
seconds; the built-in default vocoder is covered by slow tests.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from hifitrt.engines.build import build_engine
from hifitrt.engines.manifest import read_manifest
from hifitrt.engines.openvino_engine import ENGINE_JSON, cpu_info, usable_cores
from hifitrt.errors import EngineError
from hifitrt.export import kantts_random as synthetic

pytest.importorskip("openvino")

# Small profiles keep `check` (every profile point plus a chunked long case) to seconds.
OV_FP32 = {"backend": "openvino", "precision": "fp32", "verify_export": False,
           "profiles": ["short=dynamic:1-2x16-64-128"]}
NO_BF16 = None if cpu_info().has_bf16 else (
    f"this CPU ({cpu_info().model}: {cpu_info().bf16_units()}) cannot run BF16; OpenVINO would run FP32")


@pytest.fixture(scope="module")
def kantts_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kantts")
    data = yaml.safe_load((synthetic.kantts_configs_dir() / "hifigan_v1_8k.yaml").read_text())
    data["Model"]["Generator"]["params"].update(
        channels=16, upsample_scales=[10, 10], upsample_kernal_sizes=[20, 20],
        resblock_kernel_sizes=[3], resblock_dilations=[[1, 3]],
    )
    config = root / "tiny_8k.yaml"
    config.write_text(yaml.safe_dump(data))
    module = synthetic.random_weight_norm_generator(synthetic.generator_params(config), seed=3)
    return synthetic.save_kantts_checkpoint(module, config, root / "voc")


@pytest.fixture(scope="module")
def ov_engine(kantts_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ov") / "engine"
    build_engine(kantts_ckpt, out, **OV_FP32)
    return out


@pytest.fixture(scope="module")
def loaded(ov_engine: Path):
    from hifitrt.runtime import VocoderEngine

    with VocoderEngine.load(ov_engine) as engine:
        yield engine


@pytest.fixture(scope="module")
def speech(loaded) -> list[np.ndarray]:
    from hifitrt.export.speech_inputs import fixture_inputs

    return [m[:, :160] for m in fixture_inputs(loaded.spec).values()][:4]


def test_build_writes_an_openvino_engine_with_cpu_facts(ov_engine: Path) -> None:
    manifest = read_manifest(ov_engine)
    assert manifest.backend_name == "openvino" and manifest.precision == "fp32"
    assert manifest.engine_file == ENGINE_JSON
    assert {"openvino/part_0.xml", "openvino/part_0.bin", ENGINE_JSON} <= set(manifest.artifacts)
    cpu = manifest.backend["cpu"]
    assert cpu["model"] and cpu["cores"] == usable_cores() and "has_bf16" in cpu
    assert manifest.backend["version"].startswith("20")  # OpenVINO year-based versions
    assert manifest.build_inputs["cpu"]["openvino_capabilities"]  # a BF16 plan is per CPU


def test_check_passes_the_fp32_gate(ov_engine: Path) -> None:
    from hifitrt.validation.check import check_engine

    result = check_engine(ov_engine, with_pesq=False, write=False)
    assert result.passed, result.failure_lines()
    assert result.thresholds.preset == "fp32"
    assert min(c.metrics.snr_db for c in result.cases) > 60


def test_threads_default_to_the_usable_cores(loaded) -> None:
    assert loaded.runner.threads == len(os.sched_getaffinity(0))
    assert loaded.runner.streams == 1  # one request set: callers queue instead of oversubscribing


def test_batch_stream_and_threads_equal_serial_calls(loaded, speech: list[np.ndarray]) -> None:
    serial = [loaded(m) for m in speech]
    for got, want in zip(loaded.batch(speech), serial):
        np.testing.assert_allclose(got, want, atol=1e-5)
    whole = serial[-1]
    streamed = np.concatenate(list(loaded.stream(speech[-1], chunk_frames=48)))
    np.testing.assert_allclose(streamed, whole, atol=1e-5)

    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            results[i] = loaded(speech[i % len(speech)])
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, wav in results.items():
        np.testing.assert_array_equal(wav, serial[i % len(speech)])
    assert len(results) == 8


@pytest.mark.parametrize("victim", ["openvino/part_0.bin", "openvino/part_0.xml", ENGINE_JSON])
def test_a_tampered_engine_file_is_refused(ov_engine: Path, tmp_path: Path, victim: str) -> None:
    from hifitrt.runtime import VocoderEngine

    out = tmp_path / "engine"
    shutil.copytree(ov_engine, out)
    data = bytearray((out / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / victim).write_bytes(bytes(data))
    with pytest.raises(EngineError, match=f"engine file {victim} is damaged"):
        VocoderEngine.load(out)


def test_split_chain_equals_the_whole_graph(kantts_ckpt: Path, ov_engine: Path, tmp_path: Path) -> None:
    """The island mechanism: the graph cut at every stage into FP32 parts gives its exact output."""
    import onnx

    from hifitrt.engines.bf16_plan import graph_segments, split_parts
    from hifitrt.engines.openvino_engine import CompiledChain, EnginePart, compile_model

    onnx_path = ov_engine / "model.onnx"
    segments = graph_segments(onnx.load(str(onnx_path)))
    assert [s.name for s in segments] == ["head", "stage_0", "stage_1", "tail"]
    # alternating hints keep neighbours from merging (four parts); every part is compiled f32 here
    hints = {s.name: ("f32" if i % 2 == 0 else "bf16") for i, s in enumerate(segments)}
    parts = split_parts(onnx_path, segments, hints, tmp_path)
    assert [p.name for p in parts] == ["head", "stage_0", "stage_1", "tail"]
    assert parts[0].inputs == ("mel",) and parts[-1].outputs == ("wav",)
    chain = CompiledChain([compile_model(p.onnx_path, "f32") for p in parts],
                          [EnginePart(p.name, "", "", "f32", list(p.inputs), list(p.outputs)) for p in parts])
    whole = CompiledChain([compile_model(onnx_path, "f32")], [EnginePart("all", "", "", "f32", ["mel"], ["wav"])])
    mel = np.random.default_rng(0).normal(-5, 2, (2, 80, 50)).astype(np.float32)
    np.testing.assert_allclose(chain.infer(mel), whole.infer(mel), atol=1e-6)
    assert set(chain.runtime_precisions()) == {"head", "stage_0", "stage_1", "tail"}


def test_bf16_plan_dry_run_gates_every_fixture(kantts_ckpt: Path, ov_engine: Path, tmp_path: Path) -> None:
    """The plan's search, gate and JSON on any CPU: non-island parts compiled with an f32 hint."""
    import json

    from hifitrt.engines.bf16_plan import plan_bf16
    from hifitrt.export.load import load_vocoder
    from hifitrt.export.reference import TorchRunner
    from hifitrt.export.speech_inputs import calibration_mels, fixture_inputs

    vocoder = load_vocoder(kantts_ckpt)
    mels, note = calibration_mels(vocoder.spec, max_items=2, max_frames=120)
    fixtures = dict(list(fixture_inputs(vocoder.spec).items())[:2])
    plan = plan_bf16(ov_engine / "model.onnx", tmp_path, vocoder.spec, mels, fixtures,
                     TorchRunner(vocoder.module, cache=True), calibration_note=note, low_precision="f32")
    assert plan.passed, plan.reason
    assert [row["fixture"] for row in plan.gate["per_fixture"]] == list(fixtures)
    assert all(row["mrstft"] is not None and row["nonfinite_count"] == 0 for row in plan.gate["per_fixture"])
    assert plan.gate["limits"] == {"pesq": 4.5, "log_mel_l1": 0.02, "nonfinite_count": 0}
    plan.write(tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["schema"] == "hifitrt.bf16-plan" and data["timing"]["openvino_fp32_s"] > 0


def test_precision_auto_without_bf16_units_builds_fp32_and_says_why(kantts_ckpt: Path, tmp_path: Path) -> None:
    if not NO_BF16:
        pytest.skip("this CPU has BF16 units: auto plans BF16 (covered by the BF16 test)")
    result = build_engine(kantts_ckpt, tmp_path / "engine", **{**OV_FP32, "precision": "auto"})
    manifest = result.manifest
    assert manifest.precision == "fp32"
    assert "BF16 refused" in manifest.backend["precision_reason"]
    assert "no BF16 units" in manifest.backend["precision_reason"]
    assert "bf16_plan.json" in manifest.artifacts


@pytest.mark.slow
@pytest.mark.skipif(bool(NO_BF16), reason=NO_BF16 or "")
def test_bf16_engine_from_kantts_passes_its_gate(kantts_ckpt: Path, tmp_path: Path) -> None:
    from hifitrt.validation.check import check_engine

    result = build_engine(kantts_ckpt, tmp_path / "engine", **{**OV_FP32, "precision": "bf16"})
    manifest = result.manifest
    reason = manifest.backend["precision_reason"]
    if manifest.precision == "fp32":  # refused: the plan must say which gate numbers failed
        assert "BF16 refused" in reason
        return
    assert "passed its gate" in reason
    check = check_engine(result.engine_dir, write=False)
    assert check.passed and check.thresholds.preset == "bf16", check.failure_lines()


def test_wrong_precision_for_the_backend_is_one_line(kantts_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="OpenVINO engines are fp32 or bf16 or auto, not fp16"):
        build_engine(kantts_ckpt, tmp_path / "a", **{**OV_FP32, "precision": "fp16"})
    with pytest.raises(EngineError, match="ONNX Runtime engines are fp16 or fp32, not bf16"):
        build_engine(kantts_ckpt, tmp_path / "b", backend="onnxruntime", precision="bf16")


@pytest.mark.slow
def test_default_vocoder_openvino_fp32_passes_check(default_vocoder, tmp_path: Path) -> None:
    from hifitrt.validation.check import check_engine

    build_engine("default", tmp_path / "engine", **OV_FP32)
    result = check_engine(tmp_path / "engine", vocoder=default_vocoder, with_pesq=False, write=False)
    assert result.passed, result.failure_lines()


@pytest.mark.slow
@pytest.mark.skipif(bool(NO_BF16), reason=NO_BF16 or "")
def test_default_vocoder_bf16_plan_passes_check(default_vocoder, tmp_path: Path) -> None:
    from hifitrt.validation.check import check_engine

    result = build_engine("default", tmp_path / "engine", **{**OV_FP32, "precision": "bf16"})
    assert result.manifest.precision == "bf16", result.manifest.backend["precision_reason"]
    check = check_engine(tmp_path / "engine", vocoder=default_vocoder, write=False)
    assert check.passed, check.failure_lines()


@pytest.fixture(scope="module")
def noncausal_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-channel noncausal 16 kHz KAN-TTS net (its repeat_upsamples are nearest Resizes)."""
    from hifitrt.export.load import load_vocoder
    from hifitrt.export.onnx_export import export_onnx
    from small_configs import small_kantts_checkpoint

    root = tmp_path_factory.mktemp("noncausal")
    vocoder = load_vocoder(small_kantts_checkpoint(root, "hifigan_noncausal_v1_16k", channels=32))
    return export_onnx(vocoder, root / "model.onnx", verify=False).path


def test_nearest_resizes_become_exact_repeats(noncausal_onnx: Path, tmp_path: Path) -> None:
    """The rewrite that lets OpenVINO run these nets in BF16 changes no output bit (FP32)."""
    import onnx

    from hifitrt.engines.bf16_plan import graph_segments, nearest_resizes_as_repeats
    from hifitrt.export.ort import CPU, make_session

    model = onnx.load(str(noncausal_onnx))
    before = [s.name for s in graph_segments(model)]
    assert nearest_resizes_as_repeats(model) == 4  # one per upsampling stage
    assert not [n for n in model.graph.node if n.op_type == "Resize"]
    onnx.checker.check_model(model, full_check=True)
    assert [s.name for s in graph_segments(model)] == before
    rewritten = tmp_path / "rewritten.onnx"
    onnx.save(model, str(rewritten))
    mel = np.random.default_rng(1).normal(-5, 2, (2, 80, 37)).astype(np.float32)
    want = make_session(str(noncausal_onnx), providers=[CPU]).run(["wav"], {"mel": mel})[0]
    got = make_session(str(rewritten), providers=[CPU]).run(["wav"], {"mel": mel})[0]
    np.testing.assert_array_equal(got, want)
    assert nearest_resizes_as_repeats(model) == 0  # nothing left to rewrite


@pytest.mark.slow
@pytest.mark.skipif(bool(NO_BF16), reason=NO_BF16 or "")
def test_bf16_plan_runs_a_net_with_nearest_upsampling(noncausal_onnx: Path, tmp_path: Path) -> None:
    """OpenVINO 2026.4 fails such nets' first BF16 inference ("Interpolate ... bad combination")
    unless the Resizes are rewritten; the plan must measure them, not crash."""
    from hifitrt.engines.bf16_plan import plan_bf16
    from hifitrt.export.load import load_vocoder
    from hifitrt.export.reference import TorchRunner
    from hifitrt.export.speech_inputs import calibration_mels, fixture_inputs
    from small_configs import small_kantts_checkpoint

    vocoder = load_vocoder(small_kantts_checkpoint(tmp_path, "hifigan_noncausal_v1_16k", channels=32))
    mels, note = calibration_mels(vocoder.spec, max_items=2, max_frames=120)
    fixtures = dict(list(fixture_inputs(vocoder.spec).items())[:2])
    plan = plan_bf16(noncausal_onnx, tmp_path, vocoder.spec, mels, fixtures, TorchRunner(vocoder.module, cache=True),
                     calibration_note=note)
    assert plan.candidates[0]["result"] == "start: all BF16" and plan.candidates[0]["nonfinite"] == 0
    assert plan.gate["per_fixture"], plan.reason
    bf16_convs = sum(p.get("Convolution", {}).get("bf16", 0) for p in plan.runtime_precisions.values())
    assert bf16_convs > 0, plan.runtime_precisions
