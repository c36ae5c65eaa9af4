"""BF16 precision plan for OpenVINO CPU engines: all-BF16 plus the FP32 islands that earn it.

Why a plan: plain BF16 (8-bit mantissa) runs the default vocoder ~3x faster than PyTorch FP32
on CPUs with BF16 units, but its rounding shows in the quiet high mel bands (log-mel L1 ~0.03)
and the first conv sets the SNR (~23 dB). Measured with PyTorch autocast (issue 14): keeping
``conv_pre`` FP32 buys SNR, keeping the highest-rate stage FP32 buys log-mel L1, the other
stages change little.

The mechanism is a *split graph*: the OpenVINO CPU plugin ignores per-node precision marks set
from Python under ``INFERENCE_PRECISION_HINT=bf16`` (rt_info ``disable_fp16_compression_0``
left all convolutions in bf16, issue 14), so the FP32 ONNX is cut at the upsampling-stage
boundaries into segments (head = conv_pre, stage_k, tail = conv_post + tanh); consecutive
segments of one precision form one part, and each part is compiled with its own hint
(:mod:`hifitrt.engines.openvino_engine`). What each part really runs in is read back from the
compiled runtime model (``runtimePrecision``) and written into the plan.

Search (on the calibration mels of :func:`hifitrt.export.speech_inputs.calibration_mels`, vs PyTorch FP32): start
all-BF16; try islands in the order the measurements suggest (head, tail, then stages from the
highest rate down); keep one only if it cuts the worst log-mel L1 by ``MIN_L1_GAIN`` or raises
the worst SNR by ``MIN_GAIN_DB`` without the other getting worse, and the plan stays faster
than OpenVINO FP32; stop once log-mel L1 is at the aim (``AIM_LOG_MEL_L1``).

Gate (perceptual, on *every* speech fixture at full length): PESQ wb >= 4.5, log-mel L1 <= 0.02,
no NaN/Inf; multi-resolution STFT distance and SNR reported. A plan that fails is refused with
its numbers and the engine is built FP32. A CPU without BF16 units is refused up front: there
a BF16 hint silently runs FP32, so nothing could be measured.

Metrics are the project's one implementation (:func:`hifitrt.validation.metrics.compare_audio`),
imported lazily: a documented exception to "engines never import validation" (that module
imports only ``export``, so no cycle), because a gate measured differently from ``check``
would be a second truth.
"""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..atomic import write_text
from ..errors import EngineError
from ..export.mel_config import MelConfig, mel_config_for
from ..export.spec import VocoderSpec
from .openvino_engine import (
    CompiledChain,
    CpuInfo,
    EnginePart,
    PartSource,
    compile_model,
    cpu_info,
    openvino_version,
    usable_cores,
)

_LOG = logging.getLogger(__name__)

PLAN_SCHEMA = "hifitrt.bf16-plan"
PARTS_DIR = "bf16_parts"
AIM_LOG_MEL_L1 = 0.01
MIN_L1_GAIN = 0.1  # an island kept for log-mel L1 must cut it by 10 %
MIN_GAIN_DB = 1.0  # ... or raise the SNR by 1 dB
GATE = {"pesq": 4.5, "log_mel_l1": 0.02, "nonfinite_count": 0}
TIMING_RUNS = 3

Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------ graph
@dataclass(frozen=True)
class Segment:
    """A contiguous run of graph nodes (exporter order) that can be compiled on its own."""

    name: str
    start: int
    end: int
    why: str


def graph_segments(model: Any) -> list[Segment]:
    """head (before the first upsampler), stage_k (upsampler .. next upsampler), tail (conv_post on).

    Stage spans come from the FP16 planner's :func:`~hifitrt.export.precision._stage_spans`
    (one definition of where a stage starts). A graph without recognisable stages is one
    segment, so its only plans are all-BF16 or FP32.
    """
    from ..export.precision import _stage_spans

    nodes = list(model.graph.node)
    index = {n.name: i for i, n in enumerate(nodes)}
    names = [n.name for n in nodes if n.op_type != "Constant"]
    spans = _stage_spans(names)
    if not spans:
        return [Segment("all", 0, len(nodes), "no upsampling stages recognised")]
    starts = sorted((index[span[0]], stage) for stage, span in spans.items() if span)
    post = next((index[n] for n in names if n.startswith("/conv_post/")), len(nodes))
    segments = [Segment("head", 0, starts[0][0], "conv_pre: the mel's input projection (sets the SNR)")]
    bounds = [s for s, _ in starts] + [post]
    for (begin, stage), end in zip(starts, bounds[1:]):
        segments.append(Segment(f"stage_{stage}", begin, end,
                                f"upsampling stage {stage}: upsampler, resblocks and their average"))
    if post < len(nodes):
        segments.append(Segment("tail", post, len(nodes), "conv_post + tanh write the waveform"))
    return [s for s in segments if s.end > s.start]


def live_tensors(model: Any, cut: int) -> list[str]:
    """Tensors computed before node ``cut`` (or graph inputs) that nodes from ``cut`` on need.

    Constants are left out: the part that needs one extracts its Constant node itself.
    """
    nodes = list(model.graph.node)
    needed = {name for n in nodes[cut:] for name in n.input} | {o.name for o in model.graph.output}
    inits = {i.name for i in model.graph.initializer}
    live = [i.name for i in model.graph.input if i.name in needed and i.name not in inits]
    for node in nodes[:cut]:
        if node.op_type != "Constant":
            live.extend(o for o in node.output if o in needed)
    return live


def nearest_resizes_as_repeats(model: Any) -> int:
    """Rewrite each integer-scale nearest ``Resize`` of a [B, C, T] tensor as Unsqueeze -> Expand
    -> Reshape (repeat every sample ``s`` times); returns how many were rewritten.

    Why: OpenVINO 2026.4's CPU plugin compiles such a Resize (KAN-TTS's ``repeat_upsamples``,
    nn.Upsample nearest) under ``INFERENCE_PRECISION_HINT=bf16`` and then fails at the first
    inference with "Interpolate node ... bad combination" (seen on the 256-channel noncausal
    16 kHz nets; an 8-channel toy runs). The repeat is the same function exactly (asymmetric
    coordinates, floor rounding, integer scale), so the FP32 output is bit-identical, and the
    BF16 plan can be measured. New nodes keep the Resize's name as prefix, so the stage
    segments (:func:`graph_segments`) are unchanged.
    """
    import onnx
    from onnx import helper, numpy_helper

    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    constants.update({i.name: numpy_helper.to_array(i) for i in model.graph.initializer})
    rewritten, nodes = 0, []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        scales = constants.get(node.input[2]) if node.op_type == "Resize" and len(node.input) == 3 else None
        if (scales is None or scales.shape != (3,) or list(scales[:2]) != [1, 1] or scales[2] != int(scales[2])
                or scales[2] < 1 or attrs.get("mode") != b"nearest"
                or attrs.get("coordinate_transformation_mode") != b"asymmetric"
                or attrs.get("nearest_mode", b"round_prefer_floor") != b"floor"):
            nodes.append(node)
            continue
        base, repeat = node.name or node.output[0], int(scales[2])
        axes = helper.make_tensor(f"{base}/repeat_axes", onnx.TensorProto.INT64, [1], [3])
        expand = helper.make_tensor(f"{base}/repeat_shape", onnx.TensorProto.INT64, [4], [1, 1, 1, repeat])
        flat = helper.make_tensor(f"{base}/repeat_flat", onnx.TensorProto.INT64, [3], [0, 0, -1])
        model.graph.initializer.extend([axes, expand, flat])
        nodes += [
            helper.make_node("Unsqueeze", [node.input[0], axes.name], [f"{base}/repeat_4d"], name=f"{base}/repeat_unsqueeze"),
            helper.make_node("Expand", [f"{base}/repeat_4d", expand.name], [f"{base}/repeat_expanded"],
                             name=f"{base}/repeat_expand"),
            helper.make_node("Reshape", [f"{base}/repeat_expanded", flat.name], [node.output[0]], name=f"{base}/repeat_reshape"),
        ]
        rewritten += 1
    if rewritten:
        used = {name for n in nodes for name in n.input} | {o.name for o in model.graph.output}
        del model.graph.node[:]
        model.graph.node.extend(n for n in nodes if n.op_type != "Constant" or n.output[0] in used)
    return rewritten


def split_parts(onnx_path: str | os.PathLike[str], segments: Sequence[Segment], hints: Mapping[str, str],
                out_dir: str | os.PathLike[str]) -> list[PartSource]:
    """ONNX files for the chain: consecutive segments with the same hint merged into one part."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(os.fspath(onnx_path))
    groups: list[list[Segment]] = []
    for seg in segments:
        if groups and hints[groups[-1][-1].name] == hints[seg.name]:
            groups[-1].append(seg)
        else:
            groups.append([seg])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = len(model.graph.node)
    extractor = Extractor(onnx.shape_inference.infer_shapes(model)) if len(groups) > 1 else None
    parts: list[PartSource] = []
    for i, group in enumerate(groups):
        start, end = group[0].start, group[-1].end
        inputs = live_tensors(model, start) if start > 0 else [x.name for x in model.graph.input]
        outputs = live_tensors(model, end) if end < total else [o.name for o in model.graph.output]
        name = "+".join(s.name for s in group)
        path = out / f"part_{i}.onnx"
        if extractor is None:
            onnx.save(model, os.fspath(path))
        else:
            onnx.save(extractor.extract_model(inputs, outputs), os.fspath(path))
        parts.append(PartSource(name, path, hints[group[0].name], tuple(inputs), tuple(outputs)))
    return parts


# ------------------------------------------------------------------------------------ measuring
@dataclass
class Trial:
    """One candidate plan measured on the calibration mels."""

    fp32: list[str]
    seconds: float
    log_mel_l1: float
    snr_db: float
    nonfinite: int
    part_seconds: dict[str, float] = field(default_factory=dict)


class _Bench:
    """Compiles candidate chains and measures them against the PyTorch reference."""

    def __init__(self, onnx_path: Path, segments: Sequence[Segment], work: Path, spec: VocoderSpec,
                 mels: Sequence[np.ndarray], refs: Sequence[np.ndarray], threads: int, low: str) -> None:
        self.onnx_path, self.segments, self.work, self.spec = onnx_path, list(segments), work, spec
        self.mels, self.refs, self.threads, self.low = list(mels), list(refs), threads, low
        self.mel_cfg = mel_config_for(spec)
        self.timing_mel = max(self.mels, key=lambda m: m.shape[-1])[None]
        self._count = 0

    def hints(self, fp32: Sequence[str]) -> dict[str, str]:
        return {s.name: ("f32" if s.name in fp32 else self.low) for s in self.segments}

    def chain(self, fp32: Sequence[str]) -> tuple[CompiledChain, list[PartSource]]:
        self._count += 1
        parts = split_parts(self.onnx_path, self.segments, self.hints(fp32), self.work / f"trial_{self._count}")
        compiled = [compile_model(p.onnx_path, p.hint, self.threads) for p in parts]
        described = [EnginePart(p.name, "", "", p.hint, list(p.inputs), list(p.outputs)) for p in parts]
        return CompiledChain(compiled, described), parts

    def timed(self, chain: CompiledChain) -> tuple[float, dict[str, float]]:
        chain.infer(self.timing_mel)  # warm-up: first inference of a dynamic model compiles kernels
        runs, per_part = [], []
        for _ in range(TIMING_RUNS):
            start = time.perf_counter()
            chain.infer(self.timing_mel)
            runs.append(time.perf_counter() - start)
            per_part.append(list(chain.part_seconds))
        best = int(np.argmin(runs))
        return min(runs), {p.name: round(t, 4) for p, t in zip(chain.parts, per_part[best])}

    def measure(self, fp32: Sequence[str]) -> Trial:
        from ..validation.metrics import compare_audio

        chain, _ = self.chain(fp32)
        seconds, part_seconds = self.timed(chain)
        l1s, snrs, bad = [], [], 0
        for mel, ref in zip(self.mels, self.refs):
            out = chain.infer(mel[None])
            m = compare_audio(ref, out, self.spec.sample_rate, mel_cfg=self.mel_cfg, with_pesq=False)
            l1s.append(m.log_mel_l1 if m.log_mel_l1 is not None else math.inf)
            snrs.append(m.snr_db)
            bad += m.nonfinite_count
        trial = Trial(sorted(fp32), seconds, max(l1s), min(snrs), bad, part_seconds)
        _LOG.info("bf16 plan: fp32 islands %s -> log-mel L1 %.4f, SNR %.1f dB, %.3f s",
                  trial.fp32 or "none", trial.log_mel_l1, trial.snr_db, seconds)
        return trial


def _judge(best: Trial, trial: Trial, fp32_seconds: float) -> tuple[bool, str]:
    if trial.nonfinite > best.nonfinite:
        return False, "more NaN/Inf"
    if trial.seconds >= fp32_seconds:
        return False, f"as slow as FP32 ({trial.seconds:.3f} s >= {fp32_seconds:.3f} s)"
    l1_gain = (best.log_mel_l1 - trial.log_mel_l1) / best.log_mel_l1 if best.log_mel_l1 > 0 else 0.0
    snr_gain = trial.snr_db - best.snr_db
    cost = f"+{trial.seconds - best.seconds:.3f} s"
    if l1_gain >= MIN_L1_GAIN and snr_gain > -MIN_GAIN_DB:
        return True, f"log-mel L1 -{100 * l1_gain:.0f} % for {cost}"
    if snr_gain >= MIN_GAIN_DB and l1_gain > -MIN_L1_GAIN:
        return True, f"SNR +{snr_gain:.1f} dB for {cost}"
    return False, f"gain too small (log-mel L1 {-100 * l1_gain:+.0f} %, SNR {snr_gain:+.1f} dB, {cost})"


def _candidates(segments: Sequence[Segment]) -> list[list[str]]:
    """Islands to try, most promising first: head, tail, then stages from the highest rate down."""
    names = [s.name for s in segments]
    order = [n for n in ("head", "tail") if n in names]
    order += [n for n in reversed(names) if n.startswith("stage_")]
    return [[n] for n in order]


# ------------------------------------------------------------------------------------ plan
@dataclass
class Bf16Plan:
    """The decision and its evidence (written as ``bf16_plan.json``)."""

    passed: bool
    reason: str
    cpu: dict[str, Any]
    fp32_islands: list[str] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    runtime_precisions: dict[str, Any] = field(default_factory=dict)
    calibration: str = ""
    aim: dict[str, float] = field(default_factory=lambda: {"log_mel_l1": AIM_LOG_MEL_L1, "speedup_vs_torch": 3.0})
    openvino_version: str = ""
    low_precision: str = "bf16"
    seconds: float = 0.0
    parts: list[PartSource] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("parts")
        return {"schema": PLAN_SCHEMA, "schema_version": 1, **data}

    def write(self, path: str | os.PathLike[str]) -> None:
        from ..export.precision import _json_safe

        write_text(Path(path), json.dumps(_json_safe(self.to_dict()), indent=1, allow_nan=False) + "\n")


def gate_limits(overrides: Mapping[str, float | None] | None = None) -> dict[str, float | None]:
    """The BF16 gate, optionally tightened or loosened (``--threshold NAME=VALUE``)."""
    return {**GATE, **dict(overrides or {})}


def parse_gate_overrides(items: Iterable[str]) -> dict[str, float]:
    """``build --threshold NAME=VALUE`` strings as gate overrides (a later NAME wins).

    Names are the gate's own (:data:`GATE`; ``-`` may stand for ``_``); values are finite
    numbers >= 0. Anything else is an EngineError naming the item, since a gate that silently
    ignored a typo would pass engines the user meant to refuse.
    """
    overrides: dict[str, float] = {}
    for item in items:
        text = str(item)
        name, sep, raw = text.partition("=")
        key = name.strip().lower().replace("-", "_")
        if not sep or not key:
            raise EngineError(f"--threshold {text!r} is not NAME=VALUE (e.g. log_mel_l1=0.03)")
        if key not in GATE:
            raise EngineError(f"--threshold {text!r}: the BF16 gate has no {name.strip()!r}; "
                              f"use {', '.join(GATE)}")
        try:
            value = float(raw)
        except ValueError:
            raise EngineError(f"--threshold {text!r}: {raw.strip()!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise EngineError(f"--threshold {text!r}: the value must be a finite number >= 0")
        overrides[key] = value
    return overrides


def plan_bf16(
    fp32_onnx: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    spec: VocoderSpec,
    calibration: Sequence[np.ndarray],
    gate_inputs: Mapping[str, np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray],
    *,
    calibration_note: str = "",
    gate: Mapping[str, float | None] | None = None,
    threads: int | None = None,
    cpu: CpuInfo | None = None,
    low_precision: str = "bf16",
    progress: Progress | None = None,
) -> Bf16Plan:
    """Search islands on ``calibration`` mels, then gate the plan on every ``gate_inputs`` mel.

    ``reference`` maps a [B, C, T] mel to PyTorch FP32 audio (a cached ``TorchRunner``).
    ``work_dir`` receives the part ONNX files of the plan (``work_dir/bf16_parts/final``).
    ``low_precision`` is the hint of non-island parts; ``"f32"`` runs the whole machinery as a
    dry run (every part FP32) on CPUs without BF16, for tests. Never raises for a failing
    plan: ``passed`` is False and ``reason`` carries the numbers.
    """
    started = time.perf_counter()
    cpu = cpu or cpu_info()
    limits = gate_limits(gate)
    plan = Bf16Plan(False, "", cpu.to_dict(), calibration=calibration_note, openvino_version=openvino_version(),
                    low_precision=low_precision, gate={"limits": dict(limits)})
    if low_precision == "bf16" and not cpu.has_bf16:
        plan.reason = (f"BF16 refused: {cpu.model} has {cpu.bf16_units()} (OpenVINO capabilities: "
                       f"{', '.join(cpu.openvino_capabilities) or 'unknown'}); a BF16 hint would run FP32 here, "
                       "so the engine is FP32")
        plan.seconds = round(time.perf_counter() - started, 3)
        return plan

    say = progress or (lambda line: _LOG.info("%s", line))
    try:
        _search_and_gate(plan, fp32_onnx, Path(work_dir), spec, calibration, gate_inputs, reference, limits,
                         threads, low_precision, say)
    except RuntimeError as exc:  # OpenVINO's own failures (compile or inference of a part)
        plan.passed = False
        plan.reason = (f"BF16 refused: OpenVINO could not run the BF16 plan ({' '.join(str(exc).split())[-300:]}); "
                       "the engine is FP32")
        say(plan.reason)
    plan.seconds = round(time.perf_counter() - started, 3)
    return plan


def _search_and_gate(plan: Bf16Plan, fp32_onnx: str | os.PathLike[str], work_dir: Path, spec: VocoderSpec,
                     calibration: Sequence[np.ndarray], gate_inputs: Mapping[str, np.ndarray],
                     reference: Callable[[np.ndarray], np.ndarray], limits: Mapping[str, float | None],
                     threads: int | None, low_precision: str, say: Progress) -> None:
    """The island search and the gate of :func:`plan_bf16`, filling ``plan`` in place."""
    import onnx

    work = work_dir / PARTS_DIR
    model = onnx.load(os.fspath(fp32_onnx), load_external_data=False)
    if nearest_resizes_as_repeats(model):  # see its docstring: an OpenVINO BF16 limitation
        work.mkdir(parents=True, exist_ok=True)
        fp32_onnx = work / "openvino_input.onnx"
        onnx.save(model, os.fspath(fp32_onnx))
    segments = graph_segments(model)
    plan.segments = [asdict(s) for s in segments]
    mels = [np.ascontiguousarray(m, dtype=np.float32) for m in calibration]
    refs = [reference(m[None]) for m in mels]
    bench = _Bench(Path(fp32_onnx), segments, work, spec, mels, refs, int(threads or usable_cores()), low_precision)

    fp32_chain = CompiledChain([compile_model(fp32_onnx, "f32", bench.threads)],
                               [EnginePart("all", "", "", "f32", [model.graph.input[0].name],
                                           [model.graph.output[0].name])])
    fp32_seconds, _ = bench.timed(fp32_chain)
    best = bench.measure([])
    plan.timing = {"threads": bench.threads, "timing_frames": int(bench.timing_mel.shape[-1]),
                   "openvino_fp32_s": round(fp32_seconds, 4), "all_bf16_s": round(best.seconds, 4),
                   "all_bf16_part_s": best.part_seconds}
    plan.candidates.append({"islands": [], "result": "start: all BF16", **_trial_numbers(best)})
    say(f"bf16 plan: all BF16 log-mel L1 {best.log_mel_l1:.4f}, SNR {best.snr_db:.1f} dB, "
        f"{best.seconds:.3f} s (OpenVINO FP32 {fp32_seconds:.3f} s)")
    for island in _candidates(segments):
        if best.log_mel_l1 <= AIM_LOG_MEL_L1:
            plan.candidates.append({"islands": island, "result": f"skipped: log-mel L1 {best.log_mel_l1:.4f} "
                                    f"already <= aim {AIM_LOG_MEL_L1}"})
            continue
        trial = bench.measure(best.fp32 + island)
        keep, why = _judge(best, trial, fp32_seconds)
        plan.candidates.append({"islands": island, "result": ("kept FP32: " if keep else "rejected: ") + why,
                                **_trial_numbers(trial)})
        say(f"bf16 plan: island {'+'.join(island)}: {'kept' if keep else 'rejected'} ({why})")
        if keep:
            best = trial
    plan.fp32_islands = best.fp32
    plan.timing.update(plan_s=round(best.seconds, 4), plan_part_s=best.part_seconds,
                       speedup_vs_openvino_fp32=round(fp32_seconds / best.seconds, 3) if best.seconds else None)

    chain, parts = bench.chain(best.fp32)
    plan.parts = parts
    plan.runtime_precisions = chain.runtime_precisions()
    plan.gate = _gate(chain, spec, gate_inputs, reference, limits, bench.mel_cfg)
    failures = plan.gate["failures"]
    islands = ", ".join(best.fp32) or "none"
    if failures:
        plan.reason = (f"BF16 refused (FP32 islands: {islands}): {'; '.join(failures[:4])}"
                       + (f" (+{len(failures) - 4} more)" if len(failures) > 4 else "") + "; the engine is FP32")
    else:
        worst = plan.gate["worst"]
        plan.passed = True
        plan.reason = (f"BF16 passed its gate on {len(gate_inputs)} fixtures with FP32 islands {islands}: "
                       f"worst PESQ {_fmt(worst['pesq'])}, log-mel L1 {_fmt(worst['log_mel_l1'])}, "
                       f"SNR {_fmt(worst['snr_db'])} dB; {plan.timing['speedup_vs_openvino_fp32']}x OpenVINO FP32")
    say(plan.reason)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _trial_numbers(trial: Trial) -> dict[str, Any]:
    return {"seconds": round(trial.seconds, 4), "log_mel_l1": trial.log_mel_l1, "snr_db": trial.snr_db,
            "nonfinite": trial.nonfinite, "part_seconds": trial.part_seconds}


def _gate(chain: CompiledChain, spec: VocoderSpec, inputs: Mapping[str, np.ndarray],
          reference: Callable[[np.ndarray], np.ndarray], limits: Mapping[str, float | None],
          mel_cfg: MelConfig) -> dict[str, Any]:
    """Every fixture at full length: PESQ, log-mel L1, MR-STFT, SNR, NaN/Inf against ``limits``."""
    from ..validation.metrics import compare_audio

    rows, failures = [], []
    for name, mel in inputs.items():
        x = np.ascontiguousarray(mel, dtype=np.float32)[None]
        m = compare_audio(reference(x), chain.infer(x), spec.sample_rate, mel_cfg=mel_cfg, with_pesq=True)
        row = {"fixture": name, "frames": int(x.shape[-1]), "pesq": m.pesq, "pesq_note": m.pesq_note,
               "log_mel_l1": m.log_mel_l1, "mrstft": m.mrstft, "snr_db": m.snr_db,
               "nonfinite_count": m.nonfinite_count}
        rows.append(row)
        low = limits.get("pesq")
        if low is not None and m.pesq is not None and not m.pesq >= low:
            failures.append(f"{name}: PESQ {m.pesq:.3f} < {low}")
        high = limits.get("log_mel_l1")
        if high is not None and not (m.log_mel_l1 is not None and m.log_mel_l1 <= high):
            failures.append(f"{name}: log-mel L1 {_fmt(m.log_mel_l1)} > {high}")
        bad = limits.get("nonfinite_count")
        if bad is not None and m.nonfinite_count > bad:
            failures.append(f"{name}: {m.nonfinite_count} NaN/Inf samples")
    finite = lambda key: [r[key] for r in rows if r[key] is not None]  # noqa: E731
    worst = {
        "pesq": min(finite("pesq"), default=None), "log_mel_l1": max(finite("log_mel_l1"), default=None),
        "mrstft": max(finite("mrstft"), default=None), "snr_db": min(finite("snr_db"), default=None),
        "nonfinite_count": sum(r["nonfinite_count"] for r in rows),
        "median_log_mel_l1": statistics.median(finite("log_mel_l1")) if finite("log_mel_l1") else None,
    }
    return {"limits": dict(limits), "per_fixture": rows, "worst": worst, "failures": failures}

