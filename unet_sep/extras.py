"""Optional parts of the package and the one-line error that names the extra to install.

Separation needs only the core dependencies. Training and evaluation import their own packages through
:func:`import_extra`, so a missing one is a single line saying what to install, not an ImportError traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# extra -> the packages it installs (pyproject.toml's [project.optional-dependencies] lists the same)
EXTRAS = {
    "train": ("musdb", "tensorboard", "matplotlib"),
    "eval": ("musdb", "museval", "matplotlib"),
    "hub": ("huggingface_hub",),
    "onnx": ("onnx", "onnxruntime"),
    "serve": ("starlette", "uvicorn", "python_multipart"),
    "live": ("sounddevice",),
}


class MissingExtraError(ImportError):
    """A package of an optional extra is not installed; the message says which extra to install."""


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """``module`` imported, or :class:`MissingExtraError` when its package is missing: ``"<purpose> needs
    <package> (pip install 'unet-sep[<extra>]')"``. ``extra`` may name several, joined by ``,``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        if error.name is None or error.name.split(".")[0] != package:
            raise  # the package is there but something it imports is not: not ours to explain
        choices = " or ".join(f"'unet-sep[{name}]'" for name in extra.split(","))
        raise MissingExtraError(f"{purpose} needs {package}, which is not installed: pip install {choices}",
                                name=package) from None


def import_pyplot(extra: str, purpose: str) -> ModuleType:
    """``matplotlib.pyplot`` on the file-only Agg backend (plots are written, never shown), through
    :func:`import_extra`."""
    import_extra("matplotlib", extra, purpose).use("Agg")
    return import_extra("matplotlib.pyplot", extra, purpose)
