"""FP16 precision planning: which nodes of the FP32 graph must stay FP32, decided by measurement.

TensorRT 11 is strongly typed, so precision lives in the ONNX graph: the FP16 graph written
here (FP32 IO, converted by onnxconverter-common's ``convert_float_to_float16``) is what the
engine builder compiles. The plan starts from "everything FP16" and keeps a node FP32 only for
a measured reason:

(a) overflow risk: the FP32 graph is run by ONNX Runtime on real speech with every float
    intermediate added as a graph output; a node whose |activation| max exceeds
    ``65504 / 16`` (16x headroom for louder inputs than calibration saw) is blocked;
(b) error contribution: the output of the converted graph is compared with PyTorch FP32 on
    the calibration mels, as waveform SNR and as log-mel L1 (worst mel). Candidate islands
    (the NSF source chain CumSum/Mod/Sin, conv_pre, the conv_post/tanh tail, the
    widest-range nodes, each upsampling stage's residual stream, then whole upsampling
    stages, highest rate first) are tried greedily. One is kept only if it lowers neither
    metric and either raises the SNR by more than ``MIN_GAIN_DB`` while the SNR is below
    its stop (``TARGET_SNR_DB + TARGET_MARGIN_DB``; ``+ COSTLY_MARGIN_DB`` for a whole
    stage, which holds up to ~40 % of the MACs), or cuts log-mel L1 by ``MIN_L1_GAIN``
    while it is above ``MAX_LOG_MEL_L1 * LOG_MEL_MARGIN``. Once both hold, the optional
    islands are skipped (recorded as such): a further FP32 island could only cost speed.
    Islands marked ``always`` (the NSF phase chain) are measured regardless, and kept when
    they gain SNR, because phase error grows with utterance length and the calibration
    clips are short.

The result is never worse than the plain full conversion: if the plan measures lower, the
plain conversion is written and the plan says so. Converter pitfalls handled here:
``max_finite_val`` is raised to FP16's real max (the default 1e4 silently clamps constants
such as a 16000 Hz sample rate divisor); Resize/CumSum stay in the converter's default block
list (their scales/axis inputs must remain FP32/int); the converter's fp32->fp16->fp32 Cast
pairs between adjacent FP32 nodes are removed, so an island really computes and stores FP32
(see ``_bypass_lossy_round_trips``); every converted graph is run through ``onnx.checker``
and ONNX Runtime CPU before it counts.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from ..atomic import atomic_path
from ..errors import ExportError
from ..jsonfile import write_json
from .load import Vocoder
from .mel import mel_config_for
from .mel_config import MelConfig
from .ort import CPU, make_session
from .parity import FP16_MAX_LOG_MEL_L1, FP16_PLAN_SNR_DB, log_mel_l1, snr_db
from .reference import TorchRunner

log = logging.getLogger(__name__)

PLAN_SCHEMA = "hifitrt.precision-plan"
PLAN_SCHEMA_VERSION = 1

FP16_MAX = 65504.0
OVERFLOW_LIMIT = FP16_MAX / 16
MIN_GAIN_DB = 1.0
# No wall-clock budget by default: a plan must not depend on how busy the machine is (the
# golden op histograms would flip). The early stop at the target SNR bounds the work instead.
SEARCH_SECONDS: float | None = None
TOP_N = 25
# Parity targets of the FP16 graph vs PyTorch FP32 (issue 3: waveform SNR >= 50 dB and
# log-mel L1 <= 0.01 on every utterance) and the margins at which the greedy search stops
# trying optional islands. The log-mel margin is a factor: the calibration clips are a few
# sentences, and on the random-weight nets the shortest fixture measured up to 2x the L1 of
# a 2 s sentence (mostly quiet frames, where FP16 noise is loudest relative to the signal).
TARGET_SNR_DB = FP16_PLAN_SNR_DB
TARGET_MARGIN_DB = 10.0
MAX_LOG_MEL_L1 = FP16_MAX_LOG_MEL_L1
LOG_MEL_MARGIN = 0.5
# Costly islands (a whole upsampling stage: up to ~40 % of a HiFi-GAN's MACs) are tried for
# SNR only below this smaller margin; above it they must be needed for log-mel L1.
COSTLY_MARGIN_DB = 5.0
# An island kept for log-mel L1 must cut it by at least this fraction.
MIN_L1_GAIN = 0.1
# onnxconverter-common warns once per weight whose magnitude is below FP16's smallest
# subnormal (5.96e-8) or above its max: it clamps them. Such weights are expected in any
# trained conv net (tiny weights near zero); clamping changes each by < 6e-8 absolute,
# far below FP16's own rounding of the activations they multiply, and the SNR measured
# after conversion already includes the effect. Hundreds of identical lines would only
# bury the CLI output, so they are silenced here (nothing else from the converter is).
_TRUNCATED_WARNING = r"the float32 number .* will be truncated to .*"


@dataclass
class PrecisionPlan:
    """What :func:`plan_fp16` decided and measured (also the JSON written beside the model)."""

    fp32_nodes: List[str]
    reasons: Dict[str, Dict[str, Any]]
    snr_plain_db: float
    snr_plan_db: float
    log_mel_l1: float
    fell_back_to_plain: bool
    calibration: Dict[str, Any]
    candidates: List[Dict[str, Any]]
    converter_version: str
    seconds: float
    fp16_path: str = ""
    per_mel: List[Dict[str, Any]] = field(default_factory=list)
    log_mel_l1_plain: float = float("nan")
    targets: Dict[str, float] = field(default_factory=dict)

    @property
    def kept_islands(self) -> List[str]:
        """Why nodes stay FP32, one entry per reason (``overflow``, island names): the summary
        two plans of the same source must agree on."""
        return sorted({r["reason"].removeprefix("island:") for r in self.reasons.values()})

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["schema"] = PLAN_SCHEMA
        data["schema_version"] = PLAN_SCHEMA_VERSION
        return data


# ------------------------------------------------------------------------------ calibration


def float_tensors(model: Any) -> Dict[str, str]:
    """{tensor name: producing node name} for every float32 node output (shape-inferred)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    floats = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
              if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    out: Dict[str, str] = {}
    for node in model.graph.node:
        for name in node.output:
            if name in floats:
                out[name] = node.name
    return out


def calibrate(model: Any, mels: Sequence[np.ndarray]) -> Dict[str, float]:
    """{node name: max |output|} of the FP32 graph over ``mels`` (each [C, T])."""
    import onnx

    tensors = float_tensors(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    session = make_session(probe.SerializeToString(), providers=[CPU])
    names = [o.name for o in session.get_outputs()]
    peaks: Dict[str, float] = {}
    for mel in mels:
        outs = session.run(names, {"mel": mel[None].astype(np.float32)})
        for name, value in zip(names, outs):
            node = tensors.get(name)
            if node is None or not np.issubdtype(value.dtype, np.floating) or value.size == 0:
                continue
            peak = float(np.max(np.abs(value)))
            peaks[node] = max(peaks.get(node, 0.0), peak)
    return peaks


# ------------------------------------------------------------------------------ conversion


def convert(model: Any, block: Sequence[str]) -> Any:
    """FP16 copy of ``model`` with FP32 IO, nodes in ``block`` kept FP32; checked."""
    import warnings

    import onnx
    from onnxconverter_common import float16

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TRUNCATED_WARNING, category=UserWarning)
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, node_block_list=list(block), max_finite_val=FP16_MAX,
                min_positive_val=5.96e-8)
        _restore_fp32_outputs(converted)
        _bypass_lossy_round_trips(converted)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as exc:
        raise ExportError(f"FP16 conversion failed: {str(exc).splitlines()[0][:200]}") from None
    check_io_fp32(converted)
    return converted


def _restore_fp32_outputs(model: Any) -> None:
    """Make every graph output float32 again where the converter turned it into float16.

    onnxconverter-common 1.16 with ``keep_io_types=True`` still declares the graph output
    FLOAT16 when the node producing it is in ``node_block_list`` (it appends a Cast-to-fp16
    after the blocked node and retypes the output). That Cast is retargeted to FLOAT: its
    input is the blocked node's FP32 result, so the output is exact FP32 as the contract says.
    """
    import onnx

    producers = {out: node for node in model.graph.node for out in node.output}
    for vi in model.graph.output:
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT16:
            continue
        node = producers.get(vi.name)
        if node is None or node.op_type != "Cast":
            raise ExportError(f"FP16 graph output {vi.name!r} is float16 and not produced by a "
                              "Cast; cannot restore FP32 IO")
        for attr in node.attribute:
            if attr.name == "to":
                attr.i = onnx.TensorProto.FLOAT
        tt.elem_type = onnx.TensorProto.FLOAT


def _bypass_lossy_round_trips(model: Any) -> None:
    """Feed FP32 consumers the original FP32 tensor instead of an fp32->fp16->fp32 round trip.

    onnxconverter-common (1.16) wraps *each* blocked node in Cast-to-fp32 on its inputs and
    Cast-to-fp16 on its outputs without looking at its neighbours, so two adjacent FP32 nodes
    still talk through a float16 tensor (onnxconverter-common#271 describes the cascade). An
    "FP32 island" of many nodes is then FP32 arithmetic with FP16 storage between every pair:
    on the 48 kHz KAN-TTS net, blocking *every* node measured 75.5 dB, no better than plain
    FP16. The graph input gets the same treatment with ``keep_io_types=True``; for the NSF
    pitch row that is fatal (150 Hz in FP16 is off by up to 0.06 Hz, and the phase integrates
    that to ~0.7 cycles over 11 s).

    Rewiring every Cast(to=FLOAT) of a Cast(to=FLOAT16) of a float32 tensor to that tensor
    removes exactly these round trips and nothing else (a float->int->float pair from the
    source graph is left alone); Casts left without consumers are dropped.
    """
    import onnx

    producers = {out: node for node in model.graph.node for out in node.output}
    graph = model.graph
    float32 = {vi.name for vi in list(graph.input) + list(graph.value_info)
               if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    float32 |= {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}

    def cast_to(node: Any) -> int | None:
        if node is None or node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    replace = {}
    for node in graph.node:
        if cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        inner = producers.get(node.input[0])
        if cast_to(inner) == onnx.TensorProto.FLOAT16 and inner.input[0] in float32:
            replace[node.output[0]] = inner.input[0]
    if not replace:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in replace:
                node.input[i] = replace[name]
    _drop_unused_casts(graph)


def _drop_unused_casts(graph: Any) -> None:
    """Remove Cast nodes whose output nothing reads (repeated: dropping one can orphan another)."""
    outputs = {vi.name for vi in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in used]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def check_io_fp32(model: Any) -> None:
    """ExportError unless every graph input and output is float32 (the engine contract)."""
    import onnx

    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"FP16 graph has non-float32 IO tensor {vi.name!r}; the "
                              "converter must keep IO types (keep_io_types=True)")


def _run(model: Any, mels: Sequence[np.ndarray]) -> List[np.ndarray]:
    session = make_session(model.SerializeToString(), providers=[CPU])
    return [session.run(["wav"], {"mel": m[None]})[0] for m in mels]


def _snr(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> float:
    return snr_db(np.concatenate([r.ravel() for r in refs]), np.concatenate([o.ravel() for o in outs]))


@dataclass
class _Measured:
    """One candidate graph's outputs on the calibration mels and its parity numbers."""

    outs: List[np.ndarray]
    snr_db: float  # over all calibration mels together
    log_mel_l1s: List[float]  # one per calibration mel

    @property
    def log_mel_l1(self) -> float:
        """The worst calibration mel's log-mel L1 (what the targets apply to)."""
        return max(self.log_mel_l1s)


def _measure(model: Any, mels: Sequence[np.ndarray], refs: Sequence[np.ndarray], cfg: MelConfig) -> _Measured:
    outs = _run(model, mels)
    return _Measured(outs, _snr(refs, outs), [log_mel_l1(r, o, cfg) for r, o in zip(refs, outs)])


def _snr_stop(island: Dict[str, Any]) -> float:
    """SNR above which ``island`` is not worth its cost for SNR alone (inf: always measured)."""
    if island.get("always"):
        return float("inf")
    return TARGET_SNR_DB + (COSTLY_MARGIN_DB if island.get("costly") else TARGET_MARGIN_DB)


def _judge(best: _Measured, trial: _Measured, min_gain_db: float, snr_stop: float,
           stop_l1: float) -> tuple[bool, str]:
    """(keep, why): is ``trial`` (one more island in FP32) worth its cost over ``best``?

    Kept only if it lowers neither metric and either raises the SNR by more than
    ``min_gain_db`` while the SNR is below ``snr_stop``, or cuts log-mel L1 by
    ``MIN_L1_GAIN`` while it is above ``stop_l1``. ``why`` says which, or why not.
    """
    gain = trial.snr_db - best.snr_db
    l1_change = f"log-mel L1 {best.log_mel_l1:.4f} -> {trial.log_mel_l1:.4f}"
    if not (trial.snr_db >= best.snr_db and trial.log_mel_l1 <= best.log_mel_l1):
        return False, f"worse: SNR {gain:+.1f} dB, {l1_change}"
    if best.snr_db < snr_stop and gain > min_gain_db:
        return True, f"SNR {gain:+.1f} dB"
    if best.log_mel_l1 > stop_l1 and trial.log_mel_l1 < best.log_mel_l1 * (1 - MIN_L1_GAIN):
        return True, l1_change
    snr_note = (f"SNR {gain:+.1f} dB not needed above {snr_stop:.0f} dB" if best.snr_db >= snr_stop
                else f"SNR {gain:+.1f} dB <= {min_gain_db:g} dB")
    l1_note = (f"log-mel L1 already <= {stop_l1:.4f}" if best.log_mel_l1 <= stop_l1
               else f"{l1_change}, under {MIN_L1_GAIN:.0%} better")
    return False, f"{snr_note}; {l1_note}"


# ------------------------------------------------------------------------------ islands


def candidate_islands(model: Any, peaks: Dict[str, float], blocked: set) -> List[Dict[str, Any]]:
    """Named node groups worth trying in FP32, most likely first."""
    names = [n.name for n in model.graph.node if n.op_type not in ("Constant",)]
    ops = {n.name: n.op_type for n in model.graph.node}

    def under(*prefixes: str) -> List[str]:
        return [n for n in names if any(n.startswith(p) for p in prefixes)]

    islands: List[Dict[str, Any]] = []
    nsf = _with_ancestors(model, under("/source_module/"))
    if nsf:
        islands.append({"name": "nsf_source", "why": "NSF phase chain (CumSum/Mod/Sin): an FP16 "
                        "phase in [0, 1) has ~5e-4 cycle steps", "nodes": nsf, "always": True})
    pre = under("/conv_pre/")
    if pre:
        islands.append({"name": "conv_pre", "why": "input projection of the mel", "nodes": pre})
    tail = under("/conv_post/") + [n for n in names if ops[n] == "Tanh" and "/" not in n.strip("/")]
    tail += [n for n in names if n.count("/") == 1 and ops[n] in ("LeakyRelu", "Tanh")][-2:]
    if tail:
        islands.append({"name": "output_tail", "why": "conv_post + tanh write the waveform",
                        "nodes": sorted(set(tail))})
    ranked = sorted((n for n in peaks if n not in blocked and n in ops), key=lambda n: -peaks[n])
    if ranked:
        islands.append({"name": "widest_range", "why": "largest |activation| in calibration",
                        "nodes": ranked[:8]})
    spans = list(_stage_spans(names).items())[::-1]  # highest rate first
    resblock = re.compile(r"^/(resblocks|conv_blocks)\.\d+/")
    for stage, nodes in spans:
        # Cheap (one conv + elementwise ops) and, measured on the 48 kHz net, as good for
        # log-mel L1 as the whole stage (worst fixture 0.0060 vs 0.0059): the residual stream
        # between stages is what matters.
        islands.append({"name": f"stage_{stage}_stream", "why": f"upsampling stage {stage}'s "
                        "upsampler and the average of its resblocks (the residual stream); "
                        "the resblock convs stay FP16",
                        "nodes": [n for n in nodes if not resblock.match(n)]})
    for stage, nodes in spans:
        islands.append({"name": f"stage_{stage}", "why": f"upsampling stage {stage}: upsampler, "
                        "its resblocks and their sum (higher stages run at higher rates)",
                        "nodes": nodes, "costly": True})
    for island in islands:
        island["nodes"] = [n for n in island["nodes"] if n not in blocked]
    return [i for i in islands if i["nodes"]]


def _with_ancestors(model: Any, nodes: Sequence[str]) -> List[str]:
    """``nodes`` plus every node they depend on (the NSF pitch/uv slices and their constants)."""
    if not nodes:
        return []
    producers = {out: node for node in model.graph.node for out in node.output}
    by_name = {node.name: node for node in model.graph.node}
    seen: set = set()
    stack = [by_name[n] for n in nodes if n in by_name]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(producers[i] for i in node.input if i in producers)
    return [n.name for n in model.graph.node if n.name in seen]


def _stage_spans(names: Sequence[str]) -> Dict[int, List[str]]:
    """{stage: node names} from each upsampler to the next one (the last ends at conv_post).

    The exporter writes nodes in forward order, so a contiguous span holds the stage's
    upsampler, its resblocks, the Add/Div that averages them and anything fed in on the way
    (NSF noise convs). Pre-activations that belong to stage k+1 sit at the end of span k; the
    planner only measures, so the cut does not need to be exact.
    """
    stage_re = re.compile(r"^/(ups|transpose_upsamples|repeat_upsamples)\.(\d+)/")
    starts: Dict[int, int] = {}
    for i, name in enumerate(names):
        match = stage_re.match(name)
        if match:
            starts.setdefault(int(match.group(2)), i)
    end = next((i for i, n in enumerate(names) if n.startswith("/conv_post/")), len(names))
    order = sorted(starts)
    bounds = [starts[k] for k in order] + [end]
    return {k: list(names[bounds[j]:bounds[j + 1]]) for j, k in enumerate(order)}


# ------------------------------------------------------------------------------ planning


def plan_fp16(fp32_path: str | Path, out_path: str | Path, plan_path: str | Path, vocoder: Vocoder,
              mels: Sequence[np.ndarray], *, reference: Any = None,
              search_seconds: float | None = SEARCH_SECONDS, min_gain_db: float = MIN_GAIN_DB) -> PrecisionPlan:
    """Write the planned FP16 graph to ``out_path`` and the plan JSON to ``plan_path``.

    ``mels`` are [C, T] real-speech inputs used both to calibrate ranges and to measure SNR
    against the PyTorch FP32 module (``reference`` caches its outputs).
    """
    import onnx
    import onnxconverter_common

    start = time.perf_counter()
    mels = [np.ascontiguousarray(m, dtype=np.float32) for m in mels]
    if not mels:
        raise ExportError("FP16 planning needs at least one calibration mel")
    model = onnx.load(str(fp32_path))
    reference = reference or TorchRunner(vocoder.module, cache=True)
    refs = [reference(m[None]) for m in mels]

    log.info("fp16 plan: calibrating %d node outputs on %d mels", len(model.graph.node), len(mels))
    peaks = calibrate(model, mels)
    reasons: Dict[str, Dict[str, Any]] = {}
    constants = {n.name for n in model.graph.node if n.op_type == "Constant"}
    for node, peak in peaks.items():
        # A Constant's value is exact data (e.g. the 16000 Hz sample rate), not an activation
        # that can grow: its consumers' outputs are what overflow, and they are measured.
        if peak > OVERFLOW_LIMIT and node not in constants:
            reasons[node] = {"reason": "overflow_risk", "max_abs": peak, "limit": OVERFLOW_LIMIT}

    cfg = mel_config_for(vocoder.spec)
    plain_model = convert(model, [])
    plain = _measure(plain_model, mels, refs, cfg)
    log.info("fp16 plan: plain conversion SNR %.2f dB, log-mel L1 %.4f", plain.snr_db, plain.log_mel_l1)

    blocked = set(reasons)
    if blocked:
        best_model = convert(model, sorted(blocked))
        best = _measure(best_model, mels, refs, cfg)
    else:
        best_model, best = plain_model, plain
    tried: List[Dict[str, Any]] = []
    search_start = time.perf_counter()
    stop_l1 = MAX_LOG_MEL_L1 * LOG_MEL_MARGIN
    for island in candidate_islands(model, peaks, blocked):
        entry = {"name": island["name"], "nodes": len(island["nodes"]), "why": island["why"]}
        snr_stop = _snr_stop(island)
        if best.snr_db >= snr_stop and best.log_mel_l1 <= stop_l1:
            entry["result"] = (f"skipped ({'costly island, ' if island.get('costly') else ''}targets "
                               f"met: {best.snr_db:.1f} dB >= {snr_stop:.0f} dB, "
                               f"log-mel L1 {best.log_mel_l1:.4f} <= {stop_l1:.4f})")
            tried.append(entry)
            continue
        if (not island.get("always") and search_seconds is not None
                and time.perf_counter() - search_start > search_seconds):
            entry["result"] = "skipped (time budget)"
            tried.append(entry)
            continue
        trial_model = convert(model, sorted(blocked | set(island["nodes"])))
        trial = _measure(trial_model, mels, refs, cfg)
        entry.update(snr_db=trial.snr_db, gain_db=trial.snr_db - best.snr_db,
                     log_mel_l1=trial.log_mel_l1)
        keep, why = _judge(best, trial, min_gain_db, snr_stop, stop_l1)
        if keep:
            entry["result"] = f"kept FP32 ({why})"
            for node in island["nodes"]:
                reasons[node] = {"reason": f"island:{island['name']}", "why": island["why"],
                                 "kept_for": why,
                                 "snr_before_db": best.snr_db, "snr_after_db": trial.snr_db,
                                 "log_mel_l1_before": best.log_mel_l1,
                                 "log_mel_l1_after": trial.log_mel_l1}
            blocked |= set(island["nodes"])
            best_model, best = trial_model, trial
        else:
            entry["result"] = f"rejected ({why})"
        log.info("fp16 plan: island %s -> %.2f dB, log-mel L1 %.4f (%s)", island["name"],
                 trial.snr_db, trial.log_mel_l1, entry["result"])
        tried.append(entry)

    fell_back = False
    if not best.snr_db >= plain.snr_db:  # also catches NaN
        best_model, best, blocked, reasons, fell_back = plain_model, plain, set(), {}, True
    per_mel = []
    for m, r, o, l1_mel in zip(mels, refs, best.outs, best.log_mel_l1s):
        per_mel.append({"frames": int(m.shape[-1]), "snr_db": _snr([r], [o]),
                        "log_mel_l1": l1_mel, "finite": bool(np.all(np.isfinite(o)))})
    l1 = best.log_mel_l1
    ranked = sorted(peaks.items(), key=lambda kv: -kv[1])
    calibration = {
        "mels": [int(m.shape[-1]) for m in mels], "nodes": len(peaks),
        "overflow_limit": OVERFLOW_LIMIT, "max_abs_overall": ranked[0][1] if ranked else 0.0,
        "top": [{"node": n, "max_abs": v} for n, v in ranked[:TOP_N]],
        "max_abs": {n: v for n, v in ranked},
    }
    plan = PrecisionPlan(
        fp32_nodes=sorted(blocked), reasons=reasons, snr_plain_db=plain.snr_db,
        snr_plan_db=best.snr_db, log_mel_l1=l1, fell_back_to_plain=fell_back,
        calibration=calibration, candidates=tried,
        converter_version=onnxconverter_common.__version__,
        seconds=time.perf_counter() - start, fp16_path=str(Path(out_path).name), per_mel=per_mel,
        log_mel_l1_plain=plain.log_mel_l1,
        targets={"snr_db": TARGET_SNR_DB, "stop_snr_db": TARGET_SNR_DB + TARGET_MARGIN_DB,
                 "stop_snr_db_costly": TARGET_SNR_DB + COSTLY_MARGIN_DB,
                 "log_mel_l1": MAX_LOG_MEL_L1, "stop_log_mel_l1": stop_l1},
    )
    with atomic_path(Path(out_path)) as tmp:
        onnx.save(best_model, str(tmp))
    # Strict JSON (no Infinity/NaN tokens): non-finite numbers become null.
    write_json(plan_path, _json_safe(plan.to_dict()), schema=PLAN_SCHEMA, version=PLAN_SCHEMA_VERSION, indent=1)
    log.info("fp16 plan: %d FP32 node(s), SNR %.2f dB (plain %.2f dB), log-mel L1 %.4f, %.1f s",
             len(blocked), best.snr_db, plain.snr_db, l1, plan.seconds)
    return plan


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON readers)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def evaluate_fp16(fp16_path: str | Path, vocoder: Vocoder, mels: Dict[str, np.ndarray], *,
                  reference: Any = None) -> Dict[str, Dict[str, Any]]:
    """{name: {frames, snr_db, log_mel_l1, finite}} of an FP16 graph vs PyTorch FP32 per mel.

    The plan is decided on a few calibration sentences; this is the per-utterance check on
    any set (e.g. every speech fixture), run by ONNX Runtime CPU one utterance at a time.
    """
    reference = reference or TorchRunner(vocoder.module, cache=True)
    session = make_session(fp16_path, providers=[CPU])
    cfg = mel_config_for(vocoder.spec)
    out: Dict[str, Dict[str, Any]] = {}
    for name, mel in mels.items():
        x = np.ascontiguousarray(mel[None], dtype=np.float32)
        ref = reference(x)
        got = session.run(["wav"], {"mel": x})[0]
        finite = bool(np.all(np.isfinite(got)))
        out[name] = {"frames": int(mel.shape[-1]), "snr_db": snr_db(ref, got),
                     "log_mel_l1": log_mel_l1(ref, got, cfg),
                     "finite": finite}
    return out
