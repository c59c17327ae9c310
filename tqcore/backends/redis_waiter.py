"""Waiting for task results on Redis: one pub/sub connection per backend per process.

Every result write is also ``PUBLISH``ed, with the meta as the message, on the channel
named like its key (``celery-task-meta-<id>``). :class:`ResultWaiter` keeps one
long-lived subscribed connection (opened by the first wait, re-opened after a fork or a
failure) and subscribes to a task's channel while somebody waits for it.

One wait: subscribe; once the server has *confirmed* the subscription, read the key (a
write before the subscription is found by that read, a write after it arrives as a
message, so none is missed); then wait for the message, whose payload is the meta (no
second read).

There is no reader thread. A waiting thread that finds the reader role free reads the
socket itself and dispatches what arrives to the waiters of each channel (a condition per
sleeping thread, all sharing one lock); when its own wait is over it hands the role to one
sleeping waiter. A lone waiter (the common ``delay().get()``) thus reads its own result
with no thread hop.

A channel nobody waits for any more stays subscribed until the next ``SUBSCRIBE``, which
carries the ``UNSUBSCRIBE`` along (one write instead of two per wait; a quick re-wait on
the same id reuses the subscription).

Failures (the connection itself is :mod:`tqcore.backends.redis_pubsub`): a lost
connection wakes every waiter, which reads its key at once and then every ``interval``;
a background thread reconnects with backoff and subscribes again, and each waiter reads
its key again once its channel is confirmed. Waiters also read the key every ``interval``
while subscribed, so even a lost message costs at most that.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqcore import codec, states
from tqcore.backends.redis_pubsub import PubSubLink
from tqcore.exceptions import TimeoutError as TqTimeoutError
from tqcore.transports.redis_client import RedisConnector

Meta = dict[str, Any]

_MIN_INTERVAL = 0.005
#: Channels left subscribed after their last waiter before they are unsubscribed anyway.
_LINGER_MAX = 64

class _Slot:
    """The waiters of one channel (a ``watch`` counts as a waiter)."""

    __slots__ = ("channel", "waiters", "sleepers", "confirmed", "gen", "meta")

    def __init__(self, channel: bytes) -> None:
        self.channel = channel
        self.waiters = 0
        #: the conditions of threads asleep on this channel and not yet woken
        self.sleepers: dict[threading.Condition, None] = {}
        self.confirmed = False  # subscribed on the current connection
        self.gen = 0  # counts confirmations: a new one means "read the key again"
        self.meta: Meta | None = None  # a ready meta that arrived as a message


class ResultWaiter(PubSubLink):
    """Waits for result keys over one shared, lazily opened pub/sub connection.

    Args:
        connector: the backend's connector (its pool's settings open the connection).
        channel_of: the channel (= key) of a task id.
        fetch: reads a task's stored meta (None when there is none).
    """

    def __init__(self, connector: RedisConnector, channel_of: Callable[[str], str],
                 fetch: Callable[[str], Meta | None]) -> None:
        self._channel_of = channel_of
        self._fetch = fetch
        super().__init__(connector)

    def _reset(self) -> None:
        super()._reset()
        self._slots: dict[bytes, _Slot] = {}
        self._lingering: dict[bytes, None] = {}  # slots without waiters, still subscribed
        #: every sleeping thread not yet woken (candidates for the reader role)
        self._sleepers: dict[threading.Condition, _Slot] = {}
        self._reading = False  # some waiting thread holds the reader role

    # -- public --------------------------------------------------------------------
    def wait(self, task_id: str, timeout: float | None = None,
             interval: float = 0.5) -> Meta:
        """The task's meta once it is ready.

        Raises:
            tqcore.exceptions.TimeoutError: not ready within ``timeout`` seconds.
        """
        if timeout is not None and timeout <= 0:
            meta = self._fetch(task_id)
            if meta is not None and meta.get("status") in states.READY_STATES:
                return meta
            raise TqTimeoutError("the operation timed out")
        deadline = None if timeout is None else time.monotonic() + timeout
        [slot] = self._join([task_id])
        try:
            return self._wait(slot, task_id, deadline, max(interval, _MIN_INTERVAL))
        finally:
            self._leave([slot])

    @contextlib.contextmanager
    def watch(self, task_ids: Iterable[str]) -> Iterator[None]:
        """Stay subscribed to these tasks' channels (one ``SUBSCRIBE``) for the block:
        waits inside it find the subscription confirmed, or the result already in."""
        slots = self._join(task_ids)
        try:
            yield
        finally:
            self._leave(slots)

    # -- joining and leaving -------------------------------------------------------
    def _join(self, task_ids: Iterable[str]) -> list[_Slot]:
        # (no pid check here: the at-fork hook resets a child, and _open checks)
        channels = [self._channel_of(t).encode() for t in task_ids]
        if self._conn is None:
            self._ensure()
        with self._lock:
            slots, new = [], []
            for ch in channels:
                slot = self._slots.get(ch)
                if slot is None:
                    slot = self._slots[ch] = _Slot(ch)
                    new.append(slot)
                elif slot.waiters == 0:
                    self._lingering.pop(ch, None)
                slot.waiters += 1
                slots.append(slot)
            if new and self._conn is not None:
                self._subscribe(new)
        return slots

    def _leave(self, slots: list[_Slot]) -> None:
        with self._lock:
            for slot in slots:
                slot.waiters -= 1
                if slot.waiters == 0 and self._slots.get(slot.channel) is slot:
                    slot.meta = None  # a later wait reads the key rather than trust old news
                    if self._conn is None:
                        del self._slots[slot.channel]
                    else:  # unsubscribed with the next SUBSCRIBE (or reused before)
                        self._lingering[slot.channel] = None
            if len(self._lingering) > _LINGER_MAX and self._conn is not None:
                self._subscribe([])
            # A thread handed the reader role may be leaving instead (its wait is over):
            # pass the role on, or the others would sleep until their next poll.
            self._handoff()

    def _subscribe(self, slots: list[_Slot]) -> None:
        """Send ``UNSUBSCRIBE`` for lingering channels and ``SUBSCRIBE`` for ``slots``
        in one write. Called with the lock held."""
        conn = self._conn
        commands: list[tuple[Any, ...]] = []
        if self._lingering:
            gone = list(self._lingering)
            self._lingering.clear()
            for ch in gone:
                del self._slots[ch]
                self._replies.append((b"unsubscribe", None))
            commands.append(("UNSUBSCRIBE", *gone))
        if slots:
            commands.append(("SUBSCRIBE", *[s.channel for s in slots]))
            self._replies.extend((b"subscribe", s) for s in slots)
        if commands:
            self._send(conn, commands)

    # -- waiting -------------------------------------------------------------------
    def _wait(self, slot: _Slot, task_id: str, deadline: float | None,
              interval: float) -> Meta:
        checked = 0  # the confirmation after which the key was read
        epoch = -1  # the connection loss after which the key was read
        next_read = time.monotonic() + interval
        while True:
            read = trusted = False
            with self._lock:
                if slot.meta is not None:
                    return dict(slot.meta)
                if slot.confirmed and slot.gen != checked:
                    checked, read = slot.gen, True
                elif self._conn is None and self._epoch != epoch:
                    epoch, read = self._epoch, True  # no subscription: poll from now on
                trusted = slot.confirmed and slot.gen == checked
            now = time.monotonic()
            if read or now >= next_read or (deadline is not None and now >= deadline
                                            and not trusted):
                meta = self._fetch(task_id)
                if meta is not None and meta.get("status") in states.READY_STATES:
                    return meta
                now = time.monotonic()
                next_read = now + interval
            if deadline is not None and now >= deadline:
                raise TqTimeoutError("the operation timed out")
            self._block(slot, checked, next_read if deadline is None
                        else min(next_read, deadline))

    def _block(self, slot: _Slot, checked: int, until: float) -> None:
        """Until ``until`` or news for ``slot``: read the socket if nobody else does,
        else sleep on the slot's condition."""
        with self._lock:
            if slot.meta is not None or (slot.confirmed and slot.gen != checked):
                return
            conn = self._conn
            if conn is None:
                self._start_reconnect()
            if conn is None or self._reading:
                left = until - time.monotonic()
                if left > 0:
                    # A condition of its own: whoever wakes it also unregisters it, so a
                    # hand-off never picks a thread that is already awake.
                    cond = threading.Condition(self._lock)
                    slot.sleepers[cond] = None
                    self._sleepers[cond] = slot
                    try:
                        cond.wait(left)
                    finally:
                        slot.sleepers.pop(cond, None)
                        self._sleepers.pop(cond, None)
                return
            self._reading = True
        try:
            self._read(conn, slot, until)
        finally:
            with self._lock:
                self._reading = False
                self._handoff()

    def _handoff(self) -> None:
        """Wake one sleeping waiter to take the free reader role. Lock held."""
        if self._conn is not None and not self._reading and self._sleepers:
            cond = next(iter(self._sleepers))
            self._sleepers.pop(cond).sleepers.pop(cond, None)
            cond.notify()

    def _wake(self, slot: _Slot) -> None:
        """Wake every thread asleep on ``slot``. Lock held."""
        for cond in slot.sleepers:
            self._sleepers.pop(cond, None)
            cond.notify()
        slot.sleepers.clear()

    def _read(self, conn: Any, slot: _Slot, until: float) -> None:
        """Read and dispatch until ``slot`` has news or ``until`` (the reader role)."""
        health = self._health
        try:
            while True:
                now = time.monotonic()
                if health and now - self._last_rx > health:
                    self._ping(conn, now)
                left = until - now
                if left <= 0:
                    return
                if not conn.is_connected:
                    raise ConnectionError("pub/sub connection closed")
                wait = min(left, health) if health else left
                if self._ping_at:  # (wake up in time to give up on a late PONG)
                    wait = min(wait, max(0.01, self._ping_at + self._ping_timeout - now))
                if not conn.can_read(timeout=wait):
                    continue
                reply = conn.read_response()
                with self._lock:
                    self._last_rx = time.monotonic()
                    if self._dispatch(reply) is slot:
                        return
        except Exception as exc:  # noqa: BLE001 - any failure ends this connection
            with self._lock:
                self._lost(conn, exc)

    def _dispatch(self, reply: Any) -> _Slot | None:
        """Apply one reply read off the connection; the slot it woke, if any. Lock held."""
        if reply == b"PONG":  # (the PING of a connection left without subscriptions)
            reply = [b"pong", b""]
        if not isinstance(reply, list) or not reply:
            return None
        kind = reply[0]
        if kind == b"message":
            slot = self._slots.get(reply[1])
            if slot is None or not slot.waiters:
                return None
            meta = _ready_meta(reply[2])
            if meta is None:
                return None
            slot.meta = meta
            self._wake(slot)
            return slot
        if kind not in (b"subscribe", b"unsubscribe", b"pong"):
            return None
        if not self._replies or self._replies[0][0] != kind:
            raise ConnectionError(f"unexpected {kind!r} reply on the pub/sub connection")
        _, sub = self._replies.popleft()
        if kind == b"pong":
            self._ping_at = 0.0
        if not isinstance(sub, _Slot) or self._slots.get(sub.channel) is not sub:
            return None  # (a slot dropped before its confirmation came)
        sub.confirmed = True
        sub.gen += 1
        self._wake(sub)
        return sub

    # -- hooks of the link --------------------------------------------------------
    def _on_open(self) -> None:
        live = [s for s in self._slots.values() if s.waiters]
        if live:
            self._subscribe(live)
        self._handoff()  # somebody must read the confirmations

    def _on_drop(self) -> None:
        self._lingering.clear()
        for ch, slot in list(self._slots.items()):
            if not slot.waiters:
                del self._slots[ch]
            else:
                slot.confirmed = False
                self._wake(slot)  # to poll until the connection is back

    def _wanted(self) -> bool:
        return any(s.waiters for s in self._slots.values())


def _ready_meta(data: Any) -> Meta | None:
    try:
        meta = codec.loads(data)
    except Exception:  # noqa: BLE001 - a foreign message: the key read will tell
        return None
    if isinstance(meta, dict) and meta.get("status") in states.READY_STATES:
        return meta
    return None
