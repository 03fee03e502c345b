"""A model on disk: a folder with ``config.json`` and ``model.safetensors``. Loading never unpickles."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from unet_sep.atomic import atomic_path, write_bytes_atomic
from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE, ConfigError, ModelConfig
from unet_sep.model.stems import StemsNet

logger = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A model folder that cannot be loaded; the message says which file and why."""


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` to the safetensors file ``path``, whole or not at all, with the umask's permissions.

    (safetensors' own ``save_file`` creates its files 0600, unreadable to anyone else sharing a model folder.)
    """
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    write_bytes_atomic(path, safetensors_bytes(contiguous, metadata={"format": "pt"}))


def save_model(folder: str | Path, net: StemsNet, config: ModelConfig, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` (each via a temporary name).

    ``dtype`` (e.g. ``torch.float16``) stores floating-point tensors in that type to save space.
    """
    config.validate()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        for name, tensor in net.state_dict().items()
    }
    save_tensors(folder / WEIGHTS_FILE, tensors)
    with atomic_path(folder / CONFIG_FILE) as temporary:
        config.save(temporary)
    return folder


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> tuple[ModelConfig, StemsNet]:
    """Load a model folder (or its ``config.json``) into an eval-mode :class:`StemsNet` in float32."""
    folder = Path(folder)
    if folder.is_file() and folder.name == CONFIG_FILE:
        folder = folder.parent
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(
                f"{folder}: missing {path.name} (a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
    try:
        config = ModelConfig.load(config_path)
    except (ConfigError, TypeError) as error:
        message = str(error)
        raise CheckpointError(message if str(config_path) in message else f"{config_path}: {message}") from error
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({error})") from error
    net = StemsNet(config)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
        raise CheckpointError(f"{weights_path}: does not match its config ({'; '.join(parts)})")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{weights_path}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"the config needs {tuple(expected[name].shape)}"
            )
        if tensor.is_floating_point():
            tensors[name] = tensor.float()
    net.load_state_dict(tensors)
    net.eval()
    return config, net.to(device)
