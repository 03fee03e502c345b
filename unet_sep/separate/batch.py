"""Separating many files at once: a three-stage pipeline around one loaded model.

    reader threads                 the calling thread                      writer thread
    decode -> check -> model rate  -> [bounded queue] -> STFT, U-Net batches -> [bounded queue] ->
                                      across songs, masks, iSTFT                back to the input's rate,
                                                                                 residual, encode, rename

- Readers (``readers`` threads) each take the next file, decode it in blocks, check it and resample it to the
  model's rate. Decoding and resampling of the next files run while the model computes.
- The calling thread holds one :class:`~unet_sep.separate.stream.SeparationStream` per file in flight and
  sends the ready segments of all of them through the U-Nets together, ``batch_size`` at a time, so short
  songs and song ends fill batches too. Only full batches run until the readers are done.
- The writer thread resamples the stems back, shares out the residual above the model's band, encodes, and
  commits each stem by renaming its temporary file.

Both queues are bounded (``queue_blocks`` blocks), and a reader starts a file only when it is done with the
last one, so memory stays flat however many files are given. A file that fails (decoding, encoding, bad
samples) is reported and removed; the others go on. On ``KeyboardInterrupt`` every unfinished output is
removed before the exception leaves :meth:`FilePipeline.run`.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from unet_sep.atomic import remove_stale_temporaries
from unet_sep.audio.decode import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioDecodeError, AudioInfo, open_audio
from unet_sep.audio.encode import AtomicAudioWriter, AudioEncodeError, check_encoding, default_bit_depth
from unet_sep.audio.resample import StreamResampler
from unet_sep.errors import FileError, SettingError
from unet_sep.separate.inputs import InputFile
from unet_sep.separate.outputs import (
    DEFAULT_TEMPLATE,
    OutputPathError,
    OutputStems,
    check_template,
    output_paths,
    plan_outputs,
)
from unet_sep.separate.stages import InputStage, OutputStage
from unet_sep.separate.stream import SeparationStream

if TYPE_CHECKING:
    from unet_sep.separate.separator import Separator

logger = logging.getLogger(__name__)

BLOCK_SAMPLES = 262144  # decoded samples per block (about 6 s at 44.1 kHz)


@dataclass
class FileOptions:
    """Where and how every file of a run is written (see ``unet-sep separate``).

    ``template``: see :mod:`unet_sep.separate.outputs`. ``bit_depth``: None writes each input's own depth where
    the format can store it (:func:`~unet_sep.audio.encode.default_bit_depth`). ``bitrate``: kbit/s of mp3 and
    ogg outputs. ``stems``: the stems to write (of the model's, or of ``two_stems`` and ``no_<two_stems>``).
    ``two_stems``: write this stem and the sum of all the others. ``sample_rate``: the stems' rate (None: each
    input's own).
    """

    out_dir: Path
    template: str = DEFAULT_TEMPLATE
    fmt: str = "wav"
    bit_depth: str | None = None
    bitrate: int | None = None
    stems: list[str] | None = None
    two_stems: str | None = None
    offset: float = 0.0
    duration: float | None = None
    overwrite: bool = False
    sample_rate: int | None = None

    def validate(self) -> None:
        """Raise :class:`~unet_sep.errors.SettingError` naming the first setting that cannot be used (the ones
        that need the model, ``stems`` and ``two_stems``, are checked by :class:`FilePipeline`)."""
        check_encoding(self.fmt, self.bit_depth, self.bitrate)
        check_template(self.template)
        if not (math.isfinite(self.offset) and self.offset >= 0):
            raise SettingError("offset", f"must be a number of seconds >= 0, got {self.offset}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise SettingError("duration", f"must be a number of seconds > 0, got {self.duration}")
        if self.sample_rate is not None and not (
            isinstance(self.sample_rate, (int, np.integer)) and MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE
        ):
            raise SettingError("sample_rate", f"must be a whole number of Hz from {MIN_SAMPLE_RATE} to "
                                              f"{MAX_SAMPLE_RATE}, got {self.sample_rate}")


@dataclass
class FileEvent:
    """Something that happened to one input: ``kind`` is "progress", "done", "skipped" or "failed".

    ``done`` and ``total`` count input samples (for progress bars); ``error`` is the exception of a failed file,
    whose message is one line; ``seconds`` is the wall time from the file's first block to its last write.
    """

    kind: str
    index: int
    path: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    done: int = 0
    total: int = 0
    sample_rate: int = 0
    seconds: float = 0.0
    error: BaseException | None = None


class _Job:
    """One input's state as it travels through the stages."""

    def __init__(self, index: int, path: Path, outputs: dict[str, Path]) -> None:
        self.index = index
        self.path = path
        self.outputs = outputs
        self.info: AudioInfo | None = None
        self.total = 0
        self.started = 0.0
        self.failed = threading.Event()  # set by any stage; the others then drop the file
        # Writer-side state.
        self.writers: dict[str, AtomicAudioWriter] = {}
        self.created_dirs: list[Path] = []
        self.back: OutputStage | None = None
        self.out_resampler: StreamResampler | None = None
        self.written = 0
        self.emitted = 0


_DONE = object()  # a reader or the model loop has nothing more to send


class SeparationInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, where the caller maps it to KeyboardInterrupt) during :meth:`FilePipeline.run`;
    ``unfinished`` are the inputs whose partial outputs were removed."""

    def __init__(self, unfinished: list[Path]) -> None:
        super().__init__()
        self.unfinished = unfinished


class FilePipeline:
    """Separate many files with one model, batching segments across songs (see the module's doc).

    Args:
        separator: the loaded model and its settings (device, batch size, segmentation, precision).
        options: output folder, template, format and what to cut.
        readers: decoding threads (default 2).
        queue_blocks: blocks each queue holds at most (bounds memory).
    """

    def __init__(self, separator: "Separator", options: FileOptions, readers: int = 2, queue_blocks: int = 8) -> None:
        options.validate()  # every setting is checked before anything is decoded
        self.separator = separator
        self.options = options
        self.outputs = OutputStems.choose(separator.stems, options.stems, options.two_stems)
        self.readers = max(1, int(readers))
        self.queue_blocks = max(2, int(queue_blocks))
        try:  # a template that cannot work for any input fails here, not once per file
            self._paths_of(InputFile(Path("song.wav")))
        except OutputPathError:
            pass

    def _paths_of(self, source: InputFile) -> dict[str, Path]:
        options = self.options
        return output_paths(source, Path(options.out_dir), options.template, options.fmt, self.outputs.names,
                            self.separator.config.name or "model")

    # ---- the calling thread ---------------------------------------------------------------------------
    def run(
        self,
        paths: Iterable[str | Path | InputFile],
        on_event: Callable[[FileEvent], None] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> list[FileEvent]:
        """Separate ``paths``; returns one final event per input (done, skipped or failed), in input order.

        Before any work, every input's outputs are planned (:func:`~unet_sep.separate.outputs.plan_outputs`: an
        input whose outputs clash with another's or with an input fails at once), and temporary files that
        killed runs left in the output folders are removed. ``shard=(rank, world)`` separates only every
        ``world``-th input from ``rank`` on (torchrun), while the plan still covers them all. ``on_event`` is
        called on the calling thread for every event, progress included; event indices are positions in
        ``paths``.
        """
        sources = [InputFile.of(p) for p in paths]
        plan = plan_outputs(sources, self._paths_of)
        rank, world = shard
        final: dict[int, FileEvent] = {}
        jobs = []
        for index in range(rank, len(sources), world):
            planned = plan[index]
            if isinstance(planned, OutputPathError):
                final[index] = FileEvent("failed", index, sources[index].path, error=planned)
                if on_event is not None:
                    on_event(final[index])
            else:
                jobs.append(_Job(index, sources[index].path, planned))
        self._remove_leftovers()
        if not jobs:
            return [final[i] for i in sorted(final)]
        to_model: queue.Queue = queue.Queue(maxsize=self.queue_blocks)
        to_writer: queue.Queue = queue.Queue(maxsize=self.queue_blocks)
        events: queue.Queue = queue.Queue()
        aborted: list[Path] = []  # inputs whose outputs the writer removed on an interrupt
        stop = threading.Event()
        pending = queue.SimpleQueue()
        for job in jobs:
            pending.put(job)
        readers = [
            threading.Thread(target=self._read, args=(pending, to_model, stop), name=f"unet-sep-reader-{i}", daemon=True)
            for i in range(min(self.readers, len(jobs)))
        ]
        writer = threading.Thread(target=self._write, args=(to_writer, events, aborted), name="unet-sep-writer", daemon=True)

        def dispatch() -> None:
            while True:
                try:
                    event = events.get_nowait()
                except queue.Empty:
                    return
                if event.kind != "progress":
                    final[event.index] = event
                if on_event is not None:
                    on_event(event)

        for thread in readers + [writer]:
            thread.start()
        try:
            self._model_loop(len(readers), to_model, to_writer, dispatch)
            self._put(to_writer, _DONE, dispatch)
            while writer.is_alive():
                writer.join(timeout=0.05)
                dispatch()
            dispatch()
        except BaseException as error:
            stop.set()
            _drain(to_model)
            for thread in readers:
                thread.join()
            _drain(to_writer)
            to_writer.put(_DONE)
            writer.join()
            if isinstance(error, KeyboardInterrupt):
                raise SeparationInterrupted(aborted) from error
            raise
        finally:
            for thread in readers:
                thread.join()
        return [final[i] for i in sorted(final)]

    def _remove_leftovers(self) -> None:
        """Temporary files that killed runs left under the output folder (see :mod:`unet_sep.atomic`): one walk of
        the folder per run."""
        out_dir = Path(self.options.out_dir)
        removed = remove_stale_temporaries(out_dir)
        if removed:
            logger.warning("removed %d temporary file(s) that killed runs left under %s", len(removed), out_dir)

    @staticmethod
    def _put(target: queue.Queue, item: Any, dispatch: Callable[..., None]) -> None:
        """Put into a bounded queue, handing out events while it is full (the writer may be waiting on us)."""
        while True:
            try:
                target.put(item, timeout=0.05)
                return
            except queue.Full:
                dispatch()

    def _model_loop(self, n_readers: int, to_model: queue.Queue, to_writer: queue.Queue, dispatch) -> None:
        separator = self.separator
        engines: dict[int, tuple[_Job, SeparationStream]] = {}
        readers_left = n_readers

        def emit(job: _Job, engine: SeparationStream) -> None:
            stems, weights = engine.drain()
            finished = engine.done
            if stems.shape[-1] or finished:
                self._put(to_writer, ("output", job, stems, weights, finished), dispatch)
            if finished:
                del engines[job.index]

        def fail(job: _Job, error: BaseException) -> None:
            job.failed.set()
            engines.pop(job.index, None)
            self._put(to_writer, ("abort", job, error), dispatch)

        def run_batches(flush: bool) -> None:
            for job, _ in list(engines.values()):  # files the writer gave up on
                if job.failed.is_set():
                    engines.pop(job.index, None)
            while True:
                live = [(job, engine) for job, engine in engines.values() if not job.failed.is_set()]
                ready = sum(engine.ready() for _, engine in live)
                if ready == 0 or (ready < separator.batch_size and not flush):
                    break
                try:
                    separator.run_batch([engine for _, engine in live], separator.batch_size)
                except Exception as error:  # a failure inside the U-Nets (out of memory, a bug): these files fail
                    logger.info("U-Net batch failed", exc_info=True)
                    for job, _ in live:
                        fail(job, error)
                    continue
                for job, engine in list(live):
                    if job.index in engines:
                        emit(job, engine)
            for job, engine in list(engines.values()):  # closed files whose last segments ran already
                if engine.finished and engine.ready() == 0:
                    emit(job, engine)

        while readers_left > 0 or engines:
            try:
                message = to_model.get(timeout=0.05) if readers_left > 0 else None
            except queue.Empty:
                dispatch()
                continue
            if message is None:  # every reader is done: run what is left
                run_batches(flush=True)
                for job, engine in list(engines.values()):  # cannot happen unless a stage misbehaved
                    logger.warning("%s: dropped unfinished", job.path)
                    fail(job, RuntimeError("the file's input ended early"))
                continue
            if message is _DONE:
                readers_left -= 1
                if readers_left == 0:
                    run_batches(flush=True)
                continue
            kind, job = message[0], message[1]
            if kind == "start":
                engines[job.index] = (job, separator.engine(message[2]))
                self._put(to_writer, ("start", job, message[3]), dispatch)
            elif kind == "block" and job.index in engines and not job.failed.is_set():
                _, engine = engines[job.index]
                self._put(to_writer, ("input", job, message[2]), dispatch)
                try:
                    engine.feed(message[3])
                except Exception as error:
                    fail(job, error)
            elif kind == "end" and job.index in engines and not job.failed.is_set():
                _, engine = engines[job.index]
                try:
                    engine.feed(message[2])
                    engine.close()
                except Exception as error:
                    fail(job, error)
            elif kind in ("skip", "error"):
                if kind == "error" and job.index in engines:
                    fail(job, message[2])
                else:
                    self._put(to_writer, message, dispatch)
            run_batches(flush=readers_left == 0)
            dispatch()

    # ---- reader threads --------------------------------------------------------------------------------
    def _read(self, pending: queue.SimpleQueue, to_model: queue.Queue, stop: threading.Event) -> None:
        def send(item: Any) -> bool:
            while not stop.is_set():
                try:
                    to_model.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            while not stop.is_set():
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    break
                self._read_one(job, send, stop)
        finally:
            if not stop.is_set():
                send(_DONE)

    def _read_one(self, job: _Job, send: Callable[[Any], bool], stop: threading.Event) -> None:
        options, separator = self.options, self.separator
        try:
            if not options.overwrite and all(target.exists() for target in job.outputs.values()):
                send(("skip", job))
                return
            reader = open_audio(job.path)
            info = job.info = reader.info
            if info.frames_exact and options.offset * info.sample_rate >= info.frames:
                raise AudioDecodeError(f"offset {options.offset:g} s is past the end of the file ({info.duration:.2f} s)")
            total = info.frames - int(round(options.offset * info.sample_rate)) if info.frames > 0 else 0
            if options.duration is not None:
                wanted = int(round(options.duration * info.sample_rate))
                total = min(total, wanted) if total > 0 else wanted
            job.total = max(total, 0)
            job.started = time.perf_counter()
            front = InputStage(1, info.channels, info.sample_rate, separator.sample_rate, separator.config.n_channels)
            if not send(("start", job, front.groups, info)):
                return
            for block in reader.blocks(block_frames=BLOCK_SAMPLES, offset=options.offset, duration=options.duration):
                if stop.is_set() or job.failed.is_set():
                    return
                checked = front.check(block[None])
                if not send(("block", job, checked, front.process(checked))):
                    return
            if front.consumed == 0:
                raise AudioDecodeError("no audio samples were decoded")
            send(("end", job, front.flush()))
        except Exception as error:  # reported for this file only; the batch goes on
            send(("error", job, error))

    # ---- writer thread ---------------------------------------------------------------------------------
    def _write(self, to_writer: queue.Queue, events: queue.Queue, aborted: list[Path]) -> None:
        open_jobs: dict[int, _Job] = {}
        while True:
            message = to_writer.get()
            if message is _DONE:
                break
            kind, job = message[0], message[1]
            try:
                if kind == "skip":
                    events.put(FileEvent("skipped", job.index, job.path, job.outputs))
                elif kind == "error" or kind == "abort":
                    self._abort(job)
                    open_jobs.pop(job.index, None)
                    events.put(FileEvent("failed", job.index, job.path, error=_naming(message[2], job.path)))
                elif job.failed.is_set():
                    continue
                elif kind == "start":
                    open_jobs[job.index] = job
                    self._open(job, message[2])
                elif kind == "input":
                    job.back.add_input(message[2])
                elif kind == "output":
                    _, _, stems, weights, final = message
                    self._emit(job, job.back.push(stems, weights, final=final), final)
                    if final:
                        self._commit(job)
                        open_jobs.pop(job.index, None)
                        events.put(FileEvent("done", job.index, job.path, job.outputs, done=job.emitted,
                                             total=max(job.total, job.emitted), sample_rate=job.info.sample_rate,
                                             seconds=time.perf_counter() - job.started))
                    else:
                        events.put(FileEvent("progress", job.index, job.path, job.outputs, done=job.emitted,
                                             total=max(job.total, job.emitted), sample_rate=job.info.sample_rate))
            except Exception as error:  # an encoding failure: this file only
                job.failed.set()
                self._abort(job)
                open_jobs.pop(job.index, None)
                events.put(FileEvent("failed", job.index, job.path, error=_naming(error, job.path)))
        for job in open_jobs.values():  # interrupted: nothing partial stays behind
            self._abort(job)
            aborted.append(job.path)

    def _open(self, job: _Job, info: AudioInfo) -> None:
        options, separator = self.options, self.separator
        out_rate = int(options.sample_rate or info.sample_rate)
        for target in job.outputs.values():
            job.created_dirs.extend(_make_parents(target.parent))
        depth = options.bit_depth or default_bit_depth(options.fmt, info.subtype)
        for stem, target in job.outputs.items():
            job.writers[stem] = AtomicAudioWriter(target, out_rate, info.channels, options.fmt, depth, options.bitrate)
        job.back = OutputStage(1, info.channels, info.sample_rate, separator.sample_rate, separator.config.n_channels,
                               len(separator.stems), share=separator.mask_extension != "zeros")
        job.out_resampler = StreamResampler(info.sample_rate, out_rate, len(job.outputs) * info.channels)

    def _emit(self, job: _Job, blocks: list[np.ndarray], final: bool) -> None:
        channels = job.info.channels
        for block in blocks:  # [S, 1, C, n]
            job.emitted += block.shape[-1]
            chosen = np.tensordot(self.outputs.mix, block[:, 0], axes=1)  # the written stems (or sums of stems)
            self._write_block(job, job.out_resampler.process(chosen.reshape(-1, chosen.shape[-1])), channels)
        if final:
            self._write_block(job, job.out_resampler.flush(), channels)

    @staticmethod
    def _write_block(job: _Job, block: np.ndarray, channels: int) -> None:
        if block.shape[-1] == 0:
            return
        per_stem = block.reshape(len(job.writers), channels, -1)
        for i, writer in enumerate(job.writers.values()):
            writer.write(per_stem[i])
        job.written += per_stem.shape[-1]

    @staticmethod
    def _commit(job: _Job) -> None:
        if job.written == 0:
            raise AudioDecodeError("no audio samples were decoded")
        for writer in job.writers.values():
            writer.commit()

    @staticmethod
    def _abort(job: _Job) -> None:
        for writer in job.writers.values():
            writer.abort()
        job.writers = {}
        for folder in reversed(job.created_dirs):
            try:
                folder.rmdir()
            except OSError:
                pass
        job.created_dirs = []


def _naming(error: BaseException, path: Path) -> BaseException:
    """``error``, naming ``path`` if it is about a file and does not name one yet."""
    return error.about(path) if isinstance(error, FileError) else error


def _drain(target: queue.Queue) -> None:
    while True:
        try:
            target.get_nowait()
        except queue.Empty:
            return


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
