"""What the AMQP transport puts on the wire, checked with a plain pika client.

Celery's entities and message shapes are in celery-wire.md §4.1, §4.4, §4.5, §4.7.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tqcore import message
from tqcore.transports import OutgoingMessage, Transport, from_url

pytestmark = pytest.mark.timeout(120)

CELERY_HEADERS = ["lang", "task", "id", "shadow", "eta", "expires", "group", "group_index",
                  "retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr",
                  "origin", "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps"]


@pytest.fixture
def transport(amqp_url: str) -> Iterator[Transport]:
    t = from_url(amqp_url)
    yield t
    t.close()


@pytest.fixture
def prefix(amqp_url: str) -> str:
    return amqp_url.split("prefix=", 1)[1]


@pytest.fixture
def raw(rabbitmq_server: Any) -> Iterator[Any]:
    """A plain pika channel on the same broker (what Celery or an operator would use)."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(
        f"amqp://guest:guest@127.0.0.1:{rabbitmq_server.port}/%2F"))
    yield conn.channel()
    conn.close()


def test_enqueue_returns_only_once_the_broker_has_the_messages(
        transport: Transport, raw: Any, prefix: str) -> None:
    transport.enqueue_many([OutgoingMessage("q", f"m{i}".encode()) for i in range(200)])

    # No wait: publisher confirms mean the broker already counts them.
    assert raw.queue_declare(f"{prefix}q", passive=True).method.message_count == 200


def test_task_is_published_as_celery_publishes_it(transport: Transport, raw: Any,
                                                  prefix: str) -> None:
    payload = message.build_task("proj.add", "tid-1", (2, 3), {}, queue="celery", priority=5,
                                 time_limit=30.0, reply_to="oid-7")
    transport.enqueue("celery", payload, priority=5, message_id="tid-1")

    method, props, body = raw.basic_get(f"{prefix}celery", auto_ack=True)

    assert (method.exchange, method.routing_key) == ("", f"{prefix}celery")
    assert (props.content_type, props.content_encoding, props.delivery_mode, props.priority) == (
        "application/json", "utf-8", 2, 5)
    assert (props.correlation_id, props.reply_to) == ("tid-1", "oid-7")
    assert list(props.headers) == CELERY_HEADERS
    assert props.headers["task"] == "proj.add"
    assert props.headers["timelimit"] == [30.0, None]
    assert json.loads(body) == [[2, 3], {}, {"callbacks": None, "errbacks": None,
                                             "chain": None, "chord": None}]


def test_task_queue_is_durable_with_priorities(transport: Transport, rabbitmq_server: Any,
                                               prefix: str) -> None:
    transport.declare_queue("celery")

    rows = rabbitmq_server.ctl("list_queues", "-q", "--no-table-headers", "name", "durable",
                               "arguments")
    row = next(line for line in rows.splitlines() if line.split("\t")[0] == f"{prefix}celery")
    assert "\ttrue\t" in row
    assert "x-max-priority" in row


def test_message_published_by_celery_is_claimed_as_a_task(transport: Transport, raw: Any,
                                                          prefix: str) -> None:
    import pika

    transport.declare_queue("celery")
    headers = {"lang": "py", "task": "proj.mul", "id": "cel-1", "shadow": None, "eta": None,
               "expires": None, "group": None, "group_index": None, "retries": 0,
               "timelimit": [None, None], "root_id": "cel-1", "parent_id": None,
               "argsrepr": "(4, 5)", "kwargsrepr": "{}", "origin": "gen1@h",
               "ignore_result": False, "replaced_task_nesting": 0, "stamped_headers": None,
               "stamps": {}}
    body = json.dumps([[4, 5], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                    "chord": None}])
    raw.basic_publish("", f"{prefix}celery", body, pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", delivery_mode=2,
        priority=0, correlation_id="cel-1", reply_to="oid-1", headers=headers))

    [delivery] = transport.claim(["celery"], consumer="w", limit=1, lease=30, timeout=5)

    task = message.decode_task(delivery.payload)
    assert (task.name, task.id, task.args, task.kwargs) == ("proj.mul", "cel-1", [4, 5], {})
    assert task.headers == headers
    assert task.properties["reply_to"] == "oid-1"
    assert (delivery.message_id, delivery.attempts) == ("cel-1", 1)
    delivery.ack()


def test_pickled_message_from_celery_reaches_the_worker_as_refused_content(
        transport: Transport, raw: Any, prefix: str) -> None:
    import pika

    transport.declare_queue("celery")
    raw.basic_publish("", f"{prefix}celery", b"\x80\x04K\x01.", pika.BasicProperties(
        content_type="application/x-python-serialize", content_encoding="binary",
        headers={"task": "proj.evil", "id": "p-1"}))

    [delivery] = transport.claim(["celery"], consumer="w", limit=1, lease=30, timeout=5)

    with pytest.raises(message.ContentDisallowed):
        message.decode_task(delivery.payload)
    delivery.nack("refused content")


def test_events_go_to_celeryev_with_celerys_routing_keys_and_headers(
        transport: Transport, raw: Any, prefix: str) -> None:
    transport.publish_event("worker.online", b'{"hostname": "w0@h", "type": "worker-online"}')
    queue = raw.queue_declare("", exclusive=True).method.queue
    raw.queue_bind(queue, f"{prefix}celeryev", "#")
    body = json.dumps([{"hostname": "w1@h", "type": "task-sent"}]).encode()

    transport.publish_event("task.multi", body)

    method, props, got = raw.basic_get(queue, auto_ack=True)
    assert (method.exchange, method.routing_key, got) == (f"{prefix}celeryev", "task.multi", body)
    assert (props.content_type, props.content_encoding, props.delivery_mode) == (
        "application/json", "utf-8", 1)
    assert props.headers == {"hostname": "w1@h"}


def test_control_entities_have_celerys_shapes(transport: Transport, rabbitmq_server: Any,
                                              prefix: str) -> None:
    events = transport.subscribe_events()
    mailbox = transport.subscribe_control("w1@h")
    oid = str(uuid.uuid4())
    transport.broadcast_control(json.dumps({
        "method": "ping", "arguments": {}, "destination": None, "pattern": None,
        "matcher": None, "ticket": "t1",
        "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": oid}}).encode())

    queues = {row.split("\t")[0]: row for row in rabbitmq_server.ctl(
        "list_queues", "-q", "--no-table-headers", "name", "exclusive", "auto_delete",
        "arguments").splitlines()}
    exchanges = {row.split("\t")[0]: row for row in rabbitmq_server.ctl(
        "list_exchanges", "-q", "--no-table-headers", "name", "type", "durable").splitlines()}

    [event_queue] = [q for q in queues if q.startswith(f"{prefix}celeryev.")]
    assert "true\ttrue" in queues[event_queue]
    assert "5000" in queues[event_queue] and "60000" in queues[event_queue]
    # Celery's names for control_exchange=<prefix>celery (celery-wire.md §4.5).
    assert "true\ttrue" in queues[f"w1@h.{prefix}celery.pidbox"]
    assert "300000" in queues[f"w1@h.{prefix}celery.pidbox"]
    assert f"{oid}.reply.{prefix}celery.pidbox" in queues
    assert exchanges[f"{prefix}celeryev"].split("\t")[1:] == ["topic", "true"]
    assert exchanges[f"{prefix}celery.pidbox"].split("\t")[1:] == ["fanout", "false"]
    assert exchanges[f"reply.{prefix}celery.pidbox"].split("\t")[1:] == ["direct", "false"]
    assert mailbox.get(5.0)[0].startswith(b'{"method": "ping"')
    events.close()
    mailbox.close()


def test_reply_queue_exists_before_the_command_is_broadcast(
        transport: Transport, raw: Any, prefix: str) -> None:
    import pika

    oid = str(uuid.uuid4())
    transport.broadcast_control(json.dumps({
        "method": "ping", "ticket": "t2",
        "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": oid}}).encode())

    # A Celery worker answers at once, before the client starts collecting.
    raw.basic_publish(f"reply.{prefix}celery.pidbox", oid, b'{"w9@h": {"ok": "pong"}}',
                      pika.BasicProperties(headers={"ticket": "t2"}, delivery_mode=1))

    assert transport.collect_replies(oid, 5.0) == [b'{"w9@h": {"ok": "pong"}}']


def test_a_monitor_started_late_lists_workers_and_queues(amqp_url: str) -> None:
    worker = from_url(amqp_url)
    worker.declare_queue("emails")
    worker.register_worker("w1@h", {"queues": ["emails"], "pid": 1}, ttl=30)
    time.sleep(0.1)

    monitor = from_url(amqp_url)
    try:
        assert monitor.list_workers() == {"w1@h": {"queues": ["emails"], "pid": 1}}
        by_name = {s.name: s for s in monitor.queue_stats()}
        assert by_name["emails"].consumers == 1
    finally:
        monitor.close()
        worker.close()
