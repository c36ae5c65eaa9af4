"""Run ModelScope's REAL Sambert-HifiGan code (Voice, SambertHifigan) without kantts/ttsfrd.

kantts and ttsfrd come only from ModelScope's own package index, so they cannot be installed
here. ``modelscope/models/audio/tts/voice.py`` imports these kantts names at module level::

    kantts.datasets.dataset: get_am_datasets, get_voc_datasets      (training only)
    kantts.models: model_builder                                     (load_am)
    kantts.train.loss: criterion_builder                             (training only)
    kantts.train.trainer: GAN_Trainer, Sambert_Trainer, distributed_init (training / CUDA)
    kantts.utils.ling_unit.ling_unit: KanTtsLinguisticUnit           (Voice.__init__)

and ``load_vocoder`` imports ``kantts.models.hifigan.hifigan.Generator`` when it runs.
``sambert_hifi.py`` imports ttsfrd only inside ``SambertHifigan.__init__`` (never called here).
So the stand-in is: placeholder objects for the training-only names, and a ``Generator`` that
is hifitrt's own KAN-TTS generator built from the config params (weight-normed so ModelScope's
``load_state_dict`` of the legacy ``weight_g``/``weight_v`` checkpoint and its
``remove_weight_norm()`` call work).

The acoustic model is replaced per instance (``load_am`` sets a stand-in ``am`` and
``ling_unit``) so ModelScope's real ``am_forward`` returns a chosen mel; everything after that
(``Voice.forward`` lazy loading, ``load_vocoder``, ``vocoder_forward``, ``SambertHifigan.forward``
int16 conversion and WAV packing) is ModelScope's code.
"""
from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from typing import Mapping

import numpy as np
import torch


def _placeholder(name: str):
    def fail(*args, **kwargs):
        raise NotImplementedError(f"kantts stand-in: {name} is not available in tests")

    fail.__name__ = name
    return fail


class _Generator(torch.nn.Module):
    """kantts.models.hifigan.hifigan.Generator stand-in = hifitrt's KanttsGenerator."""

    def __new__(cls, **params):
        from hifitrt.export import weightnorm
        from hifitrt.export.kantts import KanttsConfig, KanttsGenerator

        module = KanttsGenerator(KanttsConfig.from_params(dict(params)))
        weightnorm.apply_weight_norm(module)
        original_load = module.load_state_dict

        def load_state_dict(state, strict=True):
            return original_load(weightnorm.to_parametrized(state), strict=strict)

        def remove_weight_norm():
            for sub in module.modules():
                if hasattr(sub, "parametrizations") and "weight" in sub.parametrizations:
                    torch.nn.utils.parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)

        module.load_state_dict = load_state_dict
        module.remove_weight_norm = remove_weight_norm
        return module


def install_kantts_stub() -> None:
    """Put the smallest import-time ``kantts`` stand-in into ``sys.modules`` (idempotent)."""
    if "kantts" in sys.modules and getattr(sys.modules["kantts"], "_hifitrt_stub", False):
        return
    names = {
        "kantts": {},
        "kantts.datasets": {},
        "kantts.datasets.dataset": {"get_am_datasets": None, "get_voc_datasets": None},
        "kantts.models": {"model_builder": None},
        "kantts.models.hifigan": {},
        "kantts.models.hifigan.hifigan": {"Generator": _Generator},
        "kantts.train": {},
        "kantts.train.loss": {"criterion_builder": None},
        "kantts.train.trainer": {"GAN_Trainer": None, "Sambert_Trainer": None, "distributed_init": None},
        "kantts.utils": {},
        "kantts.utils.ling_unit": {},
        "kantts.utils.ling_unit.ling_unit": {"KanTtsLinguisticUnit": None},
    }
    for mod_name, attrs in names.items():
        module = types.ModuleType(mod_name)
        module.__path__ = []  # a package, so submodules import
        module._hifitrt_stub = True
        for attr, value in attrs.items():
            setattr(module, attr, value if value is not None else _placeholder(attr))
        sys.modules[mod_name] = module
    for mod_name in names:
        parent, _, child = mod_name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[mod_name])


def modelscope_classes():
    """ModelScope's real (Voice, SambertHifigan, binarize)."""
    install_kantts_stub()
    from modelscope.models.audio.tts.sambert_hifi import SambertHifigan
    from modelscope.models.audio.tts.voice import Voice, binarize

    return Voice, SambertHifigan, binarize


class _LingUnit:
    """Encodes a symbol string "name" as index arrays ModelScope's am_forward stacks."""

    def __init__(self, mels: Mapping[str, np.ndarray]) -> None:
        self.index = {name: i for i, name in enumerate(mels)}

    def using_byte(self) -> bool:
        return False

    def encode_symbol_sequence(self, symbols: str):
        arr = np.full(3, self.index[symbols], dtype=np.int64)
        return [arr] * 6


class _AcousticModel:
    """Returns the chosen mel (T, C) as postnet output, like KanTtsSAMBERT's result dict."""

    def __init__(self, mels: Mapping[str, np.ndarray]) -> None:
        self.mels = list(mels.values())

    def __call__(self, ling, emo, spk, lengths):
        mel = torch.from_numpy(self.mels[int(ling[0, 0, 0])].T.copy())  # (T, C)
        return {"postnet_outputs": mel[None], "LR_length_rounded": torch.tensor([mel.shape[0]])}


def make_voice(name: str, voice_dir: Path, mels: Mapping[str, np.ndarray], nsf: bool = False):
    """A real ``Voice`` made with ``__new__`` for ``voice_dir`` (``voc/config.yaml``, ``voc/ckpt``).

    ``mels``: symbol string -> mel [C, T] the acoustic model returns. For NSF voices the mel's
    pitch row is normalised to [0, 1] (ModelScope's "global" denormalisation maps it to Hz).
    """
    import yaml

    Voice, _, _ = modelscope_classes()
    voice = Voice.__new__(Voice)
    voice.voice_name = name
    voice.voice_path = str(voice_dir)
    voice.device = torch.device("cpu")
    voice.distributed = False
    voice.voc_config_path = str(voice_dir / "voc" / "config.yaml")
    voice.voc_config = yaml.safe_load(Path(voice.voc_config_path).read_text())
    voice.voc_ckpts = voice.scan_ckpt(str(voice_dir / "voc" / "ckpt"))
    voice.model_loaded = False
    voice.lock = threading.Lock()
    voice.se_enable = False
    voice.nsf_enable = nsf
    if nsf:
        voice.nsf_norm_type = "global"
        voice.f0_feature = [730.0, 30.0]

    def load_am():  # stand-in acoustic model; am_forward itself is ModelScope's
        voice.ling_unit = _LingUnit(mels)
        voice.am = _AcousticModel(mels)

    voice.load_am = load_am
    return voice


def make_model(voices: Mapping[str, object], sample_rate: int):
    """A real ``SambertHifigan`` made with ``__new__`` holding ``voices``; its frontend stand-in
    turns "a|b" into two sentences with symbols a and b (ttsfrd's tab-separated lines)."""
    _, SambertHifigan, _ = modelscope_classes()
    model = SambertHifigan.__new__(SambertHifigan)
    model.voices = dict(voices)
    model.voice_cfg = {"voices": list(voices)}
    model.default_voice_name = next(iter(voices))
    model.sample_rate = sample_rate

    class _Frontend:
        def gen_tacotron_symbols(self, text: str) -> str:
            return "".join(f"{i}\t{part}\n" for i, part in enumerate(text.split("|")))

    model.frontend = _Frontend()
    return model
