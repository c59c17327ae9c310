"""Worker registry, known queues and in-flight reports for the AMQP transport.

AMQP 0-9-1 cannot list queues, read a message without taking it, or count a queue's
unacknowledged messages; the management HTTP API can, but it is often disabled.
So the cluster-wide facts the interface needs live in one RabbitMQ **stream**,
``tq.registry`` (streams are read without being consumed away, by any number of
readers):

``{"k": "worker", "name", "info", "exp"}``
    a registration (``exp`` = epoch expiry on the writer's clock; 0 unregisters).
``{"k": "queue", "name"}``
    a queue some client declared, so a monitor can list queues nobody consumes.
``{"k": "inflight", "src", "counts": {queue: n}, "buffered": {queue: n}, "exp"}``
    how many messages a transport holds unacknowledged, per queue: claimed
    (``counts``, in flight) and pushed to its consumers but not claimed yet
    (``buffered``: readers count those as waiting, i.e. in the depth).
``{"k": "sync", "id"}``
    a marker: a reader appends one and reads until it sees it, so it has read
    everything written before (read-your-writes across processes).

A reader follows the stream from ``registry_window`` seconds ago (300 by default;
the stream keeps twice that) and folds the records; it stops following when idle.
An in-flight report is only believed while its writer's *liveness queue*
``tq.alive.<src>`` exists: an auto-delete queue the writer consumes, which the
broker deletes the moment the writer's connection dies (a SIGKILLed worker's
report disappears at once, not after its expiry).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from tqcore.exceptions import TransportError
from tqcore.transports.amqp_codec import WireMessage
from tqcore.transports.amqp_link import NOT_FOUND, Chan, ChannelError

if TYPE_CHECKING:
    from tqcore.transports.amqp_core import AMQPCore

logger = logging.getLogger("tqcore.transport.amqp")

#: Seconds without a read after which a reader stops following the stream.
IDLE_UNFOLLOW = 30.0
#: In-flight reports: at most one per this many seconds, refreshed this often, kept this long.
REPORT_EVERY, REPORT_REFRESH, REPORT_TTL = 1.0, 5.0, 20.0


class Registry:
    """The registry stream of one transport (all methods run on the I/O loop)."""

    def __init__(self, transport: AMQPCore) -> None:
        self.t = transport
        self.name = transport.entity("tq.registry", True)
        self.window = transport.config.float_option("registry_window", 300.0)
        self.workers: dict[str, tuple[dict[str, Any], float]] = {}
        self.queues: set[str] = set()
        self.inflight: dict[str, tuple[dict[str, int], dict[str, int], float]] = {}
        self.supported = True
        self._follower: Chan | None = None
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._last_read = 0.0
        self._declared_gen = -1
        self._alive: Chan | None = None
        self._reported: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self._reported_at = 0.0
        self._report_pending = False
        self._follow_lock: asyncio.Lock | None = None

    async def _ensure(self) -> bool:
        link = self.t.link
        await link.connection()
        if self._declared_gen == link.generation:
            return self.supported
        chan = await link.channel("admin", probing=True)
        try:
            await chan.rpc("queue_declare", self.name, durable=True, arguments={
                "x-queue-type": "stream", "x-max-age": f"{int(self.window * 2)}s",
                "x-stream-max-segment-size-bytes": 1_000_000,
                "x-max-length-bytes": 100_000_000})
            self.supported = True
        except ChannelError as exc:
            chan = await link.channel("admin", probing=True)
            try:  # declared before with other settings (another registry_window)?
                await chan.rpc("queue_declare", self.name, passive=True)
                self.supported = True
            except ChannelError:
                # No streams (RabbitMQ < 3.9, another broker): the registry is local only.
                logger.warning("no registry stream on this broker (%s): workers and queues"
                               " are only known to the process that registered them", exc)
                self.supported = False
        self._declared_gen = link.generation
        return self.supported

    async def publish(self, record: dict[str, Any]) -> None:
        """Append a record and wait for the broker's confirm."""
        if not await self._ensure():
            self._fold(record)  # local only
            return
        wire = WireMessage(json.dumps(record).encode(), {}, "application/json", "utf-8", 2)
        chan = await self.t.publisher()
        if not await chan.publish("", self.name, wire):
            raise TransportError(f"registry stream {self.name!r} is missing")

    # -- reading -------------------------------------------------------------------
    async def sync(self) -> None:
        """Make the fold include everything written before this call."""
        self._last_read = time.monotonic()
        if not await self._ensure():
            return
        await self._follow()
        marker = uuid.uuid4().hex
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[marker] = fut
        try:
            await self.publish({"k": "sync", "id": marker})
            await asyncio.wait_for(fut, self.t.op_timeout)
        except TimeoutError:
            raise TransportError("the registry stream did not catch up") from None
        finally:
            self._markers.pop(marker, None)

    async def _follow(self) -> None:
        if self._follow_lock is None:
            self._follow_lock = asyncio.Lock()
        async with self._follow_lock:  # one follower, however many readers ask at once
            if self._follower is not None and self._follower.is_open:
                return
            self.workers.clear()
            self.queues.clear()
            self.inflight.clear()
            chan = await self.t.link.open_channel()
            chan.on_close.append(self._follower_gone)
            await chan.rpc("basic_qos", prefetch_count=1000)
            start = dt.datetime.fromtimestamp(time.time() - self.window, dt.UTC)
            await chan.consume(self.name, self._on_record, arguments={"x-stream-offset": start})
            self._follower = chan
            asyncio.get_running_loop().call_later(IDLE_UNFOLLOW, self._maybe_unfollow)

    def _follower_gone(self, chan: Chan) -> None:
        error = chan.closed or TransportError("registry reader closed")
        for fut in self._markers.values():  # nobody will see these markers now
            if not fut.done():
                fut.set_exception(error)

    def _maybe_unfollow(self) -> None:
        chan = self._follower
        if chan is None or not chan.is_open:
            return
        if time.monotonic() - self._last_read >= IDLE_UNFOLLOW:
            # Nobody asked lately: stop receiving every worker's heartbeats.
            self._follower = None
            asyncio.ensure_future(chan.close())
        else:
            asyncio.get_running_loop().call_later(IDLE_UNFOLLOW, self._maybe_unfollow)

    def _on_record(self, channel: Any, method: Any, _props: Any, body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)
        try:
            record = json.loads(body)
        except ValueError:
            return
        if isinstance(record, dict):
            self._fold(record)

    def _fold(self, record: dict[str, Any]) -> None:
        kind = record.get("k")
        if kind == "worker":
            name, exp = str(record.get("name")), float(record.get("exp") or 0)
            if exp > 0:
                info = record.get("info")
                self.workers[name] = (info if isinstance(info, dict) else {}, exp)
            else:
                self.workers.pop(name, None)
        elif kind == "queue":
            self.queues.add(str(record.get("name")))
        elif kind == "inflight":
            counts = record.get("counts") or {}
            buffered = record.get("buffered") or {}
            self.inflight[str(record.get("src"))] = (
                {str(q): int(n) for q, n in counts.items()},
                {str(q): int(n) for q, n in buffered.items()}, float(record.get("exp") or 0))
        elif kind == "sync":
            fut = self._markers.get(str(record.get("id")))
            if fut is not None and not fut.done():
                fut.set_result(None)

    def live_workers(self) -> dict[str, dict[str, Any]]:
        """Registrations not yet expired (on this host's clock)."""
        now = time.time()
        for name in [n for n, (_, exp) in self.workers.items() if exp < now - self.window]:
            del self.workers[name]  # long gone: keep the fold bounded
        return {name: info for name, (info, exp) in self.workers.items() if exp > now}

    async def remote_inflight(self) -> tuple[dict[str, int], dict[str, int]]:
        """Messages other live transports hold, per queue: (claimed, buffered)."""
        now = time.time()
        total: dict[str, int] = {}
        waiting: dict[str, int] = {}
        for src, (counts, buffered, exp) in list(self.inflight.items()):
            if exp <= now:
                del self.inflight[src]
                continue
            if src == self.t.id or not (any(counts.values()) or any(buffered.values())):
                continue
            if not await self._alive_exists(src):
                self.inflight.pop(src, None)
                continue
            for q, n in counts.items():
                total[q] = total.get(q, 0) + n
            for q, n in buffered.items():
                waiting[q] = waiting.get(q, 0) + n
        return total, waiting

    async def _alive_exists(self, src: str) -> bool:
        chan = await self.t.link.channel("probe", probing=True)
        try:
            await chan.rpc("queue_declare", self.t.entity(f"tq.alive.{src}"), passive=True)
        except ChannelError as exc:
            if exc.code == NOT_FOUND:
                return False
            raise
        return True

    # -- in-flight reports ---------------------------------------------------------
    def scheduled(self) -> bool:
        """True while a deferred report is pending (it will read fresh counts itself):
        callers may skip counting."""
        return self._report_pending and time.monotonic() - self._reported_at < REPORT_EVERY

    def due(self, counts: dict[str, int], buffered: dict[str, int]) -> bool | None:
        """Whether a report of these figures would be sent now (True), deferred (False)
        or is not needed (None). Read from any thread: a hint, :meth:`report` decides."""
        if not self.supported:
            return None
        now = time.monotonic()
        changed = (counts, buffered) != self._reported
        if not changed and (not (counts or buffered)
                            or now - self._reported_at < REPORT_REFRESH / 2):
            return None
        if now - self._reported_at < REPORT_EVERY:
            return None if self._report_pending else False
        return True

    async def report(self, counts: dict[str, int], buffered: dict[str, int],
                     wait: bool) -> None:
        """Publish this transport's in-flight counts (throttled; see module docstring)."""
        due = self.due(counts, buffered)
        if due is None:
            return
        if not due:
            self._report_pending = True
            asyncio.get_running_loop().call_later(
                REPORT_EVERY - (time.monotonic() - self._reported_at), self._deferred_report)
            return
        self._reported, self._reported_at = (dict(counts), dict(buffered)), time.monotonic()
        coro = self._send_report(dict(counts), dict(buffered))
        if wait:
            await coro
        else:
            asyncio.ensure_future(coro)

    def _deferred_report(self) -> None:
        self._report_pending = False
        asyncio.ensure_future(self._safe(self.report(
            self.t.held_counts(), self.t.buffered_counts(), wait=False)))

    async def _safe(self, coro: Any) -> None:
        try:
            await coro
        except TransportError as exc:
            logger.debug("in-flight report failed: %s", exc)

    async def _send_report(self, counts: dict[str, int], buffered: dict[str, int]) -> None:
        try:
            if counts or buffered:
                await self._ensure_alive()
            await self.publish({"k": "inflight", "src": self.t.id, "counts": counts,
                                "buffered": buffered, "exp": time.time() + REPORT_TTL})
        except TransportError as exc:
            logger.debug("in-flight report failed: %s", exc)
            return
        if counts or buffered:
            asyncio.get_running_loop().call_later(REPORT_REFRESH, self._deferred_report)

    async def _ensure_alive(self) -> None:
        if self._alive is not None and self._alive.is_open:
            return
        chan = await self.t.link.open_channel()
        name = self.t.entity(f"tq.alive.{self.t.id}")
        await chan.rpc("queue_declare", name, auto_delete=True, arguments={"x-expires": 60_000})
        await chan.consume(name, lambda *_: None, auto_ack=True)
        self._alive = chan
