"""Fault injection: a check must fail, naming the right metric, for real engine breakage.

One small fp32 ONNX Runtime engine (a random-weight KAN-TTS 8 kHz vocoder with 32 channels)
is built once; each test copies it, breaks its ONNX graph the way real bugs do, re-records the
artifact digests so the manifest verifies (the check must catch the fault by *audio*, not by
hash), and runs ``check_engine``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from hifitrt.engines.manifest import artifact_digests, read_manifest, write_manifest
from hifitrt.errors import SourceChangedError
from hifitrt.validation.check import check_engine

NAN_ABOVE_FRAMES = 16  # the "NaN in one profile" fault fires only in profile l


@pytest.fixture(scope="module")
def engine(tiny_fp32_engine: Path) -> Path:
    """The session's shared tiny fp32 engine (tests/conftest.py; profiles s: 8-16 frames, l: 17-24)."""
    return tiny_fp32_engine


def _copy(engine: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "engine"
    shutil.copytree(engine, dst, ignore=shutil.ignore_patterns("report", ".build.lock"))
    return dst


def _rerecord(engine_dir: Path, **changes) -> None:
    """Refresh every artifact digest (and apply manifest field changes) after an edit."""
    manifest = read_manifest(engine_dir)
    for key, value in changes.items():
        setattr(manifest, key, value)
    manifest.artifacts = artifact_digests(engine_dir, [
        p.relative_to(engine_dir).as_posix() for p in engine_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
    ])
    manifest.onnx_digest = manifest.artifacts["model.onnx"]["sha256"]
    write_manifest(engine_dir, manifest)


def _check(engine_dir: Path):
    return check_engine(engine_dir, write=False, with_pesq=False)


def _edit_output(engine_dir: Path, make_nodes, file: str = "model.onnx") -> None:
    """Rename the graph's ``wav`` producer output and let ``make_nodes(src)`` produce ``wav``."""
    path = engine_dir / file
    model = onnx.load(str(path))
    g = model.graph
    for node in g.node:
        for i, out in enumerate(node.output):
            if out == "wav":
                node.output[i] = "wav_inner"
    nodes, inits = make_nodes("wav_inner")
    g.node.extend(nodes)
    g.initializer.extend(inits)
    onnx.save(model, str(path))


def test_clean_engine_passes(engine: Path) -> None:
    result = _check(engine)
    assert result.passed, result.failure_lines()
    assert {p.profile for p in result.sweep.points} == {"s", "l", "chunked"}  # + long speech, chunked
    assert max(c.metrics.max_abs_error for c in result.cases) < 1e-4


def test_perturbed_layer_weights_fail_max_abs(engine: Path, tmp_path: Path) -> None:
    d = _copy(engine, tmp_path)
    model = onnx.load(str(d / "model.onnx"))
    # One mid-network layer (a resblock conv), nudged by 1 % of its spread.
    init = next(i for i in model.graph.initializer if "conv_blocks.1.convs1" in i.name and i.name.endswith("weight"))
    w = numpy_helper.to_array(init)
    w = w + 0.01 * w.std() * np.random.default_rng(0).standard_normal(w.shape).astype(np.float32)
    init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
    onnx.save(model, str(d / "model.onnx"))
    _rerecord(d)
    result = _check(d)
    assert not result.passed
    assert "max_abs_error" in result.failed_metrics()
    assert all(not c.passed for c in result.cases)  # a weight change breaks every shape


def test_fp16_overflow_fails(engine: Path, tmp_path: Path) -> None:
    from onnxconverter_common import float16

    d = _copy(engine, tmp_path)
    model = float16.convert_float_to_float16(onnx.load(str(d / "model.onnx")), keep_io_types=True)
    g = model.graph
    # Scale conv_pre's (FP16) weight and bias by K: the weights stay representable (< 65504)
    # but the activations leave the FP16 range. ONNX Runtime's CPU provider runs FP16 convs
    # through fp32 casts, so the overflow surfaces as saturated audio (a huge error, SNR far
    # below 40 dB) or as Inf/NaN where an FP16 kernel overflows (TensorRT).
    k = 1e4
    conv = next(n for n in g.node if n.op_type == "Conv" and "conv_pre" in n.input[1])
    for init in g.initializer:
        if init.name in conv.input[1:]:
            a = numpy_helper.to_array(init).astype(np.float32) * k
            assert np.abs(a).max() < 65504
            init.CopyFrom(numpy_helper.from_array(a.astype(np.float16), init.name))
    onnx.save(model, str(d / "model.fp16.onnx"))
    session = d / "onnxruntime" / "session.json"  # the ORT engine's own pointer to its graph
    session.write_text(json.dumps({**json.loads(session.read_text()), "model": "model.fp16.onnx"}))
    _rerecord(d, precision="fp16", engine_file="model.fp16.onnx")
    result = _check(d)
    assert result.thresholds.preset == "fp16"
    assert not result.passed
    assert result.failed_metrics() & {"snr_db", "nonfinite_count"}
    worst = min(c.metrics.snr_db for c in result.cases)
    assert worst < 10.0 or sum(c.metrics.nonfinite_count for c in result.cases) > 0


def _wrong_hop(src: str):
    # Pad the output by one extra sample per frame: as if hop were hop + 1.
    nodes = [
        helper.make_node("Shape", ["mel"], ["mel_shape"]),
        helper.make_node("Slice", ["mel_shape", "i2", "i3"], ["frames"]),
        helper.make_node("Concat", ["zeros5", "frames"], ["pads"], axis=0),
        helper.make_node("Pad", [src, "pads"], ["wav"]),
    ]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "i2"),
             numpy_helper.from_array(np.array([3], np.int64), "i3"),
             numpy_helper.from_array(np.zeros(5, np.int64), "zeros5")]
    return nodes, inits


def _truncate(src: str):
    nodes = [helper.make_node("Slice", [src, "st", "en", "ax"], ["wav"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "st"),
             numpy_helper.from_array(np.array([-37], np.int64), "en"),
             numpy_helper.from_array(np.array([2], np.int64), "ax")]
    return nodes, inits


def _nan_when_long(src: str):
    nodes = [
        helper.make_node("Shape", ["mel"], ["mel_shape"]),
        helper.make_node("Slice", ["mel_shape", "i2", "i3"], ["frames"]),
        helper.make_node("Greater", ["frames", "limit"], ["too_long"]),
        helper.make_node("Where", ["too_long", "nan", src], ["wav"]),
    ]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "i2"),
             numpy_helper.from_array(np.array([3], np.int64), "i3"),
             numpy_helper.from_array(np.array([NAN_ABOVE_FRAMES], np.int64), "limit"),
             numpy_helper.from_array(np.array([np.nan], np.float32), "nan")]
    return nodes, inits


@pytest.mark.parametrize("fault,sign", [(_wrong_hop, 1), (_truncate, -1)], ids=["wrong_hop", "truncated"])
def test_length_faults_fail_length_mismatch(engine: Path, tmp_path: Path, fault, sign: int) -> None:
    d = _copy(engine, tmp_path)
    _edit_output(d, fault)
    _rerecord(d)
    result = _check(d)
    assert not result.passed
    assert "length_mismatch" in result.failed_metrics()
    for case, pt in zip(result.cases, result.sweep.points):
        if pt.profile == "chunked":  # the runtime refuses the wrong length: recorded as no audio
            assert not case.passed
            continue
        n = case.metrics.length_mismatch
        assert np.sign(n) == sign
        if fault is _wrong_hop:
            assert n == pt.frames  # exactly one extra sample per frame
        else:
            assert n == -37


def test_nan_in_one_profile_only(engine: Path, tmp_path: Path) -> None:
    d = _copy(engine, tmp_path)
    _edit_output(d, _nan_when_long)
    _rerecord(d)
    result = _check(d)
    assert not result.passed
    failed = {pt.profile for pt, _ in result.sweep.failed}
    assert failed == {"l", "chunked"}  # long speech is chunked into profile l's lengths
    assert result.failed_metrics() == {"nonfinite_count", "max_abs_error"} or \
        "nonfinite_count" in result.failed_metrics()
    assert all(c.passed for pt, c in zip(result.sweep.points, result.cases) if pt.profile == "s")


def test_engine_output_faults_are_one_line_engine_errors(engine: Path, tmp_path: Path) -> None:
    """Outside a parity check, an engine whose audio is NaN/Inf or of the wrong length fails the
    call with one EngineError line (Runner.infer checks every output), never silent audio."""
    from hifitrt.errors import EngineError
    from hifitrt.export.speech_inputs import fixture_speech
    from hifitrt.runtime import VocoderEngine

    for fault, frames, words in ((_nan_when_long, NAN_ABOVE_FRAMES + 4, "NaN/Inf samples"),
                                 (_truncate, 12, "returned shape")):
        d = _copy(engine, tmp_path / fault.__name__)
        _edit_output(d, fault)
        _rerecord(d)
        with VocoderEngine.load(d) as vocoder:
            speech = fixture_speech(vocoder.spec)
            with pytest.raises(EngineError, match=words) as caught:
                vocoder(speech.crop(frames)[0])
            assert "\n" not in str(caught.value)
            if fault is _nan_when_long:  # the same engine is fine where its output is finite
                assert np.isfinite(vocoder(speech.crop(12)[0])).all()


def test_changed_source_is_refused(engine: Path, tmp_path: Path) -> None:
    import torch

    d = _copy(engine, tmp_path)
    # Point the engine at a copy of its source, then retrain that copy (new weights, same path).
    manifest = read_manifest(d)
    src = Path(manifest.source["location"])
    moved = tmp_path / "src" / "ckpt" / src.name
    shutil.copytree(src.parent.parent, tmp_path / "src")
    manifest.source = {**manifest.source, "location": str(moved)}
    write_manifest(d, manifest)
    ckpt = torch.load(moved, map_location="cpu", weights_only=True)
    gen = ckpt["model"]["generator"]
    name = next(k for k in gen if k.endswith("bias"))  # (weight_v scale would fold away)
    gen[name] = gen[name] + 0.01
    torch.save(ckpt, moved)
    with pytest.raises(SourceChangedError, match="changed since"):
        _check(d)
