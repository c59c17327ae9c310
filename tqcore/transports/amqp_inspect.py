"""Queue figures, purge and dead-letter browsing on RabbitMQ.

Depths come from passive ``queue.declare`` (ready messages only); scheduled
messages are the depth of the queue's ETA wait queues; in-flight counts are this
transport's own plus those other live transports report in the registry;
consumers are the live registered workers serving the queue. ``oldest_age`` is 0:
AMQP cannot look at a message without taking it (the management API could).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from tqcore.transports import amqp_delay as delay
from tqcore.transports.amqp_codec import (
    DEAD_AT,
    DEAD_ID,
    REASON,
    WireMessage,
    from_wire,
    jsonable,
    message_id,
)
from tqcore.transports.amqp_core import AMQPCore
from tqcore.transports.amqp_link import NOT_FOUND, ChannelError
from tqcore.transports.amqp_settle import ack_tags
from tqcore.transports.base import DeadLetter, QueueStats

logger = logging.getLogger("tqcore.transport.amqp")

#: Most dead letters read from one queue by :meth:`AMQPInspection.dead_letters`.
DEAD_READ_MAX = 10_000


class AMQPInspection(AMQPCore):
    """Part of :class:`~tqcore.transports.amqp.AMQPTransport`: stats, purge, dead letters."""

    async def _count(self, name: str) -> int | None:
        """Ready messages of queue ``name`` (passive declare), None if it does not exist."""
        chan = await self.link.channel("probe", probing=True)
        try:
            frame = await chan.rpc("queue_declare", self.entity(name), passive=True)
        except ChannelError as exc:
            if exc.code == NOT_FOUND:
                return None
            raise
        return int(frame.method.message_count)

    async def _ladder_levels(self, queue: str) -> list[str]:
        if self._declared.get(("ladder", queue)) != self.link.generation and \
                await self._count(delay.wait_queue(queue, 0)) is None:
            return []
        return [delay.wait_queue(queue, level) for level in range(delay.LEVELS)]

    async def _known_queues(self) -> list[str]:
        await self.registry.sync()
        names = set(self._local_queues) | self.registry.queues
        for info in self.registry.live_workers().values():
            names |= {q for q in info.get("queues") or [] if isinstance(q, str)}
        return sorted(names)

    def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        return list(self._run(lambda: self._stats(queues)))

    async def _stats(self, queues: Sequence[str] | None) -> list[QueueStats]:
        names = await self._known_queues() if queues is None else list(queues)
        if queues is not None:
            await self.registry.sync()
        consumers = Counter(q for info in self.registry.live_workers().values()
                            for q in set(info.get("queues") or []) if isinstance(q, str))
        remote, remote_buffered = await self.registry.remote_inflight()
        local, buffered = self.held_counts(), self.buffered_counts()
        out = []
        for name in names:
            scheduled = 0
            for level in await self._ladder_levels(name):
                scheduled += await self._count(level) or 0
            # Pushed to a consumer but not claimed yet: still waiting, so in the depth.
            waiting = buffered.get(name, 0) + remote_buffered.get(name, 0)
            out.append(QueueStats(
                name=name, depth=(await self._count(name) or 0) + waiting, scheduled=scheduled,
                in_flight=local.get(name, 0) + remote.get(name, 0),
                dead_lettered=await self._count(f"{name}.dead") or 0, oldest_age=0.0,
                consumers=consumers.get(name, 0)))
        return out

    def purge(self, queue: str) -> int:
        async def purge() -> int:
            # Pushed to our consumers but unclaimed: waiting like the ready ones, so gone
            # too (other processes' buffers are out of reach, as on Celery).
            with self._held_lock:
                mine = [a for a in self._buffer if a.queue == queue and a.chan.is_open]
                self._buffer = deque(a for a in self._buffer if a not in mine)
            for arrival in mine:
                ack_tags(arrival.chan, [arrival.method.delivery_tag])
            total = len(mine)
            for name in [queue, *await self._ladder_levels(queue)]:
                if await self._count(name) is None:
                    continue
                chan = await self.link.channel("probe", probing=True)
                frame = await chan.rpc("queue_purge", self.entity(name))
                total += int(frame.method.message_count)
            return total

        return int(self._run(purge))

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        async def read() -> list[DeadLetter]:
            names = [queue] if queue is not None else await self._known_queues()
            letters: list[DeadLetter] = []
            for name in names:
                letters += await self._read_dead(name)
            letters.sort(key=lambda d: d.dead_at, reverse=True)
            return letters[:limit]

        return list(self._run(read))

    async def _read_dead(self, queue: str) -> list[DeadLetter]:
        """Browse ``<queue>.dead``: consume it unacked, then close the channel so the
        broker puts every message back where it was (concurrent readers may see fewer)."""
        count = min(await self._count(f"{queue}.dead") or 0, DEAD_READ_MAX)
        if not count:
            return []
        loop = asyncio.get_running_loop()
        got: list[tuple[Any, bytes]] = []
        done = loop.create_future()

        def on_message(_ch: Any, _method: Any, props: Any, body: bytes) -> None:
            got.append((props, body))
            if len(got) >= count and not done.done():
                done.set_result(None)

        chan = await self.link.open_channel()
        try:
            await chan.rpc("basic_qos", prefetch_count=count)
            await chan.consume(self.entity(f"{queue}.dead"), on_message)
            try:
                await asyncio.wait_for(done, 5.0)
            except TimeoutError:
                logger.warning("read %d of %d dead letters of %s", len(got), count, queue)
        finally:
            await chan.close()
        return [_letter(queue, WireMessage.received(props, body), i)
                for i, (props, body) in enumerate(got)]


def _letter(queue: str, wire: WireMessage, index: int) -> DeadLetter:
    headers = wire.headers
    reason = headers.get(REASON)
    if reason is None:  # dead-lettered by RabbitMQ itself (a DLX someone configured)
        deaths = headers.get("x-death") or [{}]
        reason = f"rabbitmq: {jsonable(deaths[0].get('reason', 'unknown'))}"
    try:
        dead_at = float(jsonable(headers.get(DEAD_AT) or wire.timestamp or 0))
    except (TypeError, ValueError):
        dead_at = 0.0
    return DeadLetter(str(jsonable(headers.get(DEAD_ID) or f"{queue}.dead:{index}")), queue,
                      from_wire(wire, queue), str(jsonable(reason)), wire.attempts, dead_at,
                      message_id(wire))

