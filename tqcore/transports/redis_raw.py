"""Redis commands on the hot paths, written as packed RESP on kept connections.

redis-py's command layer (argument encoding, pool checkout with its metrics, retry
wrappers, response callbacks) costs about 45 µs of client CPU per call, three to four
times the cost of writing the same bytes and reading the reply on a connection held
by the caller (measured on the EVALSHA of an ack). The worker makes several such
calls per task (claim share, ack, events), so they go through :class:`RawLink`.

Connections are built from the client's pool settings (TLS, timeouts, credentials
alike), kept in a small free list, and dropped when the client is rebuilt (the
transport was closed, or this is a forked child: sockets are never shared). A
connection whose exchange failed midway is disconnected, never read from again.
Connection errors propagate as redis-py raises them, so
:meth:`~tqcore.transports.redis_client.RedisConnector.run` applies its retry policy.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import redis

_KEPT_CONNECTIONS = 8


def bulk(value: bytes | str | int | float) -> bytes:
    """One RESP bulk string."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif isinstance(value, int):
        value = b"%d" % value
    elif isinstance(value, float):
        value = repr(value).encode("ascii")
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*args: bytes | str | int | float) -> bytes:
    """One command in RESP, as redis-py would write it."""
    return b"*%d\r\n" % len(args) + b"".join([bulk(a) for a in args])


class Script:
    """A Lua script called with EVALSHA (loaded on the server when it is missing)."""

    __slots__ = ("source", "sha", "load")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest().encode("ascii")
        self.load = command("SCRIPT", "LOAD", source)

    def call(self, keys: list[str], args: list[Any]) -> bytes:
        """The packed EVALSHA of this script."""
        return command("EVALSHA", self.sha, len(keys), *keys, *args)


class RawLink:
    """Packed commands on connections kept beside a redis-py client's pool."""

    def __init__(self) -> None:
        self._free: list[Any] = []
        self._client: Any = None
        self._lock = threading.Lock()

    def exchange(self, client: Any, commands: list[bytes]) -> list[Any]:
        """Write ``commands`` at once and read a reply for each (a server error is
        returned in its place, as the exception instance, not raised)."""
        c = self.checkout(client)
        try:
            c.send_packed_command([b"".join(commands)])
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(c.read_response())
                except redis.ResponseError as exc:  # the reply was read: still in step
                    replies.append(exc)
        except BaseException:
            # Replies may be left unread: the connection must never be read from again.
            c.disconnect()
            raise
        self.checkin(client, c)
        return replies

    def script(self, client: Any, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script``; raises the server's error (loading the script if missing)."""
        [reply] = self.exchange(client, [script.call(keys, args)])
        if isinstance(reply, redis.exceptions.NoScriptError):
            # The server lost its scripts (restart, SCRIPT FLUSH): nothing ran.
            reply = self.exchange(client, [script.load, script.call(keys, args)])[1]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        """Disconnect the kept connections (one in use is dropped when returned)."""
        with self._lock:
            free, self._free, self._client = self._free, [], None
        for c in free:
            c.disconnect()

    def checkout(self, client: Any) -> Any:
        """A connection for the caller's exclusive use (give it back with :meth:`checkin`
        after reading every reply, or disconnect it)."""
        with self._lock:
            if client is not self._client:
                # A new client (closed and reopened, or a forked child): the old
                # connections are not to be used any more.
                old, self._free, self._client = self._free, [], client
            else:
                old = []
                if self._free:
                    return self._free.pop()
        for c in old:
            c.disconnect()
        pool = client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def checkin(self, client: Any, c: Any) -> None:
        """Keep ``c`` for the next caller (or drop it when enough are kept)."""
        with self._lock:
            if client is self._client and len(self._free) < _KEPT_CONNECTIONS:
                self._free.append(c)
                return
        c.disconnect()
