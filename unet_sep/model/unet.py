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

        self._phases: tuple | None = None  # cached sub-pixel weights for inference, see _subpixel

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        top, _ = same_padding(size[0], self.kernel_size, 2)
        left, _ = same_padding(size[1], self.kernel_size, 2)
        if self.training or torch.is_grad_enabled():
            full = self.deconv(x)
            cropped = full[..., top : top + size[0], left : left + size[1]]
        else:
            cropped = self._subpixel(x, top, left)[..., : size[0], : size[1]]
        return self.dropout(self.bn(self.activation(cropped)))

    def _subpixel(self, x: torch.Tensor, top: int, left: int) -> torch.Tensor:
        """The cropped transposed convolution as one stride-1 convolution giving the four output phases
        (even/odd rows x even/odd columns) as channels, interleaved by ``pixel_shuffle``.

        Same numbers as the transposed convolution (each phase uses exactly that phase's taps; the others are
        zeros), but it runs as an ordinary convolution, which oneDNN does about twice as fast as a transposed
        one on the CPU. Used for inference only; training keeps ``ConvTranspose2d``.
        """
        weight, bias = self.deconv.weight, self.deconv.bias
        assert bias is not None  # the transposed convolution is built with a bias
        # Channels-last tensors interleave best with the phases outermost in the channels, others innermost.
        last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        key = (weight._version, weight.data_ptr(), bias._version, top % 2, left % 2, weight.dtype, weight.device, last)
        if self._phases is None or self._phases[0] != key:
            kernel, phase_bias, padding = _phase_weights(weight, bias, self.kernel_size, top, left, phases_first=last)
            if last:
                kernel = kernel.contiguous(memory_format=torch.channels_last)
            self._phases = (key, kernel, phase_bias, padding)
        _, kernel, phase_bias, padding = self._phases
        if padding[0] == padding[1] and padding[2] == padding[3]:
            phases = F.conv2d(x, kernel, phase_bias, padding=(padding[0], padding[2]))
        else:
            phases = F.conv2d(F.pad(x, (padding[2], padding[3], padding[0], padding[1])), kernel, phase_bias)
        if not last:
            return F.pixel_shuffle(phases, 2)
        # [B, (a, b, C), H, W] stored as [B, H, W, a, b, C] -> [B, H, a, W, b, C] -> [B, C, 2H, 2W] channels-last.
        batch, channels, height, width = phases.shape
        nhwc = phases.permute(0, 2, 3, 1).view(batch, height, width, 2, 2, channels // 4)
        interleaved = nhwc.permute(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, channels // 4)
        return interleaved.permute(0, 3, 1, 2)


def _phase_taps(kernel: int, crop: int) -> tuple[dict[int, list[tuple[int, int]]], int, int]:
    """For output rows ``2m + a`` of a stride-2 transposed convolution cropped from ``crop`` on: the pairs
    (input offset d, kernel tap k) with ``out[2m + a] = sum w[k] x[m + d]``, and the smallest and largest d."""
    taps = {a: [((a + crop - k) // 2, k) for k in range(kernel) if (a + crop - k) % 2 == 0] for a in (0, 1)}
    offsets = [d for pairs in taps.values() for d, _ in pairs]
    return taps, min(offsets), max(offsets)


@torch.no_grad()
def _phase_weights(
    weight: torch.Tensor, bias: torch.Tensor, kernel: int, top: int, left: int, phases_first: bool = False
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
    """ConvTranspose2d weights ``[C_in, C_out, k, k]`` -> sub-pixel conv weights ``[4 C_out, C_in, kh, kw]``,
    bias, and the input padding (top, bottom, left, right). Output channels are ordered (C_out, row phase,
    column phase), as ``pixel_shuffle`` wants, or (row phase, column phase, C_out) with ``phases_first``."""
    rows, row_min, row_max = _phase_taps(kernel, top)
    cols, col_min, col_max = _phase_taps(kernel, left)
    c_in, c_out = weight.shape[:2]
    transposed = weight.permute(1, 0, 2, 3)  # [C_out, C_in, k, k]
    phases = weight.new_zeros(c_out, 2, 2, c_in, row_max - row_min + 1, col_max - col_min + 1)
    for a in (0, 1):
        for b in (0, 1):
            for d_row, k_row in rows[a]:
                for d_col, k_col in cols[b]:
                    phases[:, a, b, :, d_row - row_min, d_col - col_min] = transposed[:, :, k_row, k_col]
    padding = (-row_min, row_max, -col_min, col_max)
    if phases_first:
        kernel_weights = phases.permute(1, 2, 0, 3, 4, 5).reshape(c_out * 4, c_in, *phases.shape[-2:]).contiguous()
        return kernel_weights, bias.repeat(4).contiguous(), padding
    kernel_weights = phases.reshape(c_out * 4, c_in, *phases.shape[-2:]).contiguous()
    return kernel_weights, bias.repeat_interleave(4).contiguous(), padding


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
