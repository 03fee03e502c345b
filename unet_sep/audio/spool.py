"""A song's stems kept as float32 on disk until the song is done, for encoders that need the whole song first: the
one gain per song of ``--clip-mode rescale`` (:func:`~unet_sep.audio.encode.rescale_gain`) is known only once its
peak is, and memory must not grow with the song's length.

The spool lies beside the song's outputs under a name of :func:`~unet_sep.atomic.temporary_path` (so a killed
run's spool is a leftover the next run removes), and its failures are worded by
:func:`~unet_sep.audio.encode.write_failure`, naming the output rather than the spool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from unet_sep.atomic import temporary_path
from unet_sep.audio.encode import reported_as, write_failure


class StemSpool:
    """Appends ``[width, n]`` float32 blocks (every written stem's channels, stacked) to a raw file beside
    ``beside`` (an output path, named in errors) and tracks their peak; :meth:`blocks` reads them back."""

    def __init__(self, beside: Path, width: int) -> None:
        self.target = Path(beside)
        self.path = temporary_path(self.target.with_name(self.target.name + ".spool"))
        self.width = width
        self.frames = 0
        self.peak = 0.0
        with reported_as(self.target, self.path):
            self._file = open(self.path, "x+b")

    def write(self, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block.T, dtype=np.float32)  # [n, width]: one frame after another
        if data.size == 0:
            return
        self.peak = max(self.peak, float(np.abs(data).max()))
        with reported_as(self.target, self.path):
            self._file.write(data.data.cast("B"))
        self.frames += data.shape[0]

    def blocks(self, frames: int) -> Iterator[np.ndarray]:
        """The spooled samples again, ``[width, <= frames]`` at a time."""
        with reported_as(self.target, self.path):
            self._file.flush()
            self._file.seek(0)
        done = 0
        while done < self.frames:
            count = min(frames, self.frames - done)
            data = np.empty((count, self.width), np.float32)
            with reported_as(self.target, self.path):
                got = self._file.readinto(data.data.cast("B"))
            if got != data.nbytes:
                raise write_failure(self.target, OSError(f"its spool ended after {done} of {self.frames} frames"))
            done += count
            yield data.T

    def remove(self) -> None:
        """Close and delete the spool."""
        try:
            self._file.close()
        except OSError:  # a full disk fails the flush; the file is deleted anyway
            pass
        self.path.unlink(missing_ok=True)

