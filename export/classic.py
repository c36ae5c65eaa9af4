"""Classic HiFi-GAN generator in the original jik876 layout (V1, V2, V3), state-dict compatible.

Keys: ``conv_pre``, ``ups.{i}``, ``resblocks.{k}.convs1/convs2.{m}`` (ResBlock1) or
``resblocks.{k}.convs.{m}`` (ResBlock2), ``conv_post``. Configured by the repository's
``config.json``. Two optional fields extend that config for vocoders whose transposed convs do
not use the jik876 padding ``(k - u) // 2``: ``upsample_paddings`` and
``upsample_output_paddings`` (the built-in default vocoder needs them; they are read off its
TorchScript graph).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SLOPE = 0.1
TAIL_SLOPE = 0.01  # jik876 calls F.leaky_relu(x) with the default slope before conv_post


@dataclass(frozen=True)
class ClassicConfig:
    """The generator fields of a jik876 ``config.json``."""

    resblock: str = "1"
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    num_mels: int = 80
    sampling_rate: int = 22050
    upsample_paddings: tuple[int, ...] | None = None
    upsample_output_paddings: tuple[int, ...] | None = None

    @property
    def hop(self) -> int:
        return int(math.prod(self.upsample_rates))

    def paddings(self) -> list[tuple[int, int]]:
        pads = self.upsample_paddings or tuple(
            (k - u) // 2 for k, u in zip(self.upsample_kernel_sizes, self.upsample_rates)
        )
        outs = self.upsample_output_paddings or (0,) * len(self.upsample_rates)
        return list(zip(pads, outs))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ClassicConfig":
        try:
            cfg = cls(
                resblock=str(data["resblock"]),
                upsample_rates=tuple(int(v) for v in data["upsample_rates"]),
                upsample_kernel_sizes=tuple(int(v) for v in data["upsample_kernel_sizes"]),
                upsample_initial_channel=int(data["upsample_initial_channel"]),
                resblock_kernel_sizes=tuple(int(v) for v in data["resblock_kernel_sizes"]),
                resblock_dilation_sizes=tuple(
                    tuple(int(d) for d in ds) for ds in data["resblock_dilation_sizes"]
                ),
                num_mels=int(data.get("num_mels", 80)),
                sampling_rate=int(data.get("sampling_rate", 22050)),
                upsample_paddings=_opt_tuple(data.get("upsample_paddings")),
                upsample_output_paddings=_opt_tuple(data.get("upsample_output_paddings")),
            )
        except KeyError as exc:
            raise ValueError(f"config.json lacks the HiFi-GAN generator field {exc.args[0]!r}") from None
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from .kantts import MAX_CHANNELS, MAX_HOP, MAX_KERNEL, MAX_STAGES, _check_range

        _check_range("num_mels", self.num_mels, MAX_CHANNELS)
        _check_range("upsample_initial_channel", self.upsample_initial_channel, MAX_CHANNELS)
        if not 1 <= len(self.upsample_rates) <= MAX_STAGES:
            raise ValueError(f"upsample_rates must list 1 to {MAX_STAGES} stages, not {len(self.upsample_rates)}")
        for name, values in (("upsample_rates", self.upsample_rates),
                             ("upsample_kernel_sizes", self.upsample_kernel_sizes),
                             ("resblock_kernel_sizes", self.resblock_kernel_sizes)):
            for v in values:
                _check_range(name, v, MAX_KERNEL)
        if not self.resblock_kernel_sizes or not all(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and every resblock_dilation_sizes entry must be non-empty")
        for dilations in self.resblock_dilation_sizes:
            for d in dilations:
                _check_range("resblock_dilation_sizes", d, MAX_KERNEL)
        _check_range("hop (product of upsample_rates)", self.hop, MAX_HOP)
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ValueError("upsample_initial_channel must be divisible by 2**number_of_upsamples")
        for name, extra in (("upsample_paddings", self.upsample_paddings),
                            ("upsample_output_paddings", self.upsample_output_paddings)):
            if extra is not None and (len(extra) != len(self.upsample_rates) or any(v < 0 for v in extra)):
                raise ValueError(f"{name} needs one non-negative value per upsample stage")
        if self.resblock not in ("1", "2"):
            raise ValueError(f"resblock must be '1' or '2', not {self.resblock!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")


def _opt_tuple(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


def _pad(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=_pad(kernel, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=_pad(kernel, 1)) for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = c2(F.leaky_relu(c1(F.leaky_relu(x, SLOPE)), SLOPE)) + x
        return x

    def span(self) -> int:
        return sum(c.dilation[0] * (c.kernel_size[0] - 1) for c in [*self.convs1, *self.convs2])


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=_pad(kernel, d))
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = c(F.leaky_relu(x, SLOPE)) + x
        return x

    def span(self) -> int:
        return sum(c.dilation[0] * (c.kernel_size[0] - 1) for c in self.convs)


class ClassicGenerator(nn.Module):
    """jik876 HiFi-GAN generator: mel [B, num_mels, T] -> wav [B, 1, T*hop]."""

    def __init__(self, config: ClassicConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        ch = config.upsample_initial_channel
        self.num_kernels = len(config.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(config.num_mels, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        for i, ((u, k), (pad, out_pad)) in enumerate(
            zip(zip(config.upsample_rates, config.upsample_kernel_sizes), config.paddings())
        ):
            self.ups.append(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u,
                                               padding=pad, output_padding=out_pad))
        block = ResBlock1 if config.resblock == "1" else ResBlock2
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            c = ch // 2 ** (i + 1)
            for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(block(c, k, d))
        self.conv_post = nn.Conv1d(ch // 2 ** len(self.ups), 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, SLOPE))
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = F.leaky_relu(x, TAIL_SLOPE)
        return torch.tanh(self.conv_post(x))

    def context_frames(self) -> tuple[int, int]:
        """Mel frames of symmetric context that influence one output frame (non-causal)."""
        total = 6.0  # conv_pre, kernel 7
        rate = 1
        for i, (u, k) in enumerate(zip(self.config.upsample_rates, self.config.upsample_kernel_sizes)):
            total += k / u / rate
            rate *= u
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            total += max(b.span() for b in blocks) / rate
        total += 6.0 / rate  # conv_post
        half = int(math.ceil(total / 2)) + 1
        return half, half


# Published jik876 generator configs, for users who pass only a checkpoint and a version name.
PRESETS: dict[str, dict[str, Any]] = {
    "v1": {"resblock": "1", "upsample_rates": [8, 8, 2, 2],
           "upsample_kernel_sizes": [16, 16, 4, 4], "upsample_initial_channel": 512,
           "resblock_kernel_sizes": [3, 7, 11],
           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
           "num_mels": 80, "sampling_rate": 22050},
    "v2": {"resblock": "1", "upsample_rates": [8, 8, 2, 2],
           "upsample_kernel_sizes": [16, 16, 4, 4], "upsample_initial_channel": 128,
           "resblock_kernel_sizes": [3, 7, 11],
           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
           "num_mels": 80, "sampling_rate": 22050},
    "v3": {"resblock": "2", "upsample_rates": [8, 8, 4],
           "upsample_kernel_sizes": [16, 16, 8], "upsample_initial_channel": 256,
           "resblock_kernel_sizes": [3, 5, 7],
           "resblock_dilation_sizes": [[1, 2], [2, 6], [3, 12]],
           "num_mels": 80, "sampling_rate": 22050},
}
