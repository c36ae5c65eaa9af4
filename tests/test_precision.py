"""FP16 precision planning: plan JSON, FP32 IO, checker + ORT, and FP16 parity on real speech.

Random-weight KAN-TTS vocoders use ``scale=0.5`` on the weight-norm magnitudes (g). Measured
on the cmn_tianqi fixture (16 kHz causal config, seed 3): scale 0.25 gives an output rms of
0.003 (a near-silent net, where FP16's relative error is inflated and SNR says nothing about
a real vocoder), 1.0 gives rms 0.63 (louder than any speech, pushed into tanh's curve), 0.5
gives rms 0.03-0.05 with peak activations ~12: the level and range of a trained vocoder on
speech, far from FP16 overflow and without saturation. scripts/fp16_parity_table.py measures
all eight configs the same way; the suite tests a representative subset (causal 16 kHz,
non-causal NSF 16 kHz, 48 kHz / 128 mels) because each FP16 plan costs tens of seconds.
"""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from hifitrt.export.load import load_vocoder
from hifitrt.export.onnx_export import export_onnx
from hifitrt.export.ort import CPU, make_session
from hifitrt.export.precision import (
    LOG_MEL_MARGIN, MIN_L1_GAIN, PrecisionPlan, _judge, _Measured, convert, evaluate_fp16, plan_fp16,
)
from hifitrt.export.reference import TorchRunner
from hifitrt.export.speech_inputs import calibration_mels, fixture_inputs, parity_batches
from hifitrt.export.kantts_random import (
    generator_params, kantts_configs_dir, random_weight_norm_generator, save_kantts_checkpoint,
)

from tiny_vocoder import CHANNELS, tiny_vocoder_model

warnings.filterwarnings("ignore", category=UserWarning)
CONFIGS = kantts_configs_dir()
SCALE = 0.5  # see the module docstring
MIN_SNR_DB = 50.0
MAX_LOG_MEL_L1 = 0.01
# 48 kHz is the config whose plain FP16 conversion misses log-mel L1 (0.013 on cmn_hao): the
# plan must close that with an island. scripts/fp16_parity_table.py measures all 8 configs.
SUBSET = ("hifigan_v1_16k", "hifigan_noncausal_nsf_v1_16k", "hifigan_v1_48k")
# The suite plans these at a quarter of their width (64 / 128 channels instead of 256 / 512:
# 1/16 of the conv MACs; a weight-norm conv's output level is set by its gain, not its width,
# so scale 0.5 still gives speech-level output). The same layers, stages, NSF chain and sample
# rates are planned, which is what these tests are about; the full-size numbers are
# scripts/fp16_parity_table.py's (the README's FP16 table).
WIDTH_DIVISOR = 4
EVAL_FRAMES = 240  # about the first 3 s of each fixture (80 frames/s): speech, pauses, onsets


def _plan(vocoder, tmp: Path, calibration, lengths=(), eval_frames: int | None = None):
    """FP32 export (verified at ``lengths``), planned FP16, per-fixture evaluation (on the first
    ``eval_frames`` frames of each fixture when given: the PyTorch reference of a 48 kHz net
    over all 6 whole fixtures is most of a minute here)."""
    reference = TorchRunner(vocoder.module, cache=True)
    export = export_onnx(vocoder, tmp / "m.onnx", verify=bool(lengths), lengths=lengths,
                         reference=reference)
    if lengths:
        assert export.parity["passed"] and export.parity["max_abs"] <= 1e-4
    fp32 = export.path
    plan = plan_fp16(fp32, tmp / "m.fp16.onnx", tmp / "m.plan.json", vocoder, calibration,
                     reference=reference)
    fixtures = {name: mel[:, :eval_frames] for name, mel in fixture_inputs(vocoder.spec).items()}
    evaluation = evaluate_fp16(tmp / "m.fp16.onnx", vocoder, fixtures, reference=reference)
    return {"vocoder": vocoder, "plan": plan, "eval": evaluation, "dir": tmp, "fp16": tmp / "m.fp16.onnx",
            "plan_json": tmp / "m.plan.json", "calibration_count": len(calibration)}


def _kantts_vocoder(tmp: Path, stem: str, width_divisor: int = 1):
    cfg = CONFIGS / f"{stem}.yaml"
    if width_divisor != 1:
        data = yaml.safe_load(cfg.read_text())
        params = data["Model"]["Generator"]["params"]
        params["channels"] = int(params["channels"]) // width_divisor
        cfg = tmp / f"{stem}.yaml"
        tmp.mkdir(parents=True, exist_ok=True)
        cfg.write_text(yaml.safe_dump(data))
    module = random_weight_norm_generator(generator_params(cfg), seed=3, scale=SCALE)
    save_kantts_checkpoint(module, cfg, tmp / "voc")
    return load_vocoder(tmp / "voc")


@pytest.fixture(scope="module")
def default_plan(default_vocoder, default_fp16_engine):
    """The plan inside the default vocoder's FP16 engine, as ``build`` made it (the shared
    session engine of tests/conftest.py: planning the default vocoder takes minutes here),
    evaluated on every speech fixture."""
    from hifitrt.engines import layout

    plan_json = default_fp16_engine / layout.PRECISION_PLAN
    data = json.loads(plan_json.read_text())
    plan = PrecisionPlan(**{f.name: data[f.name] for f in dataclasses.fields(PrecisionPlan) if f.name in data})
    fp16 = default_fp16_engine / layout.FP16_ONNX
    evaluation = evaluate_fp16(fp16, default_vocoder, fixture_inputs(default_vocoder.spec),
                               reference=TorchRunner(default_vocoder.module, cache=True))
    return {"vocoder": default_vocoder, "plan": plan, "eval": evaluation, "dir": default_fp16_engine, "fp16": fp16,
            "plan_json": plan_json, "calibration_count": len(calibration_mels(default_vocoder.spec)[0])}


@pytest.fixture(scope="module", params=SUBSET)
def kantts_plan(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    vocoder = _kantts_vocoder(tmp, request.param, WIDTH_DIVISOR)
    # Two 100-frame speech cuts keep calibration cheap at 48 kHz (hop 600).
    mels = list(parity_batches(vocoder.spec, ["medium"])["medium"][:, :, :100])
    # FP32 parity of these configs is checked here (short), not again in test_onnx_export.
    return _plan(vocoder, tmp, mels, lengths=("short",), eval_frames=EVAL_FRAMES)


def _check_parity(result) -> None:
    plan, evaluation = result["plan"], result["eval"]
    assert len(evaluation) == 6  # every speech fixture
    for name, e in evaluation.items():
        assert e["finite"], f"{name}: NaN/Inf in FP16 output"
        assert e["snr_db"] >= MIN_SNR_DB, f"{name}: FP16 SNR {e['snr_db']:.1f} dB"
        assert e["log_mel_l1"] <= MAX_LOG_MEL_L1, f"{name}: log-mel L1 {e['log_mel_l1']:.4f}"
    # The plan is never worse than the plain conversion.
    assert plan.snr_plan_db >= plan.snr_plain_db - 0.1


def _check_graph(result) -> None:
    path = result["fp16"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    io = list(model.graph.input) + list(model.graph.output)
    assert [v.name for v in io] == ["mel", "wav"]
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)
    assert onnx.TensorProto.FLOAT16 in {i.data_type for i in model.graph.initializer}
    # FP16 compute nodes exist: at least one Conv consumes an fp16 weight.
    fp16_inits = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    assert any(n.op_type == "Conv" and n.input[1] in fp16_inits for n in model.graph.node)
    # Nodes the plan keeps FP32 still read FP32 weights.
    fp32_nodes = set(result["plan"].fp32_nodes)
    fp32_inits = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for node in model.graph.node:
        if node.name in fp32_nodes and node.op_type == "Conv":
            assert node.input[1] in fp32_inits
    spec = result["vocoder"].spec
    mel = fixture_inputs(spec, ["cmn_hao"])["cmn_hao"][None]
    wav = make_session(path, providers=[CPU]).run(["wav"], {"mel": mel})[0]
    assert wav.dtype == np.float32 and wav.shape == (1, 1, mel.shape[-1] * spec.hop)


def _check_plan_json(result) -> None:
    plan = result["plan"]
    data = json.loads(result["plan_json"].read_text(), parse_constant=pytest.fail)
    assert data["schema"] == "hifitrt.precision-plan" and data["schema_version"] == 1
    import onnxconverter_common
    assert data["converter_version"] == onnxconverter_common.__version__
    assert data["fp32_nodes"] == plan.fp32_nodes
    for node in data["fp32_nodes"]:  # every FP32 node has a reason with numbers
        reason = data["reasons"][node]
        assert reason["reason"] == "overflow_risk" or reason["reason"].startswith("island:")
        numbers = [v for k, v in reason.items() if k in ("max_abs", "snr_before_db", "snr_after_db")]
        assert numbers and all(isinstance(v, float) for v in numbers)
    cal = data["calibration"]
    assert cal["nodes"] > 50 and len(cal["mels"]) == result["calibration_count"]
    assert cal["max_abs_overall"] == max(cal["max_abs"].values()) > 0
    assert cal["top"][0]["max_abs"] == cal["max_abs_overall"]
    assert math.isclose(data["snr_plain_db"], plan.snr_plain_db)
    assert math.isclose(data["snr_plan_db"], plan.snr_plan_db)
    assert math.isclose(data["log_mel_l1_plain"], plan.log_mel_l1_plain)
    assert data["targets"]["log_mel_l1"] == MAX_LOG_MEL_L1
    for c in data["candidates"]:  # every measured island records both numbers
        assert ("snr_db" in c) == ("log_mel_l1" in c) == (not c["result"].startswith("skipped"))
    assert data["candidates"] and all("result" in c for c in data["candidates"])
    assert not list(result["dir"].glob(".*.tmp"))  # atomic writes left no temp files


@pytest.mark.slow  # an FP16 plan: minutes on 2 cores
def test_default_plan_json(default_plan) -> None:
    _check_plan_json(default_plan)


@pytest.mark.slow  # an FP16 plan: minutes on 2 cores
def test_default_planned_graph(default_plan) -> None:
    _check_graph(default_plan)


@pytest.mark.slow  # an FP16 plan: minutes on 2 cores
def test_default_fp16_parity_every_fixture(default_plan) -> None:
    _check_parity(default_plan)


@pytest.mark.slow  # an FP16 plan: minutes on 2 cores
def test_kantts_fp16_plan(kantts_plan) -> None:
    _check_plan_json(kantts_plan)
    _check_graph(kantts_plan)
    _check_parity(kantts_plan)


@pytest.mark.slow  # an FP16 plan: minutes on 2 cores
def test_plan_searches_until_log_mel_target(kantts_plan) -> None:
    """Optional islands are skipped only once both targets hold on the calibration mels."""
    plan = kantts_plan["plan"]
    stop_l1 = plan.targets["stop_log_mel_l1"]
    assert math.isclose(stop_l1, MAX_LOG_MEL_L1 * LOG_MEL_MARGIN)
    skipped = [c for c in plan.candidates if c["result"].startswith("skipped")]
    if skipped:
        assert plan.log_mel_l1 <= stop_l1 and plan.snr_plan_db >= plan.targets["stop_snr_db"]
    for c in plan.candidates:
        if c["result"].startswith("kept FP32 (log-mel"):  # a real cut of the plain L1
            assert c["log_mel_l1"] < (1 - MIN_L1_GAIN) * plan.log_mel_l1_plain
    if plan.log_mel_l1_plain > stop_l1:  # 48 kHz: the plain graph misses, an island closes it
        assert any(c["result"].startswith("kept FP32") for c in plan.candidates)
        assert plan.log_mel_l1 < plan.log_mel_l1_plain


def _residual_vocoder() -> onnx.ModelProto:
    """The tiny vocoder with a resblock-style fan-out: ``act`` feeds both a Conv and an Add.

    Fan-out is what HiFi-GAN graphs have everywhere (residual adds, Shape/Pad of the causal
    padding), and it is where onnxconverter-common leaves its per-node cast pairs in place.
    """
    from onnx import helper, numpy_helper

    model = tiny_vocoder_model()
    graph = model.graph
    rng = np.random.default_rng(2)
    graph.initializer.append(numpy_helper.from_array(
        (rng.standard_normal((16, 16, 3)) * 0.2).astype(np.float32), "res.w"))
    up = next(n for n in graph.node if n.name == "up")
    up.input[0] = "h2r"
    at = list(graph.node).index(up)
    graph.node.insert(at, helper.make_node("Add", ["h2", "h2c"], ["h2r"], name="res_add"))
    graph.node.insert(at, helper.make_node("Conv", ["h2", "res.w"], ["h2c"], name="res_conv", pads=[1, 1]))
    onnx.checker.check_model(model)
    return model


def test_fp32_island_computes_and_stores_fp32(tmp_path: Path) -> None:
    """Blocked nodes pass FP32 tensors to each other, not an fp16 round trip (converter #271).

    onnxconverter-common wraps each blocked node in its own casts; without the rewiring in
    ``convert`` a graph with every node blocked still rounds activations to FP16 wherever a
    tensor fans out (measured on the 48 kHz KAN-TTS net: 75.5 dB, no better than plain FP16).
    """
    model = _residual_vocoder()
    mel = np.random.default_rng(1).standard_normal((1, CHANNELS, 40)).astype(np.float32)

    def error(block) -> float:
        path = tmp_path / "m.onnx"
        onnx.save(convert(model, block), str(path))
        got = make_session(path, providers=[CPU]).run(["wav"], {"mel": mel})[0]
        return float(np.max(np.abs(got - fp32)))

    path = tmp_path / "fp32.onnx"
    onnx.save(model, str(path))
    fp32 = make_session(path, providers=[CPU]).run(["wav"], {"mel": mel})[0]
    plain = error([])
    assert plain > 1e-4  # FP16 really differs here
    assert error([n.name for n in model.graph.node]) < 1e-6
    island = ["conv_pre", "act", "res_conv", "res_add", "up"]
    assert error(island) < plain
    converted = convert(model, island)
    producers = {o: n for n in converted.graph.node for o in n.output}
    for node in converted.graph.node:  # inside the island, no Cast between FP32 nodes
        if node.name in island[1:]:
            assert all(producers[i].name in island for i in node.input if i in producers), node.name


def test_island_is_kept_only_for_a_needed_gain() -> None:
    def keep(best: tuple, trial: tuple, snr_stop: float = 60) -> bool:
        stop = MAX_LOG_MEL_L1 * LOG_MEL_MARGIN
        (snr_a, l1_a), (snr_b, l1_b) = best, trial
        kept, why = _judge(_Measured([], snr_a, [l1_a]), _Measured([], snr_b, [l1_b]), 1.0,
                           snr_stop, stop)
        assert why
        return kept

    assert keep((55, 0.004), (57, 0.004))
    assert not keep((55, 0.004), (55.5, 0.004))  # under 1 dB
    assert not keep((61, 0.004), (65, 0.004))  # SNR margin already met
    assert keep((61, 0.004), (65, 0.004), snr_stop=math.inf)  # an "always" island
    assert keep((70, 0.012), (70.2, 0.006))  # kept for log-mel L1
    assert not keep((70, 0.004), (70.2, 0.002))  # L1 already on target
    assert not keep((70, 0.012), (69.0, 0.006))  # SNR must not drop
    assert not keep((55, 0.004), (60, 0.005))  # L1 must not rise


@pytest.mark.slow  # an FP16 plan: minutes on 2 cores
def test_nsf_phase_chain_follows_measurement(kantts_plan) -> None:
    """The NSF source island is always measured; it is FP32 exactly when it measurably helps."""
    plan = kantts_plan["plan"]
    islands = {c["name"]: c for c in plan.candidates}
    if not kantts_plan["vocoder"].spec.nsf:
        assert "nsf_source" not in islands
        return
    nsf = islands["nsf_source"]
    assert "snr_db" in nsf, "the NSF phase chain must always be measured"
    model = onnx.load(str(kantts_plan["dir"] / "m.onnx"))
    chain = {n.name for n in model.graph.node if n.name.startswith("/source_module/")
             and n.op_type in ("Floor", "Sin")}
    assert chain
    kept = chain <= set(plan.fp32_nodes)
    assert kept == nsf["result"].startswith("kept FP32")
    assert kept == (nsf["gain_db"] > 1.0 or nsf["result"].startswith("kept FP32 (log-mel"))
