"""Redis-only behaviour of the Redis transport: kombu's storage layout and priorities,
server-clock leases, settlement guards, dead letters, crash recovery, the channels'
wire shapes, and error translation. The shared semantics are in tests/contract.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.redis_server import RedisServer
from tqcore import message
from tqcore.exceptions import ConnectFailed, ImproperlyConfigured, TransportError
from tqcore.transports import OutgoingMessage, from_url
from tqcore.transports.redis import RedisTransport

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
SEP = "\x06\x16"


@pytest.fixture
def prefix(redis_url: str) -> str:
    return redis_url.split("prefix=", 1)[1]


@pytest.fixture
def open_transport(redis_url: str) -> Iterator[Callable[..., RedisTransport]]:
    opened: list[RedisTransport] = []

    def open_(**options: Any) -> RedisTransport:
        t = from_url(redis_url, **options)
        assert isinstance(t, RedisTransport)
        opened.append(t)
        return t

    yield open_
    for t in opened:
        t.close()


@pytest.fixture
def transport(open_transport: Callable[..., RedisTransport]) -> RedisTransport:
    return open_transport()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    yield client
    client.close()


def task(name: str = "proj.add", queue: str = "celery", priority: int = 0,
         task_id: str | None = None) -> tuple[str, bytes]:
    tid = task_id or f"id-{name}-{priority}-{time.monotonic_ns()}"
    return tid, message.build_task(name, tid, (2, 2), queue=queue, priority=priority)


# -- storage layout ------------------------------------------------------------------


def test_task_is_stored_verbatim_in_kombus_priority_list(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    # Given tasks of priority 0, 5 and 9 (Celery: steps 0, 3, 9)
    sent = {p: task(priority=p) for p in (0, 5, 9)}
    for p, (tid, payload) in sent.items():
        transport.enqueue("celery", payload, priority=p, message_id=tid)

    # Then each list holds exactly the envelope a Celery producer would have LPUSHed
    assert raw.lrange(f"{prefix}celery", 0, -1) == [sent[0][1]]
    assert raw.lrange(f"{prefix}celery{SEP}3", 0, -1) == [sent[5][1]]
    assert raw.lrange(f"{prefix}celery{SEP}9", 0, -1) == [sent[9][1]]
    assert raw.llen(f"{prefix}celery{SEP}6") == 0
    # and the queue is bound the way a Celery worker binds it
    assert raw.smembers(f"{prefix}_kombu.binding.celery") == {f"celery{SEP}{SEP}celery".encode()}


def test_lower_priority_number_is_served_first_fifo_within_a_step(
        transport: RedisTransport) -> None:
    assert RedisTransport.priority_highest_first is False
    for payload, priority in [(b"a0", 0), (b"b5", 5), (b"c9", 9), (b"d5", 5), (b"e0", 0),
                              (b"f9", 9), (b"g1", 1), (b"h-5", -5), (b"i42", 42)]:
        transport.enqueue("q", payload, priority=priority)

    got = []
    while batch := transport.claim(["q"], consumer="c", limit=2, lease=30):
        got += batch

    # steps: 0 <- {0, 1, -5}, 3 <- {5}, 9 <- {9, 42}; the exact priority is kept
    assert [d.payload for d in got] == [b"a0", b"e0", b"g1", b"h-5", b"b5", b"d5", b"c9",
                                        b"f9", b"i42"]
    assert [d.priority for d in got] == [0, 0, 1, 0, 5, 5, 9, 9, 9]


def test_non_envelope_payload_is_wrapped_and_unwrapped(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    transport.enqueue("q", b"\x00\xffnot json", priority=4, message_id="m-1")

    [element] = raw.lrange(f"{prefix}q{SEP}3", 0, -1)
    env = json.loads(element)
    assert env["content-type"] == "application/x-tqcore-raw"
    assert base64.b64decode(env["body"]) == b"\x00\xffnot json"
    [d] = transport.claim(["q"], consumer="c", limit=5, lease=30)
    assert (d.payload, d.priority, d.message_id) == (b"\x00\xffnot json", 4, "m-1")


def test_claimed_message_is_recorded_in_flight_with_a_server_time_lease(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    tid, payload = task()
    transport.enqueue("celery", payload, message_id=tid)
    server_before = transport.now()

    [d] = transport.claim(["celery"], consumer="c", limit=1, lease=7.5)

    assert raw.llen(f"{prefix}celery") == 0
    tag = json.loads(payload)["properties"]["delivery_tag"]
    assert d.delivery_id == tag
    assert raw.hget(f"{prefix}tq:msgs:celery", tag) == b"0" + payload
    deadline_ms = raw.zscore(f"{prefix}tq:leases:celery", tag)
    assert server_before + 7.4 <= deadline_ms / 1000 <= transport.now() + 7.5
    assert raw.hget(f"{prefix}tq:meta:celery", tag).split()[0] == b"1"


def test_lease_expiry_follows_the_server_clock_not_the_clients(
        open_transport: Callable[..., RedisTransport], monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a worker whose clock runs 300 s ahead (kombu would restore everyone's messages)
    a, b = open_transport(), open_transport()
    a.enqueue("q", b"job")
    [held] = a.claim(["q"], consumer="a", limit=1, lease=2.0)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 300)

    # Then its claims do not see the lease as expired
    assert b.claim(["q"], consumer="b", limit=1, lease=2.0) == []
    monkeypatch.setattr(time, "time", real)
    held.ack()


def test_eta_waits_in_a_server_side_zset_and_is_promoted_when_due(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    tid, payload = task()
    eta = transport.now() + 0.4
    transport.enqueue("celery", payload, eta=eta, message_id=tid)

    assert raw.zcard(f"{prefix}tq:eta:celery") == 1
    assert raw.llen(f"{prefix}celery") == 0
    assert transport.claim(["celery"], consumer="c", limit=1, lease=30) == []
    [d] = transport.claim(["celery"], consumer="c", limit=1, lease=30, timeout=5)
    assert transport.now() >= eta
    assert d.payload == payload and d.message_id == tid
    assert raw.zcard(f"{prefix}tq:eta:celery") == 0


def test_ready_messages_push_wake_tokens_that_an_empty_claim_drops(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    wake = f"{prefix}tq:wake:celery"
    transport.enqueue_many([OutgoingMessage("celery", task()[1]) for _ in range(40)])
    assert raw.llen(wake) == 16  # one per message, capped per call
    assert 0 < raw.pttl(wake) <= 60000
    assert len(transport.claim(["celery"], consumer="c", limit=100, lease=30)) == 40
    assert raw.llen(wake) == 16  # a claim that got messages leaves them
    assert transport.claim(["celery"], consumer="c", limit=1, lease=30) == []
    assert not raw.exists(wake)  # nothing ready: stale tokens dropped
    tid, payload = task()
    transport.enqueue("celery", payload, eta=transport.now() + 30, message_id=tid)
    assert not raw.exists(wake)  # scheduled, not ready
    _, next_due = transport._claim_once(["celery"], 1, 30)
    assert 29 < next_due <= 30  # the consumer blocks no longer than until the ETA


def test_a_blocked_claim_is_woken_by_an_enqueue_from_another_process(
        transport: RedisTransport, redis_url: str) -> None:
    tid, payload = task()
    code = ("import sys, time; from tqcore.transports import from_url; time.sleep(0.3); "
            "from_url(sys.argv[1]).enqueue('celery', sys.argv[2].encode(), message_id=sys.argv[3])")
    proc = subprocess.Popen([sys.executable, "-c", code, redis_url, payload.decode(), tid],
                            cwd=REPO)
    try:
        [d] = transport.claim(["celery"], consumer="c", limit=1, lease=30, timeout=20)
    finally:
        proc.wait(30)
    assert d.message_id == tid


def test_foreign_garbage_and_duplicate_bytes_are_delivered_and_settled_separately(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    # Given bytes LPUSHed by someone else: not JSON, twice the same, and a tagless envelope
    tagless = json.dumps({"body": "", "properties": {}}).encode()
    raw.lpush(f"{prefix}q", b"\xff\x00garbage", b"\xff\x00garbage", tagless)

    got = transport.claim(["q"], consumer="c", limit=10, lease=30)

    assert [d.payload for d in got] == [b"\xff\x00garbage", b"\xff\x00garbage", tagless]
    assert len({d.delivery_id for d in got}) == 3
    got[0].nack("DecodeError: not JSON")
    got[1].ack()
    got[2].requeue()
    [again] = transport.claim(["q"], consumer="c", limit=10, lease=30)
    assert (again.payload, again.attempts) == (tagless, 2)
    again.ack()
    [letter] = transport.dead_letters("q")
    assert (letter.payload, letter.reason) == (b"\xff\x00garbage", "DecodeError: not JSON")
    assert raw.hlen(f"{prefix}tq:meta:q") == raw.hlen(f"{prefix}tq:msgs:q") == 0


# -- settlement ----------------------------------------------------------------------


def test_stale_ack_after_redelivery_leaves_the_new_holder_alone(
        open_transport: Callable[..., RedisTransport], raw: Any, prefix: str) -> None:
    slow, fast = open_transport(), open_transport()
    slow.enqueue("q", b"contended")
    [stale] = slow.claim(["q"], consumer="slow", limit=1, lease=0.2)
    time.sleep(0.3)
    [current] = fast.claim(["q"], consumer="fast", limit=1, lease=30)

    stale.ack()
    slow.renew([stale], 60)  # a stale renew must not extend the new lease either

    assert current.attempts == 2
    assert raw.zcard(f"{prefix}tq:leases:q") == 1
    assert raw.zscore(f"{prefix}tq:leases:q", current.delivery_id) / 1000 < fast.now() + 31
    current.ack()
    assert raw.zcard(f"{prefix}tq:leases:q") == 0
    assert raw.hlen(f"{prefix}tq:meta:q") == 0
    assert raw.hlen(f"{prefix}tq:msgs:q") == 0


def test_dead_letters_keep_reason_attempts_and_the_original_bytes(
        open_transport: Callable[..., RedisTransport], raw: Any, prefix: str) -> None:
    t = open_transport(max_deliveries=1)
    hooked: list[Any] = []
    t.on_dead_letter = hooked.append
    tid, payload = task(queue="q")
    t.enqueue("q", payload, message_id=tid)
    [d] = t.claim(["q"], consumer="c", limit=1, lease=0.1)
    d.requeue()

    assert t.claim(["q"], consumer="c", limit=1, lease=0.1) == []  # 2nd claim > max 1

    [letter] = hooked
    assert (letter.queue, letter.payload, letter.message_id, letter.attempts) == (
        "q", payload, tid, 1)
    assert "max_deliveries=1" in letter.reason
    [(_, fields)] = raw.xrange(f"{prefix}tq:dead:q")
    assert fields[b"payload"] == payload and fields[b"message_id"] == tid.encode()
    assert t.dead_letters("q")[0].id == letter.id
    assert raw.hlen(f"{prefix}tq:meta:q") == 0


def test_a_message_over_the_size_cap_is_dead_lettered_by_the_claim_unread(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    """Never sent to the claiming process: dead-lettered in the script with the reason
    the worker gives, its neighbours claimed as usual."""
    hooked: list[Any] = []
    transport.on_dead_letter = hooked.append
    small_id, small = task(queue="q")
    big_id = "big-1"
    big = message.build_task("proj.add", big_id, ("x" * 3_000_000,), queue="q")
    transport.enqueue("q", small, message_id=small_id)
    transport.enqueue("q", big, message_id=big_id)
    transport.claim_max_size = 2_000_000

    got = transport.claim(["q"], consumer="c", limit=5, lease=10)

    assert [d.message_id for d in got] == [small_id]
    assert hooked == []  # not a lost worker: nothing to record as the task's failure
    [letter] = transport.dead_letters("q")
    assert letter.reason == (f"malformed message: message too large: {len(big)} bytes"
                             " (limit 2000000)")
    assert (letter.message_id, letter.payload, letter.attempts) == (big_id, big, 1)
    assert raw.hlen(f"{prefix}tq:meta:q") == 1  # only the small one's, leased
    transport.claim_max_size = None  # no cap: as big as the broker takes
    transport.enqueue("q", big, message_id="big-2")
    [d] = transport.claim(["q"], consumer="c", limit=5, lease=10)
    assert d.payload == big


def test_purge_forgets_the_bookkeeping_of_purged_messages(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    transport.enqueue_many([OutgoingMessage("q", f"m{i}".encode(), priority=i % 10)
                            for i in range(1200)])
    transport.enqueue("q", b"later", eta=transport.now() + 60)

    assert transport.purge("q") == 1201

    assert raw.hlen(f"{prefix}tq:meta:q") == 0
    assert raw.hlen(f"{prefix}tq:msgs:q") == 0
    assert not raw.keys(f"{prefix}tq:purging:*")


def test_enqueue_retried_after_a_lost_reply_is_not_duplicated(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    tid, payload = task()
    keys = [*transport._lists("celery"), transport._qkey("eta", "celery"),
            transport._qkey("msgs", "celery"), transport._qkey("meta", "celery"),
            transport._k("tq:queues"), transport._qkey("wake", "celery"),
            transport._qkey("acked", "celery")]
    tag = json.loads(payload)["properties"]["delivery_tag"]
    for retry in ("0", "1"):  # the first call landed, its reply was lost, then retried
        transport._eval("enqueue", "ENQUEUE", keys, ["celery", retry, 0, tag, 0, payload])
    assert raw.llen(f"{prefix}celery") == 1

    # The first copy ran and was acked (or dead-lettered) before the retry arrived.
    for settle in ("ack", "nack"):
        [d] = transport.claim(["celery"], consumer="c", limit=1, lease=10)
        if settle == "ack":
            d.ack()
        else:
            d.nack("bad")
        transport._eval("enqueue", "ENQUEUE", keys, ["celery", "1", 0, tag, 0, payload])
        assert raw.llen(f"{prefix}celery") == 0, settle
        assert 0 < raw.pttl(f"{prefix}tq:acked:celery") <= 30_000
        # a first attempt (not a retry) with the same id is a new publish: enqueued
        transport._eval("enqueue", "ENQUEUE", keys, ["celery", "0", 0, tag, 0, payload])
        assert raw.llen(f"{prefix}celery") == 1


# -- crash recovery --------------------------------------------------------------------

_CLAIM_AND_HANG = """
import sys, time
from tqcore.transports import from_url
t = from_url(sys.argv[1])
got = t.claim(["q"], consumer="doomed", limit=int(sys.argv[2]), lease=float(sys.argv[3]))
print(len(got), flush=True)
time.sleep(600)
"""


def test_killed_consumer_messages_come_back_once_after_the_lease(
        transport: RedisTransport, redis_url: str) -> None:
    transport.enqueue_many([OutgoingMessage("q", f"m{i}".encode()) for i in range(30)])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", _CLAIM_AND_HANG, redis_url, "10", "1.0"],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "10"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    killed_at = time.monotonic()

    first = transport.claim(["q"], consumer="c", limit=100, lease=30)
    assert len(first) == 20  # the dead consumer's 10 are still leased
    again = transport.claim(["q"], consumer="c", limit=100, lease=30, timeout=5)
    assert time.monotonic() - killed_at >= 0.5
    assert len(again) == 10 and {d.attempts for d in again} == {2}
    assert Counter(d.payload for d in first + again) == Counter(
        f"m{i}".encode() for i in range(30))
    transport.ack(first + again)
    assert transport.claim(["q"], consumer="c", limit=100, lease=30, timeout=1.2) == []


# -- channels: Celery's wire shapes ----------------------------------------------------


def _psubscribe(raw: Any, pattern: str) -> Any:
    ps = raw.pubsub()
    ps.psubscribe(pattern)
    assert ps.get_message(timeout=2)["type"] == "psubscribe"
    return ps


def test_events_are_published_on_celeryev_in_kombus_envelope(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    ps = _psubscribe(raw, f"{prefix}/0.celeryev/*")
    body = json.dumps({"hostname": "w1@box", "type": "worker-heartbeat"}).encode()

    transport.publish_event("worker.heartbeat", body)

    msg = ps.get_message(timeout=2)
    ps.close()
    assert msg["channel"] == f"{prefix}/0.celeryev/worker.heartbeat".encode()
    env = json.loads(msg["data"])
    assert base64.b64decode(env["body"]) == body
    assert env["headers"] == {"hostname": "w1@box"}
    assert env["content-type"] == "application/json"
    props = env["properties"]
    assert props["delivery_info"] == {"exchange": "celeryev", "routing_key": "worker.heartbeat"}
    assert (props["delivery_mode"], props["priority"], props["body_encoding"]) == (
        1, 0, "base64")
    assert raw.xlen(f"{prefix}tq:events") == 1


def test_replay_does_not_repeat_events_also_received_live(transport: RedisTransport) -> None:
    transport.publish_event("task.sent", b'{"n": 1}')
    sub = transport.subscribe_events(replay=30)
    transport.publish_event("task.sent", b'{"n": 2}')

    got = sub.get(1.0)
    while more := sub.get(0.3):
        got += more
    assert got == [b'{"n": 1}', b'{"n": 2}']


def test_control_command_and_reply_use_pidbox_names_binding_and_ticket(
        open_transport: Callable[..., RedisTransport], raw: Any, prefix: str) -> None:
    client, worker = open_transport(), open_transport()
    mailbox = worker.subscribe_control("w1@box")
    ps = _psubscribe(raw, f"{prefix}/0.celery.pidbox")
    command = {"method": "ping", "arguments": {}, "destination": None, "pattern": None,
               "matcher": None, "ticket": "tick-1",
               "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "oid-1"}}

    client.broadcast_control(json.dumps(command).encode(), ttl=10)

    # the reply binding a Celery worker looks up is there
    assert raw.smembers(f"{prefix}_kombu.binding.reply.celery.pidbox") == {
        f"oid-1{SEP}{SEP}oid-1.reply.celery.pidbox".encode()}
    env = json.loads(ps.get_message(timeout=2)["data"])
    ps.close()
    assert env["properties"]["delivery_info"] == {"exchange": "celery.pidbox", "routing_key": ""}
    assert env["headers"]["expires"] > time.time()
    [body] = mailbox.get(2.0)
    assert json.loads(body) == command

    worker.send_reply("oid-1", b'{"w1@box": {"ok": "pong"}}')

    [element] = raw.lrange(f"{prefix}oid-1.reply.celery.pidbox", 0, -1)
    reply = json.loads(element)
    assert reply["headers"]["ticket"] == "tick-1"
    assert reply["properties"]["delivery_info"] == {"exchange": "reply.celery.pidbox",
                                                    "routing_key": "oid-1"}
    assert client.collect_replies("oid-1", 1.0) == [b'{"w1@box": {"ok": "pong"}}']


def test_reply_bindings_are_dropped_after_their_ttl(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    def ask(oid: str, ttl: float) -> None:
        cmd = {"method": "ping", "ticket": "t", "reply_to": {"routing_key": oid}}
        transport.broadcast_control(json.dumps(cmd).encode(), ttl=ttl)

    ask("old", 0.1)
    time.sleep(0.2)
    ask("new", 60)

    assert raw.smembers(f"{prefix}_kombu.binding.reply.celery.pidbox") == {
        f"new{SEP}{SEP}new.reply.celery.pidbox".encode()}


# -- connection errors -----------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_raises_connect_failed_without_the_password() -> None:
    t = from_url(f"redis://user:s3cret@127.0.0.1:{_closed_port()}/0?socket_connect_timeout=1"
                 "&retries=1")
    with pytest.raises(ConnectFailed) as info:
        t.enqueue("q", b"x")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    assert "s3cret" not in repr(t)
    t.close()


@pytest.mark.parametrize("url", ["redis://h/0?password=hunter2", "redis://h:port/0?x=hunter2",
                                 "redis://user:hunter2@h/0?bogus=1"])
def test_bad_url_options_are_refused_without_echoing_the_query(url: str) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        from_url(url)
    assert "hunter2" not in str(info.value)


def test_server_errors_are_translated(transport: RedisTransport, raw: Any, prefix: str) -> None:
    raw.set(f"{prefix}q", "not a list")
    with pytest.raises(TransportError, match="WRONGTYPE"):
        transport.enqueue("q", b"x")


def test_transport_survives_a_server_restart_and_fails_fast_while_it_is_down(
        tmp_path: Path) -> None:
    from tests.servers.redis_server import running_redis

    with running_redis(tmp_path / "a") as server:
        port = server.port
        t = from_url(f"{server.url}?prefix=restart:&socket_connect_timeout=1")
        t.enqueue("q", b"before")
        os.kill(server.pid, signal.SIGKILL)
        time.sleep(0.1)

        # Then, while it is down, calls fail with a typed error within a few seconds
        started = time.monotonic()
        with pytest.raises(TransportError):
            t.claim(["q"], consumer="c", limit=1, lease=30)
        assert time.monotonic() - started < 5

    # and when it is back (empty: no persistence) the same transport works again
    with running_redis(tmp_path / "b", port=port):
        t.enqueue("q", b"after")
        assert [d.payload for d in t.claim(["q"], consumer="c", limit=5, lease=30)] == [b"after"]
        t.close()


def _make_certs(where: Path) -> tuple[Path, Path, Path]:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=tq-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (where / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext")
    return where / "server.crt", where / "server.key", where / "ca.crt"


def test_rediss_verifies_the_server_certificate_by_default(tmp_path: Path) -> None:
    from tests.servers.redis_server import running_redis

    cert, key, ca = _make_certs(tmp_path / "certs")
    with running_redis(tmp_path / "srv", tls=(cert, key, ca)) as server:
        base = f"rediss://127.0.0.1:{server.port}/0?prefix=tls:&socket_connect_timeout=2"

        unverified = from_url(f"{base}&retries=0")
        with pytest.raises(ConnectFailed, match="(?i)certificate"):
            unverified.enqueue("q", b"x")
        unverified.close()

        trusted = from_url(f"{base}&ssl_ca_certs={ca}")
        trusted.enqueue("q", b"over tls")
        [d] = trusted.claim(["q"], consumer="c", limit=1, lease=30)
        assert d.payload == b"over tls"
        trusted.close()

        opted_out = from_url(f"{base}&ssl_cert_reqs=none")
        assert opted_out.queue_stats(["q"])[0].in_flight == 1
        opted_out.close()


# -- the producer path: enqueue + task-sent event in one round trip ----------------------


def _count_exchanges(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from tqcore.transports.redis_producer import RedisProducer

    calls: list[int] = []
    original = RedisProducer._exchange

    def counted(self: Any, client: Any, commands: Any, extra: Any) -> Any:
        calls.append(1)
        return original(self, client, commands, extra)

    monkeypatch.setattr(RedisProducer, "_exchange", counted)
    return calls


def test_enqueue_with_event_is_one_round_trip_in_celerys_shapes(
        transport: RedisTransport, raw: Any, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    transport.declare_queue("celery")
    ps = _psubscribe(raw, f"{prefix}/0.celeryev/*")
    tid, payload = task()
    tag = json.loads(payload)["properties"]["delivery_tag"]
    body = json.dumps({"hostname": "gen1@box", "type": "task-sent", "uuid": tid}).encode()
    exchanges = _count_exchanges(monkeypatch)

    error = transport.enqueue_with_event(
        [OutgoingMessage("celery", payload, 0, None, tid, tag)], "task.sent", lambda: body,
        hostname="gen1@box")

    assert error is None and len(exchanges) == 1
    assert raw.lrange(f"{prefix}celery", 0, -1) == [payload]  # stored verbatim
    msg = ps.get_message(timeout=2)
    ps.close()
    assert msg["channel"] == f"{prefix}/0.celeryev/task.sent".encode()
    env = json.loads(msg["data"])
    assert base64.b64decode(env["body"]) == body and env["headers"] == {"hostname": "gen1@box"}
    assert env["properties"]["delivery_info"] == {"exchange": "celeryev",
                                                  "routing_key": "task.sent"}
    [(_, fields)] = raw.xrange(f"{prefix}tq:events")
    assert fields == {b"tag": env["properties"]["delivery_tag"].encode(), b"rk": b"task.sent",
                      b"body": body}
    [d] = transport.claim(["celery"], consumer="c", limit=5, lease=30)
    assert (d.payload, d.delivery_id, d.message_id) == (payload, tag, tid)


def test_producer_events_are_the_envelopes_publish_event_sends(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    ps = _psubscribe(raw, f"{prefix}/0.celeryev/*")
    body = json.dumps([{"hostname": "w1@box", "type": "task-sent"}]).encode()
    transport.publish_event("task.multi", body)
    transport.enqueue_with_event([], "task.multi", body)  # hostname read from the body
    _assert_same_two_events(ps, raw, prefix, body)


def _assert_same_two_events(ps: Any, raw: Any, prefix: str, body: bytes) -> None:
    """The two events ``ps`` received are one envelope (but for their tags), and the
    history holds ``body`` twice."""
    first, second = (json.loads(ps.get_message(timeout=2)["data"]) for _ in range(2))
    ps.close()
    for env in (first, second):
        env["properties"].pop("delivery_tag")
    assert first == second
    assert [f[b"body"] for _, f in raw.xrange(f"{prefix}tq:events")] == [body, body]


def test_a_large_event_written_in_pieces_is_the_one_publish_event_sends(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    """A group's event and script calls are megabytes: written piece by piece, never
    copied together, they must still be exactly the commands of the small case."""
    ps = _psubscribe(raw, f"{prefix}/0.celeryev/*")
    body = json.dumps([{"hostname": "w1@box", "type": "task-sent", "uuid": f"{i:06d}" * 20}
                       for i in range(2000)]).encode()
    assert len(body) > 4 * 65536
    transport.publish_event("task.multi", body)
    many = [OutgoingMessage("big", b"x" * 700 + f"{i}".encode()) for i in range(1500)]
    assert transport.enqueue_with_event(many, "task.multi", lambda: body) is None
    _assert_same_two_events(ps, raw, prefix, body)
    got = transport.claim(["big"], consumer="c", limit=5000, lease=30)
    assert sorted(d.payload for d in got) == sorted(m.payload for m in many)


def test_enqueue_survives_a_flushed_script_cache_and_several_calls(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    transport.enqueue("q", b"first")
    raw.script_flush()
    transport.enqueue("q", b"after flush")  # NOSCRIPT: loaded and sent again
    raw.script_flush()
    many = [OutgoingMessage("q", f"m{i}".encode(), priority=i % 10) for i in range(2300)]
    error = transport.enqueue_with_event(many + [OutgoingMessage("r", b"other queue")],
                                         "task.multi", b"[]")
    assert error is None
    assert raw.xlen(f"{prefix}tq:events") == 1
    got = transport.claim(["q", "r"], consumer="c", limit=5000, lease=30)
    assert sorted(d.payload for d in got) == sorted(
        [b"first", b"after flush", b"other queue"] + [m.payload for m in many])


def test_a_retried_enqueue_is_not_duplicated_and_its_event_not_resent(
        transport: RedisTransport, raw: Any, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from tqcore.transports.redis_producer import RedisProducer

    original = RedisProducer._exchange
    lost: list[int] = []

    def reply_lost_once(self: Any, client: Any, commands: Any, extra: Any) -> Any:
        out = original(self, client, commands, extra)  # the write landed ...
        if not lost:
            lost.append(1)
            raise redis.ConnectionError("reply lost")  # ... its reply did not
        return out

    monkeypatch.setattr(RedisProducer, "_exchange", reply_lost_once)
    tid, payload = task()
    error = transport.enqueue_with_event([OutgoingMessage("celery", payload, 0, None, tid)],
                                         "task.sent", b'{"type": "task-sent"}')
    assert raw.llen(f"{prefix}celery") == 1  # the retry skipped the enqueued id
    assert raw.xlen(f"{prefix}tq:events") == 1  # published once, not again
    assert error is not None and "not sent again" in str(error)


def test_enqueue_errors_raise_and_event_errors_are_returned(
        transport: RedisTransport, raw: Any, prefix: str) -> None:
    raw.set(f"{prefix}tq:events", "not a stream")
    tid, payload = task()
    error = transport.enqueue_with_event([OutgoingMessage("celery", payload, 0, None, tid)],
                                         "task.sent", b"{}")
    assert isinstance(error, TransportError) and "WRONGTYPE" in str(error)
    assert raw.llen(f"{prefix}celery") == 1  # the message went all the same

    def unencodable() -> bytes:
        raise ValueError("NaN in an event field")

    error = transport.enqueue_with_event([OutgoingMessage("celery", payload, 0, None, tid)],
                                         "task.sent", unencodable)
    assert isinstance(error, ValueError) and raw.llen(f"{prefix}celery") == 2
    raw.set(f"{prefix}q", "not a list")
    with pytest.raises(TransportError, match="WRONGTYPE"):
        transport.enqueue_with_event([OutgoingMessage("q", b"x")], "task.sent", b"{}")


def test_app_sends_task_and_task_sent_event_together(redis_url: str, raw: Any,
                                                     prefix: str) -> None:
    from tqcore import App, group

    app = App("prod", broker=redis_url, backend="memory://", set_as_current=False)

    @app.task(name="prod.add")
    def add(x: int, y: int) -> int:
        return x + y

    try:
        sub = app.transport.subscribe_events()
        one = add.delay(2, 3)
        res = group(add.s(i, i) for i in range(3)).apply_async()
        with app.producer_batch():
            batched = [add.delay(i, 1) for i in range(2)]
        bodies = sub.get(2.0)
        while len(bodies) < 3 and (more := sub.get(1.0)):
            bodies += more
        sub.close()
    finally:
        app.close()
    single, grouped, batch = (json.loads(b) for b in bodies)
    assert single["type"] == "task-sent" and single["uuid"] == one.id
    assert (single["name"], single["args"], single["queue"]) == ("prod.add", "(2, 3)", "celery")
    assert [e["uuid"] for e in grouped] == [r.id for r in res.results]
    assert {e["group"] for e in grouped} == {res.id}
    assert [e["group_index"] for e in grouped] == [0, 1, 2]
    assert [e["uuid"] for e in batch] == [r.id for r in batched]
    assert raw.llen(f"{prefix}celery") == 6
    tasks = [message.decode_task(p) for p in raw.lrange(f"{prefix}celery", 0, -1)]
    assert {t.id for t in tasks} == {one.id, *(r.id for r in res.results),
                                     *(r.id for r in batched)}


def test_a_claim_retried_after_a_lost_reply_hands_out_the_same_messages(
        transport: RedisTransport) -> None:
    transport.enqueue_many([OutgoingMessage("celery", task()[1]) for _ in range(5)])
    q = "celery"
    keys = [transport._k("tq:seq"), *transport._lists(q), transport._qkey("eta", q),
            transport._qkey("msgs", q), transport._qkey("leases", q), transport._qkey("meta", q),
            transport._qkey("dead", q), transport._qkey("wake", q),
            transport._k("tq:claimed:test-token"), transport._k("tq:claimed:test-token")]
    args = [2, 30_000, 5, 100, 0, q]

    def call() -> list[Any]:
        out = transport._eval("claim", "CLAIM", keys, args)
        return [out[0][i + 1] for i in range(0, len(out[0]), 5)]

    first = call()
    again = call()  # the same call: its first reply was lost
    assert len(first) == 2 and again == first
    (stats,) = transport.queue_stats([q])
    assert (stats.depth, stats.in_flight) == (3, 2)  # nothing more leased to nobody
    rest = transport.claim([q], consumer="c", limit=10, lease=30)
    assert len(rest) == 3 and not {d.delivery_id for d in rest} & {i.decode() for i in first}
    # a thread's next claim drops the record of its previous one (answered by then)
    client, record = transport.conn.client, transport._claims.record
    assert client.exists(record) == 1
    transport.claim([q], consumer="c", limit=10, lease=30)
    assert client.exists(record) == 0
