"""Narrow KAN-TTS vocoder configs for tests that are about behaviour, not model size.

A shipped KAN-TTS config (``shared/reference/kantts-configs``) has 256 generator channels;
exporting, planning and running it dominates the suite's time on a 2-core CPU. These helpers
write a copy of a shipped config with fewer channels and otherwise the SAME architecture
(sample rate, hop, upsampling scales and kernels, causal / non-causal, NSF, mel channels), so
chunking, receptive field, NSF phase and the KAN-TTS / ModelScope file layout are all still
exercised. ``overrides`` replace further generator params when a test needs an even smaller net.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hifitrt.export import kantts_random as synthetic


def small_kantts_config(tmp_dir: Path, stem: str, channels: int = 32, **overrides: Any) -> Path:
    """Write ``tmp_dir/<stem>_c<channels>.yaml``: the shipped ``<stem>.yaml`` with
    ``channels`` generator channels (and ``overrides`` applied to the generator params)."""
    doc = yaml.safe_load((synthetic.kantts_configs_dir() / f"{stem}.yaml").read_text())
    doc["Model"]["Generator"]["params"].update(channels=int(channels), **overrides)
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_dir / f"{stem}_c{channels}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def small_kantts_checkpoint(tmp_dir: Path, stem: str, channels: int = 32, seed: int = 3,
                            scale: float = 0.5, **overrides: Any) -> Path:
    """A seeded random-weight KAN-TTS checkpoint (``tmp_dir/<stem>/ckpt/checkpoint_1000.pth``,
    config one level up) of :func:`small_kantts_config`."""
    config = small_kantts_config(tmp_dir, stem, channels, **overrides)
    module = synthetic.random_weight_norm_generator(synthetic.generator_params(config), seed=seed, scale=scale)
    return synthetic.save_kantts_checkpoint(module, config, Path(tmp_dir) / stem)
