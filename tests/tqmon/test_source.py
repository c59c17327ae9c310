"""ClusterSource against a real SQLite broker: live feed, junk on the wire, outages."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tqcore import App, codec
from tqcore.testing import start_worker
from tqmon.contracts import BrokerFigures, EventBatch, LinkStatus
from tqmon.source import ClusterSource


class Feed:
    """Runs a source in a thread and keeps what it posts."""

    def __init__(self, source: ClusterSource) -> None:
        self.source = source
        self.items: list[object] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=source.run, args=(self.post, self.stop.is_set),
                                       daemon=True)

    def post(self, item: object) -> None:
        with self.lock:
            self.items.append(item)

    def of(self, kind: type) -> list[Any]:
        with self.lock:
            return [i for i in self.items if isinstance(i, kind)]

    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.of(EventBatch) for e in b.events]

    def links(self) -> list[LinkStatus]:
        return self.of(LinkStatus)

    def wait(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            assert self.thread.is_alive(), "the source's run() returned"
            assert time.monotonic() < deadline, f"timed out; posted: {self.items[-5:]}"
            time.sleep(0.05)

    def __enter__(self) -> Feed:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "cancelled() did not stop the source"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    url = f"sqlite:///{tmp_path / 'tq.db'}"
    app = App("sourcetest", broker=url, backend=url, set_as_current=False)

    @app.task(name="st.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


def test_live_status_figures_and_event_batches(app: App) -> None:
    with start_worker(app, hostname="w1@test"):
        source = ClusterSource(app, poll_interval=0.2, batch_interval=0.15)
        with Feed(source) as feed:
            feed.wait(lambda: any(s.state == "live" for s in feed.links()))
            assert feed.links()[0].state == "connecting"
            assert all(s.broker == source.broker for s in feed.links())
            figures = feed.wait(lambda: [f for f in feed.of(BrokerFigures)
                                         if "w1@test" in f.workers])
            assert any(q.name == "celery" and q.consumers == 1 for q in figures[-1].queues)
            # Asked at connect, the worker announces itself at once (no 2 s wait).
            feed.wait(lambda: any(e["type"] == "worker-heartbeat" and
                                  e["hostname"] == "w1@test" for e in feed.events()), 5)
            started = time.monotonic()
            results = [app.send_task("st.add", (i, i)) for i in range(20)]
            for r in results:
                r.get(timeout=15)
            ids = {r.id for r in results}
            done = feed.wait(lambda: {e["uuid"] for e in feed.events()
                                      if e["type"] == "task-succeeded"} >= ids)
            assert done
            elapsed = time.monotonic() - started
            sent = [e for e in feed.events() if e["type"] == "task-sent" and e["uuid"] in ids]
            assert len(sent) == 20
            assert all(isinstance(e["local_received"], float) for e in feed.events())
            # Coalesced: about one batch per batch_interval, not one per event or body.
            batches = feed.of(EventBatch)
            assert all(b.events for b in batches)
            assert len(batches) <= (elapsed + 3) / 0.15 + 5 < len(feed.events())


def test_junk_event_bodies_are_dropped_and_counted(app: App) -> None:
    source = ClusterSource(app, poll_interval=0.5, batch_interval=0.05)
    with Feed(source) as feed:
        feed.wait(lambda: any(s.state == "live" for s in feed.links()))
        t = app.transport
        t.publish_event("x", b"not json at all")
        t.publish_event("x", b"\xff\xfe")
        t.publish_event("task.multi", codec.dumps(
            [1, {"type": 5}, {"no": "type"}, {"type": "x" * 100}, {"type": "task-sent",
                                                                  "uuid": "good-1"}]).encode())
        t.publish_event("x", codec.dumps({"type": "task-received", "uuid": "good-2",
                                          "hostname": "w"}).encode())
        feed.wait(lambda: {e.get("uuid") for e in feed.events()} >= {"good-1", "good-2"})
        assert len(feed.events()) == 2
        assert source.malformed == 6


def test_replayed_duplicates_are_dropped() -> None:
    source = ClusterSource("sqlite:////nonexistent/never/opened.db")
    body = codec.dumps([{"type": "task-sent", "uuid": "a", "hostname": "h", "clock": 1,
                         "timestamp": 1.0}]).encode()
    out: list[dict[str, Any]] = []
    source._decode(body, 10.0, out)
    source._decode(body, 11.0, out)  # the same event, replayed after a reconnect
    assert len(out) == 1 and source.duplicates == 1


def _disconnected(feed: Feed) -> list[LinkStatus]:
    return [s for s in feed.links() if s.state == "disconnected"]


def test_a_broker_that_never_existed(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the broker's directory should be")
    source = ClusterSource(f"sqlite:///{blocker / 'tq.db'}", max_backoff=1.0)
    assert source.broker.endswith("not-a-dir/tq.db")
    with Feed(source) as feed:
        feed.wait(lambda: len({s.since for s in _disconnected(feed)}) == 1
                  and len(_disconnected(feed)) >= 4, timeout=10)
        down = _disconnected(feed)
        assert down[0].retry_in is not None and 0 < down[0].retry_in <= 1.0
        assert "cannot open SQLite database" in down[0].detail
        assert all(s.since == down[0].since for s in down), "the outage keeps its start time"
        assert not any(s.state == "live" for s in feed.links())
        time.sleep(1.0)
        assert feed.thread.is_alive()


def test_a_broker_that_disappears(app: App, tmp_path: Path) -> None:
    source = ClusterSource(app, poll_interval=0.2, max_backoff=2.0)
    with Feed(source) as feed:
        feed.wait(lambda: any(s.state == "live" for s in feed.links()))
        for name in os.listdir(tmp_path):  # the broker's files become garbage
            path = tmp_path / name
            size = path.stat().st_size
            with open(path, "r+b") as fh:
                fh.write(b"garbage!" * max(64, size // 8))
        down = feed.wait(lambda: _disconnected(feed), timeout=10)
        assert down[0].retry_in is not None and down[0].retry_in > 0
        assert "not a database" in down[0].detail or "malformed" in down[0].detail
        time.sleep(1.5)
        assert feed.thread.is_alive()
        assert feed.links()[-1].state == "disconnected"


def test_retry_now_cuts_the_wait_short(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("x")
    source = ClusterSource(f"sqlite:///{blocker / 'tq.db'}", max_backoff=30.0)
    with Feed(source) as feed:
        # Let the backoff grow past a few seconds, then ask for an immediate retry.
        feed.wait(lambda: any((s.retry_in or 0) > 3 for s in _disconnected(feed)), timeout=20)
        attempts = len([s for s in _disconnected(feed) if s.retry_in == 0.0])
        source.retry_now()
        feed.wait(lambda: len([s for s in _disconnected(feed) if s.retry_in == 0.0]) > attempts,
                  timeout=2)


def test_a_redis_broker_that_dies_and_comes_back(tmp_path: Path) -> None:
    import signal

    from tests.servers.redis_server import _free_port, running_redis

    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    app = App("sourceredis", broker=url, backend=url, set_as_current=False)
    source = ClusterSource(app, poll_interval=0.2, max_backoff=1.0)
    try:
        with running_redis(tmp_path / "r1", port) as server, Feed(source) as feed:
            feed.wait(lambda: any(s.state == "live" for s in feed.links()))
            os.kill(server.pid, signal.SIGKILL)
            down = feed.wait(lambda: _disconnected(feed), timeout=20)
            assert down[0].retry_in is not None
            time.sleep(1.0)
            assert feed.thread.is_alive()
            lives = len([s for s in feed.links() if s.state == "live"])
            with running_redis(tmp_path / "r2", port):
                back = feed.wait(lambda: [s for s in feed.links() if s.state == "live"][lives:],
                                 timeout=20)
                assert back[0].detail.startswith("reconnected after")
                app.transport.publish_event("task.multi", codec.dumps(
                    [{"type": "task-sent", "uuid": "after-outage", "hostname": "p"}]).encode())
                feed.wait(lambda: any(e.get("uuid") == "after-outage" for e in feed.events()))
    finally:
        app.close()
