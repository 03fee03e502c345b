"""The file pipeline's writer thread: stems back to each input's rate and channels (sharing out the residual above
the model's band, see :class:`~unet_sep.separate.stages.OutputStage`), to the output rate, encoded under
temporary names and committed by renaming; and every :class:`~unet_sep.separate.files.FileEvent` of the run.

Messages from the model stage: ``("start", job, info)``, ``("input", job, block)`` (the input's own samples, for
the residual), ``("output", job, stems, weights, final)``, ``("skip", job)``, and ``("error" | "abort", job,
error)`` for an input that failed elsewhere; :data:`~unet_sep.separate.files.QUEUE_END` ends the thread.
"""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import numpy as np

from unet_sep.audio.decode import AudioDecodeError, AudioInfo
from unet_sep.audio.encode import AtomicAudioWriter, AudioEncodeError, default_bit_depth
from unet_sep.audio.resample import StreamResampler
from unet_sep.errors import FileError
from unet_sep.separate.files import QUEUE_END, FileEvent, FileJob, FileOptions
from unet_sep.separate.outputs import OutputStems
from unet_sep.separate.runner import NetworkRunner
from unet_sep.separate.stages import OutputStage


class _OpenOutputs:
    """The writer's state of one input being written: ``back`` brings the stems to the input's rate and channels,
    ``resampler`` them to the output rate (``out_rate``), the writers encode them."""

    def __init__(self, job: FileJob, info: AudioInfo, back: OutputStage, out_rate: int) -> None:
        self.job = job
        self.info = info
        self.back = back
        self.out_rate = out_rate
        self.resampler = StreamResampler(info.sample_rate, out_rate, len(job.outputs) * info.channels)
        self.writers: dict[str, AtomicAudioWriter] = {}
        self.created_dirs: list[Path] = []
        self.written = 0  # samples per stem at the output rate
        self.emitted = 0  # samples per stem at the input's rate

    def event(self, kind: str, **values) -> FileEvent:
        job = self.job
        return FileEvent(kind, job.index, job.path, job.outputs, done=self.emitted, total=max(job.total, self.emitted),
                         sample_rate=self.info.sample_rate, **values)

    def write(self, block: np.ndarray, channels: int) -> None:
        if block.shape[-1] == 0:
            return
        per_stem = block.reshape(len(self.writers), channels, -1)
        for i, writer in enumerate(self.writers.values()):
            writer.write(per_stem[i])
        self.written += per_stem.shape[-1]

    def commit(self) -> None:
        if self.written == 0:
            raise AudioDecodeError("no audio samples were decoded")
        for writer in self.writers.values():
            writer.commit()

    def abort(self) -> None:
        """Remove the temporary files and the folders made for them."""
        for writer in self.writers.values():
            writer.abort()
        self.writers = {}
        for folder in reversed(self.created_dirs):
            try:
                folder.rmdir()
            except OSError:
                pass
        self.created_dirs = []


class StemWriter:
    """What the writer thread does (:meth:`run`), for the inputs of one run."""

    def __init__(self, runner: NetworkRunner, options: FileOptions, outputs: OutputStems) -> None:
        self.runner = runner
        self.options = options
        self.outputs = outputs

    def run(self, to_writer: queue.Queue, events: queue.Queue, aborted: list[Path]) -> None:
        """Handle messages until :data:`QUEUE_END`; then remove what is unfinished (an interrupted run) and list
        those inputs in ``aborted``."""
        open_outputs: dict[int, _OpenOutputs] = {}
        while True:
            message = to_writer.get()
            if message is QUEUE_END:
                break
            job = message[1]
            try:
                self._handle(message, open_outputs, events)
            except Exception as error:  # an encoding failure: this file only
                job.failed.set()
                _abort(open_outputs.pop(job.index, None))
                events.put(FileEvent("failed", job.index, job.path, error=_naming(error, job.path)))
        for state in open_outputs.values():  # interrupted: nothing partial stays behind
            state.abort()
            aborted.append(state.job.path)

    def _handle(self, message: tuple, open_outputs: dict[int, _OpenOutputs], events: queue.Queue) -> None:
        kind, job = message[0], message[1]
        if kind == "skip":
            events.put(FileEvent("skipped", job.index, job.path, job.outputs))
        elif kind == "error" or kind == "abort":
            _abort(open_outputs.pop(job.index, None))
            events.put(FileEvent("failed", job.index, job.path, error=_naming(message[2], job.path)))
        elif job.failed.is_set():
            return
        elif kind == "start":
            info = message[2]
            events.put(FileEvent("started", job.index, job.path, job.outputs, total=job.total,
                                 sample_rate=info.sample_rate))
            state = open_outputs[job.index] = _OpenOutputs(
                job, info, self.runner.output_stage(1, info.channels, info.sample_rate),
                int(self.options.sample_rate or info.sample_rate))
            self._open(state)
        elif kind == "input":
            open_outputs[job.index].back.add_input(message[2])
        elif kind == "output":
            _, _, stems, weights, final = message
            state = open_outputs[job.index]
            self._emit(state, state.back.push(stems, weights, final=final), final)
            if final:
                state.commit()
                del open_outputs[job.index]
                events.put(state.event("done", seconds=time.perf_counter() - job.started))
            else:
                events.put(state.event("progress"))

    def _open(self, state: _OpenOutputs) -> None:
        """Create the output folders and the writers (temporary files) of one input."""
        options, outputs, info = self.options, state.job.outputs, state.info
        for target in outputs.values():
            state.created_dirs.extend(_make_parents(target.parent))
        depth = options.bit_depth or default_bit_depth(options.fmt, info.subtype)
        for stem, target in outputs.items():
            state.writers[stem] = AtomicAudioWriter(target, state.out_rate, info.channels, options.fmt, depth,
                                                    options.bitrate)

    def _emit(self, state: _OpenOutputs, blocks: list[np.ndarray], final: bool) -> None:
        channels = state.info.channels
        for block in blocks:  # [S, 1, C, n]
            state.emitted += block.shape[-1]
            chosen = np.tensordot(self.outputs.mix, block[:, 0], axes=1)  # the written stems (or sums of stems)
            state.write(state.resampler.process(chosen.reshape(-1, chosen.shape[-1])), channels)
        if final:
            state.write(state.resampler.flush(), channels)


def _abort(state: _OpenOutputs | None) -> None:
    if state is not None:
        state.abort()


def _naming(error: BaseException, path: Path) -> BaseException:
    """``error``, naming ``path`` if it is about a file and does not name one yet."""
    return error.about(path) if isinstance(error, FileError) else error


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return the ones created, outermost first."""
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
            raise AudioEncodeError(f"cannot create output folder {item}: {error.strerror or error}") from error
    if not os.access(folder, os.W_OK):
        raise AudioEncodeError(f"output folder {folder} is not writable")
    return missing
