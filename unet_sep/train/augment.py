"""Data augmentation settings and the signal operations the excerpt sampler applies.

The sampler (:class:`unet_sep.train.sampler.ExcerptSampler`) draws all random numbers itself from a
generator seeded by ``(seed, index, attempt)``; the functions here are deterministic given their arguments.
Every operation is linear and applied to the target stems (gain and channel swap per stem, low-pass to all
stems alike), so the mixture, formed as the sum of the augmented stems, stays consistent with the references.
The one addition, synthetic hi-hats, is added to one stem before the mixture is formed, so the same holds; so do
the vocal effects (:mod:`unet_sep.train.vocal_effects`, settings in ``vocal_effects``), which are not linear but
process one target stem before the mixture is formed: the processed stem is the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from unet_sep.errors import ConfigError
from unet_sep.fields import check_probability, check_range, is_number
from unet_sep.train.vocal_effects import VocalEffectsConfig

SECTION = "data.augment"  # where these settings sit in a recipe: the dotted keys of the errors

LOWPASS_MIN_CUTOFF_HZ = 4000.0
LOWPASS_MAX_CUTOFF_FRACTION = 0.45  # of the sample rate
LOWPASS_RAMP_FRACTION = 0.05  # transition band width, as a fraction of the cutoff
LOWPASS_GUARD_SAMPLES = 4096  # zero padding against circular wrap-around of the FFT filter
MAX_GAIN_DB = 24.0
HIHAT_TEMPO_BPM = (70.0, 170.0)
HIHAT_HITS_PER_BEAT = (1, 2, 4)  # quarter, eighth or sixteenth notes
HIHAT_MIN_CUTOFF_HZ = 3000.0  # the noise is high-passed at a cutoff drawn from [this, 0.4 * rate]
HIHAT_MAX_CUTOFF_FRACTION = 0.4
HIHAT_DECAY_S = (0.01, 0.12)  # time constant of each hit's exponential decay


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
        percussion_probability: probability of adding synthetic hi-hats (high-passed noise bursts on a steady
            random tempo, with accents, skipped hits and random decay) to the stem ``percussion_stem``. MIR-1K-
            like data has few bright cymbals, so a model trained on it takes hi-hats for sibilants; this teaches
            it that such transients belong to the accompaniment.
        percussion_stem: the target stem the hi-hats are added to (it must be one of the targets).
        percussion_db: level of the hi-hats relative to that stem's RMS, uniform in dB between the two values.
        silence_db: a target stem whose RMS (dBFS, over channels and the whole excerpt) is below this counts
            as near-silent.
        skip_silent: re-draw an excerpt (up to 10 attempts, deterministically) while any target is near-silent;
            after the last attempt the draw is kept as it is.
        vocal_effects: EQ, compression, saturation, doubling and reverb of one stem, the vocals by default
            (:class:`~unet_sep.train.vocal_effects.VocalEffectsConfig`; every effect off by default).
    """

    remix: bool = True
    remix_probability: float = 0.5
    gain_db: tuple[float, float] = (-6.0, 3.0)
    channel_swap: bool = True
    lowpass_probability: float = 0.0
    percussion_probability: float = 0.0
    percussion_stem: str = "accompaniment"
    percussion_db: tuple[float, float] = (-20.0, -6.0)
    silence_db: float = -60.0
    skip_silent: bool = True
    vocal_effects: VocalEffectsConfig = field(default_factory=VocalEffectsConfig)

    def __post_init__(self) -> None:
        # JSON gives lists; keep the declared tuple type when the shape is right (validate() reports the rest)
        for name in ("gain_db", "percussion_db"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) == 2:
                setattr(self, name, (value[0], value[1]))

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the dotted key (``data.augment.gain_db``) if a setting is out of range."""
        for name in ("remix", "channel_swap", "skip_silent"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{SECTION}.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("remix_probability", "lowpass_probability", "percussion_probability"):
            check_probability(f"{SECTION}.{name}", getattr(self, name))
        if not isinstance(self.percussion_stem, str) or not self.percussion_stem:
            raise ConfigError(f"{SECTION}.percussion_stem must be a stem name, got {self.percussion_stem!r}")
        check_range(f"{SECTION}.gain_db", self.gain_db, -MAX_GAIN_DB, MAX_GAIN_DB, "dB")
        check_range(f"{SECTION}.percussion_db", self.percussion_db, -math.inf, MAX_GAIN_DB, "dB")
        if not is_number(self.silence_db) or not math.isfinite(self.silence_db) or self.silence_db > 0:
            raise ConfigError(f"{SECTION}.silence_db must be a finite level <= 0 dBFS, got {self.silence_db!r}")
        if not isinstance(self.vocal_effects, VocalEffectsConfig):
            raise ConfigError(f"{SECTION}.vocal_effects must be a section of vocal-effect settings")
        self.vocal_effects.validate()

    @property
    def gain_enabled(self) -> bool:
        return float(self.gain_db[0]) != 0.0 or float(self.gain_db[1]) != 0.0


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


def synthetic_hihats(rng: np.random.Generator, length: int, sample_rate: int, channels: int) -> np.ndarray:
    """float32 ``[channels, length]``: a hi-hat-like pattern with unit RMS, drawn from ``rng``.

    White noise high-passed (FFT brick wall with the low-pass's ramp) at a random cutoff, shaped by one
    exponentially decaying envelope per hit. Hits fall on a steady grid (random tempo and subdivision, random
    phase, +-5 ms timing jitter); each has a random accent, about one in seven is left out, and about one in
    eight rings longer (an open hat). Stereo gets a random constant pan. All zeros if no hit fell in range.
    """
    high = HIHAT_MAX_CUTOFF_FRACTION * sample_rate
    if length < 1 or high <= HIHAT_MIN_CUTOFF_HZ:
        return np.zeros((channels, max(length, 0)), dtype=np.float32)
    cutoff = rng.uniform(HIHAT_MIN_CUTOFF_HZ, high)
    noise = rng.standard_normal(length).astype(np.float32)
    highpassed = noise - lowpass(noise, sample_rate, cutoff)
    interval = 60.0 / rng.uniform(*HIHAT_TEMPO_BPM) / float(rng.choice(HIHAT_HITS_PER_BEAT))
    base_decay = rng.uniform(*HIHAT_DECAY_S)
    envelope = np.zeros(length, dtype=np.float32)
    time = rng.uniform(0.0, interval)
    while time * sample_rate < length:
        start = int(round((time + rng.uniform(-0.005, 0.005)) * sample_rate))
        keep = rng.random() >= 0.15
        accent = rng.uniform(0.4, 1.0)
        decay = base_decay * (4.0 if rng.random() < 0.125 else 1.0)
        time += interval
        if not keep or start >= length:
            continue
        start = max(start, 0)
        span = min(length - start, int(6.0 * decay * sample_rate) + 1)
        hit = accent * np.exp(-np.arange(span, dtype=np.float32) / np.float32(decay * sample_rate))
        envelope[start : start + span] = np.maximum(envelope[start : start + span], hit)
    signal = highpassed * envelope
    energy = float(np.dot(signal, signal))
    if energy <= 0.0:
        return np.zeros((channels, length), dtype=np.float32)
    signal /= np.float32(math.sqrt(energy / length))
    if channels == 1:
        return signal[None]
    pan = rng.uniform(0.2, 0.8)
    weights = np.full(channels, 1.0, dtype=np.float32)
    weights[0], weights[1] = math.sqrt(2 * (1 - pan)), math.sqrt(2 * pan)
    return weights[:, None] * signal[None]
