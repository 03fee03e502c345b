"""Named models: bundled with the package, or downloaded once (checksum-verified) into the user's cache.

A name resolves to a model folder (``config.json`` + ``model.safetensors``). Anything that is not a
registered name is treated as a path to such a folder. The names come from the model providers of
:mod:`unet_sep.weights.providers`; ``hf://ORG/REPO[@REVISION]`` is a model on the Hugging Face Hub
(:mod:`unet_sep.weights.hub`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from unet_sep.atomic import atomic_folder, remove_stale_temporaries, remove_stale_temporary_folders
from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE
from unet_sep.weights.download import fetch_download
from unet_sep.weights.entries import ModelEntry, ModelNotFoundError, cache_dir
from unet_sep.weights.hub import fetch_hub_model, is_hub_ref
from unet_sep.weights.providers import PROVIDERS, Provider


def registered_models(providers: Sequence[Provider] = PROVIDERS) -> dict[str, ModelEntry]:
    """All registered model names, in display order (the providers' order, then each provider's)."""
    return {entry.name: entry for provider in providers for entry in provider()}


def default_model_name() -> str | None:
    """The bundled model used when no ``--model`` is given, if the package ships one."""
    for entry in registered_models().values():
        if entry.bundled is not None:
            return entry.name
    return None


def model_or_default(name_or_path: str | None) -> str:
    """``name_or_path``, or the bundled default model's name when it is None; a :class:`ModelNotFoundError` when
    neither is there."""
    name = name_or_path or default_model_name()
    if name is None:
        raise ModelNotFoundError("no model given and no bundled default model is installed; pass --model "
                                 "NAME_OR_FOLDER (see `unet-sep models`)")
    return name


def resolve_model(name_or_path: str | Path, offline: bool = False, providers: Sequence[Provider] = PROVIDERS) -> Path:
    """The model folder for a registered name, a path or a Hub model (``hf://ORG/REPO[@REVISION]``); downloads
    (once) when needed and allowed."""
    if is_hub_ref(name_or_path):
        return fetch_hub_model(str(name_or_path), offline)
    text = str(name_or_path)
    entries = registered_models(providers)
    if text in entries:
        return _materialize(entries[text], offline)
    path = Path(text).expanduser()
    if path.is_file() and path.name == CONFIG_FILE:
        path = path.parent
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise ModelNotFoundError(f"{path}: not a model folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        return path
    names = ", ".join(entries) or "none"
    raise ModelNotFoundError(f"{text}: no such model folder and not a registered name (registered: {names})")


def _materialize(entry: ModelEntry, offline: bool) -> Path:
    """``entry``'s model folder: on disk already, or downloaded and converted into the cache now."""
    local = entry.local_folder()
    if local is not None:
        return local
    if entry.url is None or entry.convert is None:
        raise ModelNotFoundError(f"{entry.name}: has no download source")
    # Leftovers of downloads and conversions that were killed (their writers no longer run) go first.
    remove_stale_temporaries(cache_dir() / "downloads")
    target = entry.cache_folder()
    remove_stale_temporary_folders(target.parent)
    downloaded = fetch_download(entry.name, entry.url, entry.sha256, offline)
    with atomic_folder(target) as staging:
        entry.convert(downloaded, staging)
    for stale in entry.stale_folders():
        shutil.rmtree(stale, ignore_errors=True)
    return target
