"""The embedded broker: a SQLite file, multi-process safe on one host (``sqlite:///file``).

Key schema (one file, shared with the SQLite result backend by default):

``messages``
    one row per message: ``state`` 0 = ready, 1 = waiting for its ETA, 2 = leased.
    ``visible_at`` is the ETA of a scheduled message and the lease deadline of a
    leased one; ``attempts`` counts claims. A claim is one ``UPDATE ... RETURNING``
    inside ``BEGIN IMMEDIATE``: the row never leaves the file while a worker holds
    it, so a crash can lose nothing; an expired lease simply makes it ready again.
``dead_letters``
    messages nacked or claimed more than ``max_deliveries`` times, with the reason.
``queues``
    declared queue names (so empty queues still show in stats).
``workers``
    the worker registry: name, JSON info, expiry.

The clock is the host's ``time.time()``: every process using the file is on the
same host (WAL requires it), so there is one clock.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from tqcore.sqlite_db import Database, open_database
from tqcore.transports import sqlite_channels
from tqcore.transports.base import (
    DeadLetter,
    Delivery,
    OutgoingMessage,
    QueueStats,
    Transport,
)
from tqcore.transports.sqlite_channels import SQLiteChannels
from tqcore.urls import sqlite_path

READY, SCHEDULED, LEASED = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL DEFAULT 0,
    enqueued REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    msg_id TEXT,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages(queue, state, priority DESC, id);
CREATE INDEX IF NOT EXISTS messages_timer ON messages(state, visible_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    msg_id TEXT,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters(queue, id);
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, declared REAL NOT NULL);
CREATE TABLE IF NOT EXISTS workers (name TEXT PRIMARY KEY, info TEXT NOT NULL, expires REAL NOT NULL);
"""

# Wake in-process claimers as soon as this process enqueues; other processes are
# seen by polling (no cross-process notification in SQLite).
_wakeups: dict[str, threading.Condition] = {}
_POLL_MIN, _POLL_MAX = 0.002, 0.05
os.register_at_fork(after_in_child=_wakeups.clear)



class SQLiteTransport(SQLiteChannels, Transport):
    """The embedded broker. ``sqlite:///rel.db`` or ``sqlite:////abs/path.db``."""

    schemes = ("sqlite",)

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.path = sqlite_path(url).resolve()
        self._db: Database | None = None
        self._rr = itertools.count()
        self._declared: set[str] = set()
        key = str(self.path)
        self._wakeup_key = key

    @property
    def _wakeup(self) -> threading.Condition:
        """Wakes claimers in this process when it enqueues (per file, reset after fork)."""
        return _wakeups.setdefault(self._wakeup_key, threading.Condition())

    @property
    def db(self) -> Database:
        """The process-local database handle (reopened after a fork)."""
        db = self._db
        if db is None or db.pid != os.getpid():
            db = open_database(self.path)
            db.ensure_schema("broker", _SCHEMA)
            db.ensure_schema("channels", sqlite_channels.SCHEMA)
            self._db = db
        return db

    # -- queues -----------------------------------------------------------------
    def declare_queue(self, name: str) -> None:
        if name in self._declared:
            return
        with self.db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO queues(name, declared) VALUES (?, ?)",
                         (name, time.time()))
        self._declared.add(name)

    def enqueue_many(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        now = time.time()
        rows = []
        for m in messages:
            scheduled = m.eta is not None and m.eta > now
            rows.append((m.queue, _clamp_priority(m.priority), SCHEDULED if scheduled else READY,
                         m.eta if scheduled else now, now, m.message_id, m.payload))
        new_queues = {m.queue for m in messages} - self._declared
        with self.db.write() as conn:
            if new_queues:
                conn.executemany("INSERT OR IGNORE INTO queues(name, declared) VALUES (?, ?)",
                                 [(q, now) for q in new_queues])
            conn.executemany(
                "INSERT INTO messages(queue, priority, state, visible_at, enqueued, msg_id, payload)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._declared |= new_queues
        wakeup = self._wakeup
        with wakeup:
            wakeup.notify_all()

    def claim(self, queues: Sequence[str], *, consumer: str, limit: int, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        poll = _POLL_MIN
        while True:
            got = self._claim_once(queues, consumer, limit, lease)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0 or limit <= 0:
                return got
            wakeup = self._wakeup
            with wakeup:
                wakeup.wait(min(poll, remaining))
            poll = min(poll * 2, _POLL_MAX)

    def _claim_once(self, queues: Sequence[str], consumer: str, limit: int,
                    lease: float) -> list[Delivery]:
        if limit <= 0 or not queues:
            return []
        now = time.time()
        start = next(self._rr) % len(queues)
        order = list(queues[start:]) + list(queues[:start])
        out: list[Delivery] = []
        dead: list[tuple[Any, ...]] = []
        with self.db.write() as conn:
            # Due ETAs become ready; expired leases (a dead worker) become ready again.
            conn.execute("UPDATE messages SET state=0 WHERE state=1 AND visible_at<=?", (now,))
            conn.execute("UPDATE messages SET state=0, owner=NULL WHERE state=2 AND visible_at<=?",
                         (now,))
            for queue in order:
                want = limit - len(out)
                if want <= 0:
                    break
                rows = conn.execute(
                    "UPDATE messages SET state=2, owner=?, visible_at=?, attempts=attempts+1"
                    " WHERE id IN (SELECT id FROM messages WHERE queue=? AND state=0"
                    " ORDER BY priority DESC, id LIMIT ?)"
                    " RETURNING id, queue, priority, attempts, msg_id, payload",
                    (consumer, now + lease, queue, want)).fetchall()
                rows.sort(key=lambda r: (-r[2], r[0]))
                for rid, q, prio, attempts, msg_id, payload in rows:
                    if attempts > self.max_deliveries:
                        dead.append((rid, q, msg_id, payload, attempts))
                    else:
                        out.append(Delivery(self, q, bytes(payload), attempts, prio, rid,
                                                  msg_id))
            letters = []
            for rid, q, msg_id, payload, attempts in dead:
                reason = (f"delivered {attempts - 1} times without being acknowledged"
                          f" (max_deliveries={self.max_deliveries}): worker lost")
                conn.execute("DELETE FROM messages WHERE id=?", (rid,))
                cur = conn.execute(
                    "INSERT INTO dead_letters(queue, msg_id, payload, reason, attempts, dead_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", (q, msg_id, payload, reason, attempts - 1, now))
                letters.append(DeadLetter(str(cur.lastrowid), q, bytes(payload), reason,
                                          attempts - 1, now, msg_id))
        self._report_dead(letters)
        return out

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        keys = [(d.delivery_id, d.attempts) for d in deliveries]
        if not keys:
            return
        with self.db.write() as conn:
            # The attempts guard makes a stale ack (lease expired and someone else
            # claimed the message since) a no-op instead of deleting their claim.
            conn.executemany("DELETE FROM messages WHERE id=? AND attempts=?", keys)

    def nack(self, delivery: Delivery, reason: str) -> None:
        with self.db.write() as conn:
            cur = conn.execute("DELETE FROM messages WHERE id=? AND attempts=?",
                               (delivery.delivery_id, delivery.attempts))
            if cur.rowcount:
                conn.execute(
                    "INSERT INTO dead_letters(queue, msg_id, payload, reason, attempts, dead_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (delivery.queue, delivery.message_id, delivery.payload, reason,
                     delivery.attempts, time.time()))

    def requeue(self, delivery: Delivery, *, count_attempt: bool = True,
                delay: float | None = None) -> None:
        now = time.time()
        state, visible = (SCHEDULED, now + delay) if delay else (READY, now)
        with self.db.write() as conn:
            conn.execute(
                "UPDATE messages SET state=?, visible_at=?, owner=NULL, attempts=attempts-?"
                " WHERE id=? AND attempts=?",
                (state, visible, 0 if count_attempt else 1, delivery.delivery_id,
                 delivery.attempts))
        wakeup = self._wakeup
        with wakeup:
            wakeup.notify_all()

    def renew(self, deliveries: Iterable[Delivery], lease: float) -> None:
        until = time.time() + lease
        keys = [(until, d.delivery_id, d.attempts) for d in deliveries if not d.settled]
        if not keys:
            return
        with self.db.write() as conn:
            conn.executemany(
                "UPDATE messages SET visible_at=? WHERE id=? AND attempts=? AND state=2", keys)

    def dead_letter_raw(self, queue: str, payload: bytes, reason: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO dead_letters(queue, msg_id, payload, reason, attempts, dead_at)"
                " VALUES (?, NULL, ?, ?, 0, ?)", (queue, payload, reason, time.time()))

    # -- inspection -------------------------------------------------------------
    def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        now = time.time()

        def read(conn: Any) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
            names = conn.execute("SELECT name FROM queues").fetchall()
            counts = conn.execute(
                # due ETAs and expired leases are ready even before a claim promotes them
                "SELECT queue, SUM(state=0 OR visible_at<=?),"
                " SUM(state=1 AND visible_at>?), SUM(state=2 AND visible_at>?),"
                " MIN(CASE WHEN state=0 OR visible_at<=? THEN enqueued END)"
                " FROM messages GROUP BY queue", (now, now, now, now)).fetchall()
            dead = conn.execute("SELECT queue, COUNT(*) FROM dead_letters GROUP BY queue").fetchall()
            workers = conn.execute("SELECT info FROM workers WHERE expires>?", (now,)).fetchall()
            return names, counts, dead, workers

        names, counts, dead, workers = self.db.read(read)
        consumers: dict[str, int] = {}
        for (info,) in workers:
            for q in json.loads(info).get("queues", []):
                consumers[q] = consumers.get(q, 0) + 1
        by_queue = {row[0]: row for row in counts}
        dead_by = dict(dead)
        wanted = list(queues) if queues is not None else sorted(
            {n for (n,) in names} | set(by_queue) | set(dead_by))
        out = []
        for name in wanted:
            _, ready, sched, inflight, oldest = by_queue.get(name, (name, 0, 0, 0, None))
            out.append(QueueStats(
                name=name, depth=int(ready or 0), scheduled=int(sched or 0),
                in_flight=int(inflight or 0), dead_lettered=int(dead_by.get(name, 0)),
                oldest_age=max(0.0, now - oldest) if oldest else 0.0,
                consumers=consumers.get(name, 0)))
        return out

    def purge(self, queue: str) -> int:
        with self.db.write() as conn:
            return conn.execute("DELETE FROM messages WHERE queue=? AND state IN (0, 1)",
                                (queue,)).rowcount

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        sql = "SELECT id, queue, payload, reason, attempts, dead_at, msg_id FROM dead_letters"
        args: tuple[Any, ...] = ()
        if queue is not None:
            sql += " WHERE queue=?"
            args = (queue,)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self.db.read(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [DeadLetter(str(r[0]), r[1], bytes(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    # -- worker registry --------------------------------------------------------
    def register_worker(self, name: str, info: dict[str, Any], ttl: float) -> None:
        with self.db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO workers(name, info, expires) VALUES (?, ?, ?)",
                         (name, json.dumps(info), time.time() + ttl))

    def unregister_worker(self, name: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM workers WHERE name=?", (name,))

    def list_workers(self) -> dict[str, dict[str, Any]]:
        rows = self.db.read(lambda c: c.execute(
            "SELECT name, info FROM workers WHERE expires>?", (time.time(),)).fetchall())
        return {name: json.loads(info) for name, info in rows}


def _clamp_priority(priority: int | None) -> int:
    if priority is None:
        return 0
    return max(0, min(9, int(priority)))
