"""The file pipeline's writer thread: stems back to each input's rate and channels (sharing out the residual above
the model's band, see :class:`~unet_sep.separate.stages.OutputStage`), to the output rate, encoded under
temporary names (or first spooled, where ``clip_mode`` is "rescale") and committed by renaming; and every
:class:`~unet_sep.separate.files.FileEvent` of the run.

Messages from the model stage: ``("start", job, info)``, ``("input", job, block)`` (the input's own samples, for
the residual), ``("output", job, stems, weights, final)``, ``("skip", job)``, and ``("error" | "abort", job,
error)`` for an input that failed elsewhere; :data:`~unet_sep.separate.files.QUEUE_END` ends the thread. A write
that finds the output folder full (or read-only) fails its input, stops the run (:class:`RunHalt`) and fails the
other inputs in progress with the one :class:`~unet_sep.separate.files.NotSeparatedError`.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import queue
import time
from pathlib import Path
from typing import Callable

import numpy as np

from unet_sep.audio.decode import AudioDecodeError, AudioInfo
from unet_sep.audio.encode import AtomicAudioWriter, AudioEncodeError, OutputFolderError, rescale_gain, write_failure
from unet_sep.audio.resample import StreamResampler
from unet_sep.audio.spool import StemSpool
from unet_sep.errors import FileError
from unet_sep.separate.files import QUEUE_END, FileEvent, FileJob, FileOptions, RunHalt
from unet_sep.separate.outputs import OutputStems
from unet_sep.separate.runner import NetworkRunner
from unet_sep.separate.stages import BLOCK_SAMPLES, OutputStage

logger = logging.getLogger(__name__)

# Called on the writer thread with an input's index and ``{stem: float32 [channels, n]}``, the samples just handed
# to the stems' encoders at the output rate, in order (before any clipping the format does); after the last
# block, the stems are renamed into place. A server plays stems from it while the rest is separated. With clip
# mode "rescale" the blocks come at the end, scaled by the song's gain (which needs the whole song).
SamplesHook = Callable[[int, dict[str, np.ndarray]], None]


class _OpenOutputs:
    """The writer's state of one input being written: ``back`` brings the stems to the input's rate and channels,
    ``resampler`` them to the output rate (``out_rate``), the writers encode them (after the spool, if any)."""

    def __init__(self, job: FileJob, info: AudioInfo, back: OutputStage, out_rate: int,
                 on_samples: SamplesHook | None = None) -> None:
        self.job = job
        self.on_samples = on_samples
        self.info = info
        self.back = back
        self.out_rate = out_rate
        self.resampler = StreamResampler(info.sample_rate, out_rate, len(job.outputs) * info.channels)
        self.writers: dict[str, AtomicAudioWriter] = {}
        self.spool: StemSpool | None = None  # clip mode "rescale": the whole song before any of it is encoded
        self.created_dirs: list[Path] = []
        self.written = 0  # samples per stem at the output rate
        self.emitted = 0  # samples per stem at the input's rate

    def event(self, kind: str, **values) -> FileEvent:
        job = self.job
        return FileEvent(kind, job.index, job.path, job.outputs, done=self.emitted, total=max(job.total, self.emitted),
                         sample_rate=self.info.sample_rate, **values)

    def write(self, block: np.ndarray) -> None:
        """Stems ``[outputs * channels, n]`` at the output rate."""
        if block.shape[-1] == 0:
            return
        if self.spool is not None:
            self.spool.write(block)
        else:
            self._encode(block)
        self.written += block.shape[-1]

    def _encode(self, block: np.ndarray) -> None:
        per_stem = block.reshape(len(self.writers), self.info.channels, -1)
        for i, writer in enumerate(self.writers.values()):
            writer.write(per_stem[i])
        if self.on_samples is not None:
            self.on_samples(self.job.index, dict(zip(self.writers, per_stem, strict=True)))

    def commit(self) -> float:
        """Encode what the spool holds (with its gain), finish every stem, then rename them all; returns the gain.

        A stem that fails to finish fails the input before any is renamed; one that fails to be renamed takes
        back the renames before it, so an input's stems appear together or not at all (with ``overwrite``, the
        files they replaced are gone either way).
        """
        if self.written == 0:
            raise AudioDecodeError("no audio samples were decoded")
        gain = 1.0
        if self.spool is not None:
            gain = rescale_gain(self.spool.peak)
            for block in self.spool.blocks(BLOCK_SAMPLES):
                self._encode(block * np.float32(gain) if gain != 1.0 else block)
            self.spool.remove()
            self.spool = None
        for writer in self.writers.values():
            writer.finish()
        published: list[Path] = []
        try:
            for writer in self.writers.values():
                published.append(writer.publish())
        except AudioEncodeError:
            for path in published:
                path.unlink(missing_ok=True)
            raise
        return gain

    def abort(self) -> None:
        """Remove the temporary files and the folders made for them."""
        for writer in self.writers.values():
            writer.abort()
        self.writers = {}
        if self.spool is not None:
            self.spool.remove()
            self.spool = None
        for folder in reversed(self.created_dirs):
            try:
                folder.rmdir()
            except OSError:
                pass
        self.created_dirs = []


class StemWriter:
    """What the writer thread does (:meth:`run`), for the inputs of one run: its events go to ``events``, a
    full output folder stops the run through ``halt``, and ``on_samples`` (if any) sees every block encoded."""

    def __init__(self, runner: NetworkRunner, options: FileOptions, outputs: OutputStems, events: queue.Queue,
                 halt: RunHalt, on_samples: SamplesHook | None = None) -> None:
        self.runner = runner
        self.on_samples = on_samples
        self.options = options
        self.outputs = outputs
        self.events = events
        self.halt = halt
        self._open_outputs: dict[int, _OpenOutputs] = {}
        self._reported: set[int] = set()  # inputs whose failure is reported (one final event each)

    def run(self, to_writer: queue.Queue, aborted: list[Path]) -> None:
        """Handle messages until :data:`QUEUE_END`; then remove what is unfinished (an interrupted run) and list
        those inputs in ``aborted``."""
        while True:
            message = to_writer.get()
            if message is QUEUE_END:
                break
            job = message[1]
            if self.halt.is_set() and message[0] != "skip":
                self._fail(job, self.halt.error())
                continue
            try:
                self._handle(message)
            except Exception as error:  # an encoding failure: this file only, or the run if the folder is full
                self._fail(job, error)
                if isinstance(error, OutputFolderError):
                    self._stop(error)
        for state in self._open_outputs.values():  # interrupted: nothing partial stays behind
            state.abort()
            aborted.append(state.job.path)

    def _fail(self, job: FileJob, error: BaseException) -> None:
        """Give up on ``job``: remove its outputs, and report it (once)."""
        job.failed.set()
        _abort(self._open_outputs.pop(job.index, None))
        if job.index not in self._reported:
            self._reported.add(job.index)
            self.events.put(FileEvent("failed", job.index, job.path, error=_naming(error, job.path)))

    def _stop(self, cause: OutputFolderError) -> None:
        """The output folder can take no more: stop the run and fail every input in progress alike."""
        self.halt.stop(cause)
        for state in list(self._open_outputs.values()):
            self._fail(state.job, self.halt.error())

    def _handle(self, message: tuple) -> None:
        kind, job = message[0], message[1]
        open_outputs = self._open_outputs
        if kind == "skip":
            self.events.put(FileEvent("skipped", job.index, job.path, job.outputs))
        elif kind == "error" or kind == "abort":
            self._fail(job, message[2])
        elif job.failed.is_set():
            return
        elif kind == "start":
            info = message[2]
            self.events.put(FileEvent("started", job.index, job.path, job.outputs, total=job.total,
                                      sample_rate=info.sample_rate))
            state = open_outputs[job.index] = _OpenOutputs(
                job, info, self.runner.output_stage(1, info.channels, info.sample_rate),
                self.options.output_rate(info), self.on_samples)
            self._open(state)
        elif kind == "input":
            open_outputs[job.index].back.add_input(message[2])
        elif kind == "output":
            _, _, stems, weights, final = message
            state = open_outputs[job.index]
            self._emit(state, state.back.push(stems, weights, final=final), final)
            if final:
                gain = state.commit()
                del open_outputs[job.index]
                if gain != 1.0:
                    logger.warning("%s: stems scaled by %.3f (%.1f dB) so that they fit %s without clipping; they "
                                   "add up to %.3f x the input", job.path, gain, 20 * math.log10(gain),
                                   self.options.fmt, gain)
                self.events.put(state.event("done", seconds=time.perf_counter() - job.started, gain=gain))
            else:
                self.events.put(state.event("progress"))

    def _open(self, state: _OpenOutputs) -> None:
        """Create the output folders and the writers (temporary files) of one input, and its spool if any."""
        options, outputs, info = self.options, state.job.outputs, state.info
        for target in outputs.values():
            state.created_dirs.extend(_make_parents(target))
        depth, clip = options.bit_depth_for(info), options.clip
        for stem, target in outputs.items():
            state.writers[stem] = AtomicAudioWriter(target, state.out_rate, info.channels, options.fmt, depth,
                                                    options.bitrate, clamp=clip == "clamp")
        if clip == "rescale":
            state.spool = StemSpool(next(iter(outputs.values())), len(outputs) * info.channels)

    def _emit(self, state: _OpenOutputs, blocks: list[np.ndarray], final: bool) -> None:
        for block in blocks:  # [S, 1, C, n]
            state.emitted += block.shape[-1]
            chosen = np.tensordot(self.outputs.mix, block[:, 0], axes=1)  # the written stems (or sums of stems)
            state.write(state.resampler.process(chosen.reshape(-1, chosen.shape[-1])))
        if final:
            state.write(state.resampler.flush())


def _abort(state: _OpenOutputs | None) -> None:
    if state is not None:
        state.abort()


def _naming(error: BaseException, path: Path) -> BaseException:
    """``error``, naming ``path`` if it is about a file and does not name one yet."""
    return error.about(path) if isinstance(error, FileError) else error


def _make_parents(target: Path) -> list[Path]:
    """Create the folder of ``target`` and its missing parents; return the ones created, outermost first."""
    folder = target.parent
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    missing.reverse()
    for item in missing:
        try:
            item.mkdir()
        except FileExistsError:
            pass
        except OSError as error:
            raise write_failure(target, error) from error
    if not os.access(folder, os.W_OK):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            raise write_failure(target, OSError(errno.EROFS, os.strerror(errno.EROFS)))
        raise AudioEncodeError(f"output folder {folder} is not writable")
    return missing
