"""Live separation (issue 29): the latency-bounded plan, LiveSession and Separator.live.

Short signals through the bundled model (16 kHz mono) and the Spleeter 4stems reference checkpoint of
../shared/data/spleeter-ref (44.1 kHz stereo, reduced filters; skipped with the reason when absent), on live plans
with short segments so the tests stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import music_like
from tf_bundle import require_ref
from unet_sep.dsp.measures import snr_db
from unet_sep.errors import SettingError
from unet_sep.separate.live import LivePlan, LiveSession, live_plan, plan_latency
from unet_sep.separate.segments import SegmentPlan
from unet_sep.separate.separator import Separator
from unet_sep.separate.stages import InvalidAudioError
from unet_sep.weights import spleeter as sp


@pytest.fixture(scope="module")
def bundled_sep(bundled) -> Separator:
    return Separator.from_pretrained(bundled, device="cpu", live_segment_frames=64)


@pytest.fixture(scope="module")
def four_stems() -> Separator:
    folder = require_ref() / "4stems"
    config, net = sp.load_spleeter(folder, folder / "config.json", name="spleeter:4stems")
    return Separator(net, config, device="cpu", live_segment_frames=64)


def run_blocks(session: LiveSession, audio: np.ndarray, sizes: list[int]) -> np.ndarray:
    """``audio [C, n]`` through ``session`` in blocks of ``sizes`` (cycled), then the flush: ``[S, C, n + latency]``."""
    outs, at, k = [], 0, 0
    while at < audio.shape[-1]:
        block = audio[:, at : at + sizes[k % len(sizes)]]
        out = session.process(block)
        assert out.shape == (len(session.stems), session.channels, block.shape[-1]) and out.dtype == np.float32
        outs.append(out)
        at += block.shape[-1]
        k += 1
    tail = session.flush()
    assert tail.shape == (len(session.stems), session.channels, session.latency_samples)
    return np.concatenate(outs + [tail], axis=-1)


def test_block_sizes_change_nothing(bundled_sep: Separator) -> None:
    audio = music_like(1.5, 16000, channels=1)
    outputs = [run_blocks(bundled_sep.live_session(16000, 1, 0.3), audio, sizes) for sizes in ([1], [37], [1000],
                                                                                               [16000], [1, 37, 1000])]
    assert np.abs(outputs[0]).max() > 0.05
    for other in outputs[1:]:
        np.testing.assert_allclose(other, outputs[0], atol=2e-6)


def test_the_delay_is_latency_samples_exactly(bundled_sep: Separator) -> None:
    """An impulse and a burst come out of the stems' sum exactly latency_samples later; the vocals are not the
    input (the model separates), and a session told one sample less falls short."""
    session = bundled_sep.live_session(16000, 1, 0.5)
    latency = session.latency_samples
    assert 0.45 * 16000 < latency <= 0.5 * 16000
    audio = np.zeros((1, 24000), np.float32)
    audio[0, 3000] = 0.8
    audio[0, 12000:14000] = music_like(2000 / 16000, 16000, channels=1)[0]
    out = run_blocks(session, audio, [512])
    total = out.sum(axis=0)[0]
    assert np.abs(total[:latency]).max() == 0.0
    assert int(np.argmax(np.abs(total))) == 3000 + latency
    np.testing.assert_allclose(total[latency:], audio[0], atol=1e-5)
    assert snr_db(audio[0, 12000:14000], out[0, 0, 12000 + latency : 14000 + latency]) < 10
    plan = session.plan
    short = LiveSession(bundled_sep.runner, LivePlan(plan, 16000, latency - 1), 1)
    with pytest.raises(RuntimeError, match="fell 1 samples short"):
        run_blocks(short, audio, [1])


def test_the_latency_counts_hop_lookahead_and_window(bundled_sep: Separator) -> None:
    config = bundled_sep.config
    plan = SegmentPlan.live(64, 10, 6)
    assert plan_latency(config, plan, 16000) == (6 + 10 - 1) * 256 + 1024 - 1
    live = live_plan(config, 16000, 0.5, 64, lookahead=0.5)
    assert live.latency <= 0.5 and live.plan.frames == 64
    assert live.plan.hop == live.plan.lookahead or live.plan.hop == live.plan.lookahead + 1
    bigger = SegmentPlan.live(64, live.plan.hop + 1, live.plan.lookahead)  # one frame more would not fit
    assert plan_latency(config, bigger, 16000) > 0.5 * 16000


@pytest.mark.parametrize("model", ["bundled", "4stems"])
def test_spleeter_segments_are_the_offline_spleeter_plan(request, model: str) -> None:
    """Segments of T frames every T frames, each used whole (no lookahead), are Spleeter's back-to-back plan:
    the same stems as the offline separation in that mode, to float precision, with a delay of T frames."""
    separator: Separator = request.getfixturevalue("bundled_sep" if model == "bundled" else "four_stems")
    config, rate = separator.config, separator.sample_rate
    offline = Separator(separator.runner.net, config, device="cpu", segmentation="spleeter")
    plan = SegmentPlan.live(config.segment_frames, config.segment_frames, 0)
    live = LivePlan(plan, rate, plan_latency(config, plan, rate))
    seconds = 2.2 * config.segment_frames * config.stft.hop_length / rate  # two segments and part of a third
    audio = music_like(seconds, rate, channels=config.n_channels)
    session = LiveSession(separator.runner, live, config.n_channels)
    out = run_blocks(session, audio, [4000])[..., live.latency_samples :]
    expected = offline.separate(audio, rate)
    for i, stem in enumerate(separator.stems):
        assert snr_db(expected[stem], out[i]) > 90, stem


def test_cross_faded_segments_are_the_offline_stream_plan(bundled_sep: Separator) -> None:
    """Segments every 3/4 T, the previous quarter cross-faded, no lookahead: the offline plan of streams, to
    float precision, before the last segment (which the offline plan fits to the end)."""
    frames = bundled_sep.config.segment_frames
    stream_plan = bundled_sep.runner.settings.plan
    plan = SegmentPlan.live(frames, stream_plan.hop, 0, fade=frames - stream_plan.hop)
    live = LivePlan(plan, 16000, plan_latency(bundled_sep.config, plan, 16000))
    audio = music_like(12.0, 16000, channels=1)
    out = run_blocks(LiveSession(bundled_sep.runner, live, 1), audio, [3000])[..., live.latency_samples :]
    offline = np.concatenate(list(bundled_sep.stream([audio[None]], 16000)), axis=-1)[:, 0]
    kept = (2 * stream_plan.hop) * bundled_sep.config.stft.hop_length  # the first two segments' frames
    assert audio.shape[-1] > kept + frames * 256  # the offline plan's fitted last segment is later
    for i in range(len(bundled_sep.stems)):
        assert snr_db(offline[i, :, :kept], out[i, :, :kept]) > 90


def test_other_rates_and_channels(bundled_sep: Separator) -> None:
    """44.1 kHz stereo into the 16 kHz mono model: stems at 44.1 kHz with both channels, that add up to the input
    at the stated delay (the band above 8 kHz shared out), each channel separated as a mono input would be."""
    audio = music_like(1.5, 44100, channels=2, seed=3)
    session = bundled_sep.live_session(44100, 2, 0.5)
    assert session.sample_rate == 44100 and session.latency_samples <= 0.5 * 44100
    out = run_blocks(session, audio, [441, 1024])
    latency = session.latency_samples
    np.testing.assert_allclose(out.sum(axis=0)[:, latency:], audio, atol=1e-5)
    assert np.abs(out[:, :, :latency]).max() == 0.0
    for channel in range(2):
        mono = run_blocks(bundled_sep.live_session(44100, 1, 0.5), audio[channel : channel + 1], [2000])
        np.testing.assert_allclose(out[:, channel], mono[:, 0], atol=2e-6)


def test_four_stems_stereo_and_mono(four_stems: Separator) -> None:
    audio = music_like(1.0, 44100, channels=2, seed=5)
    for channels in (2, 1):
        session = four_stems.live_session(44100, channels, 0.6)
        assert session.stems == ["vocals", "drums", "bass", "other"]
        out = run_blocks(session, audio[:channels], [700, 4096])
        latency = session.latency_samples
        assert out.shape == (4, channels, audio.shape[-1] + latency)
        # At the model's rate the masks (extended above its band) add up to one: the stems to the input.
        np.testing.assert_allclose(out.sum(axis=0)[:, latency:], audio[:channels], atol=1e-4)


def test_flush_gives_the_tail(bundled_sep: Separator) -> None:
    audio = music_like(1.0, 16000, channels=1, seed=7)
    session = bundled_sep.live_session(16000, 1, 0.4)
    body = session.process(audio)
    tail = session.flush()
    latency = session.latency_samples
    np.testing.assert_allclose(tail.sum(axis=0), audio[:, -latency:], atol=1e-5)
    np.testing.assert_allclose(body.sum(axis=0)[:, latency:], audio[:, :-latency], atol=1e-5)
    with pytest.raises(RuntimeError, match="after flush"):
        session.process(audio)


def test_separator_live_yields_a_block_per_block_then_the_tail(bundled_sep: Separator) -> None:
    audio = music_like(0.8, 16000, channels=1, seed=2)
    blocks = [audio[:, i : i + 3000] for i in range(0, audio.shape[-1], 3000)]
    outs = list(bundled_sep.live(blocks, 16000, latency=0.3))
    assert [o.shape[-1] for o in outs[:-1]] == [b.shape[-1] for b in blocks]
    session = bundled_sep.live_session(16000, 1, 0.3)
    assert outs[-1].shape[-1] == session.latency_samples
    np.testing.assert_allclose(np.concatenate(outs, axis=-1), run_blocks(session, audio, [3000]), atol=2e-6)


def test_a_latency_below_the_least_is_one_line(bundled_sep: Separator) -> None:
    with pytest.raises(SettingError) as caught:
        bundled_sep.live_session(16000, 1, 0.02)
    message = str(caught.value)
    assert "\n" not in message and "latency" in message
    least = float(message.rsplit("(", 1)[1].split(" s")[0])
    assert least == pytest.approx(1023 / 16000, abs=1e-3)  # one frame: the STFT window alone
    bundled_sep.live_session(16000, 1, least + 0.001)  # and that one fits


@pytest.mark.parametrize(("options", "name"), [
    (dict(live_latency=0), "live_latency"), (dict(live_latency=float("nan")), "live_latency"),
    (dict(live_segment_frames=0), "live_segment_frames"), (dict(live_lookahead=1.0), "live_lookahead"),
])
def test_live_settings_are_checked(bundled, options: dict, name: str) -> None:
    with pytest.raises(SettingError, match=name):
        Separator.from_pretrained(bundled, device="cpu", **options)


def test_bad_blocks_and_settings(bundled_sep: Separator) -> None:
    with pytest.raises(SettingError, match="live_segment_frames"):
        Separator(bundled_sep.runner.net, bundled_sep.config, device="cpu",
                  live_segment_frames=100).live_session(16000, 1)
    with pytest.raises(SettingError, match="channels"):
        bundled_sep.live_session(16000, 0)
    session = bundled_sep.live_session(16000, 1)
    with pytest.raises(InvalidAudioError, match=r"\[1, n\]"):
        session.process(np.zeros((2, 100), np.float32))
    with pytest.raises(InvalidAudioError, match="NaN"):
        session.process(np.full((1, 10), np.nan, np.float32))


def test_the_resamplers_hold_is_bounded_for_any_blocks() -> None:
    """stream_lag bounds what a streaming resampler holds back, whatever the blocks (1 sample holds the most)."""
    from unet_sep.audio.resample import StreamResampler, stream_lag

    lag = stream_lag(48000, 16000)
    assert 100 < lag < 2000  # soxr HQ holds tens of milliseconds
    for sizes in ([1], [37, 1, 500]):
        resampler, fed, given, k = StreamResampler(48000, 16000, 1), 0, 0, 0
        while fed < 20000:
            n = sizes[k % len(sizes)]
            given += resampler.process(np.zeros((1, n), np.float32)).shape[-1]
            fed, k = fed + n, k + 1
            assert given >= fed / 3 - lag
    assert stream_lag(16000, 16000) == 0


def test_tiny_blocks_at_another_rate(bundled_sep: Separator) -> None:
    """48 kHz in blocks of 1 and 37 samples: the resamplers hold the most, and the stated delay still holds."""
    audio = music_like(0.4, 48000, channels=1, seed=11)
    whole = run_blocks(bundled_sep.live_session(48000, 1, 0.3), audio, [20000])
    tiny = run_blocks(bundled_sep.live_session(48000, 1, 0.3), audio, [1, 37])
    np.testing.assert_allclose(tiny, whole, atol=2e-6)
