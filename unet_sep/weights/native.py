"""unet-sep's own models: bundled in the package, or downloadable ones listed as data.

Two model providers (see :mod:`unet_sep.weights.providers`):

* :func:`bundled_models`: every folder under ``unet_sep/pretrained/`` with a ``config.json``.
* :func:`remote_models`: the models listed in ``remote_models.json`` beside this module. Adding one is an
  item of that JSON list, no code::

      {"name": "my-model", "url": "https://example.org/my-model-v1.safetensors",
       "sha256": "<64 hex digits of that file>", "config": {<the model's config.json>}}

  The URL is the model's ``model.safetensors``; on first use it is downloaded into the cache, verified, and
  written beside the config (which records its sha256, checked on every load) into a cached model folder,
  loaded once to check that the tensors fit the config.
  The last part of each URL names the file in the download cache, so those names must differ.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shutil
from pathlib import Path
from typing import Any

from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE, ConfigError, ModelConfig
from unet_sep.fields import build_section, read_json
from unet_sep.weights.checkpoint import load_model, save_config
from unet_sep.weights.entries import PACKAGE_DIR, ModelEntry

BUNDLED_DIR = PACKAGE_DIR / "pretrained"
REMOTE_MODELS_FILE = Path(__file__).with_name("remote_models.json")


@dataclasses.dataclass(frozen=True)
class RemoteModel:
    """One item of the remote model list: where the weights are, their sha256, and the model's config."""

    name: str
    url: str
    sha256: str
    config: dict[str, Any]


def bundled_models() -> list[ModelEntry]:
    """The models shipped inside the package, by folder name."""
    if not BUNDLED_DIR.is_dir():
        return []
    folders = sorted(p for p in BUNDLED_DIR.iterdir() if (p / CONFIG_FILE).is_file())
    return [_bundled_entry(folder) for folder in folders]


def _entry(config: ModelConfig, name: str, **source: Any) -> ModelEntry:
    """The registry entry of a native model: what its config says, and where it comes from (``source``)."""
    return ModelEntry(name=name, description=str(config.provenance.get("description", "")), stems=tuple(config.stems),
                      sample_rate=config.sample_rate, band_hz=config.band_hz, **source)


def _bundled_entry(folder: Path) -> ModelEntry:
    config = ModelConfig.load(folder / CONFIG_FILE)
    return _entry(config, config.name or folder.name, bundled=str(folder.relative_to(PACKAGE_DIR)))


def remote_models(listing: Path | None = None) -> list[ModelEntry]:
    """The downloadable models of ``listing`` (default: ``remote_models.json``), in its order.

    Raises :class:`ConfigError` naming the file and the item for anything that is not a valid model.
    """
    listing = listing or REMOTE_MODELS_FILE
    items = read_json(listing, "the model list", expected=list, shape="a JSON list of models")
    entries = [_remote_entry(item, f"models[{position}]", listing) for position, item in enumerate(items)]
    for what, values in (("name", [e.name for e in entries]), ("file name", [Path(str(e.url)).name for e in entries])):
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            raise ConfigError(f"{listing}: the {what} {repeated[0]!r} appears more than once")
    return entries


def _remote_entry(item: Any, section: str, listing: Path) -> ModelEntry:
    fields = ", ".join(f.name for f in dataclasses.fields(RemoteModel))
    try:
        remote = build_section(RemoteModel, item, section)
        config = dataclasses.replace(ModelConfig.from_dict(remote.config), name=remote.name)
    except TypeError:  # a key without a default is absent
        raise ConfigError(f"{listing}: {section} needs the keys {fields}") from None
    except ConfigError as error:
        raise ConfigError(f"{listing}: {section}: {error}") from error
    if not re.fullmatch(r"[0-9a-fA-F]{64}", remote.sha256):
        raise ConfigError(f"{listing}: {section}.sha256 must be 64 hex digits, got {remote.sha256!r}")
    return _entry(config, remote.name, url=remote.url, sha256=remote.sha256.lower(),
                  convert=functools.partial(install_weights, config))


def install_weights(config: ModelConfig, weights: Path, destination: Path) -> None:
    """``ModelEntry.convert`` of a downloadable model: its weights file beside its config in ``destination``, the
    config recording the weights' sha256.

    The folder is loaded once, so that weights which do not fit the config fail here (CheckpointError).
    """
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, destination / WEIGHTS_FILE)
    save_config(destination, config)
    load_model(destination)
