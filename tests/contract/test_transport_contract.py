"""The transport contract (DESIGN §2.1): every broker behaves the same way.

Each test runs once per broker in ``conftest.BROKERS`` against a fresh, private
broker. Behaviour that only some brokers can show (other OS processes reaching the
broker) is skipped where it cannot apply. Quirks of a single broker belong in
``tests/transports/``, not here.

Timing: leases are 0.3 s and the suite waits 0.45 s for one to run out. Waits are
checked from below ("not before"); upper bounds are several seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tqcore.transports import Delivery, OutgoingMessage, QueueStats, Transport

if TYPE_CHECKING:
    from .conftest import Broker

pytestmark = pytest.mark.timeout(60)

Q = "work"
LEASE = 0.3
PAST_LEASE = 0.45
REPO = Path(__file__).resolve().parents[2]


def claim(transport: Transport, *, queues: Sequence[str] = (Q,), limit: int = 100,
          lease: float = 30.0, timeout: float = 0.0, consumer: str = "c1") -> list[Delivery]:
    return transport.claim(list(queues), consumer=consumer, limit=limit, lease=lease,
                           timeout=timeout)


def drain(transport: Transport, batch: int) -> list[Delivery]:
    """Claim ``batch`` at a time until nothing is ready."""
    out: list[Delivery] = []
    while got := claim(transport, limit=batch):
        assert len(got) <= batch
        out += got
    return out


def stats(transport: Transport, queue: str = Q) -> QueueStats:
    [figures] = transport.queue_stats([queue])
    assert figures.name == queue
    return figures


def payloads(deliveries: Iterable[Delivery]) -> list[bytes]:
    return [d.payload for d in deliveries]


def counts(figures: QueueStats) -> tuple[int, int, int, int]:
    return figures.depth, figures.scheduled, figures.in_flight, figures.dead_lettered


# -- enqueue and claim ------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", bytes(range(256)), bytes(range(256)) * 1024],
                         ids=["empty", "binary", "256KiB"])
def test_claim_returns_the_enqueued_message(transport: Transport, payload: bytes) -> None:
    transport.enqueue(Q, payload, priority=3, message_id="task-1")

    [d] = claim(transport)

    assert (d.payload, d.queue, d.message_id, d.priority) == (payload, Q, "task-1", 3)
    assert d.attempts == 1
    assert not d.redelivered


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_fifo_within_one_priority(transport: Transport, batch: int) -> None:
    sent = [f"m{i}".encode() for i in range(20)]
    for p in sent:
        transport.enqueue(Q, p, priority=4)

    assert payloads(drain(transport, batch)) == sent


@pytest.mark.parametrize("batch", [1, 4, 100])
def test_higher_priority_served_first(transport: Transport, batch: int) -> None:
    for payload, priority in [(b"a0", 0), (b"b5", 5), (b"c9", 9), (b"d5", 5), (b"e0", 0),
                              (b"f9", 9), (b"g1", 1)]:
        transport.enqueue(Q, payload, priority=priority)

    got = drain(transport, batch)

    if transport.priority_highest_first:
        assert payloads(got) == [b"c9", b"f9", b"b5", b"d5", b"g1", b"a0", b"e0"]
        assert [d.priority for d in got] == [9, 9, 5, 5, 1, 0, 0]
    else:  # Celery on Redis: kombu's steps 0 < 3 < 6 < 9, lower first, FIFO within a step
        assert payloads(got) == [b"a0", b"e0", b"g1", b"b5", b"d5", b"c9", b"f9"]
        assert [d.priority for d in got] == [0, 0, 1, 5, 5, 9, 9]


def test_priorities_clamped_to_0_9(transport: Transport) -> None:
    for payload, priority in [(b"zero", 0), (b"negative", -5), (b"nine", 9), (b"huge", 42)]:
        transport.enqueue(Q, payload, priority=priority)

    got = drain(transport, 1)

    if transport.priority_highest_first:
        assert payloads(got) == [b"nine", b"huge", b"zero", b"negative"]
        assert [d.priority for d in got] == [9, 9, 0, 0]
    else:
        assert payloads(got) == [b"zero", b"negative", b"nine", b"huge"]
        assert [d.priority for d in got] == [0, 0, 9, 9]


def test_claim_serves_only_the_named_queues(transport: Transport) -> None:
    transport.enqueue("a", b"for-a")
    transport.enqueue("b", b"for-b")

    assert payloads(claim(transport, queues=["b"])) == [b"for-b"]
    transport.enqueue("b", b"for-b-2")
    assert sorted(payloads(claim(transport, queues=["a", "b"]))) == [b"for-a", b"for-b-2"]


def test_claim_respects_limit(transport: Transport) -> None:
    transport.enqueue_many([OutgoingMessage(Q, f"m{i}".encode()) for i in range(10)])

    assert claim(transport, limit=0) == []
    assert payloads(claim(transport, limit=3)) == [b"m0", b"m1", b"m2"]
    assert counts(stats(transport))[:3] == (7, 0, 3)


def test_claim_with_timeout_returns_message_enqueued_meanwhile(transport: Transport) -> None:
    producer = threading.Timer(0.2, lambda: transport.enqueue(Q, b"late"))
    producer.start()
    try:
        start = time.monotonic()
        got = claim(transport, timeout=10.0)
        elapsed = time.monotonic() - start
    finally:
        producer.join()

    assert payloads(got) == [b"late"]
    assert 0.15 <= elapsed < 5.0


def test_claim_with_timeout_returns_nothing_after_timeout_when_empty(
        transport: Transport) -> None:
    start = time.monotonic()
    got = claim(transport, timeout=0.5)
    elapsed = time.monotonic() - start

    assert got == []
    assert 0.45 <= elapsed < 5.0


# -- settling: ack, nack, requeue ---------------------------------------------------


def test_acked_message_is_never_redelivered(transport: Transport) -> None:
    transport.enqueue(Q, b"done")
    [d] = claim(transport, lease=LEASE)

    d.ack()
    time.sleep(PAST_LEASE)

    assert claim(transport) == []
    assert counts(stats(transport)) == (0, 0, 0, 0)


def test_second_ack_is_harmless(transport: Transport) -> None:
    transport.enqueue(Q, b"one")
    transport.enqueue(Q, b"two")
    [first, second] = claim(transport)

    first.ack()
    transport.ack([first])  # bypass Delivery's settled flag: the transport sees it twice
    first.ack()

    assert counts(stats(transport)) == (0, 0, 1, 0)
    second.ack()
    assert counts(stats(transport)) == (0, 0, 0, 0)


def test_nack_moves_message_to_dead_letters_with_reason(transport: Transport) -> None:
    transport.enqueue(Q, b"poison", message_id="task-9")
    [d] = claim(transport, lease=LEASE)

    d.nack("ValueError: bad input")

    [dl] = transport.dead_letters()
    assert (dl.queue, dl.payload, dl.reason, dl.message_id) == (
        Q, b"poison", "ValueError: bad input", "task-9")
    assert dl.attempts == 1
    assert counts(stats(transport)) == (0, 0, 0, 1)
    time.sleep(PAST_LEASE)
    assert claim(transport) == []


def test_requeue_makes_message_claimable_again_counting_the_attempt(
        transport: Transport) -> None:
    transport.enqueue(Q, b"again", message_id="task-2")
    [d] = claim(transport)

    d.requeue()

    [again] = claim(transport)
    assert (again.payload, again.message_id) == (b"again", "task-2")
    assert again.attempts == 2
    assert again.redelivered


def test_requeue_without_counting_the_attempt(transport: Transport) -> None:
    transport.enqueue(Q, b"prefetched")
    [d] = claim(transport)

    d.requeue(count_attempt=False)

    [again] = claim(transport)
    assert again.payload == b"prefetched"
    assert again.attempts == 1
    assert not again.redelivered


def test_requeue_with_delay_hides_message_until_delay_passed(transport: Transport) -> None:
    transport.enqueue(Q, b"later")
    [d] = claim(transport)

    requeued_at = time.monotonic()
    d.requeue(delay=0.5)

    assert claim(transport) == []
    assert counts(stats(transport)) == (0, 1, 0, 0)
    [again] = claim(transport, timeout=10.0)
    assert time.monotonic() - requeued_at >= 0.45
    assert (again.payload, again.attempts) == (b"later", 2)


# -- leases -------------------------------------------------------------------------


def test_expired_lease_makes_message_claimable_again(transport: Transport) -> None:
    if not transport.leases_expire:
        pytest.skip("the broker's own liveness is the lease")
    transport.enqueue(Q, b"orphan", message_id="task-3")
    [d] = claim(transport, lease=LEASE)
    assert d.attempts == 1

    assert claim(transport, consumer="c2") == []  # invisible while leased
    time.sleep(PAST_LEASE)

    [again] = claim(transport, consumer="c2")
    assert (again.payload, again.message_id) == (b"orphan", "task-3")
    assert again.attempts == 2
    assert again.redelivered


def test_expired_lease_counts_as_ready_not_in_flight(transport: Transport) -> None:
    if not transport.leases_expire:
        pytest.skip("the broker's own liveness is the lease")
    transport.enqueue(Q, b"orphan")
    claim(transport, lease=LEASE)
    assert counts(stats(transport)) == (0, 0, 1, 0)

    time.sleep(PAST_LEASE)

    assert counts(stats(transport)) == (1, 0, 0, 0)


def test_renew_keeps_message_invisible_past_original_lease(transport: Transport) -> None:
    transport.enqueue(Q, b"long-task")
    [d] = claim(transport, lease=LEASE)

    time.sleep(LEASE / 2)
    transport.renew([d], 5.0)
    time.sleep(PAST_LEASE)

    assert claim(transport, consumer="c2") == []
    assert counts(stats(transport)) == (0, 0, 1, 0)


@pytest.mark.parametrize("settle", ["ack", "nack", "requeue"])
def test_stale_settlement_leaves_the_new_claim_alone(
        connect: Callable[..., Transport], settle: str) -> None:
    slow, other = connect(), connect()
    if not slow.leases_expire:
        pytest.skip("the broker's own liveness is the lease")
    slow.enqueue(Q, b"contended")
    [stale] = claim(slow, lease=LEASE, consumer="slow")
    time.sleep(PAST_LEASE)
    [current] = claim(other, consumer="other")
    assert current.attempts == 2

    {"ack": stale.ack, "nack": lambda: stale.nack("late"), "requeue": stale.requeue}[settle]()

    assert counts(stats(other)) == (0, 0, 1, 0)
    assert claim(other) == []
    current.ack()
    assert counts(stats(other)) == (0, 0, 0, 0)


@pytest.mark.parametrize("abandon", ["lease_expiry", "requeue"])
def test_message_claimed_more_than_max_deliveries_is_dead_lettered(
        connect: Callable[..., Transport], abandon: str) -> None:
    transport = connect(max_deliveries=2)
    if abandon == "lease_expiry" and not transport.leases_expire:
        pytest.skip("the broker's own liveness is the lease")
    transport.enqueue(Q, b"crashes-workers", message_id="task-4")

    for attempt in (1, 2):
        [d] = claim(transport, lease=LEASE)
        assert d.attempts == attempt
        if abandon == "lease_expiry":
            time.sleep(PAST_LEASE)
        else:
            d.requeue()

    assert claim(transport, lease=LEASE) == []  # the 3rd claim dead-letters it
    [dl] = transport.dead_letters(Q)
    assert "max_deliveries" in dl.reason
    assert (dl.queue, dl.payload, dl.message_id, dl.attempts) == (
        Q, b"crashes-workers", "task-4", 2)
    assert counts(stats(transport)) == (0, 0, 0, 1)
    time.sleep(PAST_LEASE)
    assert claim(transport) == []


# -- ETA ----------------------------------------------------------------------------


def test_eta_message_waits_broker_side_until_its_eta(transport: Transport) -> None:
    eta = transport.now() + 0.5
    transport.enqueue(Q, b"scheduled", eta=eta)

    assert claim(transport) == []
    assert counts(stats(transport)) == (0, 1, 0, 0)
    got = claim(transport, timeout=10.0)
    assert transport.now() >= eta
    assert payloads(got) == [b"scheduled"]


def test_eta_in_the_past_is_ready_at_once(transport: Transport) -> None:
    transport.enqueue(Q, b"overdue", eta=transport.now() - 60)

    assert payloads(claim(transport)) == [b"overdue"]


# -- stats and admin ----------------------------------------------------------------


def test_queue_stats_counts_each_state(transport: Transport) -> None:
    transport.enqueue(Q, b"in-flight")
    claim(transport, limit=1)
    transport.enqueue(Q, b"dead")
    claim(transport, limit=1)[0].nack("boom")
    transport.enqueue(Q, b"ready-1")
    time.sleep(0.2)
    transport.enqueue(Q, b"ready-2")
    transport.enqueue(Q, b"scheduled", eta=transport.now() + 60)

    figures = stats(transport)

    assert counts(figures) == (2, 1, 1, 1)
    if transport.reports_oldest_age:
        assert 0.15 <= figures.oldest_age < 30


def test_queue_stats_lists_declared_empty_queues(transport: Transport) -> None:
    transport.declare_queue("idle")
    transport.declare_queue("idle")  # idempotent
    transport.enqueue("busy", b"x")

    by_name = {s.name: s for s in transport.queue_stats()}

    assert {"idle", "busy"} <= set(by_name)
    idle = by_name["idle"]
    assert (*counts(idle), idle.oldest_age) == (0, 0, 0, 0, 0.0)
    assert by_name["busy"].depth == 1


def test_queue_stats_for_named_queues_only(transport: Transport) -> None:
    transport.enqueue("q", b"x")
    transport.enqueue("q", b"y")
    transport.enqueue("other", b"z")

    [figures] = transport.queue_stats(["q"])

    assert (figures.name, figures.depth) == ("q", 2)


def test_purge_removes_ready_and_scheduled_but_not_in_flight(transport: Transport) -> None:
    transport.enqueue_many([OutgoingMessage(Q, f"m{i}".encode()) for i in range(4)])
    transport.enqueue(Q, b"s1", eta=transport.now() + 60)
    transport.enqueue(Q, b"s2", eta=transport.now() + 60)
    transport.enqueue("other", b"keep")
    [held] = claim(transport, limit=1)

    assert transport.purge(Q) == 5

    assert counts(stats(transport)) == (0, 0, 1, 0)
    assert stats(transport, "other").depth == 1
    assert claim(transport) == []
    held.ack()
    assert counts(stats(transport)) == (0, 0, 0, 0)


def test_enqueue_many_enqueues_all(transport: Transport) -> None:
    messages = [OutgoingMessage("a" if i % 2 else "b", f"m{i}".encode(), priority=i % 10,
                                message_id=f"id-{i}") for i in range(100)]

    transport.enqueue_many(messages)

    assert (stats(transport, "a").depth, stats(transport, "b").depth) == (50, 50)
    got = claim(transport, queues=["a", "b"], limit=1000)
    assert sorted((d.queue, d.payload, d.priority, d.message_id) for d in got) == sorted(
        (m.queue, m.payload, m.priority, m.message_id) for m in messages)


def test_dead_letter_raw_stores_payload_with_reason(transport: Transport) -> None:
    transport.dead_letter_raw(Q, b"\x00undecodable", "DecodeError: not JSON")

    [dl] = transport.dead_letters()
    assert (dl.queue, dl.payload, dl.reason) == (Q, b"\x00undecodable", "DecodeError: not JSON")
    assert stats(transport).dead_lettered == 1
    assert claim(transport) == []


def test_dead_letters_newest_first_filtered_by_queue_and_limited(transport: Transport) -> None:
    transport.dead_letter_raw("q1", b"first", "r1")
    transport.enqueue("q2", b"second")
    claim(transport, queues=["q2"])[0].nack("r2")
    transport.dead_letter_raw("q1", b"third", "r3")

    assert payloads(transport.dead_letters()) == [b"third", b"second", b"first"]
    assert payloads(transport.dead_letters("q1")) == [b"third", b"first"]
    assert payloads(transport.dead_letters(limit=1)) == [b"third"]


# -- worker registry ----------------------------------------------------------------


def test_registered_worker_listed_with_its_info_until_unregistered(
        transport: Transport) -> None:
    info = {"queues": ["q1", "q2"], "pid": 4242, "hostname": "box", "concurrency": 8}
    transport.register_worker("w1@box", info, ttl=30)
    transport.register_worker("w2@box", {"queues": []}, ttl=30)

    assert transport.list_workers() == {"w1@box": info, "w2@box": {"queues": []}}
    transport.unregister_worker("w1@box")
    transport.unregister_worker("never-registered")
    assert transport.list_workers() == {"w2@box": {"queues": []}}


def test_worker_registration_expires_after_ttl_unless_refreshed(transport: Transport) -> None:
    transport.register_worker("w1", {"seq": 1}, ttl=0.3)
    time.sleep(0.2)
    transport.register_worker("w1", {"seq": 2}, ttl=0.3)
    time.sleep(0.2)  # past the first registration's ttl

    assert transport.list_workers() == {"w1": {"seq": 2}}
    time.sleep(0.3)
    assert transport.list_workers() == {}


def test_consumers_counts_live_workers_of_the_queue(transport: Transport) -> None:
    transport.declare_queue("q")
    transport.register_worker("expired", {"queues": ["q"]}, ttl=0.2)
    time.sleep(0.3)
    transport.register_worker("w1", {"queues": ["q", "other"]}, ttl=30)
    transport.register_worker("w2", {"queues": ["other"]}, ttl=30)
    transport.register_worker("w3", {"queues": ["q"]}, ttl=30)
    transport.register_worker("gone", {"queues": ["q"]}, ttl=30)
    transport.unregister_worker("gone")

    assert stats(transport, "q").consumers == 2
    assert stats(transport, "other").consumers == 2


# -- concurrency --------------------------------------------------------------------


def test_concurrent_threads_get_every_message_exactly_once(transport: Transport) -> None:
    total, batches = 2000, 20
    produced = threading.Event()
    seen: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def produce() -> None:
        try:
            per = total // batches
            for b in range(batches):
                transport.enqueue_many(
                    [OutgoingMessage(Q, f"m{b * per + i}".encode()) for i in range(per)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            produced.set()

    def consume(name: str) -> None:
        try:
            while True:
                got = claim(transport, limit=5, timeout=0.2, consumer=name)
                if not got:
                    if produced.is_set():
                        return
                    continue
                with lock:
                    seen.extend(payloads(got))
                transport.ack(got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce)]
    threads += [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=45)

    assert not errors
    assert not any(t.is_alive() for t in threads)
    assert Counter(seen) == Counter(f"m{i}".encode() for i in range(total))
    assert counts(stats(transport)) == (0, 0, 0, 0)


# -- several OS processes ------------------------------------------------------------

_CONSUMER = """
import json, os, sys, time
from tqcore.transports import from_url
url, queue, go = sys.argv[1:4]
transport = from_url(url)
transport.queue_stats([queue])
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
got = []
while batch := transport.claim([queue], consumer=str(os.getpid()), limit=5, lease=30,
                               timeout=0.5):
    got += [d.payload.decode() for d in batch]
    transport.ack(batch)
    time.sleep(0.001)  # the work; a tight loop can keep SQLite's write lock from the other
print(json.dumps(got), flush=True)
"""

_CLAIM_THEN_HANG = """
import json, sys, time
from tqcore.transports import from_url
url, queue, limit, lease = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
got = from_url(url).claim([queue], consumer="doomed", limit=limit, lease=lease)
print(json.dumps([d.payload.decode() for d in got]), flush=True)
time.sleep(600)
"""


def _spawn(script: str, *args: object) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _require_multiprocess(broker: Broker) -> None:
    if not broker.multiprocess:
        pytest.skip("this broker cannot be reached from another process")


def test_two_processes_get_every_message_exactly_once(
        broker: Broker, transport: Transport, tmp_path: Path) -> None:
    _require_multiprocess(broker)
    total = 2000
    transport.enqueue_many([OutgoingMessage(Q, f"m{i}".encode()) for i in range(total)])
    go = tmp_path / "go"
    procs = [_spawn(_CONSUMER, broker.url, Q, go) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        results = [p.communicate(timeout=45)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert [p.returncode for p in procs] == [0, 0]
    per_process = [json.loads(out) for out in results]
    assert all(per_process), "both processes should have claimed some messages"
    assert Counter(m for got in per_process for m in got) == Counter(
        f"m{i}" for i in range(total))
    assert counts(stats(transport)) == (0, 0, 0, 0)


def test_killed_consumers_messages_come_back_once_after_lease(
        broker: Broker, transport: Transport) -> None:
    _require_multiprocess(broker)
    total, taken_count, lease = 100, 40, 1.5
    transport.enqueue_many([OutgoingMessage(Q, f"m{i}".encode()) for i in range(total)])
    start = time.time()
    child = _spawn(_CLAIM_THEN_HANG, broker.url, Q, taken_count, lease)
    try:
        assert child.stdout is not None
        taken = json.loads(child.stdout.readline())
        assert len(taken) == taken_count
        assert stats(transport).in_flight == taken_count
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    first = claim(transport, limit=total)
    # The dead worker's lease cannot have run out yet (where the connection is the
    # lease, as on RabbitMQ, its messages come back at once instead).
    if transport.leases_expire and time.time() < start + lease:
        assert sorted(d.payload.decode() for d in first) == sorted(
            f"m{i}" for i in range(total) if f"m{i}" not in taken)
    got = list(first)
    deadline = time.monotonic() + 20
    while len(got) < total and time.monotonic() < deadline:
        got += claim(transport, limit=total, timeout=0.5)

    assert Counter(d.payload.decode() for d in got) == Counter(f"m{i}" for i in range(total))
    attempts = {d.payload.decode(): d.attempts for d in got}
    twice = {m for m, n in attempts.items() if n == 2}
    assert set(taken) <= twice
    # Where messages are pushed to a consumer (RabbitMQ), one that the dead process had
    # buffered but not claimed yet (a claim's basic.get racing the pushes) comes back
    # flagged redelivered, which counts as an attempt: at most one such per queue.
    assert len(twice - set(taken)) <= (0 if transport.leases_expire else 1)
    assert {n for m, n in attempts.items() if m not in twice} == {1}
    transport.ack(got)
    assert claim(transport) == []
    assert counts(stats(transport)) == (0, 0, 0, 0)
