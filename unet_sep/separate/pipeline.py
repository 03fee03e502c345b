"""Separating many files at once: a three-stage pipeline around one :class:`~unet_sep.separate.runner.NetworkRunner`.

    reader threads                 the calling thread                      writer threads
    decode -> check -> model rate  -> [bounded queue] -> STFT, U-Net batches -> [bounded queues] ->
                                      across songs, masks, iSTFT                back to the input's rate,
                                                                                 residual, encode, rename

- Readers (``readers`` threads, :mod:`unet_sep.separate.reader`) each take the next file, open it once, decode it
  in blocks, check it and resample it to the model's rate. Decoding and resampling of the next files run while
  the model computes.
- The calling thread (:class:`ModelStage`) holds one :class:`~unet_sep.separate.stream.SeparationStream` per file
  in flight and sends the ready segments of all of them through the U-Nets together, ``batch_size`` at a time, so
  short songs and song ends fill batches too. Only full batches run until the readers are done.
- Writer threads (:mod:`unet_sep.separate.writer`) resample the stems back, share out the residual above the
  model's band, encode, and commit each stem by renaming its temporary file. Each input is written by one of them
  (:class:`WriterRoutes`), so several inputs are encoded at once.

How many threads read and write follows the machine (:func:`default_threads`): where the U-Nets run on the CPU they
need its cores, and 2 readers and a writer keep them fed; with a GPU the U-Nets take milliseconds per song and the
CPU's share sets the pace: decoding, resampling and above all encoding (``benchmarks/pipeline_profile.py``: the
writer does 40 % of the work a GPU leaves to the CPU with WAV stems, 68 % with FLAC, 94 % with mp3), so readers and
writers each get the cores less the one that drives the GPU.

Each input's stems are checked against what the output format holds (rate, channels, bit rate, size:
:meth:`FileOptions.check_output <unet_sep.separate.files.FileOptions.check_output>`) as soon as its reader has
opened it, before any of it is separated.

Both queues are bounded (``queue_blocks`` blocks), and a reader starts a file only when it is done with the
last one, so memory stays flat however many files are given. A file that fails (decoding, encoding, bad
samples) is reported and removed; the others go on, unless the output folder can take no more (full disk, quota,
read-only): then the run stops, the inputs in progress are removed, and every input not done is reported as not
separated (:class:`~unet_sep.separate.files.NotSeparatedError`). On ``KeyboardInterrupt`` every unfinished output
is removed before the exception leaves :meth:`FilePipeline.run`.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from unet_sep.atomic import remove_stale_temporaries
from unet_sep.distributed import Ranks
from unet_sep.errors import SettingError, one_line
from unet_sep.separate.files import QUEUE_END, FileEvent, FileJob, FileOptions, RunHalt
from unet_sep.separate.inputs import InputFile
from unet_sep.separate.out_of_memory import is_out_of_memory, out_of_memory, release_cached
from unet_sep.separate.outputs import OutputPathError, OutputStems, output_paths, plan_outputs
from unet_sep.separate.reader import InputReader
from unet_sep.separate.runner import NetworkRunner
from unet_sep.separate.stream import SeparationStream
from unet_sep.separate.writer import SamplesHook, StemWriter

logger = logging.getLogger(__name__)

# Most reader (and writer) threads: each holds an open decoder (encoders) and its blocks; more than the cores decode
# (encode) no faster.
MAX_READERS = 64


def default_threads(device: torch.device, cores: int | None = None) -> tuple[int, int]:
    """Reader and writer threads where none are asked for, on ``device`` with ``cores`` (default: those this process
    may use, shared out among torchrun's local ranks): 2 and 1 where the U-Nets run on the CPU, whose cores they
    need; else, for a GPU that would wait for the CPU, the cores less one for the thread that drives the GPU, each
    (from 2 to :data:`MAX_READERS`: readers mostly wait, and a writer encodes only inputs a reader has opened)."""
    if device.type == "cpu":
        return 2, 1
    cores = Ranks.from_env().cores() if cores is None else cores
    threads = min(MAX_READERS, max(2, cores - 1))
    return threads, threads


class SeparationInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, where the caller maps it to KeyboardInterrupt) during :meth:`FilePipeline.run`;
    ``unfinished`` are the inputs whose partial outputs were removed."""

    def __init__(self, unfinished: list[Path]) -> None:
        super().__init__()
        self.unfinished = unfinished


class FilePipeline:
    """Separate many files with one model, batching segments across songs (see the module's doc).

    Args:
        runner: the model's U-Nets and how they run (device, batch size, segmentation, precision).
        options: output folder, template, format and what to cut.
        readers: decoding threads; each reads one input at a time (default: :func:`default_threads`).
        writers: encoding threads; each writes the inputs given to it (default: :func:`default_threads`).
        queue_blocks: blocks the queues hold at most (bounds memory): the readers' queue, and the writers' together
            (at least 2 each).

    Raises :class:`~unet_sep.errors.SettingError` for ``stems`` or ``two_stems`` the model does not have and for
    a template that cannot work for any input.
    """

    def __init__(self, runner: NetworkRunner, options: FileOptions, readers: int | None = None,
                 writers: int | None = None, queue_blocks: int = 8) -> None:
        self.runner = runner
        self.options = options
        self.outputs = OutputStems.choose(runner.stems, options.stems, options.two_stems)
        default_readers, default_writers = default_threads(runner.device)
        self.readers = _thread_count("readers", "decoding", default_readers if readers is None else readers)
        self.writers = _thread_count("writers", "encoding", default_writers if writers is None else writers)
        self.queue_blocks = max(2, int(queue_blocks))
        try:  # a template that cannot work for any input fails here, not once per file
            self._paths_of(InputFile(Path("song.wav")))
        except OutputPathError:
            pass

    def _paths_of(self, source: InputFile) -> dict[str, Path]:
        options = self.options
        return output_paths(source, options.out_dir, options.template, options.fmt, self.outputs.names,
                            self.runner.config.name or "model")

    def run(
        self,
        paths: Iterable[str | Path | InputFile],
        on_event: Callable[[FileEvent], None] | None = None,
        shard: tuple[int, int] = (0, 1),
        on_samples: SamplesHook | None = None,
    ) -> list[FileEvent]:
        """Separate ``paths``; returns one final event per input (done, skipped or failed), in input order.

        Before any work, every input's outputs are planned (:func:`~unet_sep.separate.outputs.plan_outputs`: an
        input whose outputs clash with another's or with an input fails at once), and temporary files that
        killed runs left in the output folder are removed. ``shard=(rank, world)`` separates only every
        ``world``-th input from ``rank`` on (torchrun), while the plan still covers them all. ``on_event`` is
        called on the calling thread for every event, "started" and "progress" included; event indices are
        positions in ``paths``. Each input is opened once, by a reader: its "started" event carries its length.
        ``on_samples`` (:data:`~unet_sep.separate.writer.SamplesHook`) is called on a writer thread with each block
        of stem samples as it is encoded, so a caller can use them before the stems are complete.
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
                jobs.append(FileJob(index, sources[index].path, planned))
        self._remove_leftovers()
        if jobs:
            self._run_jobs(jobs, final, on_event, on_samples)
        return [final[i] for i in sorted(final)]

    def _remove_leftovers(self) -> None:
        """Temporary files that killed runs left under the output folder (see :mod:`unet_sep.atomic`): one walk of
        the folder per run."""
        out_dir = self.options.out_dir
        removed = remove_stale_temporaries(out_dir)
        if removed:
            logger.warning("removed %d temporary file(s) that killed runs left under %s", len(removed), out_dir)

    def _run_jobs(self, jobs: list[FileJob], final: dict[int, FileEvent],
                  on_event: Callable[[FileEvent], None] | None, on_samples: SamplesHook | None) -> None:
        """The three stages over ``jobs``; final events land in ``final``."""
        to_model: queue.Queue = queue.Queue(maxsize=self.queue_blocks)
        count = min(self.writers, len(jobs))
        to_writers: list[queue.Queue] = [queue.Queue(maxsize=max(2, self.queue_blocks // count)) for _ in range(count)]
        events: queue.Queue = queue.Queue()
        aborted: list[Path] = []  # inputs whose outputs the writer removed on an interrupt
        stop = threading.Event()
        pending: queue.SimpleQueue = queue.SimpleQueue()
        for job in jobs:
            pending.put(job)
        halt = RunHalt(pending)  # set by the writer when the output folder can take no more
        reader = InputReader(self.runner, self.options)
        readers = [threading.Thread(target=reader.run, args=(pending, to_model, stop), name=f"unet-sep-reader-{i}",
                                    daemon=True) for i in range(min(self.readers, len(jobs)))]
        writers = [threading.Thread(
            target=StemWriter(self.runner, self.options, self.outputs, events, halt, on_samples).run,
            args=(to_writer, aborted), name=f"unet-sep-writer-{i}", daemon=True)
            for i, to_writer in enumerate(to_writers)]

        def dispatch() -> None:
            while True:
                try:
                    event = events.get_nowait()
                except queue.Empty:
                    return
                if event.final:
                    final[event.index] = event
                if on_event is not None:
                    on_event(event)

        for thread in readers + writers:
            thread.start()
        try:
            ModelStage(self.runner, WriterRoutes(to_writers), dispatch, self.options, halt).run(len(readers), to_model)
            for to_writer in to_writers:
                _put_waiting(to_writer, QUEUE_END, dispatch)
            for writer in writers:
                while writer.is_alive():
                    writer.join(timeout=0.05)
                    dispatch()
            if halt.is_set():  # the inputs it never started
                for job in jobs:
                    if job.index not in final:
                        events.put(FileEvent("failed", job.index, job.path, error=halt.error().about(job.path)))
            dispatch()
        except BaseException as error:
            stop.set()
            _drain(to_model)
            for thread in readers:
                thread.join()
            for to_writer, writer in zip(to_writers, writers, strict=True):
                _drain(to_writer)
                to_writer.put(QUEUE_END)
                writer.join()
            if isinstance(error, KeyboardInterrupt):
                raise SeparationInterrupted(aborted) from error
            raise
        finally:
            for thread in readers:
                thread.join()


def _thread_count(setting: str, work: str, count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_READERS:
        raise SettingError(setting, f"must be from 1 to {MAX_READERS} {work} threads, got {count!r}")
    return count


class WriterRoutes:
    """Which writer each input's messages go to: all of an input's to one writer (its state lives there), chosen at
    its first message as the writer with the fewest inputs open."""

    def __init__(self, queues: list[queue.Queue]) -> None:
        self.queues = queues
        self.open = [0] * len(queues)  # inputs per writer whose last message has not been sent yet
        self.writer_of: dict[int, int] = {}  # input index -> writer (kept: a late message goes to the same writer)
        self.closed: set[int] = set()

    def queue_for(self, message: tuple) -> queue.Queue:
        """The queue of the writer of ``message``'s input; its last message (done, failed, skipped) closes it."""
        kind, index = message[0], message[1].index
        if index not in self.writer_of:
            self.writer_of[index] = min(range(len(self.queues)), key=self.open.__getitem__)
            self.open[self.writer_of[index]] += 1
        writer = self.writer_of[index]
        last = kind in ("skip", "error", "abort") or (kind == "output" and message[4])
        if last and index not in self.closed:
            self.closed.add(index)
            self.open[writer] -= 1
        return self.queues[writer]


class ModelStage:
    """The calling thread's part of the pipeline: an engine per file in flight, fed from the readers' messages,
    whose ready segments :meth:`NetworkRunner.run_ready <unet_sep.separate.runner.NetworkRunner.run_ready>` runs
    in shared batches; after every batch each engine's final samples go to its writer (``routes``).

    ``dispatch`` hands out the writer's events; it is called whenever this thread waits. Each input's outputs are
    checked (``options``) when it starts; once ``halt`` is set, the inputs in progress are dropped.
    """

    def __init__(self, runner: NetworkRunner, routes: WriterRoutes, dispatch: Callable[[], None],
                 options: FileOptions, halt: RunHalt) -> None:
        self.runner = runner
        self.routes = routes
        self.dispatch = dispatch
        self.options = options
        self.halt = halt
        self.engines: dict[int, tuple[FileJob, SeparationStream]] = {}  # in the order the files started
        self._release = False  # an input ran out of memory: give the cached memory back to the device

    def run(self, n_readers: int, to_model: queue.Queue) -> None:
        """Handle the readers' messages until every reader is done and every file has left."""
        readers_left = n_readers
        while readers_left > 0 or self.engines:
            if self.halt.is_set():
                for job, _ in list(self.engines.values()):
                    self._fail(job, self.halt.error())
            try:
                message = to_model.get(timeout=0.05) if readers_left > 0 else None
            except queue.Empty:
                self.dispatch()
                continue
            if message is None:  # every reader is done: run what is left
                self.run_ready(final=True)
                for job, _engine in list(self.engines.values()):  # cannot happen unless a stage misbehaved
                    logger.warning("%s: dropped unfinished", job.path)
                    self._fail(job, RuntimeError("the file's input ended early"))
                continue
            if message is QUEUE_END:
                readers_left -= 1
                if readers_left == 0:
                    self.run_ready(final=True)
                continue
            self._handle(message)
            self.run_ready(final=readers_left == 0)
            self.dispatch()

    def _handle(self, message: tuple) -> None:
        kind, job = message[0], message[1]
        if kind == "start":
            try:  # what the format cannot hold fails the input before any of it is separated
                if self.halt.is_set():
                    raise self.halt.error()
                self.options.check_output(message[3], job.total)
                # The segments are planned for the length the reader announced (an estimate for some formats; 0:
                # unknown).
                engine = self.runner.engine(message[2], job.total, message[3].sample_rate)
            except Exception as error:
                self._fail(job, error, "start")
                return
            self.engines[job.index] = (job, engine)
            self._send(("start", job, message[3]))
        elif kind == "block" and job.index in self.engines and not job.failed.is_set():
            _, engine = self.engines[job.index]
            self._send(("input", job, message[2]))
            try:
                engine.feed(message[3])
            except Exception as error:
                self._fail(job, error, "spectrogram")
        elif kind == "end" and job.index in self.engines and not job.failed.is_set():
            _, engine = self.engines[job.index]
            try:
                engine.feed(message[2])
                engine.close()
            except Exception as error:
                self._fail(job, error, "spectrogram")
        elif kind in ("skip", "error"):
            if kind == "error" and job.index in self.engines:
                self._fail(job, message[2])
            else:
                self._send(message)

    def run_ready(self, final: bool) -> None:
        """Run full batches (with ``final``: everything ready), sending each file's final samples on after every
        batch; then send on the files whose last segments ran already."""
        self._run_ready(final)
        if self._release:  # the failed files' engines are gone now: their memory can go back to the device
            self._release = False
            release_cached(self.runner.device)

    def _run_ready(self, final: bool) -> None:
        for job, _ in list(self.engines.values()):  # files the writer gave up on
            if job.failed.is_set():
                self.engines.pop(job.index, None)
        in_batch: list[SeparationStream] = []  # the engines with segments in the batch being run
        batches = self.runner.run_ready(self._live_engines, final, in_batch)
        while self._next_batch(batches, in_batch):
            for job, engine in self._live():
                self._emit(job, engine)
        for job, engine in list(self.engines.values()):
            if engine.finished and engine.ready() == 0:
                self._emit(job, engine)

    def _next_batch(self, batches: Iterator[int], in_batch: list[SeparationStream]) -> bool:
        """Run the next batch; False when none is ready or it failed: then the files with segments in it fail (all
        in flight if it failed before taking any), and the others go on."""
        try:
            return next(batches, 0) > 0
        except Exception as error:  # a failure inside the U-Nets (out of memory, a bug)
            logger.info("U-Net batch failed", exc_info=not is_out_of_memory(error))
            broken = [id(engine) for engine in in_batch] or [id(engine) for engine in self._live_engines()]
            for job, engine in self._live():
                if id(engine) in broken:
                    self._fail(job, error, "batch")
            in_batch.clear()
            return False

    def _live(self) -> list[tuple[FileJob, SeparationStream]]:
        return [(job, engine) for job, engine in self.engines.values() if not job.failed.is_set()]

    def _live_engines(self) -> list[SeparationStream]:
        return [engine for _, engine in self._live()]

    def _emit(self, job: FileJob, engine: SeparationStream) -> None:
        try:
            stems, weights = engine.drain()
        except Exception as error:  # stems not finite, out of memory: this file's only, the others go on
            self._fail(job, error, "synthesis")
            return
        finished = engine.done
        if stems.shape[-1] or finished:
            self._send(("output", job, stems, weights, finished))
        if finished:
            del self.engines[job.index]

    def _fail(self, job: FileJob, error: BaseException, step: str = "start") -> None:
        """Give up on ``job`` and let go of its engine. Running out of memory in ``step`` (a key of
        :data:`~unet_sep.separate.out_of_memory.STEPS`) becomes one line naming settings that need less, without the
        original error, whose traceback would hold on to the engine's tensors."""
        job.failed.set()
        in_flight = len(self.engines)
        _, engine = self.engines.pop(job.index, (None, None))
        if is_out_of_memory(error):
            logger.info("%s: %s (%s)", job.path, one_line(error), step)
            error = out_of_memory(self.runner, step, engine, max(1, in_flight))
            self._release = True  # once the callers' frames have let go of the engine too
        self._send(("abort", job, error))

    def _send(self, item: tuple) -> None:
        _put_waiting(self.routes.queue_for(item), item, self.dispatch)


def _put_waiting(target: queue.Queue, item: Any, dispatch: Callable[[], None]) -> None:
    """Put into a bounded queue, handing out events while it is full (the writer may be waiting on us)."""
    while True:
        try:
            target.put(item, timeout=0.05)
            return
        except queue.Full:
            dispatch()


def _drain(target: queue.Queue) -> None:
    while True:
        try:
            target.get_nowait()
        except queue.Empty:
            return
