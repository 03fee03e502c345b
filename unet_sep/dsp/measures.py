"""How close an estimate is to its reference: the one signal-to-noise formula of the package, its tests and its
benchmarks."""

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
