"""The ASGI app of ``unet-sep serve``: the HTTP API over one loaded model and its worker (docs/serve.md), and the
page (``static/``).

:func:`create_app` loads the model and opens the job store; the app's lifespan starts the worker (after
:meth:`~unet_sep.serve.jobs.JobStore.recover`) and stops it. Every answer that is not audio or the page is JSON;
an error is ``{"error": "one line"}`` with its status. With a token set, every request but the page's and the
schema's must carry it (:class:`TokenMiddleware`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from pathlib import Path
from typing import Any, AsyncIterator

from unet_sep.audio.wav_stream import PcmFormat, wav_header
from unet_sep.errors import SettingError
from unet_sep.extras import import_extra
from unet_sep.serve.config import JOB_FIELDS, ServeConfig, job_settings, separation_for, settings_used
from unet_sep.serve.files import (
    ENCODED_FORMATS,
    UploadError,
    encoded_stem,
    input_name,
    probe_upload,
    save_upload,
    shown_name,
    stems_zip,
)
from unet_sep.serve.jobs import Job, JobStore, new_job_id
from unet_sep.serve.openapi import openapi_schema
from unet_sep.serve.worker import LoadedModel, Worker, load_model

import_extra("starlette", "serve", "unet-sep serve")
from starlette.applications import Starlette  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.datastructures import UploadFile  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import BaseRoute, Mount, Route  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

logger = logging.getLogger(__name__)

STATIC_FOLDER = Path(__file__).parent / "static"
_JOB_ID = re.compile(r"^j_[0-9a-f]{16}$")
EVENT_POLL_SECONDS = 0.25  # how often an event stream looks for a change of its job
STREAM_POLL_SECONDS = 0.1  # how often a growing WAV looks for new samples
STREAM_CHUNK = 1 << 16  # samples per channel a growing WAV sends at most at once
MAX_PCM_COUNT = 1 << 22  # samples per channel one pcm request returns at most
RETRY_AFTER_SECONDS = 30  # what a 429 asks a client to wait
CANCEL_WAIT_SECONDS = 60  # how long a DELETE waits for the running job to stop
MULTIPART_SLACK = 64 * 1024  # bytes of a multipart request beyond its file (boundaries, fields)
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
PUBLIC_PATHS = ("/", "/openapi.json")  # and /static/...: the page asks for the token itself


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class TokenMiddleware:
    """Every request but the page's and the schema's carries the token: ``Authorization: Bearer <token>``, or
    ``?token=`` (for what a browser fetches by URL: audio elements, event sources); else 401."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), self.token):
            response = error(401, "this server needs its token: Authorization: Bearer <token>, or ?token=<token>")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Api:
    """The routes' handlers over one store, worker and model."""

    def __init__(self, config: ServeConfig, store: JobStore, worker: Worker, model: LoadedModel) -> None:
        self.config = config
        self.store = store
        self.worker = worker
        self.model = model

    def job_json(self, job: Job) -> dict[str, Any]:
        """The job as every endpoint answers it (the contract's shape)."""
        base = f"/api/jobs/{job.id}"
        available = self.worker.available(job)
        return {
            "id": job.id, "file_name": job.file_name, "status": job.status, "progress": round(job.progress, 4),
            "error": job.error, "settings": job.settings, "model": self.model.name, "created": job.created,
            "started": job.started, "finished": job.finished, "sample_rate": job.sample_rate,
            "channels": job.channels, "duration_seconds": job.duration_seconds,
            "available_seconds": available / job.sample_rate if job.sample_rate else 0.0,
            "stems": {stem: {"url": f"{base}/stems/{stem}", "pcm_url": f"{base}/stems/{stem}/pcm"}
                      for stem in job.stems},
            "zip_url": f"{base}/stems.zip" if job.status == "done" else None,
        }

    def _job(self, request: Request) -> Job | JSONResponse:
        job_id = request.path_params["job_id"]
        job = self.store.get(job_id) if _JOB_ID.match(job_id) else None
        return job if job is not None else error(404, f"no job {job_id}")

    def _stem(self, request: Request) -> tuple[Job, str] | JSONResponse:
        job = self._job(request)
        if isinstance(job, JSONResponse):
            return job
        stem = request.path_params["stem"]
        if stem not in job.stems:
            return error(404, f"job {job.id} has no stem {stem}; its stems: {', '.join(job.stems)}")
        return job, stem

    async def list_jobs(self, request: Request) -> Response:
        jobs = await run_in_threadpool(self.store.all)
        return JSONResponse({"jobs": [self.job_json(job) for job in jobs]})

    async def get_job(self, request: Request) -> Response:
        job = self._job(request)
        return job if isinstance(job, JSONResponse) else JSONResponse(self.job_json(job))

    async def delete_job(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, JSONResponse):
            return job
        if self.worker.cancel(job.id):
            for _ in range(int(CANCEL_WAIT_SECONDS / 0.05)):  # the worker stops it and removes it
                if self.store.get(job.id) is None:
                    return Response(status_code=204)
                await asyncio.sleep(0.05)
            logger.warning("job %s: not stopped after %d s; removed anyway", job.id, CANCEL_WAIT_SECONDS)
            await run_in_threadpool(self.store.delete, job.id)
        else:
            await run_in_threadpool(self.store.delete, job.id)
        return Response(status_code=204)

    def _queue_full(self) -> JSONResponse | None:
        queued = self.store.counts()["queued"]
        if queued >= self.config.max_queued:
            return error(429, f"the queue is full ({queued} jobs waiting); try again later",
                         {"Retry-After": str(RETRY_AFTER_SECONDS)})
        return None

    def _too_large(self) -> JSONResponse:
        return error(413, f"the upload is over this server's limit of {self.config.max_upload_mb:g} MB")

    async def create_job(self, request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and \
                int(length) > self.config.max_upload_bytes + MULTIPART_SLACK:
            return self._too_large()
        full = self._queue_full()
        if full is not None:
            return full
        async with request.form(max_files=1, max_fields=len(JOB_FIELDS) + 1) as form:
            uploads = form.getlist("file")
            if len(uploads) != 1 or not isinstance(uploads[0], UploadFile):
                return error(422, "file: send one audio file as the multipart field 'file'")
            upload = uploads[0]
            if upload.size is not None and upload.size > self.config.max_upload_bytes:
                return self._too_large()
            try:
                settings = job_settings({key: value for key, value in form.multi_items() if key != "file"
                                         and isinstance(value, str)})
                stems = self._job_stems(settings)
            except SettingError as problem:
                return error(422, str(problem))
            return await self._accept(upload, settings_used(self.config.separation, settings, stems), stems)

    def _job_stems(self, settings: dict[str, Any]) -> list[str]:
        """The stems a job with ``settings`` writes; :class:`SettingError` for a setting that cannot be used."""
        from unet_sep.separate.outputs import OutputStems

        separation_for(self.config.separation, settings)
        return OutputStems.choose(self.model.stems, settings.get("stems"), settings.get("two_stems")).names

    async def _accept(self, upload: UploadFile, settings: dict[str, Any], stems: list[str]) -> Response:
        """Save and probe the upload; queue its job."""
        file_name = shown_name(upload.filename)
        job = Job(new_job_id(), file_name, input_name(file_name), settings=settings, stems=stems)
        folder = self.store.folder(job.id)
        try:
            await run_in_threadpool(save_upload, upload.file, folder / job.input_name)
            info = await run_in_threadpool(probe_upload, folder / job.input_name, file_name)
        except UploadError as problem:
            await run_in_threadpool(self.store.delete, job.id)
            return error(422, problem.message)
        except OSError as problem:  # a full disk, a quota: the server's trouble, said in one line
            await run_in_threadpool(self.store.delete, job.id)
            logger.error("job %s: cannot store the upload: %s", job.id, problem)
            return error(507, f"the server cannot store the upload: {problem.strerror or problem}")
        full = self._queue_full()  # others may have filled it while this one uploaded
        if full is not None:
            await run_in_threadpool(self.store.delete, job.id)
            return full
        job.sample_rate, job.channels = info.sample_rate, info.channels
        job.duration_seconds = info.duration if info.frames > 0 else None
        self.store.add(job)
        self.worker.wake()
        logger.info("job %s queued: %s", job.id, file_name)
        return JSONResponse(self.job_json(job), status_code=201)

    async def events(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, JSONResponse):
            return job
        return StreamingResponse(self._event_stream(job.id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def _event_stream(self, job_id: str) -> AsyncIterator[str]:
        last = None
        while True:
            job = self.store.get(job_id)
            if job is None:
                yield f"event: deleted\ndata: {json.dumps({'id': job_id})}\n\n"
                return
            text = json.dumps(self.job_json(job))
            if text != last:
                last = text
                yield f"event: job\ndata: {text}\n\n"
            if job.final:
                return
            await asyncio.sleep(EVENT_POLL_SECONDS)

    async def stem(self, request: Request) -> Response:
        found = self._stem(request)
        if isinstance(found, JSONResponse):
            return found
        job, stem = found
        fmt = request.query_params.get("format", "wav").lower()
        if fmt not in ENCODED_FORMATS:
            return error(422, f"format: unknown format {fmt!r}; choose from {', '.join(ENCODED_FORMATS)}")
        if job.status == "done":
            path = await run_in_threadpool(encoded_stem, self.store.folder(job.id), stem, fmt)
            return FileResponse(path, media_type=MEDIA_TYPES[fmt], filename=f"{stem}.{fmt}")
        if job.status == "failed":
            return error(409, f"job {job.id} failed: {job.error}")
        if fmt != "wav":
            return error(409, f"job {job.id} is {job.status}; {fmt} is made once it is done (wav streams now)")
        return StreamingResponse(self._growing_wav(job, stem), media_type="audio/wav",
                                 headers={"Cache-Control": "no-store"})

    async def _growing_wav(self, job: Job, stem: str) -> AsyncIterator[bytes]:
        # the header of a float32 WAV of unknown length (sizes 0xFFFFFFFF, as streaming writers leave them)
        yield wav_header(PcmFormat(job.sample_rate or 44100, job.channels or 1, "f32"))
        position = 0
        while True:
            current = self.store.get(job.id)
            if current is None:
                return
            samples = await run_in_threadpool(self.worker.samples, current, stem, position, STREAM_CHUNK)
            if samples.count:
                position += samples.count
                yield samples.data
            elif samples.complete:
                return
            else:
                await asyncio.sleep(STREAM_POLL_SECONDS)

    async def pcm(self, request: Request) -> Response:
        found = self._stem(request)
        if isinstance(found, JSONResponse):
            return found
        job, stem = found
        try:
            start = int(request.query_params.get("start", "0"))
            count = int(request.query_params.get("count", str(MAX_PCM_COUNT)))
        except ValueError:
            return error(422, "start and count must be whole numbers of samples")
        if start < 0 or count < 0:
            return error(422, f"start and count must be >= 0, got {start} and {count}")
        samples = await run_in_threadpool(self.worker.samples, job, stem, start, min(count, MAX_PCM_COUNT))
        headers = {"X-Sample-Rate": str(job.sample_rate or 0), "X-Channels": str(job.channels or 0),
                   "X-Start": str(start), "X-Count": str(samples.count), "X-Available": str(samples.available),
                   "X-Complete": "1" if samples.complete and job.status == "done" else "0",
                   "Cache-Control": "no-store"}
        return Response(samples.data, media_type="application/octet-stream", headers=headers)

    async def zip(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, JSONResponse):
            return job
        if job.status != "done":
            return error(409, f"job {job.id} is {job.status}; its zip is made once it is done")
        path = await run_in_threadpool(stems_zip, self.store.folder(job.id), job.stems)
        return FileResponse(path, media_type="application/zip", filename=f"{job.id}-stems.zip")

    async def models(self, request: Request) -> Response:
        from unet_sep.weights.registry import registered_models

        listed = [{"name": entry.name, "stems": list(entry.stems), "sample_rate": entry.sample_rate}
                  for entry in registered_models().values()]
        if self.model.name not in {item["name"] for item in listed}:
            listed.insert(0, {"name": self.model.name, "stems": self.model.stems,
                              "sample_rate": self.model.config.sample_rate})
        return JSONResponse({"models": listed, "loaded": self.model.name})

    async def health(self, request: Request) -> Response:
        counts = self.store.counts()
        return JSONResponse({"status": "ok", "queued": counts["queued"], "running": counts["running"]})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_schema())

    async def page(self, request: Request) -> Response:
        index = STATIC_FOLDER / "index.html"
        if not index.is_file():
            return error(404, "the page is not installed; the API is under /api")
        return FileResponse(index, media_type="text/html")


async def _not_found(request: Request, _exc: Exception) -> Response:
    return error(404, f"nothing at {request.url.path}; the API is under /api (see /openapi.json)")


async def _not_allowed(request: Request, _exc: Exception) -> Response:
    return error(405, f"{request.method} is not allowed on {request.url.path}")


def create_app(config: ServeConfig) -> Starlette:
    """The app for ``config``: the model loaded and the store opened now; the worker runs during the app's
    lifespan (uvicorn's, or ``app.router.lifespan_context`` in tests)."""
    model = load_model(config)
    store = JobStore(config.data_folder())
    worker = Worker(store, model, config.separation)
    api = Api(config, store, worker, model)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store.recover()
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    routes: list[BaseRoute] = [
        Route("/", api.page), Route("/openapi.json", api.openapi), Route("/api/health", api.health),
        Route("/api/models", api.models), Route("/api/jobs", api.list_jobs, methods=["GET"]),
        Route("/api/jobs", api.create_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", api.get_job, methods=["GET"]),
        Route("/api/jobs/{job_id}", api.delete_job, methods=["DELETE"]),
        Route("/api/jobs/{job_id}/events", api.events), Route("/api/jobs/{job_id}/stems.zip", api.zip),
        Route("/api/jobs/{job_id}/stems/{stem}", api.stem), Route("/api/jobs/{job_id}/stems/{stem}/pcm", api.pcm),
    ]
    if STATIC_FOLDER.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=STATIC_FOLDER), name="static"))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.api = api
    if config.token is not None:
        app.add_middleware(TokenMiddleware, token=config.token)
    if config.cors_origins:  # outside the token's check: a browser's preflight request carries no token
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization"],
                           expose_headers=["X-Sample-Rate", "X-Channels", "X-Start", "X-Count", "X-Available",
                                           "X-Complete", "Retry-After"])
    return app
