"""RabbitMQ (``amqp://``, ``amqps://``, ``pyamqp://``), speaking Celery's wire format.

Entities (every name under the optional ``prefix`` option):

``<queue>``
    durable, ``x-max-priority`` 9 (``max_priority``), or a quorum queue
    (``queue_type=quorum``). Tasks are published as Celery does: to the default
    exchange with routing key = queue, persistent, with publisher confirms (a
    publish returns once RabbitMQ has the message; for a durable queue, on disk).
    A queue that exists with other arguments (say, declared by Celery without
    priorities) is used as it is.
``<queue>.dead``
    dead letters: the message as it was, plus headers ``x-tq-reason``,
    ``x-tq-attempts``, ``x-tq-dead-at`` and ``x-tq-dead-id``. Plain AMQP tools
    can shovel it back.
``<queue>.delay.<k>``, ``tq.delay.*``
    the ETA ladder (:mod:`~tqcore.transports.amqp_delay`): delayed messages wait
    in the broker, never unacknowledged in a worker.
``tq.registry``, ``tq.alive.<id>``
    workers, known queues, in-flight counts (:mod:`~tqcore.transports.amqp_registry`).
``celeryev``, ``celery.pidbox``, ``reply.celery.pidbox``
    events and control (:mod:`~tqcore.transports.amqp_channels`).

**Claims** (:mod:`~tqcore.transports.amqp_claims`): each queue a transport claims
from gets a consumer (manual ack) whose prefetch is what the transport holds plus the
claim's ``limit``, so a worker is pushed at most what it could claim; pushed messages
wait, unacknowledged (still the broker's), in an in-process buffer that claims take
from without a round trip to the I/O thread. A claim that cannot wait makes sure with a
``basic.get`` per queue that nothing more is on its way. Unclaimed pushed messages count
in ``queue_stats`` depth and go back to their queues, their attempts unchanged, when the
worker unregisters or the transport closes. Acks from any thread are coalesced into
one I/O-loop turn and sent with ``multiple=True`` where the delivery tags allow
(:mod:`~tqcore.transports.amqp_settle`).

**Publishing**: once a queue is declared on the current connection, ``enqueue`` builds
the frames in the calling thread, hands them to the I/O thread in one call and waits
on a lock the last confirm releases (no coroutine, no polling); a producer's
``task-sent`` event rides in the same hand-off (``enqueue_with_event``).

**Leases**: RabbitMQ's lease is the channel. An unacknowledged message stays with
its consumer while the connection lives (heartbeats keep it alive through long
tasks) and returns to the queue the moment the connection dies. ``renew`` is a
no-op and the ``lease`` argument is not used (:attr:`AMQPTransport.leases_expire`
is False). RabbitMQ's ``consumer_timeout`` (30 min by default) still bounds how
long a message may stay unacknowledged: ``acks_late`` tasks that run longer need
a larger ``consumer_timeout`` on the broker.

**Attempts**: the header ``x-tq-attempts`` counts claims settled by a republish
(requeue, checkpoint). A redelivery after a lost consumer is counted from the
quorum queue's ``x-delivery-count``, or, on classic queues, from the
``redelivered`` flag: such a message is republished with the attempt counted and
the original acked before it is handed out again (so repeated crashes add up).
A message whose next claim would exceed ``max_deliveries`` goes to
``<queue>.dead`` and :meth:`Transport._report_dead` is called. Republish-then-ack
is not atomic: a crash between the two can duplicate a message, never lose one.

**Stats**: depth and dead letters come from passive ``queue.declare`` (depth plus
the messages pushed to consumers and not claimed yet: ours, and other transports'
as their last registry report says; ``purge`` removes our own such messages, not
other processes'); scheduled messages are the depth of the queue's wait queues;
in-flight counts come from the registry; ``oldest_age`` is always 0 (AMQP cannot look at a message without
taking it; :attr:`AMQPTransport.reports_oldest_age` is False). The known queues
(``queue_stats()`` without names) are those used within the registry window and
those live workers serve.

**Connection**: one per transport and process, its I/O on a private thread
(:mod:`~tqcore.transports.amqp_link`); heartbeats (60 s), socket timeouts and TCP
keepalive; a lost connection is reopened on next use with jittered backoff and
everything is declared again. While a resource alarm blocks publishing, publishes
fail at once with a :class:`~tqcore.exceptions.TransportError`.

**Options** (query string or keywords): ``prefix``, ``max_priority`` (9),
``queue_type`` (``classic``/``quorum``), ``heartbeat`` (60), ``connect_timeout``
(10), ``connect_retry`` (10), ``operation_timeout`` (30), ``registry_window``
(300), ``blocked_timeout`` (60), and ``ssl_*`` for ``amqps://`` (see
:class:`~tqcore.transports.amqp_codec.AMQPURL`). With a prefix P, Celery must be
configured with ``task_default_queue=P+"celery"``, ``control_exchange=P+"celery"``,
``event_exchange`` and ``event_queue_prefix`` ``=P+"celeryev"`` to share the broker.

**Celery on the same queues**: a Celery worker declares its queues without
``x-max-priority`` unless ``task_queue_max_priority`` is set; RabbitMQ refuses
two declarations that differ, so set ``task_queue_max_priority=9`` on Celery (or
``max_priority=0`` here). Queues Celery created first are used as they are.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tqcore.transports.amqp_channels import AMQPChannels
from tqcore.transports.amqp_claims import AMQPClaims
from tqcore.transports.amqp_codec import parse_url
from tqcore.transports.amqp_core import created_entities
from tqcore.transports.amqp_inspect import AMQPInspection

__all__ = ["AMQPTransport", "created_entities", "parse_url"]


class AMQPTransport(AMQPClaims, AMQPInspection, AMQPChannels):
    """RabbitMQ transport (see the module docstring for the design)."""

    schemes = ("amqp", "amqps", "pyamqp")
    distributed = True
    #: Leases are the channel: they never run out while the client lives.
    leases_expire = False
    #: No bounded event history: ``subscribe_events(replay=...)`` starts live.
    keeps_event_history = False
    #: ``QueueStats.oldest_age`` is always 0.
    reports_oldest_age = False

    # -- worker registry -----------------------------------------------------------
    def register_worker(self, name: str, info: dict[str, Any], ttl: float) -> None:
        record = {"k": "worker", "name": name, "info": json.loads(json.dumps(info, default=str)),
                  "exp": time.time() + ttl}
        self._run(lambda: self.registry.publish(record))

    def unregister_worker(self, name: str) -> None:
        """Unregister ``name``; the worker is leaving, so messages pushed to this
        transport's consumers and never claimed go back to their queues first."""
        self.give_back(self.op_timeout)
        self._run(lambda: self.registry.publish({"k": "worker", "name": name, "exp": 0}))

    def list_workers(self) -> dict[str, dict[str, Any]]:
        async def read() -> dict[str, dict[str, Any]]:
            await self.registry.sync()
            return self.registry.live_workers()

        return dict(self._run(read))

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """Give buffered messages back, then close the connection."""
        self.give_back(min(5.0, self.op_timeout))
        with self._link_lock:
            link, self._link = self._link, None
        if link is not None:
            link.close()
        self._reset()

