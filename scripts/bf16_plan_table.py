"""BF16 plan table: build an OpenVINO BF16 engine for every vocoder config and show its plan.

For the default vocoder and the KAN-TTS configs (random weights, ``--scale`` on the weight-norm
magnitudes, as in ``fp16_parity_table.py``): ``build --backend openvino --precision bf16``, then
one row per model from the engine's ``bf16_plan.json``: the FP32 islands kept, the all-BF16
starting point, the gate's worst numbers over every speech fixture (PESQ wb, log-mel L1, SNR,
multi-resolution STFT distance), the plan's time against OpenVINO FP32, and whether BF16 was
built or refused. Needs a CPU with BF16 units (AVX512-BF16 or AMX); exits 2 without them and
1 if any model's plan was refused.

    python scripts/bf16_plan_table.py [--models default hifigan_v1_8k ...] [--json OUT]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bootstrap import ensure_hifitrt

ensure_hifitrt()

from _model_table import parse_model_table_args  # noqa: E402


def measure(name: str, tmp: Path, scale: float) -> dict[str, Any]:
    from hifitrt.engines import build_engine
    from hifitrt.export.kantts_random import random_kantts_checkpoint

    start = time.perf_counter()
    source = "default" if name == "default" else random_kantts_checkpoint(name, tmp / name / "voc", scale=scale)
    out = tmp / name / "engine"
    result = build_engine(source, out, backend="openvino", precision="bf16")
    plan = json.loads((out / "bf16_plan.json").read_text())
    worst = plan["gate"].get("worst", {})
    start_row = plan["candidates"][0] if plan["candidates"] else {}
    return {
        "model": name, "built": result.manifest.precision, "passed": plan["passed"], "reason": plan["reason"],
        "fp32_islands": plan["fp32_islands"], "all_bf16_log_mel_l1": start_row.get("log_mel_l1"),
        "worst_pesq": worst.get("pesq"), "worst_log_mel_l1": worst.get("log_mel_l1"),
        "worst_snr_db": worst.get("snr_db"), "worst_mrstft": worst.get("mrstft"),
        "speedup_vs_openvino_fp32": plan["timing"].get("speedup_vs_openvino_fp32"),
        "openvino_fp32_s": plan["timing"].get("openvino_fp32_s"), "plan_s": plan["timing"].get("plan_s"),
        "timing_frames": plan["timing"].get("timing_frames"), "per_fixture": plan["gate"].get("per_fixture", []),
        "cpu": plan["cpu"], "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    from hifitrt.engines.openvino_engine import cpu_info

    args = parse_model_table_args(__doc__.splitlines()[0], argv)
    cpu = cpu_info()
    if not cpu.has_bf16:
        print(f"this CPU ({cpu.model}) has no BF16 units: a BF16 plan cannot be measured here", file=sys.stderr)
        return 2
    print(f"CPU: {cpu.model}, {cpu.cores} usable cores, flags {', '.join(cpu.flags)}", flush=True)
    print(f"{'model':34} {'built':5} {'allBF16 L1':>10} {'PESQ':>5} {'logmelL1':>8} {'SNR':>5} {'MRSTFT':>6} "
          f"{'xOV32':>5} {'sec':>4}  FP32 islands", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = measure(name, Path(tmp), args.scale)
            rows.append(row)

            def num(key: str, fmt: str) -> str:
                return "-" if row[key] is None else format(row[key], fmt)

            print(f"{name:34} {row['built']:5} {num('all_bf16_log_mel_l1', '10.4f')} {num('worst_pesq', '5.2f')} "
                  f"{num('worst_log_mel_l1', '8.4f')} {num('worst_snr_db', '5.1f')} {num('worst_mrstft', '6.3f')} "
                  f"{num('speedup_vs_openvino_fp32', '5.2f')} {row['seconds']:4.0f}  "
                  f"{', '.join(row['fp32_islands']) or '-'}", flush=True)
            if not row["passed"]:
                print(f"    refused: {row['reason']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float) + "\n")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
