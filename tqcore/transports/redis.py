"""The Redis broker (``redis://``, ``rediss://``), speaking kombu's storage format.

Key schema (every name below is prefixed with the URL's ``prefix``, like kombu's
``global_keyprefix``; ``<q>`` is a queue name, ``SEP`` is ``"\\x06\\x16"``):

``<q>``, ``<q>SEP3``, ``<q>SEP6``, ``<q>SEP9``  (LIST, kombu's)
    ready messages: each element is the kombu JSON envelope exactly as a Celery
    producer writes it. Producers ``LPUSH``; claims take from the right end (FIFO).
    Priority ``p`` (0-9) lands in step ``max(s in [0, 3, 6, 9] if s <= p)`` and
    **lower steps are served first**, as in Celery on Redis (the embedded brokers
    serve higher numbers first: see :attr:`RedisTransport.priority_highest_first`).
``_kombu.binding.<q>``, ``_kombu.binding_permanent.<q>``  (SET, kombu's)
    ``<q>SEPSEP<q>``: the binding a Celery worker declares, so Celery tools see the queue.
``tq:meta:<q>``  (HASH id -> ``"<attempts> <enqueued ms>"``)
    claims so far and the server time of the first enqueue, for every message tqcore
    enqueued or claimed; ``queue_stats`` reads the age of the oldest ready message
    from the entry of the element at the right end of each list.
``tq:msgs:<q>``  (HASH id -> step index + element)
    messages out of the lists: leased ones, and scheduled ones (ETA, delayed requeue).
``tq:leases:<q>``  (ZSET id -> lease deadline, server ms)
``tq:acked:<q>``  (ZSET id -> when it was settled, server ms; expiring)
    the ids acked or dead-lettered in the last 30 s: a publish retried after its reply
    was lost skips them (see ``ENQUEUE``), so a message that already ran is not
    enqueued again.
``tq:eta:<q>``  (ZSET id -> ETA, ms)
    promoted to the list by the claim script once due.
``tq:wake:<q>``  (LIST, capped, expiring)
    wake tokens: every script that makes messages ready pushes some; a consumer that
    found nothing blocks on ``BLPOP`` of its queues' wake lists (with a short timeout,
    as messages LPUSHed by Celery producers push none).
``tq:claimed:<token>``  (STRING, expires after a minute)
    what one claim call leased (msgpack of queue index and id pairs): the same call
    retried after its reply was lost hands those out again (see ``CLAIM``); the
    claiming thread's next claim deletes it.
``tq:dead:<q>``  (STREAM, capped)
    dead letters: ``seq``, ``queue``, ``reason``, ``attempts``, ``dead_at`` (ms),
    ``message_id``, ``payload``.
``tq:seq`` (counter, orders dead letters across queues), ``tq:queues`` (SET of queue
names), ``tq:workers`` (HASH name -> info JSON) + ``tq:workers:expiry`` (ZSET),
``tq:events`` (STREAM, event history), ``/<db>.celeryev/<key>`` and
``/<db>.celery.pidbox`` (PUB/SUB), ``<oid>.reply.celery.pidbox`` (LIST): see
:mod:`tqcore.transports.redis_channels`.

A message's *id* is its envelope's ``properties.delivery_tag``. Claiming is one Lua
script (:mod:`tqcore.transports.redis_scripts`): it promotes due ETAs, returns expired
leases to the head of their list, then pops up to ``limit`` elements and records each
in ``tq:msgs``/``tq:leases``/``tq:meta`` (or dead-letters it after ``max_deliveries``)
before returning: no message is ever only in a client's memory. Ack, nack, requeue and
renew check that the lease is held with the same attempt number, so a settlement after
the lease ran out and someone else claimed the message does nothing.

Mixed fleets: a Celery worker consuming the same lists runs tqcore's messages (and
tqcore runs Celery's). Messages that only tqcore holds (ETA, delayed requeue, leased)
become visible to Celery workers once a tqcore claim moves them back to a list, and a
message a Celery worker consumed leaves its ``tq:meta`` entry behind. The age of a
ready message tqcore never saw (LPUSHed by Celery) is unknown and not counted.

Payloads that are not kombu envelopes (or whose priority or id disagree with the
arguments) are stored wrapped in an envelope of content type
``application/x-tqcore-raw`` and unwrapped on claim, so ``claim`` returns the bytes
given to ``enqueue``.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from tqcore import codec
from tqcore.transports.base import DeadLetter, Delivery, OutgoingMessage, QueueStats, Transport
from tqcore.transports.redis_channels import RedisChannels
from tqcore.transports.redis_client import RedisConnector
from tqcore.transports.redis_envelope import PRIORITY_STEPS, SEP, ident, unpack, unpack_parsed
from tqcore.transports.redis_raw import RawLink, Script, bulk, command

logger = logging.getLogger("tqcore.redis")

#: Longest block on the wake lists: messages that push no token (a Celery producer's
#: LPUSH, a lease running out) are seen within this.
_IDLE_BLOCK = 0.1


class RedisTransport(RedisChannels, Transport):
    """The Redis broker: ``redis://[user:pass@]host[:port][/db][?prefix=...]``."""

    schemes = ("redis", "rediss")
    distributed = True
    settles_from_any_process = True
    #: On Redis, as in Celery, priority 0 is served first (kombu's priority steps).
    priority_highest_first = False

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.conn = RedisConnector(url, self.options)
        self._dead_kept = self.conn.limits["dead_letters_kept"]
        self._declared: set[str] = set()
        self._rr = itertools.count()
        self._raw = RawLink()  # hot paths: enqueue and events (producer), claim, ack
        self._ack_heads: dict[str, bytes] = {}  # queue -> its posted ACK, up to the args
        self._claim_parts: dict[tuple[str, ...], tuple[bytes, bytes]] = {}  # see _pack_claim
        self._claims = threading.local()  # per thread: the record of its last claim
        self._init_channels()

    # -- plumbing ------------------------------------------------------------------
    def _k(self, name: str) -> str:
        return self.conn.prefix + name

    def _lists(self, queue: str) -> list[str]:
        return [self._k(queue if s == 0 else f"{queue}{SEP}{s}") for s in PRIORITY_STEPS]

    def _qkey(self, kind: str, queue: str) -> str:
        return self._k(f"tq:{kind}:{queue}")

    def now(self) -> float:
        """The Redis server's clock (``TIME``), epoch seconds."""
        sec, usec = self.conn.run("TIME", lambda c: c.time())
        return float(sec) + float(usec) / 1e6

    # -- queues --------------------------------------------------------------------
    def declare_queue(self, name: str) -> None:
        if name in self._declared:
            return
        member = f"{name}{SEP}{SEP}{name}"

        def run(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.sadd(self._k("tq:queues"), name)
            pipe.sadd(self._k(f"_kombu.binding.{name}"), member)
            pipe.sadd(self._k(f"_kombu.binding_permanent.{name}"), member)
            pipe.execute()

        self.conn.run("declare queue", run)
        self._declared.add(name)

    def enqueue_many(self, messages: Sequence[OutgoingMessage]) -> None:
        # Packed and written by the producer path (one round trip, retry-safe): see
        # tqcore.transports.redis_producer.
        self._producer.send(messages)

    def claim(self, queues: Sequence[str], *, consumer: str, limit: int, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        if not queues:
            return []
        for queue in set(queues) - self._declared:
            self.declare_queue(queue)
        deadline = time.monotonic() + timeout
        block = 0.0
        while True:
            got, next_due = self._claim_once(list(queues), limit, lease, block)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0 or limit <= 0:
                return got
            block = min(remaining, _IDLE_BLOCK)
            if next_due >= 0:
                block = min(block, next_due + 0.001)
            if block >= 0.001:
                # An idle moment: make sure the acks posted meanwhile have been run.
                self.conn.run("confirm", self._raw.confirm)

    def _pack_claim(self, script: Script, order: list[str]) -> tuple[bytes, bytes]:
        """The packed ``EVALSHA`` of CLAIM for queues in ``order``, but for the claim's
        own record keys and numbers: (the part before them, the queue names after)."""
        keys = [self._k("tq:seq")]
        for q in order:
            keys += [*self._lists(q), self._qkey("eta", q), self._qkey("msgs", q),
                     self._qkey("leases", q), self._qkey("meta", q), self._qkey("dead", q),
                     self._qkey("wake", q)]
        nkeys, nargs = len(keys) + 2, 5 + len(order)  # + the two records; numbers, names
        if len(self._claim_parts) > 64:  # bounded: consumers change their queues at run time
            self._claim_parts.clear()
        head = b"".join([b"*%d\r\n" % (3 + nkeys + nargs), bulk("EVALSHA"), bulk(script.sha),
                         bulk(nkeys), *[bulk(k) for k in keys]])
        return head, b"".join([bulk(q) for q in order])

    def _wait_command(self, queues: Sequence[str], seconds: float) -> bytes:
        """``BLPOP`` of the wake tokens of ``queues`` (see the key schema), up to
        ``seconds``, rounded up to whole ms (its timeout is a float since Redis 6)."""
        keys = [self._qkey("wake", q) for q in queues]
        return command("BLPOP", *keys, f"{seconds + 0.0005:.3f}")

    def _claim_once(self, queues: list[str], limit: int, lease: float, block: float = 0.0
                    ) -> tuple[list[Delivery], float]:
        """One claim; after waiting up to ``block`` seconds for a wake token first when
        ``block`` (1 ms or more): the wait and the claim go in one write, so the claim
        runs on the server as soon as the wait ends, without a round trip between."""
        start = next(self._rr) % len(queues)
        order = queues[start:] + queues[:start]
        script = self._script("CLAIM")
        parts = self._claim_parts.get(tuple(order))
        if parts is None:
            parts = self._claim_parts[tuple(order)] = self._pack_claim(script, order)
        head, tail = parts
        # The claim's token makes a retried call (reply lost) return what the first one
        # leased instead of leasing more messages to nobody (see CLAIM).
        record = self._k(f"tq:claimed:{os.urandom(9).hex()}")
        local = self._claims.__dict__  # this thread's previous record, answered by now
        packed = b"".join([
            head, bulk(record), bulk(local.get("record", record)), bulk(max(0, limit)),
            bulk(int(lease * 1000)), bulk(self.max_deliveries), bulk(self._dead_kept),
            bulk(int(self.claim_max_size or 0)), tail])
        before = [self._wait_command(order, block)] if block >= 0.001 else []
        out, dead, next_ms, big = self.conn.run(
            "claim", lambda c: self._raw.script(c, script, packed=packed, before=before))
        local["record"] = record
        deliveries = []
        for i in range(0, len(out), 5):
            qi, ident, attempts, step, element = out[i:i + 5]
            payload, priority, mid, parsed = unpack_parsed(element, int(step))
            delivery = Delivery(self, order[int(qi)], payload, int(attempts), priority,
                                ident.decode(), mid)
            delivery.parsed = parsed
            deliveries.append(delivery)
        letters = []
        for i in range(0, len(dead), 7):
            qi, seq, attempts, element, mid, dead_at, reason = dead[i:i + 7]
            payload, _, own_mid = unpack(element, 0)
            letters.append(DeadLetter(str(seq), order[int(qi)], payload, reason.decode(),
                                      int(attempts), int(dead_at) / 1000,
                                      mid.decode() or own_mid))
        self._report_dead(letters)
        for i in range(0, len(big), 3):
            qi, mid, reason = big[i:i + 3]
            logger.error("message %r on %s dead-lettered: %s",
                         mid.decode("utf-8", "replace")[:200], order[int(qi)], reason.decode())
        return deliveries, int(next_ms) / 1000 if int(next_ms) >= 0 else -1.0

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        for keys, argv in self._acks(deliveries):
            self._eval("ack", "ACK", keys, argv)

    def ack_nowait(self, deliveries: Iterable[Delivery]) -> None:
        """The ACK script posted (see :mod:`tqcore.transports.redis_raw`): written with
        its reply switched off, sent again if its connection fails before a later
        reply confirms it (ACK is idempotent: it removes a message only while the
        claim it names still holds it)."""
        batch = list(deliveries)
        if len(batch) == 1:  # an early ack: the queue's part of the command is kept
            d = batch[0]
            head = self._ack_heads.get(d.queue)
            if head is None:
                [(keys, _)] = self._acks(batch)
                head = self._ack_heads[d.queue] = self._script("ACK").eval_head(keys, 2)
            packs = [head + bulk(d.delivery_id) + bulk(d.attempts)]
        else:
            script = self._script("ACK")
            packs = [script.call_with_source(keys, argv) for keys, argv in self._acks(batch)]
        for packed in packs:

            def post(client: Any, packed: bytes = packed) -> None:
                self._raw.post(client, packed)

            self.conn.run("ack", post)

    def _acks(self, deliveries: Iterable[Delivery]) -> list[tuple[list[str], list[Any]]]:
        by_queue: dict[str, list[Any]] = collections.defaultdict(list)
        for d in deliveries:
            by_queue[d.queue] += [d.delivery_id, d.attempts]
        return [([self._qkey("msgs", queue), self._qkey("leases", queue),
                  self._qkey("meta", queue), self._qkey("acked", queue)], argv)
                for queue, argv in by_queue.items()]

    def nack(self, delivery: Delivery, reason: str) -> None:
        q = delivery.queue
        keys = [self._qkey("msgs", q), self._qkey("leases", q), self._qkey("meta", q),
                self._qkey("dead", q), self._k("tq:seq"), self._qkey("acked", q)]
        args = [delivery.delivery_id, delivery.attempts, reason, delivery.message_id or "",
                self._dead_kept, q]
        self._eval("nack", "NACK", keys, args)

    def requeue(self, delivery: Delivery, *, count_attempt: bool = True,
                delay: float | None = None) -> None:
        q = delivery.queue
        keys = [*self._lists(q), self._qkey("eta", q), self._qkey("msgs", q),
                self._qkey("leases", q), self._qkey("meta", q), self._qkey("wake", q)]
        args = [delivery.delivery_id, delivery.attempts, "1" if count_attempt else "0",
                int((delay or 0) * 1000)]
        self._eval("requeue", "REQUEUE", keys, args)

    def renew(self, deliveries: Iterable[Delivery], lease: float) -> None:
        by_queue: dict[str, list[Any]] = collections.defaultdict(list)
        for d in deliveries:
            if not d.settled:
                by_queue[d.queue] += [d.delivery_id, d.attempts]
        for queue, argv in by_queue.items():
            keys = [self._qkey("leases", queue), self._qkey("meta", queue)]
            self._eval("renew", "RENEW", keys, [int(lease * 1000), *argv])

    def dead_letter_raw(self, queue: str, payload: bytes, reason: str) -> None:
        keys = [self._qkey("dead", queue), self._k("tq:seq"), self._k("tq:queues")]
        args = [queue, reason, payload, self._dead_kept, ""]
        self._eval("dead-letter", "DEAD_RAW", keys, args, idempotent=False)

    # -- inspection and admin ------------------------------------------------------
    def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        if queues is None:
            names = sorted(m.decode() for m in self.conn.run(
                "list queues", lambda c: c.smembers(self._k("tq:queues"))))
        else:
            names = list(queues)
        if not names:
            return []
        keys: list[str] = []
        for q in names:
            keys += [*self._lists(q), self._qkey("eta", q), self._qkey("leases", q),
                     self._qkey("meta", q), self._qkey("dead", q)]
        raw = self._eval("queue stats", "STATS", keys)
        now_ms = int(raw[0])
        consumers: dict[str, int] = {}
        for info in self.list_workers().values():
            for q in info.get("queues", []) if isinstance(info, dict) else []:
                consumers[q] = consumers.get(q, 0) + 1
        out = []
        for i, name in enumerate(names):
            ready, sched, inflight, dead, oldest = (int(x) for x in raw[1 + 5 * i: 6 + 5 * i])
            out.append(QueueStats(
                name=name, depth=ready, scheduled=sched, in_flight=inflight, dead_lettered=dead,
                oldest_age=max(0.0, (now_ms - oldest) / 1000) if ready and oldest >= 0 else 0.0,
                consumers=consumers.get(name, 0)))
        return out

    def purge(self, queue: str) -> int:
        token = uuid.uuid4().hex
        tmp = [self._k(f"tq:purging:{token}:{s}") for s in PRIORITY_STEPS]
        keys = [*self._lists(queue), self._qkey("eta", queue), self._qkey("msgs", queue),
                self._qkey("meta", queue), *tmp]
        count, moved = self._eval("purge", "PURGE", keys)
        meta = self._qkey("meta", queue)
        for s in moved:
            # Forget the purged messages' bookkeeping a chunk at a time (no long script).
            key = tmp[int(s)]
            while chunk := self._pop_chunk(key):
                self._forget(meta, [ident(e) for e in chunk])
        return int(count)

    def _pop_chunk(self, key: str) -> list[bytes]:
        chunk: list[bytes] | None = self.conn.run("purge", lambda c: c.lpop(key, 500))
        return chunk or []

    def _forget(self, meta: str, ids: list[str]) -> None:
        self.conn.run("purge", lambda c: c.hdel(meta, *ids))

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        if queue is not None:
            names = [queue]
        else:
            names = sorted(m.decode() for m in self.conn.run(
                "list queues", lambda c: c.smembers(self._k("tq:queues"))))

        def run(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for q in names:
                pipe.xrevrange(self._qkey("dead", q), count=limit)
            result: list[Any] = pipe.execute()
            return result

        letters = []
        for entries in self.conn.run("dead letters", run) if names else []:
            for _, f in entries:
                payload, _, own_mid = unpack(f[b"payload"], 0)
                letters.append(DeadLetter(
                    f[b"seq"].decode(), f[b"queue"].decode(), payload,
                    f[b"reason"].decode(), int(f[b"attempts"]), int(f[b"dead_at"]) / 1000,
                    f[b"message_id"].decode() or own_mid))
        letters.sort(key=lambda d: -int(d.id))
        return letters[:limit]

    # -- worker registry -----------------------------------------------------------
    def register_worker(self, name: str, info: dict[str, Any], ttl: float) -> None:
        keys = [self._k("tq:workers"), self._k("tq:workers:expiry")]
        args = [name, codec.dumps(info), max(1, int(ttl * 1000))]
        self._eval("register worker", "REGISTER", keys, args)

    def unregister_worker(self, name: str) -> None:
        def run(c: Any) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.hdel(self._k("tq:workers"), name)
            pipe.zrem(self._k("tq:workers:expiry"), name)
            pipe.execute()

        self.conn.run("unregister worker", run)

    def list_workers(self) -> dict[str, dict[str, Any]]:
        keys = [self._k("tq:workers"), self._k("tq:workers:expiry")]
        raw = self._eval("list workers", "WORKERS", keys)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(raw), 2):
            try:
                out[raw[i].decode()] = json.loads(raw[i + 1])
            except ValueError:
                continue
        return out

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        self._close_channels()
        self._raw.close()
        self.conn.close()
