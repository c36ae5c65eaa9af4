"""Every KAN-TTS config and the classic layouts: keys, weight forms, folding, output math."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from hifitrt.export import weightnorm
from hifitrt.export.classic import PRESETS, ClassicConfig, ClassicGenerator
from hifitrt.export.load import load_vocoder
from hifitrt.export.kantts_random import (
    WEIGHT_FORMS, generator_params, kantts_configs_dir, random_weight_norm_generator,
    save_kantts_checkpoint,
)

CONFIGS = sorted(kantts_configs_dir().glob("*.yaml"))
REFERENCE = kantts_configs_dir().parent


def _summary() -> dict[str, dict[str, int]]:
    rows = {}
    for name in ("kantts-generator-keys-16k.txt", "kantts-generator-keys-24k.txt"):
        for line in (REFERENCE / name).read_text().splitlines():
            m = re.match(r"(\S+): tensors=(\d+) hop=(\d+) final_ch=(\d+) params_fused=(\d+) params_wn=(\d+)", line)
            if m:
                rows[m.group(1)] = dict(zip(("tensors", "hop", "final_ch", "fused", "wn"), map(int, m.groups()[1:])))
    return rows


def _key_list(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (REFERENCE / name).read_text().splitlines():
        m = re.match(r"^([\w.]+) \(([\d, ]*)\)$", line)
        if m:
            keys[m.group(1)] = tuple(int(v) for v in m.group(2).split(",") if v.strip())
    return keys


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_state_dict_keys_and_sizes_match_kantts(config: Path) -> None:
    module = random_weight_norm_generator(generator_params(config))
    legacy = weightnorm.to_legacy(module.state_dict())
    summary = _summary().get(config.stem)
    if summary is None:  # the global-norm NSF variant has the same generator as its sibling
        summary = _summary()["hifigan_noncausal_nsf_v1_16k"]
    assert len(legacy) == summary["tensors"]
    assert sum(v.numel() for v in legacy.values()) == summary["wn"]
    fused = weightnorm.fold_state_dict(legacy)
    assert sum(v.numel() for v in fused.values()) == summary["fused"]
    assert module.config.hop == summary["hop"]


@pytest.mark.parametrize("stem,listing", [("hifigan_v1_16k", "kantts-generator-keys-16k.txt"),
                                          ("hifigan_v1_24k", "kantts-generator-keys-24k.txt")])
def test_keys_equal_reference_listing(stem: str, listing: str) -> None:
    module = random_weight_norm_generator(generator_params(kantts_configs_dir() / f"{stem}.yaml"))
    ours = {k: tuple(v.shape) for k, v in weightnorm.to_legacy(module.state_dict()).items()}
    assert ours == _key_list(listing)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("form", WEIGHT_FORMS)
def test_checkpoint_loads_and_matches_weight_normed_forward(config: Path, form: str, tmp_path: Path) -> None:
    reference = random_weight_norm_generator(generator_params(config), seed=3, scale=0.5)
    save_kantts_checkpoint(reference, config, tmp_path / "voc", steps=20000, form=form)
    vocoder = load_vocoder(tmp_path / "voc")
    spec = vocoder.spec
    in_ch = spec.in_channels
    torch.manual_seed(1)
    mel = torch.randn(2, in_ch, 23)
    if spec.nsf:  # pitch in Hz and a 0/1 voicing flag as the last two rows
        mel[:, -2] = 120 + 80 * torch.rand(2, 23)
        mel[:, -1] = (torch.rand(2, 23) > 0.3).float()
    with torch.no_grad():
        expected = reference(mel)
        got = vocoder.module(mel)
    assert got.shape == (2, 1, 23 * spec.hop)
    assert torch.max(torch.abs(got - expected)).item() <= 1e-5
    assert spec.causal == ("noncausal" not in config.stem)


def test_highest_checkpoint_step_wins(tmp_path: Path) -> None:
    config = kantts_configs_dir() / "hifigan_v1_8k.yaml"
    old = random_weight_norm_generator(generator_params(config), seed=1)
    new = random_weight_norm_generator(generator_params(config), seed=2)
    save_kantts_checkpoint(old, config, tmp_path / "voc", steps=900000)
    save_kantts_checkpoint(new, config, tmp_path / "voc", steps=1000000)
    loaded = load_vocoder(tmp_path / "voc" / "ckpt")
    fused_new = weightnorm.fold_state_dict(new.state_dict())
    assert torch.equal(loaded.module.state_dict()["conv_pre.conv1d.weight"], fused_new["conv_pre.conv1d.weight"])


def test_causal_model_output_depends_only_on_past() -> None:
    module = random_weight_norm_generator(generator_params(kantts_configs_dir() / "hifigan_v1_16k.yaml"))
    mel = torch.randn(1, 80, 40)
    changed = mel.clone()
    changed[:, :, 30:] += 1.0
    with torch.no_grad():
        a, b = module(mel), module(changed)
    hop = module.config.hop
    assert torch.equal(a[..., : 30 * hop], b[..., : 30 * hop])
    assert not torch.equal(a[..., 30 * hop:], b[..., 30 * hop:])


def test_nsf_stochastic_mode_differs_between_calls_deterministic_does_not() -> None:
    module = random_weight_norm_generator(generator_params(kantts_configs_dir() / "hifigan_v1_nsf_24k.yaml"))
    mel = torch.randn(1, 82, 12)
    mel[:, -2] = 200.0
    mel[:, -1] = 1.0
    with torch.no_grad():
        assert torch.equal(module(mel), module(mel))
        module.set_deterministic(False)
        assert not torch.equal(module(mel), module(mel))


@pytest.mark.parametrize("version", sorted(PRESETS))
def test_classic_presets_fold_and_keep_length(version: str) -> None:
    cfg = ClassicConfig.from_json(PRESETS[version])
    module = ClassicGenerator(cfg)
    weightnorm.apply_weight_norm(module)
    fused = ClassicGenerator(cfg)
    fused.load_state_dict(weightnorm.fold_state_dict(module.state_dict()))
    mel = torch.randn(1, 80, 17)
    with torch.no_grad():
        a, b = module(mel), fused(mel)
    assert a.shape == (1, 1, 17 * cfg.hop)
    assert torch.max(torch.abs(a - b)).item() <= 1e-5
    keys = set(fused.state_dict())
    assert ("resblocks.0.convs1.0.weight" in keys) == (cfg.resblock == "1")
    assert ("resblocks.0.convs.0.weight" in keys) == (cfg.resblock == "2")


def test_context_frames_cover_measured_receptive_field() -> None:
    """Perturbing a frame farther away than the declared context leaves the output unchanged."""
    for config in ("hifigan_v1_16k.yaml", "hifigan_noncausal_v1_16k.yaml"):
        module = random_weight_norm_generator(generator_params(kantts_configs_dir() / config))
        left, right = module.context_frames()
        mel = torch.randn(1, 80, 160)
        centre = 80
        hop = module.config.hop
        for offset in (-left - 1, right + 1):
            if offset > 0 and right == 0:
                continue
            changed = mel.clone()
            changed[:, :, centre + offset] += 3.0
            with torch.no_grad():
                a, b = module(mel), module(changed)
            seg = slice(centre * hop, (centre + 1) * hop)
            assert torch.equal(a[..., seg], b[..., seg]), (config, offset)
