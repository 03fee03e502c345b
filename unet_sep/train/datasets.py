"""Training data: MUSDB18(-HQ) through ``musdb``, folders of stem files, a decode cache and an excerpt sampler.

Two kinds of data set (:class:`DataConfig`):

- ``"musdb"``: a MUSDB18 root (``.stem.mp4``) or MUSDB18-HQ root (``is_wav=True``, one WAV per source), listed
  as ``musdb.DB`` lists it, from musdb's own ``mus.yaml`` (file names, stream numbers and the official
  train/valid split, ``validation_tracks``) but without probing every file: only decoding a ``.stem.mp4`` needs
  ffmpeg/ffprobe (through stempeg, :mod:`unet_sep.musdb_support`).
  The sources are vocals, drums, bass and other; the target ``"accompaniment"`` is the sum of the sources that
  are not themselves targets.
- ``"folder"``: ``<root>/<track>/<stem>.<ext>`` in any format :func:`unet_sep.audio.read_audio` decodes, with an
  optional JSON split file (flat ``{split: [track, ...]}`` or grouped ``{group: {split: [...]}}``, such as
  MIR-1K's ``splits.json``). A missing ``accompaniment`` file is the sum of the other stem files that are not
  targets (``mixture`` files are never summed in).

:func:`load_tracks` decodes every track of a split to float32 ``[channels, samples]`` at the model's rate and
channel count, or memory-maps it from the decode cache (``cache_dir``: one ``.npy`` per track and target, keyed
by a hash of the source files' paths, mtimes and sizes and the rate and channels; written atomically).

:class:`ExcerptSampler` turns the tracks into an endless, deterministic stream of augmented training excerpts:
``excerpt(i)`` depends only on ``(seed, i)`` (and the track list), never on global random state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import operator
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unet_sep.atomic import atomic_path
from unet_sep.audio.decode import AudioDecodeError, read_audio
from unet_sep.audio.resample import resample
from unet_sep.config import ConfigError
from unet_sep.musdb_support import FFmpegMissingError, import_stempeg, musdb_setup
from unet_sep.train.augment import AugmentConfig, db_to_gain, lowpass, lowpass_cutoff_range, rms_db, synthetic_hihats

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DatasetError",
    "ExcerptSampler",
    "Track",
    "load_tracks",
    "validation_tracks",
]

logger = logging.getLogger(__name__)

KINDS = ("musdb", "folder")
SPLITS = ("train", "valid", "test")
MUSDB_SOURCES = ("vocals", "drums", "bass", "other")
ACCOMPANIMENT = "accompaniment"
# musdb split names -> (subset, musdb split); "train+valid" is the whole training subset (all 100 tracks)
MUSDB_SPLITS: dict[str, tuple[str, str | None]] = {
    "train": ("train", "train"),
    "valid": ("train", "valid"),
    "train+valid": ("train", None),
    "test": ("test", None),
}
RESERVED_STEMS = ("mixture", "linear_mixture")  # stem files that are never summed into an accompaniment
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".aif", ".aiff", ".webm",
     ".wma", ".caf", ".w64", ".au"}
)
# stems of one track whose lengths differ by at most this much (codec padding, resampling rounding) are cropped
# to the shortest; larger differences are an error
MAX_LENGTH_MISMATCH_SECONDS = 0.05
MAX_SILENCE_ATTEMPTS = 10
CACHE_VERSION = 1
MAX_DECODE_WORKERS = 8


class DatasetError(ValueError):
    """Data on disk that cannot be used as configured (missing stems, stems of different lengths, ...)."""


# --------------------------------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    """Where the training data is and how it is read; see the module docstring.

    Attributes:
        kind: "musdb" or "folder".
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
        augment: training excerpt augmentation (:class:`AugmentConfig`).
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
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a readable message if the settings cannot describe a data set."""
        if self.kind not in KINDS:
            raise ConfigError(f"data.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.root, (str, os.PathLike)) or not str(self.root):
            raise ConfigError("data.root must name the data set's folder")
        if not isinstance(self.targets, (list, tuple)) or not self.targets:
            raise ConfigError(f"data.targets must be a non-empty list of stem names, got {self.targets!r}")
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"data.targets must be distinct, got {list(self.targets)}")
        for target in self.targets:
            if not isinstance(target, str) or not target or "/" in target or "\\" in target or target.startswith("."):
                raise ConfigError(f"data.targets: {target!r} is not a usable stem name")
            if target in RESERVED_STEMS:
                raise ConfigError(f"data.targets: {target!r} is the mixture, not a stem to separate")
        for name in ("train_split", "valid_split", "test_split"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"data.{name} must be a non-empty split name, got {value!r}")
        if self.max_tracks is not None and (
            isinstance(self.max_tracks, bool) or not isinstance(self.max_tracks, int) or self.max_tracks < 1
        ):
            raise ConfigError(f"data.max_tracks must be a positive integer or null, got {self.max_tracks!r}")
        if self.kind == "musdb":
            allowed = (*MUSDB_SOURCES, ACCOMPANIMENT)
            unknown = [t for t in self.targets if t not in allowed]
            if unknown:
                raise ConfigError(
                    f"data.targets {unknown} are not MUSDB stems; use {', '.join(allowed)}"
                )
            if ACCOMPANIMENT in self.targets and all(s in self.targets for s in MUSDB_SOURCES):
                raise ConfigError(
                    "data.targets: 'accompaniment' is the sum of the MUSDB sources that are not targets, "
                    "and here every source is a target"
                )
            for name in ("train_split", "valid_split", "test_split"):
                if getattr(self, name) not in MUSDB_SPLITS:
                    raise ConfigError(
                        f"data.{name} for MUSDB must be one of {', '.join(MUSDB_SPLITS)}, got {getattr(self, name)!r}"
                    )
            if self.split_file is not None or self.split_group is not None:
                raise ConfigError("data.split_file/split_group apply to folder data sets; MUSDB uses musdb's split")
        else:
            if self.split_group is not None and self.split_file is None:
                raise ConfigError("data.split_group is set but data.split_file is not")
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError("data.augment must be an augmentation section")
        self.augment.validate()
        if self.augment.percussion_probability > 0 and self.augment.percussion_stem not in self.targets:
            raise ConfigError(
                f"data.augment.percussion_stem {self.augment.percussion_stem!r} must be one of data.targets "
                f"{list(self.targets)} (drums or accompaniment, usually)"
            )

    def split_name(self, split: str) -> str:
        """The configured name of ``split`` ("train", "valid" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return getattr(self, f"{split}_split")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["augment"]["gain_db"] = list(self.augment.gain_db)
        data["augment"]["percussion_db"] = list(self.augment.percussion_db)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataConfig":
        """Build and validate a config from a dict (e.g. JSON), rejecting unknown keys."""
        if not isinstance(data, dict):
            raise ConfigError("the data section must be an object")
        data = dict(data)
        augment = data.pop("augment", {})
        if not isinstance(augment, dict):
            raise ConfigError("data.augment must be an object")
        _reject_unknown(AugmentConfig, augment, "data.augment")
        _reject_unknown(cls, data, "data")
        config = cls(**data, augment=AugmentConfig(**augment))
        config.validate()
        return config


def _reject_unknown(cls: type, data: dict[str, Any], section: str) -> None:
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"unknown key(s) in config section {section!r}: {', '.join(unknown)}")


# --------------------------------------------------------------------------------------------------- tracks


@dataclass(eq=False)
class Track:
    """One song: its target stems as float32 ``[channels, samples]`` at the model rate, all the same length.

    The arrays may be read-only memory maps of the decode cache; a Track pickles by file name then (so
    spawned data-loader workers map the same files instead of copying them).
    """

    name: str
    sources: dict[str, np.ndarray]
    _mapped: dict[str, tuple[str, int]] = field(default_factory=dict, init=False, repr=False)

    @property
    def mixture(self) -> np.ndarray:
        """The sum of the target stems (float32), so mixture and references are always consistent."""
        arrays = list(self.sources.values())
        out = np.array(arrays[0], dtype=np.float32, copy=True)
        for array in arrays[1:]:
            out += array
        return out

    @property
    def length(self) -> int:
        return int(next(iter(self.sources.values())).shape[-1]) if self.sources else 0

    @property
    def channels(self) -> int:
        return int(next(iter(self.sources.values())).shape[0]) if self.sources else 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["sources"] = {
            name: (None if name in self._mapped else array) for name, array in self.sources.items()
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name, (path, length) in self._mapped.items():
            self.sources[name] = np.load(path, mmap_mode="r")[:, :length]


@dataclass(frozen=True)
class _Part:
    """One decodable piece of a target: an audio file, or one stream of a multi-stream ``.stem.mp4``."""

    path: Path
    stream: int | None = None

    def describe(self) -> str:
        return str(self.path) if self.stream is None else f"{self.path} (stream {self.stream})"


@dataclass
class _TrackSpec:
    name: str
    targets: dict[str, list[_Part]]  # target -> the parts summed to make it, in model order


TrackSpec = _TrackSpec  # public name: where one track's stems are on disk


def list_tracks(config: DataConfig, split: str) -> list[TrackSpec]:
    """The tracks of ``split`` ("train", "valid" or "test") without decoding anything; empty splits raise."""
    config.validate()
    split_name = config.split_name(split)
    specs = _musdb_specs(config, split_name) if config.kind == "musdb" else _folder_specs(config, split_name)
    if not specs:
        raise ConfigError(_empty_split_message(config, split, split_name))
    return specs


def load_track(spec: TrackSpec, sample_rate: int, channels: int, cache_dir: str | None = None) -> Track:
    """Decode (or map from the cache) one track listed by :func:`list_tracks`; see :func:`load_tracks`."""
    cache = _DecodeCache(Path(cache_dir).expanduser()) if cache_dir else None
    return _load_track(spec, sample_rate, channels, cache)[0]


def load_tracks(config: DataConfig, split: str, sample_rate: int, channels: int) -> list[Track]:
    """Decode (or map from the cache) every track of ``split`` ("train", "valid" or "test").

    Every target comes out as float32 ``[channels, samples]`` at ``sample_rate``: resampled with soxr, and with
    the channel policy: same count as is; ``channels == 1``: mean of the file's channels; a mono file: repeated;
    more channels than wanted: the first ``channels``; fewer (but more than one): repeated cyclically.
    Stems of one track whose lengths differ by up to 50 ms (codec padding, resampling) are cropped to the
    shortest (logged); larger differences, missing stems and empty splits raise :class:`DatasetError` or
    :class:`ConfigError` (both ``ValueError``).
    """
    split_name = config.split_name(split)
    sample_rate = _positive_int(sample_rate, "sample_rate")
    channels = _positive_int(channels, "channels")
    if not 1000 <= sample_rate <= 384000:
        raise ValueError(f"sample_rate must be in 1000..384000 Hz, got {sample_rate}")
    specs = list_tracks(config, split)

    cache = _DecodeCache(Path(config.cache_dir).expanduser()) if config.cache_dir else None
    started = time.perf_counter()
    workers = max(1, min(len(specs), os.cpu_count() or 1, MAX_DECODE_WORKERS))
    if workers == 1:
        results = [_load_track(spec, sample_rate, channels, cache) for spec in specs]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            results = list(pool.map(lambda spec: _load_track(spec, sample_rate, channels, cache), specs))
    tracks = [track for track, _ in results]
    decoded = sum(count for _, count in results)
    cached = sum(len(track.sources) for track in tracks) - decoded
    seconds = sum(track.length for track in tracks) / sample_rate
    logger.info(
        "%s split %r: %d tracks (%.1f min of audio, %d Hz, %d ch): %d stems decoded, %d mapped from the cache, "
        "in %.1f s",
        split,
        split_name,
        len(tracks),
        seconds / 60,
        sample_rate,
        channels,
        decoded,
        cached,
        time.perf_counter() - started,
    )
    return tracks


def _positive_int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def validation_tracks(config: DataConfig, sample_rate: int, channels: int) -> list[Track]:
    """The tracks of the validation split: ``load_tracks(config, "valid", ...)``."""
    return load_tracks(config, "valid", sample_rate, channels)


def _empty_split_message(config: DataConfig, split: str, split_name: str) -> str:
    message = f"the {split} split ({split_name!r}) of {config.kind} data set {config.root} holds no tracks"
    if config.kind == "musdb":
        subset = MUSDB_SPLITS[split_name][0]
        if config.is_wav:
            message += f" (is_wav=true reads {config.root}/{subset}/<track>/<source>.wav)"
        else:
            message += (
                f" (is_wav=false reads {config.root}/{subset}/*.stem.mp4; set is_wav=true for MUSDB18-HQ)"
            )
    return message


# ---------------------------------------------------------------------------------------------- listing


def _musdb_specs(config: DataConfig, split_name: str) -> list[_TrackSpec]:
    root = Path(config.root).expanduser()
    subset, musdb_split = MUSDB_SPLITS[split_name]
    if not root.is_dir():
        raise ConfigError(f"MUSDB root {root} is not a folder")
    if not (root / subset).is_dir():
        raise ConfigError(f"MUSDB root {root} has no {subset}/ folder")
    try:
        setup = musdb_setup()
    except ImportError as error:  # pragma: no cover - musdb is a dependency of the training extra
        raise ConfigError("reading MUSDB needs the 'musdb' package (pip install musdb)") from error

    names = _musdb_track_names(root / subset, config.is_wav, musdb_split, set(setup["validation_tracks"]))
    if config.max_tracks is not None:
        names = names[: config.max_tracks]
    specs = []
    for track in names:
        parts: dict[str, list[_Part]] = {}
        for target in config.targets:
            sources = [target] if target != ACCOMPANIMENT else [s for s in MUSDB_SOURCES if s not in config.targets]
            parts[target] = []
            for name in sources:
                if not config.is_wav:
                    parts[target].append(_Part(root / subset / f"{track}.stem.mp4", int(setup["stem_ids"][name])))
                    continue
                path = root / subset / track / setup["sources"][name]
                if not path.is_file():
                    raise DatasetError(f"MUSDB track {track!r} has no {name} source ({path})")
                parts[target].append(_Part(path))
        specs.append(_TrackSpec(track, parts))
    return specs


def _musdb_track_names(folder: Path, is_wav: bool, musdb_split: str | None, validation: set[str]) -> list[str]:
    """The tracks ``musdb.DB`` lists in one subset folder, in its order (sorted by name): MUSDB18-HQ's track
    folders or MUSDB18's ``<track>.stem.mp4`` files, keeping (``musdb_split="valid"``) or dropping
    (``"train"``) musdb's validation tracks; ``None`` keeps all."""
    if is_wav:
        names = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    else:
        suffix = ".stem.mp4"
        names = sorted(e.name[: -len(suffix)] for e in folder.iterdir() if e.name.endswith(suffix) and e.is_file())
    if musdb_split == "train":
        return [name for name in names if name not in validation]
    if musdb_split == "valid":
        return [name for name in names if name in validation]
    return names


def _folder_specs(config: DataConfig, split_name: str) -> list[_TrackSpec]:
    root = Path(config.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data root {root} is not a folder")
    names = _split_track_names(config, split_name, root)
    if config.max_tracks is not None:
        names = names[: config.max_tracks]
    specs = []
    for name in names:
        folder = root / name
        if not folder.is_dir():
            raise DatasetError(f"track {name!r} of split {split_name!r} is missing: {folder} is not a folder")
        stems = _stem_files(folder)
        parts: dict[str, list[_Part]] = {}
        for target in config.targets:
            if target in stems:
                parts[target] = [_Part(stems[target])]
            elif target == ACCOMPANIMENT:
                rest = [s for s in sorted(stems) if s not in config.targets and s not in RESERVED_STEMS]
                if not rest:
                    raise DatasetError(
                        f"{folder}: no accompaniment file and no other stem files to sum into one "
                        f"(found: {', '.join(sorted(stems)) or 'no audio files'})"
                    )
                parts[target] = [_Part(stems[s]) for s in rest]
            else:
                raise DatasetError(
                    f"{folder}: no {target!r} stem file (found: {', '.join(sorted(stems)) or 'no audio files'})"
                )
        specs.append(_TrackSpec(name, parts))
    return specs


def _stem_files(folder: Path) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        stem = path.name[: -len(path.suffix)]
        if stem in stems:
            raise DatasetError(f"{folder}: two files for stem {stem!r} ({stems[stem].name}, {path.name})")
        stems[stem] = path
    return stems


def _split_track_names(config: DataConfig, split_name: str, root: Path) -> list[str]:
    if config.split_file is None:
        logger.warning(
            "data.split_file is not set: every track under %s is used for the %r split "
            "(training, validation and test data overlap)",
            root,
            split_name,
        )
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    path = Path(config.split_file).expanduser()
    if not path.is_absolute() and not path.exists() and (root / path).exists():
        path = root / path
    if not path.is_file():
        raise ConfigError(f"split file {config.split_file} not found (looked in the working directory and {root})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"split file {path}: not readable JSON ({error})") from error
    if not isinstance(data, dict):
        raise ConfigError(f"split file {path}: expected a JSON object of splits")
    where = str(path)
    if config.split_group is not None:
        if config.split_group not in data or not isinstance(data[config.split_group], dict):
            groups = [k for k, v in data.items() if isinstance(v, dict)]
            raise ConfigError(
                f"split file {path} has no group {config.split_group!r}"
                + (f"; its groups are {', '.join(groups)}" if groups else " (its splits are not grouped)")
            )
        data = data[config.split_group]
        where = f"{path} (group {config.split_group!r})"
    elif any(isinstance(v, dict) for v in data.values()):
        groups = [k for k, v in data.items() if isinstance(v, dict)]
        raise ConfigError(f"split file {path} groups its splits ({', '.join(groups)}); set data.split_group")
    # "train+valid" is the union of the file's "train" and "valid" lists, unless the file names a split so
    parts = [split_name] if split_name in data else split_name.split("+")
    names = []
    for part in parts:
        if part not in data:
            raise ConfigError(f"split file {where} has no split {part!r}; it has {', '.join(map(str, data))}")
        if not isinstance(data[part], list) or not all(isinstance(n, str) and n for n in data[part]):
            raise ConfigError(f"split {part!r} of {where} must be a list of track names")
        names.extend(data[part])
    unique = list(dict.fromkeys(names))
    if len(unique) != len(names):
        logger.warning(
            "split %r of %s lists %d tracks twice; using each once", split_name, where, len(names) - len(unique)
        )
    return unique


# --------------------------------------------------------------------------------------------- decoding


def _load_track(spec: _TrackSpec, sample_rate: int, channels: int, cache: _DecodeCache | None) -> tuple[Track, int]:
    """Decode or map one track; returns the track and how many targets had to be decoded."""
    arrays: dict[str, np.ndarray] = {}
    mapped: dict[str, str] = {}
    decoded = 0
    for target, parts in spec.targets.items():
        if cache is None:
            arrays[target] = _decode_target(spec, target, parts, sample_rate, channels)
            decoded += 1
            continue
        path = cache.path(spec.name, target, parts, sample_rate, channels)
        audio = cache.load(path)
        if audio is None:
            cache.store(path, _decode_target(spec, target, parts, sample_rate, channels))
            decoded += 1
            audio = cache.load(path)
            if audio is None:  # pragma: no cover - just written
                raise DatasetError(f"cache file {path} could not be read back")
        arrays[target] = audio
        mapped[target] = str(path)

    lengths = {target: array.shape[1] for target, array in arrays.items()}
    shortest, longest = min(lengths.values()), max(lengths.values())
    if shortest == 0:
        raise DatasetError(f"track {spec.name!r}: a stem holds no audio ({_lengths(lengths)})")
    if longest != shortest:
        tolerance = _length_tolerance(sample_rate)
        if longest - shortest > tolerance:
            raise DatasetError(
                f"track {spec.name!r}: stems differ in length by {longest - shortest} samples at {sample_rate} Hz "
                f"(more than the {tolerance} tolerated): {_lengths(lengths)}"
            )
        logger.info(
            "track %r: stem lengths differ by %d samples (%s); cropped to the shortest",
            spec.name,
            longest - shortest,
            _lengths(lengths),
        )
        arrays = {target: array[:, :shortest] for target, array in arrays.items()}
    track = Track(spec.name, arrays)
    track._mapped = {target: (path, shortest) for target, path in mapped.items()}
    return track, decoded


def _lengths(lengths: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in lengths.items())


def _length_tolerance(sample_rate: int) -> int:
    return max(16, int(MAX_LENGTH_MISMATCH_SECONDS * sample_rate))


def _decode_target(spec: _TrackSpec, target: str, parts: list[_Part], sample_rate: int, channels: int) -> np.ndarray:
    """Decode the parts of one target, convert them to the model's rate and channels and sum them."""
    pieces = [_convert(_decode_part(part), sample_rate, channels, part) for part in parts]
    if len(pieces) == 1:
        return pieces[0]
    lengths = [piece.shape[1] for piece in pieces]
    shortest, longest = min(lengths), max(lengths)
    if longest != shortest:
        tolerance = _length_tolerance(sample_rate)
        described = ", ".join(f"{p.path.name} {n}" for p, n in zip(parts, lengths))
        if longest - shortest > tolerance:
            raise DatasetError(
                f"track {spec.name!r}: the files summed into {target!r} differ in length by {longest - shortest} "
                f"samples (more than the {tolerance} tolerated): {described}"
            )
        logger.info(
            "track %r: files summed into %r differ by %d samples (%s); cropped to the shortest",
            spec.name,
            target,
            longest - shortest,
            described,
        )
    out = np.array(pieces[0][:, :shortest], dtype=np.float32, copy=True)
    for piece in pieces[1:]:
        out += piece[:, :shortest]
    return out


def _decode_part(part: _Part) -> tuple[np.ndarray, int]:
    if part.stream is None:
        try:
            return read_audio(part.path)
        except AudioDecodeError as error:
            raise DatasetError(str(error)) from error  # names the file
    return _decode_stem_stream(part)


def _decode_stem_stream(part: _Part) -> tuple[np.ndarray, int]:
    """One stream of a multi-stream ``.stem.mp4``, through stempeg (ffmpeg) as musdb reads it."""
    try:
        stempeg = import_stempeg()
        audio, rate = stempeg.read_stems(
            str(part.path), stem_id=part.stream, dtype=np.float32, ffmpeg_format="f32le", always_3d=True
        )
    except FFmpegMissingError as error:  # no ffmpeg/ffprobe on PATH: one line naming the file and what is missing
        raise DatasetError(f"{part.path}: {error}") from error
    except Exception as error:  # stempeg/ffmpeg raise Warning, RuntimeError, ffmpeg.Error, ...
        raise DatasetError(f"{part.describe()}: cannot decode ({' '.join(str(error).split())})") from error
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 3:
        audio = audio[0]
    return np.ascontiguousarray(audio.T), int(round(float(rate)))


def _convert(decoded: tuple[np.ndarray, int], sample_rate: int, channels: int, part: _Part) -> np.ndarray:
    audio, rate = decoded
    if audio.ndim != 2 or audio.shape[0] < 1:
        raise DatasetError(f"{part.describe()}: decoded to an unexpected shape {audio.shape}")
    if channels < audio.shape[0]:  # reduce first: less to resample
        audio = _map_channels(audio, channels)
    audio = resample(np.ascontiguousarray(audio, dtype=np.float32), rate, sample_rate)
    audio = _map_channels(audio, channels)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _map_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    have = audio.shape[0]
    if have == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True, dtype=np.float32)
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    if have > channels:
        return audio[:channels]
    return audio[np.arange(channels) % have]


class _DecodeCache:
    """float32 ``[channels, samples]`` ``.npy`` files, one per track and target, memory-mapped when read.

    A file's name holds a hash of everything its content depends on (cache format version, the resolved paths,
    stream ids, mtimes and sizes of the source files, the rate and the channel count), so a changed source file
    gets a new name and the stale file is simply no longer used. Files are written under a temporary name and
    renamed, so an interrupted run never leaves a truncated file under a final name.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the decode cache folder {folder}: {error}") from error

    def path(self, track: str, target: str, parts: list[_Part], sample_rate: int, channels: int) -> Path:
        described = []
        for part in parts:
            try:
                stat = part.path.stat()
            except OSError as error:
                raise DatasetError(f"{part.path}: cannot read ({error.strerror or error})") from error
            described.append([str(part.path.resolve()), part.stream, stat.st_mtime_ns, stat.st_size])
        key = json.dumps(
            {"version": CACHE_VERSION, "rate": sample_rate, "channels": channels, "parts": described},
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        readable = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{track}.{target}")[:60]
        return self.folder / f"{readable}.{digest}.npy"

    def load(self, path: Path) -> np.ndarray | None:
        if not path.is_file():
            return None
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as error:
            logger.warning("cache file %s is unreadable (%s); decoding again", path, error)
            return None
        if array.dtype != np.float32 or array.ndim != 2:
            logger.warning("cache file %s holds %s %s, not float32 [channels, samples]; decoding again",
                           path, array.dtype, array.shape)
            return None
        return array

    def store(self, path: Path, audio: np.ndarray) -> None:
        with atomic_path(path, ".tmp") as temporary, open(temporary, "xb") as handle:
            np.save(handle, np.ascontiguousarray(audio, dtype=np.float32))
            handle.flush()
            os.fsync(handle.fileno())


# --------------------------------------------------------------------------------------------- sampling


class ExcerptSampler:
    """Deterministic random training excerpts.

    ``excerpt(index)`` is a pure function of ``(seed, index)`` (given the same tracks, in the same order, and
    settings): every random number comes from ``np.random.default_rng([seed, index, attempt])``. A run resumed at
    step k therefore sees exactly the data an uninterrupted run would, and DDP ranks can take disjoint index
    ranges. The sampler holds no mutable state, so it can be used from several threads at once.

    One excerpt: a track is drawn with probability proportional to its length (every second of audio is equally
    likely to be picked, and short clips are not over-represented), and an offset uniform in
    ``[0, track.length - length]`` (a track shorter than ``length`` is zero-padded at the end). With remix (with
    probability ``remix_probability``) every target draws its own track and offset. While ``skip_silent`` is on
    and any target of the draw is near-silent (RMS before gain below ``silence_db``), the excerpt is drawn again
    with the next ``attempt``, at most 10 attempts; the last draw is kept. Then per stem: channel swap
    (stereo, p=0.5) and a random gain; then, with ``percussion_probability``, synthetic hi-hats added to
    ``percussion_stem``; then, with ``lowpass_probability``, one random low-pass of all stems. No random
    number is drawn for an augmentation whose probability is 0, so recipes that leave one off keep the exact
    data they had before it existed.
    """

    def __init__(
        self,
        tracks: list[Track],
        length: int,
        targets: list[str],
        augment: AugmentConfig,
        seed: int,
        sample_rate: int,
    ) -> None:
        if not tracks:
            raise ValueError("ExcerptSampler needs at least one track")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"excerpt length must be a positive number of samples, got {length!r}")
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"targets must be a non-empty list of distinct stems, got {targets!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        augment.validate()
        if augment.percussion_probability > 0 and augment.percussion_stem not in targets:
            raise ValueError(f"augment.percussion_stem {augment.percussion_stem!r} is not one of the targets {targets}")
        channels = None
        for track in tracks:
            missing = [t for t in targets if t not in track.sources]
            if missing:
                raise ValueError(f"track {track.name!r} has no {', '.join(missing)} stem")
            for target in targets:
                shape = track.sources[target].shape
                if len(shape) != 2 or shape[1] != track.length:
                    raise ValueError(f"track {track.name!r}: stems must be [channels, samples] of equal length")
                if channels is None:
                    channels = shape[0]
                elif shape[0] != channels:
                    raise ValueError(f"track {track.name!r} has {shape[0]} channels, other tracks {channels}")
        lengths = np.array([track.length for track in tracks], dtype=np.float64)
        if lengths.sum() <= 0:
            raise ValueError("all tracks are empty")
        self.tracks = list(tracks)
        self.length = int(length)
        self.targets = list(targets)
        self.augment = augment
        self.seed = int(seed)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self._cumulative = np.cumsum(lengths / lengths.sum())
        self._cumulative[-1] = 1.0
        self._lowpass_range = lowpass_cutoff_range(self.sample_rate)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one excerpt: ``(n_targets, channels, length)``."""
        return len(self.targets), self.channels, self.length

    def excerpt(self, index: int) -> np.ndarray:
        """float32 ``[n_targets, channels, length]``: the augmented target stems of excerpt ``index``.

        The mixture is their sum (``excerpt(i).sum(axis=0)``).
        """
        out = np.empty(self.shape, dtype=np.float32)
        self._fill(out, index)
        return out

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """float32 ``[batch, n_targets, channels, length]``: ``excerpt(i)`` for each index."""
        indices = list(indices)
        out = np.empty((len(indices), *self.shape), dtype=np.float32)
        for row, index in enumerate(indices):
            self._fill(out[row], index)
        return out

    # one draw: per target, (track number, offset)
    def _pick(self, rng: np.random.Generator) -> tuple[int, int]:
        number = min(int(np.searchsorted(self._cumulative, rng.random(), side="right")), len(self.tracks) - 1)
        span = max(self.tracks[number].length - self.length, 0)
        return number, int(rng.integers(0, span + 1))

    def _draw(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        augment = self.augment
        if augment.remix and rng.random() < augment.remix_probability:
            return [self._pick(rng) for _ in self.targets]
        return [self._pick(rng)] * len(self.targets)

    def _segment(self, target: str, pick: tuple[int, int]) -> np.ndarray:
        number, offset = pick
        return self.tracks[number].sources[target][:, offset : offset + self.length]

    def _silent(self, picks: list[tuple[int, int]]) -> bool:
        threshold = self.augment.silence_db
        return any(
            rms_db(self._segment(target, pick), length=self.length) < threshold
            for target, pick in zip(self.targets, picks)
        )

    def _fill(self, out: np.ndarray, index: int) -> None:
        index = operator.index(index)
        if index < 0:
            raise ValueError(f"excerpt index must be >= 0, got {index}")
        augment = self.augment
        attempts = MAX_SILENCE_ATTEMPTS if augment.skip_silent else 1
        for attempt in range(attempts):
            rng = np.random.default_rng([self.seed, index, attempt])
            picks = self._draw(rng)
            if not augment.skip_silent or not self._silent(picks):
                break
        swap_ok = augment.channel_swap and self.channels == 2
        gain_on = augment.gain_enabled
        low, high = float(augment.gain_db[0]), float(augment.gain_db[1])
        for row, (target, pick) in enumerate(zip(self.targets, picks)):
            segment = self._segment(target, pick)
            if swap_ok and rng.random() < 0.5:
                segment = segment[::-1]
            n = segment.shape[1]
            out[row, :, :n] = segment
            if n < self.length:
                out[row, :, n:] = 0.0
            if gain_on:
                out[row] *= np.float32(db_to_gain(rng.uniform(low, high)))
        if augment.percussion_probability > 0 and rng.random() < augment.percussion_probability:
            row = self.targets.index(augment.percussion_stem)
            level = rms_db(out[row])
            if math.isfinite(level):
                level += rng.uniform(float(augment.percussion_db[0]), float(augment.percussion_db[1]))
                hats = synthetic_hihats(rng, self.length, self.sample_rate, self.channels)
                out[row] += np.float32(db_to_gain(level)) * hats
        if augment.lowpass_probability > 0 and self._lowpass_range is not None:
            if rng.random() < augment.lowpass_probability:
                cutoff = rng.uniform(*self._lowpass_range)
                out[...] = lowpass(out, self.sample_rate, cutoff)
