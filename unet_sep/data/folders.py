"""Folders of stem files (``kind: "folder"``): ``<root>/<track>/<stem>.<ext>``, with an optional split file.

Any file whose extension is in :data:`unet_sep.audio.formats.AUDIO_EXTENSIONS` is a stem, named by the file
name without the extension. The split file is JSON, flat ``{split: [track, ...]}`` or grouped
``{group: {split: [...]}}`` (MIR-1K's ``splits.json``); a split name ``"a+b"`` that the file does not define
is the union of its splits ``a`` and ``b``. A missing ``accompaniment`` file is the sum of the other stem files
that are not targets (``mixture`` files are never summed in). Without a split file every track is in every split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from unet_sep.audio.formats import AUDIO_EXTENSIONS
from unet_sep.data.source import DataFormat, DataSettings
from unet_sep.data.tracks import ACCOMPANIMENT, RESERVED_STEMS, DatasetError, Part, TrackSpec
from unet_sep.errors import ConfigError
from unet_sep.fields import read_json

__all__ = ["FolderFormat", "stem_files"]

logger = logging.getLogger(__name__)


class FolderFormat(DataFormat):
    """A folder of track folders of stem files, split by an optional JSON split file."""

    name = "folder"
    settings = ("split_file", "split_group")
    split_names = None

    def validate(self, config: DataSettings) -> None:
        if config.split_group is not None and config.split_file is None:
            raise ConfigError("data.split_group is set but data.split_file is not")

    def list_specs(self, config: DataSettings, split_name: str) -> list[TrackSpec]:
        root = Path(config.root).expanduser()
        if not root.is_dir():
            raise ConfigError(f"data root {root} is not a folder")
        if config.split_file is None:
            names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        else:
            names = split_track_names(config.split_file, config.split_group, split_name, root)
        if config.max_tracks is not None:
            names = names[: config.max_tracks]
        return [_spec(root, name, split_name, config.targets) for name in names]

    def caveat(self, config: DataSettings, split_name: str) -> str | None:
        if config.split_file is not None:
            return None
        return (f"data.split_file is not set: every track under {Path(config.root).expanduser()} is used for the "
                f"{split_name!r} split (training, validation and test data overlap)")

    def recognise(self, root: Path) -> dict[str, Any] | None:
        """A folder with at least one track folder holding an audio file."""
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and stem_files(folder, strict=False):
                return {}
        return None

    def describe(self, config: DataSettings, split_name: str) -> str:
        group = f"{config.split_group}/" if config.split_group else ""
        return f"{Path(config.root).expanduser().name} {group}{split_name}"


def _spec(root: Path, name: str, split_name: str, targets: list[str]) -> TrackSpec:
    """The stem files of one track folder that make each target."""
    folder = root / name
    if not folder.is_dir():
        raise DatasetError(f"track {name!r} of split {split_name!r} is missing: {folder} is not a folder")
    stems = stem_files(folder)
    found = ", ".join(sorted(stems)) or "no audio files"
    parts: dict[str, list[Part]] = {}
    for target in targets:
        if target in stems:
            parts[target] = [Part(stems[target])]
        elif target == ACCOMPANIMENT:
            rest = [s for s in sorted(stems) if s not in targets and s not in RESERVED_STEMS]
            if not rest:
                raise DatasetError(f"{folder}: no accompaniment file and no other stem files to sum into one "
                                   f"(found: {found})")
            parts[target] = [Part(stems[s]) for s in rest]
        else:
            raise DatasetError(f"{folder}: no {target!r} stem file (found: {found})")
    return TrackSpec(name, parts)


def stem_files(folder: Path, strict: bool = True) -> dict[str, Path]:
    """``{stem: path}`` of the audio files in one track folder; two files for one stem raise
    :class:`DatasetError` (with ``strict``; else the first is kept)."""
    stems: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        stem = path.name[: -len(path.suffix)]
        if stem in stems:
            if strict:
                raise DatasetError(f"{folder}: two files for stem {stem!r} ({stems[stem].name}, {path.name})")
            continue
        stems[stem] = path
    return stems


def split_track_names(split_file: str, group: str | None, split_name: str, root: Path) -> list[str]:
    """The tracks a split file lists for ``split_name`` (in file order, each once); a relative ``split_file``
    is looked up from the working directory, then under ``root``."""
    path = Path(split_file).expanduser()
    if not path.is_absolute() and not path.exists() and (root / path).exists():
        path = root / path
    if not path.is_file():
        raise ConfigError(f"split file {split_file} not found (looked in the working directory and {root})")
    data = read_json(path, "split file", shape="a JSON object of splits")
    splits, where = _group(data, group, path)
    # "train+valid" is the union of the file's "train" and "valid" lists, unless the file names a split so
    parts = [split_name] if split_name in splits else split_name.split("+")
    names = []
    for part in parts:
        if part not in splits:
            raise ConfigError(f"split file {where} has no split {part!r}; it has {', '.join(map(str, splits))}")
        if not isinstance(splits[part], list) or not all(isinstance(n, str) and n for n in splits[part]):
            raise ConfigError(f"split {part!r} of {where} must be a list of track names")
        names.extend(splits[part])
    unique = list(dict.fromkeys(names))
    if len(unique) != len(names):
        logger.warning(
            "split %r of %s lists %d tracks twice; using each once", split_name, where, len(names) - len(unique)
        )
    return unique


def _group(data: dict[str, Any], group: str | None, path: Path) -> tuple[dict[str, Any], str]:
    """The splits of ``group`` in a split file (the whole file when not grouped) and how to name them."""
    groups = [k for k, v in data.items() if isinstance(v, dict)]
    if group is None:
        if groups:
            raise ConfigError(f"split file {path} groups its splits ({', '.join(groups)}); set data.split_group")
        return data, str(path)
    if group not in data or not isinstance(data[group], dict):
        raise ConfigError(
            f"split file {path} has no group {group!r}"
            + (f"; its groups are {', '.join(groups)}" if groups else " (its splits are not grouped)")
        )
    return data[group], f"{path} (group {group!r})"
