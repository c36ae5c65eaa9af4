"""FP16 parity table: plan every vocoder config and measure it on every speech fixture.

For the default vocoder and all eight KAN-TTS configs (random weights, ``--scale`` on the
weight-norm magnitudes; 0.5 gives speech-level output, see tests/test_precision.py):
FP32 export verified against PyTorch (max abs error at short/medium/long, batch 1 and 2),
FP16 plan (calibrated on ``calibration_mels``, the mels ``export --precision fp16`` and ``build`` use),
then per fixture: waveform SNR and log-mel L1 vs PyTorch FP32, NaN/Inf, against the targets
(SNR >= 50 dB, log-mel L1 <= 0.01 on every fixture). Prints one row per model and writes the
details as JSON (``--json``); exits 1 if any model misses a target.

    PYTHONPATH=... python scripts/fp16_parity_table.py [--models default hifigan_v1_8k ...]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
from _model_table import parse_model_table_args


def vocoder_for(name: str, tmp: Path, scale: float) -> Any:
    from hifitrt.export.kantts_random import random_kantts_checkpoint
    from hifitrt.export.load import load_vocoder

    if name == "default":
        return load_vocoder("default")
    return load_vocoder(random_kantts_checkpoint(name, tmp / name / "voc", seed=3, scale=scale))


def measure(name: str, tmp: Path, scale: float) -> Dict[str, Any]:
    from hifitrt.export.onnx_export import export_onnx
    from hifitrt.export.precision import MAX_LOG_MEL_L1, TARGET_SNR_DB, evaluate_fp16, plan_fp16
    from hifitrt.export.reference import TorchRunner
    from hifitrt.export.speech_inputs import calibration_mels, fixture_inputs

    start = time.perf_counter()
    vocoder = vocoder_for(name, tmp, scale)
    reference = TorchRunner(vocoder.module, cache=True)
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    # FP32 export, verified against PyTorch at short/medium/long, batch 1 and 2 (raises if
    # any case exceeds 1e-4); the cases are kept for the table.
    export = export_onnx(vocoder, d / "m.onnx", reference=reference)
    fp32 = export.path
    mels, _ = calibration_mels(vocoder.spec)
    plan = plan_fp16(fp32, d / "m.fp16.onnx", d / "m.plan.json", vocoder, mels, reference=reference)
    evaluation = evaluate_fp16(d / "m.fp16.onnx", vocoder, fixture_inputs(vocoder.spec),
                               reference=reference)
    refs = [reference(m[None]) for m in fixture_inputs(vocoder.spec).values()]
    all_ref = np.concatenate([r.ravel() for r in refs])
    islands = sorted({r["reason"] for r in plan.reasons.values()})
    return {
        "model": name, "fp32_parity": export.parity["cases"],
        "fp32_max_abs": max(c["max_abs"] for c in export.parity["cases"]),
        "plain_snr_db": plan.snr_plain_db, "plan_snr_db": plan.snr_plan_db,
        "worst_fixture_snr_db": min(e["snr_db"] for e in evaluation.values()),
        "worst_log_mel_l1": max(e["log_mel_l1"] for e in evaluation.values()),
        "all_finite": all(e["finite"] for e in evaluation.values()),
        "fp32_islands": islands, "fp32_nodes": plan.fp32_nodes,
        "candidates": plan.candidates, "per_fixture": evaluation,
        "output_rms": float(np.sqrt(np.mean(all_ref ** 2))),
        "output_saturated": float(np.mean(np.abs(all_ref) > 0.99)),
        "calibration_max_abs": plan.calibration["max_abs_overall"],
        "seconds": time.perf_counter() - start,
        "meets_targets": bool(all(e["finite"] and e["snr_db"] >= TARGET_SNR_DB
                                  and e["log_mel_l1"] <= MAX_LOG_MEL_L1 for e in evaluation.values())),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_model_table_args(__doc__.splitlines()[0], argv)
    rows = []
    print(f"{'model':38} {'fp32 err':>8} {'plain':>7} {'plan':>7} {'worst':>7} {'logmelL1':>9} {'rms':>6} "
          f"{'sec':>5}  FP32 islands", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = measure(name, Path(tmp), args.scale)
            rows.append(row)
            print(f"{name:38} {row['fp32_max_abs']:8.1e} {row['plain_snr_db']:7.1f} {row['plan_snr_db']:7.1f} "
                  f"{row['worst_fixture_snr_db']:7.1f} {row['worst_log_mel_l1']:9.5f} "
                  f"{row['output_rms']:6.3f} {row['seconds']:5.0f}  "
                  f"{', '.join(row['fp32_islands']) or '-'}"
                  f"{'' if row['all_finite'] else '  NaN/Inf!'}"
                  f"  {'meets' if row['meets_targets'] else 'MISSES'} targets", flush=True)
            for c in row["candidates"]:
                gain = f" gain {c['gain_db']:+.2f} dB" if "gain_db" in c else ""
                print(f"    {c['name']:20} {c['result']}{gain}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float) + "\n")
    return 0 if all(r["meets_targets"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
