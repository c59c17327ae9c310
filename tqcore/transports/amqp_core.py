"""The base of the AMQP transport: connection, names, topology and publishing.

:class:`AMQPCore` owns what every part of the transport shares: the per-process
:class:`~tqcore.transports.amqp_link.Link` (reopened after a fork), entity names
under the ``prefix``, the declared-topology cache (keyed by connection generation,
so a reconnect declares everything again), the publisher-confirm channel, and the
set of messages this transport holds unacknowledged. The claim, inspection and
channel parts subclass it; :class:`~tqcore.transports.amqp.AMQPTransport` joins them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from tqcore.exceptions import ImproperlyConfigured, TransportError
from tqcore.transports import amqp_delay as delay
from tqcore.transports.amqp_chan import Confirms
from tqcore.transports.amqp_codec import WireMessage, parse_url, to_wire
from tqcore.transports.amqp_link import PRECONDITION_FAILED, Chan, ChannelError, Link
from tqcore.transports.amqp_registry import Registry
from tqcore.transports.base import OutgoingMessage, Transport

if TYPE_CHECKING:
    from tqcore.transports.amqp_channels import Inbox

logger = logging.getLogger("tqcore.transport.amqp")

_CREATED: set[str] = set()


def created_entities(prefix: str) -> list[str]:
    """Durable queues and exchanges this process declared under ``prefix`` (test cleanup)."""
    return sorted(name for name in _CREATED if prefix in name)


@dataclasses.dataclass(eq=False, slots=True)
class Tag:
    """Where a claimed message lives: its channel and delivery tag, and the message."""

    chan: Chan
    tag: int
    wire: WireMessage
    queue: str

    def __repr__(self) -> str:
        return str(self.tag)

    def __reduce__(self) -> tuple[Any, ...]:
        # Only the channel that received a message can settle it: in another process
        # (a prefork child handed the delivery) the tag is just its number, for logs.
        return (str, (str(self.tag),))


@dataclasses.dataclass(eq=False, slots=True)
class Arrival:
    """A message the broker pushed to one of our consumers (or a sync ``basic.get``
    returned), not claimed yet: unacknowledged, so still the broker's."""

    chan: Chan
    queue: str
    method: Any
    props: Any
    body: bytes


@dataclasses.dataclass(eq=False)
class Consumers:
    """Our consumers on the work channel ``chan``: consumer tag by queue, and the
    per-consumer prefetch the newest of them were started with."""

    chan: Chan | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    prefetch: int = 0


class _Stale(TransportError):
    """The confirm channel went away before a posted publish was written: retry."""


class AMQPCore(Transport):
    """Shared state and plumbing of the AMQP transport (see the module docstring)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.config = parse_url(url, **self.options)
        self.prefix = str(self.config.option("prefix", ""))
        self.max_priority = int(self.config.float_option("max_priority", 9))
        self.queue_type = str(self.config.option("queue_type", "classic"))
        if self.queue_type not in ("classic", "quorum"):
            raise ImproperlyConfigured(f"queue_type must be classic or quorum, not "
                                       f"{self.queue_type!r}")
        self.op_timeout = self.config.float_option("operation_timeout", 30.0)
        self._link: Link | None = None
        self._link_lock = threading.Lock()
        self._held_lock = threading.Lock()
        #: Notified (under ``_held_lock``) when a message arrives or a channel goes.
        self._arrived = threading.Condition(self._held_lock)
        self._rr = itertools.count()
        self._reset()

    def _reset(self) -> None:
        """Forget everything tied to a connection (on close, and after a fork)."""
        self.id = uuid.uuid4().hex
        self._declared: dict[tuple[str, str], int] = {}
        self._local_queues: set[str] = set()
        self._announced: dict[str, float] = {}
        self._held: set[Tag] = set()
        #: Arrived, unclaimed messages, oldest first (guarded by ``_held_lock``).
        self._buffer: deque[Arrival] = deque()
        self._waiters = 0
        self._wake_pending = False
        self._consumers = Consumers()
        self._sub_lock: asyncio.Lock | None = None
        self._get_lock: asyncio.Lock | None = None  # pika allows one basic.get at a time
        #: Tags whose ack waits for the I/O thread's next turn (guarded by ``_held_lock``).
        self._acks: list[Tag] = []
        self._acks_posted = False
        self._replies: dict[str, Inbox] = {}
        #: The publisher-confirm channel, once open (read by the fast publish path).
        self._pub: Chan | None = None
        self.registry = Registry(self)

    # -- plumbing ------------------------------------------------------------------
    @property
    def link(self) -> Link:
        """This process's connection (opened on first use, and again after a fork)."""
        link = self._link
        if link is not None and not link.closed and link.pid == os.getpid():
            return link
        with self._link_lock:
            link = self._link
            if link is None or link.closed or link.pid != os.getpid():
                if link is not None:
                    link.close()
                    self._reset()
                link = self._link = Link(self.config, "amqp")
            return link

    def _run(self, factory: Callable[[], Awaitable[Any]], timeout: float | None = None) -> Any:
        return self.link.run(factory, self.op_timeout if timeout is None else timeout)

    def entity(self, name: str, durable: bool = False) -> str:
        """The broker name of queue or exchange ``name`` (under the prefix).

        ``durable`` names are remembered for :func:`created_entities`.
        """
        full = self.prefix + name
        if durable:
            self.remember(full)
        return full

    def remember(self, full: str) -> None:
        """Note a durable entity for :func:`created_entities` (only under a prefix)."""
        if self.prefix:
            _CREATED.add(full)

    async def publisher(self) -> Chan:
        """The channel publishes go through (confirm mode)."""
        chan = self._pub = await self.link.channel("pub", confirms=True)
        return chan

    def _ready_link(self) -> Link | None:
        """The link if publishes may take the fast path now: this process's, connected,
        its confirm channel open (else None: the slow path connects and declares)."""
        link, chan = self._link, self._pub
        if (link is None or link.closed or link.pid != os.getpid() or not link.connected
                or chan is None or not chan.is_open or chan.generation != link.generation):
            return None
        return link

    def _post_publishes(self, link: Link,
                        items: list[tuple[str, str, WireMessage, bool]]) -> Confirms:
        """Hand publishes ``(exchange, routing key, message, mandatory)`` to the I/O
        thread and return their :class:`Confirms` at once.

        The calling thread builds the frames' properties; the I/O thread only writes and
        matches confirms. If the confirm channel closed before the I/O thread got to
        it, nothing was published and the batch fails with :class:`_Stale` (safe to
        retry on the slow path); a failure part-way fails the rest of the batch.
        """
        link.check_blocked()
        chan = self._pub
        confirms = Confirms(len(items))
        frames = [(exchange, key, wire.body, wire.properties(), mandatory)
                  for exchange, key, wire, mandatory in items]

        def publish() -> None:
            if chan is None or not chan.is_open or chan.generation != link.generation:
                confirms.fail(_Stale())
                return
            for i, (exchange, key, body, props, mandatory) in enumerate(frames):
                try:
                    chan.publish_to(confirms.slot(i), exchange, key, body, props, mandatory)
                except TransportError as exc:
                    for j in range(i, len(frames)):
                        confirms.slot(j).set_exception(exc)
                    return

        link.post(publish)
        return confirms

    def _await_confirms(self, confirms: Confirms, upto: int | None = None) -> bool:
        """Wait for a batch posted by :meth:`_post_publishes`: False if it must be
        retried on the slow path (nothing was published).

        Raises:
            TransportError: a refusal, a closed channel, a blocked connection, a timeout
                (of the first ``upto`` publishes only, when given).
        """
        if not confirms.wait(self.op_timeout):
            raise TransportError(f"the broker did not answer within {self.op_timeout:.1f}s")
        if isinstance(confirms.error, _Stale):
            return False
        for index, error in sorted(confirms.errors.items()):
            if upto is None or index < upto:
                raise error
        return True

    def _queue_args(self) -> dict[str, Any]:
        if self.queue_type == "quorum":
            return {"x-queue-type": "quorum"}
        return {"x-max-priority": self.max_priority} if self.max_priority > 0 else {}

    # -- topology ------------------------------------------------------------------
    def declare_queue(self, name: str) -> None:
        self._run(lambda: self._ensure_queue(name))

    async def _ensure_queue(self, queue: str) -> None:
        link = self.link
        await link.connection()
        await self._announce(queue)
        if self._declared.get(("queue", queue)) == link.generation:
            return
        for name in (self.entity(queue, True), self.entity(f"{queue}.dead", True)):
            chan = await link.channel("admin", probing=True)
            try:
                await chan.rpc("queue_declare", name, durable=True, arguments=self._queue_args())
            except ChannelError as exc:
                if exc.code != PRECONDITION_FAILED:
                    raise
                logger.warning("queue %s exists with other arguments (%s); using it as it is",
                               name, exc)
        self._declared[("queue", queue)] = link.generation

    async def _announce(self, queue: str) -> None:
        """Tell the registry ``queue`` is in use, at most twice per registry window."""
        now = time.monotonic()
        if now - self._announced.get(queue, -1e9) >= self.registry.window / 2:
            self._announced[queue] = now
            self._local_queues.add(queue)
            await self.registry.publish({"k": "queue", "name": queue})

    async def _ensure_ladder(self, queue: str) -> None:
        link = self.link
        gen = link.generation
        if self._declared.get(("ladder", queue)) == gen:
            return
        chan = await link.channel("admin", probing=True)
        if self._declared.get(("ladder", "")) != gen:
            for level in [*range(delay.LEVELS), -1]:
                name = delay.exchange(level) if level >= 0 else delay.OUT
                await chan.rpc("exchange_declare", self.entity(name, True), exchange_type="topic",
                               durable=True)
            for level in range(delay.LEVELS):
                await chan.rpc("exchange_bind", self.entity(delay.next_exchange(level)),
                               self.entity(delay.exchange(level)),
                               routing_key=delay.skip_pattern(level))
            self._declared[("ladder", "")] = gen
        target = self.entity(queue)
        tok = delay.token(target)
        for level in range(delay.LEVELS):
            name = self.entity(delay.wait_queue(queue, level), True)
            await chan.rpc("queue_declare", name, durable=True, arguments={
                "x-message-ttl": 2 ** level,
                "x-dead-letter-exchange": self.entity(delay.next_exchange(level))})
            await chan.rpc("queue_bind", name, self.entity(delay.exchange(level)),
                           routing_key=delay.wait_pattern(level, tok))
        await chan.rpc("queue_bind", target, self.entity(delay.OUT),
                       routing_key=delay.out_pattern(tok))
        self._declared[("ladder", queue)] = gen

    def _route(self, queue: str, wait: float) -> tuple[str, str]:
        ms = delay.delay_ms(wait) if wait > 0 else 0
        if ms <= 0:
            return "", self.entity(queue)
        return (self.entity(delay.exchange(delay.LEVELS - 1)),
                delay.routing_key(ms, delay.token(self.entity(queue))))

    async def _publish(self, queue: str, wire: WireMessage, wait: float = 0.0,
                       dead: bool = False) -> None:
        """Publish one message to ``queue`` (after ``wait`` seconds, or to its dead-letter
        queue) and await the confirm."""
        await self._ensure_queue(queue)
        if wait > 0:
            await self._ensure_ladder(queue)
        exchange, key = ("", self.entity(f"{queue}.dead")) if dead else self._route(queue, wait)
        if not await (await self.publisher()).publish(exchange, key, wire, mandatory=True):
            raise TransportError(f"queue {queue!r} disappeared: message returned unroutable")

    # -- enqueue -------------------------------------------------------------------
    def enqueue_many(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        batch = list(messages)
        if not self._enqueue_fast(batch):
            self._run(lambda: self._enqueue(batch))

    def _enqueue_fast(self, messages: list[OutgoingMessage]) -> bool:
        """Publish without a coroutine round trip when everything is declared already
        (the common case); False if the slow path must run instead."""
        link = self._ready_link()
        items = None if link is None else self._fast_items(link, messages)
        if link is None or items is None:
            return False
        confirms = self._post_publishes(link, items)
        if not self._await_confirms(confirms):
            return False
        self._republish_returned(messages, confirms)
        return True

    def _fast_items(self, link: Link, messages: list[OutgoingMessage]
                    ) -> list[tuple[str, str, WireMessage, bool]] | None:
        """What to publish for ``messages``, or None if something must be declared (a
        queue's first use on this connection, its ETA ladder, a registry announcement)."""
        gen, now, mono = link.generation, time.time(), time.monotonic()
        half_window = self.registry.window / 2
        items: list[tuple[str, str, WireMessage, bool]] = []
        for m in messages:
            queue = m.queue
            if (self._declared.get(("queue", queue)) != gen
                    or mono - self._announced.get(queue, -1e9) >= half_window):
                return None
            wait = (m.eta - now) if m.eta is not None else 0.0
            if wait > 0 and self._declared.get(("ladder", queue)) != gen:
                return None
            exchange, key = self._route(queue, wait)
            wire = to_wire(m.payload, priority=m.priority, message_id=m.message_id)
            items.append((exchange, key, wire, True))
        return items

    def _republish_returned(self, messages: list[OutgoingMessage], confirms: Confirms) -> None:
        """Messages the broker returned unroutable (their queue was deleted behind our
        back): declare the queues again and publish them again, once."""
        returned = [messages[i] for i in confirms.returned if i < len(messages)]
        if returned:
            for queue in {m.queue for m in returned}:
                self._declared.pop(("queue", queue), None)
                self._declared.pop(("ladder", queue), None)
            self._run(lambda: self._enqueue(returned, retry=False))

    async def _enqueue(self, messages: list[OutgoingMessage], retry: bool = True) -> None:
        now = time.time()
        for queue in {m.queue for m in messages}:
            await self._ensure_queue(queue)
        for queue in {m.queue for m in messages if m.eta is not None and m.eta > now}:
            await self._ensure_ladder(queue)
        chan = await self.publisher()
        sent: list[asyncio.Future[bool]] = []
        try:
            for m in messages:
                wire = to_wire(m.payload, priority=m.priority, message_id=m.message_id)
                exchange, key = self._route(m.queue, (m.eta - now) if m.eta is not None else 0.0)
                sent.append(chan.publish(exchange, key, wire, mandatory=True))
            # All published at once; confirms come back in one or a few batches.
            confirmed = await asyncio.gather(*sent)
        except BaseException:
            for fut in sent:
                fut.cancel()  # nobody will look at their outcome now
            raise
        returned = [m for m, ok in zip(messages, confirmed, strict=True) if not ok]
        if returned:
            if not retry:
                raise TransportError(f"queue {returned[0].queue!r} is missing: message returned")
            for queue in {m.queue for m in returned}:  # deleted behind our back: declare again
                self._declared.pop(("queue", queue), None)
                self._declared.pop(("ladder", queue), None)
            await self._enqueue(returned, retry=False)

    def held_counts(self) -> dict[str, int]:
        """Messages this transport holds unacknowledged, per queue."""
        with self._held_lock:
            return dict(Counter(t.queue for t in self._held))

    def buffered_counts(self) -> dict[str, int]:
        """Messages pushed to this transport's consumers and not claimed yet, per queue."""
        with self._held_lock:
            return dict(Counter(a.queue for a in self._buffer if a.chan.is_open))
