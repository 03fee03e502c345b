"""A model on disk: a folder with ``config.json`` and ``model.safetensors``. Loading never unpickles."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

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


def shape_mismatch(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """How the tensors ``found`` differ from those ``expected`` (names, then shapes), or None when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        parts = [f"missing {len(missing)} tensor(s), e.g. {missing[0]}"] if missing else []
        parts += [f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}"] if unexpected else []
        return f"does not match its config ({'; '.join(parts)})"
    for name in expected:
        if tuple(found[name]) != tuple(expected[name]):
            return f"tensor {name} has shape {tuple(found[name])}, the config needs {tuple(expected[name])}"
    return None


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> tuple[ModelConfig, StemsNet]:
    """Load a model folder (or its ``config.json``) into an eval-mode :class:`StemsNet` in float32.

    A ``config.json`` of an earlier format version is migrated in memory; one of a newer version than this code
    reads is a :class:`CheckpointError` naming the file and both versions (:func:`unet_sep.config.migrate_config`).
    """
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
    mismatch = shape_mismatch({name: tuple(t.shape) for name, t in tensors.items()},
                              {name: tuple(t.shape) for name, t in net.state_dict().items()})
    if mismatch:
        raise CheckpointError(f"{weights_path}: {mismatch}")
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            tensors[name] = tensor.float()
    net.load_state_dict(tensors)
    net.eval()
    return config, net.to(device)
