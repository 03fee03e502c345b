"""Sample types: any integer or float samples to float32 in [-1, 1] and back to the caller's type."""

from __future__ import annotations

import numpy as np


def _integer_scale(dtype: np.dtype) -> tuple[float, float]:
    """(scale, centre) of an integer type: signed types are centred on 0, unsigned ones on half their range."""
    info = np.iinfo(dtype)
    scale = float(info.max) + 1.0 if info.min < 0 else (float(info.max) + 1.0) / 2.0
    return scale, (0.0 if info.min < 0 else scale)


def to_float32(array: np.ndarray) -> np.ndarray:
    """Samples as float32: floats as they are, integers scaled from their type's full range to [-1, 1).

    Unsigned integers (e.g. 8-bit WAV) are centred first (128 -> 0). Other types (bool, complex) raise
    ``TypeError``.
    """
    if np.issubdtype(array.dtype, np.integer):
        scale, centre = _integer_scale(array.dtype)
        return ((array.astype(np.float64) - centre) / scale).astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    raise TypeError(f"samples must be integers or floats, got {array.dtype}")


def from_float32(audio: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """float32 samples back to ``dtype``; returns the array and how many samples were clipped.

    Integers are scaled to the type's range, rounded to the nearest step and clipped to the type's limits
    (the inverse of :func:`to_float32` up to rounding); floats are cast.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        return audio.astype(dtype, copy=False), 0
    info = np.iinfo(dtype)
    scale, centre = _integer_scale(dtype)
    values = np.rint(audio.astype(np.float64) * scale + centre)
    clipped = int(np.count_nonzero((values < info.min) | (values > info.max)))
    return np.clip(values, info.min, info.max).astype(dtype), clipped
