"""Segment planning: overlapped segments stay on the U-Net's stride grid and waste less than one stride of padding;
Spleeter's mode pads its last segment as Spleeter does."""

from __future__ import annotations

import pytest

from unet_sep.separate.segments import SegmentPlan


@pytest.mark.parametrize("total", [1, 37, 511, 512, 513, 900, 1291, 1300, 5000, 12345])
def test_overlapped_segments_waste_less_than_one_stride_of_padding(total):
    plan = SegmentPlan.create(512, 0.25, 64)
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
