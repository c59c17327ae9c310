"""The Redis result backend: Celery's keys and meta, prompt wake-ups over pub/sub, the
exactly-once chord join, persistent revokes and kept failed messages."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers.redis_server import RedisServer
from tqcore import states
from tqcore.backends import backend_from_url
from tqcore.backends.base import FailedMessage
from tqcore.backends.redis import RedisBackend
from tqcore.exceptions import TimeoutError as TqTimeoutError

pytestmark = pytest.mark.timeout(60)

#: celery-wire.md §4.6, captured from Celery 5.7 with result_extended=True.
CELERY_SUCCESS_META = {
    "status": "SUCCESS", "result": 3, "traceback": None, "children": [],
    "date_done": "2026-11-21T14:35:15.404239+00:00", "name": "capapp.add", "args": [1, 2],
    "kwargs": {}, "worker": "w1@cap", "retries": 0, "queue": "celery",
    "task_id": "74446a1b-1977-4180-af34-5a22f21ba7ae"}


class Request:
    """The worker's request fields the backend reads."""

    def __init__(self, task_id: str) -> None:
        self.id, self.task, self.args, self.kwargs = task_id, "capapp.add", [1, 2], {}
        self.hostname, self.retries, self.children = "w1@cap", 0, []
        self.delivery_info = {"routing_key": "celery"}
        self.group = self.parent_id = None


@pytest.fixture
def open_backend(redis_url: str) -> Iterator[Callable[..., RedisBackend]]:
    opened: list[RedisBackend] = []

    def open_(**kwargs: Any) -> RedisBackend:
        backend = backend_from_url(redis_url, **kwargs)
        assert isinstance(backend, RedisBackend)
        opened.append(backend)
        return backend

    yield open_
    for b in opened:
        b.close()


@pytest.fixture
def backend(open_backend: Callable[..., RedisBackend]) -> RedisBackend:
    return open_backend()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    yield client
    client.close()


def prefix_of(backend: RedisBackend) -> str:
    return backend.conn.prefix


def test_success_meta_has_celerys_key_shape_and_expiry(backend: RedisBackend, raw: Any) -> None:
    tid = CELERY_SUCCESS_META["task_id"]
    backend.store_result(tid, 3, states.SUCCESS, request=Request(tid))

    stored = json.loads(raw.get(f"{prefix_of(backend)}celery-task-meta-{tid}"))
    assert set(stored) == set(CELERY_SUCCESS_META)
    assert {k: stored[k] for k in ("status", "result", "traceback", "children", "name", "args",
                                   "kwargs", "worker", "retries", "queue", "task_id")} == {
        k: v for k, v in CELERY_SUCCESS_META.items() if k != "date_done"}
    assert 86000 < raw.ttl(f"{prefix_of(backend)}celery-task-meta-{tid}") <= 86400


def test_stored_success_is_never_overwritten(backend: RedisBackend) -> None:
    backend.mark_as_done("t1", "first")
    backend.mark_as_failure("t1", KeyError("late duplicate"))
    backend.store_result("t1", "second", states.SUCCESS)

    meta = backend.get_task_meta("t1")
    assert (meta["status"], meta["result"]) == (states.SUCCESS, "first")


def test_write_is_published_on_the_meta_key_channel(backend: RedisBackend, raw: Any) -> None:
    ps = raw.pubsub()
    channel = f"{prefix_of(backend)}celery-task-meta-t2"
    ps.subscribe(channel)
    assert ps.get_message(timeout=2)["type"] == "subscribe"

    backend.mark_as_done("t2", 42)

    msg = ps.get_message(timeout=2)
    ps.close()
    assert msg["channel"] == channel.encode()
    assert json.loads(msg["data"])["result"] == 42


def test_get_wakes_promptly_on_publish_not_at_the_poll_interval(
        open_backend: Callable[..., RedisBackend]) -> None:
    waiter, worker = open_backend(), open_backend()
    done = threading.Timer(0.3, worker.mark_as_done, ("t3", "ok"))
    started = time.monotonic()
    done.start()
    try:
        meta = waiter.wait_for("t3", timeout=10, interval=30)  # polling alone would take 30 s
    finally:
        done.join()
    elapsed = time.monotonic() - started

    assert meta["result"] == "ok"
    assert 0.25 <= elapsed < 1.5


def test_wait_for_times_out(backend: RedisBackend) -> None:
    started = time.monotonic()
    with pytest.raises(TqTimeoutError):
        backend.wait_for("never", timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 3


def test_group_is_saved_in_celerys_taskset_key(backend: RedisBackend, raw: Any) -> None:
    data = [["g1", None], [[["a", None], None], [["b", None], None]]]
    backend.save_group("g1", data)

    assert json.loads(raw.get(f"{prefix_of(backend)}celery-taskset-meta-g1")) == {"result": data}
    assert backend.restore_group("g1") == data
    backend.delete_group("g1")
    assert backend.restore_group("g1") is None


# -- chord join --------------------------------------------------------------------------


def test_chord_fires_once_when_parts_race_from_many_threads(
        open_backend: Callable[..., RedisBackend], raw: Any) -> None:
    size, rounds = 20, 10
    backends = [open_backend() for _ in range(4)]
    for r in range(rounds):
        group = f"race-{r}"
        fired: list[Any] = []
        barrier = threading.Barrier(size)

        def part(i: int, group: str = group, fired: list[Any] = fired,
                 barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            # every part reports twice, as if its task ran twice
            for _ in range(2):
                got = backends[i % 4].chord_part_return(group, i, f"t{i}", states.SUCCESS,
                                                         i * 10, size)
                if got is not None:
                    fired.append(got)

        threads = [threading.Thread(target=part, args=(i,)) for i in range(size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert len(fired) == 1, f"round {r}: fired {len(fired)} times"
        [parts] = fired
        assert [(p.index, p.task_id, p.status, p.result) for p in parts] == [
            (i, f"t{i}", states.SUCCESS, i * 10) for i in range(size)]
        base = f"{prefix_of(backends[0])}celery-taskset-meta-{group}"
        assert not raw.exists(f"{base}.j", f"{base}.d")
        assert raw.get(f"{base}.c") == b"done"


def test_chord_part_reported_twice_counts_once_and_late_duplicates_do_not_refire(
        backend: RedisBackend) -> None:
    assert backend.chord_part_return("g", 0, "a", states.SUCCESS, 1, 2) is None
    assert backend.chord_part_return("g", 0, "a", states.SUCCESS, 1, 2) is None
    parts = backend.chord_part_return("g", 1, "b", states.FAILURE, {"exc_type": "KeyError"}, 2)
    assert parts is not None
    assert [(p.index, p.status) for p in parts] == [(0, states.SUCCESS), (1, states.FAILURE)]
    assert backend.chord_part_return("g", 1, "b", states.SUCCESS, 2, 2) is None
    assert backend.chord_part_return("g", 0, "a", states.SUCCESS, 1, 2) is None


# -- revokes and failed messages -------------------------------------------------------------


def test_revokes_persist_and_expire(open_backend: Callable[..., RedisBackend]) -> None:
    writer, reader = open_backend(), open_backend()
    writer.add_revoked(["r1", "r2"])
    writer.add_revoked(["short"], ttl=0.2)

    ids, stamp = reader.revoked_since(0.0)
    assert ids == {"r1", "r2", "short"}
    time.sleep(0.3)
    writer.add_revoked(["r3"])
    ids, newer = reader.revoked_since(stamp)
    assert ids == {"r3"}  # only what came after the stamp, and not the expired one
    assert newer > stamp


def test_failed_messages_kept_filtered_and_counted(backend: RedisBackend) -> None:
    for i, exc in enumerate(["KeyError", "ValueError", "KeyError"]):
        backend.save_failed(FailedMessage(f"f{i}", "proj.add", "celery", b"payload-%d" % i, exc,
                                          f"sig-{exc}", failed_at=1000.0 + i))
    backend.mark_retried("f0")
    backend.mark_retried("gone")

    key_errors = backend.find_failed(exc_type="KeyError")
    assert [f.task_id for f in key_errors] == ["f2", "f0"]
    assert key_errors[1].payload == b"payload-0" and key_errors[1].retried == 1
    assert [f.task_id for f in backend.find_failed(["f1", "nope"])] == ["f1"]
    assert Counter(f.exc_type for f in backend.find_failed(limit=2)) == Counter(
        {"KeyError": 1, "ValueError": 1})


# -- waiting: one shared pub/sub connection -------------------------------------------------


def wait_in_threads(backend: RedisBackend, ids: list[str], timeout: float = 10,
                    interval: float = 30) -> tuple[list[threading.Thread], dict[int, Any]]:
    """Start a thread per entry of ``ids`` waiting for it; results land in the dict
    by position (the meta, or the exception raised)."""
    got: dict[int, Any] = {}

    def wait(i: int, tid: str) -> None:
        try:
            got[i] = backend.wait_for(tid, timeout=timeout, interval=interval)
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            got[i] = exc

    threads = [threading.Thread(target=wait, args=(i, tid)) for i, tid in enumerate(ids)]
    for t in threads:
        t.start()
    return threads, got


def subscribed(raw: Any, backend: RedisBackend, ids: list[str]) -> bool:
    """True when the server has a subscriber on every one of these tasks' channels."""
    chans = [f"{prefix_of(backend)}celery-task-meta-{tid}" for tid in ids]
    return all(n >= 1 for _, n in raw.pubsub_numsub(*chans))


def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def pubsub_clients(raw: Any) -> int:
    return len(raw.client_list(_type="pubsub"))


def test_many_waiters_on_different_and_same_ids_share_one_connection_and_all_wake(
        open_backend: Callable[..., RedisBackend], raw: Any) -> None:
    waiter, worker = open_backend(), open_backend()
    ids = [f"m{i}" for i in range(30)] + ["shared"] * 10
    before = pubsub_clients(raw)
    threads, got = wait_in_threads(waiter, ids)
    until(lambda: subscribed(raw, waiter, ids))
    assert pubsub_clients(raw) == before + 1  # one connection, not one per waiter

    started = time.monotonic()
    for tid in dict.fromkeys(ids):
        worker.mark_as_done(tid, tid.upper())
    for t in threads:
        t.join(10)
    assert time.monotonic() - started < 3  # woken by messages, not by the 30 s poll
    assert [got[i]["result"] for i in range(len(ids))] == [tid.upper() for tid in ids]


def test_result_stored_before_the_wait_returns_at_once(backend: RedisBackend) -> None:
    backend.mark_as_done("early", 7)
    started = time.monotonic()
    for _ in range(20):
        assert backend.wait_for("early", timeout=5, interval=30)["result"] == 7
    assert time.monotonic() - started < 0.5


def test_result_stored_while_subscribing_is_not_missed(
        open_backend: Callable[..., RedisBackend]) -> None:
    # Stores race the subscriptions: every wait must end by the read after the
    # confirmation or by the message, never by the 30 s poll.
    waiter, worker = open_backend(), open_backend()
    for round_ in range(30):
        ids = [f"race{round_}-{i}" for i in range(5)]
        storer = threading.Thread(target=lambda ids=ids: [worker.mark_as_done(t, 1) for t in ids])
        threads, got = wait_in_threads(waiter, ids, timeout=5)
        storer.start()
        for t in [*threads, storer]:
            t.join(10)
        assert all(isinstance(got[i], dict) for i in range(len(ids))), got


@pytest.mark.parametrize("subscribed_ok", [True, False], ids=["pubsub", "polling"])
def test_timeout_raises_on_time(backend: RedisBackend, subscribed_ok: bool,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    if not subscribed_ok:
        monkeypatch.setattr(backend._waiter, "_open", lambda: _fail_connect(backend))
    for timeout in (0.05, 0.3):
        started = time.monotonic()
        with pytest.raises(TqTimeoutError):
            backend.wait_for("never", timeout=timeout, interval=0.02)
        assert timeout <= time.monotonic() - started < timeout + 0.1
    started = time.monotonic()
    with pytest.raises(TqTimeoutError):
        backend.wait_for("never", timeout=0)
    assert time.monotonic() - started < 0.1


def _fail_connect(backend: RedisBackend) -> bool:
    waiter = backend._waiter
    with waiter._lock:
        waiter._failed(ConnectionError("refused (test)"))
    return False


def test_killed_pubsub_connection_is_reopened_and_waiters_get_their_results(
        open_backend: Callable[..., RedisBackend], raw: Any) -> None:
    waiter, worker = open_backend(), open_backend()
    ids = [f"k{i}" for i in range(8)]
    threads, got = wait_in_threads(waiter, ids, timeout=15, interval=30)
    until(lambda: subscribed(raw, waiter, ids))

    raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    worker.mark_as_done("k0", 0)  # while the connection is down: found by the re-read
    until(lambda: subscribed(raw, waiter, ids[1:]))  # reconnected and resubscribed
    started = time.monotonic()
    for i, tid in enumerate(ids[1:], 1):
        worker.mark_as_done(tid, i)  # after: by message
    for t in threads:
        t.join(15)
    assert time.monotonic() - started < 3
    assert [got[i]["result"] for i in range(len(ids))] == list(range(len(ids)))
    # and the next wait uses the new connection
    worker.mark_as_done("after", "ok")
    assert waiter.wait_for("after", timeout=5, interval=30)["result"] == "ok"


def test_while_the_connection_is_down_waiters_poll_every_interval(
        open_backend: Callable[..., RedisBackend], raw: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    waiter, worker = open_backend(), open_backend()
    threads, got = wait_in_threads(waiter, ["p1"], timeout=10, interval=0.1)
    until(lambda: subscribed(raw, waiter, ["p1"]))
    monkeypatch.setattr(waiter._waiter, "_open", lambda: _fail_connect(waiter))
    raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    time.sleep(0.2)
    started = time.monotonic()
    worker.mark_as_done("p1", "polled")
    threads[0].join(10)
    assert got[0]["result"] == "polled"
    assert time.monotonic() - started < 0.5


def test_channels_nobody_waits_for_are_unsubscribed(
        open_backend: Callable[..., RedisBackend], raw: Any) -> None:
    from tqcore.backends.redis_waiter import _LINGER_MAX

    waiter, worker = open_backend(), open_backend()
    for i in range(_LINGER_MAX * 3):
        worker.mark_as_done(f"u{i}", i)
        waiter.wait_for(f"u{i}", timeout=5)
    worker.mark_as_done("last", 0)
    waiter.wait_for("last", timeout=5)
    until(lambda: len(raw.pubsub_channels(f"{prefix_of(waiter)}*")) <= _LINGER_MAX + 1)


def test_watch_subscribes_a_group_at_once_and_keeps_results_for_later_waits(
        open_backend: Callable[..., RedisBackend], raw: Any) -> None:
    waiter, worker = open_backend(), open_backend()
    ids = [f"g{i}" for i in range(50)]
    with waiter.watch(ids):
        until(lambda: subscribed(raw, waiter, ids))
        for i, tid in enumerate(ids):
            worker.mark_as_done(tid, i)
        assert [waiter.wait_for(tid, timeout=5, interval=30)["result"]
                for tid in ids] == list(range(50))
    worker.mark_as_done("g-late", 1)
    assert waiter.wait_for("g-late", timeout=5)["result"] == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_waits_on_its_own_connection(
        open_backend: Callable[..., RedisBackend], raw: Any) -> None:
    waiter, worker = open_backend(), open_backend()
    worker.mark_as_done("before-fork", 1)
    assert waiter.wait_for("before-fork", timeout=5)["result"] == 1  # parent connected
    threads, got = wait_in_threads(waiter, ["parent-waits"], timeout=15)
    until(lambda: subscribed(raw, waiter, ["parent-waits"]))

    pid = os.fork()
    if pid == 0:  # the child: wait for a result the parent stores after the fork
        code = 1
        try:
            meta = waiter.wait_for("child-waits", timeout=10, interval=30)
            code = 0 if meta["result"] == "for the child" else 2
        finally:
            os._exit(code)
    until(lambda: subscribed(raw, waiter, ["child-waits"]))
    worker.mark_as_done("child-waits", "for the child")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the child's exit did not take the parent's connection with it
    worker.mark_as_done("parent-waits", "for the parent")
    threads[0].join(10)
    assert got[0]["result"] == "for the parent"


def test_a_quiet_connection_is_pinged_and_kept(open_backend: Callable[..., RedisBackend],
                                                raw: Any, redis_url: str) -> None:
    waiter = backend_from_url(f"{redis_url}&health_check_interval=1")
    assert isinstance(waiter, RedisBackend)
    worker = open_backend()
    try:
        threads, got = wait_in_threads(waiter, ["quiet"], timeout=10, interval=30)
        until(lambda: subscribed(raw, waiter, ["quiet"]))
        until(lambda: any(c["cmd"] == "ping" for c in raw.client_list(_type="pubsub")))
        worker.mark_as_done("quiet", "still here")
        threads[0].join(10)
        assert got[0]["result"] == "still here"
    finally:
        waiter.close()
