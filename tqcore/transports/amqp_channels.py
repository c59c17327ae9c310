"""Events and remote control over AMQP, with Celery's entities (celery-wire.md §4.4, §4.5).

Events
    published to the ``celeryev`` topic exchange (durable) with Celery's routing
    keys (``task.multi``, ``worker.heartbeat``...), ``delivery_mode`` 1 and the
    ``hostname`` header. A subscriber declares its own ``celeryev.<uuid4>`` queue
    (exclusive, auto-delete, ``x-message-ttl`` 5000, ``x-expires`` 60000) bound
    with ``#``. RabbitMQ keeps no event history: ``replay`` is ignored and a
    subscription starts live (a monitor started late rebuilds workers from the
    registry, and tasks from the next events).
Control
    commands go to the ``celery.pidbox`` fanout exchange (non-durable) with the
    headers ``clock`` and ``expires``; a worker consumes ``<node>.celery.pidbox``
    (exclusive, auto-delete, ``x-expires`` 10000, ``x-message-ttl`` 300000) and
    drops commands past their ``expires``. Replies go to the
    ``reply.celery.pidbox`` direct exchange with routing key = the client's
    ``reply_to``; the client's ``<reply_to>.reply.celery.pidbox`` queue is declared
    and consumed *before* the command is broadcast, so no reply can be missed.
    A replier that finds no reply queue declares it (non-exclusive, expiring), so
    a reply sent before its client listens waits for it.

With a ``prefix`` P the names are those of a Celery app configured with
``event_exchange=P+"celeryev"``, ``event_queue_prefix=P+"celeryev"`` and
``control_exchange=P+"celery"``: ``P+celeryev``, ``<node>.P+celery.pidbox``,
``reply.P+celery.pidbox``... so a prefixed tqcore still talks to such a Celery.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from tqcore.exceptions import TqError
from tqcore.transports.amqp_codec import WireMessage, jsonable
from tqcore.transports.amqp_core import AMQPCore
from tqcore.transports.amqp_link import (
    NOT_FOUND,
    PRECONDITION_FAILED,
    RESOURCE_LOCKED,
    Chan,
    ChannelError,
)
from tqcore.transports.base import OutgoingMessage, Subscription

if TYPE_CHECKING:
    from tqcore.transports.amqp_link import Link

logger = logging.getLogger("tqcore.transport.amqp")

EVENT_QUEUE_ARGS = {"x-message-ttl": 5000, "x-expires": 60000}
PIDBOX_QUEUE_ARGS = {"x-expires": 10000, "x-message-ttl": 300000}
#: Reply inboxes unused this long are closed.
REPLY_IDLE = 30.0
_clock = itertools.count(1)


class Inbox(Subscription):
    """Bodies a consumer on the I/O thread pushes, handed out by :meth:`get`.

    If the channel or connection goes away the next :meth:`get` sets the consumer
    up again (a new queue for events; messages meanwhile are lost, as on Celery).
    """

    def __init__(self, link: Link, setup: Callable[[Inbox], Awaitable[Chan]], *,
                 manual_ack: bool, accept: Callable[[Any], bool] | None = None,
                 timeout: float = 30.0) -> None:
        self.link = link
        self._setup = setup
        self._manual_ack = manual_ack
        self._accept = accept
        self._timeout = timeout
        self._buf: deque[tuple[bytes, Chan | None, int, Any]] = deque()
        self._cond = threading.Condition()
        self.chan: Chan | None = None
        self.closed = False
        self.used = time.monotonic()

    async def open(self) -> None:
        """(Re)create the consumer: runs on the I/O loop."""
        self.chan = await self._setup(self)

    @property
    def is_open(self) -> bool:
        """True while the consumer's channel is open."""
        return self.chan is not None and self.chan.is_open

    def push(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        """pika's on_message callback (I/O thread)."""
        with self._cond:
            self._buf.append((bytes(body), self.chan, method.delivery_tag, props))
            self._cond.notify_all()

    def get(self, timeout: float) -> list[bytes]:
        self.used = time.monotonic()
        if self.closed:
            return []
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._buf:
                if not self.is_open:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(min(remaining, 0.5))
            items = list(self._buf)
            self._buf.clear()
        if not items:
            # The consumer is gone (broker restart, channel error): set it up again.
            self.link.run(self.open, self._timeout)
            return self.get(max(0.0, deadline - time.monotonic()))
        if self._manual_ack:
            _, chan, tag, _ = items[-1]
            if chan is not None:
                self.link.soon(_ack_upto, chan, tag)
        accept = self._accept
        bodies = [body for body, _, _, props in items if accept is None or accept(props)]
        if not bodies:  # all expired: keep waiting for the rest of the timeout
            return self.get(max(0.0, deadline - time.monotonic()))
        return bodies

    def close(self) -> None:
        self.closed = True
        chan = self.chan
        if chan is not None and not self.link.closed:
            self.link.soon(lambda: asyncio.ensure_future(chan.close()))


def _ack_upto(chan: Chan, tag: int) -> None:
    if chan.is_open:
        chan.channel.basic_ack(tag, multiple=True)


def _not_expired(props: Any) -> bool:
    expires = (props.headers or {}).get("expires")
    try:
        return not expires or float(jsonable(expires)) >= time.time()
    except (TypeError, ValueError):
        return True


def _event_wire(body: bytes, hostname: str | None) -> WireMessage:
    """An event message as Celery sends it: transient, with the ``hostname`` header."""
    host = hostname or _hostname(body)
    return WireMessage(body, {"hostname": host} if host else {}, "application/json", "utf-8",
                       delivery_mode=1, priority=0)


def _hostname(body: bytes) -> str | None:
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if isinstance(event, list) and event:
        event = event[0]
    host = event.get("hostname") if isinstance(event, dict) else None
    return host if isinstance(host, str) else None


class AMQPChannels(AMQPCore):
    """Part of :class:`~tqcore.transports.amqp.AMQPTransport`: events and control."""

    @property
    def _control(self) -> str:
        """Celery's ``control_exchange`` (``celery``, under the prefix)."""
        return f"{self.prefix}celery"

    async def _exchange(self, full: str, kind: str, durable: bool) -> str:
        """Declare exchange ``full`` once per connection; returns its name."""
        self.remember(full)
        link = self.link
        await link.connection()
        if self._declared.get(("exchange", full)) == link.generation:
            return full
        chan = await link.channel("admin", probing=True)
        try:
            await chan.rpc("exchange_declare", full, exchange_type=kind, durable=durable)
        except ChannelError as exc:
            if exc.code != PRECONDITION_FAILED:
                raise
            logger.warning("exchange %s exists with other settings; using it as it is", full)
        self._declared[("exchange", full)] = link.generation
        return full

    # -- events --------------------------------------------------------------------
    def publish_event(self, routing_key: str, body: bytes) -> None:
        wire = _event_wire(body, None)
        exchange = self.entity("celeryev")
        link = self._ready_link()
        # Declared on this connection already: hand the frame over, wait for the confirm.
        if link is not None and self._declared.get(("exchange", exchange)) == link.generation:
            confirms = self._post_publishes(link, [(exchange, routing_key, wire, False)])
            if self._await_confirms(confirms):
                return

        async def publish() -> None:
            await self._exchange(exchange, "topic", durable=True)
            await (await self.publisher()).publish(exchange, routing_key, wire)

        self._run(publish)

    def enqueue_with_event(self, messages: Sequence[OutgoingMessage], routing_key: str,
                           body: bytes | Callable[[], bytes], *,
                           hostname: str | None = None) -> Exception | None:
        """Enqueue ``messages`` and publish one event with one hand-off to the I/O
        thread and one wait for all their confirms (see
        :meth:`Transport.enqueue_with_event`). The body is built first: a second
        hand-off would cost more than building it while the broker works saves.

        Returns:
            None once the event is confirmed too, else the error that lost it.

        Raises:
            TransportError: the messages were not enqueued.
        """
        batch = list(messages)
        exchange = self.entity("celeryev")
        link = self._ready_link()
        items = None if link is None else self._fast_items(link, batch)
        if (link is None or items is None
                or self._declared.get(("exchange", exchange)) != link.generation):
            self.enqueue_many(batch)  # first use, or a reconnect: the slow path, two calls
            try:
                self.publish_event(routing_key, body() if callable(body) else body)
            except (TqError, TypeError, ValueError) as exc:
                return exc
            return None
        try:
            wire = _event_wire(body() if callable(body) else body, hostname)
        except (TypeError, ValueError) as exc:  # the event is lost, not the messages
            self.enqueue_many(batch)
            return exc
        # One hand-off and one wait for both: the event's confirm comes with the messages'.
        items.append((exchange, routing_key, wire, False))
        confirms = self._post_publishes(link, items)
        if not self._await_confirms(confirms, upto=len(batch)):
            self.enqueue_many(batch)  # nothing was published: the slow path
            try:
                self.publish_event(routing_key, wire.body)
            except TqError as exc:
                return exc
            return None
        self._republish_returned(batch, confirms)
        error = confirms.errors.get(len(batch))
        return error if isinstance(error, Exception) else None

    def subscribe_events(self, *, replay: float | None = None) -> Subscription:
        # RabbitMQ keeps no history: ``replay`` cannot be honoured (see module doc).
        async def setup(inbox: Inbox) -> Chan:
            exchange = await self._exchange(self.entity("celeryev"), "topic", durable=True)
            chan = await self.link.open_channel()
            name = self.entity(f"celeryev.{uuid.uuid4()}")
            await chan.rpc("queue_declare", name, exclusive=True, auto_delete=True,
                           arguments=EVENT_QUEUE_ARGS)
            await chan.rpc("queue_bind", name, exchange, routing_key="#")
            await chan.rpc("basic_qos", prefetch_count=2000)
            await chan.consume(name, inbox.push, auto_ack=False)
            return chan

        inbox = Inbox(self.link, setup, manual_ack=True, timeout=self.op_timeout)
        self._run(inbox.open)
        return inbox

    # -- control -------------------------------------------------------------------
    def broadcast_control(self, body: bytes, *, ttl: float = 300.0) -> None:
        reply_key, reply_exchange = _reply_to(body)

        async def broadcast() -> None:
            if reply_key is not None:
                # Listen before anyone can answer, on the exchange the command names too
                # (a Celery worker replies there).
                await self._reply_inbox(reply_key, reply_exchange)
            exchange = await self._exchange(f"{self._control}.pidbox", "fanout", durable=False)
            wire = WireMessage(body, {"clock": next(_clock), "expires": time.time() + ttl},
                               "application/json", "utf-8", delivery_mode=2,
                               expiration=str(max(1, int(ttl * 1000))))
            await (await self.publisher()).publish(exchange, "", wire)

        self._run(broadcast)

    def subscribe_control(self, node: str) -> Subscription:
        async def setup(inbox: Inbox) -> Chan:
            exchange = await self._exchange(f"{self._control}.pidbox", "fanout", durable=False)
            chan = await self.link.open_channel()
            name = f"{node}.{self._control}.pidbox"
            try:
                await chan.rpc("queue_declare", name, exclusive=True, auto_delete=True,
                               arguments=PIDBOX_QUEUE_ARGS)
            except ChannelError as exc:
                if exc.code != RESOURCE_LOCKED:
                    raise
                logger.warning("another worker named %s is connected: use -n to name this"
                               " one differently", node)
                chan = await self.link.open_channel()
                name = f"{node}.{uuid.uuid4().hex[:8]}.{self._control}.pidbox"
                await chan.rpc("queue_declare", name, exclusive=True, auto_delete=True,
                               arguments=PIDBOX_QUEUE_ARGS)
            await chan.rpc("queue_bind", name, exchange, routing_key="")
            await chan.consume(name, inbox.push, auto_ack=True)
            return chan

        inbox = Inbox(self.link, setup, manual_ack=False, accept=_not_expired,
                       timeout=self.op_timeout)
        self._run(inbox.open)
        return inbox

    def send_reply(self, reply_to: str, body: bytes, *, ttl: float = 60.0) -> None:
        async def reply() -> None:
            exchange = await self._reply_queue(reply_to)
            wire = WireMessage(body, {"clock": next(_clock)}, "application/json", "utf-8",
                               delivery_mode=1, expiration=str(max(1, int(ttl * 1000))))
            await (await self.publisher()).publish(exchange, reply_to, wire)

        self._run(reply)

    def collect_replies(self, reply_to: str, timeout: float) -> list[bytes]:
        inbox: Inbox = self._run(lambda: self._reply_inbox(reply_to))
        return inbox.get(timeout)

    async def _reply_queue(self, key: str, also: str | None = None) -> str:
        """Make sure ``<key>.reply.celery.pidbox`` exists and is bound (to our reply
        exchange, and to ``also`` when given); returns our reply exchange."""
        exchange = await self._exchange(f"reply.{self._control}.pidbox", "direct",
                                        durable=False)
        link = self.link
        if self._declared.get(("reply", key)) == link.generation:
            return exchange
        name = f"{key}.reply.{self._control}.pidbox"
        chan = await link.channel("admin", probing=True)
        try:
            await chan.rpc("queue_declare", name, passive=True)
        except ChannelError as exc:
            if exc.code == RESOURCE_LOCKED:  # a client's exclusive queue: it is listening
                self._declared[("reply", key)] = link.generation
                return exchange
            if exc.code != NOT_FOUND:
                raise
            chan = await link.channel("admin", probing=True)
            await chan.rpc("queue_declare", name, auto_delete=True, arguments=PIDBOX_QUEUE_ARGS)
        await chan.rpc("queue_bind", name, exchange, routing_key=key)
        if also and also != exchange:
            await self._exchange(also, "direct", durable=False)
            chan = await link.channel("admin", probing=True)
            await chan.rpc("queue_bind", name, also, routing_key=key)
        self._declared[("reply", key)] = link.generation
        return exchange

    async def _reply_inbox(self, key: str, also: str | None = None) -> Inbox:
        now = time.monotonic()
        for other, box in list(self._replies.items()):
            if other != key and now - box.used > REPLY_IDLE:
                del self._replies[other]
                if box.chan is not None:
                    await box.chan.close()
        inbox = self._replies.get(key)
        if inbox is not None and inbox.is_open:
            inbox.used = now
            return inbox

        async def setup(box: Inbox) -> Chan:
            await self._reply_queue(key, also)
            chan = await self.link.open_channel()
            await chan.consume(f"{key}.reply.{self._control}.pidbox", box.push, auto_ack=True)
            return chan

        inbox = Inbox(self.link, setup, manual_ack=False, timeout=self.op_timeout)
        self._declared.pop(("reply", key), None)
        await inbox.open()
        self._replies[key] = inbox
        return inbox


def _reply_to(body: bytes) -> tuple[str | None, str | None]:
    """A command's ``reply_to``: (routing key, exchange), or Nones for no reply."""
    try:
        command = json.loads(body)
    except ValueError:
        return None, None
    reply_to = command.get("reply_to") if isinstance(command, dict) else None
    if not isinstance(reply_to, dict):
        return None, None
    key, exchange = reply_to.get("routing_key"), reply_to.get("exchange")
    return (key if isinstance(key, str) and key else None,
            exchange if isinstance(exchange, str) and exchange else None)
