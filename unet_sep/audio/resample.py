"""Sample-rate conversion with soxr, in one shot or as a stream of blocks (identical results)."""

from __future__ import annotations

import numpy as np
import soxr

QUALITY = "HQ"


def resample(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample ``[channels, samples]`` float32 from ``in_rate`` to ``out_rate``."""
    if in_rate == out_rate:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), in_rate, out_rate, quality=QUALITY)
    return np.ascontiguousarray(out.T, dtype=np.float32)


class StreamResampler:
    """Resample a stream of ``[channels, n]`` blocks; call :meth:`flush` once at the end.

    A pass-through when the rates are equal, so callers need no special case.
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        self.channels = channels
        self._stream = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality=QUALITY)

    def process(self, block: np.ndarray) -> np.ndarray:
        if self._stream is None:
            return block
        out = self._stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32))
        return np.ascontiguousarray(out.T)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros((self.channels, 0), dtype=np.float32)
        out = self._stream.resample_chunk(np.zeros((0, self.channels), dtype=np.float32), last=True)
        return np.ascontiguousarray(out.T)
