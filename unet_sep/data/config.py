"""Where a data set is and how it is read: :class:`DataConfig` (a recipe's ``data`` section)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from unet_sep.data.formats import data_format
from unet_sep.data.source import DataFormat
from unet_sep.data.tracks import RESERVED_STEMS
from unet_sep.errors import ConfigError
from unet_sep.fields import build_section

__all__ = ["SPLITS", "DataConfig"]

SPLITS = ("train", "valid", "test")


@dataclass
class DataConfig:
    """Where the data is and how it is read.

    Attributes:
        kind: the data set format, a name registered in :mod:`unet_sep.data.formats`: "musdb"
            (:mod:`unet_sep.data.musdb`) or "folder" (:mod:`unet_sep.data.folders`).
        root: MUSDB18(-HQ) root, or a folder of ``<root>/<track>/<stem>.<ext>``.
        is_wav: musdb: MUSDB18-HQ (a WAV per source) instead of ``.stem.mp4``.
        targets: output stems, in model order. musdb: any of vocals, drums, bass, other, accompaniment.
        train_split, valid_split, test_split: musdb: one of "train" (subset train, musdb split train),
            "valid" (subset train, musdb's official validation tracks), "train+valid" (the whole train subset)
            and "test" (subset test). folder: keys of the split file, or keys joined by "+" for their union
            (e.g. "train+valid" to retrain on the validation tracks too once the settings are chosen).
        split_file: folder: JSON ``{split: [track, ...]}`` or ``{group: {split: [...]}}``; a relative path is
            looked up from the working directory, then under ``root``. None: every track is in every split (a
            warning is logged).
        split_group: folder: the top-level group of a grouped split file (e.g. "singers" for MIR-1K).
        cache_dir: decode once to float32 ``.npy`` files here and memory-map them later; None decodes into RAM
            on every run.
        max_tracks: use at most this many tracks per split (the first ones, in split-file or musdb order).
    """

    kind: str = "folder"
    root: str = ""
    is_wav: bool = False
    targets: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    train_split: str = "train"
    valid_split: str = "valid"
    test_split: str = "test"
    split_file: str | None = None
    split_group: str | None = None
    cache_dir: str | None = None
    max_tracks: int | None = None

    @property
    def format(self) -> DataFormat:
        """The registered format of :attr:`kind`."""
        return data_format(self.kind)

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a readable message if the settings cannot describe a data set."""
        source = self.format
        if not isinstance(self.root, (str, os.PathLike)) or not str(self.root):
            raise ConfigError("data.root must name the data set's folder")
        self._validate_targets()
        for name in ("train_split", "valid_split", "test_split"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"data.{name} must be a non-empty split name, got {value!r}")
        if self.max_tracks is not None and (
            isinstance(self.max_tracks, bool) or not isinstance(self.max_tracks, int) or self.max_tracks < 1
        ):
            raise ConfigError(f"data.max_tracks must be a positive integer or null, got {self.max_tracks!r}")
        source.validate(self)

    def _validate_targets(self) -> None:
        if not isinstance(self.targets, (list, tuple)) or not self.targets:
            raise ConfigError(f"data.targets must be a non-empty list of stem names, got {self.targets!r}")
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"data.targets must be distinct, got {list(self.targets)}")
        for target in self.targets:
            if not isinstance(target, str) or not target or "/" in target or "\\" in target or target.startswith("."):
                raise ConfigError(f"data.targets: {target!r} is not a usable stem name")
            if target in RESERVED_STEMS:
                raise ConfigError(f"data.targets: {target!r} is the mixture, not a stem to separate")

    def split_name(self, split: str) -> str:
        """The configured name of ``split`` ("train", "valid" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return getattr(self, f"{split}_split")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON values (tuples as lists), in field order."""
        return _as_json(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataConfig":
        """Build and validate a config from a dict (e.g. JSON): every value is checked against its field's type,
        and an unknown key is a :class:`ConfigError` naming it (:func:`unet_sep.fields.build_section`)."""
        config = build_section(cls, data, "data")
        config.validate()
        return config


def _as_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(item) for item in value]
    return value
