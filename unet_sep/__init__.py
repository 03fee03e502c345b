"""unet-sep: music source separation with spectrogram U-Nets.

    from unet_sep import Separator
    separator = Separator.from_pretrained("path/to/model")
    stems = separator.separate(waveform, sample_rate)   # {"vocals": ..., "accompaniment": ...}
"""

import logging

from unet_sep.config import ModelConfig, STFTConfig, UNetConfig
from unet_sep.separate.separator import Separator
from unet_sep.weights.checkpoint import load_model, save_model

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["ModelConfig", "STFTConfig", "Separator", "UNetConfig", "__version__", "load_model", "save_model"]
