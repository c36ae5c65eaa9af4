"""FP32 ONNX export of a loaded vocoder, verified against PyTorch with ONNX Runtime.

Graph contract (docs/INTERFACES.md): input ``mel`` float32 [batch, in_channels, frames],
output ``wav`` float32 [batch, 1, samples] with samples = frames * hop; opset 17 by default,
17-20 accepted (TensorRT 10.x and 11.x both parse them); constants folded; metadata_props
carry the spec (sample_rate, hop, in_channels, n_mels, arch, causal, nsf, source_digest,
hifitrt_version).

Why the TorchScript-based exporter (``dynamo=False``): it traces shape arithmetic
(``x.shape[-1]`` in causal trims and in the transposed-conv branch crop) into Shape/Slice
nodes, so the frame axis stays truly dynamic; verification runs ONNX Runtime at several
lengths to prove it.

NSF vocoders (KAN-TTS ``nsf_params``) are exported in deterministic mode
(``set_deterministic(True)``): the random per-harmonic phases and the Gaussian noise of the
source module are zero, so the graph holds no random ops and is comparable with PyTorch.
Their input stays ``mel`` with n_mels + 2 rows: pitch in Hz and the 0/1 voicing flag are the
last two. The excitation's phase accumulation becomes CumSum -> Mod -> Sin in the graph;
both export natively at opset 17 (``torch.remainder`` maps to Mod with fmod=0 semantics via
Sub/Div/Floor in the exporter) and are covered by the same parity check.

``verify=True`` compares ONNX Runtime (CPU, FP32) with the PyTorch module on real speech at
batch 1 and 2 at short (32), medium (~216) and long (> 1000) frame counts; anything above
``atol`` (default 1e-4 max abs) raises ParityError and no file is written.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence

import numpy as np

from .. import __version__
from ..atomic import atomic_path
from ..errors import ExportError, HifitrtError, ParityError
from .load import Vocoder, load_vocoder
from .ort import CPU, make_session
from .parity import FP32_MAX_ABS_ERROR
from .precision import PrecisionPlan, plan_fp16
from .reference import TorchRunner
from .speech_inputs import calibration_mels, parity_batches
from .spec import VocoderSpec

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = (17, 18, 19, 20)
FP32_ATOL = FP32_MAX_ABS_ERROR
# Ops that must never reach an inference graph (randomness or training-mode behaviour).
TRAINING_OPS = {"Dropout", "RandomNormal", "RandomNormalLike", "RandomUniform",
                "RandomUniformLike", "Multinomial", "Bernoulli"}
TRACE_FRAMES = 48


@dataclass
class OnnxExport:
    """Result of :func:`export_onnx`: where, what (sha256), how long, and the parity numbers."""

    path: Path
    sha256: str
    seconds: float
    parity: Dict[str, Any] = field(default_factory=dict)


def check_opset(opset: int) -> int:
    if int(opset) not in SUPPORTED_OPSETS:
        raise ExportError(
            f"ONNX opset {opset} is not supported; use {SUPPORTED_OPSETS[0]} to "
            f"{SUPPORTED_OPSETS[-1]} (TensorRT 10.x and 11.x parse both ends)"
        )
    return int(opset)


def metadata_for(spec: VocoderSpec) -> Dict[str, str]:
    return {
        "sample_rate": str(spec.sample_rate), "hop": str(spec.hop),
        "in_channels": str(spec.in_channels), "n_mels": str(spec.n_mels),
        "arch": str(spec.arch), "causal": str(bool(spec.causal)).lower(),
        "nsf": str(bool(spec.nsf)).lower(), "source_digest": str(spec.digest),
        "hifitrt_version": __version__,
    }


@contextlib.contextmanager
def export_view(module: Any) -> Iterator[Any]:
    """``module`` prepared for tracing: NSF source in deterministic mode (then restored)."""
    with deterministic(module):
        yield module


@contextlib.contextmanager
def deterministic(module: Any) -> Iterator[None]:
    """NSF source module without random phases/noise for the duration (then restored)."""
    setter = getattr(module, "set_deterministic", None)
    before = getattr(module, "deterministic", True)
    if setter:
        setter(True)
    try:
        yield
    finally:
        if setter:
            setter(before)


def _torch_export(module: Any, in_channels: int, opset: int) -> bytes:
    import torch

    dummy = torch.zeros(1, in_channels, TRACE_FRAMES)
    if in_channels > 2:  # a speech-like trace input; NSF: plausible pitch and voicing rows
        dummy[:, :, :] = -5.0
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), buf, input_names=["mel"], output_names=["wav"],
            dynamic_axes={"mel": {0: "batch", 2: "frames"}, "wav": {0: "batch", 2: "samples"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
            training=torch.onnx.TrainingMode.EVAL,
        )
    return buf.getvalue()


def build_model(vocoder: Vocoder, opset: int = DEFAULT_OPSET):
    """The checked FP32 ``onnx.ModelProto`` of ``vocoder`` (not written anywhere)."""
    import onnx
    import torch

    opset = check_opset(opset)
    spec = vocoder.spec
    module = vocoder.module.eval()
    with export_view(module) as traced, torch.no_grad():
        try:
            data = _torch_export(traced, spec.in_channels, opset)
        except Exception as exc:  # the exporter raises many types; keep one line
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            raise ExportError(f"torch.onnx.export failed for {spec.source}: {first}") from None
    model = onnx.load_from_string(data)
    bad = sorted({n.op_type for n in model.graph.node} & TRAINING_OPS)
    if bad:
        raise ExportError(f"exported graph contains training-only/random ops {bad}; "
                          "put the module in eval and deterministic mode")
    del model.metadata_props[:]
    for key, value in metadata_for(spec).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "hifitrt"
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"exported ONNX fails onnx.checker: {str(exc).splitlines()[0][:200]}") from None
    return model


def verify_fp32(onnx_path: Path, vocoder: Vocoder, *, lengths: Sequence[str] = ("short", "medium", "long"),
                atol: float = FP32_ATOL, reference: Any = None, threads: int | None = None) -> Dict[str, Any]:
    """ORT CPU vs PyTorch max abs error at batch 1 and 2 per length; ParityError above atol."""
    reference = reference or TorchRunner(vocoder.module, cache=True)
    session = make_session(onnx_path, providers=[CPU], threads=threads)
    spec = vocoder.spec
    results: Dict[str, Any] = {"atol": atol, "cases": []}
    worst = 0.0
    with deterministic(vocoder.module):
        for name, batch in parity_batches(spec, lengths).items():
            ref = reference(batch)
            frames = batch.shape[-1]
            for b in (1, 2):
                try:
                    got = session.run(["wav"], {"mel": batch[:b]})[0]
                except Exception as exc:  # ORT raises its own Fail/RuntimeException types
                    raise ParityError(
                        f"ONNX Runtime cannot run the exported graph at batch {b}, {frames} "
                        f"frames: {str(exc).splitlines()[0][:160]}") from None
                if got.shape != (b, 1, frames * spec.hop):
                    raise ParityError(
                        f"ONNX output shape {got.shape} at batch {b}, {frames} frames; expected "
                        f"{(b, 1, frames * spec.hop)} (frame axis not dynamic?)")
                err = float(np.max(np.abs(got - ref[:b]))) if np.all(np.isfinite(got)) else float("inf")
                results["cases"].append({"length": name, "frames": int(frames), "batch": b,
                                         "max_abs": err})
                log.info("fp32 parity %s (%d frames) batch %d: max abs %.2e", name, frames, b, err)
                worst = max(worst, err)
    results["max_abs"] = worst
    results["passed"] = worst <= atol
    if not results["passed"]:
        bad = max(results["cases"], key=lambda c: c["max_abs"])
        raise ParityError(
            f"FP32 ONNX differs from PyTorch: max abs error {worst:.3g} > {atol:g} "
            f"({bad['length']}, {bad['frames']} frames, batch {bad['batch']}); not written")
    return results


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_onnx(vocoder: Vocoder, path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET,
                verify: bool = True, atol: float | None = None,
                lengths: Sequence[str] = ("short", "medium", "long"),
                reference: Any = None) -> OnnxExport:
    """Export ``vocoder`` to ``path`` as the contract's FP32 graph; verify before publishing.

    The graph is written to a temp file beside ``path``, checked and (``verify``) compared with
    PyTorch; only then it replaces ``path``. Any failure leaves no file. ``lengths`` and
    ``atol`` (None: 1e-4 for every architecture, NSF included) tune the parity check; ``reference`` is a shared
    :class:`~hifitrt.export.reference.TorchRunner` (with ``cache=True`` it keeps PyTorch outputs).
    """
    import onnx

    start = time.perf_counter()
    opset = check_opset(opset)
    target = Path(path)
    log.info("exporting %s to ONNX (opset %d)", vocoder.spec.source, opset)
    model = build_model(vocoder, opset)
    if atol is None:
        atol = FP32_ATOL
    parity: Dict[str, Any] = {}
    try:
        with atomic_path(target) as tmp:
            onnx.save(model, str(tmp))
            if verify:
                parity = verify_fp32(tmp, vocoder, lengths=lengths, atol=atol, reference=reference)
            digest = sha256_file(tmp)
    except HifitrtError:
        raise
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from None
    seconds = time.perf_counter() - start
    log.info("wrote %s (%.1f s)", target, seconds)
    return OnnxExport(path=target, sha256=digest, seconds=seconds, parity=parity)


# ------------------------------------------------------------------------------------ export
@dataclass
class ExportResult:
    """What :func:`export_vocoder` wrote: the verified fp32 export and, for fp16, the plan.

    fp32: ``output`` is the verified FP32 graph. fp16: ``output`` is the planned FP16 graph
    (FP32 IO), ``plan_path`` the precision plan, and ``fp32.path`` the FP32 graph it was
    derived from (kept because engines and re-planning start from it).
    """

    output: Path
    precision: str
    fp32: OnnxExport
    plan: PrecisionPlan | None = None
    plan_path: Path | None = None
    calibration: str | None = None
    seconds: float = 0.0


def export_vocoder(source: str | os.PathLike[str], output: str | os.PathLike[str], *, voice: str | None = None,
                   precision: str = "fp32", opset: int = DEFAULT_OPSET) -> ExportResult:
    """``tts-build-engine export``: load ``source``, export verified FP32 ONNX, plan FP16 if asked.

    The FP16 plan is calibrated on :func:`~hifitrt.export.speech_inputs.calibration_mels`, the
    same mels ``build`` plans on, so both produce the same plan (same kept islands) for the
    same source.
    """
    start = time.perf_counter()
    out = Path(output)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: output must end in .onnx")
    if precision not in ("fp32", "fp16"):
        raise ExportError(f"unknown precision {precision!r}: use fp32 or fp16")
    opset = check_opset(opset)
    vocoder = load_vocoder(source, voice=voice)
    reference = TorchRunner(vocoder.module, cache=True)
    fp32_path = out if precision == "fp32" else out.with_suffix(".fp32.onnx")
    fp32 = export_onnx(vocoder, fp32_path, opset=opset, reference=reference)
    if precision == "fp32":
        return ExportResult(out, precision, fp32, seconds=time.perf_counter() - start)
    plan_path = out.with_suffix(".plan.json")
    mels, calibration = calibration_mels(vocoder.spec)
    plan = plan_fp16(fp32_path, out, plan_path, vocoder, mels, reference=reference)
    return ExportResult(out, precision, fp32, plan, plan_path, calibration, time.perf_counter() - start)

