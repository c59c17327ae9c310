"""Interop with real Celery 5.7 on the same Redis: messages, results, control and events
cross in both directions (celery-wire.md §4.8).

Celery is told the test's key prefix through ``global_keyprefix``, kombu's option that
tqcore's ``?prefix=`` mirrors, so each test still owns its namespace.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.redis_server import RedisServer
from tqcore import message, states
from tqcore.backends.redis import RedisBackend
from tqcore.transports import from_url
from tqcore.transports.redis import RedisTransport

celery = pytest.importorskip("celery")

pytestmark = pytest.mark.timeout(60)

CELERY_APP = '''
import os
from celery import Celery

url, prefix = os.environ["TQ_TEST_REDIS"], os.environ["TQ_TEST_PREFIX"]
app = Celery("interop", broker=url, backend=url)
app.conf.update(
    broker_transport_options={"global_keyprefix": prefix},
    result_backend_transport_options={"global_keyprefix": prefix},
    result_extended=True, worker_send_task_events=True, worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="interop.add")
def add(x, y):
    return x + y
'''


def celery_app(server: RedisServer, prefix: str) -> Any:
    app = celery.Celery("client", broker=server.url, backend=server.url)
    app.conf.update(broker_transport_options={"global_keyprefix": prefix},
                    result_backend_transport_options={"global_keyprefix": prefix},
                    broker_connection_retry_on_startup=True)
    return app


def _prefix(url: str) -> str:
    return url.split("prefix=", 1)[1]


def test_celery_producer_message_is_claimed_and_shaped_like_ours(
        redis_server: RedisServer, redis_url: str) -> None:
    app = celery_app(redis_server, _prefix(redis_url))
    sent = app.send_task("proj.add", (2, 2), priority=5)
    transport = from_url(redis_url)
    try:
        [d] = transport.claim(["celery"], consumer="c", limit=5, lease=30)
        d.ack()
    finally:
        transport.close()
        app.close()

    assert (d.message_id, d.priority, d.attempts) == (sent.id, 5, 1)
    theirs = json.loads(d.payload)
    ours = json.loads(message.build_task("proj.add", str(uuid.uuid4()), (2, 2), queue="celery",
                                         priority=5))
    assert theirs.keys() == ours.keys()
    assert list(theirs["headers"]) == list(ours["headers"])  # same set, same order
    assert theirs["properties"].keys() == ours["properties"].keys()
    assert theirs["properties"]["delivery_info"] == ours["properties"]["delivery_info"]
    task = message.decode_task(d.payload)
    assert (task.name, task.args, task.kwargs) == ("proj.add", [2, 2], {})
    assert task.embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_our_envelope_has_the_kombu_shape_of_celery_wire_4_2() -> None:
    tid = str(uuid.uuid4())
    env = json.loads(message.build_task("capapp.add", tid, (2, 3), queue="celery", priority=5))

    assert set(env) == {"body", "content-encoding", "content-type", "headers", "properties"}
    assert (env["content-encoding"], env["content-type"]) == ("utf-8", "application/json")
    props = env["properties"]
    assert set(props) == {"correlation_id", "reply_to", "delivery_mode", "delivery_info",
                          "priority", "body_encoding", "delivery_tag"}
    assert (props["correlation_id"], props["delivery_mode"], props["priority"],
            props["body_encoding"]) == (tid, 2, 5, "base64")
    assert props["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert uuid.UUID(props["delivery_tag"]).version == 4
    assert json.loads(base64.b64decode(env["body"])) == [
        [2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


# -- a real Celery worker -------------------------------------------------------------


class CeleryWorker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, url: str, name: str) -> None:
        self.proc, self.log, self.url, self.name = proc, log, url, name


@pytest.fixture(scope="module")
def celery_worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[CeleryWorker]:
    tmp = tmp_path_factory.mktemp("celery")
    (tmp / "interop_app.py").write_text(CELERY_APP)
    prefix = f"celery-{uuid.uuid4().hex[:8]}:"
    env = dict(os.environ, TQ_TEST_REDIS=redis_server.url, TQ_TEST_PREFIX=prefix,
               PYTHONPATH=str(tmp))
    log = tmp / "worker.log"
    name = "celery1@interop"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "interop_app", "worker", "-P", "solo",
             "-n", name, "-E", "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    worker = CeleryWorker(proc, log, f"{redis_server.url}?prefix={prefix}", name)
    try:
        deadline = time.monotonic() + 30
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield worker
    finally:
        proc.send_signal(signal.SIGQUIT)  # cold shutdown: nothing of ours is running
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_celery_worker_runs_our_task_and_we_read_its_result(celery_worker: CeleryWorker) -> None:
    transport, backend = from_url(celery_worker.url), RedisBackend(celery_worker.url)
    tid = str(uuid.uuid4())
    try:
        transport.enqueue("celery", message.build_task("interop.add", tid, (2, 3), queue="celery"),
                          message_id=tid)
        theirs = backend.wait_for(tid, timeout=20)

        class Request:
            task, args, kwargs, hostname, retries = "interop.add", [2, 3], {}, "w@h", 0
            delivery_info = {"routing_key": "celery"}
            children: list[Any] = []

        ours = backend.store_result("ours-" + tid, 5, states.SUCCESS, request=Request())
    finally:
        transport.close()
        backend.close()

    assert (theirs["status"], theirs["result"], theirs["task_id"]) == ("SUCCESS", 5, tid)
    assert (theirs["worker"], theirs["queue"], theirs["args"]) == (celery_worker.name, "celery",
                                                                  [2, 3])
    assert set(theirs) == set(ours)


def test_celery_worker_answers_our_ping(celery_worker: CeleryWorker) -> None:
    transport = from_url(celery_worker.url)
    oid, ticket = str(uuid.uuid4()), str(uuid.uuid4())
    command = {"method": "ping", "arguments": {}, "destination": None, "pattern": None,
               "matcher": None, "ticket": ticket,
               "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": oid}}
    try:
        transport.broadcast_control(json.dumps(command).encode(), ttl=10)
        replies = transport.collect_replies(oid, 10.0)
    finally:
        transport.close()

    assert [json.loads(r) for r in replies] == [{celery_worker.name: {"ok": "pong"}}]


def test_celery_worker_events_reach_our_subscription(celery_worker: CeleryWorker) -> None:
    transport = from_url(celery_worker.url)
    try:
        sub = transport.subscribe_events()
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                e.get("type") == "worker-heartbeat" for e in seen):
            for body in sub.get(1.0):
                decoded = json.loads(body)
                seen += decoded if isinstance(decoded, list) else [decoded]
        sub.close()
    finally:
        transport.close()

    beat = next(e for e in seen if e.get("type") == "worker-heartbeat")
    assert beat["hostname"] == celery_worker.name
    assert {"freq", "clock", "timestamp", "active", "processed"} <= set(beat)


# -- a real Celery client talking to tqcore ----------------------------------------------


def test_celery_control_client_gets_our_reply(redis_server: RedisServer, redis_url: str) -> None:
    app = celery_app(redis_server, _prefix(redis_url))
    transport = from_url(redis_url)
    assert isinstance(transport, RedisTransport)
    mailbox = transport.subscribe_control("tq1@box")
    replies: list[Any] = []
    asker = threading.Thread(target=lambda: replies.extend(app.control.ping(timeout=5.0, limit=1)))
    asker.start()
    try:
        bodies: list[bytes] = []
        deadline = time.monotonic() + 5
        while not bodies and time.monotonic() < deadline:
            bodies = mailbox.get(0.5)
        [command] = [json.loads(b) for b in bodies]
        assert command["method"] == "ping"
        transport.send_reply(command["reply_to"]["routing_key"], b'{"tq1@box": {"ok": "pong"}}')
        asker.join(10)
    finally:
        transport.close()
        app.close()

    assert replies == [{"tq1@box": {"ok": "pong"}}]


def test_celery_event_receiver_sees_our_events(redis_server: RedisServer, redis_url: str) -> None:
    app = celery_app(redis_server, _prefix(redis_url))
    transport = from_url(redis_url)
    got: list[dict[str, Any]] = []
    event = {"hostname": "tq1@box", "utcoffset": 0, "pid": 1, "clock": 1,
             "timestamp": time.time(), "type": "worker-heartbeat", "freq": 2.0}

    def publish_soon() -> None:
        time.sleep(1.0)  # after the receiver subscribed
        for _ in range(3):
            transport.publish_event("worker.heartbeat", json.dumps(event).encode())
            time.sleep(0.3)

    publisher = threading.Thread(target=publish_soon)
    publisher.start()
    try:
        with app.connection_for_read() as conn:
            def handle(ev: dict[str, Any]) -> None:
                got.append(ev)
                receiver.should_stop = True

            receiver = app.events.Receiver(conn, handlers={"*": handle})
            receiver.capture(limit=None, timeout=5, wakeup=False)
    finally:
        publisher.join()
        transport.close()
        app.close()

    assert got and got[0]["type"] == "worker-heartbeat" and got[0]["hostname"] == "tq1@box"
