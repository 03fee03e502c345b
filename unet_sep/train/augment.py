"""Data augmentation settings and the signal operations the excerpt sampler applies.

The sampler (:class:`unet_sep.train.datasets.ExcerptSampler`) draws all random numbers itself from a
generator seeded by ``(seed, index, attempt)``; the functions here are deterministic given their arguments.
Every operation is linear and applied to the target stems (gain and channel swap per stem, low-pass to all
stems alike), so the mixture, formed as the sum of the augmented stems, stays consistent with the references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unet_sep.config import ConfigError

LOWPASS_MIN_CUTOFF_HZ = 4000.0
LOWPASS_MAX_CUTOFF_FRACTION = 0.45  # of the sample rate
LOWPASS_RAMP_FRACTION = 0.05  # transition band width, as a fraction of the cutoff
LOWPASS_GUARD_SAMPLES = 4096  # zero padding against circular wrap-around of the FFT filter
MAX_GAIN_DB = 24.0


@dataclass
class AugmentConfig:
    """How training excerpts are augmented.

    Attributes:
        remix: with probability ``remix_probability`` per excerpt, every target stem is drawn from its own
            random track and offset (new mixtures that never occur in the data set).
        remix_probability: see ``remix``; ignored when ``remix`` is off.
        gain_db: random gain per stem, uniform in dB between the two values; ``(0, 0)`` turns it off.
        channel_swap: swap left and right per stem with probability 0.5 (stereo only).
        lowpass_probability: probability of a random low-pass of the whole excerpt (all stems alike; simulates
            band-limited sources); cutoff uniform in [4 kHz, 0.45 * rate], a brick wall in the FFT domain with
            a raised-cosine ramp 5 % of the cutoff wide. Skipped at rates where that range is empty.
        silence_db: a target stem whose RMS (dBFS, over channels and the whole excerpt) is below this counts
            as near-silent.
        skip_silent: re-draw an excerpt (up to 10 attempts, deterministically) while any target is near-silent;
            after the last attempt the draw is kept as it is.
    """

    remix: bool = True
    remix_probability: float = 0.5
    gain_db: tuple[float, float] = (-6.0, 3.0)
    channel_swap: bool = True
    lowpass_probability: float = 0.0
    silence_db: float = -60.0
    skip_silent: bool = True

    def __post_init__(self) -> None:
        # JSON gives lists; keep the declared tuple type when the shape is right (validate() reports the rest)
        if isinstance(self.gain_db, list) and len(self.gain_db) == 2:
            self.gain_db = (self.gain_db[0], self.gain_db[1])

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a readable message if a setting is out of range."""
        if not isinstance(self.remix, bool):
            raise ConfigError(f"augment.remix must be true or false, got {self.remix!r}")
        if not isinstance(self.channel_swap, bool):
            raise ConfigError(f"augment.channel_swap must be true or false, got {self.channel_swap!r}")
        if not isinstance(self.skip_silent, bool):
            raise ConfigError(f"augment.skip_silent must be true or false, got {self.skip_silent!r}")
        _probability("augment.remix_probability", self.remix_probability)
        _probability("augment.lowpass_probability", self.lowpass_probability)
        gain = self.gain_db
        if (
            not isinstance(gain, (tuple, list))
            or len(gain) != 2
            or not all(_is_number(g) and math.isfinite(g) for g in gain)
        ):
            raise ConfigError(f"augment.gain_db must be two numbers [low, high] in dB, got {gain!r}")
        low, high = float(gain[0]), float(gain[1])
        if low > high:
            raise ConfigError(f"augment.gain_db must be [low, high] with low <= high, got {list(gain)}")
        if low < -MAX_GAIN_DB or high > MAX_GAIN_DB:
            raise ConfigError(f"augment.gain_db must lie within +-{MAX_GAIN_DB:g} dB, got {list(gain)}")
        if not _is_number(self.silence_db) or not math.isfinite(self.silence_db) or self.silence_db > 0:
            raise ConfigError(f"augment.silence_db must be a finite level <= 0 dBFS, got {self.silence_db!r}")

    @property
    def gain_enabled(self) -> bool:
        return float(self.gain_db[0]) != 0.0 or float(self.gain_db[1]) != 0.0


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _probability(name: str, value: object) -> None:
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")


def db_to_gain(db: float) -> float:
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


def lowpass_cutoff_range(sample_rate: int) -> tuple[float, float] | None:
    """The cutoff range of the random low-pass at ``sample_rate``, or None where it is empty."""
    high = LOWPASS_MAX_CUTOFF_FRACTION * sample_rate
    if high <= LOWPASS_MIN_CUTOFF_HZ:
        return None
    return LOWPASS_MIN_CUTOFF_HZ, high


def lowpass(audio: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Low-pass ``audio [..., samples]`` along the last axis: FFT-domain brick wall with a short ramp.

    Gain is 1 up to ``cutoff * (1 - 0.05)``, falls along a raised cosine to 0 at ``cutoff`` and stays 0 above.
    The signal is zero-padded by at least 4096 samples (to a power of two) so the filter's short ringing does
    not wrap around. Returns float32 of the same shape. Linear, so applying it to every stem keeps the sum.
    """
    audio = np.asarray(audio, dtype=np.float32)
    n = audio.shape[-1]
    if n == 0:
        return audio.copy()
    n_fft = 1 << int(math.ceil(math.log2(n + LOWPASS_GUARD_SAMPLES)))
    spectrum = np.fft.rfft(audio, n=n_fft, axis=-1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    start = cutoff_hz * (1.0 - LOWPASS_RAMP_FRACTION)
    gain = np.ones(freqs.shape, dtype=np.float32)
    ramp = (freqs > start) & (freqs < cutoff_hz)
    gain[ramp] = 0.5 * (1.0 + np.cos(np.pi * (freqs[ramp] - start) / (cutoff_hz - start)))
    gain[freqs >= cutoff_hz] = 0.0
    spectrum *= gain
    return np.fft.irfft(spectrum, n=n_fft, axis=-1)[..., :n].astype(np.float32, copy=False)
