"""The live loop: blocks from a source through a live session into sinks, watching the clock of real-time
sources.

The stems leave the session ``latency_samples`` behind the input; the loop drops that much from their start and
adds the session's flush at the end of the input, so what the sinks get lines up with the input sample for sample
(a file or a pipe holds as many samples as came in; a device plays them ``latency_samples`` later).

With a real-time source, input sample ``t`` is there at ``source.started + t / rate``; a block is late when its
stems are ready more than ``allowance`` seconds after its last sample came in. The first late block is said once
(``warn``), and the report counts late blocks and the samples the source dropped: compute that cannot keep up is
never a silent drift.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from unet_sep.live.sinks import Sink, SinkClosed
from unet_sep.live.sources import Source

logger = logging.getLogger(__name__)


class Session(Protocol):
    """What the loop needs of :class:`~unet_sep.separate.live.LiveSession`."""

    sample_rate: int
    channels: int
    stems: list[str]
    latency_samples: int

    def process(self, block: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


@dataclass
class LiveReport:
    """What a live run did: samples in and out (per channel), blocks, compute and wall seconds, the late blocks
    (their worst lateness) and the input samples dropped, and why it stopped early (None: the input ended;
    :attr:`interrupt` holds the KeyboardInterrupt that stopped it)."""

    sample_rate: int
    frames_in: int = 0
    frames_out: int = 0
    blocks: int = 0
    late_blocks: int = 0
    worst_late_seconds: float = 0.0
    dropped_frames: int = 0
    compute_seconds: float = 0.0
    wall_seconds: float = 0.0
    stopped: str | None = None
    interrupt: KeyboardInterrupt | None = None

    def summary(self) -> str:
        """One line: seconds separated, real-time factor, late and dropped blocks."""
        seconds = self.frames_in / self.sample_rate
        factor = self.compute_seconds / seconds if seconds else 0.0
        line = (f"{seconds:.2f} s separated in {self.wall_seconds:.2f} s (compute {self.compute_seconds:.2f} s, "
                f"real-time factor {factor:.2f}); {self.late_blocks} of {self.blocks} blocks late")
        if self.late_blocks:
            line += f" (worst by {self.worst_late_seconds:.3f} s)"
        line += f", {self.dropped_frames / self.sample_rate:.2f} s of input dropped"
        return line + (f"; stopped: {self.stopped}" if self.stopped else "")


def run_live(session: Session, source: Source, sinks: Sequence[Sink], allowance: float,
             max_frames: int | None = None, warn: Callable[[str], None] = logger.warning,
             progress: Callable[[int], None] | None = None) -> LiveReport:
    """Feed ``source``'s blocks through ``session`` into ``sinks`` until the input ends or ``max_frames`` input
    samples went through (then the session's flush is written too), or a sink is closed (:attr:`LiveReport.stopped`
    says so). ``progress`` gets the input samples of each block. A KeyboardInterrupt goes
    through to the caller, who finishes or aborts the sinks."""
    report = LiveReport(session.sample_rate)
    trim = session.latency_samples  # stems of the time before the input started, still to drop
    begun = time.monotonic()
    try:
        for block in source.blocks():
            if max_frames is not None:
                block = block[:, :max_frames - report.frames_in]
            started = time.monotonic()
            stems = session.process(block)
            report.compute_seconds += time.monotonic() - started
            report.frames_in += block.shape[1]
            report.blocks += 1
            trim = _deliver(stems, trim, sinks, report)
            _check_clock(source, report, allowance, warn)
            if progress is not None:
                progress(block.shape[1])
            if max_frames is not None and report.frames_in >= max_frames:
                break  # the input's end, as far as this run goes
        started = time.monotonic()
        tail = session.flush()
        report.compute_seconds += time.monotonic() - started
        _deliver(tail, trim, sinks, report)
    except SinkClosed as closed:
        report.stopped = str(closed)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or a signal that ends the run (cli.process): no flush
        report.stopped = f"interrupted ({interrupt})" if str(interrupt) else "interrupted"
        report.interrupt = interrupt
    finally:
        report.dropped_frames = source.dropped_frames
        report.wall_seconds = time.monotonic() - begun
    return report


def _deliver(stems: np.ndarray, trim: int, sinks: Sequence[Sink], report: LiveReport) -> int:
    """Write ``stems`` less the first ``trim`` samples to every sink; the samples still to trim."""
    dropped = min(trim, stems.shape[-1])
    kept = stems[..., dropped:]
    if kept.shape[-1]:
        for sink in sinks:
            sink.write(kept)
        report.frames_out += kept.shape[-1]
    return trim - dropped


def _check_clock(source: Source, report: LiveReport, allowance: float, warn: Callable[[str], None]) -> None:
    """Count the block just done as late if a real-time source's clock is more than ``allowance`` past its last
    sample; say so the first time."""
    if not source.realtime or source.started is None:
        return
    arrived = source.started + (report.frames_in + source.dropped_frames) / report.sample_rate
    late = time.monotonic() - arrived - allowance
    if late <= 0:
        return
    report.late_blocks += 1
    report.worst_late_seconds = max(report.worst_late_seconds, late)
    if report.late_blocks == 1:
        warn(f"compute falls behind: a block's stems came {late:.3f} s after the {allowance:.3f} s it may take; "
             "late blocks are counted in the summary")
