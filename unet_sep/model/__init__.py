"""The networks: one config-driven 2-D U-Net and the set of per-stem U-Nets."""

from unet_sep.model.stems import StemsNet
from unet_sep.model.unet import UNet

__all__ = ["StemsNet", "UNet"]
