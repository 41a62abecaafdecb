"""The web page's jobs, kept in SQLite in the data folder so they outlive the server: what each job converts,
with which settings, its plan, its last progress and how it ended. A job the server was running when it
stopped is marked interrupted when the next server opens the store; resuming it makes no request for the
parts already kept (the part cache has them)."""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_NAME = "jobs.sqlite3"
JOB_ID = re.compile(r"^[0-9a-f]{16}$")  # what new_id makes; anything else in a URL is not a job

# planned: read and planned, nothing sent; queued: waiting for the run before it; then one of the ends.
PLANNED, QUEUED, RUNNING = "planned", "queued", "running"
DONE, UNVERIFIED, FAILED, CANCELLED, INTERRUPTED = "done", "unverified", "failed", "cancelled", "interrupted"
FINISHED = (DONE, UNVERIFIED)  # every chapter written: a book of the library
RESUMABLE = (FAILED, CANCELLED, INTERRUPTED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,          -- the upload's path under the data folder, or the URL given
    shown_name TEXT NOT NULL,      -- the upload's name as given, or the URL: shown, never used as a path
    overrides TEXT NOT NULL,       -- JSON: the settings chosen on the page
    status TEXT NOT NULL,
    error TEXT,
    plan TEXT NOT NULL,            -- JSON: BookPlan.summary() plus the rate limit's time
    progress TEXT,                 -- JSON: the last progress the page was sent
    cover TEXT                     -- the cover's file name in the data folder's covers/, if the book has one
)
"""


@dataclass(frozen=True)
class Job:
    id: str
    created: float
    title: str
    source: str
    shown_name: str
    overrides: dict[str, Any]
    status: str
    error: str | None
    plan: dict[str, Any]
    progress: dict[str, Any] | None
    cover: str | None


def new_id() -> str:
    return secrets.token_hex(8)


class JobStore:
    """One SQLite file; every call takes the lock (the server's threads and the job runner share it)."""

    def __init__(self, data: Path):
        data.mkdir(parents=True, exist_ok=True)
        self.path = data / DB_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        with self._tx() as db:  # the server before this one stopped while these ran or waited
            db.execute(
                "UPDATE jobs SET status = ?, error = ? WHERE status IN (?, ?)",
                (INTERRUPTED, "the server stopped during the run; resume to continue", RUNNING, QUEUED),
            )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, job: Job) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id, job.created, job.title, job.source, job.shown_name, json.dumps(job.overrides),
                    job.status, job.error, json.dumps(job.plan),
                    None if job.progress is None else json.dumps(job.progress), job.cover,
                ),
            )  # fmt: skip

    def get(self, job_id: str) -> Job | None:
        if not JOB_ID.match(job_id):
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created DESC").fetchall()
        return [_job(r) for r in rows]

    def set_status(self, job_id: str, status: str, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = ?, error = ? WHERE id = ?", (status, error, job_id))

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(progress), job_id))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(row: tuple[Any, ...]) -> Job:
    return Job(
        id=row[0],
        created=row[1],
        title=row[2],
        source=row[3],
        shown_name=row[4],
        overrides=json.loads(row[5]),
        status=row[6],
        error=row[7],
        plan=json.loads(row[8]),
        progress=json.loads(row[9]) if row[9] else None,
        cover=row[10],
    )


def now() -> float:
    return time.time()
