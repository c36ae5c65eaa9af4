"""Drop-in acceleration of ModelScope's Sambert-HifiGan pipeline.

ModelScope runs the vocoder in ``Voice.vocoder_forward(melspec)``: ``melspec`` (T, C) float32 on
the CPU -> 1-D float32 numpy, binarising the NSF voiced flag at 0.6 first. It loads the torch
vocoder lazily (``Voice.forward`` calls ``load_vocoder`` under ``Voice.lock`` on first use) and
calls ``vocoder_forward`` OUTSIDE that lock, so concurrent requests reach the vocoder at once.

``accelerate`` therefore hooks each ``Voice`` instance (not the class, so other models in the
process stay untouched):

* ``vocoder_forward`` is replaced right away by a function with the same contract that calls a
  :class:`VocoderEngine` (thread-safe);
* ``load_vocoder`` is wrapped so that when ModelScope later loads its torch vocoder the engine's
  ``vocoder_forward`` is (re)installed, whatever the loader did.

Attribute names: modelscope >= 1.4 uses ``model.voices``, ``Voice.voc_model``,
``Voice.vocoder_forward``, ``Voice.load_vocoder``; 1.2-1.3 used the name-mangled
``_SambertHifigan__voices``, ``_Voice__voc_model``, ``_Voice__vocoder_forward``,
``_Voice__load_vocoder``. Both are handled.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import numpy as np

from ..errors import EngineError, HifitrtError
from .engine import VocoderEngine

log = logging.getLogger(__name__)

__all__ = ["accelerate", "pipeline", "UV_THRESHOLD"]

UV_THRESHOLD = 0.6
"""ModelScope's ``binarize``: uv < 0.6 -> 0, else 1 (NaN counts as voiced, as there)."""

EngineLike = Union[str, "os.PathLike[str]", VocoderEngine]

_VOICES_ATTRS = ("voices", "_SambertHifigan__voices")
_FORWARD_ATTRS = ("vocoder_forward", "_Voice__vocoder_forward")
_LOAD_ATTRS = ("load_vocoder", "_Voice__load_vocoder")


def accelerate(pipeline_or_model: Any, engine: EngineLike | Mapping[str, EngineLike]) -> Any:
    """Swap the vocoder of every voice (or of the voices named in ``engine``) for an engine.

    ``engine`` is an engine directory, a loaded :class:`VocoderEngine`, or {voice: either}.
    Returns ``pipeline_or_model`` (changed in place). Raises :class:`HifitrtError` when the
    object is not a Sambert-HifiGan model or an engine does not fit a voice.
    """
    model = _sambert_model(pipeline_or_model)
    voices = _voices_of(model)
    if isinstance(engine, Mapping):
        unknown = sorted(set(engine) - set(voices))
        if unknown:
            raise HifitrtError(f"no voice named {', '.join(unknown)} in this model (voices: {', '.join(voices)})")
        wanted = dict(engine)
    else:
        wanted = {name: engine for name in voices}
    # All or nothing: load and check every engine before patching any voice, so a voice that
    # does not fit leaves the whole pipeline as it was.
    loaded: dict[str, VocoderEngine] = {}
    chosen = {name: _load_engine(target, loaded) for name, target in wanted.items()}
    for name, eng in chosen.items():
        _check_fits(name, voices[name], eng, getattr(model, "sample_rate", None))
    for name, eng in chosen.items():
        _install(voices[name], eng)
        log.info("voice %s now vocodes with %r", name, eng)
    return pipeline_or_model


def pipeline(model_id_or_dir: str | os.PathLike[str], voice: str | None = None,
             engine: EngineLike | Mapping[str, EngineLike] | None = None, **kwargs: Any) -> Any:
    """ModelScope's text-to-speech pipeline with its vocoder(s) replaced by ``engine``.

    ``voice`` limits acceleration to that voice when ``engine`` is a single engine.
    """
    if engine is None:
        raise HifitrtError("pipeline() needs engine=DIR (build one with `tts-build-engine build`)")
    if sys.version_info >= (3, 11):
        raise HifitrtError(
            f"ModelScope's Sambert-HifiGan pipeline refuses Python {sys.version_info.major}."
            f"{sys.version_info.minor} ('Python version needs to be <= 3.10'); run it on Python 3.8-3.10"
        )
    try:
        from modelscope.pipelines import pipeline as ms_pipeline
        from modelscope.utils.constant import Tasks

        pipe = ms_pipeline(task=Tasks.text_to_speech, model=os.fspath(model_id_or_dir), **kwargs)
    except Exception as exc:  # ModelScope re-wraps errors raised while building the model
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Python version needs to be" in text:
            raise HifitrtError("ModelScope's Sambert-HifiGan pipeline needs Python <= 3.10; run it on 3.8-3.10") from exc
        if isinstance(exc, ImportError) or "kantts" in text or "ttsfrd" in text:
            raise HifitrtError(
                f"cannot build ModelScope's TTS pipeline: {text}; install kantts and ttsfrd from ModelScope's "
                "package index (pip install -f https://modelscope.oss-cn-beijing.aliyuncs.com/releases/repo.html)"
            ) from exc
        raise HifitrtError(f"cannot build ModelScope's TTS pipeline for {model_id_or_dir}: {text}") from exc
    if voice is not None and not isinstance(engine, Mapping):
        engine = {voice: engine}
    return accelerate(pipe, engine)


# ---------------------------------------------------------------------------------------------


def _sambert_model(obj: Any) -> Any:
    for candidate in (obj, getattr(obj, "model", None)):
        if candidate is not None and any(_has_attr(candidate, a) for a in _VOICES_ATTRS):
            return candidate
    raise HifitrtError(
        f"{type(obj).__name__} is not a ModelScope Sambert-HifiGan pipeline or SambertHifigan model "
        "(no voices found); pass pipeline(task=Tasks.text_to_speech, model=...) or its .model"
    )


def _has_attr(obj: Any, name: str) -> bool:
    try:
        return name in vars(obj) or hasattr(type(obj), name)
    except TypeError:
        return hasattr(obj, name)


def _voices_of(model: Any) -> dict[str, Any]:
    for attr in _VOICES_ATTRS:
        voices = getattr(model, attr, None)
        if isinstance(voices, Mapping) and voices:
            return dict(voices)
    raise HifitrtError(f"{type(model).__name__} has no voices loaded; check the model directory's voices/voices.json")


def _load_engine(target: EngineLike, cache: dict[str, VocoderEngine]) -> VocoderEngine:
    if isinstance(target, VocoderEngine):
        return target
    key = os.fspath(Path(os.fspath(target)).resolve())
    if key not in cache:
        cache[key] = VocoderEngine.load(key)
    return cache[key]


def _voice_vocoder_facts(voice: Any) -> tuple[int | None, int | None, bool | None]:
    """(input channels, hop, nsf) from the voice's vocoder config, as ModelScope will build it."""
    config = getattr(voice, "voc_config", None) or getattr(voice, "_Voice__voc_config", None)
    try:
        params = config["Model"]["Generator"]["params"]
    except (TypeError, KeyError):
        model = _torch_vocoder(voice)
        if model is None:
            return None, None, None
        nsf = bool(getattr(model, "nsf_enable", False))
        conv = getattr(getattr(model, "conv_pre", None), "conv1d", None) or getattr(model, "conv_pre", None)
        channels = getattr(conv, "in_channels", None)
        return (channels + 2 if channels and nsf else channels), None, nsf
    nsf = params.get("nsf_params") is not None
    channels = int(params.get("in_channels", 80)) + (2 if nsf else 0)
    scales = params.get("upsample_scales")
    hop = int(math.prod(scales)) if scales else None
    return channels, hop, nsf


def _torch_vocoder(voice: Any) -> Any:
    for attr in ("voc_model", "_Voice__voc_model"):
        model = vars(voice).get(attr) if hasattr(voice, "__dict__") else None
        if model is not None:
            return model
    return None


def _check_fits(name: str, voice: Any, eng: VocoderEngine, model_rate: Any) -> None:
    channels, hop, nsf = _voice_vocoder_facts(voice)
    spec = eng.spec
    problems = []
    if channels is not None and channels != spec.in_channels:
        problems.append(f"voice needs {channels} input channels, engine takes {spec.in_channels}")
    if hop is not None and hop != spec.hop:
        problems.append(f"voice hop {hop}, engine hop {spec.hop}")
    if nsf is not None and nsf != bool(spec.nsf):
        problems.append("voice vocoder is " + ("NSF" if nsf else "not NSF") + ", engine is " + ("NSF" if spec.nsf else "not NSF"))
    if model_rate is not None and int(model_rate) != int(spec.sample_rate):
        problems.append(f"pipeline writes {int(model_rate)} Hz, engine makes {spec.sample_rate} Hz")
    if problems:
        raise EngineError(
            f"engine does not fit voice {name!r}: {'; '.join(problems)}; build the engine from this voice "
            f"(tts-build-engine build MODEL_DIR --voice {name})"
        )


def _make_vocoder_forward(eng: VocoderEngine) -> Callable[[Any], np.ndarray]:
    nsf = bool(eng.spec.nsf)

    def vocoder_forward(melspec: Any) -> np.ndarray:
        """ModelScope's contract: melspec (T, C) float32 -> 1-D float32 numpy samples."""
        if hasattr(melspec, "detach"):
            mel = melspec.detach().to("cpu").float().numpy()
        else:
            mel = np.asarray(melspec, dtype=np.float32)
        mel = np.array(mel.T, dtype=np.float32, order="C")  # (C, T), our own copy
        if nsf:
            mel[-1] = np.where(mel[-1] < UV_THRESHOLD, 0.0, 1.0)
        return np.ascontiguousarray(eng(mel), dtype=np.float32).reshape(-1)

    vocoder_forward.hifitrt_engine = eng  # type: ignore[attr-defined]
    return vocoder_forward


def _install(voice: Any, eng: VocoderEngine) -> None:
    forward = _make_vocoder_forward(eng)
    cls = type(voice)
    forward_attrs = [a for a in _FORWARD_ATTRS if hasattr(cls, a)] or ["vocoder_forward"]
    for attr in forward_attrs:
        setattr(voice, attr, forward)
    for attr in _LOAD_ATTRS:
        if not hasattr(cls, attr):
            continue
        original = getattr(cls, attr).__get__(voice, cls)  # the class's loader, not a previous hook

        def load_then_reinstall(_original: Callable[[], Any] = original) -> Any:
            result = _original()
            for name in forward_attrs:
                setattr(voice, name, forward)
            return result

        load_then_reinstall.hifitrt_engine = eng  # type: ignore[attr-defined]
        setattr(voice, attr, load_then_reinstall)
    voice.hifitrt_engine = eng
