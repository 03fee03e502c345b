"""Listing a split's tracks and decoding them to the model's rate and channel count (or mapping them from the
decode cache, :mod:`unet_sep.data.cache`)."""

from __future__ import annotations

import logging
import operator
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from unet_sep.audio.decode import AudioDecodeError, open_audio, read_audio
from unet_sep.audio.resample import resample
from unet_sep.data.cache import DecodeCache
from unet_sep.data.config import DataConfig
from unet_sep.data.musdb_support import FFmpegMissingError, read_stem_stream
from unet_sep.data.tracks import DatasetError, Part, Track, TrackSpec, mix
from unet_sep.errors import ConfigError, one_line
from unet_sep.extras import MissingExtraError

__all__ = ["list_tracks", "load_track", "load_tracks", "probe_track"]

logger = logging.getLogger(__name__)

# stems of one track whose lengths differ by at most this much (codec padding, resampling rounding) are cropped
# to the shortest; larger differences are an error
MAX_LENGTH_MISMATCH_SECONDS = 0.05
MAX_DECODE_WORKERS = 8


def list_tracks(config: DataConfig, split: str, quiet: bool = False) -> list[TrackSpec]:
    """The tracks of ``split`` ("train", "valid" or "test") without decoding anything; empty splits raise.

    The format's caveat about the split (such as a folder without a split file, whose splits overlap) is logged
    as a warning unless ``quiet``.
    """
    config.validate()
    split_name = config.split_name(split)
    source = config.format
    caveat = source.caveat(config, split_name)
    if caveat and not quiet:
        logger.warning("%s", caveat)
    specs = source.list_specs(config, split_name)
    if not specs:
        raise ConfigError(f"the {split} split ({split_name!r}) of {config.kind} data set {config.root} holds no "
                          f"tracks{source.empty_split_hint(config, split_name)}")
    return specs


def load_track(spec: TrackSpec, sample_rate: int, channels: int) -> Track:
    """Decode one track listed by :func:`list_tracks` (no cache); see :func:`load_tracks`."""
    return _load_track(spec, sample_rate, channels, None)[0]


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

    cache = DecodeCache(Path(config.cache_dir).expanduser()) if config.cache_dir else None
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


def probe_track(spec: TrackSpec) -> tuple[int, int]:
    """Sample rate and channel count of the first file of a track (the data set's own format), read from its
    header; :class:`DatasetError` naming the file when it cannot be opened."""
    part = next(iter(spec.targets.values()))[0]
    try:
        info = open_audio(part.path).info
    except AudioDecodeError as error:
        raise DatasetError(str(error)) from error  # names the file
    return int(info.sample_rate), int(info.channels)


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


def _load_track(spec: TrackSpec, sample_rate: int, channels: int, cache: DecodeCache | None) -> tuple[Track, int]:
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
    shortest = _common_length(spec, arrays, sample_rate)
    if any(array.shape[1] != shortest for array in arrays.values()):
        arrays = {target: array[:, :shortest] for target, array in arrays.items()}
    track = Track(spec.name, arrays)
    track.map_from({target: (path, shortest) for target, path in mapped.items()})
    return track, decoded


def _common_length(spec: TrackSpec, arrays: dict[str, np.ndarray], sample_rate: int) -> int:
    """The length the targets of one track are cropped to: the shortest, when all are within the tolerance."""
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
    return shortest


def _lengths(lengths: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in lengths.items())


def _length_tolerance(sample_rate: int) -> int:
    return max(16, int(MAX_LENGTH_MISMATCH_SECONDS * sample_rate))


def _decode_target(spec: TrackSpec, target: str, parts: list[Part], sample_rate: int, channels: int) -> np.ndarray:
    """Decode the parts of one target, convert them to the model's rate and channels and sum them."""
    pieces = [_convert(_decode_part(part), sample_rate, channels, part) for part in parts]
    if len(pieces) == 1:
        return pieces[0]
    lengths = [piece.shape[1] for piece in pieces]
    shortest, longest = min(lengths), max(lengths)
    if longest != shortest:
        tolerance = _length_tolerance(sample_rate)
        described = ", ".join(f"{p.path.name} {n}" for p, n in zip(parts, lengths, strict=True))
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
    return mix({str(index): piece[:, :shortest] for index, piece in enumerate(pieces)})  # parts may share a name


def _decode_part(part: Part) -> tuple[np.ndarray, int]:
    if part.stream is None:
        try:
            return read_audio(part.path)
        except AudioDecodeError as error:
            raise DatasetError(str(error)) from error  # names the file
    try:
        return read_stem_stream(part.path, part.stream)
    except FFmpegMissingError as error:  # no ffmpeg/ffprobe on PATH: one line naming the file and what is missing
        raise DatasetError(f"{part.path}: {error}") from error
    except MissingExtraError:
        raise
    except Exception as error:  # stempeg/ffmpeg raise Warning, RuntimeError, ffmpeg.Error, ...
        raise DatasetError(f"{part.describe()}: cannot decode ({one_line(error)})") from error


def _convert(decoded: tuple[np.ndarray, int], sample_rate: int, channels: int, part: Part) -> np.ndarray:
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
