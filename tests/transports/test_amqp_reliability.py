"""RabbitMQ-specific delivery guarantees: crashes, redelivery counts, ETA, reconnects.

Given a private node (``rabbitmq_server``), each test works under its own prefix.
Consumers that crash are separate processes killed with SIGKILL, so the broker sees
a real dead connection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.rabbitmq_server import private_url
from tqcore import message
from tqcore.transports import DeadLetter, Delivery, OutgoingMessage, Transport, from_url

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]

_CLAIM_THEN_HANG = """
import json, sys, time
from tqcore.transports import from_url
url, queue, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
got = from_url(url).claim([queue], consumer="doomed", limit=limit, lease=30, timeout=10)
print(json.dumps([[d.payload.decode(), d.attempts] for d in got]), flush=True)
time.sleep(600)
"""


class Doomed:
    """A consumer process that claims ``limit`` messages, reports them and hangs."""

    def __init__(self, url: str, queue: str, limit: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen([sys.executable, "-c", _CLAIM_THEN_HANG, url, queue,
                                      str(limit)], stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.taken: list[list[Any]] = json.loads(line) if line else []

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def connect(amqp_url: str) -> Iterator[Any]:
    opened: list[Transport] = []

    def connect(url: str = amqp_url, **options: Any) -> Transport:
        transport = from_url(url, **options)
        opened.append(transport)
        return transport

    yield connect
    for transport in opened:
        transport.close()


def claim_until(transport: Transport, want: int, timeout: float = 20.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += transport.claim(["q"], consumer="survivor", limit=want - len(got), lease=30,
                               timeout=0.5)
    return got


def test_sigkilled_consumers_messages_are_redelivered_once_to_another_consumer(
        connect: Any, amqp_url: str) -> None:
    survivor = connect()
    survivor.enqueue_many([OutgoingMessage("q", f"m{i}".encode()) for i in range(10)])
    doomed = Doomed(amqp_url, "q", 4)
    assert [attempts for _, attempts in doomed.taken] == [1, 1, 1, 1]
    first = claim_until(survivor, 6)
    assert survivor.claim(["q"], consumer="s", limit=10, lease=30) == []

    doomed.kill()  # mid-task: its 4 messages were never acknowledged
    again = claim_until(survivor, 4)

    assert sorted(d.payload.decode() for d in again) == sorted(m for m, _ in doomed.taken)
    assert {d.attempts for d in again} == {2}
    assert {d.attempts for d in first} == {1}
    assert survivor.claim(["q"], consumer="s", limit=10, lease=30, timeout=1.0) == []
    survivor.ack(first + again)
    [figures] = survivor.queue_stats(["q"])
    assert (figures.depth, figures.in_flight, figures.scheduled) == (0, 0, 0)


def test_a_message_that_keeps_killing_its_consumer_is_dead_lettered(
        connect: Any, amqp_url: str) -> None:
    letters: list[DeadLetter] = []
    survivor = connect(max_deliveries=2)
    survivor.on_dead_letter = letters.append
    survivor.enqueue("q", b"poison", message_id="task-p")

    for attempt in (1, 2):
        doomed = Doomed(amqp_url, "q", 1)
        assert doomed.taken == [["poison", attempt]]
        doomed.kill()

    assert survivor.claim(["q"], consumer="s", limit=1, lease=30, timeout=1.0) == []
    [letter] = letters
    assert (letter.payload, letter.message_id, letter.attempts) == (b"poison", "task-p", 2)
    assert "max_deliveries" in letter.reason
    assert [d.payload for d in survivor.dead_letters("q")] == [b"poison"]
    assert survivor.queue_stats(["q"])[0].dead_lettered == 1


def test_a_body_over_the_size_cap_is_dead_lettered_without_an_envelope(connect: Any) -> None:
    """Dead-lettered by the claim with the worker's reason (no envelope built for it),
    its neighbour delivered as usual."""
    letters: list[DeadLetter] = []
    t = connect()
    t.on_dead_letter = letters.append
    big = message.build_task("proj.add", "big-1", ("x" * 600_000,), queue="q")
    t.enqueue("q", big, message_id="big-1")
    t.enqueue("q", b"small", message_id="small-1")
    t.claim_max_size = 300_000

    got = claim_until(t, 1)

    assert [d.payload for d in got] == [b"small"]
    assert letters == []  # not a lost worker: nothing to record as the task's failure
    [letter] = t.dead_letters("q")
    assert letter.reason.startswith("malformed message: message too large: ")
    assert letter.reason.endswith(" bytes (limit 300000)")
    assert (letter.message_id, letter.attempts) == ("big-1", 1)
    t.ack(got)


def test_in_flight_counts_other_processes_until_they_die(connect: Any, amqp_url: str) -> None:
    monitor = connect()
    monitor.enqueue_many([OutgoingMessage("q", f"m{i}".encode()) for i in range(5)])
    doomed = Doomed(amqp_url, "q", 3)

    assert monitor.queue_stats(["q"])[0].in_flight == 3
    doomed.kill()

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        [figures] = monitor.queue_stats(["q"])
        if (figures.depth, figures.in_flight) == (5, 0):
            break
        time.sleep(0.1)
    assert (figures.depth, figures.in_flight) == (5, 0)


def test_countdown_waits_in_the_broker_not_in_a_consumer(connect: Any, amqp_url: str,
                                                         rabbitmq_server: Any) -> None:
    import pika

    transport = connect()
    eta = time.time() + 2.0
    transport.enqueue("q", b"later", eta=eta)

    assert transport.claim(["q"], consumer="w", limit=10, lease=30) == []
    [figures] = transport.queue_stats(["q"])
    assert (figures.depth, figures.scheduled, figures.in_flight) == (0, 1, 0)
    prefix = amqp_url.split("prefix=", 1)[1]
    conn = pika.BlockingConnection(pika.URLParameters(
        f"amqp://guest:guest@127.0.0.1:{rabbitmq_server.port}/%2F"))
    try:
        ch = conn.channel()
        target = ch.queue_declare(f"{prefix}q", passive=True).method
        ladder = [ch.queue_declare(f"{prefix}q.delay.{k}", passive=True).method
                  for k in range(32)]
    finally:
        conn.close()
    # The claim left its consumer on the queue (claims keep one), but the message waits
    # in the ladder, where nobody consumes: not pushed to us, not unacknowledged anywhere.
    waiting = sum(level.message_count for level in ladder)
    assert (target.message_count, waiting) == (0, 1)
    assert sum(level.consumer_count for level in ladder) == 0
    assert transport.buffered_counts() == {}

    [delivery] = transport.claim(["q"], consumer="w", limit=10, lease=30, timeout=10)
    assert time.time() >= eta
    assert time.time() < eta + 1.0
    assert (delivery.payload, delivery.attempts) == (b"later", 1)


def test_requeue_with_delay_keeps_priority_and_attempts(connect: Any) -> None:
    transport = connect()
    transport.enqueue("q", b"retry-me", priority=7, message_id="t-1")
    [d] = transport.claim(["q"], consumer="w", limit=1, lease=30)

    d.requeue(delay=0.3)

    [again] = transport.claim(["q"], consumer="w", limit=1, lease=30, timeout=10)
    assert (again.payload, again.priority, again.message_id, again.attempts) == (
        b"retry-me", 7, "t-1", 2)


def test_quorum_queues_count_redeliveries_with_x_delivery_count(
        request: pytest.FixtureRequest, rabbitmq_server: Any, connect: Any) -> None:
    url = private_url(request, rabbitmq_server, queue_type="quorum")
    survivor = connect(url)
    survivor.enqueue("q", b"job")
    doomed = Doomed(url, "q", 1)
    assert doomed.taken == [["job", 1]]

    doomed.kill()

    [again] = claim_until(survivor, 1)
    assert (again.payload, again.attempts) == (b"job", 2)
    again.requeue()
    [third] = claim_until(survivor, 1)
    assert third.attempts == 3


def test_lost_connection_reconnects_and_stale_acks_are_ignored(
        connect: Any, rabbitmq_server: Any) -> None:
    transport = connect()
    transport.enqueue("q", b"held")
    [held] = transport.claim(["q"], consumer="w", limit=1, lease=30)

    rabbitmq_server.ctl("close_all_connections", "test: broker restart")
    time.sleep(0.5)
    held.ack()  # its channel is gone: the broker already requeued it

    [again] = claim_until(transport, 1)
    assert (again.payload, again.attempts) == (b"held", 2)
    again.ack()
    transport.enqueue("q", b"after")
    assert [d.payload for d in transport.claim(["q"], consumer="w", limit=5, lease=30)] == [
        b"after"]
    sub = transport.subscribe_events()
    transport.publish_event("task.sent", b'{"type": "task-sent"}')
    assert sub.get(5.0) == [b'{"type": "task-sent"}']


def test_subscriptions_recover_after_the_connection_is_lost(connect: Any,
                                                            rabbitmq_server: Any) -> None:
    listener, producer = connect(), connect()
    sub = listener.subscribe_events()
    mailbox = listener.subscribe_control("w1@h")

    rabbitmq_server.ctl("close_all_connections", "test: broker restart")
    time.sleep(0.5)
    assert sub.get(0.2) == []  # re-subscribes (events in between are lost, as on Celery)
    assert mailbox.get(0.2) == []

    producer.publish_event("task.sent", b'{"n": 1}')
    producer.broadcast_control(b'{"method": "ping"}')
    assert sub.get(5.0) == [b'{"n": 1}']
    assert mailbox.get(5.0) == [b'{"method": "ping"}']


def test_unreachable_broker_fails_fast_with_a_transport_error() -> None:
    from tqcore.exceptions import ConnectFailed

    transport = from_url("amqp://guest:s3cret@127.0.0.1:1//", connect_retry=0.5,
                         connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        transport.enqueue("q", b"x")
    assert time.monotonic() - started < 10
    assert "s3cret" not in str(info.value)
    transport.close()


def test_wrong_password_fails_at_once_without_retrying(rabbitmq_server: Any) -> None:
    from tqcore.exceptions import ConnectFailed

    url = f"amqp://guest:wrong-s3cret@127.0.0.1:{rabbitmq_server.port}//"
    transport = from_url(url, connect_retry=30)
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        transport.declare_queue("q")
    assert time.monotonic() - started < 5  # not retried for connect_retry seconds
    assert "refused the login" in str(info.value)
    assert "wrong-s3cret" not in str(info.value)
    transport.close()


def test_publishing_during_a_memory_alarm_fails_fast_and_resumes(
        connect: Any, rabbitmq_server: Any) -> None:
    from tqcore.exceptions import TransportError

    transport = connect(operation_timeout=60)
    transport.enqueue("q", b"before")
    rabbitmq_server.ctl("set_vm_memory_high_watermark", "0.000001")
    try:
        started = time.monotonic()
        with pytest.raises(TransportError, match="blocked publishing"):
            while time.monotonic() < started + 10:  # the alarm reaches us within a moment
                transport.enqueue("q", b"during")
                time.sleep(0.1)
        assert time.monotonic() - started < 5  # a typed error, not a wait for the timeout
    finally:
        rabbitmq_server.ctl("set_vm_memory_high_watermark", "0.4")
    deadline = time.monotonic() + 10
    while True:
        try:
            transport.enqueue("q", b"after")
            break
        except TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    payloads = [d.payload for d in transport.claim(["q"], consumer="w", limit=50, lease=30)]
    assert payloads[0] == b"before" and payloads[-1] == b"after"
