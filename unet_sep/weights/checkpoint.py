"""A model on disk: a folder with ``config.json`` and ``model.safetensors``. Loading never unpickles.

``config.json`` records the sha256 of ``model.safetensors`` (``weights_sha256``), written with it and checked
before the weights are used (:func:`verify_weights`, remembered per file identity by
:mod:`unet_sep.weights.verified`); weights that are not finite are refused too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from unet_sep.atomic import atomic_path, write_bytes_atomic
from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE, ConfigError, ModelConfig
from unet_sep.model.stems import StemsNet
from unet_sep.weights.download import sha256_of
from unet_sep.weights.verified import file_identity, remembered_digest

logger = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A model folder that cannot be loaded; the message says which file and why."""


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write ``tensors`` to the safetensors file ``path``, whole or not at all, with the umask's permissions;
    returns the file's sha256.

    (safetensors' own ``save_file`` creates its files 0600, unreadable to anyone else sharing a model folder.)
    """
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    data = safetensors_bytes(contiguous, metadata={"format": "pt"})
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def save_config(folder: str | Path, config: ModelConfig, weights_sha256: str | None = None) -> Path:
    """Write ``folder``'s ``config.json`` (via a temporary name) for the weights in its ``model.safetensors``,
    recording their sha256: ``weights_sha256`` when the caller knows it, else read from the file."""
    folder = Path(folder)
    digest = weights_sha256 or sha256_of(folder / WEIGHTS_FILE)
    recorded = dataclasses.replace(config, weights_sha256=digest)
    recorded.validate()
    with atomic_path(folder / CONFIG_FILE) as temporary:
        recorded.save(temporary)
    return folder


def save_model(folder: str | Path, net: StemsNet, config: ModelConfig, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` (each via a temporary name); the config
    records the weights' sha256 (``weights_sha256``), which loading checks.

    ``dtype`` (e.g. ``torch.float16``) stores floating-point tensors in that type to save space.
    """
    config.validate()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        for name, tensor in net.state_dict().items()
    }
    return save_config(folder, config, save_tensors(folder / WEIGHTS_FILE, tensors))


def verify_weights(weights_path: Path, config: ModelConfig, config_path: Path) -> None:
    """A :class:`CheckpointError` naming ``weights_path`` and both digests unless its sha256 is the
    ``weights_sha256`` that ``config`` (read from ``config_path``) records; a folder written before digests were
    recorded loads unverified, with a warning. The digest of a file is computed once per file identity
    (:mod:`unet_sep.weights.verified`)."""
    expected = config.weights_sha256
    if not expected:
        logger.warning("%s records no weights digest (written before unet-sep checked them): %s is loaded "
                       "unverified; save the model again to add one", config_path, weights_path.name)
        return
    actual = remembered_digest(weights_path, "sha256", sha256_of)
    if actual != expected:
        raise CheckpointError(f"{weights_path}: corrupted or changed: its sha256 is {actual}, but "
                              f"{config_path.name} records {expected}")


def non_finite_tensor(tensors: Mapping[str, torch.Tensor]) -> tuple[str, int] | None:
    """The name of the first floating-point tensor holding NaN or infinite values, and how many; None when every
    value is finite (numpy's check: 55 ms for spleeter:5stems' 197 MB, where torch's isfinite took over 1 s)."""
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        values = tensor.detach().cpu()
        array = (values.float() if values.dtype == torch.bfloat16 else values).numpy()
        finite = np.isfinite(array)
        if not finite.all():
            return name, int(finite.size - np.count_nonzero(finite))
    return None


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


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of ``config``'s network (built on the meta device: nothing allocated)."""
    with torch.device("meta"):
        net = StemsNet(config)
    return {name: tuple(tensor.shape) for name, tensor in net.state_dict().items()}


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> tuple[ModelConfig, StemsNet]:
    """Load a model folder (or its ``config.json``) into an eval-mode :class:`StemsNet` in float32.

    A ``config.json`` of an earlier format version is migrated in memory; one of a newer version than this code
    reads is a :class:`CheckpointError` naming the file and both versions (:func:`unet_sep.config.migrate_config`).
    So are weights whose sha256 is not the one the config records (:func:`verify_weights`), that change while they
    are read, that do not fit the config (compared before the network is built: a config's sizes cannot make it
    allocate more than its weights file holds), or that are not finite.
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
    identity = file_identity(weights_path)
    verify_weights(weights_path, config, config_path)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({error})") from error
    if file_identity(weights_path) != identity:
        raise CheckpointError(f"{weights_path}: changed while it was read; load it again once it is written")
    mismatch = shape_mismatch({name: tuple(t.shape) for name, t in tensors.items()}, expected_shapes(config))
    if mismatch:
        raise CheckpointError(f"{weights_path}: {mismatch}")
    bad = non_finite_tensor(tensors)
    if bad is not None:
        raise CheckpointError(f"{weights_path}: tensor {bad[0]} holds {bad[1]} NaN or infinite value(s): the "
                              "weights are corrupted, or the training that wrote them diverged")
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            tensors[name] = tensor.float()
    net = StemsNet(config)
    net.load_state_dict(tensors)
    net.eval()
    return config, net.to(device)
