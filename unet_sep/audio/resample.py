"""Sample-rate conversion with soxr, in one shot or as a stream of blocks (identical results), and the one check
of a sample rate that enters unet-sep (a file's, an array's, an option's)."""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import soxr

from unet_sep.errors import SettingError

QUALITY = "HQ"
# The sample rates unet-sep reads, resamples and writes. The range bounds the work and memory of resampling: a
# model at 44.1 kHz sees at most 5.5 times the samples of an 8 kHz input (a rate of 1 Hz would be 44100 times).
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000


def check_sample_rate(value: object, setting: str = "sample_rate") -> int:
    """``value`` as an int if it is a whole number of Hz from :data:`MIN_SAMPLE_RATE` to :data:`MAX_SAMPLE_RATE`
    (an int, a numpy integer, or a float with nothing after the point); else a
    :class:`~unet_sep.errors.SettingError` naming ``setting`` and the range. Strings and booleans are refused."""
    whole = (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))) or (
        isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(float(value))
        and float(value).is_integer())
    if not whole or not MIN_SAMPLE_RATE <= int(value) <= MAX_SAMPLE_RATE:  # type: ignore[call-overload]
        shown = str(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else repr(value)
        raise SettingError(setting, f"must be a whole number of Hz from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}, got "
                                    f"{shown}")
    return int(value)  # type: ignore[call-overload]


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


# Input samples a streaming resampler is fed one at a time to find its hold (all the pairs of rates measured held
# their most within 40000).
_LAG_PROBE = 65536


@functools.lru_cache(maxsize=64)
def stream_lag(in_rate: int, out_rate: int) -> float:
    """The most output samples a :class:`StreamResampler` from ``in_rate`` to ``out_rate`` holds back: after ``n``
    input samples, in blocks of any size, it has given at least ``n * out_rate / in_rate - stream_lag`` (0 when the
    rates are equal). Measured by feeding it one sample at a time, which holds the most (about 0.1 s of CPU, once
    per pair of rates), and rounded up to a whole sample."""
    if in_rate == out_rate:
        return 0.0
    stream = StreamResampler(in_rate, out_rate, 1)
    sample = np.zeros((1, 1), np.float32)
    given, most = 0, 0.0
    for count in range(1, _LAG_PROBE + 1):
        given += stream.process(sample).shape[-1]
        most = max(most, count * out_rate / in_rate - given)
    return float(math.ceil(most))
