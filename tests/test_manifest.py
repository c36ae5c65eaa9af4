"""Engine manifests: schema, artifact hashes checked before any load, machine compatibility.

These tests build engine directories by hand (no export) so they run in well under a second;
tests/test_engine_build.py covers directories made by build_engine.
"""
from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from hifitrt.engines.backends import backend_for
from hifitrt.engines.machine import DeviceInfo, Machine, current_machine, tensorrt_version
from hifitrt.engines.describe import inspect_engine_dir
from hifitrt.engines.manifest import (
    Manifest,
    artifact_digests,
    read_manifest,
    update_quick_parity,
    verify_engine_dir,
    write_manifest,
)
from hifitrt.errors import EngineError

A10G = DeviceInfo("NVIDIA A10G", "8.6")
T4 = DeviceInfo("Tesla T4", "7.5")
L4 = DeviceInfo("NVIDIA L4", "8.9")

SPEC = {
    "arch": "kantts", "sample_rate": 8000, "hop": 100, "in_channels": 80, "n_mels": 80, "causal": True,
    "nsf": False, "digest": "ab" * 32, "source": "/models/voc", "left_context_frames": 10,
    "right_context_frames": 0, "min_frames": 1, "config": {},
}


def make_engine_dir(root: Path, backend: str = "tensorrt", device: DeviceInfo | None = A10G,
                    version: str = "10.13.0", **options: object) -> Path:
    """A complete engine directory with small stand-in artifacts and a valid manifest."""
    root.mkdir(parents=True, exist_ok=True)
    files = {"model.onnx": b"fp32 onnx" * 100, "model.fp16.onnx": b"fp16 onnx" * 50,
             "precision_plan.json": b'{"fp32_nodes": []}'}
    if backend == "tensorrt":
        files["tensorrt/engine.plan"] = bytes(range(256)) * 40
        engine_file = "tensorrt/engine.plan"
    else:
        files["onnxruntime/session.json"] = b'{"schema": "hifitrt.ort-session"}'
        engine_file = "model.fp16.onnx"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    digests = artifact_digests(root, files)
    manifest = Manifest(
        source={"location": "/models/voc", "voice": None, "spec": SPEC},
        backend={"name": backend, "version": version, "providers": []},
        device=device.to_dict() if device else None,
        precision="fp16",
        profiles=[{"batch_min": 1, "batch_opt": 1, "batch_max": 4, "frames_min": 8, "frames_opt": 64,
                   "frames_max": 128, "name": "short"}],
        onnx_digest=digests["model.onnx"]["sha256"],
        precision_plan_digest=digests["precision_plan.json"]["sha256"],
        engine_file=engine_file,
        options=dict(options),
        artifacts=digests,
        created="2026-01-01T00:00:00+00:00",
    )
    write_manifest(root, manifest)
    return root


def edit_manifest(root: Path, **changes: object) -> None:
    data = json.loads((root / "manifest.json").read_text())
    data.update(changes)
    (root / "manifest.json").write_text(json.dumps(data))


def test_round_trip_and_fields(tmp_path: Path) -> None:
    root = make_engine_dir(tmp_path / "e")
    data = json.loads((root / "manifest.json").read_text())
    for key in ("schema", "schema_version", "hifitrt_version", "created", "build_seconds", "source", "backend",
                "device", "precision", "profiles", "onnx_digest", "precision_plan_digest", "engine_file",
                "options", "artifacts", "quick_parity"):
        assert key in data, key
    assert data["schema"] == "hifitrt.engine-manifest" and data["schema_version"] == 1
    manifest = verify_engine_dir(root, machine=Machine(A10G, "10.13.0"))
    assert manifest == read_manifest(root)
    assert manifest.spec.sample_rate == 8000
    assert manifest.profiles[0].frames_max == 128
    assert sorted(manifest.artifacts) == ["model.fp16.onnx", "model.onnx", "precision_plan.json",
                                          "tensorrt/engine.plan"]
    assert not list(root.glob(".*.tmp")), "atomic write left a temp file"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda p: p.unlink(), "has no manifest.json"),
        (lambda p: p.write_text("{not json"), "cannot be read"),
        (lambda p: p.write_text(json.dumps({"schema": "other", "schema_version": 1})), "schema 'other'"),
        (lambda p: p.write_text(p.read_text().replace('"schema_version": 1', '"schema_version": 7')),
         "schema version 7"),
        (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items()
                                            if k != "artifacts"})), "lacks artifacts"),
    ],
)
def test_bad_manifest_is_a_clear_error(tmp_path: Path, mutate, expected: str) -> None:
    root = make_engine_dir(tmp_path / "e")
    mutate(root / "manifest.json")
    with pytest.raises(EngineError, match=expected):
        read_manifest(root)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        read_manifest(tmp_path / "nope")


def test_artifact_outside_directory_is_refused(tmp_path: Path) -> None:
    root = make_engine_dir(tmp_path / "e")
    data = json.loads((root / "manifest.json").read_text())
    data["artifacts"]["../secret"] = {"sha256": "0" * 64, "bytes": 1}
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EngineError, match="outside the engine directory"):
        read_manifest(root)


def test_flipped_byte_names_the_file(tmp_path: Path) -> None:
    root = make_engine_dir(tmp_path / "e")
    plan = root / "tensorrt" / "engine.plan"
    data = bytearray(plan.read_bytes())
    data[1234] ^= 0x01
    plan.write_bytes(bytes(data))
    with pytest.raises(EngineError) as info:
        verify_engine_dir(root, for_this_machine=False)
    message = str(info.value)
    assert "engine file tensorrt/engine.plan is damaged (sha256 mismatch)" in message
    assert "tts-build-engine build /models/voc" in message and "\n" not in message


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    root = make_engine_dir(tmp_path / "e", backend="onnxruntime", device=None)
    model = root / "model.fp16.onnx"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(EngineError, match=r"model\.fp16\.onnx is truncated \(100 bytes, the manifest says 450\)"):
        verify_engine_dir(root)
    model.unlink()
    with pytest.raises(EngineError, match=r"model\.fp16\.onnx is missing"):
        verify_engine_dir(root)


def test_other_gpu_and_tensorrt_name_both_sides(tmp_path: Path) -> None:
    root = make_engine_dir(tmp_path / "e", device=A10G, version="10.13.0")
    with pytest.raises(EngineError) as info:
        verify_engine_dir(root, machine=Machine(T4, "10.16.1.11"))
    message = str(info.value)
    assert "built for NVIDIA A10G (8.6) with TensorRT 10.13.0" in message
    assert "this machine has Tesla T4 (7.5) with TensorRT 10.16.1.11" in message
    assert "TensorRT version and GPU differ" in message and "--force" in message
    with pytest.raises(EngineError, match=r"this machine has NVIDIA A10G \(8.6\) with TensorRT 10.16.1.11"):
        verify_engine_dir(root, machine=Machine(A10G, "10.16.1.11"))
    with pytest.raises(EngineError, match="GPU differ"):
        verify_engine_dir(root, machine=Machine(L4, "10.13.0"))
    # This CPU machine: no GPU, no TensorRT; both sides still named.
    with pytest.raises(EngineError, match=r"built for NVIDIA A10G \(8.6\).*this machine has "):
        verify_engine_dir(root)
    # Compatibility is not checked when asked not to (inspecting a plan from another box).
    assert verify_engine_dir(root, for_this_machine=False).backend_name == "tensorrt"


def test_machine_checked_without_deserialising(tmp_path: Path) -> None:
    """The plan is not a plan at all; verification still passes or fails on the manifest alone,
    which proves nothing was handed to TensorRT."""
    root = make_engine_dir(tmp_path / "e")
    (root / "tensorrt" / "engine.plan").write_bytes(b"definitely not a TensorRT plan")
    data = json.loads((root / "manifest.json").read_text())
    data["artifacts"] = artifact_digests(root, data["artifacts"])
    write_manifest(root, Manifest.from_dict(data))  # re-sealed: a hand edit alone is refused
    assert verify_engine_dir(root, machine=Machine(A10G, "10.13.0")).engine_file == "tensorrt/engine.plan"
    with pytest.raises(EngineError, match="Tesla T4"):
        verify_engine_dir(root, machine=Machine(T4, "10.13.0"))


def test_compatibility_options_relax_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version-compatible plan runs on a newer TensorRT (same major, or 10.x on 11.x, as NVIDIA's
    support matrix says) only through the build version's lean runtime, so the check passes when
    that runtime is found and otherwise names the wheel that installs it."""
    from hifitrt.engines.tensorrt_install import LEAN_LIBRARY_ENV

    check_machine = backend_for("tensorrt").check_machine
    manifest = read_manifest(make_engine_dir(tmp_path / "a", version_compatible=True))
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    monkeypatch.delenv(LEAN_LIBRARY_ENV, raising=False)
    check_machine(manifest, Machine(A10G, "10.13.0"))  # same version: no lean runtime needed
    with pytest.raises(EngineError, match=r"only through the 10.13.0 lean runtime: pip install tensorrt-lean-cu\d+==10.13.0"):
        check_machine(manifest, Machine(A10G, "10.16.1"))
    lean = tmp_path / "libnvinfer_lean.so.10.13.0"
    lean.write_bytes(b"stand-in")
    monkeypatch.setenv(LEAN_LIBRARY_ENV, str(lean))
    check_machine(manifest, Machine(A10G, "10.16.1"))  # newer 10.x with the 10.13 lean runtime: fine
    check_machine(manifest, Machine(A10G, "11.1.0"))  # TensorRT 10 plans run on TensorRT 11: fine
    with pytest.raises(EngineError, match="TensorRT version differ"):
        check_machine(manifest, Machine(A10G, "10.12.0"))  # older: not fine
    with pytest.raises(EngineError, match="TensorRT version differ"):
        check_machine(manifest, Machine(A10G, "12.0.0"))  # no other cross-major pair is supported
    plain = read_manifest(make_engine_dir(tmp_path / "p"))
    with pytest.raises(EngineError, match="TensorRT version differ"):
        check_machine(plain, Machine(A10G, "10.16.1"))  # not version-compatible: exact version only
    manifest = read_manifest(make_engine_dir(tmp_path / "b", hardware_compatibility="ampere_plus"))
    check_machine(manifest, Machine(L4, "10.13.0"))
    with pytest.raises(EngineError, match="GPU differ"):
        check_machine(manifest, Machine(T4, "10.13.0"))


def test_onnxruntime_engines_are_portable(tmp_path: Path) -> None:
    root = make_engine_dir(tmp_path / "e", backend="onnxruntime", device=None, version="1.31.1")
    assert verify_engine_dir(root, machine=Machine(T4, None)).backend_name == "onnxruntime"


def test_update_quick_parity_keeps_the_directory_valid(tmp_path: Path) -> None:
    root = make_engine_dir(tmp_path / "e")
    update_quick_parity(root, {"passed": True, "snr_db": np.float32(41.5), "cases": np.arange(3)})
    manifest = verify_engine_dir(root, for_this_machine=False)
    assert manifest.quick_parity == {"passed": True, "snr_db": 41.5, "cases": [0, 1, 2]}
    assert "quick parity" in inspect_engine_dir(root) and "passed" in inspect_engine_dir(root)


def test_inspect_good_and_damaged(tmp_path: Path) -> None:
    root = make_engine_dir(tmp_path / "e")
    text = inspect_engine_dir(root)
    assert "all 4 artifacts verified" in text
    assert "NVIDIA A10G (8.6)" in text and "runs here" in text
    (root / "model.onnx").write_bytes(b"x")
    with pytest.raises(EngineError, match="model.onnx is truncated"):
        inspect_engine_dir(root)


def test_device_probe_without_gpu_or_tensorrt() -> None:
    machine = current_machine()
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    assert (machine.device is not None) == has_gpu
    assert tensorrt_version(types.SimpleNamespace(__version__="10.13.0")) == "10.13.0"
    assert current_machine(types.SimpleNamespace(__version__="11.1.0")).tensorrt_version == "11.1.0"


def test_rebuild_line_names_profiles_only_when_they_are_not_the_defaults(tmp_path: Path) -> None:
    import dataclasses
    import shlex

    from hifitrt.cli import build_parser
    from hifitrt.engines.profiles import default_profiles

    manifest = read_manifest(make_engine_dir(tmp_path / "e", backend="onnxruntime", device=None))
    plain = dataclasses.replace(manifest, profiles=default_profiles(manifest.spec.min_frames, cpu=True), build_inputs=None)
    args = build_parser().parse_args(shlex.split(plain.rebuild_command(tmp_path / "e"))[1:])
    assert (args.backend, args.precision, args.profile, args.force) == ("onnxruntime", manifest.precision, [], True)
