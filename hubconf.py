"""torch.hub entry points of unet-sep.

    import torch
    separator = torch.hub.load("<owner>/unet-sep", "separator", name="mir1k-vocals-accompaniment")
    stems = separator.separate(waveform, sample_rate)   # {"vocals": ..., "accompaniment": ...}

The model is chosen by ``name``, or the first argument after the entry's name: ``torch.hub.load`` keeps the
keyword ``model`` for the entry itself.

While torch.hub loads an entry it puts this folder first on ``sys.path``, so the ``unet_sep`` package beside this
file is the one used, whether or not unet-sep is installed. The entries only call the package's public API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch.hub lists every callable of this module as an entry: only the entries are defined here
    from typing import Any

    from unet_sep import ModelConfig, Separator
    from unet_sep.model import StemsNet

# Import names of the packages the Python API needs: the project's dependencies but the CLI's (typer).
# torch.hub checks that each can be imported before it calls an entry.
dependencies = ["torch", "numpy", "soundfile", "av", "soxr", "safetensors", "tqdm", "platformdirs", "google_crc32c"]
DEFAULT_MODEL = "mir1k-vocals-accompaniment"  # the bundled model (unet_sep/pretrained/), which the CLI defaults to


def separator(name: str = DEFAULT_MODEL, device: str | None = None, **options: Any) -> Separator:
    """A ``unet_sep.Separator``: ``separator.separate(waveform, sample_rate)`` returns ``{stem: waveform}``.

    Args:
        name: a registered model name (``unet-sep models`` lists them) or a model folder, as
            ``Separator.from_pretrained`` takes; default: the bundled model. A downloadable model is fetched
            into the cache on first use.
        device: "auto" (CUDA, then MPS, then the CPU), "cpu", "cuda", "cuda:N" or "mps" (default: the
            ``Separator``'s); the second argument after the entry's name, or a keyword.
        options: the ``Separator``'s other settings (``unet_sep.separate.settings.SeparationSettings``' fields:
            segmentation, overlap, batch_size, mask_extension, precision, wiener_iterations, ...).
    """
    from unet_sep import Separator

    if device is not None:
        options["device"] = device
    return Separator.from_pretrained(name, **options)


def network(name: str = DEFAULT_MODEL, device: str = "cpu") -> tuple[ModelConfig, StemsNet]:
    """The ``unet_sep.ModelConfig`` and the eval-mode network (one U-Net per stem, float32) of ``name``, as
    ``unet_sep.load_model`` gives them: for fine-tuning or inspecting the weights.

    Args:
        name: a registered model name or a model folder, as for ``separator``; default: the bundled model.
        device: where the network's weights go ("cpu", "cuda", ...).
    """
    from unet_sep import load_model
    from unet_sep.weights.registry import resolve_model

    return load_model(resolve_model(name), device=device)
