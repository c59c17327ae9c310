"""Sending events in Celery's shapes (celery-wire.md §1.8, §4.4).

Every event carries ``hostname, utcoffset, pid, clock, timestamp, type``; its routing
key is the type with ``-`` turned into ``.``. Task events are buffered and sent as one
``task.multi`` message holding a JSON list (at most ``buffer_limit`` events, or every
``flush`` call), as Celery workers do; worker events go out at once. Events are
best-effort: a broker error is logged and the batch dropped, never raised into a task.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from tqcore import codec
from tqcore.exceptions import TqError

if TYPE_CHECKING:
    from tqcore.transports.base import Transport

logger = logging.getLogger("tqcore.events")

BUFFER_LIMIT = 24


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
        self.clock = 0
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._offset = utcoffset()
        self.dropped = 0

    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        """An event dict with the common fields filled in."""
        with self._lock:
            self.clock += 1
            clock = self.clock
        ev = {"hostname": self.hostname, "utcoffset": self._offset, "pid": os.getpid(),
              "clock": clock, "timestamp": time.time(), "type": type_}
        ev.update(fields)
        return ev

    def send(self, type_: str, **fields: Any) -> None:
        """Send an event: task events are buffered, others published now."""
        is_task = type_.startswith("task-")
        if is_task and not self.enabled:
            return
        ev = self.event(type_, **fields)
        if not is_task or self.buffer_limit <= 0:
            self._publish(type_.replace("-", "."), ev)
            return
        with self._lock:
            self._buffer.append(ev)
            full = len(self._buffer) >= self.buffer_limit
        if full:
            self.flush()

    def emit(self, events: list[dict[str, Any]]) -> None:
        """Publish events already built with :meth:`event` (stamped earlier), as one
        message: a producer stamps ``task-sent`` before it enqueues, so the event never
        looks younger than the worker's ``task-received``."""
        if not events or (not self.enabled and str(events[0].get("type", "")).startswith("task-")):
            return
        if len(events) == 1:
            self._publish(str(events[0]["type"]).replace("-", "."), events[0])
        else:
            self._publish("task.multi", events)

    def flush(self) -> None:
        """Publish buffered task events as one ``task.multi`` message."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self._publish("task.multi", batch)

    def _publish(self, routing_key: str, body: Any) -> None:
        try:
            self.transport.publish_event(routing_key, codec.dumps(body).encode("utf-8"))
        except (TqError, TypeError, ValueError) as exc:
            self.dropped += len(body) if isinstance(body, list) else 1
            logger.warning("event %s dropped: %s", routing_key, exc)
