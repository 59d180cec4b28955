"""The durable job queue: one SQLite file, `<data>/queue.sqlite3` (WAL, every change committed
and synced before the call returns, so a job answered 202 survives `kill -9`).

A job's row holds its text (re-parsed when it runs: a restart needs only this file), its owner
and its state. States: queued -> running -> done | failed | cancelled; a running job put back
(SIGTERM, or found running at startup after a kill) is queued again, its result store keeping
its finished blocks. `attempts` counts the runs started, so a resumed job shows 2. A job reaches
a finished state once: every change of state is one UPDATE guarded by the state it leaves.

One connection, used under a lock from whichever thread asks (the runner, the routes' worker
threads). The schema's version is SQLite's `user_version`. One server per data folder: a second
`gradsvc serve` on it is refused (its runner would run the same jobs).
"""
from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1
ACTIVE = ("queued", "running")  # what counts against an owner's max_queued_jobs
FINISHED = ("done", "failed", "cancelled")
STATUSES = ACTIVE + FINISHED
LIST_LIMIT = 100  # jobs listed when a request names no ?limit=

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: oldest runs first
    id TEXT NOT NULL UNIQUE,
    owner TEXT,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    points_total INTEGER NOT NULL,
    points_done INTEGER NOT NULL DEFAULT 0,
    error TEXT,  -- JSON {message, line, col, hint} of a failed job
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner_status ON jobs (owner, status);
"""
COLUMNS = ("id", "owner", "name", "status", "points_total", "points_done", "error", "attempts",
           "cancel_requested", "created", "started", "finished")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


DB_NAME = "queue.sqlite3"
LOCK_NAME = ".gradsvc-serve.lock"


class JobQueue:
    def __init__(self, data: Path):
        """The queue of the data folder `data` (made if need be), held by this process."""
        self.path = Path(data) / DB_NAME
        self._held = _hold(Path(data))
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL's default, NORMAL, may lose the last commits to a power cut: FULL syncs each
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as error:
            self._held.close()
            from ..errors import UsageError
            raise UsageError(f"cannot read the job queue {self.path}: {error}",
                             hint="move the file aside to start an empty queue, or give "
                             "another --data folder") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            from ..errors import UsageError
            raise UsageError(f"{self.path} was written by a newer gradsvc (queue schema "
                             f"{version}; this one reads {SCHEMA_VERSION})",
                             hint="serve it with that gradsvc, or give another --data folder")
        with self._lock:
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._held.close()

    def _write(self, sql: str, args: tuple = ()) -> int:
        """One change, committed; the number of rows it changed."""
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def _read(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, args).fetchall()]

    # --- submitting and reading ---

    def add(self, owner: str | None, name: str, text: str, points: int,
            max_active: int) -> str | None:
        """A new queued job's id; None when `owner` has `max_active` jobs queued or running
        (counted and added at once: two requests cannot both take the last place)."""
        job_id = uuid.uuid4().hex  # unguessable: ids are not a way to find others' jobs
        with self._lock:
            active = self._db.execute("SELECT count(*) FROM jobs WHERE owner IS ? AND status IN "
                                      "('queued', 'running')", (owner,)).fetchone()[0]
            if active >= max_active:
                return None
            self._db.execute("INSERT INTO jobs (id, owner, name, text, status, points_total, "
                             "created) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                             (job_id, owner, name, text, points, now()))
        return job_id

    def active_total(self) -> int:
        """Jobs queued or running, everyone's (the queue's depth)."""
        return self._read("SELECT count(*) AS n FROM jobs WHERE status IN "
                          "('queued', 'running')")[0]["n"]

    def get(self, job_id: str, owner: str | None) -> dict | None:
        """The job `job_id` if it is `owner`'s (None: no such job for them)."""
        rows = self._read(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ? AND owner IS ?",
                          (job_id, owner))
        return rows[0] if rows else None

    def listed(self, owner: str | None, status: str | None = None,
               limit: int = LIST_LIMIT) -> list[dict]:
        """`owner`'s jobs, newest first."""
        where, args = "owner IS ?", [owner]
        if status is not None:
            where, args = where + " AND status = ?", args + [status]
        return self._read(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE {where} "
                          "ORDER BY seq DESC LIMIT ?", (*args, limit))

    def text_of(self, job_id: str) -> str:
        return self._read("SELECT text FROM jobs WHERE id = ?", (job_id,))[0]["text"]

    # --- the runner's side ---

    def claim_next(self) -> dict | None:
        """The oldest queued job, now running (its attempts counted), or None."""
        with self._lock:
            row = self._db.execute("SELECT id FROM jobs WHERE status = 'queued' "
                                   "ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                             "started = ? WHERE id = ?", (now(), row["id"]))
            return dict(self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?",
                                         (row["id"],)).fetchone())

    def set_progress(self, job_id: str, points_done: int) -> None:
        self._write("UPDATE jobs SET points_done = ? WHERE id = ? AND status = 'running'",
                    (points_done, job_id))

    def finish(self, job_id: str, status: str, points_done: int | None = None,
               error: dict | None = None) -> bool:
        """A running job done, failed or cancelled; False if it was not running."""
        return self._write(
            "UPDATE jobs SET status = ?, finished = ?, error = ?, "
            "points_done = coalesce(?, points_done) WHERE id = ? AND status = 'running'",
            (status, now(), json.dumps(error) if error else None, points_done, job_id)) == 1

    def put_back(self, job_id: str) -> None:
        """A running job stopped before its end (the server is stopping): queued again."""
        self._write("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'running'",
                    (job_id,))

    def recover(self) -> int:
        """At startup: jobs a killed server left running are queued again (their stores resume;
        one whose cancel was asked is cancelled when the runner takes it); how many."""
        return self._write("UPDATE jobs SET status = 'queued' WHERE status = 'running'")

    # --- cancelling ---

    def cancel_queued(self, job_id: str) -> bool:
        return self._write("UPDATE jobs SET status = 'cancelled', cancel_requested = 1, "
                           "finished = ? WHERE id = ? AND status = 'queued'", (now(), job_id)) == 1

    def request_cancel(self, job_id: str) -> bool:
        """Mark a running job to be cancelled (kept across a restart); False if not running."""
        return self._write("UPDATE jobs SET cancel_requested = 1 WHERE id = ? "
                           "AND status = 'running'", (job_id,)) == 1

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._read("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(rows and rows[0]["cancel_requested"])


def _hold(data: Path):
    """The data folder's lock file, locked for as long as it is open."""
    from ..errors import BusyError, UsageError
    try:
        data.mkdir(parents=True, exist_ok=True)
        handle = open(data / LOCK_NAME, "w")
    except OSError as error:
        raise UsageError(f"cannot keep the job queue in {data}: {error.strerror}",
                         hint="give a --data folder this user can create and write to") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise BusyError(f"another gradsvc serve keeps its job queue in {data}",
                        hint="stop it first, or give this one another --data folder") from None
    return handle
