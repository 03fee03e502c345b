"""The track model: where a track's stems are on disk (:class:`TrackSpec` of :class:`Part`) and its decoded stems
(:class:`Track`), with :func:`mix`, the one definition of a mixture as the sum of its sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["ACCOMPANIMENT", "RESERVED_STEMS", "DatasetError", "Part", "Track", "TrackSpec", "mix"]

ACCOMPANIMENT = "accompaniment"  # the target that is the sum of the sources that are not targets themselves
RESERVED_STEMS = ("mixture", "linear_mixture")  # stem files that are never summed into an accompaniment


class DatasetError(ValueError):
    """Data on disk that cannot be used as configured (missing stems, stems of different lengths, ...)."""


def mix(sources: Mapping[str, np.ndarray]) -> np.ndarray:
    """The sum of the sources, float32 ``[channels, samples]`` (a new array; the sources are left as they are)."""
    arrays = list(sources.values())
    if not arrays:
        raise ValueError("no sources to mix")
    out = np.array(arrays[0], dtype=np.float32, copy=True)
    for array in arrays[1:]:
        out += array
    return out


@dataclass(frozen=True)
class Part:
    """One decodable piece of a target: an audio file, or one stream of a multi-stream ``.stem.mp4``."""

    path: Path
    stream: int | None = None

    def describe(self) -> str:
        return str(self.path) if self.stream is None else f"{self.path} (stream {self.stream})"


@dataclass
class TrackSpec:
    """Where one track's stems are on disk: target -> the parts summed to make it, in model order."""

    name: str
    targets: dict[str, list[Part]]


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
        return mix(self.sources)

    @property
    def length(self) -> int:
        return int(next(iter(self.sources.values())).shape[-1]) if self.sources else 0

    @property
    def channels(self) -> int:
        return int(next(iter(self.sources.values())).shape[0]) if self.sources else 0

    def map_from(self, files: Mapping[str, tuple[str, int]]) -> None:
        """Record that stems were memory-mapped from ``files`` (target -> (``.npy`` path, samples used)), so the
        track pickles by file name."""
        self._mapped = dict(files)

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
