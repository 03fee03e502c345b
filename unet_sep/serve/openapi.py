"""The OpenAPI 3.1 schema of the server's HTTP API, served at ``/openapi.json`` (``tests/test_serve_api.py``
checks that it names every route and method of the app, and its structure)."""

from __future__ import annotations

from typing import Any

from unet_sep import __version__
from unet_sep.serve.config import JOB_FIELDS
from unet_sep.serve.jobs import STATUSES

_ERROR = {"$ref": "#/components/schemas/Error"}
_JOB = {"$ref": "#/components/schemas/Job"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ERROR, description)


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^j_[0-9a-f]+$"}}
_STEM = {"name": "stem", "in": "path", "required": True, "schema": {"type": "string"}}
_NOT_FOUND = _error("no such job (or stem)")
_UNAUTHORIZED = _error("a token is set and the request does not carry it")

_JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "file_name", "status", "progress", "error", "settings", "model", "created", "started",
                 "finished", "sample_rate", "channels", "duration_seconds", "available_seconds", "stems", "zip_url"],
    "properties": {
        "id": {"type": "string"},
        "file_name": {"type": "string", "description": "the uploaded file's name, shown only"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "error": {"type": ["string", "null"], "description": "one line, as unet-sep separate prints it"},
        "settings": {"type": "object", "description": "the job's separation settings"},
        "model": {"type": "string"},
        "created": {"type": "string", "format": "date-time"},
        "started": {"type": ["string", "null"], "format": "date-time"},
        "finished": {"type": ["string", "null"], "format": "date-time"},
        "sample_rate": {"type": ["integer", "null"]},
        "channels": {"type": ["integer", "null"]},
        "duration_seconds": {"type": ["number", "null"]},
        "available_seconds": {"type": "number", "description": "seconds of every stem written so far"},
        "stems": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["url", "pcm_url"],
            "properties": {"url": {"type": "string"}, "pcm_url": {"type": "string"}}}},
        "zip_url": {"type": ["string", "null"]},
    },
}

_FORM_PROPERTIES: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
_FORM_PROPERTIES.update({name: {"type": "string"} for name in JOB_FIELDS})


def _stem_paths() -> dict[str, Any]:
    """The paths of a job's stems: the file, and its samples."""
    pcm_headers = {name: {"schema": {"type": "integer"}, "description": text} for name, text in (
        ("X-Sample-Rate", "samples per second"), ("X-Channels", "channels, interleaved"),
        ("X-Start", "the first sample returned"), ("X-Count", "samples per channel returned"),
        ("X-Available", "samples per channel written so far"), ("X-Complete", "1 once every sample is written"))}
    stem = {"get": {
        "summary": "A stem: the finished file, or while the job runs (wav only) a growing WAV sent as written",
        "operationId": "getStem",
        "parameters": [_JOB_ID, _STEM, {"name": "format", "in": "query", "required": False,
                                        "schema": {"type": "string", "enum": ["wav", "flac", "mp3"],
                                                   "default": "wav"}}],
        "responses": {"200": {"description": "the stem", "content": {
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
            "audio/flac": {"schema": {"type": "string", "format": "binary"}},
            "audio/mpeg": {"schema": {"type": "string", "format": "binary"}}}},
            "401": _UNAUTHORIZED, "404": _NOT_FOUND, "409": _error("flac or mp3 of a job not done"),
            "422": _error("an unknown format")}}}
    pcm = {"get": {
        "summary": "Samples of a stem written so far, little-endian float32 interleaved by channel",
        "operationId": "getStemSamples",
        "parameters": [_JOB_ID, _STEM,
                       {"name": "start", "in": "query", "required": False, "schema": {"type": "integer",
                                                                                      "minimum": 0}},
                       {"name": "count", "in": "query", "required": False, "schema": {"type": "integer",
                                                                                      "minimum": 0}}],
        "responses": {"200": {"description": "the samples (fewer or none where not written yet)", "headers":
                              pcm_headers, "content": {"application/octet-stream": {
                                  "schema": {"type": "string", "format": "binary"}}}},
                      "401": _UNAUTHORIZED, "404": _NOT_FOUND, "422": _error("a bad start or count")}}}
    return {"/api/jobs/{job_id}/stems/{stem}": stem, "/api/jobs/{job_id}/stems/{stem}/pcm": pcm}


def _job_paths() -> dict[str, Any]:
    """The paths of the jobs and of one job."""
    jobs = {
        "get": {"summary": "Every job, newest first", "operationId": "listJobs", "responses": {
            "200": _json({"type": "object", "required": ["jobs"],
                          "properties": {"jobs": {"type": "array", "items": _JOB}}}, "the jobs"),
            "401": _UNAUTHORIZED}},
        "post": {"summary": "Upload one audio file to separate", "operationId": "createJob",
                 "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                     "type": "object", "required": ["file"], "properties": _FORM_PROPERTIES}}}},
                 "responses": {"201": _json(_JOB, "the job, queued"), "401": _UNAUTHORIZED,
                               "413": _error("the upload is over --max-upload-mb"),
                               "422": _error("not audio, empty or truncated, or a setting that cannot be used"),
                               "429": _error("the queue is full; Retry-After says when to try again")}},
    }
    job = {
        "get": {"summary": "One job", "operationId": "getJob", "parameters": [_JOB_ID],
                "responses": {"200": _json(_JOB, "the job"), "401": _UNAUTHORIZED, "404": _NOT_FOUND}},
        "delete": {"summary": "Delete a job (a running one is cancelled) and its files", "operationId": "deleteJob",
                   "parameters": [_JOB_ID],
                   "responses": {"204": {"description": "deleted"}, "401": _UNAUTHORIZED, "404": _NOT_FOUND}},
    }
    return {"/api/jobs": jobs, "/api/jobs/{job_id}": job}


def openapi_schema() -> dict[str, Any]:
    """The schema (a fresh dict each call)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "unet-sep serve", "version": __version__,
                 "description": "Separate music into stems over HTTP (docs/serve.md)."},
        "components": {
            "schemas": {"Job": _JOB_SCHEMA, "Error": {"type": "object", "required": ["error"],
                                                      "properties": {"error": {"type": "string"}}}},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            **_job_paths(),
            **_stem_paths(),
            "/api/jobs/{job_id}/stems.zip": {"get": {
                "summary": "The stems of a finished job, one WAV each", "operationId": "getStemsZip",
                "parameters": [_JOB_ID],
                "responses": {"200": {"description": "the zip", "content": {"application/zip": {
                    "schema": {"type": "string", "format": "binary"}}}},
                    "401": _UNAUTHORIZED, "404": _NOT_FOUND, "409": _error("the job is not done")}}},
            "/api/jobs/{job_id}/events": {"get": {
                "summary": "Server-sent events: 'event: job' with the job's JSON on every change, until it ends",
                "operationId": "jobEvents", "parameters": [_JOB_ID],
                "responses": {"200": {"description": "the event stream", "content": {
                    "text/event-stream": {"schema": {"type": "string"}}}},
                    "401": _UNAUTHORIZED, "404": _NOT_FOUND}}},
            "/api/models": {"get": {"summary": "The models, and the one loaded", "operationId": "listModels",
                                    "responses": {"200": _json({"type": "object", "required": ["models", "loaded"],
                                                                "properties": {"models": {"type": "array"},
                                                                               "loaded": {"type": "string"}}},
                                                               "the models"),
                                                  "401": _UNAUTHORIZED}}},
            "/api/health": {"get": {"summary": "Whether the server runs, and its queue", "operationId": "health",
                                    "responses": {"200": _json({"type": "object",
                                                                "required": ["status", "queued", "running"],
                                                                "properties": {"status": {"type": "string"},
                                                                               "queued": {"type": "integer"},
                                                                               "running": {"type": "integer"}}},
                                                               "ok"),
                                                  "401": _UNAUTHORIZED}}},
            "/openapi.json": {"get": {"summary": "This schema", "operationId": "openapi", "security": [],
                                      "responses": {"200": _json({"type": "object"}, "the schema")}}},
        },
        "security": [{"token": []}],
    }
