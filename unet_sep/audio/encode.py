"""Writing stems: incremental, to a temporary name in the target folder, renamed when complete."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

# format name -> (libsndfile container, {bit depth -> subtype}, default depth)
OUTPUT_FORMATS: dict[str, tuple[str, dict[str, str], str]] = {
    "wav": ("WAV", {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}, "16"),
    "flac": ("FLAC", {"16": "PCM_16", "24": "PCM_24"}, "16"),
    "ogg": ("OGG", {"16": "VORBIS", "24": "VORBIS", "float": "VORBIS"}, "16"),
    "mp3": ("MP3", {"16": "MPEG_LAYER_III", "24": "MPEG_LAYER_III", "float": "MPEG_LAYER_III"}, "16"),
}


class AudioEncodeError(Exception):
    """A stem that cannot be written; the message is one line meant for the user."""


def subtype_for(fmt: str, bit_depth: str | None) -> tuple[str, str]:
    """(container, subtype) for an output format and bit depth, or a clear error."""
    if fmt not in OUTPUT_FORMATS:
        raise AudioEncodeError(f"unknown output format {fmt!r} (choose from {', '.join(OUTPUT_FORMATS)})")
    container, subtypes, default = OUTPUT_FORMATS[fmt]
    depth = default if bit_depth is None else str(bit_depth)
    if depth not in subtypes:
        raise AudioEncodeError(f"{fmt} cannot store bit depth {depth} (choose from {', '.join(subtypes)})")
    return container, subtypes[depth]


class AtomicAudioWriter:
    """Writes ``[channels, n]`` float32 blocks to a hidden temporary file beside ``path``.

    :meth:`commit` renames it to ``path``; :meth:`abort` (or leaving a ``with`` block by an exception)
    deletes it, so no partial file is ever left under the final name.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, fmt: str = "wav", bit_depth: str | None = None) -> None:
        self.path = Path(path)
        container, self.subtype = subtype_for(fmt, bit_depth)
        self._integer = self.subtype.startswith("PCM")
        self.tmp_path = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self.clipped = 0
        self.frames = 0
        try:
            self._file = sf.SoundFile(
                str(self.tmp_path), mode="w", samplerate=sample_rate, channels=channels,
                format=container, subtype=self.subtype,
            )
        except Exception as error:
            self._remove_tmp()
            raise AudioEncodeError(f"cannot write {self.path}: {' '.join(str(error).split())}") from error

    def write(self, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block.T, dtype=np.float32)
        if self._integer:
            over = np.abs(data) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                data = np.clip(data, -1.0, 1.0)
        try:
            self._file.write(data)
        except Exception as error:
            raise AudioEncodeError(f"cannot write {self.path}: {' '.join(str(error).split())}") from error
        self.frames += data.shape[0]

    def commit(self) -> Path:
        """Close and move the file to its final name."""
        self._file.close()
        os.replace(self.tmp_path, self.path)
        if self.clipped:
            logger.warning("%s: %d samples clipped to [-1, 1] for %s", self.path, self.clipped, self.subtype)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self._file.close()
        except Exception:  # closing a half-written file may fail; the file is deleted anyway
            pass
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            self.tmp_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "AtomicAudioWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
