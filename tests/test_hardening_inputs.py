"""Hardening, the Low list: each careless or hostile input is one clear line (CLI: exit 2 and
``error: ...``; API: a typed HifitrtError subclass), never a traceback, silent nonsense or a
misleading message. Real components throughout: tiny random vocoders, real ONNX Runtime
engines, the CLI in-process or as a subprocess.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hifitrt.cli import main as cli_main
from hifitrt.engines.build import build_engine
from hifitrt.errors import EngineError, InputError, SourceError, ThresholdError
from hifitrt.export import kantts_random as synthetic, weightnorm
from hifitrt.export.classic import PRESETS, ClassicConfig, ClassicGenerator
from hifitrt.export.load import load_vocoder
from hifitrt.runtime.engine import VocoderEngine

from test_hardening import FAST, _ckpt, _copy, _one_line_error, _run_cli, _speech_mel

BIN = Path(sys.executable).parent / "tts-build-engine"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _ckpt(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def engine(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("engine") / "e"
    build_engine(tiny, out, profiles=["fixed:1x32"], **FAST)
    return out


# ------------------------------------------------------------------------------------ sources
def _classic_dir(root: Path, **changes) -> Path:
    """A classic jik876 directory whose config.json has ``changes`` (weights of the V2 preset)."""
    root.mkdir(parents=True, exist_ok=True)
    module = ClassicGenerator(ClassicConfig.from_json(dict(PRESETS["v2"])))
    weightnorm.apply_weight_norm(module)
    torch.save({"generator": weightnorm.to_legacy(module.state_dict())}, root / "g_00001000")
    (root / "config.json").write_text(json.dumps({**PRESETS["v2"], **changes}))
    return root


@pytest.mark.parametrize("changes, message", [
    ({"upsample_rates": [8, 8, 2, 0]}, "upsample_rates must be an integer from 1"),
    ({"upsample_initial_channel": -512}, "upsample_initial_channel must be an integer from 1"),
    ({"upsample_initial_channel": 2 ** 40}, "upsample_initial_channel must be an integer from 1"),
    ({"upsample_rates": 5}, "malformed HiFi-GAN config"),
    ({"sampling_rate": -16000}, "not a plausible audio rate"),
])
def test_absurd_classic_configs_are_one_line(tmp_path, changes, message) -> None:
    with pytest.raises(SourceError, match=message):
        load_vocoder(_classic_dir(tmp_path / "c", **changes))


@pytest.mark.parametrize("params, message", [
    ({"upsample_scales": [10, 0]}, "upsample_scales must be an integer from 1"),
    ({"channels": -16}, "channels must be an integer from 1"),
    ({"channels": 2 ** 40}, "channels must be an integer from 1"),
    ({"in_channels": 0}, "in_channels must be an integer from 1"),
])
def test_absurd_kantts_configs_are_one_line(tmp_path, params, message) -> None:
    import yaml

    from test_hardening import _tiny_yaml

    good = _ckpt(tmp_path / "good", seed=0)
    config = good.parent.parent / "config.yaml"
    data = yaml.safe_load(_tiny_yaml(tmp_path / "cfg").read_text())
    data["Model"]["Generator"]["params"].update(params)
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(SourceError, match=message):
        load_vocoder(good)


def test_directory_with_both_configs_is_ambiguous(tmp_path) -> None:
    root = _classic_dir(tmp_path / "both")
    (root / "config.yaml").write_text("Model: {}\n")
    (root / "ckpt").mkdir()
    with pytest.raises(SourceError, match="ambiguous"):
        load_vocoder(root)


def test_voice_is_not_ignored_for_default() -> None:
    with pytest.raises(SourceError, match="does not apply to the built-in default"):
        load_vocoder("default", voice="zhitian_emo")


def test_voice_names_that_are_paths_are_refused(tmp_path) -> None:
    root = synthetic.make_modelscope_model_dir(tmp_path / "ms", [("a", _tiny_cfg(tmp_path), 1)])
    outside = tmp_path / "outside"
    shutil.copytree(root / "voices" / "a", outside)  # a loadable voice outside the model dir
    (root / "voices" / "voices.json").write_text(json.dumps({"voices": ["../../outside"]}))
    with pytest.raises(SourceError, match="not a plain folder name"):
        load_vocoder(root)


def _tiny_cfg(tmp_path: Path) -> Path:
    from test_hardening import _tiny_yaml

    return _tiny_yaml(tmp_path / "cfg")


def test_default_vocoder_override_typo_is_not_a_silent_fallback(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HIFITRT_DEFAULT_VOCODER", str(tmp_path / "typo.ts"))
    with pytest.raises(SourceError, match="HIFITRT_DEFAULT_VOCODER=.*no such file"):
        load_vocoder("default")


# ------------------------------------------------------------------------------------ input files
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/hifitrt-pwned",))


def test_pickled_and_garbage_npy_are_one_line(tiny, tmp_path, capsys) -> None:
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([_Evil()], dtype=object), allow_pickle=True)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x93NUMPY garbage" * 10)
    text = tmp_path / "text.npy"
    text.write_text("0.1 0.2")
    for path, words in ((pickled, "pickled"), (garbage, "not a readable .npy"), (text, "not a readable .npy")):
        code, _, err = _run_cli(["vocode", tiny, path, "-o", tmp_path / "o.wav"], capsys)
        assert words in _one_line_error(code, err)
    assert not Path("/tmp/hifitrt-pwned").exists()


def test_wav_cut_mid_sample_is_one_line(tiny, tmp_path, capsys) -> None:
    from hifitrt.export.audio import read_wav, write_wav

    whole = tmp_path / "whole.wav"
    write_wav(whole, np.zeros(801, np.float32), 8000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:-1])  # the last sample loses its second byte
    with pytest.raises(InputError, match="truncated wav"):
        read_wav(cut)
    code, _, err = _run_cli(["vocode", tiny, cut, "-o", tmp_path / "o.wav"], capsys)
    assert "truncated wav" in _one_line_error(code, err)


# ------------------------------------------------------------------------------------ outputs
def test_check_report_onto_an_existing_file_fails_before_sweeping(engine, tmp_path, capsys) -> None:
    report = tmp_path / "report.txt"
    report.write_text("mine")
    code, out, err = _run_cli(["check", engine, "--report", report], capsys)
    assert "is an existing file" in _one_line_error(code, err) and "profile:point" not in out
    assert report.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to run the CLI as an unprivileged user (root ignores permissions)")
def test_read_only_destinations_are_one_line(tiny, engine) -> None:
    """As user 'nobody': vocode into a read-only folder, build into a read-only engine dir."""
    closed = next((d for d in BIN.parents if d != d.parent and not os.stat(d).st_mode & 0o001), None)
    if closed is not None:
        pytest.skip(f"user 'nobody' cannot reach {BIN}: {closed} is not world-searchable (a checkout "
                    "under a private folder such as mktemp -d's); run from a world-readable path")
    shared = Path(tempfile.mkdtemp(prefix="hifitrt-ro-", dir="/tmp"))
    try:
        os.chmod(shared, 0o755)
        src = shutil.copytree(tiny.parent.parent, shared / "src")
        ro_engine = shutil.copytree(engine, shared / "engine", ignore=shutil.ignore_patterns(".build.lock"))
        np.save(shared / "mel.npy", _speech_mel(20))
        home = shared / "home"
        home.mkdir()
        for path in [shared, home, *shared.rglob("*")]:
            os.chmod(path, 0o777 if path == home else (0o755 if path.is_dir() else 0o644))
        ckpt = next((src / "ckpt").glob("*.pth"))
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(BIN)]
        env = {**os.environ, "HOME": str(home)}
        runs = {
            "vocode": [*as_nobody, "vocode", str(ckpt), str(shared / "mel.npy"), "-o", str(shared / "out.wav")],
            "build": [*as_nobody, "build", str(ckpt), "--out", str(ro_engine), "--backend", "onnxruntime",
                      "--precision", "fp32", "--profile", "fixed:1x32", "--no-report"],
        }
        for name, argv in runs.items():
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
            assert proc.returncode == 2, (name, proc.stderr)
            lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert len(lines) == 1 and "Traceback" not in proc.stderr, (name, proc.stderr)
            assert "Permission denied" in lines[0], (name, lines[0])
        assert not (shared / "out.wav").exists()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_bench_negative_threads_is_one_line(engine, capsys) -> None:
    code, _, err = _run_cli(["bench", engine, "--threads", "-2"], capsys)
    assert "--threads -2" in _one_line_error(code, err)


# ------------------------------------------------------------------------------------ runtime API
def test_stream_chunk_frames_must_be_whole(engine) -> None:
    with VocoderEngine.load(engine) as eng:
        with pytest.raises(InputError, match="whole number of frames"):
            list(eng.stream(_speech_mel(20), chunk_frames=2.5))
        assert len(np.concatenate(list(eng.stream(_speech_mel(20), chunk_frames=np.int64(7))))) == 2000


def test_closed_engine_says_so(engine) -> None:
    eng = VocoderEngine.load(engine)
    eng.close()
    with pytest.raises(EngineError, match="closed"):
        eng(_speech_mel(10))
    with pytest.raises(EngineError, match="closed"):
        eng.batch([_speech_mel(10)])
    with pytest.raises(EngineError, match="closed"):
        list(eng.stream(_speech_mel(10)))


def test_negative_thresholds_are_refused_and_overrides_are_named(engine) -> None:
    from hifitrt.engines.manifest import read_manifest
    from hifitrt.validation.check import thresholds_for

    manifest = read_manifest(engine)
    with pytest.raises(ThresholdError, match="finite number >= 0"):
        thresholds_for(manifest, ["max_abs=-1"])
    assert thresholds_for(manifest, ["max_abs=1e-3"]).preset == "fp32 with max_abs_error overridden"
    assert thresholds_for(manifest, None).preset == "fp32"


# ------------------------------------------------------------------------------------ messages
def test_inspect_of_an_unfinished_engine_dir_names_the_manifest(engine, tmp_path, capsys) -> None:
    copy = _copy(engine, tmp_path)
    (copy / "manifest.json").unlink()
    code, _, err = _run_cli(["inspect", copy], capsys)
    assert "has no manifest.json" in _one_line_error(code, err) and "not a vocoder directory" not in err


def test_foreign_engine_file_is_not_just_called_truncated(engine, tmp_path) -> None:
    from hifitrt.engines.manifest import verify_engine_dir

    copy = _copy(engine, tmp_path)
    (copy / "model.onnx").write_bytes(b"an ONNX model from somewhere else")
    with pytest.raises(EngineError, match="or was replaced by another file"):
        verify_engine_dir(copy)


def test_inspect_into_a_closed_pipe_is_quiet(engine) -> None:
    """`tts-build-engine inspect ... | head -2`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([str(BIN), "inspect", str(engine)], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
