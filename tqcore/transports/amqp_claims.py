"""Claiming and settling messages on RabbitMQ (see :mod:`tqcore.transports.amqp`).

A claim takes messages with ``basic.get`` (manual ack) until it has ``limit`` or
every queue is empty; then, if it may wait, it consumes all its queues with
prefetch 1 until one message arrives, cancels those consumers and tops up with
``basic.get``. Nothing is prefetched beyond what the caller asked for, so the
broker's counts stay exact and a crash can only return messages a worker held.

Settling runs on the I/O thread, on the channel the message came from. A tag
whose channel has closed is never acked: the broker has requeued that message.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from tqcore.transports.amqp_codec import (
    ATTEMPTS,
    DEAD_AT,
    DEAD_ID,
    REASON,
    WireMessage,
    from_wire,
    message_id,
    to_wire,
)
from tqcore.transports.amqp_core import AMQPCore, Tag
from tqcore.transports.amqp_link import Chan
from tqcore.transports.base import DeadLetter, Delivery

logger = logging.getLogger("tqcore.transport.amqp")


class AMQPClaims(AMQPCore):
    """Part of :class:`~tqcore.transports.amqp.AMQPTransport`: claim, ack, nack, requeue."""

    def claim(self, queues: Sequence[str], *, consumer: str, limit: int, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        if limit <= 0 or not queues:
            return []
        out, dead = self._run(lambda: self._claim(list(queues), limit, timeout),
                              timeout + self.op_timeout)
        self._report_dead(dead)
        return list(out)

    async def _work_channel(self) -> Chan:
        async def setup(chan: Chan) -> None:
            await chan.rpc("basic_qos", prefetch_count=1)  # for the waiting consumers
            chan.on_close.append(self._channel_gone)

        return await self.link.channel("work", setup=setup)

    def _channel_gone(self, chan: Chan) -> None:
        # The broker requeued every unacked message of the channel: they are not ours.
        with self._held_lock:
            lost = sum(1 for t in self._held if t.chan is chan)
            self._held = {t for t in self._held if t.chan is not chan}
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

    async def _claim(self, queues: list[str], limit: int,
                     timeout: float) -> tuple[list[Delivery], list[DeadLetter]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for queue in queues:
            await self._ensure_queue(queue)
        start = next(self._rr) % len(queues)
        order = queues[start:] + queues[:start]
        out: list[Delivery] = []
        dead: list[DeadLetter] = []
        if self._get_lock is None:
            self._get_lock = asyncio.Lock()
        while True:
            chan = await self._work_channel()
            async with self._get_lock:
                progress = True
                while progress and len(out) < limit:
                    progress = False
                    for queue in order:
                        if len(out) >= limit:
                            break
                        got = await chan.get(self.entity(queue))
                        if got is not None:
                            progress = True
                            await self._accept(chan, queue, got, out, dead)
            if out or loop.time() >= deadline:
                break
            for queue, got in await self._wait(chan, order, deadline):
                await self._accept(chan, queue, got, out, dead)
        for extra in out[limit:]:
            # arrived while the waiting consumers were being cancelled: never claimed
            for tag in self._take([extra.delivery_id]):
                await self._settle_requeue(tag, extra.attempts - 1, 0.0)
        del out[limit:]
        if out:
            await self.registry.report(self.held_counts(), wait=True)
        return out, dead

    async def _wait(self, chan: Chan, queues: list[str],
                    deadline: float) -> list[tuple[str, tuple[Any, Any, bytes]]]:
        """Consume until one message arrives or ``deadline``; returns what arrived."""
        loop = asyncio.get_running_loop()
        arrived = loop.create_future()
        got: list[tuple[str, tuple[Any, Any, bytes]]] = []
        tags: dict[str, str] = {}

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            got.append((tags.get(method.consumer_tag, ""), (method, props, body)))
            if not arrived.done():
                arrived.set_result(None)

        try:
            for queue in queues:
                tags[await chan.consume(self.entity(queue), on_message)] = queue
            remaining = deadline - loop.time()
            if remaining > 0 and not got:
                try:
                    await asyncio.wait_for(asyncio.shield(arrived), remaining)
                except TimeoutError:
                    pass
            for tag in tags:
                await chan.rpc("basic_cancel", tag)  # deliveries before cancel-ok are in got
        except BaseException:
            for _, (method, _, _) in got:
                if chan.is_open:
                    chan.channel.basic_reject(method.delivery_tag, requeue=True)
            raise
        for i, (queue, message) in enumerate(got):
            if not queue:  # delivered before basic_consume returned its tag
                got[i] = (tags.get(message[0].consumer_tag, queues[0]), message)
        return got

    async def _accept(self, chan: Chan, queue: str, got: tuple[Any, Any, bytes],
                      out: list[Delivery], dead: list[DeadLetter]) -> None:
        method, props, body = got
        wire = WireMessage.received(props, body)
        tag = Tag(chan, method.delivery_tag, wire, queue)
        count = wire.headers.get("x-delivery-count")  # quorum queues count returns
        try:
            lost = int(count) if count is not None else int(bool(method.redelivered))
        except (TypeError, ValueError):
            lost = 1
        attempts = wire.attempts + lost + 1
        if attempts > self.max_deliveries:
            reason = (f"delivered {attempts - 1} times without being acknowledged"
                      f" (max_deliveries={self.max_deliveries}): worker lost")
            letter = await self._dead_letter(tag, reason, attempts - 1)
            if letter is not None:
                dead.append(letter)
        elif lost and count is None:
            # Classic queues only flag a redelivery: record the lost claim in the
            # message itself, so the next loss is counted on top of this one.
            await self._settle_requeue(tag, wire.attempts + 1, 0.0)
        else:
            with self._held_lock:
                self._held.add(tag)
            out.append(Delivery(self, queue, from_wire(wire, queue), attempts, wire.priority,
                                tag, message_id(wire)))

    # -- settling ------------------------------------------------------------------
    def _take(self, ids: Iterable[Any]) -> list[Tag]:
        """The still-valid tags among ``ids``, no longer held (each settles once)."""
        out = []
        with self._held_lock:
            for tag in ids:
                if isinstance(tag, Tag) and tag in self._held:
                    self._held.discard(tag)
                    out.append(tag)
        return out

    @staticmethod
    def _ack_now(tag: Tag) -> None:
        if tag.chan.is_open:  # a tag of a closed channel was requeued by the broker
            tag.chan.channel.basic_ack(tag.tag)

    def _settled(self, acks: list[Tag]) -> None:
        """Ack ``acks`` (I/O thread) and refresh the in-flight report."""
        for tag in acks:
            self._ack_now(tag)
        asyncio.ensure_future(self.registry.report(self.held_counts(), wait=False))

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        tags = self._take(d.delivery_id for d in deliveries)
        if tags:
            self.link.soon(self._settled, tags)

    def nack(self, delivery: Delivery, reason: str) -> None:
        tags = self._take([delivery.delivery_id])
        if tags:
            self._run(lambda: self._dead_letter(tags[0], reason, delivery.attempts))
            self.link.soon(self._settled, [])

    def requeue(self, delivery: Delivery, *, count_attempt: bool = True,
                delay: float | None = None) -> None:
        prior = delivery.attempts if count_attempt else delivery.attempts - 1
        tags = self._take([delivery.delivery_id])
        if tags:
            self._run(lambda: self._settle_requeue(tags[0], prior, delay or 0.0))
            self.link.soon(self._settled, [])

    def renew(self, deliveries: Iterable[Delivery], lease: float) -> None:
        """Nothing to do: the channel is the lease (see the module docstring)."""

    async def _settle_requeue(self, tag: Tag, prior: int, wait: float) -> None:
        """Publish a copy recording ``prior`` claims, then ack the original."""
        if not tag.chan.is_open:
            return  # the broker has put the original back already: no copy
        try:
            await self._publish(tag.queue, tag.wire.copy(**{ATTEMPTS: prior or None}), wait)
        except BaseException:
            if tag.chan.is_open:  # the original stays: give it back rather than hold it
                tag.chan.channel.basic_reject(tag.tag, requeue=True)
            raise
        self._ack_now(tag)

    async def _dead_letter(self, tag: Tag, reason: str, attempts: int) -> DeadLetter | None:
        """Publish a copy to the dead-letter queue, then ack the original."""
        if not tag.chan.is_open:
            return None  # the broker has put the original back already: no copy
        letter_id, now = uuid.uuid4().hex, time.time()
        copy = tag.wire.copy(**{ATTEMPTS: attempts, REASON: reason, DEAD_AT: now,
                                DEAD_ID: letter_id})
        try:
            await self._publish(tag.queue, copy, dead=True)
        except BaseException:
            if tag.chan.is_open:
                tag.chan.channel.basic_reject(tag.tag, requeue=True)
            raise
        self._ack_now(tag)
        return DeadLetter(letter_id, tag.queue, from_wire(tag.wire, tag.queue), reason,
                          attempts, now, message_id(tag.wire))

    def dead_letter_raw(self, queue: str, payload: bytes, reason: str) -> None:
        wire = to_wire(payload).copy(**{ATTEMPTS: 0, REASON: reason, DEAD_AT: time.time(),
                                        DEAD_ID: uuid.uuid4().hex})
        self._run(lambda: self._publish(queue, wire, dead=True))
