"""Hardening (issue 13/#16): nothing a user owns is overwritten, no engine passes its check yet
sounds wrong, every bad input gets one line.

Each test reproduces one reported failure on real components (a tiny random KAN-TTS vocoder,
real ONNX Runtime engines, the real CLI in-process); the TensorRT test double stands in only
for TensorRT. The table in docs/RELIABILITY.md names the test for each fault class.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hifitrt.cli import main as cli_main
from hifitrt.engines.build import build_engine
from hifitrt.engines.manifest import artifact_digests, read_manifest, write_manifest
from hifitrt.engines.profiles import parse_profile, validate_profiles
from hifitrt.errors import EngineError, HifitrtError, InputError, OutputError, SourceError
from hifitrt.export import kantts_random as synthetic
from hifitrt.export.load import load_vocoder
from hifitrt.runtime.engine import VocoderEngine

FAST = {"backend": "onnxruntime", "precision": "fp32", "verify_export": False}


# ------------------------------------------------------------------------------------ fixtures
def _tiny_yaml(root: Path, base: str = "hifigan_v1_8k.yaml", **params) -> Path:
    """A shipped KAN-TTS config shrunk to 16 channels and 2 stages (builds in seconds)."""
    data = yaml.safe_load((synthetic.kantts_configs_dir() / base).read_text())
    shrunk = dict(channels=16, upsample_scales=[10, 10], upsample_kernal_sizes=[20, 20],
                  resblock_kernel_sizes=[3], resblock_dilations=[[1, 3]])
    data["Model"]["Generator"]["params"].update({**shrunk, **params})
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"tiny_{base}"
    path.write_text(yaml.safe_dump(data))
    return path


def _ckpt(root: Path, seed: int = 0, base: str = "hifigan_v1_8k.yaml", **params) -> Path:
    config = _tiny_yaml(root / "cfg", base, **params)
    module = synthetic.random_weight_norm_generator(synthetic.generator_params(config), seed=seed)
    return synthetic.save_kantts_checkpoint(module, config, root / "voc")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """8 kHz, hop 100, causal, 11 frames of left context."""
    return _ckpt(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """Same config, other weights (another vocoder)."""
    return _ckpt(tmp_path_factory.mktemp("other"), seed=1)


@pytest.fixture(scope="module")
def engine(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("engine") / "e"
    build_engine(tiny, out, profiles=["s=dynamic:1-2x8-16-24"], **FAST)
    return out


def _copy(engine_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(engine_dir, dst, ignore=shutil.ignore_patterns("report", ".build.lock"))
    return dst


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _speech_mel(frames: int, channels: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.standard_normal((channels, frames)), axis=1) * 0.05 - 5).astype(np.float32)


def _wav_samples(data: bytes | Path) -> tuple[np.ndarray, int]:
    import io

    handle = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")
    with wave.open(handle) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()


# ------------------------------------------------------------------------------------ High 1
def test_build_refuses_a_folder_of_user_files_and_touches_nothing(tiny, tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    (out / "report").mkdir(parents=True)
    (out / "tensorrt").mkdir()
    files = {"report/notes.txt": b"my notes", "model.onnx": b"my model", "tensorrt/engine.plan": b"my plan"}
    for rel, data in files.items():
        (out / rel).write_bytes(data)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with pytest.raises(EngineError, match="not a hifitrt engine"):
        build_engine(tiny, out, profiles=["fixed:1x32"], **FAST)
    code, _, err = _run_cli(["build", tiny, "--out", out, "--backend", "onnxruntime", "--profile", "fixed:1x32"],
                            capsys)
    assert "already holds files that are not a hifitrt engine" in _one_line_error(code, err)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert all((out / rel).read_bytes() == data for rel, data in files.items())


def test_build_out_may_be_new_empty_or_an_engine_dir_but_not_a_file(tiny, engine, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not build_engine(tiny, empty, profiles=["fixed:1x32"], **FAST).reused
    assert build_engine(tiny, empty, profiles=["fixed:1x32"], **FAST).reused  # its own folder: reused
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    with pytest.raises(EngineError, match="is a file, not a directory"):
        build_engine(tiny, a_file, **FAST)
    assert a_file.read_text() == "keep me"
    inside_file = a_file / "sub"
    with pytest.raises(EngineError, match="is a file|cannot write"):
        build_engine(tiny, inside_file, **FAST)


# ------------------------------------------------------------------------------------ High 2
@pytest.fixture(scope="module")
def mel_npy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mel") / "mel.npy"
    np.save(path, _speech_mel(40))
    return path


def test_vocode_writes_through_a_symlink_and_keeps_it(tiny, mel_npy, tmp_path, capsys) -> None:
    real = tmp_path / "real.wav"
    real.write_bytes(b"old")
    link = tmp_path / "link.wav"
    link.symlink_to(real)
    code, out, err = _run_cli(["vocode", tiny, mel_npy, "-o", link], capsys)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real)
    samples, rate = _wav_samples(real)
    assert rate == 8000 and len(samples) == 40 * 100


def test_vocode_writes_through_a_fifo_instead_of_replacing_it(tiny, mel_npy, tmp_path, capsys) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, _, err = _run_cli(["vocode", tiny, mel_npy, "-o", fifo], capsys)
    reader.join(timeout=60)
    assert code == 0, err
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced by a regular file"
    samples, _ = _wav_samples(received[0])
    assert len(samples) == 40 * 100


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_vocode_writes_through_a_device_node(tiny, mel_npy, tmp_path, capsys) -> None:
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    code, _, err = _run_cli(["vocode", tiny, mel_npy, "-o", node], capsys)
    assert code == 0, err
    assert stat.S_ISCHR(node.lstat().st_mode), "the device node was replaced by a regular file"


def test_vocode_to_stdout(tiny, mel_npy, capsysbinary) -> None:
    assert cli_main(["vocode", str(tiny), str(mel_npy), "-o", "-"]) == 0
    captured = capsysbinary.readouterr()
    samples, rate = _wav_samples(captured.out)
    assert rate == 8000 and len(samples) == 4000 and b"wrote" in captured.err


def test_vocode_to_dev_stdout_appends_to_a_redirected_log(tiny, mel_npy, tmp_path) -> None:
    """`vocode -o /dev/stdout >> log`: written through the open stream, never truncating or replacing it."""
    import subprocess
    import sys

    log = tmp_path / "log"
    log.write_bytes(b"earlier line\n")
    with open(log, "ab") as handle:
        proc = subprocess.run([str(Path(sys.executable).parent / "tts-build-engine"), "vocode", str(tiny),
                               str(mel_npy), "-o", "/dev/stdout"], stdout=handle, stderr=subprocess.PIPE, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = log.read_bytes()
    assert data.startswith(b"earlier line\nRIFF")
    samples, _ = _wav_samples(data[len(b"earlier line\n"):])
    assert len(samples) == 4000


def test_vocode_refuses_a_directory_or_a_path_under_a_file(tiny, mel_npy, tmp_path, capsys) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = _run_cli(["vocode", tiny, mel_npy, "-o", folder], capsys)
    assert "is a directory" in _one_line_error(code, err)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, _, err = _run_cli(["vocode", tiny, mel_npy, "-o", blocker / "out.wav"], capsys)
    _one_line_error(code, err)
    assert blocker.read_text() == "x"
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------------------ High 3
@pytest.fixture(scope="module")
def trt_double():
    from doubles.tensorrt_double import make_tensorrt_double

    from hifitrt.engines.machine import DeviceInfo, Machine

    return make_tensorrt_double(version="11.1.0.0", compute_capability=(8, 9)), \
        Machine(DeviceInfo("NVIDIA L4", "8.9"), "11.1.0.0")


def _long_case(out: Path, source: Path, trt, here):
    from doubles.tensorrt_double import CpuDeviceBackend

    from hifitrt.engines.manifest import verify_engine_dir
    from hifitrt.export.reference import TorchRunner
    from hifitrt.runtime.loading import runner_for_engine_dir
    from hifitrt.validation.check import long_speech_case
    from hifitrt.validation.metrics import Thresholds
    from hifitrt.validation.sweep import fixture_speech

    manifest = verify_engine_dir(out, machine=here)
    vocoder = load_vocoder(source)
    runner = runner_for_engine_dir(out, manifest, trt_module=trt, device=CpuDeviceBackend())
    try:
        return long_speech_case(runner, TorchRunner(vocoder.module), vocoder.spec, manifest.profiles,
                                Thresholds.fp32(), fixture_speech(vocoder.spec), with_pesq=False)
    finally:
        runner.close()


def test_profiles_shorter_than_the_receptive_field_are_refused_and_fail_check(tiny, trt_double, tmp_path) -> None:
    trt, here = trt_double
    options = dict(backend="tensorrt", precision="fp32", verify_export=False, trt_module=trt, machine=here)
    assert load_vocoder(tiny).spec.left_context_frames == 11
    with pytest.raises(EngineError, match="receptive field spans 11 frames"):
        build_engine(tiny, tmp_path / "short", profiles=["fixed:1x8"], **options)
    # Accepted on purpose, such an engine passes its own profile point but fails on long speech.
    build_engine(tiny, tmp_path / "short", profiles=["fixed:1x8"], allow_short_profiles=True, **options)
    point, case = _long_case(tmp_path / "short", tiny, trt, here)
    assert point.frames == 8 + 11 + 7 and not case.passed
    # Profiles that hold the context: chunked long speech equals PyTorch on the whole mel.
    build_engine(tiny, tmp_path / "long", profiles=["dynamic:1-1x8-24-32"], **options)
    point, case = _long_case(tmp_path / "long", tiny, trt, here)
    assert point.frames == 32 + 11 + 7 and case.passed, case.failures


def test_check_includes_long_chunked_speech(engine) -> None:
    from hifitrt.validation.check import check_engine

    result = check_engine(engine, write=False, with_pesq=False)
    assert result.passed, result.failure_lines()
    (point, case), = [(p, c) for p, c in zip(result.sweep.points, result.cases) if p.profile == "chunked"]
    assert point.frames > 24 and case.metrics.max_abs_error < 1e-4  # longer than every profile


# ------------------------------------------------------------------------------------ Medium
def test_vocode_without_engine_validates_like_vocoder_engine(tiny, tmp_path, capsys) -> None:
    bad = {
        "nan.npy": np.where(np.arange(30) == 3, np.nan, 0.0)[None].repeat(80, 0).astype(np.float32),
        "int.npy": np.zeros((80, 30), dtype=np.int64),
        "complex.npy": np.zeros((80, 30), dtype=np.complex64),
        "bool.npy": np.zeros((80, 30), dtype=bool),
        "shape.npy": np.zeros((7, 30), dtype=np.float32),
        "batch.npy": np.zeros((2, 80, 30), dtype=np.float32),
    }
    for name, mel in bad.items():
        np.save(tmp_path / name, mel)
        out = tmp_path / f"{name}.wav"
        code, _, err = _run_cli(["vocode", tiny, tmp_path / name, "-o", out], capsys)
        _one_line_error(code, err)
        assert not out.exists(), name


@pytest.mark.slow
def test_vocode_without_engine_is_chunked_and_exact(tiny, tmp_path, capsys) -> None:
    vocoder = load_vocoder(tiny)
    mel = _speech_mel(2100)  # longer than the CPU profiles' 2048 frames: two chunks
    np.save(tmp_path / "long.npy", mel)
    code, _, err = _run_cli(["vocode", tiny, tmp_path / "long.npy", "-o", tmp_path / "long.wav"], capsys)
    assert code == 0, err
    samples, _ = _wav_samples(tmp_path / "long.wav")
    with torch.no_grad():
        whole = vocoder.module(torch.from_numpy(mel)[None]).numpy().reshape(-1)
    expected = (np.clip(whole, -1, 32767 / 32768) * 32768).astype("<i2")
    assert len(samples) == len(expected) and np.abs(samples.astype(int) - expected).max() <= 1
    assert VocoderEngine.from_vocoder(vocoder).max_frames is None  # the API default stays one call


def test_nonfinite_engine_output_fails_the_request(engine, mel_npy, tiny, tmp_path, capsys) -> None:
    import onnx
    from onnx import helper, numpy_helper

    broken = _copy(engine, tmp_path)
    model = onnx.load(str(broken / "model.onnx"))
    for node in model.graph.node:
        node.output[:] = ["wav_inner" if o == "wav" else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    model.graph.node.append(helper.make_node("Div", ["wav_inner", "zero"], ["wav"]))  # +-Inf / NaN
    onnx.save(model, str(broken / "model.onnx"))
    manifest = read_manifest(broken)
    manifest.artifacts = artifact_digests(broken, list(manifest.artifacts))
    manifest.onnx_digest = manifest.artifacts["model.onnx"]["sha256"]
    write_manifest(broken, manifest)
    out = tmp_path / "out.wav"
    code, _, err = _run_cli(["vocode", tiny, mel_npy, "--engine", broken, "-o", out], capsys)
    assert "NaN" in _one_line_error(code, err) or "Inf" in err
    assert not out.exists()


def test_vocode_refuses_an_engine_of_another_vocoder(other, engine, mel_npy, tmp_path, capsys) -> None:
    code, _, err = _run_cli(["vocode", other, mel_npy, "--engine", engine, "-o", tmp_path / "x.wav"], capsys)
    assert "was not built from" in _one_line_error(code, err) and "weight digest" in err
    rate16 = _ckpt(tmp_path / "r16", seed=0, base="hifigan_v1_16k.yaml")  # hop 100 but 16 kHz
    code, _, err = _run_cli(["vocode", rate16, mel_npy, "--engine", engine, "-o", tmp_path / "y.wav"], capsys)
    assert "sample rate 8000 Hz vs 16000 Hz" in _one_line_error(code, err)
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "y.wav").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, value) -> None:
    ckpt = _ckpt(tmp_path, seed=0)
    data = torch.load(ckpt, weights_only=True)
    name = next(k for k in data["model"]["generator"] if k.endswith("weight_v") or k.endswith("weight"))
    data["model"]["generator"][name].view(-1)[5] = value
    torch.save(data, ckpt)
    with pytest.raises(SourceError, match=rf"weight tensor {name} holds 1 NaN/Inf"):
        load_vocoder(ckpt)


def test_build_lock_covers_the_whole_chain(tiny, other, tmp_path) -> None:
    from hifitrt.validation import build_and_verify

    out = tmp_path / "shared"
    started_parity = threading.Event()
    second_lines: list[str] = []
    errors: list[BaseException] = []

    def first_progress(line: str) -> None:
        if line.startswith("quick parity:") and not started_parity.is_set():
            started_parity.set()
            time.sleep(2.0)  # the second build starts now, while this chain still measures

    def second() -> None:
        started_parity.wait(120)
        try:
            build_engine(other, out, profiles=["fixed:1x32"], progress=second_lines.append, **FAST)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    try:
        first = build_and_verify(tiny, out, profiles=["fixed:1x32"], progress=first_progress, with_pesq=False,
                                 **FAST)
    finally:
        started_parity.set()
        thread.join(300)  # never leave a build (a torch ONNX export) running into the next test
    assert first.check is not None and first.check.passed
    assert any("waiting for another build" in line for line in second_lines)
    assert not errors
    assert read_manifest(out).source["spec"]["digest"] == load_vocoder(other).spec.digest


@pytest.mark.parametrize("text", ["fixed:1x999999999999999999999", "fixed:1000x64", "dynamic:1-64x8-64-2048"])
def test_profiles_have_upper_bounds(text) -> None:
    with pytest.raises(EngineError, match="above"):
        validate_profiles([parse_profile(text)])


def test_mistyped_path_is_no_such_file_not_a_download(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HIFITRT_OFFLINE", "0")
    (tmp_path / "voices").mkdir()
    started = time.perf_counter()
    for text in ("voices/checkpoint.pth", "voices/voice_a", "ckpt/g_02500000", "elsewhere/model.pth"):
        with pytest.raises(SourceError, match="no such file or directory"):
            load_vocoder(text)
    assert time.perf_counter() - started < 5, "a path was sent to ModelScope"
    monkeypatch.setenv("HIFITRT_OFFLINE", "1")
    with pytest.raises(SourceError, match="looks like a ModelScope model id"):
        load_vocoder("iic/speech_sambert-hifigan_tts_zh-cn_16k")


def test_accelerate_is_all_or_nothing(tmp_path) -> None:
    import modelscope_harness as harness

    from hifitrt.runtime import accelerate

    root = synthetic.make_modelscope_model_dir(tmp_path / "ms", [
        ("voice_a", _tiny_yaml(tmp_path / "a"), 1),
        ("voice_b", _tiny_yaml(tmp_path / "b", "hifigan_v1_16k.yaml", upsample_scales=[10, 20]), 2),
    ])
    engine_dir = tmp_path / "engine"
    build_engine(root, engine_dir, voice="voice_a", profiles=["fixed:1x32"], **FAST)
    voices = {name: harness.make_voice(name, root / "voices" / name, {"s": _speech_mel(20)})
              for name in ("voice_a", "voice_b")}
    model = harness.make_model(voices, 8000)
    before = {name: voice.vocoder_forward for name, voice in voices.items()}
    with pytest.raises(HifitrtError, match="does not fit voice 'voice_b'"):
        accelerate(model, {"voice_a": engine_dir, "voice_b": engine_dir})
    for name, voice in voices.items():
        assert voice.vocoder_forward == before[name] and not hasattr(voice, "hifitrt_engine"), name


def test_edited_manifest_is_refused(engine, tmp_path) -> None:
    copy = _copy(engine, tmp_path)
    data = json.loads((copy / "manifest.json").read_text())
    data["source"]["spec"]["hop"] = 200
    data["source"]["spec"]["left_context_frames"] = 0
    (copy / "manifest.json").write_text(json.dumps(data, indent=2))
    with pytest.raises(EngineError, match="was edited after the build"):
        VocoderEngine.load(copy)
    from hifitrt.engines.describe import inspect_engine_dir

    with pytest.raises(EngineError, match="was edited after the build"):
        inspect_engine_dir(copy)
