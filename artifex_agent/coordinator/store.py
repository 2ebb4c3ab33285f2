"""The durable job table: SQLite in WAL mode, one connection used from one thread.

Every change is committed before the coordinator acts on it or answers a client, so a
kill -9 at any moment loses nothing: start-up puts jobs found "running" back in the queue.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from artifex_agent.coordinator.messages import Job, JobEvent
from artifex_agent.errors import ConfigError, ResourceError
from artifex_agent.jobspec import JobSpec

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    content_key TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    agent TEXT NOT NULL DEFAULT '',
    post_agent TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    not_before REAL NOT NULL DEFAULT 0,
    outputs TEXT NOT NULL DEFAULT '[]',
    sha256 TEXT NOT NULL DEFAULT '[]',
    error TEXT NOT NULL DEFAULT '',
    cached INTEGER NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    batch_id TEXT NOT NULL DEFAULT '',
    queued_s REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, priority, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
"""
_JOB_COLUMNS = ("id, state, spec, idempotency_key, attempts, agent, post_agent, created, started, finished, "
                "outputs, sha256, error, cached, stage, batch_id, seq, not_before, queued_s")


class Store:
    """Jobs and their events in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    def open(self) -> Store:
        """Open (creating) the database; ConfigError when the file cannot be used."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One thread owns the connection (the coordinator's database thread), but it is
            # created on another; autocommit off: every change is an explicit transaction.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            # FULL: a Submit that returned survives a power cut, not only a crash of this process.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(f"database {self.path} was written by a newer coordinator (schema {version})")
            db.executescript(_SCHEMA)
            _migrate(db)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the coordinator database {self.path}: {exc}") from None
        if mode.lower() != "wal":
            logger.warning("database %s is in %s mode, not WAL (network filesystem?)", self.path, mode)
        self._db = db
        if mode.lower() == "wal":
            # A second connection for the event loop's own reads (read_page): in WAL mode a reader
            # never waits for the writer, and a page read on the loop (~0.3 ms for 100 rows) costs a
            # Submit less than the same read on the database thread, whose hand-offs of the GIL row by
            # row delayed the Submit's own commit by milliseconds (bench.web).
            # as_uri() percent-encodes the path: a folder named with "?", "#" or "%" opens the same file.
            self._reader = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                           isolation_level=None, check_same_thread=False)
        return self

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    # ------------------------------------------------------------------ writes

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a full disk becomes ResourceError (RESOURCE_EXHAUSTED), not INTERNAL."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if _disk_full(exc):
                raise ResourceError(f"disk full on {self.path}") from None
            raise

    def insert(self, job: Job, content_key: str, event: JobEvent) -> tuple[Job, bool]:
        """Store a new job and its first event; with a known idempotency key, the existing job instead."""
        with self._transaction() as db:
            if job.idempotency_key:
                row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE idempotency_key=?",
                                 (job.idempotency_key,)).fetchone()
                if row is not None:
                    return _job(row), True
            db.execute(
                "INSERT INTO jobs (id, state, spec, priority, idempotency_key, content_key, created, finished, "
                "outputs, sha256, cached, stage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.state, job.spec.to_json(), job.spec.priority, job.idempotency_key or None, content_key,
                 job.created, job.finished, json.dumps(job.outputs), json.dumps(job.sha256), int(job.cached),
                 job.stage))
            event.seq = self._event(event)
        return job, False

    def save(self, job: Job, event: JobEvent | None = None, *, not_before: float = 0.0) -> None:
        """Write a job's mutable fields (and an event) in one transaction."""
        self.save_many([(job, event, not_before)])

    def save_many(self, items: list[tuple[Job, JobEvent | None, float]]) -> None:
        """save() for several jobs in one transaction (a batch starting or ending)."""
        with self._transaction() as db:
            for job, event, not_before in items:
                db.execute(
                    "UPDATE jobs SET state=?, attempts=?, agent=?, post_agent=?, started=?, finished=?, outputs=?, "
                    "sha256=?, error=?, cached=?, stage=?, batch_id=?, not_before=?, queued_s=? WHERE id=?",
                    (job.state, job.attempts, job.agent, job.post_agent, job.started, job.finished,
                     json.dumps(job.outputs), json.dumps(job.sha256), job.error, int(job.cached), job.stage,
                     job.batch_id, not_before, job.queued_s, job.id))
                if event is not None:
                    event.seq = self._event(event)

    def set_priority(self, job: Job, event: JobEvent) -> None:
        """Write a queued job's new priority (its spec and the column the queue is read in order of)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET priority=?, spec=? WHERE id=?", (job.spec.priority, job.spec.to_json(), job.id))
            event.seq = self._event(event)

    def _event(self, ev: JobEvent) -> int:
        cur = self.db.execute(
            "INSERT INTO events (job_id, time, kind, state, stage, message, agent) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ev.job_id, ev.time, ev.kind, ev.state, ev.stage, ev.message, ev.agent))
        return int(cur.lastrowid or 0)

    def requeue_interrupted(self) -> list[str]:
        """Start-up: jobs left "running" by a crash go back to the queue; their attempt did not count."""
        now = time.time()
        with self._transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state='running' ORDER BY seq")]
            for job_id in ids:
                db.execute("UPDATE jobs SET state='queued', stage='queued', attempts=MAX(attempts-1, 0), "
                           "not_before=0 WHERE id=?", (job_id,))
                self._event(JobEvent(job_id, "info", "queued", stage="queued", time=now,
                                     message="requeued: the coordinator restarted while it ran"))
        return ids

    # ------------------------------------------------------------------ reads

    def get(self, job_id: str) -> Job | None:
        row = self.db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    @property
    def reads_on_loop(self) -> bool:
        """Whether read_page may be called on the event loop (WAL mode: it never waits for a writer)."""
        return self._reader is not None

    def read_page(self, states: list[str] | None = None, limit: int = 100, before: int = 0) -> list[tuple[int, Job]]:
        """page() through the reading connection, for the event loop's thread only (see open())."""
        assert self._reader is not None, "no reading connection (not WAL mode)"
        return self.page(states, limit, before, db=self._reader)

    def page(self, states: list[str] | None = None, limit: int = 100, before: int = 0,
             db: sqlite3.Connection | None = None) -> list[tuple[int, Job]]:
        """(seq, job) newest first, only those submitted before `before` (a seq; 0: from the newest)."""
        where = ["seq < ?"] if before else []
        args: list[Any] = [before] if before else []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = (db or self.db).execute(f"SELECT {_JOB_COLUMNS} FROM jobs {clause}ORDER BY seq DESC LIMIT ?",
                                       (*args, limit))
        return [(int(r[16]), _job(r)) for r in rows]

    def queued(self) -> list[tuple[Job, int, float, str]]:
        """Every queued job with its submission order, retry time and content key, in queue order."""
        rows = self.db.execute(f"SELECT {_JOB_COLUMNS}, content_key FROM jobs WHERE state='queued' "
                               "ORDER BY priority DESC, seq")
        return [(_job(r), int(r[16]), float(r[17]), str(r[19])) for r in rows]

    def events(self, job_id: str) -> list[JobEvent]:
        rows = self.db.execute("SELECT seq, time, kind, state, stage, message, agent FROM events WHERE job_id=? "
                               "ORDER BY seq", (job_id,))
        return [JobEvent(job_id, kind=r[2], state=r[3], stage=r[4], message=r[5], agent=r[6], time=r[1], seq=r[0])
                for r in rows]

    def counts(self) -> dict[str, int]:
        return {state: n for state, n in self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a database an older coordinator wrote up to SCHEMA_VERSION (CREATE TABLE IF NOT EXISTS skips it)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    if "queued_s" not in columns:  # schema 2
        db.execute("ALTER TABLE jobs ADD COLUMN queued_s REAL NOT NULL DEFAULT 0")


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    # SQLITE_FULL: "database or disk is full" (the journal, the WAL or the file could not grow).
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc))


# Specs parsed from their stored text, kept: a page of 100 jobs parses in 0.1 ms instead of 1 ms, and
# that parse holds the GIL the scheduler's loop needs (bench.web). A spec is never changed in place
# (a priority change replaces it), so one parsed spec can be shared; texts this long (an i2v image)
# are parsed each time rather than kept.
_SPEC_CACHE_TEXT = 16 << 10


@functools.lru_cache(maxsize=4096)
def _cached_spec(text: str) -> JobSpec:
    return JobSpec.from_stored(text)


def _spec(text: str) -> JobSpec:
    return _cached_spec(text) if len(text) <= _SPEC_CACHE_TEXT else JobSpec.from_stored(text)


def _job(row: tuple[Any, ...]) -> Job:
    return Job(
        id=row[0], state=row[1], spec=_spec(row[2]), idempotency_key=row[3] or "", attempts=row[4],
        agent=row[5], post_agent=row[6], created=row[7], started=row[8], finished=row[9],
        outputs=json.loads(row[10]), sha256=json.loads(row[11]), error=row[12], cached=bool(row[13]),
        stage=row[14], batch_id=row[15], queued_s=float(row[18]))
