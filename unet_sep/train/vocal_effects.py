"""Vocal-stem effects for training: the voice as produced songs carry it.

MIR-1K's voices are dry amateur karaoke recordings; produced vocals are equalised, compressed, saturated, doubled and
sit in reverb. :func:`apply_vocal_effects` processes one stem of a training excerpt (the vocals, by default) before
the mixture is formed, so the processed voice is in the mixture and is the target alike.

Each effect is a pure function of (signal ``[channels, samples]`` float32, sample rate, parameters), in numpy, and
returns float32 of the input's shape, finite for finite input. Every random number (whether an effect is applied,
its parameters, the reverb's noise) is drawn from the generator passed to :func:`apply_vocal_effects`, the
sampler's generator for the excerpt, and an effect whose probability is 0 draws none, so recipes without these
settings keep their data bit for bit. All effects but doubling keep the stem's RMS level (the per-stem gain sets
it); a near-silent stem (RMS below :data:`SILENT_RMS`) passes through unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unet_sep.dsp.measures import db_to_gain, rms_db
from unet_sep.errors import ConfigError
from unet_sep.fields import check_probability, check_range

__all__ = ["VocalEffectsConfig", "apply_vocal_effects", "compress", "double", "eq_tilt", "fast_length", "reverb",
           "room_impulse_response", "saturate"]

SECTION = "data.augment.vocal_effects"  # where these settings sit in a recipe: the dotted keys of the errors
SILENT_RMS = 1e-7  # linear RMS (-140 dBFS): a stem this quiet passes through every effect unchanged
EQ_PIVOT_HZ = 1000.0  # the tilt turns about this frequency
EQ_TILT_SPAN_HZ = (62.5, 8000.0)  # the tilt is flat outside (4 octaves below, 3 above the pivot): shelves, not a ramp
EQ_PRESENCE_OCTAVES = 0.5  # standard deviation of the presence bump (a Gaussian in log frequency)
EQ_GUARD_S = 0.05  # zero padding against the circular wrap of the zero-phase FFT filter
COMPRESSOR_BLOCK_S = 0.001  # the detector's resolution: RMS per block, smoothed block by block
DOUBLING_WINDOW_S = 0.02  # delay swept by each tap of the micro-pitch shifter (at most twice the delay)
REVERB_DAMPING_HZ = (1000.0, 4000.0)  # the decay time crossfades from RT60 below to RT60 * damping above
REVERB_EARLY_S = 0.04  # early reflections fall within this after the pre-delay
REVERB_EARLY_COUNT = 6
REVERB_FADE_IN_S = 0.005  # the diffuse tail builds up over this
LN_1000 = math.log(1000.0)  # an amplitude falling 60 dB over a time T decays as exp(-LN_1000 * t / T)

# the ranges a recipe may give: field -> (lowest, highest, unit)
RANGES: dict[str, tuple[float, float, str]] = {
    "eq_tilt_db_per_octave": (-6.0, 6.0, "dB per octave"),
    "eq_presence_db": (-12.0, 12.0, "dB"),
    "eq_presence_hz": (200.0, 10000.0, "Hz"),
    "compression_threshold_db": (-40.0, 20.0, "dB"),
    "compression_ratio": (1.0, 20.0, ""),
    "compression_attack_ms": (0.1, 200.0, "ms"),
    "compression_release_ms": (1.0, 2000.0, "ms"),
    "saturation_drive_db": (-40.0, 24.0, "dB"),
    "doubling_delay_ms": (1.0, 100.0, "ms"),
    "doubling_detune_cents": (0.0, 100.0, "cents"),
    "doubling_db": (-40.0, 0.0, "dB"),
    "reverb_rt60_s": (0.05, 10.0, "s"),
    "reverb_predelay_ms": (0.0, 200.0, "ms"),
    "reverb_wet": (0.0, 1.0, ""),
    "reverb_damping": (0.1, 1.0, ""),
}
PROBABILITIES = ("eq_probability", "compression_probability", "saturation_probability", "doubling_probability",
                 "reverb_probability")


@dataclass
class VocalEffectsConfig:
    """Effects applied to one stem of each training excerpt, in this order, each with its own probability
    (default 0: off) and parameters drawn uniformly from its ranges ``[low, high]``.

    Attributes:
        stem: the target stem processed (it must be one of the targets when any effect is on).
        eq_probability: a spectral tilt of ``eq_tilt_db_per_octave`` about 1 kHz (flat below 62.5 Hz and above
            8 kHz) plus a presence bump of ``eq_presence_db`` at ``eq_presence_hz`` (drawn log-uniformly; half
            an octave's standard deviation); zero-phase, in the FFT domain; level kept.
        compression_probability: a feed-forward RMS compressor: threshold ``compression_threshold_db`` relative
            to the excerpt's RMS, ratio ``compression_ratio``, attack and release times in ms (a 1 ms block
            detector, channels linked); make-up gain restores the RMS.
        saturation_probability: ``tanh`` with the excerpt's RMS driven to ``saturation_drive_db`` relative to the
            curve's knee (0 dB: RMS at 1, heavy; -15 dB: peaks bend); level kept.
        doubling_probability: adds a copy delayed ``doubling_delay_ms``, detuned by ``doubling_detune_cents``
            (the size; up or down at random) and at ``doubling_db``: a micro-pitch shifter (two crossfaded taps
            of a delay line swept within 20 ms about the delay), so the delay stays put over any excerpt.
        reverb_probability: a synthetic room: exponentially decaying noise with ``reverb_rt60_s`` below 1 kHz and
            ``reverb_rt60_s * reverb_damping`` above 4 kHz, after ``reverb_predelay_ms`` and six early
            reflections in the first 40 ms; mixed with the dry voice at ``reverb_wet`` (0 dry, 1 wet only, the wet
            part at the dry level); level kept; the tail past the excerpt's end is cut.
    """

    stem: str = "vocals"
    eq_probability: float = 0.0
    eq_tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)
    eq_presence_db: tuple[float, float] = (0.0, 6.0)
    eq_presence_hz: tuple[float, float] = (2000.0, 5000.0)
    compression_probability: float = 0.0
    compression_threshold_db: tuple[float, float] = (-15.0, 0.0)
    compression_ratio: tuple[float, float] = (2.0, 8.0)
    compression_attack_ms: tuple[float, float] = (1.0, 30.0)
    compression_release_ms: tuple[float, float] = (30.0, 300.0)
    saturation_probability: float = 0.0
    saturation_drive_db: tuple[float, float] = (-15.0, 0.0)
    doubling_probability: float = 0.0
    doubling_delay_ms: tuple[float, float] = (10.0, 40.0)
    doubling_detune_cents: tuple[float, float] = (5.0, 20.0)
    doubling_db: tuple[float, float] = (-9.0, -3.0)
    reverb_probability: float = 0.0
    reverb_rt60_s: tuple[float, float] = (0.2, 1.5)
    reverb_predelay_ms: tuple[float, float] = (0.0, 30.0)
    reverb_wet: tuple[float, float] = (0.1, 0.5)
    reverb_damping: tuple[float, float] = (0.3, 0.8)

    def __post_init__(self) -> None:
        # JSON gives lists; keep the declared tuple type when the shape is right (validate() reports the rest)
        for name in RANGES:
            value = getattr(self, name)
            if isinstance(value, list) and len(value) == 2:
                setattr(self, name, (value[0], value[1]))

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the dotted key (``data.augment.vocal_effects.reverb_wet``) if a setting
        is out of range."""
        if not isinstance(self.stem, str) or not self.stem:
            raise ConfigError(f"{SECTION}.stem must be a stem name, got {self.stem!r}")
        for name in PROBABILITIES:
            check_probability(f"{SECTION}.{name}", getattr(self, name))
        for name, (lowest, highest, unit) in RANGES.items():
            check_range(f"{SECTION}.{name}", getattr(self, name), lowest, highest, unit)

    @property
    def enabled(self) -> bool:
        """Whether any effect may be applied."""
        return any(float(getattr(self, name)) > 0 for name in PROBABILITIES)


def apply_vocal_effects(rng: np.random.Generator, signal: np.ndarray, sample_rate: int,
                        config: VocalEffectsConfig) -> np.ndarray:
    """``signal [channels, samples]`` through the effects ``config`` turns on, each with its probability, in the
    order EQ, compression, saturation, doubling, reverb; float32 of the same shape. Every random number comes from
    ``rng``, drawn in a fixed order, none for an effect whose probability is 0."""
    out = np.asarray(signal, dtype=np.float32)

    def chosen(probability: float) -> bool:
        return probability > 0 and bool(rng.random() < probability)

    def draw(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(float(bounds[0]), float(bounds[1])))

    if chosen(config.eq_probability):
        tilt, presence = draw(config.eq_tilt_db_per_octave), draw(config.eq_presence_db)
        low, high = config.eq_presence_hz
        centre = math.exp(rng.uniform(math.log(low), math.log(high)))
        out = eq_tilt(out, sample_rate, tilt, presence, centre)
    if chosen(config.compression_probability):
        out = compress(out, sample_rate, draw(config.compression_threshold_db), draw(config.compression_ratio),
                       draw(config.compression_attack_ms), draw(config.compression_release_ms))
    if chosen(config.saturation_probability):
        out = saturate(out, sample_rate, draw(config.saturation_drive_db))
    if chosen(config.doubling_probability):
        delay, cents = draw(config.doubling_delay_ms), draw(config.doubling_detune_cents)
        level = draw(config.doubling_db)
        out = double(out, sample_rate, delay, cents if rng.random() < 0.5 else -cents, level)
    if chosen(config.reverb_probability):
        rt60, predelay = draw(config.reverb_rt60_s), draw(config.reverb_predelay_ms)
        wet, damping = draw(config.reverb_wet), draw(config.reverb_damping)
        response = room_impulse_response(rng, sample_rate, out.shape[0], rt60, predelay / 1000.0, damping,
                                         max_length=out.shape[-1])
        out = reverb(out, sample_rate, response, wet)
    return out


def fast_length(n: int) -> int:
    """The smallest FFT length ``>= n`` whose only prime factors are 2, 3 and 5 (fast for numpy's FFT)."""
    n = max(int(n), 1)
    best = 1 << (n - 1).bit_length()
    five = 1
    while five < best:
        three = five
        while three < best:
            length = three
            while length < n:
                length *= 2
            best = min(best, length)
            three *= 3
        five *= 5
    return best


def _rms(signal: np.ndarray) -> float:
    return db_to_gain(rms_db(signal))


def _at_level(out: np.ndarray, level: float) -> np.ndarray:
    """``out`` as float32, scaled to the RMS ``level`` (left as it is when it is silent)."""
    now = _rms(out)
    if not now > 0.0:
        return out.astype(np.float32, copy=False)
    return (out * np.float32(level / now)).astype(np.float32, copy=False)


def _silent(signal: np.ndarray) -> bool:
    return signal.shape[-1] == 0 or _rms(signal) < SILENT_RMS


def eq_tilt(signal: np.ndarray, sample_rate: int, tilt_db_per_octave: float, presence_db: float = 0.0,
            presence_hz: float = 3000.0) -> np.ndarray:
    """A zero-phase spectral tilt of ``tilt_db_per_octave`` about 1 kHz (flat below 62.5 Hz and above 8 kHz) plus a
    Gaussian bump of ``presence_db`` at ``presence_hz`` (half an octave's standard deviation), at the input's RMS."""
    signal = np.asarray(signal, dtype=np.float32)
    if _silent(signal):
        return signal.copy()
    level, n = _rms(signal), signal.shape[-1]
    n_fft = fast_length(n + int(EQ_GUARD_S * sample_rate))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    octaves = np.log2(np.clip(freqs, *EQ_TILT_SPAN_HZ) / EQ_PIVOT_HZ)
    gain_db = tilt_db_per_octave * octaves
    if presence_db:
        distance = np.log2(np.maximum(freqs, 1.0) / presence_hz) / EQ_PRESENCE_OCTAVES
        gain_db += presence_db * np.exp(-0.5 * distance**2)
    spectrum = np.fft.rfft(signal, n=n_fft, axis=-1)
    spectrum *= (10.0 ** (gain_db / 20.0)).astype(np.float32)
    return _at_level(np.fft.irfft(spectrum, n=n_fft, axis=-1)[..., :n], level)


def compress(signal: np.ndarray, sample_rate: int, threshold_db: float, ratio: float, attack_ms: float,
             release_ms: float) -> np.ndarray:
    """A feed-forward RMS compressor with make-up gain to the input's RMS.

    The detector is the channels' mean power in 1 ms blocks, smoothed by a one-pole filter whose time constant is
    ``attack_ms`` while the power rises and ``release_ms`` while it falls (starting at the excerpt's mean power:
    an excerpt starts in the middle of a song). Above ``threshold_db`` (relative to the excerpt's RMS) the level
    is reduced by ``1 - 1 / ratio`` of its excess; the gain is interpolated between block centres.
    """
    signal = np.asarray(signal, dtype=np.float32)
    if _silent(signal):
        return signal.copy()
    level, n = _rms(signal), signal.shape[-1]
    block = max(1, round(COMPRESSOR_BLOCK_S * sample_rate))
    starts = np.arange(0, n, block)
    power = np.square(signal.reshape(-1, n)).mean(axis=0, dtype=np.float64)
    relative = np.add.reduceat(power, starts) / np.diff(np.append(starts, n)) / level**2
    attack = math.exp(-block / max(attack_ms * 1e-3 * sample_rate, 1e-9))
    release = math.exp(-block / max(release_ms * 1e-3 * sample_rate, 1e-9))
    envelope, smoothed = 1.0, []
    for value in relative.tolist():  # the one sequential step: ~1000 blocks per second of audio
        coefficient = attack if value > envelope else release
        envelope = coefficient * envelope + (1.0 - coefficient) * value
        smoothed.append(envelope)
    over_db = np.maximum(10.0 * np.log10(np.maximum(smoothed, 1e-12)) - threshold_db, 0.0)
    block_gain = 10.0 ** (-over_db * (1.0 - 1.0 / ratio) / 20.0)
    gain = np.interp(np.arange(n), starts + (block - 1) / 2.0, block_gain).astype(np.float32)
    return _at_level(signal * gain, level)


def saturate(signal: np.ndarray, sample_rate: int, drive_db: float) -> np.ndarray:
    """``tanh`` saturation at the input's RMS: the RMS is driven to ``drive_db`` relative to the curve's knee
    (amplitude 1). Memoryless, so ``sample_rate`` plays no part; no oversampling (harmonics above Nyquist alias)."""
    signal = np.asarray(signal, dtype=np.float32)
    if _silent(signal):
        return signal.copy()
    level = _rms(signal)
    return _at_level(np.tanh(signal * np.float32(db_to_gain(drive_db) / level)), level)


def double(signal: np.ndarray, sample_rate: int, delay_ms: float, detune_cents: float, level_db: float) -> np.ndarray:
    """``signal`` plus a copy at ``level_db``, delayed by ``delay_ms`` and pitch-shifted by ``detune_cents``.

    The copy is a micro-pitch shifter: two taps of a delay line whose delays sweep at the rate that shifts the pitch
    (``1 - 2 ** (cents / 1200)`` samples per sample) through a window of 20 ms (or twice the delay, if less) centred
    on ``delay_ms``, half a window apart, each faded by a half sine to silence where it jumps back (the two fades,
    sine and cosine, keep the power). Cubic (Catmull-Rom) interpolation between samples. Without detune the copy is the
    signal delayed exactly.
    """
    signal = np.asarray(signal, dtype=np.float32)
    if _silent(signal):
        return signal.copy()
    n = signal.shape[-1]
    rows = signal.reshape(-1, n)
    delay = delay_ms * 1e-3 * sample_rate
    window = max(min(DOUBLING_WINDOW_S * sample_rate, 2.0 * delay), 1.0)
    sweep = (1.0 - 2.0 ** (detune_cents / 1200.0)) / window  # window phase per sample
    # float32 throughout, and floor instead of np.mod (4 times slower here, float64 arrays twice): the delays stay
    # below a few thousand samples (precise to 1e-3 of a sample) and the phase is exact enough over any excerpt
    index = np.arange(n, dtype=np.int32)
    first = np.float32(0.5) + np.float32(sweep) * index.astype(np.float32)
    first -= np.floor(first)  # the taps' phases in the window, half a window apart
    phases = [first]
    if sweep:  # no detune: one tap, at the delay, weight 1
        second = first + np.float32(0.5)
        second -= np.floor(second)
        phases.append(second)
    copy = np.zeros_like(rows)
    for phase in phases:
        delays = np.float32(delay) + np.float32(window) * (phase - np.float32(0.5))
        whole = np.ceil(delays)
        # read at index - delays = (index - whole) + (whole - delays), the fraction in [0, 1)
        copy += np.sin(np.float32(np.pi) * phase) * _read(rows, index - whole.astype(np.int32), whole - delays)
    return (signal + np.float32(db_to_gain(level_db)) * copy.reshape(signal.shape)).astype(np.float32, copy=False)


def _read(rows: np.ndarray, base: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """``rows [channels, n]`` read at the sample positions ``base + fraction`` (integers and float32 fractions in
    [0, 1), ``[m]`` each): Catmull-Rom cubic interpolation, zeros outside the signal; float32 ``[channels, m]``."""
    n = rows.shape[-1]
    padded = np.pad(rows, ((0, 0), (4, 5)))  # padded[:, k + 4] is rows[:, k]
    start = np.clip(base, -3, n + 2) + 3  # padded index of rows[:, base - 1]
    f = fraction
    out = np.empty((rows.shape[0], base.shape[0]), dtype=np.float32)
    for source, row in zip(padded, out, strict=True):  # Horner form of the cubic through the four samples
        before, at, after, next_after = (source[start + offset] for offset in range(4))
        slope = 0.5 * (after - before)
        curve = before - 2.5 * at + 2.0 * after - 0.5 * next_after
        cubic = 0.5 * (next_after - before) + 1.5 * (at - after)
        row[:] = at + f * (slope + f * (curve + f * cubic))
    return out


def room_impulse_response(rng: np.random.Generator, sample_rate: int, channels: int, rt60_s: float,
                          predelay_s: float, damping: float, max_length: int) -> np.ndarray:
    """float32 ``[channels, length]``: a synthetic room impulse response drawn from ``rng``, unit energy per channel.

    Silence for ``predelay_s``; then Gaussian noise (independent per channel) whose amplitude falls 60 dB over
    ``rt60_s`` below 1 kHz and over ``rt60_s * damping`` above 4 kHz (the two decays crossfade between, linearly in
    log frequency), fading in over 5 ms, plus six early reflections (random times in the first 40 ms, signs and
    sizes, about as much energy as the tail's over that span). It ends where the slowest decay reaches -60 dB, or
    at ``max_length`` samples.
    """
    if not (rt60_s > 0 and damping > 0):
        raise ValueError(f"a room needs rt60_s > 0 and damping > 0, got {rt60_s!r} and {damping!r}")
    start = int(round(predelay_s * sample_rate))
    length = min(max(int(max_length), 1), start + max(int(rt60_s * sample_rate), 1))
    response = np.zeros((channels, length), dtype=np.float32)
    tail = length - start
    if tail <= 0:
        return response
    n_fft = fast_length(tail)
    bins = n_fft // 2 + 1
    spectrum = rng.standard_normal((channels, bins), dtype=np.float32) \
        + 1j * rng.standard_normal((channels, bins), dtype=np.float32)
    spectrum *= np.float32(math.sqrt(n_fft / 2.0))  # unit variance in time
    low_hz, high_hz = REVERB_DAMPING_HZ
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    high_share = np.clip(np.log2(np.maximum(freqs, 1.0) / low_hz) / math.log2(high_hz / low_hz), 0.0, 1.0)
    low_noise = np.fft.irfft(spectrum * (1.0 - high_share).astype(np.float32), n=n_fft, axis=-1)[:, :tail]
    high_noise = np.fft.irfft(spectrum * high_share.astype(np.float32), n=n_fft, axis=-1)[:, :tail]
    seconds = np.arange(tail, dtype=np.float32) / np.float32(sample_rate)
    slow = np.exp(-np.float32(LN_1000 / rt60_s) * seconds)
    fast = np.exp(-np.float32(LN_1000 / (rt60_s * damping)) * seconds)
    response[:, start:] = low_noise * slow + high_noise * fast
    fade = min(tail, max(1, int(REVERB_FADE_IN_S * sample_rate)))
    response[:, start : start + fade] *= np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
    shape = (channels, REVERB_EARLY_COUNT)
    times = rng.uniform(0.0, REVERB_EARLY_S, shape)
    sizes = rng.uniform(0.3, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
    sizes *= math.sqrt(REVERB_EARLY_S * sample_rate / REVERB_EARLY_COUNT) * np.exp(-LN_1000 * times / rt60_s)
    places = start + np.round(times * sample_rate).astype(np.int64)
    inside = places < length
    rows = np.broadcast_to(np.arange(channels)[:, None], places.shape)
    np.add.at(response, (rows[inside], places[inside]), sizes[inside].astype(np.float32))
    energy = np.sqrt(np.sum(np.square(response, dtype=np.float64), axis=-1, keepdims=True))
    return (response / np.maximum(energy, 1e-30)).astype(np.float32)


def reverb(signal: np.ndarray, sample_rate: int, impulse_response: np.ndarray, wet: float) -> np.ndarray:
    """``signal`` convolved with ``impulse_response [channels or 1, length]`` (FFT, the tail past the signal's end
    cut), the wet part brought to the dry RMS, mixed ``(1 - wet) * dry + wet * wet_part`` and the sum brought to
    the dry RMS. ``sample_rate`` plays no part (the response carries it)."""
    signal = np.asarray(signal, dtype=np.float32)
    if _silent(signal):
        return signal.copy()
    level, n = _rms(signal), signal.shape[-1]
    response = np.asarray(impulse_response, dtype=np.float32)
    n_fft = fast_length(n + response.shape[-1] - 1)
    spectrum = np.fft.rfft(signal, n=n_fft, axis=-1) * np.fft.rfft(response, n=n_fft, axis=-1)
    reverberant = np.fft.irfft(spectrum, n=n_fft, axis=-1)[..., :n]
    wet_level = _rms(reverberant)
    if not wet_level > 0.0:
        return signal.copy()
    mixed = np.float32(1.0 - wet) * signal + np.float32(wet * level / wet_level) * reverberant
    return _at_level(mixed, level)
