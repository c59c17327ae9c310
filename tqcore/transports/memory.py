"""An in-process broker (``memory://`` or ``memory://name``) for tests and eager setups.

It keeps every invariant of the interface (leases, attempts, dead letters, ETA,
priorities) with plain Python structures under one condition variable. All
``memory://name`` transports in a process with the same name share one broker.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from tqcore.transports.base import (
    DeadLetter,
    Delivery,
    OutgoingMessage,
    QueueStats,
    Subscription,
    Transport,
)

_LOG_MAX = 100_000


class _Log:
    """An append-only, bounded log of bodies with sequence numbers (events, commands)."""

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond
        self.entries: deque[tuple[int, float, float, bytes]] = deque(maxlen=_LOG_MAX)
        self.seq = 0

    def append(self, body: bytes, ttl: float = 0.0) -> None:
        now = time.time()
        with self.cond:
            self.seq += 1
            self.entries.append((self.seq, now, now + ttl if ttl else 0.0, body))
            self.cond.notify_all()


class _LogSubscription(Subscription):
    def __init__(self, log: _Log, replay: float | None = None) -> None:
        self.log = log
        with log.cond:
            self.last = log.seq
            if replay:
                since = time.time() - replay
                older = [seq for seq, ts, _, _ in log.entries if ts < since]
                self.last = older[-1] if older else (log.entries[0][0] - 1 if log.entries else 0)

    def get(self, timeout: float) -> list[bytes]:
        log = self.log
        deadline = time.monotonic() + timeout
        with log.cond:
            while log.seq <= self.last:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                log.cond.wait(remaining)
            now = time.time()
            out = [body for seq, _, exp, body in log.entries
                   if seq > self.last and (not exp or exp > now)]
            self.last = log.seq
            return out


@dataclasses.dataclass(slots=True)
class _Record:
    id: int
    queue: str
    priority: int
    payload: bytes
    enqueued: float
    message_id: str | None
    attempts: int = 0
    leased_until: float | None = None
    eta: float | None = None


class _Broker:
    """The shared state behind every transport with the same name."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ids = itertools.count(1)
        self.records: dict[int, _Record] = {}
        self.ready: dict[str, list[tuple[int, int]]] = {}  # heap of (-priority, id)
        self.scheduled: list[tuple[float, int]] = []  # heap of (eta, id)
        self.leases: list[tuple[float, int, int]] = []  # heap of (until, id, attempts)
        self.dead: list[DeadLetter] = []
        self.queues: set[str] = set()
        self.workers: dict[str, tuple[dict[str, Any], float]] = {}
        self.events = _Log(self.cond)
        self.control = _Log(self.cond)
        self.replies: dict[str, list[tuple[float, bytes]]] = {}

    def push_ready(self, rec: _Record) -> None:
        rec.leased_until = None
        rec.eta = None
        heapq.heappush(self.ready.setdefault(rec.queue, []), (-rec.priority, rec.id))

    def tick(self, now: float) -> None:
        while self.scheduled and self.scheduled[0][0] <= now:
            _, rid = heapq.heappop(self.scheduled)
            rec = self.records.get(rid)
            if rec is not None and rec.eta is not None and rec.eta <= now:
                self.push_ready(rec)
        while self.leases and self.leases[0][0] <= now:
            _, rid, attempts = heapq.heappop(self.leases)
            rec = self.records.get(rid)
            if (rec is not None and rec.attempts == attempts and rec.leased_until is not None
                    and rec.leased_until <= now):
                self.push_ready(rec)


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()



class MemoryTransport(Transport):
    """In-process broker; ``memory://`` and ``memory://<name>``."""

    schemes = ("memory",)

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url, **options)
        name = url.split("://", 1)[1] if "://" in url else ""
        with _brokers_lock:
            self._b = _brokers.setdefault(name, _Broker())

    def declare_queue(self, name: str) -> None:
        with self._b.cond:
            self._b.queues.add(name)

    def enqueue_many(self, messages: Sequence[OutgoingMessage]) -> None:
        b = self._b
        now = time.time()
        with b.cond:
            for m in messages:
                rec = _Record(next(b.ids), m.queue, max(0, min(9, int(m.priority or 0))),
                              m.payload, now, m.message_id)
                b.records[rec.id] = rec
                b.queues.add(m.queue)
                if m.eta is not None and m.eta > now:
                    rec.eta = m.eta
                    heapq.heappush(b.scheduled, (m.eta, rec.id))
                else:
                    b.push_ready(rec)
            b.cond.notify_all()

    def claim(self, queues: Sequence[str], *, consumer: str, limit: int, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        b = self._b
        deadline = time.monotonic() + timeout
        dead_now: list[DeadLetter] = []
        out: list[Delivery] = []
        with b.cond:
            while True:
                now = time.time()
                b.tick(now)
                out = []
                for queue in queues:
                    heap = b.ready.get(queue)
                    while heap and len(out) < limit:
                        _, rid = heapq.heappop(heap)
                        rec = b.records.get(rid)
                        if rec is None or rec.leased_until is not None or rec.eta is not None:
                            continue
                        rec.attempts += 1
                        if rec.attempts > self.max_deliveries:
                            del b.records[rid]
                            letter = DeadLetter(
                                str(rid), rec.queue, rec.payload,
                                f"delivered {rec.attempts - 1} times without being acknowledged"
                                f" (max_deliveries={self.max_deliveries}): worker lost",
                                rec.attempts - 1, now, rec.message_id)
                            b.dead.append(letter)
                            dead_now.append(letter)
                            continue
                        rec.leased_until = now + lease
                        heapq.heappush(b.leases, (rec.leased_until, rid, rec.attempts))
                        out.append(Delivery(self, rec.queue, rec.payload, rec.attempts,
                                                  rec.priority, rid, rec.message_id))
                remaining = deadline - time.monotonic()
                if out or remaining <= 0 or limit <= 0:
                    out.sort(key=lambda d: (-d.priority, d.delivery_id))
                    break
                if dead_now:
                    break
                wait = remaining
                if b.scheduled:
                    wait = min(wait, max(0.001, b.scheduled[0][0] - now))
                if b.leases:
                    wait = min(wait, max(0.001, b.leases[0][0] - now))
                b.cond.wait(wait)
        self._report_dead(dead_now)
        return out

    def _current(self, d: Delivery) -> _Record | None:
        rec = self._b.records.get(d.delivery_id)
        if rec is None or rec.attempts != d.attempts:
            return None
        return rec

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        with self._b.cond:
            for d in deliveries:
                if self._current(d) is not None:
                    del self._b.records[d.delivery_id]

    def nack(self, delivery: Delivery, reason: str) -> None:
        with self._b.cond:
            rec = self._current(delivery)
            if rec is not None:
                del self._b.records[rec.id]
                self._b.dead.append(DeadLetter(str(rec.id), rec.queue, rec.payload, reason,
                                               rec.attempts, time.time(), rec.message_id))

    def requeue(self, delivery: Delivery, *, count_attempt: bool = True,
                delay: float | None = None) -> None:
        b = self._b
        with b.cond:
            rec = self._current(delivery)
            if rec is None:
                return
            if not count_attempt:
                rec.attempts -= 1
            rec.leased_until = None
            if delay:
                rec.eta = time.time() + delay
                heapq.heappush(b.scheduled, (rec.eta, rec.id))
            else:
                b.push_ready(rec)
            b.cond.notify_all()

    def renew(self, deliveries: Iterable[Delivery], lease: float) -> None:
        b = self._b
        with b.cond:
            until = time.time() + lease
            for d in deliveries:
                rec = self._current(d)
                if rec is not None and rec.leased_until is not None:
                    rec.leased_until = until
                    heapq.heappush(b.leases, (until, rec.id, rec.attempts))

    def dead_letter_raw(self, queue: str, payload: bytes, reason: str) -> None:
        with self._b.cond:
            self._b.dead.append(DeadLetter(f"raw-{next(self._b.ids)}", queue, payload, reason, 0,
                                           time.time()))

    def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        b = self._b
        with b.cond:
            now = time.time()
            b.tick(now)
            figures: dict[str, list[Any]] = {}
            for rec in b.records.values():
                f = figures.setdefault(rec.queue, [0, 0, 0, None])
                if rec.leased_until is not None:
                    f[2] += 1
                elif rec.eta is not None:
                    f[1] += 1
                else:
                    f[0] += 1
                    f[3] = rec.enqueued if f[3] is None else min(f[3], rec.enqueued)
            dead: dict[str, int] = {}
            for dl in b.dead:
                dead[dl.queue] = dead.get(dl.queue, 0) + 1
            consumers: dict[str, int] = {}
            for info, expires in b.workers.values():
                if expires > now:
                    for q in info.get("queues", []):
                        consumers[q] = consumers.get(q, 0) + 1
            names = list(queues) if queues is not None else sorted(
                b.queues | set(figures) | set(dead))
            out = []
            for name in names:
                ready, sched, inflight, oldest = figures.get(name, [0, 0, 0, None])
                out.append(QueueStats(name, ready, sched, inflight, dead.get(name, 0),
                                      max(0.0, now - oldest) if oldest else 0.0,
                                      consumers.get(name, 0)))
            return out

    def purge(self, queue: str) -> int:
        b = self._b
        with b.cond:
            doomed = [rid for rid, rec in b.records.items()
                      if rec.queue == queue and rec.leased_until is None]
            for rid in doomed:
                del b.records[rid]
            b.ready.pop(queue, None)
            return len(doomed)

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        with self._b.cond:
            found = [d for d in reversed(self._b.dead) if queue is None or d.queue == queue]
            return found[:limit]

    def register_worker(self, name: str, info: dict[str, Any], ttl: float) -> None:
        with self._b.cond:
            self._b.workers[name] = (dict(info), time.time() + ttl)

    def unregister_worker(self, name: str) -> None:
        with self._b.cond:
            self._b.workers.pop(name, None)

    def list_workers(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        with self._b.cond:
            return {n: dict(i) for n, (i, exp) in self._b.workers.items() if exp > now}

    def publish_event(self, routing_key: str, body: bytes) -> None:
        self._b.events.append(body)

    def subscribe_events(self, *, replay: float | None = None) -> Subscription:
        return _LogSubscription(self._b.events, replay)

    def broadcast_control(self, body: bytes, *, ttl: float = 300.0) -> None:
        self._b.control.append(body, ttl)

    def subscribe_control(self, node: str) -> Subscription:
        return _LogSubscription(self._b.control)

    def send_reply(self, reply_to: str, body: bytes, *, ttl: float = 60.0) -> None:
        with self._b.cond:
            self._b.replies.setdefault(reply_to, []).append((time.time() + ttl, body))
            self._b.cond.notify_all()

    def collect_replies(self, reply_to: str, timeout: float) -> list[bytes]:
        b = self._b
        deadline = time.monotonic() + timeout
        with b.cond:
            while not b.replies.get(reply_to):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                b.cond.wait(remaining)
            now = time.time()
            return [body for exp, body in b.replies.pop(reply_to) if exp > now]


def reset(name: str = "") -> None:
    """Forget the in-memory broker called ``name`` (tests)."""
    with _brokers_lock:
        _brokers.pop(name, None)
