"""KAN-TTS / ModelScope Sambert-HifiGan vocoder generator, state-dict compatible.

Our own implementation of the generator that ModelScope's Sambert-HifiGan voices ship
(`voc/ckpt/checkpoint_*.pth`). Module names mirror the original state-dict keys exactly
(`conv_pre.conv1d`, `transpose_upsamples.{i}.1.deconv`, `repeat_upsamples.{i}.2.conv1d`,
`conv_blocks.{k}.convs1.{m}.conv1d`, `conv_post.conv1d`, and for NSF `source_module.ffn.0`,
`source_downs.{i}.conv1d`), so a checkpoint loads with ``load_state_dict(strict=True)``.

The math follows the original to float rounding: ``sin(x) + x`` before each stage, repeat
(nearest) upsampling plus transposed-conv upsampling, averaged residual blocks, a tail
leaky-ReLU with PyTorch's *default* slope 0.01 (not the 0.1 used elsewhere), ``conv_post``
and ``tanh``. Convolutions are plain ``nn.Conv1d``/``nn.ConvTranspose1d``: weight-normed checkpoints are
folded into plain weights while loading (:mod:`hifitrt.export.weightnorm`), which is what
ModelScope's ``remove_weight_norm()`` does before inference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


# PyTorch's F.leaky_relu default; the KAN-TTS tail uses it (every other activation is 0.1).
TAIL_SLOPE = 0.01


@dataclass(frozen=True)
class KanttsConfig:
    """``Model.Generator.params`` of a KAN-TTS vocoder config (the original key names).

    ``bias`` and ``use_weight_norm`` exist in every shipped YAML but the original ignores
    them (every conv has a bias and is weight-normed); they are accepted and ignored too.
    ``nsf_transpose_branch`` chooses between the two NSF forward passes that exist with
    identical state-dict keys: KAN-TTS since commit 0bcf948 adds the transposed-conv branch
    (True, default); older vendored copies (ModelScope <= 1.9) use ``rep + excitation``.
    """

    in_channels: int = 80
    out_channels: int = 1
    channels: int = 512
    kernel_size: int = 7
    upsample_scales: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernal_sizes: tuple[int, ...] = (16, 16, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    repeat_upsample: bool = True
    causal: bool = True
    nonlinear_activation: str = "LeakyReLU"
    negative_slope: float = 0.1
    nsf_params: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    nsf_transpose_branch: bool = True

    @property
    def hop(self) -> int:
        return int(math.prod(self.upsample_scales))

    @property
    def nsf(self) -> bool:
        return self.nsf_params is not None

    @property
    def n_mels(self) -> int:
        return self.in_channels

    @property
    def input_channels(self) -> int:
        """Channels of the vocoder input: NSF models take pitch (Hz) and uv as 2 extra rows."""
        return self.in_channels + (2 if self.nsf else 0)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "KanttsConfig":
        """Build from a YAML ``Model.Generator.params`` mapping, rejecting unknown keys."""
        known = {
            "in_channels", "out_channels", "channels", "kernel_size", "upsample_scales",
            "upsample_kernal_sizes", "resblock_kernel_sizes", "resblock_dilations",
            "repeat_upsample", "bias", "causal", "nonlinear_activation",
            "nonlinear_activation_params", "use_weight_norm", "nsf_params",
            "nsf_transpose_branch",
        }
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown KAN-TTS generator parameters {unknown}")
        activation = params.get("nonlinear_activation", "LeakyReLU")
        if activation != "LeakyReLU":
            raise ValueError(f"nonlinear_activation {activation!r} is not supported (LeakyReLU only)")
        slope = float((params.get("nonlinear_activation_params") or {}).get("negative_slope", 0.1))
        nsf = params.get("nsf_params")
        return cls(
            in_channels=int(params.get("in_channels", 80)),
            out_channels=int(params.get("out_channels", 1)),
            channels=int(params.get("channels", 512)),
            kernel_size=int(params.get("kernel_size", 7)),
            upsample_scales=tuple(int(v) for v in params.get("upsample_scales", (8, 8, 2, 2))),
            upsample_kernal_sizes=tuple(
                int(v) for v in params.get("upsample_kernal_sizes", (16, 16, 4, 4))
            ),
            resblock_kernel_sizes=tuple(
                int(v) for v in params.get("resblock_kernel_sizes", (3, 7, 11))
            ),
            resblock_dilations=tuple(
                tuple(int(d) for d in ds)
                for ds in params.get("resblock_dilations", ((1, 3, 5),) * 3)
            ),
            repeat_upsample=bool(params.get("repeat_upsample", True)),
            causal=bool(params.get("causal", True)),
            negative_slope=slope,
            nsf_params=dict(nsf) if nsf is not None else None,
            nsf_transpose_branch=bool(params.get("nsf_transpose_branch", True)),
        )

    def validate(self) -> None:
        _check_range("in_channels", self.in_channels, MAX_CHANNELS)
        _check_range("channels", self.channels, MAX_CHANNELS)
        _check_range("kernel_size", self.kernel_size, MAX_KERNEL)
        if not 1 <= len(self.upsample_scales) <= MAX_STAGES:
            raise ValueError(f"upsample_scales must list 1 to {MAX_STAGES} stages, not {len(self.upsample_scales)}")
        for name, values in (("upsample_scales", self.upsample_scales),
                             ("upsample_kernal_sizes", self.upsample_kernal_sizes),
                             ("resblock_kernel_sizes", self.resblock_kernel_sizes)):
            for v in values:
                _check_range(name, v, MAX_KERNEL)
        if not self.resblock_kernel_sizes:
            raise ValueError("resblock_kernel_sizes is empty")
        for dilations in self.resblock_dilations:
            if not dilations:
                raise ValueError("a resblock_dilations entry is empty")
            for d in dilations:
                _check_range("resblock_dilations", d, MAX_KERNEL)
        _check_range("hop (product of upsample_scales)", self.hop, MAX_HOP)
        if self.nsf_params is not None:
            harmonics = self.nsf_params.get("nb_harmonics") if isinstance(self.nsf_params, dict) else None
            if isinstance(harmonics, bool) or not isinstance(harmonics, int) or not 0 <= harmonics <= 64:
                raise ValueError(f"nsf_params.nb_harmonics must be an integer 0..64, not {harmonics!r}")
            rate = self.nsf_params.get("sampling_rate")
            if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
                raise ValueError(f"nsf_params.sampling_rate must be a positive integer, not {rate!r}")
        if self.kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd")
        if len(self.upsample_scales) != len(self.upsample_kernal_sizes):
            raise ValueError("upsample_scales and upsample_kernal_sizes differ in length")
        if len(self.resblock_dilations) != len(self.resblock_kernel_sizes):
            raise ValueError("resblock_dilations and resblock_kernel_sizes differ in length")
        if not self.repeat_upsample:
            raise ValueError("repeat_upsample=False is not supported (no shipped config uses it)")
        if self.out_channels != 1:
            raise ValueError(
                "multi-band generators (out_channels > 1) need PQMF synthesis, which ModelScope "
                "itself does not run; only out_channels=1 is supported"
            )
        if self.channels % (2 ** len(self.upsample_scales)):
            raise ValueError("channels must be divisible by 2**number_of_upsamples")


# Bounds far above every shipped config (512 channels, kernels <= 20, hop <= 600), low enough
# that an absurd config is a one-line error instead of a torch crash or a huge allocation.
MAX_CHANNELS = 4096
MAX_KERNEL = 1024
MAX_STAGES = 8
MAX_HOP = 4096


def _check_range(name: str, value: int, upper: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise ValueError(f"{name} must be an integer from 1 to {upper}, not {value!r}")


class _Conv1d(nn.Module):
    """KAN-TTS ``Conv1d``/``CausalConv1d`` wrapper: the conv lives in ``.conv1d``.

    Causal: left-pad (k-1)*dilation zeros, no padding in the conv, output trimmed to the input
    length (a no-op for stride 1). Non-causal: symmetric ``padding`` inside the conv.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 padding: int = 0, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.left_pad = (kernel - 1) * dilation if causal else 0
        self.conv1d = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation,
                                       padding=0 if causal else padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            length = x.shape[-1]
            return self.conv1d(F.pad(x, (self.left_pad, 0)))[:, :, :length]
        return self.conv1d(x)


class _ConvTranspose1d(nn.Module):
    """KAN-TTS ``ConvTranspose1d``/``CausalConvTranspose1d``: the conv lives in ``.deconv``.

    Causal: padding 0 and the last (k - s) samples dropped, giving exactly T*s samples.
    Non-causal: padding (k-s)//2; the generator trims the result to the repeat branch length.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.trim = kernel - stride
        self.deconv = nn.ConvTranspose1d(
            cin, cout, kernel, stride=stride, padding=0 if causal else (kernel - stride) // 2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.deconv(x)
        if self.causal and self.trim > 0:
            y = y[:, :, : -self.trim]
        return y


class _ResidualBlock(nn.Module):
    """``x = c2(act(c1(act(x)))) + x`` for each dilation; c2 always has dilation 1."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int], slope: float,
                 causal: bool) -> None:
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            _Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2,
                    causal=causal)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            _Conv1d(channels, channels, kernel, dilation=1, padding=(kernel - 1) // 2,
                    causal=causal)
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, self.slope)), self.slope))
            x = xt + x
        return x


def _repeat_samples(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """Nearest upsampling along time (``repeat_interleave``) as unsqueeze/expand/reshape.

    torch's ONNX exporter turns a traced ``repeat_interleave`` into a Reshape with a fixed
    length; expand + reshape keeps the frame axis dynamic.
    """
    b, c, t = x.shape
    return x.unsqueeze(-1).expand(b, c, t, ratio).reshape(b, c, t * ratio)


class SourceModule(nn.Module):
    """NSF harmonic-plus-noise excitation (alpha 0.1, sigma 0.003), output [B, 1, T*hop].

    ``deterministic=True`` (the export and parity mode) sets the random per-harmonic phase
    offsets and the Gaussian noise to zero: voiced samples get ``0.1*sin(theta)``, unvoiced
    samples 0. ``deterministic=False`` draws both on every call exactly as KAN-TTS does, so two
    calls on the same input differ (as they do in ModelScope).
    """

    def __init__(self, nb_harmonics: int, upsample_ratio: int, sampling_rate: int,
                 alpha: float = 0.1, sigma: float = 0.003) -> None:
        super().__init__()
        self.nb_harmonics = nb_harmonics
        self.upsample_ratio = upsample_ratio
        self.sampling_rate = sampling_rate
        self.alpha = alpha
        self.sigma = sigma
        self.deterministic = True
        self.ffn = nn.Sequential(nn.Conv1d(nb_harmonics + 1, 1, 1), nn.Tanh())
        harmonics = torch.arange(1, nb_harmonics + 2, dtype=torch.float32).view(1, -1, 1)
        self.register_buffer("harmonics", harmonics, persistent=False)

    def forward(self, pitch: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        theta = 2 * math.pi * self.phase_cycles(pitch)
        uv_samples = _repeat_samples(uv, self.upsample_ratio)
        if self.deterministic:
            e_voice = self.alpha * torch.sin(theta)
            e_unvoice = torch.zeros_like(e_voice)
        else:
            batch = pitch.shape[0]
            phase = (torch.rand(batch, self.nb_harmonics + 1, 1, device=pitch.device) * 2 - 1) * math.pi
            phase[:, 0, :] = 0
            noise = torch.randn_like(theta) * self.sigma
            e_voice = self.alpha * torch.sin(theta + phase) + noise
            e_unvoice = self.alpha / 3 / self.sigma * noise
        e = e_voice * uv_samples + e_unvoice * (1 - uv_samples)
        return self.ffn(e)

    def phase_cycles(self, pitch: torch.Tensor) -> torch.Tensor:
        """``cumsum(f0_samples * k / sr) mod 1`` per harmonic k, computed frame by frame.

        KAN-TTS accumulates the phase over every sample; in float32 that sum reaches
        thousands of cycles on a long utterance and its rounding (~2e-4 cycles) differs
        between runtimes. Pitch is constant within a frame (nearest upsampling), so the same
        value is the fractional phase at each frame start (a cumsum over frames of fractional
        advances, kept below the frame count) plus a within-frame ramp. Mathematically equal,
        more accurate, and exported with a frame-length cumsum instead of a sample-length one.
        """
        step = pitch * self.harmonics / self.sampling_rate          # cycles per sample [B,H,T]
        advance = torch.remainder(step * self.upsample_ratio, 1.0)  # fractional cycles per frame
        start = torch.remainder(torch.cumsum(advance, dim=-1) - advance, 1.0)
        ramp = torch.arange(1, self.upsample_ratio + 1, dtype=pitch.dtype, device=pitch.device)
        cycles = start.unsqueeze(-1) + step.unsqueeze(-1) * ramp  # [B, H, T, hop]
        b, h, t, r = cycles.shape
        return torch.remainder(cycles.reshape(b, h, t * r), 1.0)


class KanttsGenerator(nn.Module):
    """The KAN-TTS HiFi-GAN generator: mel [B, C, T] -> wav [B, 1, T*hop] in (-1, 1).

    For NSF models C = n_mels + 2: the last two rows are pitch in Hz and the voiced flag
    (0/1; ModelScope binarises it at 0.6 before calling the vocoder).
    """

    def __init__(self, config: KanttsConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.slope = config.negative_slope
        self.nsf_enable = config.nsf
        c, k, causal = config.channels, config.kernel_size, config.causal
        nk = len(config.resblock_kernel_sizes)
        self.num_kernels = nk
        self.conv_pre = _Conv1d(config.in_channels, c, k, padding=(k - 1) // 2, causal=causal)
        self.transpose_upsamples = nn.ModuleList()
        self.repeat_upsamples = nn.ModuleList()
        self.conv_blocks = nn.ModuleList()
        for i, (scale, up_kernel) in enumerate(
            zip(config.upsample_scales, config.upsample_kernal_sizes)
        ):
            cin, cout = c // 2**i, c // 2 ** (i + 1)
            self.transpose_upsamples.append(nn.Sequential(
                nn.LeakyReLU(self.slope),
                _ConvTranspose1d(cin, cout, up_kernel, scale, causal),
            ))
            self.repeat_upsamples.append(nn.Sequential(
                nn.Upsample(scale_factor=scale, mode="nearest"),
                nn.LeakyReLU(self.slope),
                _Conv1d(cin, cout, k, padding=(k - 1) // 2, causal=causal),
            ))
            for rk, dil in zip(config.resblock_kernel_sizes, config.resblock_dilations):
                self.conv_blocks.append(_ResidualBlock(cout, rk, dil, self.slope, causal))
        final = c // 2 ** len(config.upsample_scales)
        self.conv_post = _Conv1d(final, config.out_channels, k, padding=(k - 1) // 2,
                                 causal=causal)
        if self.nsf_enable:
            nsf = config.nsf_params or {}
            self.source_module = SourceModule(
                nb_harmonics=int(nsf["nb_harmonics"]),
                upsample_ratio=config.hop,
                sampling_rate=int(nsf["sampling_rate"]),
            )
            self.source_downs = nn.ModuleList()
            scales = list(config.upsample_scales)
            rates = [1] + scales[::-1][:-1]
            cum = [int(math.prod(rates[: j + 1])) for j in range(len(rates))]
            for i, u in enumerate(cum[::-1]):
                cout = c // 2 ** (i + 1)
                if u == 1:
                    self.source_downs.append(_Conv1d(1, cout, 1))
                else:
                    self.source_downs.append(
                        _Conv1d(1, cout, 2 * u, stride=u, padding=u // 2, causal=causal)
                    )

    @property
    def deterministic(self) -> bool:
        return not self.nsf_enable or self.source_module.deterministic

    def set_deterministic(self, value: bool) -> None:
        """NSF only: zero phase offsets and noise (True) or KAN-TTS's random draws (False)."""
        if self.nsf_enable:
            self.source_module.deterministic = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        excitation = None
        if self.nsf_enable:
            mel, pitch, uv = x[:, :-2, :], x[:, -2:-1, :], x[:, -1:, :]
            excitation = self.source_module(pitch, uv)
        else:
            mel = x
        x = self.conv_pre(mel)
        for i in range(len(self.repeat_upsamples)):
            x = torch.sin(x) + x
            rep = self.repeat_upsamples[i](x)
            if excitation is not None and not self.config.nsf_transpose_branch:
                x = rep + self.source_downs[i](excitation)
            else:
                up = self.transpose_upsamples[i](x)
                x = rep + up[:, :, : rep.shape[-1]]
                if excitation is not None:
                    x = x + self.source_downs[i](excitation)
            xs = self.conv_blocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.conv_blocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = F.leaky_relu(x, TAIL_SLOPE)
        return torch.tanh(self.conv_post(x))

    def context_frames(self) -> tuple[int, int]:
        """Mel frames of (left, right) context that influence one output frame.

        Summed over every conv at its own time resolution and converted to input frames
        (rounded up). Causal models see no right context. Used for chunked streaming: with
        this much context on each side a chunk's output equals the whole utterance's.
        """
        cfg = self.config
        total = 0.0
        rate = 1
        total += (cfg.kernel_size - 1) / rate  # conv_pre
        for scale, up_kernel, in zip(cfg.upsample_scales, cfg.upsample_kernal_sizes):
            # repeat branch conv runs at the upsampled rate; transposed conv spans k/s frames
            total += max((cfg.kernel_size - 1) / (rate * scale), up_kernel / scale / rate)
            rate *= scale
            widest = 0.0
            for rk, dil in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilations):
                widest = max(widest, sum((rk - 1) * d + (rk - 1) for d in dil) / rate)
            total += widest
        total += (cfg.kernel_size - 1) / rate  # conv_post
        frames = int(math.ceil(total)) + 1
        if cfg.causal:
            return frames, 0
        half = int(math.ceil(total / 2)) + 1
        return half, half
