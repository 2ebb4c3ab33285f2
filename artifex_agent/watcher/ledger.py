"""The watcher's memory: one SQLite row per input, keyed by its path in the drop folder and its content.

The ledger lives on the watcher's own disk (SQLite locking over a network share is not
to be trusted). It makes restarts exact: an input whose key is already recorded is never
submitted again. Across PCs the same key travels as the coordinator's idempotency key, so
two watchers (two ledgers) still make one job.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from artifex_agent.watcher.names import printable

logger = logging.getLogger(__name__)

Kind = Literal["job", "frames"]
# claimed: taken, nothing sent yet; submitted: the coordinator has the job (or the agent the frames);
# done / failed: finished; quarantined: refused input, moved to failed/.
State = Literal["claimed", "submitted", "done", "failed", "quarantined"]
STATES: tuple[State, ...] = ("claimed", "submitted", "done", "failed", "quarantined")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    relpath TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    job_id TEXT NOT NULL DEFAULT '',
    job_state TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_state ON items(state);
-- Counted failed tries of one claim (by its token, which survives restarts and take-overs).
CREATE TABLE IF NOT EXISTS attempts (
    token TEXT PRIMARY KEY,
    relpath TEXT NOT NULL,
    count INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    updated REAL NOT NULL
);
"""
# Free text stored as it is shown: a name that is not UTF-8 would make SQLite raise
# (such inputs are refused, so a stored location is never one that has to be opened again).
_TEXT_FIELDS = ("relpath", "location", "detail")


def item_key(relpath: str, content_hash: str) -> str:
    """The identity of one input: where it was dropped (relative, '/'-separated) and what it holds."""
    return hashlib.sha256(f"{relpath}\0{content_hash}".encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class Record:
    """One input as the ledger remembers it."""

    key: str
    relpath: str
    content_hash: str
    kind: Kind
    state: State
    job_id: str = ""
    job_state: str = ""
    location: str = ""
    detail: str = ""
    owner: str = ""
    created: float = 0.0
    updated: float = 0.0


class Ledger:
    """Thread-safe access to the SQLite file (WAL: `watch --status` reads while the watcher writes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a submitted job id must survive a power cut, or a restart would not know it.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    def get(self, key: str) -> Record | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM items WHERE key = ?", (key,)).fetchone()
        return _record(row) if row else None

    def record(self, rec: Record) -> Record:
        """Insert or replace `rec` as it is now."""
        now = time.time()
        for name in _TEXT_FIELDS:
            setattr(rec, name, printable(getattr(rec, name)))
        rec.created = rec.created or now
        rec.updated = now
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO items (key, relpath, content_hash, kind, state, job_id, job_state, location,"
                " detail, owner, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (rec.key, rec.relpath, rec.content_hash, rec.kind, rec.state, rec.job_id, rec.job_state,
                 rec.location, rec.detail, rec.owner, rec.created, rec.updated))
        return rec

    def update(self, key: str, **fields: Any) -> None:
        """Change some fields of an existing row."""
        allowed = {"state", "job_id", "job_state", "location", "detail", "owner"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        fields = {k: printable(v) if k in _TEXT_FIELDS else v for k, v in fields.items()}
        cols = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(f"UPDATE items SET {cols}, updated = ? WHERE key = ?", (*fields.values(), time.time(), key))

    def add_attempt(self, token: str, relpath: str, error: str) -> int:
        """Count one more failed try of the claim `token`; returns its count so far."""
        with self._tx() as db:
            db.execute("INSERT INTO attempts (token, relpath, count, last_error, updated) VALUES (?,?,1,?,?) "
                       "ON CONFLICT(token) DO UPDATE SET count = count + 1, last_error = excluded.last_error, "
                       "updated = excluded.updated", (token, printable(relpath), printable(error), time.time()))
            return int(db.execute("SELECT count FROM attempts WHERE token = ?", (token,)).fetchone()[0])

    def clear_attempts(self, token: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM attempts WHERE token = ?", (token,))

    def attempt_tokens(self) -> set[str]:
        """Claims with counted failures (read once at start-up)."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT token FROM attempts").fetchall()}

    def in_state(self, *states: State, kind: Kind | None = None) -> list[Record]:
        marks = ",".join("?" for _ in states)
        sql = f"SELECT * FROM items WHERE state IN ({marks})"
        args: list[Any] = list(states)
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created", args).fetchall()
        return [_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall()
        out: dict[str, int] = dict.fromkeys(STATES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    def recent(self, limit: int = 10, *states: State) -> list[Record]:
        sql = "SELECT * FROM items"
        args: list[Any] = []
        if states:
            sql += f" WHERE state IN ({','.join('?' for _ in states)})"
            args += list(states)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY updated DESC LIMIT ?", (*args, limit)).fetchall()
        return [_record(r) for r in rows]


def _record(row: sqlite3.Row) -> Record:
    return Record(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row is not a mapping
