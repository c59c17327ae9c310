"""Sending events in Celery's shapes (celery-wire.md §1.8, §4.4).

Every event carries ``hostname, utcoffset, pid, clock, timestamp, type``; its routing
key is the type with ``-`` turned into ``.``. Task events are buffered and sent as one
``task.multi`` message holding a JSON list (at most ``buffer_limit`` events, or every
``flush`` call), as Celery workers do; worker events go out at once. Events are
best-effort: a broker error is logged and the batch dropped, never raised into a task.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tqcore import codec
from tqcore.codec import jsonv
from tqcore.exceptions import TqError

#: This process's id, kept current across forks (a system call per event otherwise).
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))

if TYPE_CHECKING:
    from tqcore.transports.base import OutgoingMessage, Transport

logger = logging.getLogger("tqcore.events")

BUFFER_LIMIT = 100


def utcoffset() -> int:
    """Hours west of UTC, Celery's ``utcoffset`` field."""
    return (time.altzone if time.daylight and time.localtime().tm_isdst else time.timezone) // 3600


class EventDispatcher:
    """Builds and publishes events for one node (worker or producer).

    Args:
        transport: where events go.
        hostname: the sending node's name.
        enabled: send task events (worker events are always sent).
        buffer_limit: task events per ``task.multi`` message; 0 sends each at once.
    """

    def __init__(self, transport: Transport, hostname: str, *, enabled: bool = True,
                 buffer_limit: int = BUFFER_LIMIT) -> None:
        self.transport = transport
        self.hostname = hostname
        self.enabled = enabled
        self.buffer_limit = buffer_limit
        self._clocks = itertools.count(1)
        # No lock on the hot path: the threads that run, settle and flush tasks would
        # queue on it (a context switch each). ``next`` on a count and the deque's
        # append/popleft are atomic.
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._offset = utcoffset()
        self._last = 0
        self.dropped = 0
        #: Called instead of flushing when the buffer is full (a worker wakes its
        #: supervisor thread, which flushes); None flushes in the sending thread.
        self.on_full: Callable[[], None] | None = None
        self._sent_parts: dict[tuple[Any, ...], tuple[str, str, str]] = {}

    @property
    def clock(self) -> int:
        """The last logical clock value stamped on an event (Celery's ``clock``)."""
        return self._last

    def _tick(self) -> int:
        clock = self._last = next(self._clocks)
        return clock

    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        """An event dict with the common fields filled in."""
        ev = {"hostname": self.hostname, "utcoffset": self._offset, "pid": _pid[0],
              "clock": self._tick(), "timestamp": time.time(), "type": type_}
        ev.update(fields)
        return ev

    def task_sent(self, uuid: str, root_id: str, parent_id: str | None, name: str,
                  argsrepr: str, kwargsrepr: str, retries: int, eta: str | None,
                  expires: str | None, queue: str, group: str | None,
                  group_index: int | None, chord: str | None, priority: int | None
                  ) -> tuple[Any, ...]:
        """A ``task-sent`` event stamped now (clock and timestamp), with Celery's fields,
        for :meth:`enqueue_with_sent`: it is written as JSON only there, where a
        transport may do that while the broker is busy with the messages."""
        clock = self._tick()
        return (clock, time.time(), uuid, root_id, parent_id, name, argsrepr, kwargsrepr,
                retries, eta, expires, queue, group, group_index, chord, priority)

    def sent_json(self, stamps: list[tuple[Any, ...]]) -> bytes:
        """The body of the event message for ``stamps`` (from :meth:`task_sent`): one
        event, or a list of them (``task.multi``). The text is what ``codec.dumps`` gives
        for the event dicts, written from fragments encoded once per task and queue.

        Raises:
            TypeError, ValueError: a field JSON cannot carry.
        """
        j = jsonv
        head = (f'{{"hostname":{j(self.hostname)},"utcoffset":{j(self._offset)},'
                f'"pid":{os.getpid()},"clock":')
        cache = self._sent_parts
        if len(cache) >= 4096:  # bounded: names, reprs and ids may be made up at run time
            cache.clear()
        out = []
        for (clock, ts, uuid, root_id, parent_id, name, argsrepr, kwargsrepr, retries, eta,
             expires, queue, group, group_index, chord, priority) in stamps:
            own_root = root_id == uuid
            # What a group's members (or a producer's repeated sends) share, encoded once;
            # the types are in the key because 0 == False is one key, not one JSON text.
            key = (own_root, None if own_root else root_id, parent_id, name, argsrepr,
                   kwargsrepr, retries, type(retries), eta, expires, queue, group, chord,
                   priority, type(priority))
            parts = cache.get(key)
            if parts is None:
                q = j(queue)
                parts = cache[key] = (
                    "" if own_root else j(root_id),
                    f',"parent_id":{j(parent_id)},"name":{j(name)},"args":{j(argsrepr)},'
                    f'"kwargs":{j(kwargsrepr)},"retries":{j(retries)},"eta":{j(eta)},'
                    f'"expires":{j(expires)},"queue":{q},"exchange":"","routing_key":{q},'
                    f'"group":{j(group)},"group_index":',
                    f',"chord":{j(chord)},"priority":{j(priority)}}}')
            uid = j(uuid)
            out.append(
                f'{head}{clock},"timestamp":{float.__repr__(ts)},"type":"task-sent",'
                f'"uuid":{uid},"root_id":{uid if own_root else parts[0]}{parts[1]}'
                f'{j(group_index)}{parts[2]}')
        text = out[0] if len(out) == 1 else f"[{','.join(out)}]"
        return text.encode()

    def enqueue_with_sent(self, messages: Sequence[OutgoingMessage],
                          sent: list[tuple[Any, ...]]) -> None:
        """Enqueue ``messages`` and publish their ``task-sent`` events (from
        :meth:`task_sent`: stamped before the enqueue, so an event never looks younger
        than the worker's ``task-received``) as one event message, in one round trip
        where the transport can. The events are best-effort: their loss is logged.

        Raises:
            TransportError: the messages were not enqueued.
        """
        if not sent or not self.enabled:
            self.transport.enqueue_many(messages)
            return
        routing_key = "task.sent" if len(sent) == 1 else "task.multi"
        error = self.transport.enqueue_with_event(messages, routing_key,
                                                  lambda: self.sent_json(sent),
                                                  hostname=self.hostname)
        if error is not None:
            self.dropped += len(sent)
            logger.warning("event %s dropped: %s", routing_key, error)

    def send(self, type_: str, **fields: Any) -> None:
        """Send an event: task events are buffered, others published now."""
        is_task = type_.startswith("task-")
        if is_task and not self.enabled:
            return
        ev = self.event(type_, **fields)
        if not is_task or self.buffer_limit <= 0:
            self._publish(type_.replace("-", "."), ev)
            return
        self._buffer.append(ev)
        held = len(self._buffer)
        if held >= self.buffer_limit:
            # A worker flushes from its supervisor thread (``on_full``), so the threads
            # that run and settle tasks never wait for the broker on an event; inline
            # only when that thread falls far behind (a bounded buffer).
            if self.on_full is not None and held < 16 * self.buffer_limit:
                self.on_full()
            else:
                self.flush()

    def flush(self) -> None:
        """Publish buffered task events as one ``task.multi`` message."""
        buffer, batch = self._buffer, []
        try:
            for _ in range(len(buffer)):  # what is there now; later appends stay
                batch.append(buffer.popleft())
        except IndexError:  # a flush in another thread took the rest
            pass
        if batch:
            self._publish("task.multi", batch)

    def _publish(self, routing_key: str, body: Any) -> None:
        # Through enqueue_with_event (no messages) rather than publish_event: it takes
        # the sender's hostname instead of reading it back out of the JSON, and writes
        # raw on Redis.
        try:
            error = self.transport.enqueue_with_event(
                [], routing_key, codec.dumps_own(body), hostname=self.hostname)
        except (TqError, TypeError, ValueError) as exc:
            error = exc
        if error is not None:
            self.dropped += len(body) if isinstance(body, list) else 1
            logger.warning("event %s dropped: %s", routing_key, error)
