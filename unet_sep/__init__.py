"""unet-sep: music source separation with spectrogram U-Nets.

    from unet_sep import Separator
    separator = Separator.from_pretrained("path/to/model")
    stems = separator.separate(waveform, sample_rate)   # {"vocals": ..., "accompaniment": ...}
"""

import importlib
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Imported on first use, so `unet-sep --help` and Ctrl-C during start-up do not wait for torch.
_EXPORTS = {
    "ModelConfig": "unet_sep.config",
    "STFTConfig": "unet_sep.config",
    "UNetConfig": "unet_sep.config",
    "Separator": "unet_sep.separate.separator",
    "load_model": "unet_sep.weights.checkpoint",
    "save_model": "unet_sep.weights.checkpoint",
}

__all__ = ["ModelConfig", "STFTConfig", "Separator", "UNetConfig", "__version__", "load_model", "save_model"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
