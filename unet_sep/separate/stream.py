"""The separation engine: audio blocks in, stem blocks out, at the model's rate, in bounded memory.

Data flow for one stream of ``G`` channel groups of ``C`` model channels each:

    samples [G, C, n] -> STFT frames (Spleeter framing) -> magnitude segments [G, C, T, F]
    -> U-Nets (segments batched) -> ratio masks -> cross-faded per frame -> extended above F
    -> masks x complex STFT -> windowed inverse FFT, overlap-add -> stem samples [S, G, C, n]

Everything is incremental: frames are computed as soon as their samples arrive, a batch of segments goes
through the U-Nets (run by the caller, :class:`~unet_sep.separate.runner.NetworkRunner`) as soon as its frames
are there, a frame is synthesised once no later segment can touch its mask, and a sample is emitted once no
later frame overlaps it. The buffers hold at most a batch of segments, so memory does not grow with the length
of the input. The output has exactly as many samples as the input. This module keeps that bookkeeping (which
frames and samples are where, and when they are final); the arithmetic of each step is :mod:`unet_sep.dsp`'s
(:mod:`~unet_sep.dsp.stft`, the masks and their cross-fade in :mod:`~unet_sep.dsp.masks`, :mod:`~unet_sep.dsp.wiener`).

Alongside the stems the engine returns, per stem and sample, the weight its mask extension gives to content
above the model's band (the extended mask overlap-added with the squared window, so it is as smooth as the
audio). :class:`~unet_sep.separate.stages.OutputStage` uses it (:func:`~unet_sep.separate.stages.share_residual`)
to share out what the model's sample rate cannot carry when the input's rate is higher, so the stems stay full
band and still sum to the input.

Stems leave the engine only through :meth:`SeparationStream.drain`, which refuses to hand out NaN or infinite
samples (:class:`NonFiniteStemsError`): the arithmetic overflowed (fp16 autocast, or weights far out of range)
or the weights are damaged. The Python API and the file pipeline both drain here, so neither writes such stems.
"""

from __future__ import annotations

import numpy as np
import torch

from unet_sep.config import ModelConfig
from unet_sep.dsp.masks import add_segments, masked_spectra, ratio_masks
from unet_sep.dsp.stft import (
    analyze_frames,
    divide_by_envelope,
    hann_window,
    num_frames,
    overlap_add_weights,
    synthesize_frames,
    window_envelope,
)
from unet_sep.dsp.wiener import softmask
from unet_sep.errors import FileError
from unet_sep.separate.segments import SegmentPlan
from unet_sep.separate.settings import ResolvedSettings
from unet_sep.separate.wiener_window import WienerWindow

# Frames synthesised per step of _advance.
_SYNTH_FRAMES = 256
# The least cross-fade weight a frame's masks are divided by (cross-fades give 1e-5 and more).
_LEAST_WEIGHT = 1e-20


class NonFiniteStemsError(FileError, ArithmeticError):
    """Stems of one input with NaN or infinite values, refused where they leave the engine; names its file when
    there is one."""


class SlidingBuffer:
    """A tensor that grows at the end and is consumed from the front along its last axis.

    It lives in one allocation that is reused (compacted in place) instead of being reallocated on every
    step, so a long stream does not fragment the heap and memory stays flat.
    """

    def __init__(self, lead: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.storage = torch.zeros(*lead, 0, dtype=dtype, device=device)
        self.start = 0
        self.length = 0

    @property
    def data(self) -> torch.Tensor:
        return self.storage[..., self.start : self.start + self.length]

    def _reserve(self, extra: int) -> None:
        capacity = self.storage.shape[-1]
        need = self.length + extra
        if self.start + need <= capacity:
            return
        if need <= capacity:  # room enough: move the live part to the front
            live = self.data if self.start >= self.length else self.data.clone()
            self.storage[..., : self.length].copy_(live)
        else:
            bigger = self.storage.new_empty(*self.storage.shape[:-1], max(need, capacity + capacity // 2))
            bigger[..., : self.length].copy_(self.data)
            self.storage = bigger
        self.start = 0

    def append(self, values: torch.Tensor) -> None:
        n = values.shape[-1]
        self._reserve(n)
        self.storage[..., self.start + self.length : self.start + self.length + n].copy_(values)
        self.length += n

    def extend_zeros(self, n: int) -> None:
        if n <= 0:
            return
        self._reserve(n)
        self.storage[..., self.start + self.length : self.start + self.length + n].zero_()
        self.length += n

    def drop(self, n: int) -> None:
        n = min(n, self.length)
        self.start += n
        self.length -= n


class SeparationStream:
    """Streaming separation of one signal (``G`` channel groups), without the U-Nets themselves.

    :meth:`feed` samples, :meth:`take` the ready segments, run them through the U-Nets and :meth:`give` the
    estimates back, :meth:`drain` the finished samples; :meth:`close` at the end, then take, give and drain
    until :attr:`done`. Who runs the U-Nets decides the batching, across streams too
    (:meth:`NetworkRunner.run_ready <unet_sep.separate.runner.NetworkRunner.run_ready>`).

    Args:
        config: the model's config (STFT, F, stems, mask settings).
        plan: segment length and hop (see :class:`SegmentPlan`).
        groups: number of channel groups ``G`` processed side by side.
        settings: the separation's resolved settings: the device the STFT, U-Nets and masks run on, the U-Nets'
            memory layout (the net must be in it too), the mask extension, the Wiener filter and the precision
            (named when the stems are not finite).
        extension_weights: also overlap-add the per-frame extension masks (:meth:`drain`'s weights), for sharing
            out the band above the model's rate (:func:`~unet_sep.separate.stages.share_residual`).
    """

    def __init__(self, config: ModelConfig, plan: SegmentPlan, groups: int, settings: ResolvedSettings,
                 extension_weights: bool = False) -> None:
        self.config = config
        self.precision = settings.precision
        self.plan = plan
        self.device = settings.device
        self.mask_extension = settings.mask_extension
        self.layout = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.n_fft = config.stft.n_fft
        self.hop = config.stft.hop_length
        self.n_bins = config.stft.n_bins
        self.n_stems = len(config.stems)
        self.shape = (groups, config.n_channels)
        self.window = hann_window(self.n_fft, self.device)
        self.envelope = window_envelope(self.n_fft, self.hop, self.window)
        self.segment_weights = plan.weights(self.device)

        device, lead = self.device, self.shape
        # Padded signal (n_fft leading zeros) from padded index `signal_start`.
        self.signal = SlidingBuffer(lead, torch.float32, device)
        self.signal.extend_zeros(self.n_fft)
        self.signal_start = 0
        self.received = 0
        # Complex STFT frames from frame `spec_start`; frames [0, frames_done) have been computed.
        self.spec = SlidingBuffer(lead + (self.n_bins,), torch.complex64, device)
        self.spec_start = 0
        self.frames_done = 0
        self.next_start = 0  # start frame of the next regular segment
        self._final_starts: list[int] = []  # after close(): the segments still to run
        # Weighted mask sums over frames from `final_frames` on, and their weight sums.
        self.mask_sum = SlidingBuffer((self.n_stems,) + lead + (config.frequency_bins,), torch.float32, device)
        self.weight_sum = SlidingBuffer((), torch.float32, device)
        self.final_frames = 0
        # Overlap-add accumulators of stem samples and extension weights from padded index `out_start`.
        self.out = SlidingBuffer((self.n_stems,) + lead, torch.float32, device)
        self.out_weights = SlidingBuffer((self.n_stems,) + lead, torch.float32, device)
        self.window_squared = self.window**2
        self.has_weights = extension_weights
        self.wiener = WienerWindow(settings.wiener) if settings.wiener.active else None
        self._softmask = self.wiener is not None and self.wiener.settings.softmask
        self.out_start = 0
        self.emitted = 0
        self.finished = False
        self.total_frames: int | None = None

    # ---- public: the caller runs the U-Nets (NetworkRunner.run_batch, possibly over several streams) -
    def feed(self, block: np.ndarray | torch.Tensor) -> None:
        """Append samples ``[G, C, n]`` and compute the STFT frames they complete (no U-Net work)."""
        if self.finished:
            raise RuntimeError("feed() after close()")
        block = self._to_device(block)
        if tuple(block.shape[:2]) != self.shape:
            raise ValueError(f"expected blocks of shape {self.shape + ('n',)}, got {tuple(block.shape)}")
        if block.shape[-1] == 0:
            return
        self.signal.append(block)
        self.received += block.shape[-1]
        available = (self.signal_start + self.signal.length - self.n_fft) // self.hop + 1
        self._analyze(available)

    def close(self) -> None:
        """The input has ended: pad it, compute the last frames and plan the last segments."""
        if self.finished:
            return
        self.finished = True
        if self.received == 0:
            self._final_starts = []
            return
        total_frames = num_frames(self.received, self.n_fft, self.hop)
        self.signal.extend_zeros((total_frames - 1) * self.hop + self.n_fft - (self.signal_start + self.signal.length))
        self._analyze(total_frames)
        self.total_frames = total_frames
        self._final_starts = self.plan.remaining_starts(self.next_start, total_frames)

    def ready(self) -> int:
        """Segments whose frames are all computed and that have not been taken yet."""
        if self.finished:
            return len(self._final_starts)
        if self.frames_done < self.plan.frames:
            return 0
        return max(0, (self.frames_done - self.plan.frames - self.next_start) // self.plan.hop + 1)

    def take(self, count: int) -> tuple[torch.Tensor, list[int]]:
        """The next ``count`` ready segments as a U-Net batch ``[count * G, C, T, F]`` and their start frames.

        Pass the U-Nets' output for it to :meth:`give` before taking again or draining.
        """
        count = min(count, self.ready())
        if self.finished:
            starts, self._final_starts = self._final_starts[:count], self._final_starts[count:]
        else:
            starts = [self.next_start + i * self.plan.hop for i in range(count)]
        if starts:
            self.next_start = starts[-1] + self.plan.hop
        magnitude = torch.stack([self._segment_magnitude(s) for s in starts])  # [N, G, C, T, F]
        n, g, c, t, f = magnitude.shape
        return magnitude.reshape(n * g, c, t, f).contiguous(memory_format=self.layout), starts

    @torch.inference_mode()
    def give(self, estimates: torch.Tensor, starts: list[int]) -> None:
        """Add the U-Nets' estimates ``[S, N * G, C, T, F]`` for the segments at ``starts`` to the cross-fade."""
        estimates = estimates.float()
        masks = softmask(estimates) if self._softmask else ratio_masks(estimates, self.config.separation_exponent)
        g, c = self.shape
        n, t, f = len(starts), masks.shape[-2], masks.shape[-1]
        masks = masks.reshape(self.n_stems, n, g, c, t, f).transpose(-1, -2)  # [S, N, G, C, F, T]
        head, used_end = self.plan.head, self.plan.used_end  # the frames whose masks are used (all but live)
        if (head, used_end) != (0, t):
            masks = masks[..., head:used_end]
        end = starts[-1] + used_end
        if self.total_frames is not None:
            end = min(end, self.total_frames)
        grow = end - (self.final_frames + self.weight_sum.length)
        self.mask_sum.extend_zeros(grow)
        self.weight_sum.extend_zeros(grow)
        offsets = [start + head - self.final_frames for start in starts]
        add_segments(self.mask_sum.data, self.weight_sum.data, masks, offsets, self.segment_weights[head:used_end])

    def drain(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The stem samples (and extension weights) that no pending segment can change any more; a
        :class:`NonFiniteStemsError` when any of them is NaN or infinite (the stream is then unusable)."""
        if self.finished:
            if self.total_frames is None:
                return self._empty()
            return self._advance(self._final_starts[0] if self._final_starts else self.total_frames)
        upcoming = self.next_start + self.plan.head  # a live plan's next segment leaves its head alone
        if self.plan.fit_end:  # the end segment, not planned yet, starts no earlier than this
            upcoming = min(upcoming, self.plan.end_start(self.frames_done))
        return self._advance(upcoming)

    @property
    def done(self) -> bool:
        """Closed, every segment run and every sample drained."""
        return self.finished and not self._final_starts and self.emitted >= self.received

    # ---- steps ------------------------------------------------------------------------------------
    def _to_device(self, block: np.ndarray | torch.Tensor) -> torch.Tensor:
        block = torch.as_tensor(block, dtype=torch.float32)
        if self.device.type == "cuda" and block.device.type == "cpu":
            # Pinned through this engine's GPU, whatever the current device: no context, no memory on GPU 0.
            with torch.cuda.device(self.device):
                pinned = block.pin_memory()
            return pinned.to(self.device, non_blocking=True)
        return block.to(self.device)

    def _empty(self) -> tuple[np.ndarray, np.ndarray | None]:
        empty = np.zeros((self.n_stems, *self.shape, 0), dtype=np.float32)
        return empty, (empty if self.has_weights else None)

    def _analyze(self, upto: int) -> None:
        """Compute STFT frames [frames_done, upto) and drop the samples no later frame needs."""
        if upto <= self.frames_done:
            return
        lo = self.frames_done * self.hop - self.signal_start
        hi = (upto - 1) * self.hop + self.n_fft - self.signal_start
        frames = analyze_frames(self.signal.data[..., lo:hi], self.n_fft, self.hop, self.window)
        self.spec.append(frames)
        self.frames_done = upto
        keep_from = upto * self.hop
        self.signal.drop(keep_from - self.signal_start)
        self.signal_start = keep_from

    def _segment_magnitude(self, start: int) -> torch.Tensor:
        """Magnitude ``[G, C, T, F]`` of frames [start, start + T); beyond the signal's last frame (only once closed),
        the last frames mirrored (:meth:`SegmentPlan.pad_index`) or, in Spleeter's mode, zeros."""
        lo = start - self.spec_start
        piece = self.spec.data[..., : self.config.frequency_bins, lo : lo + self.plan.frames].abs()
        short = self.plan.frames - piece.shape[-1]
        if short > 0 and self.plan.reflect_end:
            piece = piece[..., self.plan.pad_index(piece.shape[-1], self.device)]
        elif short > 0:
            piece = torch.nn.functional.pad(piece, (0, short))
        return piece.transpose(-1, -2)

    def _advance(self, final_upto: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Synthesise frames [final_frames, final_upto) and return the samples that became final."""
        final_upto = min(final_upto, self.frames_done)
        if final_upto > self.final_frames:
            # A few hundred frames at a time, so the temporaries (extended masks, masked spectra, inverse
            # FFT frames) stay small whatever the batch size.
            # Frames no segment gives masks to (a live plan's first ones, before its first segment's head): none.
            unmasked = final_upto - self.final_frames - self.weight_sum.length
            self.mask_sum.extend_zeros(unmasked)
            self.weight_sum.extend_zeros(unmasked)
            ready_upto, block = self._synthesis_span(final_upto)
            while self.final_frames < ready_upto:
                n = min(ready_upto - self.final_frames, block)
                self._synthesize(n, final_upto - self.final_frames - n)
            # Frames before final_frames and the next segment's start are no longer needed.
            drop = min(self.final_frames, self.next_start) - self.spec_start
            if drop > 0:
                self.spec.drop(drop)
                self.spec_start += drop
        # Samples before the start of the first unsynthesised frame are complete.
        complete = self.final_frames * self.hop - self.n_fft  # in real-sample coordinates
        if self.finished and self.total_frames is not None and self.final_frames >= self.total_frames:
            complete = self.received
        complete = min(complete, self.received)
        if complete <= self.emitted:
            return self._empty()
        lo = self.emitted + self.n_fft - self.out_start
        hi = complete + self.n_fft - self.out_start
        first = self.emitted + self.n_fft  # in padded-signal coordinates
        samples = divide_by_envelope(self.out.data[..., lo:hi], self.envelope, first, self.hop)
        weights = None
        if self.has_weights:
            weights = divide_by_envelope(self.out_weights.data[..., lo:hi], self.envelope, first, self.hop)
        stems, shares = samples.cpu().numpy(), None if weights is None else weights.cpu().numpy()
        self._check_finite(stems, shares)
        self.out.drop(hi)
        self.out_weights.drop(hi)
        self.out_start += hi
        self.emitted = complete
        return stems, shares

    def _check_finite(self, *arrays: np.ndarray | None) -> None:
        """A :class:`NonFiniteStemsError` unless every value of ``arrays`` (``[..., n]``, from sample :attr:`emitted`
        on) is finite, saying where the first bad one is and what to try (numpy's check, on the arrays handed out
        anyway: torch's isfinite measured far slower on the CPU)."""
        for values in arrays:
            if values is None or np.isfinite(values).all():
                continue
            first = int(np.flatnonzero(~np.isfinite(values).reshape(-1, values.shape[-1]).all(axis=0))[0])
            at = (self.emitted + first) / self.config.sample_rate
            if self.precision == "fp32":
                why = "its weights may be damaged, or overflow float32 on this input"
            else:
                why = f"{self.precision} arithmetic overflows on this input; try --precision fp32"
            raise NonFiniteStemsError(f"the model gave non-finite values (NaN or inf) from {at:.1f} s on, so no "
                                      f"stems are given: {why}")

    def _synthesis_span(self, final_upto: int) -> tuple[int, int]:
        """With masks final up to ``final_upto``: up to which frame stems can be synthesised now, and how many frames
        at a time. The Wiener filter waits for its look-ahead context, or with whole-track statistics for the end."""
        if self.wiener is None:
            return final_upto, _SYNTH_FRAMES
        at_end = self.finished and final_upto >= (self.total_frames or 0)
        block = self.wiener.settings.block
        if block is None:
            return (final_upto if at_end else self.final_frames), max(1, final_upto - self.final_frames)
        if at_end:
            return final_upto, block
        # Whole blocks only, on a fixed grid: the statistics windows must not depend on how the input came in.
        whole = max(0, final_upto - self.wiener.lookahead - self.final_frames) // block
        return self.final_frames + whole * block, block

    def _synthesize(self, n: int, final_after: int = 0) -> None:
        """Apply the finished masks of the next ``n`` frames and overlap-add the stems into ``out``; the Wiener
        filter also sees up to its look-ahead of the ``final_after`` frames after them whose masks are final."""
        ahead = min(final_after, self.wiener.lookahead) if self.wiener is not None else 0
        # No weight only on a live plan's first frames, before its first segment's head: masks of zero there.
        masks = self.mask_sum.data[..., : n + ahead] / self.weight_sum.data[: n + ahead].clamp_min(_LEAST_WEIGHT)
        lo = self.final_frames - self.spec_start
        spec = self.spec.data[..., lo : lo + n + ahead]
        # One mask per frame above F (dsp.masks): it masks the bins above F and weighs the share-out above the rate.
        spectra, extension = masked_spectra(masks, spec, self.mask_extension)
        weights = None
        if self.has_weights:
            weights = overlap_add_weights(extension[..., :n], self.window_squared, self.hop)
        if self.wiener is not None:
            spectra = self.wiener.filter(spectra, spec, n)
        stems = synthesize_frames(spectra, self.n_fft, self.hop, self.window)
        offset = self.final_frames * self.hop - self.out_start
        grow = offset + stems.shape[-1] - self.out.length
        self.out.extend_zeros(grow)
        self.out.data[..., offset : offset + stems.shape[-1]] += stems
        if weights is not None:
            self.out_weights.extend_zeros(grow)
            self.out_weights.data[..., offset : offset + stems.shape[-1]] += weights
        self.mask_sum.drop(n)
        self.weight_sum.drop(n)
        self.final_frames += n
