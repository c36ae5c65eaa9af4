"""ONNX export: graph contract, FP32 parity vs PyTorch on real speech, atomic failure, CLI."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from hifitrt.cli import main
from hifitrt.errors import ExportError, ParityError
from hifitrt.export.load import load_vocoder
from hifitrt.export.onnx_export import export_onnx
from hifitrt.export.ort import CPU, make_session
from hifitrt.export.speech_inputs import parity_batches
from hifitrt.export.kantts_random import (
    generator_params, kantts_configs_dir, make_modelscope_model_dir, random_weight_norm_generator,
    save_kantts_checkpoint,
)
from small_configs import small_kantts_config

warnings.filterwarnings("ignore", category=UserWarning)
CONFIGS = kantts_configs_dir()


def _kantts(tmp: Path, stem: str, scale: float = 0.5, channels: int | None = None):
    """A seeded random KAN-TTS vocoder of the shipped config ``stem`` (``channels``: narrowed)."""
    cfg = CONFIGS / f"{stem}.yaml" if channels is None else small_kantts_config(tmp / "cfg", stem, channels)
    module = random_weight_norm_generator(generator_params(cfg), seed=3, scale=scale)
    save_kantts_checkpoint(module, cfg, tmp / stem / "voc")
    return load_vocoder(tmp / stem / "voc")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A KAN-TTS 8 kHz random vocoder (32 channels: the graph contract, dynamic frames and the
    atomic failures do not depend on width) exported at short + medium lengths. Full-width
    FP32 parity: the NSF config and the trained default vocoder (long) below."""
    tmp = tmp_path_factory.mktemp("small")
    vocoder = _kantts(tmp, "hifigan_v1_8k", channels=32)
    result = export_onnx(vocoder, tmp / "m.onnx", lengths=("short", "medium"))
    return vocoder, result


def test_graph_contract(small) -> None:
    vocoder, result = small
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "mel" and out.name == "wav"
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(inp) == ["batch", vocoder.spec.in_channels, "frames"]
    assert dims(out) == ["batch", 1, "samples"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["hop"] == "100" and meta["sample_rate"] == "8000" and meta["causal"] == "true"
    assert meta["nsf"] == "false" and meta["source_digest"] == vocoder.spec.digest
    assert set(meta) >= {"in_channels", "n_mels", "arch", "hifitrt_version"}
    assert not {n.op_type for n in model.graph.node} & {"Dropout", "RandomNormalLike"}
    import hashlib
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == result.sha256


def test_fp32_parity_and_dynamic_frames(small) -> None:
    vocoder, result = small
    cases = result.parity["cases"]
    assert {(c["length"], c["batch"]) for c in cases} == {
        ("short", 1), ("short", 2), ("medium", 1), ("medium", 2)}
    assert all(c["max_abs"] <= 1e-4 for c in cases)
    session = make_session(result.path, providers=[CPU])
    mel = parity_batches(vocoder.spec, ["medium"])["medium"][:1]
    for frames in (1, 17, 101):  # odd lengths the trace never saw
        got = session.run(["wav"], {"mel": mel[:, :, :frames]})[0]
        with torch.no_grad():
            ref = vocoder.module(torch.from_numpy(mel[:, :, :frames])).numpy()
        assert got.shape == (1, 1, frames * 100)
        assert np.max(np.abs(got - ref)) <= 1e-4


def test_nsf_config_exports_with_parity(tmp_path: Path) -> None:
    """NSF (phase chain computed frame-wise) meets the same 1e-4 FP32 tolerance as the rest.

    The other KAN-TTS configs (causal 16 kHz, 48 kHz / 128 mels) are exported with parity in
    tests/test_precision.py, which needs their FP32 graphs anyway.
    """
    vocoder = _kantts(tmp_path, "hifigan_noncausal_nsf_v1_16k")
    result = export_onnx(vocoder, tmp_path / "m.onnx", lengths=("short",))
    assert result.path.is_file()
    assert result.parity["passed"] and len(result.parity["cases"]) == 2
    assert result.parity["atol"] == 1e-4 and result.parity["max_abs"] <= 1e-4
    model = onnx.load(str(result.path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["nsf"] == "true" and meta["in_channels"] == "82"
    # torch.remainder exports as Sub/Div/Floor, not Mod.
    assert {"CumSum", "Sin", "Floor"} <= {n.op_type for n in model.graph.node}


@pytest.mark.slow
def test_default_vocoder_long_fp32_parity(default_vocoder, tmp_path: Path) -> None:
    """The trained vocoder at > 1000 frames, batch 1 and 2 (the only long case in the suite)."""
    result = export_onnx(default_vocoder, tmp_path / "d.onnx", lengths=("long",))
    cases = result.parity["cases"]
    assert [(c["batch"], c["frames"] > 1000) for c in cases] == [(1, True), (2, True)]
    assert result.parity["max_abs"] <= 1e-4


def test_unsupported_opset_leaves_no_file(small, tmp_path: Path) -> None:
    vocoder, _ = small
    with pytest.raises(ExportError, match="opset 16"):
        export_onnx(vocoder, tmp_path / "x.onnx", opset=16)
    assert list(tmp_path.iterdir()) == []


def test_failed_parity_leaves_no_file(small, tmp_path: Path) -> None:
    vocoder, _ = small
    with pytest.raises(ParityError, match="max abs error"):
        export_onnx(vocoder, tmp_path / "x.onnx", lengths=("short",), atol=0.0)
    assert list(tmp_path.iterdir()) == []


def _plant_tiny_weights(voc: Path) -> None:
    """Put one weight below FP16's smallest subnormal into every weight-normed layer of the
    checkpoint in ``voc``: a 256-channel random net has a few dozen such weights, a narrow one
    none, and without them the converter's truncation warnings would not be raised at all."""
    ckpt = next((voc / "ckpt").glob("checkpoint_*.pth"))
    state = torch.load(ckpt, weights_only=True)
    for name, value in state["model"]["generator"].items():
        if name.endswith("weight_v"):
            value.view(-1)[0] = 1e-9
    torch.save(state, ckpt)


@pytest.mark.slow
def test_cli_fp16_on_modelscope_dir_with_voice(tmp_path: Path, capsys) -> None:
    """`export --voice --precision fp16` on a ModelScope dir (narrow voices: the CLI path, not
    the width, is under test; full-width FP16 plans are tests/test_precision.py's)."""
    voices = [("zhitian", small_kantts_config(tmp_path / "cfg", "hifigan_v1_16k", 32), 1),
              ("zhiyan", small_kantts_config(tmp_path / "cfg", "hifigan_v1_8k", 32), 2)]
    root = make_modelscope_model_dir(tmp_path / "ms", voices, scale=0.5)
    _plant_tiny_weights(root / "voices" / "zhiyan" / "voc")
    out = tmp_path / "out" / "v.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["export", str(root), "--voice", "zhiyan", "-o", str(out), "--precision", "fp16"])
    assert rc == 0
    # The converter's per-weight "will be truncated" warnings are silenced (expected clamps).
    assert not [w for w in caught if "truncated" in str(w.message)]
    printed = capsys.readouterr().out
    assert "fp32 parity" in printed and "fp16 plan" in printed
    assert out.is_file() and out.with_suffix(".plan.json").is_file() and out.with_suffix(".fp32.onnx").is_file()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["sample_rate"] == "8000"
    model = onnx.load(str(out))
    assert onnx.TensorProto.FLOAT16 in {i.data_type for i in model.graph.initializer}
    io = list(model.graph.input) + list(model.graph.output)
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)
    plan = json.loads(out.with_suffix(".plan.json").read_text())
    # export calibrates on the same speech-input set as `build` (one set, issue 12)
    from hifitrt.export import load_vocoder
    from hifitrt.export.speech_inputs import calibration_mels

    same_as_build, _ = calibration_mels(load_vocoder(str(root), voice="zhiyan").spec)
    assert plan["fp16_path"] == "v.onnx"
    assert plan["calibration"]["mels"] == [int(m.shape[-1]) for m in same_as_build]


def test_cli_error_is_one_line(tmp_path: Path, capsys) -> None:
    rc = main(["export", "default", "-o", str(tmp_path / "x.onnx"), "--opset", "21"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "opset 21" in err and "\n" not in err


def test_long_parity_batch_is_over_1000_frames_at_every_hop(tmp_path: Path, default_vocoder) -> None:
    """48 kHz (hop 600) turns the 11.1 s fixture into 886 frames; "long" still means > 1000."""
    from hifitrt.export.speech_inputs import speech_mels

    for spec in (_kantts(tmp_path, "hifigan_v1_48k", channels=32).spec, default_vocoder.spec):
        longest = list(speech_mels(spec).values())[-1]
        batch = parity_batches(spec, ["long"])["long"]
        assert batch.shape[0] == 2 and batch.shape[2] == max(1024, longest.shape[1]) > 1000
        n = longest.shape[1]
        np.testing.assert_array_equal(batch[0, :, :n], longest)  # the longest utterance first
        assert not np.array_equal(batch[0], batch[1])
