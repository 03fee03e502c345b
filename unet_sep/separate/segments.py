"""Segmenting a spectrogram stream for the U-Nets: windows, overlap and cross-fade.

The U-Nets see ``T`` STFT frames at a time. In the default *overlapped* mode, segments start every
``hop`` frames (a multiple of ``2 ** depth``, so every segment sees the same stride grid) and their ratio
masks are cross-faded with trapezoid weights, which removes the seams a hard cut leaves. The last segment
is moved back so that it ends at most ``2 ** depth - 1`` frames after the song (still on the stride grid),
instead of running a mostly padded segment: the U-Nets compute almost no frames that are thrown away. In the
*Spleeter-exact* mode segments are back to back (``hop = T``), with weight one, and the last one is
zero-padded, exactly as Spleeter's ``pad_and_partition``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unet_sep.errors import SettingError

SEGMENTATIONS = ("overlap", "spleeter")


@dataclass(frozen=True)
class SegmentPlan:
    """Segment length ``frames`` (T) and the distance ``hop`` between segment starts, both in STFT frames.

    ``multiple`` is the U-Net's stride grid (segment starts stay on it); ``fit_end`` moves the last segment
    back to the end of the signal instead of padding it (the overlapped mode; Spleeter pads).
    """

    frames: int
    hop: int
    multiple: int = 1
    fit_end: bool = False

    @property
    def overlap(self) -> int:
        return self.frames - self.hop

    @classmethod
    def create(cls, frames: int, overlap: float, multiple: int, segmentation: str = "overlap") -> "SegmentPlan":
        """Plan for ``segmentation`` ("overlap" or "spleeter"); ``overlap`` is a fraction of T in [0, 0.75]."""
        if segmentation == "spleeter":
            return cls(frames, frames, multiple, fit_end=False)
        if segmentation != "overlap":
            raise SettingError("segmentation",
                               f"{segmentation!r} is not a segmentation; choose from {', '.join(SEGMENTATIONS)}")
        if not 0.0 <= overlap <= 0.75:
            raise SettingError("overlap", f"must be a fraction of the segment from 0 to 0.75, got {overlap}")
        hop = int(round(frames * (1.0 - overlap) / multiple)) * multiple
        return cls(frames, max(multiple, min(frames, hop)), multiple, fit_end=True)

    def weights(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Cross-fade weights ``[T]``: ramps over the overlap at both ends, never zero; all ones without overlap."""
        if self.overlap == 0:
            return torch.ones(self.frames, device=device)
        t = torch.arange(self.frames, dtype=torch.float32, device=device)
        ramp = float(self.overlap + 1)
        return torch.minimum(torch.minimum((t + 1) / ramp, (self.frames - t) / ramp), torch.ones_like(t))

    def remaining_starts(self, next_start: int, total_frames: int) -> list[int]:
        """Start frames of the segments still to run once the signal is known to have ``total_frames`` frames,
        when the regular segments before ``next_start`` have run."""
        starts = []
        start = next_start
        if not self.fit_end:
            while start < total_frames:
                starts.append(start)
                start += self.hop
            return starts
        while start + self.frames <= total_frames:
            starts.append(start)
            start += self.hop
        covered = start - self.hop + self.frames if start > 0 else 0
        if covered < total_frames:
            starts.append(self.end_start(total_frames))
        return starts

    def end_start(self, total_frames: int) -> int:
        """Where the fitted last segment of a signal of ``total_frames`` frames starts: the first start on the
        stride grid from which T frames reach the end. It only grows with ``total_frames``, so while a stream
        is still growing, frames before ``end_start(frames so far)`` are safe from it."""
        return max(0, -(-(total_frames - self.frames) // self.multiple) * self.multiple)

    def starts(self, total_frames: int) -> list[int]:
        """Start frames of every segment of a signal of ``total_frames`` frames."""
        return self.remaining_starts(0, total_frames)

    def count(self, total_frames: int) -> int:
        """Number of segments run on a signal of ``total_frames`` frames."""
        return len(self.starts(total_frames))

    def padded_frames(self, total_frames: int) -> int:
        """Frames the U-Nets compute beyond the end of the signal (zero padding)."""
        starts = self.starts(total_frames)
        return max(0, starts[-1] + self.frames - total_frames) if starts else 0
