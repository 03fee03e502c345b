"""Segmenting a spectrogram stream for the U-Nets: windows, overlap and cross-fade.

The U-Nets see ``T`` STFT frames at a time. In the default *overlapped* mode, segments start every
``hop`` frames (a multiple of ``2 ** depth``, so every segment sees the same stride grid) and their ratio
masks are cross-faded with trapezoid weights, which removes the seams a hard cut leaves. In the
*Spleeter-exact* mode segments are back to back (``hop = T``), with weight one, and the last one is
zero-padded, exactly as Spleeter's ``pad_and_partition``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SEGMENTATIONS = ("overlap", "spleeter")


@dataclass(frozen=True)
class SegmentPlan:
    """Segment length ``frames`` (T) and the distance ``hop`` between segment starts, both in STFT frames."""

    frames: int
    hop: int

    @property
    def overlap(self) -> int:
        return self.frames - self.hop

    @classmethod
    def create(cls, frames: int, overlap: float, multiple: int, segmentation: str = "overlap") -> "SegmentPlan":
        """Plan for ``segmentation`` ("overlap" or "spleeter"); ``overlap`` is a fraction of T in [0, 0.75]."""
        if segmentation == "spleeter":
            return cls(frames, frames)
        if segmentation != "overlap":
            raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
        if not 0.0 <= overlap <= 0.75:
            raise ValueError(f"overlap must be a fraction of the segment in [0, 0.75], got {overlap}")
        hop = int(round(frames * (1.0 - overlap) / multiple)) * multiple
        return cls(frames, max(multiple, min(frames, hop)))

    def weights(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Cross-fade weights ``[T]``: ramps over the overlap at both ends, never zero; all ones without overlap."""
        if self.overlap == 0:
            return torch.ones(self.frames, device=device)
        t = torch.arange(self.frames, dtype=torch.float32, device=device)
        ramp = float(self.overlap + 1)
        return torch.minimum(torch.minimum((t + 1) / ramp, (self.frames - t) / ramp), torch.ones_like(t))

    def count(self, total_frames: int) -> int:
        """Number of segments needed to cover ``total_frames`` frames."""
        return 1 + max(0, -(-(total_frames - self.frames) // self.hop))
