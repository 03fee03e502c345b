"""The samples of a running job's stems as they are written, and every stem's samples read the same way whether
the job runs or is done.

The file pipeline hands each block it encodes to :meth:`PartialStems.append` (its writer's
:data:`~unet_sep.separate.writer.SamplesHook`); the block is appended to ``partial/<stem>.f32`` in the job's folder
(float32, interleaved by channel) and only then counted, so a reader never sees a sample that is not all there.
Once the job is done its stems are read from the final WAVs (:func:`read_samples`), and the partial files go.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np

from unet_sep.serve.jobs import PARTIAL_FOLDER, STEMS_FOLDER

FLOAT_BYTES = 4


class PartialStems:
    """The stems of one running job so far: ``stems`` (names, in order) of ``channels`` channels each, under
    ``folder/partial``. :attr:`available` counts samples per channel written to every stem."""

    def __init__(self, folder: Path, stems: list[str], channels: int) -> None:
        self.folder = folder / PARTIAL_FOLDER
        self.stems = list(stems)
        self.channels = channels
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files = {stem: (self.folder / f"{stem}.f32").open("wb") for stem in self.stems}
        self._lock = threading.Lock()
        self.available = 0
        self.closed = False

    def append(self, _index: int, blocks: dict[str, np.ndarray]) -> None:
        """Append one block per stem (``[channels, n]`` float32), then count it."""
        count = 0
        for stem, block in blocks.items():
            data = np.ascontiguousarray(block.T, dtype="<f4")
            self._files[stem].write(data.tobytes())
            self._files[stem].flush()
            count = data.shape[0]
        with self._lock:
            self.available += count

    def read(self, stem: str, start: int, count: int) -> bytes:
        """Samples ``start`` to ``start + count`` of ``stem`` (fewer where not written yet), interleaved float32."""
        with self._lock:
            stop = min(self.available, start + count)
            if stop <= start or self.closed:
                return b""
            with (self.folder / f"{stem}.f32").open("rb") as handle:
                handle.seek(start * self.channels * FLOAT_BYTES)
                return handle.read((stop - start) * self.channels * FLOAT_BYTES)

    def close(self) -> None:
        """The job ended: its samples are now read from its stems (or it failed); the partial files go."""
        with self._lock:
            self.closed = True
            for handle in self._files.values():
                handle.close()
            shutil.rmtree(self.folder, ignore_errors=True)


def stem_path(folder: Path, stem: str, fmt: str = "wav") -> Path:
    """Where a finished job (its folder ``folder``) keeps ``stem`` in ``fmt``."""
    return folder / STEMS_FOLDER / f"{stem}.{fmt}"


def read_final(path: Path, start: int, count: int) -> tuple[bytes, int, int]:
    """Samples ``start`` to ``start + count`` of a finished stem's WAV as interleaved float32 bytes; with the
    samples returned and the stem's length, both per channel."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as handle:
        total = handle.frames
        if start >= total or count <= 0:
            return b"", 0, total
        handle.seek(start)
        data = handle.read(min(count, total - start), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data, dtype="<f4").tobytes(), data.shape[0], total
