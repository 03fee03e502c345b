"""What a data set format provides: :class:`DataFormat`, the base of each format's module.

A format is registered under its ``kind`` in :mod:`unet_sep.data.formats`; everything that depends on the kind
(checking the settings, listing a split's tracks, recognising a folder, naming the data in reports) is a method
here, so a new format is one module with a subclass and one entry in the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from unet_sep.data.tracks import TrackSpec

__all__ = ["DataFormat", "DataSettings"]


class DataSettings(Protocol):
    """The settings a format reads (the fields of :class:`unet_sep.data.config.DataConfig`)."""

    kind: str
    root: str
    is_wav: bool
    targets: list[str]
    split_file: str | None
    split_group: str | None
    max_tracks: int | None


class DataFormat:
    """One kind of data set. Subclasses set the class attributes and implement :meth:`list_specs`.

    Attributes:
        name: the ``kind`` that selects the format (``data.kind`` in a recipe).
        settings: the fields of the data settings only this format reads (others are common to all).
        split_names: the split names the format defines itself, the usual evaluation split first; ``None``
            when the data names its splits (a split file).
    """

    name: str = ""
    settings: tuple[str, ...] = ()
    split_names: tuple[str, ...] | None = None

    def validate(self, config: DataSettings) -> None:
        """Raise :class:`unet_sep.errors.ConfigError` where ``config`` cannot describe data of this format (the
        settings common to all formats are checked already)."""

    def list_specs(self, config: DataSettings, split_name: str) -> list[TrackSpec]:
        """The tracks of the split named ``split_name``, in order, at most ``config.max_tracks``; nothing decoded."""
        raise NotImplementedError

    def caveat(self, config: DataSettings, split_name: str) -> str | None:
        """A warning about how ``config`` splits the data (logged when a split is listed), or None."""
        return None

    def empty_split_hint(self, config: DataSettings, split_name: str) -> str:
        """Added to the message when a split holds no tracks: where this format looked."""
        return ""

    def recognise(self, root: Path) -> dict[str, Any] | None:
        """The settings that read ``root`` as data of this format (``{}`` when the defaults do), or None when
        ``root`` does not look like it."""
        return None

    def describe(self, config: DataSettings, split_name: str) -> str:
        """A short name of the data and split for reports ("MUSDB18-HQ test")."""
        return f"{Path(config.root).name} {split_name}"

    def scoring_problem(self, stems: list[str]) -> str | None:
        """Why a model with these ``stems`` cannot be scored on this data's mixtures (they do not add up to the
        mixture), or None."""
        return None
