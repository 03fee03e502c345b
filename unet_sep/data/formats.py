"""The registry of data set formats: ``kind`` -> :class:`~unet_sep.data.source.DataFormat`.

Adding a format: a module with a :class:`~unet_sep.data.source.DataFormat` subclass, and its instance in
:data:`FORMATS` below. Recipes select it with ``data.kind``; ``unet-sep evaluate --data PATH`` finds it by
:meth:`~unet_sep.data.source.DataFormat.recognise` (the first format in this order that recognises the folder).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from unet_sep.data.folders import FolderFormat
from unet_sep.data.musdb import MusdbFormat
from unet_sep.data.source import DataFormat
from unet_sep.errors import ConfigError

__all__ = ["FORMATS", "KINDS", "data_format", "recognise_format"]

FORMATS: Mapping[str, DataFormat] = MappingProxyType({f.name: f for f in (MusdbFormat(), FolderFormat())})
KINDS = tuple(FORMATS)


def data_format(kind: str) -> DataFormat:
    """The format registered as ``kind``; a :class:`ConfigError` naming the registered kinds otherwise."""
    try:
        return FORMATS[kind]
    except (KeyError, TypeError):
        raise ConfigError(f"data.kind must be one of {', '.join(KINDS)}, got {kind!r}") from None


def recognise_format(root: Path) -> tuple[DataFormat, dict[str, Any]] | None:
    """The first registered format that recognises the folder ``root``, with the settings that read it."""
    for candidate in FORMATS.values():
        settings = candidate.recognise(root)
        if settings is not None:
            return candidate, settings
    return None
