"""Settling claimed messages on RabbitMQ: ack, nack, requeue (see :mod:`tqcore.transports.amqp`).

Everything that touches a channel runs on the I/O thread, on the channel the message
came from; a tag whose channel has closed is never settled (the broker has requeued
that message already).

**Acks are coalesced.** :meth:`AMQPSettle.ack` only queues the tags and, if no flush
is pending, posts one to the I/O thread: acks from every worker thread that arrive
before the I/O thread runs go out in the same loop turn. A flush sends one
``basic.ack`` with ``multiple=True`` for the longest run of tags from the bottom of the
channel's unsettled tags that are all being acked (a multiple ack never covers a
message somebody still holds or has not claimed), then single acks for the rest.

**Giving back** buffered messages (on :meth:`~tqcore.transports.amqp.AMQPTransport.close`
and when the worker unregisters): the consumers are cancelled, then each message
pushed to us but never claimed is republished with its attempts so far and the
original acked, so handing it back does not count as an attempt (a ``basic.reject``
would flag it redelivered, which the next claim counts as a lost attempt).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

from tqcore.exceptions import TransportError
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
from tqcore.transports.amqp_core import AMQPCore, Arrival, Consumers, Tag
from tqcore.transports.amqp_link import Chan
from tqcore.transports.base import DeadLetter, Delivery

logger = logging.getLogger("tqcore.transport.amqp")


def lost_claims(wire: WireMessage, method: Any) -> tuple[int, bool]:
    """Claims of this message lost with a consumer since it was published, and whether
    that number is the broker's own count (quorum ``x-delivery-count``) rather than
    the classic queues' ``redelivered`` flag (which says "at least one")."""
    count = wire.headers.get("x-delivery-count")
    if count is None:
        return int(bool(method.redelivered)), False
    try:
        return int(count), True
    except (TypeError, ValueError):
        return 1, True


def ack_tags(chan: Chan, tags: Iterable[int]) -> None:
    """Ack ``tags`` on ``chan`` (I/O thread) in as few frames as ``multiple`` allows."""
    if not chan.is_open:
        return  # the broker has requeued them
    unsettled = chan.unsettled
    todo = sorted(set(tags) & unsettled)
    if not todo:
        return
    unsettled.difference_update(todo)
    # A multiple ack settles every unsettled tag up to it: only go as far as the first
    # tag somebody else still holds (or that waits in the buffer).
    floor = min(unsettled) if unsettled else None
    run = 0
    while run < len(todo) and (floor is None or todo[run] < floor):
        run += 1
    basic_ack = chan.channel.basic_ack
    if run > 1:
        basic_ack(todo[run - 1], multiple=True)
    else:
        run = 0
    for tag in todo[run:]:
        basic_ack(tag)


def reject_tag(chan: Chan, tag: int) -> None:
    """Give message ``tag`` back to its queue, where it was (I/O thread)."""
    if chan.is_open and tag in chan.unsettled:
        chan.unsettled.discard(tag)
        chan.channel.basic_reject(tag, requeue=True)


class AMQPSettle(AMQPCore):
    """Part of :class:`~tqcore.transports.amqp.AMQPTransport`: ack, nack, requeue."""

    def _take(self, ids: Iterable[Any]) -> list[Tag]:
        """The still-valid tags among ``ids``, no longer held (each settles once)."""
        out = []
        with self._held_lock:
            for tag in ids:
                if isinstance(tag, Tag) and tag in self._held:
                    self._held.discard(tag)
                    out.append(tag)
        return out

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        link = self._link
        if link is None or link.pid != os.getpid():
            return  # a forked child: only the parent's channel can settle these
        with self._held_lock:  # once: other threads (I/O, claims) queue on this lock
            held = self._held
            tags = [t for t in (d.delivery_id for d in deliveries)
                    if isinstance(t, Tag) and t in held]
            if not tags:
                return
            held.difference_update(tags)
            self._acks += tags
            if self._acks_posted:
                return  # the pending flush takes these too
            self._acks_posted = True
        try:
            link.post(self._flush_acks)
        except TransportError:  # closed: the broker requeues what we did not ack
            with self._held_lock:
                self._acks_posted = False

    def _flush_acks(self) -> None:
        """Send every queued ack (I/O thread)."""
        with self._held_lock:
            acks, self._acks, self._acks_posted = self._acks, [], False
        by_chan: dict[Chan, list[int]] = {}
        for tag in acks:
            by_chan.setdefault(tag.chan, []).append(tag.tag)
        for chan, tags in by_chan.items():
            ack_tags(chan, tags)
        self._note_report()

    def _note_report(self) -> None:
        """Refresh the in-flight report if due (I/O thread; throttled, never waits)."""
        if self.registry.scheduled():
            return
        held, buffered = self.held_counts(), self.buffered_counts()
        if self.registry.due(held, buffered) is not None:
            asyncio.ensure_future(self.registry.report(held, buffered, wait=False))

    def nack(self, delivery: Delivery, reason: str) -> None:
        tags = self._take([delivery.delivery_id])
        if tags:
            self._run(lambda: self._dead_letter(tags[0], reason, delivery.attempts))
            self.link.soon(self._note_report)

    def requeue(self, delivery: Delivery, *, count_attempt: bool = True,
                delay: float | None = None) -> None:
        prior = delivery.attempts if count_attempt else delivery.attempts - 1
        tags = self._take([delivery.delivery_id])
        if tags:
            self._run(lambda: self._settle_requeue(tags[0], prior, delay or 0.0))
            self.link.soon(self._note_report)

    def renew(self, deliveries: Iterable[Delivery], lease: float) -> None:
        """Nothing to do: the channel is the lease (see the module docstring)."""

    async def _settle_requeue(self, tag: Tag, prior: int, wait: float) -> None:
        """Publish a copy recording ``prior`` claims, then ack the original."""
        if not tag.chan.is_open:
            return  # the broker has put the original back already: no copy
        try:
            await self._publish(tag.queue, tag.wire.copy(**{ATTEMPTS: prior or None}), wait)
        except BaseException:
            reject_tag(tag.chan, tag.tag)  # the original stays: give it back, not hold it
            raise
        ack_tags(tag.chan, [tag.tag])

    async def _dead_letter(self, tag: Tag, reason: str, attempts: int, *, report: bool = True
                           ) -> DeadLetter | None:
        """Publish a copy to the dead-letter queue, then ack the original; the
        :class:`DeadLetter` for :meth:`_report_dead` unless ``report`` is False."""
        if not tag.chan.is_open:
            return None  # the broker has put the original back already: no copy
        letter_id, now = uuid.uuid4().hex, time.time()
        copy = tag.wire.copy(**{ATTEMPTS: attempts, REASON: reason, DEAD_AT: now,
                                DEAD_ID: letter_id})
        try:
            await self._publish(tag.queue, copy, dead=True)
        except BaseException:
            reject_tag(tag.chan, tag.tag)
            raise
        ack_tags(tag.chan, [tag.tag])
        if not report:
            return None
        return DeadLetter(letter_id, tag.queue, from_wire(tag.wire, tag.queue), reason,
                          attempts, now, message_id(tag.wire))

    def dead_letter_raw(self, queue: str, payload: bytes, reason: str) -> None:
        wire = to_wire(payload).copy(**{ATTEMPTS: 0, REASON: reason, DEAD_AT: time.time(),
                                        DEAD_ID: uuid.uuid4().hex})
        self._run(lambda: self._publish(queue, wire, dead=True))

    # -- giving buffered messages back ---------------------------------------------------
    def give_back(self, timeout: float) -> None:
        """Stop consuming and return every buffered, unclaimed message to its queue
        (best effort: if the connection is gone the broker has them back already)."""
        link = self._link
        if link is None or link.closed or not link.connected:
            return
        try:
            self._run(self._give_back, timeout)
        except TransportError as exc:
            logger.debug("could not give buffered messages back: %s", exc)

    async def _give_back(self) -> None:
        if self._sub_lock is None:
            self._sub_lock = asyncio.Lock()
        async with self._sub_lock:
            consumers, self._consumers = self._consumers, Consumers()
            chan = consumers.chan
            if chan is not None and chan.is_open:
                for tag in consumers.tags.values():  # deliveries before cancel-ok: buffered
                    await chan.rpc("basic_cancel", tag)
        with self._held_lock:
            arrivals = [a for a in self._buffer if a.chan.is_open]
            self._buffer.clear()
        await asyncio.gather(*(self._return(a) for a in arrivals))
        self._note_report()

    async def _return(self, arrival: Arrival) -> None:
        wire = WireMessage.received(arrival.props, arrival.body)
        lost, _ = lost_claims(wire, arrival.method)
        tag = Tag(arrival.chan, arrival.method.delivery_tag, wire, arrival.queue)
        await self._settle_requeue(tag, wire.attempts + lost, 0.0)
