"""Contract of the events and control channels, over every broker of the suite."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from tqcore.transports import Transport


def _drain(sub, want: int, timeout: float = 5.0) -> list[bytes]:  # type: ignore[no-untyped-def]
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += sub.get(0.2)
    return got


def test_every_subscriber_receives_every_event_published_after_it_subscribed(
        connect: Callable[..., Transport]) -> None:
    producer, a, b = connect(), connect(), connect()
    producer.publish_event("worker.heartbeat", b'{"type": "before"}')
    sub_a, sub_b = a.subscribe_events(), b.subscribe_events()
    bodies = [json.dumps({"type": "task-sent", "n": i}).encode() for i in range(50)]
    for body in bodies:
        producer.publish_event("task.sent", body)
    assert _drain(sub_a, 50) == bodies
    assert _drain(sub_b, 50) == bodies


def test_event_subscription_get_waits_for_a_publish_from_another_thread(
        transport: Transport) -> None:
    sub = transport.subscribe_events()
    timer = threading.Timer(0.2, transport.publish_event, ("task.multi", b"[]"))
    timer.start()
    try:
        assert sub.get(5.0) == [b"[]"]
    finally:
        timer.cancel()


def test_event_subscription_get_returns_empty_after_its_timeout(transport: Transport) -> None:
    sub = transport.subscribe_events()
    started = time.monotonic()
    assert sub.get(0.3) == []
    assert time.monotonic() - started >= 0.25


def test_replay_delivers_recent_history_where_the_broker_keeps_it(
        broker, connect: Callable[..., Transport]) -> None:  # type: ignore[no-untyped-def]
    t = connect()
    if not t.keeps_event_history:
        pytest.skip("this broker keeps no event history")
    t.publish_event("task.sent", b'{"n": 1}')
    t.publish_event("task.sent", b'{"n": 2}')
    replayed = t.subscribe_events(replay=60.0).get(1.0)
    assert replayed == [b'{"n": 1}', b'{"n": 2}']


def test_control_broadcast_reaches_every_mailbox_subscribed_before_it(
        connect: Callable[..., Transport]) -> None:
    client, w1, w2 = connect(), connect(), connect()
    m1, m2 = w1.subscribe_control("w1@h"), w2.subscribe_control("w2@h")
    client.broadcast_control(b'{"method": "ping"}')
    assert _drain(m1, 1) == [b'{"method": "ping"}']
    assert _drain(m2, 1) == [b'{"method": "ping"}']
    late = connect().subscribe_control("w3@h")
    assert late.get(0.3) == []


def test_expired_control_commands_are_not_delivered(connect: Callable[..., Transport]) -> None:
    client, worker = connect(), connect()
    mailbox = worker.subscribe_control("w@h")
    client.broadcast_control(b'{"method": "shutdown"}', ttl=0.1)
    time.sleep(0.3)
    assert mailbox.get(0.2) == []


def test_replies_go_to_their_reply_queue_only_and_are_consumed(
        connect: Callable[..., Transport]) -> None:
    client, worker = connect(), connect()
    worker.send_reply("oid-1", b'{"w@h": {"ok": "pong"}}')
    worker.send_reply("oid-2", b'{"w@h": "other"}')
    assert client.collect_replies("oid-1", 2.0) == [b'{"w@h": {"ok": "pong"}}']
    assert client.collect_replies("oid-1", 0.2) == []
    assert client.collect_replies("oid-2", 2.0) == [b'{"w@h": "other"}']


@pytest.mark.timeout(30)
def test_collect_replies_waits_for_a_late_reply(connect: Callable[..., Transport]) -> None:
    client, worker = connect(), connect()
    timer = threading.Timer(0.3, worker.send_reply, ("oid", b'{"w@h": 1}'))
    timer.start()
    try:
        assert client.collect_replies("oid", 5.0) == [b'{"w@h": 1}']
    finally:
        timer.cancel()
