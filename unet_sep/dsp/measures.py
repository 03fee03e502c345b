"""How close an estimate is to its reference, and how loud one signal is: the one signal-to-noise formula, the one
level formula (a signal against another) of the package, its tests, benchmarks and recipes, and the RMS level and dB
conversion that augmentation and the tests share."""

from __future__ import annotations

import math

import numpy as np


def snr_db(reference: np.ndarray, estimate: np.ndarray, eps: float = 0.0) -> float:
    """``10 log10((|s|^2 + eps) / (|s - s_hat|^2 + eps))`` over all samples, in float64.

    Over a whole track this is the "new SDR" of the MDX challenge; ``eps`` keeps silent references finite (training
    validation uses 1e-9). An exact estimate with ``eps=0`` gives about 3000 dB rather than infinity.
    """
    reference = np.asarray(reference, dtype=np.float64)
    error = reference - np.asarray(estimate, dtype=np.float64)
    return float(10 * np.log10((np.sum(reference**2) + eps) / max(np.sum(error**2) + eps, 1e-300)))


def level_db(signal: np.ndarray, reference: np.ndarray) -> float:
    """``10 log10(|x|^2 / |r|^2)`` over all samples, in float64: the level of ``signal`` against ``reference`` (a
    stem against its mixture, vocals against accompaniment), no gating; ``-inf`` for a silent ``signal``.

    A silent ``reference`` has no level to compare with: :class:`ValueError`.
    """
    signal_energy = float(np.sum(np.square(np.asarray(signal, dtype=np.float64))))
    reference_energy = float(np.sum(np.square(np.asarray(reference, dtype=np.float64))))
    if not reference_energy > 0:
        raise ValueError("the reference is silent: a level against it is undefined")
    if signal_energy == 0:
        return -np.inf
    return float(10 * np.log10(signal_energy / reference_energy))


def db_to_gain(db: float) -> float:
    """The amplitude factor of ``db`` decibels (``-inf`` gives 0)."""
    return float(10.0 ** (db / 20.0))


def rms_db(audio: np.ndarray, length: int | None = None) -> float:
    """RMS level in dBFS of ``audio`` (any shape, float), as if zero-padded to ``length`` samples per channel.

    Uses float32 dot products per channel, so it is cheap on long excerpts; -inf for digital silence.
    """
    audio = np.asarray(audio)
    rows = audio.reshape(-1, audio.shape[-1]) if audio.ndim > 1 else audio[None]
    energy = 0.0
    for row in rows:
        energy += float(np.dot(row, row))
    count = rows.shape[0] * (rows.shape[1] if length is None else max(length, 1))
    if energy <= 0.0 or count == 0:
        return -math.inf
    return 10.0 * math.log10(energy / count)
