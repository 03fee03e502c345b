"""How close an estimate is to its reference, and how loud one signal is against another: the one signal-to-noise
formula and the one level formula of the package, its tests, benchmarks and recipes."""

from __future__ import annotations

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
