"""VocoderEngine on real ONNX Runtime engines: parity with PyTorch, batching, streaming,
chunking beyond the profiles, input errors, manifest checks and concurrency."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from hifitrt.engines.profiles import ShapeProfile
from hifitrt.errors import EngineError, InputError
from hifitrt.export.load import load_vocoder
from hifitrt.runtime import VocoderEngine
from small_configs import small_kantts_checkpoint

PROFILES = [ShapeProfile(1, 1, 4, 4, 48, 96, "small"), ShapeProfile(1, 1, 2, 96, 128, 192, "big")]
FP32_TOL = 1e-4
# Narrow vocoders: chunking, batching and streaming depend on the upsampling, kernels and
# causality (kept from the shipped configs), not on the width.
CHANNELS = 32


def _speechlike(channels: int, frames: int, seed: int, nsf: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.cumsum(rng.standard_normal((channels, frames)), axis=1) * 0.2
    mel = (base - base.mean(axis=1, keepdims=True)).astype(np.float32)
    if nsf:
        mel[-2] = 120 + 60 * np.sin(np.arange(frames) / 7.0)
        mel[-1] = (np.arange(frames) % 20 < 14).astype(np.float32)
    return mel


def _kantts_source(tmp: Path, config: str, seed: int = 3) -> Path:
    return small_kantts_checkpoint(tmp, config, CHANNELS, seed=seed, scale=0.5)


@pytest.fixture(scope="module", params=["hifigan_v1_8k", "hifigan_noncausal_v1_16k"])
def built(request, tmp_path_factory):
    from hifitrt.engines.build import build_engine

    tmp = tmp_path_factory.mktemp(request.param)
    source = _kantts_source(tmp, request.param)
    out = tmp / "engine"
    # every test compares with the PyTorch reference, so the build's own export check is redundant
    build_engine(source, out, backend="onnxruntime", precision="fp32", profiles=PROFILES, verify_export=False)
    engine = VocoderEngine.load(out)
    reference = VocoderEngine.from_vocoder(load_vocoder(source))
    yield engine, reference, out
    engine.close()


def test_engine_matches_pytorch_and_shapes(built):
    engine, reference, _ = built
    mel = _speechlike(engine.in_channels, 57, 0)
    wav = engine(mel)
    assert wav.shape == (57 * engine.hop,) and wav.dtype == np.float32
    assert np.abs(wav - reference(mel)).max() < FP32_TOL
    batch = engine(np.stack([mel, mel[:, ::-1].copy()]))
    assert batch.shape == (2, 57 * engine.hop)
    import torch
    assert np.abs(engine(torch.from_numpy(mel)) - wav).max() == 0


def test_batch_of_mixed_lengths_equals_unbatched(built):
    engine, _, _ = built
    mels = [_speechlike(engine.in_channels, t, i) for i, t in enumerate((31, 90, 7, 64, 150, 12))]
    batched = engine.batch(mels)
    for mel, wav in zip(mels, batched):
        assert wav.shape == (mel.shape[1] * engine.hop,)
        assert np.abs(wav - engine(mel)).max() < FP32_TOL


def test_stream_concatenation_equals_whole(built):
    engine, _, _ = built
    mel = _speechlike(engine.in_channels, 170, 5)
    whole = engine(mel)
    for chunk in (16, 50):
        parts = list(engine.stream(mel, chunk_frames=chunk))
        assert all(len(p) == chunk * engine.hop for p in parts[:-1])
        assert np.abs(np.concatenate(parts) - whole).max() < FP32_TOL


def test_long_mel_beyond_profiles_is_processed_fully(built):
    engine, reference, _ = built
    mel = _speechlike(engine.in_channels, 460, 9)  # > 192 frames, the largest profile
    wav = engine(mel)
    assert wav.shape == (460 * engine.hop,)
    assert np.abs(wav - reference(mel)).max() < FP32_TOL
    big = engine(np.stack([mel[:, :100]] * 3))  # batch 3 > batch max 2 of the 'big' profile
    assert np.abs(big - engine(mel[:, :100])[None]).max() < FP32_TOL


def test_input_errors_are_one_line(built):
    engine, _, _ = built
    c = engine.in_channels
    with pytest.raises(InputError, match=f"mel has {c + 1} channels, this vocoder expects {c}"):
        engine(np.zeros((c + 1, 10), np.float32))
    bad = _speechlike(c, 20, 1)
    bad[3, 10:13] = np.nan
    with pytest.raises(InputError, match=r"3 NaN values at frames 10\.\.12"):
        engine(bad)
    bad[3, 10:13] = np.inf
    with pytest.raises(InputError, match="Inf"):
        engine(bad)
    with pytest.raises(InputError, match="empty"):
        engine(np.zeros((c, 0), np.float32))
    with pytest.raises(InputError, match="dtype int64"):
        engine(np.zeros((c, 5), np.int64))


def test_engine_from_another_machine_is_refused(built, tmp_path):
    import shutil

    _, _, out = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["backend"] = {**manifest["backend"], "name": "tensorrt", "version": "10.0.0.1"}
    manifest["device"] = {"gpu_name": "NVIDIA H100", "compute_capability": "9.0"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError):
        VocoderEngine.load(copy)
    (copy / manifest["engine_file"]).write_bytes(b"tampered")
    with pytest.raises(EngineError):
        VocoderEngine.load(copy)


def test_concurrent_requests_equal_serial(built):
    engine, _, _ = built
    lengths = [5, 40, 97, 13, 200]
    mels = [_speechlike(engine.in_channels, t, 20 + i) for i, t in enumerate(lengths)]
    serial = [engine(m) for m in mels]
    errors: list[str] = []

    def worker(k: int) -> None:
        for r in range(20):
            i = (k + r) % len(mels)
            if np.abs(engine(mels[i]) - serial[i]).max() > 1e-6:
                errors.append(f"thread {k} request {r}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_nsf_torch_reference_stream_and_batch(tmp_path):
    """NSF: phase carried into windows, pitch/uv padded with 0 (PyTorch runner, deterministic)."""
    source = _kantts_source(tmp_path, "hifigan_noncausal_nsf_v1_16k")
    engine = VocoderEngine.from_vocoder(load_vocoder(source))
    assert engine.in_channels == 82
    mel = _speechlike(82, 120, 2, nsf=True)
    whole = engine(mel)
    streamed = np.concatenate(list(engine.stream(mel, chunk_frames=40)))
    assert np.abs(streamed - whole).max() < 1e-3
    short = _speechlike(82, 30, 4, nsf=True)
    batched = engine.batch([mel, short])
    assert np.abs(batched[1] - engine(short)).max() < 1e-3


@pytest.mark.slow
def test_default_vocoder_batch_and_stream(default_vocoder):
    from hifitrt.export.fixtures import fixture_mels

    engine = VocoderEngine.from_vocoder(default_vocoder)
    mels = [m[:, :150] for m in fixture_mels().values()][:3]
    batched = engine.batch(mels)
    for mel, wav in zip(mels, batched):
        assert np.abs(wav - engine(mel)).max() < FP32_TOL
    whole = engine(mels[-1])
    assert np.abs(np.concatenate(list(engine.stream(mels[-1], chunk_frames=48))) - whole).max() < FP32_TOL
