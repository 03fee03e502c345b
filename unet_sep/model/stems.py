"""The set of per-stem U-Nets of a model, run together on one magnitude spectrogram."""

from __future__ import annotations

import logging
import warnings
from typing import Callable

import torch
from torch import nn

from unet_sep.config import ModelConfig
from unet_sep.model.unet import UNet

logger = logging.getLogger(__name__)


class StemsNet(nn.Module):
    """One :class:`UNet` per stem, in the config's stem order.

    ``forward`` maps a magnitude ``[B, C, T, F]`` to per-stem magnitude estimates ``[S, B, C, T, F]``:
    each stem's soft mask (sigmoid per stem, or softmax across stems) times the input magnitude. Training
    puts its loss on these; separation turns them into ratio masks.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.stems = list(config.stems)
        self.mask_activation = config.mask_activation
        self.unets = nn.ModuleList(UNet(config.unet, config.n_channels) for _ in config.stems)

    def soft_masks(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Per-stem soft masks ``[S, B, C, T, F]`` in [0, 1]."""
        logits = torch.stack([unet(magnitude) for unet in self.unets])
        if self.mask_activation == "softmax":
            return torch.softmax(logits, dim=0)
        return torch.sigmoid(logits)

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        return self.soft_masks(magnitude) * magnitude.unsqueeze(0)


def freeze_for_inference(net: StemsNet, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` traced, frozen and optimised by TorchScript for inputs shaped like ``example`` (any batch size).

    On the CPU this pre-packs the convolution weights for oneDNN and fuses what it can, about 1.5x faster
    than eager mode for Spleeter's U-Nets, with the same numbers to float precision. The time and frequency
    sizes are fixed by ``example`` (the padding of each layer depends on them). Falls back to ``net`` itself
    if tracing fails.
    """
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net.eval(), example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception as error:  # TorchScript is optional: eager mode gives the same result, slower
        logger.info("TorchScript optimisation unavailable (%s); running the U-Nets in eager mode", error)
        return net
