"""The file pipeline's reader threads: each takes the next input, opens it (once), decodes it in blocks, checks
the samples and brings them to the model's rate and channels.

Messages to the model stage, in order per input: ``("start", job, groups, info)``, then ``("block", job, checked,
at_model_rate)`` per block and ``("end", job, last_samples)``; or ``("skip", job)`` for an input whose outputs
all exist, or ``("error", job, error)`` when it fails. Each thread sends :data:`~unet_sep.separate.files.QUEUE_END`
when no input is left.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

from unet_sep.audio.decode import AudioDecodeError, open_audio
from unet_sep.separate.files import QUEUE_END, FileJob, FileOptions
from unet_sep.separate.runner import NetworkRunner
from unet_sep.separate.stages import BLOCK_SAMPLES


class InputReader:
    """What a reader thread does (:meth:`run`), for the inputs of one run."""

    def __init__(self, runner: NetworkRunner, options: FileOptions) -> None:
        self.runner = runner
        self.options = options

    def run(self, pending: queue.SimpleQueue, to_model: queue.Queue, stop: threading.Event) -> None:
        """Read inputs from ``pending`` until none is left or ``stop`` is set."""

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
                send(QUEUE_END)

    def _read_one(self, job: FileJob, send: Callable[[Any], bool], stop: threading.Event) -> None:
        options = self.options
        try:
            if not options.overwrite and all(target.exists() for target in job.outputs.values()):
                send(("skip", job))
                return
            reader = open_audio(job.path)
            info = reader.info
            if info.frames_exact and options.offset * info.sample_rate >= info.frames:
                raise AudioDecodeError(f"offset {options.offset:g} s is past the end of the file "
                                       f"({info.duration:.2f} s)")
            job.total = options.planned_frames(info)
            job.started = time.perf_counter()
            front = self.runner.input_stage(1, info.channels, info.sample_rate)
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
