"""Segment planning: overlapped segments stay on the U-Net's stride grid and waste less than one stride of padding;
Spleeter's mode pads its last segment as Spleeter does."""

from __future__ import annotations

import pytest
import torch

from unet_sep.separate.segments import SegmentPlan


@pytest.mark.parametrize("total", [1, 37, 511, 512, 513, 900, 1291, 1300, 5000, 12345])
def test_overlapped_segments_waste_less_than_one_stride_of_padding(total):
    plan = SegmentPlan.create(512, 0.25, 64, "overlap")
    starts = plan.starts(total)
    assert starts[0] == 0 and all(s % 64 == 0 for s in starts)
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    # overlap never below the nominal one
    assert all(b - a <= plan.hop for a, b in zip(starts, starts[1:], strict=False))
    assert starts[-1] + 512 >= total  # every frame covered
    if total >= 512:
        assert plan.padded_frames(total) < 64
    old_count = 1 + max(0, -(-(total - 512) // plan.hop))  # back-to-back hops with a padded last segment
    assert plan.count(total) == old_count
    spleeter = SegmentPlan.create(512, 0.25, 64, "spleeter")
    assert spleeter.starts(total) == list(range(0, total, 512))  # Spleeter pads its last segment, as it does


def _overlaps(plan, total):
    starts = plan.starts(total)
    return [plan.frames - (b - a) for a, b in zip(starts, starts[1:], strict=False)]


def test_settings_give_the_stream_hop_of_today_and_the_least_overlap_of_song_plans():
    default = SegmentPlan.create(512, None, 64, "overlap")
    assert (default.hop, default.min_overlap, default.fit_end) == (384, 64, True)  # streams: 25 %, as before
    def hop_and_least(frames, overlap):
        plan = SegmentPlan.create(frames, overlap, 64, "overlap")
        return plan.hop, plan.min_overlap

    assert hop_and_least(512, 0.25) == (384, 128)
    assert hop_and_least(512, 0.1) == (448, 64)
    assert hop_and_least(512, 0.0) == (512, 0)
    assert hop_and_least(256, None) == (192, 64)
    assert hop_and_least(64, None) == (64, 0)  # one stride step per segment: no overlap on the grid
    exact = SegmentPlan.create(512, None, 64, "spleeter")
    assert exact.for_length(1296) is exact


@pytest.mark.parametrize("frames, overlap", [(512, None), (512, 0.25), (256, None), (512, 0.5), (512, 0.0)])
def test_song_plans_run_the_fewest_segments_that_keep_the_least_overlap(frames, overlap):
    stream = SegmentPlan.create(frames, overlap, 64, "overlap")
    least = stream.min_overlap
    longest = (frames - least) // 64 * 64  # the longest hop on the grid that keeps the least overlap
    for total in list(range(1, 3 * frames, 7)) + [5000, 12345, 25844]:
        plan = stream.for_length(total)
        starts = plan.starts(total)
        assert starts[0] == 0 and all(s % 64 == 0 for s in starts) and starts[-1] + frames >= total
        assert plan.padded_frames(total) < 64 or total < frames
        assert all(o >= least for o in _overlaps(plan, total)), (total, starts)
        # n segments on the grid with overlaps >= least reach at most (n - 1) * longest + T frames
        fewest = 1 + max(0, -(-(total - frames) // longest))
        assert plan.count(total) == fewest <= stream.count(total), (total, starts)
        if total > frames and plan.hop > 64:  # the spare overlap is spread: one step less gives more segments
            assert SegmentPlan(frames, plan.hop - 64, 64, True, least).count(total) > fewest


def test_segment_counts_of_songs_against_spleeter_exact():
    """Songs at 44.1 kHz (hop 1024, 4096 zeros in front): per-song plans run as many segments as Spleeter up to a
    minute; longer songs need more, since 64 frames of every 512 are overlap (at most 8 / 7 of Spleeter's)."""
    default = SegmentPlan.create(512, None, 64, "overlap")
    exact = SegmentPlan.create(512, None, 64, "spleeter")
    counts = {}
    for seconds in (10, 30, 60, 180, 600):
        total = -(-(seconds * 44100 + 4096) // 1024)
        counts[seconds] = (default.count(total), default.for_length(total).count(total), exact.count(total))
    assert counts == {10: (1, 1, 1), 30: (4, 3, 3), 60: (7, 6, 6), 180: (20, 18, 16), 600: (67, 58, 51)}


@pytest.mark.parametrize("expected", [1, 300, 1296, 2588, 7756])
def test_a_wrong_expected_length_keeps_every_overlap_and_covers_the_real_one(expected):
    """The hop comes from the expected length; whatever the real length, the fitted end segment reaches it, the
    overlaps stay at least the least overlap, and a small error costs at most one segment."""
    plan = SegmentPlan.create(512, None, 64, "overlap").for_length(expected)
    right = plan.count(expected)
    for real in sorted({1, 100, 511, 512, 513, expected // 2, expected - 3, expected + 3, expected + 40,
                        int(expected * 1.3) + 1, 3 * expected + 700} - {-2, -1, 0}):
        starts = plan.starts(real)
        assert starts[0] == 0 and all(s % 64 == 0 for s in starts) and starts[-1] + 512 >= real
        assert plan.padded_frames(real) < 64 or real < 512
        assert all(o >= 64 for o in _overlaps(plan, real)), (real, starts)
        if abs(real - expected) <= 3:
            assert plan.count(real) <= right + 1


def test_streams_keep_linear_ramps_and_song_plans_square_them():
    stream = SegmentPlan.create(512, None, 64, "overlap")
    t = torch.arange(512, dtype=torch.float32)
    linear = torch.clamp(torch.minimum((t + 1) / 129, (512 - t) / 129), max=1.0)  # overlap 128: 129-step ramps
    assert torch.equal(stream.weights(), linear)
    song = stream.for_length(1296)  # 30 s: hop 448, overlap 64
    assert (song.hop, song.fade_power) == (448, 2)
    ramp = torch.clamp(torch.minimum((t + 1) / 65, (512 - t) / 65), max=1.0)
    assert torch.allclose(song.weights(), ramp**2) and float(song.weights().min()) == pytest.approx(1 / 65**2)
    assert torch.equal(song.weights(), song.weights().flip(0)) and float(song.weights()[64:448].min()) == 1.0
    no_overlap = SegmentPlan.create(512, 0.0, 64, "overlap")
    assert torch.equal(no_overlap.for_length(1024).weights(), torch.ones(512))  # two segments end to end
    assert no_overlap.for_length(1296).hop == 448  # three: the spare 128 frames become overlap
