"""The server's worker: one thread that runs the queued jobs, oldest first, one at a time, through the file
pipeline on the loaded model, as ``unet-sep separate`` would (float WAV stems, ``{stem}.wav`` in the job's
``stems`` folder), while the stems' samples so far are readable (:class:`~unet_sep.serve.partial.PartialStems`).

A job that is deleted while it runs is cancelled: the pipeline is stopped from its event callback and removes what
it had written, then the job's folder goes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unet_sep.errors import failure_reason, one_line
from unet_sep.serve.config import ServeConfig, separation_for
from unet_sep.serve.jobs import STEMS_FOLDER, Job, JobStore, now
from unet_sep.serve.partial import PartialStems, read_final, stem_path

if TYPE_CHECKING:
    from unet_sep.config import ModelConfig
    from unet_sep.model.stems import StemsNet
    from unet_sep.separate.runner import NetworkRunner
    from unet_sep.separate.settings import SeparationSettings

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.2  # seconds between progress writes to the database


class JobCancelled(Exception):
    """The running job was deleted: raised from the pipeline's event callback to stop it."""


@dataclass
class Samples:
    """What a read of a stem's samples found: ``data`` (interleaved float32 bytes) holds ``count`` samples per
    channel from ``start``; ``available`` are written so far, all of them when ``complete``."""

    data: bytes
    start: int
    count: int
    available: int
    complete: bool


def failure_text(file_name: str, error: BaseException | None) -> str:
    """The one line a failed job carries: the file's name and the reason, as ``unet-sep separate`` prints it."""
    reason = failure_reason(error)
    if reason is None:
        logger.error("job failed unexpectedly", exc_info=error)
        reason = f"unexpected {type(error).__name__}: {one_line(error)} (see the server's log)"
    return f"{file_name}: {one_line(reason)}"


@dataclass
class LoadedModel:
    """The model the server runs: its name, U-Nets (None for an ONNX file) and config."""

    name: str
    net: StemsNet | None
    config: ModelConfig

    @property
    def stems(self) -> list[str]:
        return list(self.config.stems)


def load_model(config: ServeConfig) -> LoadedModel:
    """The model of ``config`` (default: the bundled one); model errors as the separation raises them."""
    from unet_sep.separate.runner import load_network
    from unet_sep.weights.registry import model_or_default

    name = model_or_default(config.model)
    net, model_config, _ = load_network(name, config.separation)
    return LoadedModel(name, net, model_config)


class Worker:
    """Runs the jobs of ``store`` with ``model`` and the server's separation settings (a job may change some,
    :func:`~unet_sep.serve.config.separation_for`), on its own thread (:meth:`start`, :meth:`stop`)."""

    def __init__(self, store: JobStore, model: LoadedModel, server_settings: SeparationSettings) -> None:
        self.store = store
        self.model = model
        self.server_settings = server_settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.running_id: str | None = None
        self._partial: PartialStems | None = None
        self._cancel: set[str] = set()
        # (settings, runner) of the last job: the next job with the same settings reuses it
        self._runner: tuple[SeparationSettings, NetworkRunner] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="unet-sep-serve-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after cancelling the running job (it is queued again: the next start runs it from the start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Ask the running job ``job_id`` to stop; False where it is not the one running."""
        with self._lock:
            if self.running_id != job_id:
                return False
            self._cancel.add(job_id)
            return True

    def available(self, job: Job) -> int:
        """Samples per channel of every stem written so far."""
        with self._lock:
            partial = self._partial if self.running_id == job.id else None
        if partial is not None and not partial.closed:
            return partial.available
        if job.status == "done" and job.duration_seconds is not None and job.sample_rate:
            return round(job.duration_seconds * job.sample_rate)
        return 0

    def samples(self, job: Job, stem: str, start: int, count: int) -> Samples:
        """Samples ``start`` to ``start + count`` of ``stem``: of the running job so far, or of its final WAV."""
        with self._lock:
            partial = self._partial if self.running_id == job.id else None
        if partial is not None:
            data = partial.read(stem, start, count)
            if not partial.closed:
                return Samples(data, start, len(data) // (4 * partial.channels), partial.available, False)
            job = self.store.get(job.id) or job  # it ended while we looked: read what it left
        if job.status != "done":
            return Samples(b"", start, 0, 0, job.final)
        data, returned, total = read_final(stem_path(self.store.folder(job.id), stem), start, count)
        return Samples(data, start, returned, total, True)

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self.store.next_queued()
            if job is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                self._run_job(job)
            except Exception:  # a bug of ours: the job fails, the server goes on
                logger.exception("job %s", job.id)
                self.store.update(job.id, status="failed", finished=now(),
                                  error=f"{job.file_name}: the server failed on this job (see its log)")

    def _run_job(self, job: Job) -> None:
        from unet_sep.separate.files import FileOptions
        from unet_sep.separate.pipeline import FilePipeline
        from unet_sep.separate.runner import NetworkRunner

        folder = self.store.folder(job.id)
        settings = job.settings
        options = FileOptions(folder / STEMS_FOLDER, "{stem}.{ext}", "wav", stems=settings.get("stems"),
                              two_stems=settings.get("two_stems"), overwrite=True)
        separation = separation_for(self.server_settings, settings)
        if self._runner is None or self._runner[0] != separation:
            self._runner = (separation, NetworkRunner(self.model.net, self.model.config, separation))
        runner = self._runner[1]
        pipeline = FilePipeline(runner, options, readers=1, writers=1)
        partial = PartialStems(folder, job.stems, job.channels or 1)
        with self._lock:
            self.running_id, self._partial = job.id, partial
        self.store.update(job.id, status="running", started=now(), progress=0.0)
        logger.info("job %s: %s", job.id, job.file_name)
        last_write = [0.0]
        final = None

        def on_event(event) -> None:
            nonlocal final
            if job.id in self._cancel or self._stop.is_set():
                raise JobCancelled(job.id)
            if event.final:
                final = event
            elif event.kind == "progress" and event.total and time.monotonic() - last_write[0] > PROGRESS_INTERVAL:
                last_write[0] = time.monotonic()
                self.store.update(job.id, progress=min(0.99, event.done / event.total))

        try:
            pipeline.run([folder / job.input_name], on_event=on_event, on_samples=partial.append)
        except JobCancelled:
            self._cancelled(job, partial)
            return
        if final is not None and final.kind == "done":
            self.store.update(job.id, status="done", progress=1.0, finished=now(),
                              duration_seconds=partial.available / (job.sample_rate or 1))
        else:
            error = failure_text(job.file_name, None if final is None else final.error)
            self.store.update(job.id, status="failed", finished=now(), error=error)
        with self._lock:
            partial.close()
            self.running_id, self._partial = None, None

    def _cancelled(self, job: Job, partial: PartialStems) -> None:
        """The pipeline stopped and removed its outputs: remove the job (deleted) or queue it again (server stop)."""
        with self._lock:
            partial.close()
            self.running_id, self._partial = None, None
            deleted = job.id in self._cancel
            self._cancel.discard(job.id)
        if deleted:
            self.store.delete(job.id)
        else:
            self.store.update(job.id, status="queued", progress=0.0, started=None)
            logger.warning("job %s stopped with the server; it runs again from the start at the next start", job.id)

