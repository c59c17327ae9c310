"""Enqueueing on Redis in one round trip: the ENQUEUE script calls and, pipelined behind
them, the producer's ``task-sent`` event (``PUBLISH`` on ``celeryev`` + ``XADD`` to the
``tq:events`` history), exactly as :meth:`RedisChannels.publish_event` sends it. For a
single message both go in one write; for a batch the event message (one ``task.multi``)
is built and written while the server already runs the script.

The commands are packed here (RESP) and written on the transport's kept connections
(:mod:`tqcore.transports.redis_raw`), because the producer's cost is per call:
redis-py's command layer (argument encoding, pool checkout with its metrics, pipeline
bookkeeping) took about three times the client CPU of writing the same bytes, and a
redis-py pipeline holding a script first sends ``SCRIPT EXISTS``, a second round trip.

Retries: :meth:`~tqcore.transports.redis_client.RedisConnector.run` retries a lost
connection; the retried write sets the ENQUEUE script's retry flag (ids already
enqueued are skipped) and leaves the event out: an event is published at most once,
as :meth:`publish_event` does, and its loss is reported, never raised.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

from tqcore.exceptions import ConnectionLost
from tqcore.message import uuid4
from tqcore.transports import redis_scripts as lua
from tqcore.transports.base import OutgoingMessage
from tqcore.transports.redis_envelope import envelope_parts, event_hostname, prepare, step_index
from tqcore.transports.redis_raw import bulk, command

if TYPE_CHECKING:
    from tqcore.transports.redis import RedisTransport

#: Messages per ENQUEUE call: one call blocks the server while it runs.
BATCH = 1000
_SHA = hashlib.sha1(lua.ENQUEUE.encode("utf-8")).hexdigest().encode("ascii")
_STEPS = [b"$1\r\n%d\r\n" % i for i in range(4)]
_RETRY = {False: b"$1\r\n0\r\n", True: b"$1\r\n1\r\n"}
_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"
#: From this many messages on, the event is made after the script calls are written:
#: the server runs them meanwhile. For fewer, one write of both is quicker.
_OVERLAP_MIN = 32


_SCRIPT_LOAD = command("SCRIPT", "LOAD", lua.ENQUEUE)
#: A packed command, whole or in pieces (written in order, never copied together when
#: large: a group's script calls and event are megabytes).
Packed = bytes | list[bytes]
#: Event commands to send with the script calls: packed, or a function packing them.
Extra = list[Packed] | Callable[[], list[Packed]] | None
#: Pieces this large are written as they are; smaller ones are joined into one write.
_BIG = 1 << 16


def _writes(commands: list[Packed]) -> list[bytes]:
    """The buffers to write for ``commands``: small pieces joined, large ones alone."""
    out: list[bytes] = []
    small: list[bytes] = []
    for cmd in commands:
        for piece in cmd if isinstance(cmd, list) else (cmd,):
            if len(piece) < _BIG:
                small.append(piece)
                continue
            if small:
                out.append(b"".join(small))
                small = []
            out.append(piece)
    if small:
        out.append(b"".join(small))
    return out


class RedisProducer:
    """The enqueue path of one :class:`~tqcore.transports.redis.RedisTransport`."""

    def __init__(self, transport: RedisTransport) -> None:
        self.transport = transport
        self.conn = transport.conn
        self._heads: dict[str, bytes] = {}  # per queue: the packed keys and queue name
        self._event_cache: dict[tuple[str, str | None],
                                tuple[bytes, bytes, bytes, tuple[bytes, bytes] | None]] = {}
        self._raw = transport._raw  # the transport's kept connections (redis_raw)
        self._loaded: Any = None  # the client whose server has the script loaded

    # -- public ----------------------------------------------------------------------
    def send(self, messages: Sequence[OutgoingMessage],
             event: tuple[str, bytes | Callable[[], bytes], str | None] | None = None
             ) -> Exception | None:
        """Enqueue ``messages`` and publish ``event`` (routing key, body or a function
        making it, hostname).

        Returns:
            None, or the error that lost the event.

        Raises:
            TransportError: the messages were not enqueued.
        """
        calls = self._calls(messages)
        extra: Extra = None
        if event is not None:
            routing_key, body, hostname = event

            def make() -> list[Packed]:
                data = body() if callable(body) else body
                return self._event_commands(routing_key, data, hostname)

            if len(messages) >= _OVERLAP_MIN:
                extra = make  # made while the server runs the script calls
            else:  # few messages: one write of both is quicker
                try:
                    extra = make()
                except (TypeError, ValueError) as exc:  # a field JSON cannot carry
                    self.send(messages)
                    return exc
        if not calls and extra is None:
            return None
        attempts = itertools.count(1)

        def run(client: Any) -> Exception | None:
            # A retry skips ids already enqueued (the script's retry flag) and leaves the
            # event out: it is published at most once, as publish_event does.
            retry = next(attempts) > 1
            return self._write(client, calls, retry, None if retry else extra)

        error = self.conn.run("enqueue", run)
        if isinstance(error, redis.RedisError):
            return self.conn.translate(error, "publish event")
        if error is None and extra is not None and next(attempts) > 2:
            return ConnectionLost("the connection was lost; the event was not sent again")
        return error

    def close(self) -> None:
        """Forget what this connection's server was told (the transport closes the
        kept connections themselves)."""
        self._loaded = None

    # -- packing -----------------------------------------------------------------------
    def _head(self, queue: str) -> bytes:
        head = self._heads.get(queue)
        if head is None:
            t = self.transport
            keys = [*t._lists(queue), t._qkey("eta", queue), t._qkey("msgs", queue),
                    t._qkey("meta", queue), t._k("tq:queues"), t._qkey("wake", queue),
                    t._qkey("acked", queue)]
            head = bulk(_SHA) + bulk(len(keys)) + b"".join([bulk(k) for k in keys]) + bulk(queue)
            if len(self._heads) > 1000:  # bounded: queue names may be many and short-lived
                self._heads.clear()
            self._heads[queue] = head
        return head

    def _calls(self, messages: Sequence[OutgoingMessage]) -> list[tuple[int, bytes, list[bytes]]]:
        """Per script call: (argument count, packed keys and queue, packed messages)."""
        by_queue: dict[str, list[bytes]] = {}
        for m in messages:
            if m.delivery_tag is not None:  # an envelope tqcore built (prepare()'s answer)
                tag, element = m.delivery_tag, m.payload
            else:
                tag, element = prepare(m)
            eta_ms = int(m.eta * 1000) if m.eta is not None else 0
            parts = by_queue.get(m.queue)
            if parts is None:
                parts = by_queue[m.queue] = []
            parts += (_STEPS[step_index(m.priority)], bulk(tag), bulk(eta_ms),
                      b"$%d\r\n" % len(element), element, b"\r\n")
        t = self.transport
        for queue in by_queue:
            if queue not in t._declared:
                t.declare_queue(queue)
        calls = []
        for queue, parts in by_queue.items():
            head = self._head(queue)
            for i in range(0, len(parts), 6 * BATCH):
                chunk = parts[i:i + 6 * BATCH]
                # EVALSHA sha numkeys 10 keys, queue, retry, then 4 per message
                calls.append((1 + 1 + 1 + 10 + 1 + 1 + len(chunk) // 6 * 4, head, chunk))
        return calls

    def _event_commands(self, routing_key: str, body: bytes, hostname: str | None
                        ) -> list[Packed]:
        """``PUBLISH`` + ``XADD``, as :meth:`RedisChannels.publish_event` sends them
        (in pieces: the body is not copied into them)."""
        host = hostname if hostname is not None else event_hostname(body)
        publish, before, after, xadd = self._event_parts(routing_key, host)
        tag = uuid4().encode()
        encoded = base64.b64encode(body)
        tail = b"".join([after, b'"', tag, b'"}}\r\n'])
        size = len(before) + len(encoded) + len(tail) - 2
        out: list[Packed] = [[b"".join([publish, b"$%d\r\n" % size, before]), encoded, tail]]
        if xadd is not None:
            out.append([b"".join([xadd[0], b"$%d\r\n" % len(tag), tag, b"\r\n", xadd[1],
                                  b"$%d\r\n" % len(body)]), body, b"\r\n"])
        return out

    def _event_parts(self, routing_key: str, host: str | None
                     ) -> tuple[bytes, bytes, bytes, tuple[bytes, bytes] | None]:
        """What the event commands of ``routing_key`` from ``host`` have in common: the
        packed PUBLISH head, the envelope's text around its body, the XADD around its tag."""
        parts = self._event_cache.get((routing_key, host))
        if parts is None:
            channel = self.transport._channel(f"celeryev/{routing_key}")
            kept = self.conn.limits["events_kept"]
            xadd = None
            if kept > 0:  # XADD key MAXLEN ~ kept * tag <tag> rk <rk> body <body>
                pre = ("XADD", self.conn.key("tq:events"), "MAXLEN", "~", kept, "*", "tag")
                mid = ("rk", routing_key, "body")
                xadd = (b"*%d\r\n" % (len(pre) + 1 + len(mid) + 1)
                        + b"".join([bulk(a) for a in pre]), b"".join([bulk(a) for a in mid]))
            before, after = envelope_parts({"hostname": host} if host else {}, "celeryev",
                                           routing_key)
            if len(self._event_cache) > 100:
                self._event_cache.clear()
            parts = self._event_cache[(routing_key, host)] = (
                b"*3\r\n" + bulk("PUBLISH") + bulk(channel), before, after, xadd)
        return parts

    # -- the round trip ------------------------------------------------------------------
    def _write(self, client: Any, calls: list[tuple[int, bytes, list[bytes]]], retry: bool,
               extra: Extra) -> Exception | None:
        """One round trip: the script calls, and the event commands ``extra``.

        Returns:
            The event's error, or None.

        Raises:
            redis.RedisError: the enqueue failed.
        """
        flag = _RETRY[retry]
        evals: list[Packed] = [[b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (n, head, flag),
                                b"".join(chunk)] for n, head, chunk in calls]
        if len(evals) == 1:
            # A client's first call loads the script in the same write (no NOSCRIPT trip).
            load: list[Packed] = [] if client is self._loaded else [_SCRIPT_LOAD]
            replies, error = self._exchange(client, load + evals, extra)
            del replies[:len(load)]
            self._loaded = client
            if isinstance(replies[0], redis.exceptions.NoScriptError):
                # The server lost its scripts (restart, SCRIPT FLUSH): nothing ran.
                replies[:1] = self._exchange(client, [_SCRIPT_LOAD, *evals], None)[0][1:]
            if isinstance(replies[0], Exception):
                raise replies[0]
            rest = replies[1:]
        elif evals:
            # Several calls (queues, or more than BATCH messages) are one transaction, as
            # a redis-py pipeline would send them; the script is loaded first so that no
            # call in it can fail for want of it.
            replies, error = self._exchange(client, [_SCRIPT_LOAD, _MULTI, *evals, _EXEC],
                                            extra)
            done = replies[2 + len(evals)]
            for r in [replies[0], replies[1], *replies[2:2 + len(evals)], done,
                      *(done if isinstance(done, list) else [])]:
                if isinstance(r, Exception):
                    raise r
            rest = replies[3 + len(evals):]
        else:
            rest, error = self._exchange(client, [], extra)
        return error or next((r for r in rest if isinstance(r, Exception)), None)

    def _exchange(self, client: Any, commands: list[Packed], extra: Extra
                  ) -> tuple[list[Any], Exception | None]:
        """Write ``commands`` and ``extra`` and read a reply (or its error) for each.

        ``extra`` given as a function is called after ``commands`` are written (the
        server works on them meanwhile) and its commands written next.

        Returns:
            (the replies, the TypeError/ValueError of ``extra()`` if it raised).
        """
        c = self._raw.checkout(client)
        error: Exception | None = None
        try:
            if isinstance(extra, list):
                commands = commands + extra
            if commands:
                c.send_packed_command(_writes(commands))
            n = len(commands)
            if callable(extra):
                try:
                    more = extra()
                except (TypeError, ValueError) as exc:  # an event field JSON cannot carry
                    more, error = [], exc
                if more:
                    c.send_packed_command(_writes(more))
                    n += len(more)
            replies: list[Any] = []
            for _ in range(n):
                try:
                    replies.append(c.read_response())
                except redis.ResponseError as exc:  # the reply was read: the stream is in step
                    replies.append(exc)
        except BaseException:
            # Replies may be left unread: the connection must never be read from again
            # (and acks posted on it before are sent again, see redis_raw).
            self._raw.drop(client, c)
            raise
        if n:
            self._raw.confirmed(c)
        self._raw.checkin(client, c)
        return replies, error
