"""The server's jobs, kept in SQLite (the standard library's ``sqlite3``, WAL mode) under the data folder, and the
per-job folders named by the jobs' ids (never by a user's file name).

A job is a row: its id (``j_<hex>``), the uploaded file's name (shown, never used as a path), status (queued,
running, done, failed), progress 0-1, settings (JSON), error (one line), the times (ISO 8601, UTC), and what the
upload's probe found (rate, channels, seconds). :meth:`JobStore.recover` makes a restart after a crash whole: the
job that was running is queued again from the start, folders without a job and stale temporaries are removed.
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import shutil
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unet_sep.atomic import remove_stale_temporaries

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed")
FINAL_STATUSES = ("done", "failed")
DATABASE_FILE = "jobs.sqlite3"
JOBS_FOLDER = "jobs"
STEMS_FOLDER = "stems"  # under a job's folder: the finished stems, <stem>.wav (and .flac, .mp3 made on request)
PARTIAL_FOLDER = "partial"  # under a job's folder: the running job's samples so far, <stem>.f32 (see serve.partial)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    file_name TEXT NOT NULL,
    input_name TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    settings TEXT NOT NULL,
    stems TEXT NOT NULL,
    error TEXT,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    sample_rate INTEGER,
    channels INTEGER,
    duration_seconds REAL
)
"""
_COLUMNS = ("id", "file_name", "input_name", "status", "progress", "settings", "stems", "error", "created", "started",
            "finished", "sample_rate", "channels", "duration_seconds")


def now() -> str:
    """The time now, ISO 8601 in UTC."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def new_job_id() -> str:
    return "j_" + secrets.token_hex(8)


@dataclass
class Job:
    """One job as stored. ``input_name`` is the uploaded file's name in its folder (``input`` plus a checked
    extension); ``stems`` the stems it writes, in order."""

    id: str
    file_name: str
    input_name: str
    status: str = "queued"
    progress: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    stems: list[str] = field(default_factory=list)
    error: str | None = None
    created: str = field(default_factory=now)
    started: str | None = None
    finished: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    duration_seconds: float | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


def _row_job(row: sqlite3.Row) -> Job:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["settings"] = json.loads(values["settings"])
    values["stems"] = json.loads(values["stems"])
    return Job(**values)


class JobStore:
    """The jobs of one data folder: the database and the job folders. Safe to use from several threads (one
    connection behind a lock; SQLite's WAL lets readers and the writer go on together)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / JOBS_FOLDER
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.data_dir / DATABASE_FILE, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def folder(self, job_id: str) -> Path:
        """The job's folder (``job_id`` is the server's own id, checked by the caller)."""
        return self.jobs_dir / job_id

    def add(self, job: Job) -> None:
        values = [getattr(job, name) for name in _COLUMNS]
        values[_COLUMNS.index("settings")] = json.dumps(job.settings)
        values[_COLUMNS.index("stems")] = json.dumps(job.stems)
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                             values)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _row_job(row)

    def all(self) -> list[Job]:
        """Every job, newest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY seq DESC").fetchall()
        return [_row_job(row) for row in rows]

    def next_queued(self) -> Job | None:
        """The oldest queued job."""
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE status = 'queued' ORDER BY seq "
                                   "LIMIT 1").fetchone()
        return None if row is None else _row_job(row)

    def update(self, job_id: str, **values: Any) -> None:
        unknown = set(values) - set(_COLUMNS[1:])
        if unknown:
            raise ValueError(f"not job columns: {sorted(unknown)}")
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {', '.join(f'{name} = ?' for name in values)} WHERE id = ?",
                             (*values.values(), job_id))

    def counts(self) -> dict[str, int]:
        """Jobs per status (every status present, 0 where none)."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({status: count for status, count in rows})
        return counts

    def delete(self, job_id: str) -> bool:
        """Remove the job's row and folder; False where there was no such job."""
        with self._lock:
            deleted = self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return deleted > 0

    def recover(self) -> None:
        """After a start (a crash or kill before it, perhaps): the job that was running is queued again from the
        start (its stems and samples so far removed); every job's partial samples, folders without a job, and stale
        temporaries in the job folders are removed."""
        known = {job.id: job for job in self.all()}
        for job in known.values():
            if job.status == "running":
                logger.warning("job %s was running when the server stopped: queued again from the start", job.id)
                shutil.rmtree(self.folder(job.id) / STEMS_FOLDER, ignore_errors=True)
                self.update(job.id, status="queued", progress=0.0, started=None, error=None)
            shutil.rmtree(self.folder(job.id) / PARTIAL_FOLDER, ignore_errors=True)
        for folder in self.jobs_dir.iterdir():
            if folder.name not in known:
                if folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    folder.unlink(missing_ok=True)
                continue
            removed = remove_stale_temporaries(folder)
            if removed:
                logger.warning("removed %d temporary file(s) a stopped server left in %s", len(removed), folder)
