"""``--backend auto`` without a CUDA GPU: time the CPU backends and build the fastest that passes parity.

Why measure instead of a fixed rule: which CPU runtime is faster depends on the CPU and on the
vocoder (issue 14: OpenVINO FP32 ran the default vocoder ~1.5x faster than ONNX Runtime FP32
on one AVX2 EPYC, and BF16 only pays on CPUs with BF16 units), and a build already has what a
fair measurement needs: the fp32 ONNX it just exported, the vocoder's PyTorch reference and
the real-speech fixtures.

Candidates (:func:`cpu_candidates`) are the CPU backends that can build the precision asked
for: fp16 (the default) only ONNX Runtime, bf16 only OpenVINO (both chosen without measuring);
fp32 ONNX Runtime FP32 and OpenVINO FP32; ``auto`` those two plus OpenVINO BF16 when the CPU
has BF16 units (the BF16 plan and its perceptual gate decide whether it may run at all).

Measurement (:func:`measure_candidates`): on two real-speech mels of the shared calibration
set (:func:`hifitrt.export.speech_inputs.calibration_mels`, at most :data:`SELECTION_FRAMES`
frames), every candidate with the same pinned intra-op thread count; the parity runs double
as the warm-up, then :data:`ROUNDS` interleaved rounds on the longer mel (the shared CPU is
noisy: turns, not blocks), median seconds. Parity against PyTorch FP32 on both mels: FP32 candidates must meet
the FP32 target (``FP32_MAX_ABS_ERROR``), the BF16 one its plan's gate. The fastest passing
candidate is built; when none passes, ONNX Runtime FP32 is (the former default, and the build's
quick parity then reports the problem).

Reuse: :class:`CpuAutoBackend`'s build key is ``backend: "auto"``, the candidate list and each
candidate backend's own key inputs, so a rebuild with the same inputs reuses the engine with
the choice recorded in its manifest (no re-measuring), and a new ONNX Runtime/OpenVINO
version, another CPU or another BF16 gate measures again. ``--force`` always measures again.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import EngineError
from ..export.parity import FP32_MAX_ABS_ERROR, snr_db
from ..timing import interleaved_times
from . import layout
from .backends import Backend, BackendBuild, BuildOptions, BuildRequest, backend_for
from .machine import Machine

_LOG = logging.getLogger(__name__)

ROUNDS = 3
SELECTION_MELS = 2
SELECTION_FRAMES = 200
FP32_CANDIDATES = ("onnxruntime", "openvino")
BF16_PRECISIONS = ("bf16", "auto")

Infer = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class Candidate:
    """One CPU backend at one precision that ``auto`` may build."""

    backend: str
    precision: str  # fp16 | fp32 | bf16: what the candidate runs

    @property
    def label(self) -> str:
        names = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
        return f"{names.get(self.backend, self.backend)} {self.precision.upper()}"


def _openvino_missing() -> str | None:
    """Why the OpenVINO backend cannot build here (None: it can)."""
    try:
        backend_for("openvino").requested()
    except EngineError as exc:
        return str(exc)
    return None


def cpu_candidates(precision: str) -> tuple[tuple[Candidate, ...], str]:
    """(the candidates for ``precision`` on this CPU, a note on what was left out and why)."""
    if precision == "fp16":
        return (Candidate("onnxruntime", "fp16"),), (
            "only ONNX Runtime builds fp16 on a CPU (OpenVINO CPU engines are fp32 or bf16; "
            "--precision fp32 or auto lets auto time OpenVINO too)")
    missing = _openvino_missing()
    if precision == "bf16":
        if missing:
            raise EngineError(f"--precision bf16 needs the OpenVINO backend, which cannot run here: {missing}")
        return (Candidate("openvino", "bf16"),), "only OpenVINO builds bf16"
    found = [Candidate("onnxruntime", "fp32")]
    if missing:
        return tuple(found), f"OpenVINO left out: {missing}"
    found.append(Candidate("openvino", "fp32"))
    note = ""
    if precision == "auto":
        from .openvino_engine import cpu_info

        cpu = cpu_info()
        if cpu.has_bf16:
            found.append(Candidate("openvino", "bf16"))
        else:
            note = f"OpenVINO BF16 left out: {cpu.model} has {cpu.bf16_units()}"
    return tuple(found), note


def resolve_cpu_auto(precision: str) -> tuple[Backend, str]:
    """What ``--backend auto`` is on a machine without a CUDA GPU (see the module docstring)."""
    candidates, note = cpu_candidates(precision)
    only = candidates[0]
    if len(candidates) == 1 and precision in backend_for(only.backend).precisions:
        why = f"auto: no CUDA GPU, so {backend_for(only.backend).label} on the CPU"
        return backend_for(only.backend), why + (f": {note}" if note else "")
    backend = CpuAutoBackend(candidates, precision, note)
    return backend, backend.requested()


# ------------------------------------------------------------------------------------ measuring
@dataclass
class CpuSelection:
    """What was measured and what was chosen (the manifest's ``backend.selection``)."""

    chosen: str
    reason: str
    candidates: list[dict[str, Any]]
    settings: dict[str, Any]
    seconds: float = 0.0
    bf16_plan: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("bf16_plan")
        return data


def _finite_or_none(value: float, digits: int) -> float | None:
    return round(float(value), digits) if np.isfinite(value) else None


def _ort_infer(onnx_path: Path, threads: int) -> Infer:
    from ..export.ort import make_session

    session = make_session(onnx_path, threads=threads, inter_op_threads=1)
    name = session.get_inputs()[0].name
    return lambda mel: session.run(None, {name: mel})[0]


def _openvino_infer(parts: Sequence[Any], threads: int) -> Infer:
    """A compiled chain of ``PartSource`` ONNX pieces (one for FP32, the plan's for BF16)."""
    from .openvino_engine import CompiledChain, EnginePart, compile_model

    compiled = [compile_model(p.onnx_path, p.hint, threads) for p in parts]
    chain = CompiledChain(compiled, [EnginePart(p.name, "", "", p.hint, list(p.inputs), list(p.outputs))
                                     for p in parts])
    return chain.infer


def measure_candidates(
    request: BuildRequest,
    candidates: Sequence[Candidate],
    work_dir: Path,
    *,
    threads: int | None = None,
    rounds: int = ROUNDS,
) -> CpuSelection:
    """Time and parity-check ``candidates`` on ``request``'s fp32 ONNX; choose one (module docstring)."""
    from ..export.reference import TorchRunner
    from ..export.speech_inputs import calibration_mels
    from .openvino_engine import bf16_plan_for, usable_cores, whole_graph_part

    started = time.perf_counter()
    vocoder = request.vocoder
    if vocoder is None:
        raise EngineError("--backend auto on a CPU needs the loaded vocoder to measure the backends against")
    spec = vocoder.spec
    reference = request.reference if request.reference is not None else TorchRunner(vocoder.module, cache=True)
    onnx_path = request.engine_dir / layout.FP32_ONNX
    threads = int(threads or usable_cores())
    mels, origin = calibration_mels(spec, max_items=SELECTION_MELS, max_frames=SELECTION_FRAMES)
    mels = sorted((m[None] for m in mels), key=lambda m: -m.shape[-1])  # the longest, timed, first
    refs = [reference(m) for m in mels]
    timing_mel = mels[0]
    audio_s = timing_mel.shape[-1] * spec.hop / spec.sample_rate

    rows: dict[Candidate, dict[str, Any]] = {}
    runners: dict[Candidate, Infer] = {}
    bf16_plan = None
    for cand in candidates:
        row: dict[str, Any] = {"candidate": cand.label, "backend": cand.backend, "precision": cand.precision}
        rows[cand] = row
        if cand.backend == "onnxruntime":
            runners[cand] = _ort_infer(onnx_path, threads)
        elif cand.precision == "fp32":
            runners[cand] = _openvino_infer([whole_graph_part(onnx_path)], threads)
        else:  # OpenVINO BF16: its own plan and gate decide whether it may run at all
            bf16_plan = bf16_plan_for(request, onnx_path, work_dir, threads=threads)
            row["gate"] = bf16_plan.reason
            if bf16_plan.passed:
                runners[cand] = _openvino_infer(bf16_plan.parts, threads)
            else:
                row.update(passed=False, note=bf16_plan.reason)

    # The parity runs come first and double as the warm-up (a dynamic-shape model compiles its
    # kernels on first use), the timing mel first; then the interleaved timing rounds.
    outputs = {cand: [np.asarray(infer(m), dtype=np.float32).reshape(ref.shape) for m, ref in zip(mels, refs)]
               for cand, infer in runners.items()}
    times = interleaved_times({cand: partial(infer, timing_mel) for cand, infer in runners.items()}, rounds)

    for cand in runners:
        outs = outputs[cand]
        snr = min(snr_db(ref, out) for ref, out in zip(refs, outs))
        max_abs = max(float(np.max(np.abs(ref - out))) for ref, out in zip(refs, outs))
        median = statistics.median(times[cand])
        row = rows[cand]
        row.update(median_s=round(median, 5), min_s=round(min(times[cand]), 5),
                   x_real_time=round(audio_s / median, 3), snr_db=_finite_or_none(snr, 2),
                   max_abs_error=_finite_or_none(max_abs, 8))
        if cand.precision == "bf16":  # the plan's perceptual gate already passed on every fixture
            row.update(passed=True, note="BF16 plan passed its gate")
        else:
            ok = bool(np.isfinite(max_abs) and max_abs <= FP32_MAX_ABS_ERROR)
            row.update(passed=ok, note=f"max |err| {max_abs:.2e} {'<=' if ok else '>'} {FP32_MAX_ABS_ERROR:g} "
                                       f"(FP32 target)")

    passing = [c for c in runners if rows[c]["passed"]]
    settings = {"threads": threads, "frames": int(timing_mel.shape[-1]), "audio_s": round(audio_s, 3),
                "rounds": rounds, "parity_mels": f"{len(mels)} mels: {origin}",
                "thread_pinning": "ONNX Runtime intra_op (inter_op 1), OpenVINO INFERENCE_NUM_THREADS, 1 stream"}
    if passing:
        chosen = min(passing, key=lambda c: rows[c]["median_s"])
        others = "; ".join(_describe(rows[c]) for c in candidates if c != chosen)
        reason = (f"auto chose {chosen.label}, the fastest CPU backend that passes parity here: "
                  f"{_describe(rows[chosen])}" + (f"; {others}" if others else "")
                  + f" ({settings['frames']}-frame speech mel, {threads} threads each, median of {rounds})")
    else:
        chosen = next(c for c in candidates if c.backend == "onnxruntime")
        reason = ("auto kept ONNX Runtime FP32: no CPU backend passed parity ("
                  + "; ".join(_describe(rows[c]) for c in candidates) + ")")
        _LOG.warning("%s", reason)
    return CpuSelection(chosen.label, reason, [rows[c] for c in candidates], settings,
                        round(time.perf_counter() - started, 3), bf16_plan)


def _describe(row: dict[str, Any]) -> str:
    if "median_s" not in row:
        return f"{row['candidate']} refused ({row.get('note', 'not measured')})"
    verdict = "" if row["passed"] else f", FAILS parity: {row['note']}"
    snr = "-" if row["snr_db"] is None else f"{row['snr_db']:.1f}"
    return (f"{row['candidate']} {row['median_s']:.3f} s ({row['x_real_time']:.1f}x real time, "
            f"SNR {snr} dB{verdict})")


# ------------------------------------------------------------------------------------ backend
class CpuAutoBackend(Backend):
    """``--backend auto`` on a CPU with several candidates: measure after export, build the winner.

    Not registered (it is a choice among registered backends, not a way to run an engine): the
    manifest records the backend that was built, plus ``backend.selection``.
    """

    name = "auto"
    label = "auto (fastest CPU backend)"
    stale_files = ()  # the other backends' files are all stale until the choice is made

    def __init__(self, candidates: Sequence[Candidate], precision: str, note: str = "") -> None:
        if not candidates:
            raise EngineError("--backend auto found no CPU backend that can build " + precision)
        self.candidates = tuple(candidates)
        self.precision = precision
        self.note = note
        # What this instance was resolved for: its precision, and a BF16 gate only when OpenVINO
        # may build a BF16 plan under it.
        self.precisions = (precision,)  # type: ignore[misc]
        openvino = any(c.backend == "openvino" for c in candidates)
        self.takes_bf16_gate = openvino and precision in BF16_PRECISIONS  # type: ignore[misc]

    def runs_on_cpu(self) -> bool:
        return True

    def requested(self, trt_module: Any = None) -> str:
        labels = ", ".join(c.label for c in self.candidates)
        what = (f"timing {labels} on this CPU after export, the fastest that passes parity is built"
                if len(self.candidates) > 1 else f"{labels} on the CPU")
        return f"auto: no CUDA GPU, so {what}" + (f"; {self.note}" if self.note else "")

    def key_inputs(self, options: BuildOptions, machine: Machine) -> dict[str, Any]:
        per_backend = {name: backend_for(name).key_inputs(options, machine)
                       for name in dict.fromkeys(c.backend for c in self.candidates)}
        merged_options: dict[str, Any] = {}
        for inputs in per_backend.values():
            merged_options.update(inputs["options"])
        return {
            "options": merged_options,
            "tensorrt_version": None,
            "gpu": None,
            "providers": per_backend.get("onnxruntime", {}).get("providers"),
            "auto_candidates": [c.label for c in self.candidates],
            "candidate_inputs": per_backend,
        }

    def build(self, request: BuildRequest) -> BackendBuild:
        work = Path(tempfile.mkdtemp(prefix=layout.STAGING_PREFIX + "auto-", dir=str(request.engine_dir)))
        try:
            if len(self.candidates) > 1:
                selection = measure_candidates(request, self.candidates, work)
                chosen = next(c for c in self.candidates if c.label == selection.chosen)
            else:
                chosen, selection = self.candidates[0], None
            backend = backend_for(chosen.backend)
            plan = selection.bf16_plan if selection is not None else None
            precision = _build_precision(chosen, self.precision, plan)
            options = request.options.replace(backend=chosen.backend, precision=precision)
            built = backend.build(dataclasses.replace(request, options=options, bf16_plan=plan))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        info = dict(built.info)
        if selection is not None:
            info["selection"] = selection.to_dict()
        else:
            info["selection"] = {"chosen": chosen.label, "reason": self.requested(), "candidates": [],
                                 "settings": {}, "seconds": 0.0}
        return BackendBuild(built.engine_file, info, built.artifacts, precision=built.precision or precision)


def _build_precision(chosen: Candidate, requested: str, plan: Any) -> str:
    """The --precision to build ``chosen`` with. ONNX Runtime: its own (fp32). OpenVINO: as
    asked (``auto`` then records its BF16 verdict in ``bf16_plan.json``, from the plan measured
    here when there is one), except fp32 when FP32 won although a BF16 plan passed."""
    if chosen.backend != "openvino":
        return chosen.precision
    if chosen.precision == "fp32" and plan is not None and plan.passed:
        return "fp32"
    return requested


__all__ = ["Candidate", "CpuAutoBackend", "CpuSelection", "cpu_candidates", "measure_candidates",
           "resolve_cpu_auto"]
