"""The deterministic excerpt sampler (unet_sep.train.sampler) with its augmentations (unet_sep.train.augment),
and the augmentation settings of a recipe's data section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musdb_tree import SOURCES
from unet_sep.data.tracks import Track
from unet_sep.dsp.measures import rms_db
from unet_sep.errors import ConfigError
from unet_sep.train.augment import AugmentConfig, lowpass, synthetic_hihats
from unet_sep.train.recipe import TrainingDataConfig
from unet_sep.train.sampler import ExcerptSampler

RATE = 44100
NO_AUGMENT = AugmentConfig(remix=False, gain_db=(0.0, 0.0), channel_swap=False, skip_silent=False)


def coded_tracks(n_tracks: int = 4, length: int = 20000) -> list[Track]:
    """Tracks whose samples say where they come from: |value| = 1000000 * (track + 1) + 10 * position + stem,
    positive on the left channel and negative on the right, all exact in float32."""
    tracks = []
    for k in range(n_tracks):
        sources = {}
        for s, stem in enumerate(("vocals", "accompaniment")):
            code = 1000000.0 * (k + 1) + 10.0 * np.arange(length) + s
            sources[stem] = np.stack([code, -code]).astype(np.float32)
        tracks.append(Track(f"song{k}", sources))
    return tracks


def decode(value: float) -> tuple[int, int, int, bool]:
    """(track, position, stem, swapped) from a sample of :func:`coded_tracks` read on the left channel."""
    swapped = value < 0
    value = abs(int(round(value)))
    return value // 1000000 - 1, (value % 1000000) // 10, value % 10, swapped



def test_sampler_is_deterministic():
    tracks = coded_tracks()
    augment = AugmentConfig(lowpass_probability=0.3)
    sampler = ExcerptSampler(tracks, 5000, ["vocals", "accompaniment"], augment, seed=7, sample_rate=RATE)
    excerpt = sampler.excerpt(3)
    assert excerpt.shape == (2, 2, 5000) and excerpt.dtype == np.float32
    np.testing.assert_array_equal(excerpt, sampler.excerpt(3))
    assert not np.array_equal(excerpt, sampler.excerpt(4))
    other = ExcerptSampler(coded_tracks(), 5000, ["vocals", "accompaniment"], AugmentConfig(lowpass_probability=0.3),
                           seed=7, sample_rate=RATE)
    batch = other.batch([5, 3, 11])
    assert batch.shape == (3, 2, 2, 5000)
    np.testing.assert_array_equal(batch[1], excerpt)
    np.testing.assert_array_equal(batch[0], sampler.excerpt(5))
    reseeded = ExcerptSampler(tracks, 5000, ["vocals", "accompaniment"], augment, seed=8, sample_rate=RATE)
    assert not np.array_equal(reseeded.excerpt(3), excerpt)
    # global random state plays no part
    np.random.seed(0)
    a = sampler.excerpt(9)
    np.random.seed(1)
    np.testing.assert_array_equal(a, sampler.excerpt(9))
    # the stems come out in the order asked for
    swapped_order = ExcerptSampler(tracks, 5000, ["accompaniment", "vocals"], NO_AUGMENT, 0, RATE).excerpt(2)
    assert decode(swapped_order[0, 0, 0])[2] == 1 and decode(swapped_order[1, 0, 0])[2] == 0


def test_sampler_without_augmentation_reads_one_excerpt_of_one_track():
    length = 5000
    sampler = ExcerptSampler(coded_tracks(), length, ["vocals", "accompaniment"], NO_AUGMENT, 0, RATE)
    seen_tracks, seen_offsets = set(), set()
    for index in range(40):
        excerpt = sampler.excerpt(index)
        (k0, p0, s0, w0), (k1, p1, s1, w1) = decode(excerpt[0, 0, 0]), decode(excerpt[1, 0, 0])
        assert (k0, p0, s0, w0) == (k1, p1, 0, False) and s1 == 1 and not w1
        assert 0 <= p0 <= 20000 - length
        expected = coded_tracks()[k0].sources["vocals"][:, p0 : p0 + length]
        np.testing.assert_array_equal(excerpt[0], expected)
        seen_tracks.add(k0)
        seen_offsets.add(p0)
    assert seen_tracks == {0, 1, 2, 3} and len(seen_offsets) > 30


def test_remix_gain_and_swap_change_the_excerpts():
    targets = ["vocals", "accompaniment"]
    remix = ExcerptSampler(coded_tracks(), 4000, targets, AugmentConfig(
        remix=True, remix_probability=1.0, gain_db=(0.0, 0.0), channel_swap=False, skip_silent=False), 0, RATE)
    mixed = [remix.excerpt(i) for i in range(20)]
    assert sum(decode(e[0, 0, 0])[:2] != decode(e[1, 0, 0])[:2] for e in mixed) >= 15
    half = ExcerptSampler(coded_tracks(), 4000, targets, AugmentConfig(
        remix=True, remix_probability=0.5, gain_db=(0.0, 0.0), channel_swap=False, skip_silent=False), 0, RATE)
    remixed = sum(decode(e[0, 0, 0])[:2] != decode(e[1, 0, 0])[:2] for e in map(half.excerpt, range(60)))
    assert 15 <= remixed <= 45

    swap = ExcerptSampler(coded_tracks(), 4000, targets, AugmentConfig(
        remix=False, gain_db=(0.0, 0.0), channel_swap=True, skip_silent=False), 0, RATE)
    flags = [(decode(e[0, 0, 0])[3], decode(e[1, 0, 0])[3]) for e in map(swap.excerpt, range(40))]
    assert 0 < sum(a for a, _ in flags) < 40 and any(a != b for a, b in flags)
    for e in map(swap.excerpt, range(5)):  # a swapped stem is the other channel, sample for sample
        np.testing.assert_array_equal(e[:, 0], -e[:, 1])

    plain = ExcerptSampler(coded_tracks(), 4000, targets, NO_AUGMENT, 0, RATE)
    gained = ExcerptSampler(coded_tracks(), 4000, targets, AugmentConfig(
        remix=False, gain_db=(-6.0, 3.0), channel_swap=False, skip_silent=False), 0, RATE)
    ratios = []
    for index in range(30):
        ratio = gained.excerpt(index)[:, 0, 0] / plain.excerpt(index)[:, 0, 0]  # same draw: gains come after
        quotient = gained.excerpt(index) / plain.excerpt(index)
        np.testing.assert_allclose(quotient, np.broadcast_to(ratio[:, None, None], quotient.shape), rtol=1e-5)
        ratios.append(ratio)
    ratios = np.array(ratios)
    assert ratios.min() >= 10 ** (-6 / 20) - 1e-6 and ratios.max() <= 10 ** (3 / 20) + 1e-6
    assert np.ptp(ratios) > 0.5 and np.mean(np.abs(ratios[:, 0] - ratios[:, 1]) > 1e-3) > 0.9


def test_lowpass_removes_the_top_band():
    rate = 44100
    noise = np.random.default_rng(0).standard_normal((2, 2, 30000)).astype(np.float32)
    tracks = [Track("noise", {"vocals": noise[0], "accompaniment": noise[1]})]
    augment = AugmentConfig(remix=False, gain_db=(0.0, 0.0), channel_swap=False, lowpass_probability=1.0)
    excerpt = ExcerptSampler(tracks, 8192, ["vocals", "accompaniment"], augment, 0, rate).excerpt(0)
    spectrum = np.abs(np.fft.rfft(excerpt, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(8192, 1 / rate)
    low = spectrum[..., freqs < 3500].mean()
    high = spectrum[..., freqs > 0.45 * rate].mean()
    assert high < 1e-4 * low
    # linear and exact below the ramp
    filtered = lowpass(noise[0], rate, 10000.0)
    np.testing.assert_allclose(lowpass(noise[0] + noise[1], rate, 10000.0), filtered + lowpass(noise[1], rate, 10000.0),
                               atol=1e-4)
    band = np.abs(np.fft.rfft(filtered, axis=-1))[..., np.fft.rfftfreq(30000, 1 / rate) < 9000]
    reference = np.abs(np.fft.rfft(noise[0], axis=-1))[..., np.fft.rfftfreq(30000, 1 / rate) < 9000]
    assert np.median(np.abs(band / reference - 1)) < 0.02


def band_energy(audio: np.ndarray, rate: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(audio.shape[-1], 1 / rate)
    return float(spectrum[..., (freqs >= low) & (freqs < high)].sum())


def test_synthetic_hihats_are_bright_transients_at_unit_rms():
    rate, length = 16000, 32000
    for seed in range(5):
        hats = synthetic_hihats(np.random.default_rng(seed), length, rate, 1)
        assert hats.shape == (1, length) and hats.dtype == np.float32
        assert abs(np.sqrt(np.mean(hats**2)) - 1.0) < 1e-3
        total = band_energy(hats, rate, 0, rate / 2)
        assert band_energy(hats, rate, 0, 2800) < 1e-3 * total  # high-passed at >= 3 kHz
        # transients: the loudest 10 ms frames carry far more energy than the quietest ones
        frames = (hats[0, : length // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1)
        assert np.percentile(frames, 95) > 30 * np.percentile(frames, 20)
        np.testing.assert_array_equal(hats, synthetic_hihats(np.random.default_rng(seed), length, rate, 1))
    stereo = synthetic_hihats(np.random.default_rng(0), 8000, 44100, 2)
    assert stereo.shape == (2, 8000) and np.allclose(stereo[0] * np.sum(stereo[1] ** 2) ** 0.5,
                                                     stereo[1] * np.sum(stereo[0] ** 2) ** 0.5, atol=1e-3)
    assert not synthetic_hihats(np.random.default_rng(0), 8000, 6000, 1).any()  # no band above 3 kHz to fill


def test_percussion_goes_to_its_stem_only_and_off_changes_nothing():
    rate, length = 16000, 16000
    rng = np.random.default_rng(1)
    t = np.arange(40000) / rate
    tracks = [Track(f"t{k}", {"vocals": (0.1 * np.sin(2 * np.pi * 220 * (k + 1) * t))[None].astype(np.float32),
                              "accompaniment": (0.1 * np.sin(2 * np.pi * 110 * (k + 1) * t)
                                                + 0.01 * rng.standard_normal(t.size))[None].astype(np.float32)})
              for k in range(3)]
    targets = ["vocals", "accompaniment"]
    plain = ExcerptSampler(tracks, length, targets,
                           AugmentConfig(remix=True, gain_db=(-3.0, 3.0), lowpass_probability=0.3), 4, rate)
    # probability 0: no random number is drawn, whatever the other settings say
    off = ExcerptSampler(tracks, length, targets,
                         AugmentConfig(remix=True, gain_db=(-3.0, 3.0), lowpass_probability=0.3,
                                       percussion_stem="vocals", percussion_db=(0.0, 6.0)), 4, rate)
    for index in range(10):
        np.testing.assert_array_equal(plain.excerpt(index), off.excerpt(index))
    always = AugmentConfig(remix=False, gain_db=(0.0, 0.0), skip_silent=False, percussion_probability=1.0,
                           percussion_db=(-10.0, -10.0))
    clean = AugmentConfig(remix=False, gain_db=(0.0, 0.0), skip_silent=False)
    with_hats = ExcerptSampler(tracks, length, targets, always, 0, rate)
    without = ExcerptSampler(tracks, length, targets, clean, 0, rate)
    for index in range(6):
        a, b = with_hats.excerpt(index), without.excerpt(index)
        np.testing.assert_array_equal(a[0], b[0])  # the vocals are untouched
        added = a[1] - b[1]
        level = 20 * np.log10(np.sqrt(np.mean(added**2)) / np.sqrt(np.mean(b[1] ** 2)))
        assert abs(level - (-10.0)) < 0.05, level
        assert band_energy(added, rate, 3000, 8000) > 0.99 * band_energy(added, rate, 0, 8000)
    with pytest.raises(ValueError, match="percussion_stem 'drums'"):
        ExcerptSampler(tracks, length, targets, AugmentConfig(percussion_probability=0.5, percussion_stem="drums"), 0,
                       rate)


def test_skip_silent_redraws():
    rng = np.random.default_rng(0)
    tracks = []
    for k in range(3):
        vocals = (0.1 * rng.standard_normal((2, 30000))).astype(np.float32)
        if k == 0:
            vocals[:] = 0.0  # an instrumental: silent vocals
        accompaniment = (0.1 * rng.standard_normal((2, 30000))).astype(np.float32)
        tracks.append(Track(f"song{k}", {"vocals": vocals, "accompaniment": accompaniment}))

    def silent_count(skip: bool) -> int:
        augment = AugmentConfig(remix=True, remix_probability=0.5, skip_silent=skip)
        sampler = ExcerptSampler(tracks, 8000, ["vocals", "accompaniment"], augment, 3, RATE)
        return sum(rms_db(sampler.excerpt(i)[0]) < -60 for i in range(60))

    assert silent_count(False) > 10
    assert silent_count(True) == 0
    # every draw silent: after 10 attempts the last one is kept (no endless loop)
    silent = [
        Track("quiet", {"vocals": np.zeros((2, 9000), np.float32), "accompaniment": np.ones((2, 9000), np.float32)})
    ]
    excerpt = ExcerptSampler(silent, 8000, ["vocals", "accompaniment"], AugmentConfig(), 0, RATE).excerpt(0)
    assert not excerpt[0].any() and excerpt[1].all()


def test_short_tracks_are_zero_padded_and_mixture_is_the_sum():
    short = Track("short", {"vocals": np.full((2, 300), 0.5, np.float32),
                            "accompaniment": np.full((2, 300), 0.25, np.float32)})
    np.testing.assert_array_equal(short.mixture, np.full((2, 300), 0.75, np.float32))
    sampler = ExcerptSampler([short], 1000, ["vocals", "accompaniment"], AugmentConfig(skip_silent=False), 0, RATE)
    excerpt = sampler.excerpt(0)
    assert excerpt[:, :, :300].all() and not excerpt[:, :, 300:].any()
    with pytest.raises(ValueError, match="has no drums stem"):
        ExcerptSampler([short], 1000, ["vocals", "drums"], AugmentConfig(), 0, RATE)
    with pytest.raises(ValueError, match="index must be >= 0"):
        sampler.excerpt(-1)


def test_sampler_full_size_excerpts_are_reproducible():
    """Full-size excerpts (520192 samples, stereo, 44.1 kHz) with the default augmentation: the right shape,
    finite, and the same excerpt for the same index (the time a draw takes is benchmarks/train_throughput.py's)."""
    rng = np.random.default_rng(0)
    tracks = [
        Track(f"t{k}", {s: (0.1 * rng.standard_normal((2, 44100 * 40))).astype(np.float32)
                        for s in ("vocals", "accompaniment")})
        for k in range(3)
    ]
    sampler = ExcerptSampler(tracks, 520192, ["vocals", "accompaniment"], AugmentConfig(), 0, RATE)
    batch = sampler.batch(range(100, 116))
    assert batch.shape == (16, 2, 2, 520192)
    assert np.isfinite(batch).all()
    np.testing.assert_array_equal(sampler.batch(range(108, 116)), batch[8:])
    assert np.abs(batch[0] - batch[1]).max() > 0.01  # different indices differ


# ---- the augmentation settings of a recipe's data section ------------------------------------------------


@pytest.mark.parametrize(
    "augment, message",
    [
        (AugmentConfig(remix_probability=1.5), "remix_probability"),
        (AugmentConfig(gain_db=(3.0, -3.0)), "low <= high"),
        (AugmentConfig(gain_db=(1.0,)), "two numbers"),
        (AugmentConfig(lowpass_probability=-0.1), "lowpass_probability"),
        (AugmentConfig(silence_db=float("nan")), "silence_db"),
        (AugmentConfig(percussion_probability=2.0), "percussion_probability"),
        (AugmentConfig(percussion_db=(-6.0, -20.0)), "percussion_db"),
        (AugmentConfig(percussion_probability=0.2, percussion_stem="drums"), "percussion_stem 'drums' must be one of"),
    ],
)
def test_augment_config_errors(augment, message):
    config = TrainingDataConfig(root="/data", augment=augment)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_training_data_config_dict_round_trip():
    config = TrainingDataConfig(kind="musdb", root="/m", is_wav=True, targets=list(SOURCES), cache_dir="/c",
                                augment=AugmentConfig(gain_db=(-3.0, 0.0), lowpass_probability=0.2,
                                                      percussion_probability=0.1, percussion_stem="drums"))
    data = config.to_dict()
    assert list(data)[-1] == "augment" and data["augment"]["gain_db"] == [-3.0, 0.0]
    again = TrainingDataConfig.from_dict(json.loads(json.dumps(data)))
    assert again == config and again.augment.gain_db == (-3.0, 0.0) and again.augment.percussion_db == (-20.0, -6.0)
    with pytest.raises(ConfigError, match=r"unknown key data\.colour\b.*section data has kind, root"):
        TrainingDataConfig.from_dict({"root": "/x", "colour": 1})
    with pytest.raises(ConfigError, match=r"unknown key data\.augment\.pitch\b.*section data\.augment has remix"):
        TrainingDataConfig.from_dict({"root": "/x", "augment": {"pitch": 1}})
