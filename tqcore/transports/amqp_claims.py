"""Claiming messages on RabbitMQ (see :mod:`tqcore.transports.amqp`).

Every queue a transport claims from gets a consumer on the transport's *work channel*
(manual acks), started the first time a claim names the queue and kept. The broker
pushes messages to it, up to the consumer's prefetch, and the I/O thread appends them
to an in-process buffer; a claim takes what the buffer holds for its queues in the
calling thread, without a round trip to the I/O thread, whenever the buffer holds
enough. Pushed messages stay unacknowledged, so they are the broker's until acked: a
crash returns them (counted as attempts, as for claimed ones).

**Prefetch** is sized to the claims: a consumer is started with a prefetch of what the
transport holds plus the claim's ``limit``, so a worker's consumers never have more
messages than it could claim (its ``prefetch_multiplier x concurrency``). A later
claim that may take more restarts the consumers with a larger prefetch (what the old
ones delivered stays claimable); prefetch never shrinks.

**Completeness**: a claim that finds fewer than ``limit`` messages, and cannot wait,
asks each queue for one more with ``basic.get`` on the same channel. The broker
answers after every message it pushed to that channel before, so once every queue
answered "empty" the buffer holds everything there was (up to the prefetch); a
message ``basic.get`` does return joins the buffer behind the pushed ones. A claim with
a timeout that already has messages returns them at once; with none it makes the same
check, then waits for a push.

**Counts**: buffered messages are neither ready (the broker counts them unacked) nor
claimed; ``queue_stats`` counts them in the depth (this transport's own, and others'
from their registry reports), and ``purge`` cannot reach them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from tqcore.transports.amqp_codec import WireMessage, message_id, received
from tqcore.transports.amqp_core import Arrival, Consumers, Tag
from tqcore.transports.amqp_link import Chan
from tqcore.transports.amqp_settle import AMQPSettle, lost_claims
from tqcore.transports.base import DeadLetter, Delivery

logger = logging.getLogger("tqcore.transport.amqp")

#: AMQP's largest prefetch count (a short).
MAX_PREFETCH = 65535


class AMQPClaims(AMQPSettle):
    """Part of :class:`~tqcore.transports.amqp.AMQPTransport`: claim."""

    def claim(self, queues: Sequence[str], *, consumer: str, limit: int, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        if limit <= 0 or not queues:
            return []
        names = list(dict.fromkeys(queues))
        deadline = time.monotonic() + timeout
        out: list[Delivery] = []
        dead: list[DeadLetter] = []
        synced = False
        while True:
            self._subscribed(names, limit - len(out))
            arrivals = self._take_buffered(names, limit - len(out))
            if arrivals:
                self._accept(arrivals, out, dead)
            if len(out) >= limit or (out and timeout > 0):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not synced:
                # Cannot wait: make sure nothing is on its way. Everything pushed before
                # the broker's answers is buffered now; a get that returned a message
                # means there may be more: check again.
                synced = not self._run(lambda: self._sync(names))
                continue
            if out or remaining <= 0:
                break
            # May wait: the consumers have room (see _subscribed), so whatever is ready
            # or arrives is pushed to us without asking.
            self._wait_arrival(names, remaining)
        self._report_dead(dead)
        if out:
            self._report_claimed()
        return out

    # -- consumers -----------------------------------------------------------------------
    def _subscribed(self, queues: list[str], limit: int) -> None:
        """Make sure every queue has a consumer with room for ``limit`` more messages."""
        with self._held_lock:
            want = min(MAX_PREFETCH, len(self._held) + limit)
        link, consumers = self._link, self._consumers
        chan = consumers.chan
        if (link is not None and chan is not None and chan.is_open
                and chan.generation == link.generation and consumers.prefetch >= want
                and all(q in consumers.tags for q in queues)):
            return
        self._run(lambda: self._subscribe(queues, want))

    async def _subscribe(self, queues: list[str], want: int) -> None:
        for queue in queues:
            await self._ensure_queue(queue)
        if self._sub_lock is None:
            self._sub_lock = asyncio.Lock()
        async with self._sub_lock:
            chan = await self._work_channel()
            consumers = self._consumers
            if consumers.chan is not chan:
                consumers = self._consumers = Consumers(chan)
            if want > consumers.prefetch:
                # A consumer's prefetch is fixed when it starts: start them again. What
                # the old ones delivered is still ours to claim and ack.
                await chan.rpc("basic_qos", prefetch_count=want)
                old, consumers.tags, consumers.prefetch = consumers.tags, {}, want
                for tag in old.values():
                    await chan.rpc("basic_cancel", tag)
            for queue in queues:
                if queue not in consumers.tags:
                    consumers.tags[queue] = await chan.consume(
                        self.entity(queue), self._on_message(chan, queue))

    def _on_message(self, chan: Chan, queue: str) -> Any:
        def on_message(_channel: Any, method: Any, props: Any, body: bytes) -> None:
            self._arrive(Arrival(chan, queue, method, props, body))

        return on_message

    def _arrive(self, arrival: Arrival) -> None:
        """Buffer a pushed (or fetched) message (I/O thread)."""
        arrival.chan.unsettled.add(arrival.method.delivery_tag)
        with self._held_lock:
            self._buffer.append(arrival)
            if not self._waiters or self._wake_pending:
                return
            self._wake_pending = True
        # Wake a waiting claim once per loop turn, after every message of this read is
        # buffered: one wake-up (and GIL hand-over) per burst, not one per message.
        self.link.loop.call_soon(self._wake)

    def _wake(self) -> None:
        with self._held_lock:
            self._wake_pending = False
            self._arrived.notify_all()

    async def _work_channel(self) -> Chan:
        async def setup(chan: Chan) -> None:
            chan.on_close.append(self._channel_gone)
            chan.channel.add_on_cancel_callback(lambda frame: self._cancelled(chan, frame))

        return await self.link.channel("work", setup=setup)

    def _cancelled(self, chan: Chan, frame: Any) -> None:
        """The broker cancelled a consumer (its queue was deleted): the next claim
        starts it again (declaring the queue again)."""
        tag = frame.method.consumer_tag
        consumers = self._consumers
        if consumers.chan is chan:
            for queue, known in list(consumers.tags.items()):
                if known == tag:
                    del consumers.tags[queue]
                    self._declared.pop(("queue", queue), None)

    def _channel_gone(self, chan: Chan) -> None:
        # The broker requeued every unacked message of the channel: they are not ours.
        with self._held_lock:
            lost = sum(1 for t in self._held if t.chan is chan)
            self._held = {t for t in self._held if t.chan is not chan}
            self._buffer = deque(a for a in self._buffer if a.chan is not chan)
            self._arrived.notify_all()  # a waiting claim starts new consumers
        if self._consumers.chan is chan:
            self._consumers = Consumers()
        if self._link is None or self._link.closing:
            return  # our own close(): the broker requeues them, as it should
        if lost and "acknowledgement" in str(chan.closed):
            logger.error("RabbitMQ closed the channel: a message stayed unacknowledged longer"
                         " than its consumer_timeout; %d held messages go back to their queues"
                         " and will run again (raise consumer_timeout for long acks_late tasks)",
                         lost)
        elif lost:
            logger.warning("broker channel lost (%s): %d held messages go back to their queues",
                           chan.closed, lost)

    # -- taking --------------------------------------------------------------------------
    def _take_buffered(self, queues: list[str], n: int) -> list[Arrival]:
        """Up to ``n`` buffered messages of ``queues``, oldest first (others stay)."""
        with self._held_lock:
            buffer = self._buffer
            if not buffer:
                return []
            taken: list[Arrival] = []
            skipped: list[Arrival] = []
            while buffer and len(taken) < n:
                arrival = buffer.popleft()
                if not arrival.chan.is_open:
                    continue  # the broker has it back already
                (taken if arrival.queue in queues else skipped).append(arrival)
            buffer.extendleft(reversed(skipped))
            return taken

    def _wait_arrival(self, queues: list[str], timeout: float) -> None:
        with self._held_lock:
            if any(a.queue in queues for a in self._buffer):
                return
            self._waiters += 1
            try:
                self._arrived.wait(timeout)
            finally:
                self._waiters -= 1

    async def _sync(self, queues: list[str]) -> bool:
        """One ``basic.get`` per queue on the work channel; True if any returned one."""
        chan = self._consumers.chan
        if chan is None or not chan.is_open:
            return True  # the consumers are gone: the claim starts them again
        if self._get_lock is None:
            self._get_lock = asyncio.Lock()
        progress = False
        async with self._get_lock:
            for queue in queues:
                got = await chan.get(self.entity(queue))
                if got is not None:
                    progress = True
                    self._arrive(Arrival(chan, queue, *got))
        return progress

    def _accept(self, arrivals: list[Arrival], out: list[Delivery],
                dead: list[DeadLetter]) -> None:
        """Hand ``arrivals`` out as deliveries, counting attempts; a message lost before
        (by a crashed consumer) is recounted or dead-lettered on the I/O thread."""
        fix: list[tuple[Tag, int]] = []
        big: list[tuple[Tag, int]] = []
        held: list[Tag] = []
        cap = self.claim_max_size
        for arrival in arrivals:
            wire = WireMessage.received(arrival.props, arrival.body)
            tag = Tag(arrival.chan, arrival.method.delivery_tag, wire, arrival.queue)
            lost, counted = lost_claims(wire, arrival.method)
            attempts = wire.attempts + lost + 1
            if cap and len(arrival.body) > cap:
                # Its envelope would be bigger still: dead-lettered as the worker would,
                # without building that envelope (a base64 copy and more of a huge body).
                big.append((tag, attempts))
                continue
            if attempts > self.max_deliveries or (lost and not counted):
                fix.append((tag, attempts))
                continue
            held.append(tag)
            payload, parsed = received(wire, arrival.queue)
            delivery = Delivery(self, arrival.queue, payload, attempts, wire.priority, tag,
                                message_id(wire))
            delivery.parsed = parsed
            out.append(delivery)
        with self._held_lock:
            self._held.update(held)
        if fix or big:
            dead += self._run(lambda: self._fix(fix, big))

    async def _fix(self, fix: list[tuple[Tag, int]], big: list[tuple[Tag, int]]
                   ) -> list[DeadLetter]:
        """Dead-letter or recount ``fix`` (lost claims), dead-letter ``big`` (over the
        size cap); the dead letters to report (those of lost workers)."""
        for tag, attempts in big:
            reason = (f"malformed message: message too large: {len(tag.wire.body)} bytes"
                      f" (limit {self.claim_max_size})")
            logger.error("message %r on %s dead-lettered: %s", message_id(tag.wire),
                         tag.queue, reason)
            await self._dead_letter(tag, reason, attempts, report=False)
        dead: list[DeadLetter] = []
        for tag, attempts in fix:
            if attempts > self.max_deliveries:
                reason = (f"delivered {attempts - 1} times without being acknowledged"
                          f" (max_deliveries={self.max_deliveries}): worker lost")
                letter = await self._dead_letter(tag, reason, attempts - 1)
                if letter is not None:
                    dead.append(letter)
            else:
                # Classic queues only flag a redelivery: record the lost claim in the
                # message itself, so the next loss is counted on top of this one.
                await self._settle_requeue(tag, tag.wire.attempts + 1, 0.0)
        return dead

    def _report_claimed(self) -> None:
        """Publish the in-flight counts if due: at once (and confirmed) when the throttle
        allows, so another process sees a claim as soon as it returns."""
        if self.registry.scheduled():
            return
        held, buffered = self.held_counts(), self.buffered_counts()
        due = self.registry.due(held, buffered)
        if due:
            self._run(lambda: self.registry.report(held, buffered, wait=True))
        elif due is not None:
            self.link.soon(self._note_report)
