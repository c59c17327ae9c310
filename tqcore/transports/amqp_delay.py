"""Broker-side ETA for the AMQP transport: a binary ladder of TTL queues.

RabbitMQ has no delayed delivery without a plugin, and per-message TTLs only expire
at the head of a queue (a long delay would hold up a short one behind it). So a
delay of ``d`` milliseconds is spelled in binary and the message walks down a
ladder of levels ``k = LEVELS-1 .. 0``:

* ``tq.delay.<k>`` is a topic exchange. A routing key is ``LEVELS`` words ``0``/``1``
  (bit ``LEVELS-1`` first) then a token naming the destination queue.
* When bit ``k`` is 1 the message is routed to the wait queue ``<queue>.delay.<k>``,
  whose ``x-message-ttl`` is ``2**k`` ms and whose dead-letter exchange is the next
  level; every message in one wait queue has the same TTL, so expiry order is
  arrival order and nothing is held up. When bit ``k`` is 0 the exchange passes the
  message straight to the next level (an exchange-to-exchange binding).
* After level 0, ``tq.delay.out`` routes it by the token to the queue itself.

The message never leaves the broker and no worker holds it (RabbitMQ's
``consumer_timeout`` cannot fire on it); it arrives ``d`` ms after publishing plus
a few ms of routing. Delays longer than ``2**LEVELS`` ms (49.7 days) arrive early
and the worker, seeing the ``eta`` header, sends them round again. The number of
messages waiting for a queue is the sum of its wait queues' depths.

The exchanges are shared by all queues; a queue's wait queues are declared the
first time it gets a delayed message. Dead-lettering from classic queues is
at-most-once if the broker crashes while moving a message between levels.
"""

from __future__ import annotations

import hashlib
import math

#: Levels of the ladder: delays up to 2**LEVELS - 1 ms.
LEVELS = 32
MAX_DELAY_MS = 2 ** LEVELS - 1


def exchange(level: int) -> str:
    """The (unprefixed) exchange of ``level``."""
    return f"tq.delay.{level}"


OUT = "tq.delay.out"


def wait_queue(queue: str, level: int) -> str:
    """The (unprefixed) wait queue of ``queue`` at ``level``."""
    return f"{queue}.delay.{level}"


def token(full_queue_name: str) -> str:
    """A dot-free routing word standing for a queue (topic words cannot hold dots)."""
    return hashlib.sha1(full_queue_name.encode("utf-8")).hexdigest()[:24]


def delay_ms(seconds: float) -> int:
    """A delay in whole milliseconds, rounded up (never early), at most :data:`MAX_DELAY_MS`."""
    return max(0, min(MAX_DELAY_MS, math.ceil(seconds * 1000)))


def routing_key(delay: int, tok: str) -> str:
    """The routing key that walks a message down the ladder for ``delay`` ms."""
    bits = ".".join("1" if delay >> k & 1 else "0" for k in range(LEVELS - 1, -1, -1))
    return f"{bits}.{tok}"


def skip_pattern(level: int) -> str:
    """Binding from level ``level`` to the next one: bit ``level`` is 0."""
    return "*." * (LEVELS - 1 - level) + "0.#"


def wait_pattern(level: int, tok: str) -> str:
    """Binding from level ``level`` to a queue's wait queue: bit ``level`` is 1."""
    return "*." * (LEVELS - 1 - level) + "1." + "*." * level + tok


def out_pattern(tok: str) -> str:
    """Binding from the ladder's end to the destination queue."""
    return "*." * LEVELS + tok


def next_exchange(level: int) -> str:
    """Where a message goes after ``level`` (the next level, or out)."""
    return exchange(level - 1) if level > 0 else OUT
