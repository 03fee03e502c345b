"""Segmenting a spectrogram stream for the U-Nets: windows, overlap and cross-fade.

The U-Nets see ``T`` STFT frames at a time. In the default *overlapped* mode, segment starts stay on the U-Net's
stride grid (multiples of ``2 ** depth``, so every segment sees the same grid) and the segments' ratio masks are
cross-faded with trapezoid weights, which removes the seams a hard cut leaves. The last segment is moved back so
that it ends at most ``2 ** depth - 1`` frames after the song (still on the stride grid), instead of running a
mostly padded segment: the U-Nets compute almost no frames that are thrown away. The frames it has beyond the song
(and those of a song shorter than one segment) show the song's last frames mirrored (:meth:`SegmentPlan.pad_index`),
not zeros: the U-Nets read silence after the song as content, and the song's last seconds are the last segment's
alone (``benchmarks/last_segment.py`` measures what each costs them).

How far apart the starts are (``hop``) depends on what is known of the signal's length:

- unknown (a stream): every ``hop`` frames, from the ``overlap`` fraction (:data:`STREAM_OVERLAP` by default);
- known, or estimated (files, arrays): :meth:`SegmentPlan.for_length` picks, per song, the fewest segments whose
  overlaps are all at least ``min_overlap`` frames (one stride step by default), with the hop spread evenly, and
  squares the cross-fade's ramps (``fade_power``): a segment's masks differ from a whole-song pass most at its
  edges (the U-Nets' zero padding), so the segment whose middle is nearer gets the larger say. The real length
  still decides the fitted last segment, so a wrong estimate costs at most segments, never output.

In the *Spleeter-exact* mode segments are back to back (``hop = T``), with weight one, and the last one is
zero-padded, exactly as Spleeter's ``pad_and_partition``.

A *live* plan (:meth:`SegmentPlan.live`, used by :mod:`unet_sep.separate.live`) bounds the latency: a segment
starts every ``hop`` frames and gives masks only to its frames ``[T - lookahead - hop - fade, T - lookahead)``
(its newest hop, and ``fade`` frames before it cross-faded with the previous segment's); its first frames are
past context and its last ``lookahead`` frames future context, neither used. A frame is then final ``lookahead +
fade`` frames after the newest frame the segment that ends last saw, whatever ``T``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

# The overlap of streams of unknown length when none is given, as a fraction of a segment.
STREAM_OVERLAP = 0.25


@dataclass(frozen=True)
class SegmentPlan:
    """Segment length ``frames`` (T) and the distance ``hop`` between segment starts, both in STFT frames.

    ``multiple`` is the U-Net's stride grid (segment starts stay on it); ``fit_end`` moves the last segment
    back to the end of the signal instead of padding it (the overlapped mode; Spleeter pads); ``min_overlap`` is
    the least overlap (frames) a plan made for a known length (:meth:`for_length`) keeps between segments;
    ``fade_power`` is the power of the cross-fade's ramps (1: linear, as streams have; 2 for songs' plans);
    ``reflect_end`` fills a segment's frames beyond the signal with its last frames mirrored (:meth:`pad_index`)
    instead of zeros (the overlapped mode; Spleeter pads with zeros).
    """

    frames: int
    hop: int
    multiple: int = 1
    fit_end: bool = False
    min_overlap: int = 0
    fade_power: int = 1
    reflect_end: bool = False
    lookahead: int | None = None
    fade: int = 0

    @property
    def overlap(self) -> int:
        return self.frames - self.hop

    @property
    def head(self) -> int:
        """Frames at a segment's start whose masks are not used (past context of a live plan; 0 otherwise)."""
        return 0 if self.lookahead is None else self.frames - self.lookahead - self.hop - self.fade

    @property
    def used_end(self) -> int:
        """Frames from a segment's start to the end of those whose masks are used (T but for a live plan)."""
        return self.frames if self.lookahead is None else self.frames - self.lookahead

    @classmethod
    def live(cls, frames: int, hop: int, lookahead: int, fade: int = 0) -> "SegmentPlan":
        """A latency-bounded plan: segments of ``frames`` every ``hop`` frames, each giving the masks of its
        newest ``hop`` frames before its last ``lookahead`` (and ``fade`` frames before those, cross-faded
        linearly with the previous segment's); ``frames >= lookahead + hop + fade``."""
        if not (hop >= 1 and lookahead >= 0 and fade >= 0 and frames >= lookahead + hop + fade):
            raise ValueError(f"no live plan with segments of {frames} frames, hop {hop}, lookahead {lookahead} and "
                             f"fade {fade}")
        return cls(frames, hop, lookahead=lookahead, fade=fade)

    @classmethod
    def create(cls, frames: int, overlap: float | None, multiple: int, segmentation: str) -> "SegmentPlan":
        """Plan for ``segmentation`` ("overlap" or "spleeter") of a signal of unknown length (the values checked by
        :class:`~unet_sep.separate.settings.SeparationSettings`).

        ``overlap`` is a fraction of T, rounded to the stride grid; it gives the hop of streams and the least overlap
        of plans made for a known length. ``None`` (the default of the separators): streams overlap by
        :data:`STREAM_OVERLAP`, and plans for a known length by one stride step (``multiple`` frames, the least
        overlap the grid allows; no overlap when T is a single step).
        """
        if segmentation == "spleeter":
            return cls(frames, frames, multiple, fit_end=False)
        fraction = STREAM_OVERLAP if overlap is None else overlap
        hop = max(multiple, min(frames, int(round(frames * (1.0 - fraction) / multiple)) * multiple))
        least = min(multiple, frames - multiple) if overlap is None else frames - hop
        return cls(frames, hop, multiple, fit_end=True, min_overlap=least, reflect_end=True)

    def for_length(self, total_frames: int) -> "SegmentPlan":
        """This plan made for a signal expected to have ``total_frames`` frames: the fewest segments on the stride
        grid whose overlaps are all at least :attr:`min_overlap`, their starts spread evenly (the smallest hop
        that still gives that count, so the spare overlap goes to every cross-fade), cross-faded with squared ramps.

        The expectation may be wrong (a decoder's estimate, resampling): the segments still start every
        ``hop`` frames and the real length decides the fitted last one, so every overlap stays at least
        ``T - hop >= min_overlap`` whatever the real length; only the count can differ. The Spleeter-exact plan
        is returned as it is.
        """
        if not self.fit_end:
            return self
        longest = max(self.multiple, (self.frames - self.min_overlap) // self.multiple * self.multiple)
        span = total_frames - self.frames  # how far the last start is from the first
        if span <= 0:  # one segment, if the expectation is right
            return dataclasses.replace(self, hop=longest, fade_power=2)
        steps = -(-span // longest)  # segments after the first
        hop = -(-span // (steps * self.multiple)) * self.multiple
        return dataclasses.replace(self, hop=hop, fade_power=2)

    def weights(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Cross-fade weights ``[T]``: ramps over the overlap at both ends (to the power :attr:`fade_power`), never
        zero; all ones without overlap. A live plan's are zero outside the frames it uses, and ramp over ``fade``
        frames at both ends of those."""
        if self.lookahead is not None:
            used = SegmentPlan(self.hop + self.fade, self.hop).weights(device)
            weights = torch.zeros(self.frames, device=device)
            weights[self.head : self.used_end] = used
            return weights
        if self.overlap == 0:
            return torch.ones(self.frames, device=device)
        t = torch.arange(self.frames, dtype=torch.float32, device=device)
        ramp = float(self.overlap + 1)
        trapezoid = torch.minimum(torch.minimum((t + 1) / ramp, (self.frames - t) / ramp), torch.ones_like(t))
        return trapezoid if self.fade_power == 1 else trapezoid**self.fade_power

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
        """Frames the U-Nets compute beyond the end of the signal (padding)."""
        starts = self.starts(total_frames)
        return max(0, starts[-1] + self.frames - total_frames) if starts else 0

    def pad_index(self, available: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Which of a segment's ``available`` frames (the signal's last ones) each of its T frames shows, when the
        signal ends inside it (``reflect_end``): the frames themselves, then the frames before the last one mirrored
        about it (``numpy.pad``'s "reflect": ``a b c d`` -> ``a b c d c b a b ...``), over and over when the
        signal is shorter than the padding, so the U-Nets see music up to the segment's end instead of silence."""
        position = torch.arange(self.frames, device=device)
        last = available - 1
        if last == 0:
            return torch.zeros_like(position)
        distance = (position - last).abs() % (2 * last)  # from the last frame, folded at the first one
        return last - torch.minimum(distance, 2 * last - distance)
