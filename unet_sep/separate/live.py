"""Live separation: audio in as it arrives, stems out with a fixed delay the caller bounds.

A :class:`LiveSession` runs the streaming engine (:class:`~unet_sep.separate.stream.SeparationStream`) on a live
segment plan (:meth:`SegmentPlan.live <unet_sep.separate.segments.SegmentPlan.live>`): every ``hop`` STFT frames a
segment of ``T`` frames ending ``lookahead`` frames after the newest hop goes through the U-Nets, and its masks
of that hop are the ones used (the rest of the segment is past context). A frame's stems are then final
``lookahead + hop`` frames after it arrived at most, whatever ``T``. The delay of the stems, in samples at the
input's rate, is that, plus the STFT window (``n_fft - 1`` samples) and the hold of the streaming resamplers
into the model's rate and back (:func:`~unet_sep.audio.resample.stream_lag`), counted once when the session is
made (:attr:`LiveSession.latency_samples`); the session delays every stem by exactly that, so each block in gives
a block of the same length out, whatever the block sizes. Silence stands before the input (the first segments'
past context) and, at :meth:`LiveSession.flush`, after it.

The plan for a latency in seconds (:func:`live_plan`) spends the frames the latency allows on one hop and a
lookahead (``live_lookahead`` of them, the rest the hop), with segments of ``live_segment_frames`` (default:
:data:`DEFAULT_SEGMENT_FRAMES`); ``docs/live.md`` has the measurements the defaults come from
(``benchmarks/live_latency.py``).
The Wiener filter is not used live: its statistics window would add its own delay.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from unet_sep.audio.resample import check_sample_rate, stream_lag
from unet_sep.config import ModelConfig
from unet_sep.errors import SettingError
from unet_sep.separate.runner import NetworkRunner
from unet_sep.separate.segments import SegmentPlan
from unet_sep.separate.stages import InvalidAudioError, check_array
from unet_sep.separate.wiener_window import WienerSettings

# Segment frames of live plans when none are given (at most the model's own): 128 frames (2 s of the bundled
# model's past) gave the same MIR-1K vocals GNSDR as 256 and 512 at 1 s and more of latency, at half the compute
# or less (docs/live.md, benchmarks/live_latency.py).
DEFAULT_SEGMENT_FRAMES = 128


@dataclass(frozen=True)
class LivePlan:
    """A live segment plan and the exact delay it gives at ``sample_rate`` (``latency_samples``)."""

    plan: SegmentPlan
    sample_rate: int
    latency_samples: int

    @property
    def latency(self) -> float:
        """The delay in seconds."""
        return self.latency_samples / self.sample_rate


def plan_latency(config: ModelConfig, plan: SegmentPlan, sample_rate: int) -> int:
    """The delay in samples at ``sample_rate`` of the stems of a live ``plan`` behind the input: the engine's (a
    frame is final ``lookahead + hop + fade`` frames after the last frame a segment waits for, and a sample once
    every frame over it is), and the streaming resamplers' hold when ``sample_rate`` is not the model's."""
    assert plan.lookahead is not None, "a live plan"
    stft = config.stft
    engine = (plan.lookahead + plan.hop + plan.fade - 1) * stft.hop_length + stft.n_fft - 1  # at the model's rate
    if sample_rate == config.sample_rate:
        return engine
    into = stream_lag(sample_rate, config.sample_rate)
    back = stream_lag(config.sample_rate, sample_rate)
    return math.ceil((into + engine) * sample_rate / config.sample_rate + back)


def live_plan(config: ModelConfig, sample_rate: int, latency: float, segment_frames: int | None = None,
              lookahead: float = 0.5, fade: bool = False) -> LivePlan:
    """The live plan with the most context that keeps the delay at ``sample_rate`` within ``latency`` seconds: of
    the frames it allows after the newest one, ``lookahead`` (a fraction) are the lookahead and the rest the hop
    (at least one frame), with ``fade`` the previous hop cross-faded over one more hop; segments of
    ``segment_frames`` (default: :data:`DEFAULT_SEGMENT_FRAMES`, or the model's own when shorter, on the U-Nets'
    stride grid; longer when the frames allowed need it).
    A :class:`~unet_sep.errors.SettingError` naming ``latency`` and the least latency this model allows when no
    plan fits."""
    grid = 2 ** config.unet.depth
    default_frames = -(-min(config.segment_frames, DEFAULT_SEGMENT_FRAMES) // grid) * grid

    def plan_of(frames: int) -> SegmentPlan:
        hop = max(1, round(frames * (1.0 - lookahead) / (2 if fade else 1)))
        ahead = max(0, frames - hop * (2 if fade else 1))
        least = -(-(ahead + 2 * hop + (hop if fade else 0)) // grid) * grid  # a hop of past context at least
        return SegmentPlan.live(max(segment_frames or default_frames, least), hop, ahead, hop if fade else 0)

    def fits(plan: SegmentPlan) -> bool:
        within = plan_latency(config, plan, sample_rate) <= latency * sample_rate
        return within and (segment_frames is None or plan.frames == segment_frames)

    frames = 2 if fade else 1
    if not fits(plan_of(frames)):
        least = plan_latency(config, plan_of(frames), sample_rate) / sample_rate
        raise SettingError("latency", f"{latency:g} s is below the least latency this model allows at {sample_rate} Hz "
                                      f"({least:.3f} s)")
    step = 1 << 12
    while step:  # the most frames after the newest one that keep the plan within the latency
        if fits(plan_of(frames + step)):
            frames += step
        else:
            step >>= 1
    plan = plan_of(frames)
    return LivePlan(plan, sample_rate, plan_latency(config, plan, sample_rate))


class LiveSession:
    """Separates audio as it arrives with a fixed delay: each block in gives a block of the same length out.

    Made by :meth:`Separator.live_session <unet_sep.separate.separator.Separator.live_session>`. :meth:`process`
    takes ``[channels, n]`` float blocks of any length and returns ``[len(stems), channels, n]`` float32: the stems
    of the input ``latency_samples`` earlier (zeros before the input starts); :meth:`flush` returns the last
    ``latency_samples`` of the stems at the end. The output does not depend on how the input is cut into blocks.
    It does no I/O and starts no threads, so it can run in an audio callback (if the machine keeps up: see the
    real-time factors in ``docs/live.md``).
    """

    def __init__(self, runner: NetworkRunner, live: LivePlan, channels: int) -> None:
        self.sample_rate = check_sample_rate(live.sample_rate)
        self.channels = channels
        self.plan = live.plan
        self.latency_samples = live.latency_samples
        wiener_off = WienerSettings(0, 0, softmask=False)
        self._runner = runner.with_settings(dataclasses.replace(runner.settings, plan=live.plan, wiener=wiener_off))
        self.stems = self._runner.stems
        self._front = self._runner.input_stage(1, channels, self.sample_rate)
        self._back = self._runner.output_stage(1, channels, self.sample_rate, holdback=0)
        self._engine = self._runner.engine(self._front.groups, sample_rate=self.sample_rate)
        # Silence before the input: the first segment's head (past context) falls on it, and is dropped again.
        hop = runner.config.stft.hop_length
        self._lead = self.plan.head * hop
        self._engine.feed(np.zeros((self._front.groups, runner.config.n_channels, self._lead), np.float32))
        self._ready: list[np.ndarray] = []  # stems [S, C, n] computed, not yet handed out
        self._ready_count = 0
        self._received = 0
        self._flushed = False

    def process(self, block: np.ndarray) -> np.ndarray:
        """Separate ``[channels, n]`` samples: the stems ``[len(stems), channels, n]`` of the input
        :attr:`latency_samples` earlier. :class:`~unet_sep.separate.stages.InvalidAudioError` for a wrong shape or
        NaN or infinite samples."""
        if self._flushed:
            raise RuntimeError("process() after flush()")
        check_array(block, "block", (np.ndarray,))
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise InvalidAudioError(f"live blocks must be [{self.channels}, n], got shape {block.shape}")
        checked = self._front.check(block[None])
        n = checked.shape[-1]
        if n:
            self._separate(checked)
        return self._emit(n)

    def flush(self) -> np.ndarray:
        """The end of the input: the stems of its last :attr:`latency_samples` samples,
        ``[len(stems), channels, latency_samples]`` (computed with silence after the input)."""
        tail = self.process(np.zeros((self.channels, self.latency_samples), np.float32))
        self._flushed = True
        return tail

    def _separate(self, block: np.ndarray) -> None:
        """Feed a checked ``[1, channels, n]`` block through and keep the stems that became final."""
        self._back.add_input(block)
        self._engine.feed(self._front.process(block))
        for _ in self._runner.run_ready(lambda: [self._engine], final=True):
            pass
        stems, weights = self._engine.drain()
        if self._lead:  # the silence put before the input
            cut = min(self._lead, stems.shape[-1])
            stems, weights = stems[..., cut:], None if weights is None else weights[..., cut:]
            self._lead -= cut
        for out in self._back.push(stems, weights):
            self._ready.append(out[:, 0])
            self._ready_count += out.shape[-1]

    def _emit(self, n: int) -> np.ndarray:
        """The next ``n`` output samples: zeros until :attr:`latency_samples`, then the stems in order."""
        out = np.zeros((len(self.stems), self.channels, n), np.float32)
        silent = min(n, max(0, self.latency_samples - self._received))
        self._received += n
        want = n - silent
        if want > self._ready_count:  # the stated latency is a bound the engine always meets
            raise RuntimeError(f"live separation fell {want - self._ready_count} samples short of its latency")
        filled = silent
        while filled < n:
            first = self._ready[0]
            take = min(first.shape[-1], n - filled)
            out[..., filled : filled + take] = first[..., :take]
            if take == first.shape[-1]:
                self._ready.pop(0)
            else:
                self._ready[0] = first[..., take:]
            filled += take
        self._ready_count -= want
        return out

