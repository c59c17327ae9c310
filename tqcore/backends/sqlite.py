"""The SQLite result backend (``sqlite:///file``), by default in the broker's file.

Tables: ``results`` (task meta as JSON, expiry), ``groups`` (saved group tuples),
``chord_parts`` + ``chord_claims`` (the join: a part per (group, index), so a header
task that runs twice counts once, and a claim taken in the same ``BEGIN IMMEDIATE``
transaction that sees the last part, so one caller publishes the body; the claim is
marked done after the body is published, and a claim abandoned by a dead process is
taken over after ``CHORD_CLAIM_TTL``),
``revoked`` (persistent revokes).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

from tqcore import codec
from tqcore.backends.base import (
    CHORD_CLAIM_TTL,
    FAILED_KEPT,
    REVOKE_TTL,
    ChordPart,
    FailedMessage,
    ResultBackend,
)
from tqcore.sqlite_db import Database, open_database
from tqcore.urls import sqlite_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY, status TEXT NOT NULL, meta TEXT NOT NULL, expires REAL
);
CREATE TABLE IF NOT EXISTS groups (group_id TEXT PRIMARY KEY, data TEXT NOT NULL, expires REAL);
CREATE TABLE IF NOT EXISTS chord_parts (
    group_id TEXT NOT NULL, idx INTEGER NOT NULL, task_id TEXT NOT NULL, status TEXT NOT NULL,
    result TEXT, PRIMARY KEY (group_id, idx)
);
CREATE TABLE IF NOT EXISTS chord_claims (group_id TEXT PRIMARY KEY, claimed_at REAL,
    done INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (task_id TEXT PRIMARY KEY, ts REAL NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS revoked_ts ON revoked(ts);
CREATE TABLE IF NOT EXISTS failed (
    task_id TEXT PRIMARY KEY, name TEXT NOT NULL, queue TEXT NOT NULL, payload BLOB NOT NULL,
    exc_type TEXT NOT NULL, signature TEXT NOT NULL, failed_at REAL NOT NULL,
    retried INTEGER NOT NULL DEFAULT 0, expires REAL
);
CREATE INDEX IF NOT EXISTS failed_at ON failed(failed_at);
"""


class SQLiteBackend(ResultBackend):
    """Results in a SQLite file."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.path = sqlite_path(url).resolve()
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        """The process-local database handle (reopened after a fork)."""
        db = self._db
        if db is None or db.pid != os.getpid():
            db = open_database(self.path)
            db.ensure_schema("backend", _SCHEMA)
            self._db = db
        return db

    def _expiry(self) -> float | None:
        return time.time() + self.expires if self.expires else None

    def _put_meta(self, task_id: str, meta: dict[str, Any]) -> None:
        text = codec.dumps(meta)
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO results(task_id, status, meta, expires) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(task_id) DO UPDATE SET status=excluded.status, meta=excluded.meta,"
                " expires=excluded.expires WHERE results.status != 'SUCCESS'",
                (task_id, meta["status"], text, self._expiry()))

    def _get_meta(self, task_id: str) -> dict[str, Any] | None:
        row = self.db.read(lambda c: c.execute(
            "SELECT meta, expires FROM results WHERE task_id=?", (task_id,)).fetchone())
        if row is None or (row[1] is not None and row[1] < time.time()):
            return None
        meta: dict[str, Any] = codec.loads(row[0])
        return meta

    def forget(self, task_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM results WHERE task_id=?", (task_id,))

    def save_group(self, group_id: str, data: Any) -> None:
        with self.db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO groups(group_id, data, expires) VALUES (?, ?, ?)",
                         (group_id, codec.dumps(data), self._expiry()))

    def restore_group(self, group_id: str) -> Any:
        row = self.db.read(lambda c: c.execute(
            "SELECT data, expires FROM groups WHERE group_id=?", (group_id,)).fetchone())
        if row is None or (row[1] is not None and row[1] < time.time()):
            return None
        return codec.loads(row[0])

    def delete_group(self, group_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM groups WHERE group_id=?", (group_id,))

    def chord_part_return(self, group_id: str, index: int, task_id: str, status: str,
                          result: Any, size: int) -> list[ChordPart] | None:
        now = time.time()
        with self.db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO chord_claims(group_id, claimed_at, done, created)"
                         " VALUES (?, NULL, 0, ?)", (group_id, now))
            conn.execute(
                "INSERT OR IGNORE INTO chord_parts(group_id, idx, task_id, status, result)"
                " VALUES (?, ?, ?, ?, ?)", (group_id, index, task_id, status, codec.dumps(result)))
            (count,) = conn.execute("SELECT COUNT(*) FROM chord_parts WHERE group_id=?",
                                    (group_id,)).fetchone()
            if count < size:
                return None
            # Claim the body: unclaimed, or claimed by someone who vanished without
            # finishing (older than CHORD_CLAIM_TTL). The claimer calls chord_done.
            claimed = conn.execute(
                "UPDATE chord_claims SET claimed_at=? WHERE group_id=? AND done=0 AND"
                " (claimed_at IS NULL OR claimed_at<?)",
                (now, group_id, now - CHORD_CLAIM_TTL)).rowcount
            if not claimed:
                return None
            rows = conn.execute(
                "SELECT idx, task_id, status, result FROM chord_parts WHERE group_id=?"
                " ORDER BY idx", (group_id,)).fetchall()
        return [ChordPart(i, t, s, json.loads(r) if r is not None else None)
                for i, t, s, r in rows]

    def chord_done(self, group_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("UPDATE chord_claims SET done=1 WHERE group_id=?", (group_id,))
            conn.execute("DELETE FROM chord_parts WHERE group_id=?", (group_id,))

    def chord_claim_age(self, group_id: str) -> float | None:
        row = self.db.read(lambda c: c.execute(
            "SELECT claimed_at, done FROM chord_claims WHERE group_id=?", (group_id,)).fetchone())
        if row is None or row[0] is None or row[1]:
            return None
        return max(0.0, time.time() - float(row[0]))

    def add_revoked(self, task_ids: Iterable[str], ttl: float = REVOKE_TTL) -> None:
        now = time.time()
        with self.db.write() as conn:
            conn.executemany("INSERT OR REPLACE INTO revoked(task_id, ts, expires) VALUES (?, ?, ?)",
                             [(tid, now, now + ttl) for tid in task_ids])

    def revoked_since(self, since: float) -> tuple[set[str], float]:
        rows = self.db.read(lambda c: c.execute(
            "SELECT task_id, ts FROM revoked WHERE ts>=? AND expires>?",
            (since, time.time())).fetchall())
        newest = max([since, *(ts for _, ts in rows)])
        return {tid for tid, _ in rows}, newest

    def save_failed(self, failed: FailedMessage) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO failed(task_id, name, queue, payload, exc_type, signature, failed_at,"
                " retried, expires) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT(task_id) DO"
                " UPDATE SET payload=excluded.payload, exc_type=excluded.exc_type,"
                " signature=excluded.signature, failed_at=excluded.failed_at,"
                " expires=excluded.expires",
                (failed.task_id, failed.name, failed.queue, failed.payload, failed.exc_type,
                 failed.signature, failed.failed_at, self._expiry()))
            conn.execute("DELETE FROM failed WHERE task_id IN (SELECT task_id FROM failed"
                         " ORDER BY failed_at DESC LIMIT -1 OFFSET ?)", (FAILED_KEPT,))

    def find_failed(self, task_ids: list[str] | None = None, name: str | None = None,
                    exc_type: str | None = None, signature: str | None = None,
                    limit: int = 1000) -> list[FailedMessage]:
        where: list[str] = ["(expires IS NULL OR expires>?)"]
        args: list[Any] = [time.time()]
        for column, value in (("name", name), ("exc_type", exc_type), ("signature", signature)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if task_ids is not None:
            where.append(f"task_id IN ({','.join('?' * len(task_ids))})")
            args.extend(task_ids)
        sql = ("SELECT task_id, name, queue, payload, exc_type, signature, failed_at, retried"
               f" FROM failed WHERE {' AND '.join(where)} ORDER BY failed_at DESC LIMIT ?")
        rows = self.db.read(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [FailedMessage(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7])
                for r in rows]

    def mark_retried(self, task_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("UPDATE failed SET retried=retried+1 WHERE task_id=?", (task_id,))

    def cleanup(self) -> None:
        now = time.time()
        with self.db.write() as conn:
            conn.execute("DELETE FROM results WHERE expires IS NOT NULL AND expires<?", (now,))
            conn.execute("DELETE FROM groups WHERE expires IS NOT NULL AND expires<?", (now,))
            conn.execute("DELETE FROM revoked WHERE expires<?", (now,))
            conn.execute("DELETE FROM failed WHERE expires IS NOT NULL AND expires<?", (now,))
            conn.execute("DELETE FROM chord_claims WHERE done=1 AND created<?", (now - 86400 * 7,))
