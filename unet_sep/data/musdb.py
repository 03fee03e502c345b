"""MUSDB18 and MUSDB18-HQ (``kind: "musdb"``), listed as ``musdb.DB`` lists them but without probing every file.

A MUSDB18 root holds ``train/`` and ``test/`` with one ``<track>.stem.mp4`` per track (streams: mixture, drums,
bass, other, vocals); a MUSDB18-HQ root (``is_wav``) holds ``<subset>/<track>/<source>.wav``. The track names,
the stream numbers, the WAV file names and the official validation split come from musdb's own ``mus.yaml``
(:func:`unet_sep.data.musdb_support.musdb_setup`); only decoding a ``.stem.mp4`` needs ffmpeg/ffprobe. The
sources are vocals, drums, bass and other; the target ``"accompaniment"`` is the sum of the sources that are
not themselves targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unet_sep.data.musdb_support import musdb_setup
from unet_sep.data.source import DataFormat, DataSettings
from unet_sep.data.tracks import ACCOMPANIMENT, DatasetError, Part, TrackSpec
from unet_sep.errors import ConfigError

__all__ = ["MUSDB_SOURCES", "MUSDB_SPLITS", "MusdbFormat"]

MUSDB_SOURCES = ("vocals", "drums", "bass", "other")
# musdb split names -> (subset, musdb split); "train+valid" is the whole training subset (all 100 tracks)
MUSDB_SPLITS: dict[str, tuple[str, str | None]] = {
    "train": ("train", "train"),
    "valid": ("train", "valid"),
    "train+valid": ("train", None),
    "test": ("test", None),
}
STEM_SUFFIX = ".stem.mp4"
SPLIT_SETTINGS = ("train_split", "valid_split", "test_split")


class MusdbFormat(DataFormat):
    """MUSDB18 (``.stem.mp4``) or MUSDB18-HQ (``is_wav``): musdb's subsets and split, its four sources."""

    name = "musdb"
    settings = ("is_wav",)
    split_names = ("test", "train", "valid", "train+valid")

    def validate(self, config: DataSettings) -> None:
        allowed = (*MUSDB_SOURCES, ACCOMPANIMENT)
        unknown = [t for t in config.targets if t not in allowed]
        if unknown:
            raise ConfigError(f"data.targets {unknown} are not MUSDB stems; use {', '.join(allowed)}")
        if ACCOMPANIMENT in config.targets and all(s in config.targets for s in MUSDB_SOURCES):
            raise ConfigError(
                "data.targets: 'accompaniment' is the sum of the MUSDB sources that are not targets, "
                "and here every source is a target"
            )
        for name in SPLIT_SETTINGS:
            if getattr(config, name) not in MUSDB_SPLITS:
                raise ConfigError(
                    f"data.{name} for MUSDB must be one of {', '.join(MUSDB_SPLITS)}, got {getattr(config, name)!r}"
                )
        if config.split_file is not None or config.split_group is not None:
            raise ConfigError("data.split_file/split_group apply to folder data sets; MUSDB uses musdb's split")

    def list_specs(self, config: DataSettings, split_name: str) -> list[TrackSpec]:
        root = Path(config.root).expanduser()
        subset, musdb_split = MUSDB_SPLITS[split_name]
        if not root.is_dir():
            raise ConfigError(f"MUSDB root {root} is not a folder")
        if not (root / subset).is_dir():
            raise ConfigError(f"MUSDB root {root} has no {subset}/ folder")
        setup = musdb_setup()
        names = track_names(root / subset, config.is_wav, musdb_split, set(setup["validation_tracks"]))
        if config.max_tracks is not None:
            names = names[: config.max_tracks]
        return [_spec(root / subset, track, config, setup) for track in names]

    def empty_split_hint(self, config: DataSettings, split_name: str) -> str:
        subset = MUSDB_SPLITS[split_name][0]
        if config.is_wav:
            return f" (is_wav=true reads {config.root}/{subset}/<track>/<source>.wav)"
        return f" (is_wav=false reads {config.root}/{subset}/*.stem.mp4; set is_wav=true for MUSDB18-HQ)"

    def recognise(self, root: Path) -> dict[str, Any] | None:
        """A folder with ``train/`` or ``test/`` holding ``.stem.mp4`` files (MUSDB18) or track folders with a
        ``mixture.wav`` (MUSDB18-HQ)."""
        for subset in (root / "test", root / "train"):
            if not subset.is_dir():
                continue
            entries = sorted(subset.iterdir())
            if any(e.name.endswith(STEM_SUFFIX) and e.is_file() for e in entries):
                return {"is_wav": False}
            if any((e / "mixture.wav").is_file() for e in entries if e.is_dir()):
                return {"is_wav": True}
        return None

    def describe(self, config: DataSettings, split_name: str) -> str:
        return f"MUSDB18{'-HQ' if config.is_wav else ''} {split_name}"

    def scoring_problem(self, stems: list[str]) -> str | None:
        allowed = (*MUSDB_SOURCES, ACCOMPANIMENT)
        unknown = [s for s in stems if s not in allowed]
        if unknown:
            return f"model stem(s) {', '.join(unknown)} are not MUSDB stems ({', '.join(allowed)})"
        if ACCOMPANIMENT not in stems and not all(s in stems for s in MUSDB_SOURCES):
            return (f"the model's stems ({', '.join(stems)}) do not add up to the MUSDB mixture "
                    "(it needs all four sources or an accompaniment)")
        return None


def track_names(folder: Path, is_wav: bool, musdb_split: str | None, validation: set[str]) -> list[str]:
    """The tracks ``musdb.DB`` lists in one subset folder, in its order (sorted by name): MUSDB18-HQ's track
    folders or MUSDB18's ``<track>.stem.mp4`` files, keeping (``musdb_split="valid"``) or dropping
    (``"train"``) musdb's validation tracks; ``None`` keeps all."""
    if is_wav:
        names = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    else:
        names = sorted(e.name[: -len(STEM_SUFFIX)] for e in folder.iterdir()
                       if e.name.endswith(STEM_SUFFIX) and e.is_file())
    if musdb_split == "train":
        return [name for name in names if name not in validation]
    if musdb_split == "valid":
        return [name for name in names if name in validation]
    return names


def _spec(folder: Path, track: str, config: DataSettings, setup: dict[str, Any]) -> TrackSpec:
    """Where the sources of each target of one track are: streams of its ``.stem.mp4`` or WAV files."""
    parts: dict[str, list[Part]] = {}
    for target in config.targets:
        sources = [target] if target != ACCOMPANIMENT else [s for s in MUSDB_SOURCES if s not in config.targets]
        parts[target] = []
        for name in sources:
            if not config.is_wav:
                parts[target].append(Part(folder / f"{track}{STEM_SUFFIX}", int(setup["stem_ids"][name])))
                continue
            path = folder / track / setup["sources"][name]
            if not path.is_file():
                raise DatasetError(f"MUSDB track {track!r} has no {name} source ({path})")
            parts[target].append(Part(path))
    return TrackSpec(track, parts)
