#!/usr/bin/env python3
"""Write a demo parity report (report.json + report.html) from synthetic speech-like audio.

Why: to look at and iterate on the report layout without a GPU, an engine or a vocoder. The
"engine" outputs are the reference with a signal-shaped error at FP16-like SNRs; with
``--scenario fail`` one case also gets a click burst, a NaN and a truncated tail, so the
failure styling is visible.

Usage: scripts/sample_report.py OUT_DIR [--scenario pass|fail] [--sample-rate 16000]
Then:  scripts/screenshot_report.sh OUT_DIR
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import ensure_hifitrt  # noqa: E402

ensure_hifitrt()

from hifitrt.validation.metrics import Thresholds  # noqa: E402
from hifitrt.validation.report import CaseCollector, measure_case, write_report  # noqa: E402
from hifitrt.validation.synthetic_audio import engine_like, speech_like  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--scenario", choices=("pass", "fail"), default="fail")
    ap.add_argument("--sample-rate", type=int, default=16000)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    sr = args.sample_rate
    hop = sr // 100
    thresholds = Thresholds.fp16()
    collector = CaseCollector(keep=1)
    # (profile, input name, batch, frames, error SNR in dB)
    plan = [
        ("min", "cmn_hao", 1, 32, 52.0),
        ("opt", "cmn_tianqi", 1, 216, 47.5),
        ("opt", "cmn_tianqi", 4, 216, 46.0),
        ("max", "cmn_chuntian", 1, 1100, 44.0),
        ("odd", "cmn_jidian_f", 1, 219, 45.5),
        ("max", "cmn_beijing", 2, 730, 43.0),
    ]
    for k, (profile, name, batch, frames, snr) in enumerate(plan):
        n = frames * hop
        ref = np.stack([speech_like(sr, n / sr, seed=10 * k + b) for b in range(batch)])[:, None, :]
        cand = np.stack([engine_like(ref[b, 0], snr - 1.5 * b, seed=k + b, sample_rate=sr)
                         for b in range(batch)])[:, None, :]
        if args.scenario == "fail" and profile == "max" and name == "cmn_chuntian":
            # A 3 ms click burst, a NaN and a 160-sample truncation: what broken FP16 looks like.
            at = int(0.41 * n)
            cand[0, 0, at:at + sr * 3 // 1000] += 0.25 * np.hanning(sr * 3 // 1000)
            cand[0, 0, at + 2 * sr // 10] = np.nan
            cand = cand[..., :-160]
        collector.add(measure_case(ref, cand, sample_rate=sr, thresholds=thresholds,
                                   profile=profile, input_name=name, frames=frames))
    engine = {
        "name": "default-16k (demo)",
        "source": "default",
        "backend": "onnxruntime (CPU)",
        "precision": "fp16",
        "sample_rate": sr,
        "hop": hop,
        "onnx_sha256": "0" * 16 + "… (demo)",
        "profiles": "min 32 / opt 216 / max 1100 frames, batch 1-4",
    }
    paths = write_report(args.out_dir, collector.cases, engine=engine, thresholds=thresholds,
                         sample_rate=sr)
    print(paths.json)
    print(paths.html)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
