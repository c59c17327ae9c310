"""The broker's own floor: what a bare client gets, with no task-queue code at all.

``python -m bench.throughput_apps.floor amqp|redis URL N`` prints one JSON line.

* **amqp**: a pika ``BlockingConnection`` publishes ``N`` persistent messages of about a
  task message's size to a durable queue, one at a time, each waiting for its publisher
  confirm (the guarantee both systems publish under in the bench). RabbitMQ confirms a
  persistent message once it is on disk, so this rate is the ceiling of any client's
  one-call-at-a-time enqueue with confirms on this machine.
* **redis**: a redis-py client ``LPUSH``es ``N`` messages of the same size, one at a time.

The queue it used is deleted afterwards.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import uuid

#: About the size of a no-argument task message (envelope and headers).
BODY = b"x" * 800


def amqp_rate(url: str, n: int) -> float:
    """Persistent publishes with confirms per second, one at a time."""
    import pika

    parts = urllib.parse.urlsplit(url)
    vhost = urllib.parse.unquote(parts.path[1:]) or "/"
    params = pika.ConnectionParameters(
        host=parts.hostname or "127.0.0.1", port=parts.port or 5672,
        virtual_host=vhost,
        credentials=pika.PlainCredentials(parts.username or "guest", parts.password or "guest"))
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        queue = f"floor-{uuid.uuid4().hex[:8]}"
        ch.queue_declare(queue, durable=True)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        for _ in range(20):  # warm-up
            ch.basic_publish("", queue, BODY, props)
        t0 = time.perf_counter()
        for _ in range(n):
            ch.basic_publish("", queue, BODY, props)
        rate = n / (time.perf_counter() - t0)
        ch.queue_delete(queue)
        return rate
    finally:
        conn.close()


def redis_rate(url: str, n: int) -> float:
    """``LPUSH`` calls per second, one at a time."""
    import redis

    r = redis.Redis.from_url(url)
    key = f"floor-{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(20):
            r.lpush(key, BODY)
        t0 = time.perf_counter()
        for _ in range(n):
            r.lpush(key, BODY)
        return n / (time.perf_counter() - t0)
    finally:
        r.delete(key)
        r.close()


def main() -> None:
    broker, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rate = amqp_rate(url, n) if broker == "amqp" else redis_rate(url, n)
    print(json.dumps({"broker": broker, "n": n, "rate": rate}))


if __name__ == "__main__":
    main()
