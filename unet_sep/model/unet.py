"""A config-driven 2-D U-Net over magnitude spectrograms (Jansson et al. 2017; Spleeter's ``apply_unet``).

Tensors are ``[batch, audio channels, time frames, frequency bins]``. Padding follows TensorFlow's "same"
rule exactly (pad ``total // 2`` before and the rest after; transposed convolutions cropped the same way),
so weights trained in Spleeter give Spleeter's output. Any time or frequency size works; odd sizes are
handled by cropping each decoder output to its skip connection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unet_sep.config import UNetConfig


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one axis of a strided convolution."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def make_activation(name: str) -> nn.Module:
    """The activations Spleeter's configs name, with Keras' defaults."""
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "relu":
        return nn.ReLU()
    if name == "elu":
        return nn.ELU(alpha=1.0)
    raise ValueError(f"unknown activation {name!r}")


class EncoderBlock(nn.Module):
    """Strided convolution; BatchNorm and activation unless it is the bottleneck."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, bottleneck: bool) -> None:
        super().__init__()
        self.kernel_size = config.kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels, config.kernel_size, stride=2)
        self.bn = None if bottleneck else nn.BatchNorm2d(
            out_channels, eps=config.batchnorm_eps, momentum=config.batchnorm_momentum
        )
        self.activation = None if bottleneck else make_activation(config.conv_activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (raw convolution output used as skip, activated output fed to the next block)."""
        top, bottom = same_padding(x.shape[-2], self.kernel_size, 2)
        left, right = same_padding(x.shape[-1], self.kernel_size, 2)
        raw = self.conv(F.pad(x, (left, right, top, bottom)))
        if self.bn is None or self.activation is None:  # the bottleneck has neither
            return raw, raw
        return raw, self.activation(self.bn(raw))


class DecoderBlock(nn.Module):
    """Transposed convolution cropped to the skip's size, then activation, BatchNorm and optional dropout."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, dropout: float) -> None:
        super().__init__()
        self.kernel_size = config.kernel_size
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, config.kernel_size, stride=2)
        self.activation = make_activation(config.deconv_activation)
        self.bn = nn.BatchNorm2d(out_channels, eps=config.batchnorm_eps, momentum=config.batchnorm_momentum)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        top, _ = same_padding(size[0], self.kernel_size, 2)
        left, _ = same_padding(size[1], self.kernel_size, 2)
        full = self.deconv(x)
        return self.finish(full[..., top : top + size[0], left : left + size[1]])

    def finish(self, upsampled: torch.Tensor) -> torch.Tensor:
        """Activation, BatchNorm and dropout of the cropped upsampled input."""
        return self.dropout(self.bn(self.activation(upsampled)))


def level_sizes(height: int, width: int, depth: int) -> list[tuple[int, int]]:
    """The (time, frequency) sizes a U-Net of ``depth`` levels sees for an input ``height`` x ``width``: the
    input's, then each encoder output's (each strided convolution halves them, rounding up)."""
    sizes = [(height, width)]
    for _ in range(depth):
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    return sizes


class UNet(nn.Module):
    """One stem's U-Net: magnitude ``[B, C, T, F]`` in, mask logits ``[B, C, T, F]`` out."""

    def __init__(self, config: UNetConfig, n_channels: int) -> None:
        super().__init__()
        filters = [int(f) for f in config.filters]
        depth = len(filters)
        inputs = [n_channels] + filters[:-1]
        self.encoder = nn.ModuleList(
            EncoderBlock(inputs[i], filters[i], config, bottleneck=i == depth - 1) for i in range(depth)
        )
        decoder_out = filters[-2::-1] + [1]
        decoder_in = [filters[-1]] + [2 * f for f in filters[-2::-1]]
        self.decoder = nn.ModuleList(
            DecoderBlock(
                decoder_in[i],
                decoder_out[i],
                config,
                dropout=config.dropout if i < config.dropout_layers else 0.0,
            )
            for i in range(depth)
        )
        # 4x4 kernel, dilation 2: effective size 7, "same" padding 3 on each side.
        self.mask_conv = nn.Conv2d(1, n_channels, kernel_size=4, dilation=2, padding=3)

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        sizes: list[tuple[int, int]] = [(magnitude.shape[-2], magnitude.shape[-1])]
        hidden = magnitude
        for block in self.encoder:
            raw, hidden = block(hidden)
            skips.append(raw)
            sizes.append((raw.shape[-2], raw.shape[-1]))
        skips.pop()  # the bottleneck is not a skip
        for i, block in enumerate(self.decoder):
            target = sizes[-2 - i]
            up = block(hidden, target)
            hidden = torch.cat([skips[-1 - i], up], dim=1) if i < len(skips) else up
        return self.mask_conv(hidden)
