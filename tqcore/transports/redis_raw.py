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

**Posted commands** (:meth:`RawLink.post`, the worker's early acks) are written after
``CLIENT REPLY SKIP``: the server runs them and answers nothing, so the caller does not
wait a round trip and no reply is ever left unread (a process killed with unread input
would reset the connection, and could take its last writes with it; with none, its
socket closes after sending them). A posted command stays *unconfirmed* on its
connection until a later reply there shows the server has run everything before it
(Redis runs one connection's commands in order), a ``PING`` after every few, or when
:meth:`RawLink.confirm` is called. If the connection fails first, the unconfirmed
commands are sent again on a new one, so they must be idempotent, and they are sent
as ``EVAL`` with the script's text: a silent ``NOSCRIPT`` after a server restart would
otherwise lose them. A server (or proxy, or ACL) that refuses ``CLIENT REPLY`` is found
out by a probe on first use; posted commands then wait for their answers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

import redis

logger = logging.getLogger("tqcore.transport.redis")

_KEPT_CONNECTIONS = 8
_CONFIRM_EVERY = 32  # posted commands a connection holds unconfirmed at most
_MAX_ORPHANS = 10_000  # posted commands kept while Redis cannot be reached


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

    def call_with_source(self, keys: list[str], args: list[Any]) -> bytes:
        """The packed EVAL of this script (never ``NOSCRIPT``)."""
        return self.eval_head(keys, len(args)) + b"".join([bulk(a) for a in args])

    def eval_head(self, keys: list[str], nargs: int) -> bytes:
        """The packed EVAL of this script up to its ``nargs`` arguments (to be kept
        by a caller that sends it with the same keys again and again)."""
        return b"".join([b"*%d\r\n" % (3 + len(keys) + nargs), bulk("EVAL"), bulk(self.source),
                         bulk(len(keys)), *[bulk(k) for k in keys]])


_SKIP = command("CLIENT", "REPLY", "SKIP")
_PING = command("PING")


class RawLink:
    """Packed commands on connections kept beside a redis-py client's pool."""

    def __init__(self) -> None:
        self._free: list[Any] = []
        self._client: Any = None
        self._lock = threading.Lock()
        self._orphans: list[bytes] = []
        self._skips: bool | None = None  # CLIENT REPLY SKIP honoured (None: not asked yet)

    def exchange(self, client: Any, commands: list[bytes]) -> list[Any]:
        """Write ``commands`` at once and read a reply for each (a server error is
        returned in its place, as the exception instance, not raised)."""
        c = self.checkout(client)
        orphans: list[bytes] = []
        if self._orphans:  # posted commands a failed connection could not resend: first
            with self._lock:
                orphans, self._orphans = self._orphans, []
            commands = orphans + commands
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
            self._orphan(orphans)
            self.drop(client, c)
            raise
        self.confirmed(c)  # a reply came: the server ran everything before it
        self.checkin(client, c)
        return replies[len(orphans):]

    def _orphan(self, commands: list[bytes]) -> None:
        """Keep posted commands no connection could deliver, for the next exchange."""
        if commands:
            with self._lock:
                self._orphans[:0] = commands
                del self._orphans[_MAX_ORPHANS:]

    def post(self, client: Any, packed: bytes) -> None:
        """Write one idempotent command (an ``EVAL``) with its reply switched off, and
        return without waiting for the server (see the module docstring). Where the
        server (or a proxy, or an ACL) refuses ``CLIENT REPLY``, the command is run and
        its answer read, as :meth:`exchange` does.

        Raises:
            redis.RedisError: the connection failed (the command is the caller's to
                retry), or, when it was run and read, the server's error.
        """
        if self._skips is None:
            self._skips = self._probe(client)
        if not self._skips:
            [reply] = self.exchange(client, [packed])
            if isinstance(reply, Exception):
                raise reply
            return
        c = self.checkout(client)
        try:
            c.send_packed_command([_SKIP + packed])
        except BaseException:
            self.drop(client, c)  # this command is the caller's to retry
            raise
        pending = getattr(c, "tq_unconfirmed", None)
        if pending is None:
            pending = c.tq_unconfirmed = []
        pending.append(packed)
        if len(pending) >= _CONFIRM_EVERY and not self._confirm(client, c):
            return
        self.checkin(client, c)

    def _probe(self, client: Any) -> bool:
        """Whether the server honours ``CLIENT REPLY SKIP``: after it, of two PINGs only
        the second answers; a server that refuses it answers all three."""
        c = self.checkout(client)
        try:
            c.send_packed_command([_SKIP + _PING + _PING])
            try:
                c.read_response()
            except redis.ResponseError:  # refused (unknown command, ACL, proxy)
                c.read_response()
                c.read_response()
                logger.info("Redis refuses CLIENT REPLY: acks wait for their answer")
                self.checkin(client, c)
                return False
        except BaseException:
            c.disconnect()  # out of step, or gone: not to be read again
            raise
        self.checkin(client, c)
        return True

    def confirm(self, client: Any) -> None:
        """Make sure the server ran every posted command of the kept connections
        (each is sent again on a new connection if its own has failed)."""
        with self._lock:
            if client is not self._client:
                return
            waiting = [c for c in self._free if getattr(c, "tq_unconfirmed", None)]
            self._free = [c for c in self._free if not getattr(c, "tq_unconfirmed", None)]
        for c in waiting:
            if self._confirm(client, c):
                self.checkin(client, c)
        if self._orphans:
            self.exchange(client, [])  # raises while Redis is still away: kept

    def _confirm(self, client: Any, c: Any) -> bool:
        """PING on ``c``: its posted commands are run once the answer comes. False when
        the connection failed (dropped, its commands sent again)."""
        try:
            c.send_packed_command([_PING])
            c.read_response()
        except Exception:  # noqa: BLE001 - any failure: the commands go on a new link
            self.drop(client, c)
            return False
        c.tq_unconfirmed = None
        return True

    def drop(self, client: Any, c: Any) -> None:
        """Disconnect ``c`` (checked out, its replies out of step); send its unconfirmed
        posted commands again on a new connection, waiting for their answers (kept for
        the next exchange if that fails too)."""
        pending = getattr(c, "tq_unconfirmed", None)
        c.tq_unconfirmed = None
        c.disconnect()
        if not pending:
            return
        try:
            self.exchange(client, pending)
        except Exception as exc:  # noqa: BLE001 - kept for the next exchange
            logger.warning("%d posted command(s) wait for Redis: %s", len(pending), exc)
            self._orphan(pending)

    def script(self, client: Any, script: Script, keys: Sequence[str] = (),
               args: Sequence[Any] = (), *, packed: bytes | None = None,
               before: Sequence[bytes] = ()) -> Any:
        """Run ``script`` with ``keys`` and ``args`` (or its call ``packed`` already);
        raises the server's error (loading the script if missing). ``before``: commands
        written ahead of it in the same write, their replies dropped (a blocking wait,
        so the script runs the moment it returns)."""
        call = packed if packed is not None else script.call(list(keys), list(args))
        reply = self.exchange(client, [*before, call])[-1]
        if isinstance(reply, redis.exceptions.NoScriptError):
            # The server lost its scripts (restart, SCRIPT FLUSH): nothing ran.
            reply = self.exchange(client, [script.load, call])[1]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        """Confirm posted commands, then disconnect the kept connections (one in use is
        dropped when returned)."""
        with self._lock:
            client, free, self._free = self._client, self._free, []
        if client is not None:
            for c in free:
                if getattr(c, "tq_unconfirmed", None):
                    self._confirm(client, c)  # a failed one is dropped, its posts resent
            if self._orphans:
                try:
                    self.exchange(client, [])
                except Exception as exc:  # noqa: BLE001 - closing: the leases recover them
                    logger.warning("closing with posted command(s) undelivered: %s", exc)
        with self._lock:
            free, self._free, self._client = free + self._free, [], None
            self._orphans = []
        for c in free:
            c.disconnect()

    def checkout(self, client: Any) -> Any:
        """A connection for the caller's exclusive use (give it back with :meth:`checkin`
        after reading every reply, or disconnect it)."""
        with self._lock:
            if client is not self._client:
                # A new client (closed and reopened, or a forked child): the old
                # connections are not to be used any more, nor the parent's orphans.
                old, self._free, self._client = self._free, [], client
                self._orphans, self._skips = [], None
            else:
                old = []
                if self._free:
                    return self._free.pop()
        for c in old:
            c.disconnect()
        pool = client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def confirmed(self, c: Any) -> None:
        """A reply was read on ``c``: the server ran every command posted before it."""
        c.tq_unconfirmed = None

    def checkin(self, client: Any, c: Any) -> None:
        """Keep ``c`` for the next caller (or drop it when enough are kept)."""
        with self._lock:
            if client is self._client and len(self._free) < _KEPT_CONNECTIONS:
                self._free.append(c)
                return
        c.disconnect()
