"""The decode cache: each track's targets decoded once to float32 ``.npy`` files, memory-mapped afterwards."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from unet_sep.atomic import atomic_path
from unet_sep.data.tracks import DatasetError, Part
from unet_sep.errors import ConfigError

__all__ = ["CACHE_VERSION", "DecodeCache"]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


class DecodeCache:
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

    def path(self, track: str, target: str, parts: list[Part], sample_rate: int, channels: int) -> Path:
        """The cache file of one target of one track at ``sample_rate`` and ``channels``."""
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
        """The cached array, memory-mapped read-only; None when absent or unusable (a warning says why)."""
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
        """Write ``audio`` as float32 to ``path`` atomically."""
        with atomic_path(path, ".tmp") as temporary, open(temporary, "xb") as handle:
            np.save(handle, np.ascontiguousarray(audio, dtype=np.float32))
            handle.flush()
            os.fsync(handle.fileno())
