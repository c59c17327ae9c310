"""Events and control channels of the embedded broker (tables beside the queues).

``events``
    every published event body, kept as a bounded history (the newest
    ``EVENTS_KEPT`` rows), so a monitor started late can rewind.
``control``
    broadcast control commands with an expiry; each worker's mailbox reads the rows
    added after it subscribed.
``replies``
    control replies keyed by the client's ``reply_to``; a client reads and deletes
    its own.

Readers poll (there is no cross-process notification in SQLite); readers in the
same process as the writer are woken at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

from tqcore.transports.base import Subscription

if TYPE_CHECKING:
    from tqcore.sqlite_db import Database

EVENTS_KEPT = 100_000
_TRIM_EVERY = 500
_POLL = 0.02

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, routing_key TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS control (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, expires REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT, reply_to TEXT NOT NULL, expires REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_to ON replies(reply_to, id);
"""

_signals: dict[str, threading.Condition] = {}
_signals_lock = threading.Lock()


def _reset_signals() -> None:
    global _signals_lock
    _signals_lock = threading.Lock()
    _signals.clear()


os.register_at_fork(after_in_child=_reset_signals)


def _signal(path: str) -> threading.Condition:
    with _signals_lock:
        return _signals.setdefault(path, threading.Condition())


class _TableSubscription(Subscription):
    """Rows of ``table`` with an id above the last one seen."""

    def __init__(self, channels: SQLiteChannels, table: str, start: int) -> None:
        self.channels = channels
        self.table = table
        self.last = start
        self.cond = _signal(str(channels.path))
        where = " AND expires>?" if table == "control" else ""
        self.sql = f"SELECT id, body FROM {table} WHERE id>?{where} ORDER BY id LIMIT 5000"

    def _fetch(self, conn: sqlite3.Connection) -> list[Any]:
        args: tuple[Any, ...] = (self.last, time.time()) if self.table == "control" \
            else (self.last,)
        return conn.execute(self.sql, args).fetchall()

    def get(self, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.channels.db.read(self._fetch)
            if rows:
                self.last = rows[-1][0]
                return [bytes(body) for _, body in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with self.cond:
                self.cond.wait(min(_POLL, remaining))


class SQLiteChannels:
    """Mixin giving :class:`~tqcore.transports.sqlite.SQLiteTransport` its channels."""

    path: Any
    _published = 0

    @property
    def db(self) -> Database:
        """Provided by the transport."""
        raise AttributeError("db")

    def _notify(self) -> None:
        cond = _signal(str(self.path))
        with cond:
            cond.notify_all()

    def publish_event(self, routing_key: str, body: bytes) -> None:
        now = time.time()
        with self.db.write() as conn:
            conn.execute("INSERT INTO events(ts, routing_key, body) VALUES (?, ?, ?)",
                         (now, routing_key, body))
            self._published += 1
            if self._published % _TRIM_EVERY == 0:
                conn.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                             (EVENTS_KEPT,))
                conn.execute("DELETE FROM control WHERE expires<?", (now,))
                conn.execute("DELETE FROM replies WHERE expires<?", (now,))
        self._notify()

    def subscribe_events(self, *, replay: float | None = None) -> Subscription:
        if replay:
            since = time.time() - replay
            row = self.db.read(lambda c: c.execute(
                "SELECT MIN(id) FROM events WHERE ts>=?", (since,)).fetchone())
            start = (row[0] - 1) if row and row[0] is not None else self._max_id("events")
        else:
            start = self._max_id("events")
        return _TableSubscription(self, "events", start)

    def _max_id(self, table: str) -> int:
        row = self.db.read(lambda c: c.execute(f"SELECT MAX(id) FROM {table}").fetchone())
        return int(row[0] or 0)

    def broadcast_control(self, body: bytes, *, ttl: float = 300.0) -> None:
        now = time.time()
        with self.db.write() as conn:
            conn.execute("INSERT INTO control(ts, expires, body) VALUES (?, ?, ?)",
                         (now, now + ttl, body))
        self._notify()

    def subscribe_control(self, node: str) -> Subscription:
        return _TableSubscription(self, "control", self._max_id("control"))

    def send_reply(self, reply_to: str, body: bytes, *, ttl: float = 60.0) -> None:
        with self.db.write() as conn:
            conn.execute("INSERT INTO replies(reply_to, expires, body) VALUES (?, ?, ?)",
                         (reply_to, time.time() + ttl, body))
        self._notify()

    def collect_replies(self, reply_to: str, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        cond = _signal(str(self.path))
        while True:
            with self.db.write() as conn:
                rows = conn.execute("SELECT id, body FROM replies WHERE reply_to=? AND expires>?"
                                    " ORDER BY id", (reply_to, time.time())).fetchall()
                if rows:
                    conn.execute("DELETE FROM replies WHERE reply_to=?", (reply_to,))
            if rows:
                return [bytes(body) for _, body in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with cond:
                cond.wait(min(_POLL, remaining))
