"""Interop with real Celery 5.7 (py-amqp) on the same RabbitMQ, both directions.

Celery is configured with the names a prefixed tqcore uses (celery-wire.md §4.4,
§4.5): ``task_default_queue``, ``control_exchange``, ``event_exchange`` and
``event_queue_prefix`` under the test's prefix, and ``task_queue_max_priority=9``
so both sides declare the task queue the same way.
"""

from __future__ import annotations

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

from tests.servers.rabbitmq_server import RabbitMQServer
from tqcore import App, message
from tqcore.testing import start_worker
from tqcore.transports import from_url

celery = pytest.importorskip("celery")

pytestmark = pytest.mark.timeout(90)

CELERY_APP = '''
import os
from celery import Celery

url, prefix, ledger = (os.environ["TQ_TEST_AMQP"], os.environ["TQ_TEST_PREFIX"],
                       os.environ["TQ_TEST_LEDGER"])
app = Celery("interop", broker=url)
app.conf.update(
    task_default_queue=prefix + "celery", task_queue_max_priority=9,
    control_exchange=prefix + "celery", event_exchange=prefix + "celeryev",
    event_queue_prefix=prefix + "celeryev", worker_send_task_events=True,
    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
)


@app.task(name="interop.add", bind=True)
def add(self, x, y):
    with open(ledger, "a") as f:
        f.write(f"{self.request.id} {x + y}\\n")
    return x + y
'''


def celery_conf(prefix: str) -> dict[str, Any]:
    return {"task_default_queue": f"{prefix}celery", "task_queue_max_priority": 9,
            "control_exchange": f"{prefix}celery", "event_exchange": f"{prefix}celeryev",
            "event_queue_prefix": f"{prefix}celeryev", "broker_connection_retry_on_startup": True}


class CeleryWorker:
    def __init__(self, url: str, name: str, ledger: Path) -> None:
        self.url, self.name, self.ledger = url, name, ledger

    def ran(self, task_id: str, timeout: float = 20.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ledger.exists():
                for line in self.ledger.read_text().splitlines():
                    tid, _, result = line.partition(" ")
                    if tid == task_id:
                        return result
            time.sleep(0.1)
        return None


@pytest.fixture(scope="module")
def celery_worker(rabbitmq_server: RabbitMQServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[CeleryWorker]:
    tmp = tmp_path_factory.mktemp("celery-amqp")
    (tmp / "interop_app.py").write_text(CELERY_APP)
    prefix = f"c{uuid.uuid4().hex[:8]}."
    ledger = tmp / "ledger.log"
    env = dict(os.environ, TQ_TEST_AMQP=rabbitmq_server.url, TQ_TEST_PREFIX=prefix,
               TQ_TEST_LEDGER=str(ledger), PYTHONPATH=str(tmp))
    log = tmp / "worker.log"
    name = "celery1@interop"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "interop_app", "worker", "-P", "solo",
             "-n", name, "-E", "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 40
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield CeleryWorker(f"{rabbitmq_server.url}?prefix={prefix}", name, ledger)
    finally:
        proc.send_signal(signal.SIGQUIT)  # cold shutdown: nothing of ours is running
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_celery_worker_runs_the_task_we_publish(celery_worker: CeleryWorker) -> None:
    transport = from_url(celery_worker.url)
    tid = str(uuid.uuid4())
    try:
        transport.enqueue("celery", message.build_task("interop.add", tid, (2, 3),
                                                       queue="celery", time_limit=30.0),
                          priority=3, message_id=tid)
        assert celery_worker.ran(tid) == "5"
    finally:
        transport.close()


def test_celery_worker_runs_our_countdown_after_it_waited_in_the_broker(
        celery_worker: CeleryWorker) -> None:
    transport = from_url(celery_worker.url)
    tid = str(uuid.uuid4())
    eta = time.time() + 1.5
    try:
        transport.enqueue("celery", message.build_task("interop.add", tid, (1, 1), eta=eta,
                                                       queue="celery"), eta=eta, message_id=tid)
        assert celery_worker.ran(tid, timeout=0.5) is None
        assert celery_worker.ran(tid) == "2"
    finally:
        transport.close()


def test_celery_worker_answers_our_ping(celery_worker: CeleryWorker) -> None:
    transport = from_url(celery_worker.url)
    oid = str(uuid.uuid4())
    command = {"method": "ping", "arguments": {}, "destination": None, "pattern": None,
               "matcher": None, "ticket": str(uuid.uuid4()),
               "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": oid}}
    try:
        transport.broadcast_control(json.dumps(command).encode(), ttl=10)
        replies = transport.collect_replies(oid, 10.0)
    finally:
        transport.close()

    assert [json.loads(r) for r in replies] == [{celery_worker.name: {"ok": "pong"}}]


def test_celery_worker_events_reach_our_subscription(celery_worker: CeleryWorker) -> None:
    transport = from_url(celery_worker.url)
    seen: list[dict[str, Any]] = []
    try:
        sub = transport.subscribe_events()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                e.get("type") == "worker-heartbeat" for e in seen):
            for body in sub.get(1.0):
                decoded = json.loads(body)
                seen += decoded if isinstance(decoded, list) else [decoded]
        sub.close()
    finally:
        transport.close()

    beats = [e for e in seen if e.get("type") == "worker-heartbeat"]
    assert beats and beats[0]["hostname"] == celery_worker.name


def test_our_worker_runs_a_task_celery_sends_and_answers_celerys_ping(
        rabbitmq_server: RabbitMQServer, amqp_url: str, tmp_path: Path) -> None:
    prefix = amqp_url.split("prefix=", 1)[1]
    app = App("tq", broker=amqp_url, backend=f"sqlite:///{tmp_path / 'results.db'}")

    @app.task(name="interop.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    client = celery.Celery("client", broker=rabbitmq_server.url)
    client.conf.update(celery_conf(prefix))
    try:
        with start_worker(app, hostname="tq1@interop"):
            sent = client.send_task("interop.mul", (6, 7), priority=5)
            assert app.AsyncResult(sent.id).get(timeout=20) == 42
            replies: list[Any] = []
            thread = threading.Thread(
                target=lambda: replies.extend(client.control.ping(timeout=5.0)))
            thread.start()
            thread.join(15)
        assert {"tq1@interop": {"ok": "pong"}} in replies
    finally:
        client.close()
        app.transport.close()


def test_celery_message_claimed_has_the_shape_of_ours(rabbitmq_server: RabbitMQServer,
                                                      amqp_url: str) -> None:
    prefix = amqp_url.split("prefix=", 1)[1]
    client = celery.Celery("client", broker=rabbitmq_server.url)
    client.conf.update(celery_conf(prefix))
    transport = from_url(amqp_url)
    try:
        sent = client.send_task("proj.add", (2, 2), priority=5, countdown=None)
        [d] = transport.claim(["celery"], consumer="c", limit=5, lease=30, timeout=10)
        d.ack()
    finally:
        transport.close()
        client.close()

    assert (d.message_id, d.priority, d.attempts) == (sent.id, 5, 1)
    theirs = json.loads(d.payload)
    ours = json.loads(message.build_task("proj.add", str(uuid.uuid4()), (2, 2), queue="celery",
                                         priority=5))
    assert list(theirs["headers"]) == list(ours["headers"])
    assert theirs["properties"].keys() == ours["properties"].keys()
    task = message.decode_task(d.payload)
    assert (task.name, task.args, task.kwargs) == ("proj.add", [2, 2], {})
