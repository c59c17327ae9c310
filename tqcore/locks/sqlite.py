"""Locks in the embedded SQLite file (``sqlite:///file``): safe across processes on a host.

Table ``tq_locks(name PRIMARY KEY, token, expires)``; ``expires`` is epoch seconds
on the host clock, which every process using the file shares. Each operation is
one ``BEGIN IMMEDIATE`` transaction, so two processes can never both take a lock.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqcore.locks.base import LockStore
from tqcore.sqlite_db import Database, open_database
from tqcore.urls import redact, sqlite_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tq_locks (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires REAL NOT NULL
);
"""


class SQLiteLockStore(LockStore):
    """Lock records in a SQLite table.

    Args:
        url: ``sqlite:///relative.db`` or ``sqlite:////absolute.db``.
    """

    def __init__(self, url: str) -> None:
        self.display_url = redact(url)
        self.path: Path = sqlite_path(url).resolve()

    @property
    def db(self) -> Database:
        """This process's handle on the file (a fresh one after a fork)."""
        db = open_database(self.path)
        db.ensure_schema("tq_locks", _SCHEMA)
        return db

    def try_acquire(self, name: str, token: str, ttl: float) -> bool:
        now = time.time()
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT INTO tq_locks (name, token, expires) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET token = excluded.token, "
                "expires = excluded.expires WHERE tq_locks.expires <= ?",
                (name, token, now + ttl, now))
            return cur.rowcount == 1

    def release(self, name: str, token: str) -> bool:
        with self.db.write() as conn:
            cur = conn.execute("DELETE FROM tq_locks WHERE name = ? AND token = ? AND expires > ?",
                               (name, token, time.time()))
            return cur.rowcount == 1

    def extend(self, name: str, token: str, ttl: float) -> bool:
        now = time.time()
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE tq_locks SET expires = ? WHERE name = ? AND token = ? AND expires > ?",
                (now + ttl, name, token, now))
            return cur.rowcount == 1

    def owner(self, name: str) -> str | None:
        rows = self.db.read(lambda conn: conn.execute(
            "SELECT token FROM tq_locks WHERE name = ? AND expires > ?",
            (name, time.time())).fetchall())
        return str(rows[0][0]) if rows else None
