"""The vocal-stem training effects (unet_sep.train.vocal_effects), measured: reverb decay against RT60, the
compressor's dynamic range, the EQ's band ratios, the doubled copy's delay and pitch, saturation's harmonics; then
the sampler with effects on (deterministic, only the chosen stem processed, the excerpts of recipes without effects
unchanged) and the settings' one-line errors."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from train_runs import make_stems, stems_recipe, train, write_recipe
from unet_sep.data.tracks import Track
from unet_sep.dsp.measures import db_to_gain, rms_db
from unet_sep.errors import ConfigError
from unet_sep.train.augment import AugmentConfig, lowpass
from unet_sep.train.recipe import TrainingDataConfig
from unet_sep.train.sampler import ExcerptSampler
from unet_sep.train.vocal_effects import (
    VocalEffectsConfig,
    apply_vocal_effects,
    compress,
    double,
    eq_tilt,
    fast_length,
    reverb,
    room_impulse_response,
    saturate,
)

RATE = 16000
TARGETS = ["vocals", "accompaniment"]
ALL_ON = VocalEffectsConfig(eq_probability=1.0, compression_probability=1.0, saturation_probability=1.0,
                            doubling_probability=1.0, reverb_probability=1.0)


def noise(channels: int = 1, seconds: float = 2.0, rate: int = RATE, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal((channels, int(seconds * rate)))).astype(np.float32)


def sine(frequency: float, seconds: float, rate: int = RATE, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate))[None].astype(np.float32)


def band_db(audio: np.ndarray, low: float, high: float, rate: int = RATE) -> float:
    """Energy in dB of the band [low, high) Hz, over all channels."""
    spectrum = np.abs(np.fft.rfft(audio, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(audio.shape[-1], 1 / rate)
    return float(10 * np.log10(spectrum[..., (freqs >= low) & (freqs < high)].sum()))


def broadband_rt60(signal: np.ndarray, rate: int = RATE) -> float:
    """RT60 from the Schroeder integral of ``signal`` (1-D): 3 x the time from -5 to -25 dB (T20)."""
    energy = np.cumsum(np.square(signal.astype(np.float64))[::-1])[::-1]
    decay = 10 * np.log10(energy / energy[0] + 1e-300)
    return 3 * (np.argmax(decay < -25) - np.argmax(decay < -5)) / rate


def band_rt60(signal: np.ndarray, low: float, high: float, rate: int = RATE) -> float:
    """RT60 of the band [low, high) Hz of a 1-D response: the slope of its short-time energy (512-sample Hann
    frames, hop 128) from 50 ms on, over the first 30 dB of decay, extrapolated to 60 dB."""
    window, hop = 512, 128
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(signal, (0, window)), window)[::hop] * np.hanning(window)
    freqs = np.fft.rfftfreq(window, 1 / rate)
    spectrum = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    level = 10 * np.log10(spectrum[:, (freqs >= low) & (freqs < high)].sum(axis=1) + 1e-30)
    times = np.arange(len(level)) * hop / rate + window / 2 / rate
    keep = times >= 0.05
    first = level[keep][0]
    keep &= np.cumsum(level < first - 30) == 0
    return -60.0 / np.polyfit(times[keep], level[keep], 1)[0]


def instantaneous_hz(signal: np.ndarray, rate: int = RATE) -> np.ndarray:
    """The instantaneous frequency of a 1-D signal, from the phase of its analytic signal."""
    n = signal.size
    weights = np.zeros(n)
    weights[0], weights[1 : n // 2], weights[n // 2] = 1, 2, 1
    analytic = np.fft.ifft(np.fft.fft(signal) * weights)
    return np.diff(np.unwrap(np.angle(analytic))) * rate / (2 * np.pi)


EFFECTS = {
    "eq": lambda x, rate: eq_tilt(x, rate, 2.5, 4.0, 3000.0),
    "compression": lambda x, rate: compress(x, rate, -10.0, 4.0, 5.0, 80.0),
    "saturation": lambda x, rate: saturate(x, rate, -3.0),
    "doubling": lambda x, rate: double(x, rate, 25.0, -12.0, -6.0),
    "reverb": lambda x, rate: reverb(x, rate, room_impulse_response(np.random.default_rng(1), rate, x.shape[0], 0.8,
                                                                    0.02, 0.5, x.shape[-1]), 0.4),
}


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2)])
@pytest.mark.parametrize("name", list(EFFECTS))
def test_every_effect_keeps_shape_type_and_level(name, rate, channels):
    # noise below 2 kHz (where the doubler's interpolation loses nothing) swelling from -14 to +3.5 dB
    signal = lowpass(noise(channels, 1.0, rate), rate, 2000.0) * np.linspace(0.2, 1.5, rate, dtype=np.float32)
    out = EFFECTS[name](signal, rate)
    assert out.shape == signal.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out - signal).max() > 0.01  # it did something
    if name == "doubling":  # adds a copy at -6 dB, uncorrelated with the noise it is added to
        assert abs(rms_db(out) - rms_db(signal) - 10 * math.log10(1 + db_to_gain(-6.0) ** 2)) < 0.2
    else:
        assert abs(rms_db(out) - rms_db(signal)) < 0.01


@pytest.mark.parametrize("name", list(EFFECTS))
def test_silent_and_near_silent_stems_stay_finite(name):
    for quiet in (np.zeros((1, RATE), np.float32), noise(1, 1.0, level=1e-9)):  # below -140 dBFS: passed through
        np.testing.assert_array_equal(EFFECTS[name](quiet, RATE), quiet)
    faint = noise(1, 1.0, level=1e-6)  # -120 dBFS: processed, and finite
    out = EFFECTS[name](faint, RATE)
    assert np.isfinite(out).all() and abs(rms_db(out) - rms_db(faint)) < 2.0
    click = np.zeros((1, RATE), np.float32)
    click[0, 100] = 1.0
    assert np.isfinite(EFFECTS[name](click, RATE)).all()
    empty = np.zeros((2, 0), np.float32)
    assert EFFECTS[name](empty, RATE).shape == (2, 0)


def test_all_effects_on_silence_give_silence():
    silence = np.zeros((2, RATE), np.float32)
    out = apply_vocal_effects(np.random.default_rng(0), silence, RATE, ALL_ON)
    assert out.dtype == np.float32 and not out.any()


def test_reverb_lengthens_the_decay_with_rt60():
    click = np.zeros((1, 2 * RATE), np.float32)
    click[0, 1600] = 1.0
    late_shares, measured = [], []
    for rt60 in (0.3, 0.6, 1.2):
        response = room_impulse_response(np.random.default_rng(0), RATE, 1, rt60, 0.0, 1.0, click.shape[-1])
        wet = reverb(click, RATE, response, 1.0)
        late_shares.append(np.sum(wet[0, 1600 + 800 :] ** 2) / np.sum(wet**2))  # energy 50 ms after the click on
        measured.append(broadband_rt60(wet[0, 1600:]))
    assert late_shares[0] < 0.12 and late_shares[1] > 1.8 * late_shares[0] and late_shares[2] > 1.6 * late_shares[1]
    np.testing.assert_allclose(measured, [0.3, 0.6, 1.2], rtol=0.08)
    dry = reverb(click, RATE, response, 0.0)  # no wet part: the dry signal
    np.testing.assert_allclose(dry, click, atol=1e-6)


def test_room_response_decays_faster_above_4_khz_after_its_predelay():
    for seed in range(3):
        response = room_impulse_response(np.random.default_rng(seed), RATE, 2, 0.6, 0.025, 0.4, 5 * RATE)
        assert response.shape == (2, int(0.025 * RATE) + int(0.6 * RATE))  # ends at -60 dB of the slow decay
        assert not response[:, :400].any() and np.abs(response[:, 400:480]).max() > 0
        np.testing.assert_allclose(np.sum(response.astype(np.float64) ** 2, axis=1), 1.0, rtol=1e-5)
        assert abs(np.corrcoef(response)[0, 1]) < 0.2  # the channels are independent rooms' noise
        low = band_rt60(response[0, 400:], 100, 800)
        high = band_rt60(response[0, 400:], 5000, 8000)
        assert abs(low - 0.6) < 0.06 and abs(high / low - 0.4) < 0.06, (low, high)
    cut = room_impulse_response(np.random.default_rng(0), RATE, 1, 1.5, 0.01, 0.5, 8000)
    assert cut.shape == (1, 8000)  # the tail past the excerpt is cut


def test_compression_narrows_the_dynamic_range_by_the_ratio():
    # noise alternating every 0.5 s between two levels 20 dB apart
    blocks = (np.arange(4 * RATE) // (RATE // 2)) % 2
    signal = noise(1, 4.0, level=1.0) * np.where(blocks == 0, 1.0, 0.1).astype(np.float32)

    def level_range(audio: np.ndarray) -> float:  # loud minus quiet, each over 250 ms in the middle of its block
        levels = [rms_db(audio[:, k * 8000 + 1600 : k * 8000 + 5600]) for k in range(8)]
        return float(np.mean(levels[0::2]) - np.mean(levels[1::2]))

    assert abs(level_range(signal) - 20.0) < 0.1
    # relative to the excerpt's RMS the loud blocks sit at +2.97 dB, 12.97 dB over a -10 dB threshold: ratio 4
    # takes 3/4 of that off, 9.73 dB; the quiet ones (-17 dB) stay below it
    compressed = compress(signal, RATE, -10.0, 4.0, 5.0, 50.0)
    assert abs(level_range(compressed) - (20.0 - 0.75 * 12.97)) < 0.6
    assert abs(level_range(compress(signal, RATE, -10.0, 8.0, 5.0, 50.0)) - (20.0 - 0.875 * 12.97)) < 0.6
    assert abs(level_range(compress(signal, RATE, -10.0, 1.0, 5.0, 50.0)) - 20.0) < 0.05  # ratio 1: no change
    assert abs(level_range(compress(signal, RATE, 10.0, 4.0, 5.0, 50.0)) - 20.0) < 0.05  # all below threshold
    # a voice-like signal (a tone under syllable-shaped swells, 3 per second): the range of its 10 ms frame levels
    # (95th minus 10th percentile) shrinks from 25.2 dB by 3.5 dB (the release holds the gain down between swells)
    t = np.arange(2 * RATE) / RATE
    voice = (np.sin(2 * np.pi * 220 * t) * (0.05 + np.abs(np.sin(2 * np.pi * 1.5 * t)) ** 3))[None].astype(np.float32)

    def frame_range(audio: np.ndarray) -> float:
        levels = 10 * np.log10(np.mean(audio[0].reshape(-1, 160) ** 2, axis=1))
        return float(np.percentile(levels, 95) - np.percentile(levels, 10))

    assert 2.5 < frame_range(voice) - frame_range(compress(voice, RATE, -6.0, 6.0, 2.0, 100.0)) < 5.0


def ratio_change(out: np.ndarray, reference: np.ndarray, upper: tuple[int, int], lower: tuple[int, int]) -> float:
    """How much the energy ratio of band ``upper`` to band ``lower`` grew from ``reference`` to ``out``, in dB."""
    return (band_db(out, *upper) - band_db(out, *lower)) - (band_db(reference, *upper) - band_db(reference, *lower))


@pytest.mark.parametrize("tilt", [-3.0, 1.5, 3.0])
def test_eq_tilt_changes_the_band_ratio_by_the_asked_db(tilt):
    white = noise(1, 4.0)
    out = eq_tilt(white, RATE, tilt)
    assert abs(ratio_change(out, white, (1900, 2100), (480, 520)) - 2 * tilt) < 0.2  # two octaves apart
    assert abs(ratio_change(out, white, (20, 40), (45, 60))) < 0.2  # no tilt below 62.5 Hz


def test_eq_presence_bump_raises_its_band():
    white = noise(1, 4.0)
    out = eq_tilt(white, RATE, 0.0, 6.0, 3000.0)
    assert abs(ratio_change(out, white, (2900, 3100), (950, 1050)) - 6.0) < 0.2


def test_doubling_adds_a_delayed_copy():
    signal = noise(1, 2.0)
    added = double(signal, RATE, 25.0, 0.0, -6.0) - signal
    delay = int(0.025 * RATE)
    assert not added[:, :delay].any()
    np.testing.assert_allclose(added[:, delay:], db_to_gain(-6.0) * signal[:, :-delay], atol=1e-6)
    # detuned, the copy's taps sweep within 20 ms about the delay and never drift away: every click of a train
    # over 4 s comes back 15-35 ms later (a copy resampled by 15 cents would drift by 35 ms over 4 s)
    clicks = np.zeros((1, 4 * RATE), np.float32)
    clicks[0, 800 :: RATE // 4] = 1.0
    added = double(clicks, RATE, 25.0, 15.0, -6.0) - clicks
    lags = [int(np.argmax(np.abs(added[0, start : start + 1600]))) / RATE for start in range(800, 4 * RATE, RATE // 4)]
    assert len(lags) == 16 and 0.015 <= min(lags) and max(lags) <= 0.035, lags
    assert max(lags) - min(lags) > 0.005  # and they do sweep


@pytest.mark.parametrize("cents", [12.0, -12.0, 20.0])
def test_doubling_detunes_the_copy(cents):
    tone = sine(440.0, 4.0)
    copy = (double(tone, RATE, 25.0, cents, -6.0) - tone)[0]
    measured = float(np.median(instantaneous_hz(copy)[RATE // 2 : -RATE // 2]))
    expected = 440.0 * 2 ** (cents / 1200)  # 12 cents: 3.06 Hz from 440
    # the taps jump a 20 ms window once per sweep; the phase of the crossfade between them moves the mean frequency
    # by less than the sweep rate, 0.35 Hz at 12 cents
    sweep_hz = abs(1 - 2 ** (cents / 1200)) * RATE / (0.020 * RATE)
    assert abs(measured - expected) < sweep_hz, (measured, expected)


def test_saturation_adds_odd_harmonics_with_the_drive():
    tone = sine(440.0, 1.0)  # 440 whole periods: every harmonic falls on a bin

    def distortion(audio: np.ndarray, harmonics: range) -> float:
        spectrum = np.abs(np.fft.rfft(audio[0])) ** 2
        return math.sqrt(sum(spectrum[440 * k] for k in harmonics) / spectrum[440])

    assert distortion(tone, range(2, 18)) < 1e-5
    thd = [distortion(saturate(tone, RATE, drive), range(2, 18)) for drive in (-15.0, -5.0, 0.0)]
    assert 0.002 < thd[0] < 0.01 and 0.03 < thd[1] < 0.07 and 0.09 < thd[2] < 0.14, thd
    assert distortion(saturate(tone, RATE, 0.0), range(2, 18, 2)) < 1e-5  # tanh is odd: no even harmonics


def test_effects_are_drawn_from_the_generator_only_when_on():
    signal = noise(2, 1.0)
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(apply_vocal_effects(rng, signal, RATE, VocalEffectsConfig()), signal)
    assert rng.random() == np.random.default_rng(5).random()  # nothing drawn
    a = apply_vocal_effects(np.random.default_rng(5), signal, RATE, ALL_ON)
    np.testing.assert_array_equal(a, apply_vocal_effects(np.random.default_rng(5), signal, RATE, ALL_ON))
    assert np.abs(a - apply_vocal_effects(np.random.default_rng(6), signal, RATE, ALL_ON)).max() > 0.01
    half = VocalEffectsConfig(saturation_probability=0.5)
    applied = sum(not np.array_equal(apply_vocal_effects(np.random.default_rng(seed), signal, RATE, half), signal)
                  for seed in range(200))
    assert 75 <= applied <= 125


def test_fast_length_has_only_small_prime_factors():
    for n in (1, 7, 1000, 32001, 56479, 155000):
        length = fast_length(n)
        assert length >= n and length < 1.25 * n + 2
        rest = length
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        assert rest == 1


# ---- the sampler ----------------------------------------------------------------------------------------------------


def voice_tracks() -> list[Track]:
    """Three stereo tracks: a gated tone as the voice over noise."""
    rng = np.random.default_rng(11)
    t = np.arange(30000) / RATE
    tracks = []
    for i, n in enumerate([20000, 9000, 30000]):
        voice = 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t[:n]) * rng.uniform(0.5, 1, n)
        tracks.append(Track(f"t{i}", {"vocals": voice[None].repeat(2, 0).astype(np.float32),
                                      "accompaniment": (0.1 * rng.standard_normal((2, n))).astype(np.float32)}))
    return tracks


def test_a_sampler_without_vocal_effects_draws_the_excerpts_it_drew_before_them():
    """The digest was taken from the sampler before vocal effects existed (commit 5f63632)."""
    sampler = ExcerptSampler(voice_tracks(), 8000, TARGETS, AugmentConfig(), seed=5, sample_rate=RATE)
    digest = hashlib.sha256(sampler.batch(range(24)).tobytes()).hexdigest()
    assert digest == "899a01d3b75aa56079c0a988d682c67e4d988a20b021e084e0138ba514845375"
    # probabilities 0 draw nothing, whatever the other settings, with the augmentations drawn after them on
    later = dict(percussion_probability=0.5, lowpass_probability=0.5)
    plain = ExcerptSampler(voice_tracks(), 8000, TARGETS, AugmentConfig(**later), 5, RATE)
    off = VocalEffectsConfig(stem="accompaniment", reverb_rt60_s=(1.0, 2.0), doubling_db=(-20.0, -10.0))
    same = ExcerptSampler(voice_tracks(), 8000, TARGETS, AugmentConfig(**later, vocal_effects=off), 5, RATE)
    np.testing.assert_array_equal(plain.batch(range(12)), same.batch(range(12)))


def test_a_sampler_with_vocal_effects_is_deterministic_and_processes_the_voice_only():
    on = VocalEffectsConfig(eq_probability=1.0, compression_probability=1.0, saturation_probability=1.0,
                            reverb_probability=1.0)  # the effects that keep the level
    sampler = ExcerptSampler(voice_tracks(), 8000, TARGETS, AugmentConfig(vocal_effects=on), 5, RATE)
    plain = ExcerptSampler(voice_tracks(), 8000, TARGETS, AugmentConfig(), 5, RATE)
    batch = sampler.batch(range(10))
    assert batch.shape == (10, 2, 2, 8000) and batch.dtype == np.float32 and np.isfinite(batch).all()
    again = ExcerptSampler(voice_tracks(), 8000, TARGETS, AugmentConfig(vocal_effects=on), 5, RATE)
    np.testing.assert_array_equal(again.batch([7, 2]), batch[[7, 2]])  # a pure function of (seed, index)
    reseeded = ExcerptSampler(voice_tracks(), 8000, TARGETS, AugmentConfig(vocal_effects=on), 6, RATE)
    assert np.abs(reseeded.excerpt(3) - batch[3]).max() > 0.01
    dry = plain.batch(range(10))
    # the accompaniment is the excerpt without effects; the voice is processed at the level the gain gave it, so
    # the mixture (the stems' sum, as the training loop forms it) holds exactly the processed voice, the target
    np.testing.assert_array_equal(batch[:, 1], dry[:, 1])
    for wet_voice, dry_voice in zip(batch[:, 0], dry[:, 0], strict=True):
        assert np.abs(wet_voice - dry_voice).max() > 0.01 and abs(rms_db(wet_voice) - rms_db(dry_voice)) < 0.01


def test_a_sampler_refuses_effects_on_a_stem_it_does_not_have():
    with pytest.raises(ValueError, match="vocal_effects.stem 'lead' is not one of the targets"):
        ExcerptSampler(voice_tracks(), 8000, TARGETS,
                       AugmentConfig(vocal_effects=VocalEffectsConfig(stem="lead", reverb_probability=0.1)), 0, RATE)
    off = AugmentConfig(vocal_effects=VocalEffectsConfig(stem="lead"))  # every effect off: no stem needed
    assert ExcerptSampler(voice_tracks(), 8000, TARGETS, off, 0, RATE).excerpt(0).shape == (2, 2, 8000)


# ---- the settings ---------------------------------------------------------------------------------------------------

KEY = "data.augment.vocal_effects"


@pytest.mark.parametrize("settings, message", [
    ({"reverb_probability": 1.5}, f"{KEY}.reverb_probability must be a probability in [0, 1], got 1.5"),
    ({"reverb_rt60_s": [0, 1]}, f"{KEY}.reverb_rt60_s must lie within [0.05, 10] s, got [0.0, 1.0]"),
    ({"doubling_delay_ms": [40, 10]},
     f"{KEY}.doubling_delay_ms must be [low, high] with low <= high, got [40.0, 10.0]"),
    ({"eq_presence_hz": [100, 5000]}, f"{KEY}.eq_presence_hz must lie within [200, 10000] Hz, got [100.0, 5000.0]"),
    ({"eq_tilt_db_per_octave": [-9, 3]},
     f"{KEY}.eq_tilt_db_per_octave must lie within +-6 dB per octave, got [-9.0, 3.0]"),
    ({"compression_ratio": [2]}, f"{KEY}.compression_ratio must be a list of 2 numbers, got [2]"),
    ({"reverb_wet": "wet"}, f'{KEY}.reverb_wet must be a list of 2 numbers, got "wet"'),
    ({"stem": ""}, f"{KEY}.stem must be a stem name, got ''"),
    ({"stem": "drums", "eq_probability": 0.2},
     f"{KEY}.stem 'drums' must be one of data.targets ['vocals', 'accompaniment']"),
    ({"reverb_probabilty": 0.2}, f"unknown key {KEY}.reverb_probabilty (did you mean {KEY}.reverb_probability?)"),
    (3, f"{KEY} must be an object with the keys stem, eq_probability"),
])
def test_settings_errors_are_one_line_naming_the_key(settings, message):
    with pytest.raises(ConfigError) as caught:
        TrainingDataConfig.from_dict({"root": "/x", "augment": {"vocal_effects": settings}})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_settings_round_trip_through_json():
    data = {"root": "/x", "augment": {"vocal_effects": {"reverb_probability": 0.3, "reverb_rt60_s": [0.4, 1.0],
                                                        "stem": "vocals"}}}
    config = TrainingDataConfig.from_dict(data)
    effects = config.augment.vocal_effects
    assert effects.reverb_probability == 0.3 and effects.reverb_rt60_s == (0.4, 1.0) and effects.enabled
    assert effects.doubling_delay_ms == (10.0, 40.0) and effects.compression_probability == 0.0
    assert TrainingDataConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["augment"]["vocal_effects"]["reverb_rt60_s"] == [0.4, 1.0]
    assert not VocalEffectsConfig().enabled


def test_train_command_names_a_bad_effect_setting_in_one_line(tmp_path):
    recipe = write_recipe(tmp_path / "r.json", stems_recipe(make_stems(tmp_path / "stems")))
    result = train(recipe, tmp_path / "run", "--set", f"{KEY}.reverb_probability=2")
    assert result.returncode == 2
    assert result.stderr == f"error: {KEY}.reverb_probability must be a probability in [0, 1], got 2.0\n"
    assert not (tmp_path / "run").exists()
