"""The command line shared by the per-model table scripts (fp16_parity_table, bf16_plan_table):
which vocoders (the default one and every shipped KAN-TTS config), their weight scale, JSON out."""
from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path


def parse_model_table_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``--models``, ``--scale``, ``--json``; quiet the converters' per-weight warnings."""
    from hifitrt.export.kantts_random import kantts_configs_dir

    stems = sorted(p.stem for p in kantts_configs_dir().glob("*.yaml"))
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", nargs="*", default=["default"] + stems)
    parser.add_argument("--scale", type=float, default=0.5,
                        help="weight-norm magnitude scale of the random KAN-TTS nets (0.5: speech-level output)")
    parser.add_argument("--json", type=Path, help="write all numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    return args
