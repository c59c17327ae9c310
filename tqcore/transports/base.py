"""The transport interface every broker implements (DESIGN §2.1).

A transport moves opaque message payloads (bytes: a kombu-style JSON envelope, see
:mod:`tqcore.message`) between producers and workers with at-least-once delivery:

* :meth:`Transport.enqueue` returns only once the broker has accepted the message.
* :meth:`Transport.claim` hands out messages under a *lease* measured on the broker's
  clock. The message stays inside the broker while leased; if the lease runs out
  (the worker died) it becomes claimable again. Every claim increments the
  message's ``attempts``; a message claimed more than ``max_deliveries`` times goes
  to the dead-letter queue instead of being delivered again.
* :meth:`Delivery.ack` removes it, :meth:`Delivery.nack` moves it to the dead-letter
  queue with a reason, :meth:`Delivery.requeue` makes it claimable again.
* ETA/countdown messages wait broker-side and are not claimable before their time.

Priorities are integers 0-9; on the embedded transports a higher number is served
first (as on RabbitMQ); on Redis a lower one is (as Celery does there, for interop), see
:attr:`Transport.priority_highest_first`. Within one priority, delivery is FIFO.

Everything here is synchronous and thread-safe. Driver exceptions never escape:
implementations raise :class:`~tqcore.exceptions.TransportError` subclasses.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tqcore.exceptions import TqError

#: Default number of claims after which a message is dead-lettered.
DEFAULT_MAX_DELIVERIES = 5
#: Default lease, seconds. Workers renew leases every third of it.
DEFAULT_LEASE = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to enqueue.

    Attributes:
        queue: destination queue name.
        payload: the encoded envelope.
        priority: 0-9, higher first.
        eta: epoch seconds before which the message must not be delivered, or None.
        message_id: the task id, kept beside the payload for stats and dead letters.
        delivery_tag: set only by a sender that built ``payload`` itself as a kombu
            envelope whose last property is this ``delivery_tag`` (and whose id and
            priority are ``message_id`` and ``priority``): a transport storing such
            envelopes as they are may then trust it instead of parsing the payload again.
    """

    queue: str
    payload: bytes
    priority: int = 0
    eta: float | None = None
    message_id: str | None = None
    delivery_tag: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's figures, as the broker sees them now.

    Attributes:
        name: queue name.
        depth: messages ready to be claimed now.
        scheduled: messages waiting for their ETA.
        in_flight: messages claimed and not yet acknowledged.
        dead_lettered: messages in the queue's dead-letter queue.
        oldest_age: seconds since the oldest ready message was enqueued (0 if none).
        consumers: live workers consuming the queue, if the broker knows.
    """

    name: str
    depth: int
    scheduled: int = 0
    in_flight: int = 0
    dead_lettered: int = 0
    oldest_age: float = 0.0
    consumers: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The stats as a plain dict (for ``--json``)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message in a dead-letter queue, with the reason it is there."""

    id: str
    queue: str
    payload: bytes
    reason: str
    attempts: int
    dead_at: float
    message_id: str | None = None


class Subscription(abc.ABC):
    """A stream of message bodies (events or control commands) from a transport."""

    @abc.abstractmethod
    def get(self, timeout: float) -> list[bytes]:
        """Bodies received since the last call; waits up to ``timeout`` for the first.

        Raises:
            TransportError: the connection failed (resubscribe to recover).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop receiving."""


class Delivery:
    """A claimed message. Settle it exactly once with ack, nack or requeue.

    Attributes:
        transport: the transport that delivered it.
        queue: the queue it came from.
        payload: the raw envelope bytes.
        attempts: how many times it has been claimed, this claim included.
        priority: its priority.
        delivery_id: broker-side identity of this message.
    """

    __slots__ = ("transport", "queue", "payload", "attempts", "priority", "delivery_id",
                 "message_id", "settled", "parsed")

    def __init__(
        self,
        transport: Transport,
        queue: str,
        payload: bytes,
        attempts: int,
        priority: int,
        delivery_id: Any,
        message_id: str | None = None,
    ) -> None:
        self.transport = transport
        self.queue = queue
        self.payload = payload
        self.attempts = attempts
        self.priority = priority
        self.delivery_id = delivery_id
        self.message_id = message_id
        self.settled = False
        #: ``payload`` as a JSON value, when the transport decoded it already (strict
        #: UTF-8, no other check): the worker decodes this rather than the bytes again.
        self.parsed: Any = None

    @property
    def redelivered(self) -> bool:
        """True when this message was claimed before."""
        return self.attempts > 1

    def ack(self, *, wait: bool = True) -> None:
        """Remove the message from the broker: it has been handled.

        Args:
            wait: False returns once the ack is on its way to the broker, without
                waiting for its answer (see :meth:`Transport.ack_nowait`).
        """
        if not self.settled:
            self.settled = True
            if wait:
                self.transport.ack([self])
            else:
                self.transport.ack_nowait([self])

    def nack(self, reason: str) -> None:
        """Move the message to its queue's dead-letter queue with ``reason``."""
        if not self.settled:
            self.settled = True
            self.transport.nack(self, reason)

    def requeue(self, *, count_attempt: bool = True, delay: float | None = None) -> None:
        """Make the message claimable again.

        Args:
            count_attempt: False hands the message back as if never claimed (a
                prefetched message returned at shutdown); True keeps the attempt.
            delay: seconds before it becomes claimable again.
        """
        if not self.settled:
            self.settled = True
            self.transport.requeue(self, count_attempt=count_attempt, delay=delay)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.queue}#{self.delivery_id} "
                f"id={self.message_id} attempts={self.attempts}>")


class Transport(abc.ABC):
    """A broker connection. One instance may be shared by the threads of a process.

    Args:
        url: the broker URL (kept only in redacted form for display).
        max_deliveries: claims after which a message is dead-lettered.
        options: transport-specific options.
    """

    #: URL schemes this class serves.
    schemes: tuple[str, ...] = ()
    #: True when several processes on other hosts can share the broker.
    distributed: bool = False
    #: False: lower numbers are served first (Celery's convention on Redis).
    priority_highest_first: bool = True
    #: True when the transport keeps a bounded event history (``subscribe_events(replay=)``).
    keeps_event_history: bool = True
    #: False where the broker's own liveness is the lease (AMQP: the channel).
    leases_expire: bool = True
    #: False where QueueStats.oldest_age cannot be measured (reported as 0).
    reports_oldest_age: bool = True
    #: True when any process can settle a delivery (its id names the message, not a
    #: channel): prefork children then ack their own tasks. False on AMQP, where only
    #: the channel that received a message can ack it.
    settles_from_any_process: bool = False
    #: Called (outside any broker transaction) with each message that :meth:`claim`
    #: dead-lettered for exceeding ``max_deliveries``, so the worker can record the
    #: task as failed instead of leaving it PENDING forever.
    on_dead_letter: Callable[[DeadLetter], None] | None = None
    #: The consumer's size cap (bytes; the worker's ``task_message_max_size``): a
    #: transport that can see a message's size before sending it to the claiming
    #: process (Redis) dead-letters bigger ones there, with the reason the worker gives,
    #: instead of making the worker read all of it first. None: no cap at claim time.
    claim_max_size: int | None = None

    def __init__(self, url: str, *, max_deliveries: int = DEFAULT_MAX_DELIVERIES,
                 **options: Any) -> None:
        from tqcore.urls import redact

        self.url = url
        self.display_url = redact(url)
        self.max_deliveries = max_deliveries
        self.options = options

    def _report_dead(self, dead: list[DeadLetter]) -> None:
        hook = self.on_dead_letter
        if hook is None:
            return
        for letter in dead:
            try:
                hook(letter)
            except Exception:  # a failing hook must not lose the claim's deliveries
                logging.getLogger("tqcore.transport").exception("dead-letter hook failed")

    # -- clock ------------------------------------------------------------------
    def now(self) -> float:
        """The broker's clock, epoch seconds. Leases and ETAs are measured on it."""
        return time.time()

    # -- queues -----------------------------------------------------------------
    @abc.abstractmethod
    def declare_queue(self, name: str) -> None:
        """Make sure ``name`` exists (idempotent)."""

    def enqueue(self, queue: str, payload: bytes, *, priority: int = 0,
                eta: float | None = None, message_id: str | None = None) -> None:
        """Put one message on ``queue``; returns once the broker accepted it."""
        self.enqueue_many([OutgoingMessage(queue, payload, priority, eta, message_id)])

    @abc.abstractmethod
    def enqueue_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Put several messages in one broker round trip (all or none where possible)."""

    def enqueue_with_event(self, messages: Sequence[OutgoingMessage], routing_key: str,
                           body: bytes | Callable[[], bytes], *,
                           hostname: str | None = None) -> Exception | None:
        """:meth:`enqueue_many`, then :meth:`publish_event` of one event message.

        A producer's ``task-sent`` events go with its messages; a transport that can
        send both in one round trip overrides this (this default makes two calls).

        Args:
            messages: as for :meth:`enqueue_many`.
            routing_key: the event message's routing key (``task.sent``, ``task.multi``).
            body: its JSON body, or a function making it: called once, after the messages
                are on their way, so that a transport may build it while the broker works.
            hostname: the sending node, when the caller knows it (else read from ``body``
                where the transport needs it).

        Returns:
            None when the event was published, else the error that lost it (a broker
            error, or ``body()``'s TypeError/ValueError): events are best-effort, so that
            error is the caller's to log, never raised.

        Raises:
            TransportError: the messages were not enqueued (as :meth:`enqueue_many`).
        """
        self.enqueue_many(messages)
        try:
            self.publish_event(routing_key, body() if callable(body) else body)
        except (TqError, TypeError, ValueError) as exc:
            return exc
        return None

    @abc.abstractmethod
    def claim(self, queues: Sequence[str], *, consumer: str, limit: int, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        """Claim up to ``limit`` ready messages from ``queues`` under a lease.

        Args:
            queues: queue names, served in order of priority then age.
            consumer: identity of the claiming worker (for stats and reaping).
            limit: most messages to return.
            lease: seconds the claim lasts unless renewed.
            timeout: seconds to wait for a message when none is ready.

        Returns:
            The claimed deliveries, highest priority first, possibly empty.
        """

    @abc.abstractmethod
    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """Remove acknowledged messages (use :meth:`Delivery.ack`)."""

    def ack_nowait(self, deliveries: Iterable[Delivery]) -> None:
        """Ack without waiting for the broker's answer where the transport can: when this
        returns the ack has been written to the broker's connection (a process killed
        now still delivers it), and a connection failure before the broker answered
        anything later sends it again. An early ack, right before a task body, takes
        this path: the task need not wait a round trip to start. Default: :meth:`ack`."""
        self.ack(deliveries)

    @abc.abstractmethod
    def nack(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter a message with a reason (use :meth:`Delivery.nack`)."""

    @abc.abstractmethod
    def requeue(self, delivery: Delivery, *, count_attempt: bool = True,
                delay: float | None = None) -> None:
        """Return a message to its queue (use :meth:`Delivery.requeue`)."""

    @abc.abstractmethod
    def renew(self, deliveries: Iterable[Delivery], lease: float) -> None:
        """Extend the leases of messages still being worked on."""

    @abc.abstractmethod
    def dead_letter_raw(self, queue: str, payload: bytes, reason: str) -> None:
        """Put a payload straight into ``queue``'s dead-letter queue (used by tools)."""

    # -- inspection and admin ---------------------------------------------------
    @abc.abstractmethod
    def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Figures for ``queues`` (all known queues when None)."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every ready and scheduled message of ``queue``; returns how many."""

    @abc.abstractmethod
    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters (of ``queue`` when given)."""

    # -- worker registry --------------------------------------------------------
    @abc.abstractmethod
    def register_worker(self, name: str, info: dict[str, Any], ttl: float) -> None:
        """Record (or refresh) a live worker; it expires after ``ttl`` seconds."""

    @abc.abstractmethod
    def unregister_worker(self, name: str) -> None:
        """Remove a worker that shut down cleanly."""

    @abc.abstractmethod
    def list_workers(self) -> dict[str, dict[str, Any]]:
        """Live workers (not expired) and the info they registered."""

    # -- events channel (Celery's ``celeryev``) ----------------------------------
    @abc.abstractmethod
    def publish_event(self, routing_key: str, body: bytes) -> None:
        """Publish one event message: ``body`` is JSON, an event dict or a list of them.

        Args:
            routing_key: Celery's routing key, ``task.multi``, ``worker.heartbeat``, ...
            body: the JSON body.
        """

    @abc.abstractmethod
    def subscribe_events(self, *, replay: float | None = None) -> Subscription:
        """Receive event bodies published from now on.

        Args:
            replay: seconds of history to deliver first, where the transport keeps a
                bounded history (SQLite table, Redis stream); ignored elsewhere.
        """

    # -- control channel (Celery's pidbox) --------------------------------------
    @abc.abstractmethod
    def broadcast_control(self, body: bytes, *, ttl: float = 300.0) -> None:
        """Send a control command (Celery's pidbox command JSON) to every worker."""

    @abc.abstractmethod
    def subscribe_control(self, node: str) -> Subscription:
        """Receive control commands broadcast from now on (a worker's mailbox)."""

    @abc.abstractmethod
    def send_reply(self, reply_to: str, body: bytes, *, ttl: float = 60.0) -> None:
        """Send a control reply (``{node: value}`` JSON) to the client queue ``reply_to``."""

    @abc.abstractmethod
    def collect_replies(self, reply_to: str, timeout: float) -> list[bytes]:
        """Replies that arrived for ``reply_to`` within ``timeout`` seconds (or before).

        Returns as soon as at least one reply is there, or when the timeout passes.
        """

    # -- lifecycle --------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The transport may be reopened by using it again."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display_url}>"
