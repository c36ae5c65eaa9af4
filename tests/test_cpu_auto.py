"""`--backend auto` without a CUDA GPU (time the CPU backends, build the fastest that passes
parity, say why) and the BF16 gate's `build --threshold NAME=VALUE`.

Real builds of the tiny KAN-TTS checkpoint (conftest's ``tiny_kantts_ckpt``) with real ONNX
Runtime and OpenVINO. On this project's machines the CPU has no BF16 units, so the BF16 gate is
shown reaching the plan (its limits are recorded in ``bf16_plan.json`` even when BF16 is
refused up front) and acting on a plan run as a dry run (every part FP32); a BF16 candidate in
auto's selection runs only on CPUs with BF16 units.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from hifitrt.cli import build_parser, main as cli_main
from hifitrt.engines.backends import BuildOptions, resolve_backend
from hifitrt.engines.build import build_engine
from hifitrt.engines.machine import current_device
from hifitrt.engines.manifest import read_manifest
from hifitrt.engines.profiles import parse_profile
from hifitrt.errors import EngineError

pytest.importorskip("openvino")
if current_device() is not None:  # pragma: no cover - this project's machines have no GPU
    pytest.skip("auto picks TensorRT/CUDA on a GPU machine; these tests cover the CPU choice",
                allow_module_level=True)

from hifitrt.engines.cpu_selection import CpuAutoBackend, cpu_candidates  # noqa: E402
from hifitrt.engines.openvino_engine import OpenVinoBackend, cpu_info  # noqa: E402

PROFILE = ["--profile", "fixed:1x64"]


@pytest.mark.slow
def test_auto_times_both_cpu_backends_builds_the_fastest_and_reuses(tiny_kantts_ckpt: Path, tmp_path: Path,
                                                                   capsys) -> None:
    out = tmp_path / "engine"
    built = build_engine(tiny_kantts_ckpt, out, backend="auto", precision="fp32", profiles=["fixed:1x64"],
                         verify_export=False)
    assert not built.reused and "no CUDA GPU" in built.backend_reason
    manifest = read_manifest(out)
    selection = manifest.backend["selection"]

    rows = {row["candidate"]: row for row in selection["candidates"]}
    assert set(rows) == {"ONNX Runtime FP32", "OpenVINO FP32"}
    for row in rows.values():
        assert row["median_s"] > 0 and row["min_s"] <= row["median_s"]
        assert row["x_real_time"] == pytest.approx(selection["settings"]["audio_s"] / row["median_s"], rel=1e-2)
        assert row["snr_db"] > 60 and row["max_abs_error"] <= 1e-4 and row["passed"] is True
    fastest = min(rows.values(), key=lambda row: row["median_s"])
    assert selection["chosen"] == fastest["candidate"]
    assert manifest.backend_name == fastest["backend"] and manifest.precision == "fp32"
    assert selection["settings"]["threads"] >= 1 and selection["settings"]["rounds"] >= 3
    assert selection["reason"].startswith(f"auto chose {fastest['candidate']}")
    assert all(name in selection["reason"] for name in rows)
    # The key says it was auto's choice among these candidates.
    assert manifest.build_inputs["backend"] == "auto"
    assert manifest.build_inputs["auto_candidates"] == ["ONNX Runtime FP32", "OpenVINO FP32"]
    # Error messages' rebuild line asks what this build was asked (auto chooses again where it
    # is read, the backend chosen here may be missing there) with its non-default profile.
    rebuild = shlex.split(manifest.rebuild_command(out))
    args = build_parser().parse_args(rebuild[1:])
    assert (args.backend, args.precision, args.out) == ("auto", "fp32", str(out))
    assert tuple(parse_profile(text) for text in args.profile) == manifest.profiles

    # Same inputs: reused with the recorded choice, without measuring again; `build` prints why.
    argv = ["build", str(tiny_kantts_ckpt), "--out", str(out), "--backend", "auto", "--precision", "fp32",
            *PROFILE, "--no-report"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "reused" in printed and "[2/5]" not in printed
    assert selection["reason"] in printed and "no CUDA GPU" in printed
    assert read_manifest(out).backend["selection"] == selection
    # `inspect` says why too, with each candidate's measurement.
    assert cli_main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert selection["reason"] in shown
    assert all(f"  {name}" in shown and f"median {row['median_s']} s" in shown for name, row in rows.items())


def test_default_fp16_keeps_onnx_runtime_and_says_why() -> None:
    backend, why = resolve_backend("auto", options=BuildOptions())
    assert backend.name == "onnxruntime"
    assert "no CUDA GPU" in why and "only ONNX Runtime builds fp16" in why
    backend, why = resolve_backend("auto", options=BuildOptions(precision="bf16"))
    assert backend.name == "openvino" and "only OpenVINO builds bf16" in why


def test_precision_auto_weighs_bf16_only_where_the_cpu_has_bf16_units() -> None:
    candidates, note = cpu_candidates("auto")
    labels = [c.label for c in candidates]
    if cpu_info().has_bf16:
        assert labels == ["ONNX Runtime FP32", "OpenVINO FP32", "OpenVINO BF16"]
    else:
        assert labels == ["ONNX Runtime FP32", "OpenVINO FP32"]
        assert "OpenVINO BF16 left out" in note and "no BF16 units" in note
    backend, why = resolve_backend("auto", options=BuildOptions(precision="auto"))
    assert isinstance(backend, CpuAutoBackend) and backend.precisions == ("auto",)
    assert "timing ONNX Runtime FP32, OpenVINO FP32" in why


def test_bf16_gate_option_is_validated_and_canonical() -> None:
    options = BuildOptions(backend="openvino", precision="auto", bf16_gate=("pesq=4.2", "log-mel-l1=0.03", "pesq=4.3"))
    assert options.bf16_gate == ("log_mel_l1=0.03", "pesq=4.3")
    for bad, message in (("snr_db=40", "the BF16 gate has no 'snr_db'; use pesq, log_mel_l1, nonfinite_count"),
                         ("pesq=high", "'high' is not a number"),
                         ("pesq", "is not NAME=VALUE"),
                         ("log_mel_l1=-1", "finite number >= 0"),
                         ("pesq=nan", "finite number >= 0")):
        with pytest.raises(EngineError, match=message):
            BuildOptions(backend="openvino", precision="bf16", bf16_gate=(bad,))
    with pytest.raises(EngineError, match="a fp32 build has none"):
        BuildOptions(backend="openvino", precision="fp32", bf16_gate=("pesq=4",))
    with pytest.raises(EngineError, match="sets the BF16 gate of OpenVINO builds, and this build is ONNX Runtime"):
        resolve_backend("onnxruntime", options=BuildOptions(backend="onnxruntime", precision="auto",
                                                            bf16_gate=("pesq=4",)))


def test_bf16_gate_is_part_of_the_build_key() -> None:
    from hifitrt.engines.machine import Machine

    machine = Machine(None, None)
    plain = BuildOptions(backend="openvino", precision="auto")
    gated = plain.replace(bf16_gate=("log_mel_l1=0.03",))
    ov = OpenVinoBackend()
    assert ov.key_inputs(gated, machine)["options"]["bf16_gate"] == ["log_mel_l1=0.03"]
    assert ov.key_inputs(plain, machine) != ov.key_inputs(gated, machine)
    auto, _ = resolve_backend("auto", options=gated.replace(backend="auto"))
    assert auto.key_inputs(plain, machine) != auto.key_inputs(gated, machine)


def test_threshold_for_a_build_without_a_bf16_gate_is_refused_in_one_line(tiny_kantts_ckpt: Path, tmp_path: Path,
                                                                          capsys) -> None:
    for extra in (["--backend", "onnxruntime", "--precision", "auto", "--threshold", "pesq=4"],
                  ["--backend", "openvino", "--precision", "fp32", "--threshold", "pesq=4"],
                  ["--backend", "openvino", "--precision", "auto", "--threshold", "snr=30"]):
        code = cli_main(["build", str(tiny_kantts_ckpt), "--out", str(tmp_path / "e"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (extra, err)
        assert "--threshold" in err
    assert not (tmp_path / "e" / "manifest.json").exists()


@pytest.mark.slow
def test_threshold_reaches_the_bf16_plan(tiny_kantts_ckpt: Path, tmp_path: Path) -> None:
    """Through the build: the plan records the adjusted gate (on a CPU without BF16 units it is
    refused before gating). Then the gate acting: a dry-run plan (every part FP32) that meets the
    default gate fails a gate tightened below what FP32 itself reaches."""
    from hifitrt.engines.bf16_plan import plan_bf16
    from hifitrt.export.load import load_vocoder
    from hifitrt.export.reference import TorchRunner
    from hifitrt.export.speech_inputs import calibration_mels, fixture_inputs

    out = tmp_path / "engine"
    build_engine(tiny_kantts_ckpt, out, backend="openvino", precision="auto", profiles=["fixed:1x64"],
                 verify_export=False, bf16_gate=("log_mel_l1=0.05",))
    plan = json.loads((out / "bf16_plan.json").read_text())
    assert plan["gate"]["limits"] == {"pesq": 4.5, "log_mel_l1": 0.05, "nonfinite_count": 0}

    vocoder = load_vocoder(tiny_kantts_ckpt)
    mels, note = calibration_mels(vocoder.spec, max_items=1, max_frames=64)
    fixtures = dict(list(fixture_inputs(vocoder.spec).items())[:1])
    reference = TorchRunner(vocoder.module, cache=True)
    common = dict(calibration_note=note, low_precision="f32")
    passing = plan_bf16(out / "model.onnx", tmp_path / "a", vocoder.spec, mels, fixtures, reference, **common)
    assert passing.passed, passing.reason
    strict = plan_bf16(out / "model.onnx", tmp_path / "b", vocoder.spec, mels, fixtures, reference,
                       gate={"log_mel_l1": 1e-12}, **common)
    assert not strict.passed and "log-mel L1" in strict.reason and "> 1e-12" in strict.reason
