"""Random-weight KAN-TTS vocoders saved exactly the way KAN-TTS and ModelScope lay them out.

No trained KAN-TTS checkpoint can be downloaded here, so tests, demos and CI build these:
a generator from a shipped config YAML, weight-normed with torch's own parametrization,
saved as ``{"model": {"generator": ...}, "steps": N}`` in ``ckpt/checkpoint_N.pth`` with the
config one level up, optionally inside a ModelScope model directory
(``voices/voices.json`` + ``voices/<voice>/voc/``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from . import weightnorm
from .kantts import KanttsConfig, KanttsGenerator

WEIGHT_FORMS = ("legacy", "parametrized", "fused")


def kantts_configs_dir() -> Path:
    """The KAN-TTS vocoder configs shipped in ``shared/reference/kantts-configs``."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        for candidate in (parent / "shared" / "reference" / "kantts-configs",
                          parent.parent / "shared" / "reference" / "kantts-configs"):
            if candidate.is_dir():
                return candidate
    packaged = here.parent / "kantts_configs"
    if packaged.is_dir():
        return packaged
    raise FileNotFoundError("kantts-configs folder not found")


def generator_params(config_yaml: Path) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(config_yaml.read_text())["Model"]["Generator"]["params"])


def random_weight_norm_generator(params: Mapping[str, Any], seed: int = 0,
                                 scale: float = 1.0) -> KanttsGenerator:
    """A weight-normed generator with seeded random weights (``scale`` shrinks the magnitudes)."""
    torch.manual_seed(seed)
    module = KanttsGenerator(KanttsConfig.from_params(dict(params)))
    weightnorm.apply_weight_norm(module)
    if scale != 1.0:
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith("original0"):
                    p.mul_(scale)
    return module.eval()


def state_dict_in_form(module: torch.nn.Module, form: str) -> dict[str, torch.Tensor]:
    """The module's weights as KAN-TTS (legacy), the parametrized API, or fused weights."""
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if form == "legacy":
        return weightnorm.to_legacy(sd)
    if form == "parametrized":
        return sd
    if form == "fused":
        return weightnorm.fold_state_dict(sd)
    raise ValueError(f"unknown weight form {form!r}")


def save_kantts_checkpoint(module: torch.nn.Module, config_yaml: Path, stage_dir: Path,
                           steps: int = 1000, form: str = "legacy") -> Path:
    """Write ``stage_dir/config.yaml`` and ``stage_dir/ckpt/checkpoint_<steps>.pth``."""
    (stage_dir / "ckpt").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_yaml, stage_dir / "config.yaml")
    path = stage_dir / "ckpt" / f"checkpoint_{steps}.pth"
    torch.save({"model": {"generator": state_dict_in_form(module, form), "discriminator": {}},
                "optimizer": {}, "scheduler": {}, "steps": steps}, path)
    return path


def random_kantts_checkpoint(config_name: str, stage_dir: Path, seed: int = 3, scale: float = 0.5) -> Path:
    """A KAN-TTS checkpoint of the shipped config ``config_name`` (e.g. ``hifigan_v1_24k``) with
    random weights, written to ``stage_dir``; ``scale`` on the weight-norm magnitudes (0.5 gives
    speech-level output). The parity-table scripts measure every config on these."""
    cfg = kantts_configs_dir() / f"{config_name}.yaml"
    if not cfg.is_file():
        known = ", ".join(sorted(p.stem for p in kantts_configs_dir().glob("*.yaml")))
        raise ValueError(f"no KAN-TTS config {config_name!r} (known: {known})")
    module = random_weight_norm_generator(generator_params(cfg), seed=seed, scale=scale)
    save_kantts_checkpoint(module, cfg, stage_dir)
    return stage_dir


def make_modelscope_model_dir(root: Path, voices: Iterable[tuple[str, Path, int]],
                              form: str = "legacy", scale: float = 1.0) -> Path:
    """A ModelScope Sambert-HifiGan model directory with one random vocoder per voice.

    ``voices`` yields (voice name, KAN-TTS config yaml, seed). Only the vocoder part is
    real; ``am/`` and ``audio_config.yaml`` are left out (hifitrt does not read them).
    """
    names = []
    for name, config_yaml, seed in voices:
        module = random_weight_norm_generator(generator_params(config_yaml), seed=seed, scale=scale)
        save_kantts_checkpoint(module, config_yaml, root / "voices" / name / "voc", form=form)
        names.append(name)
    (root / "voices" / "voices.json").write_text(json.dumps({"voices": names}))
    (root / "configuration.json").write_text(json.dumps(
        {"framework": "pytorch", "task": "text-to-speech", "model": {"type": "sambert-hifigan"}}
    ))
    return root
