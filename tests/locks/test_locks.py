"""Distributed locks: mutual exclusion checked by timestamps, expiry after a dead holder,
token-safe release, and the Singleton task base."""

from __future__ import annotations

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

from tests.locks.redis_server import redis_server
from tqcore import App
from tqcore.exceptions import ImproperlyConfigured
from tqcore.locks import (
    Lock,
    LockError,
    LockHeld,
    LockNotOwnedError,
    LockTimeout,
    Singleton,
    app_lock,
    store_url,
)
from tqcore.locks.memory import MemoryLockStore
from tqcore.locks.sqlite import SQLiteLockStore
from tqcore.testing import start_worker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        application = App("locks", broker="memory://", backend="memory://",
                          set_as_current=False, lock_backend=url)
    else:
        url = (f"memory://locks-{uuid.uuid4().hex}" if request.param == "memory"
               else f"sqlite:///{tmp_path / 'tq.db'}")
        application = App("locks", broker=url, backend=url, set_as_current=False)
    yield application
    application.close()


def unique() -> str:
    return f"lock-{uuid.uuid4().hex}"


# -- semantics, on every store ---------------------------------------------------------
def test_acquire_release_and_exclusion(app: App) -> None:
    name = unique()
    a = app_lock(app, name, timeout=10)
    b = app_lock(app, name, timeout=10, blocking=False)
    assert not a.locked()
    assert a.acquire()
    assert a.owned() and a.locked() and b.locked() and not b.owned()
    assert not b.acquire()
    with pytest.raises(LockError, match="already held"):
        a.acquire()
    a.release()
    assert not a.locked()
    assert b.acquire()
    b.release()
    with pytest.raises(LockNotOwnedError):
        b.release()


def test_blocking_timeout_and_context_manager(app: App) -> None:
    name = unique()
    with app_lock(app, name, timeout=10) as held:
        assert held.owned()
        t0 = time.monotonic()
        with pytest.raises(LockTimeout, match="waited 0.3s"), app_lock(app, name,
                                                                       blocking_timeout=0.3):
            pass
        assert 0.25 < time.monotonic() - t0 < 2.0
        with pytest.raises(LockTimeout), app_lock(app, name, blocking=False):
            pass
    assert not held.locked()


def test_a_waiter_gets_the_lock_when_it_is_released(app: App) -> None:
    name = unique()
    holder = app_lock(app, name, timeout=10)
    holder.acquire()
    threading.Timer(0.3, holder.release).start()
    t0 = time.monotonic()
    with app_lock(app, name, timeout=10, blocking_timeout=5):
        waited = time.monotonic() - t0
    assert 0.25 < waited < 1.5


def test_expired_lock_is_taken_and_the_old_token_cannot_release_it(app: App) -> None:
    name = unique()
    old = app_lock(app, name, timeout=0.3)
    assert old.acquire()
    time.sleep(0.4)
    new = app_lock(app, name, timeout=10, blocking=False)
    assert new.acquire(), "an expired lock must be free"
    assert not old.extend()
    with pytest.raises(LockNotOwnedError):
        old.release()
    assert new.owned(), "the old holder released the new owner's lock"
    new.release()


def test_extend_keeps_the_lock(app: App) -> None:
    name = unique()
    lock = app_lock(app, name, timeout=0.4)
    lock.acquire()
    for _ in range(4):
        time.sleep(0.2)
        assert lock.extend()
    assert lock.owned()
    lock.release()


def test_renewed_lock_outlives_its_lease(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    import tqcore.locks.base as base

    monkeypatch.setattr(base, "WATCHDOG_LEASE", 0.3)
    name = unique()
    with app_lock(app, name) as lock:  # timeout=None: renewed while held
        time.sleep(1.0)
        assert lock.owned()
        assert not app_lock(app, name, blocking=False).acquire()
    assert not lock.locked()


def test_bad_arguments() -> None:
    store = MemoryLockStore()
    with pytest.raises(ValueError):
        Lock(store, "x", timeout=0)
    with pytest.raises(ValueError):
        Lock(store, "x", blocking_timeout=-1)
    with pytest.raises(ValueError):
        Lock(store, "")


# -- where locks live ------------------------------------------------------------------
def test_store_selection(tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path / 'a.db'}"
    assert store_url(App("s", broker=sqlite, set_as_current=False)) == sqlite
    mixed = App("s", broker="amqp://localhost//", backend=sqlite, set_as_current=False)
    assert store_url(mixed) == sqlite
    with pytest.raises(ImproperlyConfigured, match="lock_backend"):
        store_url(App("s", broker="amqp://localhost//", backend="rpc://",
                      set_as_current=False))
    by_path = App("s", broker="amqp://localhost//", backend="rpc://", set_as_current=False,
                  lock_backend=str(tmp_path / "locks.db"))
    assert isinstance(app_lock(by_path, "x").store, SQLiteLockStore)
    with pytest.raises(ImproperlyConfigured):
        store_url(App("s", set_as_current=False, lock_backend="amqp://x//"))


def test_app_lock_method_is_wired() -> None:
    application = App("wired", broker=f"memory://{uuid.uuid4().hex}", set_as_current=False)
    lock = application.lock("report", timeout=5, blocking=False, blocking_timeout=None)
    assert isinstance(lock, Lock) and lock.timeout == 5 and lock.blocking is False
    with application.lock("report", timeout=5):
        assert not application.lock("report", blocking=False).acquire()


# -- 20 concurrent tasks, one lock -----------------------------------------------------
GUARDED = '''
import os
import time

from tqcore import App

app = App("guarded", broker=os.environ["TQ_BROKER_URL"], backend=os.environ["TQ_BROKER_URL"])


@app.task(name="guarded.work")
def work(i, path):
    arrived = time.time()
    with app.lock("the-resource", timeout=30, blocking_timeout=120):
        start = time.time()
        time.sleep(0.05)
        end = time.time()
    with open(path, "a") as f:
        f.write(f"{i} {arrived!r} {start!r} {end!r} {os.getpid()}\\n")
    return i
'''


def check_no_overlap(path: Path, count: int) -> list[tuple[float, float, float, int]]:
    rows = []
    for line in path.read_text().splitlines():
        i, arrived, start, end, pid = line.split()
        rows.append((float(arrived), float(start), float(end), int(pid)))
    assert len(rows) == count
    spans = sorted((start, end) for _, start, end, _ in rows)
    for (_, prev_end), (start, _) in zip(spans, spans[1:]):
        assert start >= prev_end, f"critical sections overlap: {prev_end} > {start}"
    # the test can fail: tasks really did contend (several waited at once)
    waiting = max(sum(1 for a, s, _, _ in rows if a <= t < s) for _, t, _, _ in rows)
    assert waiting >= 3, "the tasks never ran concurrently: the test proves nothing"
    return rows


def load_guarded(tmp_path: Path, url: str) -> Any:
    module = f"guarded_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(GUARDED)
    os.environ["TQ_BROKER_URL"] = url
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        return module, importlib.import_module(module)
    finally:
        sys.path.remove(str(tmp_path))
        del os.environ["TQ_BROKER_URL"]


def test_twenty_concurrent_tasks_never_overlap_memory(tmp_path: Path) -> None:
    _, mod = load_guarded(tmp_path, f"memory://guarded-{uuid.uuid4().hex}")
    out = tmp_path / "spans.log"
    with start_worker(mod.app, pool="threads", concurrency=10):
        results = [mod.work.delay(i, str(out)) for i in range(20)]
        assert sorted(r.get(timeout=60) for r in results) == list(range(20))
    check_no_overlap(out, 20)


def test_twenty_concurrent_tasks_in_two_worker_processes_never_overlap_sqlite(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tq.db'}"
    module, mod = load_guarded(tmp_path, url)
    out = tmp_path / "spans.log"
    env = {**os.environ, "TQ_BROKER_URL": url, "TQ_RESULT_BACKEND": url,
           "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO))
                                         if p)}
    procs = []
    try:
        for pool in ("prefork", "threads"):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tqcore", "-A", module, "worker", "-P", pool, "-c", "5",
                 "--prefetch-multiplier", "1"], cwd=tmp_path, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        time.sleep(1.0)  # both workers up before the burst, so both take tasks
        results = [mod.work.delay(i, str(out)) for i in range(20)]
        assert sorted(r.get(timeout=120) for r in results) == list(range(20))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    rows = check_no_overlap(out, 20)
    assert len({pid for *_, pid in rows}) >= 2, "expected tasks in several processes"


# -- a dead holder ---------------------------------------------------------------------
HOLDER = '''
import sys, time
import tqcore.locks.base as base
from tqcore import App
from tqcore.locks import app_lock

base.WATCHDOG_LEASE = 1.5
app = App("holder", broker="memory://", lock_backend=sys.argv[1])
timeout = None if sys.argv[3] == "none" else float(sys.argv[3])
lock = app_lock(app, sys.argv[2], timeout=timeout)
assert lock.acquire()
print("held", time.time(), flush=True)
time.sleep(120)
'''


@pytest.mark.parametrize("timeout", ["2", "none"])
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_lock_held_by_a_killed_process_expires(backend: str, timeout: str,
                                                 tmp_path: Path,
                                                 request: pytest.FixtureRequest) -> None:
    url = (request.getfixturevalue("redis_url") if backend == "redis"
           else f"sqlite:///{tmp_path / 'locks.db'}")
    name = unique()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, name, timeout], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("held"), line
        application = App("waiter", broker="memory://", set_as_current=False,
                          lock_backend=url)
        if timeout == "none":
            time.sleep(3.0)  # twice the renewed lease: a live holder keeps it
        assert not app_lock(application, name, blocking=False).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        waiter = app_lock(application, name, timeout=10, blocking_timeout=15)
        assert waiter.acquire(), "the dead process's lock never expired"
        waited = time.monotonic() - killed
        assert waited < (2.5 if timeout == "2" else 2.0)
        waiter.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- Singleton tasks -------------------------------------------------------------------
@pytest.fixture()
def mem_app() -> Iterator[App]:
    url = f"memory://singleton-{uuid.uuid4().hex}"
    application = App("singleton", broker=url, backend=url, set_as_current=False)
    yield application
    application.close()


def test_singleton_skips_a_second_instance_for_the_same_key(mem_app: App) -> None:
    ran: list[tuple[int, float, float]] = []

    @mem_app.task(base=Singleton, lock_key=lambda user_id: f"user:{user_id}")
    def sync_user(user_id: int) -> int:
        start = time.time()
        time.sleep(0.5)
        ran.append((user_id, start, time.time()))
        return user_id

    with start_worker(mem_app, pool="threads", concurrency=4):
        first = sync_user.delay(1)
        time.sleep(0.2)
        second, other = sync_user.delay(1), sync_user.delay(2)
        assert first.get(timeout=10) == 1
        assert second.get(timeout=10) is None  # skipped
        assert other.get(timeout=10) == 2
    assert sorted(u for u, _, _ in ran) == [1, 2]
    assert sync_user.singleton_key((7,), {}) == f"{sync_user.name}:user:7"


def test_singleton_retry_runs_every_instance_one_at_a_time(mem_app: App) -> None:
    spans: list[tuple[float, float]] = []

    @mem_app.task(base=Singleton, lock_key="{0}", lock_held="retry", lock_retry_delay=0.1,
                  max_retries=None)
    def report(key: str, i: int) -> int:
        start = time.time()
        time.sleep(0.1)
        spans.append((start, time.time()))
        return i

    with start_worker(mem_app, pool="threads", concurrency=4):
        results = [report.delay("daily", i) for i in range(5)]
        assert sorted(r.get(timeout=30) for r in results) == list(range(5))
    spans.sort()
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))


def test_singleton_fail_policy_and_eager_and_direct_calls(mem_app: App) -> None:
    @mem_app.task(base=Singleton, lock_held="fail")
    def only_one() -> str:
        return "ran"

    assert only_one() == "ran"  # a direct call takes no lock
    assert only_one.apply().get() == "ran"  # eager takes it and lets it go
    with app_lock(mem_app, only_one.name):
        outcome = only_one.apply()
        assert outcome.state == "FAILURE" and isinstance(outcome.result, LockHeld)
        assert only_one() == "ran"


def test_singleton_rejects_an_unknown_policy(mem_app: App) -> None:
    with pytest.raises(ValueError, match="lock_held"):
        @mem_app.task(base=Singleton, lock_held="wait")
        def nope() -> None:
            pass
