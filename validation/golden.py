"""Golden baselines: catch an engine that got worse between commits (CI engine regression).

A parity check answers "is this engine good enough?"; a golden comparison answers "is it as
good as it was?". Per model, precision and backend, ``tests/golden/<name>.json`` stores

- the sweep's metrics per shape point (SNR, log-mel L1, max abs error, NaN/Inf, length),
- an output fingerprint tolerant to float noise: for every batch-1 sweep point, the engine
  output's log-mel energy averaged over coarse blocks (8 mel bands x 4 time segments) and
  rounded to 0.01 nats; it moves when the *audio* moves (a changed reference, loader or
  feature pipeline that the engine-vs-PyTorch metrics cannot see, since both sides move),
- the op histogram of the ONNX graph the engine runs (op type -> count; the FP16 plan's FP32
  islands show up as Cast counts).

A regression is (tolerances in :data:`TOLERANCE`, stored in each file too):
SNR drop > 3 dB (values are capped at 100 dB first: above that it is float noise), log-mel L1
rise > 50 % + 0.002, any new NaN/Inf or length change, any op histogram change, or a
fingerprint block moving by more than 0.5 nats.

Regenerate on purpose (after an intended change, say why in the commit)::

    python scripts/regenerate_golden.py tests/golden             # every ONNX Runtime baseline
    python scripts/regenerate_golden.py tests/golden --only kantts8k-tiny-fp32-onnxruntime
    python scripts/regenerate_golden.py tests/golden --backend tensorrt   # on a GPU machine

With ``--compare`` the script compares instead and exits 1 on a regression (what the test does).
Readers and writers here take the baseline folder as an argument: the library does not know
where a checkout keeps its tests.
"""
from __future__ import annotations

import collections
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..jsonfile import read_json, write_json
from ..engines import layout
from ..engines.build import build_engine
from ..engines.manifest import Manifest
from ..export.kantts_random import (generator_params, kantts_configs_dir, random_weight_norm_generator,
                                    save_kantts_checkpoint)
from ..export.mel import mel_config_for, mel_magnitude
from ..export.mel_config import MelConfig
from .check import check_engine

log = logging.getLogger(__name__)

SCHEMA = "hifitrt.golden"
SCHEMA_VERSION = 1
TINY_CHANNELS = 32
SNR_CAP_FOR_COMPARE = 100.0
FINGERPRINT_BANDS = 8
FINGERPRINT_SEGMENTS = 4

TOLERANCE: dict[str, float] = {
    "snr_drop_db": 3.0,
    "log_mel_rel": 0.5,
    "log_mel_abs": 0.002,
    "fingerprint_nats": 0.5,
}


# ------------------------------------------------------------------------------------ models
def tiny_kantts_checkpoint(root: str | os.PathLike[str], seed: int = 0, channels: int = TINY_CHANNELS,
                           config: str = "hifigan_v1_8k.yaml") -> Path:
    """A random-weight KAN-TTS checkpoint from a shipped config with ``channels`` narrowed.

    Same architecture and layout as the real thing, small enough to export, plan and sweep in
    seconds on a CPU; seeded, so every machine builds the same weights.
    """
    import yaml

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    src = kantts_configs_dir() / config
    doc = yaml.safe_load(src.read_text())
    doc["Model"]["Generator"]["params"]["channels"] = int(channels)
    tiny_yaml = root / f"tiny_{channels}_{config}"
    tiny_yaml.write_text(yaml.safe_dump(doc))
    module = random_weight_norm_generator(generator_params(tiny_yaml), seed=seed)
    return save_kantts_checkpoint(module, tiny_yaml, root)


@dataclass(frozen=True)
class GoldenCase:
    """One baseline: which model, how it is built, under which name it is stored."""

    model: str  # "default" or "kantts8k-tiny"
    precision: str
    backend: str
    profiles: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return f"{self.model}-{self.precision}-{self.backend}"

    def source(self, work: Path) -> str:
        if self.model == "default":
            return "default"
        if self.model == "kantts8k-tiny":
            return str(tiny_kantts_checkpoint(work / "src", seed=0))
        raise ValueError(f"unknown golden model {self.model!r}")


_TINY_PROFILES = ("s=dynamic:1-2x8-12-16", "l=dynamic:1-2x17-20-24")
_DEFAULT_PROFILES = ("short=dynamic:1-4x8-64-128", "medium=dynamic:1-2x129-256-400")


def golden_cases(backend: str = "onnxruntime") -> list[GoldenCase]:
    return [
        GoldenCase("default", "fp16", backend, _DEFAULT_PROFILES),
        GoldenCase("kantts8k-tiny", "fp32", backend, _TINY_PROFILES),
        GoldenCase("kantts8k-tiny", "fp16", backend, _TINY_PROFILES),
    ]


# ------------------------------------------------------------------------------------ measure
def op_histogram(onnx_path: str | os.PathLike[str]) -> dict[str, int]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def fingerprint(wav: np.ndarray, mel_cfg: MelConfig) -> list[list[float]]:
    """Coarse log-mel energy blocks [bands][segments], rounded to 0.01 nats (see module doc)."""

    w = np.where(np.isfinite(wav), wav, 0.0).astype(np.float32)
    mag = mel_magnitude(w, mel_cfg)
    logmel = np.log(np.maximum(mag, mel_cfg.clamp_min))
    bands = np.array_split(np.arange(logmel.shape[0]), FINGERPRINT_BANDS)
    segs = np.array_split(np.arange(logmel.shape[1]), min(FINGERPRINT_SEGMENTS, max(1, logmel.shape[1])))
    return [[round(float(logmel[np.ix_(b, s)].mean()), 2) for s in segs] for b in bands]


def _onnx_of(engine_dir: Path, manifest: Manifest) -> Path:
    if manifest.engine_file.endswith(".onnx"):
        return engine_dir / manifest.engine_file
    return engine_dir / layout.onnx_for(manifest.precision)


def _num(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def measure_engine(engine_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The golden document's measured part for an engine directory (sweep, fingerprint, ops)."""
    root = Path(engine_dir)
    result = check_engine(root, write=False, with_pesq=False, keep_outputs=True)
    spec = result.manifest.spec
    cfg = mel_config_for(spec)
    cases = {}
    for pt, case in zip(result.sweep.points, result.cases):
        m = case.metrics
        cases[pt.key] = {"frames": pt.frames, "snr_db": _num(m.snr_db), "log_mel_l1": _num(m.log_mel_l1),
                         "max_abs_error": _num(m.max_abs_error), "nonfinite_count": int(m.nonfinite_count),
                         "length_mismatch": int(m.length_mismatch)}
    prints = {k: fingerprint(v, cfg) for k, v in sorted(result.sweep.outputs.items())}
    return {
        "passed": result.passed,
        "cases": cases,
        "fingerprint": prints,
        "ops": op_histogram(_onnx_of(root, result.manifest)),
        "precision_plan_digest": result.manifest.precision_plan_digest,
    }


def build_case(case: GoldenCase, work: str | os.PathLike[str], trt_module: Any = None) -> Path:
    """Build (or reuse) ``case``'s engine in ``work / case.name``; returns the engine directory.

    The one way a baseline's engine is built, so other users of the same engine (the test
    suite shares the default vocoder's FP16 build) get exactly what the baseline describes.
    Without the export's own FP32 check (``verify_export``: it changes no artifact, and
    :func:`measure_engine`'s sweep then compares the engine with PyTorch on more inputs); it
    took 13 of the default FP16 case's ~100 s."""
    work = Path(work)
    kwargs: dict[str, Any] = {"trt_module": trt_module} if trt_module is not None else {}
    built = build_engine(case.source(work), work / case.name, backend=case.backend, precision=case.precision,
                         profiles=list(case.profiles), verify_export=False, **kwargs)
    return built.engine_dir


def build_and_measure(case: GoldenCase, work: str | os.PathLike[str], trt_module: Any = None) -> dict[str, Any]:
    """Build ``case`` in ``work`` (reused when unchanged) and measure it."""
    doc = measure_engine(build_case(case, work, trt_module))
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": case.name, "model": case.model,
            "precision": case.precision, "backend": case.backend, "profiles": list(case.profiles),
            "tolerance": dict(TOLERANCE), **doc}


# ------------------------------------------------------------------------------------ compare
def compare(golden: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Regressions of ``current`` against ``golden`` (empty = none), one readable line each."""
    tol = {**TOLERANCE, **golden.get("tolerance", {})}
    name = golden.get("name", "?")
    out: list[str] = []
    for key, g in golden["cases"].items():
        c = current["cases"].get(key)
        if c is None:
            out.append(f"{name} {key}: shape point missing from the sweep (profiles changed?)")
            continue
        gs = min(g["snr_db"] if g["snr_db"] is not None else -math.inf, SNR_CAP_FOR_COMPARE)
        cs = min(c["snr_db"] if c["snr_db"] is not None else -math.inf, SNR_CAP_FOR_COMPARE)
        if cs < gs - tol["snr_drop_db"]:
            out.append(f"{name} {key}: SNR dropped {gs:.2f} -> {cs:.2f} dB (allowed drop {tol['snr_drop_db']} dB)")
        gl, cl = g.get("log_mel_l1"), c.get("log_mel_l1")
        if gl is not None:
            limit = gl * (1 + tol["log_mel_rel"]) + tol["log_mel_abs"]
            if cl is None or cl > limit:
                out.append(f"{name} {key}: log-mel L1 rose {gl:.5f} -> {cl if cl is None else round(cl, 5)} "
                           f"(allowed up to {limit:.5f})")
        if c["nonfinite_count"] > g["nonfinite_count"]:
            out.append(f"{name} {key}: {c['nonfinite_count']} NaN/Inf samples (golden {g['nonfinite_count']})")
        if c["length_mismatch"] != g["length_mismatch"]:
            out.append(f"{name} {key}: output length mismatch {c['length_mismatch']} samples "
                       f"(golden {g['length_mismatch']})")
    if dict(current["ops"]) != dict(golden["ops"]):
        keys = sorted(set(current["ops"]) | set(golden["ops"]))
        diff = ", ".join(f"{k} {golden['ops'].get(k, 0)}->{current['ops'].get(k, 0)}" for k in keys
                         if golden["ops"].get(k, 0) != current["ops"].get(k, 0))
        out.append(f"{name}: ONNX op histogram changed: {diff}")
    for key, g in golden["fingerprint"].items():
        c = current["fingerprint"].get(key)
        if c is None:
            out.append(f"{name} {key}: no output fingerprint (shape point missing)")
            continue
        ga, ca = np.asarray(g, dtype=np.float64), np.asarray(c, dtype=np.float64)
        dist = float(np.max(np.abs(ga - ca))) if ga.shape == ca.shape else math.inf
        if dist > tol["fingerprint_nats"]:
            out.append(f"{name} {key}: output fingerprint moved by {dist:.2f} nats "
                       f"(allowed {tol['fingerprint_nats']}): the audio itself changed")
    return out


def golden_path(name: str, directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / f"{name}.json"


def load_golden(name: str, directory: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json(golden_path(name, directory), schema=SCHEMA, version=SCHEMA_VERSION,
                     fix=f"create it with python scripts/regenerate_golden.py {directory} --only {name}")


def write_golden(doc: Mapping[str, Any], directory: str | os.PathLike[str]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return write_json(golden_path(str(doc["name"]), directory), doc, schema=SCHEMA, version=SCHEMA_VERSION,
                      indent=1)
