"""The life of one long-lived Redis pub/sub connection, for :mod:`.redis_waiter`.

:class:`PubSubLink` opens the connection lazily (the first user's thread opens it, so
the common case pays no thread hop), replaces it after a failure from a background
thread with jittered backoff for as long as somebody still needs it, PINGs it when it
has been quiet for ``health_check_interval`` and gives it up when the PONG is late, and
forgets it in a forked child (the child must never read or shut down the parent's
socket). What is subscribed, and who is woken, is the subclass's business: it is told
through :meth:`PubSubLink._on_open` and :meth:`PubSubLink._on_drop`.

Every attribute is guarded by ``_lock``; methods documented "Lock held" expect it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from typing import Any

from tqcore.transports.redis_client import RedisConnector

logger = logging.getLogger("tqcore.redis")

_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 2.0

#: Every link of this process, reset in a forked child (see :func:`_after_fork`).
_LINKS: weakref.WeakSet[PubSubLink] = weakref.WeakSet()


class PubSubLink:
    """One subscribed connection, its replacement after failures, and its health.

    Args:
        connector: the backend's connector; its pool's settings open the connection.
    """

    def __init__(self, connector: RedisConnector) -> None:
        self._connector = connector
        self._reset()
        _LINKS.add(self)

    def _reset(self) -> None:
        """Start from nothing (at creation, and in a forked child)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._conn: Any = None  # a redis-py Connection in subscribed mode
        #: the replies expected for what was sent (``subscribe``/``unsubscribe`` per
        #: channel, ``pong``), in order, each with what the subclass wants back
        self._replies: deque[tuple[bytes, Any]] = deque()
        self._epoch = 0  # counts losses of the connection
        self._connecting = False
        self._retry_at = 0.0  # 0: connect on first need; else reconnect from then on
        self._backoff = _BACKOFF_FIRST
        self._last_rx = 0.0  # when the connection last gave us anything
        self._ping_at = 0.0  # when an unanswered PING was sent (0: none)
        self._health = 0.0  # PING a connection quiet for this long (0: never)
        self._ping_timeout = 5.0  # and give it up when the PONG is this late

    # -- the subclass's part (lock held) -------------------------------------------
    def _on_open(self) -> None:
        """A new connection is installed: subscribe what is needed."""

    def _on_drop(self) -> None:
        """The connection is gone: nothing is subscribed any more."""

    def _wanted(self) -> bool:
        """True while a connection is needed (reconnects stop otherwise)."""
        return False

    # -- use -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection; the next need opens a new one."""
        with self._lock:
            conn = self._conn
            if conn is not None:
                self._drop(conn)
                self._retry_at = 0.0

    def _ensure(self) -> None:
        """Make sure a connection is open or on its way: the first one opened right
        here, in the caller's thread; a replacement in the background."""
        with self._lock:
            if self._conn is not None or self._connecting:
                return
            if self._retry_at:
                self._start_reconnect()
                return
            self._connecting = True
        try:
            self._open()
        finally:
            with self._lock:
                self._connecting = False

    def _send(self, conn: Any, commands: list[tuple[Any, ...]]) -> None:
        """Write ``commands`` in one packet; a failure ends the connection. Lock held."""
        try:
            if not conn.is_connected:  # redis-py would silently open a fresh socket
                raise ConnectionError("pub/sub connection closed")
            conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        except Exception as exc:  # noqa: BLE001 - any failure ends this connection
            self._lost(conn, exc)

    def _ping(self, conn: Any, now: float) -> None:
        """Check a quiet connection: PING it, and give it up when the PONG is late."""
        with self._lock:
            if self._conn is not conn:
                return
            if not self._ping_at:
                self._ping_at = now
                self._replies.append((b"pong", None))
                self._send(conn, [("PING",)])
            elif now - self._ping_at > self._ping_timeout:
                self._lost(conn, TimeoutError("no reply to PING"))

    # -- (re)connecting ------------------------------------------------------------
    def _open(self) -> bool:
        """Open and install a connection, or schedule the next try. The caller holds
        the ``_connecting`` flag."""
        try:
            pool = self._connector.client.connection_pool
            kwargs = dict(pool.connection_kwargs)
            health = float(kwargs.get("health_check_interval") or 0)
            # redis-py's own health check would send a PING and expect a plain PONG,
            # which a subscribed connection does not give: ours is _ping.
            kwargs["health_check_interval"] = 0
            conn = pool.connection_class(**kwargs)
            conn.connect()
        except Exception as exc:  # noqa: BLE001 - reported; users poll meanwhile
            with self._lock:
                self._failed(exc)
            return False
        with self._lock:
            if self._pid != os.getpid():  # forked meanwhile: this socket is the parent's
                return False
            self._conn, self._backoff, self._health = conn, _BACKOFF_FIRST, health
            self._ping_timeout = float(kwargs.get("socket_timeout") or 5.0)
            self._last_rx, self._ping_at = time.monotonic(), 0.0
            self._replies.clear()
            self._on_open()
        return True

    def _start_reconnect(self) -> None:
        """Reconnect in the background (users poll meanwhile). Lock held."""
        if self._connecting or self._conn is not None:
            return
        self._connecting = True
        threading.Thread(target=self._reconnect, name="tqcore-pubsub-reconnect",
                         daemon=True).start()

    def _reconnect(self) -> None:
        # Retries with backoff while the connection is wanted (the next need starts
        # it again).
        try:
            while True:
                with self._lock:
                    if self._conn is not None or self._pid != os.getpid() or \
                            not self._wanted():
                        return
                    delay = self._retry_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if self._open():
                    return
        finally:
            with self._lock:
                self._connecting = False

    def _failed(self, exc: BaseException) -> None:
        """Opening or keeping the connection failed: back off. Lock held."""
        self._epoch += 1
        self._retry_at = time.monotonic() + self._backoff * random.uniform(0.5, 1.0)
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        logger.warning("%s: result pub/sub connection failed (%s); polling results until "
                       "it is back", self._connector.display_url, exc)

    def _lost(self, conn: Any, exc: BaseException) -> None:
        """``conn`` failed: drop it, and reconnect in the background. Lock held."""
        if self._conn is not conn:
            return  # (already dropped)
        self._drop(conn)
        self._failed(exc)
        self._start_reconnect()

    def _drop(self, conn: Any) -> None:
        self._conn = None
        self._epoch += 1
        self._replies.clear()
        self._on_drop()
        with contextlib.suppress(Exception):
            conn.disconnect()  # (a thread reading it gets an error, and returns)


def _after_fork() -> None:
    # The child has one thread and the parent's sockets: start from scratch. redis-py
    # only closes (never shuts down) a connection made in another process, so the
    # parent's socket stays usable; the child's copy goes with the garbage.
    for link in list(_LINKS):
        link._reset()


os.register_at_fork(after_in_child=_after_fork)
