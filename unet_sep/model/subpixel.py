"""The decoders' transposed convolutions as sub-pixel convolutions, for inference on inputs of a known size.

A stride-2 transposed convolution cropped TensorFlow's way is, output phase by output phase (even/odd rows x
even/odd columns), an ordinary stride-1 convolution: one convolution giving the four phases as channels,
interleaved by ``pixel_shuffle``, computes the same numbers, and oneDNN runs it about twice as fast on the CPU.
Its weights depend on the crop, so on the parity of the size the decoder restores; they are derived once, when
:class:`SubpixelDecoderBlock` is made (:func:`unet_sep.model.stems.inference_network`), so the forward pass holds
no state that a traced or compiled graph would have to guard. Training keeps ``ConvTranspose2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unet_sep.model.unet import DecoderBlock, same_padding


def _phase_taps(kernel: int, crop: int) -> tuple[dict[int, list[tuple[int, int]]], int, int]:
    """For output rows ``2m + a`` of a stride-2 transposed convolution cropped from ``crop`` on: the pairs
    (input offset d, kernel tap k) with ``out[2m + a] = sum w[k] x[m + d]``, and the smallest and largest d."""
    taps = {a: [((a + crop - k) // 2, k) for k in range(kernel) if (a + crop - k) % 2 == 0] for a in (0, 1)}
    offsets = [d for pairs in taps.values() for d, _ in pairs]
    return taps, min(offsets), max(offsets)


@torch.no_grad()
def phase_weights(
    weight: torch.Tensor, bias: torch.Tensor, kernel: int, top: int, left: int, phases_first: bool = False
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
    """ConvTranspose2d weights ``[C_in, C_out, k, k]`` -> sub-pixel conv weights ``[4 C_out, C_in, kh, kw]``,
    bias, and the input padding (top, bottom, left, right). Output channels are ordered (C_out, row phase,
    column phase), as ``pixel_shuffle`` wants, or (row phase, column phase, C_out) with ``phases_first`` (for
    channels-last inputs; the kernel is then channels-last too)."""
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
        kernel_weights = phases.permute(1, 2, 0, 3, 4, 5).reshape(c_out * 4, c_in, *phases.shape[-2:])
        return kernel_weights.contiguous(memory_format=torch.channels_last), bias.repeat(4).contiguous(), padding
    kernel_weights = phases.reshape(c_out * 4, c_in, *phases.shape[-2:]).contiguous()
    return kernel_weights, bias.repeat_interleave(4).contiguous(), padding


def subpixel_convolution(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor,
                         padding: tuple[int, int, int, int], phases_first: bool) -> torch.Tensor:
    """The sub-pixel convolution of ``x`` with :func:`phase_weights`' kernel, bias and padding: its four output
    phases interleaved into twice ``x``'s height and width (channels-last out when ``phases_first``)."""
    if padding[0] == padding[1] and padding[2] == padding[3]:
        phases = F.conv2d(x, kernel, bias, padding=(padding[0], padding[2]))
    else:
        phases = F.conv2d(F.pad(x, (padding[2], padding[3], padding[0], padding[1])), kernel, bias)
    if not phases_first:
        return F.pixel_shuffle(phases, 2)
    # [B, (a, b, C), H, W] stored as [B, H, W, a, b, C] -> [B, H, a, W, b, C] -> [B, C, 2H, 2W] channels-last.
    batch, channels, height, width = phases.shape
    nhwc = phases.permute(0, 2, 3, 1).view(batch, height, width, 2, 2, channels // 4)
    interleaved = nhwc.permute(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, channels // 4)
    return interleaved.permute(0, 3, 1, 2)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class SubpixelDecoderBlock(DecoderBlock):
    """``block`` (its modules and parameters shared, its parameter names kept) running its transposed convolution
    as a sub-pixel convolution for outputs of ``size`` (time, frequency) from inputs in one memory layout
    (channels-last or not), with weights derived from ``block``'s as they are now.

    Any other size or layout, training mode or gradients take ``block``'s own transposed convolution, so the
    block is right for any input; it is fast for the one it was made for.
    """

    phase_kernel: torch.Tensor
    phase_bias: torch.Tensor

    def __init__(self, block: DecoderBlock, size: tuple[int, int], channels_last: bool) -> None:
        nn.Module.__init__(self)
        self.kernel_size = block.kernel_size
        self.deconv, self.activation, self.bn, self.dropout = block.deconv, block.activation, block.bn, block.dropout
        self.size = (int(size[0]), int(size[1]))
        self.channels_last = channels_last
        top, _ = same_padding(self.size[0], self.kernel_size, 2)
        left, _ = same_padding(self.size[1], self.kernel_size, 2)
        assert self.deconv.bias is not None  # the transposed convolution is built with a bias
        kernel, bias, self.padding = phase_weights(self.deconv.weight, self.deconv.bias, self.kernel_size, top, left,
                                                   phases_first=channels_last)
        # Buffers, so .to() moves them with the block; not persistent: they are not part of a model's weights.
        self.register_buffer("phase_kernel", kernel, persistent=False)
        self.register_buffer("phase_bias", bias, persistent=False)
        self.train(block.training)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        fits = (size[0], size[1]) == self.size and _channels_last(x) == self.channels_last
        if not fits or self.training or torch.is_grad_enabled():
            return super().forward(x, size)
        upsampled = subpixel_convolution(x, self.phase_kernel, self.phase_bias, self.padding, self.channels_last)
        return self.finish(upsampled[..., : size[0], : size[1]])
