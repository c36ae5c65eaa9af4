"""Weight-norm state dicts in the three forms checkpoints use, folded to plain weights.

Checkpoints reach us as (a) legacy ``weight_g``/``weight_v`` pairs (``torch.nn.utils.
weight_norm``, what KAN-TTS and jik876 save), (b) the parametrized API's
``parametrizations.weight.original0/original1`` or (c) already fused ``.weight``. Inference
needs (c): ``weight = g * v / ||v||`` with the norm over every dim but 0 and no epsilon, the
same arithmetic ``remove_weight_norm`` performs, so the folded module reproduces the
weight-normed one to float rounding.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

_LEGACY = (".weight_g", ".weight_v")
_PARAM = (".parametrizations.weight.original0", ".parametrizations.weight.original1")


def weight_norm_form(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return "legacy", "parametrized" or "fused" (mixed forms are reported as the first seen)."""
    for key in state_dict:
        if key.endswith(_LEGACY):
            return "legacy"
        if key.endswith(_PARAM):
            return "parametrized"
    return "fused"


def fold(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g * v / ||v||`` with the norm over all dims except 0 (torch's weight_norm, dim=0)."""
    dims = tuple(range(1, v.dim()))
    norm = v.norm(2, dim=dims, keepdim=True) if dims else v.abs()
    return g * (v / norm)


def fold_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold every weight-normed pair into ``<prefix>.weight`` (float32); other keys pass through.

    Raises ``KeyError`` naming the prefix when a pair is incomplete.
    """
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state_dict.items():
        for names in (_LEGACY, _PARAM):
            for idx, suffix in enumerate(names):
                if key.endswith(suffix):
                    pairs.setdefault(key[: -len(suffix)], {})[idx] = value
                    break
            else:
                continue
            break
        else:
            out[key] = value
    for prefix, parts in pairs.items():
        if set(parts) != {0, 1}:
            missing = "magnitude (weight_g)" if 0 not in parts else "direction (weight_v)"
            raise KeyError(f"{prefix}: weight-norm {missing} is missing")
        out[prefix + ".weight"] = fold(parts[0].float(), parts[1].float())
    return {k: (v.float() if v.is_floating_point() else v) for k, v in out.items()}


def to_parametrized(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename legacy ``weight_g/_v`` keys to the parametrized API's names (no arithmetic)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(".weight_g"):
            key = key[: -len(".weight_g")] + _PARAM[0]
        elif key.endswith(".weight_v"):
            key = key[: -len(".weight_v")] + _PARAM[1]
        out[key] = value
    return out


def to_legacy(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename parametrized keys to legacy ``weight_g``/``weight_v`` (how KAN-TTS saves them)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(_PARAM[0]):
            key = key[: -len(_PARAM[0])] + ".weight_g"
        elif key.endswith(_PARAM[1]):
            key = key[: -len(_PARAM[1])] + ".weight_v"
        out[key] = value
    return out


def apply_weight_norm(module: nn.Module) -> nn.Module:
    """Parametrize every Conv1d/ConvTranspose1d with torch's own weight norm (dim 0).

    Used to rebuild the *unfolded* network: torch computes the weight from g and v on every
    forward, an independent check of our folding. Also how random test checkpoints are made.
    """
    from torch.nn.utils.parametrizations import weight_norm

    for sub in list(module.modules()):
        if isinstance(sub, (nn.Conv1d, nn.ConvTranspose1d)):
            weight_norm(sub, name="weight", dim=0)
    return module
