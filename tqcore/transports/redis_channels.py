"""Events and remote control of the Redis broker, in Celery's shapes (celery-wire.md §4.4-4.5).

Events
    ``PUBLISH <prefix>/<db>.celeryev/<routing key>`` of a kombu envelope (body base64
    JSON, ``headers={"hostname": ...}``, ``delivery_mode=1``): what a Celery worker
    sends, so Flower and ``celery events`` see tqcore workers and tqmon sees Celery's.
    Each event is also appended to the capped stream ``tq:events`` (fields ``tag``,
    ``rk``, ``body``) so ``subscribe_events(replay=seconds)`` can rewind; subscribers
    ``PSUBSCRIBE <prefix>/<db>.celeryev/*``.
Control
    commands: ``PUBLISH <prefix>/<db>.celery.pidbox`` (headers ``clock`` and
    ``expires``), received with ``PSUBSCRIBE`` like a Celery worker's mailbox; expired
    commands are dropped on receipt. Replies: ``LPUSH <prefix><oid>.reply.celery.pidbox``
    with ``headers.ticket`` of the command; the client ``BRPOP``s that list and its
    three priority lists. A command that wants replies first adds the reply binding a
    Celery client adds (``SADD _kombu.binding.reply.celery.pidbox
    "<oid>SEPSEP<oid>.reply.celery.pidbox"`` + ``ZADD _kombu.binding_deadlines GT``) so
    Celery workers know where to reply; tqcore forgets its own bindings after the
    command's ttl (``tq:reply-bindings`` ZSET).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

from tqcore.transports import redis_scripts as lua
from tqcore.transports import redis_scripts_admin as lua_admin
from tqcore.transports.base import OutgoingMessage, Subscription
from tqcore.transports.redis_envelope import SEP, envelope, event_hostname, open_envelope
from tqcore.transports.redis_producer import RedisProducer
from tqcore.transports.redis_raw import RawLink, Script

if TYPE_CHECKING:
    from tqcore.transports.redis_client import RedisConnector

logger = logging.getLogger("tqcore.redis")
_REPLY_SUFFIX = ".reply.celery.pidbox"
_MAX_BATCH = 5000
_SCRIPTS: dict[str, Script] = {}


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class _PubSubSubscription(Subscription):
    """Bodies of the envelopes published on channels matching ``pattern``."""

    def __init__(self, conn: RedisConnector, pattern: str, *,
                 control: RedisChannels | None) -> None:
        self.conn = conn
        self.control = control
        self.pending: list[bytes] = []
        self.skip: set[str] = set()
        self.closed = False
        self.pubsub = conn.pubsub()
        try:
            self.pubsub.psubscribe(pattern)
            # Wait for the confirmation: a publish after we return must reach us.
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                msg = self.pubsub.get_message(timeout=0.5)
                if msg is not None and msg["type"] == "psubscribe":
                    break
        except redis.RedisError as exc:
            self.close()
            raise conn.translate(exc, "subscribe") from exc

    def _accept(self, raw: bytes) -> bytes | None:
        opened = open_envelope(raw)
        if opened is None:
            logger.warning("non-kombu message ignored on %s", self.conn.display_url)
            return None
        body, headers, props = opened
        if self.skip and props.get("delivery_tag") in self.skip:
            return None  # already delivered from the history stream
        if self.control is not None:
            expires = headers.get("expires")
            if isinstance(expires, int | float) and expires and expires < time.time():
                return None
            self.control._remember_ticket(body)
        return body

    def get(self, timeout: float) -> list[bytes]:
        if self.closed:  # closed (with its transport): nothing arrives any more
            time.sleep(max(0.0, timeout))
            return []
        out, self.pending = self.pending, []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < _MAX_BATCH:
                wait = 0.0 if out else max(0.0, deadline - time.monotonic())
                msg = self.pubsub.get_message(timeout=wait)
                if msg is None:
                    if out or time.monotonic() >= deadline:
                        break
                    continue
                if msg["type"] != "pmessage":
                    continue
                body = self._accept(msg["data"])
                if body is not None:
                    out.append(body)
        except (redis.RedisError, OSError, AttributeError, ValueError) as exc:
            if self.closed:
                return out
            # AttributeError/ValueError: redis-py's reader after the socket was closed
            # under it (the transport closed from another thread).
            err = exc if isinstance(exc, redis.RedisError) else redis.ConnectionError(
                f"subscription closed: {exc!r}")
            raise self.conn.translate(err, "receive") from exc
        return out

    def close(self) -> None:
        self.closed = True
        try:
            self.pubsub.close()
        except redis.RedisError:
            pass


class RedisChannels:
    """Mixin giving :class:`~tqcore.transports.redis.RedisTransport` its channels."""

    conn: RedisConnector
    _raw: RawLink

    def _eval(self, what: str, name: str, keys: list[str], args: Sequence[Any] = (), *,
              idempotent: bool = True) -> Any:
        """Run the Lua script ``name`` of :mod:`tqcore.transports.redis_scripts`, packed
        on the transport's kept connections (:mod:`tqcore.transports.redis_raw`)."""
        script = self._script(name)
        return self.conn.run(what, lambda c: self._raw.script(c, script, keys, list(args)),
                             idempotent=idempotent)

    @staticmethod
    def _script(name: str) -> Script:
        """The Lua script ``name`` of :mod:`tqcore.transports.redis_scripts` (or of
        :mod:`tqcore.transports.redis_scripts_admin`)."""
        script = _SCRIPTS.get(name)
        if script is None:
            source = getattr(lua, name, None) or getattr(lua_admin, name)
            script = _SCRIPTS[name] = Script(source)
        return script

    def _init_channels(self) -> None:
        self._producer = RedisProducer(self)  # type: ignore[arg-type]  # a RedisTransport
        self._clock = itertools.count(1)
        self._tickets: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._subscriptions: list[_PubSubSubscription] = []

    def _track(self, sub: _PubSubSubscription) -> None:
        """Remember ``sub`` so :meth:`close` releases its connection."""
        self._subscriptions = [s for s in self._subscriptions if not s.closed] + [sub]

    def _close_channels(self) -> None:
        self._producer.close()
        subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            sub.close()

    def _channel(self, name: str) -> str:
        return f"{self.conn.prefix}/{self.conn.db}.{name}"

    # -- events ----------------------------------------------------------------------
    def enqueue_with_event(self, messages: Sequence[OutgoingMessage], routing_key: str,
                           body: bytes | Callable[[], bytes], *,
                           hostname: str | None = None) -> Exception | None:
        """Enqueue ``messages`` and publish the event in one round trip (see
        :mod:`tqcore.transports.redis_producer`)."""
        return self._producer.send(messages, (routing_key, body, hostname))

    def publish_event(self, routing_key: str, body: bytes) -> None:
        host = event_hostname(body)
        tag = str(uuid.uuid4())
        env = envelope(body, {"hostname": host} if host else {}, "celeryev", routing_key, tag=tag)

        kept = self.conn.limits["events_kept"]

        def run(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.publish(self._channel(f"celeryev/{routing_key}"), env)
            if kept > 0:
                pipe.xadd(self.conn.key("tq:events"), {"tag": tag, "rk": routing_key,
                                                       "body": body},
                          maxlen=kept, approximate=True)
            pipe.execute()

        self.conn.run("publish event", run, idempotent=False)

    def subscribe_events(self, *, replay: float | None = None) -> Subscription:
        pattern = _glob_escape(self._channel("celeryev/")) + "*"
        sub = _PubSubSubscription(self.conn, pattern, control=None)
        if replay:
            # Subscribed first, then read history: nothing falls between the two, and
            # what is in both is delivered once (by tag).
            try:
                sec, usec = self.conn.run("TIME", lambda c: c.time())
                since = int(sec) * 1000 + int(usec) // 1000 - int(replay * 1000)
                entries = self.conn.run("replay events", lambda c: c.xrange(
                    self.conn.key("tq:events"), min=str(max(0, since)), max="+",
                    count=max(1, self.conn.limits["events_kept"])))
            except BaseException:
                sub.close()
                raise
            sub.pending = [f[b"body"] for _, f in entries]
            sub.skip = {f[b"tag"].decode() for _, f in entries}
        self._track(sub)
        return sub

    # -- control ---------------------------------------------------------------------
    def _remember_ticket(self, body: bytes) -> None:
        """Keep the ticket of a command that wants replies: :meth:`send_reply` carries it
        in ``headers.ticket``, which a Celery client matches."""
        try:
            cmd = json.loads(body)
            ticket, key = cmd.get("ticket"), (cmd.get("reply_to") or {}).get("routing_key")
        except (ValueError, AttributeError, RecursionError):
            return
        if isinstance(ticket, str) and isinstance(key, str):
            self._tickets[key] = ticket
            while len(self._tickets) > 1000:
                self._tickets.popitem(last=False)

    def broadcast_control(self, body: bytes, *, ttl: float = 300.0) -> None:
        try:
            cmd = json.loads(body)
            reply_key = (cmd.get("reply_to") or {}).get("routing_key")
        except (ValueError, AttributeError, RecursionError):
            reply_key = None
        if isinstance(reply_key, str) and reply_key:
            member = f"{reply_key}{SEP}{SEP}{reply_key}{_REPLY_SUFFIX}"
            keys = [self.conn.key("_kombu.binding.reply.celery.pidbox"),
                    self.conn.key("tq:reply-bindings"), self.conn.key("_kombu.binding_deadlines")]
            args = [member, int(ttl * 1000), "reply.celery.pidbox"]
            self._eval("bind reply queue", "REPLY_BINDING", keys, args)
        headers = {"clock": next(self._clock), "expires": time.time() + ttl}
        env = envelope(body, headers, "celery.pidbox", "", delivery_mode=2)
        channel = self._channel("celery.pidbox")
        self.conn.run("broadcast control", lambda c: c.publish(channel, env), idempotent=False)

    def subscribe_control(self, node: str) -> Subscription:
        pattern = _glob_escape(self._channel("celery.pidbox"))
        sub = _PubSubSubscription(self.conn, pattern, control=self)
        self._track(sub)
        return sub

    def _reply_keys(self, reply_to: str) -> list[str]:
        base = self.conn.key(reply_to + _REPLY_SUFFIX)
        return [base] + [f"{base}{SEP}{s}" for s in (3, 6, 9)]

    def send_reply(self, reply_to: str, body: bytes, *, ttl: float = 60.0) -> None:
        headers: dict[str, Any] = {"clock": next(self._clock)}
        ticket = self._tickets.get(reply_to)
        if ticket is not None:
            headers["ticket"] = ticket
        env = envelope(body, headers, "reply.celery.pidbox", reply_to)
        key = self._reply_keys(reply_to)[0]

        def run(c: Any) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.lpush(key, env)
            pipe.expire(key, max(1, int(ttl)))
            pipe.execute()

        self.conn.run("send reply", run, idempotent=False)

    def _brpop(self, keys: list[str], wait: float) -> Any:
        return self.conn.run("collect replies", lambda c: c.brpop(keys, timeout=wait))

    def collect_replies(self, reply_to: str, timeout: float) -> list[bytes]:
        keys = self._reply_keys(reply_to)

        def drain(c: Any) -> list[bytes]:
            pipe = c.pipeline(transaction=False)
            for key in keys:
                pipe.rpop(key, 1000)
            return [raw for got in pipe.execute() if got for raw in got]

        deadline = time.monotonic() + timeout
        raw = self.conn.run("collect replies", drain)
        while not raw:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Short blocking reads: a silent network is noticed within a second.
            wait = max(0.01, min(1.0, remaining))
            got = self._brpop(keys, wait)
            if got:
                raw = [got[1], *self.conn.run("collect replies", drain)]
        out = []
        for item in raw:
            opened = open_envelope(item)
            if opened is not None:
                out.append(opened[0])
        return out
